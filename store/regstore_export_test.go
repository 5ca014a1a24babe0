package store

import (
	"context"
	"time"
)

// PutLegacyBindingForTest writes b as a release before the binary encoding
// did (version byte 1 and JSON), with the live count told as Register would.
func PutLegacyBindingForTest(db *DB, b Binding) error {
	db.sweep.lower(k(b.AccountID, b.UserID), []Binding{b})
	return db.update(func(t *tx) error {
		t.bindingAdded(b.ExpiresAt)
		return put(t.Bucket(bBindings), k(b.AccountID, b.UserID, b.key()), b)
	})
}

// BindingEncodingsForTest returns the first byte (the encoding) of every
// binding row of the user, as stored on disk.
func BindingEncodingsForTest(db *DB, acct, userID string) ([]byte, error) {
	var out []byte
	err := db.view(func(t *tx) error {
		return each(t.Bucket(bBindings), k(acct, userID), func(_, v []byte) error {
			out = append(out, v[0])
			return nil
		})
	})
	return out, err
}

// CrashCloseForTest closes db as a crash would leave it: what the group
// commit has acknowledged is on disk, the pure refreshes not yet written are
// dropped.
func CrashCloseForTest(db *DB) error {
	db.stopCommitLoop(false)
	if db.etcd != nil {
		db.etcd.noSettle.Store(true) // and its lease is not revoked
	}
	return db.kv.close()
}

// FlushRefreshesForTest writes every pending pure refresh now and returns
// once it is on disk.
func FlushRefreshesForTest(db *DB) error {
	db.loop.flushDue()
	return db.batch(func(*tx) error { return nil })
}

// PendingRefreshesForTest is the number of pure refreshes acknowledged but
// not yet known to be on disk.
func PendingRefreshesForTest(db *DB) int {
	return int(db.refresh.n.Load())
}

// DiskBindingsForTest returns the user's binding rows as stored, without
// the pending refreshes, live or not.
func DiskBindingsForTest(db *DB, acct, userID string) ([]Binding, error) {
	var out []Binding
	err := db.view(func(t *tx) error {
		return each(t.Bucket(bBindings), k(acct, userID), func(_, v []byte) error {
			var b Binding
			if err := decodeBinding(v, &b); err != nil {
				return err
			}
			out = append(out, b)
			return nil
		})
	})
	return out, err
}

// IdentityCachedForTest reports whether SIPIdentity would answer
// extension@domain from its cache.
func IdentityCachedForTest(db *DB, domain, extension string) bool {
	_, _, ok := db.identities.get(domain + "\x00" + extension)
	return ok
}

// CachedIdentitiesForTest is the number of SIPIdentity answers cached.
func CachedIdentitiesForTest(db *DB) int { return db.identities.len() }

// IdentityCacheBound is the most SIPIdentity answers cached at once.
const IdentityCacheBound = 2 * identityCacheHalf

// TrimMappingForTest lets go of the data file's map now.
func TrimMappingForTest(db *DB) error { return db.trimMapping() }

// MappingTrimsForTest is the number of trims done since Open.
func MappingTrimsForTest(db *DB) uint64 { return db.trim.trims.Load() }

// etcdForTest, when set, makes the internal tests' openTest open etcd stores.
var etcdForTest []string

// UseEtcdForTest makes the package's internal tests open etcd stores on
// endpoints (store_test's TestMain sets it for the etcd run).
func UseEtcdForTest(endpoints []string) { etcdForTest = endpoints }

// EtcdStatsForTest are the etcd transactions that wrote and the runs lost to
// conflicts since db was opened.
func EtcdStatsForTest(db *DB) (commits, conflicts uint64) { return db.etcdStats() }

// BeforeEtcdCommitForTest makes every write transaction of db call fn between
// its rule and its commit (nil: no more).
func BeforeEtcdCommitForTest(db *DB, fn func()) {
	if fn == nil {
		db.etcd.beforeCommit.Store(nil)
		return
	}
	db.etcd.beforeCommit.Store(&fn)
}

// WaitWatchedForTest waits until an etcd store's watch has applied every
// change committed before the call; on bbolt it returns at once.
func WaitWatchedForTest(db *DB) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return db.waitWatched(ctx)
}

// LeaseForTest is the id of db's etcd lease (0 while it has none).
func LeaseForTest(db *DB) int64 { return db.etcd.lease.Load() }

// DropLeaseForTest stops db's lease keeper and forgets its lease, as if etcd
// had been unreachable for longer than the TTL and no new lease could be
// granted yet (the lease itself is left to expire).
func DropLeaseForTest(db *DB) {
	db.etcd.stopLease()
	<-db.etcd.leaseDone
	db.etcd.lease.Store(0)
}

// HorizonPeriods is how many registration periods past its true expiry an
// etcd row's stored expiry lies.
const HorizonPeriods = horizonPeriods

// RegainLeaseForTest grants db a new lease and puts on it what its lost
// lease held, as the keeper does once etcd answers again (after
// DropLeaseForTest; the keeper is not started again).
func RegainLeaseForTest(db *DB) error {
	id, err := db.etcd.grantLease(context.Background())
	if err != nil {
		return err
	}
	db.takeLease(context.Background(), id)
	return nil
}

// SetAfterReputForTest makes f run in db's next lease takeovers between
// the re-put of its rows and their restore (nil: nothing).
func SetAfterReputForTest(db *DB, f func()) {
	if f == nil {
		db.etcd.afterReput.Store(nil)
		return
	}
	db.etcd.afterReput.Store(&f)
}

// HeldForTest counts db's held memory: AORs and rows (refreshOverlay.rows),
// and refresh entries.
func HeldForTest(db *DB) (aors, rows, entries int) {
	o := &db.refresh
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, h := range o.rows {
		aors++
		rows += len(h.rows)
	}
	for _, st := range o.aors {
		entries += len(st.entries)
	}
	return aors, rows, entries
}
