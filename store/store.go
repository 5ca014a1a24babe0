package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Options configure a DB. The zero value is valid: time.Now, a 1 s lock
// timeout and at most 10 contacts per address of record.
type Options struct {
	// Now is the clock; tests move a fake one forward instead of sleeping.
	Now func() time.Time
	// LockTimeout bounds the wait for the data file's lock, so a second
	// process on the same directory fails fast. Zero means 1 s.
	LockTimeout time.Duration
	// MaxContacts is the per-AOR binding limit. When a REGISTER would add one
	// more, the binding that expires soonest is evicted. Zero means 10.
	MaxContacts int
	// BatchDelay is ignored: group-committed writes (a REGISTER, a call
	// record, a provisioning fetch) no longer wait for company. The commit
	// loop starts the next group as soon as the previous commit ends, so a
	// group fills while the previous one is on disk (see commitLoop).
	BatchDelay time.Duration
	// RefreshWriteDelay bounds how long a pure refresh (a REGISTER that only
	// moves an expiry) is answered ahead of its write to disk; the commit
	// loop writes every waiting refresh this long after the first one.
	// Zero means 250 ms (docs/design.md promises at most 1 s); negative
	// writes every refresh before its answer, like any other REGISTER.
	RefreshWriteDelay time.Duration
}

// DB is dialtone's store: one bbolt file plus the encryption key for SIP
// passwords, both in the data directory.
type DB struct {
	bolt        *bolt.DB
	aead        cipher.AEAD
	now         func() time.Time
	maxContacts int
	dir         string

	identities identityCache
	live       *liveIndex     // LiveBindings
	loop       commitLoop     // batch
	refresh    refreshOverlay // pure refreshes not yet on disk
	sweep      sweepIndex     // PruneExpired
	rev        atomic.Uint64  // the newest Binding.rev (see nextRev)
}

// nextRev is a Binding.rev no row has: one more than any on disk at Open or
// handed out since.
func (db *DB) nextRev() uint64 { return db.rev.Add(1) }

// FileName is the bbolt file inside the data directory; KeyFile holds the
// 32-byte key that encrypts SIP passwords at rest.
const (
	FileName = "dialtone.db"
	KeyFile  = "secret.key"
)

// ErrLocked means another process holds the data directory's lock.
var ErrLocked = errors.New("data directory is in use by another process")

var allBuckets = [][]byte{
	bMeta, bAccounts, bDomains, bUsers, bExts, bSecrets, bBindings, bTokens, bTokenIDs,
	bLicences, bAudit, bCalls,
}

var (
	bMeta     = []byte("meta")
	bAccounts = []byte("accounts")  // id → Account
	bDomains  = []byte("domains")   // sip_domain → account id
	bUsers    = []byte("users")     // acct/user → User
	bExts     = []byte("exts")      // acct/extension → owner ("user:<id>", "queue:<id>", "group:<id>")
	bSecrets  = []byte("secrets")   // acct/user → sealed SIP password
	bBindings = []byte("bindings")  // acct/user/contact-key → Binding
	bTokens   = []byte("tokens")    // sha256(token) hex → Token
	bTokenIDs = []byte("token_ids") // token id → sha256 hex
	bLicences = []byte("licences")  // acct/licence → Licence
	bAudit    = []byte("audit")     // acct/seq(8 bytes) → AuditEntry
)

const schemaVersion = 1

