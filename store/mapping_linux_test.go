package store_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// mappedKiB is the resident size of path's mappings in this process
// (/proc/self/smaps), in KiB.
func mappedKiB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	kib, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == path
			continue
		}
		if in && len(fields) == 3 && fields[0] == "Rss:" {
			n, _ := strconv.Atoi(fields[1])
			kib += n
		}
	}
	return kib
}

// trimStore is a store of 3,000 users whose data file is several MiB.
func trimStore(t *testing.T, opts store.Options) (*store.DB, string) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store.NoSyncForTest(db)
	mustAccount(t, db)
	for i := range 3000 {
		mustUser(t, db, fmt.Sprint(10000+i))
	}
	path, err := filepath.EvalSymlinks(filepath.Join(dir, store.FileName))
	if err != nil {
		t.Fatal(err)
	}
	return db, path
}

// readAll reads every page of the file through the map (the check does).
func readAll(t *testing.T, db *store.DB) {
	t.Helper()
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}

// The pages reads map in are let go: after a trim the data file adds
// nothing to the process's resident memory, and the store still reads
// everything (the pages come back from the page cache).
func TestTrimMappingLetsPagesGo(t *testing.T) {
	storetest.BoltOnly(t, "the data file's map")
	db, path := trimStore(t, store.Options{TrimInterval: -1})
	readAll(t, db)
	before := mappedKiB(t, path)
	if before < 1024 {
		t.Fatalf("only %d KiB of the data file mapped after reading all of it; the test cannot tell", before)
	}
	if err := store.TrimMappingForTest(db); err != nil {
		t.Fatal(err)
	}
	if after := mappedKiB(t, path); after > 64 {
		t.Fatalf("%d KiB of the data file still mapped after a trim (%d before)", after, before)
	}
	readAll(t, db)
	if _, err := db.SIPIdentity("example.test", "12999"); err != nil {
		t.Fatalf("read after a trim: %v", err)
	}
}

// The store trims by itself while transactions run.
func TestTrimMappingRunsInBackground(t *testing.T) {
	storetest.BoltOnly(t, "the data file's map")
	db, path := trimStore(t, store.Options{TrimInterval: time.Millisecond})
	readAll(t, db)
	deadline := time.Now().Add(20 * time.Second)
	for mappedKiB(t, path) > 64 {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of the data file still mapped; trims done: %d", mappedKiB(t, path), store.MappingTrimsForTest(db))
		}
		time.Sleep(time.Millisecond)
	}
}
