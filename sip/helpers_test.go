package sip

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const testDomain = "example.test"

// env is the endpoint and the components newEnv was asked for, on real
// sockets over a real store with a fake clock.
type env struct {
	t         testing.TB
	db        *store.DB
	clock     *storetest.Clock
	srv       *Server
	registrar *Registrar // nil unless built
	proxy     *Proxy     // nil unless built
	ann       *Announcer // nil unless built
	notifier  *Notifier  // nil unless built
	reg       *prometheus.Registry
	udpAddr   string
	tcpAddr   string
	tlsAddr   string         // with withTLS
	tlsRoots  *x509.CertPool // trusts the TLS listener's certificate
	acct      store.Account
	user      store.User // extension 1001, enabled
	password  string
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		w := &tWriter{t: t}
		// sipgo logs from its own goroutines (timers, ACK hand-offs) after
		// the test may have ended; t.Log then would race with the testing
		// package. Stop logging when the test cleans up.
		t.Cleanup(func() {
			w.mu.Lock()
			w.ended = true
			w.mu.Unlock()
		})
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type tWriter struct {
	t     testing.TB
	mu    sync.Mutex
	ended bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ended {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// parts says which components newEnv builds on the endpoint, and how; by
// default all four, with their default configs.
type parts struct {
	registrar *RegistrarConfig
	proxy     *ProxyConfig
	announcer *AnnouncerConfig
	notifier  bool
	setup     []func(*env)
	db        *store.DB        // onStore: the store (else a new one)
	clock     *storetest.Clock // onStore: its clock
	node      bool             // asNode
	tls       bool             // withTLS
}

type envOption func(*parts)

// coreOnly builds no component (options after it add some back).
func coreOnly() envOption { return func(p *parts) { *p = parts{setup: p.setup} } }

func withRegistrar(c RegistrarConfig) envOption { return func(p *parts) { p.registrar = &c } }
func withProxy(c ProxyConfig) envOption         { return func(p *parts) { p.proxy = &c } }
func withAnnouncer(c AnnouncerConfig) envOption { return func(p *parts) { p.announcer = &c } }
func withNotifier() envOption                   { return func(p *parts) { p.notifier = true } }

// onStore serves db (with its clock) instead of a new store; the account
// and user 1001 are the ones already there, if any (a second node of a
// deployment on etcd).
func onStore(db *store.DB, clock *storetest.Clock) envOption {
	return func(p *parts) { p.db, p.clock = db, clock }
}

// asNode makes the endpoint a node of a deployment on etcd: it announces
// its TCP listener (store.NodeInfo.SIPAddr, Config.NodeAddr).
func asNode() envOption { return func(p *parts) { p.node = true } }

// withTLS serves TLS too (tlsAddr), with a self-signed certificate that
// tlsRoots trusts.
func withTLS() envOption { return func(p *parts) { p.tls = true } }

// withSetup runs f on the env after the components were built, before the
// endpoint serves (handlers must not be registered while requests are
// routed).
func withSetup(f func(*env)) envOption {
	return func(p *parts) { p.setup = append(p.setup, f) }
}

// newEnv starts the endpoint with the components opts ask for (all of them
// by default), serving UDP and TCP on 127.0.0.1.
func newEnv(t testing.TB, cfg Config, opts ...envOption) *env {
	t.Helper()
	p := parts{registrar: &RegistrarConfig{}, proxy: &ProxyConfig{}, announcer: &AnnouncerConfig{}, notifier: true}
	for _, o := range opts {
		o(&p)
	}
	clock, db := p.clock, p.db
	if db == nil {
		clock = storetest.NewClock()
		db = storetest.Open(t, clock)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if p.node {
		cfg.NodeAddr = ln.Addr().String()
		if err := db.AnnounceNode(store.NodeInfo{SIPAddr: cfg.NodeAddr}); err != nil {
			t.Fatalf("AnnounceNode() = %v", err)
		}
	}
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, db, testLogger(t), reg)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	e := &env{t: t, db: db, clock: clock, srv: srv, reg: reg}
	if p.registrar != nil {
		if e.registrar, err = NewRegistrar(srv, *p.registrar); err != nil {
			t.Fatalf("NewRegistrar() = %v", err)
		}
	}
	if p.announcer != nil {
		if e.ann, err = NewAnnouncer(srv, *p.announcer); err != nil {
			t.Fatalf("NewAnnouncer() = %v", err)
		}
	}
	if p.proxy != nil {
		if e.proxy, err = NewProxy(srv, *p.proxy, e.ann); err != nil {
			t.Fatalf("NewProxy() = %v", err)
		}
	}
	if p.notifier {
		if e.notifier, err = NewNotifier(srv); err != nil {
			t.Fatalf("NewNotifier() = %v", err)
		}
	}
	for _, f := range p.setup {
		f(e)
	}
	if acct, err := db.AccountByDomain(testDomain); err == nil {
		e.acct = acct
		if e.user, err = db.UserByExtension(acct.ID, "1001"); err != nil {
			t.Fatal(err)
		}
		c, err := db.SIPCredentials(acct.ID, e.user.ID, store.System)
		if err != nil {
			t.Fatal(err)
		}
		e.password = c.Password
	} else {
		if e.acct, err = db.CreateAccount("acme", testDomain, store.System); err != nil {
			t.Fatal(err)
		}
		e.user, e.password = e.addUser("1001")
	}

	e.udpAddr, e.tcpAddr = pc.LocalAddr().String(), ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(2)
	go func() { defer wg.Done(); errs <- srv.ServeUDP(ctx, pc) }()
	go func() { defer wg.Done(); errs <- srv.ServeTCP(ctx, ln) }()
	if p.tls {
		cert, pool := selfSigned(t)
		tl, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		e.tlsAddr, e.tlsRoots = tl.Addr().String(), pool
		wg.Add(1)
		go func() { defer wg.Done(); errs <- srv.ServeTLS(ctx, tl) }()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("Serve() = %v, want nil on a clean stop", err)
			}
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return e
}

func (e *env) addUser(ext string) (store.User, string) {
	e.t.Helper()
	u, err := e.db.CreateUser(e.acct.ID, store.NewUser{Extension: ext, Name: "User " + ext}, store.System)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.db.SIPCredentials(e.acct.ID, u.ID, store.System)
	if err != nil {
		e.t.Fatal(err)
	}
	return u, c.Password
}

func (e *env) addr(transport string) string {
	switch transport {
	case "UDP":
		return e.udpAddr
	case "TLS":
		return e.tlsAddr
	}
	return e.tcpAddr
}

// bindings returns the user's live bindings.
func (e *env) bindings(u store.User) []store.Binding {
	e.t.Helper()
	bs, err := e.db.Bindings(e.acct.ID, u.ID)
	if err != nil {
		e.t.Fatalf("Bindings() = %v", err)
	}
	return bs
}

// newClient returns a sipgo client on its own user agent.
func newClient(t testing.TB) *sipgo.Client {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("tester"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(slog.New(slog.DiscardHandler))),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slog.New(slog.DiscardHandler))))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return cli
}

