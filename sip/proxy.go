package sip

// The stateful proxy (RFC 3261 §16) is in three parts: fork.go forks an
// initial INVITE to the target's bindings, dialog.go remembers the dialogs
// that creates, indialog.go loose-routes requests inside them. This file
// holds what they share.

import (
	"errors"
	"time"

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

// relay sends a downstream response upstream on tx, without our Via and
// without what a phone may not assert (stripCallerAssertions: a callee
// cannot claim an identity to the caller either).
func (s *Server) relay(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) error {
	r := res.Clone()
	r.RemoveHeader("Via")
	stripCallerAssertions(r)
	r.SetTransport(req.Transport())
	r.SetDestination(req.Source())
	return s.respond(req, tx, r)
}

// endCall sets an answered call's record to its talk time.
func (s *Server) endCall(callID, account string, seq uint64, at time.Time) {
	if err := s.db.EndCall(account, seq, at); err != nil {
		s.log.Error("end call record", "call_id", callID, "err", err)
	}
}
