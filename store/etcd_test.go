package store_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
)

// openNode opens a second store.DB on the same etcd prefix as dir's store,
// as another dialtone node would (same secret.key).
func openNode(t *testing.T, dir string, clock *storetest.Clock) *store.DB {
	t.Helper()
	cfg := storetest.EtcdConfig(dir)
	cfg.Node = "node-b" // the other node has the host's name
	db, err := store.OpenEtcd(cfg, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// twoNodes opens two stores on one etcd prefix, as two dialtone nodes
// sharing a cluster; it skips the test on bbolt.
func twoNodes(t *testing.T) (*storetest.Clock, *store.DB, *store.DB) {
	t.Helper()
	if storetest.Backend() != "etcd" {
		t.Skip("etcd only: two nodes share one etcd")
	}
	clock := storetest.NewClock()
	dir := t.TempDir()
	return clock, storetest.OpenDir(t, dir, clock), openNode(t, dir, clock)
}

// "No deletion while registered" across nodes: node A takes a REGISTER that
// creates the user's first binding while node B deletes the user (disable,
// then delete, as the admin API requires). Whatever the interleaving, one of
// them loses: the REGISTER is refused (the user is disabled or gone) or the
// DELETE is (the user is registered). Never a deleted user with a live
// binding. Each round checks the store as the other node reads it.
func TestTwoNodesRegisterDeleteRace(t *testing.T) {
	_, a, b := twoNodes(t)
	mustAccount(t, a)
	rounds := 200
	if testing.Short() {
		rounds = 4
	}
	registered, deleted := 0, 0
	for round := range rounds {
		u, err := a.CreateUser(store.DefaultAccount, store.NewUser{Extension: fmt.Sprint(2000 + round), Name: "Racer"}, admin)
		if err != nil {
			t.Fatal(err)
		}
		// Every other pair of rounds, the REGISTER and the DISABLE both
		// read before either commits (a barrier between rule and commit,
		// first attempts only): the commits conflict and etcd's compare
		// decides (a conflict when the DISABLE commits first; when the
		// REGISTER does, both stand and the DELETE finds the binding). The
		// other rounds interleave as the scheduler likes.
		if round%4 < 2 {
			meet := meeting()
			store.BeforeEtcdCommitForTest(a, meet)
			store.BeforeEtcdCommitForTest(b, meet)
		} else {
			store.BeforeEtcdCommitForTest(a, nil)
			store.BeforeEtcdCommitForTest(b, nil)
		}
		// Alternate which node registers, so both directions are raced.
		reg1, del1 := a, b
		if round%2 == 1 {
			reg1, del1 = b, a
		}
		var wg sync.WaitGroup
		var regErr, delErr error
		start := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, regErr = reg1.Register(reg(u, "race", 1, "sip:x@192.0.2.9", 600))
		}()
		go func() {
			defer wg.Done()
			<-start
			if _, err := del1.DisableUser(u.AccountID, u.ID, admin); err != nil {
				delErr = err
				return
			}
			store.BeforeEtcdCommitForTest(del1, nil)
			delErr = del1.DeleteUser(u.AccountID, u.ID, admin)
		}()
		close(start)
		wg.Wait()
		if testing.Verbose() && testing.Short() {
			t.Logf("round %d: REGISTER %v, DELETE %v", round, regErr, delErr)
		}
		var inUse *store.InUseError
		switch {
		case regErr == nil && errors.As(delErr, &inUse):
			registered++
		case (errors.Is(regErr, store.ErrDisabled) || errors.Is(regErr, store.ErrNotFound)) && delErr == nil:
			deleted++
		default:
			t.Fatalf("round %d: REGISTER = %v, DELETE = %v: want exactly one to win", round, regErr, delErr)
		}
		// A third view: the other node, reading after both returned.
		_, userErr := reg1.User(u.AccountID, u.ID)
		binds, err := del1.AccountBindings(u.AccountID)
		if err != nil {
			t.Fatal(err)
		}
		live := 0
		for _, bd := range binds {
			if bd.UserID == u.ID {
				live++
			}
		}
		if errors.Is(userErr, store.ErrNotFound) && live > 0 {
			t.Fatalf("round %d: user %s deleted with %d live binding(s)", round, u.ID, live)
		}
		if userErr == nil && live != 1 {
			t.Fatalf("round %d: user kept with %d bindings, want 1 (REGISTER %v, DELETE %v)", round, live, regErr, delErr)
		}
	}
	store.BeforeEtcdCommitForTest(a, nil)
	store.BeforeEtcdCommitForTest(b, nil)
	storetest.MustCheck(t, a)
	commits, conflicts := store.EtcdStatsForTest(a)
	commitsB, conflictsB := store.EtcdStatsForTest(b)
	t.Logf("%d rounds: REGISTER won %d, DELETE won %d; etcd commits %d, re-runs after a conflict %d",
		rounds, registered, deleted, commits+commitsB, conflicts+conflictsB)
	if registered == 0 || deleted == 0 || conflicts+conflictsB < uint64(rounds/10) {
		t.Fatalf("the race was not exercised: REGISTER won %d, DELETE won %d, conflicts %d", registered, deleted, conflicts+conflictsB)
	}
}

// meeting returns a two-party barrier: the first two calls wait for each
// other (at most 5 s, so a side that never commits cannot hang the test);
// later calls (re-runs after the conflict) pass.
func meeting() func() {
	var mu sync.Mutex
	n := 0
	both := make(chan struct{})
	return func() {
		mu.Lock()
		n++
		me := n
		if n == 2 {
			close(both)
		}
		mu.Unlock()
		if me <= 2 {
			select {
			case <-both:
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// A password rotated through node B is what node A's digest check uses next
// (node A's identity cache follows etcd's changes), within the watch's
// delivery delay.
func TestEtcdIdentityCacheFollowsOtherNode(t *testing.T) {
	_, a, b := twoNodes(t)
	acct := mustAccount(t, a)
	u := mustUser(t, a, "1002")
	if err := store.WaitWatchedForTest(a); err != nil { // the echo of the creation must not drop what is cached next
		t.Fatal(err)
	}
	before, err := a.SIPIdentity(acct.SIPDomain, "1002")
	if err != nil {
		t.Fatal(err)
	}
	if !store.IdentityCachedForTest(a, acct.SIPDomain, "1002") {
		t.Fatal("identity not cached on node A")
	}
	c, err := b.RotateSIPCredentials(u.AccountID, u.ID, admin)
	if err != nil || c.Password == before.Password {
		t.Fatalf("rotate on node B: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		id, err := a.SIPIdentity(acct.SIPDomain, "1002")
		if err != nil {
			t.Fatal(err)
		}
		if id.Password == c.Password {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node A still answers the old password 10 s after node B rotated it")
		}
		time.Sleep(5 * time.Millisecond) // poll: the watch delivers asynchronously
	}
}

// Audit entries written at once through two nodes (16 writers each, as an
// admin tool does) all commit: the audit's ids are no hot counter every
// writer compares (etcdBucket.NextSequence). Every id is distinct and each
// node's ids grow.
func TestEtcdConcurrentAuditWriters(t *testing.T) {
	_, a, b := twoNodes(t)
	mustAccount(t, a)
	const writers, each = 16, 10
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*each)
	for _, db := range []*store.DB{a, b} {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					errs <- db.RecordAudit(store.AuditEntry{AccountID: store.DefaultAccount, Action: "test.write",
						TargetID: fmt.Sprintf("%s-%d-%d", db.NodeID(), w, i)})
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("RecordAudit: %v", err)
		}
	}
	entries, err := b.Audit(store.DefaultAccount, 10_000, 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	n := 0
	for _, e := range entries {
		if e.Action != "test.write" {
			continue
		}
		n++
		if seen[e.Seq] {
			t.Fatalf("audit id %d given twice", e.Seq)
		}
		seen[e.Seq] = true
	}
	if n != 2*writers*each {
		t.Fatalf("%d audit entries, want %d", n, 2*writers*each)
	}
	// Nothing they read is shared, so they do not conflict (a counter made
	// hundreds of re-runs here, and ErrConflict on etcd with fsync on).
	_, ca := store.EtcdStatsForTest(a)
	_, cb := store.EtcdStatsForTest(b)
	if ca+cb > writers {
		t.Fatalf("%d runs lost to a conflict for %d independent audit writes", ca+cb, 2*writers*each)
	}
}

// A cluster that does not answer gives ErrUnavailable (503 for admin
// writes and REGISTER, with Retry-After), not a bare transport error, and
// writes nothing.
func TestEtcdUnreachableIsUnavailable(t *testing.T) {
	if storetest.Backend() != "etcd" {
		t.Skip("etcd only")
	}
	dir := t.TempDir()
	srv, err := etcdtest.StartCluster(filepath.Join(dir, "etcd"), 1) // Kill cuts the clients at once
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	db, err := store.OpenEtcd(store.EtcdConfig{Endpoints: srv.Endpoints(), Dir: filepath.Join(dir, "data"), Node: "n1",
		RequestTimeout: 500 * time.Millisecond, LeaseTTL: 2 * time.Second}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	srv.Kill(0)
	_, err = db.CreateUser(store.DefaultAccount, store.NewUser{Extension: "1009", Name: "Unreachable"}, admin)

	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("CreateUser with etcd gone = %v, want ErrUnavailable", err)
	}
}
