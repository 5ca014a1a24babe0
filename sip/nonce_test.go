package sip

import (
	"testing"
	"time"
)

func TestNonces(t *testing.T) {
	n, err := newNonces(time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	a := n.issue("example.test", t0)
	if len(a) != nonceLen {
		t.Fatalf("nonce %q has length %d, want %d", a, len(a), nonceLen)
	}
	if b := n.issue("example.test", t0); b == a {
		t.Errorf("two nonces issued at the same instant are equal")
	}
	if st, _ := n.check(a, "example.test", t0.Add(59*time.Second)); st != nonceFresh {
		t.Errorf("check(fresh) = %v, want fresh", st)
	}
	if st, _ := n.check(a, "other.test", t0); st != nonceBad {
		t.Errorf("check(other realm) = %v, want bad", st)
	}
	if st, _ := n.check(a, "example.test", t0.Add(61*time.Second)); st != nonceStale {
		t.Errorf("check(old) = %v, want stale", st)
	}
	if st, _ := n.check(a, "example.test", t0.Add(-2*time.Minute)); st != nonceStale {
		t.Errorf("check(from the future) = %v, want stale", st)
	}
	tampered := []byte(a)
	tampered[3] ^= 1
	for _, bad := range []string{"", "x", string(tampered), a + "A", a[:len(a)-1] + "!"} {
		if st, _ := n.check(bad, "example.test", t0); st != nonceBad {
			t.Errorf("check(%q) = %v, want bad", bad, st)
		}
	}
	other, err := newNonces(time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := other.check(a, "example.test", t0); st != nonceBad {
		t.Errorf("another process's key accepted the nonce")
	}

	// Nonce counts: strictly increasing per nonce.
	_, k := n.check(a, "example.test", t0)
	for _, step := range []struct {
		nc        uint32
		ok, stale bool
	}{{1, true, false}, {1, false, false}, {3, true, false}, {2, false, false}, {4, true, false}} {
		ok, stale := n.use(k, step.nc, t0)
		if ok != step.ok || stale != step.stale {
			t.Errorf("use(nc=%d) = %v, %v; want %v, %v", step.nc, ok, stale, step.ok, step.stale)
		}
	}
}

func TestNonceTableBounded(t *testing.T) {
	const max = 8
	n, err := newNonces(time.Minute, max)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	first := n.issue("r", t0)
	_, kFirst := n.check(first, "r", t0)
	if ok, _ := n.use(kFirst, 1, t0); !ok {
		t.Fatal("first use refused")
	}
	// Flood the table with other nonces (issued later).
	for i := 0; i < 10*max; i++ {
		now := t0.Add(time.Duration(i+1) * time.Millisecond)
		_, k := n.check(n.issue("r", now), "r", now)
		if ok, _ := n.use(k, 1, now); !ok {
			t.Fatalf("use %d refused", i)
		}
		if s := n.size(); s > 2*max {
			t.Fatalf("table holds %d entries, want at most %d", s, 2*max)
		}
	}
	// The first nonce's entry was dropped: a replay of it must not pass
	// as a first use; it is treated as stale instead.
	now := t0.Add(time.Second)
	if ok, stale := n.use(kFirst, 1, now); ok || !stale {
		t.Errorf("replay after eviction = ok %v stale %v, want refused as stale", ok, stale)
	}
	// Time-based rotation: after two TTLs everything old is gone.
	later := t0.Add(3 * time.Minute)
	_, k := n.check(n.issue("r", later), "r", later)
	n.use(k, 1, later)
	later = later.Add(2 * time.Minute)
	_, k = n.check(n.issue("r", later), "r", later)
	n.use(k, 1, later)
	if s := n.size(); s > 2 {
		t.Errorf("after rotations the table holds %d entries, want at most 2", s)
	}
}
