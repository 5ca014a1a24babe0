package provisioning_test

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dialtone-voip/dialtone/provisioning"
	"github.com/dialtone-voip/dialtone/store"
	"github.com/dialtone-voip/dialtone/store/storetest"
)

const (
	t54wUA  = "Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc"
	t54wMAC = "805ec0aabbcc"
)

var admin = store.Actor{Name: "test-admin", Role: store.RoleAdmin}

// syncBuffer is a log sink safe for the handler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fixture is the acceptance checks' (docs/provisioning.md): account key K, credentials U:P, device 805ec0aabbcc
// (T54W) with line 1 → user 1001, served by a real handler over a real store.
type fixture struct {
	t      *testing.T
	db     *store.DB
	clock  *storetest.Clock
	h      *provisioning.Handler
	srv    *httptest.Server
	logs   *syncBuffer
	reg    *prometheus.Registry
	prov   store.ProvisioningSettings
	user   store.User
	sipPW  string
	device store.Device
}

func newFixture(t *testing.T, cfg provisioning.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: storetest.NewClock(), logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	f.db = storetest.Open(t, f.clock)
	if _, err := f.db.CreateAccount("acme", "example.test", admin); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.user, err = f.db.CreateUser("acme", store.NewUser{Extension: "1001", Name: "Ada Lovelace"}, admin); err != nil {
		t.Fatal(err)
	}
	creds, err := f.db.SIPCredentials("acme", f.user.ID, admin)
	if err != nil {
		t.Fatal(err)
	}
	f.sipPW = creds.Password
	if f.device, err = f.db.CreateDevice("acme", store.NewDevice{MAC: t54wMAC, Model: "T54W",
		Lines: []store.DeviceLine{{Line: 1, UserID: f.user.ID}}}, admin); err != nil {
		t.Fatal(err)
	}
	if f.prov, err = f.db.ProvisioningSettings("acme", admin); err != nil {
		t.Fatal(err)
	}
	if cfg.ExternalURL == "" {
		cfg.ExternalURL = "https://prov.example.test:8443"
	}
	if cfg.SIPServer == "" {
		cfg.SIPServer = "sip.example.test"
	}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if f.h, err = provisioning.NewHandler(f.db, cfg, log, f.reg); err != nil {
		t.Fatalf("NewHandler = %v", err)
	}
	f.srv = httptest.NewServer(f.h)
	t.Cleanup(f.h.Flush) // runs after the server closes, before the store does
	t.Cleanup(f.srv.Close)
	return f
}

// phone is an HTTP client from one source address that answers Digest
// challenges the way a Yealink does: it sends credentials only after a 401
// and reuses the challenge (with a rising nonce count) until told otherwise.
type phone struct {
	t          *testing.T
	base       string
	client     *http.Client
	user, pass string
	ua         string
	chal       *digest.Challenge
	nc         int
	flush      func() // waits for the handler's fetch records, as a later reader would
}

// newPhone dials from 127.0.0.<n>, so tests have distinct sources on loopback.
func (f *fixture) phone(n int, ua string) *phone {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(n))}}
	tr := &http.Transport{DialContext: d.DialContext}
	f.t.Cleanup(tr.CloseIdleConnections)
	return &phone{t: f.t, base: f.srv.URL, client: &http.Client{Transport: tr}, user: f.prov.Username, pass: f.prov.Password, ua: ua, flush: f.h.Flush}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// raw sends one request with the given Authorization (may be "").
