package store_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

var admin = store.Actor{Name: "test", Role: store.RoleProvider}

func mustAccount(t *testing.T, db *store.DB) store.Account {
	t.Helper()
	a, _, err := db.EnsureAccount(store.DefaultAccount, "example.test")
	if err != nil {
		t.Fatalf("EnsureAccount() = %v", err)
	}
	return a
}

func mustUser(t *testing.T, db *store.DB, ext string) store.User {
	t.Helper()
	u, err := db.CreateUser(store.DefaultAccount, store.NewUser{Extension: ext, Name: "User " + ext}, admin)
	if err != nil {
		t.Fatalf("CreateUser(%s) = %v", ext, err)
	}
	return u
}

func reg(u store.User, callID string, cseq uint32, contact string, expires int) store.RegisterRequest {
	return store.RegisterRequest{AccountID: u.AccountID, UserID: u.ID, CallID: callID, CSeq: cseq,
		Source: "192.0.2.7:5062", Transport: "UDP", UserAgent: "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc",
		Contacts: []store.ContactUpdate{{URI: contact, Expires: expires}}}
}

func TestRegister(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")

	t.Run("OK", func(t *testing.T) {
		bs, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7:5062", 600))
		if err != nil {
			t.Fatalf("Register() = %v", err)
		}
		if got, want := len(bs), 1; got != want {
			t.Fatalf("bindings = %d, want %d", got, want)
		}
		b := bs[0]
		if got, want := b.MAC, "001565aabbcc"; got != want {
			t.Errorf("MAC = %q, want %q", got, want)
		}
		if got, want := b.Transport, "udp"; got != want {
			t.Errorf("Transport = %q, want %q", got, want)
		}
		if got, want := b.ExpiresAt, clock.Now().Add(600*time.Second); !got.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v", got, want)
		}
	})
	t.Run("SecondContactAndRefresh", func(t *testing.T) {
		if _, err := db.Register(reg(u, "c2", 1, "sip:1002@198.51.100.1:5060", 300)); err != nil {
			t.Fatal(err)
		}
		bs, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7:5062", 900))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(bs), 2; got != want {
			t.Fatalf("bindings = %d, want %d", got, want)
		}
	})
	t.Run("ErrOutOfOrder", func(t *testing.T) {
		_, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7:5062", 900))
		if !errors.Is(err, store.ErrOutOfOrder) {
			t.Fatalf("Register(same CSeq) = %v, want ErrOutOfOrder", err)
		}
	})
	t.Run("ExpiredNeverCounts", func(t *testing.T) {
		clock.Advance(301 * time.Second) // c2 (300 s) is now expired, nobody swept it
		bs, err := db.Bindings(u.AccountID, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(bs), 1; got != want {
			t.Fatalf("live bindings = %d, want %d", got, want)
		}
	})
	t.Run("RemoveAll", func(t *testing.T) {
		r := reg(u, "c1", 3, "", 0)
		r.Contacts, r.RemoveAll = nil, true
		bs, err := db.Register(r)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 0 {
			t.Fatalf("bindings after Contact: * = %d, want 0", len(bs))
		}
	})
	t.Run("ContactLimitEvictsSoonestExpiring", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			if _, err := db.Register(reg(u, fmt.Sprint("l", i), 1, fmt.Sprintf("sip:1002@10.0.0.%d", i), 100+i)); err != nil {
				t.Fatal(err)
			}
		}
		bs, err := db.Register(reg(u, "l10", 1, "sip:1002@10.0.0.10", 3600))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(bs), 10; got != want {
			t.Fatalf("bindings = %d, want %d (the limit)", got, want)
		}
		for _, b := range bs {
			if b.Contact == "sip:1002@10.0.0.0" {
				t.Fatalf("the soonest-expiring binding was kept: %+v", b)
			}
		}
	})
}

func TestRegisterDisabled(t *testing.T) {
	db := storetest.Open(t, storetest.NewClock())
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	if _, err := db.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600)); !errors.Is(err, store.ErrDisabled) {
		t.Fatalf("refresh while disabled = %v, want ErrDisabled", err)
	}
	bs, err := db.Register(reg(u, "c1", 3, "sip:1002@192.0.2.7", 0))
	if err != nil {
		t.Fatalf("unregister while disabled = %v, want nil", err)
	}
	if len(bs) != 0 {
		t.Fatalf("bindings after unregister = %d, want 0", len(bs))
	}
}

