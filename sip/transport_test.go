package sip

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dialtone test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestRegisterOverTLS(t *testing.T) {
	e := newEnv(t, Config{})
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeTLS(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("ServeTLS() = %v, want nil on a clean stop", err)
		}
	})

	ua, err := sipgo.NewUA(sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(slog.New(slog.DiscardHandler))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	u := newUAC(t, cli, "TLS", ln.Addr().String(), "1001", e.password)
	if res := u.register("SHA-256", "Contact: <sip:1001@127.0.0.1:7600;transport=tls>"); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS = %d, want 200", res.StatusCode)
	}
	bs := e.bindings(e.user)
	if len(bs) != 1 || bs[0].Transport != "tls" {
		t.Errorf("bindings = %+v, want one over tls", bs)
	}
}

func TestTCPIdleTimeout(t *testing.T) {
	e := newEnv(t, Config{TCPIdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", e.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A connection that is used stays up while it is used...
	opts := "OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKidle1\r\n" +
		"From: <sip:a@example.test>;tag=1\r\nTo: <sip:example.test>\r\nCall-ID: idle@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(opts)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if msg := readStreamMessage(c); !strings.HasPrefix(string(msg), "SIP/2.0 200") {
		t.Fatalf("OPTIONS answer = %q, want 200", msg)
	}
	// ...and is closed by the server once it has been idle for the timeout.
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, io.EOF) && !isConnReset(err) {
		t.Fatalf("read on idle connection = %v, want EOF (server closed it)", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about 200ms", d)
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestLarge200OverUDP(t *testing.T) {
	// Ten bindings with long contact URIs make a 200 far above sipgo's
	// default 1300-byte UDP limit; it must still arrive.
	e := newEnv(t, Config{})
	u := e.uac("UDP", "1001", e.password)
	var hdrs []string
	for i := 0; i < 10; i++ {
		hdrs = append(hdrs, fmt.Sprintf("Contact: <sip:1001@192.0.2.%d:5060;transport=udp;x-long-parameter=%s>", i+1, strings.Repeat("y", 100)))
	}
	res := u.register("MD5", hdrs...)
	if res.StatusCode != 200 {
		t.Fatalf("REGISTER = %d, want 200", res.StatusCode)
	}
	if n := len(contactsOf(res)); n != 10 {
		t.Errorf("200 lists %d contacts, want 10", n)
	}
	if size := len(res.String()); size < 1500 {
		t.Errorf("200 is only %d bytes; the test does not exercise the UDP limit", size)
	}
}

// TestConnectionCaps: beyond MaxConnectionsPerIP from one address, or
// MaxConnections in all, a new connection is closed at once and counted;
// another address still gets in under the global cap, and closing a
// connection frees its slot.
func TestConnectionCaps(t *testing.T) {
	e := newEnv(t, Config{MaxConnections: 4, MaxConnectionsPerIP: 2})
	dialFrom := func(ip string) net.Conn {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", e.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alive := func(c net.Conn) bool {
		sc := &streamClient{t: t, c: c, br: bufio.NewReader(c)}
		res := sc.exchange(rawMsg("TCP", optionsLines("Content-Length: 0")...))
		return res != nil && res.StatusCode == 200
	}
	a1, a2 := dialFrom("127.0.0.1"), dialFrom("127.0.0.1")
	if !alive(a1) || !alive(a2) {
		t.Fatal("connections under the cap do not work")
	}
	if a3 := dialFrom("127.0.0.1"); alive(a3) {
		t.Error("third connection from one address served, want it closed (per-IP cap 2)")
	}
	b1, b2 := dialFrom("127.0.0.2"), dialFrom("127.0.0.2")
	if !alive(b1) || !alive(b2) {
		t.Fatal("another address is refused under the global cap")
	}
	if c1 := dialFrom("127.0.0.3"); alive(c1) {
		t.Error("fifth connection served, want it closed (global cap 4)")
	}
	if got := counterValue(t, e.srv.tm.connsRefused.WithLabelValues("per_ip")); got != 1 {
		t.Errorf("refused{per_ip} = %v, want 1", got)
	}
	if got := counterValue(t, e.srv.tm.connsRefused.WithLabelValues("global")); got != 1 {
		t.Errorf("refused{global} = %v, want 1", got)
	}
	if got := counterValue(t, e.srv.tm.connsOpen.WithLabelValues("TCP")); got != 4 {
		t.Errorf("connections_open = %v, want 4", got)
	}
	a1.Close()
	waitFor(t, "slot freed", func() bool { return e.srv.conns.open() == 3 })
	if !alive(dialFrom("127.0.0.1")) {
		t.Error("a freed slot is not reusable")
	}
}

// TestFirstRequestTimeout: a connection that sends nothing, or only part of
// a message, is closed after FirstRequestTimeout; one that completed a
// request is kept (the idle timeout applies).
func TestFirstRequestTimeout(t *testing.T) {
	e := newEnv(t, Config{FirstRequestTimeout: 300 * time.Millisecond})
	silent := dialStream(t, e.tcpAddr)
	partial := dialStream(t, e.tcpAddr)
	if _, err := partial.c.Write([]byte("OPTIONS sip:example.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKslow\r\n")); err != nil {
		t.Fatal(err)
	}
	junk := dialStream(t, e.tcpAddr) // complete messages, but only refused ones
	wantStatus(t, junk.exchange(rawMsg("TCP", optionsLines(`Contact: "unterminated`, "Content-Length: 0")...)), 400, "")
	used := dialStream(t, e.tcpAddr)
	wantStatus(t, used.exchange(rawMsg("TCP", optionsLines("Content-Length: 0")...)), 200, "OK")
	start := time.Now()
	if !silent.closed() || !partial.closed() || !junk.closed() {
		t.Fatal("a connection without a complete request was kept")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about 300ms", d)
	}
	// The used connection outlives the first-request timeout.
	used.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := used.br.ReadByte(); !isTimeout(err) {
		t.Errorf("read on the used connection = %v, want a timeout (still open)", err)
	}
	wantStatus(t, used.exchange(rawMsg("TCP", optionsLines("Content-Length: 0")...)), 200, "OK")
	if got := counterValue(t, e.srv.tm.streamClosed.WithLabelValues("first_request_timeout")); got != 3 {
		t.Errorf("closed{first_request_timeout} = %v, want 3", got)
	}
}

// TestTLSHandshakeTimeout: a TLS connection that never sends a ClientHello
// is closed after FirstRequestTimeout.
func TestTLSHandshakeTimeout(t *testing.T) {
	e := newEnv(t, Config{FirstRequestTimeout: 300 * time.Millisecond})
	cert, _ := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeTLS(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })
	c := dialStream(t, ln.Addr().String())
	if !c.closed() {
		t.Fatal("TLS connection without a ClientHello was kept")
	}
	if got := counterValue(t, e.srv.tm.connsOpen.WithLabelValues("TLS")); got != 0 {
		waitFor(t, "TLS connection released", func() bool {
			return counterValue(t, e.srv.tm.connsOpen.WithLabelValues("TLS")) == 0
		})
	}
}

// flakyListener fails Accept with EMFILE n times before passing through.
type flakyListener struct {
	net.Listener
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptSurvivesEMFILE: "too many open files" from accept does not end
// ServeTCP (sipgo's loop would return, and dialtone with it); accepting
// resumes after a back-off and the errors are counted.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	e := newEnv(t, Config{})
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner, fails: 5}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeTCP(ctx, ln) }()
	sc := dialStream(t, inner.Addr().String())
	wantStatus(t, sc.exchange(rawMsg("TCP", optionsLines("Content-Length: 0")...)), 200, "OK")
	if got := counterValue(t, e.srv.tm.acceptErrors); got != 5 {
		t.Errorf("accept errors = %v, want 5", got)
	}
	select {
	case err := <-served:
		t.Fatalf("ServeTCP returned %v while the listener was open", err)
	default:
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("ServeTCP() = %v after cancel, want nil", err)
	}
}

