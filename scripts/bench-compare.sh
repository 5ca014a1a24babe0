#!/usr/bin/env bash
# dialtone vs Kamailio 5.6, same machine, same run (make bench-compare): the
# five goals of issue 13, each printed MET / NOT MET with its numbers and the
# ratio dialtone/Kamailio. About 30-40 min at the defaults (provisioning
# 100,000 users through the admin API alone takes ~4 min); QUICK=1 ~5 min.
#
# Kamailio (scripts/kamailio/kamailio.cfg, location in memory) runs first,
# then dialtone on a fresh data directory. Each registrar is pinned to CPU 0
# and every generator to CPU 1 (taskset; BENCH_PIN=0 to share both CPUs), so
# "the generator is not the limit" means its CPU stays below 90 % of its own
# core. For each registrar and transport (UDP, TCP):
#
#   1. sipload ramp, steady refresh workload (each user keeps its contact and
#      Call-ID, CSeq increasing: pure refreshes): steps of BENCH_STEP from
#      1,000/s ×1.5, then 3 bisections; a step passes with ≤ 0.1 % failed,
#      p99 ≤ 100 ms, ≥ 97 % started and achieved. A step where sipload itself
#      fell behind, used > 90 % of its core or dropped responses in its own
#      sockets is a GENERATOR LIMIT (repeated once, then ends the ramp), never
#      the registrar's failure. max = best passing step.               goal 1
#   2. sipload at half of KAMAILIO's max (both registrars, same rate), refresh
#      workload, after a warm-up of one full round of users: p50/p99 and the
#      registrar's CPU per registration (utime+stime of it and its children
#      from /proc).                                                 goals 2, 3
#   3. sipload ramp, new-contact workload (every REGISTER a new contact and
#      Call-ID, removing the previous contact: every 200 a write).
#   4. SIPp (Debian's sip-tester, scripts/sipp/register.xml, the [authentication]
#      keyword with an injection CSV): fixed offered rates BENCH_SIPP_RATES,
#      BENCH_SIPP_STEP each, until two steps fail; per step: achieved rate,
#      failures, registrar CPU per registration, SIPp's own CPU, latency
#      buckets from SIPp's ResponseTimeRepartition. UDP with -t un
#      -max_socket 100 (requests from 100 source ports, like 100 phones),
#      TCP with -t t1 (one connection: SIPp 3.6's -t tn opens a connection per
#      call and stalls with -max_socket). SIPp needs its Call-ID per call, so
#      its workload is "same contact, new Call-ID" (a write), see register.xml.
#   5. a re-registration storm of BENCH_STORM_USERS phones at once with
#      sipload -storm (RFC 3261 Timer E retransmissions over UDP, Timer F,
#      Retry-After honoured on 503): time until all registered, how many
#      within 60 s, retransmissions, 503s; for dialtone also the live
#      bindings (dialtone_sip_registrations_live on /metrics) before and
#      after = the phones answered 200, and that it is still running. goal 4
# Then for dialtone: heap per binding (HeapAlloc after a forced GC, from
# /debug/pprof/heap, over the bindings added by the storms, 35 s after them
# so that sipgo's finished server transactions are gone) and a restart
# with every binding in place: time from exec to the first REGISTER answered
# 200; and (unless QUICK) the store's Benchmark100kBindings.          goal 5
#
# Knobs (environment): QUICK=1 (a small end-to-end check: 1 s steps, 1,000
# users, ramps from 300/s for 7 s, a 5,000-phone storm, two short SIPp
# steps), BENCH_RAMP_START (default 1000), BENCH_USERS (ramp users,
# default 10000), BENCH_STORM_USERS (default 100000), BENCH_STEP (default 3s),
# BENCH_RAMP_SECONDS (most time per ramp, default 90), BENCH_HALF_SECONDS
# (default 15), BENCH_SIPP_RATES (default "1000 2000 4000 6000 8000 12000 16000
# 20000 25000"), BENCH_SIPP_STEP (seconds, default 20), BENCH_TRANSPORTS
# (default "udp tcp"), BENCH_SKIP (words of: sipp storm newcontact restart),
# BENCH_KEEP=1 keeps the temporary directory, BENCH_BIN=DIR uses DIR/dialtone
# and DIR/sipload instead of building them. Everything started is stopped on
# exit. Only loopback addresses are used.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-}" = 1 ]; then
	: "${BENCH_USERS:=1000}" "${BENCH_STORM_USERS:=5000}" "${BENCH_STEP:=1s}" "${BENCH_RAMP_SECONDS:=7}" "${BENCH_RAMP_START:=300}"
	: "${BENCH_HALF_SECONDS:=3}" "${BENCH_SIPP_RATES:=300 600}" "${BENCH_SIPP_STEP:=4}"
