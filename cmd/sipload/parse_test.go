package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// kamailio401 was captured from Kamailio 5.6.3 running scripts/kamailio/kamailio.cfg.
const kamailio401 = "SIP/2.0 401 Unauthorized\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:42574;rport=42574;branch=z9hG4bKabc1;received=127.0.0.1\r\n" +
	"From: <sip:20001@bench.test>;tag=t1\r\n" +
	"To: <sip:20001@bench.test>;tag=5cf38246301506ee07d1ee2fc2bb373b.2e0eb587\r\n" +
	"Call-ID: 1-abc\r\n" +
	"CSeq: 1 REGISTER\r\n" +
	"WWW-Authenticate: Digest realm=\"bench.test\", nonce=\"awRmHWsEZPGPZwXbK+rzeiWHADCOSMoo\", qop=\"auth\"\r\n" +
	"Server: kamailio-bench\r\n" +
	"Content-Length: 0\r\n\r\n"

// rfc8760401 offers SHA-256 first, then MD5, as dialtone does.
const rfc8760401 = "SIP/2.0 401 Unauthorized\r\n" +
	"v: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n" +
	"i: 7-run\r\n" +
	"cseq:   41   REGISTER\r\n" +
	"www-authenticate: Digest realm=\"example.test\",nonce=\"n1\",algorithm=SHA-256,qop=\"auth,auth-int\",opaque=\"op\"\r\n" +
	"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"n2\", algorithm=MD5, qop=\"auth\", stale=TRUE\r\n" +
	"Content-Length: 0\r\n\r\n"

const ok200 = "SIP/2.0 200 OK\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n" +
	"Call-ID: 3-run\r\n" +
	"CSeq: 2 REGISTER\r\n" +
	"Contact: <sip:20003@127.0.0.1:5062>;expires=3600\r\n" +
	"Content-Type: text/plain\r\n" +
	"Content-Length: 5\r\n\r\nhello"

