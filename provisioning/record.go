package provisioning

import (
	"log/slog"
	"sync"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// recorder writes fetch records after the answer, off the request path.
// Fetches wait in a map by device; one writer goroutine at a time takes
// everything waiting and writes it in group-committed transactions (the
// records of one round share commits), while new fetches collect for the
// next round. A device polled again before its record is written keeps one
// record, the latest (the record is a timestamp and what was served, and
// the store stamps the time of the write); a fetch that differs in what the
// audit log records (config hash, source) waits for the earlier one to be
// written, so every new config a phone received is audited.
//
// Bounded: at most maxRecordBacklog devices wait; past that a request waits
// for room before it answers, so a disk that cannot keep up slows answers
// rather than growing memory.
type recorder struct {
	db  *store.DB
	log *slog.Logger

	mu      sync.Mutex
	changed *sync.Cond // signalled after each round and when pending empties
	pending map[deviceID]store.Fetch
	writing bool      // a writer goroutine is running
	max     int       // maxRecordBacklog (tests lower it)
	last    time.Time // when the last round started: rounds are paced across writers too
}

// maxRecordBacklog bounds the devices whose fetch is waiting to be written.
const maxRecordBacklog = 4096

// writeParallel bounds the records of one round in flight at once (they
// share commits through the store's group commit).
const writeParallel = 256

func newRecorder(db *store.DB, log *slog.Logger) *recorder {
	r := &recorder{db: db, log: log, pending: map[deviceID]store.Fetch{}, max: maxRecordBacklog}
	r.changed = sync.NewCond(&r.mu)
	return r
}

// add queues f. Call it before the answer is written, so a Flush by anyone
// who has seen the answer waits for the record.
func (r *recorder) add(f store.Fetch) {
	id := deviceID{f.AccountID, f.MAC}
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		prev, waiting := r.pending[id]
		if waiting && prev.Hash == f.Hash && prev.Source == f.Source {
			r.pending[id] = f // the same fetch again: keep the latest
			return
		}
		if !waiting && len(r.pending) < r.max {
			break
		}
		r.changed.Wait()
	}
	r.pending[id] = f
	if !r.writing {
		r.writing = true
		go r.write()
	}
}

// roundGap is the least time between the starts of two rounds: a device
// polled faster than that is written once per gap (its latest fetch), so a
// burst of polls costs a few commits, not one per request.
const roundGap = 50 * time.Millisecond

// write runs rounds until nothing is waiting.
func (r *recorder) write() {
	r.mu.Lock()
	for len(r.pending) > 0 {
		// Paced from the previous round, even one of an earlier writer: a
		// commit that ends quickly must not turn each poll into a round.
		if wait := roundGap - time.Since(r.last); !r.last.IsZero() && wait > 0 {
			r.mu.Unlock()
			time.Sleep(wait) // let the next round collect
			r.mu.Lock()
		}
		r.last = time.Now()
		round := r.pending
		r.pending = make(map[deviceID]store.Fetch, len(round))
		r.changed.Broadcast() // room again
		r.mu.Unlock()
		var wg sync.WaitGroup
		sem := make(chan struct{}, writeParallel)
		for _, f := range round {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := r.db.RecordFetch(f); err != nil {
					r.log.Error("record provisioning fetch", "mac", f.MAC, "err", err)
				}
			}()
		}
		wg.Wait()
		r.mu.Lock()
	}
	r.writing = false
	r.changed.Broadcast()
	r.mu.Unlock()
}

// flush waits until every fetch added so far is written.
func (r *recorder) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.writing || len(r.pending) > 0 {
		r.changed.Wait()
	}
}
