package sip

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
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

// calls is the call-handling state of a Server: the sipgo client that
// forwards requests and sends NOTIFYs, the RTP port range, the current
// announcement, the call metrics and the dialogs we proxied.
type calls struct {
	cli     *sipgo.Client
	ports   *media.PortRange
	ann     atomic.Pointer[media.Announcement]
	m       *callMetrics
	mediaIP net.IP // nil: the local address towards each caller
	dialogs *dialogs

	localIPs func() map[string]bool // addresses of this host's interfaces
}

// inDialogMethods are the methods, besides INVITE, ACK and BYE, that are
// loose-routed when they carry our Record-Route; without it they keep the
// no-route answer (405).
var inDialogMethods = []sip.RequestMethod{sip.UPDATE, sip.INFO, sip.PRACK, sip.REFER, sip.NOTIFY, sip.MESSAGE}

// checkCallConfig checks the call-handling part of Config (after defaults).
func (c *Config) checkCallConfig() error {
	if _, err := media.NewPorts(c.RTPPortMin, c.RTPPortMax); err != nil {
		return fmt.Errorf("sip: %w", err)
	}
	if c.MediaIP != "" {
		if ip := net.ParseIP(c.MediaIP); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("sip: MediaIP %q is not a concrete IP address", c.MediaIP)
		}
	}
	if c.RingTimeout < 0 {
		return errors.New("sip: negative RingTimeout")
	}
	return nil
}

// initCalls sets up s.calls, registering the call metrics on reg (nil: not
// registered); New calls it once.
func (s *Server) initCalls(reg prometheus.Registerer) error {
	c := &calls{dialogs: newDialogs(DialogLimits{}, s.db.Now)}
	m, err := newCallMetrics(reg)
	if err != nil {
		return fmt.Errorf("sip: call metrics: %w", err)
	}
	c.m = m
	if err := registerAll(reg, c.dialogs.collectors()...); err != nil {
		return fmt.Errorf("sip: dialog metrics: %w", err)
	}
	c.ports, _ = media.NewPorts(s.cfg.RTPPortMin, s.cfg.RTPPortMax) // checked by setDefaults
	a := s.cfg.Announcement
	if a == nil {
		a = media.Default()
	}
	c.ann.Store(a)
	if s.cfg.MediaIP != "" {
		c.mediaIP = net.ParseIP(s.cfg.MediaIP)
	} else if ip := net.ParseIP(s.cfg.Hostname); ip != nil && !ip.IsUnspecified() {
		c.mediaIP = ip
	}
	c.localIPs = sync.OnceValue(func() map[string]bool {
		ips := map[string]bool{}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips[n.IP.String()] = true
			}
		}
		return ips
	})
	cliLog := slog.New(sipgoLogHandler{s.log.Handler()}).With("component", "sipgo")
	opts := []sipgo.ClientOption{sipgo.WithClientLogger(cliLog)}
	if s.cfg.Hostname != "" {
		opts = append(opts, sipgo.WithClientHostname(s.cfg.Hostname))
	}
	cli, err := sipgo.NewClient(s.ua, opts...)
	if err != nil {
		return fmt.Errorf("sip: client: %w", err)
	}
	c.cli = cli
	s.calls = c
	return nil
}

// SetAnnouncement replaces the announcement played to callers of disabled
// targets (nil restores the built-in one). Calls already playing finish
// with the old one. Safe for concurrent use.
func (s *Server) SetAnnouncement(a *media.Announcement) {
	if a == nil {
		a = media.Default()
	}
	s.calls.ann.Store(a)
}

// SetAnnouncementWAV loads an operator's WAV (media.LoadWAV: 8 kHz mono
// PCM, μ-law or A-law, or 16-bit PCM at another rate, 0.5 to 60 s) and makes
// it the announcement. A file it refuses leaves the current announcement in
// place; the error wraps media.ErrInvalidWAV and says why. It is admin's
// Announcer.
func (s *Server) SetAnnouncementWAV(r io.Reader) error {
	a, err := media.LoadWAV(r)
	if err != nil {
		return err
	}
	s.SetAnnouncement(a)
	s.log.Info("announcement replaced", "duration", a.Duration().String())
	return nil
}

// callLog collects what the call record of one INVITE says, and writes it
// (and counts the outcome) once the outcome is known.
type callLog struct {
	s     *Server
	rec   store.CallRecord
	start time.Time
	done  bool
}

