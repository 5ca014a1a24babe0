package store

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The domain rules (users, bindings, seats, blockers, offboarding …) are
// written once, against kvTx: a transaction over named buckets of ordered
// keys. Two backends implement it: bbolt (one file in the data directory, the
// default; boltKV below) and etcd (a cluster shared by several nodes;
// etcd.go). Both give a rule the same guarantee: what it read is what it
// commits against, or it does not commit. bbolt gets it from its single
// writer; etcd from one Txn comparing the revision of every key and range
// the rule read (and re-running the rule on a conflict).
//
// Features tied to bbolt's file stay bbolt-only, behind a type assertion on
// boltTx or a nil DB.bolt: the group commit and its timed flush of the
// refresh overlay (tx.go, refresh.go; etcd keeps the overlay's entries in
// memory instead, see refreshOverlay's "held"), the file check of Check,
// Backup (Tx.WriteTo), Stats' file figures, and the power-loss guarantees
// of docs/design.md.

// kvTx is one transaction, read-only or writable.
type kvTx interface {
	// Bucket is the named bucket; a bucket that does not exist (an old
	// file opened read-only) reads as empty.
	Bucket(name []byte) kvBucket
	// OnCommit runs fn once the transaction has committed; never if it
	// rolls back (or, on etcd, if this attempt lost a conflict).
	OnCommit(fn func())
}

// kvBucket is a bucket of keys in byte order. Values returned are valid only
// during the transaction; keys and values passed in may be reused after the
// call returns.
type kvBucket interface {
	Get(key []byte) []byte
	Put(key, value []byte) error
	Delete(key []byte) error
	// ForEach calls fn for every key of the bucket in order; fn must not
	// change the bucket.
	ForEach(fn func(k, v []byte) error) error
	// ForEachPrefix calls fn for every key starting with prefix, in order;
	// fn must not change the bucket. A writable transaction on etcd
	// commits only if no key under prefix changed meanwhile.
	ForEachPrefix(prefix []byte, fn func(k, v []byte) error) error
	// Cursor walks the bucket in either direction.
	Cursor() kvCursor
	// NextSequence is a new id, higher than any the bucket handed out.
	NextSequence() (uint64, error)
}

// kvCursor is a position in a bucket; every method returns the key and value
// it lands on, or nil when there is none.
type kvCursor interface {
	First() (key, value []byte)
	Last() (key, value []byte)
	Seek(seek []byte) (key, value []byte)
	Next() (key, value []byte)
	Prev() (key, value []byte)
}

// kvStore is a backend: it runs transactions.
type kvStore interface {
	// update runs fn in a write transaction and commits it if fn returns
	// nil. etcd may run fn more than once (each attempt on a fresh
	// transaction) when another node changed what fn read.
	update(fn func(kvTx) error) error
	view(fn func(kvTx) error) error
	close() error
}

// boltKV is the bbolt backend.
type boltKV struct{ db *bolt.DB }

func (s boltKV) update(fn func(kvTx) error) error {
	return s.db.Update(func(btx *bolt.Tx) error { return fn(boltTx{btx}) })
}

func (s boltKV) view(fn func(kvTx) error) error {
	return s.db.View(func(btx *bolt.Tx) error { return fn(boltTx{btx}) })
}

func (s boltKV) close() error { return s.db.Close() }

// boltTx is a bbolt transaction seen as a kvTx; the bbolt-only features
// reach the *bolt.Tx through it.
type boltTx struct{ *bolt.Tx }

func (t boltTx) Bucket(name []byte) kvBucket {
	if b := t.Tx.Bucket(name); b != nil {
		return boltBucket{b}
	}
	return missingBucket{}
}

type boltBucket struct{ *bolt.Bucket }

func (b boltBucket) Cursor() kvCursor { return b.Bucket.Cursor() }

func (b boltBucket) ForEachPrefix(p []byte, fn func(k, v []byte) error) error {
	c := b.Bucket.Cursor()
	for key, v := c.Seek(p); key != nil && bytes.HasPrefix(key, p); key, v = c.Next() {
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}

// missingBucket is a bucket a read-only bbolt file does not have.
type missingBucket struct{}

func (missingBucket) Get([]byte) []byte                                   { return nil }
func (missingBucket) Put(_, _ []byte) error                               { return berrors.ErrBucketNotFound }
func (missingBucket) Delete([]byte) error                                 { return berrors.ErrBucketNotFound }
func (missingBucket) ForEach(func(k, v []byte) error) error               { return nil }
func (missingBucket) ForEachPrefix([]byte, func(k, v []byte) error) error { return nil }
func (missingBucket) Cursor() kvCursor                                    { return emptyCursor{} }
func (missingBucket) NextSequence() (uint64, error)                       { return 0, berrors.ErrBucketNotFound }

type emptyCursor struct{}

func (emptyCursor) First() ([]byte, []byte)      { return nil, nil }
func (emptyCursor) Last() ([]byte, []byte)       { return nil, nil }
func (emptyCursor) Seek([]byte) ([]byte, []byte) { return nil, nil }
func (emptyCursor) Next() ([]byte, []byte)       { return nil, nil }
func (emptyCursor) Prev() ([]byte, []byte)       { return nil, nil }

// bucketKeys is the number of keys in b: bbolt counts its pages, etcd
// counts on the server, anything else walks the keys.
func bucketKeys(b kvBucket) (int, error) {
	switch b := b.(type) {
	case boltBucket:
		return b.Stats().KeyN, nil
	case *etcdBucket:
		return b.count()
	}
	n := 0
	err := b.ForEach(func(_, _ []byte) error { n++; return nil })
	return n, err
}
