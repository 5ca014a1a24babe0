package sip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// callflow creates a callflow with one step and activates number on it.
func (e *callEnv) numberOn(number string, step store.Step) {
	e.t.Helper()
	cf, err := e.db.CreateCallflow(e.acct.ID, store.CallflowSpec{Name: "flow " + number, Steps: []store.Step{step}}, store.System)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.AddNumber(e.acct.ID, number, store.System); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.db.ActivateNumber(e.acct.ID, number, cf.ID, store.System); err != nil {
		e.t.Fatal(err)
	}
}

// expectRinging checks that p receives the call, answers it busy, and the
// caller gets that 486.
func expectRinging(t *testing.T, cl *call, p *phone) {
	t.Helper()
	in := p.nextInvite(within)
	in.respond(t, 486, "Busy Here", "")
	if f := cl.waitFinal(within); f.StatusCode != 486 {
		t.Fatalf("final %d, want the phone's 486", f.StatusCode)
	}
}

func TestRoutingNumbersQueuesGroups(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	u2, pw2 := e.addUser("1002")
	u3, _ := e.addUser("1003") // disabled below
	u5, _ := e.addUser("1005") // enabled, never registered
	b := e.newPhone("UDP", "1002", pw2, "sip:1002@192.0.2.20:5062", "")
	e.disable(u3)

	e.numberOn("+442079460000", store.Step{Type: store.StepRing, UserIDs: []string{u2.ID}})
	e.numberOn("+442079460003", store.Step{Type: store.StepRing, UserIDs: []string{u3.ID}})
	e.numberOn("+442079460005", store.Step{Type: store.StepRing, UserIDs: []string{u5.ID, u3.ID}})
	if _, err := e.db.AddNumber(e.acct.ID, "+442079460009", store.System); err != nil { // AVAILABLE
		t.Fatal(err)
	}
	q, err := e.db.CreateQueue(e.acct.ID, store.NewQueue{Name: "Sales", Extension: "600", Members: []string{u3.ID, u2.ID, u5.ID}}, store.System)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CreateGroup(e.acct.ID, store.NewGroup{Kind: store.GroupRing, Name: "Ring", Extension: "700", Members: []string{u2.ID}}, store.System); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.CreateQueue(e.acct.ID, store.NewQueue{Name: "Gone", Extension: "601", Members: []string{u3.ID}}, store.System); err != nil {
		t.Fatal(err)
	}
	off, err := e.db.CreateGroup(e.acct.ID, store.NewGroup{Kind: store.GroupPaging, Name: "Paging", Extension: "701", Members: []string{u2.ID}}, store.System)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.DisableGroup(e.acct.ID, off.ID, store.System); err != nil {
		t.Fatal(err)
	}
	_ = q
	a := e.caller(nil, "UDP", "1001", e.password)

	t.Run("number rings its user", func(t *testing.T) {
		cl := a.start("+442079460000", offer(4000, "0"), false)
		expectRinging(t, cl, b)
		rec := e.waitRecord(cl.callID)
		if rec.To != "+442079460000" || rec.Outcome != store.OutcomeBusy {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("number without plus", func(t *testing.T) {
		expectRinging(t, a.start("442079460000", offer(4000, "0"), false), b)
	})
	t.Run("number of a disabled user announces", func(t *testing.T) {
		sink := newRTPSink(t)
		cl := a.start("+442079460003", offer(sink.port(), "0"), false)
		awaitProgress(t, cl)
		if f := cl.waitFinal(within); f.StatusCode != 486 {
			t.Fatalf("final %d, want 486", f.StatusCode)
		}
		if len(sink.packets()) < 20 {
			t.Errorf("%d RTP packets", len(sink.packets()))
		}
		if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeAnnouncedBusy {
			t.Errorf("record %+v", rec)
		}
	})
	t.Run("number with an enabled unregistered user", func(t *testing.T) {
		if f := a.start("+442079460005", offer(4000, "0"), false).waitFinal(within); f.StatusCode != 480 {
			t.Fatalf("final %d, want 480", f.StatusCode)
		}
	})
	t.Run("available number", func(t *testing.T) {
		if f := a.start("+442079460009", offer(4000, "0"), false).waitFinal(within); f.StatusCode != 404 {
			t.Fatalf("final %d, want 404", f.StatusCode)
		}
	})
	t.Run("queue rings its enabled registered member", func(t *testing.T) {
		expectRinging(t, a.start("600", offer(4000, "0"), false), b)
	})
	t.Run("ring group", func(t *testing.T) {
		expectRinging(t, a.start("700", offer(4000, "0"), false), b)
	})
	t.Run("queue of disabled members", func(t *testing.T) {
		if f := a.start("601", offer(4000, "0"), false).waitFinal(within); f.StatusCode != 480 {
			t.Fatalf("final %d, want 480", f.StatusCode)
		}
	})
	t.Run("disabled group announces", func(t *testing.T) {
		cl := a.start("701", offer(4000, "0"), false)
		awaitProgress(t, cl)
		if f := cl.waitFinal(within); f.StatusCode != 486 {
			t.Fatalf("final %d, want 486", f.StatusCode)
		}
	})
}

func TestCallRecordsSurviveUserDeletion(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	u, _ := e.addUser("1002")
	e.disable(u)
	cl := e.caller(nil, "TCP", "1001", e.password).start("1002", nil, false)
	if f := cl.waitFinal(within); f.StatusCode != 486 {
		t.Fatalf("final %d", f.StatusCode)
	}
	e.waitRecord(cl.callID)
	if err := e.db.DeleteUser(e.acct.ID, u.ID, store.System); err != nil {
		t.Fatal(err)
	}
	rec := e.waitRecord(cl.callID)
	if rec.To != "1002" || rec.ToName != "User 1002" || rec.ToUserID != u.ID || rec.Outcome != store.OutcomeAnnouncedBusy {
		t.Errorf("record after deletion %+v", rec)
	}
	rs, err := e.db.Calls(e.acct.ID, store.CallFilter{Extension: "1002"})
	if err != nil || len(rs) != 1 {
		t.Errorf("Calls(extension 1002) = %d records, %v", len(rs), err)
	}
}

// TestNoLeaksAfterAnnouncedCalls places 100 announced calls, 20 at a time,
// half over UDP and half over TCP, through every path of announce.go: 60
// with a short announcement (played to its end, or refused at once: no
// SDP, no G.711), then 40 cancelled during a 60 s one. Afterwards the
// server's own state is idle again: no request handler running (an
// announcement starts no goroutine: its RTP sender runs on the INVITE
// handler's), no active call, every RTP port the range handed out closed
// (the range's count), no dialog. That is the server's state, not the
// process's: other tests run in parallel, and sipgo's transactions linger
// on their own timers.
func TestNoLeaksAfterAnnouncedCalls(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t, withAnnouncer(AnnouncerConfig{Announcement: shortAnnouncement(t)}))
	u, _ := e.addUser("1002")
	e.disable(u)
	_, cli, _ := newTestUA(t)
	callers := map[string]*caller{"UDP": e.caller(cli, "UDP", "1001", e.password), "TCP": e.caller(cli, "TCP", "1001", e.password)}
	sink := newRTPSink(t)
	one := func(i int, cancel bool) error {
		tr := "UDP"
		if i%2 == 1 {
			tr = "TCP"
		}
		body, want := offer(sink.port(), "0"), 486
		switch {
		case cancel:
			want = 487
		case i%10 == 3:
			body = nil // busy at once
		case i%10 == 7:
			body, want = offer(sink.port(), "111"), 488
		}
		cl := callers[tr].start("1002", body, false)
		if cancel {
			awaitProgress(t, cl)
			cl.cancel()
		}
		if f := cl.waitFinal(20 * time.Second); f.StatusCode != want {
			return fmt.Errorf("call %d over %s: final %d %s, want %d", i, tr, f.StatusCode, f.Reason, want)
		}
		return nil
	}
	run := func(from, to int, cancel bool) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 20)
		errs := make(chan error, to-from)
		for i := from; i < to; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				errs <- one(i, cancel)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	run(0, 60, false)
	e.ann.SetAnnouncement(longAnnouncement(t)) // the CANCEL always comes long before its end
	run(60, 100, true)

	ports := e.ann.ports
	var state string
	idle := func() bool {
		state = fmt.Sprintf("%v handlers running, %v active calls, %d RTP ports open, %d dialogs",
			e.metric("dialtone_sip_in_flight_requests", ""), e.metric("dialtone_sip_active_calls", ""), ports.InUse(), e.proxy.dialogs.len())
		return state == "0 handlers running, 0 active calls, 0 RTP ports open, 0 dialogs"
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server state: %s", state)
		}
	})
	waitFor(t, "the server idle after 100 calls", idle)
	if got := e.metric("dialtone_sip_invites_total", store.OutcomeCancelled); got != 40 {
		t.Errorf("invites_total{cancelled} = %v, want 40", got)
	}
	if got := e.metric("dialtone_sip_invites_total", store.OutcomeAnnouncedBusy); got != 60 {
		t.Errorf("invites_total{announced_busy} = %v, want 60", got)
	}
	if got := e.metric("dialtone_sip_announcements_played_total", ""); got != 88 {
		t.Errorf("announcements_played_total = %v, want 88 (all but the 12 calls without a G.711 offer)", got)
	}
}

