package guard

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestBlocksAfterThreshold(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	var blocks []Block
	g := New(Config{MaxFailures: 3, Window: time.Minute, BlockFor: 10 * time.Minute, Now: c.now, OnBlock: func(b Block) { blocks = append(blocks, b) }})
	for i := 0; i < 2; i++ {
		if g.Fail("198.51.100.9", fmt.Sprint("10", i), "bad_password") {
			t.Fatalf("blocked after %d failures, want 3", i+1)
		}
	}
	if g.Blocked("198.51.100.9", "") {
		t.Fatal("blocked before the threshold")
	}
	if !g.Fail("198.51.100.9", "102", "bad_password") {
		t.Fatal("third failure did not block")
	}
	if !g.Blocked("198.51.100.9", "") || !g.Blocked("198.51.100.9", "1002") {
		t.Fatal("source not blocked for every user")
	}
	if g.Blocked("203.0.113.5", "1002") {
		t.Fatal("another source is blocked too")
	}
	if len(blocks) != 1 || blocks[0].Source != "198.51.100.9" || blocks[0].User != "" {
		t.Fatalf("OnBlock calls = %+v, want one source block", blocks)
	}
	c.t = c.t.Add(10*time.Minute + time.Second)
	if g.Blocked("198.51.100.9", "") {
		t.Fatal("still blocked after BlockFor")
	}
}

func TestWindowForgetsOldFailures(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(Config{MaxFailures: 3, Window: time.Minute, Now: c.now})
	// Two failures a minute, forever: never three within one window.
	for i := 0; i < 20; i++ {
		if g.Fail("198.51.100.9", "1002", "bad_password") {
			t.Fatalf("blocked at failure %d although never 3 fell within a minute", i+1)
		}
		c.t = c.t.Add(31 * time.Second)
	}
	if g.Blocked("198.51.100.9", "1002") || len(g.Blocks()) != 0 {
		t.Fatal("blocked by failures spread over time")
	}
	// Three quickly do block.
	for i := 0; i < 3; i++ {
		g.Fail("198.51.100.9", "1002", "bad_password")
	}
	if !g.Blocked("198.51.100.9", "") {
		t.Fatal("three failures within the window did not block")
	}
}

// An office NAT with registered phones keeps working while one user's
// password is being guessed from it.
func TestTrustedSourceBlocksOnlyTheUser(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(Config{MaxFailures: 3, Now: c.now})
	g.Succeed("192.0.2.1", "1001")
	for i := 0; i < 50; i++ {
		g.Fail("192.0.2.1", "1009", "bad_password")
	}
	if g.Blocked("192.0.2.1", "1001") {
		t.Fatal("the office's registered user is blocked by another user's failures")
	}
	if !g.Blocked("192.0.2.1", "1009") {
		t.Fatal("the guessed user is not blocked from the source")
	}
	bs := g.Blocks()
	if len(bs) != 1 || bs[0].User != "1009" {
		t.Fatalf("Blocks() = %+v, want the one pair", bs)
	}
	if !g.Lift("192.0.2.1") || g.Blocked("192.0.2.1", "1009") {
		t.Fatal("Lift did not remove the pair block")
	}
}

func TestMemoryIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	g := New(Config{MaxFailures: 1000, MaxEntries: 500, Window: time.Second, Now: c.now})
	for i := 0; i < 20_000; i++ {
		g.Fail(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), "1002", "bad_password")
		c.t = c.t.Add(10 * time.Millisecond)
	}
	g.mu.Lock()
	n := len(g.sources) + len(g.pairs) + len(g.trusted)
	g.mu.Unlock()
	if n > 1000 {
		t.Fatalf("tracked entries = %d, want about MaxEntries (500)", n)
	}
}

func TestIP(t *testing.T) {
	for in, want := range map[string]string{"192.0.2.1:5060": "192.0.2.1", "[::ffff:192.0.2.1]:5060": "192.0.2.1", "[2001:db8::1]:5061": "2001:db8::1", "2001:db8::1": "2001:db8::1", "junk": "junk"} {
		if got := IP(in); got != want {
			t.Errorf("IP(%q) = %q, want %q", in, got, want)
		}
	}
}
