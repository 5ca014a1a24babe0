package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icholy/digest"

	"github.com/dialtone-voip/dialtone/store"
)

// TestPowerUp is a site powering up after an outage: every phone of an
// office (distinct MACs, each phone its own line and user, all behind one
// NAT address: 127.0.0.1) fetches its model's common file and then its own
// <mac>.cfg with its own credentials (Digest, as Yealink phones answer a
// challenge), and registers over SIP UDP with the line the file gave it.
// All phones start at the same instant, a harder start than "within one
// second". Every phone must be served and registered within 10 s, with no
// 5xx, no 429, no block of the shared address by provisioning's throttle or
// SIP's guard, and each fetch recorded on its device.
//
// 200 phones in `make test`; DIALTONE_POWERUP_PHONES=2000 (`make bench`) for
// the full site.
func TestPowerUp(t *testing.T) {
	phones := 200
	if v := os.Getenv("DIALTONE_POWERUP_PHONES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DIALTONE_POWERUP_PHONES=%q: want a positive number", v)
		}
		phones = n
	}
	dir := t.TempDir()
	a := start(t, dir)
	const base = "/api/v1/accounts/default"
	code, prov := a.api("GET", base+"/provisioning", nil)
	if code != 200 {
		t.Fatalf("GET /provisioning = %d %v", code, prov)
	}
	provURL, _ := prov["url"].(string)
	i := strings.Index(provURL, "/p/")
	if i < 0 {
		t.Fatalf("provisioning url %q has no /p/", provURL)
	}
	provPath := provURL[i:]
	model, _ := store.LookupModel("T54W")

	// The site: one user and one T54W per phone, and each device's own
	// provisioning credentials (what its file gave it before the outage).
	site := make([]*sitePhone, phones)
	parallel(t, phones, 8, func(i int) error {
		p := &sitePhone{mac: fmt.Sprintf("805ec0%06x", i+1), ext: strconv.Itoa(10000 + i)}
		code, u := a.api("POST", base+"/users", map[string]string{"extension": p.ext, "name": "Phone " + p.ext})
		if code != 201 {
			return fmt.Errorf("POST /users = %d %v", code, u)
		}
		code, d := a.api("POST", base+"/devices", map[string]any{"mac": p.mac, "model": "T54W",
			"lines": []map[string]any{{"line": 1, "user_id": u["id"]}}})
		if code != 201 {
			return fmt.Errorf("POST /devices = %d %v", code, d)
		}
		code, c := a.api("GET", base+"/devices/"+p.mac+"/provisioning-credentials", nil)
		if code != 200 {
			return fmt.Errorf("GET provisioning-credentials = %d %v", code, c)
		}
		p.user, _ = c["username"].(string)
		p.pass, _ = c["password"].(string)
		site[i] = p
		return nil
	})
	// Before the outage every phone had fetched with its own credentials
	// (so they are confirmed), on an older firmware.
	parallel(t, phones, 16, func(i int) error {
		p := site[i]
		c := p.client(a.addrs.Provisioning, "96.86.0.90")
		defer c.close()
		if st, _, err := c.get(provPath + p.mac + ".cfg"); err != nil || st != 200 {
			return fmt.Errorf("fetch before the outage = %d, %v", st, err)
		}
		return nil
	})

	// The outage: dialtone starts again, with nothing in its caches.
	a.stop()
	a = start(t, dir)

	results := make([]powerUpResult, phones)
	var wg sync.WaitGroup
	go0 := make(chan struct{})
	for i, p := range site {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go0
			results[i] = p.powerUp(a.addrs, provPath, model.CommonFile())
		}()
	}
	began := time.Now()
	close(go0)
	wg.Wait()
	all := time.Since(began)

	var slowest time.Duration
	failed := 0
	for i, r := range results {
		if r.err != nil || r.common != 200 || r.file != 200 || r.register != 200 || r.took > 10*time.Second {
			if failed++; failed <= 10 {
				t.Errorf("phone %s: common %d, file %d, REGISTER %d after %v: %v", site[i].mac, r.common, r.file, r.register, r.took, r.err)
			}
		}
		for _, st := range r.statuses {
			if st >= 500 || st == http.StatusTooManyRequests {
				t.Errorf("phone %s saw %d", site[i].mac, st)
			}
		}
		slowest = max(slowest, r.took)
	}
	if failed > 0 {
		t.Fatalf("%d of %d phones not served and registered within 10 s", failed, phones)
	}
	t.Logf("%d phones: all served and registered in %v (slowest phone %v)", phones, all, slowest)

	metrics := a.metrics()
	for _, m := range []string{"dialtone_provisioning_blocks_total 0", `dialtone_provisioning_fetches_total{outcome="throttled"} 0`,
		`dialtone_provisioning_fetches_total{outcome="not_found"} 0`, "dialtone_sip_blocks_total 0"} {
		if !strings.Contains(metrics, "\n"+m+"\n") {
			t.Errorf("/metrics lacks %q: the shared address was refused or blocked", m)
		}
	}

	// Each phone's fetch is recorded: stopping flushes the records (as at
	// any shutdown); the devices then show the new firmware.
	a.stop()
	a = start(t, dir)
	code, list := a.api("GET", base+"/devices", nil)
	devices, _ := list["devices"].([]any)
	if code != 200 || len(devices) != phones {
		t.Fatalf("GET /devices = %d with %d devices, want %d", code, len(devices), phones)
	}
	unrecorded := 0
	for _, d := range devices {
		m := d.(map[string]any)
		if m["firmware"] != "96.86.0.100" || m["last_config_hash"] == nil {
			if unrecorded++; unrecorded <= 5 {
				t.Errorf("device %v: firmware %v, last_config_hash %v: the power-up fetch is not recorded", m["mac"], m["firmware"], m["last_config_hash"])
			}
		}
	}
	if unrecorded > 0 {
		t.Fatalf("%d of %d fetches not recorded", unrecorded, phones)
	}
}

