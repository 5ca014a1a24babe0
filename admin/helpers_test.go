package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/store"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

const providerSecret = "test-provider-token-0123456789"

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// syncBuffer collects log output written from server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeNotifier records check-syncs.
type fakeNotifier struct {
	mu      sync.Mutex
	calls   []string      // account/mac
	changed chan struct{} // closed (and replaced) on every call
}

func (n *fakeNotifier) CheckSync(_ context.Context, accountID, mac string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, accountID+"/"+mac)
	if n.changed != nil {
		close(n.changed)
		n.changed = nil
	}
	return nil
}

func (n *fakeNotifier) Calls() []string {
	calls, _ := n.callsAndChange()
	return calls
}

// callsAndChange returns the calls so far and a channel closed by the next one.
func (n *fakeNotifier) callsAndChange() ([]string, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.changed == nil {
		n.changed = make(chan struct{})
	}
	return append([]string(nil), n.calls...), n.changed
}

// env is a running admin API over a real store in a temporary directory,
// with the account "default" (sip_domain example.test) and a provider token.
type env struct {
	t        *testing.T
	dir      string
	db       *store.DB
	clock    *clock
	srv      *httptest.Server
	handler  http.Handler
	reg      *prometheus.Registry
	logs     *syncBuffer
	notifier *fakeNotifier
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &clock{now: time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)},
		logs: &syncBuffer{}, notifier: &fakeNotifier{}, reg: prometheus.NewRegistry()}
	db, err := store.Open(e.dir, store.Options{Now: e.clock.Now})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	e.db = db
	t.Cleanup(func() { db.Close() })
	if err := db.RegisterMetrics(e.reg); err != nil {
		t.Fatalf("RegisterMetrics: %v", err)
	}
	if _, _, err := db.EnsureAccount(store.DefaultAccount, "example.test"); err != nil {
		t.Fatalf("EnsureAccount: %v", err)
	}
	if _, _, err := db.EnsureToken(providerSecret, store.RoleProvider, "test provider"); err != nil {
		t.Fatalf("EnsureToken: %v", err)
	}
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := NewHandler(Options{DB: db, Log: log, Registry: e.reg, Notifier: e.notifier, Version: "test"})
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	e.handler = h
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

// token makes a token of role for acct directly in the store.
func (e *env) token(acct, role string) string {
	e.t.Helper()
	_, secret, err := e.db.CreateToken(acct, role, role+" of "+acct, store.System)
	if err != nil {
		e.t.Fatalf("CreateToken(%s, %s): %v", acct, role, err)
	}
	return secret
}

// do sends a request; body is a string (sent as is), nil, or a value to
// encode as JSON. It returns the status and body, after checking the
// response against the OpenAPI document (checkResponse): every test that
// goes through here also tests the document.
func (e *env) do(method, path, token string, body any) (int, []byte) {
	e.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, r)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	checkResponse(e.t, req, resp.StatusCode, resp.Header, data)
	return resp.StatusCode, data
}

// call sends a request, fails the test unless the status is want, and
// decodes the body into out (if not nil). It returns the raw body.
func (e *env) call(method, path, token string, body any, want int, out any) []byte {
	e.t.Helper()
	status, data := e.do(method, path, token, body)
	if status != want {
		e.t.Fatalf("%s %s = %d %s, want %d", method, path, status, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return data
}

// apiErr decodes an error body.
type apiErrBody struct {
	Error struct {
		Code     string            `json:"code"`
		Message  string            `json:"message"`
		Field    string            `json:"field"`
		Fields   map[string]string `json:"fields"`
		Blockers []map[string]any  `json:"blockers"`
	} `json:"error"`
}

// callErr expects an error with status and code and returns it.
func (e *env) callErr(method, path, token string, body any, status int, code string) apiErrBody {
	e.t.Helper()
	var out apiErrBody
	e.call(method, path, token, body, status, &out)
	if out.Error.Code != code {
		e.t.Fatalf("%s %s: error code %q (%s), want %q", method, path, out.Error.Code, out.Error.Message, code)
	}
	if out.Error.Message == "" {
		e.t.Fatalf("%s %s: error without message", method, path)
	}
	return out
}

const base = "/api/v1/accounts/default"

// createUser makes a user through the API.
func (e *env) createUser(ext, name string) userJSON {
	e.t.Helper()
	var u userJSON
	e.call("POST", base+"/users", providerSecret, map[string]string{"extension": ext, "name": name, "email": strings.ToLower(strings.Fields(name)[0]) + "@example.test"}, 201, &u)
	return u
}

// register adds a live binding for the user, as the registrar would.
func (e *env) register(userID, contact, ua string) {
	e.t.Helper()
	_, err := e.db.Register(store.RegisterRequest{AccountID: store.DefaultAccount, UserID: userID, CallID: "call-" + contact, CSeq: 1,
		Source: "192.0.2.7:5062", Transport: "udp", UserAgent: ua,
		Contacts: []store.ContactUpdate{{URI: contact, Expires: 3600}}})
	if err != nil {
		e.t.Fatalf("Register: %v", err)
	}
}

// auditEntries reads the account's audit log through the API.
func (e *env) auditEntries() []auditJSON {
	e.t.Helper()
	var out auditList
	e.call("GET", base+"/audit?limit=1000", providerSecret, nil, 200, &out)
	return out.Entries
}
