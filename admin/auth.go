package admin

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/dialtone-voip/dialtone/store"
)

// role is a route's minimum role; roles are ordered, each including the ones
// below it. rolePublic routes need no token.
type role int

const (
	rolePublic   role = iota
	roleViewer        // one account, read-only
	roleAdmin         // one account, read/write
	roleProvider      // every account; accounts, licences, provider tokens
)

func (r role) String() string {
	switch r {
	case rolePublic:
		return "public"
	case roleViewer:
		return store.RoleViewer
	case roleAdmin:
		return store.RoleAdmin
	case roleProvider:
		return store.RoleProvider
	}
	return fmt.Sprintf("role(%d)", int(r))
}

func roleOf(name string) role {
	switch name {
	case store.RoleViewer:
		return roleViewer
	case store.RoleAdmin:
		return roleAdmin
	case store.RoleProvider:
		return roleProvider
	}
	return rolePublic
}

// Keys of values that authorize leaves in the gin context.
const (
	ctxToken     = "dialtone.token"
	ctxAccountOK = "dialtone.account_ok" // the path's {account} exists and the token may see it
)

// authorize enforces rt.role, in this order: no or unknown token → 401; a
// path {account} that the token may not see, or that does not exist → 404
// (an account token never learns whether another account exists); a role
// below rt.role → 403.
func (s *server) authorize(rt route) gin.HandlerFunc {
	scoped := strings.Contains(rt.path, "/:account")
	return func(c *gin.Context) {
		if rt.role == rolePublic {
			return
		}
		secret, ok := bearer(c.GetHeader("Authorization"))
		if !ok {
			s.unauthorized(c)
			return
		}
		tok, err := s.db.Authenticate(secret)
		if errors.Is(err, store.ErrUnauthorized) {
			s.unauthorized(c)
			return
		}
		if err != nil {
			s.writeError(c, err)
			return
		}
		c.Set(ctxToken, tok)
		if scoped {
			acct := c.Param("account")
			if tok.Role != store.RoleProvider && tok.AccountID != acct {
				s.fail(c, rt, errNotFound("account "+acct+": not found"))
				return
			}
			if _, err := s.db.Account(acct); err != nil {
				s.fail(c, rt, err)
				return
			}
			c.Set(ctxAccountOK, true)
		}
		if roleOf(tok.Role) < rt.role {
			s.fail(c, rt, errForbidden(fmt.Sprintf("%s %s needs the %s role; this token is %s", rt.method, rt.path, rt.role, tok.Role)))
		}
	}
}

func (s *server) unauthorized(c *gin.Context) {
	c.Header("WWW-Authenticate", `Bearer realm="dialtone"`)
	s.writeError(c, store.ErrUnauthorized)
}

// bearer extracts the token of an "Authorization: Bearer <token>" header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// tokenOf returns the request's authenticated token.
func tokenOf(c *gin.Context) (store.Token, bool) {
	v, ok := c.Get(ctxToken)
	if !ok {
		return store.Token{}, false
	}
	tok, ok := v.(store.Token)
	return tok, ok
}

// actor is who the store records as making a change.
func actor(c *gin.Context) store.Actor {
	tok, _ := tokenOf(c)
	a := tok.Actor()
	a.Source = c.ClientIP()
	return a
}

func isProvider(c *gin.Context) bool {
	tok, _ := tokenOf(c)
	return tok.Role == store.RoleProvider
}

// providerAudit is the audit log of changes that belong to no account
// (provider tokens, refusals outside any account); the store uses the same.
const providerAudit = "_provider"

// auditRefusal records that rt was refused with err. The entry goes to the
// path's account when the token may see it, else to the token's own account.
func (s *server) auditRefusal(c *gin.Context, rt route, err error) {
	tok, ok := tokenOf(c)
	if !ok {
		return
	}
	audited, suppressed := s.refusals.allow(tok.ID, s.db.Now())
	if !audited {
		return
	}
	_, body, _ := toError(err)
	acct := c.Param("account")
	if acct == "" || !c.GetBool(ctxAccountOK) {
		acct = tok.AccountID
	}
	if acct == "" {
		acct = providerAudit
	}
	kind, _, _ := strings.Cut(rt.op, ".")
	id := ""
	for _, p := range c.Params {
		if p.Key != "account" {
			id = p.Value
		}
	}
	label := ""
	var inUse *store.InUseError
	if errors.As(err, &inUse) {
		label = inUse.Label
	}
	if kind == "user" && id != "" && c.GetBool(ctxAccountOK) {
		if u, err := s.db.User(acct, id); err == nil {
			label = u.Label()
		}
	}
	e := store.AuditEntry{AccountID: acct, Actor: actor(c), Action: rt.op, TargetKind: kind, TargetID: id,
		TargetLabel: label, Result: body.Error.Code, Detail: map[string]string{"message": body.Error.Message}}
	if body.Error.Field != "" {
		e.Detail["field"] = body.Error.Field
	}
	if suppressed > 0 {
		e.Detail["suppressed_before"] = strconv.Itoa(suppressed)
	}
	if err := s.db.RecordAudit(e); err != nil {
		s.log.ErrorContext(c, "record refusal in audit log", "action", rt.op, "err", err)
	}
}
