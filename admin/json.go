package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
)

// maxBody bounds every request body; a larger one is refused with 413.
const maxBody = 1 << 20

// decodeBody reads the request's JSON object into v (a pointer to a request
// struct). It refuses, naming the field where there is one: a body over
// maxBody (413 body_too_large), an empty or null body, malformed JSON, a value
// of the wrong type, a field v does not have, and anything after the object.
func decodeBody(c *gin.Context, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large",
				Message: fmt.Sprintf("request body is larger than %d bytes", maxBody)}
		}
		return errInvalid("", "cannot read request body")
	}
	return decodeJSON(data, v)
}

// decodeJSON is decodeBody without the reading, so it can be fuzzed alone.
func decodeJSON(data []byte, v any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return errInvalid("", "a JSON object is required in the request body")
	}
	if trimmed[0] != '{' {
		return errInvalid("", "the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errInvalid("", "the request body must hold exactly one JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		return errInvalid("", fmt.Sprintf("malformed JSON at byte %d: %s", syn.Offset, syn.Error()))
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return errInvalid("", fmt.Sprintf("expected a JSON object, not %s", typ.Value))
		}
		return errInvalid(field, fmt.Sprintf("field %q must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value))
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errInvalid("", "malformed JSON: unexpected end of body")
	}
	// encoding/json reports an unknown field only as text: `json: unknown field "x"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return errInvalid(name, fmt.Sprintf("unknown field %q", name))
	}
	return errInvalid("", "malformed JSON: "+err.Error())
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "ptr":
		return "a value of another type"
	}
	return "a number"
}

// marshal encodes like json.Marshal without escaping <, > and & (bodies are
// JSON, not HTML), with no trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// writeJSON writes v with status.
func writeJSON(c *gin.Context, status int, v any) {
	data, err := marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	c.Data(status, "application/json; charset=utf-8", data)
}

// decodeOptionalBody is decodeBody for routes whose fields all have
// defaults: an empty body means {}.
func decodeOptionalBody(c *gin.Context, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
	if err != nil {
		return decodeBody(c, v) // reports the same error the same way
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeJSON(data, v)
}
