// Package guard is the brute-force defence of the SIP registrar and the
// provisioning server: one bounded table that counts authentication failures
// per protocol, source address and user, blocks past a threshold, and
// remembers which addresses recently authenticated ("trusted").
//
// # What counts
//
// The callers decide what a failure is; the rule they follow is that a
// digest failure counts only once its nonce verifies (a nonce we issued, to
// this source address, not expired: internal/digest). An Authorization made
// up by someone who never received a challenge at that address — over UDP,
// anyone can put any source address on a datagram — counts nothing, so
// spoofed packets cannot block an office.
//
// # Sources, users and trust
//
// Sources are IP addresses without the port; an IPv6 address counts as its
// /64 (a host usually owns a whole /64, so single addresses would be useless
// to block). A failure counts for the pair (source, user) and, unless the
// source is trusted, for the whole source. A source is trusted for TrustFor
// after any successful authentication from it (of any protocol): an office
// NAT with registered phones keeps working while one user's password is
// guessed from it, and only that user is blocked from that address. Trust
// is kept across restarts when the guard is given a [TrustStore]
// ([Guard.Persist]); it is written at most every TrustSaveEvery, and at
// [Guard.Close].
//
// # Protocols
//
// [New] makes a table and the guard of one protocol on it; [Guard.For] gives
// another protocol's guard on the same table, with its own thresholds and
// OnBlock. Counters and blocks are per protocol (a SIP block never refuses
// provisioning, and the reverse); trust, the caps and the listing
// ([Guard.Blocks], [Guard.Lift]) are the table's.
//
// # Memory
//
// Every map is capped: at most MaxEntries counters and MaxTrusted trusted
// addresses, each in a fixed-capacity ring with O(1) eviction that drops
// expired entries first, counters in progress next, and blocks in force
// last. Nothing grows with the number of packets or addresses seen.
package guard

import (
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Config configures a table and the guard New returns. Zero values mean the
// defaults in brackets.
type Config struct {
	MaxFailures int           // failures within Window that block [10]
	Window      time.Duration // [1 min]
	BlockFor    time.Duration // [15 min]
	// TrustFor is how long a successful authentication trusts its source [1 h].
	TrustFor time.Duration
	// MaxEntries bounds the failure counters (sources and pairs) [100,000].
	MaxEntries int
	// MaxTrusted bounds the trusted addresses [10,000].
	MaxTrusted int
	// TrustSaveEvery is the least time between two writes of the trusted
	// addresses to the TrustStore [1 min].
	TrustSaveEvery time.Duration
	// Protocol names the guard New returns ["sip"].
	Protocol string
	Now      func() time.Time
	// OnBlock is called (outside the lock) once per new block of the guard
	// New returns, for a log line and a metric.
	OnBlock func(Block)
	// Log receives errors writing trust to the TrustStore [discard].
	Log *slog.Logger
}

// Policy is one protocol's thresholds; zero values mean the table's.
type Policy struct {
	MaxFailures int
	Window      time.Duration
	BlockFor    time.Duration
	OnBlock     func(Block)
}

// Block is one blocked source, or one user blocked from one source.
type Block struct {
	Protocol string
	Source   string     // the address, or the IPv6 /64 ("2001:db8::/64")
	Addr     netip.Addr // the source's key (an IPv6 address masked to its /64)
	User     string     // "" when the whole source is blocked
	Until    time.Time
	Failures int
	Reason   string
}

// TrustStore keeps the trusted addresses across restarts (*store.DB
// implements it).
type TrustStore interface {
	TrustedSources() (map[netip.Addr]time.Time, error)
	SaveTrustedSources(map[netip.Addr]time.Time) error
}

type key struct {
	proto string
	addr  netip.Addr
	user  string // "" for the whole source
}

type counter struct {
	start     time.Time // window start
	windowEnd time.Time
	failures  int
	until     time.Time // blocked until
	reason    string
}

type trust struct {
	until time.Time
	saved time.Time // until as last written to the store
}

type table struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	at       time.Time // now, for the rings' eviction priorities (under mu)
	counters *ring[key, counter]
	trusted  *ring[netip.Addr, trust]

	store    TrustStore
	dirty    bool
	saving   bool
	saved    *sync.Cond // signalled when a save ends
	lastSave time.Time
}

// Guard is one protocol's view of a table. It is safe for concurrent use.
type Guard struct {
	t     *table
	proto string
	pol   Policy
}

