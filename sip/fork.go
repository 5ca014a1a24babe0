package sip

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// target is a binding to ring: over its flow, or through the node that
// holds it (node set; hop.go).
type target struct {
	b    store.Binding
	node *store.NodeInfo
}

// branch is one forked INVITE towards one binding.
type branch struct {
	i            int
	b            store.Binding
	node         *store.NodeInfo // the node it goes through, or nil
	to           flow            // where its INVITE went (set by startBranch)
	req          *sip.Request    // the forwarded INVITE (never the server tx's request)
	tx           sip.ClientTransaction
	provisional  bool // a 1xx came: CANCEL may be sent (RFC 3261 §9.1)
	done         bool // final response received, or the transaction ended
	cancelWanted bool
	cancelSent   bool
	early        int // early dialogs recorded for it
}

// maxEarlyPerBranch bounds the early dialogs one branch can add to the
// table (a phone makes one; each 1xx with a new To-tag would make another).
const maxEarlyPerBranch = 4

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
// 5xx, then 480/408; a 401/407 from another node refusing our hop is never
// relayed: that branch failed, hop.go); without an answer within ringFor the caller gets 480
// and every branch is cancelled. A CANCEL from the caller cancels every
// branch. A 2xx arriving after the call was decided is acknowledged and hung
// up (ACK + BYE), so the phone stops ringing and no one is left in a call.
func (p *Proxy) proxyInvite(req *sip.Request, tx sip.ServerTransaction, call *callLog, targets []target, ringFor time.Duration, asserted string) {
	if !p.dialogs.room() {
		p.core.log.Warn("dialog table full: call refused", "call_id", call.rec.CallID, "max", p.dialogs.lim.Max)
		p.core.reply(req, tx, 503, "Service Unavailable")
		call.finish(store.OutcomeFailed, 503, "dialog table full")
		return
	}
	upstreamCancel := make(chan struct{})
	var once sync.Once
	if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(upstreamCancel) }) }) {
		call.finish(store.OutcomeCancelled, 487, "cancelled before routing")
		return
	}
	_ = p.core.send(req, tx, p.core.newResponse(req, 100, "Trying"))

	var winner atomic.Int32
	winner.Store(-1)
	events := make(chan branchEvent)
	var wg sync.WaitGroup
	defer wg.Wait()
	branches := make([]*branch, 0, len(targets))
	pending := 0
	// Phones on our own flows first: their INVITEs leave at once, before
	// any connection to another node is dialled (hopDialTimeout).
	targets = slices.Clone(targets)
	slices.SortStableFunc(targets, func(x, y target) int {
		return cmpBool(x.node != nil, y.node != nil)
	})
	for _, tg := range targets {
		b := tg.b
		br := &branch{i: len(branches), b: b, node: tg.node}
		branches = append(branches, br)
		if err := p.startBranch(req, br, &winner, asserted); err != nil {
			p.core.log.Info("fork: branch not started", "call_id", call.rec.CallID, "contact", b.Contact, "source", b.Source, "transport", b.Transport, "err", err)
			br.done = true
			continue
		}
		pending++
		wg.Add(1)
		go p.core.safely("fork: read branch", func() { readBranch(br, events, &wg) })
	}

	// Early dialogs (a 1xx with a To-tag) of branches that did not win end
	// with the INVITE.
	callID := req.CallID().Value()
	callerTag, _ := req.From().Params.Get("tag")
	caller := flow{source: req.Source(), transport: strings.ToUpper(req.Transport())}
	if call.hopFrom != nil {
		caller.node, caller.nodeAddr = call.hopFrom.ID, call.hopFrom.SIPAddr
	}
	var early []dialogKey
	defer func() {
		for _, k := range early {
			p.dialogs.dropEarly(k)
		}
	}()
	keyOf := func(res *sip.Response) dialogKey {
		tag, _ := res.To().Params.Get("tag")
		return dialogKey{callID: callID, callerTag: callerTag, calleeTag: tag}
	}

	finished := false
	var best *sip.Response
	refusedBy := "" // a node that refused our hop (its 401/407 never reaches the caller)
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
				p.cancelBranch(br)
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
				if code > 100 && !finished && ev.res.To().Params.Has("tag") && br.early < maxEarlyPerBranch {
					k := keyOf(ev.res)
					if !slices.Contains(early, k) && p.dialogs.early(k, caller, br.flow()) {
						early = append(early, k)
						br.early++
					}
				}
				if br.cancelWanted && !br.cancelSent {
					p.cancelBranch(br)
				}
				if !finished && code > 100 {
					_ = p.relay(req, tx, ev.res)
				}
				continue
			}
			br.done = true
			pending--
			switch {
			case code < 300 && finished:
				p.hangUpStray(br, ev.res, &wg)
			case code < 300:
				finished = true
				k := keyOf(ev.res)
				if !p.dialogs.confirm(k, caller, br.flow()) { // before the ACK can come
					// No room to route its BYE: hang the answering phone up.
					p.core.log.Warn("dialog table full: answered call hung up", "call_id", callID, "max", p.dialogs.lim.Max)
					p.hangUpStray(br, ev.res, &wg)
					p.core.reply(req, tx, 503, "Service Unavailable")
					call.finish(store.OutcomeFailed, 503, "dialog table full")
					cancelOthers(br.i)
					continue
				}
				winner.Store(int32(br.i))
				call.answered() // before the caller can see the 200 (and hang up)
				_ = p.relay(req, tx, ev.res)
				rec := call.finishRecord(store.OutcomeAnswered, code, "answered by "+br.b.Contact)
				if endedAt, ended := p.dialogs.setRecord(k, rec.AccountID, rec.Seq); ended {
					p.endCall(callID, rec.AccountID, rec.Seq, endedAt) // the BYE beat the record
				}
				cancelOthers(br.i)
			case finished:
			case br.node != nil && (code == 401 || code == 407):
				// The other node took our INVITE for an outside request:
				// its challenge (its realm, its nonce) is not the caller's
				// to answer. A failed branch.
				refusedBy = br.node.ID
				p.core.log.Warn("node refused our hop: check clocks/--sip-advertise", "node", br.node.ID, "status", code, "call_id", callID)
			case code >= 600:
				finished = true
				_ = p.relay(req, tx, ev.res)
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
				p.core.reply(req, tx, 480, "Temporarily Unavailable")
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
		detail := "no branch answered"
		if refusedBy != "" {
			detail = "node " + refusedBy + " refused the hop"
		}
		p.core.reply(req, tx, 480, "Temporarily Unavailable")
		call.finish(store.OutcomeUnavailable, 480, detail)
		return
	}
	code := best.StatusCode
	if code == 503 {
		// RFC 3261 §16.7 step 6: a 503 from downstream becomes 500.
		p.core.reply(req, tx, 500, "Server Internal Error")
		call.finish(store.OutcomeFailed, 500, "downstream 503")
		return
	}
	_ = p.relay(req, tx, best)
	call.finish(outcomeOf(code), code, "")
}