// TestUDPSourceTableBounded: requests from many source ports leave at most
// UDPSources addresses remembered, in our table and in sipgo's pool; every
// request is still answered from the listening port; noise is never
// remembered.
func TestUDPSourceTableBounded(t *testing.T) {
	const limit = 64
	// OPTIONS must reach sipgo here: the fast path never enters the table.
	e := newEnv(t, Config{UDPSources: limit, DisableFastPath: true})
	pool := e.srv.ua.TransportLayer().Pool("udp")
	base := pool.Size()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("udp", e.udpAddr) // connected: only the listening port's answer is read
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(rawMsg("UDP", optionsLines("Content-Length: 0")...)); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		c.Close()
		if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
			t.Fatalf("request %d: answer %q, %v", i, buf[:n], err)
		}
		if got := pool.Size(); got > base+limit+1 {
			t.Fatalf("after %d sources sipgo's pool holds %d entries, want <= %d", i+1, got, base+limit+1)
		}
		if got := e.srv.udpSources(); got > limit {
			t.Fatalf("after %d sources the table holds %d, want <= %d", i+1, got, limit)
		}
	}
	if got := counterValue(t, e.srv.tm.udpRotations); got < 1 {
		t.Errorf("rotations = %v, want some", got)
	}
	// Noise from new sources is not remembered.
	before := e.srv.udpSources()
	for i := 0; i < 50; i++ {
		c, err := net.Dial("udp", e.udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("HELLO THERE\r\n\r\n"))
		c.Close()
	}
	// One more real request flushes the noise through the socket.
	if res := rawExchange(t, "udp", e.udpAddr, rawMsg("UDP", optionsLines("Content-Length: 0")...), 2*time.Second); res == nil || res.StatusCode != 200 {
		t.Fatalf("OPTIONS after noise = %v", res)
	}
	if got := e.srv.udpSources(); got > before+1 {
		t.Errorf("noise grew the table from %d to %d", before, got)
	}
}

