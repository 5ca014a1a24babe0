package sip

import (
	"strconv"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/emiago/sipgo/sip"
)

// TestDialogTableBounds: the table holds at most Max dialogs; a confirmed
// dialog without its ACK goes after 64×T1, an acknowledged one after Idle
// without traffic and after MaxAge in any case; early dialogs are dropped
// with their INVITE; matching needs Call-ID, both tags and the sender's
// flow.
func TestDialogTableBounds(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock()
	d := newDialogs(DialogLimits{Max: 3, MaxAge: 12 * time.Hour, Idle: time.Hour}, clock.Now)
	caller := flow{source: "198.51.100.1:5060", transport: "UDP"}
	callee := flow{source: "198.51.100.2:5062", transport: "TCP"}
	k := func(i int) dialogKey {
		return dialogKey{callID: "c" + string(rune('0'+i)), callerTag: "a", calleeTag: "b"}
	}
	ack := func(i int) bool {
		_, ok := d.match(k(i).callID, "a", "b", "198.51.100.1:5070", "udp", true)
		return ok
	}
	for i := range 3 {
		if !d.confirm(k(i), caller, callee) {
			t.Fatalf("dialog %d refused below the cap", i)
		}
	}
	if d.confirm(k(3), caller, callee) || d.early(k(4), caller, callee) || d.room() {
		t.Fatal("a fourth dialog was accepted at the cap of 3")
	}
	if d.len() != 3 {
		t.Fatalf("len %d", d.len())
	}
	if !ack(0) || !ack(1) {
		t.Fatal("ACK from the caller's host did not match")
	}
	// Dialog 2 never got its ACK: after 64×T1 it makes room.
	clock.Advance(dialogACKWait + time.Second)
	if !d.confirm(k(3), caller, callee) {
		t.Fatal("no room after the unacknowledged dialog expired")
	}
	if d.len() != 3 || ack(2) {
		t.Fatalf("unacknowledged dialog still there (len %d)", d.len())
	}

	// Matching: both tags, either direction, from the right party.
	if _, ok := d.match(k(0).callID, "a", "x", caller.source, "UDP", false); ok {
		t.Error("matched with a wrong To-tag")
	}
	if _, ok := d.match(k(0).callID, "a", "", caller.source, "UDP", false); ok {
		t.Error("matched without a To-tag")
	}
	if m, ok := d.match(k(0).callID, "b", "a", "198.51.100.2:40000", "TCP", false); !ok || m.fromCaller || m.to != caller {
		t.Errorf("callee's request: %+v %v, want it routed to the caller's flow", m, ok)
	}
	if _, ok := d.match(k(0).callID, "b", "a", "198.51.100.9:5062", "TCP", false); ok {
		t.Error("the callee's tags from another host matched")
	}
	if _, ok := d.match(k(0).callID, "a", "b", caller.source, "TCP", false); ok {
		t.Error("the caller's tags over another transport matched")
	}
	if _, ok := d.match(k(0).callID, "b", "a", callee.source, "TCP", true); ok {
		t.Error("an ACK from the callee matched")
	}

	// Idle: dialog 1 is quiet for longer than Idle, dialog 0 is not.
	clock.Advance(50 * time.Minute)
	d.match(k(0).callID, "a", "b", caller.source, "UDP", false)
	clock.Advance(20 * time.Minute)
	if _, ok := d.match(k(1).callID, "a", "b", caller.source, "UDP", false); ok {
		t.Error("dialog idle for 70 min still matched (Idle 1 h)")
	}
	if _, ok := d.match(k(0).callID, "a", "b", caller.source, "UDP", false); !ok {
		t.Error("dialog with traffic 20 min ago expired")
	}
	// MaxAge: even with traffic, 12 h is the end.
	for range 12 {
		clock.Advance(59 * time.Minute)
		d.match(k(0).callID, "a", "b", caller.source, "UDP", false)
	}
	if _, ok := d.match(k(0).callID, "a", "b", caller.source, "UDP", false); ok {
		t.Error("dialog older than MaxAge still matched")
	}

	// Early dialogs: dropped with their INVITE unless confirmed.
	d2 := newDialogs(DialogLimits{}, clock.Now)
	d2.early(k(5), caller, callee)
	d2.early(k(6), caller, callee)
	d2.confirm(k(6), caller, callee)
	d2.dropEarly(k(5))
	d2.dropEarly(k(6))
	if d2.len() != 1 {
		t.Errorf("len %d after dropping the early dialog, want the confirmed one", d2.len())
	}
	if d2.lim.Max != defaultMaxDialogs || d2.lim.MaxAge != defaultDialogMaxAge || d2.lim.Idle != defaultDialogMaxAge {
		t.Errorf("defaults %+v", d2.lim)
	}
}

