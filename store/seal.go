package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// Sealed secrets (SIP passwords, provisioning keys and passwords) are
// AES-256-GCM with the data directory's secret.key. Each blob is bound to
// the record it belongs to through GCM's additional data (see secretAD), so
// a blob copied into another record, another account's or another user's,
// does not open.
//
// Format 2 (this build writes only this one):
//
//	0x02 || nonce (12 bytes) || ciphertext+tag
//
// Format 1 (before associated data) was nonce || ciphertext+tag without a
// version byte and without additional data. Open rewrites every format-1
// blob into format 2 once (sealMigrations) and then records meta
// "sealed_format" = 2; from then on only format 2 is read.
const sealV2 = 2

// secretAD is the associated data of a sealed secret: what kind of record
// it belongs to and that record's account and id. Kinds used so far:
//
//	"sip_password"          acct, user id
//	"provisioning_key"      acct, acct
//	"provisioning_password" acct, acct
//	"device_password"       acct, mac
//	"key_check"             "", ""   (meta: proves secret.key belongs to this file)
//
// Ids never contain NUL (validID), so the parts cannot run into each other.
func secretAD(kind, acct, id string) []byte {
	return []byte("dialtone/sealed\x00" + kind + "\x00" + acct + "\x00" + id)
}

// errSecret is what every failed open says, whatever the cause (wrong key,
// a blob moved from another record, damage): never the secret itself.
var errSecret = errors.New("cannot decrypt secret: it was sealed for another record or with another secret.key")

// seal encrypts plain for the record named by ad (secretAD). An empty ad is
// refused: every secret belongs to a record.
func (db *DB) seal(plain string, ad []byte) ([]byte, error) {
	if len(ad) == 0 {
		return nil, errors.New("seal: no associated data")
	}
	n := db.aead.NonceSize()
	out := make([]byte, 1+n, 1+n+len(plain)+db.aead.Overhead())
	out[0] = sealV2
	if _, err := rand.Read(out[1 : 1+n]); err != nil {
		return nil, err
	}
	return db.aead.Seal(out, out[1:1+n], []byte(plain), ad), nil
}

// open decrypts a format-2 blob sealed for ad. Any other blob, a blob sealed
// for another record, or a wrong key is errSecret; it never panics.
func (db *DB) open(sealed, ad []byte) (string, error) {
	n := db.aead.NonceSize()
	if len(sealed) < 1+n+db.aead.Overhead() || sealed[0] != sealV2 {
		return "", errSecret
	}
	plain, err := db.aead.Open(nil, sealed[1:1+n], sealed[1+n:], ad)
	if err != nil {
		return "", errSecret
	}
	return string(plain), nil
}

// openLegacy decrypts a format-1 blob (no version byte, no associated data).
// Only the migration at Open calls it.
func (db *DB) openLegacy(sealed []byte) (string, error) {
	n := db.aead.NonceSize()
	if len(sealed) < n+db.aead.Overhead() {
		return "", errSecret
	}
	plain, err := db.aead.Open(nil, sealed[:n], sealed[n:], nil)
	if err != nil {
		return "", errSecret
	}
	return string(plain), nil
}

