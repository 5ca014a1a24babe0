package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Set(t time.Time)     { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// Old audit entries and call records are deleted in batches, in every
// account, and nothing newer than the cutoff is touched.
func TestPruneOldEntries(t *testing.T) {
	clk := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	db, err := openTest(t.TempDir(), Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Account "a": 4 old then 3 new entries; "b": 5 old; "_provider": 2 new.
	// Writes interleave between accounts, as in real life.
	for day := 0; day < 10; day++ {
		for _, acct := range []string{"a", "b", "_provider"} {
			old := day < 5
			if acct == "a" && day == 4 || acct == "b" && day >= 5 || acct == "_provider" && old {
				continue
			}
			if err := db.RecordAudit(AuditEntry{AccountID: acct, Action: "x", TargetID: fmt.Sprint(day)}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.RecordCall(CallRecord{AccountID: acct, StartedAt: clk.Now(), CallID: fmt.Sprint(acct, day)}); err != nil {
				t.Fatal(err)
			}
		}
		clk.Add(24 * time.Hour)
	}
	// a: days 0-3 old, 5-9 new (5); b: days 0-4 old; _provider: 5-9 new.
	cutoff := time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC) // days 0..4 are older
	for _, prune := range []func(time.Time, int) (int, bool, error){db.PruneAudit, db.PruneCalls} {
		total, rounds := 0, 0
		for {
			n, more, err := prune(cutoff, 3)
			if err != nil {
				t.Fatal(err)
			}
			total, rounds = total+n, rounds+1
			if n > 3 {
				t.Fatalf("a batch of 3 deleted %d", n)
			}
			if !more {
				break
			}
		}
		if total != 9 || rounds != 4 {
			t.Fatalf("deleted %d in %d batches, want 9 in 4 (3+3+3+0)", total, rounds)
		}
	}
	for acct, want := range map[string]int{"a": 5, "b": 0, "_provider": 5} {
		es, err := db.Audit(acct, 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) != want {
			t.Errorf("account %s keeps %d audit entries, want %d", acct, len(es), want)
		}
		for _, e := range es {
			if e.Time.Before(cutoff) {
				t.Errorf("account %s keeps an entry of %v", acct, e.Time)
			}
		}
	}
	counts, err := db.LogCounts()
	if err != nil || counts.Audit != 10 || counts.Calls != 10 {
		t.Fatalf("counts after pruning %+v %v, want 10 and 10", counts, err)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}
