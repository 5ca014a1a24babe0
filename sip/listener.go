package sip

import (
	"context"
	"errors"
	"github.com/dialtone-voip/dialtone/internal/guard"
	"log/slog"
	"net"
	"time"

	"github.com/emiago/sipgo/sip"
)

// streamWriteTimeout bounds one write to a TCP/TLS peer that stopped reading.
const streamWriteTimeout = 10 * time.Second

// idle wraps a TCP or TLS listener so that every accepted connection is
// closed after Config.TCPIdleTimeout without a byte from the peer (each read
// re-arms the deadline; for TLS this also bounds the handshake) and a write
// that blocks for streamWriteTimeout fails.
func (s *Server) idle(ln net.Listener) net.Listener {
	return idleListener{Listener: ln, read: s.cfg.TCPIdleTimeout, write: streamWriteTimeout}
}

type idleListener struct {
	net.Listener
	read, write time.Duration
}

func (l idleListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &idleConn{Conn: c, read: l.read, write: l.write}, nil
}

type idleConn struct {
	net.Conn
	read, write time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.read > 0 {
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.read)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if c.write > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(c.write)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(p)
}

// sipgoLogHandler tones down what sipgo logs about peers: an unparsable
// message is the sender's problem and an idle connection closed by our
// timeout is routine (debug, not error), and raw message bytes are dropped,
// since they may hold digest credentials.
type sipgoLogHandler struct{ slog.Handler }

func (h sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Message == "failed to parse":
	case r.Message == "Read error" && r.Level > slog.LevelDebug && idleTimeoutRecord(r):
		// Our idle timeout closing a connection: expected, not an error.
	default:
		return h.Handler.Handle(ctx, r)
	}
	if !h.Handler.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	nr := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "data" {
			nr.AddAttrs(a)
		}
		return true
	})
	return h.Handler.Handle(ctx, nr)
}

func (h sipgoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return sipgoLogHandler{h.Handler.WithAttrs(as)}
}

func (h sipgoLogHandler) WithGroup(name string) slog.Handler {
	return sipgoLogHandler{h.Handler.WithGroup(name)}
}

func idleTimeoutRecord(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			if err, ok := a.Value.Any().(error); ok {
				var ne net.Error
				found = errors.As(err, &ne) && ne.Timeout()
			}
			return false
		}
		return true
	})
	return found
}

// udpReadFilter drops datagrams that cannot be SIP before sipgo parses them
// or remembers their sender: CRLF keepalives, STUN, binary noise, text that
// does not start with a method or "SIP/2.0" (both begin with an upper-case
// letter). sipgo keeps one pool entry per UDP source address it has read
// from, so dropping noise here also keeps scanners from growing that pool.
// It never returns an error: that would stop the UDP listener.
func udpReadFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	if props.Transport != "UDP" {
		return data, nil // stream chunks are not messages
	}
	for _, c := range data {
		switch {
		case c == '\r' || c == '\n' || c == ' ' || c == '\t':
			continue
		case c >= 'A' && c <= 'Z':
			return data, nil
		}
		return nil, nil
	}
	return nil, nil
}

// readFilter is udpReadFilter plus the brute-force guard for UDP: datagrams
// from a blocked source are dropped silently before sipgo parses them or
// remembers their sender (so a blocked scanner costs a map lookup and grows
// nothing). Over TCP/TLS, where bytes are not messages, blocked sources get
// 403 from handle instead.
func (s *Server) readFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	data, err := udpReadFilter(props, data)
	if data == nil || props.Transport != "UDP" || props.RemoteAddr == nil {
		return data, err
	}
	if s.guard.Blocked(guard.IP(props.RemoteAddr.String()), "") {
		s.metrics.blockedDrops.Inc()
		return nil, nil
	}
	return data, nil
}
