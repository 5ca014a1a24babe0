package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openT(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := openTest(dir, Options{})
	if err != nil {
		t.Fatalf("Open(%s) = %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustUser(t testing.TB, db *DB, acct, ext string) User {
	t.Helper()
	u, err := db.CreateUser(acct, NewUser{Extension: ext, Name: "User " + ext}, System)
	if err != nil {
		t.Fatalf("CreateUser %s: %v", ext, err)
	}
	return u
}

// A sealed password copied into another user's record (same account or
// another one) does not open there: the record is the blob's associated data.
func TestSealedPasswordMovedToAnotherRecordFails(t *testing.T) {
	boltOnly(t, "rewrites records through the bbolt file")
	db := openT(t, t.TempDir())
	for _, a := range []struct{ id, domain string }{{"acme", "acme.test"}, {"globex", "globex.test"}} {
		if _, err := db.CreateAccount(a.id, a.domain, System); err != nil {
			t.Fatal(err)
		}
	}
	alice := mustUser(t, db, "acme", "1001")
	bob := mustUser(t, db, "acme", "1002")
	eve := mustUser(t, db, "globex", "1001")
	aliceCreds, err := db.SIPCredentials("acme", alice.ID, System)
	if err != nil {
		t.Fatal(err)
	}

	for _, victim := range []User{bob, eve} {
		if err := db.bolt.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bSecrets)
			blob := append([]byte(nil), b.Get([]byte(k("acme", alice.ID)))...)
			return b.Put([]byte(k(victim.AccountID, victim.ID)), blob)
		}); err != nil {
			t.Fatal(err)
		}
		db.gen.Add(1) // the copy went around the store: drop cached identities
		c, err := db.SIPCredentials(victim.AccountID, victim.ID, System)
		if err == nil {
			t.Fatalf("%s/%s: a blob moved from alice opened, password equal to alice's: %v", victim.AccountID, victim.Extension, c.Password == aliceCreds.Password)
		}
		if !strings.Contains(err.Error(), "cannot decrypt secret") || strings.Contains(err.Error(), aliceCreds.Password) {
			t.Errorf("error = %q, want a clear decrypt error without the secret", err)
		}
		domain := map[string]string{"acme": "acme.test", "globex": "globex.test"}[victim.AccountID]
		if _, err := db.SIPIdentity(domain, victim.Extension); err == nil {
			t.Errorf("SIPIdentity of %s/%s accepted a moved password", victim.AccountID, victim.Extension)
		}
	}
	if err := db.Check(); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), bob.ID+": SIP password") {
		t.Errorf("Check = %v, want the moved passwords reported as damage", err)
	}
	// Alice's own blob still opens.
	if c, err := db.SIPCredentials("acme", alice.ID, System); err != nil || c.Password != aliceCreds.Password {
		t.Fatalf("alice after the copies: %v, same password %v", err, c.Password == aliceCreds.Password)
	}
}

// A provisioning secret moved from one account to another does not open.
func TestSealedProvisioningMovedToAnotherAccountFails(t *testing.T) {
	boltOnly(t, "rewrites records through the bbolt file")
	db := openT(t, t.TempDir())
	for _, a := range []struct{ id, domain string }{{"acme", "acme.test"}, {"globex", "globex.test"}} {
		if _, err := db.CreateAccount(a.id, a.domain, System); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ProvisioningSettings(a.id, System); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := boltBucket{tx.Bucket(bProvisioning)}
		var from, to provisioningRecord
		if err := get(b, "acme", &from); err != nil {
			return err
		}
		if err := get(b, "globex", &to); err != nil {
			return err
		}
		to.PasswordSealed = from.PasswordSealed
		return put(b, "globex", to)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ProvisioningSettings("globex", System); err == nil || !strings.Contains(err.Error(), "cannot decrypt secret") {
		t.Fatalf("globex with acme's sealed password: %v, want a decrypt error", err)
	}
	if err := db.Check(); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "provisioning of globex") {
		t.Fatalf("Check = %v, want the moved provisioning password reported as damage", err)
	}
}

// The seal format itself: AD is required, bound, and bad blobs are errors.
func TestSealOpenAssociatedData(t *testing.T) {
	db := openT(t, t.TempDir())
	ad := secretAD("sip_password", "acme", "u-1")
	blob, err := db.seal("s3cret", ad)
	if err != nil {
		t.Fatal(err)
	}
	if blob[0] != sealV2 {
		t.Fatalf("version byte %d, want %d", blob[0], sealV2)
	}
	if got, err := db.open(blob, ad); err != nil || got != "s3cret" {
		t.Fatalf("open = %q, %v", got, err)
	}
	if _, err := db.seal("x", nil); err == nil {
		t.Error("seal without associated data accepted")
	}
	for name, b := range map[string][]byte{
		"other user":    nil,
		"empty":         {},
		"version only":  {sealV2},
		"short":         blob[:10],
		"legacy":        blob[1:],
		"wrong version": append([]byte{9}, blob[1:]...),
		"flipped tag":   append(append([]byte(nil), blob[:len(blob)-1]...), blob[len(blob)-1]^1),
	} {
		useAD := ad
		if name == "other user" {
			b, useAD = blob, secretAD("sip_password", "acme", "u-2")
		}
		if _, err := db.open(b, useAD); !errors.Is(err, errSecret) {
			t.Errorf("%s: open = %v, want errSecret", name, err)
		}
	}
}