func TestCheckSync(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	u, pw := e.addUser("1002")
	const mac = "805ec0aabbcc"
	if _, err := e.db.CreateDevice(e.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.notifier.CheckSync(ctx, e.acct.ID, mac); !errors.Is(err, ErrNoRegistration) {
		t.Errorf("CheckSync without registration = %v, want ErrNoRegistration", err)
	}
	if err := e.notifier.CheckSync(ctx, e.acct.ID, "001122334455"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("CheckSync of an unknown device = %v, want ErrNotFound", err)
	}
	for _, transport := range []string{"UDP", "TCP"} {
		t.Run(transport, func(t *testing.T) {
			p := e.newPhone(transport, "1002", pw, "sip:1002@192.0.2.30:5062", "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:cc")
			// A softphone of the same user must not get it.
			soft := e.newPhone(transport, "1002", pw, "sip:1002@192.0.2.31:5062", "Linphone/5.0")
			if err := e.notifier.CheckSync(ctx, e.acct.ID, mac); err != nil {
				t.Fatalf("CheckSync = %v", err)
			}
			select {
			case n := <-p.notifies:
				if ev := n.GetHeader("Event"); ev == nil || ev.Value() != "check-sync;reboot=false" {
					t.Errorf("Event = %v", ev)
				}
				if ss := n.GetHeader("Subscription-State"); ss == nil || ss.Value() != "terminated" {
					t.Errorf("Subscription-State = %v", ss)
				}
				if n.Recipient.String() != "sip:1002@192.0.2.30:5062" {
					t.Errorf("Request-URI %s, want the contact", n.Recipient.String())
				}
				if to := n.To().Address; to.User != "1002" || to.Host != testDomain {
					t.Errorf("To = %s, want the AOR", to.String())
				}
				if n.Transport() != transport {
					t.Errorf("arrived over %s", n.Transport())
				}
			case <-time.After(within):
				t.Fatal("the phone got no NOTIFY")
			}
			select {
			case <-soft.notifies:
				t.Error("the softphone got a check-sync")
			default:
			}
			e.clock.Advance(time.Second) // after any earlier fetch
			since := e.db.Now()
			wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer wcancel()
			if err := e.notifier.WaitForFetch(wctx, e.acct.ID, mac, since); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("WaitForFetch without a fetch = %v", err)
			}
			if err := e.db.RecordFetch(store.Fetch{MAC: mac, Source: "127.0.0.1", UserAgent: "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:cc"}); err != nil {
				t.Fatal(err)
			}
			if err := e.notifier.WaitForFetch(ctx, e.acct.ID, mac, since); err != nil {
				t.Errorf("WaitForFetch after a fetch = %v", err)
			}
			p.reg.register("", "Contact: *", "Expires: 0")
			soft.reg.register("", "Contact: *", "Expires: 0")
		})
	}
	if got := e.metric("dialtone_sip_check_sync_total", checkSyncOK); got != 2 {
		t.Errorf("check_sync_total{ok} = %v, want 2", got)
	}
}

