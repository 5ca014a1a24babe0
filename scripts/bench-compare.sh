#!/usr/bin/env bash
# dialtone vs Kamailio, same machine, same run, same workload (make bench-compare).
#
# Installs Kamailio from Debian's packages when missing, builds dialtone and
# sipload, then for each registrar in turn (Kamailio with
# scripts/kamailio/kamailio.cfg, then dialtone on a fresh data directory) and
# each transport (UDP, TCP):
#   1. ramps sipload to the highest rate sustained with failures ≤ 0.1 % (and
#      p99 ≤ 100 ms, so a registrar that queues without bound does not pass);
#   2. runs at half that rate for BENCH_HALF_SECONDS and takes p99 and the
#      registrar's CPU per registration (all its processes, from /proc);
#   3. a re-registration storm: every user at once, no retries (how many
#      succeed on the first try; the rest should be 503 with Retry-After).
# dialtone is also profiled (pprof, --debug-addr) for 10 s at its max rate.
# Prints a table and the ratios dialtone/Kamailio. Everything it starts is
# stopped on exit. Only loopback addresses are used.
#
# Knobs (environment): BENCH_USERS (default 1000), BENCH_RAMP_SECONDS (max per
# ramp, default 60), BENCH_HALF_SECONDS (default 15), BENCH_TRANSPORTS
# (default "udp tcp"), BENCH_KEEP=1 keeps the temporary directory,
# BENCH_BIN=DIR uses DIR/dialtone and DIR/sipload instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${BENCH_USERS:-1000}
RAMP_SECONDS=${BENCH_RAMP_SECONDS:-60}
HALF_SECONDS=${BENCH_HALF_SECONDS:-15}
TRANSPORTS=${BENCH_TRANSPORTS:-udp tcp}
DOMAIN=bench.test
GO=${GO:-go}
RAMP_FLAGS=(-ramp -ramp-start 1000 -ramp-factor 1.5 -step 3s -refine 3 -max-fail 0.001 -max-p99 100ms -timeout 2s)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-compare.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${BENCH_KEEP:-}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, wait, forget it.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=()
	for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

# jget KEY FILE: a number from the last JSON line sipload printed.
jget() { { grep '^{' "$2" || true; } | tail -1 | sed -n "s/.*\"$1\":\([-0-9.e+]*\).*/\1/p"; }

if ! command -v kamailio >/dev/null 2>&1; then
	echo "== installing kamailio (Debian package)"
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to pick a free port (it comes with kamailio)" >&2; exit 1; }

BIN=${BENCH_BIN:-bin}
if [ -z "${BENCH_BIN:-}" ]; then
	echo "== building dialtone and sipload"
	mkdir -p bin
	$GO build -trimpath -o bin/dialtone ./cmd/dialtone
	$GO build -trimpath -o bin/sipload ./cmd/sipload
fi

# free_port: a port free for both UDP and TCP on 127.0.0.1.
free_port() {
	python3 - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        t.close()
        continue
    print(port)
    break
EOF
}

declare -A R

