package sip

import (
	"context"
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
func twoNodes(t *testing.T) (a, b *callEnv) {
	t.Helper()
	dir := t.TempDir()
	etcd, err := etcdtest.Start(filepath.Join(dir, "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	clock := storetest.NewClock()
	open := func(node string) *store.DB {
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
	return a, b
}

// TestCallAcrossNodes: a phone registered through node B (over UDP, TCP,
// TLS) is called by a phone registered through node A. The INVITE goes A →
// B (an internal hop over TCP, X-Dialtone-Hop) → the phone's own flow on B;
// 180 and 200 come back along Via; the ACK, an INFO from the callee and
// the BYE (from either side) follow both nodes' dialog records; node A
// writes the call record. The hop header never reaches a phone.
func TestCallAcrossNodes(t *testing.T) {
	a, b := twoNodes(t)
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
}
