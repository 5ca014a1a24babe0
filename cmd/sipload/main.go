// Command sipload is a SIP REGISTER load generator for registrars.
//
// Every registration is a full digest exchange: REGISTER → 401 (a fresh
// challenge) → REGISTER with Authorization (qop=auth, nc, cnonce) → 200. N
// users cycle round robin; each re-registers on its own Call-ID with an
// increasing CSeq (or -fresh-callid). sipload reports registrations per
// second, failures by kind, latency percentiles of the whole exchange, its
// own CPU per registration and, with -target-pid, the registrar's.
//
// Two workloads: -workload refresh (the default: each user keeps its contact
// and Call-ID, CSeq increasing, so after its first registration every
// REGISTER is a pure refresh) and -workload new-contact (every REGISTER adds
// a new contact on a new Call-ID and removes the previous one with
// expires=0: every 200 is a change the registrar must write). -contact fixes
// the Contact host so that successive runs refresh one binding per user.
//
// -ramp steps the rate up and reports the highest rate sustained. A step in
// which sipload itself could not offer the rate (its pacer fell behind, it
// used more than -max-gen-cpu of CPU, its own sockets dropped responses) is
// a generator limit, not the target's failure: it is repeated once, and a
// second one ends the ramp as "ended by the generator" (the target's max is
// then a lower bound).
//
// -storm is a re-registration storm that behaves like phones: every user
// starts at once; over UDP each transaction is retransmitted on RFC 3261
// Timer E (T1 = 500 ms doubling to T2 = 4 s), Timer F gives up after 32 s,
// a 503 with Retry-After is honoured (wait, then a fresh transaction); it
// reports when every phone was registered, how many within -storm-window,
// retransmissions and 503s.
//
//	sipload -target 127.0.0.1:5060 -users 1000 -user-prefix 2 -password-pattern 'pw-%s' -domain example.test -rate 2000 -duration 10s
//	sipload -target 127.0.0.1:5060 -users-file users.csv -ramp -max-p99 50ms
//	sipload -target 127.0.0.1:5060 -users-file users.csv -workload new-contact -ramp
//	sipload -target 127.0.0.1:5060 -users-file users.csv -storm -transport tcp -conns 50
//	sipload provision -admin http://127.0.0.1:8081 -token ... -users 1000 -out users.csv
//
// Requests are formatted from a byte template (no SIP stack) and sent on a
// few connected UDP sockets (or persistent TCP connections). Each has one
// reader goroutine that reads responses in batches (recvmmsg), parses them
// with a small allocation-free parser (status line, Call-ID, CSeq,
// WWW-Authenticate; not sipgo's parser, which costs ~9 µs and ~2 KiB per
// message), answers each 401 with the digest (crypto/md5 or crypto/sha256,
// HA1 cached per user) and, in as-fast-as-possible mode, starts the next
// registration itself; what it has to send leaves in one sendmmsg (one
// write for TCP). A registration costs the generator about 16 µs of CPU on
// the 2-core benchmark machine (see BENCHMARKS.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	target      string
	transport   string
	domain      string
	algorithm   string
	rate        float64
	ramp        bool
	rampStart   float64
	rampFactor  float64
	step        time.Duration
	refine      int
	maxFail     float64
	maxP99      time.Duration
	duration    time.Duration
	warmup      time.Duration
	expires     int
	timeout     time.Duration
	concurrency int
	conns       int
	freshCallID bool
	targetPIDs  []int
	jsonOut     bool
	cpuProfile  string
	once        bool
	workload    string // "refresh" or "new-contact"
	contact     string // Contact host:port; empty: the socket's address
	maxGenCPU   float64

	storm       bool          // retransmitting storm (storm.go)
	stormWindow time.Duration // the goal: every phone registered within this
	retryWait   time.Duration // after Timer F or a 503 without Retry-After
	t1, t2      time.Duration // RFC 3261 Timer E: T1 doubling up to T2; Timer F = 64×T1
	raUnit      time.Duration // one second of Retry-After (shorter in tests)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "provision" {
		if err := provision(ctx, args[1:], stdout, stderr); err != nil {
			if !errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(stderr, "sipload provision:", err)
			}
			return 2
		}
		return 0
	}
	cfg, users, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "sipload:", err)
		}
		return 2
	}
	e, err := newEngine(cfg, users)
	if err != nil {
		fmt.Fprintln(stderr, "sipload:", err)
		return 1
	}
	defer e.close()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "sipload:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "sipload:", err)
			return 1
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	sctx, stopSweep := context.WithCancel(context.Background())
	defer stopSweep()
	go e.sweep(sctx)

	pids := withDescendants(cfg.targetPIDs)
	if cfg.ramp {
		res := e.rampRun(ctx, pids, stdout)
		if res == nil {
			return 1
		}
		return 0
	}
	if cfg.storm {
		res := e.runStorm(ctx, pids)
		res.print(stdout)
		if cfg.jsonOut {
			res.json(stdout)
		}
		return 0
	}
	if cfg.once {
		res := e.runN(len(users), pids)
		fmt.Fprintf(stdout, "storm: %d users registering once, %d at a time: %d succeeded on the first try (%.2f%%)\n",
			len(users), cfg.concurrency, res.OK, 100*float64(res.OK)/float64(len(users)))
		res.print(stdout, "")
		if cfg.jsonOut {
			json.NewEncoder(stdout).Encode(res)
		}
		return 0
	}
	if cfg.warmup > 0 {
		e.phase(ctx, cfg.rate, cfg.warmup, pids)
	}
	res := e.phase(ctx, cfg.rate, cfg.duration, pids)
	res.print(stdout, "")
	if cfg.jsonOut {
		json.NewEncoder(stdout).Encode(res)
	}
	if res.OK == 0 {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*config, []userCred, error) {
	c := &config{raUnit: time.Second}
	fs := flag.NewFlagSet("sipload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.target, "target", "127.0.0.1:5060", "registrar address host:port")
	fs.StringVar(&c.transport, "transport", "udp", "udp or tcp")
	n := fs.Int("users", 1000, "number of users (with -password-pattern)")
	prefix := fs.String("user-prefix", "2", "user names are this prefix + a zero-padded index of at least 4 digits (2 → 20000, 20001, …)")
	pattern := fs.String("password-pattern", "pw-%s", "password of each user; %s is the user name")
	file := fs.String("users-file", "", "CSV file of user,password[,domain] (instead of -users/-user-prefix/-password-pattern)")
	fs.StringVar(&c.domain, "domain", "localhost", "SIP domain: Request-URI and AOR host (the digest realm comes from the challenge)")
	alg := fs.String("algorithm", "md5", "digest algorithm to answer: md5 or sha-256 (the challenge with it is picked)")
	fs.Float64Var(&c.rate, "rate", 0, "registrations started per second; 0 = as fast as possible with -concurrency in flight")
	fs.BoolVar(&c.ramp, "ramp", false, "step the rate up until failures exceed -max-fail or p99 exceeds -max-p99; report the highest sustained rate")
	fs.Float64Var(&c.rampStart, "ramp-start", 1000, "first rate of -ramp")
	fs.Float64Var(&c.rampFactor, "ramp-factor", 1.3, "rate multiplier between -ramp steps until the first failing step")
	fs.DurationVar(&c.step, "step", 4*time.Second, "length of one -ramp step")
	fs.IntVar(&c.refine, "refine", 3, "-ramp bisection steps between the last passing and the first failing rate")
	fs.Float64Var(&c.maxFail, "max-fail", 0.001, "-ramp: largest failure fraction a step may have (0.001 = 0.1%)")
	fs.DurationVar(&c.maxP99, "max-p99", 50*time.Millisecond, "-ramp: largest p99 latency a step may have")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "length of the run (with -ramp: the most time all steps may take)")
	fs.DurationVar(&c.warmup, "warmup", 0, "run this long first without counting (not with -ramp)")
	fs.IntVar(&c.expires, "expires", 3600, "Expires of each REGISTER")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Second, "an exchange not finished this long after its first REGISTER is a timeout")
	fs.IntVar(&c.concurrency, "concurrency", 0, "exchanges in flight: exactly this many with -rate 0 (default 64); at most this many with a rate (default unlimited)")
	fs.IntVar(&c.conns, "conns", 4, "UDP sockets or TCP connections (each with one reader goroutine)")
	fs.BoolVar(&c.freshCallID, "fresh-callid", false, "a new Call-ID for every registration (default: one Call-ID per user, CSeq increasing, as phones do)")
	pidList := fs.String("target-pid", "", "PID(s) of the registrar, comma-separated: report its CPU (with its child processes) per registration")
	fs.BoolVar(&c.jsonOut, "json", false, "also print the result as JSON")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write sipload's own CPU profile to this file")
	fs.StringVar(&c.workload, "workload", "refresh", "refresh: each user keeps its contact and Call-ID, CSeq increasing (pure refreshes); new-contact: every REGISTER registers a new contact on a new Call-ID and removes the previous one (every 200 is a write)")
	fs.StringVar(&c.contact, "contact", "", "host:port put in Contact URIs (default: the socket's address, which changes with every run; a fixed one makes later runs refresh the same binding)")
	fs.Float64Var(&c.maxGenCPU, "max-gen-cpu", 0.9, "-ramp: a step in which sipload used more than this many cores of CPU, or fell behind its schedule, is a generator limit, not the target's failure")
	fs.BoolVar(&c.storm, "storm", false, "a retransmitting re-registration storm: every user starts at once and behaves like a phone (RFC 3261 Timer E over UDP, Timer F, Retry-After on 503) until registered or -duration is over")
	fs.DurationVar(&c.stormWindow, "storm-window", 60*time.Second, "-storm: report how many users registered within this long")
	fs.DurationVar(&c.retryWait, "retry-wait", 30*time.Second, "-storm: wait before a new transaction after Timer F fired, or after a 5xx/408 without Retry-After (a Yealink's registration retry interval is 30 s)")
	fs.DurationVar(&c.t1, "t1", 500*time.Millisecond, "-storm: RFC 3261 T1 (first retransmission interval; Timer F is 64×T1)")
	fs.DurationVar(&c.t2, "t2", 4*time.Second, "-storm: RFC 3261 T2 (longest retransmission interval)")
	fs.BoolVar(&c.once, "once", false, "a re-registration storm: every user registers exactly once, with -concurrency in flight (default: all users at once); no retries")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.transport = strings.ToLower(c.transport)
	if c.workload != "refresh" && c.workload != "new-contact" {
		return nil, nil, fmt.Errorf("-workload %q: want refresh or new-contact", c.workload)
	}
	if c.storm && (c.ramp || c.once || c.rate != 0) {
		return nil, nil, errors.New("-storm goes with none of -ramp, -once, -rate")
	}
	durSet := false
	fs.Visit(func(f *flag.Flag) { durSet = durSet || f.Name == "duration" })
	if c.storm && !durSet {
		c.duration = 2 * c.stormWindow
	}
	if c.storm && (c.t1 <= 0 || c.t2 < c.t1 || c.retryWait < 0 || c.stormWindow <= 0) {
		return nil, nil, errors.New("-storm needs -t1 > 0, -t2 ≥ -t1, -retry-wait ≥ 0, -storm-window > 0")
	}
	if c.transport != "udp" && c.transport != "tcp" {
		return nil, nil, fmt.Errorf("-transport %q: want udp or tcp", c.transport)
	}
	switch strings.ToLower(*alg) {
	case "md5":
		c.algorithm = algMD5
	case "sha-256", "sha256":
		c.algorithm = algSHA256
	default:
		return nil, nil, fmt.Errorf("-algorithm %q: want md5 or sha-256", *alg)
	}
	if c.rate < 0 || c.timeout <= 0 || c.duration <= 0 || c.conns <= 0 || c.expires < 0 || c.concurrency < 0 {
		return nil, nil, errors.New("-rate, -timeout, -duration, -conns, -expires and -concurrency must not be negative (-timeout, -duration, -conns positive)")
	}
	if c.ramp && (c.rampFactor <= 1 || c.rampStart <= 0 || c.step <= 0) {
		return nil, nil, errors.New("-ramp needs -ramp-factor > 1, -ramp-start > 0, -step > 0")
	}
	if *pidList != "" {
		for _, p := range strings.Split(*pidList, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(p))
			if err != nil || pid <= 0 {
				return nil, nil, fmt.Errorf("-target-pid %q: want process ids", *pidList)
			}
			if _, _, err := procStat(pid); err != nil {
				return nil, nil, fmt.Errorf("-target-pid %d: %w", pid, err)
			}
			c.targetPIDs = append(c.targetPIDs, pid)
		}
	}
	var users []userCred
	var err error
	if *file != "" {
		users, err = readUsersFile(*file)
	} else {
		users, err = patternUsers(*n, *prefix, *pattern)
	}
	if err != nil {
		return nil, nil, err
	}
	if c.once && (c.rate != 0 || c.ramp) {
		return nil, nil, errors.New("-once goes with neither -rate nor -ramp")
	}
	if c.once && c.concurrency == 0 {
		c.concurrency = len(users)
	}
	if c.rate == 0 && !c.ramp && c.concurrency == 0 {
		c.concurrency = min(64, len(users))
	}
	if c.rate == 0 && !c.ramp && c.concurrency > len(users) {
		return nil, nil, fmt.Errorf("-concurrency %d is more than the %d users (a user has one registration in flight at a time)", c.concurrency, len(users))
	}
	return c, users, nil
}

