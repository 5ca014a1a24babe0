// Package provisioning serves Yealink handsets their configuration over
// HTTP(S): GET /p/{account-key}/{mac}.cfg and the common y0000000000XX.cfg.
//
// # Who gets what
//
// A request passes, in order: the
// path (/p/{key}/{file}, nothing else), the account's URL key, the HTTP
// credentials (Digest, or Basic over TLS), the User-Agent's MAC against the
// file's MAC (or its model against the common file's code), the device's
// existence in that account, and whether the credentials open that file.
//
// Credentials are per device: each device's own username and password are
// written into its own <mac>.cfg only, and open only that file and the
// common file of its model. The account's bootstrap credential (for phones
// that know only what DHCP or RPS told them) opens a device's file only
// until the device has fetched with its own credentials; the file it gets
// moves the phone onto them. See docs/provisioning.md.
//
// Every refusal after the credentials, and every refusal before them that is
// not a credentials problem, is the same 404 (status, headers and body), so a
// scanner cannot tell an unknown MAC from a wrong key, another account's
// phone, a forged User-Agent or another device's credentials.
//
// # Throttling
//
// Failures are counted in the brute-force guard (internal/guard, the table
// SIP uses too, listed by the admin API with protocol "provisioning"). A bad
// path, an unknown key and wrong credentials count for the source address;
// wrong credentials only when their nonce is one this address was given
// and has not expired (an invented or replayed Authorization counts
// nothing). Past the limit the source gets 429 for all of these — but a
// request with valid credentials is checked before that block and served,
// and a request without credentials is still challenged, so a guesser
// behind an office's NAT never locks out the phones there. Refusals after
// valid credentials (a MAC or model that does not match, an unknown device)
// count for that credential from that address; past the limit that
// credential gets 429 from that address, while other credentials do not.
//
// The one exception is 401: a phone sends credentials only after a challenge
// (docs/provisioning.md), so a request with a valid key and no or wrong
// credentials gets a Digest challenge. That reveals only that the key is
// valid; a key is 192 random bits, so it cannot be found by guessing. The
// credentials are checked against the device the username names, or against
// a dummy password when it names none, so the work is the same either way.
//
// The request path reads no store record once a phone has been served: it
// answers from snapshots kept current by the store's generation, queues the
// fetch record for a writer that follows the answer, and (through Listener)
// sends each answer in one write. See docs/provisioning.md, "Serving fast".
//
// HTTPS is the caller's: serve this handler from an http.Server with a TLS
// certificate (and no plain-HTTP listener) in production; over plain HTTP the
// files, with their SIP passwords, cross the network in clear.
package provisioning

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/internal/guard"
	"github.com/dialtone-voip/dialtone/store"
)

// Config is the deployment's provisioning settings. Zero values are documented per field.
type Config struct {
	// SIPServer is the host phones send SIP to. Every account registers with
	// its own sip_domain as the server address (the AOR's host and the digest
	// realm); when SIPServer is set and differs from it, phones use SIPServer
	// as their outbound proxy. "" means phones resolve the sip_domain itself.
	SIPServer string
	// SIPPort is the registrar's port; 0 means 5060 (5061 for TLS).
	SIPPort int
	// SIPTransport is "udp", "tcp" or "tls"; "" means udp. "dns-naptr"
	// makes phones resolve SIPServer by RFC 3263 (NAPTR, SRV, then A
	// records: Yealink's transport type 3 with port 0), so that they
	// register to another node when theirs stops answering.
	SIPTransport string
	// RegisterExpires is the REGISTER expiry phones ask for; 0 means 3600.
	RegisterExpires int

	// ExternalURL is the base URL phones use, e.g. https://prov.example.test:8443;
	// the provisioning URL is ExternalURL + "/p/{key}/". Required.
	ExternalURL string
	// RepeatMinutes is how often phones poll; 0 means 60.
	RepeatMinutes int

	// FailureLimit failures from one source (or one credential from one
	// source) within FailureWindow block it for BlockFor. Zero values mean
	// 10, 1 minute and 15 minutes.
	FailureLimit  int
	FailureWindow time.Duration
	BlockFor      time.Duration
	// Guard is the brute-force table shared with SIP (the handler counts on
	// its "provisioning" view, internal/guard.Guard.For). nil: a table of
	// its own.
	Guard *guard.Guard

	// NTPServer and TimeZone (Yealink's "+1" form) are rendered when set.
	NTPServer, TimeZone string
}