fi
USERS=${BENCH_USERS:-10000}
STORM_USERS=${BENCH_STORM_USERS:-100000}
STEP=${BENCH_STEP:-3s}
RAMP_SECONDS=${BENCH_RAMP_SECONDS:-90}
HALF_SECONDS=${BENCH_HALF_SECONDS:-15}
SIPP_RATES=${BENCH_SIPP_RATES:-1000 2000 4000 6000 8000 12000 16000 20000 25000}
SIPP_STEP=${BENCH_SIPP_STEP:-20}
TRANSPORTS=${BENCH_TRANSPORTS:-udp tcp}
SKIP=" ${BENCH_SKIP:-} "
DOMAIN=bench.test
CONTACT=127.0.0.1:5999 # fixed Contact host: later runs refresh the same binding
GO=${GO:-go}
RAMP_FLAGS=(-ramp -ramp-start "${BENCH_RAMP_START:-1000}" -ramp-factor 1.5 -step "$STEP" -refine 3 -max-fail 0.001 -max-p99 100ms -timeout 2s -max-gen-cpu 0.9)

SRV_CPU=() GEN_CPU=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
	SRV_CPU=(taskset -c 0) GEN_CPU=(taskset -c 1)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-compare.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${BENCH_KEEP:-}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# stop PID: SIGTERM, wait, forget it.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# jget KEY FILE: a value from the last JSON line sipload printed.
# calc EXPR: awk arithmetic, printed with %.4g unless FMT is given.
calc() { awk "BEGIN { v = $1; printf \"${2:-%.4g}\", v }"; }

install_pkg() { # install_pkg COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 && return
	echo "== installing $2 (Debian package)"
	local sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}
if [ -z "${BENCH_REPORT:-}" ]; then
install_pkg kamailio kamailio
install_pkg sipp sip-tester
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed (it comes with kamailio)" >&2; exit 1; }

BIN=${BENCH_BIN:-bin}
if [ -z "${BENCH_BIN:-}" ] && [ -z "${BENCH_REPORT:-}" ]; then
	echo "== building dialtone and sipload"
	mkdir -p bin
	$GO build -trimpath -o bin/dialtone ./cmd/dialtone
	$GO build -trimpath -o bin/sipload ./cmd/sipload
fi
SIPLOAD=("${GEN_CPU[@]}" "$BIN/sipload")


# cpu_s PID: CPU seconds (utime+stime) of PID and all its descendants.
cpu_s() {
	python3 - "$1" <<'EOF'
import os, sys
root = int(sys.argv[1]); kids = {}; cpu = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()
    kids.setdefault(int(f[1]), []).append(int(d))
    cpu[int(d)] = int(f[11]) + int(f[12])
tot, todo = 0, [root]
while todo:
    p = todo.pop()
    tot += cpu.get(p, 0)
    todo += kids.get(p, [])
print(tot / os.sysconf("SC_CLK_TCK"))
EOF
}

declare -A R

