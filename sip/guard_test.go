package sip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// A source that keeps guessing passwords is blocked: even a correct REGISTER
// from it is refused (403, no challenge) until the block is lifted.
func TestBruteForceBlocksSource(t *testing.T) {
	e := newEnv(t, Config{})
	for i := 0; i < 10; i++ {
		u := e.uac("UDP", fmt.Sprint(2000+i), "guess")
		if res := u.register(algMD5, "Contact: <sip:x@127.0.0.1:5099>"); res.StatusCode != 401 {
			t.Fatalf("guess %d = %d, want 401", i, res.StatusCode)
		}
	}
	good := e.uac("TCP", "1001", e.password)
	res := good.do(good.request("Contact: <sip:1001@127.0.0.1:5099;transport=tcp>"))
	if res.StatusCode != 403 || res.GetHeader("WWW-Authenticate") != nil {
		t.Fatalf("REGISTER over TCP from a blocked source = %d (challenge %v), want 403 without a challenge", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
	// Over UDP a blocked source is dropped before parsing: no answer at all.
	raw := "OPTIONS sip:" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKblocked;rport\r\n" +
		"From: <sip:1001@" + testDomain + ">;tag=b\r\nTo: <sip:" + testDomain + ">\r\nCall-ID: blocked@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if res := rawExchange(t, "udp", e.udpAddr, []byte(raw), 300*time.Millisecond); res != nil {
		t.Fatalf("a blocked UDP source got an answer: %d", res.StatusCode)
	}
	if got := counterValue(t, e.srv.metrics.blockedDrops); got < 2 {
		t.Errorf("dialtone_sip_blocked_requests_total = %v, want >= 2", got)
	}
	blocks := e.srv.guard.Blocks()
	if len(blocks) != 1 || blocks[0].Source != "127.0.0.1" || blocks[0].User != "" {
		t.Fatalf("blocks = %+v, want the whole source 127.0.0.1", blocks)
	}
	if got := counterValue(t, e.srv.metrics.blocks); got != 1 {
		t.Errorf("dialtone_sip_blocks_total = %v, want 1", got)
	}
	if !e.srv.guard.Lift(loopback) {
		t.Fatal("Lift found no block")
	}
	if res := good.register(algMD5, "Contact: <sip:1001@127.0.0.1:5099;transport=tcp>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER after the block was lifted = %d, want 200", res.StatusCode)
	}
	if res := rawExchange(t, "udp", e.udpAddr, []byte(raw), 2*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS over UDP after the block was lifted = %v, want 200", res)
	}
}

// An office NAT: a source that holds a valid registration is not blocked for
// another user's failures; only the guessed user is blocked from it.
func TestBruteForceSparesRegisteredSource(t *testing.T) {
	e := newEnv(t, Config{})
	_, pw2 := e.addUser("1002")
	good := e.uac("TCP", "1001", e.password)
	if res := good.register(algSHA256, "Contact: <sip:1001@127.0.0.1:5099;transport=tcp>"); res.StatusCode != 200 {
		t.Fatalf("first REGISTER = %d", res.StatusCode)
	}
	attacker := e.uac("UDP", "1002", pw2+"wrong")
	for i := 0; i < 30; i++ {
		attacker.register(algMD5, "Contact: <sip:1002@127.0.0.1:5098>")
	}
	if res := good.register(algSHA256, "Contact: <sip:1001@127.0.0.1:5099;transport=tcp>"); res.StatusCode != 200 {
		t.Fatalf("the registered user's refresh after another user's failures = %d, want 200", res.StatusCode)
	}
	right := e.uac("UDP", "1002", pw2)
	if res := right.do(right.request("Contact: <sip:1002@127.0.0.1:5098>")); res.StatusCode != 403 {
		t.Fatalf("the guessed user from that source = %d, want 403 (blocked pair)", res.StatusCode)
	}
	blocks := e.srv.guard.Blocks()
	if len(blocks) != 1 || blocks[0].User != "1002@"+testDomain {
		t.Fatalf("blocks = %+v, want only user 1002 from the source", blocks)
	}
}

// udpPeer is a bare UDP socket bound to one loopback address, for datagrams
// a sipgo client would never send.
type udpPeer struct {
	t    *testing.T
	conn *net.UDPConn
	dst  *net.UDPAddr
	seq  int
}

func newUDPPeer(t *testing.T, local, dst string) *udpPeer {
	t.Helper()
	d, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", local, err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpPeer{t: t, conn: c, dst: d}
}

