package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// Every node of a deployment derives the same hop key from the shared
// secret.key, and it is not secret.key itself; one node (bbolt) has none.
func TestHopKey(t *testing.T) {
	if storetest.Backend() != "etcd" {
		if _, err := storetest.Open(t, nil).HopKey(); !errors.Is(err, store.ErrNoNodes) {
			t.Errorf("HopKey on bbolt = %v, want ErrNoNodes", err)
		}
		return
	}
	clock := storetest.NewClock()
	dir := t.TempDir()
	a, b := storetest.OpenDir(t, dir, clock), openNode(t, dir, clock)
	ka, err := a.HopKey()
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.HopKey()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, store.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != 32 || !bytes.Equal(ka, kb) || bytes.Equal(ka, raw) {
		t.Errorf("hop keys: %d bytes, equal on both nodes %v, equal to secret.key %v; want 32, true, false", len(ka), bytes.Equal(ka, kb), bytes.Equal(ka, raw))
	}
}

// Every node of a deployment derives the same digest-nonce key (a
// challenge from one node verifies on another), one per purpose, none of
// them the hop key or secret.key itself; on bbolt there is none.
func TestNonceKey(t *testing.T) {
	if storetest.Backend() != "etcd" {
		if _, err := storetest.Open(t, nil).NonceKey("sip"); !errors.Is(err, store.ErrNoNodes) {
			t.Errorf("NonceKey on bbolt = %v, want ErrNoNodes", err)
		}
		return
	}
	clock := storetest.NewClock()
	dir := t.TempDir()
	a, b := storetest.OpenDir(t, dir, clock), openNode(t, dir, clock)
	sa, err := a.NonceKey("sip")
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := b.NonceKey("sip")
	pa, _ := a.NonceKey("provisioning")
	hop, _ := a.HopKey()
	if len(sa) != 32 || !bytes.Equal(sa, sb) || bytes.Equal(sa, pa) || bytes.Equal(sa, hop) {
		t.Errorf("nonce keys: %d bytes, same on both nodes %v, sip = provisioning %v, = hop key %v; want 32, true, false, false",
			len(sa), bytes.Equal(sa, sb), bytes.Equal(sa, pa), bytes.Equal(sa, hop))
	}
}
