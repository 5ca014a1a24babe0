package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// config is every setting of the dialtone process. Each flag can also be set
// through the environment as DIALTONE_<FLAG> (dashes become underscores); a
// flag on the command line wins over the environment.
type config struct {
	DataDir          string
	SIPAddr          string
	SIPTLSAddr       string
	SIPHost          string
	PhoneSIPServer   string
	ProvisioningAddr string
	ProvisioningURL  string
	AdminAddr        string
	Domain           string
	BootstrapToken   string
	TLSCert, TLSKey  string
	LogLevel         string
	LogFormat        string
	MinExpires       int
	MaxExpires       int
	DefaultExpires   int
	Announcement     string
	RTPPorts         string
	RingTimeout      time.Duration
	NTPServer        string
	TimeZone         string
	MediaIP          string
	DebugAddr        string
	MemoryLimit      string // "": the default (or GOMEMLIMIT); see memory.go

	SIPMaxConnections      int
	SIPMaxConnectionsPerIP int
	SIPFirstRequestTimeout time.Duration
	SIPUDPSources          int
	SIPMaxDialogs          int
	SIPDialogMaxAge        time.Duration
	AuditRetention         int // days; 0 keeps every audit entry
	CallRetention          int // days; 0 keeps every call record

	Store                     string // "" or bbolt: --data; etcd://host:port,…: etcd (storeflag.go)
	EtcdCert, EtcdKey, EtcdCA string
	NodeID                    string        // on etcd: this node's name (storeflag.go)
	SIPAdvertise              string        // on etcd: HOST:PORT the other nodes reach our SIP on
	EtcdLeaseTTL              time.Duration // 0: the store's default (15 s)
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("dialtone", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DataDir, "data", "./data", "data directory: the bbolt file, the secret key and admin-token live here")
	fs.StringVar(&c.SIPAddr, "sip-addr", "0.0.0.0:5060", "SIP listen address, UDP and TCP")
	fs.StringVar(&c.SIPTLSAddr, "sip-tls-addr", "0.0.0.0:5061", "SIP over TLS listen address (only with --tls-cert and --tls-key)")
	fs.StringVar(&c.PhoneSIPServer, "phone-sip-server", "", "SIP server written into phone configs; default: --sip-host, else the account's domain. With several nodes: a DNS name listing every node (SRV or A records), while each node's --sip-host names that node (its Record-Route)")
	fs.StringVar(&c.SIPHost, "sip-host", "", "host name or IP phones use to reach SIP (rendered into phone configs, Record-Route); default: the listen IP, or the account's domain")
	fs.StringVar(&c.ProvisioningAddr, "provisioning-addr", "0.0.0.0:8080", "provisioning (Yealink) HTTP(S) listen address")
	fs.StringVar(&c.ProvisioningURL, "provisioning-url", "", "base URL phones use to reach provisioning, e.g. https://prov.example.test:8080 (default: built from --provisioning-addr)")
	fs.StringVar(&c.AdminAddr, "admin-addr", "127.0.0.1:8081", "admin REST API HTTP(S) listen address")
	fs.StringVar(&c.Domain, "domain", "localhost", "SIP domain (and digest realm) of the default account, set when it is created at first start")
	fs.StringVar(&c.BootstrapToken, "bootstrap-token", "", "make sure a provider-role admin token with this value exists (at least 16 characters)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate: enables SIP over TLS and HTTPS for provisioning and admin")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	fs.IntVar(&c.MinExpires, "min-expires", 60, "shortest registration accepted, in seconds (shorter: 423 Interval Too Brief)")
	fs.IntVar(&c.MaxExpires, "max-expires", 3600, "longest registration granted, in seconds (longer requests are clamped)")
	fs.IntVar(&c.DefaultExpires, "default-expires", 3600, "registration length when the phone asks for none, in seconds")
	fs.StringVar(&c.Announcement, "announcement", "", "WAV file (8 kHz mono) replacing the built-in 'Extension is not recognized' announcement")
	fs.StringVar(&c.MediaIP, "media-ip", "", "IP address put in SDP answers for announcement media (default: --sip-host if it is an IP, else the address routed towards the caller)")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "if set, serve Go's pprof profiles on this HOST:PORT (keep it on localhost)")
	fs.StringVar(&c.MemoryLimit, "memory-limit", "", "soft limit of the Go runtime's memory, e.g. 256MiB or 1GiB (0: none); the collector works harder near it, nothing is refused (default: GOMEMLIMIT if set, else 90% of the cgroup's memory limit, else none)")
	fs.StringVar(&c.RTPPorts, "rtp-ports", "10000-20000", "UDP port range for announcement media")
	fs.StringVar(&c.NTPServer, "ntp-server", "", "NTP server rendered into phone configs")
	fs.StringVar(&c.TimeZone, "timezone", "", "time zone rendered into phone configs, in Yealink's form (e.g. +1, -5)")
	fs.DurationVar(&c.RingTimeout, "ring-timeout", 60*time.Second, "how long a routed call rings before 480")
	fs.IntVar(&c.SIPMaxConnections, "sip-max-connections", 10000, "most SIP TCP+TLS connections open at once (keep well below the open-files limit)")
	fs.IntVar(&c.SIPMaxConnectionsPerIP, "sip-max-connections-per-ip", 200, "most SIP TCP+TLS connections open at once from one IPv4 address or IPv6 /64")
	fs.DurationVar(&c.SIPFirstRequestTimeout, "sip-first-request-timeout", 10*time.Second, "time a new SIP TCP/TLS connection has for its TLS handshake and first complete request")
	fs.IntVar(&c.SIPUDPSources, "sip-udp-sources", 65536, "UDP source addresses the SIP transport remembers (a bounded table)")
	fs.IntVar(&c.SIPMaxDialogs, "sip-max-dialogs", 100000, "calls in progress remembered at once; beyond, a new call gets 503 before it rings")
	fs.DurationVar(&c.SIPDialogMaxAge, "sip-dialog-max-age", 12*time.Hour, "a call without BYE is forgotten after this long (its in-dialog requests then get 481)")
	fs.IntVar(&c.AuditRetention, "audit-retention-days", 400, "delete audit entries older than this many days (0: keep them all)")
	fs.IntVar(&c.CallRetention, "call-retention-days", 90, "delete call records older than this many days (0: keep them all)")

	fs.StringVar(&c.Store, "store", "", "where the data lives: empty for the bbolt file in --data (the default), or etcd://host1:2379,host2:2379 for an etcd cluster several nodes share (secret.key still in --data, the same file on every node)")
	fs.StringVar(&c.EtcdCert, "etcd-cert", "", "PEM client certificate for etcd (with --etcd-key)")
	fs.StringVar(&c.EtcdKey, "etcd-key", "", "PEM private key for --etcd-cert")
	fs.StringVar(&c.EtcdCA, "etcd-ca", "", "PEM CA bundle that signed the etcd servers' certificates (enables TLS to etcd)")
	fs.StringVar(&c.NodeID, "node-id", "", "with --store etcd://…: this node's name among the nodes, unique and stable across restarts (default: the host name)")
	fs.StringVar(&c.SIPAdvertise, "sip-advertise", "", "with --store etcd://…: HOST:PORT the other nodes reach this node's SIP (UDP/TCP) listener on, to pass it calls and check-syncs for the phones registered here (default: --sip-addr when it is a specific IP)")
	fs.DurationVar(&c.EtcdLeaseTTL, "etcd-lease-ttl", 15*time.Second, "etcd: this node's lease; the registrations it holds vanish this long after it dies (whole seconds, at least 2s)")

	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		name := "DIALTONE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %v", name, v, err)
			}
			set[f.Name] = true
		}
	})
	if envErr != nil {
		return c, envErr
	}
	c.SIPTLSAddr = ifSet(set["sip-tls-addr"], c.SIPTLSAddr, "0.0.0.0:5061")
	return c, c.validate()
}

