package admin

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// route is one entry of the API: where it is, who may call it, what it takes
// and gives, and its handler. NewHandler registers exactly these with gin and
// builds /api/v1/openapi.json from the same entries, so a route cannot exist
// without its documentation.
//
// To add a route, add one line to the table in routes() (and its handler
// method in the file of its noun):
//
//		{op: "device.resync", method: http.MethodPost, path: acct + "/devices/:mac/resync", role: roleAdmin, summary: "Send a check-sync to the device", out: deviceJSON{}, errs: []string{"device_offline"}, h: s.resyncDevice},
//
//	  - op: "noun.verb", unique. It is the OpenAPI operationId and the audit
//	    action recorded when the route refuses a request.
//	  - path: gin syntax (":id"); under acct, the path's {account} is checked
//	    against the token before the handler runs (404 for another account's).
//	  - role: the minimum role. authorize answers 401/403/404 before the
//	    handler runs; handlers check only finer rules (a field only a provider
//	    may set).
//	  - in: the zero value of the request body type (nil: no body); the handler
//	    reads it with decodeBody. out: the zero value of the success body type
//	    (nil: none). status: the success status (0 means 200). Both feed the
//	    OpenAPI schemas (json tags; `format:"date-time"` tags, pointers are
//	    nullable, request fields that are neither pointers nor omitempty are
//	    required).
//	  - errs: error codes the route can answer beyond the implied ones (401,
//	    403, 404, 400/413 with a body, 500); each must be in errorStatus.
//	  - query: query parameters, for the document.
//	  - h: func(*gin.Context) error. It ends with reply(c, v), which writes v
//	    with the route's status, or returns an error for writeError.
type route struct {
	op      string
	method  string
	path    string
	role    role
	summary string
	in      any
	out     any
	status  int
	errs    []string
	query   []string
	raw     string // content type of a non-JSON success body (metrics)
	h       func(*gin.Context) error
}

// Path prefixes of the table.
const (
	v1   = "/api/v1"
	acct = v1 + "/accounts/:account"
)

