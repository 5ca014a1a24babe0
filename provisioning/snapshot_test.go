package provisioning_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
)

// TestSnapshotFollowsEveryChange: the handler serves from snapshots, yet
// every change an admin makes is in the very next fetch, with no restart:
// a disabled user's slot is cleared (and the SIP password gone), enabling
// brings it back, a rename, an account override, and a deleted device is
// the same 404 as a MAC never added.
func TestSnapshotFollowsEveryChange(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	want404 := f.notFound(60)
	p := f.phone(61, t54wUA)
	file := f.path(t54wMAC + ".cfg")
	r := p.get(file)
	p.adopt(r.body)
	fetch := func(what string) string {
		t.Helper()
		r := p.get(file)
		if r.status != http.StatusOK {
			t.Fatalf("%s: fetch = %d, want 200", what, r.status)
		}
		return string(r.body)
	}
	if b := fetch("own credentials"); !strings.Contains(b, "account.1.enable = 1\n") || !strings.Contains(b, f.sipPW) {
		t.Fatal("line 1 not active before any change")
	}
	if _, err := f.db.DisableUser("acme", f.user.ID, admin); err != nil {
		t.Fatal(err)
	}
	if b := fetch("user disabled"); !strings.Contains(b, "account.1.enable = 0\n") || strings.Contains(b, f.sipPW) {
		t.Fatal("a disabled user's slot is not cleared in the next fetch")
	}
	if _, err := f.db.EnableUser("acme", f.user.ID, admin); err != nil {
		t.Fatal(err)
	}
	if b := fetch("user enabled"); !strings.Contains(b, "account.1.enable = 1\n") {
		t.Fatal("an enabled user's slot is not back in the next fetch")
	}
	name := "Grace Hopper"
	if _, err := f.db.UpdateUser("acme", f.user.ID, store.UserPatch{Name: &name}, admin); err != nil {
		t.Fatal(err)
	}
	if b := fetch("user renamed"); !strings.Contains(b, "account.1.label = Grace Hopper\n") {
		t.Fatal("a rename is not in the next fetch")
	}
	if _, err := f.db.SetProvisioningOverrides("acme", map[string]string{"lang.gui": "French"}, admin); err != nil {
		t.Fatal(err)
	}
	if b := fetch("override set"); !strings.Contains(b, "lang.gui = French\n") {
		t.Fatal("an account override is not in the next fetch")
	}
	if err := f.db.DeleteDevice("acme", t54wMAC, admin); err != nil {
		t.Fatal(err)
	}
	// The deleted device's credentials are gone with it: the phone is
	// challenged as any unknown username is, and its MAC is then the 404.
	if r := p.get(file); r.status != http.StatusUnauthorized {
		t.Fatalf("deleted device's credentials = %d, want 401", r.status)
	}
	boot := f.phone(62, t54wUA)
	same(t, want404, boot.get(file))
}

// TestIfNoneMatch: a phone that sends the ETag it has gets 304 without the
// file, and its poll is still recorded; any other ETag gets the file.
func TestIfNoneMatch(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	p := f.phone(63, t54wUA)
	file := f.path(t54wMAC + ".cfg")
	r := p.get(file)
	etag := r.header.Get("ETag")
	if r.status != http.StatusOK || len(etag) < 10 {
		t.Fatalf("first fetch = %d with ETag %q", r.status, etag)
	}
	for _, inm := range []string{etag, `"nope", ` + etag, "W/" + etag, "*"} {
		got := p.rawHeader(file, p.authorization(file), "If-None-Match", inm)
		if got.status != http.StatusNotModified || len(got.body) != 0 || got.header.Get("ETag") != etag {
			t.Fatalf("If-None-Match %s = %d, %d bytes, ETag %q; want 304, no body, the same ETag", inm, got.status, len(got.body), got.header.Get("ETag"))
		}
	}
	d, err := f.db.Device("acme", t54wMAC)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10)
	got := p.rawHeader(file, p.authorization(file), "If-None-Match", etag)
	if got.status != http.StatusNotModified {
		t.Fatalf("again = %d", got.status)
	}
	if d2, _ := f.db.Device("acme", t54wMAC); !d2.LastProvisionedAt.After(d.LastProvisionedAt) {
		t.Fatal("a 304 poll is not recorded on the device")
	}
	if got := p.rawHeader(file, p.authorization(file), "If-None-Match", `"0123456789abcdef0123456789abcdef"`); got.status != http.StatusOK || !strings.Contains(string(got.body), "account.1.enable") {
		t.Fatalf("another ETag = %d, want 200 with the file", got.status)
	}
}

// rawHeader is phone.raw with one more request header.
func (p *phone) rawHeader(path, auth, name, value string) response {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.base+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	req.Header.Set("User-Agent", p.ua)
	req.Header.Set("Authorization", auth)
	req.Header.Set(name, value)
	res, err := p.client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	p.flush()
	return response{res.StatusCode, res.Header, body}
}
