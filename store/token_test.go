package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

func TestTokenExpiresAt(t *testing.T) {
	clock := storetest.NewClock()
	db := storetest.Open(t, clock)
	if _, _, err := db.EnsureAccount(store.DefaultAccount, "example.test"); err != nil {
		t.Fatal(err)
	}
	tok, secret, err := db.CreateTokenUntil(store.DefaultAccount, store.RoleAdmin, "temp", clock.Now().Add(time.Hour), store.System)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(secret); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	clock.Advance(time.Hour - time.Second)
	if _, err := db.Authenticate(secret); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	clock.Advance(time.Second)
	if _, err := db.Authenticate(secret); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("at expiry: %v, want ErrUnauthorized", err)
	}
	ts, err := db.Tokens(store.DefaultAccount)
	if err != nil || len(ts) != 1 || !ts[0].ExpiresAt.Equal(tok.ExpiresAt) || !ts[0].Expired(clock.Now()) {
		t.Fatalf("Tokens = %+v, %v; want the expired token listed with its expiry", ts, err)
	}
	// A token without expiry never expires.
	_, forever, err := db.CreateToken(store.DefaultAccount, store.RoleViewer, "forever", store.System)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * 365 * 24 * time.Hour)
	if _, err := db.Authenticate(forever); err != nil {
		t.Fatalf("token without expiry after 20 years: %v", err)
	}
	for _, at := range []time.Time{clock.Now(), clock.Now().Add(-time.Minute), clock.Now().Add(store.MaxTokenLifetime + time.Hour)} {
		var ve *store.ValidationError
		if _, _, err := db.CreateTokenUntil(store.DefaultAccount, store.RoleAdmin, "bad", at, store.System); !errors.As(err, &ve) || ve.Field() != "expires_at" {
			t.Errorf("expiry %v: %v, want a validation error on expires_at", at, err)
		}
	}
}

// The bootstrap token is made once: revoked, it is not made again, even
// after the store is closed and opened again.
func TestBootstrapTokenOneShot(t *testing.T) {
	dir := t.TempDir()
	db := storetest.OpenDir(t, dir, nil)
	const secret = "bootstrap-secret-0123456789"
	tok, created, err := db.EnsureToken(secret, store.RoleProvider, "bootstrap")
	if err != nil || !created {
		t.Fatalf("first EnsureToken: created %v, %v", created, err)
	}
	again, created, err := db.EnsureToken(secret, store.RoleProvider, "bootstrap")
	if err != nil || created || again.ID != tok.ID {
		t.Fatalf("second EnsureToken: %+v created %v, %v; want the same token, not created", again, created, err)
	}
	if err := db.RevokeToken(tok.ID, store.System); err != nil {
		t.Fatal(err)
	}
	if _, created, err := db.EnsureToken(secret, store.RoleProvider, "bootstrap"); !errors.Is(err, store.ErrRevoked) || created {
		t.Fatalf("EnsureToken after revoke: created %v, %v; want ErrRevoked", created, err)
	}
	db.Close()
	db = storetest.OpenDir(t, dir, nil)
	if _, created, err := db.EnsureToken(secret, store.RoleProvider, "bootstrap"); !errors.Is(err, store.ErrRevoked) || created {
		t.Fatalf("EnsureToken after revoke and reopen: created %v, %v; want ErrRevoked", created, err)
	}
	if _, err := db.Authenticate(secret); !errors.Is(err, store.ErrUnauthorized) {
		t.Fatalf("revoked bootstrap token authenticates: %v", err)
	}
	ts, _ := db.Tokens("")
	if len(ts) != 0 {
		t.Fatalf("provider tokens after revoke: %+v", ts)
	}
	// Another value is another token.
	if _, created, err := db.EnsureToken("another-bootstrap-0123456789", store.RoleProvider, "bootstrap"); err != nil || !created {
		t.Fatalf("a new bootstrap value: created %v, %v", created, err)
	}
}
