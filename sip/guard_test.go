package sip

import (
	"fmt"
	"testing"
	"time"
)

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
	if !e.srv.guard.Lift("127.0.0.1") {
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
