package main

import (
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"
)

// A retransmitting re-registration storm (-storm): every user starts its
// registration at the same moment and then behaves like a phone until it is
// registered:
//
//   - each REGISTER is a non-INVITE client transaction (RFC 3261 §17.1.2):
//     over UDP it is retransmitted after T1 (500 ms), doubling up to T2
//     (4 s), every T2 once a provisional response arrived; over TCP it is
//     sent once. Timer F (64×T1 = 32 s) ends an unanswered transaction;
//     the phone then waits -retry-wait and starts over;
//   - the 401 is answered with the authenticated REGISTER, a new
//     transaction (CSeq + 1) with its own timers; a 401 to that one (a stale
//     nonce, a replayed retransmission) is answered once more;
//   - a 503 (or 408, 480, 500, 504) with Retry-After makes the phone wait
//     that many seconds, then start over with a fresh transaction (no
//     Retry-After: -retry-wait); any other final failure gives up;
//   - a 2xx to the authenticated REGISTER: registered, done.
//
// Retransmissions repeat the transaction's bytes exactly (same branch), so
// the registrar's transaction layer can absorb them.

// stormState is the storm's shared state; phones' own state is in ua,
// guarded by the lane's mutex.
type stormState struct {
	t0        int64 // ns since engine.base: the moment every phone starts
	window    int64
	retryWait int64
	t1, t2, f int64

	registered atomic.Int64 // phones that got their 200
	within     atomic.Int64 // ... within the window
	gaveUp     atomic.Int64 // phones that got a final failure they do not retry
	lastReg    atomic.Int64 // ns since t0 of the latest first registration
	sent       atomic.Uint64
	retx       atomic.Uint64
	busy503    atomic.Uint64
	busyRA     atomic.Uint64 // 503s with Retry-After
	timerF     atomic.Uint64
	late       atomic.Uint64 // responses to transactions already over (retransmitted requests answered twice)
	lat        hist          // time from t0 to registered
	st         *stats        // failure kinds (other finals, parse errors)
	done       chan struct{}
	doneOnce   atomic.Bool
	n          int64
}

// Kinds of timer entries.
const (
	timerTx      = iota // a transaction's next retransmission or Timer F
	timerRestart        // the end of a Retry-After (or -retry-wait) pause
)

type stormTimer struct {
	at   int64
	u    *ua
	txn  uint32
	kind uint8
}

