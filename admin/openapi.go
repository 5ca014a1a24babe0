package admin

import (
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// openAPI builds the OpenAPI 3 document of routes: every path and method with
// its summary, minimum role (x-min-role), request body schema, success
// response and every error status with its codes (x-error-codes).
func openAPI(routes []route, version string) map[string]any {
	if version == "" {
		version = "dev"
	}
	g := &schemaGen{defs: map[string]any{}}
	g.defs["Error"] = errorSchema()
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		p := openAPIPath(rt.path)
		if paths[p] == nil {
			paths[p] = map[string]any{}
		}
		paths[p][strings.ToLower(rt.method)] = g.operation(rt)
	}
	return map[string]any{
		"openapi": "3.0.3",
		"info": map[string]any{
			"title":   "dialtone admin API",
			"version": version,
			"description": "Every request under /api/v1 except this document carries Authorization: Bearer <token>. " +
				"Roles: provider (every account), admin (one account), viewer (one account, read-only). " +
				"Errors are {\"error\": {\"code\", \"message\", ...}}.",
		},
		"paths": paths,
		"components": map[string]any{
			"schemas":         g.defs,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer"}},
		},
	}
}

// openAPIDocument is the document /api/v1/openapi.json serves, as JSON.
func openAPIDocument(routes []route, version string) ([]byte, error) {
	spec := openAPI(routes, version)
	addRawRequestBodies(spec, routes)
	return marshal(spec)
}

// openAPIPath turns gin's "/users/:id" into OpenAPI's "/users/{id}".
func openAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

func (g *schemaGen) operation(rt route) map[string]any {
	op := map[string]any{
		"operationId": rt.op,
		"summary":     rt.summary,
		"description": "Minimum role: " + rt.role.String() + ".",
		"x-min-role":  rt.role.String(),
		"tags":        []string{strings.SplitN(rt.op, ".", 2)[0]},
	}
	if rt.role > rolePublic {
		op["security"] = []map[string][]string{{"bearer": {}}}
	} else {
		op["security"] = []map[string][]string{}
	}
	var params []map[string]any
	for _, s := range strings.Split(rt.path, "/") {
		if strings.HasPrefix(s, ":") {
			params = append(params, map[string]any{"name": s[1:], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
	}
	for _, q := range rt.query {
		name, typ, ok := strings.Cut(q, ":")
		if !ok {
			typ = "string"
		}
		params = append(params, map[string]any{"name": name, "in": "query", "required": false, "schema": map[string]any{"type": typ}})
	}
	if params != nil {
		op["parameters"] = params
	}
	if rt.in != nil {
		op["requestBody"] = map[string]any{
			"required": true,
			"content":  map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.in), "", true)}},
		}
	}
	responses := map[string]any{}
	ok := map[string]any{"description": http.StatusText(rt.successStatus())}
	switch {
	case rt.raw != "":
		ok["content"] = map[string]any{rt.raw: map[string]any{}}
	case rt.out != nil:
		ok["content"] = map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(rt.out), "", false)}}
	}
	responses[strconv.Itoa(rt.successStatus())] = ok
	for status, codes := range codesByStatus(rt.impliedErrors()) {
		responses[strconv.Itoa(status)] = map[string]any{
			"description":   http.StatusText(status) + ": " + strings.Join(codes, ", "),
			"x-error-codes": codes,
			"content":       map[string]any{"application/json": map[string]any{"schema": errorOf(codes)}},
		}
	}
	op["responses"] = responses
	return op
}

// errorOf is the Error schema with its code limited to codes: a route that
// answers a status with a code it does not document for it does not match.
func errorOf(codes []string) map[string]any {
	return map[string]any{"allOf": []any{
		map[string]any{"$ref": "#/components/schemas/Error"},
		map[string]any{"type": "object", "properties": map[string]any{"error": map[string]any{
			"type": "object", "properties": map[string]any{"code": map[string]any{"type": "string", "enum": codes}},
		}}},
	}}
}

