// Package storetest opens real stores in a test's temporary directory and
// provides a clock that tests move forward instead of sleeping.
//
// Stores are bbolt unless UseEtcd was called (store's own TestMain runs
// every test once on each backend, see store/main_test.go).
package storetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Clock is a settable time source, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at a fixed, readable instant.
func NewClock() *Clock {
	return &Clock{now: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var etcdEndpoints []string

// UseEtcd makes Open and OpenDir open etcd stores on endpoints (nil: bbolt
// again). Each directory gets its own key prefix, so tests never share data.
func UseEtcd(endpoints []string) { etcdEndpoints = endpoints }

// Backend is "etcd" or "bbolt": what Open opens.
func Backend() string {
	if etcdEndpoints != nil {
		return "etcd"
	}
	return "bbolt"
}

// BoltOnly skips a test of something only the bbolt backend has (the data
// file, power loss, the group commit), saying why.
func BoltOnly(tb testing.TB, why string) {
	tb.Helper()
	if etcdEndpoints != nil {
		tb.Skip("bbolt only: " + why)
	}
}

// EtcdConfig is the etcd store OpenDir opens for dir.
func EtcdConfig(dir string) store.EtcdConfig {
	h := sha256.Sum256([]byte(dir))
	return store.EtcdConfig{Endpoints: etcdEndpoints, Dir: dir, Prefix: "/t/" + hex.EncodeToString(h[:8])}
}

// Open opens a store in a new temporary directory with the given clock (nil:
// the real one) and closes it when the test ends.
func Open(tb testing.TB, clock *Clock) *store.DB {
	tb.Helper()
	return OpenDir(tb, tb.TempDir(), clock)
}

// OpenDir opens the store in dir and closes it when the test ends (closing
// twice is harmless, so tests may close early to reopen).
func OpenDir(tb testing.TB, dir string, clock *Clock) *store.DB {
	tb.Helper()
	opts := store.Options{}
	if clock != nil {
		opts.Now = clock.Now
	}
	var db *store.DB
	var err error
	if etcdEndpoints != nil {
		db, err = store.OpenEtcd(EtcdConfig(dir), opts)
	} else {
		db, err = store.Open(dir, opts)
	}
	if err != nil {
		tb.Fatalf("store.Open(%s) = %v", dir, err)
	}
	tb.Cleanup(func() {
		// Like bbolt's own test helper: every test ends with a consistency check.
		if err := db.Check(); err != nil && !strings.Contains(err.Error(), "database not open") {
			tb.Errorf("store consistency check at cleanup: %v", err)
		}
		db.Close()
	})
	return db
}

// MustCheck fails the test if db.Check finds a problem.
func MustCheck(tb testing.TB, db *store.DB) {
	tb.Helper()
	if err := db.Check(); err != nil {
		tb.Fatalf("store consistency check: %v", err)
	}
}

// Raw is everything the store of dir keeps, as bytes an attacker with the
// storage would see: the bbolt file, or every key and value under the
// directory's etcd prefix.
func Raw(tb testing.TB, dir string) []byte {
	tb.Helper()
	if etcdEndpoints == nil {
		raw, err := os.ReadFile(filepath.Join(dir, store.FileName))
		if err != nil {
			tb.Fatal(err)
		}
		return raw
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		tb.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, EtcdConfig(dir).Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		tb.Fatal(err)
	}
	var out []byte
	for _, kv := range resp.Kvs {
		out = append(append(append(out, kv.Key...), 0), kv.Value...)
	}
	if len(resp.Kvs) == 0 {
		tb.Fatalf("nothing stored under %s", EtcdConfig(dir).Prefix)
	}
	return out
}
