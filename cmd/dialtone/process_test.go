package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// testProcessBinary returns an executable that runs dialtone as a separate
// process without a `go build`: a script that starts this test binary in
// TestDialtoneProcess (baddata_test.go: dialtone's main) with the given
// arguments. Under -race the process is
// race-instrumented too, so it is several times slower than a built binary:
// fine for a few requests (TestDiskFull), not for TestPowerLoss's 50 restarts.
func testProcessBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "dialtone")
	body := fmt.Sprintf("#!/bin/sh\nDIALTONE_TEST_PROCESS=1 exec %q -test.run='^TestDialtoneProcess$' -- \"$@\"\n", self)
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	return script
}
