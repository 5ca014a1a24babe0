package store

import (
	"errors"
	"testing"
	"time"
)

// A bootstrap token made by a build that did not remember bootstrap tokens
// is remembered at the next EnsureToken, so revoking it then sticks.
func TestBootstrapTokenFromOlderBuild(t *testing.T) {
	db := openT(t, t.TempDir())
	const secret = "older-bootstrap-0123456789"
	old, err := db.addToken("", RoleProvider, "bootstrap", secret, time.Time{}, false, System)
	if err != nil {
		t.Fatal(err)
	}
	tok, created, err := db.EnsureToken(secret, RoleProvider, "bootstrap")
	if err != nil || created || tok.ID != old.ID {
		t.Fatalf("EnsureToken of an older build's token: %+v created %v, %v", tok, created, err)
	}
	if err := db.RevokeToken(old.ID, System); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.EnsureToken(secret, RoleProvider, "bootstrap"); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revoke: %v, want ErrRevoked", err)
	}
}
