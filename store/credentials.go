package store

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
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
		t.identityChanged(accountID, userID)
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

	ha1 *ha1Cache // shared by the copies of one cached answer
}

type ha1Cache struct {
	mu sync.Mutex
	m  map[string]string // algorithm\x00username\x00realm → HA1
}

// HA1 is the digest's H(username:realm:password) in lower-case hex (RFC 7616
// §3.4.2), with SHA-256 for algorithm "SHA-256" or "SHA-256-sess" and MD5
// otherwise. It is computed once per cached identity, realm and algorithm.
func (id SIPIdentity) HA1(algorithm, username, realm string) string {
	sha := strings.HasPrefix(strings.ToUpper(algorithm), "SHA-256")
	key := "md5\x00" + username + "\x00" + realm
	if sha {
		key = "sha256\x00" + username + "\x00" + realm
	}
	if id.ha1 != nil {
		id.ha1.mu.Lock()
		v, ok := id.ha1.m[key]
		id.ha1.mu.Unlock()
		if ok {
			return v
		}
	}
	newHash := md5.New
	if sha {
		newHash = sha256.New
	}
	h := newHash()
	h.Write([]byte(username + ":" + realm + ":" + id.Password))
	v := hex.EncodeToString(h.Sum(nil))
	if id.ha1 != nil {
		id.ha1.mu.Lock()
		if id.ha1.m == nil {
			id.ha1.m = make(map[string]string, 1) // made on first use: the registrar never asks
		}
		if len(id.ha1.m) < 8 { // a handful of realms and algorithms per user
			id.ha1.m[key] = v
		}
		id.ha1.mu.Unlock()
	}
	return v
}

// SIPIdentity looks up extension@domain for authentication. Not audited (it is
// the registrar's hot path); the password never leaves the process. Answers
// are cached per user until a committed change of that user (status,
// extension, password, deletion) or of their account (SIP domain, …)
// invalidates them, so a re-registering phone costs a map lookup, and a
// disabled user, a rotated password or a deleted user is seen by the very
// next request. Other writes (REGISTERs, the expiry sweep, other users)
// leave the cache alone.
func (db *DB) SIPIdentity(domain, extension string) (SIPIdentity, error) {
	key := domain + "\x00" + extension
	id, epoch, ok := db.identities.get(key)
	if ok {
		return id, nil
	}
	return db.loadSIPIdentity(domain, extension, key, epoch)
}

// loadSIPIdentity is SIPIdentity's cache miss. It is a function of its own
// so that the hit path captures nothing in a closure (the transaction's
// closure goes through an interface and would move id to the heap on every
// call).
func (db *DB) loadSIPIdentity(domain, extension, key string, epoch uint64) (SIPIdentity, error) {
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
		id = SIPIdentity{Account: a, User: u, Password: pw, ha1: &ha1Cache{}}
		return nil
	})
	if err != nil {
		return SIPIdentity{}, err
	}
	// Kept only if nothing was invalidated while we read: otherwise what we
	// read may already be stale.
	db.identities.put(epoch, key, id)
	return id, nil
}

// identityCache holds SIPIdentity answers by domain and extension, at most
// 2*identityCacheHalf of them: two generations, the newer one filled until
// it holds identityCacheHalf answers, then it becomes the older one and the
// older one is dropped; a hit in the older generation moves the answer to
// the newer one. A storm gains nothing from caching every phone (each
// authenticates once or twice, and a miss is one read of the memory-mapped
// file and one AES-GCM open, a few microseconds), and an unbounded cache
// is ~700 bytes of heap per user that the garbage collector then doubles.
// Hot users (a load test cycling a few thousand, a phone re-registering
// after a 401) stay cached.
type identityCache struct {
	mu sync.Mutex
	// epoch counts invalidations; an answer read while one happened is not
	// kept.
	epoch    uint64
	cur, old identityGen
}

type identityGen struct {
	m      map[string]SIPIdentity
	byUser map[string]string // "acct/user" → key in m
}

// identityCacheHalf is the size of one generation of identityCache.
const identityCacheHalf = 4096

func (g *identityGen) get(key string) (SIPIdentity, bool) {
	id, ok := g.m[key]
	return id, ok
}

func (g *identityGen) put(key string, id SIPIdentity) {
	if g.m == nil {
		g.m, g.byUser = map[string]SIPIdentity{}, map[string]string{}
	}
	userKey := k(id.Account.ID, id.User.ID)
	if old, ok := g.byUser[userKey]; ok && old != key {
		delete(g.m, old)
	}
	g.m[key] = id
	g.byUser[userKey] = key
}

func (g *identityGen) forgetUser(userKey string) {
	if key, ok := g.byUser[userKey]; ok {
		delete(g.m, key)
		delete(g.byUser, userKey)
	}
}

func (g *identityGen) forgetAccount(acct string) {
	for key, id := range g.m {
		if id.Account.ID == acct {
			delete(g.m, key)
			delete(g.byUser, k(acct, id.User.ID))
		}
	}
}

// get returns the cached answer, or the epoch to pass to put.
func (c *identityCache) get(key string) (SIPIdentity, uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id, ok := c.cur.get(key); ok {
		return id, c.epoch, true
	}
	id, ok := c.old.get(key)
	if ok {
		c.old.forgetUser(k(id.Account.ID, id.User.ID))
		c.putLocked(key, id)
	}
	return id, c.epoch, ok
}

func (c *identityCache) put(epoch uint64, key string, id SIPIdentity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.epoch != epoch {
		return
	}
	c.old.forgetUser(k(id.Account.ID, id.User.ID))
	c.putLocked(key, id)
}

func (c *identityCache) putLocked(key string, id SIPIdentity) {
	if len(c.cur.m) >= identityCacheHalf {
		c.old, c.cur = c.cur, identityGen{}
	}
	c.cur.put(key, id)
}

// len is the number of answers held.
func (c *identityCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur.m) + len(c.old.m)
}

// forgetUser drops the user's cached answer.
func (c *identityCache) forgetUser(acct, userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	userKey := k(acct, userID)
	c.cur.forgetUser(userKey)
	c.old.forgetUser(userKey)
}

// forgetAll drops every cached answer (another node's change that could
// touch any of them, or missed change events).
func (c *identityCache) forgetAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.cur, c.old = identityGen{}, identityGen{}
}

// forgetAccount drops every cached answer of the account.
func (c *identityCache) forgetAccount(acct string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.cur.forgetAccount(acct)
	c.old.forgetAccount(acct)
}

// identityChanged and accountChanged report, inside a write transaction, a
// change SIPIdentity answers depend on: the user's record or password, or
// the account's. The cache forgets them once t commits, before the write
// returns to its caller.
func (t *tx) identityChanged(acct, userID string) {
	c := &t.db.identities
	t.OnCommit(func() { c.forgetUser(acct, userID) })
}

func (t *tx) accountChanged(acct string) {
	c := &t.db.identities
	t.OnCommit(func() { c.forgetAccount(acct) })
}
