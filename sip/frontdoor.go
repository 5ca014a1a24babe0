package sip

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// The front door sees every message before sipgo does (udp.go feeds it
// datagrams, transport_tcp.go framed stream messages). It
//
//   - rewrites legal whitespace sipgo misreads (normalize in frontdoor_reader.go),
//   - answers requests sipgo cannot parse with 400 and a reason naming the
//     problem, addressed from what its own reader recovers (RFC 3261 §18.3,
//     §8.2.6.1 for the response fields); silent only without a usable Via,
//   - answers unknown methods with 501 and Allow (RFC 3261 §8.2.1; methods
//     are case-sensitive, so "register" is unknown): sipgo upper-cases the
//     method and would hand "register" to the REGISTER handler,
//   - refuses header text that is not valid UTF-8 with 400, so that nothing
//     of it reaches the store or the admin API,
//
// and answers without a sipgo transaction: the response is written straight
// to the socket or connection. Responses (from phones we sent requests to)
// are only checked for parsing; a broken one is dropped.

// probeParser is the sipgo parser the front door checks messages with (it
// is read-only after construction, so it is shared).
var (
	probeParser        = sip.NewParser()
	sipgoHeaderParsers = sip.DefaultHeadersParser()
)

// knownMethods are the methods sipgo routes (exact case). Any other token
// is an unknown method.
var knownMethods = map[string]bool{
	"INVITE": true, "ACK": true, "CANCEL": true, "BYE": true, "REGISTER": true, "OPTIONS": true,
	"SUBSCRIBE": true, "NOTIFY": true, "REFER": true, "INFO": true, "MESSAGE": true, "PRACK": true,
	"UPDATE": true, "PUBLISH": true,
}

// maxMessage bounds one SIP message over TCP/TLS (64 KiB - 1, sipgo's own
// parser limit); over UDP the datagram is the bound.
const maxMessage = 65535

// verdict is the front door's decision on one message.
type verdict struct {
	pass  []byte // hand these bytes to sipgo (nil: nothing)
	reply []byte // write this response back (nil: nothing)
	// req is pass as parsed, for the fast path (fastpath.go), when it is a
	// REGISTER or OPTIONS request.
	req *sip.Request
}

// frontDoor decides on one complete message: msg is a whole datagram
// (datagram true) or one framed stream message. src is the sender.
func (s *Server) frontDoor(msg []byte, datagram bool, src netip.AddrPort) verdict {
	v, ok := splitMessage(msg)
	if !ok {
		s.tm.frontDoor.WithLabelValues("drop").Inc()
		return verdict{}
	}
	// Over a stream sipgo needs Content-Length to find the end (RFC 3261
	// §20.14 makes it mandatory there); our framing took a missing one as 0.
	missingLength := !datagram && len(v.all("content-length")) == 0
	if v.isResponse() {
		norm := v.normalize()
		if _, err := probeParser.ParseSIP(norm); err != nil || missingLength {
			s.tm.frontDoor.WithLabelValues("drop").Inc()
			return verdict{}
		}
		return verdict{pass: norm}
	}
	refuse := func(code int, reason string) verdict {
		env, ok := readEnvelope(&v)
		if !ok || env.startMethod == "ACK" || (env.startMethod == "" && env.cseqMethod == "ACK") {
			s.tm.frontDoor.WithLabelValues("drop").Inc()
			return verdict{}
		}
		s.tm.frontDoor.WithLabelValues(strconv.Itoa(code)).Inc()
		return verdict{reply: s.frontDoorResponse(env, code, reason, src)}
	}
	if v.bareLF || v.badLine != "" {
		return refuse(400, diagnose(&v, datagram))
	}
	method, _, version, ok := v.requestLine()
	if !ok {
		return refuse(400, diagnose(&v, datagram))
	}
	if !strings.EqualFold(version, "SIP/2.0") {
		// RFC 3261 §7.1 (the version string is case-insensitive), §21.5.7.
		return refuse(505, "Version Not Supported")
	}
	norm := v.normalize()
	parsed, err := probeParser.ParseSIP(norm)
	if err != nil {
		return refuse(400, diagnose(&v, datagram))
	}
	if r := contentLengthProblem(&v, datagram); r != "" {
		return refuse(400, r)
	}
	if missingLength {
		return refuse(400, "Bad Request (Missing Content-Length)")
	}
	if !knownMethods[method] {
		return refuse(501, "Not Implemented")
	}
	if where := invalidUTF8(&v); where != "" {
		return refuse(400, "Bad Request (Invalid UTF-8 in "+where+")")
	}
	if where := badDisplayName(&v); where != "" {
		return refuse(400, "Bad Request (Malformed Display Name in "+where+")")
	}
	out := verdict{pass: norm}
	if method == "REGISTER" || method == "OPTIONS" {
		out.req, _ = parsed.(*sip.Request)
	}
	return out
}

// frontDoorResponse writes a response to a request the front door refuses:
// the request's Via headers (the top one with received and rport filled as
// RFC 3581 asks when rport was sent), From, To with a tag, Call-ID, CSeq,
// our Server header, Allow for 405/501.
func (s *Server) frontDoorResponse(env envelope, code int, reason string, src netip.AddrPort) []byte {
	var b bytes.Buffer
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(reason)
	b.WriteString("\r\n")
	for i, via := range env.vias {
		if i == 0 && src.IsValid() {
			via = fillRport(via, src)
		}
		b.WriteString("Via: " + via + "\r\n")
	}
	if env.from != "" {
		b.WriteString("From: " + env.from + "\r\n")
	}
	if env.to != "" {
		to := env.to
		if !hasTag(to) {
			to += ";tag=" + sip.GenerateTagN(16)
		}
		b.WriteString("To: " + to + "\r\n")
	}
	if env.callID != "" {
		b.WriteString("Call-ID: " + env.callID + "\r\n")
	}
	if env.cseq != "" {
		b.WriteString("CSeq: " + normValue("cseq", env.cseq) + "\r\n")
	}
	if code == 405 || code == 501 {
		b.WriteString("Allow: " + s.allowed() + "\r\n")
	}
	b.WriteString("Server: " + s.cfg.ServerName + "\r\n")
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.Bytes()
}

// hasTag reports a tag parameter outside quotes and angle brackets.
func hasTag(v string) bool {
	angle, found := false, false
	unquoted(v, func(i int, c byte) bool {
		switch {
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case !angle && c == ';':
			rest := strings.TrimLeft(v[i+1:], " \t")
			if len(rest) >= 3 && strings.EqualFold(rest[:3], "tag") {
				r := strings.TrimLeft(rest[3:], " \t")
				found = r == "" || r[0] == '=' || r[0] == ';'
			}
		}
		return !found
	})
	return found
}

// fillRport adds received and the rport value to a Via that asked for them
// with a bare ";rport" (RFC 3581 §4).
func fillRport(via string, src netip.AddrPort) string {
	v := squeeze(via, "/;=,:", false)
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i] // one Via value per line is enough for the top one
	}
	params := strings.Split(v, ";")
	found := false
	for i, p := range params[1:] {
		if strings.EqualFold(p, "rport") {
			params[i+1] = "rport=" + strconv.Itoa(int(src.Port()))
			found = true
		}
	}
	if !found {
		return via
	}
	rest := ""
	if i := strings.IndexByte(squeeze(via, "/;=,:", false), ','); i >= 0 {
		rest = squeeze(via, "/;=,:", false)[i:]
	}
	return strings.Join(params, ";") + ";received=" + src.Addr().Unmap().String() + rest
}
