package sip

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

var fdSeq atomic.Int64

// rawMsg builds a request from lines (LF or CRLF ends), with {transport},
// {branch} and {callid} filled in and CRLF line ends; body is appended as is.
func rawMsg(transport string, lines ...string) []byte {
	n := fdSeq.Add(1)
	s := strings.Join(lines, "\r\n")
	s = strings.NewReplacer("{transport}", transport, "{branch}", fmt.Sprintf("z9hG4bKfd%d-%d", n, time.Now().UnixNano()),
		"{callid}", fmt.Sprintf("fd-%d@test", n)).Replace(s)
	return []byte(s)
}

func optionsLines(extra ...string) []string {
	l := []string{"OPTIONS sip:example.test SIP/2.0", "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
		"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=fd1", "To: <sip:example.test>", "Call-ID: {callid}", "CSeq: 7 OPTIONS"}
	l = append(l, extra...)
	return append(l, "", "")
}

// streamClient is one TCP connection to the server, kept across messages.
type streamClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialStream(t *testing.T, addr string) *streamClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &streamClient{t: t, c: c, br: bufio.NewReader(c)}
}

// exchange writes msg and returns the response read (nil when the server
// closed the connection or nothing came within 5 s).
func (s *streamClient) exchange(msg []byte) *sip.Response {
	s.t.Helper()
	if _, err := s.c.Write(msg); err != nil {
		s.t.Fatalf("write: %v", err)
	}
	s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	data := readStreamMessage(s.br)
	if data == nil {
		return nil
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		s.t.Fatalf("response does not parse: %v\n%s", err, data)
	}
	res, ok := m.(*sip.Response)
	if !ok {
		s.t.Fatalf("got a request back:\n%s", data)
	}
	return res
}

// closed reports whether the server closed the connection (within 5 s).
func (s *streamClient) closed() bool {
	s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := s.br.ReadByte()
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func wantStatus(t *testing.T, res *sip.Response, code int, reasonHas string) {
	t.Helper()
	if res == nil {
		t.Fatalf("no answer, want %d", code)
	}
	if res.StatusCode != code || !strings.Contains(res.Reason, reasonHas) {
		t.Fatalf("answer = %d %q, want %d with %q in the reason\n%s", res.StatusCode, res.Reason, code, reasonHas, res)
	}
}

// TestFrontDoorBadRequests: requests sipgo cannot parse, or that carry
// invalid UTF-8, get 400 with a reason naming the problem, over UDP and over
// TCP; over TCP the connection stays open and serves the next request
// (RFC 3261 §18.3, RFC 4475 §3.1.2).
func TestFrontDoorBadRequests(t *testing.T) {
	e := newEnv(t, Config{})
	cases := []struct {
		name, reason string
		lines        []string
	}{
		{"unterminated quote", "Unterminated Quoted String in Contact", optionsLines(`Contact: "Bob <sip:1001@127.0.0.1:5999>`)},
		{"ipv6 reference", "Malformed IPv6 Reference in Contact", optionsLines("Contact: <sip:1001@[2001:db8::10:5999>")},
		{"request-line", "Malformed Request-Line", append([]string{"OPTIONS  sip:example.test SIP/2.0"}, optionsLines()[1:]...)},
		{"negative content-length", "Malformed Content-Length", optionsLines("Content-Length: -5")},
		{"invalid utf-8", "Invalid UTF-8 in User-Agent", optionsLines("User-Agent: phone\xff\xfe", "Content-Length: 0")},
		{"conflicting content-length", "Conflicting Content-Length", optionsLines("Content-Length: 0", "l: 3")},
	}
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			var sc *streamClient
			if transport == "TCP" {
				sc = dialStream(t, e.tcpAddr)
			}
			for _, c := range cases {
				msg := rawMsg(transport, c.lines...)
				if transport == "TCP" && strings.Contains(c.name, "content-length") {
					// Not framable: answered, then the connection ends.
					sc2 := dialStream(t, e.tcpAddr)
					wantStatus(t, sc2.exchange(msg), 400, c.reason)
					if !sc2.closed() {
						t.Errorf("%s: connection still open after an unframable message", c.name)
					}
					continue
				}
				var res *sip.Response
				if sc != nil {
					res = sc.exchange(msg)
				} else {
					res = rawExchange(t, "udp", e.udpAddr, msg, 2*time.Second)
				}
				wantStatus(t, res, 400, c.reason)
				if got := res.CallID(); got == nil || !strings.HasPrefix(got.Value(), "fd-") {
					t.Errorf("%s: 400 without the request's Call-ID:\n%s", c.name, res)
				}
				if tag, _ := res.To().Params.Get("tag"); tag == "" {
					t.Errorf("%s: 400 without a To tag", c.name)
				}
				if res.CSeq() == nil || res.CSeq().SeqNo != 7 {
					t.Errorf("%s: 400 without the request's CSeq", c.name)
				}
				// RFC 3581 §4: the bare rport of the request is filled in.
				if via := res.Via(); via == nil || via.Params.GetOr("rport", "") == "" || via.Params.GetOr("received", "") != "127.0.0.1" {
					t.Errorf("%s: top Via = %v, want rport and received filled", c.name, via)
				}
			}
			if sc != nil {
				// The same connection still works.
				wantStatus(t, sc.exchange(rawMsg("TCP", optionsLines("Content-Length: 0")...)), 200, "OK")
			}
		})
	}
	// Over UDP, a Content-Length beyond the datagram (RFC 3261 §18.3).
	msg := rawMsg("UDP", optionsLines("Content-Type: text/plain", "Content-Length: 50")...)
	msg = append(msg, "short body"...)
	wantStatus(t, rawExchange(t, "udp", e.udpAddr, msg, 2*time.Second), 400, "Content-Length Exceeds Datagram")

	// No Via: nothing to answer to.
	noVia := rawMsg("UDP", "OPTIONS sip:example.test SIP/2.0", "From: \"x <sip:a@example.test>;tag=1", "To: <sip:example.test>",
		"Call-ID: {callid}", "CSeq: 1 OPTIONS", "", "")
	if res := rawExchange(t, "udp", e.udpAddr, noVia, 300*time.Millisecond); res != nil {
		t.Errorf("answered a request without Via: %d", res.StatusCode)
	}
}

