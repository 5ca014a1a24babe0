package store

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	bProvisioning = []byte("provisioning")      // acct → provisioningRecord
	bProvKeys     = []byte("provisioning_keys") // hex sha256(url key) → acct
)

// ProvisioningGrace is how long the previous URL key and password keep working
// after a rotation, so phones can fetch (with the old ones) a config carrying
// the new ones on their next poll. Phones poll at least hourly by default, so
// a day covers phones that were switched off for the night.
const ProvisioningGrace = 24 * time.Hour

// ProvisioningSettings are what an account's phones are configured with: the
// URL key (the secret path segment of /p/{key}/), the bootstrap HTTP
// credential (it opens only devices that have never fetched with their own
// DeviceCredentials, and is never written into a file), and extra config keys
// the account adds to every phone's file.
type ProvisioningSettings struct {
	AccountID string
	Key       string
	Username  string
	Password  string
	RotatedAt time.Time
	// PreviousKey and PreviousPassword stay valid until PreviousUntil.
	PreviousKey      string
	PreviousPassword string
	PreviousUntil    time.Time
	Overrides        map[string]string
}

// String never prints the key or passwords.
func (s ProvisioningSettings) String() string {
	return fmt.Sprintf("ProvisioningSettings{Account:%s Username:%s Key:[redacted] Password:[redacted]}", s.AccountID, s.Username)
}

// GoString hides secrets from %#v too.
func (s ProvisioningSettings) GoString() string { return s.String() }

// ProvisioningAccess is the result of looking up a URL key: the account and
// the passwords that authenticate a fetch right now (current, and previous
// while within the grace period).
type ProvisioningAccess struct {
	Account   Account
	Username  string
	Passwords []string
	Settings  ProvisioningSettings
}

// String never prints the passwords.
func (a ProvisioningAccess) String() string {
	return fmt.Sprintf("ProvisioningAccess{Account:%s Username:%s}", a.Account.ID, a.Username)
}

// GoString hides secrets from %#v too.
func (a ProvisioningAccess) GoString() string { return a.String() }

type provisioningRecord struct {
	KeySealed          []byte            `json:"key"`
	KeyHash            string            `json:"key_hash"`
	Username           string            `json:"username"`
	PasswordSealed     []byte            `json:"password"`
	RotatedAt          time.Time         `json:"rotated_at"`
	PrevKeySealed      []byte            `json:"prev_key,omitempty"`
	PrevKeyHash        string            `json:"prev_key_hash,omitempty"`
	PrevPasswordSealed []byte            `json:"prev_password,omitempty"`
	PrevUntil          time.Time         `json:"prev_until,omitzero"`
	Overrides          map[string]string `json:"overrides,omitempty"`
}

// newURLKey returns 32 URL-safe characters carrying 192 random bits.
func newURLKey() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// newProvSecrets draws and seals a fresh key and password outside any
// transaction (sealing is the slow part).
func (db *DB) newProvSecrets(acct string) (key string, keySealed, pwSealed []byte, err error) {
	if key, err = newURLKey(); err != nil {
		return
	}
	password, err := newPassword()
	if err != nil {
		return
	}
	if keySealed, err = db.seal(key, provKeyAD(acct)); err != nil {
		return
	}
	pwSealed, err = db.seal(password, provPasswordAD(acct))
	return
}

// ProvisioningSettings returns the account's provisioning key and credentials,
// creating them on first use, and audits the read (it shows secrets).
func (db *DB) ProvisioningSettings(accountID string, actor Actor) (ProvisioningSettings, error) {
	key, ks, ps, err := db.newProvSecrets(accountID)
	if err != nil {
		return ProvisioningSettings{}, err
	}
	var s ProvisioningSettings
	err = db.update(func(t *tx) error {
		rec, found, err := t.provisioningRecord(accountID)
		switch {
		case err != nil:
			return err
		case !found:
			rec = provisioningRecord{KeySealed: ks, KeyHash: keyHash(key), Username: newID("prov"), PasswordSealed: ps, RotatedAt: t.now}
			if err := t.putProvisioning(accountID, rec); err != nil {
				return err
			}
			if err := t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "provisioning.create", TargetKind: "account", TargetID: accountID, TargetLabel: accountID}); err != nil {
				return err
			}
		}
		if s, err = t.openProvisioning(accountID, rec); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "provisioning.read", TargetKind: "account", TargetID: accountID, TargetLabel: accountID})
	})
	if err != nil {
		return ProvisioningSettings{}, fmt.Errorf("provisioning settings of %s: %w", accountID, err)
	}
	return s, nil
}

