package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

// etcdConfig reads --store etcd://host1:2379,host2:2379[/prefix] and the
// --etcd-* TLS files; nil without an etcd --store.
func (c config) etcdConfig() (*store.EtcdConfig, error) {
	if c.Store == "" || c.Store == "bbolt" {
		if c.EtcdCert != "" || c.EtcdKey != "" || c.EtcdCA != "" {
			return nil, errors.New("--etcd-cert, --etcd-key and --etcd-ca need --store etcd://…")
		}
		if c.NodeID != "" || c.SIPAdvertise != "" {
			return nil, errors.New("--node-id and --sip-advertise need --store etcd://… (one node needs neither)")
		}
		return nil, nil
	}
	if c.EtcdLeaseTTL != 0 && (c.EtcdLeaseTTL < 2*time.Second || c.EtcdLeaseTTL%time.Second != 0) {
		return nil, fmt.Errorf("--etcd-lease-ttl %v: want whole seconds, at least 2s", c.EtcdLeaseTTL)
	}
	rest, ok := strings.CutPrefix(c.Store, "etcd://")
	if !ok {
		return nil, fmt.Errorf("--store %q: want etcd://host:port[,host:port…][/prefix], or nothing for the bbolt file in --data", c.Store)
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	ec := &store.EtcdConfig{Dir: c.DataDir, Node: c.NodeID, LeaseTTL: c.EtcdLeaseTTL}
	if prefix != "" {
		ec.Prefix = "/" + strings.TrimSuffix(prefix, "/")
	}
	scheme := "http://"
	if c.EtcdCA != "" || c.EtcdCert != "" {
		scheme = "https://"
	}
	for _, h := range strings.Split(hosts, ",") {
		if h == "" || strings.ContainsAny(h, " /") || !strings.Contains(h, ":") {
			return nil, fmt.Errorf("--store %q: %q is not host:port", c.Store, h)
		}
		ec.Endpoints = append(ec.Endpoints, scheme+h)
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return nil, errors.New("--etcd-cert and --etcd-key go together")
	}
	if c.NodeID != "" && !validNodeID(c.NodeID) {
		return nil, fmt.Errorf("--node-id %q: want 1-64 letters, digits, '.', '_' or '-'", c.NodeID)
	}
	if c.SIPAdvertise != "" {
		host, port, err := net.SplitHostPort(c.SIPAdvertise)
		if p, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("--sip-advertise %q: want HOST:PORT (the address other nodes reach this node's SIP on)", c.SIPAdvertise)
		}
	} else if host, _, err := net.SplitHostPort(c.SIPAddr); err == nil {
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("--sip-advertise: set it to the HOST:PORT other nodes reach this node's SIP on (--sip-addr %q is not one specific IP)", c.SIPAddr)
		}
	}
	return ec, nil
}

// validNodeID: a node's name goes into etcd keys and SIP headers.
func validNodeID(id string) bool {
	if len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return id != ""
}

// sipAdvertise is the address this node announces to the other nodes
// (store.NodeInfo.SIPAddr): --sip-advertise, else the SIP socket's bound
// address (--sip-addr, with the port the kernel picked for :0).
func (c config) sipAdvertise(bound net.Addr) string {
	if c.SIPAdvertise != "" {
		return c.SIPAdvertise
	}
	return bound.String()
}

// etcdTLS loads the --etcd-* files; nil for plain connections.
func (c config) etcdTLS() (*tls.Config, error) {
	if c.EtcdCA == "" && c.EtcdCert == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.EtcdCA != "" {
		pem, err := os.ReadFile(c.EtcdCA)
		if err != nil {
			return nil, fmt.Errorf("--etcd-ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-ca %s: no PEM certificate in it", c.EtcdCA)
		}
	}
	if c.EtcdCert != "" {
		cert, err := tls.LoadX509KeyPair(c.EtcdCert, c.EtcdKey)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// openStore opens the store --store names: the bbolt file in --data by
// default, or the etcd cluster (its lease events go to log).
func openStore(c config, log *slog.Logger) (*store.DB, error) {
	ec, err := c.etcdConfig()
	if err != nil {
		return nil, err
	}
	if ec == nil {
		return store.Open(c.DataDir, store.Options{})
	}
	if ec.TLS, err = c.etcdTLS(); err != nil {
		return nil, err
	}
	ec.Logger = log
	return store.OpenEtcd(*ec, store.Options{})
}
