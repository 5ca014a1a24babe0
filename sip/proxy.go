package sip

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// errNoFlow is a binding whose TCP/TLS connection is gone: behind NAT a new
// connection would not reach the phone, so we do not dial one.
var errNoFlow = errors.New("registered connection is gone")

// Time limits of the proxy.
const (
	cancelGrace     = 8 * time.Second  // how long cancelled branches may take to answer 487
	inDialogTimeout = 32 * time.Second // 64×T1: a forwarded in-dialog request without final response
	connectTimeout  = 10 * time.Second // opening a connection for a forwarded request
)

// branch is one forked INVITE towards one binding.
type branch struct {
	i            int
	b            store.Binding
	req          *sip.Request // the forwarded INVITE (never the server tx's request)
	tx           sip.ClientTransaction
	provisional  bool // a 1xx came: CANCEL may be sent (RFC 3261 §9.1)
	done         bool // final response received, or the transaction ended
	cancelWanted bool
	cancelSent   bool
}

type branchEvent struct {
	i   int
	res *sip.Response // nil: the transaction ended without a final response
}

// proxyInvite forks req to every target binding in parallel, as a stateful
// proxy (RFC 3261 §16): each branch is a clone of req with the binding's
// contact as Request-URI, sent over the binding's flow (source address and
// transport, for NAT), with Max-Forwards decremented, our Record-Route (two
// when the transports differ, RFC 5658) and our Via; the caller's
// Proxy-Authorization is consumed. Provisional responses (not 100) are
// relayed; the first 2xx is relayed and every other branch is cancelled; a
// 6xx ends the call likewise; when every branch failed the best final
// response is relayed (RFC 3261 §16.7: 6xx, then 486 and other 4xx, 3xx,
// 5xx, then 480/408); without an answer within ringFor the caller gets 480
// and every branch is cancelled. A CANCEL from the caller cancels every
// branch. A 2xx arriving after the call was decided is acknowledged and hung
// up (ACK + BYE), so the phone stops ringing and no one is left in a call.
func (s *Server) proxyInvite(req *sip.Request, tx sip.ServerTransaction, call *callLog, targets []store.Binding, ringFor time.Duration) {
	upstreamCancel := make(chan struct{})
	var once sync.Once
	if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(upstreamCancel) }) }) {
		call.finish(store.OutcomeCancelled, 487, "cancelled before routing")
		return
	}
	_ = s.respond(req, tx, s.newResponse(req, 100, "Trying"))

	var winner atomic.Int32
	winner.Store(-1)
	events := make(chan branchEvent)
	var wg sync.WaitGroup
	defer wg.Wait()
	branches := make([]*branch, 0, len(targets))
	pending := 0
	for _, b := range targets {
		br := &branch{i: len(branches), b: b}
		branches = append(branches, br)
		if err := s.startBranch(req, br, &winner, tx); err != nil {
			s.log.Info("fork: branch not started", "call_id", call.rec.CallID, "contact", b.Contact, "source", b.Source, "transport", b.Transport, "err", err)
			br.done = true
			continue
		}
		pending++
		wg.Add(1)
		go readBranch(br, events, &wg)
	}

	finished := false
	var best *sip.Response
	ring := time.NewTimer(ringFor)
	defer ring.Stop()
	var grace <-chan time.Time
	cancelOthers := func(except int) {
		for _, br := range branches {
			if br.i == except || br.done || br.cancelWanted {
				continue
			}
			br.cancelWanted = true
			if br.provisional {
				s.cancelBranch(br)
			}
		}
		if grace == nil {
			grace = time.After(cancelGrace)
		}
	}
	for pending > 0 {
		select {
		case ev := <-events:
			br := branches[ev.i]
			if ev.res == nil {
				br.done = true
				pending--
				continue
			}
			code := ev.res.StatusCode
			if code < 200 {
				br.provisional = true
				if br.cancelWanted && !br.cancelSent {
					s.cancelBranch(br)
				}
				if !finished && code > 100 {
					_ = s.relay(req, tx, ev.res)
				}
				continue
			}
			br.done = true
			pending--
			switch {
			case code < 300 && finished:
				s.hangUpStray(br, ev.res, &wg)
			case code < 300:
				finished = true
				winner.Store(int32(br.i))
				s.calls.dialogs.add(req, br, ev.res) // before the ACK can come
				_ = s.relay(req, tx, ev.res)
				rec := call.finishRecord(store.OutcomeAnswered, code, "answered by "+br.b.Contact)
				if endedAt, ended := s.calls.dialogs.setRecord(req.CallID().Value(), rec.AccountID, rec.Seq); ended {
					s.endCall(req.CallID().Value(), rec.AccountID, rec.Seq, endedAt) // the BYE beat the record
				}
				cancelOthers(br.i)
			case finished:
			case code >= 600:
				finished = true
				_ = s.relay(req, tx, ev.res)
				call.finish(outcomeOf(code), code, "declined by "+br.b.Contact)
				cancelOthers(br.i)
			default:
				if best == nil || responseRank(code) < responseRank(best.StatusCode) {
					best = ev.res
				}
			}
		case <-ring.C:
			if !finished {
				finished = true
				s.reply(req, tx, 480, "Temporarily Unavailable")
				call.finish(store.OutcomeUnavailable, 480, "no answer within "+ringFor.String())
				cancelOthers(-1)
			}
		case <-upstreamCancel:
			upstreamCancel = nil
			if !finished {
				finished = true // sipgo has answered 487
				call.finish(store.OutcomeCancelled, 487, "caller cancelled")
				cancelOthers(-1)
			}
		case <-grace:
			grace = nil
			for _, br := range branches {
				if !br.done {
					br.tx.Terminate() // its reader reports the end
				}
			}
		}
	}
	if finished {
		return
	}
	if best == nil {
		s.reply(req, tx, 480, "Temporarily Unavailable")
		call.finish(store.OutcomeUnavailable, 480, "no branch answered")
		return
	}
	code := best.StatusCode
	if code == 503 {
		// RFC 3261 §16.7 step 6: a 503 from downstream becomes 500.
		s.reply(req, tx, 500, "Server Internal Error")
		call.finish(store.OutcomeFailed, 500, "downstream 503")
		return
	}
	_ = s.relay(req, tx, best)
	call.finish(outcomeOf(code), code, "")
}

