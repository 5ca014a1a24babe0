package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testToken = "e2e-provider-token-0123456789"

type app struct {
	t      *testing.T
	addrs  addrs
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// start runs dialtone in-process on 127.0.0.1:0 with a data dir, returning
// once every socket is bound.
func start(t *testing.T, dataDir string, extra ...string) *app {
	t.Helper()
	args := append([]string{"--data", dataDir, "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0",
		"--admin-addr", "127.0.0.1:0", "--domain", "example.test", "--bootstrap-token", testToken, "--log-level", "debug"}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	a := &app{t: t, cancel: cancel, done: make(chan error, 1), logs: &syncBuffer{mu: make(chan struct{}, 1)}}
	readyc := make(chan addrs, 1)
	go func() {
		a.done <- run(ctx, args, func(string) string { return "" }, a.logs, func(ad addrs) { readyc <- ad })
	}()
	select {
	case a.addrs = <-readyc:
	case err := <-a.done:
		t.Fatalf("run() = %v before ready; logs:\n%s", err, a.logs)
	case <-time.After(20 * time.Second):
		t.Fatal("dialtone not ready after 20 s")
	}
	t.Cleanup(a.stop)
	return a
}

func (a *app) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	select {
	case err := <-a.done:
		if err != nil {
			a.t.Errorf("run() returned %v", err)
		}
	case <-time.After(15 * time.Second):
		a.t.Error("dialtone did not stop within 15 s")
	}
}

// api calls the admin API and decodes a JSON answer into a map.
func (a *app) api(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+a.addrs.Admin+path, r)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			a.t.Fatalf("%s %s: %d, body not JSON: %q", method, path, res.StatusCode, raw)
		}
	}
	return res.StatusCode, m
}

func blockerKinds(t *testing.T, m map[string]any) []string {
	t.Helper()
	e, _ := m["error"].(map[string]any)
	bs, _ := e["blockers"].([]any)
	var kinds []string
	for _, b := range bs {
		kinds = append(kinds, b.(map[string]any)["kind"].(string))
	}
	return kinds
}

