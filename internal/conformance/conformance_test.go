package conformance

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

const setDir = "../../sip/testdata/conformance"

var testVars = Vars{Domain: "example.test", User: "1001", Local: "127.0.0.1:5999", Transport: "UDP",
	Branch: "z9hG4bKabc", CallID: "cid@test", Tag: "tag1", CSeq: 7, Contact: "198.51.100.7:5060"}

// Every case of the set loads, has an expectation and a clause, and renders
// to a message with no placeholder left, CRLF line ends and (where it says
// {{clen}}) a Content-Length equal to its body.
func TestSetRenders(t *testing.T) {
	cases, err := Load(setDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Fatalf("%d cases, want every RFC 4475 §3.1.1/§3.1.2 case and the field cases", len(cases))
	}
	for i := range cases {
		c := &cases[i]
		msg := c.Render(testVars)
		if bytes.Contains(msg, []byte("{{")) {
			t.Errorf("%s: placeholder left in:\n%s", c.Name, msg)
		}
		if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%s: a bare LF in the rendered message", c.Name)
		}
		if !bytes.Contains(msg, []byte("\r\n\r\n")) {
			t.Errorf("%s: no empty line after the headers", c.Name)
		}
		if strings.Contains(c.Template, "{{clen}}") {
			head, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
			if !bytes.Contains(append(head, "\r\n"...), []byte(": "+strconv.Itoa(len(body))+"\r\n")) {
				t.Errorf("%s: no Content-Length of %d in:\n%s", c.Name, len(body), head)
			}
		}
		if c.IsRequest() && !strings.Contains(c.Template, "{{branch}}") {
			t.Errorf("%s: a request without a fresh {{branch}}", c.Name)
		}
	}
}

func TestRenderPlaceholders(t *testing.T) {
	c := Case{Template: "A {{userpct}} {{x:ff 00}} {{repeat:3:ab}} {{sp}}| {{unknown}}\n\n"}
	got := string(c.Render(testVars))
	want := "A %31%30%30%31 \xff\x00 ababab  | {{unknown}}\r\n\r\n"
	if got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for name, in := range map[string]string{
		"no expect":     "; rfc: x\nOPTIONS sip:a SIP/2.0\n\n",
		"no rfc":        "; expect: 400\nOPTIONS sip:a SIP/2.0\n\n",
		"bad answer":    "; rfc: x\n; expect: maybe\nOPTIONS sip:a SIP/2.0\n\n",
		"bad key":       "; rfc: x\n; expect: 400\n; colour: red\nOPTIONS sip:a SIP/2.0\n\n",
		"bad transport": "; rfc: x\n; expect: 400\n; transports: sctp\nOPTIONS sip:a SIP/2.0\n\n",
		"no message":    "; rfc: x\n; expect: 400\n",
		"no colon":      "; rfc x\n; expect: 400\nOPTIONS sip:a SIP/2.0\n\n",
	} {
		if _, err := Parse(name, []byte(in)); err == nil {
			t.Errorf("%s: Parse accepted %q", name, in)
		}
	}
	c, err := Parse("ok", []byte("; rfc: RFC 1 §2\n; expect: 400 | 501\n; expect-auth: 200\n; transports: UDP\nOPTIONS sip:a SIP/2.0\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Expect, ",") != "400,501" || strings.Join(c.ExpectAuth, ",") != "200" || !c.Has("udp") || c.Has("tcp") {
		t.Errorf("Parse = %+v", c)
	}
	if m := Modes(&c); len(m) != 2 || m[0] != (Mode{"udp", false}) || m[1] != (Mode{"udp", true}) {
		t.Errorf("Modes = %v", m)
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		expect []string
		got    string
		want   bool
	}{
		{[]string{"400"}, "400", true},
		{[]string{"400"}, "none", false},
		{[]string{"none"}, "none", true},
		{[]string{"405", "501"}, "501", true},
		{[]string{Process}, "407", true},
		{[]string{Process}, "200", true},
		{[]string{Process}, "400", false},
		{[]string{Process}, "500", false},
		{[]string{Process}, "183", false},
		{[]string{Process}, "none", false},
		{[]string{"400", Process}, "400", true},
	} {
		if got := Match(tc.expect, tc.got); got != tc.want {
			t.Errorf("Match(%v, %q) = %v, want %v", tc.expect, tc.got, got, tc.want)
		}
	}
}

// fakeRegistrar answers REGISTER with 100 Trying and a 401 challenge, then
// 200 once an Authorization for user 1001 arrives; "SILENT" requests get no
// answer. It is just enough server to exercise Run's exchange, the digest
// round and the clean-up over UDP and TCP.
type fakeRegistrar struct {
	udp net.PacketConn
	tcp net.Listener
	got chan string // every request's first line and Authorization presence
}

func newFakeRegistrar(t *testing.T) *fakeRegistrar {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistrar{udp: pc, tcp: ln, got: make(chan string, 100)}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, res := range f.answer(buf[:n]) {
				pc.WriteTo(res, addr)
			}
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var msg bytes.Buffer
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						msg.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					for _, res := range f.answer(msg.Bytes()) {
						c.Write(res)
					}
				}
			}()
		}
	}()
	return f
}

