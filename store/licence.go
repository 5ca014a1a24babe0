package store

import (
	"fmt"
	"strings"
	"time"
)

// Licence is one paid seat of an account. UserID is "" while free.
type Licence struct {
	ID         string    `json:"id"`
	AccountID  string    `json:"account_id"`
	Type       string    `json:"type"`
	UserID     string    `json:"user_id"`
	CreatedAt  time.Time `json:"created_at"`
	AssignedAt time.Time `json:"assigned_at"`
}

// CreateLicence adds a seat (provider only, enforced by the caller).
func (db *DB) CreateLicence(accountID, typ string, actor Actor) (Licence, error) {
	typ = strings.TrimSpace(typ)
	if typ == "" {
		typ = "cloud-phone"
	}
	if !validID(typ) {
		return Licence{}, invalid("type", "must be 1-64 letters, digits, '-', '_' or '.'")
	}
	var l Licence
	err := db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		l = Licence{ID: newID("lic"), AccountID: accountID, Type: typ, CreatedAt: t.now}
		if err := put(t.Bucket(bLicences), k(accountID, l.ID), l); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "licence.create", TargetKind: "licence", TargetID: l.ID, TargetLabel: typ})
	})
	if err != nil {
		return Licence{}, fmt.Errorf("create licence: %w", err)
	}
	return l, nil
}

// Licence returns one licence.
func (db *DB) Licence(accountID, id string) (Licence, error) {
	var l Licence
	err := db.view(func(t *tx) error {
		var err error
		l, err = t.licence(accountID, id)
		return err
	})
	return l, err
}

func (t *tx) licence(acct, id string) (Licence, error) {
	var l Licence
	if err := get(t.Bucket(bLicences), k(acct, id), &l); err != nil {
		return Licence{}, fmt.Errorf("licence %s: %w", id, err)
	}
	return l, nil
}

// Licences lists the account's licences.
func (db *DB) Licences(accountID string) ([]Licence, error) {
	var out []Licence
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		return each(t.Bucket(bLicences), accountID, func(_, v []byte) error {
			var l Licence
			if err := decode(v, &l); err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

func (t *tx) licenceOf(acct, userID string) (Licence, bool, error) {
	var found Licence
	ok := false
	err := each(t.Bucket(bLicences), acct, func(_, v []byte) error {
		var l Licence
		if err := decode(v, &l); err != nil {
			return err
		}
		if l.UserID == userID && !ok {
			found, ok = l, true
		}
		return nil
	})
	return found, ok, err
}

// AssignLicence gives the licence to userID, taking it from whoever held it
// (a reassignment). A user holds at most one licence.
func (db *DB) AssignLicence(accountID, id, userID string, actor Actor) (Licence, error) {
	var l Licence
	err := db.update(func(t *tx) error {
		var err error
		if l, err = t.licence(accountID, id); err != nil {
			return err
		}
		u, err := t.user(accountID, userID)
		if err != nil {
			return invalid("user_id", "must be a user of this account")
		}
		if l.UserID == userID {
			return nil
		}
		if other, ok, err := t.licenceOf(accountID, userID); err != nil {
			return err
		} else if ok {
			return &RuleError{Code: "user_has_licence", Kind: KindConflict,
				Message: fmt.Sprintf("user %s already holds licence %s", u.Extension, other.ID), Detail: map[string]any{"licence_id": other.ID}}
		}
		detail := map[string]string{"to": u.Label()}
		if l.UserID != "" {
			if prev, err := t.user(accountID, l.UserID); err == nil {
				detail["from"] = prev.Label()
			}
		}
		l.UserID, l.AssignedAt = userID, t.now
		if err := put(t.Bucket(bLicences), k(accountID, id), l); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "licence.assign", TargetKind: "licence", TargetID: id, TargetLabel: l.Type, Detail: detail})
	})
	if err != nil {
		return Licence{}, fmt.Errorf("assign licence %s: %w", id, err)
	}
	return l, nil
}

// ReleaseLicence frees the licence; the seat stays on the account
// (docs/account-model.md rule 4).
func (db *DB) ReleaseLicence(accountID, id string, actor Actor) (Licence, error) {
	var l Licence
	err := db.update(func(t *tx) error {
		var err error
		if l, err = t.licence(accountID, id); err != nil {
			return err
		}
		if l.UserID == "" {
			return nil
		}
		detail := map[string]string{}
		if prev, err := t.user(accountID, l.UserID); err == nil {
			detail["from"] = prev.Label()
		}
		l.UserID, l.AssignedAt = "", time.Time{}
		if err := put(t.Bucket(bLicences), k(accountID, id), l); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "licence.release", TargetKind: "licence", TargetID: id, TargetLabel: l.Type, Detail: detail})
	})
	if err != nil {
		return Licence{}, fmt.Errorf("release licence %s: %w", id, err)
	}
	return l, nil
}

// DeleteLicence removes a free licence (provider only); a held one is refused.
func (db *DB) DeleteLicence(accountID, id string, actor Actor) error {
	err := db.update(func(t *tx) error {
		l, err := t.licence(accountID, id)
		if err != nil {
			return err
		}
		if l.UserID != "" {
			return &RuleError{Code: "licence_assigned", Kind: KindConflict, Message: fmt.Sprintf("licence %s is assigned; release it first", id)}
		}
		if err := t.Bucket(bLicences).Delete([]byte(k(accountID, id))); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "licence.delete", TargetKind: "licence", TargetID: id, TargetLabel: l.Type})
	})
	if err != nil {
		return fmt.Errorf("delete licence %s: %w", id, err)
	}
	return nil
}
