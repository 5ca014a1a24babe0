package sip

// The stateful proxy (RFC 3261 §16) is in four parts: invite.go
// authenticates an initial INVITE and routes it, fork.go forks it to the
// target's bindings, dialog.go remembers the dialogs that creates,
// indialog.go loose-routes requests inside them. This file holds the
// Proxy and what the parts share.

import (
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ProxyConfig configures a Proxy. Zero values mean the defaults in
// brackets.
type ProxyConfig struct {
	// RingTimeout is how long a routed call rings its contacts before every
	// branch is cancelled and the caller gets 480 [60 s]; a callflow step's
	// own timeout wins.
	RingTimeout time.Duration
	// Dialogs bounds the dialog table (DialogLimits; SetDialogLimits
	// changes them later).
	Dialogs DialogLimits
}

// Proxy is the call-handling component: a stateful proxy (RFC 3261 §16)
// for INVITE, with the dialog table and loose routing of the requests
// inside the dialogs it created (ACK, CANCEL, BYE, UPDATE, INFO, PRACK,
// REFER, NOTIFY, MESSAGE). It authenticates callers with the endpoint's
// digest (407), routes the Request-URI user with store.Route, forks to the
// live bindings, and writes a call record per INVITE. Calls to a disabled
// target go to its Announcer.
type Proxy struct {
	core    *Server
	cfg     ProxyConfig
	ann     *Announcer // nil: disabled targets get 486 without media
	m       *proxyMetrics
	dialogs *dialogs
}

// inDialogMethods are the methods, besides INVITE, ACK and BYE, that are
// loose-routed when they carry our Record-Route; without it they keep the
// no-route answer (405).
var inDialogMethods = []sip.RequestMethod{sip.UPDATE, sip.INFO, sip.PRACK, sip.REFER, sip.NOTIFY, sip.MESSAGE}

// NewProxy builds the proxy on the endpoint s and registers it for INVITE,
// ACK, CANCEL, BYE and the in-dialog methods, and its metrics on the
// endpoint's registerer. ann plays to callers of disabled targets; nil
// answers them 486 at once. Call it before s serves.
func NewProxy(s *Server, cfg ProxyConfig, ann *Announcer) (*Proxy, error) {
	if cfg.RingTimeout == 0 {
		cfg.RingTimeout = 60 * time.Second
	}
	if cfg.RingTimeout < 0 {
		return nil, errors.New("sip: negative RingTimeout")
	}
	m, err := newProxyMetrics(s.reg)
	if err != nil {
		return nil, fmt.Errorf("sip: call metrics: %w", err)
	}
	p := &Proxy{core: s, cfg: cfg, ann: ann, m: m, dialogs: newDialogs(cfg.Dialogs, s.db.Now)}
	if err := registerAll(s.reg, p.dialogs.collectors()...); err != nil {
		return nil, fmt.Errorf("sip: dialog metrics: %w", err)
	}
	// INVITE, ACK, CANCEL and BYE are listed in Allow; the in-dialog
	// methods are relayed only inside our dialogs (elsewhere they get 405).
	// A CANCEL that matches a live INVITE transaction is handled inside
	// sipgo's transaction layer; one that reaches onCancel gets 481.
	routes := map[sip.RequestMethod]route{
		sip.INVITE: {tx: p.onInvite, allow: true},
		sip.ACK:    {tx: p.onAck, allow: true},
		sip.CANCEL: {tx: p.onCancel, allow: true},
		sip.BYE:    {tx: p.onInDialog, allow: true},
	}
	for _, m := range inDialogMethods {
		routes[m] = route{tx: p.onInDialog}
	}
	for m, r := range routes {
		if err := s.route(m, r); err != nil {
			return nil, err
		}
	}
	if err := s.routeHop(sip.INVITE, p.onHopInvite); err != nil {
		return nil, err
	}
	return p, nil
}

// errNoFlow is a binding whose TCP/TLS connection is gone: behind NAT a new
// connection would not reach the phone, so we do not dial one.
var errNoFlow = errors.New("registered connection is gone")

// Time limits of the proxy.
const (
	cancelGrace     = 8 * time.Second  // how long cancelled branches may take to answer 487
	inDialogTimeout = 32 * time.Second // 64×T1: a forwarded in-dialog request without final response
	connectTimeout  = 10 * time.Second // opening a connection for a forwarded request
)

// relay sends a downstream response upstream on tx, without our Via and
// without what a phone may not assert (stripCallerAssertions: a callee
// cannot claim an identity to the caller either).
func (p *Proxy) relay(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) error {
	r := res.Clone()
	r.RemoveHeader("Via")
	stripCallerAssertions(r)
	r.SetTransport(req.Transport())
	r.SetDestination(req.Source())
	return p.core.send(req, tx, r)
}

// endCall sets an answered call's record to its talk time.
func (p *Proxy) endCall(callID, account string, seq uint64, at time.Time) {
	if err := p.core.db.EndCall(account, seq, at); err != nil {
		p.core.log.Error("end call record", "call_id", callID, "err", err)
	}
}