// TestUDPRotationKeepsAnswering: 200 sources (every request from a fresh
// socket, in 5 rounds of 40 at once) through a table of 128 (halves of 64)
// make the table rotate, each time ending sipgo's read loop and starting
// another, while requests are in flight. Every request must be answered,
// and from the listening port (the client sockets are connected to it).
// The rounds keep the property udp.go relies on: a source is forgotten only
// after half a table of newer sources arrived, and with at most 40 sources
// outstanding no request can be that old when its transaction starts, however
// slowly the machine schedules sipgo's goroutines. (Without rounds, a
// starved transaction could see 64 newer sources from clients that were
// answered first: the flood udp.go's comment describes.)
func TestUDPRotationKeepsAnswering(t *testing.T) {
	e := newEnv(t, Config{UDPSources: 128, DisableFastPath: true}) // OPTIONS via sipgo
	const clients, rounds = 40, 5
	for j := 0; j < rounds; j++ {
		errs := make(chan error, clients)
		for i := 0; i < clients; i++ {
			go func() {
				buf := make([]byte, 4096)
				c, err := net.Dial("udp", e.udpAddr)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				if _, err := c.Write(rawMsg("UDP", optionsLines("Content-Length: 0")...)); err != nil {
					errs <- err
					return
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := c.Read(buf)
				if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
					errs <- fmt.Errorf("round %d client %d: %q, %v", j, i, buf[:n], err)
					return
				}
				errs <- nil
			}()
		}
		for i := 0; i < clients; i++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	if got := counterValue(t, e.srv.tm.udpRotations); got < 2 {
		t.Errorf("rotations = %v, want at least 2", got)
	}
	if got := e.srv.udpSources(); got > 128 {
		t.Errorf("table holds %d sources, want <= 128", got)
	}
}

// TestTLSPlainTextClosed: plain SIP sent to the TLS port ends the
// connection, counted as a failed handshake (and logged at debug only).
func TestTLSPlainTextClosed(t *testing.T) {
	e := newEnv(t, Config{})
	cert, _ := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeTLS(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })
	c := dialStream(t, ln.Addr().String())
	if _, err := c.c.Write(rawMsg("TLS", optionsLines("Content-Length: 0")...)); err != nil {
		t.Fatal(err)
	}
	if !c.closed() {
		t.Fatal("plain text on the TLS port was not refused")
	}
	waitFor(t, "handshake failure counted", func() bool {
		return counterValue(t, e.srv.tm.streamClosed.WithLabelValues("tls_handshake")) == 1
	})
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestRemoteIPGroups: the per-IP cap counts an IPv4 address, an IPv4-mapped
// IPv6 address as that IPv4 address, and an IPv6 address by its /64.
func TestRemoteIPGroups(t *testing.T) {
	key := func(s string) netip.Addr {
		return remoteIP(addrConn{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s))})
	}
	if a, b := key("[2001:db8:1:2::1]:5060"), key("[2001:db8:1:2:ffff::9]:6000"); a != b {
		t.Errorf("one /64 counted as %v and %v", a, b)
	}
	if a, b := key("[2001:db8:1:2::1]:5060"), key("[2001:db8:1:3::1]:5060"); a == b {
		t.Errorf("two /64s counted as one (%v)", a)
	}
	if a, b := key("192.0.2.7:5060"), key("[::ffff:192.0.2.7]:5061"); a != b {
		t.Errorf("IPv4 %v and its mapped form %v counted apart", a, b)
	}
}
