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
	// TrimInterval is how often the pages of the memory-mapped data file
	// that reads mapped in are let go when transactions ran, but not a
	// storm's worth (they stay in the page cache; see store/mapping.go),
	// so the file does not add its size to the process's resident memory
	// for good. Zero means 1 s; negative never.
	TrimInterval time.Duration
}

// DB is dialtone's store: one bbolt file plus the encryption key for SIP
// passwords, both in the data directory (Open); or an etcd cluster several
// nodes share, with the same key in each node's directory (OpenEtcd).
type DB struct {
	kv          kvStore  // the backend every rule runs on
	bolt        *bolt.DB // nil on etcd: the bbolt-only features check it
	etcd        *etcdKV  // nil on bbolt
	aead        cipher.AEAD
	now         func() time.Time
	maxContacts int
	dir         string
	node        string      // this node's id on etcd (EtcdConfig.Node); empty on bbolt
	health      writeHealth // commit failures (diskfull.go)

	// gen counts committed update transactions, but not the group-committed
	// batches (REGISTER, call records, provisioning fetches — except the one
	// that confirms a device's credentials), which touch nothing a cache
	// holds: caches of other records (provisioning snapshots) are valid
	// while it is unchanged. See Generation.
	gen        atomic.Uint64
	identities identityCache
	live       *liveIndex     // LiveBindings
	loop       commitLoop     // batch
	refresh    refreshOverlay // pure refreshes not yet on disk
	sweep      sweepIndex     // PruneExpired
	rev        atomic.Uint64  // the newest Binding.rev (see nextRev)
	trim       mappingTrim    // the data file's map let go (mapping.go)
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
	opts = withDefaults(opts)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory %s: %w", dir, err)
	}
	dbPath, keyPath := filepath.Join(dir, FileName), filepath.Join(dir, KeyFile)
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if err := checkDataFile(dbPath, key != nil); err != nil {
		return nil, err
	}
	var bdb *bolt.DB
	if err := guard("open "+dbPath, func() error {
		var err error
		bdb, err = bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
		return err
	}); err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrChecksum) {
			return nil, damaged("open %s: %v: restore it from a backup", dbPath, err)
		}
		return nil, fmt.Errorf("open %s: %w", dbPath, err)
	}
	if key == nil {
		var secrets bool
		if err := guard("open "+dbPath, func() error {
			return bdb.View(func(btx *bolt.Tx) error { secrets = holdsSecrets(boltTx{btx}); return nil })
		}); err != nil {
			guard("close", bdb.Close)
			return nil, err
		}
		if secrets {
			bdb.Close()
			return nil, damaged("%s is missing but %s holds sealed secrets (SIP passwords) that only it can decrypt: put back the secret.key kept with this database", keyPath, dbPath)
		}
		if key, err = createKey(keyPath); err != nil {
			bdb.Close()
			return nil, err
		}
	}
	aead, err := newAEAD(key)
	if err != nil {
		bdb.Close()
		return nil, err
	}
	db := newDB(opts, aead)
	db.bolt, db.kv, db.dir = bdb, boltKV{bdb}, dir
	db.refresh.delay = opts.RefreshWriteDelay
	if db.refresh.delay == 0 {
		db.refresh.delay = 250 * time.Millisecond
	}
	go db.runCommitLoop()
	fail := func() { db.stopCommitLoop(false); guard("close", bdb.Close) }
	// A damaged page can make bbolt panic (or fault) while reading: guard
	// turns that into a refusal instead of a crash.
	if err := guard("initialise "+dbPath, func() error {
		return bdb.Update(func(btx *bolt.Tx) error {
			for _, name := range append(allBuckets[:len(allBuckets):len(allBuckets)], extraBuckets...) {
				if _, err := btx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return db.initRecords(&tx{kvTx: boltTx{btx}, now: db.now(), db: db}, dbPath)
		})
	}); err != nil {
		fail()
		if errors.Is(err, ErrDamaged) {
			return nil, err
		}
		return nil, fmt.Errorf("initialise %s: %w", dir, err)
	}
	if err := db.loadAndPrune(dbPath); err != nil {
		fail()
		return nil, err
	}
	// Opening read every binding (the live count, the sweep index): let
	// those pages go, and from now on every TrimInterval.
	_ = guard("trim the data file's mapping", db.trimMapping)
	db.startTrimmer(opts.TrimInterval)
	return db, nil
}

func withDefaults(opts Options) Options {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = time.Second
	}
	if opts.MaxContacts <= 0 {
		opts.MaxContacts = 10
	}
	return opts
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return aead, nil
}

func newDB(opts Options, aead cipher.AEAD) *DB {
	db := &DB{aead: aead, now: opts.Now, maxContacts: opts.MaxContacts, live: newLiveIndex()}
	db.loop.init()
	db.initMemory()
	return db
}