# sipp_steps NAME PID ADDR TR USERSCSV: SIPp at fixed rates until two steps fail.
sipp_steps() {
	local name=$1 pid=$2 addr=$3 tr=$4 inf=$5 fails=0 best=0 rate
	local tmode=(-t un -max_socket 100)
	[ "$tr" = tcp ] && tmode=(-t t1)
	echo "== $name $tr: SIPp at fixed rates (${SIPP_STEP}s each): $SIPP_RATES"
	echo "   (achieved: successful calls / SIPp's wall time incl. start and drain; pass: ≤ 0.1 % failed, ≤ 1 % ≥ 100 ms; buckets in % of answered)"
	printf '   %8s %9s %8s %8s %10s %8s %7s %7s %7s %7s %7s  %s\n' offered achieved failed "fail%" "srv µs/reg" "sipp%" "<1ms" "<10" "<50" "<100" ">=100" verdict
	for rate in $SIPP_RATES; do
		local f="$TMP/$name-$tr-sipp-$rate" c0 c1 t0 t1 n=$((rate * SIPP_STEP))
		c0=$(cpu_s "$pid")
		t0=$(date +%s.%N)
		# bash's time reports SIPp's own user+sys CPU (taskset execs it).
		{ TIMEFORMAT='%3U %3S'; time "${GEN_CPU[@]}" sipp "$addr" -i 127.0.0.1 -sf scripts/sipp/register.xml -inf "$inf" -auth_uri "$DOMAIN" "${tmode[@]}" \
			-r "$rate" -m "$n" -nr -recv_timeout 2000 -trace_stat -stf "$f.csv" -fd 1 >"$f.out" 2>&1 </dev/null || true; } 2>"$f.time"
		t1=$(date +%s.%N)
		c1=$(cpu_s "$pid")
		local line
		line=$(tail -1 "$f.csv" 2>/dev/null || true)
		if [ -z "$line" ]; then echo "   $rate/s: SIPp produced no statistics (see $f.out)"; fails=$((fails + 1)); continue; fi
		IFS=';' read -r -a F <<<"$line"
		# columns (1-based, SIPp 3.6 -trace_stat): 13 created, 16 successful, 18 failed, 78-82 response-time buckets
		local created=${F[12]} ok=${F[15]} failed=${F[17]} b1=${F[77]} b10=${F[78]} b50=${F[79]} b100=${F[80]} bover=${F[81]}
		local wall sippcpu achieved failpct srvus sipppct verdict="pass" tot
		wall=$(calc "$t1 - $t0")
		sippcpu=$(awk '{ print $1 + $2 }' "$f.time" 2>/dev/null || echo 0)
		achieved=$(calc "$ok / ($wall > $SIPP_STEP ? $wall : $SIPP_STEP)" %.0f)
		failpct=$(calc "$n > 0 ? 100 * ($n - $ok) / $n : 100" %.3f)
		srvus=$(calc "$ok > 0 ? 1e6 * ($c1 - $c0) / $ok : 0" %.1f)
		sipppct=$(calc "100 * $sippcpu / $wall" %.0f)
		tot=$((b1 + b10 + b50 + b100 + bover))
		local pct=() b
		for b in "$b1" "$b10" "$b50" "$b100" "$bover"; do pct+=("$(calc "$tot > 0 ? 100 * $b / $tot : 0" %.1f)"); done
		if awk -v p="$sipppct" -v w="$wall" -v s="$SIPP_STEP" 'BEGIN { exit !(p >= 90 || w > 1.5 * s + 2) }'; then
			verdict="GENERATOR LIMIT (SIPp ${sipppct}% of its core, took ${wall} s for a ${SIPP_STEP} s step)"
		elif [ "$created" -lt $((n * 97 / 100)) ]; then
			verdict="SIPP STOPPED: $created of $n calls created: $(grep -m1 -E '[a-zA-Z]+: ' "$f.out" | cut -c1-160 || true)"
		elif awk -v f="$failpct" 'BEGIN { exit !(f > 0.1) }'; then
			verdict="FAIL: ${failpct}% failed ($failed failed calls)"
		elif awk -v o="${pct[4]}" 'BEGIN { exit !(o > 1) }'; then
			verdict="FAIL: p99 > 100 ms (${pct[4]}% ≥ 100 ms)"
		fi
		printf '   %8s %9s %8s %8s %10s %8s %7s %7s %7s %7s %7s  %s\n' "$rate" "$achieved" "$((n - ok))" "$failpct" "$srvus" "$sipppct" \
			"${pct[0]}" "${pct[1]}" "${pct[2]}" "${pct[3]}" "${pct[4]}" "$verdict"
		[ "$ok" -gt 0 ] && R[$name.$tr.sipp.$rate.cpu]=$srvus
		R[$name.$tr.sipp.$rate.p10]=$(calc "${pct[0]} + ${pct[1]}" %.1f)
		case $verdict in
		pass) best=$rate; fails=0 ;;
		GENERATOR*) R[$name.$tr.sipp.genlimit]=$rate; break ;;
		SIPP*) break ;;
		*) fails=$((fails + 1)) ;;
		esac
		[ "$fails" -ge 2 ] && break
	done
	R[$name.$tr.sipp.max]=$best
}

# storm NAME PID ADDR TR USERFLAGS...: the retransmitting storm.
storm() {
	local name=$1 pid=$2 addr=$3 tr=$4
	shift 4
	local conns=4
	[ "$tr" = tcp ] && conns=50
	echo "== $name $tr: re-registration storm, $STORM_USERS phones at once, retransmitting like phones"
	"${SIPLOAD[@]}" -target "$addr" -transport "$tr" -domain "$DOMAIN" "$@" -storm -storm-window 60s -duration 90s -conns "$conns" \
		-target-pid "$pid" -json | tee "$TMP/$name-$tr-storm.out" || true
	local k
	for k in storm_registered storm_registered_within_window storm_all_registered_s storm_retransmissions storm_503 storm_timer_f generator_cpu_cores generator_udp_drops; do
		R[$name.$tr.$k]=$(jget "$k" "$TMP/$name-$tr-storm.out")
	done
}

