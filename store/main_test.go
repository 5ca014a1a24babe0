package store_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
)

// TestMain runs every test of the package twice: on bbolt, then on etcd (one
// embedded member for the whole binary; each store gets its own key
// prefix). Tests of bbolt-only features skip the second run
// (storetest.BoltOnly, boltOnly). DIALTONE_STORE_BACKENDS=bbolt (or etcd)
// runs one.
func TestMain(m *testing.M) {
	backends := os.Getenv("DIALTONE_STORE_BACKENDS")
	if backends == "" {
		backends = "bbolt,etcd"
	}
	code := 0
	if strings.Contains(backends, "bbolt") {
		code = m.Run()
	}
	if code == 0 && strings.Contains(backends, "etcd") {
		code = runOnEtcd(m)
	}
	os.Exit(code)
}

func runOnEtcd(m *testing.M) int {
	dir, err := os.MkdirTemp("", "dialtone-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	srv, err := etcdtest.Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	storetest.UseEtcd(srv.Endpoints)
	store.UseEtcdForTest(srv.Endpoints)
	fmt.Println("=== store tests again, on etcd", srv.Endpoints)
	return m.Run()
}