// register sends one REGISTER for user with the given Authorization ("" for
// none) and returns the answer (nil if none within wait).
func (p *udpPeer) register(user, auth string, wait time.Duration) *sip.Response {
	p.t.Helper()
	p.seq++
	local := p.conn.LocalAddr().String()
	msg := "REGISTER sip:" + testDomain + " SIP/2.0\r\n" +
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bKpeer%d-%d;rport\r\n", local, time.Now().UnixNano(), p.seq) +
		"From: <sip:" + user + "@" + testDomain + ">;tag=peer\r\nTo: <sip:" + user + "@" + testDomain + ">\r\n" +
		fmt.Sprintf("Call-ID: peer-%d@%s\r\nCSeq: %d REGISTER\r\n", time.Now().UnixNano(), local, p.seq) +
		"Contact: <sip:" + user + "@" + local + ">\r\nMax-Forwards: 70\r\n"
	if auth != "" {
		msg += "Authorization: " + auth + "\r\n"
	}
	msg += "Content-Length: 0\r\n\r\n"
	if _, err := p.conn.WriteToUDP([]byte(msg), p.dst); err != nil {
		p.t.Fatal(err)
	}
	p.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 65535)
	n, _, err := p.conn.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	m, err := sip.ParseMessage(buf[:n])
	if err != nil {
		p.t.Fatalf("answer does not parse: %v", err)
	}
	res, _ := m.(*sip.Response)
	return res
}

// Issue 11 row 10: datagrams with an Authorization the server never
// challenged this address for — a nonce obtained from another address (as
// an attacker spoofing an office's address would use), an invented nonce,
// another user's name — count nothing, so they cannot block the address a
// real phone registers from.
func TestSpoofedAuthorizationDoesNotBlock(t *testing.T) {
	e := newEnv(t, Config{})
	// The attacker, at its own address, gets a genuine challenge.
	attacker := newUDPPeer(t, "127.0.0.2", e.udpAddr)
	res := attacker.register("1001", "", 2*time.Second)
	if res == nil || res.StatusCode != 401 {
		t.Fatalf("attacker's first REGISTER = %v, want 401", res)
	}
	chal, err := digest.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	forged := func(user, nonce, password string, nc int) string {
		c := *chal
		c.Nonce = nonce
		cred, err := digest.Digest(&c, digest.Options{Method: "REGISTER", URI: "sip:" + testDomain, Username: user, Password: password, Count: nc})
		if err != nil {
			t.Fatal(err)
		}
		return cred.String()
	}
	// Everything below reaches the server from the office's address, as
	// spoofed datagrams would.
	office := newUDPPeer(t, "127.0.0.1", e.udpAddr)
	invented := strings.Repeat("A", len(chal.Nonce))
	for i := range 12 {
		for _, auth := range []string{
			forged("1001", chal.Nonce, "wrong", i+1),   // a real nonce, issued to another address
			forged("9999", chal.Nonce, "guess", i+1),   // the same for an unknown user
			forged("1002", chal.Nonce, "guess", i+1),   // a user other than the To user (403 before)
			forged("1001", invented, "wrong", 1),       // a nonce nobody issued
			forged("1001", chal.Nonce+"x", "wrong", 1), // a damaged one
		} {
			user := "1001"
			if strings.Contains(auth, `username="9999"`) {
				user = "9999"
			}
			// A challenge each (no 403 for another user's name: the
			// nonce is checked first; nothing dropped as blocked).
			if r := office.register(user, auth, 2*time.Second); r == nil || r.StatusCode != 401 {
				t.Fatalf("forged REGISTER %d = %v, want 401", i, r)
			}
		}
	}
	if bs := e.srv.guard.Blocks(); len(bs) != 0 {
		t.Fatalf("blocks after forged Authorizations = %+v, want none", bs)
	}
	// The phone behind that address still registers.
	phone := e.uac("UDP", "1001", e.password)
	if r := phone.register(algSHA256, "Contact: <sip:1001@127.0.0.1:5099>"); r.StatusCode != 200 {
		t.Fatalf("the real phone's REGISTER = %d, want 200", r.StatusCode)
	}
	// The attacker's nonce with the right password still does not work from
	// another address: nonces are bound to the address they were sent to.
	if r := office.register("1001", forged("1001", chal.Nonce, e.password, 50), 2*time.Second); r == nil || r.StatusCode != 401 {
		t.Fatalf("right password on another address's nonce = %v, want 401", r)
	}
	// A guesser who did get the challenge at its own address is counted.
	for i := range 10 {
		attacker.register("1001", forged("1001", chal.Nonce, "wrong", i+1), 2*time.Second)
	}
	if !e.srv.guard.Blocked(netip.MustParseAddr("127.0.0.2"), "") || e.srv.guard.Blocked(loopback, "1001@"+testDomain) {
		t.Fatalf("blocks = %+v, want 127.0.0.2 alone", e.srv.guard.Blocks())
	}
}
