package store

import (
	"errors"
	"strings"
	"sync/atomic"
	"syscall"

	berrors "go.etcd.io/bbolt/errors"
)

// ErrNoSpace wraps a commit that failed because the disk (or the quota) is
// full. Nothing of the transaction was written; it can be retried once space
// is freed, without a restart.
var ErrNoSpace = errors.New("the data directory's disk is full")

// writeHealth follows the outcome of commits: how many failed, and whether
// the latest one did (cleared by the next success, or by ProbeWrite).
type writeHealth struct {
	failures atomic.Uint64
	failing  atomic.Pointer[error]
}

// committed classifies what update or batch got from bbolt. fnErr is what
// the transaction's own function returned (a refusal, which is not a write
// failure); any other error is the commit's, counted and, for a full disk,
// wrapped in ErrNoSpace.
func (db *DB) committed(err, fnErr error) error {
	if err == nil {
		if db.health.failing.Load() != nil {
			db.health.failing.Store(nil)
		}
		return nil
	}
	if fnErr != nil || errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return err
	}
	db.health.failures.Add(1)
	if noSpace(err) {
		err = errors.Join(ErrNoSpace, err)
	}
	db.health.failing.Store(&err)
	return err
}

// noSpace recognises ENOSPC and EDQUOT, also when bbolt has flattened the
// error into text (its file-resize error does).
func noSpace(err error) bool {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, syscall.ENOSPC.Error()) || strings.Contains(s, syscall.EDQUOT.Error())
}

// CommitFailures counts write transactions whose commit failed (disk full,
// I/O error) since the store was opened.
func (db *DB) CommitFailures() uint64 { return db.health.failures.Load() }

// WriteError is the error of the latest commit if it failed and none has
// succeeded since, else nil.
func (db *DB) WriteError() error {
	if p := db.health.failing.Load(); p != nil {
		return *p
	}
	return nil
}

// ProbeWrite commits a tiny write (the time of the probe in the meta
// bucket) to find out whether writes work again, e.g. after space was freed
// on a full disk. A success clears WriteError.
func (db *DB) ProbeWrite() error {
	return db.update(func(t *tx) error {
		return t.Bucket(bMeta).Put([]byte("write_probe"), []byte(t.now.UTC().Format("2006-01-02T15:04:05.000Z")))
	})
}
