package sip

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server, the endpoint the components share. Zero
// values mean the defaults in brackets.
type Config struct {
	// NonceTTL is how long a digest nonce is accepted [5 min]; an older one
	// gets a fresh challenge with stale=true.
	NonceTTL time.Duration
	// Hostname is the host advertised in Via, Contact and Record-Route [""
	// = the listener's IP].
	Hostname string
	// ServerName is the Server header value ["dialtone"].
	ServerName string
	// MaxInFlight is how many requests may be handled at once; beyond it
	// requests get 503 with Retry-After [4096]. On the fast path at most
	// 512 of them run at once (each a goroutine waiting for its commit),
	// the rest wait in a queue holding only their request.
	MaxInFlight int
	// MD5OnlyUserAgents lists User-Agent prefixes of clients that cannot
	// skip a challenge with an algorithm they do not know (RFC 8760 §2.4
	// says they must): they abort on the SHA-256 challenge instead of
	// answering the MD5 one. Such clients get a single MD5 challenge. nil
	// means DefaultMD5OnlyUserAgents; an empty slice turns the quirk off.
	MD5OnlyUserAgents []string
	// TCPIdleTimeout closes a TCP or TLS connection that sent nothing for
	// this long [61 min: the Registrar's default MaxExpires + 60 s]. Keep it
	// longer than any binding can live without a refresh
	// (RegistrarConfig.MaxExpires), so a phone that holds its registration
	// on a connection never loses that flow, while abandoned connections
	// (and scanners that connect and say nothing) are closed eventually.
	TCPIdleTimeout time.Duration
	// MaxConnections caps the TCP and TLS connections open at once, over
	// all stream listeners [10000]; MaxConnectionsPerIP caps them per source
	// IPv4 address or IPv6 /64 [200]. A connection beyond a cap is closed as soon as it is
	// accepted. Keep MaxConnections well below the process's descriptor
	// limit (RLIMIT_NOFILE), which the store, HTTP and UDP need too.
	MaxConnections, MaxConnectionsPerIP int
	// FirstRequestTimeout is how long a new TCP or TLS connection may take
	// to complete its TLS handshake and its first message [10 s]; after that
	// TCPIdleTimeout applies.
	FirstRequestTimeout time.Duration
	// UDPSources bounds the UDP source addresses the transport remembers,
	// per UDP socket (udp.go explains the table) [65536].
	UDPSources int
	// Guard counts authentication failures (wrong password, unknown user)
	// per source and per user and blocks past its threshold; blocked
	// requests get 403 without a challenge. nil: a guard with the defaults
	// of internal/guard (10 failures a minute → 15 min). Share one with the
	// admin API so operators can list and lift blocks (or use Server.Guard).
	// A guard passed in is used as it is: its OnBlock should log and count.
	Guard *guard.Guard

	// NodeAddr is the host:port the other nodes of a deployment on etcd
	// reach this node's SIP listener on (what it announces in
	// store.NodeInfo.SIPAddr) [""]: requests passed between nodes route on
	// it, so it is one of ours (Proxy). Unused on one node.
	NodeAddr string

	// DisableFastPath hands REGISTER and OPTIONS to sipgo's transaction
	// layer like every other request, instead of answering them statelessly
	// from the front door (fastpath.go). For comparison and as a fallback.
	DisableFastPath bool
}

// DefaultMD5OnlyUserAgents are the clients known to fail on a SHA-256
// challenge: baresip before 2.x, whose libre (e.g. Debian 12's libre 1.1.0)
// stops at the first WWW-Authenticate whose algorithm is not MD5 with ENOSYS.
var DefaultMD5OnlyUserAgents = []string{"baresip v0.", "baresip v1."}

