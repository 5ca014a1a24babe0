// Package etcdtest runs etcd members inside a test process (etcd's own
// embed package), on 127.0.0.1 ports the kernel picked, with their data in a
// directory the caller owns: one member (Start) or a cluster of several
// (StartCluster). It is for tests: fsync is off.
package etcdtest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running single-member cluster.
type Server struct {
	Endpoints []string // client URLs
	e         *embed.Etcd
}

// Start starts a member with its data in dir and waits until it serves.
func Start(dir string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg := memberConfig("test", dir, client, peer)
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	if err := awaitReady(e); err != nil {
		e.Close()
		return nil, err
	}
	return &Server{Endpoints: []string{client.String()}, e: e}, nil
}

// Close stops the member.
func (s *Server) Close() { s.e.Close() }

// memberConfig is one member's configuration: data in dir, fsync off, and
// room for dialtone's largest transactions.
func memberConfig(name, dir string, client, peer url.URL) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.UnsafeNoFsync = true
	// dialtone's bulk jobs write more than etcd's default 128 operations
	// in one transaction (docs/design.md, "Several nodes").
	cfg.MaxTxnOps = 100_000
	cfg.MaxRequestBytes = 32 << 20
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	return cfg
}

func awaitReady(e *embed.Etcd) error {
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("embedded etcd did not become ready within 60 s")
	}
}

// Cluster is a running cluster of several members in this process.
type Cluster struct {
	mu      sync.Mutex
	members []*embed.Etcd // nil once killed
	clients []string
}

// StartCluster starts n members (data in dir/m0, dir/m1, …) forming one
// cluster and waits until every one serves.
func StartCluster(dir string, n int) (*Cluster, error) {
	if n < 1 {
		return nil, errors.New("etcdtest: a cluster needs at least one member")
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	cfgs := make([]*embed.Config, n)
	var initial []string
	c := &Cluster{}
	for i := range n {
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		cfgs[i] = memberConfig(fmt.Sprintf("m%d", i), filepath.Join(dir, fmt.Sprintf("m%d", i)), client, peer)
		initial = append(initial, cfgs[i].Name+"="+peer.String())
		c.clients = append(c.clients, client.String())
	}
	// Each member waits for a quorum of its peers before it is ready, so
	// all are started before any is waited for.
	for _, cfg := range cfgs {
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcdtest"
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("start embedded etcd member %s: %w", cfg.Name, err)
		}
		c.members = append(c.members, e)
	}
	for i, e := range c.members {
		if err := awaitReady(e); err != nil {
			c.Close()
			return nil, fmt.Errorf("member m%d: %w", i, err)
		}
	}
	return c, nil
}

// Endpoints returns every member's client URL, killed ones included (as an
// operator's configuration would still list them).
func (c *Cluster) Endpoints() []string { return append([]string(nil), c.clients...) }

// Kill stops member i: its client and peer connections close and it takes
// part in no more elections. Killing a killed member does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Leader returns the index of the member that is the cluster's leader as
// the members see it, or -1 when none is known.
func (c *Cluster) Leader() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.members {
		if e != nil && uint64(e.Server.Leader()) == uint64(e.Server.MemberID()) {
			return i
		}
	}
	return -1
}

// Close stops every member still running.
func (c *Cluster) Close() {
	for i := range c.members {
		c.Kill(i)
	}
}

// freePorts asks the kernel for n free ports on 127.0.0.1 (127.0.0.1:0),
// then releases them for etcd to bind.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
