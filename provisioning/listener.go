package provisioning

import (
	"net"
	"sync"
	"time"
)

// Listener wraps the provisioning listener so that each answer leaves in
// one system call. net/http writes a response through a 4 KiB buffer, so a
// 10 KiB config goes out as two writes (two trips through the TCP stack,
// and with TLS two or more records written separately); a connection from
// Listener keeps what is written and sends it all when the server turns to
// the connection's next request (sets a read deadline), when it is closed,
// or when maxPending bytes are waiting; a Read flushes only what the peer
// waits for (a TLS handshake flight, a 1xx answer). nginx does the same with
// writev.
//
// Serve only HTTP/1.1 over it: HTTP/2 writes while a reader is blocked and
// would wait for the next frame (cmd/dialtone sets TLSNextProto to none).
func Listener(ln net.Listener) net.Listener { return coalescingListener{ln} }

type coalescingListener struct{ net.Listener }

func (l coalescingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &coalescingConn{Conn: c}, nil
}

// maxPending is the most a connection keeps before writing.
const maxPending = 64 << 10

var pendingPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

type coalescingConn struct {
	net.Conn
	mu      sync.Mutex
	pending *[]byte // nil when nothing waits
	err     error   // the first write error, returned by every later call
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.pending == nil {
		if len(p) >= maxPending {
			n, err := c.Conn.Write(p)
			c.err = err
			return n, err
		}
		c.pending = pendingPool.Get().(*[]byte)
	}
	*c.pending = append(*c.pending, p...)
	if len(*c.pending) >= maxPending {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flushLocked writes what waits. The caller holds c.mu.
func (c *coalescingConn) flushLocked() error {
	if c.pending == nil {
		return c.err
	}
	b := c.pending
	c.pending = nil
	if c.err == nil {
		_, c.err = c.Conn.Write(*b)
	}
	if cap(*b) <= maxPending*2 {
		*b = (*b)[:0]
		pendingPool.Put(b)
	}
	return c.err
}

func (c *coalescingConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

// Read flushes only what the peer must see before it can send more: a TLS
// handshake flight (record types change_cipher_spec, alert, handshake:
// RFC 8446 §5.1) or an interim 1xx answer (RFC 9110 §15.2). Anything else
// waiting is part of an answer still being written: net/http starts a
// background Read while the handler runs, and flushing there would send the
// answer in pieces. The rest of an answer leaves when net/http sets the
// read deadline for the next request, or on Close.
func (c *coalescingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	var err error
	if c.pending != nil && peerWaits(*c.pending) {
		err = c.flushLocked()
	}
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// peerWaits reports whether pending bytes start a message the peer waits for
// before it sends anything more.
func peerWaits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	switch b[0] {
	case 20, 21, 22: // TLS change_cipher_spec, alert, handshake
		return true
	}
	return len(b) >= 10 && string(b[:10]) == "HTTP/1.1 1"
}

func (c *coalescingConn) SetReadDeadline(t time.Time) error {
	_ = c.flush() // the answer is complete: the server waits for the next request
	return c.Conn.SetReadDeadline(t)
}

func (c *coalescingConn) SetDeadline(t time.Time) error {
	_ = c.flush()
	return c.Conn.SetDeadline(t)
}

func (c *coalescingConn) Close() error {
	_ = c.flush()
	return c.Conn.Close()
}

// CloseWrite half-closes the connection after what waits, as net/http does
// before closing a connection it answered with an error.
func (c *coalescingConn) CloseWrite() error {
	if err := c.flush(); err != nil {
		return err
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