func (c *Config) setDefaults() error {
	if c.NonceTTL == 0 {
		c.NonceTTL = 5 * time.Minute
	}
	if c.ServerName == "" {
		c.ServerName = "dialtone"
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 4096
	}
	if c.MD5OnlyUserAgents == nil {
		c.MD5OnlyUserAgents = DefaultMD5OnlyUserAgents
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = defaultMaxExpires*time.Second + time.Minute
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 10000
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = 200
	}
	if c.FirstRequestTimeout == 0 {
		c.FirstRequestTimeout = 10 * time.Second
	}
	if c.UDPSources == 0 {
		c.UDPSources = 65536
	}
	switch {
	case c.NonceTTL < 0 || c.MaxInFlight < 0 || c.TCPIdleTimeout < 0:
		return errors.New("sip: negative NonceTTL, MaxInFlight or TCPIdleTimeout")
	case c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0 || c.FirstRequestTimeout < 0 || c.UDPSources < 0:
		return errors.New("sip: negative MaxConnections, MaxConnectionsPerIP, FirstRequestTimeout or UDPSources")
	}
	return nil
}

// Server is the SIP endpoint the components share: it serves any number
// of sockets (ServeUDP, ServeTCP, ServeTLS) through the front door, the
// fast path and sipgo's transaction layer, makes the checks every request
// passes (guarded: load, well-formedness, blocked sources; authenticate:
// digest and nonces), answers OPTIONS, and hands each other request to the
// component registered for its method (NewRegistrar, NewProxy). A method
// nobody registered is answered 405 with Allow, an unknown one 501 (RFC
// 3261 §8.2.1). Create it with New, then the components on it, serve, and
// Close it after the Serve methods returned.
type Server struct {
	cfg     Config
	db      *store.DB
	log     *slog.Logger
	reg     prometheus.Registerer // where the components register their metrics
	metrics *metrics
	tm      *transportMetrics
	nonces  *nonces
	conns   *connLimiter // TCP/TLS connections open (transport_tcp.go)

	udpMu sync.Mutex
	udp   []*udpServer // sockets being served (udp.go)

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	cli *sipgo.Client // sends the requests the components originate or forward (outbound.go)

	// localIPs are the addresses of this host's interfaces.
	localIPs func() map[string]bool

	// routes are the components' handlers by method (route); routeMu
	// serialises their registration.
	routes  atomic.Pointer[routeTable]
	routeMu sync.Mutex

	// dummyPassword is what an unknown user's digest is checked against,
	// so that unknown users cost the same as wrong passwords.
	dummyPassword string

	guard *guard.Guard

	nodes *nodes // the other nodes of a deployment on etcd (hop.go)

	inFlight atomic.Int64

	// The fast path (fastpath.go).
	retrans  *retransCache
	fastPool *workerPool

	// Handlers run inside wg while closing is false; Close flips it under
	// the write lock and then waits, so Add never races with Wait.
	mu      sync.RWMutex
	closing bool
	wg      sync.WaitGroup
}

// maxNonceEntries bounds the nonce-count replay table (per generation; see nonces).
const maxNonceEntries = 1 << 18

// udpMTU is the size sipgo refuses to exceed when writing over UDP (minus
// 200). Its default of 1500 silently drops a 200 OK that lists several
// bindings; raising it lets such a response go out (IP fragments it).
const udpMTU = 8192

var raiseUDPMTU sync.Once

