package sip

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

func TestInviteRefusals(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	e.addUser("1003") // enabled, never registers
	off, offPW := e.addUser("1004")
	e.disable(off)
	other, err := e.db.CreateAccount("other", "other.test", store.System)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CreateUser(other.ID, store.NewUser{Extension: "2001", Name: "Elsewhere"}, store.System); err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			c := e.caller(nil, transport, "1001", e.password)
			for _, tc := range []struct {
				name, target string
				noAuth       bool
				want         int
				outcome      string
			}{
				{"unauthenticated", "1003", true, 407, ""},
				{"unknown extension", "1999", false, 404, store.OutcomeNotFound},
				{"unknown number", "+442079460999", false, 404, store.OutcomeNotFound},
				{"unregistered", "1003", false, 480, store.OutcomeUnavailable},
			} {
				cl := c.start(tc.target, offer(4000, "0"), tc.noAuth)
				if got := cl.waitFinal(within); got.StatusCode != tc.want {
					t.Errorf("%s: %d %s, want %d", tc.name, got.StatusCode, got.Reason, tc.want)
				}
				if tc.outcome != "" {
					if rec := e.waitRecord(cl.callID); rec.Outcome != tc.outcome || rec.Status != tc.want || rec.From != "1001" {
						t.Errorf("%s: record %+v", tc.name, rec)
					}
				}
			}
			// A disabled caller authenticates, then gets 403.
			dc := e.caller(nil, transport, "1004", offPW)
			cl := dc.start("1001", offer(4000, "0"), false)
			if got := cl.waitFinal(within); got.StatusCode != 403 {
				t.Errorf("disabled caller: %d, want 403", got.StatusCode)
			}
			if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeForbidden || rec.FromName != "User 1004" {
				t.Errorf("disabled caller record %+v", rec)
			}
			// A wrong password is challenged again, never routed.
			bad := e.caller(nil, transport, "1001", "wrong")
			if got := bad.start("1003", nil, false).waitFinal(within); got.StatusCode != 407 {
				t.Errorf("wrong password: %d, want 407", got.StatusCode)
			}
		})
	}
	// 407 challenges are not calls; everything else is.
	if got := e.metric("dialtone_sip_invites_total", store.OutcomeNotFound); got != 4 {
		t.Errorf("invites_total{not_found} = %v, want 4", got)
	}
}

// answerCall runs the callee side of an answered call: 180, 200, then
// returns the caller's 200.
func answerCall(t *testing.T, cl *call, in *incoming, contact string) *sip.Response {
	t.Helper()
	in.respond(t, 180, "Ringing", contact)
	for {
		r := cl.next(within)
		if r == nil {
			t.Fatal("caller's transaction ended before 180")
		}
		if r.StatusCode == 180 {
			break
		}
		if r.StatusCode != 100 {
			t.Fatalf("caller got %d before 180", r.StatusCode)
		}
	}
	in.respond(t, 200, "OK", contact)
	ok := cl.waitFinal(within)
	if ok.StatusCode != 200 {
		t.Fatalf("caller got %d, want 200", ok.StatusCode)
	}
	return ok
}