func (p *phone) raw(path, auth string) response {
	p.t.Helper()
	req, err := http.NewRequest(http.MethodGet, p.base+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if p.ua != "" {
		req.Header.Set("User-Agent", p.ua)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	res, err := p.client.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	if p.flush != nil {
		p.flush() // fetches are recorded after the answer
	}
	return response{res.StatusCode, res.Header, body}
}

func (p *phone) authorization(path string) string {
	p.nc++
	cred, err := digest.Digest(p.chal, digest.Options{Method: http.MethodGet, URI: path, Username: p.user, Password: p.pass, Count: p.nc})
	if err != nil {
		p.t.Fatal(err)
	}
	return cred.String()
}

// get fetches path, authenticating as a phone does.
func (p *phone) get(path string) response {
	p.t.Helper()
	auth := ""
	if p.chal != nil {
		auth = p.authorization(path)
	}
	r := p.raw(path, auth)
	if r.status != http.StatusUnauthorized {
		return r
	}
	chal, err := digest.FindChallenge(r.header)
	if err != nil {
		p.t.Fatalf("401 without a usable challenge: %v", err)
	}
	if auth != "" && !chal.Stale {
		return r // wrong credentials: a phone would not retry
	}
	p.chal, p.nc = chal, 0
	return p.raw(path, p.authorization(path))
}

func (f *fixture) path(file string) string { return "/p/" + f.prov.Key + "/" + file }

// same compares two responses in full, except the Date header.
func same(t *testing.T, a, b response) {
	t.Helper()
	ha, hb := a.header.Clone(), b.header.Clone()
	ha.Del("Date")
	hb.Del("Date")
	if a.status != b.status || !bytes.Equal(a.body, b.body) {
		t.Fatalf("responses differ: %d %q vs %d %q", a.status, a.body, b.status, b.body)
	}
	if d := cmp.Diff(ha, hb); d != "" {
		t.Fatalf("headers differ (-a +b):\n%s", d)
	}
}

func (f *fixture) fetches(outcome string) float64 {
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dialtone_provisioning_fetches_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (f *fixture) devices() []store.Device {
	ds, err := f.db.Devices("acme")
	if err != nil {
		f.t.Fatal(err)
	}
	return ds
}

// TestAcceptance runs the ten acceptance checks of docs/provisioning.md against one fixture; each
// check uses its own source address so failures in one never throttle another.
func TestAcceptance(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	var want404 response // check 5's answer, which checks 4, 9 and 10 must repeat exactly

	t.Run("5_UnknownMACAndWrongKey", func(t *testing.T) {
		before := f.devices()
		unknown := f.phone(5, "Yealink SIP-T54W 96.86.0.100 80:5e:c0:00:00:01")
		want404 = unknown.get(f.path("805ec0000001.cfg"))
		if want404.status != http.StatusNotFound {
			t.Fatalf("unknown MAC = %d, want 404", want404.status)
		}
		wrongKey := f.phone(5, t54wUA).raw("/p/WRONG/"+t54wMAC+".cfg", "")
		same(t, want404, wrongKey)
		longWrongKey := f.phone(5, t54wUA).raw("/p/"+strings.Repeat("x", 32)+"/"+t54wMAC+".cfg", "")
		same(t, want404, longWrongKey)
		if d := cmp.Diff(before, f.devices()); d != "" {
			t.Fatalf("an unknown MAC or a wrong key changed the device registry (-before +after):\n%s", d)
		}
		// Another account's phone, asked for with this account's key and credentials.
		if _, err := f.db.CreateAccount("other", "other.example.test", admin); err != nil {
			t.Fatal(err)
		}
		if _, err := f.db.CreateDevice("other", store.NewDevice{MAC: "805ec0123456", Model: "T54W"}, admin); err != nil {
			t.Fatal(err)
		}
		before = f.devices()
		otherAcct := f.phone(5, "Yealink SIP-T54W 96.86.0.100 80:5e:c0:12:34:56")
		same(t, want404, otherAcct.get(f.path("805ec0123456.cfg")))
		if d, _ := f.db.Device("other", "805ec0123456"); !d.LastProvisionedAt.IsZero() {
			t.Fatal("another account's device was stamped")
		}
		if d := cmp.Diff(before, f.devices()); d != "" {
			t.Fatalf("device registry changed (-before +after):\n%s", d)
		}
	})

	t.Run("1_MACFile", func(t *testing.T) {
		p := f.phone(1, t54wUA)
		r := p.get(f.path(t54wMAC + ".cfg"))
		if r.status != http.StatusOK {
			t.Fatalf("status = %d %q, want 200", r.status, r.body)
		}
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Fatalf("Content-Type = %q", ct)
		}
		lines := strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n")
		if lines[0] != "#!version:1.0.0.1" {
			t.Fatalf("first line = %q", lines[0])
		}
		for _, l := range lines[1:] {
			if l != "" && !strings.HasPrefix(l, "#") && !strings.Contains(l, " = ") {
				t.Fatalf("line %q is neither a comment nor key = value", l)
			}
		}
		body := string(r.body)
		for _, want := range []string{"account.1.enable = 1\n", "account.1.user_name = 1001\n", "account.1.password = " + f.sipPW + "\n",
			"account.1.sip_server.1.address = example.test\n", "static.auto_provision.user_agent_mac.enable = 1\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("body lacks %q", want)
			}
		}
		for n := 2; n <= 16; n++ {
			if !strings.Contains(body, fmt.Sprintf("account.%d.enable = 0\n", n)) {
				t.Errorf("account %d not present and disabled", n)
			}
		}
		if strings.Contains(body, "account.17.") {
			t.Error("a T54W has 16 accounts, account.17 rendered")
		}
		d, err := f.db.Device("acme", t54wMAC)
		if err != nil {
			t.Fatal(err)
		}
		if !d.LastProvisionedAt.Equal(f.clock.Now()) || d.LastSource != "127.0.0.1" || d.LastFirmware != "96.86.0.100" || d.LastUserAgent != t54wUA {
			t.Fatalf("fetch not recorded: %+v", d)
		}
		if sum := sha256hex(r.body); d.LastConfigHash != sum {
			t.Fatalf("recorded hash %s, body hash %s", d.LastConfigHash, sum)
		}
	})

	t.Run("2_CommonFile", func(t *testing.T) {
		p := f.phone(2, t54wUA)
		r := p.get(f.path("y000000000096.cfg"))
		if r.status != http.StatusOK || !strings.HasPrefix(string(r.body), "#!version:1.0.0.1\n") {
			t.Fatalf("common file = %d %q", r.status, r.body)
		}
		for _, secret := range []string{"account.", f.sipPW, f.prov.Password, f.prov.Key, f.prov.Username, "1001", "example.test", "acme"} {
			if strings.Contains(string(r.body), secret) {
				t.Fatalf("common file contains %q:\n%s", secret, r.body)
			}
		}
		wrongModel := f.phone(2, "Yealink SIP-T46U 108.86.0.20 80:5e:c0:aa:bb:cc")
		same(t, want404, wrongModel.get(f.path("y000000000096.cfg")))
	})

	t.Run("3_AuthChallenge", func(t *testing.T) {
		p := f.phone(3, t54wUA)
		r := p.raw(f.path(t54wMAC+".cfg"), "")
		if r.status != http.StatusUnauthorized {
			t.Fatalf("no Authorization = %d, want 401", r.status)
		}
		wa := r.header.Get("WWW-Authenticate")
		if !strings.HasPrefix(wa, `Digest realm="`) || !strings.Contains(wa, `qop="auth"`) || !strings.Contains(wa, `nonce="`) {
			t.Fatalf("WWW-Authenticate = %q", wa)
		}
		// The challenge says nothing about the MAC: an unknown one gets the same.
		other := p.raw(f.path("805ec0000001.cfg"), "")
		if other.status != r.status || !bytes.Equal(other.body, r.body) {
			t.Fatalf("401 for an unknown MAC differs: %d %q vs %d %q", other.status, other.body, r.status, r.body)
		}
		if ok := p.get(f.path(t54wMAC + ".cfg")); ok.status != http.StatusOK {
			t.Fatalf("correct Digest = %d, want 200", ok.status)
		}
		bad := f.phone(3, t54wUA)
		bad.pass = "wrong-password"
		wrong := bad.get(f.path(t54wMAC + ".cfg"))
		if wrong.status != http.StatusUnauthorized || !bytes.Equal(wrong.body, r.body) {
			t.Fatalf("wrong password = %d %q, want the same 401", wrong.status, wrong.body)
		}
		if strings.Contains(string(wrong.body)+string(r.body), t54wMAC) {
			t.Fatal("401 body mentions the MAC")
		}
	})

	t.Run("4_UAMismatch", func(t *testing.T) {
		for _, ua := range []string{"Yealink SIP-T54W 96.86.0.100 80:5e:c0:dd:ee:ff", "curl/8.5.0", ""} {
			p := f.phone(4, ua)
			same(t, want404, p.get(f.path(t54wMAC+".cfg")))
		}
	})

	t.Run("6_Throttle", func(t *testing.T) {
		scanner := f.phone(6, "")
		blockedAt := -1
		for i := range 50 {
			mac := fmt.Sprintf("805ec0%06x", 0x100000+i)
			scanner.ua = "Yealink SIP-T54W 96.86.0.100 " + mac
			r := scanner.get(f.path(mac + ".cfg"))
			switch r.status {
			case http.StatusNotFound:
				if blockedAt >= 0 {
					t.Fatalf("request %d got 404 after the block started", i)
				}
			case http.StatusTooManyRequests:
				if blockedAt < 0 {
					blockedAt = i
				}
				if r.header.Get("Retry-After") == "" {
					t.Fatal("429 without Retry-After")
				}
			default:
				t.Fatalf("request %d: status %d", i, r.status)
			}
		}
		if blockedAt < 0 || blockedAt > 10 {
			t.Fatalf("blocked at request %d, want within the first 11 (limit 10)", blockedAt)
		}
		// Blocked sources are refused even for valid requests ...
		scanner.ua = t54wUA
		if r := scanner.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusTooManyRequests {
			t.Fatalf("valid request from blocked source = %d, want 429", r.status)
		}
		// ... while another source is unaffected.
		if r := f.phone(16, t54wUA).get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
			t.Fatalf("other source = %d, want 200", r.status)
		}
		logs := f.logs.String()
		if !strings.Contains(logs, "provisioning source blocked") || !strings.Contains(logs, "source=127.0.0.6") {
			t.Fatalf("no block logged with the source:\n%s", logs)
		}
		n := 0
		for _, l := range strings.Split(logs, "\n") {
			if strings.Contains(l, "provisioning source blocked") && strings.Contains(l, "source=127.0.0.6 ") {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d block lines for one block, want 1", n)
		}
		for _, secret := range []string{f.prov.Password, f.prov.Key, f.sipPW} {
			if strings.Contains(logs, secret) {
				t.Fatal("a secret reached the log")
			}
		}
		if f.fetches(provisioning.OutcomeThrottled) == 0 {
			t.Fatal("throttled metric not counted")
		}
		// The block ends after BlockFor (default 15 min).
		f.clock.Advance(15*time.Minute + time.Second)
		if r := scanner.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
			t.Fatalf("after the block = %d, want 200", r.status)
		}
	})

	t.Run("7_Determinism", func(t *testing.T) {
		p := f.phone(7, t54wUA)
		a, b := p.get(f.path(t54wMAC+".cfg")), p.get(f.path(t54wMAC+".cfg"))
		if a.status != 200 || !bytes.Equal(a.body, b.body) || a.header.Get("ETag") == "" || a.header.Get("ETag") != b.header.Get("ETag") {
			t.Fatalf("two fetches differ (ETag %q vs %q)", a.header.Get("ETag"), b.header.Get("ETag"))
		}
		if md5.Sum(a.body) != md5.Sum(b.body) {
			t.Fatal("MD5 differs")
		}
		name := "Ada King"
		if _, err := f.db.UpdateUser("acme", f.user.ID, store.UserPatch{Name: &name}, admin); err != nil {
			t.Fatal(err)
		}
		c := p.get(f.path(t54wMAC + ".cfg"))
		if d := lineDiff(a.body, c.body); !slices.Equal(d, []string{"account.1.label = Ada King"}) {
			t.Fatalf("rename changed %q, want only the label", d)
		}
		orig := "Ada Lovelace"
		if _, err := f.db.UpdateUser("acme", f.user.ID, store.UserPatch{Name: &orig}, admin); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("8_DisabledAndDeletedUser", func(t *testing.T) {
		p := f.phone(8, t54wUA)
		before := p.get(f.path(t54wMAC + ".cfg"))
		if before.status != http.StatusOK {
			t.Fatalf("before = %d", before.status)
		}
		servedCleared := f.fetches(provisioning.OutcomeCleared)
		if _, err := f.db.DisableUser("acme", f.user.ID, admin); err != nil {
			t.Fatal(err)
		}
		disabled := p.get(f.path(t54wMAC + ".cfg"))
		if disabled.status != http.StatusOK {
			t.Fatalf("disabled user's phone = %d, want 200 (never 404)", disabled.status)
		}
		body := string(disabled.body)
		for _, want := range []string{"account.1.enable = 0\n", "account.1.password = %NULL%\n", "account.1.user_name = %NULL%\n",
			"account.1.auth_name = %NULL%\n", "account.1.sip_server.1.address = %NULL%\n"} {
			if !strings.Contains(body, want) {
				t.Errorf("cleared body lacks %q", want)
			}
		}
		if strings.Contains(body, f.sipPW) {
			t.Fatal("cleared body still carries the SIP password")
		}
		if f.fetches(provisioning.OutcomeCleared) != servedCleared+1 {
			t.Fatal("cleared metric not counted")
		}
		if _, err := f.db.EnableUser("acme", f.user.ID, admin); err != nil {
			t.Fatal(err)
		}
		if again := p.get(f.path(t54wMAC + ".cfg")); !bytes.Equal(again.body, before.body) {
			t.Fatalf("re-enabled body differs from the original:\n%q", lineDiff(before.body, again.body))
		}
		// Deleting (disable first, rule 3) clears the slot the same way.
		if _, err := f.db.DisableUser("acme", f.user.ID, admin); err != nil {
			t.Fatal(err)
		}
		if err := f.db.DeleteUser("acme", f.user.ID, admin); err != nil {
			t.Fatal(err)
		}
		deleted := p.get(f.path(t54wMAC + ".cfg"))
		if deleted.status != http.StatusOK || !bytes.Equal(deleted.body, disabled.body) {
			t.Fatalf("deleted user's phone = %d, want 200 with the same cleared body; diff %q", deleted.status, lineDiff(disabled.body, deleted.body))
		}
		// Re-create the fixture's user for the checks that follow.
		var err error
		if f.user, err = f.db.CreateUser("acme", store.NewUser{Extension: "1001", Name: "Ada Lovelace"}, admin); err != nil {
			t.Fatal(err)
		}
		c, _ := f.db.SIPCredentials("acme", f.user.ID, admin)
		f.sipPW = c.Password
		lines := []store.DeviceLine{{Line: 1, UserID: f.user.ID}}
		if _, err := f.db.UpdateDevice("acme", t54wMAC, store.DevicePatch{Lines: &lines}, admin); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("9_ParsingVariants", func(t *testing.T) {
		variants := []struct{ ua, mac, model string }{
			{"yealink SIP-T28P 2.70.0.140 00:15:65:13:ae:0b", "00156513ae0b", "T28P"},
			{"Yealink SIP-T38G  38.70.0.125 00:15:65:2f:c3:5e", "0015652fc35e", "T38G"},
			{"Yealink W90DM 130.87.0.10 80:5e:c0:d9:c7:44", "805ec0d9c744", "W90DM"},
			{"Yealink SIP-T56A  58.80.0.25 001565f429a4", "001565f429a4", "T56A"},
		}
		for _, v := range variants {
			if _, err := f.db.CreateDevice("acme", store.NewDevice{MAC: v.mac, Model: v.model, Lines: []store.DeviceLine{{Line: 1, UserID: f.user.ID}}}, admin); err != nil {
				t.Fatal(err)
			}
			r := f.phone(9, v.ua).get(f.path(v.mac + ".cfg"))
			if r.status != http.StatusOK || !strings.Contains(string(r.body), "## dialtone: Yealink "+v.model+" "+v.mac+".") {
				t.Fatalf("%q = %d, want 200 for %s %s", v.ua, r.status, v.model, v.mac)
			}
		}
		upper := f.phone(9, t54wUA).get(f.path("805EC0AABBCC.cfg"))
		if upper.status != http.StatusOK || !strings.Contains(string(upper.body), "Yealink T54W 805ec0aabbcc.") {
			t.Fatalf("upper-case path = %d", upper.status)
		}
		noMAC := f.phone(9, "Yealink SIP-T54W 96.86.0.100")
		same(t, want404, noMAC.get(f.path(t54wMAC+".cfg")))
	})

	t.Run("10_ModelLimitsAndHostilePaths", func(t *testing.T) {
		if _, err := f.db.CreateDevice("acme", store.NewDevice{MAC: "805ec0d57d72", Model: "T31G", Lines: []store.DeviceLine{{Line: 1, UserID: f.user.ID}}}, admin); err != nil {
			t.Fatal(err)
		}
		t31 := f.phone(10, "Yealink SIP-T31G 124.85.257.55 80:5e:c0:d5:7d:72").get(f.path("805ec0d57d72.cfg"))
		if t31.status != 200 || !strings.Contains(string(t31.body), "account.2.enable = 0") || strings.Contains(string(t31.body), "account.3.") {
			t.Fatalf("T31G = %d, want accounts 1-2 only", t31.status)
		}
		w90 := f.phone(10, "Yealink W90DM 130.87.0.10 80:5e:c0:d9:c7:44").get(f.path("805ec0d9c744.cfg"))
		if w90.status != 200 || !strings.Contains(string(w90.body), "account.250.enable = 0") || strings.Contains(string(w90.body), "account.251.") {
			t.Fatalf("W90DM = %d, want accounts 1-250", w90.status)
		}
		_, err := f.db.UpdateDevice("acme", "805ec0d57d72", store.DevicePatch{Lines: &[]store.DeviceLine{{Line: 3, UserID: f.user.ID}}}, admin)
		var ve *store.ValidationError
		if !errors.As(err, &ve) || ve.Problems["lines"] == "" {
			t.Fatalf("line 3 on a T31G = %v, want a lines validation error", err)
		}

		// Hostile paths, each from a fresh source so the throttle does not hide the answer.
		src := 20
		for _, p := range []string{
			"/p/" + f.prov.Key + "/../" + t54wMAC + ".cfg",
			"/p/" + f.prov.Key + "/%2e%2e/" + t54wMAC + ".cfg",
			"/p/" + f.prov.Key + "/%2e%2e%2f" + t54wMAC + ".cfg",
			"/p/" + f.prov.Key + "/" + t54wMAC + "%00.cfg",
			"/p/" + f.prov.Key + "/" + t54wMAC + "0.cfg",
			"/p/" + f.prov.Key + "/" + t54wMAC + ".cfg/",
			"/p/" + f.prov.Key + "/",
			"/p/../../etc/passwd",
		} {
			src++
			r := f.phone(src, t54wUA).get(p)
			if r.status != http.StatusNotFound && r.status != http.StatusBadRequest {
				t.Fatalf("%s = %d, want 400 or 404", p, r.status)
			}
			if r.status == http.StatusNotFound {
				same(t, want404, r)
			}
		}
		// A raw NUL in the request line never reaches the handler.
		if st := rawStatus(t, f.srv.Listener.Addr().String(), "GET /p/"+f.prov.Key+"/"+t54wMAC+"\x00.cfg HTTP/1.1\r\nHost: x\r\n\r\n"); st != 400 && st != 404 {
			t.Fatalf("raw NUL = %d, want 400", st)
		}
		boot := f.phone(40, t54wUA).get(f.path(t54wMAC + ".boot"))
		same(t, want404, boot)
		commonBoot := f.phone(40, t54wUA).get(f.path("y000000000000.boot"))
		same(t, want404, commonBoot)

		// Plain HTTP to an HTTPS server is refused (the main program serves
		// this handler with TLS only).
		tlsSrv := httptest.NewUnstartedServer(f.h)
		tlsSrv.Config.ErrorLog = stdlog.New(io.Discard, "", 0)
		tlsSrv.StartTLS()
		defer tlsSrv.Close()
		res, err := http.Get("http://" + tlsSrv.Listener.Addr().String() + f.path(t54wMAC+".cfg"))
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK || bytes.Contains(body, []byte("account.")) {
				t.Fatalf("plain HTTP to the TLS server = %d", res.StatusCode)
			}
		}
	})
}

func rawStatus(t *testing.T, addr, req string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	var status int
	if _, err := fmt.Fscanf(c, "HTTP/1.1 %d", &status); err != nil {
		t.Fatalf("read status: %v", err)
	}
	return status
}

func lineDiff(a, b []byte) []string {
	al := strings.Split(string(a), "\n")
	bl := strings.Split(string(b), "\n")
	var out []string
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, y)
		}
	}
	return out
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestMACScan is an attacker who holds the account key and credentials
// (a leaked phone config) and forges a matching User-Agent for every guess.
func TestMACScan(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	scanner := f.phone(50, "")
	var throttled, notFound int
	for i := range 1000 {
		var b [3]byte
		_, _ = rand.Read(b[:])
		mac := "805ec0" + hex.EncodeToString(b[:])
		if mac == t54wMAC {
			continue
		}
		scanner.ua = "Yealink SIP-T54W 96.86.0.100 " + mac
		r := scanner.get(f.path(mac + ".cfg"))
		switch r.status {
		case http.StatusOK:
			t.Fatalf("scan request %d got 200", i)
		case http.StatusTooManyRequests:
			throttled++
		case http.StatusNotFound:
			notFound++
		default:
			t.Fatalf("scan request %d: status %d", i, r.status)
		}
		for _, secret := range []string{f.sipPW, f.prov.Password, "account."} {
			if bytes.Contains(r.body, []byte(secret)) {
				t.Fatalf("scan response %d leaks %q", i, secret)
			}
		}
	}
	if notFound > 10 || throttled < 980 {
		t.Fatalf("%d not found, %d throttled; want the block after 10 failures", notFound, throttled)
	}
	if r := f.phone(51, t54wUA).get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK || !strings.Contains(string(r.body), f.sipPW) {
		t.Fatalf("legitimate phone from another source = %d, want 200", r.status)
	}
}

// TestUnknownKeyScan: without the key, guesses never even reach a challenge.
func TestUnknownKeyScan(t *testing.T) {
	f := newFixture(t, provisioning.Config{FailureLimit: 5})
	p := f.phone(60, t54wUA)
	first := p.raw("/p/"+strings.Repeat("A", 32)+"/"+t54wMAC+".cfg", "")
	if first.status != http.StatusNotFound || first.header.Get("WWW-Authenticate") != "" {
		t.Fatalf("unknown key = %d (challenge %q), want a plain 404", first.status, first.header.Get("WWW-Authenticate"))
	}
	for range 4 {
		p.raw("/p/"+strings.Repeat("B", 32)+"/"+t54wMAC+".cfg", "")
	}
	if r := p.raw("/p/"+strings.Repeat("C", 32)+"/"+t54wMAC+".cfg", ""); r.status != http.StatusTooManyRequests {
		t.Fatalf("after 5 failures = %d, want 429", r.status)
	}
	// A phone behind the same address still gets its challenge, and with
	// valid credentials its file.
	if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("valid credentials from the blocked source = %d, want 200", r.status)
	}
}

