package sip

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ourRoute is a Route value naming dialtone's listener for transport.
func (e *env) ourRoute(transport string) string {
	_, port, _ := net.SplitHostPort(e.addr(transport))
	return "<sip:127.0.0.1:" + port + ";transport=" + strings.ToLower(transport) + ";lr>"
}

// forged is a request an outsider builds: our Route on top, a Request-URI
// of its choosing, From/To in the account's domain, tags when toTag is set.
func forged(method sip.RequestMethod, ruri, route, callID, fromTag, toTag string) *sip.Request {
	var u sip.Uri
	if err := sip.ParseUri(ruri, &u); err != nil {
		panic(err)
	}
	r := sip.NewRequest(method, u)
	r.AppendHeader(sip.NewHeader("Route", route))
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "1001", Host: testDomain}, Params: sip.NewParams()}
	from.Params.Add("tag", fromTag)
	r.AppendHeader(from)
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1002", Host: testDomain}, Params: sip.NewParams()}
	if toTag != "" {
		to.Params.Add("tag", toTag)
	}
	r.AppendHeader(to)
	cid := sip.CallIDHeader(callID)
	r.AppendHeader(&cid)
	r.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: method})
	return r
}

// doFinal sends r as a client transaction and returns its final response.
func doFinal(t *testing.T, cli *sipgo.Client, r *sip.Request, transport, dst string) *sip.Response {
	t.Helper()
	r.SetTransport(transport)
	r.SetDestination(dst)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, r)
	if err != nil {
		t.Fatalf("%s: %v", r.Method, err)
	}
	return res
}

// expectNothing checks that none of the phone's handlers got a request.
// Call it after the final response to the request that might have reached
// the phone: a forwarded request's response comes from the phone, so
// anything forwarded has arrived by then.
func expectNothing(t *testing.T, p *phone, what string) {
	t.Helper()
	select {
	case in := <-p.invites:
		t.Errorf("%s: the phone got an INVITE:\n%s", what, in.req)
	case r := <-p.notifies:
		t.Errorf("%s: the phone got a NOTIFY:\n%s", what, r)
	case r := <-p.messages:
		t.Errorf("%s: the phone got a MESSAGE:\n%s", what, r)
	case r := <-p.infos:
		t.Errorf("%s: the phone got an INFO:\n%s", what, r)
	case r := <-p.byes:
		t.Errorf("%s: the phone got a BYE:\n%s", what, r)
	default:
	}
}

// TestForgedInDialogRequestsRefused (issue row 2): requests with our Route
// and a live contact as Request-URI, outside any dialog we created, never
// reach the phone, whatever the method, tags or transport.
func TestForgedInDialogRequestsRefused(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			contact := "sip:1002@192.0.2.60:5062"
			if transport == "TCP" {
				contact += ";transport=tcp"
			}
			victim := e.newPhone(transport, "1002", pw, contact, "Yealink SIP-T46U 108.86.0.20 805ec0aabb60")
			_, cli, _ := newTestUA(t)
			route := e.ourRoute(transport)
			reboot := forged(sip.NOTIFY, contact, route, "forged-notify@evil", "evil1", "x1")
			reboot.AppendHeader(sip.NewHeader("Event", "check-sync;reboot=true"))
			reboot.AppendHeader(sip.NewHeader("Subscription-State", "terminated"))
			msg := forged(sip.MESSAGE, contact, route, "forged-message@evil", "evil2", "x2")
			msg.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
			msg.SetBody([]byte("call me"))
			inv := forged(sip.INVITE, contact, route, "forged-invite@evil", "evil3", "x3")
			inv.AppendHeader(sip.NewHeader("Contact", "<sip:evil@127.0.0.1:5999>"))
			for _, tc := range []struct {
				name string
				req  *sip.Request
				want int
			}{
				{"NOTIFY check-sync reboot with To-tag", reboot, 481},
				{"MESSAGE with To-tag", msg, 481},
				{"INVITE with To-tag", inv, 481},
				{"MESSAGE without To-tag", forged(sip.MESSAGE, contact, route, "forged-m2@evil", "evil4", ""), 405},
				{"NOTIFY without To-tag", forged(sip.NOTIFY, contact, route, "forged-n2@evil", "evil5", ""), 405},
				{"BYE", forged(sip.BYE, contact, route, "forged-bye@evil", "evil6", "x6"), 481},
				{"INFO", forged(sip.INFO, contact, route, "forged-info@evil", "evil7", "x7"), 481},
			} {
				res := doFinal(t, cli, tc.req, transport, e.addr(transport))
				if res.StatusCode != tc.want {
					t.Errorf("%s → %d %s, want %d", tc.name, res.StatusCode, res.Reason, tc.want)
				}
				expectNothing(t, victim, tc.name)
			}
			// An initial INVITE (no To-tag) with our Route is an ordinary
			// call: it is challenged.
			first := forged(sip.INVITE, contact, route, "forged-initial@evil", "evil8", "")
			first.AppendHeader(sip.NewHeader("Contact", "<sip:evil@127.0.0.1:5999>"))
			if res := doFinal(t, cli, first, transport, e.addr(transport)); res.StatusCode != 407 {
				t.Errorf("initial INVITE with our Route → %d, want 407", res.StatusCode)
			}
			expectNothing(t, victim, "initial INVITE")
			victim.reg.register("", "Contact: *", "Expires: 0")
			if transport == "TCP" {
				if got := e.metric("dialtone_sip_in_dialog_refused_total", ""); got != 10 {
					t.Errorf("in_dialog_refused_total = %v, want 10 (5 per transport)", got)
				}
			}
		})
	}
}

