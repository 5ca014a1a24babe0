package sip

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/emiago/sipgo/sip"
)

// UDP: sipgo's read loop remembers every source address it reads from, in
// its connection pool and in a map of its own, for as long as the loop runs
// (sipgo v1.7.2 transport_udp.go). Sources are spoofable, so that is memory
// without bound. We bound it with one table of our own:
//
//   - sipgo reads through a udpFeed (a net.PacketConn over the real socket)
//     whose ReadFrom runs the front door first: keepalives, noise, blocked
//     sources and messages the front door answers or drops never reach
//     sipgo, so they are never remembered;
//   - REGISTER and OPTIONS on the fast path (fastpath.go) are answered
//     from here too, without reaching sipgo, so their sources are never
//     remembered either;
//   - every source that does reach sipgo enters the table, which has two
//     halves of Config.UDPSources/2 addresses each. When the current half is
//     full, the older half is forgotten (also in sipgo's pool), the current
//     one becomes the older one, and sipgo's read loop is ended and started
//     again on a fresh feed over the same socket: that is the only way to
//     empty the loop's private map. Pool entries of the remembered sources
//     point at a connection object of ours over the same socket (udpServer.
//     conn), so that the restart does not drop them and requests already
//     read are still answered from the listening port.
//
// Nothing relies on a source being remembered for long: responses to a
// request are sent over the connection sipgo finds when its transaction
// starts, just after the source was entered, and requests to phones leave
// from the listening socket even without an entry (setFlow in outbound.go).
// A source is forgotten only after half a table of newer sources arrived,
// so a request can only lose its entry before its transaction starts under
// a flood of more than UDPSources/2 new addresses in that time (then its
// answer leaves from another port, as sipgo falls back to a new socket).
type udpServer struct {
	s      *Server
	sock   net.PacketConn
	laddr  string
	conn   *sip.UDPConnection // our pool entry: writes to sock
	pool   *sip.ConnectionPool
	buf    []byte
	half   int
	err    error // the socket's read error, once it failed
	parked *parkedDatagram

	mu        sync.Mutex
	cur, prev map[string]struct{}
}

type parkedDatagram struct {
	data []byte
	addr net.Addr
}

// udpReadSize is the largest datagram read (larger ones cannot exist on
// IPv4). sipgo reads into a buffer of sip.TransportBufferReadSize (32 KiB,
// left as it is: sipgo allocates it per TCP connection too); a datagram
// that does not fit there is answered 513 (RFC 3261 §18.1.1 sends such
// messages over TCP).
const udpReadSize = 65535

func (s *Server) newUDPServer(sock net.PacketConn) *udpServer {
	laddr := sock.LocalAddr().String()
	u := &udpServer{s: s, sock: sock, laddr: laddr,
		conn: &sip.UDPConnection{PacketConn: sock, PacketAddr: laddr, Listener: true},
		pool: s.ua.TransportLayer().Pool("udp"), buf: make([]byte, udpReadSize+1),
		half: max(1, s.cfg.UDPSources/2), cur: map[string]struct{}{}, prev: map[string]struct{}{}}
	s.udpMu.Lock()
	s.udp = append(s.udp, u)
	s.udpMu.Unlock()
	return u
}

func (s *Server) dropUDPServer(u *udpServer) {
	s.udpMu.Lock()
	defer s.udpMu.Unlock()
	for i, x := range s.udp {
		if x == u {
			s.udp = append(s.udp[:i], s.udp[i+1:]...)
			break
		}
	}
	u.mu.Lock()
	n := len(u.cur) + len(u.prev)
	u.cur, u.prev = map[string]struct{}{}, map[string]struct{}{}
	u.mu.Unlock()
	s.tm.udpSources.Sub(float64(n))
}

// serve runs sipgo's UDP read loop on fresh feeds until the socket fails or
// is closed.
func (u *udpServer) serve() error {
	for {
		f := &udpFeed{u: u}
		err := u.s.srv.ServeUDP(f)
		if !f.retired {
			if u.err != nil {
				return u.err
			}
			return err
		}
		// sipgo removed the listening socket's own entry on the way out;
		// ours stands in until the next loop adds its own.
		u.pool.Add(u.laddr, u.conn)
		u.s.tm.udpRotations.Inc()
	}
}

// remember enters addr in the current half; false when it is full.
func (u *udpServer) remember(addr string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.cur[addr]; ok {
		return true
	}
	if len(u.cur) >= u.half {
		return false
	}
	u.cur[addr] = struct{}{}
	if _, ok := u.prev[addr]; !ok {
		u.s.tm.udpSources.Inc()
	}
	return true
}

