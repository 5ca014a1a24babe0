package admin

import (
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// kindStatus is the one place where the kind of a store refusal becomes an
// HTTP status. The store says what sort of refusal a rule is
// (store.RuleError.Kind); only this package speaks HTTP.
var kindStatus = map[store.Kind]int{
	store.KindConflict: http.StatusConflict,
}

// errorStatus is every error code the API answers with and its HTTP status.
// Route table entries name codes from here (route.errs); the OpenAPI document
// and the table test read it, so a code that is not listed here is a bug.
// The store's rule codes (store.RuleCodes) are added with the status of their
// kind, from kindStatus.
var errorStatus = withRuleCodes(map[string]int{
	"invalid":               http.StatusBadRequest,
	"unauthorized":          http.StatusUnauthorized,
	"forbidden":             http.StatusForbidden,
	"not_found":             http.StatusNotFound,
	"method_not_allowed":    http.StatusMethodNotAllowed,
	"exists":                http.StatusConflict,
	"delete_blocked":        http.StatusConflict,
	"job_done":              http.StatusConflict,           // resuming a job that has finished
	"device_not_registered": http.StatusConflict,           // resync: the device has no live registration to NOTIFY
	"check_sync_failed":     http.StatusBadGateway,         // resync: the SIP side could not deliver the NOTIFY
	"sip_unavailable":       http.StatusServiceUnavailable, // resync: no SIP side wired in (Options.Notifier nil)
	"invalid_audio":         http.StatusBadRequest,         // PUT /announcement: the loader refused the WAV
	"announcer_unavailable": http.StatusServiceUnavailable, // PUT /announcement: Options.Announcer nil
	"body_too_large":        http.StatusRequestEntityTooLarge,
	"insufficient_storage":  http.StatusInsufficientStorage, // the disk is full: nothing was written, retry once space is freed
	"internal":              http.StatusInternalServerError,
	"unavailable":           http.StatusServiceUnavailable,
})

// withRuleCodes adds every store rule code to m with its kind's status.
func withRuleCodes(m map[string]int) map[string]int {
	for code, kind := range store.RuleCodes() {
		m[code] = statusOfKind(kind)
	}
	return m
}

// statusOfKind is kindStatus[k]; a kind the table does not list yet is a
// conflict (the tests check that every kind the store uses is listed).
func statusOfKind(k store.Kind) int {
	if st, ok := kindStatus[k]; ok {
		return st
	}
	return http.StatusConflict
}

// apiError is a refusal decided in this package (bad JSON, a role too weak for
// one field, …). It renders like every other error.
type apiError struct {
	Status  int
	Code    string
	Message string
	Field   string // the offending field, if one
}

func (e *apiError) Error() string { return e.Message }

func errInvalid(field, msg string) error {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid", Message: msg, Field: field}
}

func errForbidden(msg string) error {
	return &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
}

func errNotFound(msg string) error {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

// errorBody is the one error shape: {"error": {...}}.
type errorBody struct {
	Error errorDetail `json:"error"`
}

// errorDetail is {"code", "message"} plus whatever the code needs: field and
// fields for "invalid", blockers for "delete_blocked", a RuleError's Detail
// keys (merged in MarshalJSON).
type errorDetail struct {
	Code     string            `json:"code"`
	Message  string            `json:"message"`
	Field    string            `json:"field,omitempty"`
	Fields   map[string]string `json:"fields,omitempty"`
	Blockers []blockerJSON     `json:"blockers,omitempty"`
	Extra    map[string]any    `json:"-"`
}

// toError maps any error to its status and body. It is the only place where
// store errors become HTTP; internal reports whether the error is unexpected
// (a 500, logged by the caller, with its text kept out of the response).
func toError(err error) (status int, body errorBody, internal bool) {
	var (
		inUse *store.InUseError
		inval *store.ValidationError
		rule  *store.RuleError
		api   *apiError
	)
	d := &body.Error
	switch {
	case errors.As(err, &inUse):
		d.Code, d.Message = "delete_blocked", inUse.Error()
		d.Blockers = renderBlockers(inUse.Blockers)
	case errors.As(err, &inval):
		d.Code, d.Message = "invalid", inval.Error()
		d.Field, d.Fields = inval.Field(), inval.Problems
	case errors.As(err, &rule):
		status, d.Code, d.Message = statusOfKind(rule.Kind), rule.Code, rule.Message
		d.Extra = rule.Detail
	case errors.As(err, &api):
		status, d.Code, d.Message, d.Field = api.Status, api.Code, api.Message, api.Field
		if api.Field != "" {
			d.Fields = map[string]string{api.Field: api.Message}
		}
	case errors.Is(err, store.ErrNoSpace):
		status, d.Code, d.Message = http.StatusInsufficientStorage, "insufficient_storage", "the server's disk is full: nothing was changed; retry once space is freed"
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrNoLease):
		status, d.Code, d.Message = http.StatusServiceUnavailable, "unavailable", "the store's etcd cluster did not answer: nothing was changed; retry"
	case errors.Is(err, store.ErrConflict):
		// Several nodes on etcd: writes through other nodes changed what
		// this one read, on every attempt. Nothing changed; retrying works.
		status, d.Code, d.Message = http.StatusServiceUnavailable, "unavailable", "concurrent changes through other nodes won every attempt: nothing was changed; retry"
	case errors.Is(err, store.ErrNotFound):
		d.Code, d.Message = "not_found", err.Error()
	case errors.Is(err, store.ErrExists):
		d.Code, d.Message = "exists", err.Error()
	case errors.Is(err, store.ErrUnauthorized):
		d.Code, d.Message = "unauthorized", "missing or invalid bearer token"
	default:
		d.Code, d.Message = "internal", "internal error"
		internal = true
	}
	if status == 0 {
		status = errorStatus[d.Code]
	}
	return status, body, internal
}

// MarshalJSON merges Extra (a RuleError's Detail) into the object, never
// overriding the fixed keys.
func (d errorDetail) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range d.Extra {
		m[k] = v
	}
	m["code"], m["message"] = d.Code, d.Message
	if d.Field != "" {
		m["field"] = d.Field
	}
	if len(d.Fields) > 0 {
		m["fields"] = d.Fields
	}
	if d.Blockers != nil {
		m["blockers"] = d.Blockers
	}
	return marshal(m)
}

