// Command dialtone runs the SIP registrar, the Yealink provisioning server and
// the admin REST API in one process, on one bbolt data directory.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/dialtone-voip/dialtone/admin"
	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/sip"
	"github.com/dialtone-voip/dialtone/store"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	sub := ""
	if len(os.Args) > 1 {
		sub = os.Args[1]
	}
	switch sub {
	case "cert":
		err = runCert(os.Args[2:], os.Stdout, os.Stderr)
	case "backup":
		err = runBackup(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
	case "restore":
		err = runRestore(os.Args[2:], os.Stdout, os.Stderr)
	case "check":
		err = runCheck(os.Args[2:], os.Stdout, os.Stderr)
	case "migrate":
		err = runMigrate(os.Args[2:], os.Stdout, os.Stderr)
	default:
		err = run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil)
	}
	if err != nil && !errors.Is(err, errHelp) {
		fmt.Fprintln(os.Stderr, "dialtone:", err)
		os.Exit(1)
	}
}

var errHelp = errors.New("help requested")

// addrs are the addresses dialtone actually listens on (useful with port 0).
type addrs struct {
	SIPUDP, SIPTCP, SIPTLS, Provisioning, Admin string
	AdminToken                                  string // the generated token's file, if one was written
}

// run starts dialtone and blocks until ctx ends or a server fails. ready, if
// not nil, is called once every socket is bound and serving.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready func(addrs)) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	log := newLogger(cfg, stderr)
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1)) // the limit before, once run ends
	applyMemoryLimit(cfg.MemoryLimit, getenv, log)
	// gin's only global: without it gin prints its route table on start.
	gin.SetMode(gin.ReleaseMode)

	db, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	// Nothing runs on the data, in the foreground or the background, before
	// it is known good.
	if err := checkStore(db, log); err != nil {
		return err
	}
	acct, created, err := db.EnsureAccount(store.DefaultAccount, cfg.Domain)
	if err != nil {
		return fmt.Errorf("default account: %w", err)
	}
	if created {
		log.Info("created the default account", "sip_domain", acct.SIPDomain)
	} else if acct.SIPDomain != cfg.Domain {
		log.Warn("the default account keeps its sip_domain; --domain only applies at first start (change it with PATCH /api/v1/accounts/default)",
			"sip_domain", acct.SIPDomain, "flag", cfg.Domain)
	}
	tokenFile, err := bootstrapToken(db, cfg, log)
	if err != nil {
		return err
	}

	var tlsConf *tls.Config
	if cfg.tls() {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("load --tls-cert/--tls-key: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	// Bind every socket before serving anything, so a port in use is one clear
	// error at start-up rather than a half-running process.
	var lc net.ListenConfig
	udp, err := lc.ListenPacket(ctx, "udp", cfg.SIPAddr)
	if err != nil {
		return fmt.Errorf("SIP: %w", err)
	}
	defer udp.Close()
	enlargeReceiveBuffer(udp, sipUDPBuffer, log)
	tcp, err := listenSIPTCP(ctx, &lc, cfg.SIPAddr, udp.LocalAddr())
	if err != nil {
		return fmt.Errorf("SIP: %w", err)
	}
	defer tcp.Close()
	var sipTLS net.Listener
	if tlsConf != nil {
		l, err := lc.Listen(ctx, "tcp", cfg.SIPTLSAddr)
		if err != nil {
			return fmt.Errorf("SIP TLS: %w", err)
		}
		sipTLS = tls.NewListener(l, tlsConf.Clone()) // each server gets its own copy: net/http mutates its TLSConfig
		defer sipTLS.Close()
	}
	provLn, err := lc.Listen(ctx, "tcp", cfg.ProvisioningAddr)
	if err != nil {
		return fmt.Errorf("provisioning: %w", err)
	}
	defer provLn.Close()
	adminLn, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	defer adminLn.Close()
	var dbg net.Listener
	if cfg.DebugAddr != "" {
		if dbg, err = lc.Listen(ctx, "tcp", cfg.DebugAddr); err != nil {
			return fmt.Errorf("debug: %w", err)
		}
		defer dbg.Close()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := db.RegisterMetrics(reg); err != nil {
		return fmt.Errorf("store metrics: %w", err)
	}

	announcement, err := loadAnnouncement(cfg.Announcement)
	if err != nil {
		return err
	}
	if stored, err := storedAnnouncement(db, log); err != nil {
		return err
	} else if stored != nil {
		announcement = stored
	}
	// The SIP endpoint, and on it one component per job: the registrar,
	// the announcer, the proxy (which hands calls to disabled targets to the
	// announcer) and the check-sync notifier.
	// On etcd, the other nodes pass this one the calls and check-syncs of
	// the phones registered here, at the address it announces.
	nodeAddr := ""
	if db.NodeID() != "" {
		nodeAddr = cfg.sipAdvertise(udp.LocalAddr())
	}
	sipSrv, err := sip.New(sip.Config{
		Hostname: cfg.SIPHost, ServerName: "dialtone/" + version,
		TCPIdleTimeout: time.Duration(cfg.MaxExpires)*time.Second + time.Minute, MaxConnections: cfg.SIPMaxConnections,
		MaxConnectionsPerIP: cfg.SIPMaxConnectionsPerIP, FirstRequestTimeout: cfg.SIPFirstRequestTimeout, UDPSources: cfg.SIPUDPSources,
		NodeAddr: nodeAddr,
	}, db, log.With("component", "sip"), reg)
	if err != nil {
		return fmt.Errorf("SIP: %w", err)
	}
	if nodeAddr != "" {
		if err := db.AnnounceNode(store.NodeInfo{SIPAddr: nodeAddr, StartedAt: time.Now()}); err != nil {
			return err
		}
		log.Info("node announced", "node", db.NodeID(), "sip_advertise", nodeAddr)
	}
	sipParts, err := newSIPComponents(sipSrv, cfg, announcement)
	if err != nil {
		return fmt.Errorf("SIP: %w", err)
	}
	// One brute-force table for SIP and provisioning; the addresses it trusts
	// (recent good authentications) are kept in the store across restarts.
	blocks := sipSrv.Guard()
	if err := blocks.Persist(db); err != nil {
		log.Error("loading trusted sources; starting without them", "err", err)
	}
	defer func() {
		if err := blocks.Close(); err != nil {
			log.Error("saving trusted sources", "err", err)
		}
	}()
	provHandler, err := newProvisioning(db, cfg, provLn.Addr().String(), udp.LocalAddr().String(), acct.SIPDomain, blocks, log.With("component", "provisioning"), reg)
	if err != nil {
		return fmt.Errorf("provisioning: %w", err)
	}

	adminOpts := admin.Options{DB: db, Log: log, // admin names itself in its log lines
		Registry: reg, Version: version,
		ProvisioningURL: provHandler.URL, Blocks: blocks}
	wireCalls(&adminOpts, sipParts)
	adminHandler, err := admin.NewHandler(adminOpts)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}

	adminHTTP := &http.Server{Handler: adminHandler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, TLSConfig: tlsConf.Clone(), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	// Provisioning: HTTP/1.1 only (phones speak nothing else, and
	// provisioning.Listener sends each answer in one write, which HTTP/2's
	// concurrent reader would stall); small requests, kept alive for polls.
	provHTTP := &http.Server{Handler: provHandler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		TLSConfig:    tlsConf.Clone(), ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	sipCtx, stopSIP := context.WithCancel(context.Background())
	defer stopSIP()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sipSrv.ServeUDP(sipCtx, udp) })
	g.Go(func() error { return sipSrv.ServeTCP(sipCtx, tcp) })
	if sipTLS != nil {
		g.Go(func() error { return sipSrv.ServeTLS(sipCtx, sipTLS) })
	}
	g.Go(func() error { return serveHTTP(adminHTTP, adminLn, tlsConf != nil) })
	g.Go(func() error { return serveHTTP(provHTTP, provisioning.Listener(provLn), tlsConf != nil) })
	g.Go(func() error { sweep(gctx, db, log); return nil })
	g.Go(func() error {
		t := time.NewTicker(returnMemoryEvery)
		defer t.Stop()
		returnMemory(gctx, t.C, log)
		return nil
	})
	g.Go(func() error {
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		newRetention(db, cfg, log.With("component", "retention")).run(gctx, t.C)
		return nil
	})
	if dbg != nil {
		debugHTTP := &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error { return serveHTTP(debugHTTP, dbg, false) })
		g.Go(func() error { <-gctx.Done(); return debugHTTP.Close() })
		log.Info("pprof listening", "addr", dbg.Addr().String())
	}

	a := addrs{SIPUDP: udp.LocalAddr().String(), SIPTCP: tcp.Addr().String(), Provisioning: provLn.Addr().String(),
		Admin: adminLn.Addr().String(), AdminToken: tokenFile}
	if sipTLS != nil {
		a.SIPTLS = sipTLS.Addr().String()
	}
	log.Info("dialtone ready", "version", version, "data", cfg.DataDir, "sip_udp", a.SIPUDP, "sip_tcp", a.SIPTCP,
		"sip_tls", a.SIPTLS, "provisioning", a.Provisioning, "admin", a.Admin, "tls", tlsConf != nil)
	if ready != nil {
		ready(a)
	}
	// Offboarding jobs a crash left running continue now that SIP serves
	// (their check-syncs need it).
	g.Go(func() error {
		safely(log, "resuming offboarding jobs", func() {
			if err := admin.ResumeJobs(gctx, adminOpts); err != nil {
				log.Error("resuming offboarding jobs", "err", err)
			}
		})
		return nil
	})

	// Shut down in reverse order once ctx ends or any server fails.
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		adminHTTP.Shutdown(sctx)
		provHTTP.Shutdown(sctx)
		stopSIP()
		udp.Close()
		tcp.Close()
		if sipTLS != nil {
			sipTLS.Close()
		}
		return nil
	})
	err = g.Wait()
	sipSrv.Close()
	provHandler.Flush() // the last fetch records, before the store closes
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// listenSIPTCP binds TCP on the SIP address. With port 0 it first tries the
// port UDP got, so SIP is on one port number for both transports.
func listenSIPTCP(ctx context.Context, lc *net.ListenConfig, addr string, udp net.Addr) (net.Listener, error) {
	host, port, _ := net.SplitHostPort(addr)
	if port == "0" {
		_, udpPort, _ := net.SplitHostPort(udp.String())
		if ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, udpPort)); err == nil {
			return ln, nil
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}