func (t *tx) putProvisioning(acct string, rec provisioningRecord) error {
	if err := put(t.Bucket(bProvisioning), acct, rec); err != nil {
		return err
	}
	return t.Bucket(bProvKeys).Put([]byte(rec.KeyHash), []byte(acct))
}

func (t *tx) openProvisioning(acct string, rec provisioningRecord) (ProvisioningSettings, error) {
	s := ProvisioningSettings{AccountID: acct, Username: rec.Username, RotatedAt: rec.RotatedAt, Overrides: map[string]string{}}
	var err error
	if s.Key, err = t.db.open(rec.KeySealed, provKeyAD(acct)); err != nil {
		return s, err
	}
	if s.Password, err = t.db.open(rec.PasswordSealed, provPasswordAD(acct)); err != nil {
		return s, err
	}
	if rec.PrevUntil.After(t.now) {
		s.PreviousUntil = rec.PrevUntil
		if s.PreviousKey, err = t.db.open(rec.PrevKeySealed, provKeyAD(acct)); err != nil {
			return s, err
		}
		if s.PreviousPassword, err = t.db.open(rec.PrevPasswordSealed, provPasswordAD(acct)); err != nil {
			return s, err
		}
	}
	for k, v := range rec.Overrides {
		s.Overrides[k] = v
	}
	return s, nil
}

// AccountByProvisioningKey resolves a URL key (current, or previous within
// ProvisioningGrace) to its account and the passwords that are valid now.
// ErrNotFound for any other key. Not audited (the provisioning hot path).
func (db *DB) AccountByProvisioningKey(key string) (ProvisioningAccess, error) {
	var a ProvisioningAccess
	if key == "" || len(key) > 256 {
		return a, fmt.Errorf("provisioning key: %w", ErrNotFound)
	}
	h := keyHash(key)
	err := db.view(func(t *tx) error {
		acct := t.Bucket(bProvKeys).Get([]byte(h))
		if acct == nil {
			return fmt.Errorf("provisioning key: %w", ErrNotFound)
		}
		var rec provisioningRecord
		if err := get(t.Bucket(bProvisioning), string(acct), &rec); err != nil {
			return fmt.Errorf("provisioning key: %w", err)
		}
		current := subtle.ConstantTimeCompare([]byte(rec.KeyHash), []byte(h)) == 1
		previous := rec.PrevKeyHash == h && rec.PrevUntil.After(t.now)
		if !current && !previous {
			return fmt.Errorf("provisioning key: %w", ErrNotFound)
		}
		s, err := t.openProvisioning(string(acct), rec)
		if err != nil {
			return err
		}
		if a.Account, err = t.account(string(acct)); err != nil {
			return err
		}
		a.Username, a.Settings = rec.Username, s
		a.Passwords = []string{s.Password}
		if s.PreviousPassword != "" {
			a.Passwords = append(a.Passwords, s.PreviousPassword)
		}
		return nil
	})
	return a, err
}

// RotateProvisioning gives the account a new URL key and password. The old
// ones keep working for ProvisioningGrace: phones that poll within that time
// pick up the new password from their config, and the operator points DHCP
// option 66 / RPS at the new URL (the key is never written into a config).
func (db *DB) RotateProvisioning(accountID string, actor Actor) (ProvisioningSettings, error) {
	key, ks, ps, err := db.newProvSecrets(accountID)
	if err != nil {
		return ProvisioningSettings{}, err
	}
	var s ProvisioningSettings
	err = db.update(func(t *tx) error {
		rec, found, err := t.provisioningRecord(accountID)
		switch {
		case err != nil:
			return err
		case !found:
			rec = provisioningRecord{Username: newID("prov")}
		default:
			if rec.PrevKeyHash != "" {
				if err := t.Bucket(bProvKeys).Delete([]byte(rec.PrevKeyHash)); err != nil {
					return err
				}
			}
			rec.PrevKeySealed, rec.PrevKeyHash, rec.PrevPasswordSealed = rec.KeySealed, rec.KeyHash, rec.PasswordSealed
			rec.PrevUntil = t.now.Add(ProvisioningGrace)
		}
		rec.KeySealed, rec.KeyHash, rec.PasswordSealed, rec.RotatedAt = ks, keyHash(key), ps, t.now
		if err := t.putProvisioning(accountID, rec); err != nil {
			return err
		}
		if s, err = t.openProvisioning(accountID, rec); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "provisioning.rotate", TargetKind: "account", TargetID: accountID, TargetLabel: accountID,
			Detail: map[string]string{"previous_valid_until": rec.PrevUntil.UTC().Format(time.RFC3339)}})
	})
	if err != nil {
		return ProvisioningSettings{}, fmt.Errorf("rotate provisioning of %s: %w", accountID, err)
	}
	return s, nil
}

