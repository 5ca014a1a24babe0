package sip

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"
	"github.com/icholy/digest"
)

func TestRegisterDigest(t *testing.T) {
	e := newEnv(t, Config{})
	for _, transport := range []string{"UDP", "TCP"} {
		for _, alg := range []string{"SHA-256", "MD5"} {
			t.Run(transport+"/"+alg, func(t *testing.T) {
				u := e.uac(transport, "1001", e.password)
				u.ua = "Test Phone " + transport + " " + alg
				contact := fmt.Sprintf("<sip:1001@127.0.0.1:%d;transport=%s>", 6000+len(transport)*10+len(alg), strings.ToLower(transport))

				res := u.do(u.request("Contact: "+contact, "Expires: 600"))
				if res.StatusCode != 401 {
					t.Fatalf("first REGISTER = %d, want 401", res.StatusCode)
				}
				chals := res.GetHeaders("WWW-Authenticate")
				if len(chals) != 2 {
					t.Fatalf("401 has %d WWW-Authenticate, want 2:\n%s", len(chals), res)
				}
				var algs []string
				var nonces []string
				for _, h := range chals {
					c, err := digest.ParseChallenge(h.Value())
					if err != nil {
						t.Fatal(err)
					}
					algs = append(algs, c.Algorithm)
					nonces = append(nonces, c.Nonce)
					if c.Realm != testDomain || !c.SupportsQOP("auth") || c.Stale {
						t.Errorf("challenge %q: want realm %s, qop auth, not stale", h.Value(), testDomain)
					}
				}
				if diff := cmp.Diff([]string{"SHA-256", "MD5"}, algs); diff != "" {
					t.Errorf("challenge algorithms (-want +got):\n%s", diff)
				}
				if len(nonces) == 2 && nonces[0] != nonces[1] {
					t.Errorf("the two challenges carry different nonces: %q", nonces)
				}
				if res.GetHeader("Server") == nil {
					t.Error("401 lacks Server header")
				}

				req := u.request("Contact: "+contact, "Expires: 600")
				req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, res, alg)))
				res = u.do(req)
				if res.StatusCode != 200 {
					t.Fatalf("authorized REGISTER = %d %s, want 200", res.StatusCode, res.Reason)
				}
				if res.GetHeader("Date") == nil {
					t.Error("200 lacks Date")
				}
				var found bool
				for _, c := range contactsOf(res) {
					if strings.HasPrefix(c, contact+";expires=") {
						found = true
						if !strings.Contains(c, ";expires=600") {
							t.Errorf("contact %q, want expires=600", c)
						}
					}
				}
				if !found {
					t.Errorf("200 contacts %q lack %s", contactsOf(res), contact)
				}
				var b *store.Binding
				for _, bd := range e.bindings(e.user) {
					if "<"+bd.Contact+">" == contact {
						b = &bd
					}
				}
				if b == nil {
					t.Fatalf("no binding for %s in %+v", contact, e.bindings(e.user))
				}
				if b.Transport != strings.ToLower(transport) || b.UserAgent != u.ua || !strings.HasPrefix(b.Source, "127.0.0.1:") || b.CallID != u.callID {
					t.Errorf("binding = %+v, want transport %s, UA %q, source 127.0.0.1:*, call-id %s", b, strings.ToLower(transport), u.ua, u.callID)
				}
				if got, want := b.ExpiresAt, e.clock.Now().Add(600*time.Second); !got.Equal(want) {
					t.Errorf("ExpiresAt = %v, want %v", got, want)
				}
			})
		}
	}
	if got := counterValue(t, e.srv.metrics.registers.WithLabelValues("200")); got != 4 {
		t.Errorf("register 200 counter = %v, want 4", got)
	}
}

func TestRegisterSipgoDoDigestAuth(t *testing.T) {
	// sipgo's own client answers the first challenge (SHA-256).
	e := newEnv(t, Config{})
	u := e.uac("UDP", "1001", e.password)
	req := u.request("Contact: <sip:1001@127.0.0.1:7000>")
	res := u.do(req)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := u.cli.DoDigestAuth(ctx, req, res, sipgoDigest(u))
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("DoDigestAuth = %v, %v; want 200", res, err)
	}
	if n := len(e.bindings(e.user)); n != 1 {
		t.Errorf("bindings = %d, want 1", n)
	}
}