// New builds the endpoint on db. It answers OPTIONS and nothing else until
// components are created on it (before it serves). log may be nil
// (discard); reg may be nil (no metrics registered; the components register
// theirs on it too).
func New(cfg Config, db *store.DB, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, errors.New("sip: nil store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("sip: metrics: %w", err)
	}
	n, err := newNonces(cfg.NonceTTL, maxNonceEntries)
	if err != nil {
		return nil, err
	}
	// Several nodes: a challenge from one node may be answered to another
	// (DNS SRV, a load balancer); every node verifies every node's nonces.
	switch key, err := db.NonceKey("sip"); {
	case err == nil:
		if err := n.SetKey(key); err != nil {
			return nil, err
		}
	case !errors.Is(err, store.ErrNoNodes):
		return nil, fmt.Errorf("sip: nonce key: %w", err)
	}
	dummy := make([]byte, 16)
	if _, err := rand.Read(dummy); err != nil {
		return nil, err
	}
	// sipgo's UDP size limit is a package variable; it is only ever raised,
	// once, before this server sends anything.
	raiseUDPMTU.Do(func() {
		if sip.UDPMTUSize < udpMTU {
			sip.UDPMTUSize = udpMTU
		}
	})

	tm, err := newTransportMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("sip: metrics: %w", err)
	}
	s := &Server{cfg: cfg, db: db, log: log, reg: reg, metrics: m, tm: tm, nonces: n, dummyPassword: hex.EncodeToString(dummy), guard: cfg.Guard,
		conns:   newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP),
		retrans: newRetransCache(), fastPool: newWorkerPool(cfg.MaxInFlight)}
	if s.guard == nil {
		s.guard = guard.New(guard.Config{Now: db.Now, OnBlock: func(b guard.Block) {
			m.blocks.Inc()
			log.Warn("sip source blocked after repeated authentication failures", "source", b.Source, "user", b.User,
				"failures", b.Failures, "reason", b.Reason, "until", b.Until)
		}})
	}
	sipLog := slog.New(sipgoLogHandler{log.Handler()}).With("lib", "sipgo")
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(cfg.ServerName),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)),
		// Timeouts, caps and framing are done by our wrappers
		// (transport_tcp.go, udp.go), not with sip.TransportsConfig: sipgo's
		// transports built from a config lose the layer's logger and log
		// through the global default.
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sipLog)),
	}
	if cfg.Hostname != "" {
		uaOpts = append(uaOpts, sipgo.WithUserAgentHostname(cfg.Hostname))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("sip: user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("sip: server: %w", err)
	}
	s.ua, s.srv = ua, srv
	cliLog := slog.New(sipgoLogHandler{log.Handler()}).With("component", "sipgo")
	cliOpts := []sipgo.ClientOption{sipgo.WithClientLogger(cliLog)}
	if cfg.Hostname != "" {
		cliOpts = append(cliOpts, sipgo.WithClientHostname(cfg.Hostname))
	}
	if s.cli, err = sipgo.NewClient(ua, cliOpts...); err != nil {
		ua.Close()
		return nil, fmt.Errorf("sip: client: %w", err)
	}
	s.localIPs = sync.OnceValue(func() map[string]bool {
		ips := map[string]bool{}
		addrs, _ := net.InterfaceAddrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				ips[n.IP.String()] = true
			}
		}
		return ips
	})
	s.nodes = newNodes(s)
	s.routes.Store(&routeTable{})
	if err := s.route(sip.OPTIONS, route{answer: s.onOptions, allow: true}); err != nil {
		ua.Close()
		return nil, err
	}
	// Every request sipgo hands over goes to dispatch: the components'
	// table decides, not sipgo's (which must not change while serving).
	srv.OnNoRoute(s.handle(s.dispatch))
	return s, nil
}

// route is how a component handles one method: answer for a handler that
// only answers (REGISTER, OPTIONS: the fast path may run it without a
// sipgo transaction), tx for one that needs sipgo's server transaction
// (CANCEL callbacks, provisional responses, relaying). allow lists the
// method in Allow.
type route struct {
	answer func(*sip.Request, responder)
	tx     sipgo.RequestHandler
	allow  bool
}

// routeTable is the components' routes, replaced whole (copy on write) so
// that dispatch reads it without a lock.
type routeTable struct {
	byMethod map[sip.RequestMethod]route
	hop      map[sip.RequestMethod]hopHandler // requests another node passed us (hop.go)
	allow    string                           // the Allow header value
}

// hopHandler handles a request another node passed us with a verified
// X-Dialtone-Hop (hop.go), for one of our bindings.
type hopHandler func(*sip.Request, sip.ServerTransaction, hopped)

// allowOrder is the order methods are listed in Allow.
var allowOrder = []sip.RequestMethod{sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS}

// route registers r for method m. Components call it from their
// constructors, before the server serves; a method has one component.
func (s *Server) route(m sip.RequestMethod, r route) error {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	old := s.routes.Load()
	if _, taken := old.byMethod[m]; taken {
		return fmt.Errorf("sip: %s already has a handler (one component per method)", m)
	}
	t := &routeTable{byMethod: make(map[sip.RequestMethod]route, len(old.byMethod)+1), hop: old.hop}
	for k, v := range old.byMethod {
		t.byMethod[k] = v
	}
	t.byMethod[m] = r
	var allow []string
	for _, am := range allowOrder {
		if r, ok := t.byMethod[am]; ok && r.allow {
			allow = append(allow, string(am))
		}
	}
	t.allow = strings.Join(allow, ", ")
	s.routes.Store(t)
	return nil
}

