package provisioning_test

import (
	"bytes"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
)

const (
	t46uMAC = "805ec0aabbdd"
	t46uUA  = "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:dd"
)

var credLine = regexp.MustCompile(`(?m)^static\.auto_provision\.server\.(username|password) = (.*)$`)

// fileCredentials reads the provisioning credentials a served file gives the phone.
func fileCredentials(t *testing.T, body []byte) (user, pass string) {
	t.Helper()
	for _, m := range credLine.FindAllSubmatch(body, -1) {
		switch string(m[1]) {
		case "username":
			user = string(m[2])
		case "password":
			pass = string(m[2])
		}
	}
	if user == "" || pass == "" {
		t.Fatalf("file carries no provisioning credentials:\n%s", body)
	}
	return user, pass
}

// adopt makes the phone use the credentials its file gave it, as a Yealink
// does after applying static.auto_provision.server.*.
func (p *phone) adopt(body []byte) {
	p.t.Helper()
	p.user, p.pass = fileCredentials(p.t, body)
	p.chal = nil
}

// secondDevice adds phone B (a T46U) to the fixture's account, with a line
// for a second user, and returns that user's SIP password.
func (f *fixture) secondDevice() string {
	f.t.Helper()
	u, err := f.db.CreateUser("acme", store.NewUser{Extension: "1002", Name: "Grace Hopper"}, admin)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("acme", store.NewDevice{MAC: t46uMAC, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, admin); err != nil {
		f.t.Fatal(err)
	}
	c, err := f.db.SIPCredentials("acme", u.ID, admin)
	if err != nil {
		f.t.Fatal(err)
	}
	return c.Password
}

// notFound is the one 404 (an unknown MAC asked for with valid bootstrap
// credentials), for comparing other refusals with.
func (f *fixture) notFound(n int) response {
	f.t.Helper()
	r := f.phone(n, "Yealink SIP-T54W 96.86.0.100 80:5e:c0:00:00:01").get(f.path("805ec0000001.cfg"))
	if r.status != http.StatusNotFound {
		f.t.Fatalf("unknown MAC = %d, want 404", r.status)
	}
	return r
}

// TestOneFileOpensNoOther is issue 11 row 5: with the credentials from phone
// A's own file, phone B's file is the 404 even with B's MAC in the
// User-Agent, and A's file carries neither B's credentials nor the account's.
func TestOneFileOpensNoOther(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	bSIP := f.secondDevice()
	want404 := f.notFound(30)

	a := f.phone(31, t54wUA)
	r := a.get(f.path(t54wMAC + ".cfg"))
	if r.status != http.StatusOK {
		t.Fatalf("A's file = %d", r.status)
	}
	a.adopt(r.body)
	bCreds, err := f.db.DeviceProvisioningCredentials("acme", t46uMAC, admin)
	if err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{"B's username": bCreds.Username, "B's password": bCreds.Password, "B's SIP password": bSIP,
		"the account's username": f.prov.Username, "the account's password": f.prov.Password, "the URL key": f.prov.Key} {
		if bytes.Contains(r.body, []byte(secret)) {
			t.Errorf("A's file contains %s", what)
		}
	}
	if a.user == f.prov.Username || a.pass == f.prov.Password {
		t.Error("A's file gives it the account's credentials")
	}

	// A's own credentials open A's files ...
	if r := a.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("A's file with A's own credentials = %d, want 200", r.status)
	}
	if r := a.get(f.path("y000000000096.cfg")); r.status != http.StatusOK {
		t.Fatalf("A's common file with A's own credentials = %d, want 200", r.status)
	}
	// ... and nothing of B's, whatever the User-Agent says.
	a.ua = t46uUA
	same(t, want404, a.get(f.path(t46uMAC+".cfg")))
	same(t, want404, a.get(f.path("y000000000108.cfg")))
	a.ua = t54wUA
	same(t, want404, a.get(f.path(t46uMAC+".cfg")))
	if d, _ := f.db.Device("acme", t46uMAC); !d.LastProvisionedAt.IsZero() {
		t.Fatal("B was stamped as fetched")
	}
	// B's own credentials open B's file, and B's only.
	b := f.phone(32, t46uUA)
	b.user, b.pass = bCreds.Username, bCreds.Password
	r = b.get(f.path(t46uMAC + ".cfg"))
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(bSIP)) {
		t.Fatalf("B's file with B's credentials = %d", r.status)
	}
	b.ua = t54wUA
	same(t, want404, b.get(f.path(t54wMAC+".cfg")))
}

