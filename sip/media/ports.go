package media

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
)

// ErrNoPorts is returned by PortRange.Allocate when every port of the range is in use.
var ErrNoPorts = errors.New("media: no free RTP port in range")

// PortRange hands out UDP sockets for RTP on the even ports of a range, round-robin, skipping
// ports that are in use (by us or anyone else: the operating system decides which port is free,
// so closing the returned Port is all it takes to release it). It counts the Ports it handed out
// that are not closed yet (InUse). Safe for concurrent use.
type PortRange struct {
	first int // lowest even port
	n     int // number of even ports
	next  atomic.Uint64
	inUse atomic.Int64
}

// Port is an RTP socket handed out by PortRange.Allocate. Close closes the socket, which
// releases its port, and the first Close takes it off the range's InUse count.
type Port struct {
	*net.UDPConn
	r      *PortRange
	closed atomic.Bool
}

// Close closes the socket and releases the port.
func (p *Port) Close() error {
	err := p.UDPConn.Close()
	if p.closed.CompareAndSwap(false, true) {
		p.r.inUse.Add(-1)
	}
	return err
}

// InUse is the number of Ports this range handed out that are not closed yet.
func (p *PortRange) InUse() int { return int(p.inUse.Load()) }

// NewPorts returns the range of even ports from min to max inclusive (RTP uses even ports; the
// odd port above each is left for RTCP by convention). 1024 ≤ min ≤ max ≤ 65535 is typical;
// the range must hold at least one even port.
func NewPorts(min, max int) (*PortRange, error) {
	if min < 1 || max > 65535 || min > max {
		return nil, fmt.Errorf("media: bad RTP port range %d-%d", min, max)
	}
	first := min + min%2
	if first > max {
		return nil, fmt.Errorf("media: RTP port range %d-%d holds no even port", min, max)
	}
	return &PortRange{first: first, n: (max-first)/2 + 1}, nil
}

// Size is the number of ports (sockets) the range can hand out at once.
func (p *PortRange) Size() int { return p.n }

// Allocate binds a UDP socket on ip (nil or unspecified: all addresses) to the next free even
// port of the range. The caller must Close the Port, which releases it. It returns an error
// wrapping ErrNoPorts when every port is taken, or the bind error for any other failure (such as
// an ip that is not local).
func (p *PortRange) Allocate(ip net.IP) (*Port, error) {
	network := "udp"
	if ip4 := ip.To4(); ip4 != nil && !ip.IsUnspecified() {
		network, ip = "udp4", ip4
	} else if ip != nil && !ip.IsUnspecified() {
		network = "udp6"
	}
	start := p.next.Add(1) - 1
	for k := range uint64(p.n) {
		port := p.first + 2*int((start+k)%uint64(p.n))
		c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip, Port: port})
		if err == nil {
			p.next.Store(start + k + 1)
			p.inUse.Add(1)
			return &Port{UDPConn: c, r: p}, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("media: RTP socket: %w", err)
		}
	}
	return nil, fmt.Errorf("%w %d-%d (%d ports)", ErrNoPorts, p.first, p.first+2*(p.n-1), p.n)
}
