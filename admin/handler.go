package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dialtone-voip/dialtone/store"
)

// Notifier lets admin ask the SIP side for a Yealink check-sync without
// importing it. May be nil.
type Notifier interface {
	CheckSync(ctx context.Context, accountID, mac string) error
}

// Options are NewHandler's dependencies.
type Options struct {
	DB  *store.DB
	Log *slog.Logger // nil: discard
	// Registry is what /metrics serves; admin registers its own collectors on
	// it. nil: a private registry.
	Registry *prometheus.Registry
	Notifier Notifier // may be nil
	Version  string

	// FetchWaiter lets POST /devices/{mac}/resync wait until the phone has
	// fetched its configuration (the provisioning server implements it).
	// nil: resync answers as soon as the check-sync is sent.
	FetchWaiter FetchWaiter
	// ProvisioningURL turns an account's provisioning key into the URL phones
	// use ("https://prov.example.test:8443/p/KEY/"). nil: the path only
	// ("/p/KEY/").
	ProvisioningURL func(key string) string
	// Blocks lists and lifts the brute-force blocks of the SIP and
	// provisioning guard (*guard.Guard). nil: no blocks are listed.
	Blocks BlockLister
	// Announcer replaces the "not recognized" announcement at run time.
	// nil: PUT /api/v1/announcement answers 503.
	Announcer Announcer
}

// server holds the handler's dependencies; its methods are the handlers.
type server struct {
	db       *store.DB
	log      *slog.Logger
	reg      *prometheus.Registry
	notifier Notifier
	version  string
	waiter   FetchWaiter
	provURL  func(key string) string
	blocks   BlockLister
	announce Announcer
	jobs     *jobRunner
	refusals *refusalLimiter
	requests *prometheus.CounterVec
	promh    http.Handler
	openapi  []byte
}

// NewHandler returns the admin HTTP handler: the REST API under /api/v1, plus
// /healthz, /readyz, /metrics and /api/v1/openapi.json. It registers
// dialtone_admin_requests_total on o.Registry, and fails if it cannot be
// registered. /metrics serves everything on o.Registry, including the store's
// gauges (store.DB.RegisterMetrics).
func NewHandler(o Options) (http.Handler, error) {
	if o.DB == nil {
		return nil, errors.New("admin: Options.DB is required")
	}
	s := &server{db: o.DB, log: o.Log, reg: o.Registry, notifier: o.Notifier, version: o.Version,
		waiter: o.FetchWaiter, provURL: o.ProvisioningURL, blocks: o.Blocks, announce: o.Announcer}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.log = s.log.With("component", "admin")
	s.jobs = newJobRunner(s.db, s.notifier, s.log)
	s.refusals = &refusalLimiter{m: map[string]*refusalCount{}}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if err := s.registerMetrics(); err != nil {
		return nil, err
	}
	s.promh = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})

	e := gin.New()
	e.HandleMethodNotAllowed = true
	// No proxy is trusted: ClientIP is the peer address, never a header.
	if err := e.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	e.Use(s.recoverer, s.accessLog)
	e.NoRoute(func(c *gin.Context) {
		s.writeError(c, errNotFound("no such path: "+c.Request.URL.Path))
	})
	e.NoMethod(func(c *gin.Context) {
		s.writeError(c, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed",
			Message: c.Request.Method + " is not allowed on " + c.Request.URL.Path})
	})

	routes := s.routes()
	if err := checkRoutes(routes); err != nil {
		return nil, err
	}
	for _, rt := range routes {
		e.Handle(rt.method, rt.path, s.authorize(rt), s.handle(rt))
	}
	doc, err := openAPIDocument(routes, o.Version)
	if err != nil {
		return nil, fmt.Errorf("admin: openapi document: %w", err)
	}
	s.openapi = doc
	return e, nil
}

func (s *server) registerMetrics() error {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dialtone_admin_requests_total",
		Help: "Admin API requests by route pattern, method and status.",
	}, []string{"route", "method", "status"})
	if err := s.reg.Register(s.requests); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("admin: register metrics: %w", err)
		}
		// A second handler on the same registry shares the counter.
		s.requests = are.ExistingCollector.(*prometheus.CounterVec)
	}
	failed := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "dialtone_store_commit_failures_total",
		Help: "Store write transactions whose commit failed (disk full, I/O error); nothing of them was written.",
	}, func() float64 { return float64(s.db.CommitFailures()) })
	if err := s.reg.Register(failed); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return fmt.Errorf("admin: register metrics: %w", err)
		}
	}
	return nil
}

// handle adapts an error-returning handler: a nil error means the handler
// wrote its response; any other error is rendered by writeError, and a
// refusal is recorded in the audit log.
func (s *server) handle(rt route) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Set(ctxRoute, &rt)
		if err := rt.h(c); err != nil {
			s.fail(c, rt, err)
		}
	}
}

