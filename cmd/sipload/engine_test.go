package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

func timeUS(n int) time.Duration { return time.Duration(n) * time.Microsecond }

// responder is a tiny digest registrar for the tests: it parses requests with
// sipgo's parser, verifies credentials with icholy/digest (password
// "pw-<user>"), offers SHA-256 then MD5 (RFC 8760), answers 503 above
// limitPer100ms authenticated REGISTERs per 100 ms window (0: no limit), and
// silently drops every dropEvery-th first REGISTER (0: none).
type responder struct {
	limitPer100ms int
	dropEvery     int
	dropCopies    int      // drop the first dropCopies copies of every request (Call-ID + CSeq): the client must retransmit
	busyOnce      bool     // answer the first authenticated REGISTER of each Call-ID 503 with Retry-After: 1
	staleOnce     bool     // ... with a new challenge (401, stale=true) instead
	copies        sync.Map // Call-ID + CSeq → *atomic.Int64
	busied        sync.Map // Call-ID → true
	busy          atomic.Uint64
	received      atomic.Uint64

	mu       sync.Mutex
	window   int64
	inWindow int
	nonce    atomic.Uint64
	firsts   atomic.Uint64
	ok       atomic.Uint64
	badAuth  atomic.Uint64
	lastCSeq sync.Map // Call-ID → uint32
	cseqErrs atomic.Uint64
}

func (rs *responder) answer(data []byte) []byte {
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return nil
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return nil
	}
	rs.received.Add(1)
	if rs.dropCopies > 0 {
		v, _ := rs.copies.LoadOrStore(req.CallID().Value()+" "+req.CSeq().Value(), new(atomic.Int64))
		if v.(*atomic.Int64).Add(1) <= int64(rs.dropCopies) {
			return nil
		}
	}
	user := req.To().Address.User
	hdr := req.GetHeader("Authorization")
	if hdr == nil {
		if n := rs.firsts.Add(1); rs.dropEvery > 0 && n%uint64(rs.dropEvery) == 0 {
			return nil
		}
		n := rs.nonce.Add(1)
		sha := digest.Challenge{Realm: "example.test", Nonce: fmt.Sprintf("s%d", n), Algorithm: "SHA-256", QOP: []string{"auth"}, Opaque: "o"}
		md5 := digest.Challenge{Realm: "example.test", Nonce: fmt.Sprintf("m%d", n), Algorithm: "MD5", QOP: []string{"auth"}, Opaque: "o"}
		return reply(req, "401 Unauthorized", "WWW-Authenticate: "+sha.String()+"\r\nWWW-Authenticate: "+md5.String()+"\r\n")
	}
	cred, err := digest.ParseCredentials(hdr.Value())
	if err != nil {
		rs.badAuth.Add(1)
		return reply(req, "400 Bad Request", "")
	}
	chal := &digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Algorithm: cred.Algorithm, QOP: []string{cred.QOP}, Opaque: cred.Opaque}
	want, err := digest.Digest(chal, digest.Options{Method: "REGISTER", URI: cred.URI, Username: cred.Username,
		Password: "pw-" + user, Cnonce: cred.Cnonce, Count: cred.Nc})
	if err != nil || want.Response != cred.Response || cred.Username != user {
		rs.badAuth.Add(1)
		return reply(req, "403 Forbidden", "")
	}
	// RFC 3261 §10.3 step 7: the CSeq must grow on the same Call-ID.
	cid, cseq := req.CallID().Value(), req.CSeq().SeqNo
	if prev, ok := rs.lastCSeq.Load(cid); ok && (cseq < prev.(uint32) || cseq == prev.(uint32) && rs.dropCopies == 0) {
		rs.cseqErrs.Add(1)
	}
	rs.lastCSeq.Store(cid, cseq)
	if _, seen := rs.busied.LoadOrStore(cid, true); rs.staleOnce && !seen {
		rs.busy.Add(1)
		n := rs.nonce.Add(1)
		md5 := digest.Challenge{Realm: "example.test", Nonce: fmt.Sprintf("r%d", n), Algorithm: "MD5", QOP: []string{"auth"}, Stale: true}
		return reply(req, "401 Unauthorized", "WWW-Authenticate: "+md5.String()+"\r\n")
	} else if rs.busyOnce && !seen {
		rs.busy.Add(1)
		return reply(req, "503 Service Unavailable", "Retry-After: 1\r\n")
	}
	if rs.limitPer100ms > 0 {
		w := time.Now().UnixMilli() / 100
		rs.mu.Lock()
		if w != rs.window {
			rs.window, rs.inWindow = w, 0
		}
		rs.inWindow++
		over := rs.inWindow > rs.limitPer100ms
		rs.mu.Unlock()
		if over {
			return reply(req, "503 Service Unavailable", "Retry-After: 1\r\n")
		}
	}
	rs.ok.Add(1)
	return reply(req, "200 OK", "Contact: "+req.Contact().Value()+";expires=60\r\n")
}