// Fetch outcomes, the values of the outcome label of dialtone_provisioning_fetches_total.
const (
	OutcomeServed       = "served"       // a config was served with every assigned line active
	OutcomeCleared      = "cleared"      // a MAC file was served with an assigned line cleared, or no line active
	OutcomeNotFound     = "not_found"    // the identical 404 (unknown MAC, wrong key, UA mismatch, bad path, boot file)
	OutcomeThrottled    = "throttled"    // 429 to a blocked source
	OutcomeUnauthorized = "unauthorized" // 401 challenge (no, stale or wrong credentials)
)

// Handler serves /p/{key}/{file}. It is safe for concurrent use.
type Handler struct {
	db       *store.DB
	log      *slog.Logger
	baseURL  string
	sip      sipSettings
	repeat   int
	ntp, tz  string
	throttle *guard.Guard // the "provisioning" view of the brute-force table
	nonces   *nonces

	fetches *prometheus.CounterVec
	blocks  prometheus.Counter
	// outcomes are fetches' counters, resolved once.
	outcomes map[string]prometheus.Counter

	rendered renderCache // the last body of each device, by its inputs
	snaps    *snapshots  // what the request path reads, kept current
	common   sync.Map    // common file name → *commonFile
	records  *recorder   // fetch records, written after the answer
	date     atomic.Pointer[dateHeader]
}

var _ http.Handler = (*Handler)(nil)

// Flush waits until every fetch served so far is recorded on its device.
// Records are written after the config is sent, so a phone never waits for
// the disk; main calls Flush at shutdown, tests before reading a device.
func (h *Handler) Flush() { h.records.flush() }

// NewHandler validates cfg and builds the handler. Metrics are registered
// with reg (nil: not registered).
func NewHandler(db *store.DB, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	if db == nil {
		return nil, errors.New("provisioning: nil store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.ExternalURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !singleLine(cfg.ExternalURL) {
		return nil, fmt.Errorf("provisioning: external URL %q must be http(s)://host[:port][/path] without credentials", cfg.ExternalURL)
	}
	h := &Handler{db: db, log: log, baseURL: strings.TrimRight(cfg.ExternalURL, "/"), ntp: cfg.NTPServer, tz: cfg.TimeZone}
	h.snaps = newSnapshots(db)
	h.records = newRecorder(db, log)
	for name, v := range map[string]string{"SIP server": cfg.SIPServer, "NTP server": cfg.NTPServer, "time zone": cfg.TimeZone} {
		if !singleLine(v) || strings.ContainsAny(v, " \t") {
			return nil, fmt.Errorf("provisioning: %s %q must be one word", name, v)
		}
	}
	switch strings.ToLower(cfg.SIPTransport) {
	case "", "udp":
		h.sip.Transport = 0
	case "tcp":
		h.sip.Transport = 1
	case "tls":
		h.sip.Transport = 2
	case "dns-naptr":
		h.sip.Transport = 3
	default:
		return nil, fmt.Errorf("provisioning: SIP transport %q must be udp, tcp, tls or dns-naptr", cfg.SIPTransport)
	}
	h.sip.Proxy = cfg.SIPServer
	h.sip.Port = cfg.SIPPort
	if h.sip.Transport == 3 {
		h.sip.Port = 0 // the port comes from the SRV records
	} else if h.sip.Port == 0 {
		h.sip.Port = 5060
		if h.sip.Transport == 2 {
			h.sip.Port = 5061
		}
	}
	if h.sip.Transport != 3 && (h.sip.Port < 1 || h.sip.Port > 65535) {
		return nil, fmt.Errorf("provisioning: SIP port %d out of range", cfg.SIPPort)
	}
	h.sip.Expires = cfg.RegisterExpires
	if h.sip.Expires <= 0 {
		h.sip.Expires = 3600
	}
	h.repeat = cfg.RepeatMinutes
	if h.repeat <= 0 {
		h.repeat = 60
	}
	limit, window, block := cfg.FailureLimit, cfg.FailureWindow, cfg.BlockFor
	if limit <= 0 {
		limit = 10
	}
	if window <= 0 {
		window = time.Minute
	}
	if block <= 0 {
		block = 15 * time.Minute
	}
	g := cfg.Guard
	if g == nil {
		g = guard.New(guard.Config{Protocol: "provisioning", Now: db.Now})
	}
	h.throttle = g.For("provisioning", guard.Policy{MaxFailures: limit, Window: window, BlockFor: block, OnBlock: h.onBlock})
	if h.nonces, err = newNonces(db.Now); err != nil {
		return nil, err
	}
	// Several nodes: a challenge from one node may be answered to another
	// (an HTTP load balancer); every node verifies every node's nonces.
	switch key, err := db.NonceKey("provisioning"); {
	case err == nil:
		if err := h.nonces.n.SetKey(key); err != nil {
			return nil, err
		}
	case !errors.Is(err, store.ErrNoNodes):
		return nil, fmt.Errorf("provisioning: nonce key: %w", err)
	}

	h.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dialtone_provisioning_fetches_total",
		Help: "Provisioning requests by outcome: served, cleared, not_found, throttled, unauthorized.",
	}, []string{"outcome"})
	h.outcomes = map[string]prometheus.Counter{}
	for _, o := range []string{OutcomeServed, OutcomeCleared, OutcomeNotFound, OutcomeThrottled, OutcomeUnauthorized} {
		h.outcomes[o] = h.fetches.WithLabelValues(o)
	}
	h.blocks = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "dialtone_provisioning_blocks_total",
		Help: "Sources blocked for repeated provisioning failures.",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{h.fetches, h.blocks} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("provisioning: register metrics: %w", err)
			}
		}
	}
	return h, nil
}