// TestBootFilesAreNotFailures: a phone asks for boot files on every poll;
// that must never get it blocked.
func TestBootFilesAreNotFailures(t *testing.T) {
	f := newFixture(t, provisioning.Config{FailureLimit: 2})
	p := f.phone(70, t54wUA)
	for range 10 {
		if r := p.get(f.path(t54wMAC + ".boot")); r.status != http.StatusNotFound {
			t.Fatalf("boot = %d", r.status)
		}
		if r := p.get(f.path("y000000000000.boot")); r.status != http.StatusNotFound {
			t.Fatalf("common boot = %d", r.status)
		}
		if r := p.get(f.path("y000000000096.cfg")); r.status != http.StatusOK {
			t.Fatalf("common = %d", r.status)
		}
		if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
			t.Fatalf("mac = %d", r.status)
		}
	}
}

func TestRotation(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	old := f.prov
	oldPhone := f.phone(80, t54wUA)
	if r := oldPhone.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("before rotation = %d", r.status)
	}
	rot, err := f.db.RotateProvisioning("acme", admin)
	if err != nil {
		t.Fatal(err)
	}
	// Within the grace period the phone still gets in with the old key and
	// bootstrap password (it has not used its own credentials yet), and the
	// config it receives carries its own credentials, never the account's.
	// The key (the URL) is never in a config file: phones learn it from DHCP
	// option 66, RPS or their admin, which the operator updates within the
	// grace period.
	r := oldPhone.get("/p/" + old.Key + "/" + t54wMAC + ".cfg")
	if r.status != http.StatusOK {
		t.Fatalf("old key+password within grace = %d, want 200", r.status)
	}
	body := string(r.body)
	own, err := f.db.DeviceProvisioningCredentials("acme", t54wMAC, admin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "static.auto_provision.server.password = "+own.Password+"\n") {
		t.Fatal("config served within grace does not carry the device's own password")
	}
	if strings.Contains(body, rot.Key) || strings.Contains(body, "static.auto_provision.server.url") {
		t.Fatal("the provisioning key is in a config file")
	}
	for _, secret := range []string{old.Key, old.Password, rot.Password, rot.Username} {
		if strings.Contains(body, secret) {
			t.Fatal("config carries the account's key or bootstrap credential")
		}
	}
	f.clock.Advance(store.ProvisioningGrace + time.Minute)
	stale := f.phone(81, t54wUA)
	if r := stale.get("/p/" + old.Key + "/" + t54wMAC + ".cfg"); r.status != http.StatusNotFound {
		t.Fatalf("old key after grace = %d, want 404", r.status)
	}
	oldPW := f.phone(82, t54wUA)
	if r := oldPW.get("/p/" + rot.Key + "/" + t54wMAC + ".cfg"); r.status != http.StatusUnauthorized {
		t.Fatalf("old password after grace = %d, want 401", r.status)
	}
	fresh := f.phone(83, t54wUA)
	fresh.pass = rot.Password
	fresh.user = rot.Username
	if r := fresh.get("/p/" + rot.Key + "/" + t54wMAC + ".cfg"); r.status != http.StatusOK {
		t.Fatalf("new key and password = %d, want 200", r.status)
	}
}

