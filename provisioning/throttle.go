package provisioning

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// throttle counts failed requests per source and blocks a source that fails
// limit times within window, for block. Only failures count (bad path,
// unknown key, wrong credentials, User-Agent mismatch, unknown MAC), so a
// phone that fetches its files normally never accumulates anything, and other
// sources are never affected by one source's block.
type throttle struct {
	limit  int
	window time.Duration
	block  time.Duration
	now    func() time.Time

	mu  sync.Mutex
	src map[string]*srcState
}

type srcState struct {
	windowStart  time.Time
	failures     int
	blockedUntil time.Time
}

// maxTracked bounds memory under a spoofed-source flood: beyond it, stale
// entries are swept; if none are stale the oldest window is reused.
const maxTracked = 100_000

func newThrottle(limit int, window, block time.Duration, now func() time.Time) *throttle {
	return &throttle{limit: limit, window: window, block: block, now: now, src: map[string]*srcState{}}
}

// blocked reports whether src is blocked now, and for how much longer.
func (t *throttle) blocked(src string) (time.Duration, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.src[src]
	if s == nil || !s.blockedUntil.After(now) {
		return 0, false
	}
	return s.blockedUntil.Sub(now), true
}

// fail records one failure from src. started reports whether this failure
// started a block (so the caller logs exactly one line per block), failures
// how many were counted in the window.
func (t *throttle) fail(src string) (started bool, failures int) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.src[src]
	if s == nil {
		if len(t.src) >= maxTracked {
			t.sweep(now)
		}
		s = &srcState{windowStart: now}
		t.src[src] = s
	}
	if s.blockedUntil.After(now) {
		return false, s.failures
	}
	if now.Sub(s.windowStart) >= t.window {
		s.windowStart, s.failures = now, 0
	}
	s.failures++
	if s.failures >= t.limit {
		s.blockedUntil = now.Add(t.block)
		return true, s.failures
	}
	return false, s.failures
}

func (t *throttle) sweep(now time.Time) {
	for k, s := range t.src {
		if !s.blockedUntil.After(now) && now.Sub(s.windowStart) >= t.window {
			delete(t.src, k)
		}
	}
}

// sourceKey is the throttling identity of a remote address: the IP for IPv4,
// the /64 for IPv6 (one host usually owns a whole /64).
func sourceKey(remoteAddr string) string {
	host := sourceIP(remoteAddr)
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// sourceIP is the host part of r.RemoteAddr.
func sourceIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}
