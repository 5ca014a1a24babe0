package admin

import (
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// Refusals are audited at most 10 a minute per token; the count of those
// left out is written with the token's next audited refusal.
func TestRefusalAuditRateLimited(t *testing.T) {
	e := newEnv(t)
	viewer := e.token(store.DefaultAccount, store.RoleViewer)
	other := e.token(store.DefaultAccount, store.RoleViewer)
	refusals := func() (n int, last auditJSON) {
		for _, a := range e.auditEntries() {
			if a.Result == "forbidden" {
				if n == 0 {
					last = a // newest first
				}
				n++
			}
		}
		return n, last
	}
	for i := 0; i < 25; i++ {
		e.callErr("POST", base+"/users", viewer, map[string]string{"extension": "1001", "name": "X"}, 403, "forbidden")
	}
	if n, _ := refusals(); n != 10 {
		t.Fatalf("%d refusals audited in a minute, want 10", n)
	}
	// Another token has its own allowance.
	e.callErr("POST", base+"/users", other, map[string]string{"extension": "1001", "name": "X"}, 403, "forbidden")
	if n, _ := refusals(); n != 11 {
		t.Fatalf("another token's refusal: %d audited, want 11", n)
	}
	e.clock.Advance(time.Minute)
	e.callErr("POST", base+"/users", viewer, map[string]string{"extension": "1001", "name": "X"}, 403, "forbidden")
	n, last := refusals()
	if n != 12 || last.Detail["suppressed_before"] != "15" {
		t.Fatalf("after a minute: %d audited, newest %+v; want 12 with suppressed_before 15", n, last.Detail)
	}
}
