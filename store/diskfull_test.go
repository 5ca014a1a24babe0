package store

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// A refusal (the transaction's own error) is not a failed commit; ENOSPC,
// also flattened into text by bbolt, is ErrNoSpace.
func TestCommitFailureClassification(t *testing.T) {
	db, err := openTest(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Register(RegisterRequest{AccountID: DefaultAccount, UserID: "nobody", CallID: "c", CSeq: 1,
		Contacts: []ContactUpdate{{URI: "sip:x@192.0.2.1", Expires: 60}}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Register of a missing user = %v", err)
	}
	if db.CommitFailures() != 0 || db.WriteError() != nil {
		t.Fatalf("a refusal counted as a failed commit: %d %v", db.CommitFailures(), db.WriteError())
	}
	for _, cerr := range []error{fmt.Errorf("write: %w", syscall.ENOSPC), errors.New("file resize error: no space left on device")} {
		got := db.committed(cerr, nil)
		if !errors.Is(got, ErrNoSpace) || db.WriteError() == nil {
			t.Fatalf("committed(%v) = %v, want ErrNoSpace and a write error", cerr, got)
		}
	}
	if got := db.committed(syscall.EIO, nil); errors.Is(got, ErrNoSpace) || !errors.Is(got, syscall.EIO) {
		t.Fatalf("committed(EIO) = %v", got)
	}
	if db.CommitFailures() != 3 {
		t.Fatalf("%d failures counted, want 3", db.CommitFailures())
	}
	if err := db.ProbeWrite(); err != nil || db.WriteError() != nil {
		t.Fatalf("a successful probe leaves %v (err %v)", db.WriteError(), err)
	}
}