// TestFrontDoorMethods: methods are case-sensitive tokens (RFC 3261 §7.1,
// §8.2.1): unknown ones get 501 with Allow, known ones we do not serve 405.
func TestFrontDoorMethods(t *testing.T) {
	e := newEnv(t, Config{})
	for _, transport := range []string{"UDP", "TCP"} {
		network := strings.ToLower(transport)
		for _, c := range []struct {
			method string
			code   int
		}{
			{"register", 501}, {"!interesting-Method0123456789_*+`.%indeed'~", 501}, {"FOO", 501}, {"SUBSCRIBE", 405},
		} {
			lines := []string{c.method + " sip:example.test SIP/2.0", "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch}",
				"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=m1", "To: <sip:example.test>", "Call-ID: {callid}",
				"CSeq: 3 " + c.method, "Content-Length: 0", "", ""}
			res := rawExchange(t, network, e.addr(transport), rawMsg(transport, lines...), 2*time.Second)
			if res == nil || res.StatusCode != c.code {
				t.Errorf("%s %q = %v, want %d", transport, c.method, res, c.code)
				continue
			}
			if h := res.GetHeader("Allow"); h == nil || !strings.Contains(h.Value(), "REGISTER") {
				t.Errorf("%s %q: %d without Allow", transport, c.method, c.code)
			}
		}
	}
}

