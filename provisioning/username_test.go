package provisioning

import (
	"testing"

	"github.com/icholy/digest"
)

func TestDigestUsername(t *testing.T) {
	for h, want := range map[string]string{
		`Digest username="805ec0aabbcc-abcdefghij", realm="r", nonce="n"`: "805ec0aabbcc-abcdefghij",
		`digest realm="a,b", username="u"`:                                "u",
		`Digest realm="username=\"x\"", username="y"`:                     "y",
		`Digest username="a\"b"`:                                          `a"b`,
		`Digest username=plain, realm=r`:                                  "plain",
		`Digest  username = "spaced" `:                                    "spaced",
		`Basic dTpw`:                                                      "",
		`Digest username="unterminated`:                                   "",
		`Digest realm="r"`:                                                "",
		``:                                                                "",
	} {
		if got := digestUsername(h); got != want {
			t.Errorf("digestUsername(%q) = %q, want %q", h, got, want)
		}
	}
}

// FuzzDigestUsername: never a panic, and whenever the full parser
// authenticate uses reads a username, digestUsername reads the same one or
// none (a different one would only choose passwords that then fail).
func FuzzDigestUsername(f *testing.F) {
	for _, s := range []string{
		`Digest username="805ec0aabbcc-abcdefghij", realm="dialtone provisioning", nonce="abc", uri="/p/k/805ec0aabbcc.cfg", algorithm=MD5, qop=auth, nc=00000001, cnonce="c", response="r"`,
		`Digest realm="a,b", username="u"`, `Digest username="a\"b"`, `Digest username=x`, `digest USERNAME="y"`, `Digest ,,,`, `Digest username=""`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got := digestUsername(h)
		c, err := digest.ParseCredentials(h)
		if err != nil || got == "" {
			return
		}
		if got != c.Username {
			t.Fatalf("digestUsername(%q) = %q, the full parser reads %q", h, got, c.Username)
		}
	})
}
