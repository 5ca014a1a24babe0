package sip

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file is the front door's own reader: a small, strict reading of a
// message's framing (RFC 3261 §7: start line, header fields, empty line,
// body) that needs nothing from sipgo. It serves two purposes: it rewrites
// legal whitespace that sipgo's parser misreads into the canonical form
// (normalize), and when sipgo cannot parse a request it recovers what a 400
// needs (Via, From, To, Call-ID, CSeq) and names the problem (diagnose).

// msgView is a message split into its parts. Header values are unfolded
// (RFC 3261 §7.3.1: a line starting with SP or HTAB continues the previous
// one) and trimmed.
type msgView struct {
	start   string
	fields  []field
	body    []byte
	bareLF  bool   // lines end in LF without CR (RFC 3261 §7 requires CRLF)
	badLine string // the name (or "Header") of a line that is not "name: value"

	raw       []byte // the message as split (leading CRLFs removed)
	canonical bool   // every header line is already "Name: value", unfolded
}

type field struct {
	name  string // as written, e.g. "v" or "Via"
	canon string // lower-case long form, e.g. "via"
	value string
}

// compactForms maps RFC 3261 §7.3.3 (and extension) compact names to the long form.
var compactForms = map[string]string{
	"a": "accept-contact", "b": "referred-by", "c": "content-type", "d": "request-disposition",
	"e": "content-encoding", "f": "from", "i": "call-id", "j": "reject-contact", "k": "supported",
	"l": "content-length", "m": "contact", "n": "identity-info", "o": "event", "r": "refer-to",
	"s": "subject", "t": "to", "u": "allow-events", "v": "via", "x": "session-expires", "y": "identity",
}

func canonName(name string) string {
	// The names every REGISTER carries, as phones write them: no allocation.
	switch name {
	case "Via":
		return "via"
	case "From":
		return "from"
	case "To":
		return "to"
	case "Call-ID":
		return "call-id"
	case "CSeq":
		return "cseq"
	case "Contact":
		return "contact"
	case "Max-Forwards":
		return "max-forwards"
	case "Expires":
		return "expires"
	case "User-Agent":
		return "user-agent"
	case "Authorization":
		return "authorization"
	case "Content-Length":
		return "content-length"
	case "Allow":
		return "allow"
	case "Supported":
		return "supported"
	}
	l := strings.ToLower(name)
	if long, ok := compactForms[l]; ok {
		return long
	}
	return l
}

// splitMessage splits msg into a view. ok is false when msg has no
// complete header section (no empty line) or no start line.
func splitMessage(msg []byte) (v msgView, ok bool) {
	for len(msg) >= 2 && msg[0] == '\r' && msg[1] == '\n' {
		msg = msg[2:]
	}
	end, sepLen := headerEnd(msg)
	if end < 0 {
		return v, false
	}
	head := string(msg[:end])
	v.raw, v.body = msg, msg[end+sepLen:]
	lines, crlf := splitLines(head)
	v.bareLF = sepLen != 4 || !crlf
	v.canonical = !v.bareLF
	if len(lines) == 0 || lines[0] == "" {
		return v, false
	}
	v.start = lines[0]
	var cont []string // continuation lines of the last field, joined at the end
	flush := func() {
		if len(cont) > 0 && len(v.fields) > 0 {
			f := &v.fields[len(v.fields)-1]
			if f.value != "" {
				cont = append([]string{f.value}, cont...)
			}
			f.value = strings.Join(cont, " ")
		}
		cont = cont[:0]
	}
	for _, l := range lines[1:] {
		if l == "" {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(v.fields) == 0 {
				v.badLine = "Start-Line"
				continue
			}
			if c := strings.Trim(l, " \t"); c != "" {
				cont = append(cont, c)
			}
			v.canonical = false
			continue
		}
		flush()
		name, value, found := strings.Cut(l, ":")
		trimmedName := strings.TrimRight(name, " \t")
		if !found || trimmedName == "" || !isToken(trimmedName) {
			if v.badLine == "" {
				v.badLine = "Header"
			}
			v.canonical = false
			continue
		}
		f := field{name: trimmedName, canon: canonName(trimmedName), value: strings.Trim(value, " \t")}
		if len(trimmedName) != len(name) || (value != "" && (value[0] != ' ' || value[1:] != f.value)) || normValue(f.canon, f.value) != f.value {
			v.canonical = false
		}
		v.fields = append(v.fields, f)
	}
	flush()
	return v, true
}

