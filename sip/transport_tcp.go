package sip

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// streamListener wraps a SIP TCP or TLS listener for sipgo, whose accept
// loop returns (and with it dialtone's whole serve group) on any error:
//
//   - temporary accept errors (out of file descriptors, out of buffers) are
//     retried here after a back-off of 5 ms doubling to 1 s, as net/http
//     does; they are counted and logged at most once a second;
//   - connections beyond Config.MaxConnections, or beyond
//     Config.MaxConnectionsPerIP from one address, are closed at once;
//   - each accepted connection is a streamConn: it frames the byte stream
//     itself and bounds time and memory per connection.
type streamListener struct {
	net.Listener
	s         *Server
	transport string // "TCP" or "TLS"

	closeOnce sync.Once
	done      chan struct{}

	logMu   sync.Mutex
	lastLog time.Time
}

func (s *Server) streamListener(ln net.Listener, transport string) *streamListener {
	return &streamListener{Listener: ln, s: s, transport: transport, done: make(chan struct{})}
}

func (l *streamListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *streamListener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if !temporaryAcceptError(err) {
				return nil, err
			}
			select {
			case <-l.done:
				return nil, net.ErrClosed
			default:
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			l.s.tm.acceptErrors.Inc()
			l.logAcceptError(err, delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return nil, net.ErrClosed
			}
			continue
		}
		delay = 0
		ip := remoteIP(c)
		release, reason := l.s.conns.acquire(ip)
		if release == nil {
			l.s.tm.connsRefused.WithLabelValues(reason).Inc()
			c.Close()
			continue
		}
		l.s.tm.connsOpen.WithLabelValues(l.transport).Inc()
		sc := l.s.newStreamConn(c, func() {
			release()
			l.s.tm.connsOpen.WithLabelValues(l.transport).Dec()
		})
		sc.transport = l.transport
		return sc, nil
	}
}

func (l *streamListener) logAcceptError(err error, delay time.Duration) {
	l.logMu.Lock()
	now := time.Now()
	if now.Sub(l.lastLog) < time.Second {
		l.logMu.Unlock()
		return
	}
	l.lastLog = now
	l.logMu.Unlock()
	l.s.log.Warn("SIP accept failed; retrying", "transport", l.transport, "err", err, "retry_in", delay)
}

// temporaryAcceptError reports errors after which accepting can resume:
// running out of descriptors or kernel memory, or a connection reset
// before it was accepted.
func temporaryAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// remoteIP is the address a connection counts against for the per-IP cap:
// the IPv4 address, or the IPv6 /64 (one subscriber's usual allocation, so
// that walking through a prefix does not multiply the cap).
func remoteIP(c net.Conn) netip.Addr {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// connLimiter counts open stream connections, globally and per address. Its
// map holds only addresses with open connections, so it is bounded by the
// global cap.
type connLimiter struct {
	mu            sync.Mutex
	total         int
	perIP         map[netip.Addr]int
	max, maxPerIP int
}

func newConnLimiter(max, perIP int) *connLimiter {
	return &connLimiter{perIP: map[netip.Addr]int{}, max: max, maxPerIP: perIP}
}

// acquire takes a slot for ip; it returns the release function, or nil and
// the cap that refused it ("global" or "per_ip").
func (l *connLimiter) acquire(ip netip.Addr) (func(), string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		return nil, "global"
	}
	if l.perIP[ip] >= l.maxPerIP {
		return nil, "per_ip"
	}
	l.total++
	l.perIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perIP[ip]--; l.perIP[ip] <= 0 {
				delete(l.perIP, ip)
			}
		})
	}, ""
}

