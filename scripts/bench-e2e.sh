#!/usr/bin/env bash
# End-to-end REGISTER benchmark of dialtone alone (run by `make bench`, ≤ 60 s):
# builds dialtone and sipload, starts dialtone on a fresh data directory on
# loopback, creates users through the admin API, then ramps sipload over UDP
# and TCP to the highest rate dialtone sustains (failures ≤ 0.1 %, p99 ≤
# 100 ms) and prints a short table. Everything it starts is stopped on exit.
#
# Knobs (environment): BENCH_USERS (default 300), BENCH_RAMP_SECONDS per
# transport (default 20), BENCH_KEEP=1 keeps the temporary directory,
# BENCH_BIN=DIR uses DIR/dialtone and DIR/sipload instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${BENCH_USERS:-300}
RAMP_SECONDS=${BENCH_RAMP_SECONDS:-20}
DOMAIN=bench.test
GO=${GO:-go}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-bench.XXXXXX")
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

BIN=${BENCH_BIN:-bin}
if [ -z "${BENCH_BIN:-}" ]; then
	echo "== building dialtone and sipload"
	mkdir -p bin
	$GO build -trimpath -o bin/dialtone ./cmd/dialtone
	$GO build -trimpath -o "$BIN/sipload" ./cmd/sipload
fi

# jget KEY FILE: a number from the last JSON line sipload printed.

echo "== starting dialtone (data in $TMP/data)"
TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
"$BIN/dialtone" --data "$TMP/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
	--domain "$DOMAIN" --bootstrap-token "$TOKEN" --log-level info >"$TMP/dialtone.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
wait_ready

echo "== creating $USERS users through the admin API"
SIPLOAD_TOKEN="$TOKEN" "$BIN/sipload" provision -admin "http://$ADMIN" -users "$USERS" -parallel 16 -out "$TMP/users.csv"

declare -A R
for tr in udp tcp; do
	addr=$SIP_UDP
	[ "$tr" = tcp ] && addr=$SIP_TCP
	echo "== $tr: ramp against dialtone at $addr"
	"$BIN/sipload" -target "$addr" -transport "$tr" -users-file "$TMP/users.csv" -domain "$DOMAIN" \
		-ramp -ramp-start 500 -ramp-factor 1.5 -step 2s -refine 2 -max-p99 100ms -duration "${RAMP_SECONDS}s" \
		-target-pid "$DPID" -json | tee "$TMP/$tr.out" || echo "($tr ramp found no sustained rate)"
	R[$tr.rate]=$(jget rate "$TMP/$tr.out")
	R[$tr.p50]=$(jget p50_ms "$TMP/$tr.out")
	R[$tr.p99]=$(jget p99_ms "$TMP/$tr.out")
	R[$tr.cpu]=$(jget target_cpu_us_per_reg "$TMP/$tr.out")
	R[$tr.gen]=$(jget generator_cpu_us_per_reg "$TMP/$tr.out")
done
kill -0 "$DPID" 2>/dev/null || { tail -20 "$TMP/dialtone.log"; echo "dialtone died during the run" >&2; exit 1; }

echo
echo "dialtone end-to-end REGISTER with digest ($USERS users, loopback, $(nproc) CPUs shared with sipload)"
printf '%-9s %16s %14s %14s %22s %20s\n' transport "max reg/s" "p50 ms @max" "p99 ms @max" "dialtone CPU µs/reg" "sipload CPU µs/reg"
for tr in udp tcp; do
	printf '%-9s %16.0f %14.2f %14.2f %22.1f %20.1f\n' "$tr" "${R[$tr.rate]:-0}" "${R[$tr.p50]:-0}" "${R[$tr.p99]:-0}" "${R[$tr.cpu]:-0}" "${R[$tr.gen]:-0}"
done
