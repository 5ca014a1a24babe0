package store

import (
	"errors"
	"fmt"
	"strings"
)

// Check verifies the data file and the references between records: bbolt's
// own page consistency, every binding's user exists, every extension index
// entry points at a record that holds that extension, every user has a sealed
// password, every licence holder exists. Devices and the account model
// (queues, groups, numbers, callflows) add theirs via checkHooks. It returns all problems found, joined.
func (db *DB) Check() error {
	var problems []error
	// A writable transaction, rolled back: bbolt's page check reads the
	// shared freelist, which concurrent commits change under a read-only
	// transaction (false "reachable freed" reports). Holding the writer lock
	// makes the check exact; it writes nothing.
	err := db.exclusive(func(t *tx) error {
		for err := range t.Tx.Check() {
			problems = append(problems, fmt.Errorf("bbolt: %w", err))
		}
		users := map[string]User{}
		if err := t.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := decode(v, &u); err != nil {
				problems = append(problems, fmt.Errorf("user %s: %w", k, err))
				return nil
			}
			users[string(k)] = u
			if t.Bucket(bSecrets).Get(k) == nil {
				problems = append(problems, fmt.Errorf("user %s has no SIP password", k))
			}
			owner := t.Bucket(bExts).Get([]byte(u.AccountID + "/" + u.Extension))
			if string(owner) != "user:"+u.ID {
				problems = append(problems, fmt.Errorf("user %s: extension %s is indexed to %q", k, u.Extension, owner))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := t.Bucket(bExts).ForEach(func(k, v []byte) error {
			acct, _, _ := strings.Cut(string(k), "/")
			kind, id, _ := strings.Cut(string(v), ":")
			if kind == "user" {
				if _, ok := users[acct+"/"+id]; !ok {
					problems = append(problems, fmt.Errorf("extension %s points at missing user %s", k, id))
				}
			}
			return nil
		}); err != nil {
			return err
		}
		if err := t.Bucket(bBindings).ForEach(func(k, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				problems = append(problems, fmt.Errorf("binding %s: %w", k, err))
				return nil
			}
			if _, ok := users[b.AccountID+"/"+b.UserID]; !ok {
				problems = append(problems, fmt.Errorf("binding %s belongs to missing user %s", b.Contact, b.UserID))
			}
			return nil
		}); err != nil {
			return err
		}
		if err := t.Bucket(bLicences).ForEach(func(k, v []byte) error {
			var l Licence
			if err := decode(v, &l); err != nil {
				problems = append(problems, fmt.Errorf("licence %s: %w", k, err))
				return nil
			}
			if _, ok := users[l.AccountID+"/"+l.UserID]; l.UserID != "" && !ok {
				problems = append(problems, fmt.Errorf("licence %s held by missing user %s", l.ID, l.UserID))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, hook := range checkHooks {
			problems = append(problems, hook(t, func(acct, id string) bool { _, ok := users[acct+"/"+id]; return ok })...)
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

// checkHooks let the other nouns verify their references; userExists answers
// whether acct/id is a user.
var checkHooks = []func(t *tx, userExists func(acct, id string) bool) []error{checkDevices, checkAccountModel}