func TestRestartKeepsLiveDropsExpired(t *testing.T) {
	clock := storetest.NewClock()
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	if _, err := db.Register(reg(u, "a", 1, "sip:1002@192.0.2.7", 120)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(reg(u, "b", 1, "sip:1002@192.0.2.8", 3600)); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	db = storetest.OpenDir(t, dir, clock)
	bs, err := db.Bindings(u.AccountID, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Contact != "sip:1002@192.0.2.8" {
		t.Fatalf("bindings after restart = %+v, want only the unexpired one", bs)
	}
	// Open pruned the expired row: a sweep finds nothing more.
	if n, err := db.PruneExpired(); err != nil || n != 0 {
		t.Fatalf("PruneExpired() = %d, %v; want 0, nil", n, err)
	}
}

func TestSecondProcessIsRefused(t *testing.T) {
	storetest.BoltOnly(t, "the data directory's file lock")
	dir := t.TempDir()
	storetest.OpenDir(t, dir, nil)
	_, err := store.Open(dir, store.Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestSecretsAtRest(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, nil)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	c, err := db.SIPCredentials(u.AccountID, u.ID, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Password) < 16 {
		t.Fatalf("password length = %d, want >= 16", len(c.Password))
	}
	if s := fmt.Sprintf("%v %+v %#v", c, c, c); containsStr(s, c.Password) {
		t.Fatalf("formatting credentials leaks the password: %s", s)
	}
	_, secret, err := db.CreateToken(store.DefaultAccount, store.RoleAdmin, "ci", admin)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw := storetest.Raw(t, dir)
	for name, s := range map[string]string{"SIP password": c.Password, "token": secret} {
		if containsStr(string(raw), s) {
			t.Errorf("%s found in plain text in the data file", name)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, store.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key file mode = %v, want 0600", got)
	}
}

func containsStr(s, sub string) bool {
	return len(sub) > 0 && len(s) >= len(sub) && indexOf(s, sub) >= 0
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestRegisterDeleteRace runs REGISTERs and DELETEs for the same users at once.
// After every round: no deleted user has a binding, and no REGISTER was
// accepted for a user that was already gone.
func TestRegisterDeleteRace(t *testing.T) {
	db := storetest.Open(t, nil)
	mustAccount(t, db)
	rounds := 20
	if storetest.Backend() == "etcd" {
		rounds = 5 // each write is a few etcd round trips; TestTwoNodesRegisterDeleteRace races harder
	}
	for round := 0; round < rounds; round++ {
		users := make([]store.User, 8)
		for i := range users {
			users[i] = mustUser(t, db, fmt.Sprintf("%d%02d", 2+round%7, i+round*8%90))
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		deletedAt := map[string]time.Time{}
		acceptedAt := map[string][]time.Time{}
		for _, u := range users {
			wg.Add(2)
			go func(u store.User) {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					// Take the time before the call: a REGISTER that started
					// after the delete had returned must never be accepted.
					started := time.Now()
					_, err := db.Register(reg(u, "race", uint32(i+1), "sip:x@192.0.2.9", 600))
					if err == nil {
						mu.Lock()
						acceptedAt[u.ID] = append(acceptedAt[u.ID], started)
						mu.Unlock()
					}
				}
			}(u)
			go func(u store.User) {
				defer wg.Done()
				if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
					t.Error(err)
					return
				}
				// Sign out and delete until it succeeds: every REGISTER after
				// the disable is refused, so this terminates.
				for {
					if _, err := db.SignOut(u.AccountID, u.ID, admin); err != nil {
						t.Error(err)
						return
					}
					err := db.DeleteUser(u.AccountID, u.ID, admin)
					if err == nil {
						mu.Lock()
						deletedAt[u.ID] = time.Now()
						mu.Unlock()
						return
					}
					var inUse *store.InUseError
					if !errors.As(err, &inUse) {
						t.Error(err)
						return
					}
				}
			}(u)
		}
		wg.Wait()
		all, err := db.AccountBindings(store.DefaultAccount)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range all {
			if _, err := db.User(b.AccountID, b.UserID); errors.Is(err, store.ErrNotFound) {
				t.Fatalf("round %d: binding %s of deleted user %s", round, b.Contact, b.UserID)
			}
		}
		for id, times := range acceptedAt {
			for _, at := range times {
				if d, ok := deletedAt[id]; ok && at.After(d) {
					t.Fatalf("round %d: REGISTER started at %v, after user %s was deleted at %v", round, at, id, d)
				}
			}
		}
		for _, u := range users {
			if _, ok := deletedAt[u.ID]; !ok {
				t.Fatalf("round %d: user %s never deleted", round, u.Extension)
			}
		}
	}
}

// SIPIdentity answers from a cache, which every committed change invalidates
// at once: a rotated password, a disabled or deleted user.
func TestSIPIdentitySeesEveryChange(t *testing.T) {
	db := storetest.Open(t, storetest.NewClock())
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	first, err := db.SIPIdentity("example.test", "1002")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := db.SIPIdentity("example.test", "1002"); again.Password != first.Password {
		t.Fatal("a second lookup differs")
	}
	rotated, err := db.RotateSIPCredentials(u.AccountID, u.ID, admin)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := db.SIPIdentity("example.test", "1002"); id.Password != rotated.Password || id.Password == first.Password {
		t.Fatal("SIPIdentity still answers the old password after a rotation")
	}
	if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if id, _ := db.SIPIdentity("example.test", "1002"); id.User.Status != store.StatusDisabled {
		t.Fatal("SIPIdentity still answers enabled after a disable")
	}
	// A REGISTER's binding write does not invalidate; the answer stays right.
	if _, err := db.Register(reg(u, "c", 1, "sip:1002@192.0.2.7", 0)); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SIPIdentity("example.test", "1002"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SIPIdentity after delete = %v, want ErrNotFound", err)
	}
}

// TestRegisterDeleteRaceEnabled races REGISTERs against DeleteUser while the
// user is switched between enabled and disabled, so REGISTERs keep adding
// bindings around the delete: what keeps a deleted user from having a live
// binding is the live-binding check inside the delete transaction, not the
// disable. Each registrar adds its binding and then removes it; no one else
// removes a binding and the clock does not move, so between a successful add
// and its removal the binding is live and DeleteUser must refuse. A removal
// answered "not found" means the delete succeeded while the binding was live.
func TestRegisterDeleteRaceEnabled(t *testing.T) {
	db := storetest.Open(t, storetest.NewClock())
	store.NoSyncForTest(db) // many short transactions; durability is not what this tests
	mustAccount(t, db)
	rounds, registrars, iterations := 40, 3, 15
	if storetest.Backend() == "etcd" {
		rounds = 8 // see TestTwoNodesRegisterDeleteRace
	}
	var sawBindingBlocker bool
	for round := 0; round < rounds; round++ {
		u := mustUser(t, db, fmt.Sprintf("3%03d", round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		var violations []string
		report := func(format string, args ...any) {
			mu.Lock()
			violations = append(violations, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
		for r := 0; r < registrars; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				contact := fmt.Sprintf("sip:%s@192.0.2.%d", u.Extension, r+1)
				for i := 1; i <= iterations; i++ {
					callID := fmt.Sprintf("r%d", r)
					_, err := db.Register(reg(u, callID, uint32(2*i), contact, 600))
					switch {
					case errors.Is(err, store.ErrNotFound):
						return // deleted before this add: fine
					case errors.Is(err, store.ErrDisabled):
						continue
					case err != nil:
						t.Error(err)
						return
					}
					// The binding is live until the removal below commits.
					_, err = db.Register(reg(u, callID, uint32(2*i+1), contact, 0))
					if errors.Is(err, store.ErrNotFound) {
						report("user %s deleted while registrar %d's binding was live", u.Extension, r)
						return
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}(r)
		}
		wg.Add(1)
		go func() { // toggler: ends disabled so that the delete can succeed
			defer wg.Done()
			for i := 0; i < iterations*registrars; i++ {
				if _, err := db.EnableUser(u.AccountID, u.ID, admin); errors.Is(err, store.ErrNotFound) {
					return
				} else if err != nil {
					t.Error(err)
					return
				}
				if _, err := db.DisableUser(u.AccountID, u.ID, admin); errors.Is(err, store.ErrNotFound) {
					return
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		}()
		deleted := make(chan struct{})
		go func() { // deleter: tries until it succeeds (it will once the others stop)
			defer close(deleted)
			for {
				err := db.DeleteUser(u.AccountID, u.ID, admin)
				if err == nil {
					return
				}
				var inUse *store.InUseError
				if !errors.As(err, &inUse) {
					t.Error(err)
					return
				}
				enabled, registered := false, false
				for _, b := range inUse.Blockers {
					enabled = enabled || b.Kind == "enabled"
					registered = registered || b.Kind == "registration"
				}
				if registered && !enabled {
					mu.Lock()
					sawBindingBlocker = true
					mu.Unlock()
				}
			}
		}()
		wg.Wait()
		<-deleted
		if len(violations) > 0 {
			t.Fatalf("round %d: %v", round, violations)
		}
		if _, err := db.User(u.AccountID, u.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: user %s not deleted (%v)", round, u.Extension, err)
		}
		all, err := db.AccountBindings(store.DefaultAccount)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) > 0 {
			t.Fatalf("round %d: bindings left after every user was deleted: %+v", round, all)
		}
	}
	// The test is only worth something if the live-binding check was what
	// refused some delete of a disabled user.
	if !sawBindingBlocker {
		t.Fatal("no delete of a disabled user was refused for a live registration: the race was not exercised")
	}
}
