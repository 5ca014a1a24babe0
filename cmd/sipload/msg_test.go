package main

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/google/go-cmp/cmp"
	"github.com/icholy/digest"
)

func testUser() *ua {
	return &ua{idx: 17, name: "20017", password: "pw-20017", domain: "example.test", uri: []byte("sip:example.test")}
}

func TestAppendRegister(t *testing.T) {
	p := &msgParams{transport: "UDP", laddr: "127.0.0.1:40000", runID: "r1", expires: 600}
	u := testUser()
	got := string(appendRegister(nil, p, u, 5, 3, false, nil))
	want := "REGISTER sip:example.test SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:40000;rport;branch=z9hG4bKr1.17.5\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:20017@example.test>;tag=r1t17\r\n" +
		"To: <sip:20017@example.test>\r\n" +
		"Call-ID: 17-r1\r\n" +
		"CSeq: 5 REGISTER\r\n" +
		"Contact: <sip:20017@127.0.0.1:40000>\r\n" +
		"Expires: 600\r\n" +
		"User-Agent: sipload\r\n" +
		"Content-Length: 0\r\n\r\n"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appendRegister() mismatch (-want +got):\n%s", diff)
	}

	// The message must be one a real SIP stack parses, with the fields intact.
	msg, err := sip.ParseMessage([]byte(got))
	if err != nil {
		t.Fatalf("sipgo cannot parse it: %v", err)
	}
	req := msg.(*sip.Request)
	if req.CallID().Value() != "17-r1" || req.CSeq().SeqNo != 5 || req.Via().Params.GetOr("branch", "") != "z9hG4bKr1.17.5" {
		t.Errorf("sipgo read Call-ID %q CSeq %d branch %q", req.CallID().Value(), req.CSeq().SeqNo, req.Via().Params.GetOr("branch", ""))
	}
	if idx, ok := userIndex([]byte(req.CallID().Value()), "r1"); !ok || idx != 17 {
		t.Errorf("userIndex() = %d, %v; want 17, true", idx, ok)
	}

	p.transport = "TCP"
	got = string(appendRegister(nil, p, u, 6, 4, true, nil))
	for _, s := range []string{"Via: SIP/2.0/TCP 127.0.0.1:40000;", "Call-ID: 17-r1-4\r\n", "Contact: <sip:20017@127.0.0.1:40000;transport=tcp>\r\n"} {
		if !strings.Contains(got, s) {
			t.Errorf("TCP REGISTER with a fresh Call-ID lacks %q:\n%s", s, got)
		}
	}
	if idx, ok := userIndex([]byte("17-r1-4"), "r1"); !ok || idx != 17 {
		t.Errorf("userIndex(fresh) = %d, %v; want 17, true", idx, ok)
	}
}

// TestNewContactWorkload: every registration registers a new contact and
// removes the previous one in the same REGISTER (a change the registrar must
// write), on a new Call-ID; a fixed -contact host replaces the socket address.
func TestNewContactWorkload(t *testing.T) {
	p := &msgParams{transport: "UDP", laddr: "127.0.0.1:40000", runID: "r1", expires: 600, contact: "192.0.2.1:5999", newContact: true}
	u := testUser()
	first := string(appendRegister(nil, p, u, 1, 1, false, nil))
	if !strings.Contains(first, "Contact: <sip:20017-r1-1@192.0.2.1:5999>\r\nExpires") || !strings.Contains(first, "Call-ID: 17-r1-1\r\n") {
		t.Errorf("first registration:\n%s", first)
	}
	got := string(appendRegister(nil, p, u, 7, 4, false, nil))
	msg, err := sip.ParseMessage([]byte(got))
	if err != nil {
		t.Fatalf("sipgo cannot parse it: %v\n%s", err, got)
	}
	req := msg.(*sip.Request)
	var contacts []string
	for _, h := range req.GetHeaders("Contact") {
		contacts = append(contacts, h.Value())
	}
	want := []string{"<sip:20017-r1-4@192.0.2.1:5999>", "<sip:20017-r1-3@192.0.2.1:5999>;expires=0"}
	if diff := cmp.Diff(want, contacts); diff != "" || req.CallID().Value() != "17-r1-4" {
		t.Errorf("Call-ID %q, contacts (-want +got):\n%s", req.CallID().Value(), diff)
	}

	p.newContact = false
	got = string(appendRegister(nil, p, u, 8, 5, false, nil))
	if !strings.Contains(got, "Contact: <sip:20017@192.0.2.1:5999>\r\n") || !strings.Contains(got, "Call-ID: 17-r1\r\n") {
		t.Errorf("refresh with a fixed contact host:\n%s", got)
	}
}

func TestUserIndexRejects(t *testing.T) {
	for _, s := range []string{"", "17", "17-r2", "17-r1x", "x-r1", "-r1", "99999999999-r1"} {
		if idx, ok := userIndex([]byte(s), "r1"); ok {
			t.Errorf("userIndex(%q) = %d, true; want false", s, idx)
		}
	}
}

