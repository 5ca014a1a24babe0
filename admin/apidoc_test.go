package admin

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite docs/api.md from the OpenAPI document")

// apiDocPath is docs/api.md, from this package's directory.
var apiDocPath = filepath.Join("..", "docs", "api.md")

// TestAPIDoc: docs/api.md is the OpenAPI document written out for people.
// It fails when the file is stale; `go test ./admin -run TestAPIDoc -update`
// rewrites it.
func TestAPIDoc(t *testing.T) {
	doc, _ := loadSpec(t)
	got := renderAPIDoc(doc, (&server{}).routes())
	if *update {
		if err := os.WriteFile(apiDocPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(apiDocPath)
	if err != nil {
		t.Fatalf("%v (write it with: go test ./admin -run TestAPIDoc -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Fatalf("docs/api.md is stale; run: go test ./admin -run TestAPIDoc -update\n(-file +generated):\n%s", diff)
	}
}

// renderAPIDoc writes the document as Markdown: how to call the API, the
// error codes, then per resource (OpenAPI tag, in route-table order) every
// route with its role, parameters, request and response fields and errors,
// and last every schema's fields.
func renderAPIDoc(doc *openapi3.T, routes []route) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	p("# dialtone admin API\n\n")
	p("<!-- Generated from the OpenAPI document (/api/v1/openapi.json) by\n")
	p("     `go test ./admin -run TestAPIDoc -update`. Do not edit by hand: change the\n")
	p("     route table (admin/routes.go) or the types it names, then regenerate. -->\n\n")
	p("%s\n\n", doc.Info.Description)
	p("The machine-readable form of this page is `GET /api/v1/openapi.json` (OpenAPI %s).\n", doc.OpenAPI)
	p("Paths below are relative to the admin address (default `127.0.0.1:8081`). Times are RFC 3339 in UTC.\n\n")

	p("## Roles\n\n")
	p("Each route names the least role that may call it; a stronger role may too.\n\n")
	p("| Role | May |\n|---|---|\n")
	p("| public | call without a token |\n")
	p("| viewer | read one account |\n")
	p("| admin | read and change one account |\n")
	p("| provider | every account |\n\n")

	p("## Errors\n\n")
	p("Every error is `{\"error\": {\"code\", \"message\", ...}}`; `invalid` adds `field` and `fields`, `delete_blocked` adds `blockers` ([Blocker](#blocker)), and a rule's refusal may add data of its own. The codes, by status:\n\n")
	byStatus := map[int][]string{}
	for code, st := range errorStatus {
		byStatus[st] = append(byStatus[st], code)
	}
	p("| Status | Codes |\n|---|---|\n")
	for _, st := range sortedKeys(byStatus) {
		codes := byStatus[st]
		sort.Strings(codes)
		p("| %d %s | %s |\n", st, http.StatusText(st), codeList(codes))
	}
	p("\n")

	// Resources in the order the route table first names them.
	var tags []string
	byTag := map[string][]route{}
	for _, rt := range routes {
		tag := strings.SplitN(rt.op, ".", 2)[0]
		if _, ok := byTag[tag]; !ok {
			tags = append(tags, tag)
		}
		byTag[tag] = append(byTag[tag], rt)
	}
	p("## Resources\n\n")
	for _, tag := range tags {
		p("- [%s](#resource-%s)\n", tag, anchor(tag))
	}
	p("\n")
	for _, tag := range tags {
		p("## Resource: %s\n\n", tag)
		p("| Method | Path | Role | Summary |\n|---|---|---|---|\n")
		for _, rt := range byTag[tag] {
			p("| %s | `%s` | %s | %s |\n", rt.method, openAPIPath(rt.path), rt.role, rt.summary)
		}
		p("\n")
		for _, rt := range byTag[tag] {
			op := doc.Paths.Value(openAPIPath(rt.path)).GetOperation(rt.method)
			p("### %s %s\n\n", rt.method, openAPIPath(rt.path))
			p("%s. Role: %s. Operation `%s`.\n\n", op.Summary, extString(op.Extensions, "x-min-role"), op.OperationID)
			var query []string
			for _, prm := range op.Parameters {
				if prm.Value.In == "query" {
					query = append(query, fmt.Sprintf("`%s` (%s)", prm.Value.Name, typeOf(prm.Value.Schema)))
				}
			}
			if len(query) > 0 {
				p("Query: %s.\n\n", strings.Join(query, ", "))
			}
			if rb := op.RequestBody; rb != nil && rb.Value != nil {
				for _, ct := range sortedKeys(rb.Value.Content) {
					mt := rb.Value.Content[ct]
					if ct == "application/json" && mt.Schema != nil {
						p("Request body: %s.\n\n", typeOf(mt.Schema))
					} else {
						p("Request body: `%s`, %s.\n\n", ct, rb.Value.Description)
					}
				}
			}
			var errs []string
			for _, st := range sortedKeys(op.Responses.Map()) {
				resp := op.Responses.Value(st).Value
				code, _ := strconv.Atoi(st)
				if code < 400 {
					what := "no body"
					for _, ct := range sortedKeys(resp.Content) {
						if mt := resp.Content[ct]; ct == "application/json" && mt.Schema != nil {
							what = typeOf(mt.Schema)
						} else {
							what = "`" + ct + "`"
						}
					}
					p("Answer: %s %s, %s.\n\n", st, http.StatusText(code), what)
					continue
				}
				codes := extStrings(resp.Extensions, "x-error-codes")
				errs = append(errs, fmt.Sprintf("%s (%s)", st, codeList(codes)))
			}
			if len(errs) > 0 {
				p("Errors: %s.\n\n", strings.Join(errs, "; "))
			}
		}
	}

	p("## Schemas\n\n")
	p("Required fields are always present in an answer and must be sent in a request; \"or null\" marks a field that may be null (in a request: left out or null means unchanged). No other fields are sent or accepted.\n\n")
	schemas := doc.Components.Schemas
	for _, name := range sortedKeys(schemas) {
		s := schemas[name].Value
		p("### %s\n\n", name)
		if s.Description != "" {
			p("%s\n\n", s.Description)
		}
		if len(s.Properties) == 0 {
			p("%s.\n\n", typeOf(schemas[name]))
			continue
		}
		p("| Field | Type | Required |\n|---|---|---|\n")
		for _, f := range sortedKeys(s.Properties) {
			req := ""
			if slices.Contains(s.Required, f) {
				req = "yes"
			}
			p("| `%s` | %s | %s |\n", f, typeOf(s.Properties[f]), req)
		}
		p("\n")
	}
	return b.String()
}

// typeOf describes a schema in a few words, linking named schemas.
func typeOf(sr *openapi3.SchemaRef) string {
	if sr == nil {
		return "any"
	}
	if sr.Ref != "" {
		name := sr.Ref[strings.LastIndex(sr.Ref, "/")+1:]
		return fmt.Sprintf("[%s](#%s)", name, anchor(name))
	}
	s := sr.Value
	if s == nil {
		return "any"
	}
	var t string
	switch {
	case len(s.AllOf) > 0:
		t = typeOf(s.AllOf[0])
	case s.Type.Is("array"):
		t = "array of " + typeOf(s.Items)
	case s.Type.Is("object") && s.AdditionalProperties.Schema != nil && len(s.Properties) == 0:
		t = "map of string to " + typeOf(s.AdditionalProperties.Schema)
	case len(s.Type.Slice()) > 0:
		t = strings.Join(s.Type.Slice(), " or ")
	default:
		t = "any"
	}
	if s.Format != "" {
		t += " (" + s.Format + ")"
	}
	if len(s.Enum) > 0 {
		var vs []string
		for _, v := range s.Enum {
			vs = append(vs, fmt.Sprintf("`%v`", v))
		}
		t += ": one of " + strings.Join(vs, ", ")
	}
	if s.Nullable {
		t += ", or null"
	}
	return t
}

func codeList(codes []string) string {
	out := make([]string, len(codes))
	for i, c := range codes {
		out[i] = "`" + c + "`"
	}
	return strings.Join(out, ", ")
}

func extString(ext map[string]any, key string) string {
	s, _ := ext[key].(string)
	return s
}

func extStrings(ext map[string]any, key string) []string {
	var out []string
	switch v := ext[key].(type) {
	case []any:
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
	case []string:
		out = v
	}
	return out
}

// anchor is GitHub's heading anchor for a one-word heading.
func anchor(s string) string { return strings.ToLower(s) }

func sortedKeys[K interface{ ~string | ~int }, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
