package sip

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
)

// Call handling: policies.
//
//   - Every initial INVITE is authenticated with 407/Proxy-Authenticate (the
//     digest rules of REGISTER, for the From user). 407s are not calls: they
//     are neither recorded nor counted in dialtone_sip_invites_total.
//   - A disabled caller gets 403 (outcome forbidden).
//   - The target is the Request-URI user (%-unescaped; "+" optional for
//     numbers) in the account whose sip_domain is the Request-URI host, or
//     the caller's account when the host is not a known domain (an IP
//     address). Calls stay inside an account: another account's domain is
//     answered 404 like an unknown target.
//   - store.Route decides: unknown target or AVAILABLE number → 404. A
//     disabled user or group, or a number whose callflow rings only
//     disabled users → the announcement, then 486 (announce.go). A queue or
//     group extension whose members are all disabled or offline, a target
//     with no live registration → 480. Otherwise a parallel fork to every
//     live contact of every enabled user (fork.go), ringing for
//     RingTimeout (or the callflow step's timeout), then 480.
//   - The device that sent the INVITE is never rung (a user calling their
//     own extension rings their other devices).
//   - Call records (store.RecordCall) are written after the final response
//     went out, on the handler's goroutine: announced_busy (486 after the
//     announcement, also 486 without SDP and 488 without G.711), answered
//     (2xx relayed; Duration is the set-up time, the record is written at
//     answer), busy (486/600/603 relayed), unavailable (480/408/404
//     relayed, no registration, ring timeout), cancelled (487), not_found,
//     forbidden, routed (any other relayed failure), failed (our 500).
//     Records keep extensions and names, so they outlive the users.
//   - In-dialog requests are loose-routed only inside dialogs we created
//     (dialog.go), between the two flows recorded then; anything else with
//     our Route and a To-tag gets 481 (no open relay). What a caller may not
//     say (identity, auto-answer) is removed (stripCallerAssertions) and
//     the INVITE carries the authenticated caller's P-Asserted-Identity.

// callLog collects what the call record of one INVITE says, and writes it
// (and counts the outcome) once the outcome is known.
type callLog struct {
	p     *Proxy
	rec   store.CallRecord
	start time.Time
	done  bool
	// hopFrom is the node that passed us the INVITE (hop.go): that node
	// writes the record and counts the call; this one only rings.
	hopFrom *store.NodeInfo
}

func (p *Proxy) newCallLog(req *sip.Request) *callLog {
	return &callLog{p: p, start: time.Now(), rec: store.CallRecord{
		StartedAt: p.core.db.Now(),
		CallID:    req.CallID().Value(),
		From:      unescapeUser(req.From().Address.User),
		To:        unescapeUser(req.Recipient.User),
		Source:    req.Source(),
		Transport: strings.ToLower(req.Transport()),
	}}
}

// finish counts the outcome and writes the record. It runs after the
// response was sent, on the handler's goroutine (so Close waits for it).
func (c *callLog) finish(outcome string, status int, detail string) {
	c.finishRecord(outcome, status, detail)
}

// answered notes the answer's time on the store's clock (like the BYE's
// EndCall), when the 200 is relayed: the record itself may be written later.
func (c *callLog) answered() { c.rec.AnsweredAt = c.p.core.db.Now() }

// finishRecord is finish, returning the record as stored (Seq 0 if none was
// written), so an answered call can be ended by its BYE (dialogs.end).
func (c *callLog) finishRecord(outcome string, status int, detail string) store.CallRecord {
	if c.done || c.hopFrom != nil {
		c.done = true
		return store.CallRecord{}
	}
	c.done = true
	c.p.m.invites.WithLabelValues(outcome).Inc()
	if c.rec.AccountID == "" {
		return store.CallRecord{} // no account known (cannot happen after authentication)
	}
	elapsed := time.Since(c.start)
	c.rec.Outcome, c.rec.Status, c.rec.Detail = outcome, status, detail
	c.rec.Duration = max(elapsed, time.Nanosecond) // RecordCall treats 0 as "compute it"
	c.rec.EndedAt = c.rec.StartedAt.Add(elapsed)
	if outcome == store.OutcomeAnswered && c.rec.AnsweredAt.IsZero() {
		c.answered()
	}
	rec, err := c.p.core.db.RecordCall(c.rec)
	if err != nil {
		c.p.core.log.Error("record call", "call_id", c.rec.CallID, "err", err)
	}
	c.p.core.log.Debug("call", "call_id", c.rec.CallID, "from", c.rec.From, "to", c.rec.To, "outcome", outcome, "status", status, "detail", detail)
	return rec
}