func serveHTTP(s *http.Server, ln net.Listener, useTLS bool) error {
	var err error
	if useTLS {
		err = s.ServeTLS(ln, "", "")
	} else {
		err = s.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// sweep compacts expired bindings every minute. Correctness never depends on
// it: expired bindings are ignored by every read.
func sweep(ctx context.Context, db *store.DB, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			safely(log, "sweeping expired registrations", func() { // a panic skips this sweep, not the next
				if n, err := db.PruneExpired(); err != nil {
					log.Error("sweeping expired registrations", "err", err)
				} else if n > 0 {
					log.Debug("swept expired registrations", "count", n)
				}
			})
		}
	}
}

// checkStore runs the store's consistency check at start. Damage (a bad
// page, a record that cannot be read, a sealed password that does not open)
// refuses the start in one line; dangling references between records are
// logged, because dialtone serves around them.
func checkStore(db *store.DB, log *slog.Logger) error {
	t0 := time.Now()
	err := db.Check()
	if err == nil {
		log.Info("data consistency check passed", "duration", time.Since(t0).Round(time.Millisecond))
		return nil
	}
	problems := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		problems = j.Unwrap()
	}
	for _, p := range problems {
		if errors.Is(p, store.ErrDamaged) {
			return fmt.Errorf("%s failed its consistency check (%d problems), first: %s; restore dialtone.db and secret.key from a backup",
				filepath.Join(db.Dir(), store.FileName), len(problems), oneLine(p.Error()))
		}
	}
	for i, p := range problems {
		if i == 20 {
			log.Warn("more consistency problems not shown", "count", len(problems)-i)
			break
		}
		log.Warn("data consistency problem (serving around it)", "problem", oneLine(p.Error()))
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// safely runs a background task, logging a panic (with its stack) instead of
// letting it take the whole process down: a supervisor restarting dialtone
// into the same panic helps nobody. A fault on the memory-mapped data file
// is turned into a panic too.
func safely(log *slog.Logger, task string, fn func()) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			log.Error("background task panicked; it is stopped, dialtone keeps serving", "task", task, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	fn()
}

// bootstrapToken makes sure an operator can reach the admin API: with
// --bootstrap-token that token is created once, the first time this data
// directory sees it (revoked, it stays revoked); otherwise, the first start writes a
// generated provider token to DATA/admin-token (0600) and logs only the path.
func bootstrapToken(db *store.DB, cfg config, log *slog.Logger) (string, error) {
	if cfg.BootstrapToken != "" {
		_, created, err := db.EnsureToken(cfg.BootstrapToken, store.RoleProvider, "bootstrap")
		if errors.Is(err, store.ErrRevoked) {
			// One-shot: a revoked bootstrap token stays revoked.
			log.Warn("the token given by --bootstrap-token was revoked; it is not created again (remove the flag, or give a new value)")
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("--bootstrap-token: %w", err)
		}
		if created {
			log.Info("created the provider token given by --bootstrap-token")
		}
		return "", nil
	}
	path := filepath.Join(cfg.DataDir, "admin-token")
	if _, err := os.Stat(path); err == nil {
		log.Info("admin token file present", "path", path)
		return path, nil
	}
	existing, err := db.Tokens("")
	if err != nil {
		return "", err
	}
	if len(existing) > 0 {
		log.Info("provider tokens exist; not generating another (create one with POST /api/v1/tokens)", "count", len(existing))
		return "", nil
	}
	tok, secret, err := db.CreateToken("", store.RoleProvider, "generated at first start", store.System)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		db.RevokeToken(tok.ID, store.System)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	log.Info("generated a provider admin token", "path", path, "token_id", tok.ID)
	return path, nil
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
