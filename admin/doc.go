// Package admin is dialtone's admin REST API on gin: accounts, users,
// registrations, SIP credentials, licences, tokens and the audit log under
// /api/v1, plus /healthz, /readyz, /metrics and /api/v1/openapi.json.
//
// # Layout
//
//	handler.go   NewHandler, Options, the handler adapter, recovery, access log, metrics
//	routes.go    the route table: every route, its minimum role, body types, error codes
//	auth.go      bearer tokens, roles, account scoping, audit of refusals
//	errors.go    the one mapping from errors to statuses and JSON bodies
//	json.go      request decoding (size limit, unknown fields) and encoding
//	openapi.go   the OpenAPI 3 document, generated from the route table
//	<noun>.go    request/response types and handlers of one noun
//
// # Adding a route
//
// Add one line to the table in routes() and the handler to the noun's file;
// see the route type for the fields. The route is then registered with gin,
// guarded by its role, counted in metrics and documented in openapi.json;
// TestRolesOnEveryRoute and TestOpenAPIComplete cover it with no further work.
// A new error code goes in errorStatus (errors.go); a new kind of store refusal
// (store.Kind) gets its status in kindStatus, the only place a store refusal
// becomes an HTTP status. Then regenerate docs/api.md:
// go test ./admin -run TestAPIDoc -update.
//
// # Tests and the document
//
// Every response the tests receive through their HTTP helper is checked
// against the OpenAPI document with kin-openapi (status documented for the
// route, body matching its schema, error code one the route lists for that
// status), and the document itself is validated (openapi_validate_test.go).
//
// Handlers are func(*gin.Context) error: they read bodies with decodeBody,
// answer with reply(c, v) (the route's success status), and return store
// errors unchanged; writeError renders them. The caller of NewHandler should
// set gin's mode once (gin.SetMode(gin.ReleaseMode)) before calling it.
package admin
