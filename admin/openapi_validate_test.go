package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The OpenAPI document, loaded and validated by kin-openapi once per test
// binary, and a router that finds a request's operation in it.
var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRouter routers.Router
	specErr    error
)

// loadSpec builds the document exactly as NewHandler does, loads it with
// kin-openapi and validates it against the OpenAPI 3 specification.
func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	specOnce.Do(func() {
		data, err := openAPIDocument((&server{}).routes(), "test")
		if err != nil {
			specErr = err
			return
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(data)
		if err != nil {
			specErr = err
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = err
			return
		}
		specDoc = doc
		specRouter, specErr = legacy.NewRouter(doc)
	})
	if specErr != nil {
		t.Fatalf("OpenAPI document: %v", specErr)
	}
	return specDoc, specRouter
}

// TestOpenAPIValid: the document validates against the OpenAPI 3
// specification (kin-openapi), every route of the table is an operation in
// it, and the response checker refuses what it should (so a test passing
// through checkResponse means something).
func TestOpenAPIValid(t *testing.T) {
	doc, router := loadSpec(t)
	routes := (&server{}).routes()
	for _, rt := range routes {
		item := doc.Paths.Value(openAPIPath(rt.path))
		if item == nil || item.GetOperation(rt.method) == nil {
			t.Errorf("%s %s: not in the document", rt.method, rt.path)
		}
	}
	if n := len(doc.Paths.Map()); n == 0 {
		t.Fatal("document has no paths")
	}

	req, _ := http.NewRequest("GET", "http://x"+base+"/users", nil)
	for _, tc := range []struct {
		name   string
		status int
		body   string
		ok     bool
	}{
		{"documented error", 401, `{"error":{"code":"unauthorized","message":"m"}}`, true},
		{"undocumented status", 418, `{}`, false},
		{"error without message", 404, `{"error":{"code":"not_found"}}`, false},
		{"code not documented for the status", 404, `{"error":{"code":"exists","message":"m"}}`, false},
		{"code not documented for the route", 409, `{"error":{"code":"job_done","message":"m"}}`, false},
		{"list missing its field", 200, `{}`, false},
		{"list of the wrong type", 200, `{"users":{}}`, false},
		{"list", 200, `{"users":[]}`, true},
		{"a field the document does not list", 200, `{"users":[],"bogus":1}`, false},
	} {
		err := validateResponse(router, req, tc.status, http.Header{"Content-Type": {"application/json; charset=utf-8"}}, []byte(tc.body))
		if (err == nil) != tc.ok {
			t.Errorf("%s: validateResponse = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// checkResponse fails t unless the response is one the document allows for
// the request's operation: a documented status, and a body that matches the
// schema. Paths outside the document (/metrics, /healthz, unknown paths, a
// method the path does not have) are not checked here.
func checkResponse(t testing.TB, req *http.Request, status int, header http.Header, body []byte) {
	t.Helper()
	_, router := loadSpec(t)
	if err := validateResponse(router, req, status, header, body); err != nil {
		t.Errorf("%s %s = %d %s: response does not match the OpenAPI document: %v", req.Method, req.URL.Path, status, truncate(body), err)
	}
}

func validateResponse(router routers.Router, req *http.Request, status int, header http.Header, body []byte) error {
	route, params, err := router.FindRoute(req)
	if err != nil {
		var re *routers.RouteError
		if errors.As(err, &re) {
			return nil // not an operation of the document
		}
		return err
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	return openapi3filter.ValidateResponse(context.Background(), in)
}

func truncate(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
