package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
)

// dialtone check reports versions, counts and consistency of a stopped
// server's directory without changing it, and fails on a running server's
// directory, a missing secret.key, a damaged file and a missing directory.
func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir)
	for _, ext := range []string{"1001", "1002"} {
		if code, m := a.api("POST", "/api/v1/accounts/default/users", map[string]string{"extension": ext, "name": "Check"}); code != 201 {
			t.Fatalf("create user: %d %v", code, m)
		}
	}
	err := runCheck([]string{"--data", dir}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "running dialtone") {
		t.Fatalf("check of a running server's directory = %v, want a clear refusal", err)
	}
	a.stop()

	before, _ := os.ReadFile(filepath.Join(dir, store.FileName))
	var out bytes.Buffer
	if err := runCheck([]string{"--data", dir}, &out, io.Discard); err != nil {
		t.Fatalf("check of a good directory: %v\n%s", err, out.String())
	}
	for _, want := range []string{"data schema 1 (this build reads 1)", "users 2", "secret.key: present", "live registrations: 0", "consistency: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("check output lacks %q:\n%s", want, out.String())
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, store.FileName)); !bytes.Equal(before, after) {
		t.Error("check changed the data file")
	}

	// A copy without its key.
	nokey := t.TempDir()
	os.WriteFile(filepath.Join(nokey, store.FileName), before, 0o600)
	out.Reset()
	err = runCheck([]string{"--data", nokey}, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "cannot be decrypted") {
		t.Errorf("check without secret.key = %v:\n%s", err, out.String())
	}
	if _, serr := os.Stat(filepath.Join(nokey, store.KeyFile)); serr == nil {
		t.Error("check created a secret.key")
	}

	// A damaged file: every page after the two meta pages overwritten.
	damaged := t.TempDir()
	bad := append([]byte(nil), before...)
	for i := 2 * 4096; i < len(bad); i++ {
		bad[i] = byte(i*7) ^ 0xA5
	}
	os.WriteFile(filepath.Join(damaged, store.FileName), bad, 0o600)
	key, _ := os.ReadFile(filepath.Join(dir, store.KeyFile))
	os.WriteFile(filepath.Join(damaged, store.KeyFile), key, 0o600)
	out.Reset()
	if err := runCheck([]string{"--data", damaged}, &out, io.Discard); err == nil {
		t.Errorf("check of a damaged file passed:\n%s", out.String())
	}

	if err := runCheck([]string{"--data", filepath.Join(t.TempDir(), "none")}, io.Discard, io.Discard); err == nil {
		t.Error("check of a missing directory passed")
	}
}
