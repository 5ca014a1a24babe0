#!/usr/bin/env bash
# Scale figures of dialtone on etcd (make bench-cluster): REGISTER with digest
# per second of one dialtone node on its bbolt file, and of 1, 2 and 3 nodes
# sharing one 3-member etcd cluster, every process on this machine; and the
# etcd writes per REGISTER in steady state. About 10 min at the defaults.
#
# Needs Debian's etcd-server (/usr/bin/etcd; `apt-get install etcd-server`).
# The three etcd members run with their defaults (fsync on) in a temporary
# directory. Every dialtone node, every etcd member and every generator share
# the machine's CPUs, so the figures are ratios to the single bbolt node in
# the same run, not what separate machines would do.
#
# For each setup the total offered rate goes up through BENCH_RATES; with N
# nodes it is split evenly over N sipload processes, each sending to one node
# the REGISTERs of its own share of the users (the same share every step, as
# phones keep their node). A step passes when every generator has ≤ 0.1 %
# failed, p99 ≤ 100 ms and ≥ 97 % of its offered rate achieved; the setup's
# figure is its best passing step. Each step starts with a warm-up of one
# round of its users (each user's first REGISTER from a new generator socket
# is a change of source: a write); the steady part that follows is pure
# refreshes (same contact, Call-ID and source, CSeq up), as phones send.
#
# A last ramp on the most nodes sends every REGISTER with a new Call-ID (a
# change: one etcd write each): the cluster's write capacity, which bounds
# how fast an outage storm of phones with new sources is absorbed.
#
# etcd writes per REGISTER: the cluster's revision (one per write
# transaction) is sampled every 0.5 s during each step; the figure is its
# growth over the steady part divided by the registrations answered in it.
#
# Knobs (environment): BENCH_USERS (default 2000), BENCH_RATES (default
# "100 250 500 1000 1500 2000 3000 4000 6000"), BENCH_STEP (seconds of steady part,
# default 6), BENCH_TRANSPORT (udp or tcp, default udp), BENCH_NODES (default
# "1 2 3"), BENCH_KEEP=1 keeps the temporary directory, BENCH_BIN=DIR uses
# DIR/dialtone and DIR/sipload instead of building them.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${BENCH_USERS:-2000}
RATES=${BENCH_RATES:-"100 250 500 1000 1500 2000 3000 4000 6000"}
STEP=${BENCH_STEP:-6}
TRANSPORT=${BENCH_TRANSPORT:-udp}
NODES=${BENCH_NODES:-"1 2 3"}
DOMAIN=bench.test
GO=${GO:-go}
ETCD=${ETCD:-/usr/bin/etcd}

