package digest

import (
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/icholy/digest"
)

// Algorithms accepted (RFC 8760 order of preference).
const (
	SHA256 = "SHA-256"
	MD5    = "MD5"
)

// MaxLen bounds an Authorization value [Parse] accepts, in bytes.
const MaxLen = 2048

// Credentials are parsed Digest credentials (github.com/icholy/digest's).
type Credentials = digest.Credentials

// ParseOptions say what [Parse] accepts beyond the RFC 7616 minimum.
type ParseOptions struct {
	// AllowNoQOP accepts credentials without qop (RFC 2069 responses, which
	// old phone firmware sends); they carry no nonce count, so a caller
	// tracking counts treats them as count 1 (one use per nonce).
	AllowNoQOP bool
}

// Parse parses a Digest Authorization (or Proxy-Authorization) value and
// checks its shape: username, realm, nonce, uri and response present; the
// algorithm MD5 or SHA-256 (absent means MD5; the returned Algorithm is one
// of the two constants); qop "auth" with a cnonce and a nonce count between
// 1 and 2^32-1, or no qop if opts allow it; a response of hex of the
// algorithm's length; no userhash (RFC 7616 §3.4.4, not offered). It does
// not check the realm, nonce or response against anything.
func Parse(v string, opts ParseOptions) (*Credentials, error) {
	if len(v) > MaxLen {
		return nil, errors.New("authorization too long")
	}
	cred, err := parseCredentials(strings.TrimSpace(v))
	if err != nil {
		return nil, err
	}
	if cred.Username == "" || cred.Realm == "" || cred.Nonce == "" || cred.URI == "" || cred.Response == "" {
		return nil, errors.New("authorization lacks a required field")
	}
	if cred.Userhash {
		return nil, errors.New("userhash is not supported")
	}
	switch strings.ToUpper(cred.Algorithm) {
	case "", MD5:
		cred.Algorithm = MD5
	case SHA256:
		cred.Algorithm = SHA256
	default:
		return nil, fmt.Errorf("unsupported algorithm %.20q", cred.Algorithm)
	}
	switch cred.QOP {
	case "auth":
		if cred.Cnonce == "" || cred.Nc <= 0 || int64(cred.Nc) > 0xffffffff {
			return nil, errors.New("qop auth needs a cnonce and a nonce count")
		}
	case "":
		if !opts.AllowNoQOP {
			return nil, errors.New("qop must be auth")
		}
	default:
		return nil, errors.New("qop must be auth")
	}
	want := 32
	if cred.Algorithm == SHA256 {
		want = 64
	}
	if len(cred.Response) != want || !isHex(cred.Response) {
		return nil, errors.New("malformed response")
	}
	return cred, nil
}

// Count is the nonce count of cred for [Nonces.Use]: nc, or 1 for a response
// without qop (which has none).
func Count(cred *Credentials) uint32 {
	if cred.QOP == "" {
		return 1
	}
	return uint32(cred.Nc)
}

func newHash(alg string) hash.Hash {
	if alg == SHA256 {
		return sha256.New()
	}
	return md5.New()
}

// sum is hex(H(p0:p1:…)).
func sum(h hash.Hash, parts ...string) string {
	h.Reset()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// HA1 is H(username:realm:password) in lower-case hex for alg (MD5 or
// SHA-256; RFC 7616 §3.4.2), what a credential store keeps instead of the
// password.
func HA1(alg, username, realm, password string) string {
	return sum(newHash(alg), username, realm, password)
}

// Verify reports whether cred's response is right for method and the stored
// ha1 (which must be for cred.Algorithm and cred.Realm), comparing in
// constant time. cred must come from [Parse]. The digest uri, realm and
// nonce are the caller's to check.
func Verify(cred *Credentials, method, ha1 string) bool {
	h := newHash(cred.Algorithm)
	ha2 := sum(h, method, cred.URI)
	var want string
	if cred.QOP == "" {
		want = sum(h, ha1, cred.Nonce, ha2) // RFC 2069
	} else {
		nc := strconv.FormatUint(uint64(uint32(cred.Nc)), 16)
		nc = strings.Repeat("0", 8-len(nc)) + nc
		want = sum(h, ha1, cred.Nonce, nc, cred.Cnonce, cred.QOP, ha2)
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(cred.Response))) == 1
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// Challenge is a WWW-Authenticate / Proxy-Authenticate challenge
// (github.com/icholy/digest's); its String method renders the header value.
type Challenge = digest.Challenge

// IsDigest reports whether an Authorization value is of the Digest scheme.
func IsDigest(v string) bool { return digest.IsDigest(strings.TrimSpace(v)) }

// ChallengeValue is the value of a WWW-Authenticate (or Proxy-Authenticate)
// header offering alg with qop "auth": the same text as [Challenge.String]
// for such a challenge, built without its per-parameter allocations when
// realm and nonce need no escaping (the usual case: a domain name and one
// of our nonces).
func ChallengeValue(realm, nonce, alg string, stale bool) string {
	if !plainQuoted(realm) || !plainQuoted(nonce) {
		c := Challenge{Realm: realm, Nonce: nonce, Algorithm: alg, QOP: []string{"auth"}, Stale: stale}
		return c.String()
	}
	var b strings.Builder
	b.Grow(len(realm) + len(nonce) + len(alg) + 64)
	b.WriteString(`Digest realm="`)
	b.WriteString(realm)
	b.WriteString(`", nonce="`)
	b.WriteString(nonce)
	b.WriteString(`", `)
	if stale {
		b.WriteString("stale=true, ")
	}
	if alg != "" {
		b.WriteString("algorithm=")
		b.WriteString(alg)
		b.WriteString(", ")
	}
	b.WriteString(`qop="auth"`)
	return b.String()
}

// plainQuoted reports whether strconv.Quote would only add the quotes.
func plainQuoted(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
