package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// retention deletes audit entries and call records older than their ages,
// in small batches (store.PruneAudit, store.PruneCalls), pausing between
// batches so REGISTERs and admin writes get the writer lock in between.
type retention struct {
	db           *store.DB
	log          *slog.Logger
	audit, calls time.Duration // 0: keep everything
	batch        int           // 0: store.DefaultPruneBatch
	pause        time.Duration // between two batches
}

func newRetention(db *store.DB, cfg config, log *slog.Logger) retention {
	day := 24 * time.Hour
	return retention{db: db, log: log, audit: time.Duration(cfg.AuditRetention) * day,
		calls: time.Duration(cfg.CallRetention) * day, pause: 50 * time.Millisecond}
}

// run prunes once at once, then at every tick, until ctx ends.
func (r retention) run(ctx context.Context, tick <-chan time.Time) {
	for {
		r.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

// pass prunes everything that is due. A panic is logged and ends only this
// pass: the next tick tries again, and the process stays up.
func (r retention) pass(ctx context.Context) (audit, calls int) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("retention: panic while pruning; trying again at the next pass", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	now := r.db.Now()
	if r.audit > 0 {
		audit = r.prune(ctx, "audit entries", func() (int, bool, error) { return r.db.PruneAudit(now.Add(-r.audit), r.batch) })
	}
	if r.calls > 0 {
		calls = r.prune(ctx, "call records", func() (int, bool, error) { return r.db.PruneCalls(now.Add(-r.calls), r.batch) })
	}
	return audit, calls
}

func (r retention) prune(ctx context.Context, what string, batch func() (int, bool, error)) int {
	total := 0
	for ctx.Err() == nil {
		n, more, err := batch()
		total += n
		if err != nil {
			r.log.Error("retention: pruning "+what, "err", err, "deleted", total)
			return total
		}
		if !more {
			break
		}
		if r.pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(r.pause):
			}
		}
	}
	if total > 0 {
		r.log.Info("retention: deleted old "+what, "count", total)
	}
	return total
}
