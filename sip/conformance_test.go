package sip

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/internal/conformance"
)

// TestConformance sends every message of testdata/conformance (RFC 4475
// §3.1.1 valid and §3.1.2 invalid messages, written fresh, plus the cases
// of the field) raw over UDP and over TCP to a registrar on real sockets,
// without and, where the case says so, with digest credentials, and checks
// each answer against the one the RFC requires. Afterwards the server must
// still answer on both transports and no handler may have panicked.
// `make conformance` runs the same set against dialtone and Kamailio side
// by side.
func TestConformance(t *testing.T) {
	e := newEnv(t, Config{})
	cases, err := conformance.Load("testdata/conformance")
	if err != nil {
		t.Fatal(err)
	}
	target := conformance.Target{Name: "dialtone", UDP: e.udpAddr, TCP: e.tcpAddr, Domain: testDomain,
		User: e.user.Extension, Password: e.password, Timeout: 5 * time.Second, Silence: 300 * time.Millisecond}
	ctx := context.Background()
	// The exchanges run concurrently (most answers are immediate, but a
	// silent server costs a full timeout); the verdicts are reported one
	// subtest per case and mode.
	rows := conformance.RunAll(ctx, []conformance.Target{target}, cases, 32)
	for _, row := range rows {
		r := row.Results[0]
		name := row.Case.Name + "/" + row.Mode.Transport
		cred := "without"
		if row.Mode.Auth {
			name += "/auth"
			cred = "with"
		}
		t.Run(name, func(t *testing.T) {
			if r.Err != nil {
				t.Logf("local error: %v", r.Err)
			}
			if !r.OK {
				t.Errorf("%s over %s %s credentials: got %q, want %s (%s) — %s",
					row.Case.Name, strings.ToUpper(row.Mode.Transport), cred, r.Answer(), strings.Join(r.Expected(), "|"), row.Case.RFC, row.Case.Title)
			}
		})
	}
	for _, tr := range []string{"udp", "tcp"} {
		if err := conformance.Alive(ctx, target, tr); err != nil {
			t.Errorf("after the conformance set: %v", err)
		}
	}
	if n := counterValue(t, e.srv.metrics.handlerPanics); n != 0 {
		t.Errorf("handler panics = %v, want 0", n)
	}
}
