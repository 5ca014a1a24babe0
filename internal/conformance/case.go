// Package conformance runs the hand-written SIP conformance message set
// (sip/testdata/conformance, modelled on RFC 4475 §3.1.1 and §3.1.2) against
// a running SIP server over UDP and TCP, with and without digest
// credentials, and compares every answer with what the RFCs require.
//
// It is used by sip/conformance_test.go (against an in-process registrar)
// and by cmd/conformance (`make conformance`, against dialtone and Kamailio
// side by side). The file format is described in
// sip/testdata/conformance/README.md.
package conformance

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Case is one message of the set.
type Case struct {
	Name  string // file name without .sip, e.g. "206-unterminated-quote-to"
	Title string
	RFC   string // the clause that decides the answer
	// Expect lists the answers allowed without credentials; ExpectAuth those
	// allowed when the message is sent again with credentials after a 401
	// (nil: the case has no credentialed run).
	Expect, ExpectAuth []string
	Transports         []string // "udp", "tcp"
	Template           string   // the message, LF line ends, with placeholders
}

// Answers a Case can expect besides a status code.
const (
	Process = "process" // any final answer except 400 and 5xx
	None    = "none"    // no answer at all
)

// Load reads every *.sip file of dir, in name order.
func Load(dir string) ([]Case, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.sip"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("conformance: no *.sip files in %s", dir)
	}
	slices.Sort(files)
	cases := make([]Case, 0, len(files))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		c, err := Parse(strings.TrimSuffix(filepath.Base(f), ".sip"), data)
		if err != nil {
			return nil, err
		}
		cases = append(cases, c)
	}
	return cases, nil
}

// Parse reads one case: "; key: value" metadata lines, then the message.
func Parse(name string, data []byte) (Case, error) {
	c := Case{Name: name, Transports: []string{"udp", "tcp"}}
	rest := strings.ReplaceAll(string(data), "\r\n", "\n")
	for strings.HasPrefix(rest, ";") {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		key, value, ok := strings.Cut(strings.TrimPrefix(line, ";"), ":")
		if !ok {
			return c, fmt.Errorf("conformance: %s: metadata line %q is not '; key: value'", name, line)
		}
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(key) {
		case "title":
			c.Title = value
		case "rfc":
			c.RFC = value
		case "expect":
			c.Expect = splitAnswers(value)
		case "expect-auth":
			c.ExpectAuth = splitAnswers(value)
		case "transports":
			c.Transports = strings.Fields(strings.ToLower(value))
		default:
			return c, fmt.Errorf("conformance: %s: unknown metadata key %q", name, key)
		}
	}
	c.Template = rest
	switch {
	case len(c.Expect) == 0:
		return c, fmt.Errorf("conformance: %s: no '; expect:' line", name)
	case c.RFC == "":
		return c, fmt.Errorf("conformance: %s: no '; rfc:' line", name)
	case strings.TrimSpace(c.Template) == "":
		return c, fmt.Errorf("conformance: %s: no message", name)
	}
	for _, a := range slices.Concat(c.Expect, c.ExpectAuth) {
		if _, err := strconv.Atoi(a); err != nil && a != Process && a != None {
			return c, fmt.Errorf("conformance: %s: unknown answer %q", name, a)
		}
	}
	for _, t := range c.Transports {
		if t != "udp" && t != "tcp" {
			return c, fmt.Errorf("conformance: %s: unknown transport %q", name, t)
		}
	}
	return c, nil
}

func splitAnswers(s string) []string {
	var out []string
	for _, a := range strings.Split(s, "|") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Has reports whether the case runs over transport ("udp" or "tcp").
func (c *Case) Has(transport string) bool {
	return slices.Contains(c.Transports, strings.ToLower(transport))
}

// IsRequest reports whether the message is a request (not a stray response).
func (c *Case) IsRequest() bool { return !strings.HasPrefix(c.Template, "SIP/") }

// Match reports whether got ("none" or a status code) is one of expect.
func Match(expect []string, got string) bool {
	code, err := strconv.Atoi(got)
	for _, e := range expect {
		switch {
		case e == got:
			return true
		case e == Process && err == nil && code >= 200 && code != 400 && code < 500:
			return true
		}
	}
	return false
}

// Vars fill a template's placeholders.
type Vars struct {
	Domain, User string
	Local        string // the sending socket, host:port
	Transport    string // "UDP" or "TCP"
	Branch       string // with the z9hG4bK prefix
	CallID, Tag  string
	CSeq         int
	Contact      string // host:port for Contact URIs
}

var placeholder = regexp.MustCompile(`\{\{([^{}]*)\}\}`)

// Render fills in the placeholders and returns the message with CRLF line
// ends, {{clen}} being the length of everything after the first empty line.
func (c *Case) Render(v Vars) []byte {
	tmpl := strings.ReplaceAll(c.Template, "\n", "\r\n")
	out := placeholder.ReplaceAllFunc([]byte(tmpl), func(m []byte) []byte {
		name := string(m[2 : len(m)-2])
		switch name {
		case "domain":
			return []byte(v.Domain)
		case "user":
			return []byte(v.User)
		case "userpct":
			var b strings.Builder
			for i := 0; i < len(v.User); i++ {
				fmt.Fprintf(&b, "%%%02X", v.User[i])
			}
			return []byte(b.String())
		case "local":
			return []byte(v.Local)
		case "transport":
			return []byte(strings.ToUpper(v.Transport))
		case "branch":
			return []byte(v.Branch)
		case "callid":
			return []byte(v.CallID)
		case "tag":
			return []byte(v.Tag)
		case "cseq":
			return []byte(strconv.Itoa(v.CSeq))
		case "contact":
			return []byte(v.Contact)
		case "sp":
			return []byte(" ")
		case "clen":
			return m // filled in below, once the body is known
		}
		if h, ok := strings.CutPrefix(name, "x:"); ok {
			if b, err := hex.DecodeString(strings.ReplaceAll(h, " ", "")); err == nil {
				return b
			}
		}
		if r, ok := strings.CutPrefix(name, "repeat:"); ok {
			ns, text, _ := strings.Cut(r, ":")
			if n, err := strconv.Atoi(ns); err == nil && n >= 0 && n*len(text) <= 1<<20 {
				return bytes.Repeat([]byte(text), n)
			}
		}
		return m // unknown: left as is, visible on the wire
	})
	if i := bytes.Index(out, []byte("\r\n\r\n")); i >= 0 {
		body := len(out) - (i + 4)
		out = bytes.ReplaceAll(out, []byte("{{clen}}"), []byte(strconv.Itoa(body)))
	}
	return out
}
