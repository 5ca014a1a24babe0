package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

func TestProvisioningSettings(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	path := base + "/provisioning"

	var p provisioningJSON
	e.call("GET", path, admin, nil, 200, &p)
	key, ok := strings.CutPrefix(p.URL, "/p/")
	if !ok || !strings.HasSuffix(key, "/") || len(key) < 33 || !strings.HasPrefix(p.Username, "prov") || len(p.Password) < 16 {
		t.Fatalf("provisioning = %+v", p)
	}
	if p.PreviousPasswordExpiresAt != nil || p.Overrides == nil || len(p.Overrides) != 0 {
		t.Errorf("fresh settings = %+v", p)
	}
	var again provisioningJSON
	e.call("GET", path, admin, nil, 200, &again)
	if diff := cmp.Diff(p, again); diff != "" {
		t.Errorf("second GET differs (-first +second):\n%s", diff)
	}
	e.callErr("GET", path, e.token("default", "viewer"), nil, 403, "forbidden")

	// With the server's external URL.
	ext := e.with(func(o *Options) {
		o.ProvisioningURL = func(k string) string { return "https://prov.example.test:8443/p/" + k + "/" }
	})
	var full provisioningJSON
	ext.call("GET", path, admin, nil, 200, &full)
	if full.URL != "https://prov.example.test:8443"+p.URL {
		t.Errorf("url = %q, want the external URL of %q", full.URL, p.URL)
	}

	// Rotation: new key and password; the old ones work for a day.
	e.clock.Advance(time.Hour)
	var rot provisioningJSON
	e.call("POST", path+"/rotate", admin, nil, 200, &rot)
	if rot.URL == p.URL || rot.Password == p.Password || rot.Username != p.Username || rot.RotatedAt != "2026-11-23T10:00:00Z" ||
		rot.PreviousPasswordExpiresAt == nil || *rot.PreviousPasswordExpiresAt != "2026-11-24T10:00:00Z" {
		t.Errorf("rotated = %+v (before %+v)", rot, p)
	}
	e.call("GET", path, admin, nil, 200, &again)
	if again.URL != rot.URL || again.Password != rot.Password {
		t.Errorf("GET after rotate = %+v", again)
	}
	e.callErr("POST", path+"/rotate", e.token("default", "viewer"), nil, 403, "forbidden")

	// Overrides are validated by the store and shown by GET.
	var o overridesJSON
	e.call("PUT", path+"/overrides", admin, `{"overrides": {"local_time.date_format": "2", "features.dnd.enable": " 1 "}}`, 200, &o)
	if diff := cmp.Diff(map[string]string{"local_time.date_format": "2", "features.dnd.enable": "1"}, o.Overrides); diff != "" {
		t.Errorf("overrides (-want +got):\n%s", diff)
	}
	e.call("GET", path, admin, nil, 200, &again)
	if len(again.Overrides) != 2 {
		t.Errorf("GET overrides = %v", again.Overrides)
	}
	for _, bad := range []string{`{"overrides": {"Bad Key": "1"}}`, `{"overrides": {"account.1.password": "x"}}`, `{"overrides": {"a.b": "x\ny"}}`, `{}`} {
		er := e.callErr("PUT", path+"/overrides", admin, bad, 400, "invalid")
		if er.Error.Field != "overrides" {
			t.Errorf("PUT %s: field %q", bad, er.Error.Field)
		}
	}
	var cleared overridesJSON
	e.call("PUT", path+"/overrides", admin, `{"overrides": {}}`, 200, &cleared)
	if cleared.Overrides == nil || len(cleared.Overrides) != 0 {
		t.Errorf("cleared overrides = %v", cleared.Overrides)
	}

	// Reads of the secrets are audited; no audit entry or log line holds them.
	var reads int
	for _, en := range e.auditEntries() {
		if en.Action == "provisioning.read" {
			reads++
		}
		for _, v := range en.Detail {
			if strings.Contains(v, rot.Password) || strings.Contains(v, p.Password) {
				t.Errorf("audit entry %+v holds a password", en)
			}
		}
	}
	if reads != 5 {
		t.Errorf("%d provisioning.read entries, want 5", reads)
	}
	if logs := e.logs.String(); strings.Contains(logs, p.Password) || strings.Contains(logs, rot.Password) || strings.Contains(logs, strings.Trim(key, "/")) {
		t.Error("logs hold a provisioning secret")
	}
}