// URL is the provisioning URL for an account key: what a phone, DHCP option
// 66 or Yealink RPS is configured with.
func (h *Handler) URL(key string) string { return h.baseURL + "/p/" + key + "/" }

var (
	notFoundBody     = []byte("not found\n")
	unauthorizedBody = []byte("unauthorized\n")
	throttledBody    = []byte("too many failed requests\n")
)

// ServeHTTP implements the policy in the package comment.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := clientIP(r)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.writeText(w, http.StatusMethodNotAllowed, []byte("method not allowed\n"))
		return
	}
	req, ok := parsePath(r.URL.Path)
	if !ok {
		h.refuse(w, src, "", "bad_path", "")
		return
	}
	if req.Kind == fileBoot {
		// Phones ask for boot files first on every poll; the 404 sends them
		// to the .cfg pair (docs/provisioning.md). Not a failure.
		h.reply(w, http.StatusNotFound, notFoundBody, OutcomeNotFound)
		return
	}
	key, err := h.snaps.account(req.Key, h.URL)
	if errors.Is(err, store.ErrNotFound) {
		h.refuse(w, src, "", "unknown_key", "")
		return
	}
	if err != nil {
		h.internal(w, "look up provisioning key", err)
		return
	}
	acc := key.acc
	who, err := h.principal(r, key)
	if err != nil {
		h.internal(w, "look up credentials", err)
		return
	}
	res, user := h.nonces.authenticate(r, who.access)
	switch res {
	case authNone:
		// Even from a blocked source: a phone behind it needs the nonce.
		h.challenge(w, r, acc.Account.ID, false)
		return
	case authStale:
		h.challenge(w, r, acc.Account.ID, true)
		return
	case authRetry:
		if !h.throttled(w, src, "") {
			h.challenge(w, r, acc.Account.ID, false)
		}
		return
	case authBad:
		if !h.throttled(w, src, "") {
			h.fail(src, "", "bad_credentials", acc.Account.ID)
			h.challenge(w, r, acc.Account.ID, false)
		}
		return
	}
	// Valid credentials: a block of the source (someone guessing from the
	// same address) does not apply, one of this credential does.
	if h.throttled(w, src, user) {
		return
	}
	ua, uaOK := ParseUserAgent(r.UserAgent())
	switch req.Kind {
	case fileCommon:
		m, known := store.LookupModel(ua.Model)
		if !uaOK || !known || "000000000"+m.Code != req.Code {
			h.refuse(w, src, user, "model_mismatch", acc.Account.ID)
			return
		}
		if own, _ := store.LookupModel(who.device.Model); !who.bootstrap && own.Code != m.Code {
			h.refuse(w, src, user, "other_model", acc.Account.ID)
			return
		}
		c, err := h.commonFile(m.CommonFile())
		if err != nil {
			h.internal(w, "render common file", err)
			return
		}
		h.throttle.Succeed(src, user)
		h.serveBody(w, r, c.body, c.etag, c.length, OutcomeServed)
	case fileMAC:
		// Look the device up whatever the User-Agent says, so every 404
		// costs about the same time.
		dev, err := h.snaps.device(h, key, req.MAC, false)
		if err != nil {
			h.internal(w, "read device", err)
			return
		}
		if !uaOK || ua.MAC != req.MAC {
			h.refuse(w, src, user, "ua_mismatch", acc.Account.ID)
			return
		}
		if !dev.exists {
			h.refuse(w, src, user, "unknown_device", acc.Account.ID)
			return
		}
		switch {
		case who.bootstrap && !dev.device.CredentialsConfirmedAt.IsZero():
			// The phone has its own credentials already: the account's
			// bootstrap credential no longer opens its file.
			h.refuse(w, src, user, "bootstrap_closed", acc.Account.ID)
			return
		case !who.bootstrap && who.device.MAC != req.MAC:
			h.refuse(w, src, user, "other_device", acc.Account.ID)
			return
		}
		if dev.legacy {
			// A device added before devices had their own credentials:
			// give it a set now, so its file moves it onto them.
			if dev, err = h.snaps.device(h, key, req.MAC, true); err != nil {
				h.internal(w, "create device credentials", err)
				return
			}
			if !dev.exists { // deleted meanwhile
				h.refuse(w, src, user, "unknown_device", acc.Account.ID)
				return
			}
		}
		h.throttle.Succeed(src, user)
		outcome := OutcomeServed
		if dev.cleared {
			outcome = OutcomeCleared
		}
		if r.Method == http.MethodGet {
			// Record the fetch alongside the answer, not before it: the
			// record is metadata for the admin (last seen, firmware, config
			// hash), so the phone need not wait for its fsync. It is queued
			// before the answer is written, so a Flush by anyone who has
			// seen the answer waits for it.
			f := store.Fetch{AccountID: acc.Account.ID, MAC: req.MAC, Source: sourceIP(r.RemoteAddr), UserAgent: r.UserAgent(),
				Firmware: ua.Firmware, Hash: dev.hash, OwnCredentials: !who.bootstrap}
			if f.OwnCredentials && dev.device.CredentialsConfirmedAt.IsZero() {
				// The first fetch with the device's own credentials closes
				// the bootstrap credential for it: record that one before
				// answering (the store's generation moves, so the snapshot
				// is rebuilt with the confirmation).
				if err := h.db.RecordFetch(f); err != nil {
					h.log.Error("record provisioning fetch", "mac", f.MAC, "err", err)
				}
			} else {
				h.records.add(f)
			}
		}
		h.serveBody(w, r, dev.body, dev.etag, dev.length, outcome)
	}
}