func TestParseResponse(t *testing.T) {
	type chal struct {
		Realm, Nonce, Opaque, Algorithm string
		HasQop, QopAuth, Stale          bool
	}
	type want struct {
		Code   int
		CallID string
		CSeq   uint32
		Method string
		Chals  []chal
	}
	tests := []struct {
		name string
		msg  string
		want want
	}{
		{"kamailio 401", kamailio401, want{401, "1-abc", 1, "REGISTER", []chal{{Realm: "bench.test", Nonce: "awRmHWsEZPGPZwXbK+rzeiWHADCOSMoo", HasQop: true, QopAuth: true}}}},
		{"two challenges, compact headers", rfc8760401, want{401, "7-run", 41, "REGISTER", []chal{
			{Realm: "example.test", Nonce: "n1", Opaque: "op", Algorithm: "SHA-256", HasQop: true, QopAuth: true},
			{Realm: "example.test", Nonce: "n2", Algorithm: "MD5", HasQop: true, QopAuth: true, Stale: true}}}},
		{"200 with body", ok200, want{200, "3-run", 2, "REGISTER", nil}},
		{"bare LF and no reason phrase", "SIP/2.0 503\nCall-ID: x\nCSeq: 9 REGISTER\nRetry-After: 5\n\n", want{503, "x", 9, "REGISTER", nil}},
		{"folded challenge", "SIP/2.0 401 Unauthorized\r\nCall-ID: f\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"r\",\r\n  nonce=\"abc\"\r\nContent-Length: 0\r\n\r\n",
			want{401, "f", 1, "REGISTER", []chal{{Realm: "r", Nonce: "abc"}}}},
		{"non-digest scheme skipped", "SIP/2.0 401 Unauthorized\r\nCall-ID: b\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Basic realm=\"r\"\r\n\r\n",
			want{401, "b", 1, "REGISTER", nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if err := parseResponse([]byte(tt.msg), &r); err != nil {
				t.Fatalf("parseResponse() = %v", err)
			}
			got := want{Code: r.code, CallID: string(r.callID), CSeq: r.cseq, Method: string(r.cseqMethod)}
			for _, c := range r.chals[:r.nchal] {
				got.Chals = append(got.Chals, chal{string(c.realm), string(c.nonce), string(c.opaque), string(c.algorithm), c.hasQop, c.qopAuth, c.stale})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseResponse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseResponseErrors(t *testing.T) {
	tests := []struct {
		name, msg string
		want      error
	}{
		{"request", "OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\n\r\n", errNotResponse},
		{"garbage", "hello\r\n\r\n", errStatusLine},
		{"code out of range", "SIP/2.0 099 Low\r\n\r\n", errStatusLine},
		{"code not digits", "SIP/2.0 2x0 OK\r\n\r\n", errStatusLine},
		{"no header end", "SIP/2.0 200 OK\r\nCall-ID: a\r\n", errHeader},
		{"header without colon", "SIP/2.0 200 OK\r\nCall-ID a\r\n\r\n", errHeader},
		{"no Call-ID", "SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\n\r\n", errNoCallID},
		{"no CSeq", "SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\n", errCSeq},
		{"CSeq too big", "SIP/2.0 200 OK\r\nCall-ID: a\r\nCSeq: 4294967296 REGISTER\r\n\r\n", errCSeq},
		{"CSeq without method", "SIP/2.0 200 OK\r\nCall-ID: a\r\nCSeq: 12\r\n\r\n", errCSeq},
		{"unterminated quote", "SIP/2.0 401 U\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"r, nonce=\"x\r\n\r\n", errChallenge},
		{"challenge without realm", "SIP/2.0 401 U\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest nonce=\"x\"\r\n\r\n", errChallenge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if err := parseResponse([]byte(tt.msg), &r); err != tt.want {
				t.Errorf("parseResponse() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPick(t *testing.T) {
	var r response
	if err := parseResponse([]byte(rfc8760401), &r); err != nil {
		t.Fatal(err)
	}
	if c := r.pick(algMD5); c == nil || string(c.nonce) != "n2" {
		t.Errorf("pick(MD5) = %+v, want the n2 challenge", c)
	}
	if c := r.pick(algSHA256); c == nil || string(c.nonce) != "n1" {
		t.Errorf("pick(SHA-256) = %+v, want the n1 challenge", c)
	}
	intOnly := "SIP/2.0 401 U\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"r\", nonce=\"x\", qop=\"auth-int\"\r\n\r\n"
	if err := parseResponse([]byte(intOnly), &r); err != nil {
		t.Fatal(err)
	}
	if c := r.pick(algMD5); c != nil {
		t.Errorf("pick(MD5) with only qop=auth-int = %+v, want nil", c)
	}
}

func TestParseResponseAllocs(t *testing.T) {
	var r response
	msg := []byte(rfc8760401)
	allocs := testing.AllocsPerRun(100, func() {
		if err := parseResponse(msg, &r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("parseResponse allocates %.0f times per message, want 0", allocs)
	}
}

func TestFramer(t *testing.T) {
	stream := "\r\n\r\n" + ok200 + kamailio401 + "\r\n" + ok200[:40]
	f := framer{buf: []byte(stream)}
	var got []string
	for {
		msg, err := f.next()
		if err != nil {
			t.Fatalf("next() = %v", err)
		}
		if msg == nil {
			break
		}
		got = append(got, string(msg))
	}
	if diff := cmp.Diff([]string{ok200, kamailio401}, got); diff != "" {
		t.Errorf("framed messages (-want +got):\n%s", diff)
	}
	if string(f.buf) != ok200[:40] {
		t.Errorf("left over %q, want the partial message", f.buf)
	}
	for _, bad := range []string{
		"SIP/2.0 200 OK\r\nCall-ID: a\r\n\r\n",                   // no Content-Length
		"SIP/2.0 200 OK\r\nContent-Length: 1x\r\n\r\n",           // not a number
		"SIP/2.0 200 OK\r\nl: 9999999\r\n\r\n",                   // absurd
		"SIP/2.0 200 OK\r\n" + strings.Repeat("X: y\r\n", 20000), // never ends
	} {
		f := framer{buf: []byte(bad)}
		if _, err := f.next(); err != errFrame {
			t.Errorf("next(%.40q…) = %v, want errFrame", bad, err)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{kamailio401, rfc8760401, ok200,
		"SIP/2.0 401 U\r\nCall-ID: a\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"r\\\"q\", nonce=\"x\"\r\n\r\n",
		"SIP/2.0 401 U\r\nCall-ID: f\r\nCSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"r\",\r\n\tnonce=x\r\n\r\n",
		"SIP/2.0 503 Busy\r\nCall-ID: b\r\nCSeq: 2 REGISTER\r\nRetry-After: 17 (overload);duration=5\r\n\r\n",
		"OPTIONS sip:x SIP/2.0\r\n\r\n", "", "\n", "SIP/2.0 200 OK\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r response
		if err := parseResponse(data, &r); err != nil {
			return
		}
		if r.code < 100 || r.code > 699 {
			t.Errorf("code %d accepted", r.code)
		}
		if r.retryAfterS < 0 || r.retryAfterS > 86400 || r.retryAfterS > 0 && !r.retryAfter {
			t.Errorf("Retry-After %d s (present %v)", r.retryAfterS, r.retryAfter)
		}
		if len(r.callID) == 0 || len(r.cseqMethod) == 0 {
			t.Errorf("accepted without Call-ID or CSeq method: %q %q", r.callID, r.cseqMethod)
		}
		for _, c := range r.chals[:r.nchal] {
			if c.realm == nil || c.nonce == nil {
				t.Errorf("challenge without realm or nonce accepted: %+v", c)
			}
		}
		// Framing the same bytes must never panic either.
		fr := framer{buf: data}
		for i := 0; i < 10; i++ {
			msg, err := fr.next()
			if err != nil || msg == nil {
				break
			}
		}
	})
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tt := range []struct {
		hdr  string
		want int
	}{{"Retry-After: 17", 17}, {"Retry-After: 5 (busy);duration=9", 5}, {"retry-after:30;x", 30}, {"Retry-After: soon", 0}, {"Retry-After: 99999999999", 86400}} {
		var r response
		msg := "SIP/2.0 503 Busy\r\nCall-ID: b\r\nCSeq: 2 REGISTER\r\n" + tt.hdr + "\r\n\r\n"
		if err := parseResponse([]byte(msg), &r); err != nil {
			t.Fatalf("%q: %v", tt.hdr, err)
		}
		if !r.retryAfter || r.retryAfterS != tt.want {
			t.Errorf("%q: Retry-After %v %d s, want %d s", tt.hdr, r.retryAfter, r.retryAfterS, tt.want)
		}
	}
}