// timerHeap is a lane's pending timers, earliest first. Entries are not
// removed when their transaction ends: a stale one (txn differs) is skipped.
type timerHeap []stormTimer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(stormTimer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

// stormResult is what -storm reports.
type stormResult struct {
	Transport     string      `json:"transport"`
	Phones        int         `json:"storm_phones"`
	Registered    int64       `json:"storm_registered"`
	Within        int64       `json:"storm_registered_within_window"`
	WindowS       float64     `json:"storm_window_s"`
	AllSeconds    float64     `json:"storm_all_registered_s"` // -1: not all registered
	P50s          float64     `json:"storm_p50_s"`
	P99s          float64     `json:"storm_p99_s"`
	Sent          uint64      `json:"storm_requests_sent"`
	Retx          uint64      `json:"storm_retransmissions"`
	Busy503       uint64      `json:"storm_503"`
	Busy503RA     uint64      `json:"storm_503_retry_after"`
	TimerF        uint64      `json:"storm_timer_f"`
	GaveUp        int64       `json:"storm_gave_up"`
	Late          uint64      `json:"storm_late_responses"`
	Failures      []kindCount `json:"failures,omitempty"`
	Seconds       float64     `json:"seconds"`
	GenCPUSeconds float64     `json:"generator_cpu_s"`
	GenCPUCores   float64     `json:"generator_cpu_cores"`
	GenDrops      uint64      `json:"generator_udp_drops"`
	TargetCPU     float64     `json:"target_cpu_s,omitempty"`
}

// runStorm runs the storm until every phone is registered or has given up,
// or -duration is over, and returns the result.
func (e *engine) runStorm(ctx context.Context, pids []int) *stormResult {
	c := e.cfg
	gen0, tgt0, drops0 := selfCPU(), targetCPU(pids), e.udpDrops()
	now := e.now()
	s := &stormState{t0: now, window: int64(c.stormWindow), retryWait: int64(c.retryWait),
		t1: int64(c.t1), t2: int64(c.t2), f: 64 * int64(c.t1), st: newStats(), done: make(chan struct{}), n: int64(len(e.users))}
	e.storm.Store(s)
	e.cur.Store(s.st)
	rctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	for _, l := range e.lanes {
		e.wg.Add(1)
		go l.stormTimers(rctx)
	}
	// Every phone at once: each lane sends all its first REGISTERs in
	// batches (one sendmmsg, or one write over TCP, per batch).
	for _, l := range e.lanes {
		go func() {
			out := newOutbox()
			for _, u := range l.users {
				buf := out.next(l.tcp)
				l.mu.Lock()
				buf = l.stormStartLocked(u, e.now(), buf)
				out.add(l.tcp, buf, u, u.gen)
				l.mu.Unlock()
				if out.full() {
					out.flush(l)
				}
			}
			out.flush(l)
		}()
	}
	select {
	case <-s.done:
	case <-rctx.Done():
	}
	el := time.Duration(e.now() - s.t0)
	cancel()
	gen1 := selfCPU()
	r := &stormResult{Transport: c.transport, Phones: len(e.users), Registered: s.registered.Load(), Within: s.within.Load(),
		WindowS: c.stormWindow.Seconds(), AllSeconds: -1, Sent: s.sent.Load(), Retx: s.retx.Load(), Busy503: s.busy503.Load(),
		Busy503RA: s.busyRA.Load(), TimerF: s.timerF.Load(), GaveUp: s.gaveUp.Load(), Late: s.late.Load(), Seconds: el.Seconds(),
		GenCPUSeconds: (gen1 - gen0).Seconds(), GenDrops: e.udpDrops() - drops0}
	if el > 0 {
		r.GenCPUCores = r.GenCPUSeconds / el.Seconds()
	}
	if len(pids) > 0 {
		r.TargetCPU = (targetCPU(pids) - tgt0).Seconds()
	}
	if r.Registered == int64(r.Phones) {
		r.AllSeconds = float64(s.lastReg.Load()) / 1e9
	}
	q, _ := s.lat.quantiles(0.5, 0.99)
	r.P50s, r.P99s = q[0].Seconds(), q[1].Seconds()
	s.st.mu.Lock()
	r.Failures = sortedKinds(s.st.kinds)
	s.st.mu.Unlock()
	return r
}

func (r *stormResult) print(w io.Writer) {
	all := "NOT all registered"
	if r.AllSeconds >= 0 {
		all = fmt.Sprintf("all registered after %.2f s", r.AllSeconds)
	}
	fmt.Fprintf(w, "storm: %d phones over %s at once, retransmitting like phones; %.1f s\n", r.Phones, r.Transport, r.Seconds)
	fmt.Fprintf(w, "  registered     %d (%d within %.0f s); %s; time to register p50 %.2f s, p99 %.2f s\n",
		r.Registered, r.Within, r.WindowS, all, r.P50s, r.P99s)
	fmt.Fprintf(w, "  requests       %d sent, %d of them retransmissions; %d late or duplicate responses\n", r.Sent, r.Retx, r.Late)
	fmt.Fprintf(w, "  push-back      %d × 503 (%d with Retry-After); %d transactions timed out (Timer F); %d phones gave up\n",
		r.Busy503, r.Busy503RA, r.TimerF, r.GaveUp)
	for _, k := range r.Failures {
		fmt.Fprintf(w, "  response       %d × %s\n", k.Count, k.Kind)
	}
	fmt.Fprintf(w, "  generator cpu  %.2f s (%.0f%% of a core); its sockets dropped %d datagrams\n", r.GenCPUSeconds, 100*r.GenCPUCores, r.GenDrops)
	if r.TargetCPU > 0 {
		fmt.Fprintf(w, "  target cpu     %.2f s\n", r.TargetCPU)
	}
}

func (r *stormResult) json(w io.Writer) { json.NewEncoder(w).Encode(r) }

// stormStartLocked starts a fresh transaction with u's first (unauthenticated)
// REGISTER, keeps its bytes for retransmission and appends them to buf.
func (l *lane) stormStartLocked(u *ua, now int64, buf []byte) []byte {
	u.busy, u.phase, u.authTries = true, 1, 0
	if u.gen == 0 {
		u.gen = 1 // one Call-ID per phone for the whole storm
	}
	u.cseq++
	u.last = appendRegister(u.last[:0], &l.p, u, u.cseq, u.gen, l.e.cfg.freshCallID, nil)
	l.stormArmLocked(u, now)
	return append(buf, u.last...)
}

// stormArmLocked begins a transaction's timers for the request in u.last.
func (l *lane) stormArmLocked(u *ua, now int64) {
	s := l.e.storm.Load()
	u.txn++
	u.txStart, u.interval = now, s.t1
	next := now + s.t1
	if l.tcp { // reliable transport: no retransmissions, only Timer F
		next = now + s.f
	}
	heap.Push(&l.timers, stormTimer{at: next, u: u, txn: u.txn, kind: timerTx})
	s.sent.Add(1)
}

// stormHandle processes a response during a storm; the caller holds l.mu.
func (l *lane) stormHandleLocked(u *ua, r *response, now int64, buf []byte, rs *readerState) ([]byte, bool) {
	s := l.e.storm.Load()
	if !u.busy || r.cseq != u.cseq {
		s.late.Add(1)
		return buf, false
	}
	switch {
	case r.code < 200:
		u.interval = s.t2 // Proceeding: retransmit every T2 (§17.1.2.2)
		return buf, false
	case (r.code == 401 || r.code == 407) && (u.phase == 1 || u.authTries < 2):
		// A 401 to the authenticated REGISTER is a new challenge (the
		// nonce went stale, or a retransmission was refused as a replay
		// after the first answer was lost): a phone answers it once more.
		c := r.pick(l.e.cfg.algorithm)
		if c == nil {
			l.stormGiveUpLocked(u, strconv.Itoa(r.code)+" without a usable challenge")
			return buf, false
		}
		u.authTries++
		u.last = l.authRegister(u.last[:0], u, c, rs)
		l.stormArmLocked(u, now)
		return append(buf, u.last...), true
	case u.phase == 2 && r.code >= 200 && r.code < 300:
		u.busy = false
		u.txn++
		d := now - s.t0
		s.lat.record(time.Duration(d))
		if d <= s.window {
			s.within.Add(1)
		}
		for {
			m := s.lastReg.Load()
			if d <= m || s.lastReg.CompareAndSwap(m, d) {
				break
			}
		}
		s.finish(&s.registered)
		return buf, false
	case r.code == 503 || r.code == 408 || r.code == 480 || r.code == 500 || r.code == 504:
		wait := s.retryWait
		if r.code == 503 {
			s.busy503.Add(1)
		} else {
			s.st.fail(statusKind(r.code, u.phase, r.retryAfter) + " (retried)")
		}
		if r.retryAfterS > 0 {
			wait = int64(r.retryAfterS) * int64(l.e.cfg.raUnit)
			if r.code == 503 {
				s.busyRA.Add(1)
			}
		}
		u.busy = false
		u.txn++
		heap.Push(&l.timers, stormTimer{at: now + wait, u: u, txn: u.txn, kind: timerRestart})
		return buf, false
	default:
		l.stormGiveUpLocked(u, statusKind(r.code, u.phase, r.retryAfter))
		return buf, false
	}
}

func (l *lane) stormGiveUpLocked(u *ua, kind string) {
	s := l.e.storm.Load()
	u.busy = false
	u.txn++
	s.st.fail(kind)
	s.finish(&s.gaveUp)
}

// finish counts a phone that is done and closes done after the last one.
func (s *stormState) finish(c *atomic.Int64) {
	c.Add(1)
	if s.registered.Load()+s.gaveUp.Load() >= s.n && s.doneOnce.CompareAndSwap(false, true) {
		close(s.done)
	}
}

// stormTimers fires the lane's due timers every few milliseconds:
// retransmissions, Timer F, and restarts after a pause.
func (l *lane) stormTimers(ctx context.Context) {
	defer l.e.wg.Done()
	s := l.e.storm.Load()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	out := newOutbox()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := l.e.now()
		for {
			l.mu.Lock()
			if len(l.timers) == 0 || l.timers[0].at > now {
				l.mu.Unlock()
				break
			}
			t := heap.Pop(&l.timers).(stormTimer)
			u := t.u
			if t.txn != u.txn {
				l.mu.Unlock()
				continue
			}
			buf := out.next(l.tcp)
			send := false
			switch {
			case t.kind == timerRestart:
				buf = l.stormStartLocked(u, now, buf)
				send = true
			case t.at-u.txStart >= s.f: // Timer F: the transaction failed
				s.timerF.Add(1)
				u.busy = false
				u.txn++
				heap.Push(&l.timers, stormTimer{at: now + s.retryWait, u: u, txn: u.txn, kind: timerRestart})
			default: // Timer E: retransmit, double the interval up to T2
				buf = append(buf, u.last...)
				send = true
				s.retx.Add(1)
				s.sent.Add(1)
				u.interval = min(2*u.interval, s.t2)
				next := min(t.at+u.interval, u.txStart+s.f) // from the due time, so late ticks do not add up
				heap.Push(&l.timers, stormTimer{at: next, u: u, txn: u.txn, kind: timerTx})
			}
			if send {
				out.add(l.tcp, buf, u, u.gen)
			}
			l.mu.Unlock()
			if out.full() {
				out.flush(l)
			}
		}
		out.flush(l)
	}
}
