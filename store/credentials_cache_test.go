package store_test

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// The identity cache is per user: writes that do not change what a digest
// check needs (REGISTERs, the expiry sweep, other users) leave it; changes
// of the user or the account drop exactly what they change.
func TestSIPIdentityCachePerUser(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	mustAccount(t, db)
	u := mustUser(t, db, "1002")
	other := mustUser(t, db, "1003")
	// On etcd the watch echoes this node's own writes: let it catch up so
	// that what follows sees only the invalidations it causes.
	settle := func() {
		t.Helper()
		if err := store.WaitWatchedForTest(db); err != nil {
			t.Fatal(err)
		}
	}
	settle()
	lookup := func(ext string) store.SIPIdentity {
		t.Helper()
		id, err := db.SIPIdentity("example.test", ext)
		if err != nil {
			t.Fatalf("SIPIdentity(%s) = %v", ext, err)
		}
		return id
	}
	cached := func(ext string) bool { return store.IdentityCachedForTest(db, "example.test", ext) }
	first := lookup("1002")
	lookup("1003")
	if !cached("1002") || !cached("1003") {
		t.Fatal("a lookup was not cached")
	}

	// Unrelated writes keep both.
	if _, err := db.Register(reg(u, "c", 1, "sip:1002@192.0.2.7", 600)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.PruneExpired(); err != nil {
		t.Fatal(err)
	}
	mustUser(t, db, "1004")
	settle()
	if !cached("1002") || !cached("1003") {
		t.Fatal("a REGISTER, the sweep or another user's creation dropped cached identities")
	}

	// A rotation drops the user only.
	rotated, err := db.RotateSIPCredentials(u.AccountID, u.ID, admin)
	if err != nil {
		t.Fatal(err)
	}
	if cached("1002") || !cached("1003") {
		t.Fatal("a rotation did not drop exactly its user")
	}
	if id := lookup("1002"); id.Password != rotated.Password || id.Password == first.Password {
		t.Fatal("old password after a rotation")
	}

	// Disable and enable.
	if _, err := db.DisableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if id := lookup("1002"); id.User.Status != store.StatusDisabled {
		t.Fatal("still enabled after a disable")
	}
	if _, err := db.EnableUser(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if id := lookup("1002"); id.User.Status != store.StatusEnabled {
		t.Fatal("still disabled after an enable")
	}

	// An extension change: the old extension is gone, the new one answers.
	ext := "1012"
	if _, err := db.SignOut(u.AccountID, u.ID, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.UpdateUser(u.AccountID, u.ID, store.UserPatch{Extension: &ext}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SIPIdentity("example.test", "1002"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old extension after a change = %v, want ErrNotFound", err)
	}
	lookup("1012")

	// A domain change drops the account's answers.
	domain := "new.example.test"
	if _, err := db.UpdateAccount(u.AccountID, store.AccountPatch{SIPDomain: &domain}, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SIPIdentity("example.test", "1003"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old domain after a change = %v, want ErrNotFound", err)
	}
	if id, err := db.SIPIdentity(domain, "1003"); err != nil || id.Account.SIPDomain != domain {
		t.Fatalf("new domain = %+v, %v", id.Account, err)
	}

	// A deletion.
	if _, err := db.DisableUser(other.AccountID, other.ID, admin); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(other.AccountID, other.ID, admin); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SIPIdentity(domain, "1003"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SIPIdentity after delete = %v, want ErrNotFound", err)
	}
}

func TestSIPIdentityHA1(t *testing.T) {
	db := storetest.Open(t, storetest.NewClock())
	mustAccount(t, db)
	mustUser(t, db, "1002")
	id, err := db.SIPIdentity("example.test", "1002")
	if err != nil {
		t.Fatal(err)
	}
	md := md5.Sum([]byte("1002:example.test:" + id.Password))
	sh := sha256.Sum256([]byte("1002:example.test:" + id.Password))
	for i := 0; i < 2; i++ { // computed, then cached
		if got := id.HA1("MD5", "1002", "example.test"); got != hex.EncodeToString(md[:]) {
			t.Fatalf("HA1(MD5) = %s", got)
		}
		if got := id.HA1("SHA-256", "1002", "example.test"); got != hex.EncodeToString(sh[:]) {
			t.Fatalf("HA1(SHA-256) = %s", got)
		}
	}
	again, _ := db.SIPIdentity("example.test", "1002")
	if again.HA1("", "1002", "example.test") != hex.EncodeToString(md[:]) {
		t.Fatal("HA1 of a cached copy differs")
	}
	if (store.SIPIdentity{Password: "x"}).HA1("MD5", "a", "b") == "" {
		t.Fatal("HA1 of an uncached identity")
	}
}

// The identity cache is bounded: a storm of more users than it holds keeps
// at most store.IdentityCacheBound answers, keeps the most recent ones and
// still answers every user right (a miss reads the store).
func TestSIPIdentityCacheBounded(t *testing.T) {
	storetest.BoltOnly(t, "the cache is the same code on both backends; 12,288 users through etcd transactions take minutes under -race")
	db := storetest.Open(t, storetest.NewClock())
	store.NoSyncForTest(db) // thousands of users; durability is not what this tests
	mustAccount(t, db)
	n := store.IdentityCacheBound + store.IdentityCacheBound/2
	users := make([]store.User, n)
	for i := range users {
		users[i] = mustUser(t, db, fmt.Sprint(10000+i))
	}
	lookup := func(u store.User) {
		t.Helper()
		id, err := db.SIPIdentity("example.test", u.Extension)
		if err != nil || id.User.ID != u.ID {
			t.Fatalf("SIPIdentity(%s) = %s, %v; want %s", u.Extension, id.User.ID, err, u.ID)
		}
	}
	for _, u := range users {
		lookup(u)
		if c := store.CachedIdentitiesForTest(db); c > store.IdentityCacheBound {
			t.Fatalf("%d identities cached; want at most %d", c, store.IdentityCacheBound)
		}
	}
	if !store.IdentityCachedForTest(db, "example.test", users[n-1].Extension) {
		t.Error("the latest lookup is not cached")
	}
	if store.IdentityCachedForTest(db, "example.test", users[0].Extension) {
		t.Error("the first of more lookups than the cache holds is still cached")
	}
	lookup(users[0])
	// A hot user stays: looked up again between every other lookup.
	hot := users[1]
	for _, u := range users {
		lookup(u)
		lookup(hot)
	}
	if !store.IdentityCachedForTest(db, "example.test", hot.Extension) {
		t.Error("a user looked up all the time fell out of the cache")
	}
}