command -v "$ETCD" >/dev/null || { echo "bench-cluster: needs etcd ($ETCD): apt-get install etcd-server" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-cluster.XXXXXX")
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
TOKEN="bench-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"

# start_node NAME DATA [dialtone flags…]: starts a node, waits until it is
# ready; sets NODE_PID[NAME], NODE_SIP[NAME], NODE_ADMIN[NAME].
declare -A NODE_PID NODE_SIP NODE_ADMIN
start_node() {
	local name=$1 data=$2
	shift 2
	local port
	port=$(free_port)
	if [ -n "${STORE:-}" ]; then
		set -- "$@" --store "$STORE" --node-id "$name" --sip-advertise "127.0.0.1:$port"
	fi
	"$BIN/dialtone" --data "$data" --sip-addr "127.0.0.1:$port" --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
		--domain "$DOMAIN" --bootstrap-token "$TOKEN" --log-level info "$@" >"$TMP/$name.log" 2>&1 &
	DPID=$!
	PIDS+=("$DPID")
	local i
	for i in $(seq 3000); do
		grep -q 'dialtone ready' "$TMP/$name.log" && break
		kill -0 "$DPID" 2>/dev/null || { cat "$TMP/$name.log"; echo "node $name exited" >&2; exit 1; }
		sleep 0.01
	done
	cp "$TMP/$name.log" "$TMP/dialtone.log"
	wait_ready
	NODE_PID[$name]=$DPID
	NODE_SIP[$name]=$SIP_UDP
	[ "$TRANSPORT" = tcp ] && NODE_SIP[$name]=$SIP_TCP
	NODE_ADMIN[$name]=$ADMIN
}

stop_node() { kill "${NODE_PID[$1]}" 2>/dev/null || true; wait "${NODE_PID[$1]}" 2>/dev/null || true; }

# etcd_rev: the cluster's current revision.
ETCD_CLIENT=""
etcd_rev() {
	curl -s -m 2 -X POST "$ETCD_CLIENT/v3/kv/range" -d '{"key":"AA=="}' | sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p'
}

# run_step N RATE: every generator at RATE/N against its node (with the
# extra sipload flags in STEP_FLAGS); prints
# "pass achieved p99max writes_per_reg dialtone_cpu_us etcd_cpu_us" (CPU per
# registration: the nodes' mean, and the three etcd members' together).
run_step() {
	local n=$1 rate=$2 i per warm
	per=$(awk -v r="$rate" -v n="$n" 'BEGIN{printf "%.1f", r/n}')
	warm=$(awk -v u="$USERS" -v r="$rate" 'BEGIN{w=u/r+1; if (w<2) w=2; printf "%d", w+0.999}')
	local gens=()
	for i in $(seq 1 "$n"); do
		local node=n$i
		"$BIN/sipload" -target "${NODE_SIP[$node]}" -transport "$TRANSPORT" -users-file "$TMP/users.$n.$i.csv" -domain "$DOMAIN" \
			-rate "$per" -warmup "${warm}s" -duration "${STEP}s" -target-pid "${NODE_PID[$node]}" ${STEP_FLAGS:-} -json >"$TMP/step.$i.out" 2>&1 &
		gens+=($!)
	done
	local samples="$TMP/revs"
	: >"$samples"
	if [ -n "$ETCD_CLIENT" ]; then
		(while :; do echo "$(date +%s.%N) $(etcd_rev)"; sleep 0.5; done) >>"$samples" 2>/dev/null &
		local poller=$!
	fi
	local start e0=0 e1=0
	start=$(date +%s.%N)
	if [ -n "$ETCD_CLIENT" ]; then
		sleep "$warm"
		e0=$(cpu_ticks "${ETCD_PIDS[@]}")
	fi
	for p in "${gens[@]}"; do wait "$p" || true; done
	[ -n "$ETCD_CLIENT" ] && e1=$(cpu_ticks "${ETCD_PIDS[@]}")
	[ -n "$ETCD_CLIENT" ] && { kill "$poller" 2>/dev/null || true; wait "$poller" 2>/dev/null || true; }
	local pass=1 achieved=0 p99max=0 ok=0 cpu=0
	for i in $(seq 1 "$n"); do
		local f="$TMP/step.$i.out" r fail p99
		r=$(jget rate "$f")
		fail=$(jget fail_fraction "$f")
		p99=$(jget p99_ms "$f")
		if [ -z "$r" ]; then pass=0; r=0; fail=1; p99=0; fi
		achieved=$(awk -v a="$achieved" -v r="$r" 'BEGIN{print a+r}')
		cpu=$(awk -v a="$cpu" -v c="$(jget target_cpu_us_per_reg "$f")" -v n="$n" 'BEGIN{print a+c/n}')
		p99max=$(awk -v a="$p99max" -v p="$p99" 'BEGIN{print (p>a)?p:a}')
		awk -v f="$fail" -v p="$p99" -v r="$r" -v o="$per" 'BEGIN{exit !(f<=0.001 && p<=100 && r>=0.97*o)}' || pass=0
	done
	local wpr=-
	if [ -n "$ETCD_CLIENT" ]; then
		# Revision growth over the steady part (after the warm-up, 1 s
		# margin at both ends) per registration answered in it.
		wpr=$(awk -v s="$start" -v w="$warm" -v d="$STEP" -v rate="$achieved" '
			$2 != "" { t=$1-s; if (t>=w+1 && a=="") {a=$2; ta=t} if (t<=w+d-1) {b=$2; tb=t} }
			END { if (a=="" || b=="" || tb<=ta || rate<=0) print "-"; else printf "%.3f", (b-a)/(rate*(tb-ta)) }' "$samples")
	fi
	local ecpu=-
	if [ -n "$ETCD_CLIENT" ]; then
		ecpu=$(awk -v d="$((e1 - e0))" -v hz="$(getconf CLK_TCK)" -v r="$achieved" -v s="$STEP" 'BEGIN{ if (r>0) printf "%.0f", d/hz*1e6/(r*s); else print "-" }')
	fi
	echo "$pass $achieved $p99max $wpr $cpu $ecpu"
}

# cpu_ticks PID…: utime+stime of the processes, in clock ticks.
cpu_ticks() {
	local p t=0
	for p in "$@"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}

# ramp SETUP N: the best passing step of N nodes; appends a result row.
RESULTS=()
ramp() {
	local setup=$1 n=$2 best=0 bestp99=- bestw=- bestcpu=- bestecpu=- rate
	for i in $(seq 1 "$n"); do
		awk -v n="$n" -v i="$i" 'NR == 1 || (NR - 1) % n == i % n' "$TMP/users.csv" >"$TMP/users.$n.$i.csv"
	done
	for rate in $RATES; do
		read -r pass achieved p99 wpr cpu ecpu < <(run_step "$n" "$rate")
		printf '   %-20s offered %6s/s: achieved %8.0f/s p99 %7.2f ms, dialtone %5.0f µs/reg, etcd %s µs/reg, etcd writes/REGISTER %s  %s\n' \
			"$setup" "$rate" "$achieved" "$p99" "$cpu" "$ecpu" "$wpr" "$([ "$pass" = 1 ] && echo pass || echo FAIL)"
		[ "$pass" = 1 ] || break
		best=$achieved bestp99=$p99 bestw=$wpr bestcpu=$cpu bestecpu=$ecpu
	done
	RESULTS+=("$setup|$n|$best|$bestp99|$bestw|${bestcpu:--}|${bestecpu:--}")
}

echo "== one node on bbolt"
start_node n1 "$TMP/bbolt"
SIPLOAD_TOKEN="$TOKEN" "$BIN/sipload" provision -admin "http://${NODE_ADMIN[n1]}" -users "$USERS" -parallel 16 -out "$TMP/users.csv" >/dev/null
ramp bbolt 1
stop_node n1

echo "== a 3-member etcd cluster"
CLUSTER=""
EPS=()
ETCD_PIDS=()
for m in 1 2 3; do
	cp=$(free_port)
	pp=$(free_port)
	EPS+=("127.0.0.1:$cp")
	CLIENT[$m]=$cp
	PEER[$m]=$pp
	CLUSTER+="${CLUSTER:+,}e$m=http://127.0.0.1:$pp"
done
for m in 1 2 3; do
	"$ETCD" --name "e$m" --data-dir "$TMP/etcd$m" \
		--listen-client-urls "http://127.0.0.1:${CLIENT[$m]}" --advertise-client-urls "http://127.0.0.1:${CLIENT[$m]}" \
		--listen-peer-urls "http://127.0.0.1:${PEER[$m]}" --initial-advertise-peer-urls "http://127.0.0.1:${PEER[$m]}" \
		--initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token dialtone-bench \
		--log-level error >"$TMP/etcd$m.log" 2>&1 &
	PIDS+=($!)
	ETCD_PIDS+=($!)
done
ETCD_CLIENT="http://${EPS[0]}"
for i in $(seq 300); do [ -n "$(etcd_rev)" ] && break; sleep 0.1; done
[ -n "$(etcd_rev)" ] || { cat "$TMP/etcd1.log"; echo "etcd did not start" >&2; exit 1; }
STORE="etcd://$(IFS=,; echo "${EPS[*]}")"

echo "== dialtone nodes on $STORE (every node's --data holds the same secret.key)"
start_node n1 "$TMP/node1"
for i in 2 3; do
	mkdir -p "$TMP/node$i"
	cp "$TMP/node1/secret.key" "$TMP/node$i/"
	start_node "n$i" "$TMP/node$i"
done
SIPLOAD_TOKEN="$TOKEN" "$BIN/sipload" provision -admin "http://${NODE_ADMIN[n1]}" -users "$USERS" -parallel 16 -out "$TMP/users.csv" >/dev/null
for n in $NODES; do
	ramp "etcd, $n node$([ "$n" = 1 ] || echo s)" "$n"
done
# Every REGISTER a change (a new Call-ID each time: an etcd write each), on
# the most nodes: the cluster's write capacity, which bounds an outage storm.
n=${NODES##* }
STEP_FLAGS=-fresh-callid ramp "etcd, $n, all writes" "$n"
for n in n1 n2 n3; do kill -0 "${NODE_PID[$n]}" 2>/dev/null || { tail -20 "$TMP/$n.log"; echo "node $n died during the run" >&2; exit 1; }; done

echo
echo "dialtone REGISTER with digest over $TRANSPORT, $USERS users, every process on this machine ($(nproc) CPUs shared)"
printf '%-20s %6s %10s %9s %7s %22s %18s %20s\n' setup nodes "max reg/s" "p99 ms" "ratio" "dialtone CPU µs/reg" "etcd CPU µs/reg" "etcd writes/REGISTER"
base=""
for row in "${RESULTS[@]}"; do
	IFS='|' read -r setup n best p99 w cpu ecpu <<<"$row"
	[ -z "$base" ] && base=$best
	printf '%-20s %6s %10.0f %9s %7s %22s %18s %20s\n' "$setup" "$n" "$best" "$p99" "$(awk -v a="$best" -v b="$base" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-"}')" "$cpu" "$ecpu" "$w"
done
