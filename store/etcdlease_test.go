package store_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// openLeased opens node id on the etcd prefix of dir, with a lease of ttl.
func openLeased(t *testing.T, dir string, clock *storetest.Clock, id string, ttl time.Duration) *store.DB {
	t.Helper()
	cfg := storetest.EtcdConfig(dir)
	cfg.Node, cfg.LeaseTTL = id, ttl
	db, err := store.OpenEtcd(cfg, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func etcdOnly(t *testing.T) {
	t.Helper()
	if storetest.Backend() != "etcd" {
		t.Skip("etcd only: node leases")
	}
}

// etcdClient is a plain client of the test cluster (to look at leases).
func etcdClient(t *testing.T, dir string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: storetest.EtcdConfig(dir).Endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// waitFor polls cond until it holds (etcd expires leases on its own clock:

// leasedNodes is the set-up the lease tests share (etcd only): node B with
// the default account and user 1002, and node A ("node-a") on a lease of
// ttl (0: the default) over the same prefix and clock.
func leasedNodes(t *testing.T, ttl time.Duration) (*storetest.Clock, string, *store.DB, *store.DB, store.User) {
	t.Helper()
	etcdOnly(t)
	clock, dir := storetest.NewClock(), t.TempDir()
	b := storetest.OpenDir(t, dir, clock)
	mustAccount(t, b)
	u := mustUser(t, b, "1002")
	return clock, dir, openLeased(t, dir, clock, "node-a", ttl), b, u
}

// no fake time there), failing after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s: not within 30 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func commits(db *store.DB) uint64 {
	c, _ := store.EtcdStatsForTest(db)
	return c
}

func liveOn(t *testing.T, db *store.DB, u store.User) []store.Binding {
	t.Helper()
	bs, err := db.Bindings(u.AccountID, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// Etcd writes per REGISTER in steady state: ten phones on node A refresh
// at half their expiry (600 s) for 30 expiry periods, with A's sweeper
// running; a pure refresh is answered from A's memory and the row is
// rewritten only when the true expiry passes its stored horizon. A change
// (a new contact, a new source, the phone moving to another node) is one
// write. Node B sees every phone registered throughout.
func TestEtcdWritesPerRegister(t *testing.T) {
	clock, a, b := twoNodes(t)
	mustAccount(t, a)
	const phones, expires = 10, 600
	step := expires / 2 * time.Second / phones // each phone every 300 s
	users := make([]store.User, phones)
	cseq := make([]uint32, phones)
	for i := range users {
		users[i] = mustUser(t, a, fmt.Sprint(1100+i))
	}
	contact := func(i int) string { return fmt.Sprintf("sip:%d@192.0.2.%d:5062", 1100+i, 10+i) }
	register := func(db *store.DB, i int, source string) []store.Binding {
		t.Helper()
		cseq[i]++
		r := reg(users[i], fmt.Sprint("call-", i), cseq[i], contact(i), expires)
		if source != "" {
			r.Source = source
		}
		bs, err := db.Register(r)
		if err != nil {
			t.Fatalf("phone %d, CSeq %d: %v", i, cseq[i], err)
		}
		return bs
	}
	for i := range phones {
		register(a, i, "")
		clock.Advance(step)
	}
	// Node C's clock runs almost a registration period ahead of A's: it
	// still never sees a refreshing phone expire.
	cfg := storetest.EtcdConfig(a.Dir())
	cfg.Node = "node-c"
	c, err := store.OpenEtcd(cfg, store.Options{Now: func() time.Time { return clock.Now().Add(expires*time.Second - time.Second) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	before, n := commits(a), 0
	for round := 0; round < 2*30; round++ {
		for i := range phones {
			if bs := liveOn(t, c, users[i]); len(bs) != 1 {
				t.Fatalf("round %d: node C, its clock %d s ahead, sees phone %d as %+v just before its refresh", round, expires-1, i, bs)
			}
			bs := register(a, i, "")
			if len(bs) != 1 || !bs[0].ExpiresAt.Equal(clock.Now().Add(expires*time.Second)) {
				t.Fatalf("round %d phone %d: the 200 OK would list %+v, want one binding expiring in %d s", round, i, bs, expires)
			}
			n++
			clock.Advance(step)
			if _, err := a.PruneExpired(); err != nil {
				t.Fatal(err)
			}
		}
		if round%10 == 9 {
			for i := range phones {
				bs := liveOn(t, b, users[i])
				if len(bs) != 1 || bs[0].Node != a.NodeID() || bs[0].ExpiresAt.Before(clock.Now().Add(expires/2*time.Second)) {
					t.Fatalf("round %d: node B sees phone %d as %+v: want it live, owned by %s", round, i, bs, a.NodeID())
				}
			}
		}
	}
	writes := commits(a) - before
	perRegister := float64(writes) / float64(n)
	t.Logf("steady state: %d REGISTERs (refresh at half of %d s, 30 periods), %d etcd writes: %.3f writes/REGISTER (in the long run 1/(2·%d−1) = %.3f)",
		n, expires, writes, perRegister, store.HorizonPeriods, 1/float64(2*store.HorizonPeriods-1))
	if perRegister > 0.1 || writes == 0 {
		t.Fatalf("%.3f etcd writes per REGISTER in steady state, want ≤ 0.1 (and the horizon rewritten at least once: %d)", perRegister, writes)
	}

	// Each change is one write.
	change := func(what string, db *store.DB, fn func()) {
		t.Helper()
		c := commits(db)
		fn()
		if got := commits(db) - c; got != 1 {
			t.Fatalf("%s: %d etcd writes, want 1", what, got)
		}
	}
	change("a new contact", a, func() {
		r := reg(users[0], "call-new", 1, "sip:1100@192.0.2.99:5062", expires)
		if bs, err := a.Register(r); err != nil || len(bs) != 2 {
			t.Fatalf("new contact: %+v, %v", bs, err)
		}
	})
	change("a new source", a, func() { register(a, 1, "192.0.2.7:6000") })
	before = commits(a)
	change("the phone moves to node B", b, func() {
		if bs := register(b, 2, ""); len(bs) != 1 || bs[0].Node != b.NodeID() {
			t.Fatalf("after the move: %+v", bs)
		}
	})
	if commits(a) != before {
		t.Fatal("node A wrote for a phone that moved to node B")
	}
	// A's memory of the moved row no longer applies: A reads B's row.
	if bs := liveOn(t, a, users[2]); len(bs) != 1 || bs[0].Node != b.NodeID() {
		t.Fatalf("node A sees the moved phone as %+v", bs)
	}
}

// (a) A phone refreshing on node A in memory, long past the expiry its row
// was written with, stays registered for node B: B lists it, B's prune
// keeps it and B cannot delete the user. (b) When the phone stops, A's
// sweep removes the row at its true expiry and B's delete then succeeds.
func TestEtcdRefreshInMemoryKeepsBindingForOtherNodes(t *testing.T) {
	clock, a, b := twoNodes(t)
	mustAccount(t, a)
	u := mustUser(t, a, "1002")
	t0 := clock.Now()
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 60)); err != nil {
		t.Fatal(err)
	}
	before := commits(a)
	// 17 refreshes every 30 s: the last one's expiry (t0 + 570 s) is still
	// a period before the horizon written with the first (t0 + 660 s).
	for cseq := uint32(2); cseq <= 18; cseq++ {
		clock.Advance(30 * time.Second)
		if _, err := a.Register(reg(u, "c1", cseq, "sip:1002@192.0.2.7", 60)); err != nil {
			t.Fatal(err)
		}
	}
	if got := commits(a) - before; got != 0 {
		t.Fatalf("17 pure refreshes wrote %d times, want 0 (answered from memory)", got)
	}
	trueExpiry := clock.Now().Add(60 * time.Second) // t0 + 570 s
	if bs := liveOn(t, a, u); len(bs) != 1 || !bs[0].ExpiresAt.Equal(trueExpiry) || bs[0].CSeq != 18 {
		t.Fatalf("node A lists %+v, want the true expiry %v", bs, trueExpiry)
	}
	disk, err := store.DiskBindingsForTest(b, u.AccountID, u.ID)
	if err != nil || len(disk) != 1 || !disk[0].ExpiresAt.Equal(t0.Add(60*(1+store.HorizonPeriods)*time.Second)) {
		t.Fatalf("stored row %+v, %v: want the horizon written with the first REGISTER", disk, err)
	}
	bs := liveOn(t, b, u)
	if len(bs) != 1 || bs[0].ExpiresAt.Before(trueExpiry) || bs[0].Node != a.NodeID() {
		t.Fatalf("node B lists %+v: want the binding, expiring no earlier than %v", bs, trueExpiry)
	}
	// B's REGISTERs of another contact prune the AOR: A's row stays.
	if bs, err := b.Register(reg(u, "c2", 1, "sip:1002@192.0.2.8", 60)); err != nil || len(bs) != 2 {
		t.Fatalf("register through B: %+v, %v", bs, err)
	}
	if bs, err := b.Register(reg(u, "c2", 2, "sip:1002@192.0.2.8", 0)); err != nil || len(bs) != 1 {
		t.Fatalf("unregister through B: %+v, %v", bs, err)
	}
	if n, err := b.PruneExpired(); err != nil || n != 0 {
		t.Fatalf("B's sweep = %d, %v; want 0", n, err)
	}
	if _, err := b.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	var inUse *store.InUseError
	if err := b.DeleteUser(u.AccountID, u.ID, admin); !errors.As(err, &inUse) {
		t.Fatalf("DeleteUser through B while A holds the binding = %v, want InUseError", err)
	}

	// (b) The phone stops refreshing. Past its true expiry, A no longer
	// counts it; B does until A's sweep deletes the row.
	clock.Advance(61 * time.Second)
	if bs := liveOn(t, a, u); len(bs) != 0 {
		t.Fatalf("node A lists %+v after the true expiry", bs)
	}
	if err := b.DeleteUser(u.AccountID, u.ID, admin); !errors.As(err, &inUse) {
		t.Fatalf("DeleteUser through B before A's sweep = %v, want InUseError (the stored horizon is later)", err)
	}
	if n, err := a.PruneExpired(); err != nil || n != 1 {
		t.Fatalf("A's sweep = %d, %v; want 1 (the row, at its true expiry)", n, err)
	}
	if bs := liveOn(t, b, u); len(bs) != 0 {
		t.Fatalf("node B lists %+v after A's sweep", bs)
	}
	if err := b.DeleteUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatalf("DeleteUser through B after A's sweep = %v", err)
	}
	if n := store.PendingRefreshesForTest(a); n != 0 {
		t.Fatalf("node A still remembers %d rows", n)
	}
}

// (c) A node that dies (no graceful close: the keep-alives just stop) loses
// its rows and its nodes key with its lease, within the TTL; a deletion
// through another node then succeeds.
func TestEtcdCrashedNodeBindingsVanishByLease(t *testing.T) {
	const ttl = 2 * time.Second
	_, _, a, b, u := leasedNodes(t, ttl)
	if err := a.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5071"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 3600)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	var inUse *store.InUseError
	if err := b.DeleteUser(u.AccountID, u.ID, admin); !errors.As(err, &inUse) {
		t.Fatalf("DeleteUser while node A lives = %v, want InUseError", err)
	}
	if err := store.CrashCloseForTest(a); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "node A's binding vanishes", func() bool { return len(liveOn(t, b, u)) == 0 })
	t.Logf("node A's binding vanished %v after its crash (lease TTL %v)", took.Round(10*time.Millisecond), ttl)
	if _, err := b.Node("node-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Node(node-a) after its lease expired = %v, want ErrNotFound", err)
	}
	if err := b.DeleteUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatalf("DeleteUser after node A's lease expired = %v", err)
	}
}

// (d) A node restarted with the same id adopts the rows of its previous run
// (they move onto its new lease, and outlive the old one), and answers the
// phones' next refreshes from memory again.
func TestEtcdRestartAdoptsRows(t *testing.T) {
	const ttl = 2 * time.Second
	clock, dir, a, b, u := leasedNodes(t, ttl)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(300 * time.Second)
	if _, err := a.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	old := store.LeaseForTest(a)
	if err := store.CrashCloseForTest(a); err != nil {
		t.Fatal(err)
	}
	a = openLeased(t, dir, clock, "node-a", 0) // the default TTL: only the old lease has to expire here
	if store.LeaseForTest(a) == old || store.LeaseForTest(a) == 0 {
		t.Fatal("the restarted node has no new lease")
	}
	cli := etcdClient(t, dir)
	waitFor(t, "the previous run's lease expires", func() bool {
		resp, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(old))
		return err == nil && resp.TTL == -1
	})
	bs := liveOn(t, b, u)
	if len(bs) != 1 || bs[0].Node != "node-a" {
		t.Fatalf("after the old lease expired node B sees %+v: the row was not adopted", bs)
	}
	c := commits(a)
	clock.Advance(300 * time.Second)
	out, err := a.Register(reg(u, "c1", 3, "sip:1002@192.0.2.7", 600))
	if err != nil || len(out) != 1 || !out[0].ExpiresAt.Equal(clock.Now().Add(600*time.Second)) {
		t.Fatalf("refresh after the restart: %+v, %v", out, err)
	}
	if commits(a) != c {
		t.Fatal("the first refresh after a restart was written: the adopted row is not known as this node's")
	}
}