// sealLegacy writes format 1; tests use it to build an old data file.
func (db *DB) sealLegacy(plain string) ([]byte, error) {
	nonce := make([]byte, db.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return db.aead.Seal(nonce, nonce, []byte(plain), nil), nil
}

const (
	metaSealedFormat = "sealed_format"
	metaKeyCheck     = "key_check"
	keyCheckPlain    = "dialtone secret.key check"
)

// errWrongKey: secret.key does not decrypt what this data file holds.
var errWrongKey error = &damageError{msg: "secret.key does not belong to dialtone.db (it cannot decrypt the sealed secrets): put back the secret.key that was kept with this database"}

// prepareSecrets runs inside Open's initialising transaction: it checks that
// secret.key belongs to this file (meta key_check), and rewrites format-1
// blobs into format 2 the first time a data file is opened by this build.
func (db *DB) prepareSecrets(t *tx) error {
	meta := t.Bucket(bMeta)
	if kc := meta.Get([]byte(metaKeyCheck)); kc != nil {
		if plain, err := db.open(kc, secretAD("key_check", "", "")); err != nil || plain != keyCheckPlain {
			return errWrongKey
		}
	}
	if f := meta.Get([]byte(metaSealedFormat)); f == nil {
		for _, m := range sealMigrations {
			if err := m(t); err != nil {
				return err
			}
		}
		if err := meta.Put([]byte(metaSealedFormat), []byte{'0' + sealV2}); err != nil {
			return err
		}
	} else if string(f) != string([]byte{'0' + sealV2}) {
		return fmt.Errorf("sealed secrets have format %s, this build reads %d (written by a newer dialtone?)", f, sealV2)
	}
	if meta.Get([]byte(metaKeyCheck)) == nil {
		kc, err := db.seal(keyCheckPlain, secretAD("key_check", "", ""))
		if err != nil {
			return err
		}
		return meta.Put([]byte(metaKeyCheck), kc)
	}
	return nil
}

// reseal turns a format-1 blob into format 2 for ad. A blob the key cannot
// open means the key is not this file's.
func (t *tx) reseal(old, ad []byte, what string) ([]byte, error) {
	plain, err := t.db.openLegacy(old)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, errWrongKey)
	}
	return t.db.seal(plain, ad)
}

// sealMigrations rewrite each kind of format-1 blob (see prepareSecrets).
var sealMigrations = []func(t *tx) error{migrateSIPSecrets, migrateProvisioningSecrets}

func migrateSIPSecrets(t *tx) error {
	b := t.Bucket(bSecrets)
	type kv struct{ k, v []byte }
	var out []kv
	if err := b.ForEach(func(key, v []byte) error {
		acct, user, ok := strings.Cut(string(key), "/")
		if !ok {
			return fmt.Errorf("sealed password under malformed key %q", key)
		}
		nv, err := t.reseal(v, secretAD("sip_password", acct, user), "SIP password of "+user)
		if err != nil {
			return err
		}
		out = append(out, kv{append([]byte(nil), key...), nv})
		return nil
	}); err != nil {
		return err
	}
	for _, e := range out {
		if err := b.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

func migrateProvisioningSecrets(t *tx) error {
	b := t.Bucket(bProvisioning)
	var accts []string
	if err := b.ForEach(func(key, _ []byte) error { accts = append(accts, string(key)); return nil }); err != nil {
		return err
	}
	for _, acct := range accts {
		var rec provisioningRecord
		if err := get(b, acct, &rec); err != nil {
			return fmt.Errorf("provisioning of %s: %w", acct, err)
		}
		keyAD, pwAD := provKeyAD(acct), provPasswordAD(acct)
		for _, f := range []struct {
			p  *[]byte
			ad []byte
		}{{&rec.KeySealed, keyAD}, {&rec.PasswordSealed, pwAD}, {&rec.PrevKeySealed, keyAD}, {&rec.PrevPasswordSealed, pwAD}} {
			if len(*f.p) == 0 {
				continue
			}
			nv, err := t.reseal(*f.p, f.ad, "provisioning secrets of "+acct)
			if err != nil {
				return err
			}
			*f.p = nv
		}
		if err := put(b, acct, rec); err != nil {
			return err
		}
	}
	return nil
}

// holdsSecrets reports whether the data file has anything sealed (or was
// ever opened with a key), so a missing secret.key must not be replaced.
func holdsSecrets(t kvTx) bool {
	if t.Bucket(bMeta).Get([]byte(metaKeyCheck)) != nil {
		return true
	}
	for _, name := range [][]byte{bSecrets, bProvisioning} {
		if k, _ := t.Bucket(name).Cursor().First(); k != nil {
			return true
		}
	}
	return false
}

// provKeyAD and provPasswordAD bind an account's provisioning URL key and
// password (current and previous) to that account's provisioning record.
func provKeyAD(acct string) []byte      { return secretAD("provisioning_key", acct, acct) }
func provPasswordAD(acct string) []byte { return secretAD("provisioning_password", acct, acct) }