// TestCheckSyncClosedFlow: a TCP registration whose connection is gone is
// not dialled.
func TestCheckSyncClosedFlow(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	u, pw := e.addUser("1002")
	const mac = "805ec0aabbdd"
	if _, err := e.db.CreateDevice(e.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	ua, cli, _ := newTestUA(t)
	r := newUAC(t, cli, "TCP", e.tcpAddr, "1002", pw)
	r.ua = "Yealink SIP-T46U 108.86.0.20 805ec0aabbdd"
	if res := r.register("", "Contact: <sip:1002@192.0.2.40:5062;transport=tcp>", "Expires: 600"); res.StatusCode != 200 {
		t.Fatal(res.StatusCode)
	}
	ua.Close() // closes the phone's connection
	waitFor(t, "dialtone sees the connection closed", func() bool {
		c, err := e.srv.ua.TransportLayer().GetConnection("tcp", e.bindings(u)[0].Source)
		if err != nil {
			return true
		}
		c.TryClose()
		return false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := e.notifier.CheckSync(ctx, e.acct.ID, mac)
	if !errors.Is(err, ErrNoRegistration) || !strings.Contains(err.Error(), "connection closed") {
		t.Errorf("CheckSync over a closed flow = %v", err)
	}
	if got := e.metric("dialtone_sip_check_sync_total", checkSyncNoFlow); got != 1 {
		t.Errorf("check_sync_total{no_flow} = %v", got)
	}
}

// TestUDPFlowFromListener: after sipgo forgot a phone's UDP source (a
// restart), requests to it still leave from the listening socket, which is
// where the phone's NAT binding points.
func TestUDPFlowFromListener(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	u, pw := e.addUser("1002")
	const mac = "805ec0aabbee"
	if _, err := e.db.CreateDevice(e.acct.ID, store.NewDevice{MAC: mac, Model: "T46U", Lines: []store.DeviceLine{{Line: 1, UserID: u.ID}}}, store.System); err != nil {
		t.Fatal(err)
	}
	p := e.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.50:5062", "Yealink SIP-T46U 108.86.0.20 805ec0aabbee")
	e.srv.ua.TransportLayer().Pool("udp").Delete(e.bindings(u)[0].Source)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.notifier.CheckSync(ctx, e.acct.ID, mac); err != nil {
		t.Fatalf("CheckSync = %v", err)
	}
	n := <-p.notifies
	if n.Source() != e.udpAddr {
		t.Errorf("NOTIFY came from %s, want the listener %s", n.Source(), e.udpAddr)
	}
}
