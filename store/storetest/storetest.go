// Package storetest opens real stores in a test's temporary directory and
// provides a clock that tests move forward instead of sleeping.
package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
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
	db, err := store.Open(dir, opts)
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