func (f *fakeRegistrar) answer(req []byte) [][]byte {
	s := string(req)
	line, _, _ := strings.Cut(s, "\r\n")
	authz := strings.Contains(s, "\r\nAuthorization: Digest ") && strings.Contains(s, `username="1001"`)
	f.got <- line + " auth=" + strconv.FormatBool(authz)
	if strings.HasPrefix(line, "SILENT") {
		return nil
	}
	var via, cseq string
	for _, l := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(l, "Via: "); ok && via == "" {
			via = v
		}
		if v, ok := strings.CutPrefix(l, "CSeq: "); ok {
			cseq = v
		}
	}
	res := func(status, extra string) []byte {
		return []byte("SIP/2.0 " + status + "\r\nVia: " + via + "\r\nCSeq: " + cseq + "\r\n" + extra + "Content-Length: 0\r\n\r\n")
	}
	if !authz {
		return [][]byte{res("100 Trying", ""), res("401 Unauthorized",
			"WWW-Authenticate: Digest realm=\"example.test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n")}
	}
	return [][]byte{res("200 OK", "")}
}

func TestRunFake(t *testing.T) {
	f := newFakeRegistrar(t)
	target := Target{Name: "fake", UDP: f.udp.LocalAddr().String(), TCP: f.tcp.Addr().String(), Domain: "example.test",
		User: "1001", Password: "secret", Timeout: 2 * time.Second, Silence: 200 * time.Millisecond}
	reg := &Case{Name: "reg", RFC: "x", Expect: []string{"401"}, ExpectAuth: []string{"200"}, Template: "REGISTER sip:{{domain}} SIP/2.0\n" +
		"Via: SIP/2.0/{{transport}} {{local}};branch={{branch}}\nCSeq: {{cseq}} REGISTER\nContent-Length: 0\n\n"}
	silent := &Case{Name: "silent", RFC: "x", Expect: []string{None}, Template: "SILENT sip:{{domain}} SIP/2.0\n" +
		"Via: SIP/2.0/{{transport}} {{local}};branch={{branch}}\nCSeq: {{cseq}} SILENT\nContent-Length: 0\n\n"}
	ctx := context.Background()
	for _, tr := range []string{"udp", "tcp"} {
		if r := Run(ctx, target, reg, tr, false); !r.OK || r.Answer() != "401 Unauthorized" {
			t.Errorf("%s without credentials: %+v", tr, r)
		}
		drain(f.got)
		if r := Run(ctx, target, reg, tr, true); !r.OK || r.Got != "200" || r.Err != nil {
			t.Errorf("%s with credentials: %+v", tr, r)
		}
		// REGISTER, REGISTER+auth, then the clean-up: Contact * without and with auth.
		if got := drain(f.got); len(got) != 4 || got[1] != "REGISTER sip:example.test SIP/2.0 auth=true" || got[3] != got[1] {
			t.Errorf("%s: requests seen %q", tr, got)
		}
		start := time.Now()
		if r := Run(ctx, target, silent, tr, false); !r.OK || r.Got != None {
			t.Errorf("%s silent: %+v", tr, r)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s silent case took %v, want about the 200 ms Silence", tr, d)
		}
		drain(f.got)
	}
}

func drain(c chan string) []string {
	var out []string
	for {
		select {
		case s := <-c:
			out = append(out, s)
		case <-time.After(100 * time.Millisecond):
			return out
		}
	}
}

func TestParseResponse(t *testing.T) {
	r := parseResponse([]byte("SIP/2.0 401 Unauthorized here\r\nWWW-Authenticate: Digest realm=\"a\",\r\n nonce=\"b\"\r\nwww-authenticate: Digest x=1\r\n\r\n"))
	if r == nil || r.code != 401 || r.reason != "Unauthorized here" || len(r.headers["www-authenticate"]) != 2 ||
		r.headers["www-authenticate"][0] != `Digest realm="a", nonce="b"` {
		t.Errorf("parseResponse = %+v", r)
	}
	for _, bad := range []string{"", "INVITE sip:a SIP/2.0\r\n\r\n", "SIP/2.0 99 x\r\n\r\n", "SIP/2.0 700 x\r\n\r\n", "SIP/2.0 abc\r\n\r\n"} {
		if r := parseResponse([]byte(bad)); r != nil {
			t.Errorf("parseResponse(%q) = %+v, want nil", bad, r)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	f.Add([]byte("SIP/2.0 200 OK\r\nVia: x\r\n\r\n"))
	f.Add([]byte("SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"a\"\r\n \r\n\r\n"))
	f.Add([]byte("SIP/2.0 4294967701 x\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if r := parseResponse(data); r != nil && (r.code < 100 || r.code > 699) {
			t.Errorf("code %d accepted", r.code)
		}
	})
}

func FuzzParseCase(f *testing.F) {
	cases, _ := Load(setDir)
	for _, c := range cases {
		f.Add([]byte("; rfc: " + c.RFC + "\n; expect: " + strings.Join(c.Expect, "|") + "\n" + c.Template))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz", data)
		if err != nil {
			return
		}
		// Rendering and matching never panic; a placeholder repeats at
		// most 1 MiB.
		msg := c.Render(testVars)
		if n := strings.Count(string(data), "{{"); len(msg) > len(data)+(n+1)<<20 {
			t.Errorf("rendered %d bytes from %d", len(msg), len(data))
		}
		_ = Match(c.Expect, "400")
	})
}
