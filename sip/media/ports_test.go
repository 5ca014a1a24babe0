package media

import (
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
)

var loopback = net.IPv4(127, 0, 0, 1)

// freeRange returns a PortRange of n even ports below the Linux ephemeral range whose ports are
// all free right now (it allocates and releases them once to make sure), trying random bases.
func freeRange(t *testing.T, n int) *PortRange {
	t.Helper()
	for range 50 {
		base := 20000 + 2*rand.IntN(5000)
		p, err := NewPorts(base, base+2*n-1)
		if err != nil {
			t.Fatal(err)
		}
		conns, err := allocateAll(p)
		closeAll(conns)
		if err == nil {
			return p
		}
	}
	t.Fatalf("no free range of %d ports found", n)
	return nil
}

func allocateAll(p *PortRange) ([]*Port, error) {
	var conns []*Port
	for range p.Size() {
		c, err := p.Allocate(loopback)
		if err != nil {
			closeAll(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

func closeAll(conns []*Port) {
	for _, c := range conns {
		c.Close()
	}
}

func port(c interface{ LocalAddr() net.Addr }) int { return c.LocalAddr().(*net.UDPAddr).Port }

func TestNewPortsValidation(t *testing.T) {
	for _, r := range [][2]int{{0, 100}, {100, 99}, {60000, 70000}, {-2, 10}, {11, 11}} {
		if _, err := NewPorts(r[0], r[1]); err == nil {
			t.Errorf("NewPorts(%d, %d) accepted", r[0], r[1])
		}
	}
	for _, tc := range []struct{ min, max, size int }{{10000, 10001, 1}, {10001, 10004, 2}, {10000, 10000, 1}, {10000, 10999, 500}} {
		p, err := NewPorts(tc.min, tc.max)
		if err != nil || p.Size() != tc.size {
			t.Errorf("NewPorts(%d, %d): size %v, err %v; want %d", tc.min, tc.max, p, err, tc.size)
		}
	}
}

func TestPortsAllocateExhaustRelease(t *testing.T) {
	const n = 6
	p := freeRange(t, n)
	conns, err := allocateAll(p)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { closeAll(conns) }()
	seen := map[int]bool{}
	for _, c := range conns {
		pt := port(c)
		if pt%2 != 0 || pt < p.first || pt > p.first+2*(n-1) || seen[pt] {
			t.Errorf("port %d: odd, outside %d..%d or duplicate", pt, p.first, p.first+2*(n-1))
		}
		seen[pt] = true
		if ip := c.LocalAddr().(*net.UDPAddr).IP; !ip.Equal(loopback) {
			t.Errorf("bound to %v, want 127.0.0.1", ip)
		}
	}
	if c, err := p.Allocate(loopback); !errors.Is(err, ErrNoPorts) {
		t.Fatalf("Allocate on a full range = %v, %v; want ErrNoPorts", c, err)
	}
	// Closing a conn releases its port.
	freed := port(conns[2])
	conns[2].Close()
	c, err := p.Allocate(loopback)
	if err != nil || port(c) != freed {
		t.Fatalf("after release: %v, %v; want port %d", c, err, freed)
	}
	conns[2] = c
	if got := p.InUse(); got != n {
		t.Errorf("InUse = %d with the whole range allocated, want %d", got, n)
	}
	c.Close()
	c.Close() // a second Close does not count twice
	if got := p.InUse(); got != n-1 {
		t.Errorf("InUse = %d after closing one Port twice, want %d", got, n-1)
	}
}

func TestPortsRoundRobinAndSkipsForeign(t *testing.T) {
	p := freeRange(t, 4)
	// Released ports are not handed out again at once: round-robin over the range.
	var got []int
	for range 4 {
		c, err := p.Allocate(loopback)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, port(c))
		c.Close()
	}
	seen := map[int]bool{}
	for _, pt := range got {
		seen[pt] = true
	}
	if len(seen) != 4 {
		t.Errorf("allocate+close 4 times gave ports %v, want 4 different", got)
	}
	// A port held by someone else is skipped.
	next := p.first + 2*int(p.next.Load()%uint64(p.n))
	foreign, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback, Port: next})
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	c, err := p.Allocate(loopback)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if port(c) == next {
		t.Errorf("got the foreign socket's port %d", next)
	}
}

func TestPortsOtherBindErrors(t *testing.T) {
	p := freeRange(t, 2)
	// 192.0.2.1 (TEST-NET-1) is not a local address: a bind error, not ErrNoPorts.
	c, err := p.Allocate(net.IPv4(192, 0, 2, 1))
	if err == nil {
		c.Close()
		t.Fatal("bound to a non-local address")
	}
	if errors.Is(err, ErrNoPorts) || !strings.Contains(err.Error(), "RTP socket") {
		t.Errorf("error %v", err)
	}
}
