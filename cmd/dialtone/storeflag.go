package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	ec := &store.EtcdConfig{Dir: c.DataDir, LeaseTTL: c.EtcdLeaseTTL}
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
	return ec, nil
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