// TestSameContactOtherUser (issue row 2): a second user of the account who
// registers the victim's contact URI gets none of the requests of the
// victim's dialogs, early (after a 180 with a tag) or confirmed.
func TestSameContactOtherUser(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	u2, pw2 := e.addUser("1002")
	u3, pw3 := e.addUser("1003")
	// The binding scan went through the account's bindings in user-ID
	// order: make the attacker the first, so a scan would find it.
	victimExt, victimPW, evilExt, evilPW := "1002", pw2, "1003", pw3
	if u2.ID < u3.ID {
		victimExt, victimPW, evilExt, evilPW = "1003", pw3, "1002", pw2
	}
	const contact = "sip:phone@192.0.2.61:5062"
	victim := e.newPhone("UDP", victimExt, victimPW, contact, "")
	evil := e.newPhone("UDP", evilExt, evilPW, contact, "")
	_, cliA, _ := newTestUA(t)
	a := e.caller(cliA, "UDP", "1001", e.password)
	cl := a.start(victimExt, offer(4000, "0"), false)
	in := victim.nextInvite(5 * time.Second)
	in.respond(t, 180, "Ringing", contact)
	var ringing *sip.Response
	for ringing == nil {
		if r := cl.next(5 * time.Second); r != nil && r.StatusCode == 180 {
			ringing = r
		} else if r == nil {
			t.Fatal("no 180")
		}
	}
	// INFO in the early dialog (RFC 6086 allows it), by its route set.
	info := cl.inDialog(sip.INFO, ringing, 3)
	res := doFinal(t, cliA, info, "UDP", e.udpAddr)
	if res.StatusCode != 200 {
		t.Errorf("early-dialog INFO → %d, want the victim's 200", res.StatusCode)
	}
	expectNothing(t, evil, "early-dialog INFO")
	select {
	case <-victim.infos:
	default:
		t.Error("the victim did not get the early-dialog INFO")
	}
	ok := answerCall200(t, cl, in, contact)
	if err := cliA.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
		t.Fatal(err)
	}
	<-victim.acks
	if res := doFinal(t, cliA, cl.inDialog(sip.INFO, ok, 4), "UDP", e.udpAddr); res.StatusCode != 200 {
		t.Errorf("INFO → %d", res.StatusCode)
	}
	<-victim.infos
	if res := doFinal(t, cliA, cl.inDialog(sip.BYE, ok, 5), "UDP", e.udpAddr); res.StatusCode != 200 {
		t.Errorf("BYE → %d", res.StatusCode)
	}
	<-victim.byes
	expectNothing(t, evil, "confirmed dialog")
	select {
	case r := <-evil.acks:
		t.Errorf("the other user got the ACK:\n%s", r)
	default:
	}
	// After the BYE the dialog is gone: a late INFO is refused, and reaches
	// no one.
	if res := doFinal(t, cliA, cl.inDialog(sip.INFO, ok, 6), "UDP", e.udpAddr); res.StatusCode != 481 {
		t.Errorf("INFO after BYE → %d, want 481", res.StatusCode)
	}
	expectNothing(t, evil, "after BYE")
	expectNothing(t, victim, "after BYE")
}

