package guard

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var (
	scanner = netip.MustParseAddr("198.51.100.9")
	office  = netip.MustParseAddr("192.0.2.1")
	other   = netip.MustParseAddr("203.0.113.5")
)

func TestBlocksAfterThreshold(t *testing.T) {
	c := newClock()
	var blocks []Block
	g := New(Config{MaxFailures: 3, Window: time.Minute, BlockFor: 10 * time.Minute, Now: c.now, OnBlock: func(b Block) { blocks = append(blocks, b) }})
	for i := 0; i < 2; i++ {
		if g.Fail(scanner, fmt.Sprint("10", i), "bad_password") {
			t.Fatalf("blocked after %d failures, want 3", i+1)
		}
	}
	if g.Blocked(scanner, "") {
		t.Fatal("blocked before the threshold")
	}
	if !g.Fail(scanner, "102", "bad_password") {
		t.Fatal("third failure did not block")
	}
	if !g.Blocked(scanner, "") || !g.Blocked(scanner, "1002") {
		t.Fatal("source not blocked for every user")
	}
	if until, ok := g.BlockedUntil(scanner, ""); !ok || !until.Equal(c.now().Add(10*time.Minute)) {
		t.Fatalf("BlockedUntil = %v %v", until, ok)
	}
	if _, ok := g.UserBlockedUntil(scanner, "1002"); ok {
		t.Fatal("a user who never failed is blocked as a pair")
	}
	if g.Blocked(other, "1002") {
		t.Fatal("another source is blocked too")
	}
	if len(blocks) != 1 || blocks[0].Source != "198.51.100.9" || blocks[0].User != "" || blocks[0].Protocol != "sip" {
		t.Fatalf("OnBlock calls = %+v, want one sip source block", blocks)
	}
	c.advance(10*time.Minute + time.Second)
	if g.Blocked(scanner, "") {
		t.Fatal("still blocked after BlockFor")
	}
	if g.Blocked(netip.Addr{}, "") || g.Fail(netip.Addr{}, "x", "r") {
		t.Fatal("the zero address is tracked")
	}
}

func TestWindowForgetsOldFailures(t *testing.T) {
	c := newClock()
	g := New(Config{MaxFailures: 3, Window: time.Minute, Now: c.now})
	for i := 0; i < 20; i++ {
		if g.Fail(scanner, "1002", "bad_password") {
			t.Fatalf("blocked at failure %d although never 3 fell within a minute", i+1)
		}
		c.advance(31 * time.Second)
	}
	if g.Blocked(scanner, "1002") || len(g.Blocks()) != 0 {
		t.Fatal("blocked by failures spread over time")
	}
	for i := 0; i < 3; i++ {
		g.Fail(scanner, "1002", "bad_password")
	}
	if !g.Blocked(scanner, "") {
		t.Fatal("three failures within the window did not block")
	}
}

// An office NAT with registered phones keeps working while one user's
// password is being guessed from it.
func TestTrustedSourceBlocksOnlyTheUser(t *testing.T) {
	c := newClock()
	g := New(Config{MaxFailures: 3, Now: c.now})
	g.Succeed(office, "1001")
	for i := 0; i < 50; i++ {
		g.Fail(office, "1009", "bad_password")
	}
	if g.Blocked(office, "1001") {
		t.Fatal("the office's registered user is blocked by another user's failures")
	}
	if !g.Blocked(office, "1009") {
		t.Fatal("the guessed user is not blocked from the source")
	}
	if _, ok := g.UserBlockedUntil(office, "1009"); !ok {
		t.Fatal("UserBlockedUntil does not see the pair")
	}
	bs := g.Blocks()
	if len(bs) != 1 || bs[0].User != "1009" {
		t.Fatalf("Blocks() = %+v, want the one pair", bs)
	}
	if !g.Lift(office) || g.Blocked(office, "1009") {
		t.Fatal("Lift did not remove the pair block")
	}
	if g.Lift(office) {
		t.Fatal("a second Lift found a block")
	}
	// Trust ends TrustFor after the last success.
	c.advance(time.Hour + time.Second)
	if g.Trusted(office) {
		t.Fatal("still trusted after TrustFor")
	}
}

