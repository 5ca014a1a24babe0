package store

import (
	"bytes"
	"math"
	"sync"
)

// sweepIndex tells PruneExpired which addresses of record may hold an
// expired binding row, so the sweep reads those AORs instead of every row.
// For each AOR it keeps an instant no row of it expires before; a write
// only ever lowers it, and the sweep, having read the AOR, sets it to the
// AOR's earliest remaining expiry. It is never too late: every write of a
// binding row lowers it first (Register, a pure refresh), and Open reads
// every row. It may be too early, which costs one AOR read.
//
// Memory is one map entry per AOR with bindings, however often they refresh.
type sweepIndex struct {
	mu   sync.Mutex
	next map[string]int64 // "acct/user" → Unix ns
}

// lower records bindings of aor that exist (or may) after a write.
func (s *sweepIndex) lower(aor string, bs []Binding) {
	if len(bs) == 0 {
		return
	}
	e := int64(math.MaxInt64)
	for _, b := range bs {
		e = min(e, b.ExpiresAt.UnixNano())
	}
	s.lowerTo(aor, e)
}

func (s *sweepIndex) lowerTo(aor string, e int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.next[aor]; !ok || e < cur {
		s.next[aor] = e
	}
}

// due returns the AORs that may hold a row expired at now, with the value
// seen (for settle).
func (s *sweepIndex) due(now int64) map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for aor, e := range s.next {
		if e <= now {
			out[aor] = e
		}
	}
	return out
}

// settle records what a committed sweep left: kept[aor] is the AOR's
// earliest remaining expiry, absent if it has no rows left. An AOR lowered
// since due keeps the lower value.
func (s *sweepIndex) settle(seen, kept map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for aor, was := range seen {
		cur, ok := s.next[aor]
		e, left := kept[aor]
		switch {
		case !ok:
		case cur != was: // lowered meanwhile by a write committed after the sweep
			if left {
				s.next[aor] = min(cur, e)
			}
		case left:
			s.next[aor] = e
		default:
			delete(s.next, aor)
		}
	}
}

// aorOf is the "acct/user" prefix of a binding row key.
func aorOf(key []byte) string {
	i := bytes.IndexByte(key, '/')
	if i < 0 {
		return string(key)
	}
	j := bytes.IndexByte(key[i+1:], '/')
	if j < 0 {
		return string(key)
	}
	return string(key[:i+1+j])
}
