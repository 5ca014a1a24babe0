package admin

import (
	"context"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"

	"github.com/gin-gonic/gin"
)

// macsOfUser lists the phones that carry the user: devices with a line for
// them, and Yealinks registered as them. Collect it before a change that
// removes those links (delete, sign-out).
func (s *server) macsOfUser(c *gin.Context, acct, userID string) []string {
	set := map[string]bool{}
	if ds, err := s.db.DevicesOfUser(acct, userID); err == nil {
		for _, d := range ds {
			set[d.MAC] = true
		}
	} else {
		s.log.WarnContext(c, "check-sync: list devices", "user_id", userID, "err", err)
	}
	if bs, err := s.db.Bindings(acct, userID); err == nil {
		for _, b := range bs {
			if b.MAC != "" {
				set[b.MAC] = true
			}
		}
	}
	macs := make([]string, 0, len(set))
	for m := range set {
		macs = append(macs, m)
	}
	sort.Strings(macs)
	return macs
}

// checkSyncMACs asks each phone to fetch its configuration now, so a
// disabled, re-enabled, deleted or signed-out user's lines change on the
// handset at once rather than at its next scheduled fetch. Best effort and
// bounded by checkSyncTimeout: a phone that misses it catches up at its next
// poll; failures are logged, never returned.
func (s *server) checkSyncMACs(c *gin.Context, acct, why string, macs []string) {
	if s.notifier == nil || len(macs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), checkSyncTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, mac := range macs {
		wg.Add(1)
		go func(mac string) {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil { // a request's helper goroutine: gin's recovery does not reach it
					s.log.ErrorContext(c, "check-sync panicked", "account", acct, "mac", mac, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				}
			}()
			if err := s.notifier.CheckSync(ctx, acct, mac); err != nil {
				s.log.InfoContext(c, "check-sync not delivered", "account", acct, "mac", mac, "why", why, "err", err)
			}
		}(mac)
	}
	wg.Wait()
}
