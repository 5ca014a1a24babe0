package admin

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/store"
)

// fillPath puts account into :account and a nonexistent id into every other
// parameter, so a request that passes authorization changes nothing.
func fillPath(path, account string) string {
	parts := strings.Split(path, "/")
	for i, p := range parts {
		switch {
		case p == ":account":
			parts[i] = account
		case strings.HasPrefix(p, ":"):
			parts[i] = "nonexistent"
		}
	}
	return strings.Join(parts, "/")
}

// TestRolesOnEveryRoute walks every route of the table with every kind of
// caller and checks who gets 401, 403 and 404.
func TestRolesOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	if _, err := e.db.CreateAccount("other", "other.test", store.System); err != nil {
		t.Fatal(err)
	}
	callers := []struct {
		name  string
		token string
		role  role
		other bool // a token of another account than the path's
	}{
		{"none", "", rolePublic, false},
		{"bad", "dt_not-a-real-token-at-all", rolePublic, false},
		{"viewer", e.token("default", "viewer"), roleViewer, false},
		{"admin", e.token("default", "admin"), roleAdmin, false},
		{"other-account admin", e.token("other", "admin"), roleAdmin, true},
		{"provider", providerSecret, roleProvider, false},
	}
	routes := (&server{}).routes()
	if len(routes) < 30 {
		t.Fatalf("only %d routes in the table", len(routes))
	}
	for _, rt := range routes {
		path := fillPath(rt.path, "default")
		scoped := strings.Contains(rt.path, ":account")
		for _, cl := range callers {
			status, body := e.do(rt.method, path, cl.token, nil)
			var want string // "401", "403", "404" or "allowed"
			switch {
			case rt.role == rolePublic:
				want = "allowed"
			case cl.role == rolePublic:
				want = "401"
			case cl.other && scoped:
				want = "404"
			case cl.role < rt.role:
				want = "403"
			default:
				want = "allowed"
			}
			ok := false
			switch want {
			case "allowed":
				ok = status != 401 && status != 403 && status < 500
			default:
				ok = fmt.Sprint(status) == want
			}
			if !ok {
				t.Errorf("%s %s as %s = %d %s, want %s", rt.method, path, cl.name, status, body, want)
				continue
			}
			if status >= 400 {
				var eb apiErrBody
				if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
					t.Errorf("%s %s as %s: error body %s is not {\"error\": {\"code\", \"message\"}}", rt.method, path, cl.name, body)
				}
				if status != errorStatus[eb.Error.Code] && eb.Error.Code != "" {
					t.Errorf("%s %s as %s: code %s with status %d, errorStatus says %d", rt.method, path, cl.name, eb.Error.Code, status, errorStatus[eb.Error.Code])
				}
			}
		}
	}
}

// TestOpenAPIComplete fails when a route served by gin is missing from
// /api/v1/openapi.json, or documented with another role or without its errors.
func TestOpenAPIComplete(t *testing.T) {
	e := newEnv(t)
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	e.call("GET", "/api/v1/openapi.json", "", nil, 200, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	table := map[string]route{}
	for _, rt := range (&server{}).routes() {
		table[rt.method+" "+rt.path] = rt
	}
	served := e.handler.(*gin.Engine).Routes()
	if len(served) != len(table) {
		t.Errorf("gin serves %d routes, the table has %d", len(served), len(table))
	}
	for _, r := range served {
		op, ok := doc.Paths[openAPIPath(r.Path)][strings.ToLower(r.Method)]
		if !ok {
			t.Errorf("%s %s is served but not in openapi.json", r.Method, r.Path)
			continue
		}
		rt, ok := table[r.Method+" "+r.Path]
		if !ok {
			t.Errorf("%s %s is served but not in the route table", r.Method, r.Path)
			continue
		}
		if op["x-min-role"] != rt.role.String() || op["operationId"] != rt.op || op["summary"] == "" {
			t.Errorf("%s %s documented as %v/%v", r.Method, r.Path, op["operationId"], op["x-min-role"])
		}
		responses, _ := op["responses"].(map[string]any)
		want := []string{fmt.Sprint(rt.successStatus()), "500"}
		if rt.role > rolePublic {
			want = append(want, "401")
		}
		if rt.in != nil {
			want = append(want, "400", "413")
			if _, ok := op["requestBody"]; !ok {
				t.Errorf("%s %s: no requestBody", r.Method, r.Path)
			}
		}
		for _, code := range rt.errs {
			want = append(want, fmt.Sprint(errorStatus[code]))
		}
		for _, st := range want {
			if _, ok := responses[st]; !ok {
				t.Errorf("%s %s: response %s undocumented", r.Method, r.Path, st)
			}
		}
	}
	// Every $ref resolves.
	raw := e.call("GET", "/api/v1/openapi.json", "", nil, 200, nil)
	var full map[string]any
	if err := json.Unmarshal(raw, &full); err != nil {
		t.Fatal(err)
	}
	schemas := full["components"].(map[string]any)["schemas"].(map[string]any)
	for _, ref := range refs(full) {
		if _, ok := schemas[strings.TrimPrefix(ref, "#/components/schemas/")]; !ok {
			t.Errorf("dangling $ref %s", ref)
		}
	}
	if _, ok := schemas["UserCreate"].(map[string]any)["required"]; !ok {
		t.Error("UserCreate has no required fields")
	}
}

func refs(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if s, ok := val.(string); ok && k == "$ref" {
				out = append(out, s)
			}
			out = append(out, refs(val)...)
		}
	case []any:
		for _, val := range x {
			out = append(out, refs(val)...)
		}
	}
	return out
}

