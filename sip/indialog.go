package sip

import (
	"context"
	"net"
	"strconv"
	"strings"
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
func (p *Proxy) forwardable(req *sip.Request) (*sip.Request, dialogMatch, int, string) {
	toTag, _ := req.To().Params.Get("tag")
	if r := req.Route(); r == nil || !p.isOurs(r.Address) || toTag == "" {
		return nil, dialogMatch{}, 0, "" // not in a dialog through us
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return nil, dialogMatch{}, 483, "Too Many Hops"
	}
	fromTag, _ := req.From().Params.Get("tag")
	m, ok := p.dialogs.match(req.CallID().Value(), fromTag, toTag, req.Source(), req.Transport(), req.IsAck())
	if !ok {
		if !req.IsAck() {
			p.dialogs.refused.Inc()
		}
		return nil, dialogMatch{}, 481, "Call/Transaction Does Not Exist"
	}
	dest, tr := m.to.source, m.to.transport
	if sip.IsReliable(tr) {
		conn, err := p.core.ua.TransportLayer().GetConnection(tr, dest)
		switch {
		case err == nil:
			_, _ = conn.TryClose() // GetConnection took a reference
		case m.to.node != "":
			dest = m.to.nodeAddr // another node: dial it again
		default:
			return nil, m, 480, "Temporarily Unavailable"
		}
	}
	fwd := req.Clone()
	for fwd.RemoveHeader("Route") {
	}
	stripHop(fwd)
	if m.to.node != "" {
		// The other node routes it inside its own record of the dialog.
		fwd.PrependHeader(&sip.RouteHeader{Address: hopRoute(m.to.nodeAddr)})
	}
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		mf := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&mf)
	}
	stripCallerAssertions(fwd)
	p.core.addVia(fwd, req.Source(), tr, dest)
	p.core.setFlow(fwd, tr, dest)
	return fwd, m, 0, ""
}

// onAck forwards an ACK for a 2xx (a transaction of its own) in one of our
// dialogs, statelessly; other ACKs are absorbed (ACKs are never answered).
func (p *Proxy) onAck(req *sip.Request, _ sip.ServerTransaction) {
	fwd, _, _, _ := p.forwardable(req)
	if fwd == nil {
		return
	}
	if err := p.core.cli.WriteRequest(fwd, noBuild); err != nil {
		p.core.log.Info("forward ACK", "call_id", req.CallID().Value(), "dest", fwd.Destination(), "err", err)
	}
}

// onCancel answers a CANCEL that matched no INVITE transaction: 481.
func (p *Proxy) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	p.core.reply(req, tx, 481, "Call/Transaction Does Not Exist")
}

// onInDialog loose-routes a request inside one of our dialogs (BYE,
// re-INVITE, UPDATE, INFO, …) to the other party's flow and relays its
// responses. A request with our Route and a To-tag in no dialog of ours
// gets 481, and so does a BYE without both; other methods without them get
// the no-route answer (405: we do not relay requests outside dialogs).
func (p *Proxy) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	fwd, m, code, reason := p.forwardable(req)
	// A BYE ends the dialog whatever its answer (RFC 3261 §15.1.1), even
	// when it cannot be delivered; a 481 from the other party says it has
	// none any more (§12.2.1.2). The dialog is forgotten before the answer
	// is relayed (nothing more gets through after it), the call record is
	// ended after.
	var record func()
	end := func() {
		now := p.core.db.Now()
		if acct, seq, ok := p.dialogs.end(m.key, now); ok {
			record = func() { p.endCall(m.key.callID, acct, seq, now) }
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
		p.core.reply(req, tx, code, reason)
		return
	}
	if fwd == nil {
		switch req.Method {
		case sip.BYE, sip.INVITE:
			p.core.reply(req, tx, 481, "Call/Transaction Does Not Exist")
		default:
			p.core.onNoRoute(req, tx)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	ctr, err := p.core.cli.TransactionRequest(ctx, fwd, noBuild)
	cancel()
	if err != nil {
		p.core.log.Info("forward in-dialog request", "method", methodLabel(req.Method), "call_id", req.CallID().Value(), "dest", fwd.Destination(), "err", err)
		if req.Method == sip.BYE {
			end()
		}
		p.core.reply(req, tx, 503, "Service Unavailable")
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
			_ = p.relay(req, tx, res)
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
		p.core.reply(req, tx, 408, "Request Timeout")
		return
	}
}

// isOurs reports whether u (a Route or Record-Route URI) names this
// server: one of our listening ports on Hostname, an address of this host,
// or the Announcer's MediaIP (a public address behind 1:1 NAT).
func (p *Proxy) isOurs(u sip.Uri) bool {
	s := p.core
	port := effectivePort(u.Port, u.Scheme)
	mine := false
	for _, n := range []string{"udp", "tcp", "tls"} {
		for _, lp := range s.ua.TransportLayer().ListenPorts(n) {
			if lp == port {
				mine = true
			}
		}
	}
	if !mine {
		return false
	}
	host := strings.ToLower(strings.Trim(u.Host, "[]"))
	if s.cfg.NodeAddr != "" && strings.EqualFold(net.JoinHostPort(host, strconv.Itoa(port)), s.cfg.NodeAddr) {
		return true // the address the other nodes route on
	}
	switch {
	case s.cfg.Hostname != "" && host == strings.ToLower(s.cfg.Hostname),
		p.ann != nil && p.ann.cfg.MediaIP != "" && host == p.ann.cfg.MediaIP:
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return s.localIPs()[ip.String()]
	}
	return false
}