// open returns the number of open connections (for tests).
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// streamConn is one accepted TCP or TLS connection as sipgo sees it. Its
// Read frames the peer's byte stream into messages itself (RFC 3261 §18.3:
// headers up to the empty line, then Content-Length bytes of body) and hands
// sipgo only messages the front door passed, whole. Consequences:
//
//   - a message sipgo cannot parse is answered 400 here and the connection
//     stays open, since the next message's start is known; only a stream
//     that cannot be framed (no or a broken Content-Length, a message over
//     64 KiB) is closed, after a 400 when it is addressable;
//   - at most one message (64 KiB) and one read (4 KiB) are buffered per
//     connection, besides sipgo's own read buffer (32 KiB);
//   - until the first complete message that passes the front door, the
//     connection has Config.FirstRequestTimeout from accept (this covers the
//     TLS handshake, which happens in the first Read); after it,
//     Config.TCPIdleTimeout without a byte from the peer closes it;
//   - a CRLFCRLF keepalive is answered with CRLF (RFC 5626 §3.5.1).
//
// Writes (sipgo's and the front door's) are serialized and time out after
// streamWriteTimeout.
type streamConn struct {
	net.Conn
	s         *Server
	release   func()
	closeOnce sync.Once

	transport string    // "TCP" or "TLS"
	firstBy   time.Time // deadline for the first complete message
	started   bool      // a complete message passed the front door
	src       netip.AddrPort

	in      []byte // bytes read, not yet framed
	scanned int    // c.in[:scanned] holds no end of headers
	out     []byte // framed messages for sipgo, not yet read by it
	scratch []byte
	err     error       // sticky read error, returned once out is drained
	refused atomic.Bool // we ended the stream (errUnframable): linger on close

	wmu sync.Mutex
}

func (s *Server) newStreamConn(c net.Conn, release func()) *streamConn {
	src, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return &streamConn{Conn: c, s: s, release: release,
		firstBy: time.Now().Add(s.cfg.FirstRequestTimeout), src: src}
}

func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		defer c.release()
		if c.refused.Load() {
			c.linger()
		}
	})
	return c.Conn.Close()
}

// linger lets our last answer reach a peer that is still sending: closing
// with unread input makes the kernel send a reset, which can destroy the
// answer before the peer reads it. So, as net/http does, we close our side
// for writing and discard input for a short while (bounded in time and
// bytes) before closing. Runs only after we refused an unframable stream.
func (c *streamConn) linger() {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.CopyN(io.Discard, c.Conn, 256<<10)
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *streamConn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.fill()
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
	}
	return n, nil
}

// fill reads once from the peer and frames what it can; it sets c.err when
// the connection must end.
func (c *streamConn) fill() {
	deadline := c.firstBy
	if c.started {
		deadline = time.Now().Add(c.s.cfg.TCPIdleTimeout)
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		c.err = err
		return
	}
	if c.scratch == nil {
		c.scratch = make([]byte, streamReadSize)
	}
	n, err := c.Conn.Read(c.scratch)
	if need := len(c.in) + n; need > cap(c.in) {
		// Grow by doubling, but never past one message and one read.
		grown := make([]byte, len(c.in), min(max(2*cap(c.in), need), maxMessage+streamReadSize))
		copy(grown, c.in)
		c.in = grown
	}
	c.in = append(c.in, c.scratch[:n]...)
	if n > 0 {
		c.frame()
	}
	if err != nil && c.err == nil {
		var ne net.Error
		switch tc, isTLS := c.Conn.(*tls.Conn); {
		case errors.As(err, &ne) && ne.Timeout():
			reason := "idle_timeout"
			if !c.started {
				reason = "first_request_timeout"
			}
			c.s.tm.streamClosed.WithLabelValues(reason).Inc()
			err = errStreamTimeout{err}
		case isTLS && !tc.ConnectionState().HandshakeComplete && !errors.Is(err, io.EOF):
			// Scanners speaking plain text to the TLS port: routine.
			c.s.tm.streamClosed.WithLabelValues("tls_handshake").Inc()
			err = fmt.Errorf("%w: %w", errTLSHandshake, err)
		}
		c.err = err
	}
}

var errTLSHandshake = errors.New("sip: TLS handshake failed")

// errStreamTimeout marks our own deadlines, so the log handler can tell
// them from real failures.
type errStreamTimeout struct{ error }

func (e errStreamTimeout) Unwrap() error { return e.error }
func (errStreamTimeout) Timeout() bool   { return true }
func (errStreamTimeout) Temporary() bool { return false }