// startBranch builds and sends the INVITE of br.
func (s *Server) startBranch(req *sip.Request, br *branch, winner *atomic.Int32, stx sip.ServerTransaction) error {
	b := br.b
	var contact sip.Uri
	if err := sip.ParseUri(b.Contact, &contact); err != nil {
		return err
	}
	tr := strings.ToUpper(b.Transport)
	if tr == "" {
		tr = "UDP"
	}
	if sip.IsReliable(tr) {
		conn, err := s.ua.TransportLayer().GetConnection(tr, b.Source)
		if err != nil {
			return errNoFlow
		}
		_, _ = conn.TryClose() // GetConnection took a reference
	}
	fwd := req.Clone()
	fwd.Recipient = contact
	for fwd.RemoveHeader("Route") {
	}
	for fwd.RemoveHeader("Proxy-Authorization") {
	}
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		m := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&m)
	}
	inRR := s.ourURI(req.Source(), req.Transport(), true)
	outRR := s.ourURI(b.Source, tr, true)
	if inRR.String() != outRR.String() {
		fwd.PrependHeader(&sip.RecordRouteHeader{Address: inRR})
	}
	fwd.PrependHeader(&sip.RecordRouteHeader{Address: outRR})
	s.addVia(fwd, req.Source(), tr, b.Source)
	s.setFlow(fwd, tr, b.Source)

	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	ctr, err := s.calls.cli.TransactionRequest(ctx, fwd, noBuild)
	if err != nil {
		return err
	}
	br.req, br.tx = fwd, ctr
	// 2xx retransmissions of the winning branch (RFC 6026) go upstream
	// statelessly: the caller retransmits nothing until it gets one.
	ctr.OnRetransmission(func(res *sip.Response) {
		if res.IsSuccess() && winner.Load() == int32(br.i) {
			r := res.Clone()
			r.RemoveHeader("Via")
			r.SetTransport(req.Transport())
			r.SetDestination(req.Source())
			if err := s.ua.TransportLayer().WriteMsg(r); err != nil {
				s.log.Debug("relay 2xx retransmission", "err", err)
			}
		}
	})
	return nil
}

func readBranch(br *branch, events chan<- branchEvent, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case res := <-br.tx.Responses():
			events <- branchEvent{br.i, res}
			if res.StatusCode >= 200 {
				return
			}
		case <-br.tx.Done():
			events <- branchEvent{br.i, nil}
			return
		}
	}
}

