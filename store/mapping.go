package store

import (
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The data file is memory-mapped: bbolt reads every page through the map,
// so each page a transaction reads (and, as the kernel maps pages in runs
// of up to 64 KiB around a fault, its neighbours) stays mapped into
// dialtone's address space and counts in its resident memory (RSS) for as
// long as the process runs. A registration storm over 100,000 users reads
// nearly every page of the users, secrets and bindings buckets, and a start
// reads the whole file ([DB.Check]): the file's size again as RSS, on top of
// the Go heap.
//
// Those pages are the kernel's page cache, which holds them whether or not
// they are mapped. The store therefore lets go of its mapping (madvise
// MADV_DONTNEED on the shared, read-only map: the page table entries go,
// the cached pages stay, and the next read maps them again with a minor
// fault, without I/O) after Open, and every Options.TrimInterval when
// transactions ran but fewer than busyTxPerSecond: not in the middle of a
// storm, where every trim makes the next reads fault their pages back in
// (on this project's benchmark VM a trim every 50 ms cost a quarter of
// the CPU, in page faults: BENCHMARKS.md "Storm memory"), but within a
// TrimInterval of its end. A trim runs inside a read transaction, which
// holds bbolt's lock against remapping, so the range is always the current
// map. Nothing is written through the map (bbolt writes with pwrite), so
// nothing can be lost.

// mappingTrim runs the trims.
type mappingTrim struct {
	every time.Duration
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	last  atomic.Uint64 // txDone before the last trim
	trims atomic.Uint64 // trims done (tests)
	// rolledBack counts writable transactions always rolled back
	// (DB.exclusive), which bbolt's statistics leave out.
	rolledBack atomic.Uint64
	failed     atomic.Bool // madvise failed once: stop trying
}

// defaultTrimInterval is how soon after a burst the mapped pages go.
const defaultTrimInterval = time.Second

// busyTxPerSecond is the activity (txDone per second) above which no trim
// is done: a storm's, not a steady state's (100,000 phones refreshing
// hourly are ~30 REGISTERs a second).
const busyTxPerSecond = 2000

func (db *DB) startTrimmer(every time.Duration) {
	if every == 0 {
		every = defaultTrimInterval
	}
	m := &db.trim
	m.every = every
	m.stop, m.done = make(chan struct{}), make(chan struct{})
	if every < 0 || !canTrimMapping {
		close(m.done)
		return
	}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		busy := uint64(max(1, busyTxPerSecond*every.Seconds()))
		prev := db.txDone()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			done := db.txDone()
			quiet := done-prev < busy
			prev = done
			if quiet && db.mappingActive() {
				_ = guard("trim the data file's mapping", db.trimMapping)
				prev = db.txDone()
			}
		}
	}()
}

// stopTrimmer ends the trims before the file is closed.
func (db *DB) stopTrimmer() {
	m := &db.trim
	if m.stop == nil {
		return
	}
	m.once.Do(func() { close(m.stop) })
	<-m.done
}

// mappingActive reports transactions since the last trim: without any,
// nothing was mapped since.
func (db *DB) mappingActive() bool {
	return db.txDone() != db.trim.last.Load()
}

// txDone counts the transactions that ended, other than the trims: read
// ones, pages written by commits and rolled-back writers. It is counted at
// their end, so a transaction that read pages while a trim ran is seen by
// the next tick.
func (db *DB) txDone() uint64 {
	s := db.bolt.Stats()
	return uint64(s.TxN-s.OpenTxN) + uint64(s.TxStats.GetWrite()) + db.trim.rolledBack.Load() - db.trim.trims.Load()
}

// trimMapping lets go of every page of the map (see above).
func (db *DB) trimMapping() error {
	if db.trim.failed.Load() {
		return nil
	}
	done := db.txDone()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return dropMapping(db.bolt.Info().Data, tx.Size())
	})
	if err != nil {
		db.trim.failed.Store(true) // not worth a log line a tick: the map just stays
		return err
	}
	db.trim.trims.Add(1) // after the View: txDone leaves it out
	db.trim.last.Store(done)
	return nil
}
