package store

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestLiveIndexOrderFree: commit reports applied in any order, with reads in
// between, end at the same count as applying them in commit order.
func TestLiveIndexOrderFree(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DIALTONE_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DIALTONE_TEST_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (DIALTONE_TEST_SEED=%d repeats this run)", seed, seed)
	r := rand.New(rand.NewPCG(seed, 7))
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	for round := range 200 {
		// A history of rows: each added at some instant and maybe removed.
		var reports [][]bindingChange
		want := 0
		end := t0.Add(30 * time.Second)
		for range 1 + r.IntN(20) {
			exp := t0.Add(time.Duration(r.IntN(60)) * time.Second).UnixNano()
			reports = append(reports, []bindingChange{{expires: exp, delta: +1}})
			removed := r.IntN(2) == 0
			if removed {
				reports = append(reports, []bindingChange{{expires: exp, delta: -1}})
			}
			if !removed && exp > end.UnixNano() {
				want++
			}
		}
		l := newLiveIndex()
		now := t0
		for _, i := range r.Perm(len(reports)) {
			if r.IntN(3) == 0 {
				l.live(now)
			}
			l.apply(reports[i], now)
			now = now.Add(time.Duration(r.IntN(2)) * time.Second) // commits move time forward
			if now.After(end) {
				now = end
			}
		}
		if got := l.live(end); got != want {
			t.Fatalf("round %d: live = %d, want %d (seed %d)", round, got, want, seed)
		}
	}
}

// TestLiveIndexBoundedWithoutReads: a binding refreshed over and over, with
// nobody reading the count, leaves no growing table behind.
func TestLiveIndexBoundedWithoutReads(t *testing.T) {
	l := newLiveIndex()
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	exp := now.Add(600 * time.Second)
	l.apply([]bindingChange{{expires: exp.UnixNano(), delta: +1}}, now)
	for range 10000 {
		now = now.Add(300 * time.Second) // refresh at half the expiry
		next := now.Add(600 * time.Second)
		l.apply([]bindingChange{{expires: exp.UnixNano(), delta: -1}, {expires: next.UnixNano(), delta: +1}}, now)
		exp = next
	}
	if len(l.counts) > 2 || len(l.soon) > 4 {
		t.Fatalf("after 10000 refreshes: %d instants, %d heap entries", len(l.counts), len(l.soon))
	}
	if got := l.live(now); got != 1 {
		t.Fatalf("live = %d, want 1", got)
	}
}