func TestUnknownUserLooksLikeWrongPassword(t *testing.T) {
	e := newEnv(t, Config{})
	for _, transport := range []string{"UDP", "TCP"} {
		wrong := e.uac(transport, "1001", "not-the-password").register("SHA-256", "Contact: <sip:1001@127.0.0.1:7001>")
		unknown := e.uac(transport, "1999", "whatever").register("SHA-256", "Contact: <sip:1999@127.0.0.1:7001>")
		if wrong.StatusCode != 401 || unknown.StatusCode != 401 {
			t.Fatalf("%s: wrong password = %d, unknown user = %d; want 401 for both", transport, wrong.StatusCode, unknown.StatusCode)
		}
		if wrong.Reason != unknown.Reason {
			t.Errorf("reasons differ: %q vs %q", wrong.Reason, unknown.Reason)
		}
		if diff := cmp.Diff(headerNames(wrong), headerNames(unknown)); diff != "" {
			t.Errorf("%s: header names differ (-wrong +unknown):\n%s", transport, diff)
		}
		for _, res := range []*sip.Response{wrong, unknown} {
			c := findChallenge(t, res, "SHA-256")
			if c.Stale || c.Realm != testDomain {
				t.Errorf("challenge %+v: want realm %s, stale false", c, testDomain)
			}
		}
	}
	if n := len(e.bindings(e.user)); n != 0 {
		t.Errorf("bindings after failed auth = %d, want 0", n)
	}
	if got := counterValue(t, e.srv.metrics.authFailures.WithLabelValues(authBadPassword)); got != 2 {
		t.Errorf("bad_password failures = %v, want 2", got)
	}
	if got := counterValue(t, e.srv.metrics.authFailures.WithLabelValues(authUnknownUser)); got != 2 {
		t.Errorf("unknown_user failures = %v, want 2", got)
	}
}

func TestStaleNonceAndReplay(t *testing.T) {
	e := newEnv(t, Config{NonceTTL: time.Minute})
	u := e.uac("UDP", "1001", e.password)
	contact := "Contact: <sip:1001@127.0.0.1:7002>"
	res := u.do(u.request(contact))
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER = %d, want 401", res.StatusCode)
	}
	chal := res

	// First use of the nonce: accepted.
	req := u.request(contact)
	authz := u.authorization(req, chal, "MD5")
	req.AppendHeader(sip.NewHeader("Authorization", authz))
	if res := u.do(req); res.StatusCode != 200 {
		t.Fatalf("REGISTER nc=1 = %d, want 200", res.StatusCode)
	}

	// The same nonce with a higher nc: accepted (a client may reuse a nonce).
	req = u.request(contact)
	req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, chal, "MD5")))
	if res := u.do(req); res.StatusCode != 200 {
		t.Fatalf("REGISTER nc=2 = %d, want 200", res.StatusCode)
	}

	// Replay: nc=1 again (recomputed for the new CSeq's request; the digest
	// does not cover CSeq, so a captured Authorization replays as is).
	req = u.request(contact)
	req.AppendHeader(sip.NewHeader("Authorization", authz))
	res = u.do(req)
	if res.StatusCode != 401 {
		t.Fatalf("replayed nc = %d, want 401", res.StatusCode)
	}
	if c := findChallenge(t, res, "MD5"); c.Stale {
		t.Errorf("replay challenge is stale=true, want a plain fresh challenge")
	}

	// A nonce older than NonceTTL with the right password: stale=true.
	e.clock.Advance(time.Minute + time.Second)
	req = u.request(contact)
	req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, chal, "SHA-256")))
	res = u.do(req)
	if res.StatusCode != 401 {
		t.Fatalf("stale nonce = %d, want 401", res.StatusCode)
	}
	fresh := findChallenge(t, res, "SHA-256")
	if !fresh.Stale {
		t.Errorf("challenge for an expired nonce lacks stale=true:\n%s", res)
	}
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		if !strings.Contains(h.Value(), "stale=true") {
			t.Errorf("WWW-Authenticate %q lacks stale=true", h.Value())
		}
	}
	// The stale challenge's nonce works.
	u.nc = 0
	req = u.request(contact)
	req.AppendHeader(sip.NewHeader("Authorization", u.authorization(req, res, "SHA-256")))
	if res := u.do(req); res.StatusCode != 200 {
		t.Fatalf("REGISTER with fresh nonce = %d, want 200", res.StatusCode)
	}

	// An expired nonce with a wrong password is not "stale": the phone must
	// not be told to retry silently.
	e.clock.Advance(2 * time.Minute)
	bad := e.uac("UDP", "1001", "wrong")
	req = bad.request(contact)
	req.AppendHeader(sip.NewHeader("Authorization", bad.authorization(req, chal, "SHA-256")))
	if res := bad.do(req); res.StatusCode != 401 || findChallenge(t, res, "SHA-256").Stale {
		t.Errorf("expired nonce + wrong password = %d stale=%v, want 401 without stale", res.StatusCode, findChallenge(t, res, "SHA-256").Stale)
	}
	if got := counterValue(t, e.srv.metrics.authFailures.WithLabelValues(authReplay)); got != 1 {
		t.Errorf("replay failures = %v, want 1", got)
	}
	if got := counterValue(t, e.srv.metrics.authFailures.WithLabelValues(authStale)); got != 1 {
		t.Errorf("stale failures = %v, want 1", got)
	}
}

