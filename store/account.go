package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Account is one customer: its SIP domain (which is also the digest realm)
// and its operator (auto-receptionist) extension.
type Account struct {
	ID                string    `json:"id"`
	SIPDomain         string    `json:"sip_domain"`
	OperatorExtension string    `json:"operator_extension"`
	CreatedAt         time.Time `json:"created_at"`
}

// Seats counts an account's licences: Total is every licence, Assigned those
// held by a user, Free the rest.
type Seats struct {
	Total, Assigned, Free int
}

// AccountPatch lists the fields of an account that may change; nil leaves one as it is.
type AccountPatch struct {
	SIPDomain         *string
	OperatorExtension *string // "" clears it
}

// DefaultAccount is the id of the account created at first start.
const DefaultAccount = "default"

func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == ':' || r == '[' || r == ']') {
			return false
		}
	}
	return true
}

// CreateAccount creates an account with the given id and SIP domain.
// ErrExists if the id or the domain is taken.
func (db *DB) CreateAccount(id, domain string, actor Actor) (Account, error) {
	domain = strings.ToLower(strings.TrimSpace(domain))
	if !validID(id) {
		return Account{}, invalid("id", "must be 1-64 letters, digits, '-', '_' or '.'")
	}
	if !validDomain(domain) {
		return Account{}, invalid("sip_domain", "must be a host name or IP address")
	}
	var a Account
	err := db.update(func(t *tx) error {
		var err error
		a, err = t.createAccount(id, domain)
		if err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: id, Actor: actor, Action: "account.create", TargetKind: "account", TargetID: id, TargetLabel: domain})
	})
	if err != nil {
		return Account{}, fmt.Errorf("create account %s: %w", id, err)
	}
	return a, nil
}

func (t *tx) createAccount(id, domain string) (Account, error) {
	if t.Bucket(bAccounts).Get([]byte(id)) != nil {
		return Account{}, ErrExists
	}
	if t.Bucket(bDomains).Get([]byte(domain)) != nil {
		return Account{}, fmt.Errorf("sip_domain %s: %w", domain, ErrExists)
	}
	a := Account{ID: id, SIPDomain: domain, CreatedAt: t.now}
	if err := put(t.Bucket(bAccounts), id, a); err != nil {
		return Account{}, err
	}
	t.accountChanged(id)
	if err := t.Bucket(bDomains).Put([]byte(domain), []byte(id)); err != nil {
		return Account{}, err
	}
	if err := t.initAccount(a); err != nil {
		return Account{}, err
	}
	return a, nil
}

// accountInit hooks let other nouns (provisioning keys, …) set up a new account
// in the transaction that creates it.
var accountInit []func(t *tx, a Account) error

func (t *tx) initAccount(a Account) error {
	for _, fn := range accountInit {
		if err := fn(t, a); err != nil {
			return err
		}
	}
	return nil
}

// EnsureAccount returns the account id, creating it with domain if missing.
// created reports whether it was made now.
func (db *DB) EnsureAccount(id, domain string) (a Account, created bool, err error) {
	a, err = db.Account(id)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return a, false, err
	}
	a, err = db.CreateAccount(id, domain, System)
	return a, err == nil, err
}

// Account returns one account.
func (db *DB) Account(id string) (Account, error) {
	var a Account
	err := db.view(func(t *tx) error {
		var err error
		a, err = t.account(id)
		return err
	})
	return a, err
}

func (t *tx) account(id string) (Account, error) {
	var a Account
	if err := get(t.Bucket(bAccounts), id, &a); err != nil {
		return Account{}, fmt.Errorf("account %s: %w", id, err)
	}
	return a, nil
}

// AccountByDomain finds the account whose sip_domain is domain (case-insensitive).
func (db *DB) AccountByDomain(domain string) (Account, error) {
	var a Account
	err := db.view(func(t *tx) error {
		id := t.Bucket(bDomains).Get([]byte(strings.ToLower(domain)))
		if id == nil {
			return fmt.Errorf("domain %s: %w", domain, ErrNotFound)
		}
		var err error
		a, err = t.account(string(id))
		return err
	})
	return a, err
}

// Accounts lists every account, by id.
func (db *DB) Accounts() ([]Account, error) {
	var out []Account
	err := db.view(func(t *tx) error {
		return t.Bucket(bAccounts).ForEach(func(k, v []byte) error {
			var a Account
			if err := decode(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	return out, err
}

// UpdateAccount changes the account's SIP domain or operator extension. The
// operator extension must belong to an existing, enabled user
// (docs/account-model.md rule 5).
func (db *DB) UpdateAccount(id string, p AccountPatch, actor Actor) (Account, error) {
	var a Account
	err := db.update(func(t *tx) error {
		var err error
		if a, err = t.account(id); err != nil {
			return err
		}
		detail := map[string]string{}
		if p.SIPDomain != nil {
			d := strings.ToLower(strings.TrimSpace(*p.SIPDomain))
			if !validDomain(d) {
				return invalid("sip_domain", "must be a host name or IP address")
			}
			if d != a.SIPDomain {
				if t.Bucket(bDomains).Get([]byte(d)) != nil {
					return fmt.Errorf("sip_domain %s: %w", d, ErrExists)
				}
				if err := t.Bucket(bDomains).Delete([]byte(a.SIPDomain)); err != nil {
					return err
				}
				if err := t.Bucket(bDomains).Put([]byte(d), []byte(id)); err != nil {
					return err
				}
				detail["sip_domain"] = d
				a.SIPDomain = d
			}
		}
		if p.OperatorExtension != nil {
			ext := strings.TrimSpace(*p.OperatorExtension)
			if ext != "" {
				u, err := t.userByExtension(id, ext)
				if err != nil {
					return invalid("operator_extension", "must be the extension of an existing user")
				}
				if u.Status != StatusEnabled {
					return invalid("operator_extension", "must be the extension of an enabled user")
				}
			}
			a.OperatorExtension = ext
			detail["operator_extension"] = ext
		}
		if err := put(t.Bucket(bAccounts), id, a); err != nil {
			return err
		}
		t.accountChanged(id)
		return t.audit(AuditEntry{AccountID: id, Actor: actor, Action: "account.update", TargetKind: "account", TargetID: id, TargetLabel: a.SIPDomain, Detail: detail})
	})
	if err != nil {
		return Account{}, fmt.Errorf("update account %s: %w", id, err)
	}
	return a, nil
}

// Seats counts the account's licences.
func (db *DB) Seats(accountID string) (Seats, error) {
	var s Seats
	err := db.view(func(t *tx) error {
		if _, err := t.account(accountID); err != nil {
			return err
		}
		return each(t.Bucket(bLicences), accountID, func(_, v []byte) error {
			var l Licence
			if err := decode(v, &l); err != nil {
				return err
			}
			s.Total++
			if l.UserID != "" {
				s.Assigned++
			}
			return nil
		})
	})
	s.Free = s.Total - s.Assigned
	return s, err
}
