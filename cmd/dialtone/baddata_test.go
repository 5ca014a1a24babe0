package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/dialtone-voip/dialtone/store"
)

// goodDataDir runs dialtone once and leaves a data directory holding an
// account, two users (so sealed SIP passwords) and provisioning secrets.
func goodDataDir(t *testing.T) (dir string, userIDs []string) {
	t.Helper()
	dir = t.TempDir()
	a := start(t, dir)
	const base = "/api/v1/accounts/default"
	for _, ext := range []string{"1001", "1002"} {
		status, u := a.api("POST", base+"/users", map[string]string{"extension": ext, "name": "User " + ext})
		if status != 201 {
			t.Fatalf("POST /users = %d %v", status, u)
		}
		userIDs = append(userIDs, u["id"].(string))
	}
	if status, _ := a.api("GET", base+"/provisioning", nil); status != 200 {
		t.Fatalf("GET /provisioning = %d", status)
	}
	a.stop()
	return dir, userIDs
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// editDB changes the data file directly, as damage or another release would.
func editDB(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, store.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// dumpRecords lists every key and value outside the meta bucket.
func dumpRecords(t *testing.T, file []byte) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, store.FileName)
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var out strings.Builder
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if string(name) == "meta" {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				fmt.Fprintf(&out, "%s/%x=%x\n", name, k, v)
				return nil
			})
		})
	})
	return out.String()
}

// TestDialtoneProcess is not a test: TestBadDataRefusedAtStart (and
// testProcessBinary, for TestDiskFull) runs the test
// binary again with DIALTONE_TEST_PROCESS=1 to get dialtone's main() in a
// process of its own (exit status and stderr included) without a go build.
func TestDialtoneProcess(t *testing.T) {
	if os.Getenv("DIALTONE_TEST_PROCESS") != "1" {
		t.Skip("runs only as a dialtone process started by another test")
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Args = append([]string{"dialtone"}, args...)
	main()
	os.Exit(0) // main returned: dialtone started and stopped
}

// TestBadDataRefusedAtStart runs dialtone's main() as a process on data
// directories that are wrong in one way each: every start is refused with
// one line on stderr and exit status 1, before anything is served or written.
func TestBadDataRefusedAtStart(t *testing.T) {
	good, users := goodDataDir(t)

	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
		check  func(t *testing.T, dir string)
		opened bool // refused after the store opened: meta may change, no record
	}{
		{
			name:   "MissingSecretKey",
			break_: func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, store.KeyFile)) },
			want:   "secret.key is missing but",
			check: func(t *testing.T, dir string) {
				if _, err := os.Stat(filepath.Join(dir, store.KeyFile)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("a new secret.key was written (every SIP password would be lost): %v", err)
				}
			},
		},
		{
			name: "ForeignSecretKey",
			break_: func(t *testing.T, dir string) {
				os.WriteFile(filepath.Join(dir, store.KeyFile), bytes.Repeat([]byte{1}, 32), 0o600)
			},
			want: "secret.key does not belong to dialtone.db",
		},
		{
			name:   "EmptyDataFile",
			break_: func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, store.FileName), 0) },
			want:   "is empty (0 bytes) but secret.key exists",
			check: func(t *testing.T, dir string) {
				if st, _ := os.Stat(filepath.Join(dir, store.FileName)); st.Size() != 0 {
					t.Errorf("the empty data file became a new store (%d bytes)", st.Size())
				}
			},
		},
		{
			name: "TruncatedDataFile",
			break_: func(t *testing.T, dir string) {
				st, _ := os.Stat(filepath.Join(dir, store.FileName))
				os.Truncate(filepath.Join(dir, store.FileName), st.Size()/3)
			},
			want: "is truncated",
		},
		{
			name: "UnknownRecordVersion",
			break_: func(t *testing.T, dir string) {
				editDB(t, dir, func(tx *bolt.Tx) error {
					b := tx.Bucket([]byte("accounts"))
					v := append([]byte(nil), b.Get([]byte(store.DefaultAccount))...)
					v[0] = 9
					return b.Put([]byte(store.DefaultAccount), v)
				})
			},
			want: "has format version 9, which this build cannot read",
		},
		{
			// Found by the consistency check at start: a sealed password
			// copied onto another user does not open there.
			name: "MovedSealedPassword",
			break_: func(t *testing.T, dir string) {
				editDB(t, dir, func(tx *bolt.Tx) error {
					b := tx.Bucket([]byte("secrets"))
					v := append([]byte(nil), b.Get([]byte(store.DefaultAccount+"/"+users[0]))...)
					return b.Put([]byte(store.DefaultAccount+"/"+users[1]), v)
				})
			},
			want:   "failed its consistency check",
			opened: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, good)
			c.break_(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, store.FileName))
			// A start that is not refused serves until killed: bound the wait.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDialtoneProcess$", "--", "--data", dir, "--sip-addr", "127.0.0.1:0",
				"--provisioning-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--domain", "example.test", "--bootstrap-token", testToken)
			cmd.Env = append(os.Environ(), "DIALTONE_TEST_PROCESS=1")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("dialtone started on bad data (killed after 30 s); stderr:\n%s", stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "dialtone: ") || !strings.Contains(lines[0], c.want) {
				t.Fatalf("stderr = %q, want one line containing %q", stderr.String(), c.want)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, store.FileName)); !bytes.Equal(before, after) {
				if !c.opened {
					t.Error("the refused start changed dialtone.db")
				} else if b, a := dumpRecords(t, before), dumpRecords(t, after); b != a {
					t.Error("the refused start changed records of dialtone.db")
				}
			}
			if c.check != nil {
				c.check(t, dir)
			}
		})
	}
	// The untouched copy still starts: the refusals are about the damage.
	a := start(t, copyDir(t, good))
	if status, _ := a.api("GET", "/api/v1/accounts/default/users/"+users[1]+"/sip-credentials", nil); status != 200 {
		t.Fatalf("sip-credentials on the good copy = %d", status)
	}
}

// A panic (or a fault) in a background task is logged; the process lives.
func TestSafelyRecoversBackgroundPanics(t *testing.T) {
	var logs syncBuffer
	logs.mu = make(chan struct{}, 1)
	log := slog.New(slog.NewTextHandler(&logs, nil))
	safely(log, "boom task", func() { panic("boom") })
	safely(log, "nil task", func() {
		var m map[string]*int
		_ = *m["x"] // nil pointer dereference
	})
	out := logs.String()
	for _, want := range []string{`task="boom task"`, "panic=boom", `task="nil task"`, "nil pointer dereference", "stack="} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