// routeHop registers h for the initial requests of method m that another
// node passes us (hop.go). Components call it from their constructors,
// before the server serves.
func (s *Server) routeHop(m sip.RequestMethod, h hopHandler) error {
	s.routeMu.Lock()
	defer s.routeMu.Unlock()
	old := s.routes.Load()
	if _, taken := old.hop[m]; taken {
		return fmt.Errorf("sip: %s from other nodes already has a handler", m)
	}
	t := *old
	t.hop = make(map[sip.RequestMethod]hopHandler, len(old.hop)+1)
	for k, v := range old.hop {
		t.hop[k] = v
	}
	t.hop[m] = h
	s.routes.Store(&t)
	return nil
}

// allowed is the Allow header: the methods the components registered.
func (s *Server) allowed() string { return s.routes.Load().allow }

// answerer is the handler registered for m if it only answers (the fast
// path's), else nil.
func (s *Server) answerer(m sip.RequestMethod) func(*sip.Request, responder) {
	if r, ok := s.routes.Load().byMethod[m]; ok && r.tx == nil {
		return r.answer
	}
	return nil
}

// dispatch hands a request sipgo routed to the component registered for
// its method. An ACK nobody takes is absorbed (ACKs are never answered; on
// TCP the ACK for a non-2xx final response reaches us); any other request
// gets onNoRoute's 405 or 501.
//
// A request carrying X-Dialtone-Hop goes to the component that takes
// requests from other nodes when the header verifies (verifyHop) and it
// starts a transaction (no To tag); the header is removed either way, so a
// request from outside with one is handled as if it had none.
func (s *Server) dispatch(req *sip.Request, tx sip.ServerTransaction) {
	t := s.routes.Load()
	if req.GetHeader(hopHeader) != nil {
		h, ok := s.verifyHop(req)
		stripHop(req)
		if hh := t.hop[req.Method]; ok && hh != nil && !req.To().Params.Has("tag") {
			s.metrics.hops.WithLabelValues("accepted").Inc()
			hh(req, tx, h)
			return
		}
		if !ok {
			s.metrics.hops.WithLabelValues("refused").Inc()
			// Debug: any outsider can send one (no rate limit); the metric counts them.
			s.log.Debug("hop header refused", "method", methodLabel(req.Method), "source", req.Source(), "transport", req.Transport())
		}
	}
	r, ok := t.byMethod[req.Method]
	switch {
	case ok && r.tx != nil:
		r.tx(req, tx)
	case ok:
		r.answer(req, tx)
	case req.IsAck():
	default:
		s.onNoRoute(req, tx)
	}
}

// responder is where a handler's answer goes: a sipgo server transaction,
// or the fast path's stateless fastResponder (fastpath.go).
type responder interface {
	Respond(res *sip.Response) error
}

// handle wraps every handler sipgo routes (see guarded).
func (s *Server) handle(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		s.guarded(req, tx, func(req *sip.Request, _ responder) { h(req, tx) })
	}
}