// TestFrontDoorAcceptsOddities: valid but unusual requests are served as
// usual (RFC 4475 §3.1.1): folding and LWS around separators, compact
// forms, many Via headers, escaped URIs. The REGISTER is authenticated and
// must create its binding.
func TestFrontDoorAcceptsOddities(t *testing.T) {
	e := newEnv(t, Config{})
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			network := strings.ToLower(transport)
			vias := []string{"Via  :  SIP / 2.0 / {transport}\r\n    127.0.0.1:5999 ; branch = {branch} ; rport"}
			for i := 0; i < 60; i++ {
				vias = append(vias, fmt.Sprintf("v: SIP/2.0/UDP 192.0.2.%d:5060;branch=z9hG4bKhop%d", i%250+1, i))
			}
			opts := append([]string{"OPTIONS sip:%65xample.test SIP/2.0"}, vias...)
			opts = append(opts, "Max-Forwards: 70", "f: <sip:1001@example.test>\r\n ;tag=o1", "t: sip:example.test",
				"i: {callid}", "CSeq: 9\tOPTIONS", "l: 0", "", "")
			wantStatus(t, rawExchange(t, network, e.addr(transport), rawMsg(transport, opts...), 2*time.Second), 200, "OK")

			contact := fmt.Sprintf("<sip:1001@127.0.0.1:%d;transport=%s>", 6000+len(transport), network)
			reg := func(cseq int, authz string) []byte {
				lines := []string{"REGISTER sip:example.test SIP/2.0",
					"Via: SIP/2.0/{transport} 127.0.0.1:5999\r\n\t;branch={branch}",
					"Max-Forwards: 70",
					"From:   \"Front  Desk\"   <sip:1001@example.test> ;  tag = r1",
					"To: <sip:1001@example.test>",
					"Call-ID: oddities-" + transport + "@test",
					fmt.Sprintf("CSeq:  %d\r\n  REGISTER ", cseq),
					"m: " + contact + " ; expires = 600",
					"User-Agent: Tëst phone"}
				if authz != "" {
					lines = append(lines, "Authorization: "+authz)
				}
				return rawMsg(transport, append(lines, "Content-Length: 0", "", "")...)
			}
			res := rawExchange(t, network, e.addr(transport), reg(1, ""), 2*time.Second)
			wantStatus(t, res, 401, "")
			chal := findChallenge(t, res, "SHA-256")
			cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:example.test", Username: "1001",
				Password: e.password, Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			wantStatus(t, rawExchange(t, network, e.addr(transport), reg(2, cred.String()), 2*time.Second), 200, "OK")
			found := false
			for _, b := range e.bindings(e.user) {
				found = found || strings.Contains(b.Contact, fmt.Sprint(6000+len(transport)))
			}
			if !found {
				t.Errorf("no binding for %s after 200: %+v", contact, e.bindings(e.user))
			}
		})
	}
}

// TestFrontDoorInvalidUTF8NotStored: a REGISTER with valid credentials but
// a display name that is not UTF-8 is refused and leaves no binding.
func TestFrontDoorInvalidUTF8NotStored(t *testing.T) {
	e := newEnv(t, Config{})
	for _, transport := range []string{"UDP", "TCP"} {
		u := e.uac(transport, "1001", e.password)
		res := u.do(u.request())
		wantStatus(t, res, 401, "")
		u.nc = 0
		req := u.request("Contact: \"Caf\xe9\" <sip:1001@127.0.0.1:7711>")
		req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, res, "SHA-256")))
		wantStatus(t, u.do(req), 400, "Invalid UTF-8 in Contact")
	}
	if bs := e.bindings(e.user); len(bs) != 0 {
		t.Errorf("bindings = %+v, want none", bs)
	}
}

// TestStreamFraming: over TCP a CRLFCRLF keepalive is answered with CRLF,
// two requests in one segment both get answers, and a message over 64 KiB
// is answered 513 and ends the connection (one message is all a connection
// may buffer).
func TestStreamFraming(t *testing.T) {
	e := newEnv(t, Config{})
	sc := dialStream(t, e.tcpAddr)
	if _, err := sc.c.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	sc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	pong := make([]byte, 2)
	if _, err := sc.br.Read(pong); err != nil || string(pong) != "\r\n" {
		t.Fatalf("keepalive answer = %q, %v; want CRLF", pong, err)
	}
	two := append(rawMsg("TCP", optionsLines("Content-Length: 0")...), rawMsg("TCP", optionsLines("Content-Length: 0")...)...)
	// Without Content-Length (mandatory on streams) the message is refused,
	// taken as bodiless, and the connection goes on.
	wantStatus(t, sc.exchange(rawMsg("TCP", optionsLines()...)), 400, "Missing Content-Length")
	wantStatus(t, sc.exchange(two), 200, "OK")
	sc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if data := readStreamMessage(sc.br); data == nil || !strings.HasPrefix(string(data), "SIP/2.0 200") {
		t.Fatalf("second answer = %q", data)
	}

	big := rawMsg("TCP", optionsLines("X-Pad: "+strings.Repeat("a", 70000), "Content-Length: 0")...)
	sc2 := dialStream(t, e.tcpAddr)
	wantStatus(t, sc2.exchange(big), 513, "Message Too Large")
	if !sc2.closed() {
		t.Error("connection open after a message over 64 KiB")
	}
	// A body that would make the message too large is refused before it is read.
	sc3 := dialStream(t, e.tcpAddr)
	wantStatus(t, sc3.exchange(rawMsg("TCP", optionsLines("Content-Type: text/plain", "Content-Length: 900000")...)), 513, "")
	if !sc3.closed() {
		t.Error("connection open after announcing a 900 kB body")
	}
}