// flow is the flow the branch's INVITE went over: the binding's, or the
// hop to the node that holds it.
func (br *branch) flow() flow { return br.to }

// startBranch builds and sends the INVITE of br. The caller's identity and
// auto-answer headers are replaced by asserted, the P-Asserted-Identity of
// the authenticated caller (RFC 3325 §9.1).
func (p *Proxy) startBranch(req *sip.Request, br *branch, winner *atomic.Int32, asserted string) error {
	b := br.b
	var contact sip.Uri
	if err := sip.ParseUri(b.Contact, &contact); err != nil {
		return err
	}
	tr := strings.ToUpper(b.Transport)
	if tr == "" {
		tr = "UDP"
	}
	dest := b.Source
	br.to = flow{source: dest, transport: tr}
	if br.node != nil {
		// Through the node that holds the flow: a connection to it may be
		// dialled (nodes reach each other directly).
		tr, dest = hopTransport, br.node.SIPAddr
		br.to = flow{source: dest, transport: tr, node: br.node.ID, nodeAddr: dest}
	} else if sip.IsReliable(tr) {
		conn, err := p.core.ua.TransportLayer().GetConnection(tr, b.Source)
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
	stripHop(fwd)
	stripCallerAssertions(fwd)
	if asserted != "" {
		fwd.AppendHeader(sip.NewHeader("P-Asserted-Identity", asserted))
	}
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		m := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&m)
	}
	inRR := p.core.ourURI(req.Source(), req.Transport(), true)
	outRR := p.core.ourURI(dest, tr, true)
	if inRR.String() != outRR.String() {
		fwd.PrependHeader(&sip.RecordRouteHeader{Address: inRR})
	}
	fwd.PrependHeader(&sip.RecordRouteHeader{Address: outRR})
	p.core.addVia(fwd, req.Source(), tr, dest)
	p.core.setFlow(fwd, tr, dest)
	if br.node != nil {
		if err := p.core.signHop(fwd, b); err != nil {
			return err
		}
	}

	dial := connectTimeout
	if br.node != nil {
		dial = hopDialTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), dial)
	defer cancel()
	ctr, err := p.core.cli.TransactionRequest(ctx, fwd, noBuild)
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
			stripCallerAssertions(r)
			r.SetTransport(req.Transport())
			r.SetDestination(req.Source())
			if err := p.core.ua.TransportLayer().WriteMsg(r); err != nil {
				p.core.log.Debug("relay 2xx retransmission", "err", err)
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
func (p *Proxy) cancelBranch(br *branch) {
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
	p.core.setFlow(c, inv.Transport(), inv.Destination())
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	ctr, err := p.core.cli.TransactionRequest(ctx, c, noBuild)
	cancel()
	if err != nil {
		p.core.log.Info("fork: CANCEL not sent", "contact", br.b.Contact, "err", err)
		br.tx.Terminate()
		return
	}
	go p.core.safely("fork: CANCEL", func() {
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
	})
}

// hangUpStray acknowledges a 2xx that arrived after the call was decided
// (another branch answered, or the caller cancelled, or the ring timeout
// passed) and hangs it up with BYE, over the branch's flow.
func (p *Proxy) hangUpStray(br *branch, res *sip.Response, wg *sync.WaitGroup) {
	inv := br.req
	target := inv.Recipient
	if ct := res.Contact(); ct != nil {
		target = ct.Address
	}
	mk := func(method sip.RequestMethod, seq uint32) *sip.Request {
		r := sip.NewRequest(method, target)
		p.core.addVia(r, "", inv.Transport(), inv.Destination())
		r.AppendHeader(sip.HeaderClone(inv.From()))
		r.AppendHeader(sip.HeaderClone(res.To()))
		r.AppendHeader(sip.HeaderClone(inv.CallID()))
		r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		mf := sip.MaxForwardsHeader(70)
		r.AppendHeader(&mf)
		if br.node != nil { // the node routes it inside its record of the dialog
			r.AppendHeader(&sip.RouteHeader{Address: hopRoute(br.node.SIPAddr)})
		}
		r.SetBody(nil)
		p.core.setFlow(r, inv.Transport(), inv.Destination())
		return r
	}
	if err := p.core.cli.WriteRequest(mk(sip.ACK, inv.CSeq().SeqNo), noBuild); err != nil {
		p.core.log.Info("stray 2xx: ACK failed", "contact", br.b.Contact, "err", err)
	}
	bye := mk(sip.BYE, inv.CSeq().SeqNo+1)
	wg.Add(1)
	go p.core.safely("fork: stray BYE", func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := p.core.cli.Do(ctx, bye, noBuild); err != nil {
			p.core.log.Info("stray 2xx: BYE failed", "contact", br.b.Contact, "err", err)
		}
	})
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

// cmpBool orders false before true.
func cmpBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	default:
		return 1
	}
}
