package store_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// wantLive checks the counted live bindings against want and against a full
// scan of the bindings bucket.
func wantLive(t *testing.T, db *store.DB, want int, step string) {
	t.Helper()
	scan, err := store.ScanLiveBindings(db)
	if err != nil {
		t.Fatalf("%s: ScanLiveBindings() = %v", step, err)
	}
	if got := db.LiveBindings(); got != want || scan != want {
		t.Fatalf("%s: LiveBindings() = %d, scan = %d, want %d", step, got, scan, want)
	}
}

// TestLiveBindingsCounted: the live count follows every way a binding comes
// and goes (REGISTER, refresh, Expires 0, Contact *, eviction, expiry by the
// clock with no prune, prune, sign-out, user deletion, restart), always equal
// to a full scan, and the gauge reads it.
func TestLiveBindingsCounted(t *testing.T) {
	clock := storetest.NewClock()
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, clock)
	mustAccount(t, db)
	ada, bob := mustUser(t, db, "1002"), mustUser(t, db, "1003")
	reg := prometheus.NewRegistry()
	if err := db.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := db.RegisterMetrics(reg); err != nil {
		t.Fatalf("second RegisterMetrics on one registry = %v", err)
	}
	register := func(u store.User, callID string, cseq uint32, cs ...store.ContactUpdate) {
		t.Helper()
		r := store.RegisterRequest{AccountID: u.AccountID, UserID: u.ID, CallID: callID, CSeq: cseq,
			Source: "192.0.2.7:5062", Transport: "udp", Contacts: cs}
		if _, err := db.Register(r); err != nil {
			t.Fatalf("Register(%s %s/%d) = %v", u.Extension, callID, cseq, err)
		}
	}
	contact := func(n, expires int) store.ContactUpdate {
		return store.ContactUpdate{URI: fmt.Sprintf("sip:x@192.0.2.%d", n), Expires: expires}
	}

	wantLive(t, db, 0, "empty")
	register(ada, "a", 1, contact(1, 600), contact(2, 60))
	register(bob, "b", 1, contact(3, 600))
	wantLive(t, db, 3, "three registered")
	if got := gauge(t, reg); got != 3 {
		t.Fatalf("dialtone_sip_registrations_live = %v, want 3", got)
	}
	register(ada, "a", 2, contact(1, 600)) // refresh: same binding
	wantLive(t, db, 3, "refresh")
	register(ada, "a", 3, contact(2, 0)) // unregister one
	wantLive(t, db, 2, "Expires 0")

	clock.Advance(5 * time.Minute)
	register(ada, "a", 4, contact(2, 60))
	wantLive(t, db, 3, "re-registered")
	clock.Advance(61 * time.Second) // contact 2 expires; nothing prunes it
	wantLive(t, db, 2, "expired, not pruned")
	if n, err := db.PruneExpired(); err != nil || n != 1 {
		t.Fatalf("PruneExpired() = %d, %v; want 1", n, err)
	}
	wantLive(t, db, 2, "pruned")
	clock.Advance(5 * time.Minute) // ada's refreshed contact 1 and bob's contact 3 (600 s) expired
	wantLive(t, db, 0, "refreshed binding expired")
	register(ada, "a", 5, contact(4, 600)) // Register prunes ada's expired row as it goes
	wantLive(t, db, 1, "register after expiry")

	// Eviction at the per-AOR limit (10): the 11th contact replaces one.
	for i := 10; i <= 20; i++ {
		register(bob, "b", uint32(i), contact(i, 900+i))
	}
	wantLive(t, db, 11, "bob at the contact limit")

	rm := store.RegisterRequest{AccountID: bob.AccountID, UserID: bob.ID, CallID: "b", CSeq: 99, RemoveAll: true}
	if _, err := db.Register(rm); err != nil {
		t.Fatal(err)
	}
	wantLive(t, db, 1, "Contact: *")

	register(bob, "b", 100, contact(30, 600), contact(31, 600))
	if _, err := db.SignOut(bob.AccountID, bob.ID, admin); err != nil {
		t.Fatal(err)
	}
	wantLive(t, db, 1, "sign-out")

	// A deleted user's expired rows go with the user, without counting twice.
	register(bob, "b", 101, contact(32, 60))
	clock.Advance(2 * time.Minute)
	wantLive(t, db, 1, "bob's binding expired")
	if _, err := db.DisableUser(bob.AccountID, bob.ID, admin); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(bob.AccountID, bob.ID, admin); err != nil {
		t.Fatal(err)
	}
	wantLive(t, db, 1, "bob deleted")

	// Restart: one live, one that expires while the store is closed.
	register(ada, "a", 6, contact(5, 120))
	wantLive(t, db, 2, "before restart")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Minute)
	db = storetest.OpenDir(t, dir, clock)
	wantLive(t, db, 1, "after restart")
	clock.Advance(10 * time.Minute)
	wantLive(t, db, 0, "all expired after restart")
}

// gauge reads dialtone_sip_registrations_live from reg.
func gauge(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "dialtone_sip_registrations_live" && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("dialtone_sip_registrations_live not registered")
	return 0
}

// TestLiveBindingsConcurrent: REGISTERs group-committed in one batch, and
// sign-outs committing in between, report their changes after bbolt has let
// the next writer in; the count still ends equal to a scan.
func TestLiveBindingsConcurrent(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	mustAccount(t, db)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		u := mustUser(t, db, fmt.Sprintf("20%02d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 1; j <= 30; j++ {
				exp := 60 + j%3*60
				if j%7 == 0 {
					exp = 0
				}
				if _, err := db.Register(reg(u, "c", uint32(j), fmt.Sprintf("sip:x@192.0.2.%d", j%4), exp)); err != nil {
					t.Error(err)
					return
				}
				if j%11 == 0 {
					if _, err := db.SignOut(u.AccountID, u.ID, admin); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	scan, err := store.ScanLiveBindings(db)
	if err != nil {
		t.Fatal(err)
	}
	if scan == 0 {
		t.Fatal("no live bindings: the test registered nothing")
	}
	wantLive(t, db, scan, "after concurrent writes")
	clock.Advance(90 * time.Second)
	scan, _ = store.ScanLiveBindings(db)
	wantLive(t, db, scan, "after some expired")
}
