package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

// Each node of an etcd deployment announces where it takes requests for
// the phones whose flows it holds; every node finds every other, and a
// REGISTER through a node names it in the binding.
func TestNodesAnnounceAndBindingsNameTheirNode(t *testing.T) {
	if storetest.Backend() != "etcd" {
		db := storetest.Open(t, storetest.NewClock())
		if err := db.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5060"}); !errors.Is(err, store.ErrNoNodes) {
			t.Fatalf("AnnounceNode on bbolt = %v, want ErrNoNodes", err)
		}
		if db.NodeID() != "" {
			t.Fatalf("NodeID on bbolt = %q", db.NodeID())
		}
		return
	}
	_, a, b := twoNodes(t)
	if a.NodeID() == b.NodeID() || b.NodeID() != "node-b" {
		t.Fatalf("node ids %q and %q", a.NodeID(), b.NodeID())
	}
	started := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	if err := a.AnnounceNode(store.NodeInfo{SIPAddr: "127.0.0.1:5071", StartedAt: started}); err != nil {
		t.Fatal(err)
	}
	if err := b.AnnounceNode(store.NodeInfo{ID: "forged", SIPAddr: "127.0.0.1:5072", StartedAt: started}); err != nil {
		t.Fatal(err)
	}
	got, err := a.Node("node-b")
	if err != nil || got.SIPAddr != "127.0.0.1:5072" || got.ID != "node-b" || !got.StartedAt.Equal(started) {
		t.Fatalf("Node(node-b) = %+v, %v", got, err)
	}
	if _, err := b.Node("node-c"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Node(node-c) = %v, want ErrNotFound", err)
	}
	all, err := b.Nodes()
	if err != nil || len(all) != 2 || all[0].ID != a.NodeID() && all[1].ID != a.NodeID() {
		t.Fatalf("Nodes = %+v, %v", all, err)
	}

	mustAccount(t, a)
	u := mustUser(t, a, "1002")
	if _, err := b.Register(reg(u, "c1", 1, "sip:1002@192.0.2.7:5062", 600)); err != nil {
		t.Fatal(err)
	}
	regs, err := a.Bindings(store.DefaultAccount, u.ID)
	if err != nil || len(regs) != 1 || regs[0].Node != "node-b" {
		t.Fatalf("registrations seen from a = %+v, %v", regs, err)
	}
}
