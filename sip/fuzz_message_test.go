package sip

import (
	"os"
	"path/filepath"
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