// A graceful Close writes the true expiry of the node's rows (the other
// nodes, and a restart, see exactly when each ends) and takes the node off
// the node list.
func TestEtcdCloseWritesTrueExpiries(t *testing.T) {
	clock, a, b := twoNodes(t)
	mustAccount(t, a)
	u := mustUser(t, a, "1002")
	if err := a.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5071"}); err != nil {
		t.Fatal(err)
	}
	for cseq := uint32(1); cseq <= 5; cseq++ {
		if _, err := a.Register(reg(u, "c1", cseq, "sip:1002@192.0.2.7", 60)); err != nil {
			t.Fatal(err)
		}
		clock.Advance(30 * time.Second)
	}
	want := clock.Now().Add(30 * time.Second)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	bs := liveOn(t, b, u)
	if len(bs) != 1 || !bs[0].ExpiresAt.Equal(want) || bs[0].CSeq != 5 {
		t.Fatalf("after node A's close node B sees %+v, want the true expiry %v", bs, want)
	}
	clock.Advance(31 * time.Second)
	if bs := liveOn(t, b, u); len(bs) != 0 {
		t.Fatalf("node B still lists %+v past the true expiry", bs)
	}
	if _, err := b.Node(a.NodeID()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Node(%s) after its graceful close = %v, want ErrNotFound (it left the node list)", a.NodeID(), err)
	}
}

