package store

import (
	"fmt"
	"strings"
	"time"
)

var (
	bNumbers      = []byte("numbers")       // acct/e164 → Number
	bNumberOwners = []byte("number_owners") // e164 → account id (a number belongs to one account)
)

// Number status words, lower case as the admin API spells them (docs/api.md).
const (
	NumberActive    = "active"
	NumberAvailable = "available"
)

// maxNumberHistory bounds a number's history; the oldest periods drop off
// (the audit log keeps every change).
const maxNumberHistory = 100

// Number is a phone number (DID) of an account: ACTIVE (routed to CallflowID)
// or AVAILABLE (CallflowID ""). An account admin never deletes one
// (docs/account-model.md rule 10).
type Number struct {
	E164       string         `json:"e164"`
	AccountID  string         `json:"account_id"`
	Status     string         `json:"status"`
	CallflowID string         `json:"callflow_id"`
	History    []NumberPeriod `json:"history"` // oldest first; the last one is open while ACTIVE
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
}

// NumberPeriod is one stretch of time a number was routed to one callflow
// version. To is nil while the period is current. Actor is who started it.
type NumberPeriod struct {
	CallflowID      string     `json:"callflow_id"`
	CallflowName    string     `json:"callflow_name"`
	CallflowVersion int        `json:"callflow_version"`
	From            time.Time  `json:"from"`
	To              *time.Time `json:"to"`
	Actor           string     `json:"actor"`
}

// NormalizeE164 accepts "+" followed by 8 to 15 digits (the first not 0), or
// the same digits without the "+", and returns the "+" form.
func NormalizeE164(s string) (string, bool) {
	s = strings.TrimSpace(s)
	digits := strings.TrimPrefix(s, "+")
	if len(digits) < 8 || len(digits) > 15 || digits[0] == '0' {
		return "", false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return "", false
		}
	}
	return "+" + digits, true
}

const e164Rule = `must be an E.164 number: "+" then 8 to 15 digits, e.g. +442079460000`

func actorName(a Actor) string {
	switch {
	case a.Name != "":
		return a.Name
	case a.TokenID != "":
		return a.TokenID
	default:
		return a.Role
	}
}

// AddNumber gives the account a number (provider only, enforced by the
// caller); it starts AVAILABLE. ErrExists if any account already has it.
func (db *DB) AddNumber(accountID, e164 string, actor Actor) (Number, error) {
	e, ok := NormalizeE164(e164)
	if !ok {
		return Number{}, invalid("e164", e164Rule)
	}
	var n Number
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		if owner := t.Bucket(bNumberOwners).Get([]byte(e)); owner != nil {
			return fmt.Errorf("number %s: %w", e, ErrExists)
		}
		n = Number{E164: e, AccountID: accountID, Status: NumberAvailable, History: []NumberPeriod{}, CreatedAt: t.now, UpdatedAt: t.now}
		if err := t.Bucket(bNumberOwners).Put([]byte(e), []byte(accountID)); err != nil {
			return err
		}
		if err := put(t.Bucket(bNumbers), k(accountID, e), n); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "number.add", TargetKind: "number", TargetID: e, TargetLabel: e})
	})
	if err != nil {
		return Number{}, fmt.Errorf("add number %s: %w", e, err)
	}
	return n, nil
}

// RemoveNumber takes an AVAILABLE number off the account (provider only,
// enforced by the caller); an ACTIVE one is refused with RuleError
// number_active.
func (db *DB) RemoveNumber(accountID, e164 string, actor Actor) error {
	e, ok := NormalizeE164(e164)
	if !ok {
		return invalid("e164", e164Rule)
	}
	err := db.update(func(t *tx) error {
		n, err := t.number(accountID, e)
		if err != nil {
			return err
		}
		if n.Status == NumberActive {
			return &RuleError{Code: "number_active", Kind: KindConflict, Message: fmt.Sprintf("number %s is active; deactivate it first", e),
				Detail: map[string]any{"callflow_id": n.CallflowID}}
		}
		if err := t.Bucket(bNumbers).Delete([]byte(k(accountID, e))); err != nil {
			return err
		}
		if err := t.Bucket(bNumberOwners).Delete([]byte(e)); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "number.remove", TargetKind: "number", TargetID: e, TargetLabel: e})
	})
	if err != nil {
		return fmt.Errorf("remove number %s: %w", e, err)
	}
	return nil
}

// Number returns one number; e164 may omit the leading "+".
func (db *DB) Number(accountID, e164 string) (Number, error) {
	e, ok := NormalizeE164(e164)
	if !ok {
		return Number{}, invalid("e164", e164Rule)
	}
	var n Number
	err := db.view(func(t *tx) error {
		var err error
		n, err = t.number(accountID, e)
		return err
	})
	return n, err
}

func (t *tx) number(acct, e164 string) (Number, error) {
	var n Number
	if err := get(t.Bucket(bNumbers), k(acct, e164), &n); err != nil {
		return Number{}, fmt.Errorf("number %s: %w", e164, err)
	}
	return n, nil
}