// New returns the guard of cfg.Protocol on a new table.
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
	if cfg.MaxTrusted <= 0 {
		cfg.MaxTrusted = 10_000
	}
	if cfg.TrustSaveEvery <= 0 {
		cfg.TrustSaveEvery = time.Minute
	}
	if cfg.Protocol == "" {
		cfg.Protocol = "sip"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &table{cfg: cfg, log: cfg.Log}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.saved = sync.NewCond(&t.mu)
	t.counters = newRing[key](cfg.MaxEntries, func(c *counter) int {
		switch {
		case t.at.Before(c.until):
			return 2
		case t.at.Before(c.windowEnd):
			return 1
		}
		return 0
	})
	t.trusted = newRing[netip.Addr](cfg.MaxTrusted, func(tr *trust) int {
		if t.at.Before(tr.until) {
			return 1
		}
		return 0
	})
	return &Guard{t: t, proto: cfg.Protocol, pol: Policy{MaxFailures: cfg.MaxFailures, Window: cfg.Window, BlockFor: cfg.BlockFor, OnBlock: cfg.OnBlock}}
}

// For returns the guard of another protocol on g's table; p's zero fields
// take the table's values (its OnBlock included).
func (g *Guard) For(protocol string, p Policy) *Guard {
	c := g.t.cfg
	if p.MaxFailures <= 0 {
		p.MaxFailures = c.MaxFailures
	}
	if p.Window <= 0 {
		p.Window = c.Window
	}
	if p.BlockFor <= 0 {
		p.BlockFor = c.BlockFor
	}
	if p.OnBlock == nil {
		p.OnBlock = c.OnBlock
	}
	return &Guard{t: g.t, proto: protocol, pol: p}
}

// Protocol is the protocol g counts for.
func (g *Guard) Protocol() string { return g.proto }

// BlockFor is how long g's blocks last.
func (g *Guard) BlockFor() time.Duration { return g.pol.BlockFor }

// IP returns the address of "ip:port", "[ip]:port" or "ip", with an
// IPv4-mapped IPv6 address unmapped; the zero Addr if s is none of these.
func IP(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}

// source is a's key: itself for IPv4, its /64 for IPv6.
func source(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func sourceString(a netip.Addr) string {
	if a.Is6() {
		return a.String() + "/64"
	}
	return a.String()
}

// Blocked reports whether requests from addr must be refused now: the whole
// source is blocked, or (user not "") that user is blocked from it.
func (g *Guard) Blocked(addr netip.Addr, user string) bool {
	_, b := g.BlockedUntil(addr, user)
	return b
}

// BlockedUntil is Blocked with the time the (later) block ends.
func (g *Guard) BlockedUntil(addr netip.Addr, user string) (time.Time, bool) {
	if !addr.IsValid() {
		return time.Time{}, false
	}
	a := source(addr)
	now := g.t.cfg.Now()
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	var until time.Time
	if c := g.t.counters.get(key{g.proto, a, ""}); c != nil && now.Before(c.until) {
		until = c.until
	}
	if user != "" {
		if c := g.t.counters.get(key{g.proto, a, user}); c != nil && now.Before(c.until) && c.until.After(until) {
			until = c.until
		}
	}
	return until, !until.IsZero()
}

// UserBlockedUntil reports whether user (not "") is blocked from addr, by
// the pair alone: a block of the whole source does not count.
func (g *Guard) UserBlockedUntil(addr netip.Addr, user string) (time.Time, bool) {
	if !addr.IsValid() || user == "" {
		return time.Time{}, false
	}
	now := g.t.cfg.Now()
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	if c := g.t.counters.get(key{g.proto, source(addr), user}); c != nil && now.Before(c.until) {
		return c.until, true
	}
	return time.Time{}, false
}

// Trusted reports whether addr's source authenticated successfully within
// TrustFor.
func (g *Guard) Trusted(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	now := g.t.cfg.Now()
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	tr := g.t.trusted.get(source(addr))
	return tr != nil && now.Before(tr.until)
}

// Succeed records a successful authentication of user from addr: the source
// becomes trusted and the user's failure count from it (if not a block in
// force) is forgotten.
func (g *Guard) Succeed(addr netip.Addr, user string) {
	if !addr.IsValid() {
		return
	}
	a := source(addr)
	t := g.t
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.at = now
	tr := t.trusted.put(a)
	if until := now.Add(t.cfg.TrustFor); until.After(tr.until) {
		tr.until = until
	}
	if tr.until.Sub(tr.saved) > t.cfg.TrustFor/10 {
		t.dirty = true
	}
	if c := t.counters.get(key{g.proto, a, user}); c != nil && user != "" && !now.Before(c.until) {
		t.counters.del(key{g.proto, a, user})
	}
	if t.store != nil && t.dirty && !t.saving && now.Sub(t.lastSave) >= t.cfg.TrustSaveEvery {
		snap := t.snapshotLocked(now)
		go func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.writeLocked(snap)
		}()
	}
}

