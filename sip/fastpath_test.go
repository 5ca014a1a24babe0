package sip

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"
	"github.com/icholy/digest"
)

// A retransmitted REGISTER gets the very response the first copy got, on
// both paths: the 401 with the same nonce, and after the 200 the same 200
// (not 500 Out of Order from the store, which has seen that CSeq). On the
// fast path it comes from the retransmission cache, without running the
// handler again.
func TestRegisterRetransmission(t *testing.T) {
	for _, mode := range []struct {
		name    string
		disable bool
	}{{"sipgo", true}, {"fastpath", false}} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, Config{DisableFastPath: mode.disable})
			c := newRawUAC(t, e.udpAddr, e.user.Extension, e.password)
			defer c.conn.Close()
			// A first registration sets the Call-ID's CSeq in the store.
			if err := c.register(); err != nil {
				t.Fatal(err)
			}
			first := c.message("")
			res, err := c.exchange(first)
			if err != nil || !strings.HasPrefix(res, "SIP/2.0 401 ") {
				t.Fatalf("REGISTER = %.60q, %v; want 401", res, err)
			}
			again, err := c.exchange(first)
			if err != nil || again != res {
				t.Fatalf("retransmitted REGISTER = %q, %v\nwant the same 401 %q", again, err, res)
			}

			if err := c.register(); err != nil {
				t.Fatal(err)
			}
			// c.register's authenticated request, sent again.
			c.cseq--
			c.branchNo--
			auth := c.lastAuth
			msg := c.message(auth)
			if !bytes.Equal(msg, c.lastSent) {
				t.Fatalf("rebuilt request differs:\n%s\nwant\n%s", msg, c.lastSent)
			}
			res, err = c.exchange(msg)
			if err != nil || res != c.lastResponse || !strings.HasPrefix(res, "SIP/2.0 200 ") {
				t.Fatalf("retransmitted REGISTER = %q, %v\nwant the same 200 %q", res, err, c.lastResponse)
			}
			if n := len(e.bindings(e.user)); n != 1 {
				t.Errorf("bindings = %d, want 1", n)
			}
			want := 2.0
			if mode.disable {
				want = 0
			}
			if got := counterValue(t, e.srv.tm.retransmissions); got != want {
				t.Errorf("retransmissions answered from the cache = %v, want %v", got, want)
			}
			// Sources on the fast path never reach sipgo, so its source
			// table (udp.go) does not hold them.
			if got, want := e.srv.udpSources(), 1-int(want/2); got != want {
				t.Errorf("UDP sources remembered = %d, want %d", got, want)
			}
		})
	}
}

// The cache absorbs a retransmission while the first copy is handled,
// answers it after, forgets a request that got no answer, and stays
// bounded.
func TestRetransCache(t *testing.T) {
	c := newRetransCache()
	now := time.Unix(1000, 0)
	if _, seen := c.begin("a", now); seen {
		t.Fatal("new key seen")
	}
	if res, seen := c.begin("a", now); !seen || res != nil {
		t.Fatalf("retransmission while handled = %q, %v; want absorbed", res, seen)
	}
	c.finish("a", []byte("200"), now)
	if res, _ := c.begin("a", now.Add(time.Second)); string(res) != "200" {
		t.Fatalf("retransmission after = %q, want the 200", res)
	}
	if _, seen := c.begin("a", now.Add(retransTTL)); seen {
		t.Fatal("a request older than Timer J was answered from the cache")
	}
	c.begin("b", now)
	c.forget("b")
	if _, seen := c.begin("b", now); seen {
		t.Fatal("a forgotten request was absorbed")
	}
	for i := range 3 * retransEntries {
		c.begin(strings.Repeat("k", i%7)+string(rune(i)), now)
	}
	if n := len(c.cur) + len(c.prev); n > 2*retransEntries {
		t.Fatalf("cache holds %d entries, want at most %d", n, 2*retransEntries)
	}
}