// TestEndToEnd is the spine's walk-through on real sockets: create a user over
// HTTP, register over UDP (SHA-256) and TCP (MD5), see both registrations, be
// refused deletion with every blocker at once, disable (REGISTER → 403),
// unregister (still allowed), delete (204), and GET → 404.
func TestEndToEnd(t *testing.T) {
	a := start(t, t.TempDir())
	const base = "/api/v1/accounts/default"

	code, u := a.api("POST", base+"/users", map[string]string{"extension": "1002", "name": "Ada Lovelace", "email": "ada@example.test"})
	if code != 201 {
		t.Fatalf("POST /users = %d %v, want 201", code, u)
	}
	id, _ := u["id"].(string)
	if id == "" || u["status"] != "enabled" {
		t.Fatalf("created user = %v, want an id and status enabled", u)
	}
	code, cred := a.api("GET", base+"/users/"+id+"/sip-credentials", nil)
	if code != 200 || cred["username"] != "1002" || cred["realm"] != "example.test" {
		t.Fatalf("GET sip-credentials = %d %v", code, cred)
	}
	password := cred["password"].(string)
	if _, list := a.api("GET", base+"/users", nil); strings.Contains(fmt.Sprint(list), password) {
		t.Fatal("the SIP password appears in the user list")
	}

	udp := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", "1002", password)
	tcp := newPhone(t, "TCP", a.addrs.SIPTCP, "example.test", "1002", password)
	wrong := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", "1002", password+"x")
	if res := wrong.register("sip:1002@127.0.0.1:5099", 600, "SHA-256"); res.StatusCode != 401 && res.StatusCode != 403 {
		t.Fatalf("REGISTER with a wrong password = %d, want 401 or 403", res.StatusCode)
	}
	if res := udp.register("sip:1002@127.0.0.1:5098", 600, "SHA-256"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over UDP with SHA-256 = %d %s", res.StatusCode, res.Reason)
	}
	if res := tcp.register("sip:1002@127.0.0.1:5097;transport=tcp", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TCP with MD5 = %d %s", res.StatusCode, res.Reason)
	}

	code, regs := a.api("GET", base+"/users/"+id+"/registrations", nil)
	list, _ := regs["registrations"].([]any)
	if code != 200 || len(list) != 2 {
		t.Fatalf("GET registrations = %d %v, want 2", code, regs)
	}
	transports := map[string]bool{}
	for _, r := range list {
		m := r.(map[string]any)
		transports[fmt.Sprint(m["transport"])] = true
		if m["user_agent"] != "e2e-phone/1.0" || m["source"] == "" || m["expires_at"] == "" {
			t.Errorf("registration = %v, want user_agent, source and expires_at", m)
		}
	}
	if !transports["udp"] || !transports["tcp"] {
		t.Errorf("registration transports = %v, want udp and tcp", transports)
	}

	code, refused := a.api("DELETE", base+"/users/"+id, nil)
	kinds := blockerKinds(t, refused)
	if code != 409 || strings.Join(kinds, ",") != "enabled,registration,registration" {
		t.Fatalf("DELETE while enabled and registered = %d %v, want 409 with enabled + 2 registrations", code, refused)
	}
	if e := refused["error"].(map[string]any); e["code"] != "delete_blocked" {
		t.Fatalf("error code = %v, want delete_blocked", e["code"])
	}

	if code, _ := a.api("POST", base+"/users/"+id+"/disable", nil); code != 200 {
		t.Fatalf("disable = %d", code)
	}
	if res := udp.register("sip:1002@127.0.0.1:5098", 600, "SHA-256"); res.StatusCode != 403 {
		t.Fatalf("REGISTER refresh while disabled = %d, want 403", res.StatusCode)
	}
	if res := udp.register("sip:1002@127.0.0.1:5098", 0, "SHA-256"); res.StatusCode != 200 {
		t.Fatalf("unregister (Expires 0) while disabled = %d, want 200", res.StatusCode)
	}
	if res := tcp.register("*", 0, "MD5"); res.StatusCode != 200 {
		t.Fatalf("unregister (Contact: *) while disabled = %d, want 200", res.StatusCode)
	}
	if code, _ := a.api("DELETE", base+"/users/"+id, nil); code != 204 {
		t.Fatalf("DELETE after sign-out = %d, want 204", code)
	}
	if code, _ := a.api("GET", base+"/users/"+id, nil); code != 404 {
		t.Fatalf("GET deleted user = %d, want 404", code)
	}
	if res := udp.register("sip:1002@127.0.0.1:5098", 600, "SHA-256"); res.StatusCode != 401 && res.StatusCode != 403 && res.StatusCode != 404 {
		t.Fatalf("REGISTER of a deleted user = %d, want a refusal", res.StatusCode)
	}
	// History keeps the person.
	_, audit := a.api("GET", base+"/audit", nil)
	if s := fmt.Sprint(audit); !strings.Contains(s, "Ada Lovelace") || strings.Contains(s, password) {
		t.Errorf("audit log should name the deleted user and never hold the password: %s", s)
	}
	if strings.Contains(a.logs.String(), password) {
		t.Error("the SIP password appears in the logs")
	}
	// One registry serves every component's metrics.
	res, err := http.Get("http://" + a.addrs.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, name := range []string{"dialtone_sip_registrations_live", `dialtone_sip_register_responses_total{code="200"}`,
		"dialtone_sip_active_calls", "dialtone_provisioning_fetches_total", "dialtone_admin_requests_total", "go_goroutines"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestRestartKeepsRegistrations: a registration survives a restart on the same data dir.
func TestRestartKeepsRegistrations(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir)
	const base = "/api/v1/accounts/default"
	_, u := a.api("POST", base+"/users", map[string]string{"extension": "1003", "name": "Grace Hopper"})
	id := u["id"].(string)
	_, cred := a.api("GET", base+"/users/"+id+"/sip-credentials", nil)
	p := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", "1003", cred["password"].(string))
	if res := p.register("sip:1003@127.0.0.1:5096", 600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d", res.StatusCode)
	}
	a.stop()
	b := start(t, dir)
	_, regs := b.api("GET", base+"/users/"+id+"/registrations", nil)
	if list, _ := regs["registrations"].([]any); len(list) != 1 {
		t.Fatalf("registrations after restart = %v, want 1", regs)
	}
}

func TestStartupErrors(t *testing.T) {
	t.Run("PortInUse", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		err = run(context.Background(), []string{"--data", t.TempDir(), "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0",
			"--admin-addr", ln.Addr().String()}, func(string) string { return "" }, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("run() with the admin port taken = %v, want one line naming the address in use", err)
		}
	})
	t.Run("SecondProcessOnDataDir", func(t *testing.T) {
		dir := t.TempDir()
		start(t, dir)
		err := run(context.Background(), []string{"--data", dir, "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0",
			"--admin-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, nil)
		if err == nil || !strings.Contains(err.Error(), "in use by another process") {
			t.Fatalf("second run() on the same data dir = %v, want 'in use by another process'", err)
		}
	})
	t.Run("UnreadableDataDir", func(t *testing.T) {
		if os.Geteuid() == 0 {
			// root reads everything; use a path under a regular file instead.
			f := filepath.Join(t.TempDir(), "file")
			os.WriteFile(f, nil, 0o600)
			err := run(context.Background(), []string{"--data", filepath.Join(f, "data")}, func(string) string { return "" }, io.Discard, nil)
			if err == nil {
				t.Fatal("run() with a data dir under a file succeeded")
			}
			return
		}
		dir := t.TempDir()
		os.Chmod(dir, 0)
		defer os.Chmod(dir, 0o700)
		if err := run(context.Background(), []string{"--data", filepath.Join(dir, "d")}, func(string) string { return "" }, io.Discard, nil); err == nil {
			t.Fatal("run() with an unreadable data dir succeeded")
		}
	})
	t.Run("EnvironmentAndFlags", func(t *testing.T) {
		env := map[string]string{"DIALTONE_DOMAIN": "env.example.test", "DIALTONE_ADMIN_ADDR": "127.0.0.1:9"}
		c, err := parseConfig([]string{"--admin-addr", "127.0.0.1:7"}, func(k string) string { return env[k] }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if c.Domain != "env.example.test" || c.AdminAddr != "127.0.0.1:7" {
			t.Fatalf("config = domain %q admin %q; want the env domain and the flag's admin address", c.Domain, c.AdminAddr)
		}
		if _, err := parseConfig([]string{"--min-expires", "100", "--max-expires", "50"}, func(string) string { return "" }, io.Discard); err == nil {
			t.Fatal("min-expires above max-expires accepted")
		}
	})
}

func TestGeneratedAdminToken(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	logs.mu = make(chan struct{}, 1)
	readyc := make(chan addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data", dir, "--sip-addr", "127.0.0.1:0", "--provisioning-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"},
			func(string) string { return "" }, &logs, func(a addrs) { readyc <- a })
	}()
	var ad addrs
	select {
	case ad = <-readyc:
	case err := <-done:
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	}()
	path := filepath.Join(dir, "admin-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("admin-token not written: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("admin-token mode = %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	token := strings.TrimSpace(string(raw))
	if strings.Contains(logs.String(), token) {
		t.Error("the generated token appears in the logs")
	}
	if !strings.Contains(logs.String(), path) {
		t.Error("the logs do not name the token file")
	}
	req, _ := http.NewRequest("GET", "http://"+ad.Admin+"/api/v1/accounts", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /accounts with the generated token = %d, want 200", res.StatusCode)
	}
}