// One table for two protocols: blocks are per protocol, listing and lifting
// cover both, trust is shared.
func TestProtocolsShareOneTable(t *testing.T) {
	c := newClock()
	var sipBlocks, provBlocks int
	sip := New(Config{MaxFailures: 3, Now: c.now, OnBlock: func(Block) { sipBlocks++ }})
	prov := sip.For("provisioning", Policy{MaxFailures: 2, BlockFor: time.Minute, OnBlock: func(Block) { provBlocks++ }})
	if prov.Protocol() != "provisioning" || prov.BlockFor() != time.Minute || sip.BlockFor() != 15*time.Minute {
		t.Fatalf("For: protocol %q, block %v / %v", prov.Protocol(), prov.BlockFor(), sip.BlockFor())
	}
	prov.Fail(scanner, "", "unknown_key")
	prov.Fail(scanner, "", "unknown_key")
	if !prov.Blocked(scanner, "") || sip.Blocked(scanner, "") {
		t.Fatal("a provisioning block must not block SIP")
	}
	for range 3 {
		sip.Fail(scanner, "1001@example.test", "bad_password")
	}
	if sipBlocks != 1 || provBlocks != 1 {
		t.Fatalf("OnBlock calls: sip %d, provisioning %d; want 1 and 1", sipBlocks, provBlocks)
	}
	bs := prov.Blocks()
	if len(bs) != 3 || bs[0].Protocol != "provisioning" || bs[1].Protocol != "sip" || bs[2].User != "1001@example.test" {
		t.Fatalf("Blocks() = %+v, want the provisioning block then the two sip ones", bs)
	}
	if !sip.Lift(scanner) || len(sip.Blocks()) != 0 || prov.Blocked(scanner, "") {
		t.Fatal("Lift must remove the blocks of every protocol")
	}
	prov.Succeed(office, "prov-1")
	if !sip.Trusted(office) {
		t.Fatal("trust is not shared between protocols")
	}
}

func TestIPv6CountsAsItsSlash64(t *testing.T) {
	c := newClock()
	g := New(Config{MaxFailures: 3, Now: c.now})
	for i := 1; i <= 3; i++ {
		g.Fail(netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i)), "", "scan")
	}
	if !g.Blocked(netip.MustParseAddr("2001:db8::ffff:1"), "") {
		t.Fatal("three addresses of one /64 did not block it")
	}
	if g.Blocked(netip.MustParseAddr("2001:db8:0:1::1"), "") {
		t.Fatal("another /64 is blocked")
	}
	if bs := g.Blocks(); len(bs) != 1 || bs[0].Source != "2001:db8::/64" {
		t.Fatalf("Blocks() = %+v", bs)
	}
	if !g.Lift(netip.MustParseAddr("2001:db8::7")) {
		t.Fatal("Lift by an address of the /64 found nothing")
	}
}

func TestIP(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1:5060": "192.0.2.1", "[::ffff:192.0.2.1]:5060": "192.0.2.1",
		"[2001:db8::1]:5061": "2001:db8::1", "2001:db8::1": "2001:db8::1", "fe80::1%eth0": "fe80::1", "junk": "invalid IP", "": "invalid IP"} {
		if got := IP(in).String(); got != want {
			t.Errorf("IP(%q) = %q, want %q", in, got, want)
		}
	}
}

