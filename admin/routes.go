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
	rawIn   string // content type of a non-JSON request body (PUT /announcement); in is then nil
	h       func(*gin.Context) error
}

// Path prefixes of the table.
const (
	v1   = "/api/v1"
	acct = v1 + "/accounts/:account"
)

// routes is the whole API: one line per route.
func (s *server) routes() []route {
	get, post, put, patch, del := http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete
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

		{op: "device.list", method: get, path: acct + "/devices", role: roleViewer, summary: "List the account's Yealink devices by MAC", out: deviceList{}, h: s.listDevices},
		{op: "device.create", method: post, path: acct + "/devices", role: roleAdmin, summary: "Add a device by MAC with its model and lines (line → user)", in: deviceCreate{}, out: deviceJSON{}, status: http.StatusCreated, errs: []string{"exists"}, h: s.createDevice},
		{op: "device.get", method: get, path: acct + "/devices/:mac", role: roleViewer, summary: "Get a device with what the provisioning server saw last", out: deviceJSON{}, h: s.getDevice},
		{op: "device.update", method: patch, path: acct + "/devices/:mac", role: roleAdmin, summary: "Change a device's model, label or lines", in: devicePatch{}, out: deviceJSON{}, h: s.updateDevice},
		{op: "device.delete", method: del, path: acct + "/devices/:mac", role: roleAdmin, summary: "Remove a device; its MAC is free again", status: http.StatusNoContent, h: s.deleteDevice},
		{op: "device.provisioning_credentials.get", method: get, path: acct + "/devices/:mac/provisioning-credentials", role: roleAdmin, summary: "The device's own provisioning credentials (each read is audited)", out: deviceCredentialsJSON{}, h: s.deviceProvisioningCredentials},
		{op: "device.provisioning_credentials.rotate", method: post, path: acct + "/devices/:mac/provisioning-credentials/rotate", role: roleAdmin, summary: "New provisioning password for the device; the previous one works for 24 h; the phone gets a check-sync", out: deviceCredentialsJSON{}, h: s.rotateDeviceProvisioningCredentials},
		{op: "device.provisioning_bootstrap.reopen", method: post, path: acct + "/devices/:mac/provisioning-credentials/reopen-bootstrap", role: roleAdmin, summary: "Let the account's bootstrap credential open the device again until it fetches with its own (factory-reset phone)", out: deviceJSON{}, h: s.reopenDeviceBootstrap},
		{op: "mac_claim.list", method: get, path: v1 + "/mac-claims", role: roleProvider, summary: "MACs added as devices by more than one account (?mac=: that MAC's accounts)", query: []string{"mac"}, out: macClaimsJSON{}, errs: []string{"invalid"}, h: s.macClaims},
		{op: "device.resync", method: post, path: acct + "/devices/:mac/resync", role: roleAdmin, summary: "Send the device a check-sync and wait (?timeout= seconds, default 10) for it to fetch its config", query: []string{"timeout:number"}, out: resyncJSON{}, errs: []string{"invalid", "device_not_registered", "check_sync_failed", "sip_unavailable"}, h: s.resyncDevice},

		{op: "provisioning.get", method: get, path: acct + "/provisioning", role: roleAdmin, summary: "The provisioning URL and credentials phones use (each read is audited)", out: provisioningJSON{}, h: s.getProvisioning},
		{op: "provisioning.rotate", method: post, path: acct + "/provisioning/rotate", role: roleAdmin, summary: "New URL key and password; the previous ones work for 24 h", out: provisioningJSON{}, h: s.rotateProvisioning},
		{op: "provisioning.overrides", method: put, path: acct + "/provisioning/overrides", role: roleAdmin, summary: "Replace the extra config keys added to every phone's file", in: overridesJSON{}, out: overridesJSON{}, h: s.setProvisioningOverrides},

		{op: "queue.list", method: get, path: acct + "/queues", role: roleViewer, summary: "List call queues by extension", out: queueList{}, h: s.listQueues},
		{op: "queue.create", method: post, path: acct + "/queues", role: roleAdmin, summary: "Create a call queue", in: queueCreate{}, out: queueJSON{}, status: http.StatusCreated, h: s.createQueue},
		{op: "queue.get", method: get, path: acct + "/queues/:id", role: roleViewer, summary: "Get a queue", out: queueJSON{}, h: s.getQueue},
		{op: "queue.update", method: patch, path: acct + "/queues/:id", role: roleAdmin, summary: "Change a queue's name, extension or members", in: queuePatch{}, out: queueJSON{}, h: s.updateQueue},
		{op: "queue.delete", method: del, path: acct + "/queues/:id", role: roleAdmin, summary: "Delete a queue no callflow sends calls to", status: http.StatusNoContent, errs: []string{"queue_in_use"}, h: s.deleteQueue},
		{op: "queue.member_add", method: post, path: acct + "/queues/:id/members", role: roleAdmin, summary: "Add a user to a queue", in: memberAdd{}, out: queueJSON{}, h: s.addQueueMember},
		{op: "queue.member_remove", method: del, path: acct + "/queues/:id/members/:user_id", role: roleAdmin, summary: "Take a user out of a queue", out: queueJSON{}, h: s.removeQueueMember},

		{op: "callflow.list", method: get, path: acct + "/callflows", role: roleViewer, summary: "List every version of every callflow", out: callflowList{}, h: s.listCallflows},
		{op: "callflow.create", method: post, path: acct + "/callflows", role: roleAdmin, summary: "Create a callflow (version 1, AVAILABLE)", in: callflowSpec{}, out: callflowJSON{}, status: http.StatusCreated, h: s.createCallflow},
		{op: "callflow.get", method: get, path: acct + "/callflows/:id", role: roleViewer, summary: "Get one callflow version with its status and numbers", out: callflowJSON{}, h: s.getCallflow},
		{op: "callflow.edit", method: put, path: acct + "/callflows/:id", role: roleAdmin, summary: "Edit: a new version takes over the numbers; the old one stays, AVAILABLE", in: callflowSpec{}, out: callflowJSON{}, status: http.StatusCreated, h: s.editCallflow},
		{op: "callflow.reassign", method: post, path: acct + "/callflows/:id/reassign", role: roleAdmin, summary: "Move every number of the callflow to another one", in: callflowReassign{}, out: callflowReassigned{}, h: s.reassignCallflow},
		{op: "callflow.delete", method: del, path: acct + "/callflows/:id", role: roleAdmin, summary: "Delete an AVAILABLE callflow version", status: http.StatusNoContent, errs: []string{"callflow_active"}, h: s.deleteCallflow},

		{op: "number.list", method: get, path: acct + "/numbers", role: roleViewer, summary: "List phone numbers, optionally by status", query: []string{"status"}, out: numberList{}, errs: []string{"invalid"}, h: s.listNumbers},
		{op: "number.add", method: post, path: acct + "/numbers", role: roleProvider, summary: "Give the account a number (AVAILABLE)", in: numberCreate{}, out: numberJSON{}, status: http.StatusCreated, errs: []string{"exists"}, h: s.addNumber},
		{op: "number.get", method: get, path: acct + "/numbers/:e164", role: roleViewer, summary: "Get a number with its history ('+' optional in the path)", out: numberJSON{}, h: s.getNumber},
		{op: "number.activate", method: post, path: acct + "/numbers/:e164/activate", role: roleAdmin, summary: "Route an AVAILABLE number to a callflow", in: numberActivate{}, out: numberJSON{}, errs: []string{"number_active"}, h: s.activateNumber},
		{op: "number.deactivate", method: post, path: acct + "/numbers/:e164/deactivate", role: roleAdmin, summary: "Make a number AVAILABLE for reuse (it stays on the account)", out: numberJSON{}, h: s.deactivateNumber},
		{op: "number.remove", method: del, path: acct + "/numbers/:e164", role: roleProvider, summary: "Take an AVAILABLE number off the account", status: http.StatusNoContent, errs: []string{"number_active"}, h: s.removeNumber},

		{op: "group.list", method: get, path: acct + "/groups", role: roleViewer, summary: "List paging and ring groups by extension", out: groupList{}, h: s.listGroups},
		{op: "group.create", method: post, path: acct + "/groups", role: roleAdmin, summary: "Create a paging or ring group (enabled)", in: groupCreate{}, out: groupJSON{}, status: http.StatusCreated, h: s.createGroup},
		{op: "group.get", method: get, path: acct + "/groups/:id", role: roleViewer, summary: "Get a group", out: groupJSON{}, h: s.getGroup},
		{op: "group.update", method: patch, path: acct + "/groups/:id", role: roleAdmin, summary: "Change a group's name, extension or members", in: groupPatch{}, out: groupJSON{}, h: s.updateGroup},
		{op: "group.delete", method: del, path: acct + "/groups/:id", role: roleAdmin, summary: "Delete a disabled group", status: http.StatusNoContent, errs: []string{"group_enabled", "group_in_use"}, h: s.deleteGroup},
		{op: "group.disable", method: post, path: acct + "/groups/:id/disable", role: roleAdmin, summary: "Disable a group: callers hear the announcement", out: groupJSON{}, h: s.disableGroup},
		{op: "group.enable", method: post, path: acct + "/groups/:id/enable", role: roleAdmin, summary: "Enable a group again", out: groupJSON{}, h: s.enableGroup},
		{op: "group.member_add", method: post, path: acct + "/groups/:id/members", role: roleAdmin, summary: "Add a user to a group", in: memberAdd{}, out: groupJSON{}, h: s.addGroupMember},
		{op: "group.member_remove", method: del, path: acct + "/groups/:id/members/:user_id", role: roleAdmin, summary: "Take a user out of a group", out: groupJSON{}, h: s.removeGroupMember},

		{op: "user.offboard", method: post, path: acct + "/users/:id/offboard", role: roleAdmin, summary: "Offboard a user in one background job (disable, sign out, leave queues, groups and callflows, numbers, licence, delete)", in: offboardRequest{}, out: jobAccepted{}, status: http.StatusAccepted, errs: []string{"offboard_in_progress"}, h: s.offboardUser},
		{op: "job.list", method: get, path: acct + "/jobs", role: roleViewer, summary: "List offboarding jobs, oldest first", out: jobList{}, h: s.listJobs},
		{op: "job.get", method: get, path: acct + "/jobs/:id", role: roleViewer, summary: "Get a job with the state of each step", out: jobJSON{}, h: s.getJob},
		{op: "job.resume", method: post, path: acct + "/jobs/:id/resume", role: roleAdmin, summary: "Continue a waiting or failed job in the background", out: jobAccepted{}, status: http.StatusAccepted, errs: []string{"job_done"}, h: s.resumeJob},

		{op: "call.list", method: get, path: acct + "/calls", role: roleViewer, summary: "Call records, newest first, with filters and paging", query: []string{"outcome", "extension", "since", "until", "before:integer", "limit:integer"}, out: callList{}, errs: []string{"invalid"}, h: s.listCalls},

		{op: "security.block_list", method: get, path: v1 + "/security/blocks", role: roleProvider, summary: "Sources (or users from a source) blocked after repeated authentication failures", out: blockList{}, h: s.listBlocks},
		{op: "security.block_lift", method: del, path: v1 + "/security/blocks/:ip", role: roleProvider, summary: "Lift every block on an address", status: http.StatusNoContent, h: s.liftBlock},
		{op: "announcement.set", method: put, path: v1 + "/announcement", role: roleProvider, summary: "Replace the 'Extension is not recognized' announcement with a WAV (raw body, at most 16 MiB)", rawIn: "audio/wav", status: http.StatusNoContent, errs: []string{"invalid_audio", "body_too_large", "announcer_unavailable"}, h: s.setAnnouncement},

		{op: "backup.download", method: get, path: v1 + "/backup", role: roleProvider, summary: "A consistent backup while serving: tar of secret.key and a dialtone.db snapshot (as secret as the data directory)", raw: "application/x-tar", h: s.backup},

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
