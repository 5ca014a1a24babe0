package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
)

// dialtone migrate, as an operator runs it: a data directory a running
// dialtone holds is refused in one line; then into an embedded etcd (twice:
// the second run copies nothing) and back into a new directory that
// dialtone check passes and that holds the same user; a --key of another
// deployment is refused and leaves nothing behind.
func TestMigrateCommand(t *testing.T) {
	dir := t.TempDir()
	db, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	actor := store.Actor{Name: "test", Role: store.RoleProvider}
	if _, _, err := db.EnsureAccount(store.DefaultAccount, "example.test"); err != nil {
		t.Fatal(err)
	}
	u, err := db.CreateUser(store.DefaultAccount, store.NewUser{Extension: "1001", Name: "Ann"}, actor)
	if err != nil {
		t.Fatal(err)
	}
	etcd, err := etcdtest.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	url := "etcd://" + strings.TrimPrefix(etcd.Endpoints[0], "http://") + "/mig"
	bin := testProcessBinary(t)
	migrate := func(args ...string) (stdout, stderr string, err error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"migrate"}, args...)...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	// db still holds the directory, as a running dialtone would.
	_, stderr, err := migrate("--from-data", dir, "--to", url)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "in use by a running dialtone") {
		t.Fatalf("migrate of a directory in use: %v, stderr %q; want exit status 1 and one line", err, stderr)
	}
	db.Close()

	out, stderr, err := migrate("--from-data", dir, "--to", url)
	if err != nil || !strings.Contains(out, "done: copied ") || strings.Contains(out, "done: copied 0 ") ||
		!strings.Contains(out, "every node's --data must hold this same file") {
		t.Fatalf("migrate into etcd: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	out, stderr, err = migrate("--from-data", dir, "--to", url)
	if err != nil || !strings.Contains(out, "done: copied 0 keys") {
		t.Fatalf("second migrate into etcd: %v, want nothing copied\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}

	back := filepath.Join(t.TempDir(), "back")
	out, stderr, err = migrate("--from", url, "--to-data", back, "--key", filepath.Join(dir, store.KeyFile))
	if err != nil || !strings.Contains(out, "passes its check") {
		t.Fatalf("migrate back from etcd: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	var check bytes.Buffer
	if err := runCheck([]string{"--data", back}, &check, io.Discard); err != nil {
		t.Fatalf("dialtone check of the copy: %v\n%s", err, check.String())
	}
	copied, err := store.Open(back, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := copied.User(store.DefaultAccount, u.ID)
	copied.Close()
	if err != nil || got.Extension != "1001" {
		t.Fatalf("the copy's user = %+v, %v", got, err)
	}

	// Another deployment's key: refused, nothing left in the new directory.
	otherKey := filepath.Join(t.TempDir(), "other.key")
	if err := os.WriteFile(otherKey, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	err = runMigrate([]string{"--from", url, "--to-data", wrong, "--key", otherKey}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "is not the key of the deployment") {
		t.Fatalf("migrate with another key = %v, want a refusal", err)
	}
	if _, err := os.Stat(wrong); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused migrate left %s behind: %v", wrong, err)
	}
}
