package sip

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
	"github.com/emiago/sipgo/sip"
)

// twoNodes starts one embedded etcd member and two endpoints on it, nodes
// "a" and "b" of one deployment: one prefix, one secret.key (the same data
// directory), one clock. Each serves UDP, TCP and TLS and announces its TCP
// listener.
// open opens a further store.DB of the deployment as node (never
// announced unless the test does).
func twoNodes(t *testing.T) (a, b *callEnv, open func(node string) *store.DB) {
	t.Helper()
	dir := t.TempDir()
	etcd, err := etcdtest.Start(filepath.Join(dir, "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	clock := storetest.NewClock()
	open = func(node string) *store.DB {
		db, err := store.OpenEtcd(store.EtcdConfig{Endpoints: etcd.Endpoints, Dir: filepath.Join(dir, "data"), Prefix: "/xnode", Node: node},
			store.Options{Now: clock.Now})
		if err != nil {
			t.Fatalf("OpenEtcd(%s) = %v", node, err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	dbA, dbB := open("a"), open("b")
	a = newCallEnv(t, onStore(dbA, clock), asNode(), withTLS())
	b = newCallEnv(t, onStore(dbB, clock), asNode(), withTLS())
	return a, b, open
}

// TestCallAcrossNodes: a phone registered through node B (over UDP, TCP,
// TLS) is called by a phone registered through node A. The INVITE goes A →
// B (an internal hop over TCP, X-Dialtone-Hop) → the phone's own flow on B;
// 180 and 200 come back along Via; the ACK, an INFO from the callee and
// the BYE (from either side) follow both nodes' dialog records; node A
// writes the call record. The hop header never reaches a phone.
func TestCallAcrossNodes(t *testing.T) {
	a, b, _ := twoNodes(t)
	u, pw := a.addUser("1002")
	for _, transport := range []string{"UDP", "TCP", "TLS"} {
		t.Run(transport, func(t *testing.T) {
			// The contact is unreachable (TEST-NET): only the flow works.
			contact := "sip:1002@192.0.2.10:5062"
			if transport != "UDP" {
				contact += ";transport=" + strings.ToLower(transport)
			}
			callee := b.newPhone(transport, "1002", pw, contact, "")
			if bs := a.bindings(u); len(bs) != 1 || bs[0].Node != "b" {
				t.Fatalf("bindings = %+v, want one held by node b", bs)
			}
			_, cliA, srvA := newTestUA(t)
			byes, infos := make(chan *sip.Request, 1), make(chan *sip.Request, 1)
			srvA.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
				byes <- req
				tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
			})
			srvA.OnInfo(func(req *sip.Request, tx sip.ServerTransaction) {
				infos <- req
				tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
			})
			caller := a.caller(cliA, "UDP", "1001", a.password)
			cl := caller.start("1002", offer(4000, "0 8"), false)

			in := callee.nextInvite(within)
			if got := in.req.Recipient.String(); got != contact {
				t.Errorf("Request-URI = %s, want the contact %s", got, contact)
			}
			if h := in.req.GetHeader(hopHeader); h != nil {
				t.Errorf("the phone got %s: %s", hopHeader, h.Value())
			}
			if pai := in.req.GetHeader("P-Asserted-Identity"); pai == nil || !strings.Contains(pai.Value(), "sip:1001@"+testDomain) {
				t.Errorf("P-Asserted-Identity = %v, want the caller's (set by node a)", pai)
			}
			if vias := in.req.GetHeaders("Via"); len(vias) != 3 {
				t.Errorf("the phone sees %d Via, want 3 (caller, a, b)", len(vias))
			}
			ok := answerCall(t, cl, in, contact)
			if len(ok.GetHeaders("Via")) != 1 {
				t.Errorf("caller's 200 has %d Via, want 1", len(ok.GetHeaders("Via")))
			}
			if err := cl.cli.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-callee.acks:
			case <-time.After(within):
				t.Fatal("the phone on b got no ACK")
			}
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			// The callee's INFO goes b → a → the caller's flow.
			if res, err := callee.cli.Do(ctx, in.inDialog(sip.INFO, 1, transport, b.addr(transport))); err != nil || res.StatusCode != 200 {
				t.Fatalf("callee's INFO → %v %v, want the caller's 200", res, err)
			}
			<-infos
			a.clock.Advance(30 * time.Second)
			if transport == "TCP" { // the callee hangs up
				if res, err := callee.cli.Do(ctx, in.inDialog(sip.BYE, 2, transport, b.addr(transport))); err != nil || res.StatusCode != 200 {
					t.Fatalf("callee's BYE → %v %v, want 200", res, err)
				}
				select {
				case <-byes:
				case <-time.After(within):
					t.Fatal("the caller got no BYE")
				}
			} else { // the caller hangs up
				if res, err := cl.cli.Do(ctx, cl.inDialog(sip.BYE, ok, 3)); err != nil || res.StatusCode != 200 {
					t.Fatalf("BYE → %v %v, want 200", res, err)
				}
				select {
				case <-callee.byes:
				case <-time.After(within):
					t.Fatal("the phone on b got no BYE")
				}
			}
			waitFor(t, "dialogs forgotten on both nodes", func() bool {
				return a.proxy.dialogs.len() == 0 && b.proxy.dialogs.len() == 0
			})
			waitFor(t, "call record ended by node a", func() bool {
				rec := a.waitRecord(cl.callID)
				return rec.Outcome == store.OutcomeAnswered && rec.To == "1002" && rec.EndedAt.Sub(rec.AnsweredAt) == 30*time.Second
			})
			n := 0
			for _, r := range b.callRecords() {
				if r.CallID == cl.callID {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d call records, want 1 (written once, by node a)", n)
			}
			callee.reg.register("", "Contact: *", "Expires: 0")
		})
	}
	// The caller's CANCEL goes a → b → the phone; the phone's 487 comes
	// back; node a records a cancelled call.
	t.Run("cancel", func(t *testing.T) {
		callee := b.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.13:5062;transport=tcp", "")
		cl := a.caller(nil, "UDP", "1001", a.password).start("1002", offer(4000, "0"), false)
		in := callee.nextInvite(within)
		in.respond(t, 180, "Ringing", "sip:1002@192.0.2.13:5062")
		for r := cl.next(within); r.StatusCode != 180; r = cl.next(within) {
		}
		if res := cl.cancel(); res.StatusCode != 200 {
			t.Fatalf("CANCEL → %d", res.StatusCode)
		}
		if f := cl.waitFinal(within); f.StatusCode != 487 {
			t.Fatalf("final %d, want 487", f.StatusCode)
		}
		select {
		case <-in.cancelled:
		case <-time.After(within):
			t.Fatal("the phone on b was not cancelled")
		}
		if rec := a.waitRecord(cl.callID); rec.Outcome != store.OutcomeCancelled {
			t.Errorf("record %+v", rec)
		}
		callee.reg.register("", "Contact: *", "Expires: 0")
	})
}

// hopInvite is an INVITE from 1001 for contact, as a test client sends it,
// with X-Dialtone-Hop claiming to come from node, signed with key (nil: a
// made-up mac) at ts.
func hopInvite(e *callEnv, contact, node string, key []byte, ts int64, u store.User) *sip.Request {
	c := e.caller(nil, "TCP", "1001", "")
	req := c.invite("1002", 1, fmt.Sprintf("hop-%d@test", callSeq.Add(1)), "htag", nil, "")
	if err := sip.ParseUri(contact, &req.Recipient); err != nil {
		e.t.Fatal(err)
	}
	h := hopClaim{node: node, ts: ts, acct: e.acct.ID, user: u.ID, mac: make([]byte, 32)}
	if key != nil {
		h.mac = hopMAC(key, req, h)
	}
	req.AppendHeader(sip.NewHeader(hopHeader, h.String()))
	return req
}

// TestHopHeaderRefused: a request with X-Dialtone-Hop that does not verify
// is an outside request (407 for an INVITE, never relayed to the phone):
// a made-up mac, a stale one, one sent over UDP, one naming a node whose
// announced host is not the sender's. The same request signed right from
// the node's address rings the phone (so each refusal is the check's).
func TestHopHeaderRefused(t *testing.T) {
	a, b, open := twoNodes(t)
	u, pw := a.addUser("1002")
	contact := "sip:1002@192.0.2.10:5062;transport=tcp"
	callee := b.newPhone("TCP", "1002", pw, contact, "")
	key := a.srv.nodes.key()
	if key == nil {
		t.Fatal("no hop key on an etcd store")
	}
	// Node c announces an address on another host than the test's.
	c := open("c")
	if err := c.AnnounceNode(store.NodeInfo{SIPAddr: "192.0.2.77:5060"}); err != nil {
		t.Fatal(err)
	}
	now := b.db.Now().Unix()
	_, cli, _ := newTestUA(t)
	for _, tc := range []struct {
		name, transport, node string
		key                   []byte
		ts                    int64
	}{
		{"made-up mac", "TCP", "a", nil, now},
		{"stale", "TCP", "a", key, now - 31},
		{"from the future", "TCP", "a", key, now + 31},
		{"over UDP", "UDP", "a", key, now},
		{"node on another host", "TCP", "c", key, now},
		{"from itself", "TCP", "b", key, now},
		{"unknown node", "TCP", "zz", key, now},
	} {
		req := hopInvite(b, contact, tc.node, tc.key, tc.ts, u)
		if res := doFinal(t, cli, req, tc.transport, b.addr(tc.transport)); res.StatusCode != 407 {
			t.Errorf("%s: INVITE → %d, want 407 (an outside request)", tc.name, res.StatusCode)
		}
		expectNothing(t, callee, tc.name)
	}
	// An authenticated caller's own hop header is removed, not passed on.
	local := b.caller(nil, "UDP", "1001", b.password)
	local.headers = []string{hopHeader + ": a;ts=1;acct=x;user=y;mac=" + strings.Repeat("00", 32)}
	cl := local.start("1002", nil, false)
	in := callee.nextInvite(within)
	if h := in.req.GetHeader(hopHeader); h != nil {
		t.Errorf("a caller's %s reached the phone: %s", hopHeader, h.Value())
	}
	in.respond(t, 486, "Busy Here", "")
	cl.waitFinal(within)

	if got := b.metric("dialtone_sip_hops_total", "refused"); got != 9 { // 7 cases, the caller's INVITE twice (407, then with credentials)
		t.Errorf("hops_total{refused} = %v, want 9", got)
	}

	// The same, signed right: rung (then refused by the phone).
	req := hopInvite(b, contact, "a", key, now, u)
	req.SetTransport("TCP")
	req.SetDestination(b.tcpAddr)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tx, err := cli.TransactionRequest(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Terminate()
	in = callee.nextInvite(within)
	if in.req.GetHeader(hopHeader) != nil {
		t.Error("the phone got the hop header")
	}
	in.respond(t, 486, "Busy Here", "")
	for res := range tx.Responses() {
		if res.StatusCode >= 200 {
			if res.StatusCode != 486 {
				t.Errorf("signed hop INVITE → %d, want the phone's 486", res.StatusCode)
			}
			break
		}
	}
	if got := b.metric("dialtone_sip_hops_total", "accepted"); got != 1 {
		t.Errorf("hops_total{accepted} = %v, want 1", got)
	}
}

// TestCheckSyncAcrossNodes: a check-sync asked of node A reaches a phone
// whose flow is on node B (UDP and TCP), through B; when B finds the
// phone's connection gone, A reports ErrNoRegistration.
func TestCheckSyncAcrossNodes(t *testing.T) {
	a, b, _ := twoNodes(t)
	u, pw := a.addUser("1002")
	const mac = "805ec0aabbcc"
	if _, err := a.db.CreateDevice(a.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, transport := range []string{"UDP", "TCP"} {
		p := b.newPhone(transport, "1002", pw, "sip:1002@192.0.2.30:5062", "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:cc")
		if err := a.notifier.CheckSync(ctx, a.acct.ID, mac); err != nil {
			t.Fatalf("%s: CheckSync on node a = %v", transport, err)
		}
		select {
		case n := <-p.notifies:
			if ev := n.GetHeader("Event"); ev == nil || ev.Value() != "check-sync;reboot=false" {
				t.Errorf("%s: Event = %v", transport, ev)
			}
			if n.Transport() != transport {
				t.Errorf("arrived over %s, want %s (its flow)", n.Transport(), transport)
			}
			if n.GetHeader(hopHeader) != nil {
				t.Errorf("%s: the phone got the hop header", transport)
			}
		case <-time.After(within):
			t.Fatalf("%s: the phone got no NOTIFY", transport)
		}
		if transport == "TCP" {
			p.ua.Close() // its connection goes
			waitFor(t, "node b sees the connection closed", func() bool {
				_, err := b.srv.ua.TransportLayer().GetConnection("TCP", b.bindings(u)[0].Source)
				return err != nil
			})
			if err := a.notifier.CheckSync(ctx, a.acct.ID, mac); !errors.Is(err, ErrNoRegistration) {
				t.Errorf("CheckSync with the flow on b gone = %v, want ErrNoRegistration", err)
			}
		}
		p.reg.register("", "Contact: *", "Expires: 0")
	}
	if got := a.metric("dialtone_sip_check_sync_total", checkSyncOK); got != 2 {
		t.Errorf("node a: check_sync_total{ok} = %v, want 2", got)
	}
}

// TestDeadNodeSkipped: a binding held by a node that announced nothing (a
// node gone) is unreachable: a call to its user gets 480 and a check-sync
// ErrNoRegistration, as if it were not registered; a phone of the same
// user on a live node is still rung.
func TestDeadNodeSkipped(t *testing.T) {
	a, b, open := twoNodes(t)
	u, pw := a.addUser("1002")
	const mac = "805ec0aabbee"
	if _, err := a.db.CreateDevice(a.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	dead := open("gone")
	if _, err := dead.Register(store.RegisterRequest{AccountID: a.acct.ID, UserID: u.ID, CallID: "dead@test", CSeq: 1,
		Source: "192.0.2.5:5060", Transport: "udp", UserAgent: "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:ee",
		Contacts: []store.ContactUpdate{{URI: "sip:1002@192.0.2.5:5060", Expires: 600}}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := a.notifier.CheckSync(ctx, a.acct.ID, mac); !errors.Is(err, ErrNoRegistration) {
		t.Errorf("CheckSync of a phone on a dead node = %v, want ErrNoRegistration", err)
	}
	caller := a.caller(nil, "UDP", "1001", a.password)
	if res := caller.start("1002", nil, false).waitFinal(within); res.StatusCode != 480 {
		t.Errorf("call to a user held by a dead node → %d, want 480", res.StatusCode)
	}
	// A live phone of the same user on b is rung; the dead binding is not.
	p := b.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.30:5062", "")
	cl := caller.start("1002", nil, false)
	in := p.nextInvite(within)
	in.respond(t, 486, "Busy Here", "")
	if res := cl.waitFinal(within); res.StatusCode != 486 {
		t.Errorf("call → %d, want the live phone's 486", res.StatusCode)
	}
}

// TestHopRefusedNotRelayed: when the node holding the callee's flow refuses
// our hop (here node a announces another host than the one its requests
// come from, as a wrong --sip-advertise does), it challenges the INVITE as
// an outside request; that 401/407, with the other node's realm and nonce,
// never reaches the already authenticated caller: the branch failed, the
// caller gets 480 without a challenge, and the record says why.
func TestHopRefusedNotRelayed(t *testing.T) {
	a, b, _ := twoNodes(t)
	u, pw := a.addUser("1002")
	callee := b.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.10:5062;transport=tcp", "")
	if bs := a.bindings(u); len(bs) != 1 || bs[0].Node != "b" {
		t.Fatalf("bindings = %+v, want one held by node b", bs)
	}
	if err := a.db.AnnounceNode(store.NodeInfo{SIPAddr: "192.0.2.77:5060"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node b sees a's new announcement", func() bool {
		n, err := b.db.Node("a")
		return err == nil && n.SIPAddr == "192.0.2.77:5060"
	})
	cl := a.caller(nil, "UDP", "1001", a.password).start("1002", offer(4000, "0"), false)
	res := cl.waitFinal(within)
	if res.StatusCode != 480 {
		t.Errorf("call through a refusing node → %d, want 480", res.StatusCode)
	}
	for _, h := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
		if v := res.GetHeader(h); v != nil {
			t.Errorf("the caller got %s: %s", h, v.Value())
		}
	}
	expectNothing(t, callee, "refused hop")
	if rec := a.waitRecord(cl.callID); rec.Status != 480 || rec.Outcome != store.OutcomeUnavailable || !strings.Contains(rec.Detail, "node b refused") {
		t.Errorf("record %+v, want 480 unavailable, node b refused the hop", rec)
	}
	if got := b.metric("dialtone_sip_hops_total", "refused"); got != 1 {
		t.Errorf("node b: hops_total{refused} = %v, want 1", got)
	}
}