// onInvite handles an initial INVITE (RFC 3261 §16 for routed calls): the
// caller authenticates (407), a disabled caller gets 403, the Request-URI
// user is routed in the account (store.Route): unknown → 404, a disabled
// target → announcement + 486 (announce.go), an enabled target without a
// live registration → 480, else a parallel fork to every live contact
// (fork.go). A re-INVITE (To tag) is loose-routed (indialog.go).
func (p *Proxy) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To().Params.Has("tag") {
		p.onInDialog(req, tx)
		return
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		p.core.reply(req, tx, 483, "Too Many Hops")
		return
	}
	id, ok := p.core.authenticate(req, tx, true)
	if !ok {
		return
	}
	p.m.activeCalls.Inc()
	defer p.m.activeCalls.Dec()

	call := p.newCallLog(req)
	call.rec.AccountID = id.Account.ID
	call.rec.From, call.rec.FromName, call.rec.FromUserID = id.User.Extension, id.User.Name, id.User.ID
	fail := func(code int, reason, outcome, detail string) {
		p.core.reply(req, tx, code, reason)
		call.finish(outcome, code, detail)
	}
	if id.User.Status != store.StatusEnabled {
		fail(403, "Forbidden", store.OutcomeForbidden, "caller is disabled")
		return
	}

	// The target's account: the one whose sip_domain is the Request-URI
	// host, else (an IP address, say) the caller's. Calls stay inside an
	// account: another account's domain is answered like an unknown target.
	acct := id.Account
	if host := strings.ToLower(req.Recipient.Host); host != strings.ToLower(acct.SIPDomain) {
		if other, err := p.core.db.AccountByDomain(host); err == nil && other.ID != acct.ID {
			fail(404, "Not Found", store.OutcomeNotFound, "target in another account")
			return
		}
	}
	callee := strings.TrimSpace(unescapeUser(req.Recipient.User))
	if callee == "" {
		fail(404, "Not Found", store.OutcomeNotFound, "no user in Request-URI")
		return
	}
	r, err := p.core.db.Route(acct.ID, callee)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			fail(404, "Not Found", store.OutcomeNotFound, "")
			return
		}
		p.core.log.Error("route", "account", acct.ID, "target", callee, "err", err)
		fail(500, "Server Internal Error", store.OutcomeFailed, "route lookup failed")
		return
	}
	call.rec.ToName = r.Name
	switch r.Kind {
	case store.RouteUser:
		call.rec.ToUserID = r.ID
	case store.RouteNumber:
		call.rec.To = r.ID // E.164 with +
	}

	// Whom to ring: the enabled users among r.UserIDs (deleted ones skipped).
	var ring []store.User
	known, disabled := 0, 0
	seen := map[string]bool{}
	for _, uid := range r.UserIDs {
		if seen[uid] {
			continue
		}
		seen[uid] = true
		u, err := p.core.db.User(acct.ID, uid)
		if err != nil {
			continue
		}
		known++
		if u.Status != store.StatusEnabled {
			disabled++
			continue
		}
		ring = append(ring, u)
	}
	if r.Kind == store.RouteUser && len(ring) == 1 {
		call.rec.ToName = ring[0].Name
	}
	// A disabled user or group, or a number whose callflow would ring only
	// disabled users (a disabled user's direct line), hears the
	// announcement. A queue or group extension whose members are all
	// disabled is unavailable (480), like one whose members are offline.
	if r.Disabled || r.Kind == store.RouteNumber && known > 0 && disabled == known {
		p.announce(req, tx, call)
		return
	}

	var targets []target
	for _, u := range ring {
		bs, err := p.core.db.Bindings(acct.ID, u.ID)
		if err != nil {
			continue // deleted meanwhile
		}
		for _, b := range bs {
			// Never ring the device that is calling (a user calling their own
			// extension rings their other devices).
			if b.Source == req.Source() && strings.EqualFold(b.Transport, req.Transport()) {
				continue
			}
			if p.core.remote(b) {
				// Held by another node: rung through it (hop.go), unless
				// that node is gone (its binding is unreachable).
				if n, ok := p.core.peer(b.Node); ok {
					targets = append(targets, target{b: b, node: &n})
				}
				continue
			}
			targets = append(targets, target{b: b})
		}
	}
	if len(targets) == 0 {
		fail(480, "Temporarily Unavailable", store.OutcomeUnavailable, "no live registration")
		return
	}
	ringFor := p.cfg.RingTimeout
	if r.TimeoutS > 0 {
		ringFor = time.Duration(r.TimeoutS) * time.Second
	}
	p.proxyInvite(req, tx, call, targets, ringFor, assertedIdentity(id.User, id.Account.SIPDomain))
}