// makeLegacy rewrites every sealed secret of the store in dir in the format
// of the builds before associated data (nonce || ciphertext, no AD, no
// version byte) and removes the meta keys those builds did not write.
func makeLegacy(t *testing.T, db *DB) {
	t.Helper()
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bSecrets)
		type kv struct{ k, v []byte }
		var out []kv
		if err := b.ForEach(func(key, v []byte) error {
			acct, user, _ := strings.Cut(string(key), "/")
			pw, err := db.open(v, sipPasswordAD(acct, user))
			if err != nil {
				return err
			}
			old, err := db.sealLegacy(pw)
			out = append(out, kv{append([]byte(nil), key...), old})
			return err
		}); err != nil {
			return err
		}
		for _, e := range out {
			if err := b.Put(e.k, e.v); err != nil {
				return err
			}
		}
		pb := boltBucket{tx.Bucket(bProvisioning)}
		var accts []string
		pb.ForEach(func(key, _ []byte) error { accts = append(accts, string(key)); return nil })
		for _, acct := range accts {
			var rec provisioningRecord
			if err := get(pb, acct, &rec); err != nil {
				return err
			}
			for _, f := range []struct {
				p  *[]byte
				ad []byte
			}{{&rec.KeySealed, provKeyAD(acct)}, {&rec.PasswordSealed, provPasswordAD(acct)}} {
				plain, err := db.open(*f.p, f.ad)
				if err != nil {
					return err
				}
				if *f.p, err = db.sealLegacy(plain); err != nil {
					return err
				}
			}
			if err := put(pb, acct, rec); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		if err := meta.Delete([]byte(metaSealedFormat)); err != nil {
			return err
		}
		return meta.Delete([]byte(metaKeyCheck))
	}); err != nil {
		t.Fatal(err)
	}
}

// A data file written before associated data still decrypts, and Open
// rewrites its secrets into the bound format once.
func TestOldFormatSecretsStillDecrypt(t *testing.T) {
	boltOnly(t, "rewrites records through the bbolt file")
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAccount("acme", "acme.test", System); err != nil {
		t.Fatal(err)
	}
	u := mustUser(t, db, "acme", "1001")
	want, err := db.SIPCredentials("acme", u.ID, System)
	if err != nil {
		t.Fatal(err)
	}
	prov, err := db.ProvisioningSettings("acme", System)
	if err != nil {
		t.Fatal(err)
	}
	makeLegacy(t, db)
	var legacy []byte
	db.bolt.View(func(tx *bolt.Tx) error {
		legacy = append(legacy, tx.Bucket(bSecrets).Get([]byte(k("acme", u.ID)))...)
		return nil
	})
	if _, err := db.openLegacy(legacy); err != nil {
		t.Fatalf("the test did not write the old format: %v", err)
	}
	db.Close()

	db = openT(t, dir)
	got, err := db.SIPCredentials("acme", u.ID, System)
	if err != nil || got.Password != want.Password {
		t.Fatalf("old-format password after reopen: %v (same: %v)", err, got.Password == want.Password)
	}
	id, err := db.SIPIdentity("acme.test", "1001")
	if err != nil || id.Password != want.Password {
		t.Fatalf("SIPIdentity after reopen: %v", err)
	}
	p2, err := db.ProvisioningSettings("acme", System)
	if err != nil || p2.Key != prov.Key || p2.Password != prov.Password {
		t.Fatalf("old-format provisioning secrets after reopen: %v", err)
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		now := tx.Bucket(bSecrets).Get([]byte(k("acme", u.ID)))
		if len(now) == 0 || now[0] != sealV2 || bytes.Equal(now, legacy) {
			t.Errorf("the blob was not rewritten in format 2")
		}
		if f := tx.Bucket(bMeta).Get([]byte(metaSealedFormat)); string(f) != "2" {
			t.Errorf("meta sealed_format = %q, want 2", f)
		}
		return nil
	})
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}

// A different secret.key (not the one the file was written with) is a
// clear refusal at Open, for old and new formats alike.
func TestWrongKeyRefusedAtOpen(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		if legacy && etcdForTest != nil {
			continue // makeLegacy rewrites the bbolt file
		}
		dir := t.TempDir()
		db, err := openTest(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateAccount("acme", "acme.test", System); err != nil {
			t.Fatal(err)
		}
		mustUser(t, db, "acme", "1001")
		if legacy {
			makeLegacy(t, db)
		}
		db.Close()
		if err := os.WriteFile(filepath.Join(dir, KeyFile), bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
			t.Fatal(err)
		}
		db, err = openTest(dir, Options{})
		if err == nil {
			db.Close()
			t.Fatalf("legacy=%v: Open with another secret.key succeeded", legacy)
		}
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "secret.key does not belong") || strings.Contains(err.Error(), "\n") {
			t.Errorf("legacy=%v: error = %q, want one line about secret.key", legacy, err)
		}
	}
}

// FuzzOpenSealed: no blob opens for the wrong record, and none panics.
func FuzzOpenSealed(f *testing.F) {
	dir := f.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	good, _ := db.seal("s3cret", secretAD("sip_password", "acme", "u-1"))
	f.Add(good, "acme", "u-1")
	f.Add(good, "acme", "u-2")
	f.Add(good[1:], "acme", "u-1")
	f.Add([]byte{sealV2}, "", "")
	f.Fuzz(func(t *testing.T, blob []byte, acct, id string) {
		plain, err := db.open(blob, secretAD("sip_password", acct, id))
		if err == nil && (acct != "acme" || id != "u-1" || plain != "s3cret") {
			t.Fatalf("blob opened as %q for %s/%s", plain, acct, id)
		}
	})
}