// Open opens (creating if needed) the store in dir: dir/dialtone.db and
// dir/secret.key (mode 0600). It fails with ErrLocked if another process has
// the directory open, and drops bindings that expired while it was closed.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxContacts <= 0 {
		opts.MaxContacts = 10
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("open %s: %w", filepath.Join(dir, FileName), err)
	}
	key, err := loadKey(filepath.Join(dir, KeyFile))
	if err != nil {
		bdb.Close()
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		bdb.Close()
		return nil, fmt.Errorf("secret key: %w", err)
	}
	db := &DB{bolt: bdb, aead: aead, now: opts.Now, maxContacts: opts.MaxContacts, dir: dir, live: newLiveIndex()}
	db.loop.init()
	db.refresh.aors = map[string]*aorOverlay{}
	db.refresh.hints = map[string]uint64{}
	db.sweep.next = map[string]int64{}
	db.refresh.delay = opts.RefreshWriteDelay
	if db.refresh.delay == 0 {
		db.refresh.delay = 250 * time.Millisecond
	}
	go db.runCommitLoop()
	fail := func() { db.stopCommitLoop(false); bdb.Close() }
	if err := bdb.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		for _, name := range extraBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bMeta)
		if v := meta.Get([]byte("schema")); v != nil && string(v) != fmt.Sprint(schemaVersion) {
			return fmt.Errorf("data file has schema %s, this build knows %d", v, schemaVersion)
		}
		return meta.Put([]byte("schema"), []byte(fmt.Sprint(schemaVersion)))
	}); err != nil {
		fail()
		return nil, fmt.Errorf("initialise %s: %w", dir, err)
	}
	if err := db.loadLive(); err != nil {
		fail()
		return nil, fmt.Errorf("count bindings in %s: %w", dir, err)
	}
	if _, err := db.PruneExpired(); err != nil {
		fail()
		return nil, err
	}
	return db, nil
}

// extraBuckets are the buckets of the nouns defined outside this file
// (devices, queues, …), created with the others.
var extraBuckets = [][]byte{bDevices, bDeviceMACs, bProvisioning, bProvKeys, bQueues, bGroups, bNumbers, bNumberOwners, bCallflows, bJobs}

// Close commits what is queued for the group commit and every pure refresh
// not yet written, stops the writer and closes the data file. Closing twice is harmless.
func (db *DB) Close() error {
	db.stopCommitLoop(true)
	return db.bolt.Close()
}

// Dir is the data directory the store lives in.
func (db *DB) Dir() string { return db.dir }

// Now is the store's clock.
func (db *DB) Now() time.Time { return db.now() }

// Ping checks that the file is readable (for /readyz).
func (db *DB) Ping() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bMeta) == nil {
			return errors.New("meta bucket missing")
		}
		return nil
	})
}

func loadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		// O_EXCL: never overwrite a key another process just wrote.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create secret key %s: %w", path, err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			return nil, fmt.Errorf("write secret key %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		return key, f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("read secret key %s: %w", path, err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("secret key %s: want 32 bytes, have %d", path, len(key))
	}
	return key, nil
}

func (db *DB) seal(plain string) ([]byte, error) {
	nonce := make([]byte, db.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return db.aead.Seal(nonce, nonce, []byte(plain), nil), nil
}

func (db *DB) open(sealed []byte) (string, error) {
	n := db.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("sealed secret too short")
	}
	plain, err := db.aead.Open(nil, sealed[:n], sealed[n:], nil)
	if err != nil {
		return "", errors.New("cannot decrypt secret (wrong secret.key?)")
	}
	return string(plain), nil
}

// Values are stored as one version byte followed by JSON, so a later release
// can tell old records from new and migrate them.
const encodingV1 = 1

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{encodingV1}, b...), nil
}

func decode(data []byte, v any) error {
	if len(data) == 0 || data[0] != encodingV1 {
		return errors.New("record has unknown encoding")
	}
	return json.Unmarshal(data[1:], v)
}

func put(b *bolt.Bucket, key string, v any) error {
	data, err := encode(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// get decodes key from b into v; ErrNotFound if absent.
func get(b *bolt.Bucket, key string, v any) error {
	data := b.Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	return decode(data, v)
}

func k(parts ...string) string { return strings.Join(parts, "/") }

// each calls fn for every key under prefix+"/".
func each(b *bolt.Bucket, prefix string, fn func(k, v []byte) error) error {
	p := []byte(prefix + "/")
	c := b.Cursor()
	for key, v := c.Seek(p); key != nil && strings.HasPrefix(string(key), string(p)); key, v = c.Next() {
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}

var idEncoding = base32.NewEncoding("abcdefghijkmnpqrstuvwxyz23456789").WithPadding(base32.NoPadding)

// newID returns prefix-<10 random characters>.
func newID(prefix string) string {
	b := make([]byte, 7)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return prefix + "-" + idEncoding.EncodeToString(b)[:10]
}

// validID reports whether s can be a key part (no separators, bounded).
func validID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}