// A node that lost its lease writes no binding (a clear error, at once),
// and one whose lease etcd revoked grants itself a new one, announces
// itself again and registers phones again.
func TestEtcdLostLease(t *testing.T) {
	_, dir, a, b, u := leasedNodes(t, 4*time.Second) // keep-alives every 1.3 s: the revoke is seen soon
	if err := a.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5071"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	old := store.LeaseForTest(a)
	if _, err := etcdClient(t, dir).Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new lease", func() bool { l := store.LeaseForTest(a); return l != 0 && l != old })
	// The revoke deleted the row; node A puts it back from its memory, and
	// announces itself again.
	waitFor(t, "node A announced again", func() bool { _, err := b.Node("node-a"); return err == nil })
	waitFor(t, "the binding restored", func() bool { return len(liveOn(t, b, u)) == 1 })
	c := commits(a)
	if bs, err := a.Register(reg(u, "c1", 2, "sip:1002@192.0.2.7", 600)); err != nil || len(bs) != 1 {
		t.Fatalf("refresh after a new lease: %+v, %v", bs, err)
	}
	if commits(a) != c {
		t.Fatal("the refresh of a restored row was written")
	}

	store.DropLeaseForTest(a)
	start := time.Now()
	for _, r := range []store.RegisterRequest{
		reg(u, "c1", 3, "sip:1002@192.0.2.7", 600), // a pure refresh
		reg(u, "c9", 1, "sip:1002@192.0.2.9", 600), // a new binding
	} {
		if _, err := a.Register(r); !errors.Is(err, store.ErrNoLease) {
			t.Fatalf("Register without a lease = %v, want ErrNoLease", err)
		}
	}
	if err := a.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5071"}); !errors.Is(err, store.ErrNoLease) {
		t.Fatalf("AnnounceNode without a lease = %v, want ErrNoLease", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusing without a lease took %v", d)
	}
}

