package store

// ScanLiveBindings counts live bindings the slow way, reading every row (with
// the acknowledged refreshes not yet on disk): the oracle the tests hold
// LiveBindings to.
func ScanLiveBindings(db *DB) (int, error) {
	n := 0
	err := db.view(func(t *tx) error {
		return t.Bucket(bBindings).ForEach(func(_, v []byte) error {
			var b Binding
			if decodeBinding(v, &b) != nil {
				return nil
			}
			db.refresh.applyOne(&b) // acknowledged refreshes not yet on disk
			if b.ExpiresAt.After(t.now) {
				n++
			}
			return nil
		})
	})
	return n, err
}
