package store_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store/storetest"
)

func TestTrustedSources(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	if m, err := db.TrustedSources(); err != nil || len(m) != 0 {
		t.Fatalf("TrustedSources on a new store = %v, %v", m, err)
	}
	now := clock.Now()
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::")
	err := db.SaveTrustedSources(map[netip.Addr]time.Time{
		v4: now.Add(time.Hour), v6: now.Add(2 * time.Hour),
		netip.MustParseAddr("198.51.100.1"): now.Add(-time.Second), // expired: not kept
		{}:                                  now.Add(time.Hour),    // no address: not kept
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := db.TrustedSources()
	if err != nil || len(m) != 2 || !m[v4].Equal(now.Add(time.Hour)) || !m[v6].Equal(now.Add(2*time.Hour)) {
		t.Fatalf("TrustedSources = %v, %v; want the two live ones", m, err)
	}
	clock.Advance(90 * time.Minute)
	if m, _ := db.TrustedSources(); len(m) != 1 || m[v6].IsZero() {
		t.Fatalf("after an hour and a half = %v, want the IPv6 one", m)
	}
	if err := db.SaveTrustedSources(nil); err != nil {
		t.Fatal(err)
	}
	if m, _ := db.TrustedSources(); len(m) != 0 {
		t.Fatalf("after saving none = %v", m)
	}
}