// cancelBranch sends CANCEL for br's INVITE (RFC 3261 §9.1): same
// Request-URI, Call-ID, From, To, Route and top Via (so the same branch) as
// the INVITE, and the INVITE's CSeq number with method CANCEL. Its answer
// is read (and dropped) in the background; the 487 reaches readBranch.
func (s *Server) cancelBranch(br *branch) {
	br.cancelSent = true
	inv := br.req
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	c.AppendHeader(sip.HeaderClone(inv.Via()))
	for _, h := range inv.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	c.AppendHeader(sip.HeaderClone(inv.From()))
	c.AppendHeader(sip.HeaderClone(inv.To()))
	c.AppendHeader(sip.HeaderClone(inv.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.SetBody(nil)
	s.setFlow(c, inv.Transport(), inv.Destination())
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	ctr, err := s.calls.cli.TransactionRequest(ctx, c, noBuild)
	cancel()
	if err != nil {
		s.log.Info("fork: CANCEL not sent", "contact", br.b.Contact, "err", err)
		br.tx.Terminate()
		return
	}
	go func() {
		defer ctr.Terminate()
		t := time.NewTimer(inDialogTimeout)
		defer t.Stop()
		for {
			select {
			case res := <-ctr.Responses():
				if res.StatusCode >= 200 {
					return
				}
			case <-ctr.Done():
				return
			case <-t.C:
				return
			}
		}
	}()
}

// hangUpStray acknowledges a 2xx that arrived after the call was decided
// (another branch answered, or the caller cancelled, or the ring timeout
// passed) and hangs it up with BYE, over the branch's flow.
func (s *Server) hangUpStray(br *branch, res *sip.Response, wg *sync.WaitGroup) {
	inv := br.req
	target := inv.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	mk := func(method sip.RequestMethod, seq uint32) *sip.Request {
		r := sip.NewRequest(method, target)
		s.addVia(r, "", inv.Transport(), inv.Destination())
		r.AppendHeader(sip.HeaderClone(inv.From()))
		r.AppendHeader(sip.HeaderClone(res.To()))
		r.AppendHeader(sip.HeaderClone(inv.CallID()))
		r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		mf := sip.MaxForwardsHeader(70)
		r.AppendHeader(&mf)
		r.SetBody(nil)
		s.setFlow(r, inv.Transport(), inv.Destination())
		return r
	}
	if err := s.calls.cli.WriteRequest(mk(sip.ACK, inv.CSeq().SeqNo), noBuild); err != nil {
		s.log.Info("stray 2xx: ACK failed", "contact", br.b.Contact, "err", err)
	}
	bye := mk(sip.BYE, inv.CSeq().SeqNo+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.calls.cli.Do(ctx, bye, noBuild); err != nil {
			s.log.Info("stray 2xx: BYE failed", "contact", br.b.Contact, "err", err)
		}
	}()
}

// relay sends a downstream response upstream on tx, without our Via.
func (s *Server) relay(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) error {
	r := res.Clone()
	r.RemoveHeader("Via")
	r.SetTransport(req.Transport())
	r.SetDestination(req.Source())
	return s.respond(req, tx, r)
}

// responseRank orders failure responses for §16.7 step 6 (lower is better).
func responseRank(code int) int {
	switch {
	case code >= 600:
		return 0
	case code == 486:
		return 1
	case code == 480 || code == 408:
		return 6
	case code == 487:
		return 7
	case code >= 400:
		return 2
	case code >= 300:
		return 3
	default:
		return 4
	}
}

// outcomeOf maps a final status relayed to the caller to a call outcome.
func outcomeOf(code int) string {
	switch {
	case code < 300:
		return store.OutcomeAnswered
	case code == 486 || code == 600 || code == 603:
		return store.OutcomeBusy
	case code == 480 || code == 408 || code == 404 || code == 410:
		return store.OutcomeUnavailable
	case code == 487:
		return store.OutcomeCancelled
	}
	return store.OutcomeRouted
}

// dialogs remembers the two flows of every call we proxied to an answer, so
// that in-dialog requests reach each party over the flow it used (NAT).
type dialogs struct {
	mu        sync.Mutex
	m         map[string]*dialog   // by Call-ID
	ended     map[string]time.Time // BYE seen before the call's record was written
	lastPrune time.Time
}

type dialogFlow struct {
	contact   string // contactKey of the party's Contact
	source    string
	transport string
}

type dialog struct {
	caller, callee dialogFlow
	at             time.Time
	// The call's record, ended (talk time) when the BYE goes through.
	account string
	seq     uint64
}

// dialogTTL bounds how long a dialog without BYE is remembered.
const dialogTTL = 12 * time.Hour

func newDialogs() *dialogs { return &dialogs{m: map[string]*dialog{}} }

func (d *dialogs) add(req *sip.Request, br *branch, res *sip.Response) {
	dl := &dialog{at: time.Now(),
		caller: dialogFlow{source: req.Source(), transport: req.Transport()},
		callee: dialogFlow{source: br.b.Source, transport: br.req.Transport()},
	}
	if ct := req.Contact(); ct != nil {
		dl.caller.contact = contactKey(ct.Address)
	}
	if ct := res.Contact(); ct != nil {
		dl.callee.contact = contactKey(ct.Address)
	} else {
		dl.callee.contact = contactKey(br.req.Recipient)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if now := time.Now(); now.Sub(d.lastPrune) > time.Minute {
		d.lastPrune = now
		for k, v := range d.m {
			if now.Sub(v.at) > dialogTTL {
				delete(d.m, k)
			}
		}
	}
	d.m[req.CallID().Value()] = dl
}

// flow returns the flow of the party of dialog callID whose contact is key.
func (d *dialogs) flow(callID, key string) (dialogFlow, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl, ok := d.m[callID]
	switch {
	case !ok:
	case dl.callee.contact == key:
		return dl.callee, true
	case dl.caller.contact == key:
		return dl.caller, true
	}
	return dialogFlow{}, false
}

func (d *dialogs) known(callID string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.m[callID]
	return ok
}

// setRecord remembers which call record the dialog belongs to. The record
// is written (with an fsync) after the 2xx is relayed, so a quick caller's
// BYE can come first: then setRecord reports the time that BYE ended the
// call, for the caller to end the record with.
func (d *dialogs) setRecord(callID, account string, seq uint64) (endedAt time.Time, ended bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if dl, ok := d.m[callID]; ok {
		dl.account, dl.seq = account, seq
		return time.Time{}, false
	}
	endedAt, ended = d.ended[callID]
	delete(d.ended, callID)
	return endedAt, ended
}

// end forgets the dialog at its BYE and returns its record, if known; if
// the record is not written yet, it keeps the end time for setRecord.
func (d *dialogs) end(callID string, at time.Time) (account string, seq uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dl, found := d.m[callID]
	if !found {
		return "", 0, false
	}
	delete(d.m, callID)
	if dl.seq == 0 {
		if d.ended == nil {
			d.ended = map[string]time.Time{}
		}
		if len(d.ended) > 10000 { // bounded: a record lost here only keeps its set-up time
			clear(d.ended)
		}
		d.ended[callID] = at
		return "", 0, false
	}
	return dl.account, dl.seq, true
}

func (d *dialogs) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.m)
}

// popOurRoutes removes the Route headers at the top of fwd that name us
// (one, or two after a double Record-Route) and reports whether there was
// any.
func (s *Server) popOurRoutes(fwd *sip.Request) bool {
	popped := false
	for i := 0; i < 2; i++ {
		r := fwd.Route()
		if r == nil || !s.isOurs(r.Address) {
			break
		}
		fwd.RemoveHeader("Route")
		popped = true
	}
	return popped
}

// nextHop is where a loose-routed request goes (RFC 3261 §16.12). We are
// not an open relay: a request is only forwarded inside a dialog we
// proxied (Call-ID known) — to the next Route if any, else over the flow of
// the party whose contact is the Request-URI — or to the contact of a live
// binding, over its flow (dialogs from before a restart). Anything else
// reports false.
func (s *Server) nextHop(fwd *sip.Request) (dest, transport string, ok bool) {
	callID := fwd.CallID().Value()
	if r := fwd.Route(); r != nil {
		if !s.calls.dialogs.known(callID) {
			return "", "", false
		}
		return hostPort(r.Address), uriTransport(r.Address), true
	}
	key := contactKey(fwd.Recipient)
	if f, ok := s.calls.dialogs.flow(callID, key); ok {
		return f.source, strings.ToUpper(f.transport), true
	}
	if b, ok := s.bindingByContact(fwd, key); ok {
		return b.Source, strings.ToUpper(b.Transport), true
	}
	return "", "", false
}

// bindingByContact finds a live binding whose contact is key in the account
// of the From or To domain.
func (s *Server) bindingByContact(req *sip.Request, key string) (store.Binding, bool) {
	for _, host := range []string{req.To().Address.Host, req.From().Address.Host} {
		a, err := s.db.AccountByDomain(strings.ToLower(host))
		if err != nil {
			continue
		}
		bs, err := s.db.AccountBindings(a.ID)
		if err != nil {
			continue
		}
		for _, b := range bs {
			if contactKeyString(b.Contact) == key {
				return b, true
			}
		}
	}
	return store.Binding{}, false
}

func hostPort(u sip.Uri) string {
	host := u.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(effectivePort(u.Port, u.Scheme))
}

func uriTransport(u sip.Uri) string {
	if t, ok := u.UriParams.Get("transport"); ok && t != "" {
		return strings.ToUpper(t)
	}
	if strings.EqualFold(u.Scheme, "sips") {
		return "TLS"
	}
	return "UDP"
}

// forwardable prepares a clone of an in-dialog request that carries our
// Route: our routes popped, Max-Forwards decremented, our Via on top, the
// next hop's destination and transport set. It returns nil when req does
// not route through us, and the status to answer when it cannot go on
// (481 for a dialog we do not know, see nextHop).
func (s *Server) forwardable(req *sip.Request) (*sip.Request, int, string) {
	if r := req.Route(); r == nil || !s.isOurs(r.Address) {
		return nil, 0, ""
	}
	fwd := req.Clone()
	s.popOurRoutes(fwd)
	if mf := fwd.MaxForwards(); mf != nil {
		if mf.Val() == 0 {
			return nil, 483, "Too Many Hops"
		}
		mf.Dec()
	} else {
		m := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&m)
	}
	dest, tr, ok := s.nextHop(fwd)
	if !ok {
		return nil, 481, "Call/Transaction Does Not Exist"
	}
	if sip.IsReliable(tr) && fwd.Route() == nil {
		// A party's TCP/TLS flow: never dial a new connection (NAT).
		conn, err := s.ua.TransportLayer().GetConnection(tr, dest)
		if err != nil {
			return nil, 480, "Temporarily Unavailable"
		}
		_, _ = conn.TryClose()
	}
	s.addVia(fwd, req.Source(), tr, dest)
	s.setFlow(fwd, tr, dest)
	return fwd, 0, ""
}

