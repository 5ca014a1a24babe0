package digest

import (
	"bytes"
	"net/netip"
	"testing"
	"time"
)

// Two processes with the same key (several nodes of one deployment) verify
// each other's nonces; with their own random keys they do not.
func TestSharedNonceKey(t *testing.T) {
	a, _ := NewNonces(time.Minute, 16)
	b, _ := NewNonces(time.Minute, 16)
	src := netip.MustParseAddr("192.0.2.7")
	now := time.Now()
	nonce := a.Issue("example.test", src, now)
	if st, _ := b.Check(nonce, "example.test", src, now); st != Bad {
		t.Fatal("a nonce of another process's random key verified")
	}
	key := bytes.Repeat([]byte{7}, 32)
	if err := a.SetKey(key); err != nil {
		t.Fatal(err)
	}
	if err := b.SetKey(key); err != nil {
		t.Fatal(err)
	}
	nonce = a.Issue("example.test", src, now)
	if st, _ := b.Check(nonce, "example.test", src, now); st != Fresh {
		t.Fatalf("a nonce of the shared key: %v on the other process, want fresh", st)
	}
	if err := a.SetKey(key[:16]); err == nil {
		t.Fatal("a 16-byte key was taken")
	}
}
