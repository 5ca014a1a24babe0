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
	"github.com/dialtone-voip/dialtone/sip/media"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Zero values mean the defaults in brackets.
type Config struct {
	// MinExpires, MaxExpires and DefaultExpires bound a binding's lifetime in
	// seconds [60, 3600, 3600]. Below MinExpires (and not 0) a REGISTER gets
	// 423 with Min-Expires; above MaxExpires it is clamped and the 200 shows
	// the granted value; without any expires DefaultExpires applies.
	MinExpires, MaxExpires, DefaultExpires int
	// NonceTTL is how long a digest nonce is accepted [5 min]; an older one
	// gets a fresh challenge with stale=true.
	NonceTTL time.Duration
	// Hostname is the host advertised in Contact/Record-Route ["" = the
	// listener's IP].
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
	// this long [MaxExpires + 60 s]. The default is longer than any binding
	// can live without a refresh, so a phone that holds its registration on
	// a connection never loses that flow, while abandoned connections (and
	// scanners that connect and say nothing) are closed eventually.
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

	// Call handling (invite.go, announce.go, proxy.go).

	// Announcement is what callers of a disabled extension hear before 486
	// [nil = media.Default(), the built-in "Extension is not recognized.
	// Thank you for calling."]. Server.SetAnnouncement replaces it later.
	Announcement *media.Announcement
	// MediaIP is the IP address advertised in SDP answers (c= and o=) for
	// the announcement's RTP ["" = Hostname if it is an IP literal, else the
	// local address the host routes towards the caller]. RTP sockets bind
	// to all local addresses, so a public address behind 1:1 NAT works.
	MediaIP string
	// RTPPortMin and RTPPortMax bound the UDP ports used for announcement
	// RTP (even ports only) [10000, 20000].
	RTPPortMin, RTPPortMax int
	// RingTimeout is how long a routed call rings its contacts before every
	// branch is cancelled and the caller gets 480 [60 s].
	RingTimeout time.Duration

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
	if c.MinExpires == 0 {
		c.MinExpires = 60
	}
	if c.MaxExpires == 0 {
		c.MaxExpires = 3600
	}
	if c.DefaultExpires == 0 {
		c.DefaultExpires = 3600
	}
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
		c.TCPIdleTimeout = time.Duration(c.MaxExpires)*time.Second + time.Minute
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
	if c.RTPPortMin == 0 {
		c.RTPPortMin = 10000
	}
	if c.RTPPortMax == 0 {
		c.RTPPortMax = 20000
	}
	if c.RingTimeout == 0 {
		c.RingTimeout = 60 * time.Second
	}
	if err := c.checkCallConfig(); err != nil { // invite.go
		return err
	}
	switch {
	case c.MinExpires < 1 || c.MaxExpires < c.MinExpires:
		return fmt.Errorf("sip: expires bounds %d..%d are invalid", c.MinExpires, c.MaxExpires)
	case c.DefaultExpires < c.MinExpires || c.DefaultExpires > c.MaxExpires:
		return fmt.Errorf("sip: default expires %d is outside %d..%d", c.DefaultExpires, c.MinExpires, c.MaxExpires)
	case c.NonceTTL < 0 || c.MaxInFlight < 0 || c.TCPIdleTimeout < 0:
		return errors.New("sip: negative NonceTTL, MaxInFlight or TCPIdleTimeout")
	case c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0 || c.FirstRequestTimeout < 0 || c.UDPSources < 0:
		return errors.New("sip: negative MaxConnections, MaxConnectionsPerIP, FirstRequestTimeout or UDPSources")
	}
	return nil
}