# measure NAME PID UDPADDR TCPADDR SIPPCSV USERFLAGS...
measure() {
	local name=$1 pid=$2 udp=$3 tcp=$4 inf=$5
	shift 5
	for tr in $TRANSPORTS; do
		local addr=$udp
		[ "$tr" = tcp ] && addr=$tcp
		echo "== $name $tr: sipload ramp, refresh workload ($addr)"
		"${SIPLOAD[@]}" -target "$addr" -transport "$tr" -domain "$DOMAIN" -contact "$CONTACT" "$@" "${RAMP_FLAGS[@]}" \
			-duration "${RAMP_SECONDS}s" -target-pid "$pid" -json | tee "$TMP/$name-$tr-ramp.out" || true
		R[$name.$tr.max]=$(jget rate "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.end]=$(jget ramp_end "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.endwhy]=$(jget ramp_end_why "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.maxcpu]=$(jget target_cpu_us_per_reg "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.maxgen]=$(jget generator_cpu_cores "$TMP/$name-$tr-ramp.out")
		# half of Kamailio's max, for both registrars
		local half
		half=$(calc "${R[kamailio.$tr.max]:-0} / 2" %d)
		if [ "$half" -lt 1 ]; then
			echo "   Kamailio sustained no rate over $tr: skipping the half-rate run"
		else
			local warm
			warm=$(calc "int($USERS / $half) + 2" %d) # one full round of users first: later REGISTERs are pure refreshes
			echo "== $name $tr: refresh workload at $half/s (half of Kamailio's max) for ${HALF_SECONDS}s after ${warm}s"
			"${SIPLOAD[@]}" -target "$addr" -transport "$tr" -domain "$DOMAIN" -contact "$CONTACT" "$@" -rate "$half" -warmup "${warm}s" \
				-duration "${HALF_SECONDS}s" -timeout 2s -target-pid "$pid" -json | tee "$TMP/$name-$tr-half.out" || true
			R[$name.$tr.half]=$half
			for k in p50_ms p99_ms fail_fraction target_cpu_us_per_reg generator_cpu_cores; do
				R[$name.$tr.half.$k]=$(jget "$k" "$TMP/$name-$tr-half.out")
			done
		fi
		if ! skipped newcontact; then
			echo "== $name $tr: sipload ramp, new-contact workload (every REGISTER a write)"
			"${SIPLOAD[@]}" -target "$addr" -transport "$tr" -domain "$DOMAIN" -contact "$CONTACT" -workload new-contact "$@" "${RAMP_FLAGS[@]}" \
				-duration "${RAMP_SECONDS}s" -target-pid "$pid" -json | tee "$TMP/$name-$tr-nc.out" || true
			R[$name.$tr.nc.max]=$(jget rate "$TMP/$name-$tr-nc.out")
			R[$name.$tr.nc.end]=$(jget ramp_end "$TMP/$name-$tr-nc.out")
		fi
		if ! skipped sipp; then
			sipp_steps "$name" "$pid" "$addr" "$tr" "$inf"
		fi
	done
}

STORM_PAT=(-users "$STORM_USERS" -user-prefix 3 -password-pattern 'pw-%s')

if [ -n "${BENCH_REPORT:-}" ]; then
	# shellcheck disable=SC1090
	source "$BENCH_REPORT"
else

# ---- Kamailio ----
KPORT=$(free_port)
mkdir -p "$TMP/kamailio"
echo "== starting kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: //p' | head -1) on 127.0.0.1:$KPORT ${SRV_CPU[*]}"
"${SRV_CPU[@]}" kamailio -f scripts/kamailio/kamailio.cfg -DD -E -m 1024 -M 32 -Y "$TMP/kamailio" \
	-l "udp:127.0.0.1:$KPORT" -l "tcp:127.0.0.1:$KPORT" >"$TMP/kamailio.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
sleep 1
kill -0 "$KPID" 2>/dev/null || { cat "$TMP/kamailio.log"; echo "kamailio did not start" >&2; exit 1; }
python3 -c "
import sys
print('SEQUENTIAL')
for i in range(int(sys.argv[1])):
    u = '2%0*d' % (max(4, len(str(int(sys.argv[1]) - 1))), i)
    print(f'{u};[authentication username={u} password=pw-{u}];$DOMAIN')" "$USERS" >"$TMP/kamailio-sipp.csv"
measure kamailio "$KPID" "127.0.0.1:$KPORT" "127.0.0.1:$KPORT" "$TMP/kamailio-sipp.csv" -users "$USERS" -user-prefix 2 -password-pattern 'pw-%s'
if ! skipped storm; then
	for tr in $TRANSPORTS; do storm kamailio "$KPID" "127.0.0.1:$KPORT" "$tr" "${STORM_PAT[@]}"; done
