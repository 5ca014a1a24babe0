package provisioning

import (
	"strings"
	"unicode/utf8"
)

// digestUsername reads the username parameter of a Digest Authorization
// header (RFC 7616 §3.4: `Digest username="…", realm="…", …`) without
// parsing the rest: the handler needs only the username to choose whose
// passwords to check, and authenticate parses the header in full. "" when
// the header is not Digest or has no readable username.
func digestUsername(h string) string {
	const scheme = "digest "
	if len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return ""
	}
	s := h[len(scheme):]
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return ""
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return ""
		}
		name := strings.TrimRight(s[:eq], " \t")
		s = strings.TrimLeft(s[eq+1:], " \t")
		var value string
		if strings.HasPrefix(s, `"`) {
			v, rest, ok := quoted(s)
			if !ok {
				return ""
			}
			value, s = v, rest
		} else {
			end := strings.IndexAny(s, ", \t")
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
		}
		if name == "username" { // as authenticate's parser reads it: lower case
			if !utf8.ValidString(value) {
				return "" // no username is; the full parser would rewrite it
			}
			return value
		}
	}
}

// quoted reads a quoted-string at the start of s (RFC 9110 §5.6.4) and
// returns its value, unescaped, and what follows it.
func quoted(s string) (value, rest string, ok bool) {
	end := 1
	escaped := false
	for ; end < len(s); end++ {
		switch c := s[end]; {
		case c == '\\':
			escaped = true
			end++
		case c == '"':
			v := s[1:end]
			if escaped {
				var b strings.Builder
				for i := 0; i < len(v); i++ {
					if v[i] == '\\' && i+1 < len(v) {
						i++
					}
					b.WriteByte(v[i])
				}
				v = b.String()
			}
			return v, s[end+1:], true
		}
	}
	return "", "", false
}
