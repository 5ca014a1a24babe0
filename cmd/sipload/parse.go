package main

import (
	"bytes"
	"errors"
)

// This is a deliberately small SIP response parser: it reads only what a
// REGISTER client needs (status code, Call-ID, CSeq, the digest challenges)
// and never allocates for well-formed input, so the generator spends its CPU
// on the wire and not on parsing. sipgo's full parser costs ~9 µs and ~2 KiB
// per message on this machine (BENCHMARKS.md), which would make the
// generator as expensive as the registrar it measures.

// maxChallenges bounds the WWW-Authenticate headers kept per response (RFC
// 8760 servers send one per algorithm).
const maxChallenges = 4

// challenge is one Digest challenge. The byte slices point into the message
// (or into response.scratch for folded headers) and are valid until the
// buffer is reused.
type challenge struct {
	realm, nonce, opaque, algorithm []byte
	hasQop                          bool // a qop parameter was present
	qopAuth                         bool // ...and it lists "auth"
	stale                           bool
	proxy                           bool // from Proxy-Authenticate (407)
}

// response is the part of a SIP response sipload looks at.
type response struct {
	code        int
	callID      []byte
	cseq        uint32
	cseqMethod  []byte
	chals       [maxChallenges]challenge
	nchal       int
	retryAfter  bool   // a Retry-After header was present
	retryAfterS int    // its delta-seconds (RFC 3261 §20.33), 0 if absent or unreadable
	scratch     []byte // for folded header values; reused
}

var (
	errNotResponse = errors.New("not a SIP response")
	errStatusLine  = errors.New("bad status line")
	errHeader      = errors.New("bad header line")
	errNoCallID    = errors.New("missing Call-ID")
	errCSeq        = errors.New("missing or bad CSeq")
	errChallenge   = errors.New("bad digest challenge")
)

// parseKind names a parse error for the failure report.
func parseKind(err error) string {
	switch {
	case errors.Is(err, errNotResponse):
		return "parse: not a response"
	case errors.Is(err, errStatusLine):
		return "parse: bad status line"
	case errors.Is(err, errNoCallID):
		return "parse: missing Call-ID"
	case errors.Is(err, errCSeq):
		return "parse: bad CSeq"
	case errors.Is(err, errChallenge):
		return "parse: bad challenge"
	default:
		return "parse: bad header"
	}
}

// parseResponse parses one complete SIP message (headers and body) into r.
// Bodies are ignored. Requests (a server may send OPTIONS or NOTIFY) yield
// errNotResponse.
func parseResponse(msg []byte, r *response) error {
	r.code, r.callID, r.cseq, r.cseqMethod, r.nchal, r.retryAfter, r.retryAfterS = 0, nil, 0, nil, 0, false, 0
	r.scratch = r.scratch[:0]
	line, rest, ok := cutLine(msg)
	if !ok {
		return errStatusLine
	}
	if !bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		if bytes.Contains(line, []byte(" SIP/2.0")) {
			return errNotResponse
		}
		return errStatusLine
	}
	line = line[len("SIP/2.0 "):]
	if len(line) < 3 || (len(line) > 3 && line[3] != ' ') {
		return errStatusLine
	}
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return errStatusLine
		}
		r.code = r.code*10 + int(c-'0')
	}
	if r.code < 100 || r.code > 699 {
		return errStatusLine
	}
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errHeader // no empty line ending the headers
		}
		if len(line) == 0 {
			break
		}
		// Folded continuation lines (RFC 3261 §7.3.1).
		if n := foldedLen(rest); n > 0 {
			start := len(r.scratch)
			r.scratch = append(r.scratch, line...)
			for n > 0 {
				var cont []byte
				cont, rest, _ = cutLine(rest)
				r.scratch = append(r.scratch, ' ')
				r.scratch = append(r.scratch, bytes.TrimLeft(cont, " \t")...)
				n = foldedLen(rest)
			}
			line = r.scratch[start:]
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errHeader
		}
		name := bytes.TrimRight(line[:colon], " \t")
		value := trimSpace(line[colon+1:])
		switch {
		case eqFold(name, "call-id") || eqFold(name, "i"):
			if r.callID == nil {
				if len(value) == 0 {
					return errNoCallID
				}
				r.callID = value
			}
		case eqFold(name, "cseq"):
			if r.cseqMethod != nil {
				continue
			}
			n, m, err := parseCSeq(value)
			if err != nil {
				return err
			}
			r.cseq, r.cseqMethod = n, m
		case eqFold(name, "retry-after"):
			r.retryAfter = true
			r.retryAfterS = parseDeltaSeconds(value)
		case eqFold(name, "www-authenticate"), eqFold(name, "proxy-authenticate"):
			if r.nchal == maxChallenges {
				continue
			}
			c := &r.chals[r.nchal]
			if err := parseChallenge(value, c); err != nil {
				return err
			}
			c.proxy = len(name) == len("proxy-authenticate")
			if c.nonce != nil {
				r.nchal++
			}
		}
	}
	if r.callID == nil {
		return errNoCallID
	}
	if r.cseqMethod == nil {
		return errCSeq
	}
	return nil
}

// foldedLen reports whether the next line is a continuation (starts with SP
// or HT and is not the empty line ending the headers).
func foldedLen(rest []byte) int {
	if len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		return 1
	}
	return 0
}

// cutLine splits off the first line (ended by CRLF or a bare LF).
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}