fi
stop "$KPID"

# ---- dialtone ----
DDATA="$TMP/data"
TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
# launch_dialtone: starts it (SIP on $SIPADDR, default any free port); sets DPID.
launch_dialtone() {
	: >"$TMP/dialtone.log"
	"${SRV_CPU[@]}" "$BIN/dialtone" --data "$DDATA" --sip-addr "${SIPADDR:-127.0.0.1:0}" --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
		--debug-addr 127.0.0.1:0 --domain "$DOMAIN" --bootstrap-token "$TOKEN" --log-level info >"$TMP/dialtone.log" 2>&1 &
	DPID=$!
	PIDS+=("$DPID")
}
live() { curl -sf "http://$ADMIN/metrics" | awk '$1 == "dialtone_sip_registrations_live" { printf "%d", $2 }'; }
heap() { curl -sf "http://$DEBUG_ADDR/debug/pprof/heap?debug=1&gc=1" | awk '$2 == "HeapAlloc" { print $4 }'; }

echo "== starting dialtone (fresh data directory $DDATA) ${SRV_CPU[*]}"
launch_dialtone
wait_ready
NPROV=$USERS
skipped storm || NPROV=$((USERS > STORM_USERS ? USERS : STORM_USERS))
echo "== creating $NPROV users through the admin API"
SIPLOAD_TOKEN="$TOKEN" "$BIN/sipload" provision -admin "http://$ADMIN" -users "$NPROV" -user-prefix 2 -parallel 64 -out "$TMP/users-all.csv" | tail -1
{ grep -v '^#' "$TMP/users-all.csv" | grep -iv '^user,password' || true; } >"$TMP/users-body.csv"
head -n "$USERS" "$TMP/users-body.csv" >"$TMP/users.csv"
{ echo SEQUENTIAL; awk -F, -v d="$DOMAIN" '{ printf "%s;[authentication username=%s password=%s];%s\n", $1, $1, $2, d }' "$TMP/users.csv"; } >"$TMP/dialtone-sipp.csv"
measure dialtone "$DPID" "$SIP_UDP" "$SIP_TCP" "$TMP/dialtone-sipp.csv" -users-file "$TMP/users.csv"
if ! skipped storm; then
	head -n "$STORM_USERS" "$TMP/users-body.csv" >"$TMP/users-storm.csv"
	HEAP0=$(heap || true)
	LIVE0=$(live || true)
	R[dialtone.live0]=$LIVE0
	for tr in $TRANSPORTS; do
		before=$(live || true)
		storm dialtone "$DPID" "$([ "$tr" = tcp ] && echo "$SIP_TCP" || echo "$SIP_UDP")" "$tr" -users-file "$TMP/users-storm.csv"
		if kill -0 "$DPID" 2>/dev/null; then R[dialtone.$tr.alive]=yes; else R[dialtone.$tr.alive]=no; echo "dialtone died during the $tr storm" >&2; tail -20 "$TMP/dialtone.log"; fi
		after=$(live || true)
		R[dialtone.$tr.livedelta]=$(( ${after:-0} - ${before:-0} ))
		echo "   live bindings $before → $after: +${R[dialtone.$tr.livedelta]}; phones answered 200: ${R[dialtone.$tr.storm_registered]:-0}"
	done
	# sipgo keeps each UDP server transaction for Timer J (64×T1 = 32 s)
	# after its answer: measure the heap at rest, without them.
	echo "== waiting 35 s for the storms' server transactions to end (RFC 3261 Timer J), then the heap after a GC"
	sleep 35
	HEAP1=$(heap || true)
	LIVE1=$(live || true)
	R[dialtone.live1]=$LIVE1
	if [ -n "$HEAP0" ] && [ -n "$HEAP1" ] && [ "${LIVE1:-0}" -gt "${LIVE0:-0}" ]; then
		R[dialtone.heapper]=$(calc "($HEAP1 - $HEAP0) / ($LIVE1 - $LIVE0)" %.0f)
		R[dialtone.heapabs]=$(calc "$HEAP1 / $LIVE1" %.0f)
		echo "== dialtone heap (after GC) $HEAP0 → $HEAP1 bytes over $LIVE0 → $LIVE1 live bindings: ${R[dialtone.heapper]} B per added binding, ${R[dialtone.heapabs]} B per binding in all"
	fi
