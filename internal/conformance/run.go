package conformance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/icholy/digest"
)

// Target is a running SIP server and a user it knows.
type Target struct {
	Name     string // for reports, e.g. "dialtone"
	UDP, TCP string // host:port
	Domain   string // the user's domain (the digest realm)
	User     string
	Password string
	// Contact is the host:port the messages put in Contact URIs; default
	// 198.51.100.7:5060 (TEST-NET-2, never reached).
	Contact string
	// Timeout bounds the wait for a final answer (default 2 s); Silence is
	// how long a case expecting no answer listens (default 500 ms).
	Timeout, Silence time.Duration
}

// Result is the outcome of one case on one transport.
type Result struct {
	Case      *Case
	Transport string // "udp" or "tcp"
	Auth      bool   // sent again with credentials after a 401
	Got       string // status code, or "none"
	Reason    string // the reason phrase of the final answer
	OK        bool   // Got is one of Expected()
	Err       error  // a local failure (dial, write): Got is "none"
}

// Expected is the list of answers allowed for this run.
func (r *Result) Expected() []string {
	if r.Auth {
		return r.Case.ExpectAuth
	}
	return r.Case.Expect
}

// Answer is Got with its reason phrase, e.g. "400 Bad Request".
func (r *Result) Answer() string {
	if r.Reason == "" {
		return r.Got
	}
	return r.Got + " " + r.Reason
}

func (t *Target) defaults() {
	if t.Contact == "" {
		t.Contact = "198.51.100.7:5060"
	}
	if t.Timeout == 0 {
		t.Timeout = 2 * time.Second
	}
	if t.Silence == 0 {
		t.Silence = 500 * time.Millisecond
	}
}

// Serves reports whether the target has an address for transport.
func (t *Target) Serves(transport string) bool { return t.addr(strings.ToLower(transport)) != "" }

func (t *Target) addr(transport string) string {
	if transport == "tcp" {
		return t.TCP
	}
	return t.UDP
}

// Mode is one way of sending a case: a transport, with or without credentials.
type Mode struct {
	Transport string // "udp" or "tcp"
	Auth      bool
}

// Modes lists the runs a case has: each of its transports, without and (if
// it has expect-auth) with credentials.
func Modes(c *Case) []Mode {
	var out []Mode
	for _, tr := range c.Transports {
		out = append(out, Mode{tr, false})
		if c.ExpectAuth != nil {
			out = append(out, Mode{tr, true})
		}
	}
	return out
}

// Run sends c to t over transport ("udp" or "tcp"). With auth, a 401 is
// answered with digest credentials (Authorization right after the request
// line, next CSeq, new branch) and the answer to that is the result; a
// binding the credentialed REGISTER created is removed again.
func Run(ctx context.Context, t Target, c *Case, transport string, auth bool) Result {
	t.defaults()
	transport = strings.ToLower(transport)
	res := Result{Case: c, Transport: transport, Auth: auth, Got: None}
	conn, err := dial(ctx, transport, t.addr(transport))
	if err != nil {
		res.Err = err
		return res
	}
	defer conn.Close()

	v := Vars{Domain: t.Domain, User: t.User, Local: conn.LocalAddr().String(), Transport: strings.ToUpper(transport),
		Branch: "z9hG4bK" + token(), CallID: token() + "@conformance", Tag: token(), CSeq: 1, Contact: t.Contact}
	msg := c.Render(v)
	wait := t.Timeout
	if len(c.Expect) == 1 && c.Expect[0] == None && !auth {
		wait = t.Silence
	}
	final, err := conn.exchange(ctx, msg, wait)
	if err != nil {
		res.Err = err
		return res
	}
	if auth && final != nil && final.code == 401 {
		authz, aerr := authorize(final, msg, t)
		if aerr != nil {
			res.Err = aerr
			res.Got, res.Reason = strconv.Itoa(final.code), final.reason
			res.OK = Match(res.Expected(), res.Got)
			return res
		}
		v.CSeq++
		v.Branch = "z9hG4bK" + token()
		msg = insertAfterRequestLine(c.Render(v), "Authorization: "+authz)
		if final, err = conn.exchange(ctx, msg, t.Timeout); err != nil {
			res.Err = err
			return res
		}
		if final != nil && final.code == 200 && strings.HasPrefix(string(msg), "REGISTER ") {
			v.CSeq++
			unregister(ctx, conn, t, v)
		}
	}
	if final != nil {
		res.Got, res.Reason = strconv.Itoa(final.code), final.reason
	}
	res.OK = Match(res.Expected(), res.Got)
	return res
}

// Alive sends a plain OPTIONS and reports an error unless some final answer
// comes back: the server survived what it was sent.
func Alive(ctx context.Context, t Target, transport string) error {
	t.defaults()
	c := &Case{Name: "alive", Template: optionsTemplate}
	r := Run(ctx, t, c, transport, false)
	if r.Err != nil {
		return r.Err
	}
	if r.Got == None {
		return fmt.Errorf("%s over %s: no answer to OPTIONS", t.Name, transport)
	}
	return nil
}

const optionsTemplate = "OPTIONS sip:{{domain}} SIP/2.0\n" +
	"Via: SIP/2.0/{{transport}} {{local}};branch={{branch}};rport\n" +
	"Max-Forwards: 70\n" +
	"From: <sip:{{user}}@{{domain}}>;tag={{tag}}\n" +
	"To: <sip:{{domain}}>\n" +
	"Call-ID: {{callid}}\n" +
	"CSeq: {{cseq}} OPTIONS\n" +
	"Content-Length: 0\n\n"

