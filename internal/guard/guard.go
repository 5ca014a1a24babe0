// Package guard counts authentication failures per source address and per
// user, and blocks a source (or one user from that source) for a while once
// the failures pass a threshold — the brute-force and toll-fraud defence of
// the SIP registrar and the provisioning server.
//
// A source that has recently authenticated successfully (an office NAT with
// registered phones) is "trusted": another user's failures from it block only
// that user from that source, never the whole address, so the office keeps
// working while the guessing stops.
package guard

import (
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Config: zero values mean the defaults in brackets.
type Config struct {
	MaxFailures int           // failures within Window that block [10]
	Window      time.Duration // [1 min]
	BlockFor    time.Duration // [15 min]
	TrustFor    time.Duration // how long a successful authentication trusts its source [1 h]
	MaxEntries  int           // bound on tracked sources and pairs; oldest dropped first [100,000]
	Now         func() time.Time
	// OnBlock is called (outside the lock) once per new block, for a log line.
	OnBlock func(Block)
}

// Block is one blocked source, or one user blocked from one source.
type Block struct {
	Source   string    `json:"source"`
	User     string    `json:"user,omitempty"` // "" when the whole source is blocked
	Until    time.Time `json:"until"`
	Failures int       `json:"failures"`
	Reason   string    `json:"reason"`
}

type counter struct {
	start    time.Time // window start
	failures int
	until    time.Time // blocked until
	reason   string
	touched  time.Time
}

// Guard is safe for concurrent use.
type Guard struct {
	cfg     Config
	mu      sync.Mutex
	sources map[string]*counter // ip
	pairs   map[string]*counter // ip + "\x00" + user
	trusted map[string]time.Time
}

// New returns a Guard with cfg's defaults filled in.
func New(cfg Config) *Guard {
	if cfg.MaxFailures <= 0 {
		cfg.MaxFailures = 10
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.BlockFor <= 0 {
		cfg.BlockFor = 15 * time.Minute
	}
	if cfg.TrustFor <= 0 {
		cfg.TrustFor = time.Hour
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Guard{cfg: cfg, sources: map[string]*counter{}, pairs: map[string]*counter{}, trusted: map[string]time.Time{}}
}

// IP returns the address part of "ip:port" (or the input if it has no port),
// so every port of one host counts as one source.
func IP(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().String()
	}
	if a, err := netip.ParseAddr(addr); err == nil {
		return a.Unmap().String()
	}
	return addr
}

// Blocked reports whether requests from ip (for user, if not "") must be refused now.
func (g *Guard) Blocked(ip, user string) bool {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.sources[ip]; c != nil && now.Before(c.until) {
		return true
	}
	if user != "" {
		if c := g.pairs[ip+"\x00"+user]; c != nil && now.Before(c.until) {
			return true
		}
	}
	return false
}

// Succeed records a successful authentication: the source becomes trusted and
// the user's failure count from it is forgotten.
func (g *Guard) Succeed(ip, user string) {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.trusted[ip] = now.Add(g.cfg.TrustFor)
	if c := g.pairs[ip+"\x00"+user]; c != nil && !now.Before(c.until) {
		delete(g.pairs, ip+"\x00"+user)
	}
	g.prune(now)
}

// Fail records a failed authentication of user from ip and reports whether it
// caused a new block.
func (g *Guard) Fail(ip, user, reason string) bool {
	now := g.cfg.Now()
	var blocked *Block
	g.mu.Lock()
	trusted := now.Before(g.trusted[ip])
	// The pair always counts; the whole source only when it is not trusted.
	if b := g.count(g.pairs, ip+"\x00"+user, now, reason); b != nil {
		b.Source, b.User = ip, user
		blocked = b
	}
	if !trusted {
		if b := g.count(g.sources, ip, now, reason); b != nil {
			b.Source = ip
			blocked = b
		}
	}
	g.prune(now)
	g.mu.Unlock()
	if blocked != nil && g.cfg.OnBlock != nil {
		g.cfg.OnBlock(*blocked)
	}
	return blocked != nil
}

func (g *Guard) count(m map[string]*counter, key string, now time.Time, reason string) *Block {
	c := m[key]
	if c == nil {
		c = &counter{start: now}
		m[key] = c
	}
	c.touched = now
	if now.Before(c.until) {
		return nil // already blocked
	}
	if now.Sub(c.start) > g.cfg.Window {
		c.start, c.failures = now, 0
	}
	c.failures++
	if c.failures < g.cfg.MaxFailures {
		return nil
	}
	c.until, c.reason = now.Add(g.cfg.BlockFor), reason
	return &Block{Until: c.until, Failures: c.failures, Reason: reason}
}

// prune bounds memory: expired entries go first; past MaxEntries the least
// recently touched go too (blocked ones last).
func (g *Guard) prune(now time.Time) {
	if len(g.sources)+len(g.pairs)+len(g.trusted) <= g.cfg.MaxEntries {
		return
	}
	for _, m := range []map[string]*counter{g.sources, g.pairs} {
		for k, c := range m {
			if !now.Before(c.until) && now.Sub(c.touched) > g.cfg.Window {
				delete(m, k)
			}
		}
	}
	for k, until := range g.trusted {
		if !now.Before(until) {
			delete(g.trusted, k)
		}
	}
	for _, m := range []map[string]*counter{g.sources, g.pairs} {
		for k, c := range m {
			if len(g.sources)+len(g.pairs)+len(g.trusted) <= g.cfg.MaxEntries {
				return
			}
			if !now.Before(c.until) {
				delete(m, k)
			}
		}
	}
}

// Blocks lists the blocks in force, soonest-ending first.
func (g *Guard) Blocks() []Block {
	now := g.cfg.Now()
	g.mu.Lock()
	var out []Block
	for ip, c := range g.sources {
		if now.Before(c.until) {
			out = append(out, Block{Source: ip, Until: c.until, Failures: c.failures, Reason: c.reason})
		}
	}
	for key, c := range g.pairs {
		if now.Before(c.until) {
			ip, user := splitPair(key)
			out = append(out, Block{Source: ip, User: user, Until: c.until, Failures: c.failures, Reason: c.reason})
		}
	}
	g.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Until.Equal(out[j].Until) {
			return out[i].Until.Before(out[j].Until)
		}
		return out[i].Source+out[i].User < out[j].Source+out[j].User
	})
	return out
}

// Lift removes every block on ip (the source's and its pairs') and reports
// whether there was one.
func (g *Guard) Lift(ip string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, found := g.sources[ip]
	delete(g.sources, ip)
	for key := range g.pairs {
		if s, _ := splitPair(key); s == ip {
			delete(g.pairs, key)
			found = true
		}
	}
	return found
}

func splitPair(key string) (string, string) {
	for i := 0; i < len(key); i++ {
		if key[i] == 0 {
			return key[:i], key[i+1:]
		}
	}
	return key, ""
}
