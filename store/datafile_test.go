package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// populated makes a data directory with an account, users, a provisioning
// record and enough bindings to span many pages, and closes it.
func populated(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.CreateAccount("acme", "acme.test", System); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ProvisioningSettings("acme", System); err != nil {
		t.Fatal(err)
	}
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		for i := range 3000 {
			if err := put(tx.Bucket(bBindings), fmt.Sprintf("acme/u-x/%06d", i), Binding{AccountID: "acme", UserID: "u-x", Contact: strings.Repeat("c", 100)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustUser(t, db, "acme", "1001")
	return dir
}

func wantRefused(t *testing.T, dir, want string) {
	t.Helper()
	db, err := Open(dir, Options{})
	if err == nil {
		db.Close()
		t.Fatalf("Open succeeded, want a refusal containing %q", want)
	}
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Open = %q, want one ErrDamaged line containing %q", err, want)
	}
}

// A missing secret.key next to a data file with sealed secrets is refused,
// and no new key is written (that would make every password undecryptable).
func TestMissingKeyWithSecretsRefused(t *testing.T) {
	dir := populated(t)
	keyPath := filepath.Join(dir, KeyFile)
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, dir, "secret.key is missing")
	if _, err := os.Stat(keyPath); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a new secret.key was written: %v", err)
	}
	// A first start (nothing there) still creates the key.
	fresh := t.TempDir()
	db := openT(t, fresh)
	db.Close()
	if st, err := os.Stat(filepath.Join(fresh, KeyFile)); err != nil || st.Size() != 32 {
		t.Fatalf("first start: key %v", err)
	}
}

// A 0-byte data file next to an existing key is a failed copy, not a first
// start: refused, and the file stays as it was.
func TestEmptyDataFileNextToKeyRefused(t *testing.T) {
	dir := populated(t)
	dbPath := filepath.Join(dir, FileName)
	if err := os.Truncate(dbPath, 0); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, dir, "is empty (0 bytes)")
	if st, _ := os.Stat(dbPath); st.Size() != 0 {
		t.Fatalf("the empty data file was initialised (%d bytes)", st.Size())
	}
}

// A truncated data file is refused at any length, never a panic or fault.
func TestTruncatedDataFileRefused(t *testing.T) {
	dir := populated(t)
	dbPath := filepath.Join(dir, FileName)
	full, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var used int64
	m0, _ := parseMeta(full[:4096])
	m1, _ := parseMeta(full[m0.pageSize:])
	used = int64(max(m0.pgid, m1.pgid)) * int64(m0.pageSize)
	for _, n := range []int64{1, 100, 4095, 4096, 8192, 16384, 32768, used / 2, used - int64(m0.pageSize)} {
		if err := os.WriteFile(dbPath, full[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprint(n), func(t *testing.T) { wantRefused(t, dir, "restore it from a backup") })
	}
	// Garbage in both headers.
	junk := append([]byte(nil), full...)
	for i := range 2 * int(m0.pageSize) {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(dbPath, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	wantRefused(t, dir, "headers are damaged")
	// The whole file opens again.
	if err := os.WriteFile(dbPath, full, 0o600); err != nil {
		t.Fatal(err)
	}
	db := openT(t, dir)
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}

// A record whose version byte this build does not know is named at Open,
// instead of later misleading errors ("already exists").
func TestUnknownRecordVersionRefused(t *testing.T) {
	dir := populated(t)
	db := openT(t, dir)
	if err := db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bAccounts)
		v := append([]byte(nil), b.Get([]byte("acme"))...)
		v[0] = 7
		return b.Put([]byte("acme"), v)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Account("acme"); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "format version 7") {
		t.Errorf("Account = %v, want a format version error", err)
	}
	db.Close()
	wantRefused(t, dir, `record accounts/"acme" has format version 7`)
}