// TestDigestMatchesReference checks sipload's precomputed-HA1 digest against
// icholy/digest (what dialtone verifies with), for both algorithms, with and
// without qop.
func TestDigestMatchesReference(t *testing.T) {
	for _, alg := range []string{algMD5, algSHA256} {
		for _, qop := range []bool{true, false} {
			u := testUser()
			p := &msgParams{transport: "UDP", laddr: "127.0.0.1:40000", runID: "r1", expires: 600}
			h1 := ha1(alg, u.name, "example.test", u.password)
			h2 := ha2(alg, "REGISTER", string(u.uri))
			a := authParams{username: u.name, realm: []byte("example.test"), nonce: []byte("abc123"), uri: u.uri,
				opaque: []byte("op"), algorithm: []byte(alg), qop: qop, nc: ncOne, cnonce: []byte("c0ffee")}
			var q []byte
			if qop {
				q = qopAuth
			}
			a.response, _ = digestResponse(nil, nil, alg, h1, a.nonce, a.nc, a.cnonce, q, h2)
			msg := appendRegister(nil, p, u, 2, 1, false, &a)

			m, err := sip.ParseMessage(msg)
			if err != nil {
				t.Fatalf("sipgo cannot parse the authenticated REGISTER: %v", err)
			}
			hdr := m.(*sip.Request).GetHeader("Authorization")
			if hdr == nil {
				t.Fatal("no Authorization header")
			}
			cred, err := digest.ParseCredentials(hdr.Value())
			if err != nil {
				t.Fatalf("ParseCredentials(%q) = %v", hdr.Value(), err)
			}
			chal := &digest.Challenge{Realm: "example.test", Nonce: "abc123", Opaque: "op", Algorithm: alg}
			if qop {
				chal.QOP = []string{"auth"}
			}
			ref, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: cred.URI, Username: cred.Username,
				Password: u.password, Cnonce: cred.Cnonce, Count: cred.Nc})
			if err != nil {
				t.Fatal(err)
			}
			if cred.Response != ref.Response {
				t.Errorf("%s qop=%v: response %s, reference %s\n%s", alg, qop, cred.Response, ref.Response, msg)
			}
		}
	}
}

func TestAppendRegisterAllocs(t *testing.T) {
	u := testUser()
	p := &msgParams{transport: "UDP", laddr: "127.0.0.1:40000", runID: "r1", expires: 600}
	a := authParams{username: u.name, realm: []byte("example.test"), nonce: []byte("abc"), uri: u.uri, qop: true,
		nc: ncOne, cnonce: []byte("c"), response: []byte("0123456789abcdef0123456789abcdef")}
	buf := make([]byte, 0, 2048)
	allocs := testing.AllocsPerRun(100, func() { buf = appendRegister(buf[:0], p, u, 9, 1, false, &a) })
	if allocs != 0 {
		t.Errorf("appendRegister allocates %.0f times, want 0", allocs)
	}
}

func TestPatternUsers(t *testing.T) {
	us, err := patternUsers(3, "2", "pw-%s")
	if err != nil {
		t.Fatal(err)
	}
	want := []userCred{{user: "20000", password: "pw-20000"}, {user: "20001", password: "pw-20001"}, {user: "20002", password: "pw-20002"}}
	if diff := cmp.Diff(want, us, cmp.AllowUnexported(userCred{})); diff != "" {
		t.Errorf("patternUsers() (-want +got):\n%s", diff)
	}
	if us, _ := patternUsers(100000, "", "%s"); us[99999].user != "99999" {
		t.Errorf("last of 100000 = %q, want 99999", us[99999].user)
	}
	if _, err := patternUsers(3, "2", "static"); err == nil {
		t.Error("pattern without the user placeholder accepted")
	}
}

func TestReadUsers(t *testing.T) {
	in := "user,password,domain\n# comment\n1001,secret\n1002,\"p,w\",other.test\n"
	us, err := readUsers(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []userCred{{user: "1001", password: "secret"}, {user: "1002", password: "p,w", domain: "other.test"}}
	if diff := cmp.Diff(want, us, cmp.AllowUnexported(userCred{})); diff != "" {
		t.Errorf("readUsers() (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "1001\n", "a b,pw\n", "1,2,3,4\n"} {
		if _, err := readUsers(strings.NewReader(bad)); err == nil {
			t.Errorf("readUsers(%q) accepted", bad)
		}
	}
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.record(timeUS(i))
	}
	q, n := h.quantiles(0.5, 0.99, 1)
	if n != 1000 {
		t.Fatalf("count = %d", n)
	}
	for i, want := range []int{500, 990, 1000} {
		got := int(q[i] / timeUS(1))
		if got < want || float64(got) > float64(want)*1.04 {
			t.Errorf("quantile %d = %d µs, want %d (+4%%)", i, got, want)
		}
	}
	for v := uint64(0); v < 1<<20; v = v*5/4 + 1 {
		if b := histBucket(v); histUpper(b) < v || (b > 0 && histUpper(b-1) >= v) {
			t.Errorf("value %d in bucket %d [.., %d], previous ends %d", v, b, histUpper(b), histUpper(b-1))
		}
	}
}

func TestParseProcStat(t *testing.T) {
	line := "1234 (kamailio (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 100 1000 10 18446744073709551615\n"
	cpu, ppid, err := parseProcStat([]byte(line))
	if err != nil || ppid != 1 || cpu != 325*clockTick {
		t.Errorf("parseProcStat() = %v, %d, %v; want 3.25s, 1, nil", cpu, ppid, err)
	}
	if _, _, err := parseProcStat([]byte("1234 (x) S 1")); err == nil {
		t.Error("short line accepted")
	}
}
