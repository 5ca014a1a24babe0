package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// --store: bbolt by default; etcd://… gives endpoints (https with the TLS
// flags) and an optional prefix; anything else is a clear error.
func TestStoreFlag(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, c := range []struct {
		args      []string
		endpoints string
		prefix    string
		ttl       time.Duration // 0: the default, 15 s
		err       string
	}{
		{args: nil},
		{args: []string{"--store", "etcd://10.0.0.1:2379,10.0.0.2:2379"}, endpoints: "http://10.0.0.1:2379 http://10.0.0.2:2379"},
		{args: []string{"--store", "etcd://e1:2379/acme", "--etcd-ca", "ca.pem"}, endpoints: "https://e1:2379", prefix: "/acme"},
		{args: []string{"--store", "mysql://x"}, err: "want etcd://"},
		{args: []string{"--store", "etcd://e1"}, err: "not host:port"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-cert", "c.pem"}, err: "go together"},
		{args: []string{"--etcd-ca", "ca.pem"}, err: "need --store etcd"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-lease-ttl", "1s"}, err: "at least 2s"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-lease-ttl", "2500ms"}, err: "whole seconds"},
		{args: []string{"--store", "etcd://e1:2379", "--etcd-lease-ttl", "4s"}, endpoints: "http://e1:2379", ttl: 4 * time.Second},
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
		if got := strings.Join(ec.Endpoints, " "); got != c.endpoints || ec.Prefix != c.prefix || ec.Dir != cfg.DataDir || ec.LeaseTTL != c.ttl {
			t.Errorf("%v: %+v, want endpoints %s prefix %q", c.args, ec, c.endpoints, c.prefix)
		}
	}
}