func TestCheckRoutesRefusesBadTables(t *testing.T) {
	h := func(*gin.Context) error { return nil }
	good := route{op: "a.b", method: "GET", path: "/a", summary: "s", h: h}
	for name, routes := range map[string][]route{
		"duplicate op":   {good, {op: "a.b", method: "GET", path: "/b", summary: "s", h: h}},
		"duplicate path": {good, {op: "a.c", method: "GET", path: "/a", summary: "s", h: h}},
		"unknown code":   {{op: "a.b", method: "GET", path: "/a", summary: "s", h: h, errs: []string{"nope"}}},
		"no handler":     {{op: "a.b", method: "GET", path: "/a", summary: "s"}},
		"no summary":     {{op: "a.b", method: "GET", path: "/a", h: h}},
	} {
		if err := checkRoutes(routes); err == nil {
			t.Errorf("%s: checkRoutes = nil", name)
		}
	}
	if err := checkRoutes([]route{good}); err != nil {
		t.Errorf("good table: %v", err)
	}
}

func TestJSONBodies(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")
	for _, tc := range []struct {
		name   string
		body   string
		status int
		field  string
	}{
		{"wrong type", `{"extension": 1002, "name": "Ada"}`, 400, "extension"},
		{"wrong type later", `{"extension": "1002", "name": ["Ada"]}`, 400, "name"},
		{"unknown field", `{"extension": "1002", "name": "Ada", "nmae": "x"}`, 400, "nmae"},
		{"empty", ``, 400, ""},
		{"whitespace", " \n ", 400, ""},
		{"null", `null`, 400, ""},
		{"array", `[{"extension": "1002"}]`, 400, ""},
		{"malformed", `{"extension": "1002",`, 400, ""},
		{"not json", `extension=1002`, 400, ""},
		{"two objects", `{"extension": "1002", "name": "Ada"} {}`, 400, ""},
		{"missing fields", `{}`, 400, "extension"},
		{"too large", `{"name": "` + strings.Repeat("a", maxBody) + `"}`, 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do("POST", base+"/users", admin, tc.body)
			var eb apiErrBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if status != tc.status || eb.Error.Field != tc.field || eb.Error.Message == "" {
				t.Errorf("= %d %s, want %d naming field %q", status, body, tc.status, tc.field)
			}
			if tc.field != "" && !strings.Contains(eb.Error.Message, tc.field) {
				t.Errorf("message %q does not name %q", eb.Error.Message, tc.field)
			}
		})
	}
	var users userList
	e.call("GET", base+"/users", admin, nil, 200, &users)
	if len(users.Users) != 0 {
		t.Errorf("refused bodies created users: %+v", users)
	}
}