// The counter table at its cap: it never holds more, and a flood of new
// sources (each one failure) does not wash out the blocks in force.
func TestCountersAtTheirCap(t *testing.T) {
	const capacity = 64
	c := newClock()
	g := New(Config{MaxFailures: 3, MaxEntries: capacity, Now: c.now})
	var blocked []netip.Addr
	for i := range 8 {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		for range 3 {
			g.Fail(a, "", "scan")
		}
		blocked = append(blocked, a)
	}
	reached := false
	for i := range 20_000 {
		g.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "u", "bad_password")
		n, _ := g.sizes()
		if n > capacity {
			t.Fatalf("%d counters after %d sources, cap %d", n, i+1, capacity)
		}
		reached = reached || n == capacity
	}
	if !reached {
		t.Fatal("the table never reached its cap")
	}
	for _, a := range blocked {
		if !g.Blocked(a, "") {
			t.Fatalf("the block on %v was evicted by a flood of one-failure sources", a)
		}
	}
	// Past the blocks, the table still works: a fresh source blocks.
	for range 3 {
		g.Fail(other, "", "scan")
	}
	if !g.Blocked(other, "") {
		t.Fatal("a full table no longer blocks")
	}
	// Lifted entries are reused before anything is evicted.
	g.Lift(blocked[0])
	before, _ := g.sizes()
	g.Fail(netip.MustParseAddr("192.0.2.200"), "", "scan")
	if after, _ := g.sizes(); after != before+1 || !g.Blocked(blocked[1], "") {
		t.Fatalf("after a lift: %d → %d counters", before, after)
	}
}

// The trusted table at its cap.
func TestTrustedAtTheirCap(t *testing.T) {
	const capacity = 16
	c := newClock()
	g := New(Config{MaxTrusted: capacity, Now: c.now})
	for i := range 1000 {
		g.Succeed(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "u")
		if _, n := g.sizes(); n > capacity {
			t.Fatalf("%d trusted after %d sources, cap %d", n, i+1, capacity)
		}
	}
	if _, n := g.sizes(); n != capacity {
		t.Fatalf("%d trusted, want the cap %d", n, capacity)
	}
	// The most recent ones are there.
	if !g.Trusted(netip.AddrFrom4([4]byte{10, 0, 999 >> 8, 999 & 255})) {
		t.Fatal("the last trusted source was evicted")
	}
}

// memStore is a TrustStore in memory, counting writes.
type memStore struct {
	mu     sync.Mutex
	m      map[netip.Addr]time.Time
	writes int
}

func (s *memStore) TrustedSources() (map[netip.Addr]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]time.Time{}
	for a, u := range s.m {
		out[a] = u
	}
	return out, nil
}

func (s *memStore) SaveTrustedSources(m map[netip.Addr]time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m, s.writes = m, s.writes+1
	return nil
}

// Trust is written at most every TrustSaveEvery while phones keep
// authenticating, and at Close.
func TestTrustWritesAreRateLimited(t *testing.T) {
	c := newClock()
	st := &memStore{}
	g := New(Config{Now: c.now, TrustSaveEvery: time.Minute})
	if err := g.Persist(st); err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		g.Succeed(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), "u")
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	writes, n := st.writes, len(st.m)
	st.mu.Unlock()
	if writes > 1 || n != 1000 {
		t.Fatalf("%d writes holding %d sources, want 1 write (at Close) with 1000", writes, n)
	}
	// A refresh soon after changes nothing worth a write.
	c.advance(time.Second)
	g.Succeed(netip.AddrFrom4([4]byte{10, 0, 0, 1}), "u")
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if st.writes != 1 {
		t.Fatalf("%d writes after an insignificant refresh, want 1", st.writes)
	}
	// A minute later a new source is written without waiting for Close.
	c.advance(time.Minute)
	g.Succeed(netip.MustParseAddr("192.0.2.99"), "u")
	g.t.mu.Lock()
	for g.t.saving {
		g.t.saved.Wait()
	}
	g.t.mu.Unlock()
	st.mu.Lock()
	_, ok := st.m[netip.MustParseAddr("192.0.2.99")]
	st.mu.Unlock()
	if !ok {
		t.Fatal("a new trusted source was not written after TrustSaveEvery")
	}
}

// BenchmarkFailAtCap: a failure from a new source into a full table costs
// the same as into an empty one (eviction is O(1), no sweep).
func BenchmarkFailAtCap(b *testing.B) {
	c := newClock()
	g := New(Config{MaxEntries: 10_000, Now: c.now})
	for i := range 20_000 {
		g.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "u", "bad_password")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		g.Fail(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), "u", "bad_password")
	}
}