// Fail records a failed authentication of user from addr (the caller has
// verified the nonce: see the package comment) and reports whether it
// caused a new block. user "" counts for the whole source only.
func (g *Guard) Fail(addr netip.Addr, user, reason string) bool {
	if !addr.IsValid() {
		return false
	}
	a := source(addr)
	now := g.t.cfg.Now()
	var blocked *Block
	g.t.mu.Lock()
	g.t.at = now
	tr := g.t.trusted.get(a)
	trusted := tr != nil && now.Before(tr.until)
	if user != "" {
		if b := g.count(key{g.proto, a, user}, now, reason); b != nil {
			blocked = b
		}
	}
	if user == "" || !trusted {
		if b := g.count(key{g.proto, a, ""}, now, reason); b != nil {
			blocked = b
		}
	}
	g.t.mu.Unlock()
	if blocked != nil && g.pol.OnBlock != nil {
		g.pol.OnBlock(*blocked)
	}
	return blocked != nil
}

func (g *Guard) count(k key, now time.Time, reason string) *Block {
	c := g.t.counters.put(k)
	if now.Before(c.until) {
		return nil // already blocked
	}
	if !now.Before(c.windowEnd) {
		c.start, c.windowEnd, c.failures = now, now.Add(g.pol.Window), 0
	}
	c.failures++
	if c.failures < g.pol.MaxFailures {
		return nil
	}
	c.until, c.reason = now.Add(g.pol.BlockFor), reason
	return &Block{Protocol: k.proto, Source: sourceString(k.addr), Addr: k.addr, User: k.user, Until: c.until, Failures: c.failures, Reason: reason}
}

// Blocks lists the blocks in force of every protocol, soonest-ending first.
func (g *Guard) Blocks() []Block {
	now := g.t.cfg.Now()
	var out []Block
	g.t.mu.Lock()
	g.t.counters.each(func(k key, c *counter) bool {
		if now.Before(c.until) {
			out = append(out, Block{Protocol: k.proto, Source: sourceString(k.addr), Addr: k.addr, User: k.user, Until: c.until, Failures: c.failures, Reason: c.reason})
		}
		return false
	})
	g.t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Until.Equal(b.Until) {
			return a.Until.Before(b.Until)
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		return a.User < b.User
	})
	return out
}

// Lift removes every block and counter on addr's source, of every protocol,
// and reports whether a block was in force.
func (g *Guard) Lift(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	a := source(addr)
	now := g.t.cfg.Now()
	found := false
	g.t.mu.Lock()
	g.t.counters.each(func(k key, c *counter) bool {
		if k.addr != a {
			return false
		}
		found = found || now.Before(c.until)
		return true
	})
	g.t.mu.Unlock()
	return found
}

// Persist loads the trusted addresses from ts (those not yet expired, as
// many as MaxTrusted holds) and writes them back there from now on.
func (g *Guard) Persist(ts TrustStore) error {
	m, err := ts.TrustedSources()
	if err != nil {
		return err
	}
	t := g.t
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.at = now
	for a, until := range m {
		if !a.IsValid() || !now.Before(until) {
			continue
		}
		if until.After(now.Add(t.cfg.TrustFor)) {
			until = now.Add(t.cfg.TrustFor)
		}
		tr := t.trusted.put(source(a))
		if until.After(tr.until) {
			tr.until, tr.saved = until, until
		}
	}
	t.store = ts
	t.lastSave = now
	return nil
}

// Close writes the trusted addresses to the TrustStore if they changed since
// the last write (waiting for one in progress). Without a TrustStore it does
// nothing. The guard stays usable.
func (g *Guard) Close() error {
	t := g.t
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for t.saving {
		t.saved.Wait()
	}
	if t.store == nil || !t.dirty {
		return nil
	}
	return t.writeLocked(t.snapshotLocked(now))
}

// snapshotLocked copies the trusted addresses for a write and marks a write
// in progress; writeLocked must follow.
func (t *table) snapshotLocked(now time.Time) map[netip.Addr]time.Time {
	m := make(map[netip.Addr]time.Time, t.trusted.len())
	t.trusted.each(func(a netip.Addr, tr *trust) bool {
		if !now.Before(tr.until) {
			return true // expired: drop it here too
		}
		m[a] = tr.until
		tr.saved = tr.until
		return false
	})
	t.dirty, t.saving, t.lastSave = false, true, now
	return m
}

// writeLocked writes snap with t.mu released, then ends the write.
func (t *table) writeLocked(snap map[netip.Addr]time.Time) error {
	st := t.store
	t.mu.Unlock()
	err := st.SaveTrustedSources(snap)
	t.mu.Lock()
	t.saving = false
	if err != nil {
		t.dirty = true
		t.log.Error("save trusted sources", "err", err)
	}
	t.saved.Broadcast()
	return err
}

// sizes reports how many counters and trusted addresses are held (for tests).
func (g *Guard) sizes() (counters, trusted int) {
	g.t.mu.Lock()
	defer g.t.mu.Unlock()
	return g.t.counters.len(), g.t.trusted.len()
}
