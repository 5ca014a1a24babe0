package store

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// liveIndex counts live bindings as they change, so that reading the count
// never scans the bindings bucket.
//
// Every committed transaction that writes or deletes a binding row reports
// the expiry of each row it added (+1) and of each row it removed (-1); a
// refresh is both. The index keeps, per expiry instant, how many rows expire
// then, and the total. Reading the count at now first takes out every expiry
// instant at or before now (those bindings have expired, whether or not a
// sweeper has removed their rows yet), so the answer is exact at the moment
// it is read: Binding.Live and the count agree.
//
// Commit callbacks run after bbolt releases its writer lock, so two
// transactions' reports may arrive in either order. Each report only adds to
// counters, and a report for an instant that has already been taken out is
// dropped (the row was counted as expired then), so the order does not
// change the result. Between two such callbacks a read may be off by the
// changes still in flight, as any gauge read during a write is.
type liveIndex struct {
	mu    sync.Mutex
	total int                   // rows with an expiry after cut
	secs  map[int64]*liveSecond // second of the expiry → its instants; only instants after cut
	soon  expiryHeap            // the keys of secs (and of forgotten seconds), soonest first
	cut   int64                 // every instant at or before cut has been taken out of total
}

// liveSecond holds the expiry instants within one second, by their
// nanosecond, sorted, with the rows that expire at each: 8 bytes an
// instant (a map and a heap entry per instant were ~40), and every
// binding of a storm has its own instant.
type liveSecond struct {
	at []liveInstant
}

type liveInstant struct {
	ns int32 // within the second, 0 ≤ ns < 1e9
	n  int32 // rows (negative while a removal's report is ahead of its add's)
}

// bindingChange is one binding row added (+1) or removed (-1), by expiry.
type bindingChange struct {
	expires int64
	delta   int
}

func newLiveIndex() *liveIndex {
	return &liveIndex{secs: map[int64]*liveSecond{}}
}

// splitNanos splits Unix nanoseconds into the second and the nanosecond
// within it (0 ≤ ns < 1e9, also before 1970).
func splitNanos(e int64) (sec int64, ns int32) {
	sec, r := e/1e9, e%1e9
	if r < 0 {
		sec, r = sec-1, r+1e9
	}
	return sec, int32(r)
}

// find is the index of ns in s.at, or where it would go.
func (s *liveSecond) find(ns int32) int {
	return sort.Search(len(s.at), func(i int) bool { return s.at[i].ns >= ns })
}

// apply records committed changes, as of now.
func (l *liveIndex) apply(cs []bindingChange, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	for _, c := range cs {
		if c.expires <= l.cut {
			continue // already counted as expired
		}
		sec, ns := splitNanos(c.expires)
		s := l.secs[sec]
		if s == nil {
			s = &liveSecond{}
			l.secs[sec] = s
			heap.Push(&l.soon, sec)
		}
		i := s.find(ns)
		if i < len(s.at) && s.at[i].ns == ns {
			if s.at[i].n += int32(c.delta); s.at[i].n == 0 {
				// Forget the instant.
				s.at = append(s.at[:i], s.at[i+1:]...)
			}
		} else {
			s.at = append(s.at, liveInstant{})
			copy(s.at[i+1:], s.at[i:])
			s.at[i] = liveInstant{ns: ns, n: int32(c.delta)}
		}
		if len(s.at) == 0 {
			// Forget the second; its heap entry is skipped when it comes up.
			delete(l.secs, sec)
		}
		l.total += c.delta
	}
}

// live is the number of bindings unexpired at now.
func (l *liveIndex) live(now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(now)
	return max(l.total, 0) // a removal's report may land before its add's
}

// expire takes every instant at or before now out of the count. It runs on
// every read and every commit, so the table holds only future instants
// (plus heap entries of forgotten seconds, at most one per refresh within
// the longest expiry) whether or not anyone reads the count.
func (l *liveIndex) expire(now time.Time) {
	if cut := now.UnixNano(); cut > l.cut {
		l.cut = cut
	}
	cutSec, cutNs := splitNanos(l.cut)
	for len(l.soon) > 0 && l.soon[0] < cutSec {
		sec := heap.Pop(&l.soon).(int64)
		if s := l.secs[sec]; s != nil { // nil if forgotten
			for _, in := range s.at {
				l.total -= int(in.n)
			}
			delete(l.secs, sec)
		}
	}
	// The current second: the instants up to cut.
	if s := l.secs[cutSec]; s != nil {
		i := s.find(cutNs + 1)
		for _, in := range s.at[:i] {
			l.total -= int(in.n)
		}
		s.at = s.at[i:]
		if len(s.at) == 0 {
			delete(l.secs, cutSec)
		}
	}
}

type expiryHeap []int64

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *expiryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bindingAdded and bindingRemoved report a binding row written or deleted in
// t; the live count sees them once t commits, and never if it rolls back.
func (t *tx) bindingAdded(expires time.Time)   { t.bindingChange(expires, +1) }
func (t *tx) bindingRemoved(expires time.Time) { t.bindingChange(expires, -1) }

func (t *tx) bindingChange(expires time.Time, delta int) {
	if t.changes == nil {
		t.changes = &[]bindingChange{}
		cs, live := t.changes, t.db.live
		t.OnCommit(func() { live.apply(*cs, t.db.now()) })
	}
	*t.changes = append(*t.changes, bindingChange{expires: expires.UnixNano(), delta: delta})
}

// loadLive counts the binding rows already on disk (at Open, before anything
// removes one), and fills the sweep index; rows already expired are taken
// out of the count at once.
func (db *DB) loadLive() error {
	var cs []bindingChange
	var maxRev uint64
	err := db.view(func(t *tx) error {
		if et, ok := t.kvTx.(*etcdTx); ok {
			// etcd: the rows of this node's previous run, to adopt.
			defer func() { et.s.adoptRev = et.rev }()
		}
		return t.Bucket(bBindings).ForEach(func(key, v []byte) error {
			if db.etcd != nil && ownRow(v, db.node) {
				full, row := db.etcd.root+string(bBindings)+"/"+string(key), bytes.Clone(v)
				db.etcd.adopt = append(db.etcd.adopt, etcdRow{key: full, old: row, val: row})
			}
			e, err := bindingExpiry(v)
			if err == nil {
				cs = append(cs, bindingChange{expires: e, delta: +1})
			} else {
				e = math.MinInt64 // unreadable: the first sweep removes it
			}
			db.sweep.lowerTo(aorOf(key), e)
			if len(v) > 9 && v[0] == encodingBindingV2 {
				if rev, n := binary.Uvarint(v[9:]); n > 0 && rev > maxRev {
					maxRev = rev
				}
			}
			return nil
		})
	})
	db.live.apply(cs, db.now())
	db.rev.Store(maxRev)
	return err
}

// LiveBindings is the number of unexpired bindings in every account. It reads
// a count kept as bindings change, not the bindings themselves.
func (db *DB) LiveBindings() int { return db.live.live(db.now()) }

// RegisterMetrics registers the store's gauges on reg:
// dialtone_sip_registrations_live (LiveBindings). A gauge already registered
// by another DB on the same registry is left in place.
func (db *DB) RegisterMetrics(reg prometheus.Registerer) error {
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dialtone_sip_registrations_live",
		Help: "Unexpired SIP registrations (bindings) in every account, counted as they change.",
	}, func() float64 { return float64(db.LiveBindings()) })
	if err := reg.Register(g); err != nil {
		if _, ok := err.(prometheus.AlreadyRegisteredError); ok {
			return nil
		}
		return err
	}
	return nil
}