// answerCall200 answers in with 200 and returns the caller's 200.
func answerCall200(t *testing.T, cl *call, in *incoming, contact string) *sip.Response {
	t.Helper()
	in.respond(t, 200, "OK", contact)
	ok := cl.waitFinal(5 * time.Second)
	if ok.StatusCode != 200 {
		t.Fatalf("caller got %d, want 200", ok.StatusCode)
	}
	return ok
}

// watchTCP is a listener that reports every connection it accepts.
func watchTCP(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
			t.Cleanup(func() { c.Close() })
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), ch
}

// watchUDP is a socket that reports every datagram it gets.
func watchUDP(t *testing.T) (addr string, got <-chan []byte) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- append([]byte(nil), buf[:n]...)
		}
	}()
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String(), ch
}

// TestInDialogRouteAddedByCaller (issue row 3): a Route a party adds to an
// in-dialog request is ignored: the request goes to the other party's flow
// only, never to the host and port the Route names (no new connection).
// A request with the dialog's Call-ID and tags from another flow is refused.
func TestInDialogRouteAddedByCaller(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	const contactB = "sip:1002@192.0.2.62:5062"
	b := e.newPhone("UDP", "1002", pw, contactB, "")
	_, cliA, _ := newTestUA(t)
	a := e.caller(cliA, "UDP", "1001", e.password)
	cl := a.start("1002", offer(4000, "0"), false)
	in := b.nextInvite(5 * time.Second)
	ok := answerCall(t, cl, in, contactB)
	if err := cliA.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
		t.Fatal(err)
	}
	<-b.acks

	tcpAddr, conns := watchTCP(t)
	udpAddr, dgrams := watchUDP(t)
	for i, extra := range []string{
		"<sip:" + tcpAddr + ";transport=tcp;lr>",
		"<sip:" + udpAddr + ";lr>",
		"<sip:x@" + tcpAddr + ";transport=tcp>", // strict-routing style
	} {
		info := cl.inDialog(sip.INFO, ok, uint32(3+i))
		info.AppendHeader(sip.NewHeader("Route", extra))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tx, err := cliA.TransactionRequest(ctx, info)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-b.infos:
			if r.Route() != nil {
				t.Errorf("INFO reached B with a Route: %v", r.GetHeaders("Route"))
			}
		case c := <-conns:
			t.Fatalf("Route %s: dialtone connected to the address the caller named (%s)", extra, c.RemoteAddr())
		case d := <-dgrams:
			t.Fatalf("Route %s: dialtone sent to the address the caller named:\n%s", extra, d)
		case <-time.After(5 * time.Second):
			t.Fatalf("Route %s: INFO reached no one", extra)
		}
		select {
		case res := <-tx.Responses():
			if res.StatusCode != 200 {
				t.Errorf("INFO → %d", res.StatusCode)
			}
		case <-time.After(5 * time.Second):
			t.Error("no response to the INFO")
		}
		tx.Terminate()
	}
	select {
	case c := <-conns:
		t.Errorf("dialtone connected to the watched listener from %s", c.RemoteAddr())
	case d := <-dgrams:
		t.Errorf("dialtone sent to the watched socket:\n%s", d)
	default:
	}

	// The dialog's Call-ID and tags over another flow (TCP, not the
	// caller's UDP): refused.
	_, cliX, _ := newTestUA(t)
	x := cl.inDialog(sip.INFO, ok, 9)
	x.RemoveHeader("Route")
	x.AppendHeader(sip.NewHeader("Route", e.ourRoute("TCP")))
	if res := doFinal(t, cliX, x, "TCP", e.tcpAddr); res.StatusCode != 481 {
		t.Errorf("INFO from another flow → %d, want 481", res.StatusCode)
	}
	expectNothing(t, b, "INFO from another flow")
}

