package store_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// diskBinding is the one binding row of u as stored, without pending refreshes.
func diskBinding(t *testing.T, db *store.DB, u store.User) store.Binding {
	t.Helper()
	bs, err := store.DiskBindingsForTest(db, u.AccountID, u.ID)
	if err != nil || len(bs) != 1 {
		t.Fatalf("binding rows on disk = %+v, %v; want one", bs, err)
	}
	return bs[0]
}

// onlyBinding is the one live binding of u, as every reader sees it.
func onlyBinding(t *testing.T, db *store.DB, u store.User) store.Binding {
	t.Helper()
	bs, err := db.Bindings(u.AccountID, u.ID)
	if err != nil || len(bs) != 1 {
		t.Fatalf("Bindings() = %+v, %v; want one", bs, err)
	}
	return bs[0]
}

// TestPureRefreshKill: a pure refresh is answered before its write; a crash
// before the write leaves the binding with its previous expiry (never gone),
// and once written the new expiry survives the crash too.
func TestPureRefreshKill(t *testing.T) {
	storetest.BoltOnly(t, "the refresh overlay and a crash of the bbolt process")
	clock := storetest.NewClock()
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{Now: clock.Now, RefreshWriteDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	t0 := clock.Now()
	if _, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	if got := diskBinding(t, db, u).ExpiresAt; !got.Equal(t0.Add(600 * time.Second)) {
		t.Fatalf("a new binding is not on disk when Register returns: %v", got)
	}
	clock.Advance(5 * time.Minute)
	out, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600))
	want := clock.Now().Add(600 * time.Second)
	if err != nil || len(out) != 1 || !out[0].ExpiresAt.Equal(want) || out[0].CSeq != 2 {
		t.Fatalf("refresh = %+v, %v", out, err)
	}
	if got := onlyBinding(t, db, u); !got.ExpiresAt.Equal(want) || !got.RegisteredAt.Equal(t0) {
		t.Fatalf("Bindings() after refresh = %+v, want expiry %v", got, want)
	}
	if got := diskBinding(t, db, u); !got.ExpiresAt.Equal(t0.Add(600*time.Second)) || store.PendingRefreshesForTest(db) != 1 {
		t.Fatalf("the refresh was written before its answer (disk %v, pending %d): not the fast path", got.ExpiresAt, store.PendingRefreshesForTest(db))
	}
	// Out of order against the acknowledged (not yet written) CSeq.
	if _, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600)); !errors.Is(err, store.ErrOutOfOrder) {
		t.Fatalf("repeated CSeq after a pending refresh = %v, want ErrOutOfOrder", err)
	}
	if err := store.CrashCloseForTest(db); err != nil {
		t.Fatal(err)
	}
	db = storetest.OpenDir(t, dir, clock)
	if got := onlyBinding(t, db, u); !got.ExpiresAt.Equal(t0.Add(600 * time.Second)) {
		t.Fatalf("after a crash: %+v, want the previous expiry %v", got, t0.Add(600*time.Second))
	}
	if db.LiveBindings() != 1 {
		t.Fatalf("LiveBindings() = %d", db.LiveBindings())
	}

	// Refresh again, write it, crash: the new expiry survives.
	clock.Advance(time.Minute)
	if _, err := db.Register(reg(u, "c1", 3, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	want = clock.Now().Add(600 * time.Second)
	if err := store.FlushRefreshesForTest(db); err != nil {
		t.Fatal(err)
	}
	if got := diskBinding(t, db, u); !got.ExpiresAt.Equal(want) || got.CSeq != 3 || store.PendingRefreshesForTest(db) != 0 {
		t.Fatalf("after the flush: disk %+v, pending %d", got, store.PendingRefreshesForTest(db))
	}
	if err := store.CrashCloseForTest(db); err != nil {
		t.Fatal(err)
	}
	db = storetest.OpenDir(t, dir, clock)
	if got := onlyBinding(t, db, u); !got.ExpiresAt.Equal(want) {
		t.Fatalf("after the flush and a crash: %v, want %v", got.ExpiresAt, want)
	}
	// A graceful Close writes what is pending.
	clock.Advance(time.Minute)
	if _, err := db.Register(reg(u, "c1", 4, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	want = clock.Now().Add(600 * time.Second)
	db.Close()
	db = storetest.OpenDir(t, dir, clock)
	if got := onlyBinding(t, db, u); !got.ExpiresAt.Equal(want) {
		t.Fatalf("after Close: %v, want %v", got.ExpiresAt, want)
	}
}

// TestPureRefreshNeverResurrects: a binding removed after a pending refresh
// stays removed, written or crashed.
func TestPureRefreshNeverResurrects(t *testing.T) {
	storetest.BoltOnly(t, "the refresh overlay and a crash of the bbolt process")
	for _, crash := range []bool{false, true} {
		clock := storetest.NewClock()
		dir := t.TempDir()
		db, err := store.Open(dir, store.Options{Now: clock.Now, RefreshWriteDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		mustAccount(t, db)
		u := mustUser(t, db, "1002")
		if _, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600)); err != nil {
			t.Fatal(err)
		}
		if store.PendingRefreshesForTest(db) != 1 {
			t.Fatal("the refresh did not take the fast path")
		}
		if _, err := db.Register(reg(u, "c1", 3, "sip:1002@192.0.2.7", 0)); err != nil {
			t.Fatal(err)
		}
		if err := store.FlushRefreshesForTest(db); err != nil {
			t.Fatal(err)
		}
		if crash {
			store.CrashCloseForTest(db)
		} else {
			db.Close()
		}
		db = storetest.OpenDir(t, dir, clock)
		if bs, err := db.Bindings(u.AccountID, u.ID); err != nil || len(bs) != 0 || db.LiveBindings() != 0 {
			t.Fatalf("crash=%v: removed binding came back: %+v, %v, live %d", crash, bs, err, db.LiveBindings())
		}
		if rows, _ := store.DiskBindingsForTest(db, u.AccountID, u.ID); len(rows) != 0 {
			t.Fatalf("crash=%v: rows on disk: %+v", crash, rows)
		}
		db.Close()
	}
}

// TestOnlyPureRefreshesWait: every REGISTER that changes more than the
// expiry is on disk when Register returns.
func TestOnlyPureRefreshesWait(t *testing.T) {
	clock := storetest.NewClock()
	db, err := store.Open(t.TempDir(), store.Options{Now: clock.Now, RefreshWriteDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	cases := []struct {
		name   string
		change func(*store.RegisterRequest)
	}{
		{"source", func(r *store.RegisterRequest) { r.Source = "192.0.2.8:5062" }},
		{"transport", func(r *store.RegisterRequest) { r.Transport = "TCP" }},
		{"call-id", func(r *store.RegisterRequest) { r.CallID = "other" }},
		{"user agent", func(r *store.RegisterRequest) { r.UserAgent = "Yealink SIP-T54W 96.86.0.1" }},
		{"q", func(r *store.RegisterRequest) { r.Contacts[0].Q = "0.5" }},
		{"instance", func(r *store.RegisterRequest) { r.Contacts[0].InstanceID = "urn:uuid:1" }},
		{"removal", func(r *store.RegisterRequest) { r.Contacts[0].Expires = 0 }},
		{"second contact", func(r *store.RegisterRequest) {
			r.Contacts = append(r.Contacts, store.ContactUpdate{URI: "sip:x@192.0.2.9", Expires: 60})
		}},
	}
	for i, c := range cases {
		u := mustUser(t, db, fmt.Sprintf("30%02d", i))
		if _, err := db.Register(reg(u, "c1", 1, "sip:x@192.0.2.7", 600)); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		r := reg(u, "c1", 2, "sip:x@192.0.2.7", 900)
		c.change(&r)
		out, err := db.Register(r)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if store.PendingRefreshesForTest(db) != 0 {
			t.Fatalf("%s: answered before its write", c.name)
		}
		rows, _ := store.DiskBindingsForTest(db, u.AccountID, u.ID)
		for _, b := range out {
			found := false
			for _, row := range rows {
				found = found || row.Contact == b.Contact && row.ExpiresAt.Equal(b.ExpiresAt) && row.CSeq == b.CSeq
			}
			if !found {
				t.Fatalf("%s: answered %+v, disk has %+v", c.name, b, rows)
			}
		}
	}
}

// TestPendingRefreshKeepsBindingLive: once the expiry on disk has passed, a
// binding whose refresh is not yet written is still live for every reader:
// the live count, the sweeper and the deletion check.
func TestPendingRefreshKeepsBindingLive(t *testing.T) {
	clock := storetest.NewClock()
	db, err := store.Open(t.TempDir(), store.Options{Now: clock.Now, RefreshWriteDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	if _, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 60)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(50 * time.Second)
	if _, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 60)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second) // 70 s: expired on disk, live by the refresh
	if n, err := db.PruneExpired(); err != nil || n != 0 {
		t.Fatalf("PruneExpired() = %d, %v; want 0", n, err)
	}
	if db.LiveBindings() != 1 {
		t.Fatalf("LiveBindings() = %d, want 1", db.LiveBindings())
	}
	onlyBinding(t, db, u)
	if all, _ := db.AccountBindings(u.AccountID); len(all) != 1 {
		t.Fatalf("AccountBindings() = %+v", all)
	}
	if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	var inUse *store.InUseError
	if err := db.DeleteUser(u.AccountID, u.ID, admin); !errors.As(err, &inUse) || inUse.Blockers[0].Kind != "registration" {
		t.Fatalf("DeleteUser() with a pending refresh = %v, want refused for the registration", err)
	}
	clock.Advance(41 * time.Second) // past the refreshed expiry
	if db.LiveBindings() != 0 {
		t.Fatalf("LiveBindings() = %d, want 0", db.LiveBindings())
	}
	if n, err := db.PruneExpired(); err != nil || n != 1 {
		t.Fatalf("PruneExpired() = %d, %v; want 1", n, err)
	}
	if err := db.DeleteUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
}

// TestPureRefreshWrittenWithinDelay: without anyone asking, the commit loop
// writes a pure refresh within Options.RefreshWriteDelay.
func TestPureRefreshWrittenWithinDelay(t *testing.T) {
	clock := storetest.NewClock()
	db, err := store.Open(t.TempDir(), store.Options{Now: clock.Now, RefreshWriteDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	if _, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 60)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 120)); err != nil {
		t.Fatal(err)
	}
	// Wait for the write itself (bounded), not for a fixed time.
	deadline := time.Now().Add(10 * time.Second)
	for diskBinding(t, db, u).CSeq != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the refresh was not written within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if got := diskBinding(t, db, u); !got.ExpiresAt.Equal(clock.Now().Add(120 * time.Second)) {
		t.Fatalf("written expiry %v", got.ExpiresAt)
	}
}

// TestRefreshDeleteRaceNotDisabledFirst races pure refreshes against
// DeleteUser while another goroutine enables and disables the user and the
// clock moves, so bindings pass their expiry on disk while their refreshes
// are pending: what refuses the delete is the live-binding check, which must
// see the pending refreshes. Invariant: no REGISTER answered 200 promised an
// expiry later than the clock when the delete succeeded.
func TestRefreshDeleteRaceNotDisabledFirst(t *testing.T) {
	clock := storetest.NewClock()
	db, err := store.Open(t.TempDir(), store.Options{Now: clock.Now, RefreshWriteDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store.NoSyncForTest(db)
	mustAccount(t, db)
	const rounds, iterations = 20, 10
	sawPendingBlocker := false
	for round := 0; round < rounds; round++ {
		u := mustUser(t, db, fmt.Sprintf("4%03d", round))
		contact := "sip:" + u.Extension + "@192.0.2.7"
		if _, err := db.Register(reg(u, "c", 1, contact, 30)); err != nil {
			t.Fatal(err)
		}
		// Pending refreshes from now on are this round's.
		if err := store.FlushRefreshesForTest(db); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var promised time.Time // the latest expiry a 200 promised
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the phone refreshing while the admin flips the user and time passes
			defer wg.Done()
			for i := 0; i < iterations; i++ {
				if _, err := db.EnableUser(u.AccountID, u.ID, admin); errors.Is(err, store.ErrNotFound) {
					return
				}
				out, err := db.Register(reg(u, "c", uint32(i+2), contact, 30))
				switch {
				case errors.Is(err, store.ErrNotFound):
					return
				case errors.Is(err, store.ErrDisabled):
				case err != nil:
					t.Error(err)
					return
				}
				mu.Lock()
				for _, b := range out {
					if b.ExpiresAt.After(promised) {
						promised = b.ExpiresAt
					}
				}
				mu.Unlock()
				if _, err := db.DisableUser(u.AccountID, u.ID, admin); errors.Is(err, store.ErrNotFound) {
					return
				}
				// Past the expiry on disk, within the refreshed one.
				clock.Advance(20 * time.Second)
			}
		}()
		deleted := make(chan time.Time, 1)
		go func() { // the deleter, until it succeeds
			for {
				err := db.DeleteUser(u.AccountID, u.ID, admin)
				after := clock.Now()
				if err == nil {
					deleted <- after
					return
				}
				var inUse *store.InUseError
				if !errors.As(err, &inUse) {
					t.Error(err)
					deleted <- time.Time{}
					return
				}
				enabled := false
				for _, b := range inUse.Blockers {
					enabled = enabled || b.Kind == "enabled"
				}
				for _, b := range inUse.Blockers {
					if b.Kind == "registration" && !enabled && store.PendingRefreshesForTest(db) > 0 {
						mu.Lock()
						sawPendingBlocker = true
						mu.Unlock()
					}
				}
			}
		}()
		wg.Wait()
		clock.Advance(time.Hour) // everything expires: the deleter can finish
		at := <-deleted
		if at.IsZero() {
			t.FailNow()
		}
		mu.Lock()
		if promised.After(at) {
			t.Fatalf("round %d: user deleted at %v while a REGISTER answered 200 promised the binding until %v", round, at, promised)
		}
		mu.Unlock()
		if _, err := db.User(u.AccountID, u.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: not deleted: %v", round, err)
		}
	}
	if !sawPendingBlocker {
		t.Fatal("no delete of a disabled user was refused while a refresh was pending: the race was not exercised")
	}
}

// TestSweepVisitsWhatExpires: the sweep index sends PruneExpired to every
// AOR with an expired row, again after an earlier sweep of the same AOR
// left a later-expiring binding, and after a restart.
func TestSweepVisitsWhatExpires(t *testing.T) {
	clock := storetest.NewClock()
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	v := mustUser(t, db, "1003")
	for _, r := range []store.RegisterRequest{
		reg(u, "a", 1, "sip:1002@192.0.2.1", 60),
		reg(u, "b", 1, "sip:1002@192.0.2.2", 600),
		reg(v, "c", 1, "sip:1003@192.0.2.3", 120),
	} {
		if _, err := db.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	prune := func(want int) {
		t.Helper()
		if n, err := db.PruneExpired(); err != nil || n != want {
			t.Fatalf("PruneExpired() = %d, %v; want %d", n, err, want)
		}
		if n, err := store.ScanLiveBindings(db); err != nil || n != db.LiveBindings() {
			t.Fatalf("scan %d, live %d", n, db.LiveBindings())
		}
	}
	prune(0)
	clock.Advance(61 * time.Second)
	prune(1)
	clock.Advance(60 * time.Second)
	prune(1)
	db.Close()
	clock.Advance(10 * time.Minute) // expired while closed: Open's sweep removes it
	db = storetest.OpenDir(t, dir, clock)
	if rows, _ := store.DiskBindingsForTest(db, u.AccountID, u.ID); len(rows) != 0 {
		t.Fatalf("rows left after Open: %+v", rows)
	}
	prune(0)
}