func TestCallBetweenRegisteredPhones(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			// B's contact is unreachable (TEST-NET): only its flow works.
			contactB := "sip:1002@192.0.2.10:5062"
			if transport == "TCP" {
				contactB += ";transport=tcp"
			}
			b := e.newPhone(transport, "1002", pw, contactB, "")
			_, cliA, srvA := newTestUA(t)
			byesA := make(chan *sip.Request, 1)
			srvA.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
				byesA <- req
				tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
			})
			a := e.caller(cliA, transport, "1001", e.password)
			cl := a.start("1002", offer(4000, "0 8"), false)

			in := b.nextInvite(within)
			if got := in.req.Recipient.String(); got != contactB {
				t.Errorf("B's Request-URI = %s, want its contact %s", got, contactB)
			}
			rr := in.req.GetHeaders("Record-Route")
			if len(rr) != 1 || !strings.Contains(rr[0].Value(), ";lr") ||
				!strings.Contains(rr[0].Value(), "transport="+strings.ToLower(transport)) {
				t.Errorf("Record-Route = %v, want ours with lr and transport", rr)
			}
			if vias := in.req.GetHeaders("Via"); len(vias) != 2 {
				t.Errorf("B sees %d Via headers, want 2", len(vias))
			}
			if mf := in.req.MaxForwards(); mf == nil || mf.Val() != 69 {
				t.Errorf("Max-Forwards = %v, want 69", mf)
			}
			if in.req.GetHeader("Proxy-Authorization") != nil {
				t.Error("the caller's Proxy-Authorization was forwarded")
			}
			if string(in.req.Body()) != string(offer(4000, "0 8")) {
				t.Error("SDP offer changed on the way")
			}

			ok := answerCall(t, cl, in, contactB)
			if len(ok.GetHeaders("Via")) != 1 {
				t.Errorf("caller's 200 has %d Via, want 1", len(ok.GetHeaders("Via")))
			}
			if len(ok.GetHeaders("Record-Route")) != 1 {
				t.Errorf("caller's 200 lacks the Record-Route")
			}
			// ACK and BYE go through dialtone (Route) and reach B over its flow.
			if err := cl.cli.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
				t.Fatal(err)
			}
			select {
			case ack := <-b.acks:
				if ack.Route() != nil {
					t.Errorf("ACK reached B with a Route: %v", ack.Route())
				}
			case <-time.After(within):
				t.Fatal("B got no ACK")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			// INFO and a re-INVITE (with its ACK) are loose-routed to B too.
			if res, err := cl.cli.Do(ctx, cl.inDialog(sip.INFO, ok, 3)); err != nil || res.StatusCode != 200 {
				t.Fatalf("INFO → %v %v, want B's 200", res, err)
			}
			<-b.infos
			reinv := cl.inDialog(sip.INVITE, ok, 4)
			reinv.AppendHeader(sip.NewHeader("Contact", "<"+a.contact+">"))
			reinv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			reinv.SetBody(offer(4002, "0"))
			rtx, err := cl.cli.TransactionRequest(ctx, reinv)
			if err != nil {
				t.Fatal(err)
			}
			in2 := b.nextInvite(within)
			if tag, _ := in2.req.To().Params.Get("tag"); tag != in.tag {
				t.Errorf("re-INVITE reached B with To-tag %q, want %q", tag, in.tag)
			}
			in2.tag = in.tag
			in2.respond(t, 200, "OK", contactB)
			var reok *sip.Response
			for reok == nil {
				select {
				case r := <-rtx.Responses():
					if r.StatusCode >= 200 {
						reok = r
					}
				case <-time.After(within):
					t.Fatal("no 200 to the re-INVITE")
				}
			}
			rtx.Terminate()
			if reok.StatusCode != 200 {
				t.Fatalf("re-INVITE → %d", reok.StatusCode)
			}
			if err := cl.cli.WriteRequest(cl.inDialog(sip.ACK, ok, 4)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-b.acks:
			case <-time.After(within):
				t.Fatal("B got no ACK for the re-INVITE")
			}
			// The call lasts 90 s; its record must say so once it ends.
			e.clock.Advance(90 * time.Second)
			if transport == "UDP" { // A hangs up
				res, err := cl.cli.Do(ctx, cl.inDialog(sip.BYE, ok, 5))
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("BYE → %v %v, want 200", res, err)
				}
				select {
				case <-b.byes:
				case <-time.After(within):
					t.Fatal("B got no BYE")
				}
			} else { // B hangs up: route set = the INVITE's Record-Route, to A's contact
				res, err := b.cli.Do(ctx, in.inDialog(sip.BYE, 1, transport, e.addr(transport)))
				if err != nil || res.StatusCode != 200 {
					t.Fatalf("B's BYE → %v %v, want 200", res, err)
				}
				select {
				case <-byesA:
				case <-time.After(within):
					t.Fatal("A got no BYE")
				}
			}
			// Not an open relay: our Route with a dialog we never proxied.
			stray := cl.inDialog(sip.BYE, ok, 6)
			stray.ReplaceHeader(func() sip.Header { c := sip.CallIDHeader("unknown-call@test"); return &c }())
			stray.Recipient = sip.Uri{Scheme: "sip", User: "x", Host: "192.0.2.99", Port: 5060}
			if res, err := cl.cli.Do(ctx, stray); err != nil || res.StatusCode != 481 {
				t.Errorf("BYE for an unknown dialog → %v %v, want 481", res, err)
			}
			rec := e.waitRecord(cl.callID)
			if rec.Outcome != store.OutcomeAnswered || rec.Status != 200 || rec.To != "1002" || rec.ToName != "User 1002" {
				t.Errorf("record %+v", rec)
			}
			waitFor(t, "dialog forgotten after BYE", func() bool { return e.proxy.dialogs.len() == 0 })
			// The record is ended after the BYE's answer was relayed
			// (indialog.go), on the BYE handler's goroutine.
			var last store.CallRecord
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("last record: %+v", last)
				}
			})
			waitFor(t, "talk time recorded at BYE", func() bool {
				last = e.waitRecord(cl.callID)
				return last.Duration == 90*time.Second && last.EndedAt.Sub(last.AnsweredAt) == 90*time.Second
			})
			// Unregister B for the next transport.
			b.reg.register("", "Contact: *", "Expires: 0")
		})
	}
}