func TestProvisioningTLSWarning(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	for _, c := range []struct {
		url  string
		tls  bool
		warn bool
	}{{"http://192.0.2.1:8080", false, true}, {"https://prov.example.test:8443", true, false}} {
		env := e.with(func(o *Options) { o.ProvisioningURL = func(k string) string { return c.url + "/p/" + k + "/" } })
		var p provisioningJSON
		raw := env.call("GET", base+"/provisioning", admin, nil, 200, &p)
		if p.TLS != c.tls || (len(p.Warnings) > 0) != c.warn {
			t.Errorf("%s: tls %v warnings %q; want tls %v, warning %v", c.url, p.TLS, p.Warnings, c.tls, c.warn)
		}
		if c.warn && !strings.Contains(p.Warnings[0], "plain HTTP") {
			t.Errorf("warning = %q", p.Warnings[0])
		}
		if !strings.Contains(string(raw), `"warnings":[`) {
			t.Errorf("warnings is not always a list: %s", raw)
		}
	}
}

// TestDeviceProvisioningCredentials: each device's own credentials, shown to
// admins only, audited, never in the device or its list; rotation keeps the
// previous password for a day and sends the phone a check-sync.
func TestDeviceProvisioningCredentials(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	viewer := e.token("default", "viewer")
	for _, mac := range []string{"805ec0aabbcc", "805ec0aabbdd"} {
		e.call("POST", base+"/devices", admin, map[string]any{"mac": mac, "model": "T54W"}, 201, nil)
	}
	path := base + "/devices/80:5e:c0:aa:bb:cc/provisioning-credentials"
	var a, b deviceCredentialsJSON
	e.call("GET", path, admin, nil, 200, &a)
	e.call("GET", base+"/devices/805ec0aabbdd/provisioning-credentials", admin, nil, 200, &b)
	if !strings.HasPrefix(a.Username, "805ec0aabbcc-") || len(a.Password) < 20 || a.Username == b.Username || a.Password == b.Password {
		t.Fatalf("credentials %+v and %+v: want one set per device", a, b)
	}
	var acct provisioningJSON
	e.call("GET", base+"/provisioning", admin, nil, 200, &acct)
	if a.Username == acct.Username || a.Password == acct.Password {
		t.Fatal("a device's credentials are the account's bootstrap credential")
	}
	e.callErr("GET", path, viewer, nil, 403, "forbidden")
	e.callErr("POST", path+"/rotate", viewer, nil, 403, "forbidden")
	e.callErr("GET", base+"/devices/805ec0000001/provisioning-credentials", admin, nil, 404, "not_found")
	for _, p := range []string{base + "/devices", base + "/devices/805ec0aabbcc"} {
		if raw := e.call("GET", p, viewer, nil, 200, nil); strings.Contains(string(raw), a.Password) || strings.Contains(string(raw), a.Username) {
			t.Errorf("GET %s shows the device's credentials: %s", p, raw)
		}
	}

	e.clock.Advance(time.Hour)
	var rot deviceCredentialsJSON
	e.call("POST", path+"/rotate", admin, nil, 200, &rot)
	if rot.Username != a.Username || rot.Password == a.Password || rot.RotatedAt != "2026-11-23T10:00:00Z" ||
		rot.PreviousPasswordExpiresAt == nil || *rot.PreviousPasswordExpiresAt != "2026-11-24T10:00:00Z" {
		t.Fatalf("rotated = %+v (before %+v)", rot, a)
	}
	if calls := e.notifier.Calls(); len(calls) != 1 || calls[0] != "default/805ec0aabbcc" {
		t.Errorf("check-syncs = %v, want one to the device", calls)
	}
	var reopened deviceJSON
	e.call("POST", path+"/reopen-bootstrap", admin, nil, 200, &reopened)
	if reopened.MAC != "805ec0aabbcc" || reopened.CredentialsConfirmedAt != nil {
		t.Errorf("reopen-bootstrap = %+v", reopened)
	}
	e.callErr("POST", path+"/reopen-bootstrap", viewer, nil, 403, "forbidden")
	var again deviceCredentialsJSON
	e.call("GET", path, admin, nil, 200, &again)
	if again.Password != rot.Password {
		t.Error("GET after rotate shows the old password")
	}

	reads, rotations := 0, 0
	for _, en := range e.auditEntries() {
		switch {
		case en.Result != "ok":
		case en.Action == "device.provisioning_credentials.read":
			reads++
		case en.Action == "device.provisioning_credentials.rotate":
			rotations++
		}
		for _, v := range en.Detail {
			if strings.Contains(v, a.Password) || strings.Contains(v, rot.Password) {
				t.Errorf("audit entry %+v holds a password", en)
			}
		}
	}
	if reads != 3 || rotations != 1 {
		t.Errorf("%d reads and %d rotations audited, want 3 and 1", reads, rotations)
	}
	if logs := e.logs.String(); strings.Contains(logs, a.Password) || strings.Contains(logs, rot.Password) {
		t.Error("logs hold a device's provisioning password")
	}
}

