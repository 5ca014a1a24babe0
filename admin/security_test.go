package admin

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/dialtone-voip/dialtone/internal/guard"
)

func TestSecurityBlocks(t *testing.T) {
	e := newEnv(t)
	admin := e.token("default", "admin")

	// Without a guard wired in there is nothing to list or lift.
	var bl blockList
	e.call("GET", "/api/v1/security/blocks", providerSecret, nil, 200, &bl)
	if bl.Blocks == nil || len(bl.Blocks) != 0 {
		t.Errorf("blocks without a guard = %+v", bl)
	}
	e.callErr("DELETE", "/api/v1/security/blocks/198.51.100.9", providerSecret, nil, 404, "not_found")

	g := guard.New(guard.Config{MaxFailures: 3, Window: time.Minute, BlockFor: 15 * time.Minute, Now: e.clock.Now})
	prov := g.For("provisioning", guard.Policy{})
	scanner, office := netip.MustParseAddr("198.51.100.9"), netip.MustParseAddr("192.0.2.7")
	// A scanner: the whole source is blocked.
	for range 3 {
		g.Fail(scanner, "1002", "REGISTER auth")
	}
	// An office NAT with a registered phone: only the guessed user is blocked.
	g.Succeed(office, "1002")
	for range 3 {
		g.Fail(office, "1003", "REGISTER auth")
	}
	// The same table holds provisioning's blocks; an IPv6 source is its /64.
	for range 3 {
		prov.Fail(netip.MustParseAddr("2001:db8::1"), "", "unknown_key")
	}
	ge := e.with(func(o *Options) { o.Blocks = g })

	ge.call("GET", "/api/v1/security/blocks", providerSecret, nil, 200, &bl)
	want := []blockJSON{
		{Protocol: "provisioning", Source: "2001:db8::/64", Until: "2026-11-23T09:15:00Z", Failures: 3, Reason: "unknown_key"},
		{Protocol: "sip", Source: "192.0.2.7", User: "1003", Until: "2026-11-23T09:15:00Z", Failures: 3, Reason: "REGISTER auth"},
		{Protocol: "sip", Source: "198.51.100.9", Until: "2026-11-23T09:15:00Z", Failures: 3, Reason: "REGISTER auth"},
		{Protocol: "sip", Source: "198.51.100.9", User: "1002", Until: "2026-11-23T09:15:00Z", Failures: 3, Reason: "REGISTER auth"},
	}
	if diff := cmp.Diff(want, bl.Blocks); diff != "" {
		t.Fatalf("blocks (-want +got):\n%s", diff)
	}
	ge.callErr("GET", "/api/v1/security/blocks", admin, nil, 403, "forbidden")
	ge.callErr("DELETE", "/api/v1/security/blocks/198.51.100.9", admin, nil, 403, "forbidden")
	if !g.Blocked(scanner, "") {
		t.Fatal("refused lift lifted the block")
	}

	// Lifting removes the source's block and its per-user ones.
	ge.call("DELETE", "/api/v1/security/blocks/198.51.100.9", providerSecret, nil, 204, nil)
	if g.Blocked(scanner, "1002") {
		t.Error("still blocked after the lift")
	}
	ge.callErr("DELETE", "/api/v1/security/blocks/198.51.100.9", providerSecret, nil, 404, "not_found")
	ge.call("DELETE", "/api/v1/security/blocks/2001:db8::5", providerSecret, nil, 204, nil) // any address of the /64
	ge.callErr("DELETE", "/api/v1/security/blocks/not-an-address", providerSecret, nil, 404, "not_found")
	ge.call("GET", "/api/v1/security/blocks", providerSecret, nil, 200, &bl)
	if len(bl.Blocks) != 1 || bl.Blocks[0].Source != "192.0.2.7" {
		t.Errorf("blocks after two lifts = %+v", bl.Blocks)
	}

	// Lifts are in the provider's audit log.
	var audit auditList
	e.call("GET", "/api/v1/audit", providerSecret, nil, 200, &audit)
	var lifted []string
	for _, en := range audit.Entries {
		if en.Action == "security.block_lift" && en.Result == "ok" {
			lifted = append(lifted, en.TargetID)
		}
	}
	if diff := cmp.Diff([]string{"2001:db8::5", "198.51.100.9"}, lifted); diff != "" {
		t.Errorf("audited lifts (-want +got):\n%s", diff)
	}
}