// squeezed (the front door's allocation-free check) agrees with building
// the squeezed value.
func FuzzSqueezed(f *testing.F) {
	for _, s := range []string{"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "SIP/2.0/UDP  h ; rport", ` "A B" <sip:a@b> ;tag=1`,
		"\"a\\\" b\" <sip:x y>", "a\tb", " a", "a ", "a, b", `"unterminated b`, "<sip:a@b>;q=0.5", "1 REGISTER", "1  REGISTER"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			seps   string
			angles bool
		}{{"/;=,:", false}, {";=,", true}} {
			if got, want := squeezed(s, c.seps, c.angles), squeezeSlow(s, c.seps, c.angles) == s; got != want {
				t.Fatalf("squeezed(%q, %q, %v) = %v, want %v", s, c.seps, c.angles, got, want)
			}
		}
		if v := normValue("cseq", s); v != s {
			// The short cut must not have let an unnormalized CSeq through.
			return
		}
		num, method, ok := strings.Cut(s, " ")
		if ok && (strings.ContainsAny(num, "\t") || strings.Trim(method, " \t") != method) {
			t.Fatalf("normValue(cseq, %q) left it unnormalized", s)
		}
	})
}

// Both paths run the same checks and count the same: the same sequence of
// requests gets the same answers and the same metrics with the fast path
// on and off, over UDP and TCP.
func TestFastPathSameChecks(t *testing.T) {
	type outcome struct {
		Answers  []string
		Requests float64
		Status   map[string]float64
	}
	run := func(t *testing.T, disable bool, transport string) outcome {
		e := newEnv(t, Config{DisableFastPath: disable, MaxInFlight: 64})
		network := strings.ToLower(transport)
		var o outcome
		answer := func(what string, res *sip.Response) {
			if res == nil {
				o.Answers = append(o.Answers, what+": none")
				return
			}
			a := what + ": " + strconv.Itoa(res.StatusCode) + " " + res.Reason
			for _, h := range []string{"Allow", "Retry-After", "WWW-Authenticate", "Contact"} {
				if res.GetHeader(h) != nil {
					a += " +" + h
				}
			}
			o.Answers = append(o.Answers, a)
		}
		raw := func(what string, lines ...string) {
			answer(what, rawExchange(t, network, e.addr(transport), rawMsg(transport, lines...), 5*time.Second))
		}
		raw("OPTIONS", optionsLines("Content-Length: 0")...)
		reg := func(cseq string, extra ...string) []string {
			l := []string{"REGISTER sip:example.test SIP/2.0", "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch};rport",
				"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=fp1", "To: <sip:1001@example.test>", "Call-ID: {callid}",
				"CSeq: " + cseq, "Contact: <sip:1001@127.0.0.1:5999>"}
			l = append(l, extra...)
			return append(l, "Content-Length: 0", "", "")
		}
		raw("CSeq method mismatch", reg("1 OPTIONS")...)
		raw("two To", reg("1 REGISTER", "To: <sip:1002@example.test>")...)
		replace := func(lines []string, old, new string) []string {
			for i, l := range lines {
				if l == old {
					lines[i] = new
				}
			}
			return lines
		}
		raw("bad To URI", replace(reg("1 REGISTER"), "To: <sip:1001@example.test>", "To: <sips:example.test>")...)
		raw("wildcard without Expires 0", replace(reg("1 REGISTER"), "Contact: <sip:1001@127.0.0.1:5999>", "Contact: *")...)
		raw("no credentials", reg("1 REGISTER")...)
		raw("brief", reg("1 REGISTER", "Expires: 5")...)
		u := e.uac(transport, "1001", e.password)
		answer("register", u.register("MD5", "Contact: <sip:1001@127.0.0.1:7300>"))
		answer("wrong password", e.uac(transport, "1001", "wrong").register("MD5", "Contact: <sip:1001@127.0.0.1:7301>"))
		answer("unknown user", e.uac(transport, "1999", "x").register("MD5", "Contact: <sip:1999@127.0.0.1:7302>"))
		e.srv.inFlight.Add(64)
		raw("overload", reg("1 REGISTER")...)
		e.srv.inFlight.Add(-64)

		if !disable && transport == "UDP" && e.srv.udpSources() != 0 {
			t.Errorf("%d UDP sources reached sipgo with the fast path on", e.srv.udpSources())
		}
		o.Requests = counterValue(t, e.srv.metrics.requests.WithLabelValues("REGISTER"))
		o.Status = map[string]float64{}
		for _, code := range []string{"200", "400", "401", "423", "503"} {
			o.Status[code] = counterValue(t, e.srv.metrics.registers.WithLabelValues(code))
		}
		return o
	}
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			slow, fast := run(t, true, transport), run(t, false, transport)
			if diff := cmp.Diff(slow, fast); diff != "" {
				t.Errorf("sipgo's path (-) and the fast path (+) differ:\n%s", diff)
			}
			if len(fast.Answers) != 11 || fast.Status["200"] != 1 || fast.Status["503"] != 1 {
				t.Errorf("unexpected outcome: %+v", fast)
			}
			t.Logf("%s", strings.Join(fast.Answers, "\n"))
		})
	}
}