func ifSet(isSet bool, v, def string) string {
	if isSet {
		return v
	}
	return def
}

func (c config) tls() bool { return c.TLSCert != "" }

func (c config) validate() error {
	if _, err := c.etcdConfig(); err != nil {
		return err
	}
	if c.AuditRetention < 0 || c.CallRetention < 0 {
		return errors.New("--audit-retention-days and --call-retention-days must be 0 (keep all) or more")
	}
	for name, addr := range map[string]string{"--sip-addr": c.SIPAddr, "--provisioning-addr": c.ProvisioningAddr, "--admin-addr": c.AdminAddr, "--sip-tls-addr": c.SIPTLSAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: want HOST:PORT", name, addr)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.MinExpires < 1 || c.MaxExpires < c.MinExpires || c.DefaultExpires < c.MinExpires || c.DefaultExpires > c.MaxExpires {
		return fmt.Errorf("expires: want 1 <= --min-expires (%d) <= --default-expires (%d) <= --max-expires (%d)", c.MinExpires, c.DefaultExpires, c.MaxExpires)
	}
	if c.BootstrapToken != "" && len(c.BootstrapToken) < 16 {
		return errors.New("--bootstrap-token must be at least 16 characters")
	}
	if c.SIPMaxConnections < 1 || c.SIPMaxConnectionsPerIP < 1 || c.SIPFirstRequestTimeout <= 0 || c.SIPUDPSources < 2 ||
		c.SIPMaxDialogs < 1 || c.SIPDialogMaxAge <= 0 {
		return errors.New("--sip-max-connections, --sip-max-connections-per-ip, --sip-first-request-timeout, --sip-max-dialogs and --sip-dialog-max-age must be positive, --sip-udp-sources at least 2")
	}
	if _, _, err := c.rtpRange(); err != nil {
		return err
	}
	if c.MemoryLimit != "" {
		if _, err := parseSize(c.MemoryLimit); err != nil {
			return fmt.Errorf("--memory-limit %w", err)
		}
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	return nil
}

func (c config) rtpRange() (int, int, error) {
	lo, hi, ok := strings.Cut(c.RTPPorts, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1024 || b > 65535 || b-a < 2 {
		return 0, 0, fmt.Errorf("--rtp-ports %q: want MIN-MAX within 1024-65535", c.RTPPorts)
	}
	return a, b, nil
}