func TestHealthMetricsAndStrays(t *testing.T) {
	e := newEnv(t)
	var h healthJSON
	e.call("GET", "/healthz", "", nil, 200, &h)
	if h.Status != "ok" || h.Version != "test" {
		t.Errorf("healthz = %+v", h)
	}
	e.call("GET", "/readyz", "", nil, 200, nil)

	u := e.createUser("1002", "Ada Lovelace")
	e.register(u.ID, "sip:1002@192.0.2.7:5062", "Linphone/5.2")
	e.callErr("GET", "/api/v1/nowhere", providerSecret, nil, 404, "not_found")
	e.callErr("PUT", base+"/users", providerSecret, `{}`, 405, "method_not_allowed")

	metrics := string(e.call("GET", "/metrics", "", nil, 200, nil))
	for _, want := range []string{
		"dialtone_sip_registrations_live 1",
		`dialtone_admin_requests_total{method="POST",route="/api/v1/accounts/:account/users",status="201"} 1`,
		`dialtone_admin_requests_total{method="GET",route="unmatched",status="404"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// A second handler on the same registry shares the collectors.
	if _, err := NewHandler(Options{DB: e.db, Registry: e.reg}); err != nil {
		t.Errorf("second NewHandler on one registry: %v", err)
	}
	if _, err := NewHandler(Options{}); err == nil {
		t.Error("NewHandler without a DB succeeded")
	}

	if err := e.db.Close(); err != nil {
		t.Fatal(err)
	}
	e.callErr("GET", "/readyz", "", nil, 503, "unavailable")
	e.call("GET", "/healthz", "", nil, 200, nil)
}

func TestToError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		want   string
	}{
		{"not found", fmt.Errorf("user u-1: %w", store.ErrNotFound), 404, `{"error":{"code":"not_found","message":"user u-1: not found"}}`},
		{"exists", fmt.Errorf("create: %w", store.ErrExists), 409, `{"error":{"code":"exists","message":"create: already exists"}}`},
		{"validation", fmt.Errorf("x: %w", &store.ValidationError{Problems: map[string]string{"name": "bad", "email": "worse"}}), 400,
			`{"error":{"code":"invalid","field":"email","fields":{"email":"worse","name":"bad"},"message":"invalid: email worse; name bad"}}`},
		{"rule", &store.RuleError{Code: "callflow_active", Kind: store.KindConflict, Message: "callflow cf-1 is ACTIVE", Detail: map[string]any{"numbers": []string{"+442079460000"}, "code": "overridden?"}}, 409,
			`{"error":{"code":"callflow_active","message":"callflow cf-1 is ACTIVE","numbers":["+442079460000"]}}`},
		{"rule of a kind not in kindStatus", &store.RuleError{Code: "r", Kind: "later", Message: "m"}, 409, `{"error":{"code":"r","message":"m"}}`},
		{"in use, later kinds", &store.InUseError{Kind: "user", Label: "1002", Blockers: []store.Blocker{
			{Kind: "queue", ID: "q-1", Name: "Demo 1", Detail: "ignored"},
			{Kind: "callflow", ID: "cf-12", Name: "Sales line", Version: 2, Status: "ACTIVE"},
			{Kind: "unknown", ID: "x", Version: 3}}}, 409,
			`{"error":{"blockers":[{"id":"q-1","kind":"queue","name":"Demo 1"},{"id":"cf-12","kind":"callflow","name":"Sales line","status":"ACTIVE","version":2},{"id":"x","kind":"unknown","version":3}],"code":"delete_blocked","message":"user 1002 cannot be deleted: 3 blockers"}}`},
		{"lost to other nodes", fmt.Errorf("sip credentials of u-1: %w", store.ErrConflict), 503,
			`{"error":{"code":"unavailable","message":"concurrent changes through other nodes won every attempt: nothing was changed; retry"}}`},
		{"etcd unreachable", fmt.Errorf("etcd: commit: %w", store.ErrUnavailable), 503,
			`{"error":{"code":"unavailable","message":"the store's etcd cluster did not answer: nothing was changed; retry"}}`},
		{"unauthorized", store.ErrUnauthorized, 401, `{"error":{"code":"unauthorized","message":"missing or invalid bearer token"}}`},
		{"anything else", errors.New("disk on fire: /secret/path"), 500, `{"error":{"code":"internal","message":"internal error"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, internal := toError(tc.err)
			got, err := marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status || internal != (status == 500) {
				t.Errorf("status = %d (internal %v), want %d", status, internal, tc.status)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStoreRuleKindsMapped: every rule the store can refuse with has a kind
// that kindStatus maps, and its code is in errorStatus with that status, so
// the OpenAPI document lists it and the answer is not a guess.
func TestStoreRuleKindsMapped(t *testing.T) {
	if len(store.RuleCodes()) == 0 {
		t.Fatal("store.RuleCodes is empty")
	}
	for code, kind := range store.RuleCodes() {
		st, ok := kindStatus[kind]
		if !ok {
			t.Errorf("rule %s: kind %q has no row in kindStatus", code, kind)
			continue
		}
		if errorStatus[code] != st {
			t.Errorf("rule %s: errorStatus says %d, kind %q maps to %d", code, errorStatus[code], kind, st)
		}
	}
}

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "Bearer": "", "": "", "Bearer ": ""} {
		got, ok := bearer(h)
		if got != want || ok != (want != "") {
			t.Errorf("bearer(%q) = %q, %v", h, got, ok)
		}
	}
	if roleOf("provider") != roleProvider || roleOf("nope") != rolePublic || roleAdmin.String() != "admin" {
		t.Error("role mapping")
	}
}
