package provisioning

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/dialtone-voip/dialtone/internal/digest"
	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
)

// realm is the Digest realm of every account. The URL key has already chosen
// the account, and account usernames are random, so the realm need not name it.
const realm = "dialtone provisioning"

// nonceTTL is how long a challenge's nonce is accepted; after that the phone
// gets a fresh challenge with stale=true and retries without failing.
const nonceTTL = 5 * time.Minute

// maxNonceCounts bounds the nonce-count table (per generation: see
// internal/digest). A phone uses one nonce per poll.
const maxNonceCounts = 1 << 16

type authResult int

const (
	authNone  authResult = iota // no Authorization header: challenge, not a failure
	authOK                      // valid credentials
	authStale                   // right password, expired nonce: challenge with stale=true
	authRetry                   // nothing to count: malformed, a nonce not issued to this address, a replayed nonce count → fresh challenge
	authBad                     // wrong credentials on a nonce issued to this address (or Basic over TLS): challenge, and count a failure
)

// nonces is provisioning's Digest policy on internal/digest: one realm, MD5
// (what Yealink firmware answers), qop "auth" offered and RFC 2069 answers
// (no qop, old firmware) accepted. Nonces are bound to the realm, the
// account and the client's IP address; each nonce count is accepted once
// (a response without qop has none, so its nonce is good for one request).
type nonces struct {
	n     *digest.Nonces
	now   func() time.Time
	dummy string // HA1 an unknown user is checked against, for the same work
}

func newNonces(now func() time.Time) (*nonces, error) {
	n, err := digest.NewNonces(nonceTTL, maxNonceCounts)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return &nonces{n: n, now: now, dummy: hex.EncodeToString(b)}, nil
}

// space is the protection space a nonce is bound to: the realm is shared by
// every account, so the account is named too.
func space(acct string) string { return realm + "\x00" + acct }

// challenge is the WWW-Authenticate value for a request from r's source to
// the account acct.
func (n *nonces) challenge(r *http.Request, acct string, stale bool) string {
	c := digest.Challenge{Realm: realm, Nonce: n.n.Issue(space(acct), clientIP(r), n.now()), Algorithm: digest.MD5, QOP: []string{"auth"}, Stale: stale}
	return c.String()
}

// authenticate checks r's Authorization against the account's credentials
// (current password, or the previous one within the grace period) and
// returns the result and, for authOK, the username that authenticated.
// Digest (MD5, qop=auth or none) is what Yealink phones answer a challenge
// with; Basic is accepted only over TLS, where it is as safe as Digest.
func (n *nonces) authenticate(r *http.Request, acc store.ProvisioningAccess) (authResult, string) {
	return n.check(r, acc.Account.ID, func(user string) []string {
		if equal(user, acc.Username) {
			return acc.Passwords
		}
		return nil
	})
}

// check is authenticate for any credential source: passwords returns the
// passwords valid for the username (nil: no such user).
func (n *nonces) check(r *http.Request, acct string, passwords func(user string) []string) (authResult, string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return authNone, ""
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if r.TLS == nil {
			return authBad, ""
		}
		for _, pw := range passwords(user) {
			if equal(pass, pw) {
				return authOK, user
			}
		}
		return authBad, ""
	}
	c, err := digest.Parse(h, digest.ParseOptions{AllowNoQOP: true})
	if err != nil || c.Realm != realm || c.Algorithm != digest.MD5 {
		return authRetry, ""
	}
	if c.URI != r.RequestURI && c.URI != r.URL.RequestURI() {
		return authRetry, ""
	}
	now := n.now()
	state, key := n.n.Check(c.Nonce, space(acct), clientIP(r), now)
	if state == digest.Bad {
		return authRetry, "" // not a nonce this address was given: count nothing
	}
	pws := passwords(c.Username)
	match := false
	if len(pws) == 0 {
		_ = digest.Verify(c, r.Method, n.dummy) // the same work as for a known user
	}
	for _, pw := range pws {
		if digest.Verify(c, r.Method, digest.HA1(digest.MD5, c.Username, realm, pw)) {
			match = true
			break
		}
	}
	switch {
	case !match && state == digest.Fresh:
		return authBad, ""
	case !match:
		return authRetry, "" // wrong, but on an expired nonce: not counted
	case state == digest.Stale:
		return authStale, ""
	}
	if ok, stale := n.n.Use(key, digest.Count(c), now); !ok {
		if stale {
			return authStale, ""
		}
		return authRetry, "" // a replayed Authorization
	}
	return authOK, c.Username
}

// clientIP is the address of r's client (RemoteAddr without the port).
func clientIP(r *http.Request) netip.Addr { return guard.IP(r.RemoteAddr) }

// sourceIP is the host part of r.RemoteAddr.
func sourceIP(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	return host
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
