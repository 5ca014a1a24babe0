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
			if round%2 == 1 { // instants anywhere within the seconds, some shared
				exp = t0.Add(time.Duration(r.IntN(60))*time.Second + time.Duration(r.IntN(4))*250*time.Millisecond + time.Duration(r.IntN(3))).UnixNano()
			}
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
			if round%2 == 1 {
				now = now.Add(time.Duration(r.Int64N(int64(time.Second))))
			}
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
	if len(l.secs) > 2 || len(l.soon) > 4 {
		t.Fatalf("after 10000 refreshes: %d seconds, %d heap entries", len(l.secs), len(l.soon))
	}
	if got := l.live(now); got != 1 {
		t.Fatalf("live = %d, want 1", got)
	}
}

// TestLiveIndexExactWithinSecond: a binding is live up to the nanosecond
// before its expiry, and its neighbours in the same second are not taken
// out with it.
func TestLiveIndexExactWithinSecond(t *testing.T) {
	l := newLiveIndex()
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	a, b := t0.Add(10*time.Second+500*time.Millisecond), t0.Add(10*time.Second+500*time.Millisecond+1)
	l.apply([]bindingChange{{expires: a.UnixNano(), delta: +1}, {expires: b.UnixNano(), delta: +1}, {expires: b.UnixNano(), delta: +1}}, t0)
	for _, c := range []struct {
		at   time.Time
		want int
	}{{t0, 3}, {a.Add(-1), 3}, {a, 2}, {b.Add(-1), 2}, {b, 0}} {
		if got := l.live(c.at); got != c.want {
			t.Fatalf("live(%s) = %d, want %d", c.at.Format(time.RFC3339Nano), got, c.want)
		}
	}
	if len(l.secs) != 0 {
		t.Fatalf("%d seconds left after every instant passed", len(l.secs))
	}
}
