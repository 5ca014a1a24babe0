package sip

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/emiago/sipgo/sip"
)

// streamWriteTimeout bounds one write to a TCP/TLS peer that stopped reading.
const streamWriteTimeout = 10 * time.Second

// sipgoLogHandler tones down what sipgo logs about peers: an unparsable
// message is the sender's problem and an idle connection closed by our
// timeout is routine (debug, not error), and raw message bytes are dropped,
// since they may hold digest credentials.
type sipgoLogHandler struct{ slog.Handler }

func (h sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Message == "failed to parse":
	case r.Message == "Read error" && r.Level > slog.LevelDebug && ourCloseRecord(r):
		// Our timeouts or framing closing a connection: expected, not an error.
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

func ourCloseRecord(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			if err, ok := a.Value.Any().(error); ok {
				var ne net.Error
				found = errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errUnframable) || errors.Is(err, errTLSHandshake)
			}
			return false
		}
		return true
	})
	return found
}

// udpReadFilter drops datagrams that cannot be SIP before anything parses
// them or remembers their sender (udp.go): CRLF keepalives, STUN, binary
// noise: anything whose first character is not a token character (a
// method, possibly unknown or lower-case, or "SIP/2.0"). It has sipgo's
// read-filter signature and never returns an error (that would stop a
// sipgo listener).
func udpReadFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	if props.Transport != "UDP" {
		return data, nil // stream chunks are not messages
	}
	for _, c := range data {
		switch {
		case c == '\r' || c == '\n' || c == ' ' || c == '\t':
			continue
		case tokenChar(c):
			return data, nil
		}
		return nil, nil
	}
	return nil, nil
}