const unregisterTemplate = "REGISTER sip:{{domain}} SIP/2.0\n" +
	"Via: SIP/2.0/{{transport}} {{local}};branch={{branch}};rport\n" +
	"Max-Forwards: 70\n" +
	"From: <sip:{{user}}@{{domain}}>;tag={{tag}}\n" +
	"To: <sip:{{user}}@{{domain}}>\n" +
	"Call-ID: {{callid}}\n" +
	"CSeq: {{cseq}} REGISTER\n" +
	"Contact: *\n" +
	"Expires: 0\n" +
	"Content-Length: 0\n\n"

// unregister removes every binding of the user (Contact: *, Expires: 0) so
// that the credentialed cases do not pile up contacts (Kamailio's
// configuration allows 10 per user). Failures are ignored: the case's
// answer is already known.
func unregister(ctx context.Context, conn *conn, t Target, v Vars) {
	c := &Case{Template: unregisterTemplate}
	v.Branch = "z9hG4bK" + token()
	msg := c.Render(v)
	final, err := conn.exchange(ctx, msg, t.Timeout)
	if err != nil || final == nil || final.code != 401 {
		return
	}
	authz, err := authorize(final, msg, t)
	if err != nil {
		return
	}
	v.CSeq++
	v.Branch = "z9hG4bK" + token()
	_, _ = conn.exchange(ctx, insertAfterRequestLine(c.Render(v), "Authorization: "+authz), t.Timeout)
}

// authorize answers the first challenge of res that the digest library
// supports, for the method and Request-URI of msg.
func authorize(res *response, msg []byte, t Target) (string, error) {
	line, _, _ := bytes.Cut(msg, []byte("\r\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return "", errors.New("conformance: request line without a Request-URI")
	}
	for _, h := range res.headers["www-authenticate"] {
		chal, err := digest.ParseChallenge(h)
		if err != nil || !digest.CanDigest(chal) {
			continue
		}
		cred, err := digest.Digest(chal, digest.Options{Method: f[0], URI: f[1], Username: t.User, Password: t.Password, Count: 1})
		if err != nil {
			continue
		}
		return cred.String(), nil
	}
	return "", errors.New("conformance: 401 without a usable digest challenge")
}

func insertAfterRequestLine(msg []byte, header string) []byte {
	i := bytes.Index(msg, []byte("\r\n"))
	if i < 0 {
		return msg
	}
	out := make([]byte, 0, len(msg)+len(header)+2)
	out = append(out, msg[:i+2]...)
	out = append(out, header...)
	out = append(out, "\r\n"...)
	return append(out, msg[i+2:]...)
}

func token() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// response is what the runner needs of an answer.
type response struct {
	code    int
	reason  string
	headers map[string][]string // lower-case names, full forms
}

type conn struct {
	net.Conn
	udp bool
	br  *bufio.Reader
}

func dial(ctx context.Context, transport, addr string) (*conn, error) {
	if addr == "" {
		return nil, fmt.Errorf("conformance: no %s address", transport)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, transport, addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, udp: transport == "udp", br: bufio.NewReaderSize(c, 65536)}, nil
}

// exchange writes msg and reads messages until a final response arrives
// (returned), wait passes or the connection ends (nil, nil).
func (c *conn) exchange(ctx context.Context, msg []byte, wait time.Duration) (*response, error) {
	deadline := time.Now().Add(wait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(msg); err != nil {
		if c.udp {
			return nil, err
		}
		return nil, nil // the server closed the stream before we finished: no answer
	}
	for {
		data, err := c.read()
		if err != nil {
			return nil, nil // timeout or closed: no (more) answers
		}
		res := parseResponse(data)
		if res == nil || res.code < 200 {
			continue // a provisional answer, or something that is not a response
		}
		return res, nil
	}
}

func (c *conn) read() ([]byte, error) {
	if c.udp {
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
	// One message from the stream: headers up to the empty line, then
	// Content-Length octets. Leading CRLFs (keepalives) are skipped.
	var head bytes.Buffer
	clen := 0
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if strings.TrimSpace(line) == "" {
			if head.Len() == 0 {
				continue
			}
			head.WriteString(line)
			break
		}
		head.WriteString(line)
		name, value, ok := strings.Cut(line, ":")
		if n := strings.ToLower(strings.TrimSpace(name)); ok && (n == "content-length" || n == "l") {
			clen, _ = strconv.Atoi(strings.TrimSpace(value))
		}
		if head.Len() > 1<<16 {
			return nil, errors.New("conformance: response header too long")
		}
	}
	if clen < 0 || clen > 1<<16 {
		return nil, errors.New("conformance: bad Content-Length in a response")
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	return append(head.Bytes(), body...), nil
}

// parseResponse reads the status line and the headers of a response
// (unfolding continuation lines); nil if data is not a response.
func parseResponse(data []byte) *response {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(strings.ReplaceAll(string(head), "\r\n", "\n"), "\n")
	status, ok := strings.CutPrefix(lines[0], "SIP/2.0 ")
	if !ok {
		return nil
	}
	codeStr, reason, _ := strings.Cut(status, " ")
	code, err := strconv.Atoi(codeStr)
	if err != nil || code < 100 || code > 699 {
		return nil
	}
	res := &response{code: code, reason: strings.TrimSpace(reason), headers: map[string][]string{}}
	var unfolded []string
	for _, l := range lines[1:] {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(unfolded) > 0 {
			unfolded[len(unfolded)-1] += " " + strings.TrimSpace(l)
			continue
		}
		unfolded = append(unfolded, l)
	}
	for _, l := range unfolded {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		n := strings.ToLower(strings.TrimSpace(name))
		res.headers[n] = append(res.headers[n], strings.TrimSpace(value))
	}
	return res
}