func parseCSeq(v []byte) (uint32, []byte, error) {
	var n uint64
	i := 0
	for ; i < len(v) && v[i] >= '0' && v[i] <= '9'; i++ {
		n = n*10 + uint64(v[i]-'0')
		if n > 1<<32-1 {
			return 0, nil, errCSeq
		}
	}
	if i == 0 || i == len(v) || (v[i] != ' ' && v[i] != '\t') {
		return 0, nil, errCSeq
	}
	m := trimSpace(v[i:])
	if len(m) == 0 {
		return 0, nil, errCSeq
	}
	return uint32(n), m, nil
}

// parseChallenge reads `Digest k=v, k="v", ...` into c. A non-Digest scheme
// leaves c.nonce nil (the caller then skips it).
func parseChallenge(v []byte, c *challenge) error {
	*c = challenge{}
	if len(v) < 6 || !eqFold(v[:6], "digest") || (len(v) > 6 && v[6] != ' ' && v[6] != '\t') {
		return nil
	}
	v = v[6:]
	for {
		v = bytes.TrimLeft(v, " \t,")
		if len(v) == 0 {
			break
		}
		eq := bytes.IndexByte(v, '=')
		if eq <= 0 {
			return errChallenge
		}
		key := bytes.TrimRight(v[:eq], " \t")
		v = bytes.TrimLeft(v[eq+1:], " \t")
		var val []byte
		if len(v) > 0 && v[0] == '"' {
			end := 1
			for ; end < len(v) && v[end] != '"'; end++ {
				if v[end] == '\\' {
					end++
				}
			}
			if end >= len(v) {
				return errChallenge // unterminated quoted string
			}
			val, v = v[1:end], v[end+1:]
		} else {
			end := bytes.IndexByte(v, ',')
			if end < 0 {
				end = len(v)
			}
			val, v = bytes.TrimRight(v[:end], " \t"), v[end:]
		}
		switch {
		case eqFold(key, "realm"):
			c.realm = val
		case eqFold(key, "nonce"):
			c.nonce = val
		case eqFold(key, "opaque"):
			c.opaque = val
		case eqFold(key, "algorithm"):
			c.algorithm = val
		case eqFold(key, "stale"):
			c.stale = eqFold(val, "true")
		case eqFold(key, "qop"):
			c.hasQop = true
			for rest := val; len(rest) > 0; {
				q := rest
				if i := bytes.IndexByte(rest, ','); i >= 0 {
					q, rest = rest[:i], rest[i+1:]
				} else {
					rest = nil
				}
				if eqFold(trimSpace(q), "auth") {
					c.qopAuth = true
				}
			}
		}
	}
	if c.nonce == nil {
		c.nonce = []byte{} // Digest with an empty nonce is still a Digest challenge
	}
	if c.realm == nil {
		return errChallenge
	}
	return nil
}

// pick returns the first challenge usable with alg ("MD5" or "SHA-256"), or nil.
func (r *response) pick(alg string) *challenge {
	for i := 0; i < r.nchal; i++ {
		c := &r.chals[i]
		a := c.algorithm
		if len(a) == 0 {
			a = []byte("MD5")
		}
		if !eqFold(a, alg) {
			continue
		}
		if c.hasQop && !c.qopAuth {
			continue // only auth-int offered
		}
		return c
	}
	return nil
}

func trimSpace(b []byte) []byte { return bytes.Trim(b, " \t") }

// eqFold compares b with an ASCII lower-case s, ignoring case.
func eqFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		d := s[i]
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// framer splits a TCP byte stream into SIP messages using Content-Length.
type framer struct {
	buf []byte
}

var errFrame = errors.New("bad message framing")

// maxMessage bounds one framed message (headers + body).
const maxMessage = 64 << 10

// next returns the next complete message in f.buf, or nil if more bytes are
// needed. The returned slice is valid until the next call to fill/next.
func (f *framer) next() ([]byte, error) {
	// Skip keep-alive CRLFs between messages (RFC 5626 §4.4.1).
	for len(f.buf) > 0 && (f.buf[0] == '\r' || f.buf[0] == '\n') {
		f.buf = f.buf[1:]
	}
	end := bytes.Index(f.buf, []byte("\r\n\r\n"))
	if end < 0 {
		if len(f.buf) > maxMessage {
			return nil, errFrame
		}
		return nil, nil
	}
	hdr := f.buf[:end+2]
	clen := -1
	for rest := hdr; len(rest) > 0; {
		var line []byte
		line, rest, _ = cutLine(rest)
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name := bytes.TrimRight(line[:colon], " \t")
		if eqFold(name, "content-length") || eqFold(name, "l") {
			v := trimSpace(line[colon+1:])
			n := 0
			if len(v) == 0 || len(v) > 6 {
				return nil, errFrame
			}
			for _, c := range v {
				if c < '0' || c > '9' {
					return nil, errFrame
				}
				n = n*10 + int(c-'0')
			}
			clen = n
			break
		}
	}
	if clen < 0 {
		return nil, errFrame // required on stream transports (RFC 3261 §18.3)
	}
	total := end + 4 + clen
	if total > maxMessage {
		return nil, errFrame
	}
	if len(f.buf) < total {
		return nil, nil
	}
	msg := f.buf[:total]
	f.buf = f.buf[total:]
	return msg, nil
}

// parseDeltaSeconds reads the delta-seconds at the start of a Retry-After
// value ("30", "30 (busy)", "30;duration=60"); 0 if there is none. Values
// are capped at one day: a phone would not wait longer in a benchmark.
func parseDeltaSeconds(v []byte) int {
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
		if n > 86400 {
			return 86400
		}
	}
	return n
}
