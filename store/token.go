package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
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
}

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
	tok, err := db.addToken(accountID, role, name, secret, actor)
	return tok, secret, err
}

// EnsureToken makes sure a token with this secret exists (for --bootstrap-token);
// it is a no-op when it does.
func (db *DB) EnsureToken(secret, role, name string) (Token, bool, error) {
	if tok, err := db.Authenticate(secret); err == nil {
		return tok, false, nil
	}
	tok, err := db.addToken("", role, name, secret, System)
	return tok, err == nil, err
}

func (db *DB) addToken(accountID, role, name, secret string, actor Actor) (Token, error) {
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
	if len(p) > 0 {
		return Token{}, &ValidationError{Problems: p}
	}
	if role == RoleProvider {
		accountID = ""
	}
	var tok Token
	err := db.update(func(t *tx) error {
		auditAcct := accountID
		if accountID != "" {
			if _, err := t.account(accountID); err != nil {
				return err
			}
		}
		h := hashToken(secret)
		if t.Bucket(bTokens).Get([]byte(h)) != nil {
			return ErrExists
		}
		tok = Token{ID: newID("tok"), Name: name, Role: role, AccountID: accountID, Hash: h, CreatedAt: t.now}
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