// TestMACClaimsNoOracle (docs/provisioning.md): adding a MAC that another account
// has answers exactly as adding a fresh one (no "already exists"), takes
// nothing from that account, and shows in the provider's claims view.
func TestMACClaimsNoOracle(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.CreateAccount("other", "other.test", store.System); err != nil {
		t.Fatal(err)
	}
	mine := e.token("default", "admin")
	theirs := e.token("other", "admin")
	other := "/api/v1/accounts/other"
	e.call("POST", base+"/devices", mine, map[string]any{"mac": "805ec0aabbcc", "model": "T54W", "label": "reception"}, 201, nil)

	var taken, fresh deviceJSON
	e.call("POST", other+"/devices", theirs, map[string]any{"mac": "80:5E:C0:AA:BB:CC", "model": "T46U"}, 201, &taken)
	e.call("POST", other+"/devices", theirs, map[string]any{"mac": "805ec0aabbdd", "model": "T46U"}, 201, &fresh)
	taken.MAC, fresh.MAC = "", ""
	if diff := cmp.Diff(fresh, taken); diff != "" {
		t.Errorf("adding a MAC another account has differs from adding a fresh one (-fresh +taken):\n%s", diff)
	}
	var d deviceJSON
	e.call("GET", base+"/devices/805ec0aabbcc", mine, nil, 200, &d)
	if d.Model != "T54W" || d.Label != "reception" {
		t.Errorf("the other account's claim changed this account's device: %+v", d)
	}
	// Within one account a MAC is still unique.
	e.callErr("POST", other+"/devices", theirs, map[string]any{"mac": "805ec0aabbcc", "model": "T46U"}, 409, "exists")

	var claims macClaimsJSON
	e.call("GET", "/api/v1/mac-claims", providerSecret, nil, 200, &claims)
	want := macClaimsJSON{Claims: []macClaimJSON{{MAC: "805ec0aabbcc", Accounts: []string{"default", "other"}}}}
	if diff := cmp.Diff(want, claims); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	e.call("GET", "/api/v1/mac-claims?mac=80-5e-c0-aa-bb-dd", providerSecret, nil, 200, &claims)
	if len(claims.Claims) != 1 || claims.Claims[0].MAC != "805ec0aabbdd" || len(claims.Claims[0].Accounts) != 1 {
		t.Errorf("claims of one MAC = %+v", claims)
	}
	e.callErr("GET", "/api/v1/mac-claims?mac=zz", providerSecret, nil, 400, "invalid")
	e.callErr("GET", "/api/v1/mac-claims", mine, nil, 403, "forbidden")
}