// frame cuts complete messages off c.in and runs each through the front door.
func (c *streamConn) frame() {
	for c.err == nil {
		// Keepalives between messages (RFC 5626 §3.5.1): answer CRLFCRLF with CRLF.
		for len(c.in) >= 2 && c.in[0] == '\r' && c.in[1] == '\n' {
			if len(c.in) >= 4 && c.in[2] == '\r' && c.in[3] == '\n' {
				c.in = c.in[4:]
				c.scanned = 0
				if _, err := c.Write([]byte("\r\n")); err != nil {
					c.err = err
					return
				}
				continue
			}
			if len(c.in) == 2 {
				// Maybe the first half of a ping; wait for more.
				return
			}
			c.in = c.in[2:]
			c.scanned = 0
		}
		if len(c.in) == 0 {
			c.in = nil
			return
		}
		end, sepLen := headerEndFrom(c.in, c.scanned)
		if end < 0 {
			c.scanned = len(c.in)
			if len(c.in) > maxMessage {
				c.refuse(c.in, "Message Too Large", 513, "too_large")
			}
			return
		}
		clen, ok, problem := streamContentLength(c.in[:end+sepLen])
		if !ok {
			c.refuse(c.in[:end+sepLen], problem, 400, "unframable")
			return
		}
		total := end + sepLen + clen
		if total > maxMessage {
			c.refuse(c.in[:end+sepLen], "Message Too Large", 513, "too_large")
			return
		}
		if len(c.in) < total {
			return
		}
		msg := c.in[:total:total]
		c.in = c.in[total:]
		c.scanned = 0
		v := c.s.frontDoor(msg, false, c.src)
		if v.reply != nil {
			if _, err := c.Write(v.reply); err != nil {
				c.err = err
				return
			}
		}
		if v.pass != nil {
			// Only a message the SIP stack gets ends the first-request
			// deadline: junk answered with 400 does not buy an hour.
			c.started = true
			if v.req == nil || !c.s.fastPath(v.req, c.transport, c.RemoteAddr(), c) {
				c.out = append(c.out, v.pass...)
			}
		}
	}
}

// refuse answers what it can of an unframable message and ends the connection.
func (c *streamConn) refuse(head []byte, reason string, code int, why string) {
	c.s.tm.streamClosed.WithLabelValues(why).Inc()
	c.err = errUnframable
	c.refused.Store(true)
	v, ok := splitMessage(head)
	if !ok {
		// Headers never ended: read what lines there are.
		v, ok = splitMessage(append(head[:len(head):len(head)], "\r\n\r\n"...))
	}
	if !ok || v.isResponse() {
		return
	}
	env, ok := readEnvelope(&v)
	if !ok || env.startMethod == "ACK" {
		return
	}
	if code == 400 {
		reason = "Bad Request (" + reason + ")"
	}
	c.s.tm.frontDoor.WithLabelValues(strconv.Itoa(code)).Inc()
	_, _ = c.Write(c.s.frontDoorResponse(env, code, reason, c.src))
}

var errUnframable = errors.New("sip: stream can no longer be framed")

// streamReadSize is one read from a TCP/TLS peer: most SIP messages fit.
const streamReadSize = 4 << 10

// streamContentLength reads Content-Length (or l) from a header section. A
// missing one means no body (RFC 3261 §18.3 makes it mandatory on streams;
// the message itself is then judged by the front door). ok is false when
// the value cannot frame the stream: not digits, or two different values.
func streamContentLength(head []byte) (n int, ok bool, problem string) {
	v, split := splitMessage(head)
	if !split {
		return 0, true, ""
	}
	vals := v.all("content-length")
	if len(vals) == 0 {
		return 0, true, ""
	}
	for _, val := range vals {
		if !allDigits(val) || len(strings.TrimLeft(val, "0")) > 9 {
			return 0, false, "Malformed Content-Length"
		}
		if strings.TrimLeft(val, "0") != strings.TrimLeft(vals[0], "0") {
			return 0, false, "Conflicting Content-Length"
		}
	}
	if t := strings.TrimLeft(vals[0], "0"); t != "" {
		n, _ = strconv.Atoi(t)
	}
	return n, true, ""
}
