package store

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// openTest opens the store of dir on the backend of this run: bbolt, or etcd
// when store_test's TestMain set UseEtcdForTest (a key prefix per dir).
func openTest(dir string, opts Options) (*DB, error) {
	if etcdForTest != nil {
		h := sha256.Sum256([]byte(dir))
		return OpenEtcd(EtcdConfig{Endpoints: etcdForTest, Dir: dir, Prefix: "/ti/" + hex.EncodeToString(h[:8])}, opts)
	}
	return Open(dir, opts)
}

// boltOnly skips a test of a bbolt-only feature in the etcd run.
func boltOnly(tb testing.TB, why string) {
	tb.Helper()
	if etcdForTest != nil {
		tb.Skip("bbolt only: " + why)
	}
}
