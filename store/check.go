package store

import (
	"errors"
	"fmt"
	"strings"
)

// Check verifies the data file and the references between records: bbolt's
// own page consistency, every binding's user exists, every extension index
// entry points at a record that holds that extension, every user has a sealed
// password that opens for that user, every licence holder exists, every
// provisioning secret opens for its account. Devices and the account model
// (queues, groups, numbers, callflows) add theirs via checkHooks. It returns all problems found, joined.
//
// Problems that mean the file itself is damaged (bbolt's page check, a
// record that cannot be decoded, a panic while reading) match ErrDamaged;
// dangling references do not.
func (db *DB) Check() error {
	var problems []error
	if err := guard("check", func() error { return db.check(&problems) }); err != nil {
		problems = append(problems, err)
	}
	return errors.Join(problems...)
}

func (db *DB) check(out *[]error) error {
	var problems []error
	defer func() { *out = problems }()
	// A writable transaction, rolled back: bbolt's page check reads the
	// shared freelist, which concurrent commits change under a read-only
	// transaction (false "reachable freed" reports). Holding the writer lock
	// makes the check exact; it writes nothing.
	run := db.exclusive
	if db.bolt != nil && db.bolt.IsReadOnly() {
		run = db.view // OpenReadOnly: no writer can run meanwhile anyway
	}
	err := run(func(t *tx) error {
		if bt, ok := t.kvTx.(boltTx); ok { // the page check is bbolt's alone
			for err := range bt.Check() {
				problems = append(problems, damaged("bbolt: %v", err))
			}
		}
		users := map[string]User{}
		if err := t.Bucket(bUsers).ForEach(func(k, v []byte) error {
			var u User
			if err := decode(v, &u); err != nil {
				problems = append(problems, fmt.Errorf("user %s: %w", k, err))
				return nil
			}
			users[string(k)] = u
			if sealed := t.Bucket(bSecrets).Get(k); sealed == nil {
				problems = append(problems, fmt.Errorf("user %s has no SIP password", k))
			} else if _, err := t.checkSealed(sealed, sipPasswordAD(u.AccountID, u.ID)); err != nil {
				problems = append(problems, damaged("user %s: SIP password: %v", k, err))
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
		if err := t.Bucket(bProvisioning).ForEach(func(k, v []byte) error {
			var rec provisioningRecord
			if err := decode(v, &rec); err != nil {
				problems = append(problems, fmt.Errorf("provisioning of %s: %w", k, err))
				return nil
			}
			acct := string(k)
			for _, f := range []struct {
				sealed []byte
				ad     []byte
			}{{rec.KeySealed, provKeyAD(acct)}, {rec.PasswordSealed, provPasswordAD(acct)}, {rec.PrevKeySealed, provKeyAD(acct)}, {rec.PrevPasswordSealed, provPasswordAD(acct)}} {
				if len(f.sealed) == 0 {
					continue
				}
				if _, err := t.checkSealed(f.sealed, f.ad); err != nil {
					problems = append(problems, damaged("provisioning of %s: %v", acct, err))
					break
				}
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
	return err
}

// checkHooks let the other nouns verify their references; userExists answers
// whether acct/id is a user.
var checkHooks = []func(t *tx, userExists func(acct, id string) bool) []error{checkDevices, checkAccountModel}

// checkSealed opens a sealed secret for Check. Without a key (a read-only
// open of a directory whose secret.key is missing, reported on its own by
// KeyMissing) there is nothing to try; a file no build with associated data
// has opened yet still holds the older format (converted at its next start).
func (t *tx) checkSealed(sealed, ad []byte) (string, error) {
	switch {
	case t.db.aead == nil:
		return "", nil
	case t.Bucket(bMeta).Get([]byte(metaSealedFormat)) == nil:
		return t.db.openLegacy(sealed)
	}
	return t.db.open(sealed, ad)
}