fi
if ! skipped restart && kill -0 "$DPID" 2>/dev/null; then
	n=$(live || echo 0)
	echo "== dialtone restart with $n live bindings"
	stop "$DPID"
	head -1 "$TMP/users.csv" >"$TMP/one.csv"
	# Same SIP port; one phone retransmitting every 20 ms from the moment
	# dialtone is exec'd: serving = when its REGISTER is answered 200.
	t0=$(date +%s.%N)
	SIPADDR=$SIP_UDP launch_dialtone
	"${SIPLOAD[@]}" -target "$SIP_UDP" -domain "$DOMAIN" -users-file "$TMP/one.csv" -storm -t1 20ms -t2 20ms -retry-wait 20ms \
		-duration 30s -json >"$TMP/restart-reg.out" 2>&1 || true
	t2=$(date +%s.%N)
	wait_ready
	rt=$(sed -n 's/^time=\([^ ]*\) .*/\1/p' <<<"$READY_LINE")
	t1=$(date -d "$rt" +%s.%N 2>/dev/null || echo "")
	n2=$(live || echo 0)
	R[dialtone.restart.bindings]=$n
	[ -n "$t1" ] && R[dialtone.restart.ready]=$(calc "$t1 - $t0" %.3f)
	R[dialtone.restart.serving]=$(calc "$t2 - $t0" %.3f)
	R[dialtone.restart.ok]=$(jget storm_registered "$TMP/restart-reg.out")
	R[dialtone.restart.live]=$n2
	h=$(heap || true)
	[ -n "$h" ] && [ "${n2:-0}" -gt 0 ] && R[dialtone.restart.heapper]=$(calc "$h / $n2" %.0f)
	R[dialtone.restart.heap]=$h
	echo "   'dialtone ready' logged after ${R[dialtone.restart.ready]:-?} s, first REGISTER answered 200 after ${R[dialtone.restart.serving]} s (registered: ${R[dialtone.restart.ok]}); live bindings after restart: $n2"
fi
kill -0 "$DPID" 2>/dev/null && stop "$DPID"
if [ "${QUICK:-}" != 1 ] && ! skipped restart; then
	echo "== store: Benchmark100kBindings"
	$GO test -run '^$' -bench 'Benchmark100kBindings' -benchtime 3x -count=1 ./store/ 2>&1 | tee "$TMP/store-bench.out" | grep -E 'Benchmark|ok' || true
	R[store.open]=$(awk '/Open/ { for (i = 1; i < NF; i++) if ($(i+1) == "ms/open") print $i }' "$TMP/store-bench.out" | head -1)
	R[store.heap]=$(awk '/HeapPerBinding/ { for (i = 1; i < NF; i++) if ($(i+1) == "heap-B/binding") print $i }' "$TMP/store-bench.out" | head -1)
fi

# ---- report ----
{
	declare -p R
	declare -p USERS STORM_USERS TRANSPORTS SIPP_RATES SRV_CPU GEN_CPU
} >"$TMP/results.sh"
fi # BENCH_REPORT
echo "(results: $TMP/results.sh; BENCH_KEEP=1 keeps them, BENCH_REPORT=FILE prints this report again from them)"
v() { local x=${R[$1]:-}; echo "${x:--}"; }
ratio() { awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a != "" && a != "-" && b + 0 > 0) printf "%.2f", a / b; else printf "-" }'; }
num() { awk -v v="${1:-}" -v f="$2" 'BEGIN { if (v == "" || v == "-") printf "-"; else if (v == -1) printf "never"; else printf f, v }'; }
le() { awk -v a="${1:-}" -v b="$2" 'BEGIN { exit !(a != "" && a != "-" && a + 0 <= b + 0) }'; }
ge() { awk -v a="${1:-}" -v b="$2" 'BEGIN { exit !(a != "" && a != "-" && a + 0 >= b + 0) }'; }
met() { if "$@"; then echo MET; else echo "NOT MET"; fi; }

echo
echo "================================================================================================"
echo "dialtone vs Kamailio: full digest REGISTER (REGISTER → 401 → REGISTER → 200, MD5, qop=auth), loopback"
echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)); registrar ${SRV_CPU[*]:-unpinned}, generators ${GEN_CPU[*]:-unpinned}"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $USERS users in the ramps, $STORM_USERS phones in the storms"
echo
printf '%-9s %-3s | %9s %-9s %8s %8s | %6s %8s %8s %8s | %8s | %9s\n' registrar tr "max/s" "ended by" "µs/reg" "gen cpu" "half/s" "p50 ms" "p99 ms" "µs/reg" "nc max/s" "SIPp max"
for name in kamailio dialtone; do
	for tr in $TRANSPORTS; do
		printf '%-9s %-3s | %9s %-9s %8s %8s | %6s %8s %8s %8s | %8s | %9s\n' "$name" "$tr" \
			"$(num "$(v $name.$tr.max)" %.0f)" "$(v $name.$tr.end)" "$(num "$(v $name.$tr.maxcpu)" %.1f)" "$(num "$(v $name.$tr.maxgen)" '%.2f')" \
			"$(v $name.$tr.half)" "$(num "$(v $name.$tr.half.p50_ms)" %.2f)" "$(num "$(v $name.$tr.half.p99_ms)" %.2f)" "$(num "$(v $name.$tr.half.target_cpu_us_per_reg)" %.1f)" \
			"$(num "$(v $name.$tr.nc.max)" %.0f)" "$(v $name.$tr.sipp.max)"
	done
