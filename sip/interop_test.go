package sip

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// TestBaresipInterop registers a real, independent SIP client (Debian's
// baresip) with digest auth over UDP and TCP and checks the binding. Without
// baresip the test is skipped, unless CI=true (the CI script installs it).
func TestBaresipInterop(t *testing.T) {
	bin := baresipBinary(t)
	e := newEnv(t, Config{})
	for i, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			u, pw := e.addUser(fmt.Sprintf("30%d", i))
			dir := t.TempDir()
			// account: registration only, no audio or video modules (no sound card needed).
			config := "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:0\nmodule_app account.so\n"
			outbound := "sip:" + e.addr(transport)
			if transport == "TCP" {
				outbound += ";transport=tcp"
			}
			account := fmt.Sprintf("<sip:%s@%s>;auth_pass=%s;outbound=\"%s\";regint=600\n", u.Extension, testDomain, pw, outbound)
			for name, content := range map[string]string{"config": config, "accounts": account} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "-f", dir)
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
			cmd.WaitDelay = 3 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			defer func() {
				cancel()
				<-done
				if t.Failed() {
					t.Logf("baresip output:\n%s", out.String())
				}
			}()

			b, ok := waitBinding(t, e, u, 10*time.Second, done)
			if !ok {
				t.Fatalf("baresip did not register within 10 s")
			}
			if !strings.Contains(b.UserAgent, "baresip") {
				t.Errorf("binding user agent = %q, want baresip's", b.UserAgent)
			}
			if b.Transport != strings.ToLower(transport) || !strings.HasPrefix(b.Source, "127.0.0.1:") {
				t.Errorf("binding = %+v, want transport %s from 127.0.0.1", b, strings.ToLower(transport))
			}
			if want := e.clock.Now().Add(600 * time.Second); !b.ExpiresAt.Equal(want) {
				t.Errorf("ExpiresAt = %v, want %v (regint 600)", b.ExpiresAt, want)
			}

			// On SIGTERM baresip unregisters (Expires: 0) before it exits.
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
				done <- nil // for the deferred cleanup
			case <-time.After(10 * time.Second):
				t.Fatal("baresip did not exit within 10 s of SIGTERM")
			}
			if bs := e.bindings(u); len(bs) != 0 {
				t.Errorf("bindings after baresip's unregister = %+v, want none", bs)
			}
		})
	}
}

// waitBinding polls the store until the user has a binding, the process
// exits, or timeout passes. An external process gives no other signal.
func waitBinding(t *testing.T, e *env, u store.User, timeout time.Duration, exited <-chan error) (store.Binding, bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	end := time.After(timeout)
	for {
		if bs := e.bindings(u); len(bs) > 0 {
			return bs[0], true
		}
		select {
		case <-tick.C:
		case <-end:
			return store.Binding{}, false
		case err := <-exited:
			t.Fatalf("baresip exited early: %v", err)
		}
	}
}

type lockedBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	wrote chan struct{} // signalled (never blocking) after each Write; made on first use
}

func (l *lockedBuffer) wroteLocked() chan struct{} {
	if l.wrote == nil {
		l.wrote = make(chan struct{}, 1)
	}
	return l.wrote
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	n, err := l.b.Write(p)
	ch := l.wroteLocked()
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
	return n, err
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// await returns as soon as cond holds on the output, checked now and after
// each write; it fails the test after d (a bound for a failing test: a
// passing one never sleeps).
func (l *lockedBuffer) await(t testing.TB, d time.Duration, what string, cond func(string) bool) {
	t.Helper()
	l.mu.Lock()
	ch := l.wroteLocked()
	l.mu.Unlock()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for !cond(l.String()) {
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("timed out after %v waiting: %s", d, what)
		}
	}
}

// awaitText waits until the output contains text (see await).
func (l *lockedBuffer) awaitText(t testing.TB, d time.Duration, what, text string) {
	t.Helper()
	l.await(t, d, what, func(s string) bool { return strings.Contains(s, text) })
}

// baresipBinary returns the path of Debian's baresip, skipping the test when
// it is missing — except in CI (CI=true), where .ci/run installs it and its
// absence is a failure.
func baresipBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("baresip not installed (CI=true): %v", err)
		}
		t.Skip("baresip not installed; apt-get install baresip")
	}
	return bin
}