func TestNonceBoundToRealm(t *testing.T) {
	e := newEnv(t, Config{})
	if _, err := e.db.CreateAccount("other", "other.test", store.System); err != nil {
		t.Fatal(err)
	}
	// A nonce issued for example.test, presented in an Authorization for other.test.
	u := e.uac("UDP", "1001", e.password)
	res := u.do(u.request("Contact: <sip:1001@127.0.0.1:7003>"))
	chal := findChallenge(t, res, "MD5")
	chal.Realm = "other.test"
	u2 := e.uac("UDP", "1001", e.password)
	u2.domain = "other.test"
	req := u2.request("Contact: <sip:1001@127.0.0.1:7003>")
	cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: req.Recipient.String(), Username: "1001", Password: "x", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	if res := u2.do(req); res.StatusCode != 401 {
		t.Fatalf("foreign-realm nonce = %d, want 401", res.StatusCode)
	}
	if got := counterValue(t, e.srv.metrics.authFailures.WithLabelValues(authBadNonce)); got != 1 {
		t.Errorf("bad_nonce failures = %v, want 1", got)
	}
}

func TestAuthorizationChecks(t *testing.T) {
	e := newEnv(t, Config{})
	other, _ := e.addUser("1002")
	_ = other
	tests := []struct {
		name   string
		mangle func(c *digest.Credentials)
		want   int
	}{
		{"uri mismatch", func(c *digest.Credentials) { c.URI = "sip:elsewhere.test" }, 400},
		{"other user", func(c *digest.Credentials) { c.Username = "1002" }, 403},
		{"sha-512", func(c *digest.Credentials) { c.Algorithm = "SHA-512" }, 400},
		{"no qop", func(c *digest.Credentials) { c.QOP = "" }, 400},
		{"other realm", func(c *digest.Credentials) { c.Realm = "other.test" }, 401},
		{"forged nonce", func(c *digest.Credentials) { c.Nonce = strings.Repeat("A", nonceLen) }, 401},
		{"bad response", func(c *digest.Credentials) { c.Response = strings.Repeat("0", 32) }, 401},
		{"uri spelled differently", func(c *digest.Credentials) { c.URI = "sip:EXAMPLE.test:5060" }, 0}, // response then mismatches → 401
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u := e.uac("TCP", "1001", e.password)
			res := u.do(u.request("Contact: <sip:1001@127.0.0.1:7004>"))
			req := u.request("Contact: <sip:1001@127.0.0.1:7004>")
			cred, err := digest.ParseCredentials(u.authorization(req, res, "MD5"))
			if err != nil {
				t.Fatal(err)
			}
			tc.mangle(cred)
			req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
			res = u.do(req)
			want := tc.want
			if want == 0 {
				want = 401
			}
			if res.StatusCode != want {
				t.Errorf("status = %d %s, want %d", res.StatusCode, res.Reason, want)
			}
		})
	}
	if n := len(e.bindings(e.user)); n != 0 {
		t.Errorf("bindings = %d, want 0", n)
	}
}