// TestBootstrapOpensOnlyUnconfirmedDevices: the account's bootstrap
// credential opens a device that has never fetched with its own credentials;
// its file moves the phone onto them; from the first fetch with its own, the
// bootstrap credential gets the 404 for it (other new devices still open).
func TestBootstrapOpensOnlyUnconfirmedDevices(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	f.secondDevice()
	want404 := f.notFound(40)

	boot := f.phone(41, t54wUA)
	r := boot.get(f.path(t54wMAC + ".cfg"))
	if r.status != http.StatusOK {
		t.Fatalf("bootstrap on a new device = %d, want 200", r.status)
	}
	// Until the phone uses its own credentials, the bootstrap one still works
	// (a phone that lost the first file retries with it).
	if r := boot.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("bootstrap again before confirmation = %d, want 200", r.status)
	}
	if d, _ := f.db.Device("acme", t54wMAC); !d.CredentialsConfirmedAt.IsZero() {
		t.Fatal("confirmed by a bootstrap fetch")
	}
	own := f.phone(42, t54wUA)
	own.adopt(r.body)
	f.clock.Advance(time.Second)
	if r := own.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("own credentials = %d, want 200", r.status)
	}
	if d, _ := f.db.Device("acme", t54wMAC); !d.CredentialsConfirmedAt.Equal(f.clock.Now()) {
		t.Fatalf("CredentialsConfirmedAt = %v, want the fetch time", d.CredentialsConfirmedAt)
	}
	same(t, want404, boot.get(f.path(t54wMAC+".cfg")))
	if r := own.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("own credentials after confirmation = %d, want 200", r.status)
	}
	// A factory-reset phone: the admin reopens the bootstrap for it until
	// it fetches with its own credentials again.
	if _, err := f.db.ReopenDeviceBootstrap("acme", t54wMAC, admin); err != nil {
		t.Fatal(err)
	}
	if r := boot.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("bootstrap after reopening = %d, want 200", r.status)
	}
	if r := own.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("own credentials after reopening = %d, want 200", r.status)
	}
	same(t, want404, boot.get(f.path(t54wMAC+".cfg")))
	// Another device that never fetched still opens with the bootstrap.
	boot.ua = t46uUA
	if r := boot.get(f.path(t46uMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("bootstrap on another new device = %d, want 200", r.status)
	}
	entries, _ := f.db.Audit("acme", 200, 0)
	n := 0
	for _, e := range entries {
		if e.Action == "device.provisioning_credentials.confirmed" && e.TargetID == t54wMAC {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d confirmation audit entries, want 2 (before and after reopening)", n)
	}
}

// TestDeviceCredentialRotation: after a rotation the previous password keeps
// working for store.ProvisioningGrace and the file it fetches carries the new
// one; afterwards only the new one works.
func TestDeviceCredentialRotation(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	p := f.phone(50, t54wUA)
	r := p.get(f.path(t54wMAC + ".cfg"))
	p.adopt(r.body)
	if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("own credentials = %d", r.status)
	}
	rot, err := f.db.RotateDeviceProvisioningCredentials("acme", t54wMAC, admin)
	if err != nil {
		t.Fatal(err)
	}
	if rot.PreviousPassword != p.pass || rot.Password == p.pass || rot.Username != p.user {
		t.Fatal("rotation did not keep the username and replace the password")
	}
	f.clock.Advance(store.ProvisioningGrace - time.Minute)
	r = p.get(f.path(t54wMAC + ".cfg"))
	if r.status != http.StatusOK {
		t.Fatalf("previous password within grace = %d, want 200", r.status)
	}
	if u, pw := fileCredentials(t, r.body); u != rot.Username || pw != rot.Password {
		t.Fatal("the file fetched within grace does not carry the new password")
	}
	f.clock.Advance(2 * time.Minute)
	stale := f.phone(51, t54wUA)
	stale.user, stale.pass = p.user, p.pass
	if r := stale.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusUnauthorized {
		t.Fatalf("previous password after grace = %d, want 401", r.status)
	}
	p.adopt(r.body)
	if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("new password = %d, want 200", r.status)
	}
}