// The fast path hands the front door's parse to a worker while the UDP
// read buffer is reused: the parsed request must not alias the bytes it
// was parsed from.
func TestParsedRequestOwnsItsMemory(t *testing.T) {
	msg := rawMsg("UDP", []string{"REGISTER sip:example.test SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport",
		"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=fp1", "To: <sip:1001@example.test>", "Call-ID: {callid}",
		"CSeq: 1 REGISTER", "Contact: <sip:1001@127.0.0.1:5999>;expires=60", "X-Other: value", "User-Agent: phone 1.0",
		`Authorization: Digest username="1001", realm="example.test", nonce="n", uri="sip:example.test", response="0123456789abcdef0123456789abcdef"`,
		"Content-Length: 4", "", "body"}...)
	parsed, err := probeParser.ParseSIP(msg)
	if err != nil {
		t.Fatal(err)
	}
	before := parsed.String()
	for i := range msg {
		msg[i] = 'x'
	}
	if after := parsed.String(); after != before {
		t.Fatalf("request changed with its buffer:\n%s\nwas\n%s", after, before)
	}
}

// A retransmission sent right behind the first copy (which waits for the
// store's commit on a worker) is absorbed or answered from the cache, never
// handled again: the phone sees 200s only, and the store sees one REGISTER.
func TestRetransmissionWhileHandled(t *testing.T) {
	e := newEnv(t, Config{})
	c := newRawUAC(t, e.udpAddr, e.user.Extension, e.password)
	defer c.conn.Close()
	if err := c.register(); err != nil {
		t.Fatal(err)
	}
	// The next authenticated REGISTER, sent three times at once.
	first := c.message("")
	res, err := c.exchange(first)
	if err != nil || !strings.HasPrefix(res, "SIP/2.0 401 ") {
		t.Fatalf("REGISTER = %.60q, %v; want 401", res, err)
	}
	chal := findChallenge(t, mustParseResponse(t, res), "MD5")
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + testDomain, Username: c.ext, Password: c.pw, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	msg := c.message(cred.String())
	for range 3 {
		if _, err := c.conn.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.conn.Read(c.buf)
	if err != nil || !strings.HasPrefix(string(c.buf[:n]), "SIP/2.0 200 ") {
		t.Fatalf("REGISTER sent thrice: first answer %.60q, %v; want 200", c.buf[:n], err)
	}
	// Once the answer is out, a fourth copy is answered from the cache.
	// Copies 2 and 3 were absorbed while the first was handled, or (when
	// the first was answered before they arrived: a pure refresh does not
	// wait for the disk) answered from the cache too; either way every
	// datagram that comes back is a 200 and each copy counts once.
	if _, err := c.conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for counterValue(t, e.srv.tm.retransmissions) < 3 && time.Now().Before(deadline) {
		_ = c.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := c.conn.Read(c.buf); err == nil && !strings.HasPrefix(string(c.buf[:n]), "SIP/2.0 200 ") {
			t.Fatalf("a copy was answered %.60q, want 200", c.buf[:n])
		}
	}
	if got := counterValue(t, e.srv.tm.retransmissions); got != 3 {
		t.Errorf("retransmissions absorbed or answered = %v, want 3", got)
	}
	if got := counterValue(t, e.srv.metrics.registers.WithLabelValues("500")); got != 0 {
		t.Errorf("%v REGISTERs answered 500, want none", got)
	}
	if got := counterValue(t, e.srv.metrics.registers.WithLabelValues("200")); got != 2 {
		t.Errorf("REGISTERs handled to a 200 = %v, want 2 (one registration, one REGISTER of the three copies)", got)
	}
}

func mustParseResponse(t *testing.T, s string) *sip.Response {
	t.Helper()
	m, err := sip.ParseMessage([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	res, ok := m.(*sip.Response)
	if !ok {
		t.Fatalf("not a response: %q", s)
	}
	return res
}
