package sip

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// TestRegisterDeleteRace runs REGISTERs over the wire for a few users while
// other goroutines disable, sign out and delete those users. Afterwards no
// deleted user has a binding, and no REGISTER that started after its user's
// delete had returned got a 200. Run it with -race.
func TestRegisterDeleteRace(t *testing.T) {
	e := newEnv(t, Config{})
	const rounds, users, phonesPerUser = 3, 4, 3
	deadline := time.Now().Add(8 * time.Second)

	for round := 0; round < rounds && time.Now().Before(deadline); round++ {
		type result struct {
			user    string
			started time.Time
			code    int
		}
		var (
			mu       sync.Mutex
			results  []result
			deleted  = map[string]time.Time{} // user id → when DeleteUser returned nil
			wg       sync.WaitGroup
			ids      []store.User
			firstOK  = make([]chan struct{}, users)
			firstErr error
		)
		for i := 0; i < users; i++ {
			u, pw := e.addUser(fmt.Sprintf("2%d%02d", round, i))
			ids = append(ids, u)
			firstOK[i] = make(chan struct{})
			var once sync.Once
			for p := 0; p < phonesPerUser; p++ {
				transport := []string{"UDP", "TCP"}[p%2]
				ph := e.uac(transport, u.Extension, pw)
				contact := fmt.Sprintf("Contact: <sip:%s@127.0.0.1:%d>", u.Extension, 8000+p)
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < 40 && time.Now().Before(deadline); n++ {
						started := time.Now()
						res, err := ph.registerErr(contact, "Expires: 600")
						if err != nil {
							mu.Lock()
							firstErr = errors.Join(firstErr, err)
							mu.Unlock()
							return
						}
						mu.Lock()
						results = append(results, result{u.ID, started, res.StatusCode})
						mu.Unlock()
						if res.StatusCode == 200 {
							once.Do(func() { close(firstOK[i]) })
						}
						if res.StatusCode == 401 {
							return // the user is gone
						}
					}
				}()
			}
		}
		for i, u := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case <-firstOK[i]:
				case <-time.After(5 * time.Second):
				}
				// Deleting an enabled, registered user is refused...
				var inUse *store.InUseError
				if err := e.db.DeleteUser(e.acct.ID, u.ID, store.System); !errors.As(err, &inUse) {
					mu.Lock()
					firstErr = errors.Join(firstErr, fmt.Errorf("DeleteUser(enabled %s) = %v, want InUseError", u.Extension, err))
					mu.Unlock()
				}
				// ...disable, sign out, delete works while phones keep trying.
				for {
					if _, err := e.db.DisableUser(e.acct.ID, u.ID, store.System); err != nil {
						t.Errorf("DisableUser = %v", err)
						return
					}
					if _, err := e.db.SignOut(e.acct.ID, u.ID, store.System); err != nil {
						t.Errorf("SignOut = %v", err)
						return
					}
					err := e.db.DeleteUser(e.acct.ID, u.ID, store.System)
					if err == nil {
						mu.Lock()
						deleted[u.ID] = time.Now()
						mu.Unlock()
						return
					}
					if !errors.As(err, &inUse) {
						t.Errorf("DeleteUser = %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			t.Fatalf("round %d: %v", round, firstErr)
		}

		all, err := e.db.AccountBindings(e.acct.ID)
		if err != nil {
			t.Fatal(err)
		}
		oks := 0
		for _, u := range ids {
			when, ok := deleted[u.ID]
			if !ok {
				t.Errorf("round %d: user %s was never deleted", round, u.Extension)
				continue
			}
			if _, err := e.db.Bindings(e.acct.ID, u.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Bindings(deleted %s) = %v, want ErrNotFound", u.Extension, err)
			}
			for _, b := range all {
				if b.UserID == u.ID {
					t.Errorf("round %d: deleted user %s still has binding %+v", round, u.Extension, b)
				}
			}
			for _, r := range results {
				if r.user == u.ID && r.code == 200 {
					oks++
					if r.started.After(when) {
						t.Errorf("round %d: REGISTER started %v after %s was deleted (%v) got 200", round, r.started, u.Extension, when)
					}
				}
			}
		}
		if oks == 0 {
			t.Errorf("round %d: no REGISTER succeeded; the race was not exercised", round)
		}
		t.Logf("round %d: %d REGISTERs, %d got 200", round, len(results), oks)
	}
}