// Server is the SIP registrar. Create it with New, serve any number of
// sockets with ServeUDP/ServeTCP/ServeTLS, and Close it after they returned.
type Server struct {
	cfg     Config
	db      *store.DB
	log     *slog.Logger
	metrics *metrics
	tm      *transportMetrics
	nonces  *nonces
	conns   *connLimiter // TCP/TLS connections open (transport_tcp.go)

	udpMu sync.Mutex
	udp   []*udpServer // sockets being served (udp.go)

	ua  *sipgo.UserAgent
	srv *sipgo.Server

	// dummyPassword is what an unknown user's digest is checked against,
	// so that unknown users cost the same as wrong passwords.
	dummyPassword string

	guard *guard.Guard

	inFlight atomic.Int64

	// The fast path (fastpath.go).
	retrans  *retransCache
	fastPool *workerPool

	// calls is the call-handling state (invite.go), set up by routes.
	calls *calls

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

// New builds a registrar on db. log may be nil (discard); reg may be nil
// (no metrics registered).
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
	s := &Server{cfg: cfg, db: db, log: log, metrics: m, tm: tm, nonces: n, dummyPassword: hex.EncodeToString(dummy), guard: cfg.Guard,
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
	if err := s.initCalls(reg); err != nil {
		ua.Close()
		return nil, err
	}
	s.routes()
	return s, nil
}

// allowed is the Allow header: the methods we implement.
const allowed = "INVITE, ACK, CANCEL, BYE, REGISTER, OPTIONS"

// routes registers every request handler. Call handling (invite*.go) plugs
// in here: OnInvite, OnCancel, OnBye and OnAck.
func (s *Server) routes() {
	s.srv.OnRegister(s.handleR(s.onRegister))
	s.srv.OnOptions(s.handleR(s.onOptions))

	// Calls (invite.go, fork.go, indialog.go). OnAck must always be
	// registered: in sipgo, without it, on TCP the ACK for a non-2xx final response
	// would reach the no-route handler and get a 405. ACKs are never
	// answered. A CANCEL that matches a live INVITE transaction is handled
	// inside sipgo's transaction layer; one that reaches OnCancel is relayed
	// if it has our Route, else 481. In-dialog requests carrying our
	// Record-Route are loose-routed; others keep the no-route answers.
	s.srv.OnInvite(s.handle(s.onInvite))
	s.srv.OnAck(s.handle(s.onAck))
	s.srv.OnCancel(s.handle(s.onCancel))
	s.srv.OnBye(s.handle(s.onInDialog))
	for _, m := range inDialogMethods {
		s.srv.OnRequest(m, s.handle(s.onInDialog))
	}

	s.srv.OnNoRoute(s.handle(s.onNoRoute))
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

// handleR is handle for a handler that only answers (the ones the fast
// path shares with sipgo: onRegister, onOptions).
func (s *Server) handleR(h func(*sip.Request, responder)) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) { s.guarded(req, tx, h) }
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

func (s *Server) onOptions(req *sip.Request, rs responder) {
	res := s.newResponse(req, 200, "OK")
	res.AppendHeader(sip.NewHeader("Allow", allowed))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	s.send(req, rs, res)
}

func (s *Server) onNoRoute(req *sip.Request, tx sip.ServerTransaction) {
	switch req.Method {
	case sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH:
		res := s.newResponse(req, 405, "Method Not Allowed")
		res.AppendHeader(sip.NewHeader("Allow", allowed))
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
	s.send(req, rs, s.newResponse(req, code, reason))
}

// send sends res through rs (a sipgo server transaction, or the fast
// path's stateless responder). ACKs are never answered. Over UDP the response goes
// to the packet's source address and port (symmetric response, RFC 3581
// behaviour for everyone): a phone behind NAT without rport still hears us,
// and a Via whose sent-by was forged or parsed empty cannot aim our answer
// at a third party.
func (s *Server) send(req *sip.Request, rs responder, res *sip.Response) {
	if req.IsAck() {
		return
	}
	if sip.NetworkToLower(req.Transport()) == "udp" && req.Source() != "" {
		res.SetDestination(req.Source())
	}
	if req.Method == sip.REGISTER && res.StatusCode >= 200 {
		s.metrics.registers.WithLabelValues(strconv.Itoa(res.StatusCode)).Inc()
		s.logRegister(req, res.StatusCode)
	}
	if err := rs.Respond(res); err != nil {
		s.log.Debug("sip respond failed", "method", methodLabel(req.Method), "status", res.StatusCode, "source", req.Source(), "err", err)
	}
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
