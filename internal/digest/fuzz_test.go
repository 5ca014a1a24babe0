package digest

import (
	"encoding/base64"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"
)

// FuzzParse: no input panics, and whatever Parse accepts has the shape
// Verify relies on.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`Digest username="1001", realm="r", nonce="n", uri="sip:r", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="c"`,
		`Digest username="1001", realm="r", nonce="n", uri="/p/k/x.cfg", response="0123456789abcdef0123456789abcdef"`,
		`Digest username="a\"b", realm="r", nonce="n", uri="u", response="` + strings.Repeat("ab", 32) + `", algorithm=sha-256, qop=auth, nc=ffffffff, cnonce=x`,
		`Digest nc=1ffffffff`, `Digest ,,,=`, `Digest username=`, "", "Digest", `Digest realm="\`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, v string, noQOP bool) {
		cred, err := Parse(v, ParseOptions{AllowNoQOP: noQOP})
		if err != nil {
			return
		}
		if cred.Algorithm != MD5 && cred.Algorithm != SHA256 {
			t.Fatalf("algorithm %q accepted", cred.Algorithm)
		}
		if cred.QOP == "" && !noQOP || cred.QOP != "" && cred.QOP != "auth" {
			t.Fatalf("qop %q accepted", cred.QOP)
		}
		if cred.QOP == "auth" && (Count(cred) == 0 || cred.Cnonce == "") {
			t.Fatalf("qop auth without count or cnonce accepted: %+v", cred)
		}
		if !isHex(cred.Response) {
			t.Fatalf("response %q accepted", cred.Response)
		}
		_ = Verify(cred, "GET", HA1(cred.Algorithm, cred.Username, cred.Realm, "pw"))
	})
}

// FuzzCheck: no nonce string panics Check, and only issued ones verify.
func FuzzCheck(f *testing.F) {
	n, err := NewNonces(time.Minute, 4)
	if err != nil {
		f.Fatal(err)
	}
	// A fixed key: the fuzzing engine runs the seeds in several processes.
	n.key = []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	src := netip.MustParseAddr("192.0.2.1")
	// A fixed salt too, so every process agrees on the one valid nonce.
	var raw [nonceRawLen + 16]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(now.UnixNano()))
	n.mac(raw[:16], raw[:16], "r", src)
	good := base64.RawURLEncoding.EncodeToString(raw[:nonceRawLen])
	if st, _ := n.Check(good, "r", src, now); st != Fresh {
		f.Fatalf("the constructed nonce is %v", st)
	}
	f.Add(good)
	f.Add(good[:len(good)-1] + "=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		st, _ := n.Check(s, "r", src, now)
		if st != Bad && s != good {
			t.Fatalf("Check(%q) = %v for a nonce never issued", s, st)
		}
	})
}

// FuzzParseCredentials: wherever the fast reader answers, it answers what
// the library does.
func FuzzParseCredentials(f *testing.F) {
	for _, s := range []string{
		`Digest username="1001", realm="r", nonce="n", uri="sip:r", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="c"`,
		`Digest username="1001",realm="r" , nonce = "n", uri="sip:r", response="ab", algorithm=MD5, opaque="", x-y=z`,
		`Digest username="a\"b", realm="r"`, `Digest nc=1ffffffff`, `Digest nc=zz`, `Digest ,,,=`, `Digest username=`, "", "Digest",
		`Digest realm="\`, `digest realm="ü"`, `Digest userhash=true`, `Digest realm="a", realm="b"`, `Digest =x`, `Digest a="b`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fast, ok := parseCredentialsFast(s)
		if !ok {
			return
		}
		lib, err := digest.ParseCredentials(s)
		if err != nil {
			t.Fatalf("fast reader accepted %q, library: %v", s, err)
		}
		if *fast != *lib {
			t.Fatalf("%q: fast reader %+v, library %+v", s, *fast, *lib)
		}
	})
}