func (s *Server) newCallLog(req *sip.Request) *callLog {
	return &callLog{s: s, start: time.Now(), rec: store.CallRecord{
		StartedAt: s.db.Now(),
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

// finishRecord is finish, returning the record as stored (Seq 0 if none was
// written), so an answered call can be ended by its BYE (dialogs.end).
func (c *callLog) finishRecord(outcome string, status int, detail string) store.CallRecord {
	if c.done {
		return store.CallRecord{}
	}
	c.done = true
	c.s.calls.m.invites.WithLabelValues(outcome).Inc()
	if c.rec.AccountID == "" {
		return store.CallRecord{} // no account known (cannot happen after authentication)
	}
	elapsed := time.Since(c.start)
	c.rec.Outcome, c.rec.Status, c.rec.Detail = outcome, status, detail
	c.rec.Duration = max(elapsed, time.Nanosecond) // RecordCall treats 0 as "compute it"
	c.rec.EndedAt = c.rec.StartedAt.Add(elapsed)
	if outcome == store.OutcomeAnswered {
		c.rec.AnsweredAt = c.s.db.Now() // the store's clock, like the BYE's EndCall
	}
	rec, err := c.s.db.RecordCall(c.rec)
	if err != nil {
		c.s.log.Error("record call", "call_id", c.rec.CallID, "err", err)
	}
	c.s.log.Debug("call", "call_id", c.rec.CallID, "from", c.rec.From, "to", c.rec.To, "outcome", outcome, "status", status, "detail", detail)
	return rec
}

// onInvite handles an initial INVITE (RFC 3261 §16 for routed calls): the
// caller authenticates (407), a disabled caller gets 403, the Request-URI
// user is routed in the account (store.Route): unknown → 404, a disabled
// target → announcement + 486 (announce.go), an enabled target without a
// live registration → 480, else a parallel fork to every live contact
// (fork.go). A re-INVITE (To tag) is loose-routed (indialog.go).
func (s *Server) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To().Params.Has("tag") {
		s.onInDialog(req, tx)
		return
	}
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		s.reply(req, tx, 483, "Too Many Hops")
		return
	}
	id, ok := s.authenticate(req, tx, true)
	if !ok {
		return
	}
	c := s.calls
	c.m.activeCalls.Inc()
	defer c.m.activeCalls.Dec()

	call := s.newCallLog(req)
	call.rec.AccountID = id.Account.ID
	call.rec.From, call.rec.FromName, call.rec.FromUserID = id.User.Extension, id.User.Name, id.User.ID
	fail := func(code int, reason, outcome, detail string) {
		s.reply(req, tx, code, reason)
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
		if other, err := s.db.AccountByDomain(host); err == nil && other.ID != acct.ID {
			fail(404, "Not Found", store.OutcomeNotFound, "target in another account")
			return
		}
	}
	target := strings.TrimSpace(unescapeUser(req.Recipient.User))
	if target == "" {
		fail(404, "Not Found", store.OutcomeNotFound, "no user in Request-URI")
		return
	}
	r, err := s.db.Route(acct.ID, target)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			fail(404, "Not Found", store.OutcomeNotFound, "")
			return
		}
		s.log.Error("route", "account", acct.ID, "target", target, "err", err)
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
		u, err := s.db.User(acct.ID, uid)
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
		s.announce(req, tx, call)
		return
	}

	var targets []store.Binding
	for _, u := range ring {
		bs, err := s.db.Bindings(acct.ID, u.ID)
		if err != nil {
			continue // deleted meanwhile
		}
		for _, b := range bs {
			// Never ring the device that is calling (a user calling their own
			// extension rings their other devices).
			if b.Source == req.Source() && strings.EqualFold(b.Transport, req.Transport()) {
				continue
			}
			targets = append(targets, b)
		}
	}
	if len(targets) == 0 {
		fail(480, "Temporarily Unavailable", store.OutcomeUnavailable, "no live registration")
		return
	}
	ringFor := s.cfg.RingTimeout
	if r.TimeoutS > 0 {
		ringFor = time.Duration(r.TimeoutS) * time.Second
	}
	s.proxyInvite(req, tx, call, targets, ringFor, assertedIdentity(id.User, id.Account.SIPDomain))
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

// respond sends res on tx like send, and reports the error.
func (s *Server) respond(req *sip.Request, tx sip.ServerTransaction, res *sip.Response) error {
	if sip.NetworkToLower(req.Transport()) == "udp" && req.Source() != "" {
		res.SetDestination(req.Source())
	}
	err := tx.Respond(res)
	if err != nil {
		s.log.Debug("sip respond failed", "method", methodLabel(req.Method), "status", res.StatusCode, "source", req.Source(), "err", err)
	}
	return err
}

