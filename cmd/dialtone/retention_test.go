package main

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// The retention loop prunes what is older than its ages on a fake clock, in
// several batches, and survives a panic in a pass.
func TestRetentionLoop(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	db, err := store.Open(t.TempDir(), store.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := 0; i < 7; i++ {
		db.RecordAudit(store.AuditEntry{AccountID: "default", Action: "x"})
		db.RecordCall(store.CallRecord{AccountID: "default"})
	}
	advance(100 * 24 * time.Hour) // calls are now older than 90 days, audit entries not older than 400
	for i := 0; i < 2; i++ {
		db.RecordAudit(store.AuditEntry{AccountID: "default", Action: "y"})
		db.RecordCall(store.CallRecord{AccountID: "default"})
	}
	var logs syncBuffer
	logs.mu = make(chan struct{}, 1)
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r := newRetention(db, config{AuditRetention: 400, CallRetention: 90}, log)
	r.batch, r.pause = 2, 0

	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.run(ctx, tick); close(done) }()
	waitCounts := func(audit, calls int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := db.LogCounts()
			if err != nil {
				t.Fatal(err)
			}
			if c.Audit == audit && c.Calls == calls {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("counts %+v, want audit %d calls %d", c, audit, calls)
			}
			time.Sleep(5 * time.Millisecond) // polling for the loop's result, not waiting for time to pass
		}
	}
	waitCounts(9, 2) // the first pass runs at once: 7 old calls gone, in 4 batches of 2
	advance(301 * 24 * time.Hour)
	tick <- now
	waitCounts(2, 0) // the first 7 audit entries are now 401 days old; every call is older than 90
	cancel()
	<-done

	// A pass that panics is logged, and the caller goes on.
	broken := retention{log: log, audit: time.Hour}
	broken.pass(context.Background())
	if !strings.Contains(logs.String(), "panic while pruning") {
		t.Fatalf("the panic was not logged: %s", logs.String())
	}
}