// Numbers lists the account's numbers in E.164 order; status "" lists all,
// "active" or "available" (any case) only those.
func (db *DB) Numbers(accountID, status string) ([]Number, error) {
	status = strings.ToLower(strings.TrimSpace(status))
	if status != "" && status != NumberActive && status != NumberAvailable {
		return nil, invalid("status", `must be "active" or "available"`)
	}
	var out []Number
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		all, err := t.numbers(accountID)
		for _, n := range all {
			if status == "" || n.Status == status {
				out = append(out, n)
			}
		}
		return err
	})
	return out, err
}

func (t *tx) numbers(acct string) ([]Number, error) {
	var out []Number
	err := each(t.Bucket(bNumbers), acct, func(_, v []byte) error {
		var n Number
		if err := decode(v, &n); err != nil {
			return err
		}
		out = append(out, n)
		return nil
	})
	return out, err
}

// callflowNumbers maps each ACTIVE callflow id to its numbers (E.164 order).
// It is the only source of a callflow's status: nothing else stores it.
func (t *tx) callflowNumbers(acct string) (map[string][]string, error) {
	m := map[string][]string{}
	ns, err := t.numbers(acct)
	for _, n := range ns {
		if n.CallflowID != "" {
			m[n.CallflowID] = append(m[n.CallflowID], n.E164)
		}
	}
	return m, err
}

// routeNumber points n at cf (nil: AVAILABLE), closing the current history
// period and opening a new one, and saves it.
func (t *tx) routeNumber(n *Number, cf *Callflow, actor Actor) error {
	if l := len(n.History); l > 0 && n.History[l-1].To == nil {
		end := t.now
		n.History[l-1].To = &end
	}
	if cf == nil {
		n.Status, n.CallflowID = NumberAvailable, ""
	} else {
		n.Status, n.CallflowID = NumberActive, cf.ID
		n.History = append(n.History, NumberPeriod{CallflowID: cf.ID, CallflowName: cf.Name, CallflowVersion: cf.Version, From: t.now, Actor: actorName(actor)})
		if len(n.History) > maxNumberHistory {
			n.History = n.History[len(n.History)-maxNumberHistory:]
		}
	}
	n.UpdatedAt = t.now
	return put(t.Bucket(bNumbers), k(n.AccountID, n.E164), *n)
}

// ActivateNumber routes an AVAILABLE number to a callflow of the account (the
// callflow becomes ACTIVE). Activating it onto the callflow it already follows
// is a no-op; an ACTIVE number on another callflow is refused with RuleError
// number_active: deactivate it, or reassign that callflow.
func (db *DB) ActivateNumber(accountID, e164, callflowID string, actor Actor) (Number, error) {
	e, ok := NormalizeE164(e164)
	if !ok {
		return Number{}, invalid("e164", e164Rule)
	}
	var n Number
	err := db.update(func(t *tx) error {
		var err error
		if n, err = t.number(accountID, e); err != nil {
			return err
		}
		cf, err := t.callflow(accountID, callflowID)
		if err != nil {
			return invalid("callflow_id", "must be a callflow of this account")
		}
		if n.CallflowID == cf.ID {
			return nil
		}
		if n.Status == NumberActive {
			return &RuleError{Code: "number_active", Kind: KindConflict,
				Message: fmt.Sprintf("number %s is already active on callflow %s; deactivate it or reassign that callflow first", e, n.CallflowID),
				Detail:  map[string]any{"callflow_id": n.CallflowID}}
		}
		if err := t.routeNumber(&n, &cf, actor); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "number.activate", TargetKind: "number", TargetID: e, TargetLabel: e,
			Detail: map[string]string{"callflow_id": cf.ID, "callflow": cf.Label()}})
	})
	if err != nil {
		return Number{}, fmt.Errorf("activate number %s: %w", e, err)
	}
	return n, nil
}

// DeactivateNumber makes a number AVAILABLE for reuse (docs/account-model.md
// rule 10); it stays on
// the account. Deactivating an AVAILABLE number is a no-op.
func (db *DB) DeactivateNumber(accountID, e164 string, actor Actor) (Number, error) {
	e, ok := NormalizeE164(e164)
	if !ok {
		return Number{}, invalid("e164", e164Rule)
	}
	var n Number
	err := db.update(func(t *tx) error {
		var err error
		if n, err = t.number(accountID, e); err != nil {
			return err
		}
		if n.Status == NumberAvailable {
			return nil
		}
		return t.deactivateNumber(&n, actor)
	})
	if err != nil {
		return Number{}, fmt.Errorf("deactivate number %s: %w", e, err)
	}
	return n, nil
}

func (t *tx) deactivateNumber(n *Number, actor Actor) error {
	from := n.CallflowID
	if err := t.routeNumber(n, nil, actor); err != nil {
		return err
	}
	return t.audit(AuditEntry{AccountID: n.AccountID, Actor: actor, Action: "number.deactivate", TargetKind: "number", TargetID: n.E164, TargetLabel: n.E164,
		Detail: map[string]string{"callflow_id": from}})
}
