package sip

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// FuzzMessage feeds whole messages through sipgo's parser and then through
// everything of ours that reads a request before a handler may trust it: the
// request checks, Contact and Expires parsing, and Authorization parsing. No
// input may panic; a request the checks accept must have the headers every
// handler dereferences. Seeds: the malformed corpus in testdata/malformed.
func FuzzMessage(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "malformed", "*.sip"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("REGISTER sip:example.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1;rport\r\n" +
		"From: <sip:1001@example.test>;tag=a\r\nTo: <sip:1001@example.test>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:1001@127.0.0.1:5062>;expires=600\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"))
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		if code, _ := checkRequest(req); code != 0 {
			return
		}
		if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
			t.Fatalf("checkRequest accepted a request without From/To/Call-ID/CSeq:\n%q", data)
		}
		_, _ = parseContacts(req)
		if h := req.GetHeader("Expires"); h != nil {
			_, _ = parseExpires(h.Value())
		}
		for _, h := range req.GetHeaders("Authorization") {
			_, _ = parseAuthorization(h.Value())
		}
	})
}

// FuzzFrontDoor feeds arbitrary bytes to the front door (frontdoor.go and
// its reader), as a datagram and as a framed stream message. No input may
// panic; what it passes on must parse with sipgo; what it answers must be
// one well-formed response head (status line, "Name: value" lines, empty
// line, no body) that never echoes a bare CR or LF. Seeds: the malformed and
// conformance message sets.
func FuzzFrontDoor(f *testing.F) {
	for _, dir := range []string{"malformed", "conformance"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.sip"))
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				continue
			}
			// Drop the "; …" description lines; use CRLF line ends.
			var lines []string
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.HasPrefix(l, ";") {
					lines = append(lines, strings.TrimSuffix(l, "\r"))
				}
			}
			f.Add([]byte(strings.Join(lines, "\r\n")))
		}
	}
	f.Add([]byte("OPTIONS sip:a SIP/2.0\r\nVia: SIP / 2.0 / UDP h ; branch = z9hG4bKx ; rport\r\nFrom: \"a\r\n b\" <sip:a@b>;tag=1\r\n" +
		"To: <sip:[::1>\r\nCall-ID: x\r\nCSeq: 1\tOPTIONS\r\nl: 5\r\n\r\nab"))
	tm, err := newTransportMetrics(nil)
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{cfg: Config{ServerName: "dialtone"}, tm: tm}
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, datagram := range []bool{true, false} {
			v := s.frontDoor(data, datagram, src)
			if v.pass != nil {
				if _, err := sip.NewParser().ParseSIP(v.pass); err != nil {
					t.Fatalf("passed a message sipgo cannot parse (%v):\n%q", err, v.pass)
				}
			}
			if v.reply == nil {
				continue
			}
			head, rest, ok := strings.Cut(string(v.reply), "\r\n\r\n")
			if !ok || rest != "" || !strings.HasPrefix(head, "SIP/2.0 ") {
				t.Fatalf("reply is not one response head:\n%q", v.reply)
			}
			for i, line := range strings.Split(head, "\r\n") {
				if strings.ContainsAny(line, "\r\n") {
					t.Fatalf("reply line %d has a bare CR or LF: %q", i, line)
				}
				if name, _, found := strings.Cut(line, ": "); i > 0 && (!found || !isToken(name)) {
					t.Fatalf("reply line %d is not a header: %q", i, line)
				}
			}
		}
		// The reader alone, on anything.
		if mv, ok := splitMessage(data); ok {
			_ = diagnose(&mv, true)
			_, _ = readEnvelope(&mv)
			_ = badDisplayName(&mv)
		}
	})
}