// guarded runs h on req, answering through rs: it counts the request,
// refuses work while closing or when MaxInFlight requests are already
// running (503 with Retry-After), checks what every request must carry, and
// recovers from a panic so that one bad message can never take the process
// down. Both sipgo's handlers (handle) and the fast path (fastpath.go) run
// through it, so both make exactly the same checks.
func (s *Server) guarded(req *sip.Request, rs responder, h func(*sip.Request, responder)) {
	s.metrics.requests.WithLabelValues(methodLabel(req.Method)).Inc()
	s.mu.RLock()
	if s.closing {
		s.mu.RUnlock()
		s.overload(req, rs)
		return
	}
	s.wg.Add(1)
	s.mu.RUnlock()
	defer s.wg.Done()

	n := s.inFlight.Add(1)
	s.metrics.inFlight.Inc()
	defer func() {
		s.inFlight.Add(-1)
		s.metrics.inFlight.Dec()
	}()
	if n > int64(s.cfg.MaxInFlight) {
		s.metrics.overloaded.Inc()
		s.overload(req, rs)
		return
	}
	defer func() {
		if p := recover(); p != nil {
			s.metrics.handlerPanics.Inc()
			s.log.Error("sip handler panic", "method", methodLabel(req.Method), "source", req.Source(), "panic", fmt.Sprint(p))
			func() {
				defer func() { _ = recover() }()
				s.reply(req, rs, 500, "Server Internal Error")
			}()
		}
	}()
	if code, reason := checkRequest(req); code != 0 {
		s.reply(req, rs, code, reason)
		return
	}
	// A blocked source gets a short refusal: no challenge, no nonce, no
	// store lookup. ACKs are absorbed as usual.
	if req.Method != sip.ACK && s.guard.Blocked(guard.IP(req.Source()), "") {
		s.metrics.blockedDrops.Inc()
		s.reply(req, rs, 403, "Forbidden")
		return
	}
	h(req, rs)
}

func (s *Server) overload(req *sip.Request, rs responder) {
	res := s.newResponse(req, 503, "Service Unavailable")
	// Spread the retries of a re-registration storm over 5-35 s.
	var b [1]byte
	_, _ = rand.Read(b[:])
	res.AppendHeader(sip.NewHeader("Retry-After", strconv.Itoa(5+int(b[0])%31)))
	s.send(req, rs, res)
}

// checkRequest checks what sipgo lets through and every handler relies on:
// one each of From, To, Call-ID and CSeq, a CSeq method equal to the request
// method, a sip/sips Request-URI, SIP/2.0, and bounded header counts (Via
// aside) and sizes. It returns the status and reason to answer, or 0. What
// sipgo cannot parse never gets here: the front door (frontdoor.go) answers it.
func checkRequest(req *sip.Request) (int, string) {
	if !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		return 505, "Version Not Supported"
	}
	hdrs := req.Headers()
	var from, to, callID, cseq, via int
	for _, h := range hdrs {
		switch h.(type) {
		case *sip.FromHeader:
			from++
		case *sip.ToHeader:
			to++
		case *sip.CallIDHeader:
			callID++
			if len(h.Value()) > maxHeaderLen {
				return 400, "Call-ID Too Long"
			}
		case *sip.CSeqHeader:
			cseq++
		case *sip.ViaHeader:
			via++
		case *sip.ContactHeader, *sip.RouteHeader, *sip.RecordRouteHeader:
		default:
			if len(h.Value()) > maxHeaderLen {
				return 400, "Header Too Long"
			}
		}
	}
	switch {
	case from != 1 || req.From() == nil:
		return 400, "Missing or Duplicate From"
	case to != 1 || req.To() == nil:
		return 400, "Missing or Duplicate To"
	case callID != 1 || req.CallID() == nil || req.CallID().Value() == "":
		return 400, "Missing or Duplicate Call-ID"
	case cseq != 1 || req.CSeq() == nil:
		return 400, "Missing or Duplicate CSeq"
	case len(hdrs)-via > maxHeaders:
		// Any number of Via is legal; the message size bounds them.
		return 400, "Too Many Headers"
	case req.CSeq().MethodName != req.Method:
		return 400, "CSeq Method Mismatch"
	}
	switch req.Recipient.Scheme {
	case "sip", "sips":
	default:
		return 416, "Unsupported URI Scheme"
	}
	if req.Recipient.Host == "" {
		return 400, "Bad Request-URI"
	}
	return 0, ""
}

// onOptions answers OPTIONS (a keepalive, or a question about what we
// support): 200 with Allow and Accept.
func (s *Server) onOptions(req *sip.Request, rs responder) {
	res := s.newResponse(req, 200, "OK")
	res.AppendHeader(sip.NewHeader("Allow", s.allowed()))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	s.send(req, rs, res)
}