// localIPFor is the local address this host uses to reach remote (ip:port
// or ip): a connected UDP socket learns it without sending anything.
func localIPFor(remote string) net.IP {
	host, port, err := net.SplitHostPort(remote)
	if err != nil {
		host, port = remote, "5060"
	}
	host = strings.Trim(host, "[]")
	c, err := net.Dial("udp", net.JoinHostPort(host, port))
	if err != nil {
		return nil
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok {
		return a.IP
	}
	return nil
}

// advertisedHost is the host we put in Via, Record-Route and Contact for a
// message to or from remote: Config.Hostname, else our address towards it.
func (s *Server) advertisedHost(remote string) string {
	if s.cfg.Hostname != "" {
		return s.cfg.Hostname
	}
	if ip := localIPFor(remote); ip != nil {
		return ip.String()
	}
	return "127.0.0.1"
}

// mediaIP is the address advertised in the SDP answer to a caller at remote.
func (s *Server) mediaIP(remote string) net.IP {
	if s.calls.mediaIP != nil {
		return s.calls.mediaIP
	}
	if ip := localIPFor(remote); ip != nil {
		return ip
	}
	return net.IPv4(127, 0, 0, 1)
}

// listenPort is our listening port for transport ("UDP", "tcp", …), or 0.
func (s *Server) listenPort(transport string) int {
	// ListenPorts takes the layer's lock (GetListenPort does not).
	if ps := s.ua.TransportLayer().ListenPorts(sip.NetworkToLower(transport)); len(ps) > 0 {
		return ps[0]
	}
	return 0
}

// ourURI is a SIP URI for this server as seen from remote over transport,
// with ;transport and, for routes, ;lr.
func (s *Server) ourURI(remote, transport string, lr bool) sip.Uri {
	u := sip.Uri{Scheme: "sip", Host: s.advertisedHost(remote), Port: s.listenPort(transport)}
	u.UriParams = sip.NewParams()
	u.UriParams.Add("transport", sip.NetworkToLower(transport))
	if lr {
		u.UriParams.Add("lr", "")
	}
	return u
}

// isOurs reports whether u (a Route or Record-Route URI) names this
// server: one of our listening ports on Hostname, MediaIP or an address
// of this host.
func (s *Server) isOurs(u sip.Uri) bool {
	port := effectivePort(u.Port, u.Scheme)
	mine := false
	for _, n := range []string{"udp", "tcp", "tls"} {
		for _, p := range s.ua.TransportLayer().ListenPorts(n) {
			if p == port {
				mine = true
			}
		}
	}
	if !mine {
		return false
	}
	host := strings.ToLower(strings.Trim(u.Host, "[]"))
	switch {
	case s.cfg.Hostname != "" && host == strings.ToLower(s.cfg.Hostname),
		s.cfg.MediaIP != "" && host == s.cfg.MediaIP:
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return s.calls.localIPs()[ip.String()]
	}
	return false
}

// noBuild is a client option that keeps a request exactly as built: sipgo
// adds no headers when any option is passed.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// addVia puts our Via on top of fwd, a request we send over transport to
// dest. When fwd is a forwarded request, the previous hop's Via gets
// received/rport (RFC 3581) from src, the address it came from.
func (s *Server) addVia(fwd *sip.Request, src, transport, dest string) {
	if prev := fwd.Via(); prev != nil && src != "" {
		if h, p, err := net.SplitHostPort(src); err == nil {
			if prev.Params.Has("rport") {
				prev.Params.Add("rport", p)
				prev.Params.Add("received", h)
			} else if !strings.EqualFold(prev.Host, h) {
				prev.Params.Add("received", h)
			}
		}
	}
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: strings.ToUpper(transport),
		Host: s.advertisedHost(dest), Port: s.listenPort(transport), Params: sip.NewParams()}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	fwd.PrependHeader(v)
}

// setFlow makes r leave over transport tr towards dest (a registered
// flow's source address). Over TCP/TLS sipgo reuses the pooled connection
// from dest. Over UDP it sends from the listening socket when dest has
// written to it since it started; otherwise (after a restart, say) we
// still send from the listening socket rather than from a fresh port, so
// that a NAT binding made by the phone's REGISTERs to our port still
// matches.
func (s *Server) setFlow(r *sip.Request, tr, dest string) {
	r.SetTransport(tr)
	r.SetDestination(dest)
	if sip.NetworkToLower(tr) != "udp" {
		return
	}
	pool := s.ua.TransportLayer().Pool("udp")
	if c := pool.Get(dest); c != nil {
		_, _ = c.TryClose()
		return
	}
	if a, ok := s.udpListenerAddr(); ok {
		r.Laddr = a
	}
}

// udpListenerAddr finds the address under which sipgo pools our UDP
// listening socket (its local address: a wildcard or one of this host's
// addresses, with the listening port).
func (s *Server) udpListenerAddr() (sip.Addr, bool) {
	port := s.listenPort("udp")
	if port == 0 {
		return sip.Addr{}, false
	}
	pool := s.ua.TransportLayer().Pool("udp")
	cands := []net.IP{net.IPv4zero, net.IPv6unspecified}
	for ip := range s.calls.localIPs() {
		cands = append(cands, net.ParseIP(ip))
	}
	for _, ip := range cands {
		a := sip.Addr{IP: ip, Port: port}
		if c := pool.Get(a.String()); c != nil {
			_, _ = c.TryClose()
			return a, true
		}
	}
	return sip.Addr{}, false
}
