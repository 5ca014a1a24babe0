package store

import (
	"sort"

	bolt "go.etcd.io/bbolt"
)

// Stats describe a data directory for operators (dialtone check).
type Stats struct {
	Schema       string         // the data file's schema version
	BuildSchema  int            // the schema this build reads
	TxID         int            // the last committed transaction
	FileBytes    int64          // size of dialtone.db
	Records      map[string]int // bucket → number of records
	Buckets      []string       // bucket names, sorted
	LiveBindings int
	KeyPresent   bool // secret.key is there and 32 bytes
}

// Stats counts the records of every bucket in one read transaction.
func (db *DB) Stats() (Stats, error) {
	st := Stats{BuildSchema: schemaVersion, Records: map[string]int{}, KeyPresent: db.aead != nil}
	if db.bolt == nil { // etcd: no file; the record counts come from the cluster
		err := db.view(func(t *tx) error {
			st.Schema = string(t.Bucket(bMeta).Get([]byte("schema")))
			for _, name := range append(allBuckets[:len(allBuckets):len(allBuckets)], extraBuckets...) {
				n, err := bucketKeys(t.Bucket(name))
				if err != nil {
					return err
				}
				st.Records[string(name)] = n
				st.Buckets = append(st.Buckets, string(name))
			}
			return nil
		})
		sort.Strings(st.Buckets)
		st.LiveBindings = db.LiveBindings()
		return st, err
	}
	err := db.bolt.View(func(btx *bolt.Tx) error {
		st.TxID, st.FileBytes = btx.ID(), btx.Size()
		if m := btx.Bucket(bMeta); m != nil {
			st.Schema = string(m.Get([]byte("schema")))
		}
		return btx.ForEach(func(name []byte, b *bolt.Bucket) error {
			st.Records[string(name)] = b.Stats().KeyN
			st.Buckets = append(st.Buckets, string(name))
			return nil
		})
	})
	if err != nil {
		return st, err
	}
	sort.Strings(st.Buckets)
	st.LiveBindings = db.LiveBindings()
	return st, nil
}