// result is one measured phase.
type result struct {
	Transport       string      `json:"transport"`
	TargetRate      float64     `json:"target_rate"` // 0: as fast as possible
	Concurrency     int         `json:"concurrency,omitempty"`
	Seconds         float64     `json:"seconds"`
	Started         uint64      `json:"started"`
	OK              uint64      `json:"ok"`
	Failed          uint64      `json:"failed"`
	Skipped         uint64      `json:"skipped"`
	Late            uint64      `json:"late_responses"`
	Rate            float64     `json:"rate"` // successful registrations per second
	FailFraction    float64     `json:"fail_fraction"`
	P50ms           float64     `json:"p50_ms"`
	P90ms           float64     `json:"p90_ms"`
	P99ms           float64     `json:"p99_ms"`
	MaxMs           float64     `json:"max_ms"`
	Failures        []kindCount `json:"failures,omitempty"`
	Skips           []kindCount `json:"skips,omitempty"`
	GenCPUSeconds   float64     `json:"generator_cpu_s"`
	GenCPUPerReg    float64     `json:"generator_cpu_us_per_reg"`
	TargetPIDs      []int       `json:"target_pids,omitempty"`
	TargetCPU       float64     `json:"target_cpu_s,omitempty"`
	TargetCPUPerReg float64     `json:"target_cpu_us_per_reg,omitempty"`
	// What shows the generator was not the limit: its CPU in cores over
	// the phase, datagrams its own sockets dropped (responses lost at the
	// generator would look like the target's timeouts), and how far the
	// pacer fell behind its schedule.
	GenCPUCores float64 `json:"generator_cpu_cores"`
	GenDrops    uint64  `json:"generator_udp_drops"`
	PacerLagMs  float64 `json:"pacer_max_lag_ms"`
	// Ramp only (on the best step): why the ramp ended — "target" (a step
	// failed on the target's account), "generator" (sipload itself could
	// not keep up twice in a row: max is a lower bound), or "time".
	RampEnd     string  `json:"ramp_end,omitempty"`
	RampEndWhy  string  `json:"ramp_end_why,omitempty"`
	NextFailing float64 `json:"next_failing_rate,omitempty"`
}