// TestCallerAssertionsStripped (issue row 9): a caller's identity and
// auto-answer headers never reach the callee, in the INVITE or inside the
// dialog; the INVITE carries the authenticated caller's identity instead.
func TestCallerAssertionsStripped(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	if _, err := e.db.UpdateUser(e.acct.ID, e.user.ID, store.UserPatch{Name: ptr(`Ann \ Smith`)}, store.System); err != nil {
		t.Fatal(err)
	}
	const contactB = "sip:1002@192.0.2.63:5062"
	b := e.newPhone("TCP", "1002", pw, contactB, "")
	_, cliA, _ := newTestUA(t)
	a := e.caller(cliA, "TCP", "1001", e.password)
	injected := []string{
		`P-Asserted-Identity: "CEO" <sip:1000@` + testDomain + `>`,
		`p-asserted-identity: <tel:+15551234567>`,
		`P-Preferred-Identity: "CEO" <sip:1000@` + testDomain + `>`,
		`Call-Info: <sip:` + testDomain + `>;answer-after=0`,
		`call-info: <sip:x@` + testDomain + `>;Answer-After=1`,
		`Call-Info: <http://` + testDomain + `/ann.png>;purpose=icon`,
		`Alert-Info: <http://www.notused.com>;info=alert-autoanswer;delay=0`,
		`Alert-Info: Auto Answer`,
		`alert-info: <intercom>`,
		`Alert-Info: <http://` + testDomain + `/ring.wav>`,
		`Answer-Mode: Auto`,
		`Priv-Answer-Mode: Auto`,
	}
	a.headers = injected
	cl := a.start("1002", offer(4000, "0"), false)
	in := b.nextInvite(5 * time.Second)

	const wantPAI = `"Ann  Smith" <sip:1001@` + testDomain + `>`
	checkStripped := func(r *sip.Request, pai bool) {
		t.Helper()
		var got []string
		for _, h := range r.Headers() {
			switch strings.ToLower(h.Name()) {
			case "p-asserted-identity", "p-preferred-identity", "call-info", "alert-info", "answer-mode", "priv-answer-mode":
				got = append(got, h.Name()+": "+h.Value())
			}
		}
		want := []string{
			"Call-Info: <http://" + testDomain + "/ann.png>;purpose=icon",
			"Alert-Info: <http://" + testDomain + "/ring.wav>",
		}
		if pai {
			want = append(want, "P-Asserted-Identity: "+wantPAI)
		}
		if fmt.Sprint(sortedCopy(got)) != fmt.Sprint(sortedCopy(want)) {
			t.Errorf("%s reached the callee with\n  %s\nwant\n  %s", r.Method, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
	checkStripped(in.req, true)
	// The callee cannot assert an identity to the caller either.
	res := sip.NewResponseFromRequest(in.req, 200, "OK", nil)
	res.To().Params.Add("tag", in.tag)
	res.AppendHeader(sip.NewHeader("Contact", "<"+contactB+">"))
	res.AppendHeader(sip.NewHeader("P-Asserted-Identity", `"Bank" <sip:0800@`+testDomain+`>`))
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res.SetBody(offer(4002, "0"))
	if err := in.tx.Respond(res); err != nil {
		t.Fatal(err)
	}
	in.once.Do(func() { close(in.finalSent) })
	ok := cl.waitFinal(5 * time.Second)
	if ok.StatusCode != 200 || len(ok.GetHeaders("P-Asserted-Identity")) != 0 {
		t.Errorf("caller's 200 (want no P-Asserted-Identity):\n%s", ok)
	}
	if err := cliA.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
		t.Fatal(err)
	}
	<-b.acks
	info := cl.inDialog(sip.INFO, ok, 3)
	for _, h := range injected {
		name, value, _ := strings.Cut(h, ":")
		info.AppendHeader(sip.NewHeader(name, strings.TrimSpace(value)))
	}
	if res := doFinal(t, cliA, info, "TCP", e.tcpAddr); res.StatusCode != 200 {
		t.Fatalf("INFO → %d", res.StatusCode)
	}
	checkStripped(<-b.infos, false)
}

func ptr[T any](v T) *T { return &v }

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// addBindings gives the account n more live bindings (10 per new user).
func (e *env) addBindings(n int) {
	e.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n/10+1)
	sem := make(chan struct{}, 8)
	for i := 0; i < n/10; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u, err := e.db.CreateUser(e.acct.ID, store.NewUser{Extension: fmt.Sprintf("7%04d", i), Name: "Filler"}, store.System)
			if err != nil {
				errs <- err
				return
			}
			var cs []store.ContactUpdate
			for j := range 10 {
				cs = append(cs, store.ContactUpdate{URI: fmt.Sprintf("sip:7%04d@192.0.2.%d:%d", i, 1+j, 5060+i), Expires: 3600})
			}
			_, err = e.db.Register(store.RegisterRequest{AccountID: e.acct.ID, UserID: u.ID, CallID: fmt.Sprintf("fill-%d", i),
				CSeq: 1, Source: fmt.Sprintf("192.0.2.%d:5060", 1+i%200), Transport: "udp", Contacts: cs})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
}

// forgedMallocs sends n forged in-dialog requests (our Route, a contact in
// the account's domain that no one registered) and returns the heap
// allocations of the whole process per request.
func forgedMallocs(t *testing.T, e *env, cli *sipgo.Client, n int) float64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		r := forged(sip.NOTIFY, "sip:nobody@"+testDomain+":5062", e.ourRoute("UDP"), fmt.Sprintf("cost-%d@evil", i), "t1", "t2")
		if res := doFinal(t, cli, r, "UDP", e.udpAddr); res.StatusCode != 481 {
			t.Fatalf("forged NOTIFY → %d, want 481", res.StatusCode)
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(n)
}

// TestForgedRequestCostIndependentOfBindings (issue row 4): what an
// unauthenticated in-dialog request costs does not grow with the number of
// bindings in the account (it used to decode every one of them). Measured
// in heap allocations of the process, which the binding scan made grow by
// more than ten per binding. Not parallel: it counts the whole process.
func TestForgedRequestCostIndependentOfBindings(t *testing.T) {
	e := newEnv(t, Config{})
	_, cli, _ := newTestUA(t)
	forgedMallocs(t, e, cli, 5) // warm up: connections, pools
	base := forgedMallocs(t, e, cli, 30)
	e.addBindings(2000)
	if bs, err := e.db.AccountBindings(e.acct.ID); err != nil || len(bs) != 2000 {
		t.Fatalf("account has %d bindings (%v), want 2000", len(bs), err)
	}
	with := forgedMallocs(t, e, cli, 30)
	t.Logf("allocations per forged request: %.0f with no binding, %.0f with 2,000", base, with)
	if with > base+1000 {
		t.Errorf("a forged request costs %.0f allocations with 2,000 bindings, %.0f without: it scans bindings", with, base)
	}
}

// BenchmarkForgedInDialog is the CPU cost of refusing an in-dialog request
// of no dialog of ours, over UDP, with 0 and 2,000 bindings in the account.
func BenchmarkForgedInDialog(b *testing.B) {
	for _, n := range []int{0, 2000} {
		b.Run(fmt.Sprintf("bindings=%d", n), func(b *testing.B) {
			e := newEnv(b, Config{})
			e.addBindings(n)
			_, cli, _ := newTestUA(b)
			route := e.ourRoute("UDP")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := forged(sip.NOTIFY, "sip:nobody@"+testDomain+":5062", route, fmt.Sprintf("bench-%d@evil", i), "t1", "t2")
				r.SetTransport("UDP")
				r.SetDestination(e.udpAddr)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := cli.Do(ctx, r)
				cancel()
				if err != nil || res.StatusCode != 481 {
					b.Fatalf("forged NOTIFY → %v %v", res, err)
				}
			}
		})
	}
}
