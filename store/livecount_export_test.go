package store

import "time"

// ScanLiveBindings counts live bindings the slow way, reading every row: the
// oracle the tests hold LiveBindings to.
func ScanLiveBindings(db *DB) (int, error) {
	n := 0
	err := db.view(func(t *tx) error {
		return t.Bucket(bBindings).ForEach(func(_, v []byte) error {
			var b struct {
				ExpiresAt time.Time `json:"expires_at"`
			}
			if decode(v, &b) == nil && b.ExpiresAt.After(t.now) {
				n++
			}
			return nil
		})
	})
	return n, err
}
