// Package etcdtest runs etcd members inside a test process (etcd's own
// embed package), on 127.0.0.1 ports the kernel picked, with their data in a
// directory the caller owns: one member (Start) or a cluster of several
// (StartCluster). It is for tests: fsync is off.
package etcdtest

import (
	"errors"
	"fmt"
	"io"
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
func Start(dir string) (*Server, error) { return StartLimited(dir, 0) }

// StartLimited is Start with etcd's --max-txn-ops at maxTxnOps (0: room for
// dialtone's largest transactions; 128 is etcd's default).
func StartLimited(dir string, maxTxnOps uint) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
	cfg := memberConfig("test", dir, client, peer)
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	if maxTxnOps > 0 {
		cfg.MaxTxnOps = maxTxnOps
	}
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
// Clients reach each member through a TCP proxy of its own (the URLs of
// Endpoints), so that Kill can cut every client connection at once, as a
// member's crash does.
type Cluster struct {
	mu      sync.Mutex
	members []*embed.Etcd // nil once killed
	proxies []*proxy
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
		p, err := newProxy(client.Host)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.proxies = append(c.proxies, p)
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
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, p := range c.proxies {
		out = append(out, "http://"+p.ln.Addr().String())
	}
	return out
}

// Kill stops member i abruptly, as a crash does: every client connection
// is cut at once (reset), and its raft stops without handing its
// leadership over (when it led, the others elect a leader after their
// election timeout; WaitLeader waits for that). Killing a killed member
// does nothing.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	e := c.members[i]
	c.members[i] = nil
	c.mu.Unlock()
	if i < len(c.proxies) {
		c.proxies[i].close()
	}
	if e != nil {
		e.Server.HardStop()
		e.Close() // quick: no client connection is left to drain
	}
}

// WaitLeader waits until one of the members still running leads the
// cluster, for at most d, and returns its index.
func (c *Cluster) WaitLeader(d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	for {
		if l := c.Leader(); l >= 0 {
			return l, nil
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("etcdtest: no leader within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
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
		c.mu.Lock()
		e := c.members[i]
		c.members[i] = nil
		c.mu.Unlock()
		if e != nil {
			e.Close()
		}
	}
	for _, p := range c.proxies {
		p.close()
	}
}

// proxy forwards TCP connections to a member's client URL until closed.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	return p, nil
}

func (p *proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			in.Close()
			out.Close()
			return
		}
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			p.drop(in, out)
		}
		go pipe(in, out)
		go pipe(out, in)
	}
}

func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// drop closes the connections (a reset: nothing is drained).
func (p *proxy) drop(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		delete(p.conns, c)
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	var cs []net.Conn
	for c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	p.ln.Close()
	p.drop(cs...)
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