// parallel runs f(0..n-1) on workers goroutines and fails t on the first error.
func parallel(t *testing.T, n, workers int, f func(i int) error) {
	t.Helper()
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- fmt.Errorf("#%d: %w", i, err)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

func (a *app) metrics() string {
	a.t.Helper()
	res, err := http.Get("http://" + a.addrs.Admin + "/metrics")
	if err != nil {
		a.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

type sitePhone struct {
	mac, ext   string
	user, pass string // the device's own provisioning credentials
}

type powerUpResult struct {
	common, file, register int
	statuses               []int // every HTTP and SIP status seen
	took                   time.Duration
	err                    error
}

// powerUp is what the phone does when power comes back.
func (p *sitePhone) powerUp(ad addrs, provPath, commonFile string) (r powerUpResult) {
	began := time.Now()
	defer func() { r.took = time.Since(began) }()
	c := p.client(ad.Provisioning, "96.86.0.100")
	defer c.close()
	var body []byte
	r.common, _, r.err = c.get(provPath + commonFile)
	if r.err == nil && r.common == 200 {
		r.file, body, r.err = c.get(provPath + p.mac + ".cfg")
	}
	r.statuses = c.statuses
	if r.err != nil || r.file != 200 {
		return r
	}
	cfg := parseCfg(body)
	user, pass := cfg["account.1.auth_name"], cfg["account.1.password"]
	if user != p.ext || pass == "" || cfg["account.1.enable"] != "1" {
		r.err = fmt.Errorf("the file's line 1 is %q (enable %q), want extension %s with a password", user, cfg["account.1.enable"], p.ext)
		return r
	}
	var seen []int
	r.register, seen, r.err = sipRegister(ad.SIPUDP, cfg["account.1.sip_server.1.address"], user, pass)
	r.statuses = append(r.statuses, seen...)
	return r
}

// phoneClient fetches files as a Yealink does: its own connection, a
// Digest answer to the first 401, then the same challenge with a rising
// nonce count.
type phoneClient struct {
	base, ua   string
	user, pass string
	tr         *http.Transport
	chal       *digest.Challenge
	nc         int
	statuses   []int
}

func (p *sitePhone) client(addr, firmware string) *phoneClient {
	mac := p.mac
	ua := fmt.Sprintf("Yealink SIP-T54W %s %s:%s:%s:%s:%s:%s", firmware, mac[0:2], mac[2:4], mac[4:6], mac[6:8], mac[8:10], mac[10:12])
	return &phoneClient{base: "http://" + addr, ua: ua, user: p.user, pass: p.pass, tr: &http.Transport{MaxIdleConnsPerHost: 1}}
}

func (c *phoneClient) close() { c.tr.CloseIdleConnections() }

func (c *phoneClient) get(path string) (int, []byte, error) {
	for attempt := 0; attempt < 3; attempt++ {
		auth := ""
		if c.chal != nil {
			c.nc++
			cred, err := digest.Digest(c.chal, digest.Options{Method: http.MethodGet, URI: path, Username: c.user, Password: c.pass, Count: c.nc})
			if err != nil {
				return 0, nil, err
			}
			auth = cred.String()
		}
		req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("User-Agent", c.ua)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := c.tr.RoundTrip(req)
		if err != nil {
			return 0, nil, err
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return 0, nil, err
		}
		c.statuses = append(c.statuses, res.StatusCode)
		if res.StatusCode != http.StatusUnauthorized {
			return res.StatusCode, body, nil
		}
		chal, err := digest.FindChallenge(res.Header)
		if err != nil {
			return res.StatusCode, nil, err
		}
		if auth != "" && !chal.Stale {
			return res.StatusCode, nil, errors.New("credentials refused")
		}
		c.chal, c.nc = chal, 0
	}
	return http.StatusUnauthorized, nil, errors.New("still challenged after 3 tries")
}

// parseCfg reads "key = value" lines of a Yealink config file.
func parseCfg(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && !strings.HasPrefix(strings.TrimSpace(k), "#") {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// sipRegister registers user@domain from its own UDP socket, as a phone
// does: REGISTER, the 401's MD5 challenge answered, retransmissions on
// RFC 3261 timer E (500 ms doubling) while no answer comes. It returns the
// final status and every status seen.
func sipRegister(registrar, domain, user, pass string) (int, []int, error) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp", registrar)
	if err != nil {
		return 0, nil, err
	}
	local := conn.LocalAddr().String()
	callID, tag := randHex(8), randHex(4)
	var seen []int
	auth := ""
	for cseq := 1; cseq <= 3; cseq++ {
		msg := "REGISTER sip:" + domain + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK" + randHex(8) + ";rport\r\n" +
			"Max-Forwards: 70\r\n" +
			"From: <sip:" + user + "@" + domain + ">;tag=" + tag + "\r\n" +
			"To: <sip:" + user + "@" + domain + ">\r\n" +
			"Call-ID: " + callID + "\r\n" +
			"CSeq: " + strconv.Itoa(cseq) + " REGISTER\r\n" +
			"Contact: <sip:" + user + "@" + local + ">\r\n" +
			"Expires: 600\r\n" +
			"User-Agent: Yealink SIP-T54W 96.86.0.100\r\n"
		if auth != "" {
			msg += "Authorization: " + auth + "\r\n"
		}
		msg += "Content-Length: 0\r\n\r\n"
		status, hdrs, err := sipExchange(conn, to, []byte(msg), strconv.Itoa(cseq)+" REGISTER")
		if err != nil {
			return 0, seen, err
		}
		seen = append(seen, status)
		if status != 401 {
			return status, seen, nil
		}
		var chal *digest.Challenge
		for _, h := range hdrs["www-authenticate"] {
			if c, err := digest.ParseChallenge(h); err == nil && (c.Algorithm == "" || strings.EqualFold(c.Algorithm, "MD5")) {
				chal = c
				break
			}
		}
		if chal == nil {
			return status, seen, fmt.Errorf("401 without an MD5 challenge: %v", hdrs["www-authenticate"])
		}
		cred, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: "sip:" + domain, Username: user, Password: pass,
			Count: 1, Cnonce: randHex(6)})
		if err != nil {
			return status, seen, err
		}
		auth = cred.String()
	}
	return 401, seen, errors.New("still challenged")
}

// sipExchange sends msg and waits for its final response (the one with
// CSeq cseq: answers to an earlier retransmitted request are skipped, as
// are provisional responses), retransmitting on timer E.
func sipExchange(conn net.PacketConn, to net.Addr, msg []byte, cseq string) (int, map[string][]string, error) {
	buf := make([]byte, 65536)
	wait := 500 * time.Millisecond
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := conn.WriteTo(msg, to); err != nil {
			return 0, nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		for {
			n, _, err := conn.ReadFrom(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break // retransmit
			}
			if err != nil {
				return 0, nil, err
			}
			status, hdrs, ok := parseSIPResponse(buf[:n])
			if ok && status >= 200 && len(hdrs["cseq"]) == 1 && hdrs["cseq"][0] == cseq {
				return status, hdrs, nil
			}
		}
		wait = min(2*wait, 4*time.Second)
	}
	return 0, nil, context.DeadlineExceeded
}

func parseSIPResponse(b []byte) (int, map[string][]string, bool) {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return 0, nil, false
	}
	status, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, nil, false
	}
	hdrs := map[string][]string{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			k = strings.ToLower(strings.TrimSpace(k))
			hdrs[k] = append(hdrs[k], strings.TrimSpace(v))
		}
	}
	return status, hdrs, true
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
