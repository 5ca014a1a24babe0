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

// RuleError is a refusal by a named rule of API.md (operator_extension,
// callflow_active, group_enabled, licence_assigned, …). Status is the HTTP
// status the rule maps to (409 or 422); Detail carries rule-specific data.
type RuleError struct {
	Code    string
	Message string
	Status  int
	Detail  map[string]any
}

func (e *RuleError) Error() string { return e.Message }
