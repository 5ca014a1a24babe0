package admin

import (
	"strings"
	"testing"
	"time"
)

// An expiring token works until its expiry, then answers 401 like an unknown
// token; GET /tokens shows expires_at and expired.
func TestTokenExpiry(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	var viewer tokenCreated
	e.call("POST", base+"/tokens", admin, `{"role": "viewer", "name": "wallboard", "expires_in_s": 3600}`, 201, &viewer)
	if viewer.ExpiresAt == nil || *viewer.ExpiresAt != "2026-11-23T10:00:00Z" || viewer.Expired {
		t.Fatalf("created token: expires_at %v expired %v, want 2026-11-23T10:00:00Z", viewer.ExpiresAt, viewer.Expired)
	}
	var prov tokenCreated
	e.call("POST", "/api/v1/tokens", providerSecret, `{"name": "ci", "expires_at": "2026-11-23T09:30:00Z"}`, 201, &prov)

	e.call("GET", base+"/users", viewer.Token, nil, 200, nil)
	e.call("GET", "/api/v1/accounts", prov.Token, nil, 200, nil)

	e.clock.Advance(30 * time.Minute) // the provider token's expiry, exactly
	e.callErr("GET", "/api/v1/accounts", prov.Token, nil, 401, "unauthorized")
	e.call("GET", base+"/users", viewer.Token, nil, 200, nil)
	e.clock.Advance(30 * time.Minute)
	er := e.callErr("GET", base+"/users", viewer.Token, nil, 401, "unauthorized")
	unknown := e.callErr("GET", base+"/users", "dt_not-a-token-at-all-000000000000", nil, 401, "unauthorized")
	if er.Error.Message != unknown.Error.Message {
		t.Errorf("expired token says %q, an unknown one %q: they must look alike", er.Error.Message, unknown.Error.Message)
	}

	var list tokenList
	e.call("GET", base+"/tokens", admin, nil, 200, &list)
	found := false
	for _, tok := range list.Tokens {
		switch tok.ID {
		case viewer.ID:
			found = true
			if tok.ExpiresAt == nil || *tok.ExpiresAt != "2026-11-23T10:00:00Z" || !tok.Expired {
				t.Errorf("listed viewer token: expires_at %v expired %v", tok.ExpiresAt, tok.Expired)
			}
		default:
			if tok.ExpiresAt != nil || tok.Expired {
				t.Errorf("token %s without expiry listed with expires_at %v expired %v", tok.Name, tok.ExpiresAt, tok.Expired)
			}
		}
	}
	if !found {
		t.Fatalf("expired token not listed")
	}
	// Still revocable once expired.
	e.call("DELETE", base+"/tokens/"+viewer.ID, admin, nil, 204, nil)
}

func TestTokenExpiryValidation(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	for _, c := range []struct{ body, field string }{
		{`{"role": "viewer", "expires_in_s": 0}`, "expires_in_s"},
		{`{"role": "viewer", "expires_in_s": -5}`, "expires_in_s"},
		{`{"role": "viewer", "expires_in_s": 999999999999}`, "expires_in_s"},
		{`{"role": "viewer", "expires_in_s": 60, "expires_at": "2027-01-01T00:00:00Z"}`, "expires_in_s"},
		{`{"role": "viewer", "expires_at": "tomorrow"}`, "expires_at"},
		{`{"role": "viewer", "expires_at": "2026-11-23T08:59:59Z"}`, "expires_at"},
		{`{"role": "viewer", "expires_at": "2040-01-01T00:00:00Z"}`, "expires_at"},
		{`{"role": "viewer", "expires_in_s": "3600"}`, "expires_in_s"},
	} {
		status, data := e.do("POST", base+"/tokens", admin, c.body)
		if status != 400 && status != 422 || !strings.Contains(string(data), c.field) {
			t.Errorf("%s → %d %s, want a refusal naming %s", c.body, status, data, c.field)
		}
	}
	var list tokenList
	e.call("GET", base+"/tokens", admin, nil, 200, &list)
	if len(list.Tokens) != 1 {
		t.Errorf("refused requests created tokens: %d listed", len(list.Tokens))
	}
}