var overrideKeyRE = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,127}$`)

// reservedOverride matches keys dialtone owns: the account identity keys it
// must be able to clear (a disabled user's password must never survive in an
// override) and the provisioning server settings that keep phones reachable.
var reservedOverride = regexp.MustCompile(`^(account\.\d+\.(enable|label|display_name|auth_name|user_name|password|sip_server\..*|outbound_proxy.*)|static\.auto_provision\.(server\..*|user_agent_mac\.enable))$`)

// ValidateOverrides checks extra config keys: key syntax ^[a-z][a-z0-9_.-]*$
// (at most 128), values at most 1024 bytes of UTF-8 without line breaks or
// NUL, at most 500 keys, and none of the keys dialtone itself controls.
func ValidateOverrides(o map[string]string) error {
	if len(o) > 500 {
		return invalid("overrides", "at most 500 keys")
	}
	keys := make([]string, 0, len(o))
	for key := range o {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		v := o[key]
		switch {
		case !overrideKeyRE.MatchString(key) || strings.Contains(key, ".."):
			return invalid("overrides", fmt.Sprintf("key %q must be lower-case letters, digits, '_', '-' and '.' (at most 128)", key))
		case reservedOverride.MatchString(key):
			return invalid("overrides", fmt.Sprintf("key %q is managed by dialtone and cannot be overridden", key))
		case len(v) > 1024 || !utf8.ValidString(v) || strings.ContainsAny(v, "\r\n\x00"):
			return invalid("overrides", fmt.Sprintf("value of %q must be at most 1024 bytes of text without line breaks", key))
		}
	}
	return nil
}

// SetProvisioningOverrides replaces the account's extra config keys, which
// are appended (sorted by key) to every phone's MAC file, after the keys
// dialtone renders, so they win for the keys they name.
func (db *DB) SetProvisioningOverrides(accountID string, o map[string]string, actor Actor) (map[string]string, error) {
	if err := ValidateOverrides(o); err != nil {
		return nil, err
	}
	key, ks, ps, err := db.newProvSecrets(accountID)
	if err != nil {
		return nil, err
	}
	clean := make(map[string]string, len(o))
	for k, v := range o {
		clean[k] = strings.TrimSpace(v)
	}
	err = db.update(func(t *tx) error {
		rec, found, err := t.provisioningRecord(accountID)
		switch {
		case err != nil:
			return err
		case !found:
			rec = provisioningRecord{KeySealed: ks, KeyHash: keyHash(key), Username: newID("prov"), PasswordSealed: ps, RotatedAt: t.now}
		case err != nil:
			return err
		}
		rec.Overrides = clean
		if err := t.putProvisioning(accountID, rec); err != nil {
			return err
		}
		keys := make([]string, 0, len(clean))
		for k := range clean {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "provisioning.overrides", TargetKind: "account", TargetID: accountID, TargetLabel: accountID,
			Detail: map[string]string{"keys": strings.Join(keys, ",")}})
	})
	if err != nil {
		return nil, fmt.Errorf("set provisioning overrides of %s: %w", accountID, err)
	}
	return clean, nil
}

// provisioningRecord loads the account's provisioning record; found is false
// (and err nil) when the account exists but has none yet.
func (t *tx) provisioningRecord(accountID string) (rec provisioningRecord, found bool, err error) {
	if _, err := t.account(accountID); err != nil {
		return rec, false, err
	}
	err = get(t.Bucket(bProvisioning), accountID, &rec)
	if errors.Is(err, ErrNotFound) {
		return provisioningRecord{}, false, nil
	}
	return rec, err == nil, err
}