// headerEnd finds the empty line ending the header section: the index where
// it starts and the length of the separator (4 for CRLFCRLF, 2 for LFLF).
func headerEnd(msg []byte) (int, int) { return headerEndFrom(msg, 0) }

// headerEndFrom is headerEnd for a buffer known to hold no end before from.
func headerEndFrom(msg []byte, from int) (int, int) {
	from = max(0, min(from-3, len(msg)))
	i := bytes.Index(msg[from:], []byte("\r\n\r\n"))
	j := bytes.Index(msg[from:], []byte("\n\n"))
	if i >= 0 {
		i += from
	}
	if j >= 0 {
		j += from
	}
	switch {
	case i >= 0 && (j < 0 || i < j):
		return i, 4
	case j >= 0:
		if j > 0 && msg[j-1] == '\r' {
			// "\r\n\n": a CRLF line followed by a bare LF.
			return j - 1, 3
		}
		return j, 2
	}
	return -1, 0
}

// splitLines splits the header section into lines; crlf reports that each
// one ended in CRLF (the last one's end is the separator, checked apart).
func splitLines(head string) (lines []string, crlf bool) {
	lines = strings.Split(head, "\n")
	crlf = true
	for i, l := range lines {
		if i < len(lines)-1 && !strings.HasSuffix(l, "\r") {
			crlf = false
		}
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines, crlf
}

// isToken reports whether s is an RFC 3261 §25.1 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar(s[i]) {
			return false
		}
	}
	return true
}

func tokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-.!%*_+`'~", c) >= 0
}

// all returns every value of the header canon.
func (v *msgView) all(canon string) []string {
	var out []string
	for _, f := range v.fields {
		if f.canon == canon {
			out = append(out, f.value)
		}
	}
	return out
}

// requestLine splits a request line; ok is false for anything that is not
// exactly Method SP Request-URI SP SIP-Version (RFC 3261 §7.1).
func (v *msgView) requestLine() (method, uri, version string, ok bool) {
	parts := strings.Split(v.start, " ")
	if len(parts) != 3 || !isToken(parts[0]) || parts[1] == "" || strings.ContainsAny(parts[1], "<>\t") ||
		!strings.HasPrefix(strings.ToUpper(parts[2]), "SIP/") {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func (v *msgView) isResponse() bool { return strings.HasPrefix(v.start, "SIP/") }

// method is the request line's first token, as written ("" if none).
func (v *msgView) method() string {
	m, _, _ := strings.Cut(v.start, " ")
	if !isToken(m) {
		return ""
	}
	return m
}

// normalize rebuilds msg with every header on one line as "Name: value",
// values unfolded and, where sipgo's parser misreads legal whitespace, with
// that whitespace removed: around the separators of Via (RFC 3261 §20.42,
// SLASH/SEMI/EQUAL/COMMA/COLON allow SWS), around the parameters of
// name-addr headers, and between CSeq's number and method (LWS).
func (v *msgView) normalize() []byte {
	if v.canonical {
		return v.raw
	}
	n := len(v.start) + len(v.body) + 4
	for _, f := range v.fields {
		n += len(f.name) + len(f.value) + 4
	}
	var b bytes.Buffer
	b.Grow(n)
	b.WriteString(v.start)
	b.WriteString("\r\n")
	for _, f := range v.fields {
		b.WriteString(f.name)
		b.WriteByte(':')
		if val := normValue(f.canon, f.value); val != "" {
			b.WriteByte(' ')
			b.WriteString(val)
		}
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(v.body)
	return b.Bytes()
}

func normValue(canon, value string) string {
	switch canon {
	case "via":
		return squeeze(value, "/;=,:", false)
	case "from", "to", "contact", "route", "record-route", "reply-to", "refer-to", "referred-by",
		"p-asserted-identity", "p-preferred-identity":
		return squeeze(value, ";=,", true)
	case "cseq":
		if i := strings.IndexByte(value, ' '); i > 0 && i < len(value)-1 && value[i+1] != ' ' &&
			!strings.ContainsRune(value, '\t') && strings.IndexByte(value[i+1:], ' ') < 0 {
			return value // already "number method"
		}
		num, method, ok := strings.Cut(value, " ")
		if i := strings.IndexByte(value, '\t'); i >= 0 && (!ok || i < len(num)) {
			num, method, ok = value[:i], value[i+1:], true
		}
		if ok {
			return num + " " + strings.Trim(method, " \t")
		}
	}
	return value
}

// squeeze collapses runs of blanks outside quoted strings to one space and
// drops blanks next to any of seps. With angles, text inside <...> is left
// alone (a URI has no blanks; one with them stays invalid).
func squeeze(s, seps string, angles bool) string {
	if squeezed(s, seps, angles) {
		return s
	}
	return squeezeSlow(s, seps, angles)
}

// squeezeSlow is squeeze building the result.
func squeezeSlow(s, seps string, angles bool) string {
	var b strings.Builder
	b.Grow(len(s))
	inQuote, inAngle, pendingSpace := false, false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			b.WriteByte(c)
			if c == '\\' && i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			} else if c == '"' {
				inQuote = false
			}
			continue
		case inAngle:
			b.WriteByte(c)
			if c == '>' {
				inAngle = false
			}
			continue
		}
		if c == ' ' || c == '\t' {
			pendingSpace = true
			continue
		}
		if pendingSpace {
			pendingSpace = false
			prev := byte(0)
			if str := b.String(); str != "" {
				prev = str[len(str)-1]
			}
			if prev != 0 && strings.IndexByte(seps, prev) < 0 && strings.IndexByte(seps, c) < 0 {
				b.WriteByte(' ')
			}
		}
		b.WriteByte(c)
		switch {
		case c == '"':
			inQuote = true
		case c == '<' && angles:
			inAngle = true
		}
	}
	return b.String()
}

// squeezed reports whether squeeze would return s unchanged: every run of
// blanks outside quoted strings (and angle brackets with angles) is one
// space between two characters that are not separators.
func squeezed(s, seps string, angles bool) bool {
	inQuote, inAngle := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
			continue
		case inAngle:
			if c == '>' {
				inAngle = false
			}
			continue
		}
		switch {
		case c == '\t':
			return false
		case c == ' ':
			if i == 0 || i == len(s)-1 || s[i-1] == 0 || s[i+1] == ' ' || s[i+1] == '\t' ||
				strings.IndexByte(seps, s[i-1]) >= 0 || strings.IndexByte(seps, s[i+1]) >= 0 {
				return false
			}
		case c == '"':
			inQuote = true
		case c == '<' && angles:
			inAngle = true
		}
	}
	return true
}

// envelope is what the front door copies into a response it writes itself.
type envelope struct {
	vias                    []string // every Via value, top first
	from, to, callID, cseq  string
	cseqMethod, startMethod string
}

// readEnvelope recovers the fields a response needs. ok is false when no
// usable top Via exists (then nothing can be answered).
func readEnvelope(v *msgView) (env envelope, ok bool) {
	for _, f := range v.fields {
		switch f.canon {
		case "via":
			if safeValue(f.value) {
				env.vias = append(env.vias, f.value)
			}
		case "from":
			env.from = firstSafe(env.from, f)
		case "to":
			env.to = firstSafe(env.to, f)
		case "call-id":
			env.callID = firstSafe(env.callID, f)
		case "cseq":
			env.cseq = firstSafe(env.cseq, f)
		}
	}
	if env.cseq != "" {
		if _, m, found := strings.Cut(normValue("cseq", env.cseq), " "); found {
			env.cseqMethod = m
		}
	}
	env.startMethod = v.method()
	if len(env.vias) == 0 || !viaUsable(env.vias[0]) {
		return env, false
	}
	return env, true
}

// firstSafe keeps the first value of a header that can be echoed: one
// sipgo parses on its own, so the client can read our answer. A response
// without, say, a broken From is still better than none.
func firstSafe(have string, f field) string {
	if have != "" || !safeValue(f.value) {
		return have
	}
	v := normValue(f.canon, f.value)
	probe := "SIP/2.0 400 Probe\r\n" + f.canon + ": " + v + "\r\n\r\n"
	if _, err := probeParser.ParseSIP([]byte(probe)); err != nil {
		return ""
	}
	return v
}

// safeValue accepts a header value we may echo: bounded, no control
// characters other than HTAB.
func safeValue(s string) bool {
	if s == "" || len(s) > maxEchoLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// maxEchoLen bounds one header value copied into a front-door response.
const maxEchoLen = 2048

// viaUsable checks the top Via strictly enough that a response can be
// matched by the client: "SIP/2.0/<transport> <sent-by>" (RFC 3261 §20.42).
func viaUsable(via string) bool {
	via = squeeze(via, "/;=,:", false)
	proto, rest, ok := strings.Cut(via, " ")
	if !ok || !strings.HasPrefix(strings.ToUpper(proto), "SIP/2.0/") || !isToken(proto[len("SIP/2.0/"):]) {
		return false
	}
	host := rest
	if i := strings.IndexAny(host, ";,"); i >= 0 {
		host = host[:i]
	}
	return host != "" && !strings.ContainsAny(host, " \"<>")
}

// diagnose names what is wrong with a message sipgo refused, as a reason
// phrase. datagram: the body is the rest of a UDP datagram, so a
// Content-Length beyond it is an error of its own (RFC 3261 §18.3).
func diagnose(v *msgView, datagram bool) string {
	if v.bareLF {
		return "Bad Request (Lines Must End In CRLF)"
	}
	if v.badLine != "" {
		return "Bad Request (Malformed " + v.badLine + " Line)"
	}
	if !v.isResponse() {
		if _, _, _, ok := v.requestLine(); !ok {
			return "Bad Request (Malformed Request-Line)"
		}
	}
	if r := contentLengthProblem(v, datagram); r != "" {
		return r
	}
	for _, f := range v.fields {
		if unbalancedQuotes(f.value) {
			return "Bad Request (Unterminated Quoted String in " + displayName(f) + ")"
		}
	}
	for _, f := range v.fields {
		switch f.canon {
		case "via", "from", "to", "contact", "route", "record-route":
			if badIPv6Reference(f.value) {
				return "Bad Request (Malformed IPv6 Reference in " + displayName(f) + ")"
			}
		}
	}
	// Find the header sipgo stumbles on, one at a time.
	for _, f := range v.fields {
		if _, ok := sipgoHeaderParsers[strings.ToLower(f.name)]; !ok {
			continue
		}
		probe := "OPTIONS sip:probe.invalid SIP/2.0\r\n" + f.name + ": " + normValue(f.canon, f.value) + "\r\n\r\n"
		if _, err := probeParser.ParseSIP([]byte(probe)); err != nil {
			return "Bad Request (Malformed " + displayName(f) + ")"
		}
	}
	if !v.isResponse() {
		_, uri, _, _ := v.requestLine()
		probe := "OPTIONS " + uri + " SIP/2.0\r\n\r\n"
		if _, err := probeParser.ParseSIP([]byte(probe)); err != nil {
			return "Bad Request (Malformed Request-URI)"
		}
	}
	return "Bad Request"
}

// contentLengthProblem checks Content-Length (RFC 3261 §20.14, §18.3):
// digits, one value, and over UDP not more than the datagram holds.
func contentLengthProblem(v *msgView, datagram bool) string {
	vals := v.all("content-length")
	if len(vals) == 0 {
		return ""
	}
	n, err := strconv.ParseUint(vals[0], 10, 32)
	if err != nil || !allDigits(vals[0]) {
		return "Bad Request (Malformed Content-Length)"
	}
	for _, o := range vals[1:] {
		if o != vals[0] {
			return "Bad Request (Conflicting Content-Length)"
		}
	}
	if datagram && n > uint64(len(v.body)) {
		return "Bad Request (Content-Length Exceeds Datagram)"
	}
	return ""
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// unquoted calls f with the index and value of every octet of s outside a
// quoted string (RFC 3261 §25.1 quoted-string with its quoted-pair escapes;
// the quote marks themselves are not passed), until f returns false. It
// reports whether s ends inside a quoted string (false after an early stop).
func unquoted(s string, f func(i int, c byte) bool) (open bool) {
	in := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case in && c == '\\':
			i++
		case c == '"':
			in = !in
		case in:
		case !f(i, c):
			return false
		}
	}
	return in
}

// unbalancedQuotes reports a quoted string that never ends.
func unbalancedQuotes(s string) bool {
	return unquoted(s, func(int, byte) bool { return true })
}

// badIPv6Reference reports a '[' without its ']' (or the reverse) outside
// quoted strings: RFC 3261 §25.1 IPv6reference = "[" IPv6address "]".
func badIPv6Reference(s string) bool {
	bad, depth := false, 0
	unquoted(s, func(_ int, c byte) bool {
		switch {
		case c == '[' && depth > 0, c == ']' && depth == 0:
			bad = true
			return false
		case c == '[':
			depth++
		case c == ']':
			depth--
		}
		return true
	})
	return bad || depth != 0
}

// displayName is the header's long name for a reason phrase ("Via" for "v").
func displayName(f field) string {
	if len(f.name) == 1 {
		if long, ok := compactForms[strings.ToLower(f.name)]; ok {
			return titleCase(long)
		}
	}
	if len(f.name) > 40 {
		return "Header"
	}
	return f.name
}

func titleCase(s string) string {
	b := []byte(s)
	up := true
	for i, c := range b {
		if up && c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		up = c == '-'
	}
	return strings.Replace(string(b), "Call-Id", "Call-ID", 1)
}

// invalidUTF8 names the first part of the header section that is not valid
// UTF-8 ("" when all of it is). RFC 3261's grammar only admits well-formed
// UTF-8 (UTF8-NONASCII) in a message's text; the body is not checked.
func invalidUTF8(v *msgView) string {
	if !utf8.ValidString(v.start) {
		return "Request-Line"
	}
	for _, f := range v.fields {
		if !utf8.ValidString(f.value) {
			return displayName(f)
		}
	}
	return ""
}

// badDisplayName names the first name-addr header whose display name is
// neither tokens separated by LWS nor one quoted string (RFC 3261 §25.1,
// display-name = *(token LWS) / quoted-string; RFC 4475 §3.1.2.15), "" if
// none.
func badDisplayName(v *msgView) string {
	for _, f := range v.fields {
		switch f.canon {
		case "from", "to":
			if !displayNameOK(f.value) {
				return displayName(f)
			}
		case "contact", "route", "record-route", "reply-to":
			for _, part := range splitValues(f.value) {
				if !displayNameOK(part) {
					return displayName(f)
				}
			}
		}
	}
	return ""
}

// displayNameOK checks the text before '<' of one name-addr (true for an
// addr-spec without angle brackets).
func displayNameOK(value string) bool {
	ok := true
	unquoted(value, func(i int, c byte) bool {
		if c == '<' {
			ok = displayTextOK(strings.Trim(value[:i], " \t"))
			return false
		}
		return true
	})
	return ok
}

func displayTextOK(d string) bool {
	if d == "" {
		return true
	}
	if d[0] == '"' {
		// One quoted string, nothing after it.
		for i := 1; i < len(d); i++ {
			switch d[i] {
			case '\\':
				i++
			case '"':
				return i == len(d)-1
			}
		}
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; c != ' ' && c != '\t' && !tokenChar(c) {
			return false
		}
	}
	return true
}

// splitValues splits a header value at commas outside quoted strings and
// angle brackets.
func splitValues(value string) []string {
	var out []string
	angle, start := false, 0
	unquoted(value, func(i int, c byte) bool {
		switch {
		case c == '<':
			angle = true
		case c == '>':
			angle = false
		case c == ',' && !angle:
			out = append(out, value[start:i])
			start = i + 1
		}
		return true
	})
	return append(out, value[start:])
}