# measure NAME PID UDPADDR TCPADDR USERFLAGS...: ramp + half-rate run per transport.
measure() {
	local name=$1 pid=$2 udp=$3 tcp=$4
	shift 4
	for tr in $TRANSPORTS; do
		local addr=$udp
		[ "$tr" = tcp ] && addr=$tcp
		echo "== $name $tr: ramp to the highest sustained rate ($addr)"
		"$BIN/sipload" -target "$addr" -transport "$tr" -domain "$DOMAIN" "$@" "${RAMP_FLAGS[@]}" \
			-duration "${RAMP_SECONDS}s" -target-pid "$pid" -json | tee "$TMP/$name-$tr-ramp.out" || true
		local max
		max=$(jget rate "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.max]=${max:-0}
		R[$name.$tr.maxcpu]=$(jget target_cpu_us_per_reg "$TMP/$name-$tr-ramp.out")
		R[$name.$tr.maxgen]=$(jget generator_cpu_us_per_reg "$TMP/$name-$tr-ramp.out")
		local half
		half=$(awk -v m="${max:-0}" 'BEGIN { printf "%d", m / 2 }')
		if [ "$half" -lt 1 ]; then
			echo "   no sustained rate: skipping the half-rate run"
			continue
		fi
		echo "== $name $tr: $half registrations/s for ${HALF_SECONDS}s"
		"$BIN/sipload" -target "$addr" -transport "$tr" -domain "$DOMAIN" "$@" -rate "$half" -warmup 2s \
			-duration "${HALF_SECONDS}s" -timeout 2s -target-pid "$pid" -json | tee "$TMP/$name-$tr-half.out" || true
		R[$name.$tr.half]=$half
		R[$name.$tr.p50]=$(jget p50_ms "$TMP/$name-$tr-half.out")
		R[$name.$tr.p99]=$(jget p99_ms "$TMP/$name-$tr-half.out")
		R[$name.$tr.fail]=$(jget fail_fraction "$TMP/$name-$tr-half.out")
		R[$name.$tr.cpu]=$(jget target_cpu_us_per_reg "$TMP/$name-$tr-half.out")
		R[$name.$tr.gen]=$(jget generator_cpu_us_per_reg "$TMP/$name-$tr-half.out")
		if [ "$name" = dialtone ] && [ -n "${DEBUG_ADDR:-}" ] && command -v "$GO" >/dev/null 2>&1; then
			echo "== $name $tr: CPU profile (pprof, 10 s) at the max rate, ${max%.*}/s"
			PPROF_TMPDIR="$TMP" $GO tool pprof -proto "http://$DEBUG_ADDR/debug/pprof/profile?seconds=10" >"$TMP/dialtone-$tr.pprof" 2>"$TMP/pprof-$tr.log" &
			local pp=$!
			"$BIN/sipload" -target "$addr" -transport "$tr" -domain "$DOMAIN" "$@" -rate "${max%.*}" \
				-duration 12s -timeout 2s -target-pid "$pid" >"$TMP/$name-$tr-prof.out" 2>&1 || true
			wait "$pp" || true
			grep -E 'throughput|latency|target cpu' "$TMP/$name-$tr-prof.out" || true
			$GO tool pprof -top -nodecount=30 "$TMP/dialtone-$tr.pprof" 2>/dev/null | sed 's/^/   /' || true
		fi
		echo "== $name $tr: re-registration storm, all $USERS users at once"
		"$BIN/sipload" -target "$addr" -transport "$tr" -domain "$DOMAIN" "$@" -once -timeout 5s \
			-target-pid "$pid" -json | tee "$TMP/$name-$tr-storm.out" || true
		R[$name.$tr.storm]=$(jget ok "$TMP/$name-$tr-storm.out")
	done
}

# ---- Kamailio ----
KPORT=$(free_port)
mkdir -p "$TMP/kamailio"
echo "== starting kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: //p' | head -1) on 127.0.0.1:$KPORT"
kamailio -f scripts/kamailio/kamailio.cfg -DD -E -m 512 -M 32 -Y "$TMP/kamailio" \
	-l "udp:127.0.0.1:$KPORT" -l "tcp:127.0.0.1:$KPORT" >"$TMP/kamailio.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
sleep 1
kill -0 "$KPID" 2>/dev/null || { cat "$TMP/kamailio.log"; echo "kamailio did not start" >&2; exit 1; }
measure kamailio "$KPID" "127.0.0.1:$KPORT" "127.0.0.1:$KPORT" -users "$USERS" -user-prefix 2 -password-pattern 'pw-%s'
stop "$KPID"

# ---- dialtone ----
echo "== starting dialtone (fresh data directory $TMP/data)"
TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
"$BIN/dialtone" --data "$TMP/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
	--debug-addr 127.0.0.1:0 --domain "$DOMAIN" --bootstrap-token "$TOKEN" --log-level info >"$TMP/dialtone.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
for _ in $(seq 100); do
	grep -q 'dialtone ready' "$TMP/dialtone.log" && break
	kill -0 "$DPID" 2>/dev/null || { cat "$TMP/dialtone.log"; echo "dialtone exited" >&2; exit 1; }
	sleep 0.1
done
READY=$(grep 'dialtone ready' "$TMP/dialtone.log" | head -1)
[ -n "$READY" ] || { cat "$TMP/dialtone.log"; echo "dialtone did not become ready" >&2; exit 1; }
SIP_UDP=$(sed -n 's/.*sip_udp=\([^ ]*\).*/\1/p' <<<"$READY")
SIP_TCP=$(sed -n 's/.*sip_tcp=\([^ ]*\).*/\1/p' <<<"$READY")
ADMIN=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$READY")
DEBUG_ADDR=$(sed -n 's/.*pprof listening.* addr=\([^ ]*\).*/\1/p' "$TMP/dialtone.log" | head -1)
echo "== creating $USERS users through the admin API"
SIPLOAD_TOKEN="$TOKEN" "$BIN/sipload" provision -admin "http://$ADMIN" -users "$USERS" -user-prefix 2 -parallel 16 -out "$TMP/users.csv"
measure dialtone "$DPID" "$SIP_UDP" "$SIP_TCP" -users-file "$TMP/users.csv"
kill -0 "$DPID" 2>/dev/null || { tail -20 "$TMP/dialtone.log"; echo "dialtone died during the run" >&2; exit 1; }
stop "$DPID"

# ---- table ----
ratio() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
num() { awk -v v="${1:-0}" -v f="$2" 'BEGIN { if (v == "") v = 0; printf f, v }'; }
echo
echo "REGISTER with MD5 digest (REGISTER → 401 → REGISTER → 200), $USERS users cycling, loopback,"
echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)) shared by sipload and the registrar."
echo "max = highest ramp step with failures ≤ 0.1 % and p99 ≤ 100 ms; p50/p99/CPU from the run at half of max."
printf '%-10s %-4s %10s %9s %9s %9s %14s %14s %14s %12s\n' registrar tr "max reg/s" "half" "p50 ms" "p99 ms" "CPU µs/reg" "CPU@max µs" "sipload µs/reg" "storm ok"
for name in kamailio dialtone; do
	for tr in $TRANSPORTS; do
		printf '%-10s %-4s %10s %9s %9s %9s %14s %14s %14s %12s\n' "$name" "$tr" \
			"$(num "${R[$name.$tr.max]:-}" %.0f)" "${R[$name.$tr.half]:--}" \
			"$(num "${R[$name.$tr.p50]:-}" %.2f)" "$(num "${R[$name.$tr.p99]:-}" %.2f)" \
			"$(num "${R[$name.$tr.cpu]:-}" %.1f)" "$(num "${R[$name.$tr.maxcpu]:-}" %.1f)" "$(num "${R[$name.$tr.gen]:-}" %.1f)" \
			"$(num "${R[$name.$tr.storm]:-}" %.0f)/$USERS"
	done
done
echo
printf '%-4s %26s %26s %30s\n' tr "max reg/s dialtone/kam" "p99 @half dialtone/kam" "CPU µs/reg @half dialtone/kam"
for tr in $TRANSPORTS; do
	printf '%-4s %26s %26s %30s\n' "$tr" \
		"$(ratio "${R[dialtone.$tr.max]:-}" "${R[kamailio.$tr.max]:-}")" \
		"$(ratio "${R[dialtone.$tr.p99]:-}" "${R[kamailio.$tr.p99]:-}")" \
		"$(ratio "${R[dialtone.$tr.cpu]:-}" "${R[kamailio.$tr.cpu]:-}")"
done