// principal is who a request's credentials claim to be: the account's
// bootstrap credential, one device of the account, or nobody (no passwords:
// authenticate then checks the digest against a dummy, which nothing matches).
type principal struct {
	access    store.ProvisioningAccess // the username and passwords authenticate checks
	bootstrap bool
	device    store.Device // the device whose own credentials these are (not bootstrap)
}

// principal resolves the username in r's Authorization within the URL key's
// account. A device username names its MAC (store.DeviceUsernameMAC), so one
// lookup finds it. When the username names nothing, no passwords are given,
// and authenticate computes the digest against a dummy all the same.
func (h *Handler) principal(r *http.Request, key *keySnap) (principal, error) {
	acc := key.acc
	user := presentedUser(r)
	p := principal{access: store.ProvisioningAccess{Account: acc.Account, Settings: acc.Settings, Username: user}}
	if user == "" {
		return p, nil
	}
	if subtle.ConstantTimeCompare([]byte(user), []byte(acc.Username)) == 1 {
		p.access, p.bootstrap = acc, true
		return p, nil
	}
	mac, ok := store.DeviceUsernameMAC(user)
	if !ok {
		return p, nil
	}
	dev, err := h.snaps.device(h, key, mac, false)
	switch {
	case err != nil:
		return p, err
	case !dev.exists || dev.access.Username == "" || subtle.ConstantTimeCompare([]byte(user), []byte(dev.access.Username)) != 1:
		return p, nil
	}
	p.access, p.device = dev.access, dev.device
	return p, nil
}

// presentedUser is the username of r's Basic or Digest Authorization ("" if
// none can be read; authenticate then refuses the header itself). It only
// chooses whose passwords authenticate checks: a header it reads differently
// from authenticate's parser names another username there and is refused.
func presentedUser(r *http.Request) string {
	if user, _, ok := r.BasicAuth(); ok {
		return user
	}
	return digestUsername(r.Header.Get("Authorization"))
}

// refuse answers the one 404 every refusal shares and counts a failure (for
// the source, or for the credential user from it once one authenticated);
// a source already blocked gets 429 instead.
func (h *Handler) refuse(w http.ResponseWriter, src netip.Addr, user, reason, acct string) {
	if user == "" && h.throttled(w, src, "") {
		return
	}
	h.fail(src, user, reason, acct)
	h.reply(w, http.StatusNotFound, notFoundBody, OutcomeNotFound)
}

