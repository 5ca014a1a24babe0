package admin

import (
	"fmt"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// tokenJSON describes a token without its secret (only a hash is stored).
// account_id is null for provider tokens; expires_at is null for a token
// that never expires, and expired says whether it has (an expired token
// answers 401 like an unknown one, and is listed until revoked).
type tokenJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	AccountID *string `json:"account_id"`
	CreatedAt string  `json:"created_at" format:"date-time"`
	ExpiresAt *string `json:"expires_at" format:"date-time"`
	Expired   bool    `json:"expired"`
}

type tokenList struct {
	Tokens []tokenJSON `json:"tokens"`
}

// tokenCreate asks for a token; at most one of expires_in_s (seconds from
// now) and expires_at (RFC 3339) sets an expiry, none means never.
type tokenCreate struct {
	Role       string `json:"role"`
	Name       string `json:"name,omitempty"`
	ExpiresInS *int64 `json:"expires_in_s,omitempty"`
	ExpiresAt  string `json:"expires_at,omitempty" format:"date-time"`
}

// expiry turns the request's expiry fields into a time (zero: never).
func (in tokenCreate) expiry(now time.Time) (time.Time, error) {
	switch {
	case in.ExpiresInS != nil && in.ExpiresAt != "":
		return time.Time{}, errInvalid("expires_in_s", "give expires_in_s or expires_at, not both")
	case in.ExpiresInS != nil:
		n := *in.ExpiresInS
		if n <= 0 || n > int64(store.MaxTokenLifetime/time.Second) {
			return time.Time{}, errInvalid("expires_in_s", fmt.Sprintf("must be between 1 and %d seconds", int64(store.MaxTokenLifetime/time.Second)))
		}
		return now.Add(time.Duration(n) * time.Second), nil
	case in.ExpiresAt != "":
		t, err := time.Parse(time.RFC3339, in.ExpiresAt)
		if err != nil {
			return time.Time{}, errInvalid("expires_at", "must be an RFC 3339 time, e.g. 2027-01-31T18:00:00Z")
		}
		return t, nil
	}
	return time.Time{}, nil
}

// tokenCreated is the only response that carries a token's secret.
type tokenCreated struct {
	tokenJSON
	Token string `json:"token"`
}

func tokenOut(t store.Token, now time.Time) tokenJSON {
	out := tokenJSON{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: rfc3339(t.CreatedAt), Expired: t.Expired(now)}
	if t.AccountID != "" {
		a := t.AccountID
		out.AccountID = &a
	}
	if !t.ExpiresAt.IsZero() {
		e := rfc3339(t.ExpiresAt)
		out.ExpiresAt = &e
	}
	return out
}

func tokensOut(ts []store.Token, now time.Time) tokenList {
	out := tokenList{Tokens: make([]tokenJSON, 0, len(ts))}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenOut(t, now))
	}
	return out
}

func (s *server) listTokens(c *gin.Context) error {
	ts, err := s.db.Tokens(c.Param("account"))
	if err != nil {
		return err
	}
	return reply(c, tokensOut(ts, s.db.Now()))
}

func (s *server) listProviderTokens(c *gin.Context) error {
	ts, err := s.db.Tokens("")
	if err != nil {
		return err
	}
	return reply(c, tokensOut(ts, s.db.Now()))
}

// createToken makes an admin or viewer token for the path's account; an
// admin may create either (never a provider token).
func (s *server) createToken(c *gin.Context) error {
	var in tokenCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.Role != store.RoleAdmin && in.Role != store.RoleViewer {
		return errInvalid("role", "role must be admin or viewer; provider tokens are created with POST /api/v1/tokens")
	}
	return s.newToken(c, c.Param("account"), in)
}

// createProviderToken makes a provider token ("role" may be omitted).
func (s *server) createProviderToken(c *gin.Context) error {
	var in tokenCreate
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.Role == "" {
		in.Role = store.RoleProvider
	}
	if in.Role != store.RoleProvider {
		return errInvalid("role", "role must be provider here; account tokens are created with POST /api/v1/accounts/{account}/tokens")
	}
	return s.newToken(c, "", in)
}

func (s *server) newToken(c *gin.Context, acct string, in tokenCreate) error {
	expires, err := in.expiry(s.db.Now())
	if err != nil {
		return err
	}
	tok, secret, err := s.db.CreateTokenUntil(acct, in.Role, in.Name, expires, actor(c))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, tokenCreated{tokenJSON: tokenOut(tok, s.db.Now()), Token: secret})
}

// revokeToken revokes one of the path account's tokens; another account's
// (or a provider's) token id is not found here.
func (s *server) revokeToken(c *gin.Context) error {
	acct, id := c.Param("account"), c.Param("id")
	tok, err := s.db.TokenByID(id)
	if err != nil {
		return err
	}
	if tok.AccountID != acct {
		return errNotFound(fmt.Sprintf("token %s: not found", id))
	}
	if err := s.db.RevokeToken(id, actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}

func (s *server) revokeAnyToken(c *gin.Context) error {
	if err := s.db.RevokeToken(c.Param("id"), actor(c)); err != nil {
		return err
	}
	return reply(c, nil)
}
