package main

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// Digest algorithms sipload can answer.
const (
	algMD5    = "MD5"
	algSHA256 = "SHA-256"
)

// hashHex appends the lower-case hex digest of data under alg to dst.
func hashHex(dst []byte, alg string, data []byte) []byte {
	if alg == algSHA256 {
		sum := sha256.Sum256(data)
		return hex.AppendEncode(dst, sum[:])
	}
	sum := md5.Sum(data)
	return hex.AppendEncode(dst, sum[:])
}

// ha1 is H(username:realm:password) (RFC 7616 §3.4.2), lower-case hex.
func ha1(alg, user, realm, password string) []byte {
	return hashHex(nil, alg, []byte(user+":"+realm+":"+password))
}

// ha2 is H(method:uri) for qop=auth or no qop.
func ha2(alg, method, uri string) []byte {
	return hashHex(nil, alg, []byte(method+":"+uri))
}

// digestResponse appends the request-digest to dst (RFC 7616 §3.4.1; with an
// empty qop, the RFC 2069 form H(HA1:nonce:HA2)). scratch is reused to avoid
// allocating; it is returned grown.
func digestResponse(dst, scratch []byte, alg string, ha1, nonce, nc, cnonce, qop, ha2 []byte) ([]byte, []byte) {
	s := append(scratch[:0], ha1...)
	s = append(s, ':')
	s = append(s, nonce...)
	s = append(s, ':')
	if len(qop) > 0 {
		s = append(s, nc...)
		s = append(s, ':')
		s = append(s, cnonce...)
		s = append(s, ':')
		s = append(s, qop...)
		s = append(s, ':')
	}
	s = append(s, ha2...)
	return hashHex(dst, alg, s), s
}

// msgParams are the per-lane parts of a REGISTER: the local address (Via
// sent-by and Contact host), the transport token, and the run id that makes
// Call-IDs, tags and branches unique to this run.
type msgParams struct {
	transport string // "UDP" or "TCP"
	laddr     string // ip:port
	runID     string
	expires   int
	// contact is the host:port of the Contact URI; empty: laddr. A fixed
	// one keeps a user's contact the same across sipload runs (sockets get
	// new ports), so runs refresh one binding instead of adding one each.
	contact string
	// newContact: every registration (callGen) registers a new contact
	// and removes the previous one with expires=0 in the same REGISTER,
	// so every 200 is a change the registrar must write.
	newContact bool
}

// authParams is what goes into an Authorization header.
type authParams struct {
	username                             string
	realm, nonce, uri, opaque, algorithm []byte
	response, cnonce, nc                 []byte
	qop                                  bool
}

// appendRegister builds one REGISTER for user u with the given CSeq (and
// Authorization when a != nil) from a fixed byte template: no SIP stack, no
// allocations once b has grown.
//
// Call-ID is "<user index>-<run id>" (plus "-<generation>" with fresh
// Call-IDs), so a response finds its user without a map lookup.
func appendRegister(b []byte, p *msgParams, u *ua, cseq uint32, callGen uint32, freshCallID bool, a *authParams) []byte {
	freshCallID = freshCallID || p.newContact
	b = append(b, "REGISTER sip:"...)
	b = append(b, u.domain...)
	b = append(b, " SIP/2.0\r\nVia: SIP/2.0/"...)
	b = append(b, p.transport...)
	b = append(b, ' ')
	b = append(b, p.laddr...)
	b = append(b, ";rport;branch=z9hG4bK"...)
	b = append(b, p.runID...)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(u.idx), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(cseq), 10)
	b = append(b, "\r\nMax-Forwards: 70\r\nFrom: <sip:"...)
	b = append(b, u.name...)
	b = append(b, '@')
	b = append(b, u.domain...)
	b = append(b, ">;tag="...)
	b = append(b, p.runID...)
	b = append(b, 't')
	b = strconv.AppendInt(b, int64(u.idx), 10)
	b = append(b, "\r\nTo: <sip:"...)
	b = append(b, u.name...)
	b = append(b, '@')
	b = append(b, u.domain...)
	b = append(b, ">\r\nCall-ID: "...)
	b = appendCallID(b, p.runID, u.idx, callGen, freshCallID)
	b = append(b, "\r\nCSeq: "...)
	b = strconv.AppendUint(b, uint64(cseq), 10)
	b = append(b, " REGISTER\r\nContact: "...)
	b = appendContact(b, p, u, callGen)
	if p.newContact && callGen > 1 {
		b = append(b, "\r\nContact: "...)
		b = appendContact(b, p, u, callGen-1)
		b = append(b, ";expires=0"...)
	}
	b = append(b, "\r\nExpires: "...)
	b = strconv.AppendInt(b, int64(p.expires), 10)
	b = append(b, "\r\nUser-Agent: sipload\r\n"...)
	if a != nil {
		b = append(b, `Authorization: Digest username="`...)
		b = append(b, a.username...)
		b = append(b, `", realm="`...)
		b = append(b, a.realm...)
		b = append(b, `", nonce="`...)
		b = append(b, a.nonce...)
		b = append(b, `", uri="`...)
		b = append(b, a.uri...)
		b = append(b, `", response="`...)
		b = append(b, a.response...)
		b = append(b, '"')
		if len(a.algorithm) > 0 {
			b = append(b, ", algorithm="...)
			b = append(b, a.algorithm...)
		}
		if a.qop {
			b = append(b, `, cnonce="`...)
			b = append(b, a.cnonce...)
			b = append(b, `", qop=auth, nc=`...)
			b = append(b, a.nc...)
		}
		if a.opaque != nil {
			b = append(b, `, opaque="`...)
			b = append(b, a.opaque...)
			b = append(b, '"')
		}
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: 0\r\n\r\n"...)
	return b
}

// appendContact appends <sip:user@host> (user-<run>-<gen> with newContact).
func appendContact(b []byte, p *msgParams, u *ua, gen uint32) []byte {
	b = append(b, "<sip:"...)
	b = append(b, u.name...)
	if p.newContact {
		b = append(b, '-')
		b = append(b, p.runID...)
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(gen), 10)
	}
	b = append(b, '@')
	if p.contact != "" {
		b = append(b, p.contact...)
	} else {
		b = append(b, p.laddr...)
	}
	if p.transport == "TCP" {
		b = append(b, ";transport=tcp"...)
	}
	return append(b, '>')
}

func appendCallID(b []byte, runID string, idx int, gen uint32, fresh bool) []byte {
	b = strconv.AppendInt(b, int64(idx), 10)
	b = append(b, '-')
	b = append(b, runID...)
	if fresh {
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(gen), 10)
	}
	return b
}

// userIndex recovers the user index from a Call-ID built by appendCallID for
// this run; ok is false for anything else.
func userIndex(callID []byte, runID string) (int, bool) {
	n, i := 0, 0
	for ; i < len(callID) && callID[i] >= '0' && callID[i] <= '9'; i++ {
		n = n*10 + int(callID[i]-'0')
		if n > 1<<30 {
			return 0, false
		}
	}
	if i == 0 || i >= len(callID) || callID[i] != '-' {
		return 0, false
	}
	rest := callID[i+1:]
	if len(rest) < len(runID) || string(rest[:len(runID)]) != runID {
		return 0, false
	}
	if rest = rest[len(runID):]; len(rest) > 0 && rest[0] != '-' {
		return 0, false
	}
	return n, true
}
