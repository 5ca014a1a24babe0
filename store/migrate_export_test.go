package store

import "fmt"

// MigrateFailAfterForTest makes Migrate with o fail after n batches that
// wrote, as an interrupted run would.
func MigrateFailAfterForTest(o *MigrateOptions, n int) { o.failAfter = n }

// DumpForTest is every key of every bucket ("bucket/key" → value) and every
// non-zero NextSequence counter ("_seq/bucket" → decimal), as stored.
func DumpForTest(db *DB) (map[string]string, error) {
	out := map[string]string{}
	err := db.kv.view(func(t kvTx) error {
		for _, name := range append(allBuckets[:len(allBuckets):len(allBuckets)], extraBuckets...) {
			b := t.Bucket(name)
			if err := b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+string(k)] = string(v)
				return nil
			}); err != nil {
				return err
			}
			seq, err := bucketSequence(b)
			if err != nil {
				return err
			}
			if seq > 0 {
				out["_seq/"+string(name)] = fmt.Sprint(seq)
			}
		}
		return nil
	})
	return out, err
}