// routes is the whole API: one line per route.
func (s *server) routes() []route {
	get, post, patch, del := http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete
	return []route{
		// Health, metrics and this API's own description need no token.
		{op: "health.live", method: get, path: "/healthz", role: rolePublic, summary: "Liveness: 200 while the process is up", out: healthJSON{}, h: s.healthz},
		{op: "health.ready", method: get, path: "/readyz", role: rolePublic, summary: "Readiness: 200 when the store is readable, else 503", out: healthJSON{}, errs: []string{"unavailable"}, h: s.readyz},
		{op: "metrics", method: get, path: "/metrics", role: rolePublic, summary: "Prometheus metrics", raw: "text/plain", h: s.metrics},
		{op: "openapi", method: get, path: v1 + "/openapi.json", role: rolePublic, summary: "This API as an OpenAPI 3 document", raw: "application/json", h: s.openAPIDoc},

		{op: "account.list", method: get, path: v1 + "/accounts", role: roleViewer, summary: "List accounts: a provider sees every account, other tokens their own", out: accountList{}, h: s.listAccounts},
		{op: "account.create", method: post, path: v1 + "/accounts", role: roleProvider, summary: "Create an account", in: accountCreate{}, out: accountJSON{}, status: http.StatusCreated, errs: []string{"exists"}, h: s.createAccount},
		{op: "account.get", method: get, path: acct, role: roleViewer, summary: "Get an account with its seats", out: accountJSON{}, h: s.getAccount},
		{op: "account.update", method: patch, path: acct, role: roleAdmin, summary: "Change operator_extension (admin) or sip_domain (provider only)", in: accountPatch{}, out: accountJSON{}, errs: []string{"exists"}, h: s.updateAccount},

		{op: "user.list", method: get, path: acct + "/users", role: roleViewer, summary: "List users by extension", out: userList{}, h: s.listUsers},
		{op: "user.create", method: post, path: acct + "/users", role: roleAdmin, summary: "Create a user (enabled, with a fresh SIP password, no licence)", in: userCreate{}, out: userJSON{}, status: http.StatusCreated, h: s.createUser},
		{op: "user.get", method: get, path: acct + "/users/:id", role: roleViewer, summary: "Get a user", out: userJSON{}, h: s.getUser},
		{op: "user.update", method: patch, path: acct + "/users/:id", role: roleAdmin, summary: "Change a user's extension, name or e-mail", in: userPatch{}, out: userJSON{}, errs: []string{"user_registered", "operator_extension"}, h: s.updateUser},
		{op: "user.delete", method: del, path: acct + "/users/:id", role: roleAdmin, summary: "Delete a user; 409 delete_blocked lists every blocker at once", status: http.StatusNoContent, errs: []string{"delete_blocked"}, h: s.deleteUser},
		{op: "user.disable", method: post, path: acct + "/users/:id/disable", role: roleAdmin, summary: "Disable a user (not the operator extension)", out: userJSON{}, errs: []string{"operator_extension"}, h: s.disableUser},
		{op: "user.enable", method: post, path: acct + "/users/:id/enable", role: roleAdmin, summary: "Enable a user", out: userJSON{}, h: s.enableUser},
		{op: "user.deletion_check", method: get, path: acct + "/users/:id/deletion-check", role: roleViewer, summary: "The blockers DELETE would report, changing nothing", out: deletionCheckJSON{}, h: s.deletionCheck},

		{op: "registration.list_user", method: get, path: acct + "/users/:id/registrations", role: roleViewer, summary: "A user's live registrations", out: registrationList{}, h: s.userRegistrations},
		{op: "registration.sign_out", method: del, path: acct + "/users/:id/registrations", role: roleAdmin, summary: "Sign a user out everywhere: remove every binding", out: signOutJSON{}, h: s.signOut},
		{op: "registration.list", method: get, path: acct + "/registrations", role: roleViewer, summary: "Every live registration in the account", out: registrationList{}, h: s.accountRegistrations},

		{op: "sip_credentials.get", method: get, path: acct + "/users/:id/sip-credentials", role: roleAdmin, summary: "A user's SIP credentials (each read is audited)", out: credentialsJSON{}, h: s.sipCredentials},
		{op: "sip_credentials.rotate", method: post, path: acct + "/users/:id/sip-credentials/rotate", role: roleAdmin, summary: "Give a user a new SIP password; their Yealink phones get a check-sync", out: credentialsJSON{}, h: s.rotateSIPCredentials},

		{op: "licence.list", method: get, path: acct + "/licences", role: roleViewer, summary: "List the account's licences", out: licenceList{}, h: s.listLicences},
		{op: "licence.create", method: post, path: acct + "/licences", role: roleProvider, summary: "Add a licence (a paid seat)", in: licenceCreate{}, out: licenceJSON{}, status: http.StatusCreated, h: s.createLicence},
		{op: "licence.get", method: get, path: acct + "/licences/:id", role: roleViewer, summary: "Get a licence", out: licenceJSON{}, h: s.getLicence},
		{op: "licence.assign", method: post, path: acct + "/licences/:id/assign", role: roleAdmin, summary: "Assign (or reassign) a licence to a user", in: licenceAssign{}, out: licenceJSON{}, errs: []string{"user_has_licence"}, h: s.assignLicence},
		{op: "licence.release", method: post, path: acct + "/licences/:id/release", role: roleProvider, summary: "Free a licence; the seat stays on the account", out: licenceJSON{}, h: s.releaseLicence},
		{op: "licence.delete", method: del, path: acct + "/licences/:id", role: roleProvider, summary: "Remove a free licence", status: http.StatusNoContent, errs: []string{"licence_assigned"}, h: s.deleteLicence},

		{op: "token.list", method: get, path: acct + "/tokens", role: roleAdmin, summary: "List the account's tokens (never their secrets)", out: tokenList{}, h: s.listTokens},
		{op: "token.create", method: post, path: acct + "/tokens", role: roleAdmin, summary: "Create an admin or viewer token; the secret is shown only in this response", in: tokenCreate{}, out: tokenCreated{}, status: http.StatusCreated, h: s.createToken},
		{op: "token.revoke", method: del, path: acct + "/tokens/:id", role: roleAdmin, summary: "Revoke one of the account's tokens", status: http.StatusNoContent, h: s.revokeToken},
		{op: "token.list_provider", method: get, path: v1 + "/tokens", role: roleProvider, summary: "List provider tokens", out: tokenList{}, h: s.listProviderTokens},
		{op: "token.create_provider", method: post, path: v1 + "/tokens", role: roleProvider, summary: "Create a provider token; the secret is shown only in this response", in: tokenCreate{}, out: tokenCreated{}, status: http.StatusCreated, h: s.createProviderToken},
		{op: "token.revoke_any", method: del, path: v1 + "/tokens/:id", role: roleProvider, summary: "Revoke any token by id", status: http.StatusNoContent, h: s.revokeAnyToken},

		{op: "audit.list", method: get, path: acct + "/audit", role: roleViewer, summary: "The account's audit log, newest first", query: []string{"limit", "before"}, out: auditList{}, errs: []string{"invalid"}, h: s.listAudit},
		{op: "audit.list_provider", method: get, path: v1 + "/audit", role: roleProvider, summary: "The audit log of changes outside any account (provider tokens)", query: []string{"limit", "before"}, out: auditList{}, errs: []string{"invalid"}, h: s.listProviderAudit},
	}
}