// TestUnknownUsernameLooksLikeWrongPassword: a username naming no device, a
// device of another account, or a known device with a wrong password all get
// the same 401, and count as failures.
func TestUnknownUsernameLooksLikeWrongPassword(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	own, err := f.db.DeviceProvisioningCredentials("acme", t54wMAC, admin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateAccount("other", "other.example.test", admin); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("other", store.NewDevice{MAC: "805ec0123456", Model: "T54W"}, admin); err != nil {
		t.Fatal(err)
	}
	theirs, err := f.db.DeviceProvisioningCredentials("other", "805ec0123456", admin)
	if err != nil {
		t.Fatal(err)
	}
	var first response
	for i, c := range []struct{ user, pass string }{
		{own.Username, "wrong-password"},
		{"805ec0000001-abcdefghij", own.Password},
		{theirs.Username, theirs.Password},
		{"nobody", "x"},
	} {
		p := f.phone(60+i, t54wUA)
		p.user, p.pass = c.user, c.pass
		r := p.get(f.path(t54wMAC + ".cfg"))
		if r.status != http.StatusUnauthorized {
			t.Fatalf("%s = %d, want 401", c.user, r.status)
		}
		r.header.Del("WWW-Authenticate") // a fresh nonce each time
		if i == 0 {
			first = r
			continue
		}
		same(t, first, r)
	}
	if !strings.Contains(f.logs.String(), "reason=bad_credentials") {
		t.Fatal("bad credentials not counted")
	}
}

// TestMACInTwoAccounts: two accounts may each add the same MAC; each one's
// URL key serves its own device, and one account's credentials open nothing
// through the other's key.
func TestMACInTwoAccounts(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	if _, err := f.db.CreateAccount("other", "other.example.test", admin); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.CreateDevice("other", store.NewDevice{MAC: t54wMAC, Model: "T54W", Label: "squatter"}, admin); err != nil {
		t.Fatalf("adding acme's MAC to another account = %v, want it added", err)
	}
	otherProv, err := f.db.ProvisioningSettings("other", admin)
	if err != nil {
		t.Fatal(err)
	}
	mine := f.phone(70, t54wUA)
	r := mine.get(f.path(t54wMAC + ".cfg"))
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(f.sipPW)) {
		t.Fatalf("acme's phone through acme's key = %d, want its own config", r.status)
	}
	mine.adopt(r.body)
	theirPath := "/p/" + otherProv.Key + "/" + t54wMAC + ".cfg"
	if r := mine.get(theirPath); r.status != http.StatusUnauthorized {
		t.Fatalf("acme's device credentials through other's key = %d, want 401", r.status)
	}
	squat := f.phone(71, t54wUA)
	squat.user, squat.pass = otherProv.Username, otherProv.Password
	r = squat.get(theirPath)
	if r.status != http.StatusOK || bytes.Contains(r.body, []byte(f.sipPW)) || bytes.Contains(r.body, []byte(mine.pass)) {
		t.Fatalf("other's key serves other's (empty) device only: %d", r.status)
	}
	f.h.Flush()
	if d, _ := f.db.Device("acme", t54wMAC); d.LastSource != "127.0.0.70" {
		t.Fatalf("acme's device stamped by the other account's fetch: %+v", d)
	}
}