done
echo "(max: sipload refresh ramp, registrar CPU µs/reg there; gen cpu: sipload's cores at max; half: Kamailio's max / 2, refresh;"
echo " nc: new-contact workload ramp; SIPp max: highest passing fixed rate, same-contact/new-Call-ID workload)"
for name in kamailio dialtone; do for tr in $TRANSPORTS; do
	[ "$(v $name.$tr.end)" = generator ] && echo "note: $name $tr ramp ended by the GENERATOR's limit ($(v $name.$tr.endwhy)): its max is a lower bound"
	[ "$(v $name.$tr.end)" = time ] && echo "note: $name $tr ramp ran out of time (BENCH_RAMP_SECONDS) before a step failed: its max is a lower bound"
	[ -n "${R[$name.$tr.sipp.genlimit]:-}" ] && echo "note: SIPp was the limit for $name $tr at ${R[$name.$tr.sipp.genlimit]}/s"
done; done
echo
echo "Goal 1 — max sustained full-digest registrations/s ≥ 1.0× Kamailio (≤ 0.1 % failed, p99 ≤ 100 ms, generator not the limit)"
for tr in $TRANSPORTS; do
	r=$(ratio "$(v dialtone.$tr.max)" "$(v kamailio.$tr.max)")
	rs=$(ratio "$(v dialtone.$tr.sipp.max)" "$(v kamailio.$tr.sipp.max)")
	rn=$(ratio "$(v dialtone.$tr.nc.max)" "$(v kamailio.$tr.nc.max)")
	# A ramp not ended by the registrar (generator limit, time) gives a lower
	# bound only: MET needs Kamailio's max to be real, NOT MET dialtone's.
	verdict=$(met ge "$r" 1.0)
	if ge "$r" 1.0 && [ "$(v kamailio.$tr.end)" != target ]; then
		verdict="INCONCLUSIVE (Kamailio's ramp ended by the $(v kamailio.$tr.end), not by Kamailio)"
	elif ! ge "$r" 1.0 && [ "$(v dialtone.$tr.end)" != target ]; then
		verdict="INCONCLUSIVE (dialtone's ramp ended by the $(v dialtone.$tr.end), not by dialtone)"
	fi
	printf '  %-3s sipload refresh %s vs %s/s = %s×   (new-contact %s×, SIPp fixed steps %s vs %s/s = %s×)   %s\n' "$tr" \
		"$(num "$(v dialtone.$tr.max)" %.0f)" "$(num "$(v kamailio.$tr.max)" %.0f)" "$r" "$rn" "$(v dialtone.$tr.sipp.max)" "$(v kamailio.$tr.sipp.max)" "$rs" "$verdict"
done
echo "Goal 2 — server CPU per registration ≤ 1.0× Kamailio at half of Kamailio's max (refresh)"
for tr in $TRANSPORTS; do
	r=$(ratio "$(v dialtone.$tr.half.target_cpu_us_per_reg)" "$(v kamailio.$tr.half.target_cpu_us_per_reg)")
	h=$(v kamailio.$tr.half)
	sr=-
	# SIPp: the step closest to half of Kamailio's max that both registrars ran
	best=""
	for rate in $SIPP_RATES; do
		[ -n "${R[kamailio.$tr.sipp.$rate.cpu]:-}" ] && [ -n "${R[dialtone.$tr.sipp.$rate.cpu]:-}" ] || continue
		if [ -z "$best" ] || awk -v a="$rate" -v b="$best" -v h="${h/-/0}" 'BEGIN { exit !((a-h)^2 < (b-h)^2) }'; then best=$rate; fi
	done
	[ -n "$best" ] && sr="$(ratio "${R[dialtone.$tr.sipp.$best.cpu]}" "${R[kamailio.$tr.sipp.$best.cpu]}")× at $best/s"
	printf '  %-3s at %s/s: %s vs %s µs/reg = %s×   (SIPp: %s)   %s\n' "$tr" "$h" \
		"$(num "$(v dialtone.$tr.half.target_cpu_us_per_reg)" %.1f)" "$(num "$(v kamailio.$tr.half.target_cpu_us_per_reg)" %.1f)" "$r" "$sr" "$(met le "$r" 1.0)"
