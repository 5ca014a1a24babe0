package main

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest/etcdtest"
)

// --store: bbolt by default; etcd://… gives endpoints (https with the TLS
// flags) and an optional prefix; anything else is a clear error.
func TestStoreFlag(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args      []string
		endpoints string
		prefix    string
		node      string
		advertise string        // what sipAdvertise gives for a socket bound to 10.0.0.5:5060
		ttl       time.Duration // 0: the default, 15 s
		err       string
	}{
		{args: nil},
		{args: []string{"--store", "etcd://10.0.0.1:2379,10.0.0.2:2379", "--sip-addr", "10.0.0.5:5060"}, endpoints: "http://10.0.0.1:2379 http://10.0.0.2:2379"},
		{args: []string{"--store", "etcd://e1:2379/acme", "--etcd-ca", "ca.pem", "--sip-advertise", "sip1.internal:5060", "--node-id", "sip-1"},
			endpoints: "https://e1:2379", prefix: "/acme", node: "sip-1", advertise: "sip1.internal:5060"},
		{args: []string{"--store", "mysql://x"}, err: "want etcd://"},
		{args: []string{"--store", "etcd://e1"}, err: "not host:port"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-cert", "c.pem"}, err: "go together"},
		{args: []string{"--etcd-ca", "ca.pem"}, err: "need --store etcd"},
		// Several nodes: each must say where the others reach its SIP.
		{args: []string{"--store", "etcd://e1:2379"}, err: "--sip-advertise: set it to the HOST:PORT"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-addr", "[::]:5060"}, err: "--sip-advertise: set it"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-advertise", "10.0.0.5"}, err: "want HOST:PORT"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-advertise", "10.0.0.5:0"}, err: "want HOST:PORT"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-advertise", "10.0.0.5:5060", "--node-id", "a/b"}, err: "--node-id"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-advertise", "10.0.0.5:5060", "--node-id", "a;mac=1"}, err: "--node-id"},
		{args: []string{"--node-id", "a"}, err: "need --store etcd"},
		{args: []string{"--sip-advertise", "10.0.0.5:5060"}, err: "need --store etcd"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-lease-ttl", "1s"}, err: "at least 2s"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-lease-ttl", "2500ms"}, err: "whole seconds"},
		{args: []string{"--store", "etcd://e1:2379", "--sip-addr", "10.0.0.5:5060", "--etcd-lease-ttl", "4s"}, endpoints: "http://e1:2379", ttl: 4 * time.Second},
	} {
		cfg, err := parseConfig(c.args, noEnv, io.Discard)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		ec, err := cfg.etcdConfig()
		if err != nil {
			t.Fatal(err)
		}
		if c.endpoints == "" {
			if ec != nil {
				t.Errorf("%v: etcd config %+v, want bbolt", c.args, ec)
			}
			continue
		}
		if c.ttl == 0 {
			c.ttl = 15 * time.Second
		}
		if got := strings.Join(ec.Endpoints, " "); got != c.endpoints || ec.Prefix != c.prefix || ec.Dir != cfg.DataDir || ec.Node != c.node || ec.LeaseTTL != c.ttl {
			t.Errorf("%v: %+v, want endpoints %s prefix %q node %q lease %v", c.args, ec, c.endpoints, c.prefix, c.node, c.ttl)
		}
		want := c.advertise
		if want == "" {
			want = "10.0.0.5:5060" // the bound socket
		}
		if got := cfg.sipAdvertise(&net.UDPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 5060}); got != want {
			t.Errorf("%v: sipAdvertise = %s, want %s", c.args, got, want)
		}
	}
}

// On etcd a node announces where the others reach its SIP: --sip-addr's
// bound address (the kernel's port for :0) under --node-id.
func TestNodeAnnounced(t *testing.T) {
	dir := t.TempDir()
	etcd, err := etcdtest.Start(filepath.Join(dir, "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	url := "etcd://" + strings.TrimPrefix(etcd.Endpoints[0], "http://") + "/n"
	a := start(t, filepath.Join(dir, "data"), "--store", url, "--node-id", "n1")
	db, err := store.OpenEtcd(store.EtcdConfig{Endpoints: etcd.Endpoints, Dir: filepath.Join(dir, "data"), Prefix: "/n", Node: "probe"}, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n, err := db.Node("n1")
	if err != nil || n.SIPAddr != a.addrs.SIPUDP || n.ID != "n1" {
		t.Errorf("Node(n1) = %+v, %v; want SIPAddr %s", n, err, a.addrs.SIPUDP)
	}
}