func TestRegisterRules(t *testing.T) {
	e := newEnv(t, Config{}, withRegistrar(RegistrarConfig{MinExpires: 60, MaxExpires: 3600, DefaultExpires: 1800}))
	u := e.uac("UDP", "1001", e.password)
	c1 := "<sip:1001@127.0.0.1:7101>"
	c2 := "<sip:1001@127.0.0.1:7102;transport=tcp>"

	res := u.register("MD5", "Contact: "+c1, "Contact: "+c2+";expires=120")
	if res.StatusCode != 200 {
		t.Fatalf("two contacts = %d, want 200", res.StatusCode)
	}
	got := contactsOf(res)
	want := []string{c1 + ";expires=1800", c2 + ";expires=120"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("200 contacts (-want +got):\n%s", diff)
	}
	if n := len(e.bindings(e.user)); n != 2 {
		t.Fatalf("bindings = %d, want 2", n)
	}

	t.Run("query", func(t *testing.T) {
		e.clock.Advance(20 * time.Second)
		res := u.register("MD5")
		if res.StatusCode != 200 {
			t.Fatalf("query = %d", res.StatusCode)
		}
		want := []string{c1 + ";expires=1780", c2 + ";expires=100"}
		if diff := cmp.Diff(want, contactsOf(res)); diff != "" {
			t.Errorf("query contacts (-want +got):\n%s", diff)
		}
	})

	t.Run("clamp to MaxExpires", func(t *testing.T) {
		res := u.register("SHA-256", "Contact: "+c1, "Expires: 99999999999")
		if res.StatusCode != 200 {
			t.Fatalf("= %d", res.StatusCode)
		}
		if got := contactsOf(res); !contains(got, c1+";expires=3600") {
			t.Errorf("contacts %q, want %s;expires=3600", got, c1)
		}
	})

	t.Run("too brief", func(t *testing.T) {
		res := u.register("MD5", "Contact: "+c1+";expires=30")
		if res.StatusCode != 423 {
			t.Fatalf("= %d, want 423", res.StatusCode)
		}
		if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "60" {
			t.Errorf("Min-Expires = %v, want 60", h)
		}
	})

	t.Run("wildcard with non-zero expires", func(t *testing.T) {
		res := u.do(u.request("Contact: *", "Expires: 60"))
		if res.StatusCode != 400 {
			t.Errorf("= %d, want 400", res.StatusCode)
		}
		res = u.do(u.request("Contact: *"))
		if res.StatusCode != 400 {
			t.Errorf("without Expires = %d, want 400", res.StatusCode)
		}
	})

	t.Run("wildcard beside a contact", func(t *testing.T) {
		res := u.do(u.request("Contact: *", "Contact: "+c1, "Expires: 0"))
		if res.StatusCode != 400 {
			t.Errorf("= %d, want 400", res.StatusCode)
		}
	})

	t.Run("remove one", func(t *testing.T) {
		res := u.register("MD5", "Contact: "+c2+";expires=0")
		if res.StatusCode != 200 {
			t.Fatalf("= %d", res.StatusCode)
		}
		if got := contactsOf(res); len(got) != 1 || !strings.HasPrefix(got[0], c1) {
			t.Errorf("contacts = %q, want only %s", got, c1)
		}
	})

	t.Run("CSeq ordering", func(t *testing.T) {
		res := u.register("MD5", "Contact: "+c1)
		if res.StatusCode != 200 {
			t.Fatalf("= %d", res.StatusCode)
		}
		u.cseq -= 4 // an older CSeq on the same Call-ID
		res = u.register("MD5", "Contact: "+c1)
		if res.StatusCode != 500 {
			t.Errorf("out-of-order CSeq = %d, want 500", res.StatusCode)
		}
		u.cseq += 10
	})

	t.Run("wildcard removes all", func(t *testing.T) {
		u2 := e.uac("TCP", "1001", e.password)
		if res := u2.register("MD5", "Contact: "+c2); res.StatusCode != 200 {
			t.Fatalf("= %d", res.StatusCode)
		}
		if n := len(e.bindings(e.user)); n != 2 {
			t.Fatalf("bindings = %d, want 2", n)
		}
		res := u2.register("MD5", "Contact: *", "Expires: 0")
		if res.StatusCode != 200 {
			t.Fatalf("Contact: * = %d, want 200", res.StatusCode)
		}
		if got := contactsOf(res); len(got) != 0 {
			t.Errorf("contacts after * = %q, want none", got)
		}
		if n := len(e.bindings(e.user)); n != 0 {
			t.Errorf("bindings after * = %d, want 0", n)
		}
	})

	t.Run("expired bindings are not listed", func(t *testing.T) {
		if res := u.register("MD5", "Contact: "+c1+";expires=60"); res.StatusCode != 200 {
			t.Fatalf("= %d", res.StatusCode)
		}
		e.clock.Advance(61 * time.Second)
		res := u.register("MD5")
		if got := contactsOf(res); res.StatusCode != 200 || len(got) != 0 {
			t.Errorf("query after expiry = %d %q, want 200 with no contacts", res.StatusCode, got)
		}
	})
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestDisabledUser(t *testing.T) {
	e := newEnv(t, Config{})
	u := e.uac("TCP", "1001", e.password)
	c1 := "<sip:1001@127.0.0.1:7201>"
	if res := u.register("SHA-256", "Contact: "+c1); res.StatusCode != 200 {
		t.Fatalf("= %d", res.StatusCode)
	}
	if _, err := e.db.DisableUser(e.acct.ID, e.user.ID, store.System); err != nil {
		t.Fatal(err)
	}
	if res := u.register("SHA-256", "Contact: "+c1); res.StatusCode != 403 {
		t.Errorf("refresh while disabled = %d, want 403", res.StatusCode)
	}
	if res := u.register("SHA-256", "Contact: <sip:1001@127.0.0.1:7202>"); res.StatusCode != 403 {
		t.Errorf("add while disabled = %d, want 403", res.StatusCode)
	}
	if n := len(e.bindings(e.user)); n != 1 {
		t.Fatalf("bindings = %d, want 1", n)
	}
	res := u.register("SHA-256", "Contact: "+c1, "Expires: 0")
	if res.StatusCode != 200 {
		t.Fatalf("unregister while disabled = %d, want 200", res.StatusCode)
	}
	if n := len(e.bindings(e.user)); n != 0 {
		t.Errorf("bindings after unregister = %d, want 0", n)
	}
	// Now nothing blocks the delete but "enabled" is gone too.
	if err := e.db.DeleteUser(e.acct.ID, e.user.ID, store.System); err != nil {
		t.Errorf("DeleteUser after sign-out = %v", err)
	}
	// The deleted user: a challenge like any unknown user.
	if res := u.register("SHA-256", "Contact: "+c1); res.StatusCode != 401 {
		t.Errorf("REGISTER of a deleted user = %d, want 401", res.StatusCode)
	}
}

func TestOptions(t *testing.T) {
	e := newEnv(t, Config{ServerName: "dialtone-test"})
	for _, transport := range []string{"UDP", "TCP"} {
		u := e.uac(transport, "1001", "")
		req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: testDomain})
		req.SetDestination(u.dst)
		req.SetTransport(transport)
		res := u.do(req)
		if res.StatusCode != 200 {
			t.Fatalf("%s OPTIONS = %d, want 200", transport, res.StatusCode)
		}
		for name, want := range map[string]string{"Allow": "INVITE, ACK, CANCEL, BYE, REGISTER, OPTIONS", "Accept": "application/sdp", "Server": "dialtone-test"} {
			if h := res.GetHeader(name); h == nil || h.Value() != want {
				t.Errorf("%s %s = %v, want %q", transport, name, h, want)
			}
		}
	}
	if got := counterValue(t, e.srv.metrics.requests.WithLabelValues("OPTIONS")); got != 2 {
		t.Errorf("OPTIONS counter = %v, want 2", got)
	}
}

