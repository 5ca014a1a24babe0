package store

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Sentinel errors. Match with errors.Is.
var (
	// ErrNotFound: the thing named does not exist (or belongs to another account).
	ErrNotFound = errors.New("not found")
	// ErrExists: a create collided with an existing unique value (extension, MAC, …).
	ErrExists = errors.New("already exists")
	// ErrDisabled: the user is disabled; they may not add or refresh a registration.
	ErrDisabled = errors.New("user disabled")
	// ErrOutOfOrder: a REGISTER repeated or reordered a Call-ID/CSeq pair (RFC 3261 §10.3 step 7).
	ErrOutOfOrder = errors.New("request out of order")
	// ErrUnauthorized: an admin token is unknown or revoked.
	ErrUnauthorized = errors.New("unauthorized")
)

// ValidationError lists problems by field name, e.g. {"extension": "must be 2-10 digits"}.
type ValidationError struct {
	Problems map[string]string
}

func (e *ValidationError) Error() string {
	fields := make([]string, 0, len(e.Problems))
	for f := range e.Problems {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	parts := make([]string, len(fields))
	for i, f := range fields {
		parts[i] = f + " " + e.Problems[f]
	}
	return "invalid: " + strings.Join(parts, "; ")
}

// Field returns the first offending field name in sorted order ("" if none).
func (e *ValidationError) Field() string {
	first := ""
	for f := range e.Problems {
		if first == "" || f < first {
			first = f
		}
	}
	return first
}

func invalid(field, problem string) *ValidationError {
	return &ValidationError{Problems: map[string]string{field: problem}}
}

// Blocker is one reason why something cannot be removed. Kind says which of the
// other fields are set:
//
//	enabled       Detail
//	registration  Contact, Source, Transport, UserAgent, ExpiresAt (and MAC for a Yealink)
//	licence       ID
//	operator      Detail
//	queue         ID, Name
//	callflow      ID, Name, Version, Status
//	device        ID (MAC), Name (model), Detail
type Blocker struct {
	Kind      string
	ID        string
	Name      string
	Detail    string
	Status    string
	Version   int
	Contact   string
	Source    string
	Transport string
	UserAgent string
	MAC       string
	ExpiresAt time.Time
}

// InUseError reports that Kind/ID cannot be removed while Blockers depend on it.
// Label is a human name for the thing (a user's extension).
type InUseError struct {
	Kind     string
	ID       string
	Label    string
	Blockers []Blocker
}

func (e *InUseError) Error() string {
	n := len(e.Blockers)
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("%s %s cannot be deleted: %d blocker%s", e.Kind, e.Label, n, s)
}

// Kind says what sort of refusal a [RuleError] is, in the store's own terms.
// The store never says how a kind is shown to a caller; the admin API maps each
// kind to an HTTP status in one table (admin/errors.go).
type Kind string

// KindConflict: the thing's current state forbids the change (a licence is
// still held, a callflow is ACTIVE, the user is the operator). The caller has
// to change something else first; repeating the request unchanged fails again.
const KindConflict Kind = "conflict"

// RuleError is a refusal by a named rule of the account model
// (operator_extension, callflow_active, group_enabled, licence_assigned, …;
// docs/account-model.md and docs/api.md list them). Code names the rule, Kind
// says what sort of refusal it is, Detail carries rule-specific data.
type RuleError struct {
	Code    string
	Kind    Kind
	Message string
	Detail  map[string]any
}

func (e *RuleError) Error() string { return e.Message }

// RuleCodes returns every RuleError code the store returns, with its kind
// (a copy: callers may keep it).
func RuleCodes() map[string]Kind {
	out := make(map[string]Kind, len(ruleCodes))
	for c, k := range ruleCodes {
		out[c] = k
	}
	return out
}

// ruleCodes is the table behind RuleCodes. A new rule gets a row here; the
// admin API's tests check that each one has a status and is in the OpenAPI
// document, and the store's tests that each refusal has the kind listed.
var ruleCodes = map[string]Kind{
	"operator_extension":   KindConflict, // disabling, renumbering or deleting the operator extension
	"user_registered":      KindConflict, // renumbering a user with a live registration
	"user_has_licence":     KindConflict, // a user holds one licence at most
	"licence_assigned":     KindConflict, // deleting a licence that is held
	"callflow_active":      KindConflict, // deleting an ACTIVE callflow
	"group_enabled":        KindConflict, // deleting an enabled group
	"group_in_use":         KindConflict, // deleting a group a callflow sends calls to
	"queue_in_use":         KindConflict, // deleting a queue a callflow sends calls to
	"number_active":        KindConflict, // activating elsewhere or removing an ACTIVE number
	"offboard_in_progress": KindConflict, // a second offboarding job for one user
}