func TestStaleNonce(t *testing.T) {
	f := newFixture(t, provisioning.Config{FailureLimit: 1})
	p := f.phone(90, t54wUA)
	if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("first = %d", r.status)
	}
	f.clock.Advance(10 * time.Minute)
	r := p.raw(f.path(t54wMAC+".cfg"), p.authorization(f.path(t54wMAC+".cfg")))
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), "stale=true") {
		t.Fatalf("expired nonce = %d %q, want 401 stale=true", r.status, r.header.Get("WWW-Authenticate"))
	}
	// A stale nonce is not a failure: with a limit of 1 the phone would
	// otherwise be blocked now.
	if r := p.get(f.path(t54wMAC + ".cfg")); r.status != http.StatusOK {
		t.Fatalf("after stale challenge = %d, want 200", r.status)
	}
}

func TestBasicOnlyOverTLS(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+f.path(t54wMAC+".cfg"), nil)
	req.Header.Set("User-Agent", t54wUA)
	req.SetBasicAuth(f.prov.Username, f.prov.Password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Basic over plain HTTP = %d, want 401", res.StatusCode)
	}
	tlsSrv := httptest.NewTLSServer(f.h)
	defer tlsSrv.Close()
	req, _ = http.NewRequest(http.MethodGet, tlsSrv.URL+f.path(t54wMAC+".cfg"), nil)
	req.Header.Set("User-Agent", t54wUA)
	req.SetBasicAuth(f.prov.Username, f.prov.Password)
	res, err = tlsSrv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), f.sipPW) {
		t.Fatalf("Basic over TLS = %d, want 200", res.StatusCode)
	}
}