var callSeq atomic.Int64

// uac is one registering phone: a Call-ID, a CSeq counter and credentials.
type uac struct {
	t         testing.TB
	cli       *sipgo.Client
	transport string // UDP or TCP
	dst       string
	user      string // extension
	domain    string
	password  string
	callID    string
	cseq      uint32
	fromTag   string
	ua        string
	nc        int
}

func (e *env) uac(transport, user, password string) *uac {
	return newUAC(e.t, newClient(e.t), transport, e.addr(transport), user, password)
}

func newUAC(t testing.TB, cli *sipgo.Client, transport, dst, user, password string) *uac {
	n := callSeq.Add(1)
	return &uac{t: t, cli: cli, transport: transport, dst: dst, user: user, domain: testDomain, password: password,
		callID: fmt.Sprintf("call-%d-%d@test", n, time.Now().UnixNano()), cseq: 1, fromTag: fmt.Sprintf("tag%d", n), ua: "dialtone-test/1.0"}
}

// request builds a REGISTER with the next CSeq. hdrs are raw "Name: value"
// lines (e.g. "Contact: <sip:1001@127.0.0.1:5099>", "Expires: 600").
func (u *uac) request(hdrs ...string) *sip.Request {
	aor := sip.Uri{Scheme: "sip", User: u.user, Host: u.domain}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: u.domain})
	req.SetDestination(u.dst)
	req.SetTransport(u.transport)
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: u.fromTag}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	cid := sip.CallIDHeader(u.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: u.cseq, MethodName: sip.REGISTER})
	u.cseq++
	req.AppendHeader(sip.NewHeader("User-Agent", u.ua))
	for _, h := range hdrs {
		name, value, _ := strings.Cut(h, ":")
		req.AppendHeader(sip.NewHeader(strings.TrimSpace(name), strings.TrimSpace(value)))
	}
	return req
}

