package sip

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzStripCallerAssertions: whatever headers a request carries, none that
// a caller may not send survives, every other header does, and nothing
// panics.
func FuzzStripCallerAssertions(f *testing.F) {
	f.Add("P-Asserted-Identity", `"CEO" <sip:1000@example.test>`, "Call-Info", "<sip:x>;answer-after=0")
	f.Add("p-preferred-identity", "<tel:+1555>", "alert-info", "Auto Answer")
	f.Add("Alert-Info", "<http://x>;info=alert-autoanswer", "Call-Info", "<http://x/i.png>;purpose=icon")
	f.Add("Answer-Mode", "Auto", "Subject", "hello")
	f.Add("X-Other", "", "Alert-Info", "<http://x/ring.wav>")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string) {
		msg := "INVITE sip:1002@example.test SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n" +
			"From: <sip:1001@example.test>;tag=a\r\nTo: <sip:1002@example.test>\r\n" +
			"Call-ID: c1\r\nCSeq: 1 INVITE\r\n" +
			n1 + ": " + v1 + "\r\n" + n2 + ": " + v2 + "\r\n" +
			"Content-Length: 0\r\n\r\n"
		m, err := sip.ParseMessage([]byte(msg))
		if err != nil {
			return
		}
		req, ok := m.(*sip.Request)
		if !ok {
			return
		}
		before := len(req.Headers())
		stripCallerAssertions(req)
		removed := 0
		for _, h := range []sip.Header{sip.NewHeader(n1, v1), sip.NewHeader(n2, v2)} {
			if forbidden(h) {
				removed++
			}
		}
		for _, h := range req.Headers() {
			if forbidden(h) {
				t.Errorf("%s: %s survived", h.Name(), h.Value())
			}
		}
		if got := len(req.Headers()); got < before-removed {
			t.Errorf("%d headers left of %d, %d of them forbidden", got, before, removed)
		}
	})
}

// forbidden is the test's own statement of what stripCallerAssertions
// removes.
func forbidden(h sip.Header) bool {
	v := strings.ToLower(h.Value())
	switch strings.ToLower(strings.TrimSpace(h.Name())) {
	case "p-asserted-identity", "p-preferred-identity", "answer-mode", "priv-answer-mode":
		return true
	case "call-info":
		return strings.Contains(v, "answer-after")
	case "alert-info":
		v = strings.NewReplacer(" ", "", "-", "", "_", "", "\t", "").Replace(v)
		return strings.Contains(v, "autoanswer") || strings.Contains(v, "ringanswer") || strings.Contains(v, "intercom")
	}
	return false
}