// onHopInvite handles an INVITE another node passed us for one of our
// bindings (hop.go): the node authenticated and routed the caller, wrote
// the call record and decides how long it rings (its CANCEL ends ours), so
// we only ring the phone over its flow, with the P-Asserted-Identity the
// node set, and relay the answers.
func (p *Proxy) onHopInvite(req *sip.Request, tx sip.ServerTransaction, h hopped) {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		p.core.reply(req, tx, 483, "Too Many Hops")
		return
	}
	call := p.newCallLog(req)
	call.hopFrom = &h.from
	asserted := ""
	if pai := req.GetHeader("P-Asserted-Identity"); pai != nil {
		asserted = pai.Value()
	}
	p.proxyInvite(req, tx, call, []target{{b: h.binding}}, hopRingMax, asserted)
}

// announce hands a call to a disabled target to the Announcer (announce.go)
// and records its outcome; without an Announcer the caller gets 486 at
// once.
func (p *Proxy) announce(req *sip.Request, tx sip.ServerTransaction, call *callLog) {
	if p.ann == nil {
		p.core.reply(req, tx, 486, "Busy Here")
		call.finish(store.OutcomeAnnouncedBusy, 486, "no announcer: busy without media")
		return
	}
	call.finish(p.ann.play(req, tx, call.rec.CallID))
}

// assertedIdentity is the P-Asserted-Identity value (RFC 3325 §9.1) of an
// authenticated caller: "Name" <sip:extension@domain>.
func assertedIdentity(u store.User, domain string) string {
	uri := sip.Uri{Scheme: "sip", User: u.Extension, Host: domain}
	name := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' || r == '\\' {
			return -1 // no quoted-pair games: drop what needs escaping
		}
		return r
	}, u.Name)
	if strings.TrimSpace(name) == "" {
		return "<" + uri.String() + ">"
	}
	return `"` + name + `" <` + uri.String() + ">"
}

// headerSet is a request or a response.
type headerSet interface {
	Headers() []sip.Header
	GetHeaders(name string) []sip.Header
	RemoveHeader(name string) bool
	AppendHeader(h sip.Header)
}

// stripCallerAssertions removes, from a message entering from a phone (a
// request, or a response we relay), what only a trusted network may say (RFC 3325 §5: a proxy removes
// identity headers from untrusted sources): P-Asserted-Identity and
// P-Preferred-Identity; and what would make the callee pick up by itself:
// Call-Info with answer-after, Alert-Info asking for auto-answer or
// intercom (Yealink/Snom "info=alert-autoanswer", Polycom "Auto Answer"
// and "Ring Answer", Cisco "intercom"), Answer-Mode and Priv-Answer-Mode (RFC 5373). Header
// names are matched without regard to case.
func stripCallerAssertions(r headerSet) {
	drop := func(h sip.Header) bool {
		switch strings.ToLower(h.Name()) {
		case "p-asserted-identity", "p-preferred-identity", "answer-mode", "priv-answer-mode":
			return true
		case "call-info":
			return strings.Contains(strings.ToLower(h.Value()), "answer-after")
		case "alert-info":
			v := strings.NewReplacer(" ", "", "-", "", "_", "", "\t", "").Replace(strings.ToLower(h.Value()))
			return strings.Contains(v, "autoanswer") || strings.Contains(v, "ringanswer") || strings.Contains(v, "intercom")
		}
		return false
	}
	// sipgo's RemoveHeader matches the name exactly and removes the first
	// header of that name: remove every header of a name concerned, then
	// put back the ones that stay.
	var names []string
	for _, h := range r.Headers() {
		if drop(h) && !slices.Contains(names, h.Name()) {
			names = append(names, h.Name())
		}
	}
	for _, n := range names {
		var keep []sip.Header
		for _, h := range r.GetHeaders(n) {
			if h.Name() == n && !drop(h) {
				keep = append(keep, h)
			}
		}
		for r.RemoveHeader(n) {
		}
		for _, h := range keep {
			r.AppendHeader(h)
		}
	}
}