// phase runs one measured phase at rate (0: AFAP) for d, then drains.
func (e *engine) phase(ctx context.Context, rate float64, d time.Duration, pids []int) *result {
	st := newStats()
	e.cur.Store(st)
	gen0, tgt0, drops0 := selfCPU(), targetCPU(pids), e.udpDrops()
	t0 := time.Now()
	e.running.Store(true)
	pctx, cancel := context.WithTimeout(ctx, d)
	if rate > 0 {
		e.afap.Store(false)
		e.pace(pctx, rate)
	} else {
		e.afap.Store(true)
		e.kick()
		<-pctx.Done()
	}
	cancel()
	e.drain()
	r := e.summarize(st, rate, d, time.Since(t0), gen0, tgt0, pids)
	r.GenDrops = e.udpDrops() - drops0
	return r
}

// summarize turns a phase's stats into a result. d is the time new
// exchanges were started, elapsed includes the drain.
func (e *engine) summarize(st *stats, rate float64, d, elapsed time.Duration, gen0, tgt0 time.Duration, pids []int) *result {
	gen1, tgt1 := selfCPU(), targetCPU(pids)
	r := &result{Transport: e.cfg.transport, TargetRate: rate, Seconds: elapsed.Seconds(),
		Started: st.started.Load(), OK: st.ok.Load(), Failed: st.failed.Load(), Skipped: st.skipped.Load(), Late: st.late.Load(),
		GenCPUSeconds: (gen1 - gen0).Seconds(), TargetPIDs: pids}
	if rate == 0 {
		r.Concurrency = e.cfg.concurrency
	}
	// Throughput counts the exchanges started during d (finished by the
	// drain) over d: the drain only waits for the last round trips.
	if active := time.Duration(min(int64(d), int64(elapsed))); active > 0 {
		r.Rate = float64(r.OK) / active.Seconds()
	}
	if r.Started > 0 {
		r.FailFraction = float64(r.Failed) / float64(r.Started)
	}
	q, _ := st.lat.quantiles(0.5, 0.9, 0.99)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	r.P50ms, r.P90ms, r.P99ms, r.MaxMs = ms(q[0]), ms(q[1]), ms(q[2]), ms(time.Duration(st.lat.max.Load()))
	st.mu.Lock()
	r.Failures, r.Skips = sortedKinds(st.kinds), sortedKinds(st.skips)
	st.mu.Unlock()
	if r.OK > 0 {
		r.GenCPUPerReg = float64(gen1-gen0) / 1e3 / float64(r.OK)
	}
	if elapsed > 0 {
		r.GenCPUCores = (gen1 - gen0).Seconds() / elapsed.Seconds()
	}
	r.PacerLagMs = float64(st.maxLag.Load()) / 1e6
	if len(pids) > 0 {
		r.TargetCPU = (tgt1 - tgt0).Seconds()
		if r.OK > 0 {
			r.TargetCPUPerReg = float64(tgt1-tgt0) / 1e3 / float64(r.OK)
		}
	}
	return r
}

