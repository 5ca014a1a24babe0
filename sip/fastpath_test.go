package sip

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// A retransmitted REGISTER gets the very response the first copy got, on
// both paths: the 401 with the same nonce, and after the 200 the same 200
// (not 500 Out of Order from the store, which has seen that CSeq). On the
// fast path it comes from the retransmission cache, without running the
// handler again.
func TestRegisterRetransmission(t *testing.T) {
	for _, mode := range []struct {
		name    string
		disable bool
	}{{"sipgo", true}, {"fastpath", false}} {
		t.Run(mode.name, func(t *testing.T) {
			e := newEnv(t, Config{DisableFastPath: mode.disable})
			c := newRawUAC(t, e.udpAddr, e.user.Extension, e.password)
			defer c.conn.Close()
			// A first registration sets the Call-ID's CSeq in the store.
			if err := c.register(); err != nil {
				t.Fatal(err)
			}
			first := c.message("")
			res, err := c.exchange(first)
			if err != nil || !strings.HasPrefix(res, "SIP/2.0 401 ") {
				t.Fatalf("REGISTER = %.60q, %v; want 401", res, err)
			}
			again, err := c.exchange(first)
			if err != nil || again != res {
				t.Fatalf("retransmitted REGISTER = %q, %v\nwant the same 401 %q", again, err, res)
			}

			if err := c.register(); err != nil {
				t.Fatal(err)
			}
			// c.register's authenticated request, sent again.
			c.cseq--
			c.branchNo--
			auth := c.lastAuth
			msg := c.message(auth)
			if !bytes.Equal(msg, c.lastSent) {
				t.Fatalf("rebuilt request differs:\n%s\nwant\n%s", msg, c.lastSent)
			}
			res, err = c.exchange(msg)
			if err != nil || res != c.lastResponse || !strings.HasPrefix(res, "SIP/2.0 200 ") {
				t.Fatalf("retransmitted REGISTER = %q, %v\nwant the same 200 %q", res, err, c.lastResponse)
			}
			if n := len(e.bindings(e.user)); n != 1 {
				t.Errorf("bindings = %d, want 1", n)
			}
			want := 2.0
			if mode.disable {
				want = 0
			}
			if got := counterValue(t, e.srv.tm.retransmissions); got != want {
				t.Errorf("retransmissions answered from the cache = %v, want %v", got, want)
			}
			// Sources on the fast path never reach sipgo, so its source
			// table (udp.go) does not hold them.
			if got, want := e.srv.udpSources(), 1-int(want/2); got != want {
				t.Errorf("UDP sources remembered = %d, want %d", got, want)
			}
		})
	}
}

// The cache absorbs a retransmission while the first copy is handled,
// answers it after, forgets a request that got no answer, and stays
// bounded.
func TestRetransCache(t *testing.T) {
	c := newRetransCache()
	now := time.Unix(1000, 0)
	if _, seen := c.begin("a", now); seen {
		t.Fatal("new key seen")
	}
	if res, seen := c.begin("a", now); !seen || res != nil {
		t.Fatalf("retransmission while handled = %q, %v; want absorbed", res, seen)
	}
	c.finish("a", []byte("200"), now)
	if res, _ := c.begin("a", now.Add(time.Second)); string(res) != "200" {
		t.Fatalf("retransmission after = %q, want the 200", res)
	}
	if _, seen := c.begin("a", now.Add(retransTTL)); seen {
		t.Fatal("a request older than Timer J was answered from the cache")
	}
	c.begin("b", now)
	c.forget("b")
	if _, seen := c.begin("b", now); seen {
		t.Fatal("a forgotten request was absorbed")
	}
	for i := range 3 * retransEntries {
		c.begin(strings.Repeat("k", i%7)+string(rune(i)), now)
	}
	if n := len(c.cur) + len(c.prev); n > 2*retransEntries {
		t.Fatalf("cache holds %d entries, want at most %d", n, 2*retransEntries)
	}
}

// squeezed (the front door's allocation-free check) agrees with building
// the squeezed value.
func FuzzSqueezed(f *testing.F) {
	for _, s := range []string{"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "SIP/2.0/UDP  h ; rport", ` "A B" <sip:a@b> ;tag=1`,
		"\"a\\\" b\" <sip:x y>", "a\tb", " a", "a ", "a, b", `"unterminated b`, "<sip:a@b>;q=0.5", "1 REGISTER", "1  REGISTER"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			seps   string
			angles bool
		}{{"/;=,:", false}, {";=,", true}} {
			if got, want := squeezed(s, c.seps, c.angles), squeezeSlow(s, c.seps, c.angles) == s; got != want {
				t.Fatalf("squeezed(%q, %q, %v) = %v, want %v", s, c.seps, c.angles, got, want)
			}
		}
		if v := normValue("cseq", s); v != s {
			// The short cut must not have let an unnormalized CSeq through.
			return
		}
		num, method, ok := strings.Cut(s, " ")
		if ok && (strings.ContainsAny(num, "\t") || strings.Trim(method, " \t") != method) {
			t.Fatalf("normValue(cseq, %q) left it unnormalized", s)
		}
	})
}
