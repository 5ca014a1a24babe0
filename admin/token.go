package admin

import (
	"fmt"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// tokenJSON describes a token without its secret (only a hash is stored).
// account_id is null for provider tokens.
type tokenJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Role      string  `json:"role"`
	AccountID *string `json:"account_id"`
	CreatedAt string  `json:"created_at" format:"date-time"`
}

type tokenList struct {
	Tokens []tokenJSON `json:"tokens"`
}

type tokenCreate struct {
	Role string `json:"role"`
	Name string `json:"name,omitempty"`
}

// tokenCreated is the only response that carries a token's secret.
type tokenCreated struct {
	tokenJSON
	Token string `json:"token"`
}

func tokenOut(t store.Token) tokenJSON {
	out := tokenJSON{ID: t.ID, Name: t.Name, Role: t.Role, CreatedAt: rfc3339(t.CreatedAt)}
	if t.AccountID != "" {
		a := t.AccountID
		out.AccountID = &a
	}
	return out
}

func tokensOut(ts []store.Token) tokenList {
	out := tokenList{Tokens: make([]tokenJSON, 0, len(ts))}
	for _, t := range ts {
		out.Tokens = append(out.Tokens, tokenOut(t))
	}
	return out
}

func (s *server) listTokens(c *gin.Context) error {
	ts, err := s.db.Tokens(c.Param("account"))
	if err != nil {
		return err
	}
	return reply(c, tokensOut(ts))
}

func (s *server) listProviderTokens(c *gin.Context) error {
	ts, err := s.db.Tokens("")
	if err != nil {
		return err
	}
	return reply(c, tokensOut(ts))
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
	tok, secret, err := s.db.CreateToken(acct, in.Role, in.Name, actor(c))
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	return reply(c, tokenCreated{tokenJSON: tokenOut(tok), Token: secret})
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
