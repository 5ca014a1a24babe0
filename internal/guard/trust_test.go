package guard_test

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// An office's trust survives a restart (guard closed, store closed and
// reopened): a guesser's failures from its address still block only the
// guessed user, not the office.
func TestTrustSurvivesRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	clock := storetest.NewClock()
	office := netip.MustParseAddr("192.0.2.1")
	v6 := netip.MustParseAddr("2001:db8:1::10")

	db := storetest.OpenDir(t, dir, clock)
	g := guard.New(guard.Config{MaxFailures: 3, Now: clock.Now})
	if err := g.Persist(db); err != nil {
		t.Fatal(err)
	}
	g.Succeed(office, "1001@example.test")
	g.Succeed(v6, "1002@example.test")
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	clock.Advance(10 * time.Minute) // the restart takes a while
	db = storetest.OpenDir(t, dir, clock)
	g = guard.New(guard.Config{MaxFailures: 3, Now: clock.Now})
	if err := g.Persist(db); err != nil {
		t.Fatal(err)
	}
	if !g.Trusted(office) || !g.Trusted(netip.MustParseAddr("2001:db8:1::99")) {
		t.Fatal("trust was lost at the restart")
	}
	for range 10 {
		g.Fail(office, "1009@example.test", "bad_password")
	}
	if g.Blocked(office, "1001@example.test") || !g.Blocked(office, "1009@example.test") {
		t.Fatal("after a restart, another user's failures blocked the office")
	}
	// Trust still expires an hour after the last success, restart or not.
	clock.Advance(51 * time.Minute)
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = storetest.OpenDir(t, dir, clock)
	g = guard.New(guard.Config{Now: clock.Now})
	if err := g.Persist(db); err != nil {
		t.Fatal(err)
	}
	if g.Trusted(office) {
		t.Fatal("expired trust came back from the store")
	}
	if m, err := db.TrustedSources(); err != nil || len(m) != 0 {
		t.Fatalf("stored trusted sources = %v, %v; want none left", m, err)
	}
}