// A node whose lost lease took its rows puts them back through the rules:
// not for a user deleted meanwhile (through another node, which was free to
// delete once the rows had vanished), not over the row of a phone that
// moved to another node; the others come back as they were.
func TestEtcdRestoreAfterLostLeaseFollowsRules(t *testing.T) {
	etcdOnly(t)
	clock, dir := storetest.NewClock(), t.TempDir()
	b := storetest.OpenDir(t, dir, clock)
	mustAccount(t, b)
	gone, moved, kept := mustUser(t, b, "1002"), mustUser(t, b, "1003"), mustUser(t, b, "1004")
	signedOut := mustUser(t, b, "1005")
	a := openLeased(t, dir, clock, "node-a", 0)
	for _, u := range []store.User{gone, moved, kept, signedOut} {
		if _, err := a.Register(reg(u, "c1", 1, "sip:"+u.Extension+"@192.0.2.7", 600)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(200 * time.Second)
	if _, err := a.Register(reg(kept, "c1", 2, "sip:1004@192.0.2.7", 600)); err != nil { // in memory
		t.Fatal(err)
	}
	// An administrator signs a phone out through node B: node A's memory
	// still has its row.
	if _, err := b.SignOut(signedOut.AccountID, signedOut.ID, admin); err != nil {
		t.Fatal(err)
	}
	// etcd unreachable for longer than the TTL, as node A sees it; the
	// lease expires (revoked here) and its rows with it.
	old := store.LeaseForTest(a)
	store.DropLeaseForTest(a)
	if _, err := etcdClient(t, dir).Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DisableUser(gone.AccountID, gone.ID, admin); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteUser(gone.AccountID, gone.ID, admin); err != nil {
		t.Fatalf("DeleteUser once node A's rows vanished = %v", err)
	}
	if _, err := b.Register(reg(moved, "c7", 1, "sip:1003@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	if err := store.RegainLeaseForTest(a); err != nil {
		t.Fatal(err)
	}
	if _, err := b.User(gone.AccountID, gone.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted user: %v", err)
	}
	all, err := b.AccountBindings(gone.AccountID)
	if err != nil {
		t.Fatal(err)
	}
	for _, bd := range all {
		if bd.UserID == gone.ID {
			t.Fatalf("binding of the deleted user restored: %+v", bd)
		}
	}
	if bs := liveOn(t, b, moved); len(bs) != 1 || bs[0].Node != b.NodeID() || bs[0].CallID != "c7" {
		t.Fatalf("the moved phone's row: %+v", bs)
	}
	bs := liveOn(t, a, kept)
	if len(bs) != 1 || bs[0].Node != "node-a" || !bs[0].ExpiresAt.Equal(clock.Now().Add(600*time.Second)) {
		t.Fatalf("the kept phone on node A: %+v, want its refreshed expiry", bs)
	}
	if bs := liveOn(t, b, kept); len(bs) != 1 {
		t.Fatalf("the kept phone on node B: %+v", bs)
	}
	if bs := liveOn(t, b, signedOut); len(bs) != 0 {
		t.Fatalf("a signed-out phone put back: %+v", bs)
	}
	storetest.MustCheck(t, b)
}

// A REGISTER that commits while node A re-puts its rows on a new lease
// (here: removes contact X, adds Z) is not undone by the restore: X, which
// the phone removed, stays removed.
func TestEtcdRestoreKeepsRemovalDuringReput(t *testing.T) {
	_, dir, a, b, u := leasedNodes(t, 0)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	old := store.LeaseForTest(a)
	store.DropLeaseForTest(a)
	if _, err := etcdClient(t, dir).Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	store.SetAfterReputForTest(a, func() {
		r := reg(u, "c1", 2, "sip:1002@192.0.2.7", 0)
		r.Contacts = append(r.Contacts, store.ContactUpdate{URI: "sip:1002@192.0.2.99", Expires: 600})
		if bs, err := a.Register(r); err != nil || len(bs) != 1 {
			t.Errorf("un-register X, register Z: %+v, %v", bs, err)
		}
	})
	defer store.SetAfterReputForTest(a, nil)
	if err := store.RegainLeaseForTest(a); err != nil {
		t.Fatal(err)
	}
	for _, db := range []*store.DB{a, b} {
		if bs := liveOn(t, db, u); len(bs) != 1 || bs[0].Contact != "sip:1002@192.0.2.99" {
			t.Fatalf("node %s sees %+v, want only Z", db.NodeID(), bs)
		}
	}
}

// A node that lost its lease keeps the new one alive while it re-puts its
// rows on it (thousands of rows take longer than a TTL): the takeover,
// held here for longer than the TTL, finds the new lease still alive.
func TestEtcdNewLeaseKeptAliveDuringTakeover(t *testing.T) {
	// A TTL of 5 s: keep-alives every ~1.7 s, so only a missing keeper
	// lets it lapse, not one late keep-alive on a loaded machine (a 2 s
	// TTL flaked in a CI run with every package under -race).
	const ttl = 5 * time.Second
	_, dir, a, b, u := leasedNodes(t, ttl)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	cli := etcdClient(t, dir)
	old := store.LeaseForTest(a)
	renewed := make(chan bool, 1)
	report := func(ok bool) {
		select {
		case renewed <- ok:
		default:
		}
	}
	store.SetAfterReputForTest(a, func() {
		// Held past the lease's TTL (etcd's clock: real time), polling.
		id := clientv3.LeaseID(store.LeaseForTest(a))
		start := time.Now()
		for {
			resp, err := cli.TimeToLive(context.Background(), id)
			switch {
			case err != nil || resp.TTL <= 0:
				report(false)
				return
			case time.Since(start) > ttl+time.Second:
				report(true)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-renewed:
		store.SetAfterReputForTest(a, nil)
		if !ok {
			t.Fatal("the new lease expired while the node re-put its rows: no keep-alive during the takeover")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no takeover within 30 s")
	}
	waitFor(t, "the binding restored", func() bool { return len(liveOn(t, b, u)) == 1 })
}

// A node that loses its lease twice puts its rows back twice: the first
// restore's own write is no change by a rule.
func TestEtcdSecondLeaseLossRestoresAgain(t *testing.T) {
	_, dir, a, b, u := leasedNodes(t, 0)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	cli := etcdClient(t, dir)
	for round := 1; round <= 2; round++ {
		old := store.LeaseForTest(a)
		store.DropLeaseForTest(a)
		if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
			t.Fatal(err)
		}
		if err := store.RegainLeaseForTest(a); err != nil {
			t.Fatal(err)
		}
		if bs := liveOn(t, b, u); len(bs) != 1 {
			t.Fatalf("after lease loss %d node B sees %+v, want the binding restored", round, bs)
		}
	}
}

// The node's own sweep deleting an expired row of an AOR does not stop a
// later lease loss from putting back the AOR's other, live row.
func TestEtcdRestoreAfterOwnSweep(t *testing.T) {
	clock, dir, a, b, u := leasedNodes(t, 0)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 60)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(reg(u, "c2", 1, "sip:1002@192.0.2.8", 600)); err != nil {
		t.Fatal(err)
	}
	clock.Advance(61 * time.Second)
	if n, err := a.PruneExpired(); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want 1 pruned", n, err)
	}
	old := store.LeaseForTest(a)
	store.DropLeaseForTest(a)
	if _, err := etcdClient(t, dir).Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	if err := store.RegainLeaseForTest(a); err != nil {
		t.Fatal(err)
	}
	if bs := liveOn(t, b, u); len(bs) != 1 || bs[0].Contact != "sip:1002@192.0.2.8" {
		t.Fatalf("node B sees %+v, want the live row put back", bs)
	}
}

// A node that writes every refresh (RefreshWriteDelay < 0: no memory of its
// rows) restarts over rows naming it: it opens, and moves them onto its
// new lease.
func TestEtcdRestartWithoutHeldMemory(t *testing.T) {
	etcdOnly(t)
	clock, dir := storetest.NewClock(), t.TempDir()
	b := storetest.OpenDir(t, dir, clock)
	mustAccount(t, b)
	u := mustUser(t, b, "1002")
	cfg := storetest.EtcdConfig(dir)
	cfg.Node = "node-a"
	opts := store.Options{Now: clock.Now, RefreshWriteDelay: -1}
	a, err := store.OpenEtcd(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	old := store.LeaseForTest(a)
	store.CrashCloseForTest(a)
	a2, err := store.OpenEtcd(cfg, opts)
	if err != nil {
		t.Fatalf("reopen over its own rows: %v", err)
	}
	defer a2.Close()
	if _, err := etcdClient(t, dir).Revoke(context.Background(), clientv3.LeaseID(old)); err != nil {
		t.Fatal(err)
	}
	if bs := liveOn(t, b, u); len(bs) != 1 || bs[0].Node != "node-a" {
		t.Fatalf("node B sees %+v, want the row adopted onto the new lease", bs)
	}
}

// The sweep of more AORs than etcd's default --max-txn-ops (128) allows
// in one transaction's compares succeeds: it sweeps in chunks.
func TestEtcdSweepManyAORsUnderDefaultTxnLimit(t *testing.T) {
	etcdOnly(t)
	srv, err := etcdtest.StartLimited(t.TempDir(), 128)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	clock := storetest.NewClock()
	db, err := store.OpenEtcd(store.EtcdConfig{Endpoints: srv.Endpoints, Dir: t.TempDir(), Prefix: "/limited", Node: "node-a"}, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	const n = 140
	for i := range n {
		u := mustUser(t, db, fmt.Sprint(3000+i))
		if _, err := db.Register(reg(u, "c1", 1, fmt.Sprintf("sip:%d@192.0.2.7", 3000+i), 60)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(61 * time.Second)
	if got, err := db.PruneExpired(); err != nil || got != n {
		t.Fatalf("sweep of %d due AORs = %d, %v; want all pruned", n, got, err)
	}
	if got, err := db.PruneExpired(); err != nil || got != 0 {
		t.Fatalf("second sweep = %d, %v; want nothing left", got, err)
	}
	// Fewer AORs, each full of expired rows: more deletes than the limit.
	const full = 20
	for i := range full {
		u := mustUser(t, db, fmt.Sprint(4000+i))
		r := reg(u, "c1", 1, fmt.Sprintf("sip:%d@192.0.2.7", 4000+i), 60)
		for j := 1; j < 10; j++ {
			r.Contacts = append(r.Contacts, store.ContactUpdate{URI: fmt.Sprintf("sip:%d@192.0.2.%d", 4000+i, 10+j), Expires: 60})
		}
		if bs, err := db.Register(r); err != nil || len(bs) != 10 {
			t.Fatalf("register 10 contacts: %d, %v", len(bs), err)
		}
	}
	clock.Advance(61 * time.Second)
	if got, err := db.PruneExpired(); err != nil || got != 10*full {
		t.Fatalf("sweep of %d AORs of 10 expired rows = %d, %v; want all pruned", full, got, err)
	}
}

// A node's memory of an AOR whose phones another node signed out is
// forgotten by its sweep, not kept for ever.
func TestEtcdHeldMemoryForgottenAfterSignOut(t *testing.T) {
	clock, _, a, b, u := leasedNodes(t, 0)
	if _, err := a.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Register(reg(u, "c2", 1, "sip:1002@192.0.2.8", 1200)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SignOut(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	for _, step := range []time.Duration{601 * time.Second, 700 * time.Second, 24 * time.Hour} {
		clock.Advance(step)
		if _, err := a.PruneExpired(); err != nil {
			t.Fatal(err)
		}
	}
	if x, y, z := store.HeldForTest(a); x+y+z != 0 {
		t.Fatalf("held memory of a signed-out AOR: %d AORs, %d rows, %d entries; want none", x, y, z)
	}
}
