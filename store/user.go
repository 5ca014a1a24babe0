package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"
)

// User status words, as the admin API spells them (docs/api.md).
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// User is a phone user: an extension in one account.
type User struct {
	ID        string    `json:"id"`
	AccountID string    `json:"account_id"`
	Extension string    `json:"extension"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Label is how history shows the user: "1002 Ada Lovelace".
func (u User) Label() string {
	if u.Name == "" {
		return u.Extension
	}
	return u.Extension + " " + u.Name
}

// NewUser is what a create needs.
type NewUser struct {
	Extension string
	Name      string
	Email     string
}

// UserPatch lists the fields that may change; nil leaves one as it is.
type UserPatch struct {
	Extension *string
	Name      *string
	Email     *string
}

func validExtension(ext string) bool {
	if len(ext) < 2 || len(ext) > 10 {
		return false
	}
	for _, r := range ext {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

const extensionRule = "must be 2 to 10 digits"

func validateUserFields(p map[string]string, ext, name, email *string) {
	if ext != nil && !validExtension(*ext) {
		p["extension"] = extensionRule
	}
	if name != nil {
		if *name == "" || utf8.RuneCountInString(*name) > 100 || strings.ContainsAny(*name, "\r\n\x00\"<>") {
			p["name"] = "must be 1 to 100 characters, without quotes, angle brackets or line breaks"
		}
	}
	if email != nil && *email != "" {
		a, err := mail.ParseAddress(*email)
		if err != nil || a.Address != *email || len(*email) > 254 {
			p["email"] = "must be an e-mail address like ada@example.test"
		}
	}
}

// CreateUser adds a phone user with a fresh SIP password. The extension must be
// free in the account (users, queues and groups share one numbering plan).
func (db *DB) CreateUser(accountID string, n NewUser, actor Actor) (User, error) {
	n.Extension = strings.TrimSpace(n.Extension)
	n.Name = strings.TrimSpace(n.Name)
	n.Email = strings.TrimSpace(n.Email)
	p := map[string]string{}
	validateUserFields(p, &n.Extension, &n.Name, &n.Email)
	if len(p) > 0 {
		return User{}, &ValidationError{Problems: p}
	}
	password, err := newPassword()
	if err != nil {
		return User{}, err
	}
	id := newID("u")
	sealed, err := db.seal(password, sipPasswordAD(accountID, id))
	if err != nil {
		return User{}, err
	}
	var u User
	err = db.update(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		u = User{ID: id, AccountID: accountID, Extension: n.Extension, Name: n.Name, Email: n.Email,
			Status: StatusEnabled, CreatedAt: t.now, UpdatedAt: t.now}
		if err := t.claimExtension(accountID, u.Extension, "user:"+u.ID); err != nil {
			return err
		}
		if err := put(t.Bucket(bUsers), k(accountID, u.ID), u); err != nil {
			return err
		}
		if err := t.Bucket(bSecrets).Put([]byte(k(accountID, u.ID)), sealed); err != nil {
			return err
		}
		t.identityChanged(accountID, u.ID)
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "user.create", TargetKind: "user", TargetID: u.ID, TargetLabel: u.Label()})
	})
	if err != nil {
		return User{}, fmt.Errorf("create user %s: %w", n.Extension, err)
	}
	return u, nil
}

// claimExtension records owner as the holder of ext, or fails with ErrExists.
func (t *tx) claimExtension(acct, ext, owner string) error {
	b := t.Bucket(bExts)
	if cur := b.Get([]byte(k(acct, ext))); cur != nil && string(cur) != owner {
		return &ValidationError{Problems: map[string]string{"extension": "is already in use by " + strings.SplitN(string(cur), ":", 2)[0] + " " + ext}}
	}
	return b.Put([]byte(k(acct, ext)), []byte(owner))
}

func (t *tx) releaseExtension(acct, ext, owner string) error {
	b := t.Bucket(bExts)
	if cur := b.Get([]byte(k(acct, ext))); cur != nil && string(cur) == owner {
		return b.Delete([]byte(k(acct, ext)))
	}
	return nil
}

// ExtensionOwner says what an extension dials: kind "user", "queue" or
// "group" and its id; ErrNotFound if nothing holds it.
func (db *DB) ExtensionOwner(accountID, ext string) (kind, id string, err error) {
	err = db.view(func(t *tx) error {
		v := t.Bucket(bExts).Get([]byte(k(accountID, ext)))
		if v == nil {
			return ErrNotFound
		}
		kind, id, _ = strings.Cut(string(v), ":")
		return nil
	})
	return kind, id, err
}

// User returns one user of the account.
func (db *DB) User(accountID, id string) (User, error) {
	var u User
	err := db.view(func(t *tx) error {
		var err error
		u, err = t.user(accountID, id)
		return err
	})
	return u, err
}

func (t *tx) user(acct, id string) (User, error) {
	var u User
	if err := get(t.Bucket(bUsers), k(acct, id), &u); err != nil {
		return User{}, fmt.Errorf("user %s: %w", id, err)
	}
	return u, nil
}

// UserByExtension returns the user that holds ext.
func (db *DB) UserByExtension(accountID, ext string) (User, error) {
	var u User
	err := db.view(func(t *tx) error {
		var err error
		u, err = t.userByExtension(accountID, ext)
		return err
	})
	return u, err
}

func (t *tx) userByExtension(acct, ext string) (User, error) {
	v := t.Bucket(bExts).Get([]byte(k(acct, ext)))
	if v == nil || !strings.HasPrefix(string(v), "user:") {
		return User{}, fmt.Errorf("extension %s: %w", ext, ErrNotFound)
	}
	return t.user(acct, strings.TrimPrefix(string(v), "user:"))
}

// Users lists the account's users, ordered by extension.
func (db *DB) Users(accountID string) ([]User, error) {
	var out []User
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		return each(t.Bucket(bExts), accountID, func(_, v []byte) error {
			id, ok := strings.CutPrefix(string(v), "user:")
			if !ok {
				return nil
			}
			u, err := t.user(accountID, id)
			if err != nil {
				return err
			}
			out = append(out, u)
			return nil
		})
	})
	return out, err
}

// UpdateUser changes name, e-mail or extension. The extension cannot change
// while the user has live registrations (their phones registered the old one).
func (db *DB) UpdateUser(accountID, id string, p UserPatch, actor Actor) (User, error) {
	if p.Extension != nil {
		*p.Extension = strings.TrimSpace(*p.Extension)
	}
	if p.Name != nil {
		*p.Name = strings.TrimSpace(*p.Name)
	}
	if p.Email != nil {
		*p.Email = strings.TrimSpace(*p.Email)
	}
	probs := map[string]string{}
	validateUserFields(probs, p.Extension, p.Name, p.Email)
	if len(probs) > 0 {
		return User{}, &ValidationError{Problems: probs}
	}
	var u User
	err := db.update(func(t *tx) error {
		var err error
		if u, err = t.user(accountID, id); err != nil {
			return err
		}
		detail := map[string]string{}
		if p.Extension != nil && *p.Extension != u.Extension {
			if n := len(t.liveBindings(accountID, id)); n > 0 {
				return &RuleError{Code: "user_registered", Kind: KindConflict,
					Message: fmt.Sprintf("user %s has %d live registration(s); sign them out before changing the extension", u.Extension, n)}
			}
			a, _ := t.account(accountID)
			if a.OperatorExtension == u.Extension {
				return &RuleError{Code: "operator_extension", Kind: KindConflict,
					Message: fmt.Sprintf("extension %s is the operator extension; set another operator first", u.Extension)}
			}
			if err := t.claimExtension(accountID, *p.Extension, "user:"+id); err != nil {
				return err
			}
			if err := t.releaseExtension(accountID, u.Extension, "user:"+id); err != nil {
				return err
			}
			detail["extension"] = u.Extension + " → " + *p.Extension
			u.Extension = *p.Extension
		}
		if p.Name != nil {
			u.Name = *p.Name
			detail["name"] = u.Name
		}
		if p.Email != nil {
			u.Email = *p.Email
			detail["email"] = u.Email
		}
		u.UpdatedAt = t.now
		if err := put(t.Bucket(bUsers), k(accountID, id), u); err != nil {
			return err
		}
		t.identityChanged(accountID, id)
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "user.update", TargetKind: "user", TargetID: id, TargetLabel: u.Label(), Detail: detail})
	})
	if err != nil {
		return User{}, fmt.Errorf("update user %s: %w", id, err)
	}
	return u, nil
}

// DisableUser disables a user: they can no longer register, call, or fetch
// provisioning; their existing bindings stay until they expire or are signed
// out. The operator extension cannot be disabled (docs/account-model.md rule 5).
func (db *DB) DisableUser(accountID, id string, actor Actor) (User, error) {
	return db.setStatus(accountID, id, StatusDisabled, actor)
}

// EnableUser restores a disabled user exactly as they were.
func (db *DB) EnableUser(accountID, id string, actor Actor) (User, error) {
	return db.setStatus(accountID, id, StatusEnabled, actor)
}

func (db *DB) setStatus(accountID, id, status string, actor Actor) (User, error) {
	var u User
	err := db.update(func(t *tx) error { return t.setStatus(accountID, id, status, actor, &u) })
	if err != nil {
		return User{}, fmt.Errorf("%s user %s: %w", strings.TrimSuffix(status, "d"), id, err)
	}
	return u, nil
}

// setStatus is EnableUser/DisableUser inside t, leaving the user in *u; the
// offboarding job's disable step runs it in the transaction that records the step.
func (t *tx) setStatus(accountID, id, status string, actor Actor, u *User) error {
	var err error
	if *u, err = t.user(accountID, id); err != nil {
		return err
	}
	if status == StatusDisabled {
		a, err := t.account(accountID)
		if err != nil {
			return err
		}
		if a.OperatorExtension != "" && a.OperatorExtension == u.Extension {
			return &RuleError{Code: "operator_extension", Kind: KindConflict,
				Message: fmt.Sprintf("extension %s is the operator extension and cannot be disabled; set another operator extension first", u.Extension)}
		}
	}
	if u.Status == status {
		return nil
	}
	u.Status = status
	u.UpdatedAt = t.now
	if err := put(t.Bucket(bUsers), k(accountID, id), *u); err != nil {
		return err
	}
	t.identityChanged(accountID, id)
	action := "user.enable"
	if status == StatusDisabled {
		action = "user.disable"
	}
	return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: action, TargetKind: "user", TargetID: id, TargetLabel: u.Label()})
}

// userBlockers lists everything that stops the user's deletion, in the order
// docs/account-model.md gives. Queues and callflows add theirs through
// userBlockerHooks.
func (t *tx) userBlockers(acct string, u User) ([]Blocker, error) {
	var bs []Blocker
	if u.Status == StatusEnabled {
		bs = append(bs, Blocker{Kind: "enabled", Detail: "disable the user first"})
	}
	for _, b := range t.liveBindings(acct, u.ID) {
		bs = append(bs, Blocker{Kind: "registration", Contact: b.Contact, Source: b.Source, Transport: b.Transport,
			UserAgent: b.UserAgent, MAC: b.MAC, ExpiresAt: b.ExpiresAt})
	}
	for _, hook := range userBlockerHooks {
		more, err := hook(t, acct, u)
		if err != nil {
			return nil, err
		}
		bs = append(bs, more...)
	}
	if l, ok, err := t.licenceOf(acct, u.ID); err != nil {
		return nil, err
	} else if ok {
		bs = append(bs, Blocker{Kind: "licence", ID: l.ID, Name: l.Type, Detail: "reassign the licence to another user, or ask the provider to release it"})
	}
	a, err := t.account(acct)
	if err != nil {
		return nil, err
	}
	if a.OperatorExtension != "" && a.OperatorExtension == u.Extension {
		bs = append(bs, Blocker{Kind: "operator", Detail: "set another operator extension first"})
	}
	return bs, nil
}

var userBlockerHooks = []func(t *tx, acct string, u User) ([]Blocker, error){queueUserBlockers, callflowUserBlockers}

// userDeleteHooks let other nouns clean up after a user (group membership,
// device lines, …) inside the delete transaction.
var userDeleteHooks = []func(t *tx, acct string, u User, actor Actor) error{unassignUserLines, groupUserDelete}

// DeletionCheck returns the blockers DeleteUser would report, changing nothing.
func (db *DB) DeletionCheck(accountID, id string) ([]Blocker, error) {
	var bs []Blocker
	err := db.view(func(t *tx) error {
		u, err := t.user(accountID, id)
		if err != nil {
			return err
		}
		bs, err = t.userBlockers(accountID, u)
		return err
	})
	return bs, err
}

// DeleteUser deletes a user if nothing depends on them; otherwise it returns an
// *InUseError listing every blocker at once and changes nothing. The check and
// the delete are one transaction, so no REGISTER can slip in between.
func (db *DB) DeleteUser(accountID, id string, actor Actor) error {
	err := db.update(func(t *tx) error { return t.deleteUser(accountID, id, actor) })
	var inUse *InUseError
	if errors.As(err, &inUse) {
		return err
	}
	if err != nil {
		return fmt.Errorf("delete user %s: %w", id, err)
	}
	return nil
}

// deleteUser is DeleteUser inside t; the offboarding job's delete step runs it
// in the transaction that records the step.
func (t *tx) deleteUser(accountID, id string, actor Actor) error {
	u, err := t.user(accountID, id)
	if err != nil {
		return err
	}
	bs, err := t.userBlockers(accountID, u)
	if err != nil {
		return err
	}
	if len(bs) > 0 {
		return &InUseError{Kind: "user", ID: id, Label: u.Extension, Blockers: bs}
	}
	for _, hook := range userDeleteHooks {
		if err := hook(t, accountID, u, actor); err != nil {
			return err
		}
	}
	// Only expired bindings can remain; remove them with the user.
	if err := t.deleteBindings(accountID, id); err != nil {
		return err
	}
	if err := t.releaseExtension(accountID, u.Extension, "user:"+id); err != nil {
		return err
	}
	if err := t.Bucket(bSecrets).Delete([]byte(k(accountID, id))); err != nil {
		return err
	}
	if err := t.Bucket(bUsers).Delete([]byte(k(accountID, id))); err != nil {
		return err
	}
	t.identityChanged(accountID, id)
	return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "user.delete", TargetKind: "user", TargetID: id, TargetLabel: u.Label(),
		Detail: map[string]string{"extension": u.Extension, "name": u.Name, "email": u.Email}})
}

const passwordAlphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

// newPassword makes a 20-character password (about 115 bits) from letters and
// digits only, so it is safe in a SIP header, a URL and a Yealink .cfg line.
func newPassword() (string, error) {
	const n = 20
	out := make([]byte, n)
	buf := make([]byte, 64)
	for i := 0; i < n; {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// Rejection sampling keeps every character equally likely.
			if int(b) < 256-256%len(passwordAlphabet) && i < n {
				out[i] = passwordAlphabet[int(b)%len(passwordAlphabet)]
				i++
			}
		}
	}
	return string(out), nil
}
