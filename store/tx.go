package store

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// tx is a transaction of either backend (kvTx) with the time fixed at its
// start, so every rule inside one transaction sees the same "now".
type tx struct {
	kvTx
	now time.Time
	db  *DB
	// changes are the binding rows this transaction wrote or deleted, for
	// the live count once it commits (see liveIndex).
	changes *[]bindingChange
}

// update runs fn in its own write transaction and commit. It holds the
// refresh gate until the commit, so no pure refresh is checked against a
// state it is changing (see refreshOverlay).
//
// On etcd there is no gate here (PruneExpired takes it itself, see
// refreshOverlay's "held"): each update is its own optimistic transaction,
// re-run on a conflict.
func (db *DB) update(fn func(*tx) error) error {
	if db.bolt != nil {
		db.refresh.gate.Lock()
		defer db.refresh.gate.Unlock()
	}
	var fnErr error
	err := db.kv.update(func(k kvTx) error {
		fnErr = fn(&tx{kvTx: k, now: db.now(), db: db})
		return fnErr
	})
	if err == nil {
		db.gen.Add(1) // after the commit: caches keyed on Generation
	}
	return db.committed(err, fnErr)
}

// batch is update through the group commit (commitLoop): many concurrent
// callers share one commit and its fsync, and a nil return means the change
// is on disk. fn may run more than once, so it must only touch the
// transaction and overwrite (never append to) the variables it reports
// through. An error from fn fails only its own call.
//
// On etcd, batch is update: etcd's own raft log batches concurrent
// transactions, and fn already may run more than once.
func (db *DB) batch(fn func(*tx) error) error {
	if db.bolt == nil {
		var fnErr error
		err := db.kv.update(func(k kvTx) error {
			fnErr = fn(&tx{kvTx: k, now: db.now(), db: db})
			return fnErr
		})
		return db.committed(err, fnErr)
	}
	c := &batchCall{fn: fn, done: make(chan error, 1)}
	l := &db.loop
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return berrors.ErrDatabaseNotOpen
	}
	l.queue = append(l.queue, c)
	l.mu.Unlock()
	l.kick()
	return <-c.done
}

// commitLoop is the group commit: one writer goroutine that, as soon as a
// commit ends, takes everything queued meanwhile and runs it in the next
// write transaction, with one commit (and fsync) for all. Under load the next
// group fills while the previous one is on disk; a lone request starts at
// once instead of waiting for company.
type commitLoop struct {
	mu      sync.Mutex
	queue   []*batchCall
	closed  bool
	noFlush bool          // closing as in a crash: pending refreshes are dropped
	due     atomic.Bool   // the refresh overlay's flush timer fired
	wake    chan struct{} // capacity 1: "there is work"
	stopped chan struct{} // closed when run returns
}

type batchCall struct {
	fn   func(*tx) error
	done chan error // capacity 1
	// committed, if set, runs once fn's changes are on disk, before any
	// call of the group is told.
	committed func()
}

func (l *commitLoop) init() {
	l.wake = make(chan struct{}, 1)
	l.stopped = make(chan struct{})
}

// flushDue asks the loop to write the refresh overlay's entries.
func (l *commitLoop) flushDue() {
	l.due.Store(true)
	l.kick()
}

func (l *commitLoop) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// runCommitLoop is the writer goroutine; it returns once Close has been asked and
// everything queued before has been committed.
func (db *DB) runCommitLoop() {
	l := &db.loop
	defer close(l.stopped)
	last := 0 // size of the previous group
	for {
		<-l.wake
		if last > 1 {
			// The previous commit just woke its callers; let them queue
			// their next requests before taking the group (no timer: one
			// turn of the scheduler).
			runtime.Gosched()
		}
		l.mu.Lock()
		calls, closed, noFlush := l.queue, l.closed, l.noFlush
		l.queue = nil
		l.mu.Unlock()
		var flush *batchCall
		if l.due.Swap(false) || closed && !noFlush {
			if snap := db.refresh.flushSnapshot(); snap != nil {
				flush = &batchCall{fn: flushFn(snap), done: make(chan error, 1),
					committed: func() { db.refresh.flushed(snap) }}
				calls = append([]*batchCall{flush}, calls...)
			}
		}
		last = len(calls)
		if len(calls) > 0 {
			db.commitGroup(calls)
		}
		if flush != nil && <-flush.done != nil {
			db.refresh.armTimer(db.loop.flushDue) // try again later
		}
		if closed {
			db.refresh.stopTimer()
			return
		}
	}
}

// stopCommitLoop commits what is queued (and, if flush, the pending
// refreshes) and stops the writer; later batches fail as on a closed bbolt
// file.
func (db *DB) stopCommitLoop(flush bool) {
	l := &db.loop
	if l.stopped == nil {
		return // a read-only store (OpenReadOnly) never starts the writer
	}
	l.mu.Lock()
	if !l.closed {
		l.noFlush = !flush
	}
	l.closed = true
	l.mu.Unlock()
	l.kick()
	<-l.stopped
}

// commitGroup runs calls in one write transaction and reports the commit's
// outcome to each. If one fn fails, the transaction is rolled back, that
// call gets its error (as it would have running alone after the ones before
// it), and the others run again without it.
func (db *DB) commitGroup(calls []*batchCall) {
	for len(calls) > 0 {
		failed, failErr := -1, error(nil)
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			for i, c := range calls {
				if err := runFn(c.fn, &tx{kvTx: boltTx{btx}, now: db.now(), db: db}); err != nil {
					failed, failErr = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				if err == nil && c.committed != nil {
					c.committed()
				}
			}
			err = db.committed(err, nil) // the commit itself failed (disk full, I/O): counted once
			for _, c := range calls {
				c.done <- err
			}
			return
		}
		calls[failed].done <- failErr
		calls = append(calls[:failed:failed], calls[failed+1:]...)
	}
}

// runFn runs one group-committed fn; a panic fails that call alone instead
// of the writer every other caller waits for.
func runFn(fn func(*tx) error, t *tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write transaction failed: %v", p)
		}
	}()
	return fn(t)
}

func (db *DB) view(fn func(*tx) error) error {
	return db.kv.view(func(k kvTx) error {
		return fn(&tx{kvTx: k, now: db.now(), db: db})
	})
}

// exclusive runs fn in a writable transaction that is always rolled back:
// it sees a state no writer can change meanwhile, and changes nothing. On
// etcd it is view: every read of a transaction is at one revision.
func (db *DB) exclusive(fn func(*tx) error) error {
	if db.bolt == nil {
		return db.view(fn)
	}
	defer db.trim.rolledBack.Add(1) // bbolt counts no rolled-back writer
	btx, err := db.bolt.Begin(true)
	if err != nil {
		return err
	}
	defer btx.Rollback()
	return fn(&tx{kvTx: boltTx{btx}, now: db.now(), db: db})
}