func errorSchema() map[string]any {
	str := map[string]any{"type": "string"}
	codes := make([]string, 0, len(errorStatus))
	for c := range errorStatus {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	return map[string]any{
		"type":     "object",
		"required": []string{"error"},
		"properties": map[string]any{"error": map[string]any{
			"type":     "object",
			"required": []string{"code", "message"},
			"properties": map[string]any{
				"code":     map[string]any{"type": "string", "description": "one of " + strings.Join(codes, ", ") + ", or a rule's own code"},
				"message":  str,
				"field":    map[string]any{"type": "string", "description": "the offending field (code invalid)"},
				"fields":   map[string]any{"type": "object", "additionalProperties": str, "description": "every bad field and its problem (code invalid)"},
				"blockers": map[string]any{"type": "array", "items": map[string]any{"$ref": "#/components/schemas/Blocker"}, "description": "every blocker (code delete_blocked)"},
			},
			"additionalProperties": true,
		}},
	}
}

// schemaGen turns Go types into JSON schemas, collecting named structs as
// components.
type schemaGen struct {
	defs map[string]any
}

var blockerType = reflect.TypeOf(blockerJSON{})

func blockerSchema() map[string]any {
	str := map[string]any{"type": "string"}
	return map[string]any{
		"type":        "object",
		"required":    []string{"kind"},
		"description": "Fields by kind: enabled, operator: detail; registration: contact, source, transport, user_agent, expires_at, mac (Yealink only); licence: id; queue: id, name; callflow: id, name, version, status; device: id, name, detail.",
		"properties": map[string]any{
			"kind":       map[string]any{"type": "string", "enum": []string{"enabled", "registration", "licence", "operator", "queue", "callflow", "device"}},
			"detail":     str,
			"contact":    str,
			"source":     str,
			"transport":  str,
			"user_agent": str,
			"expires_at": map[string]any{"type": "string", "format": "date-time"},
			"mac":        str,
			"id":         str,
			"name":       str,
			"version":    map[string]any{"type": "integer"},
			"status":     str,
		},
	}
}

func (g *schemaGen) schema(t reflect.Type, format string, request bool) map[string]any {
	if t == blockerType {
		if _, ok := g.defs["Blocker"]; !ok {
			g.defs["Blocker"] = blockerSchema()
		}
		return map[string]any{"$ref": "#/components/schemas/Blocker"}
	}
	var s map[string]any
	switch t.Kind() {
	case reflect.Pointer:
		inner := g.schema(t.Elem(), format, request)
		if _, isRef := inner["$ref"]; isRef {
			return map[string]any{"allOf": []any{inner}, "nullable": true}
		}
		inner["nullable"] = true
		return inner
	case reflect.String:
		s = map[string]any{"type": "string"}
	case reflect.Bool:
		s = map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s = map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s = map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		s = map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		s = map[string]any{"type": "array", "items": g.schema(t.Elem(), "", request)}
	case reflect.Map:
		s = map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem(), "", request)}
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t, request)
		}
		name := componentName(t.Name())
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = map[string]any{} // placeholder against recursion
			g.defs[name] = g.object(t, request)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	default:
		s = map[string]any{}
	}
	if format != "" {
		s["format"] = format
	}
	return s
}

// object describes a struct by its json tags. Embedded structs are
// flattened, as encoding/json does. A field is required unless it is
// omitempty, or (in a request) a pointer. No other property is allowed, in a
// request or a response: the document lists every field there is.
func (g *schemaGen) object(t reflect.Type, request bool) map[string]any {
	props := map[string]any{}
	var required []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			props[name] = g.schema(f.Type, f.Tag.Get("format"), request)
			optional := strings.Contains(opts, "omitempty") || request && f.Type.Kind() == reflect.Pointer
			if !optional {
				required = append(required, name)
			}
		}
	}
	walk(t)
	out := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		sort.Strings(required)
		out["required"] = required
	}
	return out
}

// componentName capitalises a Go type name and drops a JSON suffix:
// userCreate → UserCreate, userJSON → User.
func componentName(s string) string {
	if t := strings.TrimSuffix(s, "JSON"); t != "" {
		s = t
	}
	r := []rune(s)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}