// rotate forgets the older half and makes the current half the older one.
// It runs on sipgo's read goroutine, just before that loop is ended.
func (u *udpServer) rotate() {
	u.mu.Lock()
	defer u.mu.Unlock()
	forgotten := 0
	for a := range u.prev {
		if _, ok := u.cur[a]; ok {
			continue
		}
		forgotten++
		if c := u.pool.Get(a); c != nil {
			_, _ = c.TryClose() // Get took a reference
			if c == sip.Connection(u.conn) {
				u.pool.Delete(a)
			}
		}
	}
	for a := range u.cur {
		u.pool.Add(a, u.conn)
	}
	u.prev, u.cur = u.cur, make(map[string]struct{}, len(u.cur))
	u.s.tm.udpSources.Sub(float64(forgotten))
}

// size is the number of sources remembered.
func (u *udpServer) size() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := len(u.prev)
	for a := range u.cur {
		if _, ok := u.prev[a]; !ok {
			n++
		}
	}
	return n
}

// udpSources is the number of UDP sources remembered over all sockets.
func (s *Server) udpSources() int {
	s.udpMu.Lock()
	defer s.udpMu.Unlock()
	n := 0
	for _, u := range s.udp {
		n += u.size()
	}
	return n
}

// udpFeed is the socket as one run of sipgo's read loop sees it.
type udpFeed struct {
	u       *udpServer
	retired bool // the loop must end: ReadFrom returns net.ErrClosed
}

func (f *udpFeed) ReadFrom(p []byte) (int, net.Addr, error) {
	u := f.u
	for {
		if f.retired {
			return 0, nil, net.ErrClosed
		}
		var data []byte
		var addr net.Addr
		if u.parked != nil {
			data, addr = u.parked.data, u.parked.addr
			u.parked = nil
			u.remember(addr.String())
		} else {
			n, a, err := u.sock.ReadFrom(u.buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					u.err = err
				}
				return 0, nil, err
			}
			if data = u.admit(u.buf[:n], a, len(p)); data == nil {
				continue
			}
			addr = a
			if !u.remember(addr.String()) {
				u.rotate()
				u.parked = &parkedDatagram{data: bytes.Clone(data), addr: addr} // data may alias u.buf
				f.retired = true
				return 0, nil, net.ErrClosed
			}
		}
		return copy(p, data), addr, nil
	}
}

// admit runs one datagram through the filters and the front door; it
// returns the bytes to hand to sipgo, or nil.
func (u *udpServer) admit(raw []byte, a net.Addr, room int) []byte {
	if ok, _ := udpReadFilter(sip.TransportReadProps{Transport: "UDP"}, raw); ok == nil {
		return nil
	}
	if u.s.guard.Blocked(guard.IP(a.String()), "") {
		u.s.metrics.blockedDrops.Inc()
		return nil
	}
	src, _ := netip.ParseAddrPort(a.String())
	if len(raw) > udpReadSize || len(raw) > room {
		v, ok := splitMessage(raw)
		if env, addressable := readEnvelope(&v); ok && addressable && !v.isResponse() && env.startMethod != "ACK" {
			u.s.tm.frontDoor.WithLabelValues("513").Inc()
			u.write(u.s.frontDoorResponse(env, 513, "Message Too Large", src), a)
		}
		return nil
	}
	v := u.s.frontDoor(raw, true, src)
	if v.reply != nil {
		u.write(v.reply, a)
	}
	if v.req != nil && u.s.fastPath(v.req, "UDP", a, udpReply{sock: u.sock, to: a}) {
		return nil
	}
	if len(v.pass) > room {
		return nil // only a datagram at the size limit grows this much by normalizing
	}
	return v.pass
}

func (u *udpServer) write(b []byte, a net.Addr) {
	if _, err := u.sock.WriteTo(b, a); err != nil {
		u.s.log.Debug("sip front door write failed", "to", a.String(), "err", err)
	}
}

func (f *udpFeed) WriteTo(p []byte, a net.Addr) (int, error) { return f.u.sock.WriteTo(p, a) }

// Close does nothing: the socket belongs to ServeUDP's caller, and sipgo
// never closes a listening socket itself.
func (f *udpFeed) Close() error                       { return nil }
func (f *udpFeed) LocalAddr() net.Addr                { return f.u.sock.LocalAddr() }
func (f *udpFeed) SetDeadline(t time.Time) error      { return f.u.sock.SetDeadline(t) }
func (f *udpFeed) SetReadDeadline(t time.Time) error  { return f.u.sock.SetReadDeadline(t) }
func (f *udpFeed) SetWriteDeadline(t time.Time) error { return f.u.sock.SetWriteDeadline(t) }