// checkRoutes refuses a table with duplicate ops or paths, unknown error
// codes or missing handlers, so a bad line fails NewHandler (and every test).
func checkRoutes(routes []route) error {
	ops, paths := map[string]bool{}, map[string]bool{}
	for _, rt := range routes {
		key := rt.method + " " + rt.path
		switch {
		case rt.op == "" || ops[rt.op]:
			return fmt.Errorf("admin: route %s: empty or duplicate op %q", key, rt.op)
		case paths[key]:
			return fmt.Errorf("admin: route %s: registered twice", key)
		case rt.h == nil:
			return fmt.Errorf("admin: route %s: no handler", key)
		case rt.summary == "":
			return fmt.Errorf("admin: route %s: no summary", key)
		case !strings.HasPrefix(rt.path, "/"):
			return fmt.Errorf("admin: route %s: path must start with /", key)
		}
		for _, code := range rt.errs {
			if _, ok := errorStatus[code]; !ok {
				return fmt.Errorf("admin: route %s: error code %q is not in errorStatus", key, code)
			}
		}
		ops[rt.op], paths[key] = true, true
	}
	return nil
}

// successStatus is the route's success status (200 unless set).
func (rt route) successStatus() int {
	if rt.status == 0 {
		return http.StatusOK
	}
	return rt.status
}

// impliedErrors are the codes every route of its kind can answer.
func (rt route) impliedErrors() []string {
	codes := []string{}
	if rt.role > rolePublic {
		codes = append(codes, "unauthorized")
	}
	if rt.role > roleViewer || rt.op == "account.update" {
		codes = append(codes, "forbidden")
	}
	if strings.Contains(rt.path, "/:") {
		codes = append(codes, "not_found")
	}
	if rt.in != nil {
		codes = append(codes, "invalid", "body_too_large")
	}
	codes = append(codes, rt.errs...)
	return append(codes, "internal")
}

const ctxRoute = "dialtone.route"

// reply writes v as the route's success response (no body for 204).
func reply(c *gin.Context, v any) error {
	status := http.StatusOK
	if rt, ok := c.Get(ctxRoute); ok {
		status = rt.(*route).successStatus()
	}
	if status == http.StatusNoContent || v == nil {
		c.Status(status)
		c.Writer.WriteHeaderNow()
		return nil
	}
	writeJSON(c, status, v)
	return nil
}
