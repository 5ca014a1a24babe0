package main

import (
	"strings"
	"testing"
)

// A revoked --bootstrap-token stays revoked when dialtone restarts with the
// same flag (it used to be created again at every start).
func TestBootstrapTokenRevokedStaysRevoked(t *testing.T) {
	dir := t.TempDir()
	a := start(t, dir)
	status, list := a.api("GET", "/api/v1/tokens", nil)
	if status != 200 {
		t.Fatalf("GET /tokens = %d", status)
	}
	id := ""
	for _, tok := range list["tokens"].([]any) {
		if m := tok.(map[string]any); m["name"] == "bootstrap" {
			id = m["id"].(string)
		}
	}
	if id == "" {
		t.Fatalf("no bootstrap token listed: %v", list)
	}
	if status, _ := a.api("DELETE", "/api/v1/tokens/"+id, nil); status != 204 {
		t.Fatalf("DELETE /tokens/%s = %d", id, status)
	}
	if status, _ := a.api("GET", "/api/v1/accounts", nil); status != 401 {
		t.Fatalf("revoked bootstrap token = %d, want 401", status)
	}
	a.stop()

	b := start(t, dir) // same --bootstrap-token
	if status, _ := b.api("GET", "/api/v1/accounts", nil); status != 401 {
		t.Fatalf("after a restart the revoked bootstrap token answers %d, want 401", status)
	}
	if !strings.Contains(b.logs.String(), "--bootstrap-token was revoked") {
		t.Errorf("the restart does not say the bootstrap token stays revoked:\n%s", b.logs)
	}
	if strings.Contains(b.logs.String(), testToken) {
		t.Error("the bootstrap token is in the logs")
	}
}
