package store_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// migrateSource is a stopped bbolt data directory holding a bit of every
// kind of record: accounts, users with SIP passwords, devices, numbers,
// groups, tokens, audit entries and a live binding. It returns the
// directory and the binding's user.
func migrateSource(t *testing.T, clock *storetest.Clock) (string, store.User) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mustAccount(t, db)
	if _, err := db.CreateAccount("other", "other.test", admin); err != nil {
		t.Fatal(err)
	}
	var users []store.User
	for n := range 150 { // buckets of more keys than one batch of 128 operations
		users = append(users, mustUser(t, db, fmt.Sprint(3000+n)))
	}
	if _, err := db.CreateUser("other", store.NewUser{Extension: "100", Name: "Other"}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateDevice(store.DefaultAccount, store.NewDevice{MAC: "001565aabbcc", Model: "T54W",
		Lines: []store.DeviceLine{{Line: 1, UserID: users[0].ID}}}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.AddNumber(store.DefaultAccount, "+442079460000", admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateGroup(store.DefaultAccount, store.NewGroup{Kind: store.GroupRing, Name: "Sales", Extension: "600",
		Members: []string{users[1].ID, users[2].ID}}, admin); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.CreateToken(store.DefaultAccount, store.RoleProvider, "ops", admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Register(reg(users[0], "mig-1", 1, "sip:3000@192.0.2.7:5062", 3600)); err != nil {
		t.Fatal(err)
	}
	return dir, users[0]
}

// openEtcdAt opens the etcd store under prefix with the secret.key of dir.
func openEtcdAt(t *testing.T, dir, prefix string, clock *storetest.Clock) (*store.DB, error) {
	t.Helper()
	cfg := storetest.EtcdConfig(dir)
	cfg.Prefix, cfg.Node = prefix, "migrate-test"
	return store.OpenEtcd(cfg, store.Options{Now: clock.Now})
}

func mustEtcdAt(t *testing.T, dir, prefix string, clock *storetest.Clock) *store.DB {
	t.Helper()
	db, err := openEtcdAt(t, dir, prefix, clock)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func dump(t *testing.T, db *store.DB) map[string]string {
	t.Helper()
	d, err := store.DumpForTest(db)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A bbolt store copied into etcd and back: the same records, byte for byte;
// passwords still open (same key); ids continue after the copied ones; a
// second run copies nothing; an interrupted run completes when run again;
// no etcd transaction exceeds etcd's default 128 operations.
func TestMigrateBoltToEtcdAndBack(t *testing.T) {
	if storetest.Backend() != "etcd" {
		t.Skip("needs etcd: runs in the etcd pass (bbolt → etcd and back)")
	}
	clock := storetest.NewClock()
	srcDir, bound := migrateSource(t, clock)
	src, err := store.OpenReadOnly(srcDir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	want := dump(t, src)
	prefix := storetest.EtcdConfig(srcDir).Prefix
	cli := etcdClient(t, "")
	startRev := etcdRev(t, cli)

	dst := mustEtcdAt(t, srcDir, prefix, clock)
	var opts store.MigrateOptions
	store.MigrateFailAfterForTest(&opts, 2)
	if _, err := store.Migrate(src, dst, opts); err == nil {
		t.Fatal("the injected interruption did not stop Migrate")
	}
	var reports int
	st, err := store.Migrate(src, dst, store.MigrateOptions{Progress: func(store.MigrateProgress) { reports++ }})
	if err != nil {
		t.Fatalf("Migrate after the interruption = %v", err)
	}
	if st.Copied == 0 || st.Skipped == 0 || reports == 0 {
		t.Fatalf("resumed run = %+v (%d reports), want some keys copied and some already there", st, reports)
	}
	st, err = store.Migrate(src, dst, store.MigrateOptions{})
	if err != nil || st.Copied != 0 || st.Sequences != 0 || st.Batches != 0 || st.Removed != 0 || st.Skipped != len(want)-countSeqs(want) {
		t.Fatalf("second run = %+v, %v; want nothing copied, all %d keys skipped", st, err, len(want)-countSeqs(want))
	}
	dst.Close()
	most := maxOpsPerTxn(t, cli, prefix, startRev)
	if most > 128 {
		t.Errorf("an etcd transaction of the migration had %d operations, over etcd's default 128", most)
	}

	// The copy as a node sees it.
	e := mustEtcdAt(t, srcDir, prefix, clock)
	defer e.Close()
	if got := dump(t, e); !reflect.DeepEqual(got, want) {
		t.Fatalf("etcd after the copy differs from the source:\n%s", diffDumps(want, got))
	}
	for _, acct := range []string{store.DefaultAccount, "other"} {
		wu, _ := src.Users(acct)
		gu, err := e.Users(acct)
		if err != nil || !reflect.DeepEqual(gu, wu) || len(gu) == 0 {
			t.Fatalf("Users(%s) on etcd = %d users, %v; want the source's %d", acct, len(gu), err, len(wu))
		}
		wa, _ := src.Audit(acct, 1000, 0)
		ga, err := e.Audit(acct, 1000, 0)
		if err != nil || !reflect.DeepEqual(ga, wa) || len(ga) == 0 {
			t.Fatalf("Audit(%s) on etcd = %d entries, %v; want the source's %d", acct, len(ga), err, len(wa))
		}
	}
	bs, err := e.Bindings(store.DefaultAccount, bound.ID)
	if err != nil || len(bs) != 1 || bs[0].Contact != "sip:3000@192.0.2.7:5062" {
		t.Fatalf("Bindings on etcd = %+v, %v; want the live binding", bs, err)
	}
	// The copied row is on no lease: it outlives the copying process and
	// lives until its expiry (a lease would drop it one TTL after the copy).
	rows, err := etcdClient(t, "").Get(context.Background(), prefix+"/bindings/", clientv3.WithPrefix())
	if err != nil || len(rows.Kvs) != 1 || rows.Kvs[0].Lease != 0 {
		t.Fatalf("copied binding rows = %v, %v; want one, on no lease", rows.Kvs, err)
	}
	// The digest: the password sealed in bbolt opens on etcd (same key).
	u, _ := e.UserByExtension(store.DefaultAccount, "3001")
	creds, err := e.SIPCredentials(store.DefaultAccount, u.ID, admin)
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.SIPIdentity("example.test", "3001")
	if err != nil {
		t.Fatalf("SIPIdentity on etcd = %v", err)
	}
	h := md5.Sum([]byte("3001:example.test:" + creds.Password))
	if id.HA1("MD5", "3001", "example.test") != hex.EncodeToString(h[:]) || creds.Password == "" {
		t.Fatal("the copied SIP password does not give the user's digest")
	}

	// Back to bbolt, for a backup: a directory with the deployment's key.
	backDir := t.TempDir()
	back := openBoltWithKeyOf(t, backDir, srcDir, clock)
	snapshot := dump(t, e) // the source plus the audit entry of the read above
	if _, err := store.Migrate(e, back, store.MigrateOptions{}); err != nil {
		t.Fatalf("Migrate etcd → bbolt = %v", err)
	}
	back.Close()
	ro, err := store.OpenReadOnly(backDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ro.Check(); err != nil {
		t.Fatalf("Check of the bbolt copy = %v", err)
	}
	if got := dump(t, ro); !reflect.DeepEqual(got, snapshot) {
		t.Fatalf("bbolt copy differs from etcd:\n%s", diffDumps(snapshot, got))
	}
	ro.Close()

	// Ids continue after the copied ones, on both copies.
	last := lastAuditSeq(t, e, store.DefaultAccount)
	mustUser(t, e, "3999")
	if next := lastAuditSeq(t, e, store.DefaultAccount); next <= last {
		t.Fatalf("etcd: audit id after the copy = %d, want above %d", next, last)
	}
	back, err = store.Open(backDir, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mustUser(t, back, "3999")
	if next := lastAuditSeq(t, back, store.DefaultAccount); next <= last {
		t.Fatalf("bbolt copy: audit id = %d, want above %d", next, last)
	}
	back.Close()

	// etcd now has keys the source has not: left without Prune, removed
	// with it (the counter stays where it is: never lowered).
	st, err = store.Migrate(src, e, store.MigrateOptions{})
	if err != nil || st.Extra == 0 || st.Removed != 0 {
		t.Fatalf("run without Prune = %+v, %v; want the extra keys counted and left", st, err)
	}
	st, err = store.Migrate(src, e, store.MigrateOptions{Prune: true})
	if err != nil || st.Removed == 0 || st.Extra != 0 {
		t.Fatalf("run with Prune = %+v, %v; want the extra keys removed", st, err)
	}
	got := dump(t, e)
	delete(got, "_seq/audit")
	wantNoSeq := maps.Clone(want)
	delete(wantNoSeq, "_seq/audit")
	if !reflect.DeepEqual(got, wantNoSeq) {
		t.Fatalf("etcd after Prune differs from the source:\n%s", diffDumps(wantNoSeq, got))
	}
}

// A source with another secret.key than the deployment already in the etcd
// prefix is refused, by OpenEtcd and by Migrate itself, and nothing is
// written.
func TestMigrateRefusesAnotherDeployment(t *testing.T) {
	if storetest.Backend() != "etcd" {
		t.Skip("needs etcd: runs in the etcd pass")
	}
	clock := storetest.NewClock()
	dirA, _ := migrateSource(t, clock)
	dirB := t.TempDir()
	other, err := store.Open(dirB, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	mustAccount(t, other)
	other.Close()
	prefix := storetest.EtcdConfig(dirA).Prefix
	e := mustEtcdAt(t, dirA, prefix, clock) // the deployment of A
	defer e.Close()
	before := dump(t, e)

	if db, err := openEtcdAt(t, dirB, prefix, clock); err == nil || !errors.Is(err, store.ErrWrongKey) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("OpenEtcd with B's key on A's prefix = %v, want ErrWrongKey", err)
	}
	srcB, err := store.OpenReadOnly(dirB)
	if err != nil {
		t.Fatal(err)
	}
	defer srcB.Close()
	if _, err := store.Migrate(srcB, e, store.MigrateOptions{Prune: true}); !errors.Is(err, store.ErrWrongKey) {
		t.Fatalf("Migrate of B into A's prefix = %v, want ErrWrongKey", err)
	}
	if after := dump(t, e); !reflect.DeepEqual(after, before) {
		t.Fatal("the refused migration wrote to etcd")
	}
}

func countSeqs(d map[string]string) int {
	n := 0
	for k := range d {
		if len(k) > 5 && k[:5] == "_seq/" {
			n++
		}
	}
	return n
}

func lastAuditSeq(t *testing.T, db *store.DB, acct string) uint64 {
	t.Helper()
	es, err := db.Audit(acct, 1000, 0)
	if err != nil || len(es) == 0 {
		t.Fatalf("Audit = %d, %v", len(es), err)
	}
	var most uint64
	for _, e := range es {
		most = max(most, e.Seq)
	}
	return most
}

func diffDumps(want, got map[string]string) string {
	var out string
	n := 0
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			out += fmt.Sprintf("  %q: want %q, have %q (present %v)\n", k, v, g, ok)
			n++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out += fmt.Sprintf("  %q: not in the source\n", k)
			n++
		}
	}
	if n > 20 {
		return fmt.Sprintf("%d differences", n)
	}
	return out
}

func etcdRev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "/none")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// maxOpsPerTxn is the largest number of changes one revision made under
// prefix since rev: each etcd Txn is one revision, each of its writes one
// event.
func maxOpsPerTxn(t *testing.T, cli *clientv3.Client, prefix string, rev int64) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last, err := cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithLimit(1),
		clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend))
	if err != nil || len(last.Kvs) == 0 {
		t.Fatalf("no keys under %s: %v", prefix, err)
	}
	end := last.Kvs[0].ModRevision
	per := map[int64]int{}
	seen := int64(0)
	for resp := range cli.Watch(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			per[ev.Kv.ModRevision]++
			seen = max(seen, ev.Kv.ModRevision)
		}
		if seen >= end {
			break
		}
	}
	if seen < end {
		t.Fatalf("the watch ended at revision %d, before %d", seen, end)
	}
	most := 0
	for _, n := range per {
		most = max(most, n)
	}
	return most
}

// A backup of a deployment on etcd into bbolt: the bindings a node held
// name no node in the copy (on one node every binding is its own; a row
// naming an etcd node would be taken for another node's), and a second run
// still copies nothing.
func TestMigrateEtcdBindingsToBoltNameNoNode(t *testing.T) {
	if storetest.Backend() != "etcd" {
		t.Skip("needs etcd: runs in the etcd pass")
	}
	clock := storetest.NewClock()
	dir := t.TempDir()
	e := mustEtcdAt(t, dir, storetest.EtcdConfig(dir).Prefix, clock)
	defer e.Close()
	mustAccount(t, e)
	u := mustUser(t, e, "3100")
	if bs, err := e.Register(reg(u, "c1", 1, "sip:3100@192.0.2.7:5062", 600)); err != nil || len(bs) != 1 || bs[0].Node != "migrate-test" {
		t.Fatalf("Register on etcd = %+v, %v; want one binding of node migrate-test", bs, err)
	}
	back := openBoltWithKeyOf(t, t.TempDir(), dir, clock)
	defer back.Close()
	if _, err := store.Migrate(e, back, store.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	bs, err := back.Bindings(store.DefaultAccount, u.ID)
	if err != nil || len(bs) != 1 || bs[0].Node != "" || bs[0].Contact != "sip:3100@192.0.2.7:5062" {
		t.Fatalf("bindings in the bbolt copy = %+v, %v; want the one binding, naming no node", bs, err)
	}
	if st, err := store.Migrate(e, back, store.MigrateOptions{}); err != nil || st.Copied != 0 {
		t.Fatalf("second run = %+v, %v; want nothing copied", st, err)
	}
}

// openBoltWithKeyOf opens a bbolt store in the new directory dir holding
// the secret.key of keyDir (a backup of that deployment).
func openBoltWithKeyOf(t *testing.T, dir, keyDir string, clock *storetest.Clock) *store.DB {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(keyDir, store.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, store.KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(dir, store.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return db
}