// throttled answers 429 if src is blocked (user "": the whole source; else
// that credential from src) and reports whether it did.
func (h *Handler) throttled(w http.ResponseWriter, src netip.Addr, user string) bool {
	var until time.Time
	var blocked bool
	if user == "" {
		until, blocked = h.throttle.BlockedUntil(src, "")
	} else {
		until, blocked = h.throttle.UserBlockedUntil(src, user)
	}
	if !blocked {
		return false
	}
	left := until.Sub(h.db.Now())
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int((left+time.Second-1)/time.Second))))
	h.reply(w, http.StatusTooManyRequests, throttledBody, OutcomeThrottled)
	return true
}

// fail counts a failure from src and logs it (source, credential user and
// reason only: never the key, a password or an Authorization header).
func (h *Handler) fail(src netip.Addr, user, reason, acct string) {
	h.log.Info("provisioning request refused", "source", src.String(), "user", user, "reason", reason, "account", acct)
	h.throttle.Fail(src, user, reason)
}

// onBlock logs and counts a new block.
func (h *Handler) onBlock(b guard.Block) {
	h.blocks.Inc()
	h.log.Warn("provisioning source blocked", "source", b.Source, "user", b.User, "failures", b.Failures, "reason", b.Reason,
		"for", h.throttle.BlockFor().String())
}

func (h *Handler) challenge(w http.ResponseWriter, r *http.Request, acct string, stale bool) {
	w.Header().Set("WWW-Authenticate", h.nonces.challenge(r, acct, stale))
	h.reply(w, http.StatusUnauthorized, unauthorizedBody, OutcomeUnauthorized)
}

// commonFile is a rendered common file (it depends on its name only).
type commonFile struct {
	body         []byte
	etag, length []string
}

func (h *Handler) commonFile(name string) (*commonFile, error) {
	if c, ok := h.common.Load(name); ok {
		return c.(*commonFile), nil
	}
	body, err := renderCommon(name)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(body)
	c := &commonFile{body: body, etag: []string{`"` + hex.EncodeToString(sum[:16]) + `"`}, length: []string{strconv.Itoa(len(body))}}
	h.common.Store(name, c)
	return c, nil
}

// serveBody answers 200 with body, or 304 without it when the request's
// If-None-Match names the body's ETag (RFC 9110 §13.1.2).
func (h *Handler) serveBody(w http.ResponseWriter, r *http.Request, body []byte, etag, length []string, outcome string) {
	hd := w.Header()
	hd["Date"] = h.httpDate()
	hd["Etag"] = etag
	if inm := r.Header["If-None-Match"]; len(inm) > 0 && etagMatch(inm, etag[0]) {
		h.outcomes[outcome].Inc()
		hd["Cache-Control"] = noStore
		hd["X-Content-Type-Options"] = nosniff
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.outcomes[outcome].Inc()
	hd["Content-Type"] = textPlain
	hd["Content-Length"] = length
	hd["Cache-Control"] = noStore
	hd["X-Content-Type-Options"] = nosniff
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// etagMatch reports whether one of the If-None-Match values lists etag (or
// is "*"). Weak comparison, as RFC 9110 §13.1.2 asks for If-None-Match.
func etagMatch(values []string, etag string) bool {
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			item = strings.TrimSpace(item)
			item = strings.TrimPrefix(item, "W/")
			if item == etag || item == "*" {
				return true
			}
		}
	}
	return false
}

// dateHeader is the Date header of answers, formatted once a second (net/http
// would format it for every answer; the value is the same).
type dateHeader struct {
	sec   int64
	value []string
}

func (h *Handler) httpDate() []string {
	now := time.Now()
	if d := h.date.Load(); d != nil && d.sec == now.Unix() {
		return d.value
	}
	d := &dateHeader{sec: now.Unix(), value: []string{now.UTC().Format(http.TimeFormat)}}
	h.date.Store(d)
	return d.value
}

// Header values shared by every answer (never modified).
var (
	textPlain = []string{"text/plain; charset=utf-8"}
	noStore   = []string{"no-store"}
	nosniff   = []string{"nosniff"}
)

func (h *Handler) reply(w http.ResponseWriter, status int, body []byte, outcome string) {
	h.outcomes[outcome].Inc()
	h.writeText(w, status, body)
}

func (h *Handler) internal(w http.ResponseWriter, what string, err error) {
	h.log.Error("provisioning: "+what, "err", err)
	h.writeText(w, http.StatusInternalServerError, []byte("internal error\n"))
}

// writeText writes a plain-text response with fixed headers, so two
// responses with the same status and body are identical apart from Date.
func (h *Handler) writeText(w http.ResponseWriter, status int, body []byte) {
	hd := w.Header()
	hd["Date"] = h.httpDate()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