func TestOtherMethods(t *testing.T) {
	e := newEnv(t, Config{})
	u := e.uac("TCP", "1001", "")
	// INVITE, CANCEL, BYE and in-dialog methods belong to call handling
	// (invite*.go) and are tested there.
	for method, want := range map[sip.RequestMethod]int{sip.SUBSCRIBE: 405, sip.PUBLISH: 405, "FOO": 501} {
		req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: "1001", Host: testDomain})
		req.SetDestination(u.dst)
		req.SetTransport("TCP")
		res := u.do(req)
		if res.StatusCode != want {
			t.Errorf("%s = %d, want %d", method, res.StatusCode, want)
		}
	}
}

func TestOverload503(t *testing.T) {
	// Two requests are "running" and the limit is two. (A limit of one would
	// be flaky: the previous request's handler may still be returning when
	// the client's next request arrives.)
	e := newEnv(t, Config{MaxInFlight: 2})
	e.srv.inFlight.Add(2)
	u := e.uac("UDP", "1001", e.password)
	res := u.do(u.request("Contact: <sip:1001@127.0.0.1:7300>"))
	if res.StatusCode != 503 {
		t.Fatalf("REGISTER under overload = %d, want 503", res.StatusCode)
	}
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() == "" {
		t.Errorf("503 lacks Retry-After:\n%s", res)
	}
	e.srv.inFlight.Add(-2)
	if res := u.register("MD5", "Contact: <sip:1001@127.0.0.1:7300>"); res.StatusCode != 200 {
		t.Errorf("after the load = %d, want 200", res.StatusCode)
	}
}

