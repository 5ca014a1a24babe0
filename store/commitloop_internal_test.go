package store

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestCommitLoopFailsOnlyTheFailingCall: in one group, a fn that errs and
// one that panics fail alone; the others commit, and the writer goes on.
func TestCommitLoopFailsOnlyTheFailingCall(t *testing.T) {
	boltOnly(t, "the group commit")
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bad := errors.New("bad request")
	const n = 30
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = db.batch(func(t *tx) error {
				if err := t.Bucket(bMeta).Put([]byte("test-"+string(rune('a'+i))), []byte("x")); err != nil {
					return err
				}
				switch i % 10 {
				case 3:
					return bad
				case 7:
					panic("broken fn")
				}
				return nil
			})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		switch i % 10 {
		case 3:
			if !errors.Is(err, bad) {
				t.Errorf("call %d = %v, want its own error", i, err)
			}
		case 7:
			if err == nil || !strings.Contains(err.Error(), "broken fn") {
				t.Errorf("call %d = %v, want the panic as an error", i, err)
			}
		default:
			if err != nil {
				t.Errorf("call %d = %v, want nil", i, err)
			}
		}
	}
	err = db.view(func(tx *tx) error {
		for i := 0; i < n; i++ {
			got := tx.Bucket(bMeta).Get([]byte("test-"+string(rune('a'+i)))) != nil
			if want := i%10 != 3 && i%10 != 7; got != want {
				t.Errorf("call %d's write on disk = %v, want %v", i, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