// fail writes err and, for a refused change (or any 403), records the refusal
// in the audit log with the error code as its result.
func (s *server) fail(c *gin.Context, rt route, err error) {
	status := s.writeError(c, err)
	if status >= 500 || status == http.StatusUnauthorized {
		return
	}
	if !mutating(rt.method) && status != http.StatusForbidden {
		return
	}
	s.auditRefusal(c, rt, err)
}

// writeError renders err and returns the status it chose.
func (s *server) writeError(c *gin.Context, err error) int {
	status, body, internal := toError(err)
	if internal {
		s.log.ErrorContext(c, "request failed", "method", c.Request.Method, "route", c.FullPath(), "err", err)
	}
	if status == http.StatusServiceUnavailable {
		c.Header("Retry-After", "1")
	}
	writeJSON(c, status, body)
	c.Abort()
	return status
}

func mutating(method string) bool {
	return method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// recoverer turns a panic into a logged 500 (gin's own Recovery writes to
// stderr, not to our logger).
func (s *server) recoverer(c *gin.Context) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		s.log.ErrorContext(c, "panic serving request", "method", c.Request.Method, "route", c.FullPath(),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		if !c.Writer.Written() {
			writeJSON(c, http.StatusInternalServerError, errorBody{Error: errorDetail{Code: "internal", Message: "internal error"}})
		}
		c.Abort()
	}()
	c.Next()
}

// accessLog logs one line per request and counts it. It never logs headers
// (Authorization above all), query strings or bodies.
func (s *server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched" // keep the metric's cardinality bounded
	}
	status := c.Writer.Status()
	s.requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(status)).Inc()
	attrs := []any{
		"method", c.Request.Method,
		"path", c.Request.URL.Path,
		"route", route,
		"status", status,
		"bytes", c.Writer.Size(),
		"duration", time.Since(start),
		"client", c.ClientIP(),
	}
	if tok, ok := tokenOf(c); ok {
		attrs = append(attrs, "token_id", tok.ID)
	}
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(c, level, "http request", attrs...)
}

// healthJSON answers /healthz and /readyz.
type healthJSON struct {
	Status  string `json:"status"`
	Version string `json:"version,omitempty"`
}

func (s *server) healthz(c *gin.Context) error {
	return reply(c, healthJSON{Status: "ok", Version: s.version})
}

// readyz is 200 while the store is readable and writable. After a failed
// commit (a full disk) it probes with a tiny write on each call, so it turns
// ready again by itself once space is freed.
func (s *server) readyz(c *gin.Context) error {
	if err := s.db.Ping(); err != nil {
		s.log.ErrorContext(c, "not ready", "err", err)
		return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "store is not readable"}
	}
	if s.db.WriteError() != nil {
		if err := s.db.ProbeWrite(); err != nil {
			s.log.ErrorContext(c, "not ready: writes fail", "err", err)
			msg := "store writes fail"
			if errors.Is(err, store.ErrNoSpace) {
				msg = "store writes fail: the disk is full"
			}
			return &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: msg}
		}
		s.log.InfoContext(c, "store writes work again")
	}
	return reply(c, healthJSON{Status: "ready", Version: s.version})
}

func (s *server) metrics(c *gin.Context) error {
	s.promh.ServeHTTP(c.Writer, c.Request)
	return nil
}

func (s *server) openAPIDoc(c *gin.Context) error {
	c.Data(http.StatusOK, "application/json; charset=utf-8", s.openapi)
	return nil
}

// Refusals are audited, but at most refusalBurst per token and
// refusalWindow: a script hammering a route it may not use would otherwise
// turn each 403 into a synced write. The refusals left out are counted, and
// the count is written with the token's next audited refusal
// (detail "suppressed_before").
const (
	refusalWindow = time.Minute
	refusalBurst  = 10
)

type refusalLimiter struct {
	mu sync.Mutex
	m  map[string]*refusalCount // token id → its current window
}

type refusalCount struct {
	start      time.Time
	n          int // audited in this window
	suppressed int // left out since the last audited one
}

// allow reports whether this refusal of token is audited, and how many of
// its refusals were left out since the last one that was.
func (l *refusalLimiter) allow(token string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rc := l.m[token]
	if rc == nil || now.Sub(rc.start) >= refusalWindow || now.Before(rc.start) {
		if rc != nil {
			suppressed = rc.suppressed
		}
		if len(l.m) > 10000 { // forget idle tokens with nothing pending
			for k, v := range l.m {
				if now.Sub(v.start) >= refusalWindow && v.suppressed == 0 {
					delete(l.m, k)
				}
			}
		}
		l.m[token] = &refusalCount{start: now, n: 1}
		return true, suppressed
	}
	if rc.n < refusalBurst {
		rc.n++
		suppressed, rc.suppressed = rc.suppressed, 0
		return true, suppressed
	}
	rc.suppressed++
	return false, 0
}