// onAck forwards an ACK for a 2xx (a transaction of its own) that carries
// our Route, statelessly; other ACKs are absorbed (ACKs are never answered).
func (s *Server) onAck(req *sip.Request, _ sip.ServerTransaction) {
	fwd, _, _ := s.forwardable(req)
	if fwd == nil {
		return
	}
	if err := s.calls.cli.WriteRequest(fwd, noBuild); err != nil {
		s.log.Info("forward ACK", "call_id", req.CallID().Value(), "dest", fwd.Destination(), "err", err)
	}
}

// onCancel answers a CANCEL that matched no INVITE transaction: 481.
func (s *Server) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
}

// onInDialog loose-routes a request inside a dialog we Record-Routed (BYE,
// re-INVITE, UPDATE, INFO, …) and relays its responses. Without our Route
// it gets what it got before call handling: BYE and re-INVITE 481, other
// methods the no-route answer.
func (s *Server) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	fwd, code, reason := s.forwardable(req)
	if code != 0 {
		s.reply(req, tx, code, reason)
		return
	}
	if fwd == nil {
		switch req.Method {
		case sip.BYE, sip.INVITE:
			s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
		default:
			s.onNoRoute(req, tx)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	ctr, err := s.calls.cli.TransactionRequest(ctx, fwd, noBuild)
	cancel()
	if err != nil {
		s.log.Info("forward in-dialog request", "method", methodLabel(req.Method), "call_id", req.CallID().Value(), "dest", fwd.Destination(), "err", err)
		s.reply(req, tx, 503, "Service Unavailable")
		return
	}
	defer ctr.Terminate()
	t := time.NewTimer(inDialogTimeout)
	defer t.Stop()
	for {
		select {
		case res := <-ctr.Responses():
			if res.StatusCode == 100 {
				continue
			}
			_ = s.relay(req, tx, res)
			if res.StatusCode < 200 {
				continue
			}
			if req.Method == sip.BYE {
				if acct, seq, ok := s.calls.dialogs.end(req.CallID().Value(), s.db.Now()); ok {
					s.endCall(req.CallID().Value(), acct, seq, s.db.Now())
				}
			}
			return
		case <-ctr.Done():
			s.reply(req, tx, 408, "Request Timeout")
			return
		case <-t.C:
			s.reply(req, tx, 408, "Request Timeout")
			return
		}
	}
}

// endCall sets an answered call's record to its talk time.
func (s *Server) endCall(callID, account string, seq uint64, at time.Time) {
	if err := s.db.EndCall(account, seq, at); err != nil {
		s.log.Error("end call record", "call_id", callID, "err", err)
	}
}
