package sip

import (
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// silentListener is a TCP address on 127.0.0.1 where a dial hangs (like a
// node dropping packets): a listening socket with a backlog of 0, whose
// accept queue is filled and never read, so the kernel drops further SYNs.
func silentListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full: dials hang
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not make a dial hang on this system")
	return ""
}

// TestSilentNodeDoesNotHoldCall: a user has a phone on our own flow and a
// binding held by a node that drops packets silently (its address does not
// answer a TCP dial). The local phone is rung at once and its answer
// reaches the caller within a few seconds: the hop dial is bounded
// (hopDialTimeout), not sipgo's or our 10 s connect timeout.
func TestSilentNodeDoesNotHoldCall(t *testing.T) {
	a, _, open := twoNodes(t)
	u, pw := a.addUser("1002")
	silent := open("silent")
	if err := silent.AnnounceNode(store.NodeInfo{SIPAddr: silentListener(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := silent.Register(store.RegisterRequest{AccountID: a.acct.ID, UserID: u.ID, CallID: "silent@test", CSeq: 1,
		Source: "192.0.2.5:5060", Transport: "udp",
		Contacts: []store.ContactUpdate{{URI: "sip:1002@192.0.2.5:5060", Expires: 600}}}); err != nil {
		t.Fatal(err)
	}
	p := a.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.30:5062", "")
	if bs := a.bindings(u); len(bs) != 2 {
		t.Fatalf("bindings = %+v, want 2 (one on node silent, one here)", bs)
	}
	const bound = 8 * time.Second // hopDialTimeout (2 s) and slack for a loaded machine under -race; the old dial waited 10 s
	start := time.Now()
	cl := a.caller(nil, "UDP", "1001", a.password).start("1002", nil, false)
	in := p.nextInvite(bound)
	in.respond(t, 486, "Busy Here", "")
	if res := cl.waitFinal(bound); res.StatusCode != 486 {
		t.Errorf("call → %d, want the local phone's 486", res.StatusCode)
	}
	if d := time.Since(start); d > bound {
		t.Errorf("the call took %v, want under %v (a silent node held it back)", d, bound)
	}
}
