package store

import (
	"fmt"
	"sync"
)

// SIPCredentials are what a phone needs to register as a user. Username is the
// extension; Realm and Domain are the account's sip_domain.
type SIPCredentials struct {
	Username string
	Password string
	Realm    string
	Domain   string
}

// String never prints the password, so a credential cannot leak through a log line.
func (c SIPCredentials) String() string {
	return fmt.Sprintf("SIPCredentials{Username:%s Realm:%s Password:[redacted]}", c.Username, c.Realm)
}

// GoString hides the password from %#v too.
func (c SIPCredentials) GoString() string { return c.String() }

// SIPCredentials returns a user's credentials and records the read in the
// audit log (each read of a password is audited).
func (db *DB) SIPCredentials(accountID, userID string, actor Actor) (SIPCredentials, error) {
	var c SIPCredentials
	err := db.update(func(t *tx) error {
		var err error
		var u User
		if c, u, err = t.credentials(accountID, userID); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "sip_credentials.read", TargetKind: "user", TargetID: userID, TargetLabel: u.Label()})
	})
	if err != nil {
		return SIPCredentials{}, fmt.Errorf("sip credentials of %s: %w", userID, err)
	}
	return c, nil
}

func (t *tx) credentials(acct, userID string) (SIPCredentials, User, error) {
	u, err := t.user(acct, userID)
	if err != nil {
		return SIPCredentials{}, User{}, err
	}
	a, err := t.account(acct)
	if err != nil {
		return SIPCredentials{}, User{}, err
	}
	sealed := t.Bucket(bSecrets).Get([]byte(k(acct, userID)))
	if sealed == nil {
		return SIPCredentials{}, User{}, fmt.Errorf("password of %s: %w", userID, ErrNotFound)
	}
	pw, err := t.db.open(sealed, sipPasswordAD(acct, userID))
	if err != nil {
		return SIPCredentials{}, User{}, fmt.Errorf("password of %s: %w", userID, err)
	}
	return SIPCredentials{Username: u.Extension, Password: pw, Realm: a.SIPDomain, Domain: a.SIPDomain}, u, nil
}

// sipPasswordAD binds a user's sealed SIP password to that user's record.
func sipPasswordAD(acct, userID string) []byte { return secretAD("sip_password", acct, userID) }

// RotateSIPCredentials gives the user a new password. Existing registrations
// stay until they refresh, which then needs the new password.
func (db *DB) RotateSIPCredentials(accountID, userID string, actor Actor) (SIPCredentials, error) {
	pw, err := newPassword()
	if err != nil {
		return SIPCredentials{}, err
	}
	sealed, err := db.seal(pw, sipPasswordAD(accountID, userID))
	if err != nil {
		return SIPCredentials{}, err
	}
	var c SIPCredentials
	err = db.update(func(t *tx) error {
		u, err := t.user(accountID, userID)
		if err != nil {
			return err
		}
		if err := t.Bucket(bSecrets).Put([]byte(k(accountID, userID)), sealed); err != nil {
			return err
		}
		if c, _, err = t.credentials(accountID, userID); err != nil {
			return err
		}
		return t.audit(AuditEntry{AccountID: accountID, Actor: actor, Action: "sip_credentials.rotate", TargetKind: "user", TargetID: userID, TargetLabel: u.Label()})
	})
	if err != nil {
		return SIPCredentials{}, fmt.Errorf("rotate sip credentials of %s: %w", userID, err)
	}
	return c, nil
}

// SIPIdentity is what the registrar needs to check a digest: the account
// (realm), the user (status) and the password.
type SIPIdentity struct {
	Account  Account
	User     User
	Password string
}

// SIPIdentity looks up extension@domain for authentication. Not audited (it is
// the registrar's hot path); the password never leaves the process. Answers
// are cached until the next committed write that could change them (any
// update transaction; REGISTER's binding writes do not count), so a
// re-registering phone costs a map lookup, and a disabled user, a rotated
// password or a deleted user is seen by the very next request.
func (db *DB) SIPIdentity(domain, extension string) (SIPIdentity, error) {
	key := domain + "\x00" + extension
	gen := db.gen.Load()
	if id, ok := db.identities.get(gen, key); ok {
		return id, nil
	}
	var id SIPIdentity
	err := db.view(func(t *tx) error {
		acctID := t.Bucket(bDomains).Get([]byte(domain))
		if acctID == nil {
			return fmt.Errorf("domain %s: %w", domain, ErrNotFound)
		}
		a, err := t.account(string(acctID))
		if err != nil {
			return err
		}
		u, err := t.userByExtension(a.ID, extension)
		if err != nil {
			return err
		}
		sealed := t.Bucket(bSecrets).Get([]byte(k(a.ID, u.ID)))
		if sealed == nil {
			return fmt.Errorf("password of %s: %w", u.ID, ErrNotFound)
		}
		pw, err := t.db.open(sealed, sipPasswordAD(a.ID, u.ID))
		if err != nil {
			return fmt.Errorf("password of %s: %w", u.ID, err)
		}
		id = SIPIdentity{Account: a, User: u, Password: pw}
		return nil
	})
	if err != nil {
		return SIPIdentity{}, err
	}
	// Keep it only if no write committed while we read: otherwise what we
	// read may already be stale.
	if db.gen.Load() == gen {
		db.identities.put(gen, key, id)
	}
	return id, nil
}

// identityCache holds SIPIdentity answers for one write generation.
type identityCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]SIPIdentity
}

const maxCachedIdentities = 200_000

func (c *identityCache) get(gen uint64, key string) (SIPIdentity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return SIPIdentity{}, false
	}
	id, ok := c.m[key]
	return id, ok
}

func (c *identityCache) put(gen uint64, key string, id SIPIdentity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.m == nil || len(c.m) >= maxCachedIdentities {
		c.gen, c.m = gen, map[string]SIPIdentity{}
	}
	c.m[key] = id
}