func TestMD5OnlyUserAgents(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ua   string
		want []string
	}{
		{"old baresip", Config{}, "baresip v1.0.0 (x86_64/linux)", []string{"MD5"}},
		{"new baresip", Config{}, "baresip v3.10.1 (x86_64/linux)", []string{"SHA-256", "MD5"}},
		{"quirk off", Config{MD5OnlyUserAgents: []string{}}, "baresip v1.0.0 (x86_64/linux)", []string{"SHA-256", "MD5"}},
		{"configured", Config{MD5OnlyUserAgents: []string{"Yealink SIP-T2"}}, "Yealink SIP-T21P_E2 52.84.0.15", []string{"MD5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			u := e.uac("UDP", "1001", e.password)
			u.ua = tc.ua
			res := u.do(u.request("Contact: <sip:1001@127.0.0.1:7500>"))
			var algs []string
			for _, h := range res.GetHeaders("WWW-Authenticate") {
				c, err := digest.ParseChallenge(h.Value())
				if err != nil {
					t.Fatal(err)
				}
				algs = append(algs, c.Algorithm)
			}
			if diff := cmp.Diff(tc.want, algs); diff != "" {
				t.Errorf("challenge algorithms (-want +got):\n%s", diff)
			}
			if res := u.register("MD5", "Contact: <sip:1001@127.0.0.1:7500>"); res.StatusCode != 200 {
				t.Errorf("MD5 REGISTER = %d, want 200", res.StatusCode)
			}
		})
	}
}

func TestHandlerPanicIsRecovered(t *testing.T) {
	// A handler with a bug: the wrapper turns its panic into a 500.
	e := newEnv(t, Config{}, coreOnly(), withRegistrar(RegistrarConfig{}), withSetup(func(e *env) {
		if err := e.srv.route(sip.INFO, route{tx: func(*sip.Request, sip.ServerTransaction) { panic("boom") }}); err != nil {
			t.Fatal(err)
		}
	}))
	for _, transport := range []string{"UDP", "TCP"} {
		u := e.uac(transport, "1001", e.password)
		req := sip.NewRequest(sip.INFO, sip.Uri{Scheme: "sip", User: "1001", Host: testDomain})
		req.SetDestination(u.dst)
		req.SetTransport(transport)
		if res := u.do(req); res.StatusCode != 500 {
			t.Errorf("%s: panicking handler answered %d, want 500", transport, res.StatusCode)
		}
		if res := u.register("MD5", "Contact: <sip:1001@127.0.0.1:7700>"); res.StatusCode != 200 {
			t.Errorf("%s: REGISTER after the panic = %d, want 200", transport, res.StatusCode)
		}
	}
	if got := counterValue(t, e.srv.metrics.handlerPanics); got != 2 {
		t.Errorf("panics counter = %v, want 2", got)
	}
}

func TestMetricsRegistered(t *testing.T) {
	e := newEnv(t, Config{})
	u := e.uac("UDP", "1001", "wrong")
	u.register("MD5", "Contact: <sip:1001@127.0.0.1:7800>")
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, name := range []string{"dialtone_sip_requests_total", "dialtone_sip_register_responses_total",
		"dialtone_sip_auth_failures_total", "dialtone_sip_in_flight_requests"} {
		if !got[name] {
			t.Errorf("metric %s not registered (have %v)", name, got)
		}
	}
	// A second server on the same registry is refused, not silently merged.
	if _, err := New(Config{}, e.db, nil, e.reg); err == nil {
		t.Error("New() on a registry that already has our metrics = nil error")
	}
}

// A store that cannot write now (several nodes on etcd: no quorum, no
// lease, every attempt lost to other nodes) answers 503, which the phone
// retries after Retry-After with its binding kept; a refusal of the rules
// keeps its own status.
func TestRegisterStatusOfStoreErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("etcd: commit: %w", store.ErrUnavailable), 503},
		{fmt.Errorf("register: %w", store.ErrNoLease), 503},
		{store.ErrConflict, 503},
		{store.ErrDisabled, 403},
		{store.ErrNotFound, 404},
		{store.ErrNoSpace, 500},
		{errors.New("anything else"), 500},
	} {
		if code, _ := registerStatus(c.err); code != c.code {
			t.Errorf("registerStatus(%v) = %d, want %d", c.err, code, c.code)
		}
	}
}
