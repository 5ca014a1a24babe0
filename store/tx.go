package store

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// tx wraps a bbolt transaction with the time fixed at its start, so every rule
// inside one transaction sees the same "now".
type tx struct {
	*bolt.Tx
	now time.Time
	db  *DB
	// changes are the binding rows this transaction wrote or deleted, for
	// the live count once it commits (see liveIndex).
	changes *[]bindingChange
}

func (db *DB) update(fn func(*tx) error) error {
	var fnErr error
	err := db.bolt.Update(func(btx *bolt.Tx) error {
		fnErr = fn(&tx{Tx: btx, now: db.now(), db: db})
		return fnErr
	})
	if err == nil {
		db.gen.Add(1) // after the commit: see identityCache
	}
	return db.committed(err, fnErr)
}

// batch is update through bolt's group commit: many concurrent callers share
// one fsync. fn may run more than once, so it must only touch the transaction
// and overwrite (never append to) the variables it reports through.
func (db *DB) batch(fn func(*tx) error) error {
	var fnErr error // of the last run: the one whose outcome err reports
	err := db.bolt.Batch(func(btx *bolt.Tx) error {
		fnErr = fn(&tx{Tx: btx, now: db.now(), db: db})
		return fnErr
	})
	return db.committed(err, fnErr)
}

func (db *DB) view(fn func(*tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error {
		return fn(&tx{Tx: btx, now: db.now(), db: db})
	})
}

// exclusive runs fn in a writable transaction that is always rolled back:
// it sees a state no writer can change meanwhile, and changes nothing.
func (db *DB) exclusive(fn func(*tx) error) error {
	btx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	defer btx.Rollback()
	return fn(&tx{Tx: btx, now: db.now(), db: db})
}
