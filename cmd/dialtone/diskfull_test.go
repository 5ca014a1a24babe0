package main

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/dialtone-voip/dialtone/internal/lossyfs"
)

// TestDiskFull runs dialtone on lossyfs and makes every write fail with
// ENOSPC, as a full disk does: admin writes answer 507 insufficient_storage,
// REGISTER answers 500 with Retry-After, /readyz is 503 and
// dialtone_store_commit_failures_total counts the failed commits. Reads keep
// working. Once space is freed everything works again without a restart.
func TestDiskFull(t *testing.T) {
	if err := lossyfs.Supported(); err != nil {
		t.Skipf("skipping the disk-full test: %v", err)
	}
	mnt := t.TempDir()
	fsys, err := lossyfs.Mount(mnt, t.TempDir())
	if err != nil {
		t.Skipf("skipping the disk-full test: cannot mount FUSE here: %v", err)
	}
	t.Cleanup(func() { fsys.Unmount() })
	p := startProcess(t, testProcessBinary(t), mnt)
	t.Cleanup(p.kill) // runs before the unmount
	a := &app{t: t, addrs: p.addrs}
	code, u := a.api("POST", "/api/v1/accounts/default/users", map[string]string{"extension": "1001", "name": "Ada"})
	if code != 201 {
		t.Fatalf("create user: %d %v", code, u)
	}
	id := u["id"].(string)
	_, cred := a.api("GET", "/api/v1/accounts/default/users/"+id+"/sip-credentials", nil)
	ph := newPhone(t, "UDP", a.addrs.SIPUDP, "example.test", "1001", cred["password"].(string))
	if res := ph.register("sip:1001@127.0.0.2:5062", 3600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER before the disk fills: %d", res.StatusCode)
	}
	ready := func() int {
		res, err := http.Get("http://" + a.addrs.Admin + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	failures := func() int {
		res, err := http.Get("http://" + a.addrs.Admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		m := regexp.MustCompile(`(?m)^dialtone_store_commit_failures_total (\d+)`).FindSubmatch(b)
		if m == nil {
			t.Fatal("no dialtone_store_commit_failures_total in /metrics")
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	if ready() != 200 || failures() != 0 {
		t.Fatalf("before: readyz %d, %d commit failures", ready(), failures())
	}

	fsys.SetFull(true)
	code, body := a.api("POST", "/api/v1/accounts/default/users", map[string]string{"extension": "1002", "name": "Bob"})
	if e, _ := body["error"].(map[string]any); code != 507 || e["code"] != "insufficient_storage" {
		t.Fatalf("write on a full disk = %d %v, want 507 insufficient_storage", code, body)
	}
	if code, _ := a.api("PATCH", "/api/v1/accounts/default/users/"+id, map[string]string{"name": "Ada L."}); code != 507 {
		t.Fatalf("PATCH on a full disk = %d, want 507", code)
	}
	res := ph.register("sip:1001@127.0.0.3:5062", 3600, "MD5")
	if res.StatusCode != 500 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("REGISTER on a full disk = %d (Retry-After %v), want 500 with Retry-After", res.StatusCode, res.GetHeader("Retry-After"))
	}
	if got := ready(); got != 503 {
		t.Fatalf("readyz on a full disk = %d, want 503", got)
	}
	if n := failures(); n < 3 {
		t.Fatalf("%d commit failures counted, want at least 3", n)
	}
	if code, u := a.api("GET", "/api/v1/accounts/default/users/"+id, nil); code != 200 || u["name"] != "Ada" {
		t.Fatalf("read on a full disk = %d %v, want the unchanged user", code, u)
	}

	fsys.SetFull(false) // space is freed
	if got := ready(); got != 200 {
		t.Fatalf("readyz after space is freed = %d, want 200", got)
	}
	if code, body := a.api("POST", "/api/v1/accounts/default/users", map[string]string{"extension": "1002", "name": "Bob"}); code != 201 {
		t.Fatalf("write after space is freed = %d %v", code, body)
	}
	if res := ph.register("sip:1001@127.0.0.3:5062", 3600, "MD5"); res.StatusCode != 200 {
		t.Fatalf("REGISTER after space is freed = %d", res.StatusCode)
	}
}
