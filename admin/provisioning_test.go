package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
