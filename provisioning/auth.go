package provisioning

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/icholy/digest"

	"github.com/dialtone-voip/dialtone/store"
)

// realm is the Digest realm of every account. The URL key has already chosen
// the account, and account usernames are random, so the realm need not name it.
const realm = "dialtone provisioning"

// nonceTTL is how long a challenge's nonce is accepted; after that the phone
// gets a fresh challenge with stale=true and retries without failing.
const nonceTTL = 5 * time.Minute

type authResult int

const (
	authNone  authResult = iota // no Authorization header: challenge, not a failure
	authOK                      // valid credentials
	authStale                   // right password, expired nonce: challenge with stale=true
	authBad                     // wrong credentials: challenge, and count a failure
)

// nonces are stateless: 8 bytes of issue time and an HMAC over it and the
// account, so a nonce from one account is useless in another and the handler
// keeps no per-challenge state.
type nonces struct {
	secret []byte
	now    func() time.Time
}

func (n nonces) issue(acct string) string {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(n.now().UnixNano()))
	return base64.RawURLEncoding.EncodeToString(append(ts[:], n.mac(ts[:], acct)...))
}

func (n nonces) mac(ts []byte, acct string) []byte {
	m := hmac.New(sha256.New, n.secret)
	m.Write(ts)
	m.Write([]byte(acct))
	return m.Sum(nil)[:16]
}

// check reports whether nonce was issued by us for acct, and whether it is still fresh.
func (n nonces) check(nonce, acct string) (ours, fresh bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != 24 {
		return false, false
	}
	if !hmac.Equal(b[8:], n.mac(b[:8], acct)) {
		return false, false
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	age := n.now().Sub(issued)
	return true, age >= -time.Minute && age <= nonceTTL
}

func (n nonces) challenge(acct string, stale bool) string {
	c := `Digest realm="` + realm + `", qop="auth", nonce="` + n.issue(acct) + `", algorithm=MD5`
	if stale {
		c += ", stale=true"
	}
	return c
}

// authenticate checks r's Authorization against the account's credentials
// (current password, or the previous one within the grace period). Digest
// (MD5, qop=auth or none) is what Yealink phones answer a challenge with;
// Basic is accepted only over TLS, where it is as safe as Digest.
func (n nonces) authenticate(r *http.Request, acc store.ProvisioningAccess) authResult {
	h := r.Header.Get("Authorization")
	if h == "" {
		return authNone
	}
	if user, pass, ok := r.BasicAuth(); ok {
		if r.TLS == nil {
			return authBad
		}
		if !equal(user, acc.Username) {
			return authBad
		}
		for _, pw := range acc.Passwords {
			if equal(pass, pw) {
				return authOK
			}
		}
		return authBad
	}
	c, err := digest.ParseCredentials(h)
	if err != nil {
		return authBad
	}
	if !equal(c.Username, acc.Username) || c.Realm != realm || c.Userhash {
		return authBad
	}
	if a := strings.ToUpper(c.Algorithm); a != "" && a != "MD5" {
		return authBad
	}
	if c.URI != r.RequestURI && c.URI != r.URL.RequestURI() {
		return authBad
	}
	ours, fresh := n.check(c.Nonce, acc.Account.ID)
	if !ours {
		return authBad
	}
	ha2 := md5hex(r.Method + ":" + c.URI)
	for _, pw := range acc.Passwords {
		ha1 := md5hex(c.Username + ":" + realm + ":" + pw)
		var want string
		switch c.QOP {
		case "auth":
			want = md5hex(ha1 + ":" + c.Nonce + ":" + nc(c.Nc) + ":" + c.Cnonce + ":auth:" + ha2)
		case "":
			want = md5hex(ha1 + ":" + c.Nonce + ":" + ha2) // RFC 2069, for old firmware
		default:
			return authBad
		}
		if equal(strings.ToLower(c.Response), want) {
			if !fresh {
				return authStale
			}
			return authOK
		}
	}
	return authBad
}

func nc(n int) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(n))
	return hex.EncodeToString(b[:])
}

func md5hex(s string) string {
	h := md5.Sum([]byte(s))
	return hex.EncodeToString(h[:])
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
