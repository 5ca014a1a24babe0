package digest

import (
	"strconv"

	"github.com/icholy/digest"
)

// parseCredentials is digest.ParseCredentials with a fast path: values in
// the shape every phone sends (ASCII, no backslash escapes, single spaces)
// are read in place, without the library's reader and per-character
// allocations; anything else goes to the library, so the result (and any
// error) is always the library's. FuzzParseCredentials checks that both
// agree wherever the fast path answers.
func parseCredentials(s string) (*Credentials, error) {
	if c, ok := parseCredentialsFast(s); ok {
		return c, nil
	}
	return digest.ParseCredentials(s)
}

// parseCredentialsFast reads s; ok is false when it is not in the simple
// shape (then the caller uses the library).
func parseCredentialsFast(s string) (c *Credentials, ok bool) {
	if !digest.IsDigest(s) {
		return nil, false
	}
	s = s[len(digest.Prefix):]
	c = new(Credentials)
	i := 0
	skip := func() {
		for i < len(s) && s[i] == ' ' {
			i++
		}
	}
	ident := func() string {
		start := i
		for i < len(s) {
			b := s[i]
			if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-') {
				break
			}
			i++
		}
		return s[start:i]
	}
	for first := true; ; first = false {
		skip()
		if i == len(s) {
			return c, true
		}
		if !first {
			if s[i] != ',' {
				return nil, false
			}
			i++
			skip()
		}
		key := ident()
		if key == "" {
			return nil, false
		}
		skip()
		if i == len(s) || s[i] != '=' {
			return nil, false
		}
		i++
		skip()
		var value string
		if i < len(s) && s[i] == '"' {
			start := i + 1
			j := start
			for j < len(s) && s[j] != '"' {
				if b := s[j]; b == '\\' || b >= 0x80 {
					return nil, false
				}
				j++
			}
			if j == len(s) {
				return nil, false
			}
			value, i = s[start:j], j+1
		} else {
			value = ident()
		}
		switch key {
		case "username":
			c.Username = value
		case "realm":
			c.Realm = value
		case "nonce":
			c.Nonce = value
		case "uri":
			c.URI = value
		case "response":
			c.Response = value
		case "algorithm":
			c.Algorithm = value
		case "cnonce":
			c.Cnonce = value
		case "opaque":
			c.Opaque = value
		case "qop":
			c.QOP = value
		case "nc":
			nc, err := strconv.ParseInt(value, 16, 32)
			if err != nil {
				return nil, false // the library words the error
			}
			c.Nc = int(nc)
		case "userhash":
			return nil, false // refused anyway; the library decides
		}
	}
}
