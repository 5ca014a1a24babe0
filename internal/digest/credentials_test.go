package digest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"
)

// RFC 7616 §3.9.1: the MD5 and SHA-256 examples (Mufasa, "Circle of Life").
func TestVerifyRFC7616Examples(t *testing.T) {
	const common = `username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", ` +
		`qop=auth, nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", ` +
		`nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"`
	ha1md5 := HA1(MD5, "Mufasa", "http-auth@example.org", "Circle of Life")
	ha1sha := HA1(SHA256, "Mufasa", "http-auth@example.org", "Circle of Life")
	for _, c := range []struct {
		v, ha1 string
	}{
		{`Digest ` + common + `, algorithm=MD5, response="8ca523f5e9506fed4657c9700eebdbec"`, ha1md5},
		{`Digest ` + common + `, algorithm=SHA-256, response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"`, ha1sha},
	} {
		cred, err := Parse(c.v, ParseOptions{})
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if !Verify(cred, "GET", c.ha1) {
			t.Errorf("%s: the RFC's response does not verify", cred.Algorithm)
		}
		if Verify(cred, "POST", c.ha1) {
			t.Errorf("%s: verified for another method", cred.Algorithm)
		}
		if Verify(cred, "GET", HA1(cred.Algorithm, "Mufasa", "http-auth@example.org", "Circle of life")) {
			t.Errorf("%s: verified with another password", cred.Algorithm)
		}
	}
}

// What a real client (github.com/icholy/digest) computes verifies, for both
// algorithms, with and without qop, upper-case hex included.
func TestVerifyClientResponses(t *testing.T) {
	n, err := NewNonces(time.Minute, 16)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	src := netip.MustParseAddr("2001:db8::5")
	nonce := n.Issue("example.test", src, now)
	for _, alg := range []string{MD5, SHA256} {
		for _, qop := range [][]string{{"auth"}, nil} {
			chal := &digest.Challenge{Realm: "example.test", Nonce: nonce, Algorithm: alg, QOP: qop}
			cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:example.test", Username: "1001", Password: "s3cret", Count: 7})
			if err != nil {
				t.Fatal(err)
			}
			v := cred.String()
			if _, err := Parse(v, ParseOptions{}); (err == nil) != (qop != nil) {
				t.Errorf("%s qop=%v: Parse without AllowNoQOP = %v", alg, qop, err)
			}
			got, err := Parse(strings.Replace(v, cred.Response, strings.ToUpper(cred.Response), 1), ParseOptions{AllowNoQOP: true})
			if err != nil {
				t.Fatalf("%s qop=%v: Parse = %v", alg, qop, err)
			}
			if !Verify(got, "REGISTER", HA1(alg, "1001", "example.test", "s3cret")) {
				t.Errorf("%s qop=%v: a correct response does not verify", alg, qop)
			}
			if Verify(got, "REGISTER", HA1(alg, "1001", "example.test", "s3creT")) {
				t.Errorf("%s qop=%v: a wrong password verifies", alg, qop)
			}
			wantCount := uint32(7)
			if qop == nil {
				wantCount = 1
			}
			if Count(got) != wantCount {
				t.Errorf("%s qop=%v: Count = %d, want %d", alg, qop, Count(got), wantCount)
			}
			if st, _ := n.Check(got.Nonce, "example.test", src, now); st != Fresh {
				t.Errorf("nonce state = %v", st)
			}
		}
	}
}

func TestParseRefuses(t *testing.T) {
	const ok = `Digest username="1001", realm="r", nonce="n", uri="sip:r", response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="c"`
	if _, err := Parse(ok, ParseOptions{}); err != nil {
		t.Fatalf("Parse(valid) = %v", err)
	}
	for name, v := range map[string]string{
		"basic":         `Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==`,
		"no username":   strings.Replace(ok, `username="1001", `, "", 1),
		"no nonce":      strings.Replace(ok, `nonce="n", `, "", 1),
		"sha-512":       ok + `, algorithm=SHA-512`,
		"md5-sess":      ok + `, algorithm=MD5-sess`,
		"qop auth-int":  strings.Replace(ok, "qop=auth", "qop=auth-int", 1),
		"nc zero":       strings.Replace(ok, "nc=00000001", "nc=00000000", 1),
		"no cnonce":     strings.Replace(ok, `, cnonce="c"`, "", 1),
		"short":         strings.Replace(ok, "0123456789abcdef0123456789abcdef", "0123", 1),
		"not hex":       strings.Replace(ok, "0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdeg", 1),
		"sha256 length": ok + `, algorithm=SHA-256`,
		"userhash":      ok + `, userhash=true`,
		"too long":      ok + `, opaque="` + strings.Repeat("x", MaxLen) + `"`,
		"no qop":        strings.Replace(ok, ", qop=auth, nc=00000001, cnonce=\"c\"", "", 1),
	} {
		if _, err := Parse(v, ParseOptions{}); err == nil {
			t.Errorf("%s: Parse accepted %q", name, v)
		}
	}
}

// ChallengeValue writes what Challenge.String writes, for plain and for
// escaped realms.
func TestChallengeValue(t *testing.T) {
	for _, realm := range []string{"example.test", "", `we"ird\realm`, "tab\there", "ünïcode"} {
		for _, alg := range []string{SHA256, MD5, ""} {
			for _, stale := range []bool{false, true} {
				c := Challenge{Realm: realm, Nonce: "GOqg-q8RoAACaHdI4zYmFh", Algorithm: alg, QOP: []string{"auth"}, Stale: stale}
				if got, want := ChallengeValue(realm, c.Nonce, alg, stale), c.String(); got != want {
					t.Errorf("ChallengeValue(%q, %q, %v) = %q, want %q", realm, alg, stale, got, want)
				}
			}
		}
	}
}