done
echo "Goal 3 — p99 ≤ 10 ms at half of Kamailio's max, steady refresh workload"
for tr in $TRANSPORTS; do
	p=$(v dialtone.$tr.half.p99_ms)
	printf '  %-3s at %s/s: dialtone p99 %s ms (p50 %s, failed %s), Kamailio p99 %s ms = %s×   %s\n' "$tr" "$(v kamailio.$tr.half)" \
		"$(num "$p" %.2f)" "$(num "$(v dialtone.$tr.half.p50_ms)" %.2f)" "$(num "$(v dialtone.$tr.half.fail_fraction)" %.4f)" \
		"$(num "$(v kamailio.$tr.half.p99_ms)" %.2f)" "$(ratio "$p" "$(v kamailio.$tr.half.p99_ms)")" "$(met le "$p" 10)"
done
echo "Goal 4 — a $STORM_USERS-phone re-registration storm (Timer E retransmissions, Retry-After honoured): all within 60 s, live bindings = 200s, no crash"
if skipped storm; then echo "  (skipped)"; fi
for tr in $TRANSPORTS; do
	skipped storm && break
	okall() {
		[ "$(v dialtone.$tr.storm_registered_within_window)" = "$STORM_USERS" ] && [ "$(v dialtone.$tr.livedelta)" = "$(v dialtone.$tr.storm_registered)" ] &&
			[ "$(v dialtone.$tr.alive)" = yes ]
	}
	printf '  %-3s dialtone: %s/%s within 60 s, all after %s s, %s retransmissions, %s × 503, %s Timer F; live +%s for %s answered 200; running: %s\n' "$tr" \
		"$(v dialtone.$tr.storm_registered_within_window)" "$STORM_USERS" "$(num "$(v dialtone.$tr.storm_all_registered_s)" %.2f)" "$(v dialtone.$tr.storm_retransmissions)" \
		"$(v dialtone.$tr.storm_503)" "$(v dialtone.$tr.storm_timer_f)" "$(v dialtone.$tr.livedelta)" "$(v dialtone.$tr.storm_registered)" "$(v dialtone.$tr.alive)"
	printf '      Kamailio: %s/%s within 60 s, all after %s s, %s retransmissions, %s × 503; time to all registered dialtone/Kamailio = %s×; generator cpu %s/%s cores, drops %s/%s   %s\n' \
		"$(v kamailio.$tr.storm_registered_within_window)" "$STORM_USERS" "$(num "$(v kamailio.$tr.storm_all_registered_s)" %.2f)" "$(v kamailio.$tr.storm_retransmissions)" \
		"$(v kamailio.$tr.storm_503)" "$(ratio "$(v dialtone.$tr.storm_all_registered_s)" "$(v kamailio.$tr.storm_all_registered_s)")" \
		"$(num "$(v dialtone.$tr.generator_cpu_cores)" %.2f)" "$(num "$(v kamailio.$tr.generator_cpu_cores)" %.2f)" \
		"$(v dialtone.$tr.generator_udp_drops)" "$(v kamailio.$tr.generator_udp_drops)" "$(met okall)"
done
echo "Goal 5 — < 1 KiB heap per binding and a restart serving in < 2 s, at $STORM_USERS+ bindings"
if [ -n "${R[dialtone.heapper]:-}" ]; then
	printf '  heap: %s B per binding added by the storms, at rest (%s B per binding over all %s live; after the restart: %s B of heap / %s live = %s B per binding, everything included)   %s\n' \
		"$(v dialtone.heapper)" "$(v dialtone.heapabs)" "$(v dialtone.live1)" "$(v dialtone.restart.heap)" "$(v dialtone.restart.live)" "$(v dialtone.restart.heapper)" \
		"$(met le "$(v dialtone.heapper)" 1023)"
else
	echo "  heap: not measured (storms skipped)"
fi
if [ -n "${R[dialtone.restart.serving]:-}" ]; then
	rs_ok() { le "$(v dialtone.restart.serving)" 2 && [ "$(v dialtone.restart.ok)" = 1 ]; }
	printf '  restart with %s bindings: ready logged after %s s, first REGISTER answered 200 after %s s (live after: %s)   %s\n' "$(v dialtone.restart.bindings)" \
		"$(v dialtone.restart.ready)" "$(v dialtone.restart.serving)" "$(v dialtone.restart.live)" "$(met rs_ok)"
fi
[ -n "${R[store.open]:-}" ] && printf '  store Benchmark100kBindings: open %s ms, %s heap B/binding\n' "$(v store.open)" "$(v store.heap)"
true