func reply(req *sip.Request, status, extra string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "SIP/2.0 %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s;tag=x\r\nCall-ID: %s\r\nCSeq: %s\r\n%sContent-Length: 0\r\n\r\n",
		status, req.Via().Value(), req.From().Value(), req.To().Value(), req.CallID().Value(), req.CSeq().Value(), extra)
	return b.Bytes()
}

func (rs *responder) serveUDP(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := rs.answer(buf[:n]); out != nil {
				pc.WriteTo(out, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func (rs *responder) serveTCP(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				var f framer
				buf := make([]byte, 0, 65536)
				tmp := make([]byte, 32768)
				for {
					n, err := c.Read(tmp)
					if err != nil {
						return
					}
					buf = append(buf, tmp[:n]...)
					f.buf = buf
					for {
						msg, err := f.next()
						if err != nil || msg == nil {
							break
						}
						if out := rs.answer(msg); out != nil {
							c.Write(out)
						}
					}
					buf = append(buf[:0], f.buf...)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func newTestEngine(t *testing.T, args ...string) *engine {
	t.Helper()
	cfg, users, err := parseFlags(append([]string{"-domain", "example.test", "-timeout", "10s"}, args...), io.Discard)
	if err != nil {
		t.Fatalf("parseFlags(%q) = %v", args, err)
	}
	e, err := newEngine(cfg, users)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.sweep(ctx)
	t.Cleanup(func() { cancel(); e.close() })
	return e
}

func TestRunAgainstResponder(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		for _, alg := range []string{"md5", "sha-256"} {
			t.Run(transport+"/"+alg, func(t *testing.T) {
				rs := &responder{}
				addr := rs.serveUDP(t)
				if transport == "tcp" {
					addr = rs.serveTCP(t)
				}
				e := newTestEngine(t, "-target", addr, "-transport", transport, "-algorithm", alg, "-users", "20", "-conns", "2")
				fixed := e.phase(context.Background(), 400, 300*time.Millisecond, nil)
				if fixed.OK < 60 || fixed.Failed != 0 {
					t.Errorf("fixed rate: %d ok, %d failed %v; want ≥ 60 ok, 0 failed", fixed.OK, fixed.Failed, fixed.Failures)
				}
				e.cfg.concurrency = 8
				afap := e.phase(context.Background(), 0, 200*time.Millisecond, nil)
				if afap.OK < 20 || afap.Failed != 0 {
					t.Errorf("as fast as possible: %d ok, %d failed %v; want ≥ 20 ok, 0 failed", afap.OK, afap.Failed, afap.Failures)
				}
				if got, want := rs.ok.Load(), fixed.OK+afap.OK; got != want {
					t.Errorf("responder accepted %d registrations, sipload counted %d", got, want)
				}
				if n := rs.badAuth.Load() + rs.cseqErrs.Load(); n != 0 {
					t.Errorf("responder saw %d bad credentials or CSeq regressions", n)
				}
				if afap.P50ms <= 0 || afap.MaxMs < afap.P99ms || afap.P99ms < afap.P50ms {
					t.Errorf("latencies p50 %.3f p99 %.3f max %.3f ms are not ordered", afap.P50ms, afap.P99ms, afap.MaxMs)
				}
			})
		}
	}
}

func TestTimeoutsAndStatusFailures(t *testing.T) {
	rs := &responder{dropEvery: 5}
	e := newTestEngine(t, "-target", rs.serveUDP(t), "-users", "10", "-concurrency", "5", "-fresh-callid", "-timeout", "300ms")
	r := e.phase(context.Background(), 0, 200*time.Millisecond, nil)
	var timeouts uint64
	for _, k := range r.Failures {
		if k.Kind == "timeout waiting for 401" {
			timeouts = k.Count
		}
	}
	if timeouts == 0 || r.OK == 0 {
		t.Errorf("with every 5th REGISTER dropped: %d ok, failures %v; want some ok and some timeouts", r.OK, r.Failures)
	}

	rs = &responder{}
	addr := rs.serveUDP(t)
	cfg, _, _ := parseFlags([]string{"-target", addr, "-domain", "example.test"}, io.Discard)
	e2, err := newEngine(cfg, []userCred{{user: "20000", password: "wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.close()
	r = e2.phase(context.Background(), 50, 100*time.Millisecond, nil)
	if r.OK != 0 || len(r.Failures) != 1 || !strings.HasPrefix(r.Failures[0].Kind, "403 to the authenticated") {
		t.Errorf("wrong password: %d ok, failures %v; want only 403s", r.OK, r.Failures)
	}
}

func TestRampFindsTheLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 2 s")
	}
	rs := &responder{limitPer100ms: 70} // 700 registrations/s
	e := newTestEngine(t, "-target", rs.serveUDP(t), "-users", "200", "-ramp", "-ramp-start", "200", "-ramp-factor", "2",
		"-step", "250ms", "-refine", "1", "-max-p99", "1s", "-max-fail", "0.05", "-duration", "10s", "-timeout", "1s")
	var out bytes.Buffer
	best := e.rampRun(context.Background(), nil, &out)
	if best == nil {
		t.Fatalf("ramp found nothing:\n%s", out.String())
	}
	// The limit counts per wall-clock 100 ms window, so a step just above it
	// may pass when the machine is slow; 1600/s never does.
	if best.Rate < 150 || best.Rate > 1000 || !strings.Contains(out.String(), "FAIL") {
		t.Errorf("max sustained %.0f/s against a 700/s limit, want 150..1000 after a failing step:\n%s", best.Rate, out.String())
	}
}

func TestStorm(t *testing.T) {
	rs := &responder{limitPer100ms: 50}
	e := newTestEngine(t, "-target", rs.serveUDP(t), "-users", "200", "-once", "-timeout", "1s")
	r := e.runN(len(e.users), nil)
	var busy uint64
	for _, k := range r.Failures {
		if k.Kind == "503 with Retry-After to the authenticated REGISTER" {
			busy = k.Count
		}
	}
	if r.Started != 200 || r.OK+r.Failed != 200 || r.OK < 50 || busy == 0 {
		t.Errorf("storm of 200 against 50 per 100 ms: %d started, %d ok, failures %v; want 200 started, ≥ 50 ok, some 503s", r.Started, r.OK, r.Failures)
	}
	if got := rs.ok.Load(); got != r.OK {
		t.Errorf("responder accepted %d, sipload counted %d", got, r.OK)
	}
}

func TestPass(t *testing.T) {
	e := &engine{cfg: &config{maxFail: 0.001, maxP99: 10 * time.Millisecond, step: time.Second, maxGenCPU: 0.9}}
	busy := []kindCount{{"users still busy", 100}}
	tests := []struct {
		r    result
		want int
	}{
		{result{TargetRate: 1000, Started: 1000, OK: 1000, Rate: 1000, P99ms: 2}, stepPass},
		{result{TargetRate: 1000, Started: 1000, OK: 998, Failed: 2, FailFraction: 0.002, Rate: 998, P99ms: 2}, stepFail},
		{result{TargetRate: 1000, Started: 1000, OK: 1000, Rate: 1000, P99ms: 11}, stepFail},
		{result{TargetRate: 1000, Started: 900, OK: 900, Rate: 900, P99ms: 1, Skipped: 100, Skips: busy}, stepFail},
		{result{TargetRate: 1000, Started: 1000, OK: 1000, Rate: 950, P99ms: 1}, stepFail},
		// The false failure of issue 13: the pacer stalled, 0 registrations failed.
		{result{TargetRate: 1500, Started: 1400, OK: 1400, Rate: 1400, P99ms: 1, Skipped: 100, PacerLagMs: 170,
			Skips: []kindCount{{behindKind, 100}}}, stepGenLimit},
		{result{TargetRate: 1000, Started: 800, OK: 800, Rate: 800, P99ms: 1}, stepGenLimit},
		{result{TargetRate: 1000, Started: 1000, OK: 1000, Rate: 1000, P99ms: 1, GenCPUCores: 0.95}, stepGenLimit},
		{result{TargetRate: 1000, Started: 1000, OK: 990, Failed: 10, FailFraction: 0.01, Rate: 990, P99ms: 1, GenDrops: 10}, stepGenLimit},
	}
	for i, tt := range tests {
		if got, why := e.pass(&tt.r); got != tt.want {
			t.Errorf("%d: pass() = %v (%s), want %v", i, got, why, tt.want)
		}
	}
}

// fakeSteps is a ramp against a target that sustains up to limit/s, whose
// generator stalls once at each rate in stallOnce (and every time from
// genMax/s on).
func fakeSteps(limit, genMax float64, stallOnce ...float64) func(context.Context, float64) *result {
	stalled := map[float64]bool{}
	return func(_ context.Context, rate float64) *result {
		r := &result{TargetRate: rate, Started: uint64(rate), OK: uint64(rate), Rate: rate, P99ms: 1}
		for _, s := range stallOnce {
			if rate == s && !stalled[rate] {
				stalled[rate] = true
				r.Skipped, r.Skips, r.PacerLagMs = 50, []kindCount{{behindKind, 50}}, 150
			}
		}
		if genMax > 0 && rate >= genMax {
			r.GenCPUCores = 0.99
		}
		if rate > limit {
			r.Failed, r.FailFraction, r.OK = uint64(rate/10), 0.1, uint64(rate*0.9)
		}
		return r
	}
}

// TestRampGeneratorLimit: a generator stall is not the target's failure. A
// step where the pacer fell behind is repeated, not bisected below (the old
// ramp reported 1,437/s for a target good for 17,000/s after one stall at
// 1,500/s), and a generator that stays the limit ends the ramp as such.
func TestRampGeneratorLimit(t *testing.T) {
	cfg := &config{maxFail: 0.001, maxP99: 100 * time.Millisecond, step: time.Second, maxGenCPU: 0.9,
		rampStart: 1000, rampFactor: 1.5, refine: 3, duration: time.Hour, transport: "udp", jsonOut: true}
	e := &engine{cfg: cfg, stepFn: fakeSteps(17000, 0, 1500)}
	var out bytes.Buffer
	best := e.rampRun(context.Background(), nil, &out)
	if best == nil || best.Rate < 11390 || best.RampEnd != "target" {
		t.Fatalf("ramp with one pacer stall at 1500/s against a 17000/s target: best %+v\n%s", best, out.String())
	}
	if !strings.Contains(out.String(), "GENERATOR LIMIT") {
		t.Errorf("the stalled step is not shown as a generator limit:\n%s", out.String())
	}

	e = &engine{cfg: cfg, stepFn: fakeSteps(17000, 5000)}
	out.Reset()
	best = e.rampRun(context.Background(), nil, &out)
	if best == nil || best.RampEnd != "generator" || best.Rate != 3375 || best.NextFailing != 0 {
		t.Fatalf("ramp whose generator saturates at 5000/s: best %+v\n%s", best, out.String())
	}
	if !strings.Contains(out.String(), "stopped by the generator's limit") {
		t.Errorf("no generator-limit verdict:\n%s", out.String())
	}
}

func TestSumDrops(t *testing.T) {
	proc := `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 1: 0100007F:DD10 0100007F:13C4 01 00000000:00000000 00:00000000 00000000     0        0 188462 2 000000003bdbab3e 7
 2: 0100007F:DD11 0100007F:13C4 01 00000000:00000000 00:00000000 00000000     0        0 188463 2 000000003bdbab3f 5
 3: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 188464 2 000000003bdbab40 100
`
	if got := sumDrops([]byte(proc), map[string]bool{":DD10": true, ":DD11": true}); got != 12 {
		t.Errorf("sumDrops = %d, want 12 (the target's 100 not counted)", got)
	}
}

// TestStormRetransmits: with the first two copies of every request lost, each
// phone's transactions retransmit on Timer E (T1, 2×T1) until answered; with
// a 503 + Retry-After to the first authenticated REGISTER, the phone waits,
// starts over with a fresh transaction and registers.
func TestStormRetransmits(t *testing.T) {
	rs := &responder{dropCopies: 2, busyOnce: true}
	e := newTestEngine(t, "-target", rs.serveUDP(t), "-users", "40", "-conns", "2", "-storm", "-t1", "50ms", "-t2", "200ms",
		"-storm-window", "20s", "-duration", "30s")
	e.cfg.raUnit = 20 * time.Millisecond
	r := e.runStorm(context.Background(), nil)
	if r.Registered != 40 || r.Within != 40 || r.AllSeconds < 0 || r.GaveUp != 0 {
		t.Fatalf("storm: %+v; want all 40 registered", r)
	}
	// Per phone: REGISTER, auth REGISTER (503), REGISTER, auth REGISTER (200):
	// 4 transactions, 2 retransmissions each (more if an answer takes longer
	// than T1 on a loaded machine: retransmitting then is right).
	if r.Busy503 != 40 || r.Busy503RA != 40 || rs.busy.Load() != 40 {
		t.Errorf("503s seen %d (%d with Retry-After), responder sent %d; want 40", r.Busy503, r.Busy503RA, rs.busy.Load())
	}
	if r.Retx < 40*4*2 || r.Sent != r.Retx+40*4 || rs.received.Load() != r.Sent {
		t.Errorf("%d sent (%d retransmissions), responder received %d; want 480 sent, 320 retransmissions", r.Sent, r.Retx, rs.received.Load())
	}
	if rs.ok.Load() < 40 || rs.badAuth.Load() != 0 || rs.cseqErrs.Load() != 0 {
		t.Errorf("responder: %d ok, %d bad credentials, %d CSeq regressions", rs.ok.Load(), rs.badAuth.Load(), rs.cseqErrs.Load())
	}
}

// TestStormTimerF: a registrar that never answers: each UDP transaction is
// sent at 0, T1, 3T1, 7T1, 15T1 (T2 = 8T1), 23T1, ... and given up at 64×T1
// (Timer F); over TCP it is sent once. Nobody registers. The run lasts well
// past Timer F (and nothing is sent after it: the restart waits an hour), so
// a slow machine changes nothing.
func TestStormTimerF(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	e := newTestEngine(t, "-target", pc.LocalAddr().String(), "-users", "5", "-storm", "-t1", "5ms", "-t2", "40ms",
		"-retry-wait", "1h", "-duration", "3s")
	r := e.runStorm(context.Background(), nil)
	// Retransmissions at 5, 15, 35, 75, 115, 155, 195, 235, 275, 315 ms: 10
	// before Timer F at 320 ms.
	if r.Registered != 0 || r.TimerF != 5 || r.Retx != 5*10 || r.AllSeconds != -1 {
		t.Errorf("silent registrar: %d registered, %d Timer F, %d retransmissions; want 0, 5, 50", r.Registered, r.TimerF, r.Retx)
	}
}

// TestStormStaleNonce: a phone answers a new challenge to its authenticated
// REGISTER once more instead of giving up.
func TestStormStaleNonce(t *testing.T) {
	rs := &responder{staleOnce: true}
	e := newTestEngine(t, "-target", rs.serveUDP(t), "-users", "20", "-storm", "-t1", "50ms", "-duration", "20s")
	r := e.runStorm(context.Background(), nil)
	if r.Registered != 20 || r.GaveUp != 0 || rs.busy.Load() != 20 || rs.ok.Load() < 20 {
		t.Errorf("storm against a registrar re-challenging once: %+v; responder re-challenged %d, accepted %d", r, rs.busy.Load(), rs.ok.Load())
	}
}

func TestStormTCP(t *testing.T) {
	rs := &responder{busyOnce: true}
	e := newTestEngine(t, "-target", rs.serveTCP(t), "-transport", "tcp", "-users", "30", "-storm", "-t1", "10ms", "-duration", "20s")
	e.cfg.raUnit = 10 * time.Millisecond
	r := e.runStorm(context.Background(), nil)
	if r.Registered != 30 || r.Retx != 0 || r.Busy503 != 30 || r.Sent != 30*4 {
		t.Errorf("TCP storm: %+v; want 30 registered after one 503 each, no retransmissions", r)
	}
}
