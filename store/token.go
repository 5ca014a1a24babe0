package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token roles.
const (
	RoleProvider = "provider" // every account; creates accounts, numbers and licences
	RoleAdmin    = "admin"    // one account
	RoleViewer   = "viewer"   // one account, read-only
)

// Token is an admin API credential. Only its SHA-256 is stored; the secret is
// shown once, when it is created.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	AccountID string    `json:"account_id"` // "" for provider tokens
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt, if set, is when the token stops authenticating; it is
	// listed (as expired) until revoked.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Expired reports whether the token has an expiry at or before now.
func (t Token) Expired(now time.Time) bool { return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt) }

// MaxTokenLifetime bounds an expiring token's lifetime (ten years).
const MaxTokenLifetime = 10 * 365 * 24 * time.Hour

// bBootstrap remembers every token EnsureToken created (sha256 hex → when),
// revoked or not, so a revoked --bootstrap-token is never made again.
var bBootstrap = []byte("bootstrap_tokens")

// ErrRevoked: EnsureToken was given a token it created once and that has
// since been revoked; it is not created again.
var ErrRevoked = errors.New("token was revoked")

// Actor returns the token as the actor of a change.
func (t Token) Actor() Actor { return Actor{TokenID: t.ID, Name: t.Name, Role: t.Role} }

func hashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

func newTokenSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "dt_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// ValidRole reports whether r is one of the three roles.
func ValidRole(r string) bool { return r == RoleProvider || r == RoleAdmin || r == RoleViewer }

// CreateToken makes a token with a fresh secret and returns both; the secret
// is not stored and cannot be shown again. Provider tokens have no account.
func (db *DB) CreateToken(accountID, role, name string, actor Actor) (Token, string, error) {
	secret, err := newTokenSecret()
	if err != nil {
		return Token{}, "", err
	}
	tok, err := db.addToken(accountID, role, name, secret, time.Time{}, false, actor)
	return tok, secret, err
}

// CreateTokenUntil is CreateToken for a token that stops authenticating at
// expiresAt (zero: never). expiresAt must be in the future and at most
// MaxTokenLifetime away.
func (db *DB) CreateTokenUntil(accountID, role, name string, expiresAt time.Time, actor Actor) (Token, string, error) {
	secret, err := newTokenSecret()
	if err != nil {
		return Token{}, "", err
	}
	tok, err := db.addToken(accountID, role, name, secret, expiresAt, false, actor)
	return tok, secret, err
}

// EnsureToken makes sure a provider-less token with this secret exists, once
// (for --bootstrap-token): it creates the token only if this store has never
// created it before, and remembers its hash for good. created reports a
// creation now; an existing token is a no-op; one created before and since
// revoked is ErrRevoked, so revoking a bootstrap token sticks across
// restarts.
func (db *DB) EnsureToken(secret, role, name string) (tok Token, created bool, err error) {
	tok, err = db.addToken("", role, name, secret, time.Time{}, true, System)
	switch {
	case err == nil:
		return tok, true, nil
	case errors.Is(err, ErrExists):
		tok, err = db.tokenByHash(hashToken(secret))
		return tok, false, err
	}
	return Token{}, false, err
}

func (db *DB) tokenByHash(h string) (Token, error) {
	var tok Token
	err := db.view(func(t *tx) error { return get(t.Bucket(bTokens), h, &tok) })
	return tok, err
}