func TestNewHandlerRejectsBadConfig(t *testing.T) {
	db := storetest.Open(t, nil)
	for _, cfg := range []provisioning.Config{
		{},
		{ExternalURL: "ftp://x"},
		{ExternalURL: "https://u:p@x"},
		{ExternalURL: "https://x", SIPTransport: "sctp"},
		{ExternalURL: "https://x", NTPServer: "a\nb"},
		{ExternalURL: "https://x", SIPPort: 70000},
	} {
		if _, err := provisioning.NewHandler(db, cfg, nil, nil); err == nil {
			t.Errorf("NewHandler(%+v) = nil error", cfg)
		}
	}
	h, err := provisioning.NewHandler(db, provisioning.Config{ExternalURL: "https://prov.example.test:8443/"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.URL("k"); got != "https://prov.example.test:8443/p/k/" {
		t.Fatalf("URL = %q", got)
	}
}

// TestConcurrentFetches uses a third-party Digest client (icholy/digest)
// from several sources at once, under -race.
func TestConcurrentFetches(t *testing.T) {
	f := newFixture(t, provisioning.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(100+i))}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: &digest.Transport{Username: f.prov.Username, Password: f.prov.Password, Transport: tr}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				req, _ := http.NewRequest(http.MethodGet, f.srv.URL+f.path(t54wMAC+".cfg"), nil)
				req.Header.Set("User-Agent", t54wUA)
				res, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(f.sipPW)) {
					errs <- fmt.Errorf("status %d", res.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// With SIPTransport "dns-naptr" (several nodes behind one name), a phone's
// file names that name as its outbound proxy with Yealink's transport type
// 3 and port 0, so the phone resolves it by NAPTR/SRV and registers to
// another node when its own stops answering.
func TestDNSNAPTRServer(t *testing.T) {
	f := newFixture(t, provisioning.Config{SIPServer: "sip.example.test", SIPTransport: "dns-naptr", SIPPort: 5070})
	r := f.phone(1, t54wUA).get(f.path(t54wMAC + ".cfg"))
	if r.status != http.StatusOK {
		t.Fatalf("status = %d %q, want 200", r.status, r.body)
	}
	for _, want := range []string{"account.1.sip_server.1.address = example.test\n", "account.1.outbound_proxy_enable = 1\n",
		"account.1.outbound_proxy.1.address = sip.example.test\n", "account.1.outbound_proxy.1.port = 0\n",
		"account.1.sip_server.1.port = 0\n", "account.1.sip_server.1.transport_type = 3\n"} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("body lacks %q", want)
		}
	}
}
