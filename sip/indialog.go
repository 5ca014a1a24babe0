package sip

import (
	"context"
	"time"

	"github.com/emiago/sipgo/sip"
)

// forwardable prepares a clone of an in-dialog request that carries our
// Route, for one of our dialogs (dialog.go): every Route removed (ours, and
// any a party added: the route set is the flow recorded at the dialog's
// creation), Max-Forwards decremented, the caller-supplied identity and
// auto-answer headers removed, our Via on top, and the other party's flow
// as destination. It returns nil when req does not route through us or has
// no To-tag (not in a dialog), and the status to answer when it cannot go
// on: 481 when it matches no dialog of ours (RFC 3261 §12.2.2; we are not
// an open relay), 480 when the other party's TCP/TLS connection is gone
// (never dialled: NAT; the match is returned).
func (s *Server) forwardable(req *sip.Request) (*sip.Request, dialogMatch, int, string) {
	toTag, _ := req.To().Params.Get("tag")
	if r := req.Route(); r == nil || !s.isOurs(r.Address) || toTag == "" {
		return nil, dialogMatch{}, 0, "" // not in a dialog through us
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return nil, dialogMatch{}, 483, "Too Many Hops"
	}
	fromTag, _ := req.From().Params.Get("tag")
	m, ok := s.calls.dialogs.match(req.CallID().Value(), fromTag, toTag, req.Source(), req.Transport(), req.IsAck())
	if !ok {
		if !req.IsAck() {
			s.calls.dialogs.refused.Inc()
		}
		return nil, dialogMatch{}, 481, "Call/Transaction Does Not Exist"
	}
	dest, tr := m.to.source, m.to.transport
	if sip.IsReliable(tr) {
		conn, err := s.ua.TransportLayer().GetConnection(tr, dest)
		if err != nil {
			return nil, m, 480, "Temporarily Unavailable"
		}
		_, _ = conn.TryClose() // GetConnection took a reference
	}
	fwd := req.Clone()
	for fwd.RemoveHeader("Route") {
	}
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		mf := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&mf)
	}
	stripCallerAssertions(fwd)
	s.addVia(fwd, req.Source(), tr, dest)
	s.setFlow(fwd, tr, dest)
	return fwd, m, 0, ""
}

// onAck forwards an ACK for a 2xx (a transaction of its own) in one of our
// dialogs, statelessly; other ACKs are absorbed (ACKs are never answered).
func (s *Server) onAck(req *sip.Request, _ sip.ServerTransaction) {
	fwd, _, _, _ := s.forwardable(req)
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

// onInDialog loose-routes a request inside one of our dialogs (BYE,
// re-INVITE, UPDATE, INFO, …) to the other party's flow and relays its
// responses. A request with our Route and a To-tag in no dialog of ours
// gets 481, and so does a BYE without both; other methods without them get
// the no-route answer (405: we do not relay requests outside dialogs).
func (s *Server) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	fwd, m, code, reason := s.forwardable(req)
	// A BYE ends the dialog whatever its answer (RFC 3261 §15.1.1), even
	// when it cannot be delivered; a 481 from the other party says it has
	// none any more (§12.2.1.2). The dialog is forgotten before the answer
	// is relayed (nothing more gets through after it), the call record is
	// ended after.
	var record func()
	end := func() {
		now := s.db.Now()
		if acct, seq, ok := s.calls.dialogs.end(m.key, now); ok {
			record = func() { s.endCall(m.key.callID, acct, seq, now) }
		}
	}
	defer func() {
		if record != nil {
			record()
		}
	}()
	if code != 0 {
		if code == 480 && req.Method == sip.BYE {
			end()
		}
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
		if req.Method == sip.BYE {
			end()
		}
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
			if res.StatusCode >= 200 && (req.Method == sip.BYE || res.StatusCode == 481) {
				end()
			}
			_ = s.relay(req, tx, res)
			if res.StatusCode < 200 {
				continue
			}
			return
		case <-ctr.Done():
		case <-t.C:
		}
		if req.Method == sip.BYE {
			end()
		}
		s.reply(req, tx, 408, "Request Timeout")
		return
	}
}