func (db *DB) addToken(accountID, role, name, secret string, expiresAt time.Time, bootstrap bool, actor Actor) (Token, error) {
	name = strings.TrimSpace(name)
	p := map[string]string{}
	if !ValidRole(role) {
		p["role"] = "must be provider, admin or viewer"
	}
	if len(name) > 100 || strings.ContainsAny(name, "\r\n\x00") {
		p["name"] = "must be at most 100 characters on one line"
	}
	if len(secret) < 16 {
		p["token"] = "must be at least 16 characters"
	}
	if now := db.now(); !expiresAt.IsZero() && !expiresAt.After(now) {
		p["expires_at"] = "must be in the future"
	} else if expiresAt.Sub(now) > MaxTokenLifetime {
		p["expires_at"] = "must be at most ten years away"
	}
	if len(p) > 0 {
		return Token{}, &ValidationError{Problems: p}
	}
	if role == RoleProvider {
		accountID = ""
	}
	var tok Token
	existed := false // a bootstrap token made before its hash was remembered
	err := db.update(func(t *tx) error {
		existed = false
		auditAcct := accountID
		if accountID != "" {
			if _, err := t.account(accountID); err != nil {
				return err
			}
		}
		h := hashToken(secret)
		seen := t.Bucket(bBootstrap)
		if t.Bucket(bTokens).Get([]byte(h)) != nil {
			if bootstrap && seen.Get([]byte(h)) == nil {
				// Made by a build that did not remember bootstrap tokens.
				existed = true
				return seen.Put([]byte(h), []byte(t.now.UTC().Format(time.RFC3339)))
			}
			return ErrExists
		}
		if bootstrap {
			if seen.Get([]byte(h)) != nil {
				return ErrRevoked
			}
			if err := seen.Put([]byte(h), []byte(t.now.UTC().Format(time.RFC3339))); err != nil {
				return err
			}
		}
		tok = Token{ID: newID("tok"), Name: name, Role: role, AccountID: accountID, Hash: h, CreatedAt: t.now, ExpiresAt: expiresAt.UTC()}
		if err := put(t.Bucket(bTokens), h, tok); err != nil {
			return err
		}
		if err := t.Bucket(bTokenIDs).Put([]byte(tok.ID), []byte(h)); err != nil {
			return err
		}
		if auditAcct == "" {
			auditAcct = "_provider"
		}
		return t.audit(AuditEntry{AccountID: auditAcct, Actor: actor, Action: "token.create", TargetKind: "token", TargetID: tok.ID, TargetLabel: name, Detail: map[string]string{"role": role}})
	})
	if err == nil && existed {
		err = ErrExists
	}
	if err != nil {
		return Token{}, fmt.Errorf("create token: %w", err)
	}
	return tok, nil
}

// Authenticate returns the token whose secret this is, or ErrUnauthorized.
func (db *DB) Authenticate(secret string) (Token, error) {
	if secret == "" {
		return Token{}, ErrUnauthorized
	}
	h := hashToken(secret)
	var tok Token
	err := db.view(func(t *tx) error {
		if err := get(t.Bucket(bTokens), h, &tok); err != nil {
			return ErrUnauthorized
		}
		// The lookup is by hash; compare again in constant time anyway.
		if subtle.ConstantTimeCompare([]byte(tok.Hash), []byte(h)) != 1 {
			return ErrUnauthorized
		}
		if tok.Expired(t.now) {
			return ErrUnauthorized // like an unknown token
		}
		return nil
	})
	return tok, err
}

// Tokens lists the tokens of an account ("" lists provider tokens).
func (db *DB) Tokens(accountID string) ([]Token, error) {
	var out []Token
	err := db.view(func(t *tx) error {
		return t.Bucket(bTokens).ForEach(func(_, v []byte) error {
			var tok Token
			if err := decode(v, &tok); err != nil {
				return err
			}
			if tok.AccountID == accountID {
				out = append(out, tok)
			}
			return nil
		})
	})
	return out, err
}

// TokenByID returns a token by its id.
func (db *DB) TokenByID(id string) (Token, error) {
	var tok Token
	err := db.view(func(t *tx) error {
		h := t.Bucket(bTokenIDs).Get([]byte(id))
		if h == nil {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		return get(t.Bucket(bTokens), string(h), &tok)
	})
	return tok, err
}

// RevokeToken deletes a token; it stops working at once.
func (db *DB) RevokeToken(id string, actor Actor) error {
	return db.update(func(t *tx) error {
		h := t.Bucket(bTokenIDs).Get([]byte(id))
		if h == nil {
			return fmt.Errorf("token %s: %w", id, ErrNotFound)
		}
		var tok Token
		if err := get(t.Bucket(bTokens), string(h), &tok); err != nil {
			return err
		}
		if err := t.Bucket(bTokens).Delete(h); err != nil {
			return err
		}
		if err := t.Bucket(bTokenIDs).Delete([]byte(id)); err != nil {
			return err
		}
		acct := tok.AccountID
		if acct == "" {
			acct = "_provider"
		}
		return t.audit(AuditEntry{AccountID: acct, Actor: actor, Action: "token.revoke", TargetKind: "token", TargetID: id, TargetLabel: tok.Name})
	})
}