// runN performs n registrations as fast as possible with the configured
// concurrency (for Go benchmarks) and returns the result.
func (e *engine) runN(n int, pids []int) *result {
	e.limited.Store(true)
	e.budget.Store(int64(n))
	defer e.limited.Store(false)
	st := newStats()
	e.cur.Store(st)
	t0 := time.Now()
	gen0, tgt0 := selfCPU(), targetCPU(pids)
	e.running.Store(true)
	e.afap.Store(true)
	e.kick()
	for e.budget.Load() > 0 || e.inflight.Load() > 0 {
		time.Sleep(time.Millisecond)
	}
	e.running.Store(false)
	return e.summarize(st, 0, time.Since(t0), time.Since(t0), gen0, tgt0, pids)
}

func (r *result) print(w io.Writer, indent string) {
	mode := fmt.Sprintf("rate %.0f/s", r.TargetRate)
	if r.TargetRate == 0 {
		mode = fmt.Sprintf("as fast as possible, %d in flight", r.Concurrency)
	}
	fmt.Fprintf(w, "%s%s, %s, %.1f s\n", indent, r.Transport, mode, r.Seconds)
	fmt.Fprintf(w, "%s  registrations  %d ok, %d failed (%.3f%%), %d started, %d not started, %d late responses\n",
		indent, r.OK, r.Failed, 100*r.FailFraction, r.Started, r.Skipped, r.Late)
	fmt.Fprintf(w, "%s  throughput     %.0f registrations/s\n", indent, r.Rate)
	fmt.Fprintf(w, "%s  latency        p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n", indent, r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	for _, k := range r.Failures {
		fmt.Fprintf(w, "%s  failure        %d × %s\n", indent, k.Count, k.Kind)
	}
	for _, k := range r.Skips {
		fmt.Fprintf(w, "%s  not started    %d × %s\n", indent, k.Count, k.Kind)
	}
	fmt.Fprintf(w, "%s  generator cpu  %.2f s (%.1f µs/registration, %.0f%% of a core); its sockets dropped %d datagrams; pacer at most %.1f ms behind\n",
		indent, r.GenCPUSeconds, r.GenCPUPerReg, 100*r.GenCPUCores, r.GenDrops, r.PacerLagMs)
	if len(r.TargetPIDs) > 0 {
		fmt.Fprintf(w, "%s  target cpu     %.2f s (%.1f µs/registration) over %d process(es)\n", indent, r.TargetCPU, r.TargetCPUPerReg, len(r.TargetPIDs))
	}
}

// Verdicts of a ramp step.
const (
	stepPass     = iota
	stepFail     // the target did not sustain the rate
	stepGenLimit // sipload could not offer the rate: the step says nothing about the target
)

// behindKind is the skip kind of a pacer that fell behind its schedule.
const behindKind = "generator behind schedule"

// pass judges a ramp step. Generator limits are checked first: a step in
// which sipload fell behind its schedule, started too few exchanges, used
// more than -max-gen-cpu cores or dropped responses in its own sockets did
// not offer the rate it claims, so its failures (if any) are not the
// target's. Before this distinction a single pacer stall (the VM descheduled
// for > 100 ms) failed a step with 0 failed registrations, and the ramp then
// bisected below it: Kamailio reported at 1,437/s instead of ~17,000/s.
func (e *engine) pass(r *result) (int, string) {
	c := e.cfg
	var behind uint64
	for _, k := range r.Skips {
		if k.Kind == behindKind {
			behind = k.Count
		}
	}
	switch {
	case r.Started == 0:
		return stepGenLimit, "nothing started"
	case behind > 0:
		return stepGenLimit, fmt.Sprintf("generator behind schedule (pacer %.0f ms late, %d starts missed)", r.PacerLagMs, behind)
	case float64(r.Started+r.Skipped)+2+0.02*r.TargetRate < 0.97*r.TargetRate*c.step.Seconds():
		// (slack: 3%, plus 20 ms of the pacer's start-up)
		return stepGenLimit, fmt.Sprintf("generator started only %d", r.Started)
	case c.maxGenCPU > 0 && r.GenCPUCores > c.maxGenCPU:
		return stepGenLimit, fmt.Sprintf("generator CPU %.0f%% of a core > %.0f%%", 100*r.GenCPUCores, 100*c.maxGenCPU)
	case r.GenDrops > 0:
		return stepGenLimit, fmt.Sprintf("generator sockets dropped %d responses", r.GenDrops)
	case r.FailFraction > c.maxFail:
		return stepFail, fmt.Sprintf("failures %.3f%% > %.3f%%", 100*r.FailFraction, 100*c.maxFail)
	case time.Duration(r.P99ms*1e6) > c.maxP99:
		return stepFail, fmt.Sprintf("p99 %.1f ms > %v", r.P99ms, c.maxP99)
	case float64(r.Skipped) > c.maxFail*float64(r.Started+r.Skipped):
		// users still busy (the target is slow) or the -concurrency cap
		return stepFail, fmt.Sprintf("%d not started (%s)", r.Skipped, r.Skips[0].Kind)
	case r.Rate < 0.97*float64(r.Started)/c.step.Seconds():
		return stepFail, fmt.Sprintf("achieved only %.0f/s", r.Rate)
	}
	return stepPass, ""
}

// rampRun steps the rate up by -ramp-factor until a step fails, then bisects
// -refine times between the best passing and the first failing rate.
func (e *engine) rampRun(ctx context.Context, pids []int, w io.Writer) *result {
	c := e.cfg
	deadline := time.Now().Add(c.duration)
	rate := c.rampStart
	var best *result
	var good, bad float64
	fmt.Fprintf(w, "ramp: %s %s, %d users, steps of %v, pass = failures ≤ %.2f%%, p99 ≤ %v, ≥ 97%% of the rate started and achieved\n",
		c.transport, c.target, len(e.users), c.step, 100*c.maxFail, c.maxP99)
	step := e.stepFn
	if step == nil {
		step = func(ctx context.Context, rate float64) *result { return e.phase(ctx, rate, c.step, pids) }
	}
	end, endWhy := "time", fmt.Sprintf("-duration %v used up", c.duration)
	retried := 0.0
	for refined := 0; ctx.Err() == nil; {
		if time.Now().Add(c.step).After(deadline) {
			fmt.Fprintf(w, "ramp: -duration %v used up\n", c.duration)
			break
		}
		r := step(ctx, rate)
		v, why := e.pass(r)
		verdict := "pass"
		switch v {
		case stepFail:
			verdict = "FAIL: " + why
		case stepGenLimit:
			verdict = "GENERATOR LIMIT (not the target's failure): " + why
		}
		fmt.Fprintf(w, "  step %6.0f/s: %6.0f ok/s, fail %.3f%%, p50 %.2f ms, p99 %.2f ms, target %.1f µs/reg, generator %.1f µs/reg %.0f%% cpu — %s\n",
			rate, r.Rate, 100*r.FailFraction, r.P50ms, r.P99ms, r.TargetCPUPerReg, r.GenCPUPerReg, 100*r.GenCPUCores, verdict)
		if v == stepGenLimit {
			if retried != rate {
				retried = rate // a passing stall (another process, the VM): try the same rate once more
				continue
			}
			end, endWhy = "generator", fmt.Sprintf("at %.0f/s: %s", rate, why)
			fmt.Fprintf(w, "ramp: stopped by the generator's limit %s; the target's max is at least the best passing step\n", endWhy)
			break
		}
		ok := v == stepPass
		if !ok {
			end, endWhy = "target", fmt.Sprintf("at %.0f/s: %s", rate, why)
		}
		if ok {
			good = rate
			best = r
		} else {
			bad = rate
		}
		if bad == 0 {
			rate *= c.rampFactor
			continue
		}
		if good == 0 {
			rate /= c.rampFactor * c.rampFactor
			if rate < 10 {
				break
			}
			continue
		}
		if refined >= c.refine || (bad-good)/good < 0.03 {
			break
		}
		refined++
		rate = (good + bad) / 2
	}
	if best == nil {
		fmt.Fprintln(w, "ramp: no rate was sustained")
		return nil
	}
	if end == "target" && bad == 0 {
		end = "time"
	}
	best.RampEnd, best.RampEndWhy, best.NextFailing = end, endWhy, bad
	fmt.Fprintf(w, "max sustained: %.0f registrations/s (step target %.0f/s; next failing %.0f/s; ramp ended by the %s: %s)\n", best.Rate, good, bad, end, endWhy)
	best.print(w, "  ")
	if c.jsonOut {
		json.NewEncoder(w).Encode(best)
	}
	return best
}
