package digest

import (
	"net/netip"
	"testing"
	"time"
)

var (
	phoneIP = netip.MustParseAddr("192.0.2.10")
	otherIP = netip.MustParseAddr("198.51.100.7")
)

func TestNonces(t *testing.T) {
	n, err := NewNonces(time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	a := n.Issue("example.test", phoneIP, t0)
	if len(a) != nonceLen {
		t.Fatalf("nonce %q has length %d, want %d", a, len(a), nonceLen)
	}
	if b := n.Issue("example.test", phoneIP, t0); b == a {
		t.Errorf("two nonces issued at the same instant are equal")
	}
	for _, c := range []struct {
		name  string
		realm string
		src   netip.Addr
		at    time.Time
		want  State
	}{
		{"fresh", "example.test", phoneIP, t0.Add(59 * time.Second), Fresh},
		{"IPv4-mapped form of the same address", "example.test", netip.MustParseAddr("::ffff:192.0.2.10"), t0, Fresh},
		{"other realm", "other.test", phoneIP, t0, Bad},
		{"other source address", "example.test", otherIP, t0, Bad},
		{"no source address", "example.test", netip.Addr{}, t0, Bad},
		{"expired", "example.test", phoneIP, t0.Add(61 * time.Second), Stale},
		{"from the future", "example.test", phoneIP, t0.Add(-2 * time.Minute), Stale},
	} {
		if st, _ := n.Check(a, c.realm, c.src, c.at); st != c.want {
			t.Errorf("%s: Check = %v, want %v", c.name, st, c.want)
		}
	}
	tampered := []byte(a)
	tampered[3] ^= 1
	for _, bad := range []string{"", "x", string(tampered), a + "A", a[:len(a)-1] + "!"} {
		if st, _ := n.Check(bad, "example.test", phoneIP, t0); st != Bad {
			t.Errorf("Check(%q) = %v, want bad", bad, st)
		}
	}
	other, err := NewNonces(time.Minute, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := other.Check(a, "example.test", phoneIP, t0); st != Bad {
		t.Errorf("another process's key accepted the nonce")
	}
	// A nonce issued without an address verifies only without one.
	z := n.Issue("example.test", netip.Addr{}, t0)
	if st, _ := n.Check(z, "example.test", netip.Addr{}, t0); st != Fresh {
		t.Errorf("address-less nonce = %v, want fresh", st)
	}
	if st, _ := n.Check(z, "example.test", phoneIP, t0); st != Bad {
		t.Errorf("address-less nonce from an address = %v, want bad", st)
	}

	// Nonce counts: strictly increasing per nonce.
	_, k := n.Check(a, "example.test", phoneIP, t0)
	for _, step := range []struct {
		nc        uint32
		ok, stale bool
	}{{1, true, false}, {1, false, false}, {3, true, false}, {2, false, false}, {4, true, false}} {
		ok, stale := n.Use(k, step.nc, t0)
		if ok != step.ok || stale != step.stale {
			t.Errorf("Use(nc=%d) = %v, %v; want %v, %v", step.nc, ok, stale, step.ok, step.stale)
		}
	}
	if _, err := NewNonces(0, 4); err == nil {
		t.Error("NewNonces(0, 4) accepted a zero TTL")
	}
}

// The count table holds at most twice its maximum, and a nonce whose entry
// was dropped early is stale, never usable again from count 1.
func TestNonceTableAtItsCap(t *testing.T) {
	const max = 8
	n, err := NewNonces(time.Minute, max)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	first := n.Issue("r", phoneIP, t0)
	_, kFirst := n.Check(first, "r", phoneIP, t0)
	if ok, _ := n.Use(kFirst, 1, t0); !ok {
		t.Fatal("first use refused")
	}
	full := false
	for i := 0; i < 10*max; i++ {
		now := t0.Add(time.Duration(i+1) * time.Millisecond)
		_, k := n.Check(n.Issue("r", phoneIP, now), "r", phoneIP, now)
		if ok, _ := n.Use(k, 1, now); !ok {
			t.Fatalf("use %d refused", i)
		}
		s := n.Size()
		if s > 2*max {
			t.Fatalf("table holds %d entries, want at most %d", s, 2*max)
		}
		full = full || s == 2*max
	}
	if !full {
		t.Error("the table never reached its cap")
	}
	now := t0.Add(time.Second)
	if ok, stale := n.Use(kFirst, 1, now); ok || !stale {
		t.Errorf("replay after eviction = ok %v stale %v, want refused as stale", ok, stale)
	}
	later := t0.Add(3 * time.Minute)
	_, k := n.Check(n.Issue("r", phoneIP, later), "r", phoneIP, later)
	n.Use(k, 1, later)
	later = later.Add(2 * time.Minute)
	_, k = n.Check(n.Issue("r", phoneIP, later), "r", phoneIP, later)
	n.Use(k, 1, later)
	if s := n.Size(); s > 2 {
		t.Errorf("after rotations the table holds %d entries, want at most 2", s)
	}
}