// onNoRoute answers a request no component takes (RFC 3261 §8.2.1): a
// method we recognize (one of sipgo's fourteen) gets 405 with Allow, any
// other 501.
func (s *Server) onNoRoute(req *sip.Request, tx sip.ServerTransaction) {
	switch {
	case methodLabel(req.Method) != "OTHER":
		res := s.newResponse(req, 405, "Method Not Allowed")
		res.AppendHeader(sip.NewHeader("Allow", s.allowed()))
		s.send(req, tx, res)
	default:
		s.reply(req, tx, 501, "Not Implemented")
	}
}

// newResponse builds a response to req with our Server header.
func (s *Server) newResponse(req *sip.Request, code int, reason string) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(sip.NewHeader("Server", s.cfg.ServerName))
	return res
}

// reply answers req with a bodiless response.
func (s *Server) reply(req *sip.Request, rs responder, code int, reason string) {
	_ = s.send(req, rs, s.newResponse(req, code, reason))
}

// send sends res through rs (a sipgo server transaction, or the fast
// path's stateless responder). ACKs are never answered. Over UDP the response goes
// to the packet's source address and port (symmetric response, RFC 3581
// behaviour for everyone): a phone behind NAT without rport still hears us,
// and a Via whose sent-by was forged or parsed empty cannot aim our answer
// at a third party. The error is for callers that act on it (the
// announcer stops when its caller is gone); everyone else may ignore it.
func (s *Server) send(req *sip.Request, rs responder, res *sip.Response) error {
	if req.IsAck() {
		return nil
	}
	if sip.NetworkToLower(req.Transport()) == "udp" && req.Source() != "" {
		res.SetDestination(req.Source())
	}
	if req.Method == sip.REGISTER && res.StatusCode >= 200 {
		s.metrics.registers.WithLabelValues(strconv.Itoa(res.StatusCode)).Inc()
		s.logRegister(req, res.StatusCode)
	}
	err := rs.Respond(res)
	if err != nil {
		s.log.Debug("sip respond failed", "method", methodLabel(req.Method), "status", res.StatusCode, "source", req.Source(), "err", err)
	}
	return err
}

// logRegister is the one debug line per REGISTER outcome.
func (s *Server) logRegister(req *sip.Request, code int) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	s.log.Debug("register", "aor", aor(req), "status", code, "source", req.Source(), "transport", req.Transport(),
		"contacts", len(req.GetHeaders("Contact")))
}

// ServeUDP serves SIP on conn until ctx ends or conn is closed; it closes
// conn when ctx ends. It returns nil on such a clean stop. Datagrams pass
// the front door and the bounded source table first (udp.go).
func (s *Server) ServeUDP(ctx context.Context, conn net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	u := s.newUDPServer(conn)
	defer s.dropUDPServer(u)
	return serveErr(ctx, u.serve())
}

// ServeTCP serves SIP on ln until ctx ends or ln is closed; it closes ln
// when ctx ends. It returns nil on such a clean stop. Accepted connections
// stay open until Close. Temporary accept errors are retried, connections
// are capped, and each one is framed by us (transport_tcp.go).
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	sl := s.streamListener(ln, "TCP")
	stop := context.AfterFunc(ctx, func() { sl.Close() })
	defer stop()
	return serveErr(ctx, s.srv.ServeTCP(sl))
}

// ServeTLS is ServeTCP for a listener that already speaks TLS (tls.Listen
// or tls.NewListener).
func (s *Server) ServeTLS(ctx context.Context, ln net.Listener) error {
	sl := s.streamListener(ln, "TLS")
	stop := context.AfterFunc(ctx, func() { sl.Close() })
	defer stop()
	return serveErr(ctx, s.srv.ServeTLS(sl))
}

func serveErr(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("sip: serve: %w", err)
}

// Close stops accepting work (new requests get 503), waits up to 5 s for
// running handlers, then closes sipgo's user agent: every transaction and
// pooled connection. Call it after the Serve methods returned.
func (s *Server) Close() error {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	if already {
		return nil
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.log.Warn("sip close: handlers still running after 5 s")
	}
	s.fastPool.stop()
	return s.ua.Close()
}

// Guard is the server's brute-force guard, for the admin API to list and
// lift blocks.
func (s *Server) Guard() *guard.Guard { return s.guard }