// TestDialogTableFullRefusesCalls: at the cap, a new call gets 503 before
// any phone rings; once the dialog that never got its ACK expires, calls
// ring again.
func TestDialogTableFullRefusesCalls(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	e.proxy.SetDialogLimits(DialogLimits{Max: 1})
	_, pw := e.addUser("1002")
	b := e.newPhone("UDP", "1002", pw, "sip:1002@192.0.2.64:5062", "")
	a := e.caller(nil, "UDP", "1001", e.password)

	cl := a.start("1002", offer(4000, "0"), false)
	answerCall200(t, cl, b.nextInvite(5*time.Second), "sip:1002@192.0.2.64:5062") // never ACKed
	if got := e.metric("dialtone_sip_dialogs", ""); got != 1 {
		t.Fatalf("dialtone_sip_dialogs = %v, want 1", got)
	}
	cl = a.start("1002", offer(4000, "0"), false)
	if f := cl.waitFinal(5 * time.Second); f.StatusCode != 503 {
		t.Fatalf("call at the cap → %d, want 503", f.StatusCode)
	}
	if rec := e.waitRecord(cl.callID); rec.Outcome != store.OutcomeFailed || rec.Status != 503 {
		t.Errorf("record %+v", rec)
	}
	expectNothing(t, b, "call at the cap")
	e.clock.Advance(dialogACKWait + time.Second)
	cl = a.start("1002", offer(4000, "0"), false)
	b.nextInvite(5*time.Second).respond(t, 486, "Busy Here", "")
	if f := cl.waitFinal(5 * time.Second); f.StatusCode != 486 {
		t.Fatalf("call after the expiry → %d, want the phone's 486", f.StatusCode)
	}
}

// TestByeToGoneFlowEndsDialog: a BYE that cannot be delivered (the other
// party's TCP connection is gone; it is never dialled) is answered 480 and
// still ends the dialog and the call's talk time.
func TestByeToGoneFlowEndsDialog(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	u, pw := e.addUser("1002")
	const contactB = "sip:1002@192.0.2.65:5062;transport=tcp"
	b := e.newPhone("TCP", "1002", pw, contactB, "")
	_, cliA, _ := newTestUA(t)
	a := e.caller(cliA, "UDP", "1001", e.password)
	cl := a.start("1002", offer(4000, "0"), false)
	ok := answerCall(t, cl, b.nextInvite(5*time.Second), contactB)
	if err := cliA.WriteRequest(cl.inDialog(sip.ACK, ok, 2)); err != nil {
		t.Fatal(err)
	}
	<-b.acks
	src := e.bindings(u)[0].Source
	b.ua.Close() // closes B's connection
	waitFor(t, "dialtone sees B's connection closed", func() bool {
		c, err := e.srv.ua.TransportLayer().GetConnection("tcp", src)
		if err != nil {
			return true
		}
		c.TryClose()
		return false
	})
	e.clock.Advance(30 * time.Second)
	if res := doFinal(t, cliA, cl.inDialog(sip.BYE, ok, 3), "UDP", e.udpAddr); res.StatusCode != 480 {
		t.Errorf("BYE to a gone flow → %d, want 480", res.StatusCode)
	}
	if n := e.proxy.dialogs.len(); n != 0 {
		t.Errorf("%d dialogs after the BYE, want 0", n)
	}
	waitFor(t, "talk time recorded", func() bool {
		r := e.waitRecord(cl.callID)
		return r.EndedAt.Sub(r.AnsweredAt) == 30*time.Second
	})
}

// TestDialogEndedMapBounded: BYEs that beat their call's record are
// remembered for the record, at most maxEndedDialogs of them.
func TestDialogEndedMapBounded(t *testing.T) {
	t.Parallel()
	clock := storetest.NewClock()
	d := newDialogs(DialogLimits{}, clock.Now)
	f := flow{source: "198.51.100.1:5060", transport: "UDP"}
	for i := range maxEndedDialogs + 10 {
		k := dialogKey{callID: "c" + strconv.Itoa(i), callerTag: "a", calleeTag: "b"}
		d.confirm(k, f, f)
		if _, _, ok := d.end(k, clock.Now()); ok {
			t.Fatal("a dialog without record reported one")
		}
		if len(d.ended) > maxEndedDialogs {
			t.Fatalf("%d ended entries, cap %d", len(d.ended), maxEndedDialogs)
		}
	}
	last := dialogKey{callID: "c" + strconv.Itoa(maxEndedDialogs+9)}
	if at, ended := d.setRecord(last, "acct", 1); !ended || !at.Equal(clock.Now()) {
		t.Errorf("the last BYE's time was lost: %v %v", at, ended)
	}
	if d.len() != 0 {
		t.Errorf("%d dialogs left", d.len())
	}
}

// TestEarlyDialogsBounded: a phone answering one INVITE with 1xx after 1xx,
// each with a new To-tag, adds at most maxEarlyPerBranch early dialogs, and
// they go when the INVITE fails.
func TestEarlyDialogsBounded(t *testing.T) {
	t.Parallel()
	e := newCallEnv(t)
	_, pw := e.addUser("1002")
	const contactB = "sip:1002@192.0.2.66:5062"
	b := e.newPhone("UDP", "1002", pw, contactB, "")
	cl := e.caller(nil, "UDP", "1001", e.password).start("1002", offer(4000, "0"), false)
	in := b.nextInvite(5 * time.Second)
	for i := range maxEarlyPerBranch + 3 {
		in.tag = "early" + strconv.Itoa(i)
		in.respond(t, 180, "Ringing", contactB)
		for r := cl.next(5 * time.Second); r.StatusCode != 180; r = cl.next(5 * time.Second) {
		}
	}
	if got := e.metric("dialtone_sip_dialogs", ""); got != maxEarlyPerBranch {
		t.Errorf("dialtone_sip_dialogs = %v after %d tagged 180s, want %d", got, maxEarlyPerBranch+3, maxEarlyPerBranch)
	}
	in.respond(t, 486, "Busy Here", "")
	if f := cl.waitFinal(5 * time.Second); f.StatusCode != 486 {
		t.Fatalf("final %d", f.StatusCode)
	}
	waitFor(t, "early dialogs dropped with their INVITE", func() bool { return e.proxy.dialogs.len() == 0 })
}
