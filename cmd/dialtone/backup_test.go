package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

// dumpStore is what a restore must bring back: users, bindings, devices.
func dumpStore(t *testing.T, db *store.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	users, err := db.Users(store.DefaultAccount)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		out["user "+u.ID] = fmt.Sprintf("%s %s %s", u.Extension, u.Name, u.Status)
		bs, err := db.Bindings(store.DefaultAccount, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			out["binding "+b.Contact] = fmt.Sprintf("%s %s %s", u.ID, b.Source, b.ExpiresAt.UTC().Format(time.RFC3339Nano))
		}
	}
	devs, err := db.Devices(store.DefaultAccount)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		out["device "+d.MAC] = fmt.Sprintf("%s %s %v", d.Model, d.Label, d.Lines)
	}
	return out
}

func openDump(t *testing.T, dir string) map[string]string {
	t.Helper()
	db, err := store.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		t.Fatalf("%s: consistency check: %v", dir, err)
	}
	return dumpStore(t, db)
}

// TestBackupRestore backs dialtone up through GET /api/v1/backup while it
// serves REGISTERs and admin writes, restores the archive into a new data
// directory and checks it: consistent, every user acknowledged before the
// backup began present. A second backup once the load has stopped restores
// to exactly the live data (users, bindings, devices), and so does an
// offline backup of the stopped server's directory; the restored directory
// runs. Restore refuses a non-empty directory and a damaged archive, and an
// offline backup of a running server's directory points at --admin-url.
func TestBackupRestore(t *testing.T) {
	src := t.TempDir()
	a := start(t, src)
	getenv := func(k string) string {
		if k == "DIALTONE_TOKEN" {
			return testToken
		}
		return ""
	}
	var phones []plUser
	for i := 0; i < 3; i++ {
		code, u := a.api("POST", "/api/v1/accounts/default/users", map[string]string{"extension": fmt.Sprint(2000 + i), "name": "Phone"})
		if code != 201 {
			t.Fatalf("create user: %d %v", code, u)
		}
		_, c := a.api("GET", "/api/v1/accounts/default/users/"+u["id"].(string)+"/sip-credentials", nil)
		phones = append(phones, plUser{id: u["id"].(string), ext: fmt.Sprint(2000 + i), password: c["password"].(string)})
	}
	if code, m := a.api("POST", "/api/v1/accounts/default/devices", map[string]any{"mac": "80:5E:C0:00:00:01", "model": "T54W",
		"lines": []map[string]any{{"line": 1, "user_id": phones[0].id}}}); code != 201 {
		t.Fatalf("create device: %d %v", code, m)
	}

	// Load: phones re-register, an admin creates users.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var registers atomic.Int64
	for w, u := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ph := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", u.ext, u.password)
			for j := 0; ctx.Err() == nil; j++ {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				res, err := ph.tryRegister(rctx, fmt.Sprintf("sip:%s@127.0.0.%d:%d", u.ext, 2+w, 20000+j%5), 3600, "MD5")
				cancel()
				if err == nil && res.StatusCode == 200 {
					registers.Add(1)
				}
			}
		}()
	}
	var mu sync.Mutex
	var ackedBefore []string // users answered 201
	wg.Add(1)
	go func() {
		defer wg.Done()
		api := plAPI(a.addrs.Admin)
		for i := 0; ctx.Err() == nil && i < 500; i++ {
			code, u, err := api(ctx, "POST", "/api/v1/accounts/default/users", map[string]string{"extension": fmt.Sprintf("6%03d", i), "name": "Load"})
			if err == nil && code == 201 {
				mu.Lock()
				ackedBefore = append(ackedBefore, u["id"].(string))
				mu.Unlock()
			}
		}
	}()
	var mustHave []string
	for registers.Load() < 20 || len(mustHave) < 10 { // the load is running
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		mustHave = append([]string(nil), ackedBefore...)
		mu.Unlock()
	}

	out := t.TempDir()
	var stdout bytes.Buffer
	underLoad := filepath.Join(out, "load.tar")
	if err := runBackup(context.Background(), []string{"--out", underLoad, "--admin-url", "http://" + a.addrs.Admin}, getenv, &stdout, io.Discard); err != nil {
		t.Fatalf("backup under load: %v", err)
	}
	stop()
	wg.Wait()
	if !strings.Contains(stdout.String(), "secret") {
		t.Errorf("backup output does not remind of the key: %q", stdout.String())
	}
	if fi, err := os.Stat(underLoad); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive mode: %v %v, want 0600", fi, err)
	}
	restored := filepath.Join(out, "restored-load")
	if err := runRestore([]string{"--in", underLoad, "--data", restored}, io.Discard, io.Discard); err != nil {
		t.Fatalf("restore: %v", err)
	}
	got := openDump(t, restored)
	for _, id := range mustHave {
		if _, ok := got["user "+id]; !ok {
			t.Errorf("user %s was answered 201 before the backup began but is not in it", id)
		}
	}
	if _, ok := got["device 805ec0000001"]; !ok {
		t.Errorf("the device is not in the backup: %v", got)
	}

	// Quiet now: a backup restores to exactly the live data. The phones
	// stopped sending, but a REGISTER they gave up on may still be read or
	// answered by the server: wait until nothing is in flight and no request
	// arrived for a few scrapes.
	waitSIPQuiet(t, a.addrs.Admin)
	quiet := filepath.Join(out, "quiet.tar")
	if err := runBackup(context.Background(), []string{"--out", quiet, "--admin-url", "http://" + a.addrs.Admin}, getenv, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	// The running server's directory cannot be backed up offline.
	err := runBackup(context.Background(), []string{"--out", filepath.Join(out, "x.tar"), "--data", src}, getenv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--admin-url") {
		t.Errorf("offline backup of a running server = %v, want a pointer to --admin-url", err)
	}
	a.stop()
	live := openDump(t, src)
	restoredQuiet := filepath.Join(out, "restored-quiet")
	if err := runRestore([]string{"--in", quiet, "--data", restoredQuiet}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(live, openDump(t, restoredQuiet)); diff != "" {
		t.Errorf("restored backup differs from the live data (-live +restored):\n%s", diff)
	}
	if len(live) < len(mustHave)+len(phones) {
		t.Errorf("only %d records: the load did not run", len(live))
	}
	offline := filepath.Join(out, "offline.tar")
	if err := runBackup(context.Background(), []string{"--out", offline, "--data", src}, getenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("offline backup: %v", err)
	}
	restoredOffline := filepath.Join(out, "restored-offline")
	if err := runRestore([]string{"--in", offline, "--data", restoredOffline}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(live, openDump(t, restoredOffline)); diff != "" {
		t.Errorf("offline backup differs from the live data:\n%s", diff)
	}
	// The SIP passwords decrypt in the restored directory: it runs, and
	// hands out the same credentials.
	b := start(t, restoredQuiet)
	if code, c := b.api("GET", "/api/v1/accounts/default/users/"+phones[1].id+"/sip-credentials", nil); code != 200 || c["password"] != phones[1].password {
		t.Errorf("restored credentials: %d, password equal %v", code, c["password"] == phones[1].password)
	}
	b.stop()

	// Refusals: an existing archive, a non-empty directory, a damaged archive.
	if err := runBackup(context.Background(), []string{"--out", quiet, "--data", src}, getenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file = %v", err)
	}
	if err := runRestore([]string{"--in", quiet, "--data", restoredQuiet}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("restore into a non-empty directory = %v", err)
	}
	raw, _ := os.ReadFile(quiet)
	short := filepath.Join(out, "short.tar")
	os.WriteFile(short, raw[:len(raw)/2], 0o600)
	empty := filepath.Join(out, "empty-target")
	if err := runRestore([]string{"--in", short, "--data", empty}, io.Discard, io.Discard); err == nil {
		t.Error("restore of a truncated archive succeeded")
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("a failed restore left %d files behind", len(entries))
	}
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	tw.WriteHeader(&tar.Header{Name: "../escape", Mode: 0o600, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	os.WriteFile(filepath.Join(out, "evil.tar"), evil.Bytes(), 0o600)
	if err := runRestore([]string{"--in", filepath.Join(out, "evil.tar"), "--data", filepath.Join(out, "evil")}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "unexpected entry") {
		t.Errorf("restore of an archive with a foreign entry = %v", err)
	}
	if _, err := os.Stat(filepath.Join(out, "escape")); err == nil {
		t.Error("a foreign entry escaped the data directory")
	}
}

// Over HTTPS, `dialtone backup --ca-cert` trusts the server's certificate;
// without it, a self-signed admin API is refused.
func TestBackupOverTLS(t *testing.T) {
	certDir := t.TempDir()
	if err := runCert([]string{"--out", certDir, "--host", "127.0.0.1"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(certDir, "cert.pem")
	a := start(t, t.TempDir(), "--tls-cert", cert, "--tls-key", filepath.Join(certDir, "key.pem"), "--sip-tls-addr", "127.0.0.1:0")
	getenv := func(k string) string {
		if k == "DIALTONE_TOKEN" {
			return testToken
		}
		return ""
	}
	out := t.TempDir()
	url := "https://" + a.addrs.Admin
	if err := runBackup(context.Background(), []string{"--out", filepath.Join(out, "a.tar"), "--admin-url", url}, getenv, io.Discard, io.Discard); err == nil {
		t.Error("backup from a self-signed server without --ca-cert succeeded")
	}
	if _, err := os.Stat(filepath.Join(out, "a.tar.partial")); err == nil {
		t.Error("a failed backup left its .partial file")
	}
	if err := runBackup(context.Background(), []string{"--out", filepath.Join(out, "b.tar"), "--admin-url", url, "--ca-cert", cert}, getenv, io.Discard, io.Discard); err != nil {
		t.Fatalf("backup with --ca-cert: %v", err)
	}
	if err := runBackup(context.Background(), []string{"--out", filepath.Join(out, "c.tar"), "--admin-url", url, "--ca-cert", cert}, func(string) string { return "" }, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("backup without a token = %v, want a pointer to --token-file", err)
	}
	tokFile := filepath.Join(out, "token")
	os.WriteFile(tokFile, []byte("wrong-token-0123456789\n"), 0o600)
	if err := runBackup(context.Background(), []string{"--out", filepath.Join(out, "d.tar"), "--admin-url", url, "--ca-cert", cert, "--token-file", tokFile}, getenv, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("backup with a wrong token = %v, want the 401", err)
	}
}

// waitSIPQuiet waits until dialtone has no SIP request in flight and its
// request count stayed the same over three scrapes 100 ms apart.
func waitSIPQuiet(t *testing.T, admin string) {
	t.Helper()
	scrape := func() (total, inFlight float64) {
		res, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		for _, line := range strings.Split(string(b), "\n") {
			name, val, ok := strings.Cut(line, " ")
			if !ok {
				continue
			}
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(name, "dialtone_sip_requests_total"):
				total += v
			case name == "dialtone_sip_in_flight_requests":
				inFlight = v
			}
		}
		return total, inFlight
	}
	deadline := time.Now().Add(30 * time.Second)
	last, stable := -1.0, 0
	for stable < 3 {
		if time.Now().After(deadline) {
			t.Fatal("SIP requests kept arriving 30 s after the phones stopped")
		}
		total, inFlight := scrape()
		if total == last && inFlight == 0 {
			stable++
		} else {
			stable = 0
		}
		last = total
		time.Sleep(100 * time.Millisecond)
	}
}
