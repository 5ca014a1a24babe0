package sip

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// Each component on the endpoint alone: what it does without the others,
// and what the endpoint answers for the methods nobody took (RFC 3261
// §8.2.1: 405 with Allow listing what is served, 501 for an unknown method).

// rawPhone is a phone on a plain UDP socket whose flow is written into the
// store directly (no Registrar needed): it answers every request but ACK
// with the status answer picks, and hands each request to the test.
type rawPhone struct {
	t      testing.TB
	conn   net.PacketConn
	answer func(*sip.Request) (int, string)
	reqs   chan *sip.Request
}

func newRawPhone(t testing.TB, answer func(*sip.Request) (int, string)) *rawPhone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPhone{t: t, conn: conn, answer: answer, reqs: make(chan *sip.Request, 16)}
	t.Cleanup(func() { conn.Close() })
	go p.serve()
	return p
}

func (p *rawPhone) addr() string { return p.conn.LocalAddr().String() }

func (p *rawPhone) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		req, ok := msg.(*sip.Request)
		if err != nil || !ok || req.IsAck() {
			continue
		}
		code, reason := p.answer(req)
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		if req.Method == sip.INVITE {
			res.To().Params.Add("tag", "rawphone")
		}
		_, _ = p.conn.WriteTo([]byte(res.String()), from)
		select {
		case p.reqs <- req:
		default:
		}
	}
}

// next returns the next request of method m the phone got.
func (p *rawPhone) next(m sip.RequestMethod) *sip.Request {
	p.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case r := <-p.reqs:
			if r.Method == m {
				return r
			}
		case <-deadline:
			p.t.Fatalf("the phone got no %s", m)
			return nil
		}
	}
}

// bind writes a UDP binding of u to the phone into the store, as a REGISTER
// from it would have.
func (e *env) bind(u store.User, p *rawPhone, userAgent string) {
	e.t.Helper()
	_, err := e.db.Register(store.RegisterRequest{AccountID: e.acct.ID, UserID: u.ID, CallID: "bind-" + p.addr(), CSeq: 1,
		Source: p.addr(), Transport: "udp", UserAgent: userAgent,
		Contacts: []store.ContactUpdate{{URI: "sip:" + u.Extension + "@" + p.addr(), Expires: 600}}})
	if err != nil {
		e.t.Fatal(err)
	}
}

// options sends OPTIONS over transport and returns the answer.
func (e *env) options(transport string) *sip.Response {
	e.t.Helper()
	u := e.uac(transport, "1001", "")
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: testDomain})
	req.SetDestination(u.dst)
	req.SetTransport(transport)
	return u.do(req)
}

// wantAllow checks res's status and its Allow header.
func wantAllow(t *testing.T, what string, res *sip.Response, code int, allow string) {
	t.Helper()
	if res.StatusCode != code {
		t.Errorf("%s = %d %s, want %d", what, res.StatusCode, res.Reason, code)
	}
	if h := res.GetHeader("Allow"); h == nil || h.Value() != allow {
		t.Errorf("%s: Allow = %v, want %q", what, h, allow)
	}
}

// The endpoint without components answers OPTIONS and refuses the rest:
// REGISTER (on the fast path's socket too) and INVITE get 405 with Allow:
// OPTIONS, an unknown method the front door's 501 with the same Allow.
func TestEndpointAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, coreOnly())
	for _, transport := range []string{"UDP", "TCP"} {
		wantAllow(t, transport+" OPTIONS", e.options(transport), 200, "OPTIONS")
		u := e.uac(transport, "1001", e.password)
		wantAllow(t, transport+" REGISTER", u.do(u.request("Contact: <sip:1001@127.0.0.1:7600>")), 405, "OPTIONS")
		c := e.caller(nil, transport, "1001", e.password)
		wantAllow(t, transport+" INVITE", c.start("1002", nil, true).final, 405, "OPTIONS")

		lines := []string{"FOO sip:example.test SIP/2.0", "Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch}",
			"Max-Forwards: 70", "From: <sip:1001@example.test>;tag=m1", "To: <sip:example.test>", "Call-ID: {callid}",
			"CSeq: 3 FOO", "Content-Length: 0", "", ""}
		res := rawExchange(t, strings.ToLower(transport), e.addr(transport), rawMsg(transport, lines...), within)
		if res == nil {
			t.Fatalf("%s FOO: no answer", transport)
		}
		wantAllow(t, transport+" FOO", res, 501, "OPTIONS")
	}
	if bs := e.bindings(e.user); len(bs) != 0 {
		t.Errorf("bindings without a registrar: %v", bs)
	}
}

// A Registrar alone registers (fast path and sipgo's path, UDP and TCP);
// calls get 405 with the methods it serves.
func TestRegistrarAlone(t *testing.T) {
	t.Parallel()
	for _, disable := range []bool{false, true} {
		e := newEnv(t, Config{DisableFastPath: disable}, coreOnly(), withRegistrar(RegistrarConfig{}))
		for i, transport := range []string{"UDP", "TCP"} {
			u := e.uac(transport, "1001", e.password)
			contact := "Contact: <sip:1001@127.0.0.1:760" + string(rune('0'+i)) + ">"
			if res := u.register("SHA-256", contact); res.StatusCode != 200 {
				t.Fatalf("fast path off=%v %s REGISTER = %d %s, want 200", disable, transport, res.StatusCode, res.Reason)
			}
			if n := len(e.bindings(e.user)); n != i+1 {
				t.Errorf("%s: %d bindings, want %d", transport, n, i+1)
			}
			wantAllow(t, transport+" OPTIONS", e.options(transport), 200, "REGISTER, OPTIONS")
			c := e.caller(nil, transport, "1001", e.password)
			wantAllow(t, transport+" INVITE", c.start("1001", nil, true).final, 405, "REGISTER, OPTIONS")
		}
	}
}