func TestForkCancelsOtherContacts(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	b1 := e.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.11:5062", "")
	b2 := e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.12:5062;transport=tcp", "")
	a := e.caller(nil, "UDP", "1001", e.password)
	cl := a.start("1002", offer(4000, "0"), false)

	in1 := b1.nextInvite(within)
	in2 := b2.nextInvite(within)
	in2.respond(t, 180, "Ringing", "sip:1002@192.0.2.12:5062;transport=tcp")
	ok := answerCall(t, cl, in1, "sip:1002@192.0.2.11:5062")
	if tag, _ := ok.To().Params.Get("tag"); tag != in1.tag {
		t.Errorf("200 To-tag %q, want the answering phone's %q", tag, in1.tag)
	}
	select {
	case <-in2.cancelled:
	case <-time.After(within):
		t.Fatal("the second contact was not cancelled")
	}
	if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeAnswered {
		t.Errorf("record %+v", rec)
	}
}

func TestRingTimeoutAndCallerCancel(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, withProxy(ProxyConfig{RingTimeout: 500 * time.Millisecond}))
	_, pw := e.addUser("1002")
	b := e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.13:5062;transport=tcp", "")
	a := e.caller(nil, "UDP", "1001", e.password)

	t.Run("no answer", func(t *testing.T) {
		cl := a.start("1002", offer(4000, "0"), false)
		in := b.nextInvite(within)
		// B rings. The ring timer runs from the fork, so on a slow machine
		// the 180 may come after it fired and B's transaction ended: no
		// error then, no one answers either way.
		ringing := sip.NewResponseFromRequest(in.req, 180, "Ringing", nil)
		ringing.To().Params.Add("tag", in.tag)
		_ = in.tx.Respond(ringing)
		if f := cl.waitFinal(within); f.StatusCode != 480 {
			t.Fatalf("final %d, want 480 after the ring timeout", f.StatusCode)
		}
		select {
		case <-in.cancelled:
		case <-time.After(within):
			t.Fatal("B not cancelled after the ring timeout")
		}
		if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeUnavailable || rec.Status != 480 {
			t.Errorf("record %+v", rec)
		}
	})
	e = newCallEnv(t)
	_, pw = e.addUser("1002")
	b = e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.13:5062;transport=tcp", "")
	a = e.caller(nil, "UDP", "1001", e.password)
	t.Run("caller cancels", func(t *testing.T) {
		cl := a.start("1002", offer(4000, "0"), false)
		in := b.nextInvite(within)
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
			t.Fatal("B not cancelled")
		}
		if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeCancelled {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("busy", func(t *testing.T) {
		cl := a.start("1002", offer(4000, "0"), false)
		in := b.nextInvite(within)
		in.respond(t, 486, "Busy Here", "")
		if f := cl.waitFinal(within); f.StatusCode != 486 {
			t.Fatalf("final %d, want 486", f.StatusCode)
		}
		if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeBusy {
			t.Errorf("record %+v", rec)
		}
	})
}

// TestLate2xxIsHungUp: when a second contact answers after the first one
// won, dialtone acknowledges and hangs up that second call (unless its
// CANCEL got there first); the caller sees one 200 only.
func TestLate2xxIsHungUp(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	b1 := e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.14:5062;transport=tcp", "")
	b2 := e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.15:5062;transport=tcp", "")
	a := e.caller(nil, "TCP", "1001", e.password)
	cl := a.start("1002", offer(4000, "0"), false)
	in1 := b1.nextInvite(within)
	in2 := b2.nextInvite(within)
	in1.respond(t, 200, "OK", "sip:1002@192.0.2.14:5062;transport=tcp")
	in2.respond(t, 200, "OK", "sip:1002@192.0.2.15:5062;transport=tcp")
	if f := cl.waitFinal(within); f.StatusCode != 200 {
		t.Fatalf("final %d", f.StatusCode)
	}
	// Either phone may have won (the two 200s race); the other is the late one.
	var late *phone
	select {
	case <-in1.cancelled:
		t.Log("the CANCEL reached the losing phone before its 200")
	case <-in2.cancelled:
		t.Log("the CANCEL reached the losing phone before its 200")
	case <-b1.acks:
		late = b1
	case <-b2.acks:
		late = b2
	case <-time.After(within):
		t.Fatal("the late 200 was neither cancelled nor acknowledged")
	}
	if late != nil {
		select {
		case <-late.byes:
		case <-time.After(within):
			t.Fatal("the late 200 was acknowledged but not hung up")
		}
	}
	if r, ok := <-cl.res; ok {
		t.Errorf("caller got another response after the 200: %d", r.StatusCode)
	}
	// The proxy's handler ends once the hang-up is answered.
	waitFor(t, "call handling ends", func() bool { return e.metric("dialtone_sip_active_calls", "") == 0 })
}

// TestBestFinalResponse: when every branch fails, the caller gets the best
// answer (486 over 480, RFC 3261 §16.7), and a 6xx ends the fork at once.
func TestBestFinalResponse(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	b1 := e.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.16:5062", "")
	b2 := e.newPhone("TCP", "1002", pw, "sip:1002@192.0.2.17:5062;transport=tcp", "")
	a := e.caller(nil, "UDP", "1001", e.password)

	cl := a.start("1002", offer(4000, "0"), false)
	in1, in2 := b1.nextInvite(5*time.Second), b2.nextInvite(5*time.Second)
	in1.respond(t, 480, "Temporarily Unavailable", "")
	in2.respond(t, 486, "Busy Here", "")
	if f := cl.waitFinal(within); f.StatusCode != 486 {
		t.Errorf("final %d, want 486 (best of 480 and 486)", f.StatusCode)
	}

	cl = a.start("1002", offer(4000, "0"), false)
	in1, in2 = b1.nextInvite(5*time.Second), b2.nextInvite(5*time.Second)
	in2.respond(t, 180, "Ringing", "")
	in1.respond(t, 603, "Decline", "")
	if f := cl.waitFinal(within); f.StatusCode != 603 {
		t.Errorf("final %d, want the 603", f.StatusCode)
	}
	select {
	case <-in2.cancelled:
	case <-time.After(within):
		t.Error("the other branch was not cancelled after a 6xx")
	}
	if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeBusy || rec.Status != 603 {
		t.Errorf("record %+v", rec)
	}
}

func TestMaxForwardsZero(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	a := e.caller(nil, "UDP", "1001", e.password)
	req := a.invite("1001", 1, "mf0@test", "t1", nil, "")
	mf := sip.MaxForwardsHeader(0)
	req.AppendHeader(&mf)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := a.cli.Do(ctx, req)
	if err != nil || res.StatusCode != 483 {
		t.Fatalf("INVITE with Max-Forwards 0 → %v %v, want 483", res, err)
	}
}