// blockerJSON is one blocker as the API shows it (docs/api.md, schema
// Blocker): "kind" plus the fields of that kind.
type blockerJSON map[string]any

// renderBlockers turns store blockers into their per-kind shapes: each kind
// shows only the fields that apply to it. A kind this package does not know
// yet shows every field that is set.
func renderBlockers(bs []store.Blocker) []blockerJSON {
	out := make([]blockerJSON, 0, len(bs))
	for _, b := range bs {
		m := blockerJSON{"kind": b.Kind}
		switch b.Kind {
		case "enabled", "operator":
			m["detail"] = b.Detail
		case "registration":
			m["contact"], m["source"], m["transport"] = b.Contact, b.Source, b.Transport
			m["user_agent"], m["expires_at"] = b.UserAgent, rfc3339(b.ExpiresAt)
			if b.MAC != "" {
				m["mac"] = b.MAC
			}
		case "licence":
			m["id"] = b.ID
		case "queue":
			m["id"], m["name"] = b.ID, b.Name
		case "callflow":
			m["id"], m["name"], m["version"], m["status"] = b.ID, b.Name, b.Version, b.Status
		case "device":
			m["id"], m["name"], m["detail"] = b.ID, b.Name, b.Detail
		default:
			for k, v := range map[string]string{"id": b.ID, "name": b.Name, "detail": b.Detail, "status": b.Status,
				"contact": b.Contact, "source": b.Source, "transport": b.Transport, "user_agent": b.UserAgent, "mac": b.MAC} {
				if v != "" {
					m[k] = v
				}
			}
			if b.Version != 0 {
				m["version"] = b.Version
			}
			if !b.ExpiresAt.IsZero() {
				m["expires_at"] = rfc3339(b.ExpiresAt)
			}
		}
		out = append(out, m)
	}
	return out
}

// rfc3339 is how every time in the API is written: UTC, whole seconds.
func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// codesByStatus groups error codes by status, sorted, for the OpenAPI document.
func codesByStatus(codes []string) map[int][]string {
	out := map[int][]string{}
	seen := map[string]bool{}
	for _, c := range codes {
		if seen[c] {
			continue
		}
		seen[c] = true
		st, ok := errorStatus[c]
		if !ok {
			st = http.StatusConflict
		}
		out[st] = append(out[st], c)
	}
	for _, cs := range out {
		sort.Strings(cs)
	}
	return out
}
