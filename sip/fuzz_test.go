package sip

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; `go test` runs them.

func FuzzParseExpires(f *testing.F) {
	for _, s := range []string{"3600", " 60 ", "0", "\t0", "", "abc", "-1", "4294967295", "4294967296", "99999999999999999999999", "1e3", "+5", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseExpires(s)
		trimmed := strings.Trim(s, " \t")
		if err != nil {
			if trimmed != "" && strings.Trim(trimmed, "0123456789") == "" {
				t.Fatalf("parseExpires(%q) = %v for a run of digits", s, err)
			}
			return
		}
		if trimmed == "" || strings.Trim(trimmed, "0123456789") != "" {
			t.Fatalf("parseExpires(%q) = %d, want an error", s, v)
		}
		if n, perr := strconv.ParseUint(trimmed, 10, 64); perr == nil && n <= math.MaxUint32 {
			if uint64(v) != n {
				t.Fatalf("parseExpires(%q) = %d, want %d", s, v, n)
			}
		} else if v != math.MaxUint32 {
			// Too big for 32 bits: saturates, never wraps (to 0 = "remove").
			t.Fatalf("parseExpires(%q) = %d, want %d", s, v, uint32(math.MaxUint32))
		}
	})
}

func registerWith(headers string) string {
	return "REGISTER sip:example.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfuzz\r\n" +
		"From: <sip:1001@example.test>;tag=a\r\nTo: <sip:1001@example.test>\r\n" +
		"Call-ID: fuzz\r\nCSeq: 1 REGISTER\r\n" + headers + "Content-Length: 0\r\n\r\n"
}

func FuzzParseContact(f *testing.F) {
	for _, s := range []string{
		"<sip:1001@192.0.2.7:5062;transport=tcp>;expires=60",
		`"Ada" <sip:1001@192.0.2.7>;q=0.5;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`,
		"*", "*, <sip:a@b>", "sip:1001@host", "<sip:1001@host>; expires = 60", "<sips:x@[2001:db8::1]:5061>",
		"<http://example.test>", "<sip:@>", "<sip:a@b>;expires=4294967296", "<sip:a@b>;q=1.000", "<sip:a@b>;q=1.5",
		"m", "<sip:a@b>,<sip:c@d>,<sip:e@f>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if strings.ContainsAny(v, "\r\n") {
			return // would be another header, not this one's value
		}
		msg, err := sip.ParseMessage([]byte(registerWith("Contact: " + v + "\r\n")))
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			t.Fatalf("parsed a REGISTER into %T", msg)
		}
		cs, err := parseContacts(req)
		if err != nil {
			return
		}
		if cs.Wildcard && len(cs.Contacts) > 0 {
			t.Fatalf("wildcard beside %d contacts accepted", len(cs.Contacts))
		}
		if len(cs.Contacts) > maxContacts {
			t.Fatalf("%d contacts accepted", len(cs.Contacts))
		}
		for _, c := range cs.Contacts {
			if len(c.URI) > maxContactURILen || strings.ContainsAny(c.URI, "\r\n<> \t") {
				t.Fatalf("contact URI %q accepted", c.URI)
			}
			if c.Q != "" && !validQ(c.Q) {
				t.Fatalf("q %q accepted", c.Q)
			}
			// What we would echo in the 200 must parse as a Contact again.
			b := store.Binding{Contact: c.URI, Q: c.Q, InstanceID: c.InstanceID, ExpiresAt: time.Unix(3600, 0)}
			echo := bindingContact(b, time.Unix(0, 0))
			m2, err := sip.ParseMessage([]byte(registerWith("Contact: " + echo + "\r\n")))
			if err != nil {
				t.Fatalf("echoed contact %q does not parse: %v", echo, err)
			}
			if n := len(m2.(*sip.Request).GetHeaders("Contact")); n != 1 {
				t.Fatalf("echoed contact %q parses as %d contacts", echo, n)
			}
		}
	})
}

// FuzzParseHop: parseHop never panics, and what it accepts prints back to
// a value it reads the same.
func FuzzParseHop(f *testing.F) {
	mac := strings.Repeat("ab", 32)
	for _, s := range []string{"a;ts=1700000000;acct=acme;user=u1;mac=" + mac, "a;ts=1;acct=x;user=y;mac=" + mac + ";x=1",
		"a;ts=1;ts=2;acct=x;user=y;mac=" + mac, ";ts=1;acct=x;user=y;mac=" + mac, "a;ts=-1;acct=x;user=y;mac=" + mac,
		"a;ts=1;acct=x;user=y;mac=zz", "a ; TS = 5 ; acct=x;user=y;mac=" + mac, "", ";;;;", "a;ts=1;acct=x y;user=y;mac=" + mac} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseHop(s)
		if err != nil {
			return
		}
		if !hopToken(h.node) || !hopToken(h.acct) || !hopToken(h.user) || h.ts <= 0 || len(h.mac) != 32 {
			t.Fatalf("parseHop(%q) = %+v: accepted a bad field", s, h)
		}
		again, err := parseHop(h.String())
		if err != nil || again.String() != h.String() {
			t.Fatalf("parseHop(%q).String() = %q reads back as %+v, %v", s, h.String(), again, err)
		}
	})
}