// initRecords runs in the transaction that opens a store (creating its
// buckets on bbolt): the schema and record versions must be ones this build
// reads, and secret.key must be the store's (where names it in errors).
func (db *DB) initRecords(t *tx, where string) error {
	meta := t.Bucket(bMeta)
	if v := meta.Get([]byte("schema")); v != nil && string(v) != fmt.Sprint(schemaVersion) {
		return damaged("%s has schema %s, this build reads %d (written by a newer dialtone?): run the release that wrote it", where, v, schemaVersion)
	}
	if meta.Get([]byte("schema")) == nil {
		if err := meta.Put([]byte("schema"), []byte(fmt.Sprint(schemaVersion))); err != nil {
			return err
		}
	}
	if err := checkRecordVersions(t); err != nil {
		return err
	}
	return db.prepareSecrets(t)
}

// loadAndPrune ends every open: the live count and sweep index are filled,
// and bindings that expired while no one had the store open are dropped.
func (db *DB) loadAndPrune(where string) error {
	if err := guard("count bindings in "+where, db.loadLive); err != nil {
		return err
	}
	return guard("drop expired registrations in "+where, func() error { _, err := db.PruneExpired(); return err })
}

// extraBuckets are the buckets of the nouns defined outside this file
// (devices, queues, …), created with the others.
var extraBuckets = [][]byte{bDevices, bDeviceMACs, bProvisioning, bProvKeys, bQueues, bGroups, bNumbers, bNumberOwners, bCallflows, bJobs, bBootstrap,
	bSettings, bucketTrust}

// initMemory makes the in-memory indexes every open needs (read-only too).
func (db *DB) initMemory() {
	db.refresh.aors = map[string]*aorOverlay{}
	db.refresh.hints = map[uint64]uint64{}
	db.sweep.next = map[string]int64{}
}

// Close commits what is queued for the group commit and every pure refresh
// not yet written, stops the writer and closes the data file. Closing twice is harmless.
func (db *DB) Close() error {
	db.stopTrimmer()
	db.stopCommitLoop(true)
	return db.kv.close()
}

// Dir is the data directory the store lives in.
func (db *DB) Dir() string { return db.dir }

// Generation changes after every committed change to accounts, users,
// devices, credentials or provisioning settings (not after registrations or
// routine fetch records). A cache of what those records say is current while
// Generation returns the value it read before reading them.
func (db *DB) Generation() uint64 { return db.gen.Load() }

// Now is the store's clock.
func (db *DB) Now() time.Time { return db.now() }

// Ping checks that the file (or the etcd cluster) is readable (for /readyz).
func (db *DB) Ping() error {
	return db.kv.view(func(t kvTx) error {
		if t.Bucket(bMeta).Get([]byte("schema")) == nil {
			return errors.New("store has no schema record")
		}
		return nil
	})
}

// readKey reads secret.key; nil, nil if it does not exist.
func readKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read secret key %s: %w", path, err)
	}
	if len(key) != 32 {
		return nil, damaged("secret key %s: want 32 bytes, have %d: put back the secret.key kept with this database", path, len(key))
	}
	return key, nil
}

// createKey writes a new random key; only for a data file with no secrets.
func createKey(path string) ([]byte, error) {
	key := make([]byte, 32)
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
	if len(data) == 0 {
		return damaged("record is empty: the data file is damaged")
	}
	if data[0] != encodingV1 {
		return damaged("record has format version %d, this build reads %d (written by a newer dialtone, or damaged)", data[0], encodingV1)
	}
	if err := json.Unmarshal(data[1:], v); err != nil {
		return damaged("record cannot be read (%v): the data file is damaged", err)
	}
	return nil
}

// recordBuckets hold values written by put (a version byte and JSON); the
// other buckets hold plain ids, hashes and sealed secrets.
var recordBuckets = [][]byte{bAccounts, bUsers, bBindings, bTokens, bLicences, bAudit, bCalls,
	bDevices, bProvisioning, bQueues, bGroups, bNumbers, bCallflows, bJobs}

// checkRecordVersions refuses a data file holding a record this build
// cannot read (a newer release's format, or damage), before anything acts on
// it. It reads only the first byte of each value, so it is cheap.
func checkRecordVersions(tx kvTx) error {
	for _, name := range recordBuckets {
		b := tx.Bucket(name)
		c := b.Cursor()
		for key, v := c.First(); key != nil; key, v = c.Next() {
			if v == nil { // a nested bucket
				continue
			}
			if !recordVersionOK(name, v) {
				ver := -1
				if len(v) > 0 {
					ver = int(v[0])
				}
				return damaged("record %s/%q has format version %d, which this build cannot read (written by a newer dialtone? run that release, or restore a backup)", name, key, ver)
			}
		}
	}
	return nil
}

func put(b kvBucket, key string, v any) error {
	data, err := encode(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// get decodes key from b into v; ErrNotFound if absent.
func get(b kvBucket, key string, v any) error {
	data := b.Get([]byte(key))
	if data == nil {
		return ErrNotFound
	}
	return decode(data, v)
}

func k(parts ...string) string { return strings.Join(parts, "/") }

// each calls fn for every key under prefix+"/".
func each(b kvBucket, prefix string, fn func(k, v []byte) error) error {
	return b.ForEachPrefix([]byte(prefix+"/"), fn)
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
