package provisioning_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/icholy/digest"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/provisioning"
)

// Issue 11 row 6: a captured Authorization is good for one request. Its
// replay gets a fresh challenge, never the config again.
func TestReplayedAuthorizationRefused(t *testing.T) {
	f := newFixture(t, provisioning.Config{FailureLimit: 3})
	p := f.phone(100, t54wUA)
	path := f.path(t54wMAC + ".cfg")
	if r := p.get(path); r.status != http.StatusOK {
		t.Fatalf("first fetch = %d", r.status)
	}
	captured := p.authorization(path)
	if r := p.raw(path, captured); r.status != http.StatusOK {
		t.Fatalf("fetch with the next nonce count = %d", r.status)
	}
	for i := range 20 {
		r := p.raw(path, captured)
		if r.status != http.StatusUnauthorized || strings.Contains(string(r.body), f.sipPW) {
			t.Fatalf("replay %d = %d, want 401", i, r.status)
		}
		chal, err := digest.FindChallenge(r.header)
		if err != nil || chal.Stale || chal.Nonce == "" {
			t.Fatalf("replay %d: challenge %q, want a fresh one", i, r.header.Get("WWW-Authenticate"))
		}
	}
	// Replays are not failures: the phone is not blocked, and goes on with
	// the next count.
	if r := p.raw(path, p.authorization(path)); r.status != http.StatusOK {
		t.Fatalf("the phone after replays of its request = %d, want 200", r.status)
	}
	// The same for a response without qop (RFC 2069): one request per nonce.
	old := f.phone(101, t54wUA)
	c, err := digest.FindChallenge(old.raw(path, "").header)
	if err != nil {
		t.Fatal(err)
	}
	chal := *c
	chal.QOP = nil
	cred, err := digest.Digest(&chal, digest.Options{Method: http.MethodGet, URI: path, Username: old.user, Password: old.pass})
	if err != nil {
		t.Fatal(err)
	}
	if r := old.raw(path, cred.String()); r.status != http.StatusOK {
		t.Fatalf("RFC 2069 response = %d, want 200", r.status)
	}
	if r := old.raw(path, cred.String()); r.status != http.StatusUnauthorized {
		t.Fatalf("RFC 2069 response replayed = %d, want 401", r.status)
	}
}

// An Authorization for a nonce this address was never given — invented, or
// obtained by another address — counts nothing, however often it comes.
func TestForeignNonceCountsNothing(t *testing.T) {
	f := newFixture(t, provisioning.Config{FailureLimit: 3})
	path := f.path(t54wMAC + ".cfg")
	elsewhere := f.phone(110, t54wUA)
	if r := elsewhere.get(path); r.status != http.StatusOK {
		t.Fatalf("fetch = %d", r.status)
	}
	victim := f.phone(111, t54wUA)
	victim.chal = elsewhere.chal // a nonce issued to 127.0.0.110
	victim.pass = "wrong"
	invented := *elsewhere.chal
	invented.Nonce = strings.Repeat("A", len(invented.Nonce))
	for i := range 30 {
		if r := victim.raw(path, victim.authorization(path)); r.status != http.StatusUnauthorized {
			t.Fatalf("foreign nonce %d = %d, want 401", i, r.status)
		}
		cred, _ := digest.Digest(&invented, digest.Options{Method: http.MethodGet, URI: path, Username: f.prov.Username, Password: "x", Count: i + 1})
		if r := victim.raw(path, cred.String()); r.status != http.StatusUnauthorized {
			t.Fatalf("invented nonce %d = %d, want 401", i, r.status)
		}
	}
	// The right password on another address's nonce is no good either.
	victim.pass = f.prov.Password
	if r := victim.raw(path, victim.authorization(path)); r.status != http.StatusUnauthorized {
		t.Fatalf("valid credentials on another address's nonce = %d, want 401", r.status)
	}
	victim.chal = nil
	if r := victim.get(path); r.status != http.StatusOK {
		t.Fatalf("the phone at that address = %d, want 200", r.status)
	}
	if n := f.fetches(provisioning.OutcomeThrottled); n != 0 {
		t.Fatalf("%v requests throttled, want none", n)
	}
}

// Issue 11 row 10: a guesser behind an office's NAT is blocked, the phones
// behind the same address are not, whether they have fetched before or not.
// The blocks are in the shared guard table, listed with their protocol.
func TestGuesserBehindNATDoesNotLockOutPhones(t *testing.T) {
	g := guard.New(guard.Config{})
	f := newFixture(t, provisioning.Config{FailureLimit: 5, Guard: g})
	path := f.path(t54wMAC + ".cfg")
	const nat = 120
	guesser := f.phone(nat, t54wUA)
	guesser.pass = "guess"
	blocked := false
	for i := range 20 {
		switch r := guesser.get(path); r.status {
		case http.StatusUnauthorized:
			if blocked {
				t.Fatalf("guess %d: 401 after the block", i)
			}
		case http.StatusTooManyRequests:
			blocked = true
		default:
			t.Fatalf("guess %d = %d", i, r.status)
		}
	}
	for range 5 {
		if r := guesser.raw("/p/"+strings.Repeat("Z", 32)+"/"+t54wMAC+".cfg", ""); r.status != http.StatusTooManyRequests {
			t.Fatalf("unknown key from the blocked source = %d, want 429", r.status)
		}
	}
	if !blocked {
		t.Fatal("the guesser was never blocked")
	}
	// A phone behind the same NAT, same account credential, never fetched.
	phone := f.phone(nat, t54wUA)
	if r := phone.get(path); r.status != http.StatusOK || !strings.Contains(string(r.body), f.sipPW) {
		t.Fatalf("phone with valid credentials behind the guesser's address = %d, want 200", r.status)
	}
	if r := phone.get(f.path("y000000000096.cfg")); r.status != http.StatusOK {
		t.Fatalf("its common file = %d, want 200", r.status)
	}
	// The guesser is still blocked.
	if r := guesser.get(path); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("the guesser after the phone's fetch = %d, want 429 with Retry-After", r.status)
	}
	bs := g.Blocks()
	if len(bs) != 1 || bs[0].Protocol != "provisioning" || bs[0].Addr != netip.MustParseAddr("127.0.0.120") || bs[0].User != "" {
		t.Fatalf("blocks = %+v, want the provisioning source 127.0.0.120", bs)
	}
	if strings.Contains(f.logs.String(), f.prov.Password) {
		t.Fatal("a password reached the log")
	}
}