// do sends req and returns the final response.
func (u *uac) do(req *sip.Request) *sip.Response {
	u.t.Helper()
	res, err := u.doErr(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", req.Method, u.transport, err)
	}
	return res
}

func (u *uac) doErr(req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return u.cli.Do(ctx, req)
}

// registerErr is register for other goroutines than the test's: it never
// calls t.Fatal.
func (u *uac) registerErr(hdrs ...string) (*sip.Response, error) {
	res, err := u.doErr(u.request(hdrs...))
	if err != nil || res.StatusCode != 401 {
		return res, err
	}
	h := res.GetHeader("WWW-Authenticate")
	if h == nil {
		return nil, fmt.Errorf("401 without WWW-Authenticate")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return nil, err
	}
	req := u.request(hdrs...)
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: req.Recipient.String(), Username: u.user, Password: u.password, Count: 1})
	if err != nil {
		return nil, err
	}
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	return u.doErr(req)
}

// authorization answers the challenge in res for alg ("" = the first) with
// the next nonce count.
func (u *uac) authorization(req *sip.Request, res *sip.Response, alg string) string {
	u.t.Helper()
	chal := findChallenge(u.t, res, alg)
	u.nc++
	cred, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: req.Recipient.String(),
		Username: u.user, Password: u.password, Count: u.nc})
	if err != nil {
		u.t.Fatal(err)
	}
	return cred.String()
}

func findChallenge(t testing.TB, res *sip.Response, alg string) *digest.Challenge {
	t.Helper()
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		c, err := digest.ParseChallenge(h.Value())
		if err != nil {
			t.Fatalf("ParseChallenge(%q) = %v", h.Value(), err)
		}
		if alg == "" || c.Algorithm == alg {
			return c
		}
	}
	t.Fatalf("no %q challenge in:\n%s", alg, res)
	return nil
}

// register does REGISTER → 401 → REGISTER with alg and returns the final
// response (the 401 if the first answer was not a challenge).
func (u *uac) register(alg string, hdrs ...string) *sip.Response {
	u.t.Helper()
	res := u.do(u.request(hdrs...))
	if res.StatusCode != 401 {
		return res
	}
	u.nc = 0
	req := u.request(hdrs...)
	req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, res, alg)))
	return u.do(req)
}

// rawExchange writes msg to addr over network and returns the first
// response read (nil if none arrives within wait).
func rawExchange(t *testing.T, network, addr string, msg []byte, wait time.Duration) *sip.Response {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	var data []byte
	if network == "udp" {
		buf := make([]byte, 65535)
		n, err := c.Read(buf)
		if err != nil {
			return nil
		}
		data = buf[:n]
	} else {
		data = readStreamMessage(c)
		if data == nil {
			return nil
		}
	}
	m, err := sip.ParseMessage(data)
	if err != nil {
		t.Fatalf("response does not parse: %v\n%s", err, data)
	}
	res, ok := m.(*sip.Response)
	if !ok {
		t.Fatalf("got a request back:\n%s", data)
	}
	return res
}

// readStreamMessage reads one SIP message (headers + Content-Length body) from a stream.
func readStreamMessage(r io.Reader) []byte {
	br := bufio.NewReader(r)
	var sb strings.Builder
	clen := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil
		}
		sb.WriteString(line)
		l := strings.TrimSpace(line)
		if l == "" && sb.Len() > 2 {
			break
		}
		if name, v, ok := strings.Cut(l, ":"); ok && (strings.EqualFold(strings.TrimSpace(name), "Content-Length") || strings.TrimSpace(name) == "l") {
			fmt.Sscan(strings.TrimSpace(v), &clen)
		}
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil
	}
	sb.Write(body)
	return []byte(sb.String())
}

// headerNames is the sorted set of header names of res, lower-cased.
func headerNames(res *sip.Response) map[string]int {
	m := map[string]int{}
	for _, h := range res.Headers() {
		m[strings.ToLower(h.Name())]++
	}
	return m
}

func contactsOf(res *sip.Response) []string {
	var out []string
	for _, h := range res.GetHeaders("Contact") {
		out = append(out, h.Value())
	}
	return out
}

func sipgoDigest(u *uac) sipgo.DigestAuth {
	return sipgo.DigestAuth{Username: u.user, Password: u.password}
}

// counterValue reads a counter or gauge.
func counterValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric is neither counter nor gauge")
	return 0
}