// A Proxy alone (no Registrar, no Announcer) authenticates the caller,
// forks to a binding the store holds, relays the callee's answer and
// records the call; a disabled target gets 486 at once (nobody to play
// the announcement); REGISTER gets 405.
func TestProxyAlone(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, coreOnly(), withProxy(ProxyConfig{}))
	callee, _ := e.addUser("1002")
	ph := newRawPhone(t, func(r *sip.Request) (int, string) { return 486, "Busy Here" })
	e.bind(callee, ph, "")
	off, _ := e.addUser("1003")
	e.disable(off)

	u := e.uac("UDP", "1001", e.password)
	wantAllow(t, "REGISTER", u.do(u.request("Contact: <sip:1001@127.0.0.1:7610>")), 405, "INVITE, ACK, CANCEL, BYE, OPTIONS")

	c := e.caller(nil, "UDP", "1001", e.password)
	cl := c.start("1002", offer(4000, "0"), false)
	inv := ph.next(sip.INVITE)
	if pai := inv.GetHeader("P-Asserted-Identity"); pai == nil || !strings.Contains(pai.Value(), "sip:1001@"+testDomain) {
		t.Errorf("forwarded INVITE: P-Asserted-Identity = %v", pai)
	}
	if final := cl.waitFinal(within); final.StatusCode != 486 {
		t.Errorf("call to a busy phone: final %d, want the phone's 486", final.StatusCode)
	}
	if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeBusy || rec.Status != 486 {
		t.Errorf("record = %+v, want busy 486", rec)
	}

	cl = c.start("1003", offer(4000, "0"), false)
	if final := cl.waitFinal(within); final.StatusCode != 486 {
		t.Errorf("call to a disabled user: final %d, want 486", final.StatusCode)
	}
	if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeAnnouncedBusy || !strings.Contains(rec.Detail, "no announcer") {
		t.Errorf("record = %+v, want announced_busy without an announcer", rec)
	}
	if got := e.metric("dialtone_sip_announcements_played_total", ""); got != 0 {
		t.Errorf("announcements_played_total = %v without an Announcer", got)
	}
}

// An Announcer alone plays: an INVITE routed to it (here by a test route
// on the endpoint, with no Proxy) gets 183 with SDP, the announcement as
// RTP, then 486, and play reports the outcome for the call record.
func TestAnnouncerAlone(t *testing.T) {
	t.Parallel()
	type result struct {
		outcome, detail string
		status          int
	}
	results := make(chan result, 1)
	e := newCallEnv(t, coreOnly(), withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}),
		withSetup(func(e *env) {
			ann := e.ann
			err := e.srv.route(sip.INVITE, route{allow: true, tx: func(req *sip.Request, tx sip.ServerTransaction) {
				o, st, d := ann.play(req, tx, req.CallID().Value())
				results <- result{o, d, st}
			}})
			if err != nil {
				t.Fatal(err)
			}
		}))
	sink := newRTPSink(t)
	c := e.caller(nil, "UDP", "1001", e.password)
	cl := c.start("1002", offer(sink.port(), "8 0"), true)
	if cl.final.StatusCode != 486 {
		t.Fatalf("final = %d, want 486 after the announcement", cl.final.StatusCode)
	}
	sink.waitPackets(t, 10)
	select {
	case r := <-results:
		if r.outcome != store.OutcomeAnnouncedBusy || r.status != 486 {
			t.Errorf("play = %+v, want announced_busy 486", r)
		}
	case <-time.After(within):
		t.Fatal("play did not return")
	}
	if got := e.metric("dialtone_sip_announcements_played_total", ""); got != 1 {
		t.Errorf("announcements_played_total = %v, want 1", got)
	}
	waitFor(t, "the RTP port released", func() bool { return e.ann.ports.InUse() == 0 })
}

// A Notifier alone sends check-sync to a Yealink's flow and reports its
// answer; a device without registration is ErrNoRegistration.
func TestNotifierAlone(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, coreOnly(), withNotifier())
	u, _ := e.addUser("1002")
	const mac = "805ec0aabbcc"
	if _, err := e.db.CreateDevice(e.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := e.notifier.CheckSync(ctx, e.acct.ID, mac); !errors.Is(err, ErrNoRegistration) {
		t.Errorf("CheckSync without registration = %v, want ErrNoRegistration", err)
	}
	ph := newRawPhone(t, func(*sip.Request) (int, string) { return 200, "OK" })
	e.bind(u, ph, "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:cc")
	if err := e.notifier.CheckSync(ctx, e.acct.ID, mac); err != nil {
		t.Fatalf("CheckSync = %v", err)
	}
	if n := ph.next(sip.NOTIFY); n.GetHeader("Event") == nil || n.GetHeader("Event").Value() != "check-sync;reboot=false" {
		t.Errorf("NOTIFY Event = %v", n.GetHeader("Event"))
	}
}

// Two components cannot take one method: the second constructor fails.
func TestOneComponentPerMethod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{}, coreOnly(), withRegistrar(RegistrarConfig{}))
	if _, err := NewRegistrar(e.srv, RegistrarConfig{}); err == nil {
		t.Error("a second Registrar on one endpoint was accepted")
	}
}
