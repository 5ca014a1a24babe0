#!/usr/bin/env bash
# A re-registration storm (BENCHMARKS.md "storms"): starts dialtone on a fresh
# data directory on loopback, creates USERS users through the admin API, then
# has every one of them register at the same moment, retransmitting like a
# phone (sipload -storm: RFC 3261 Timer E over UDP, Timer F, Retry-After
# honoured on 503), over TCP and then over UDP. Prints when every phone was
# registered, how many within 60 s, retransmissions and 503s, and checks
# that the live bindings grew by exactly the phones answered 200 (nothing
# acknowledged is lost) and that dialtone is still running.
#   usage: scripts/bench-storm.sh [USERS]    (default 5000; 100000 takes ~4 min to provision)
# PROFILE_DIR=DIR also serves pprof (--debug-addr) and saves into DIR: heap and
# goroutine profiles, runtime memory classes and /proc status (RSS, mapped
# dialtone.db) after provisioning, 10/20/30/45 s into each storm, at its end
# and after settling; a 30 s CPU profile of each storm; rss.log twice a second.
# SETTLE=SECONDS changes the wait before the last memory figure (default 60).
# make bench-compare runs the same storm against Kamailio and dialtone.
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-5000}
TOKEN=bench-storm-token-0123456789
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/dialtone" ./cmd/dialtone
go build -o "$work/sipload" ./cmd/sipload
"$work/dialtone" --data "$work/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
  --domain storm.test --bootstrap-token "$TOKEN" --log-format json ${PROFILE_DIR:+--debug-addr 127.0.0.1:0} 2>"$work/dialtone.log" &
DPID=$!
pids+=("$DPID")
for _ in $(seq 100); do grep -q 'dialtone ready' "$work/dialtone.log" 2>/dev/null && break; sleep 0.1; done
ready=$(grep 'dialtone ready' "$work/dialtone.log")
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$ready" "$1"; }
SIP=$(field sip_udp)
ADMIN=$(field admin)
# PROFILE_DIR=DIR: serve pprof (--debug-addr) and save heap profiles and the
# Go runtime's memory classes into DIR during and after each storm.
DEBUG=""
if [ -n "${PROFILE_DIR:-}" ]; then
  mkdir -p "$PROFILE_DIR"
  DEBUG=$(grep 'pprof listening' "$work/dialtone.log" | python3 -c 'import json,sys; print(json.load(sys.stdin)["addr"])')
fi
snap() { # snap NAME: heap profile, runtime memory classes, /proc status
  [ -n "$DEBUG" ] || return 0
  curl -sf "http://$DEBUG/debug/pprof/heap" -o "$PROFILE_DIR/$1.heap" || true
  curl -sf "http://$DEBUG/debug/memory" -o "$PROFILE_DIR/$1.mem" || true
  curl -sf "http://$DEBUG/debug/pprof/goroutine" -o "$PROFILE_DIR/$1.goroutine" || true
  { grep -E '^(VmHWM|VmRSS|RssAnon|RssFile|Threads)' "/proc/$DPID/status"
    awk '{ print "minflt", $10, "utime+stime", $14 + $15 }' "/proc/$DPID/stat"
    ls -l "$work/data/dialtone.db" | awk '{ print "dialtone.db", $5 }'
    awk '/^[0-9a-f]+-[0-9a-f]+ / { f = $6 } /^Rss:/ { r[f] += $2 } END { for (f in r) if (r[f] > 1024) print "Rss", f, r[f], "kB" }' "/proc/$DPID/smaps"
  } >"$PROFILE_DIR/$1.status" 2>/dev/null || true
}

echo "== provisioning $USERS users"
SIPLOAD_TOKEN="$TOKEN" "$work/sipload" provision -admin "http://$ADMIN" -users "$USERS" -parallel 64 -out "$work/users.csv" | tail -1
snap provisioned
if [ -n "$DEBUG" ]; then # RSS and the runtime's memory twice a second, to catch the peak
  ( while kill -0 "$DPID" 2>/dev/null; do
      printf '%s %s %s\n' "$(date +%s.%N | cut -c1-14)" "$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$DPID/status" 2>/dev/null)" \
        "$(curl -sf "http://$DEBUG/debug/memory" | awk '$1 ~ /heap\/(objects|free|released|stacks):bytes|gc\/heap\/live/ { printf "%s=%d ", $1, $2 / 1048576 }')"
      sleep 0.5
    done ) >"$PROFILE_DIR/rss.log" 2>/dev/null &
  pids+=($!)
fi
live() { curl -sf "http://$ADMIN/metrics" | awk '$1 == "dialtone_sip_registrations_live" { printf "%d", $2 }'; }
for t in tcp udp; do
  conns=4
  [ "$t" = tcp ] && conns=50
  echo "== storm over $t: $USERS phones at once, retransmitting like phones"
  before=$(live)
  "$work/sipload" -target "$SIP" -transport "$t" -users-file "$work/users.csv" -domain storm.test -storm -storm-window 60s \
    -duration 90s -conns "$conns" -target-pid "$DPID" -json >"$work/$t.out" 2>&1 &
  spid=$!
  if [ -n "$DEBUG" ]; then
    curl -sf "http://$DEBUG/debug/pprof/profile?seconds=30" -o "$PROFILE_DIR/$t.cpu" &
    for s in 10 20 30 45; do sleep $((s - ${prev:-0})); prev=$s; kill -0 $spid 2>/dev/null && snap "$t-${s}s"; done; prev=0
  fi
  wait $spid || true
  snap "$t-end"
  grep -v '^{' "$work/$t.out" || true
  ok=$(grep '^{' "$work/$t.out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["storm_registered"])')
  after=$(live)
  alive=$(kill -0 "$DPID" 2>/dev/null && echo running || echo DIED)
  echo "live bindings $before -> $after (+$((after - before))); phones answered 200: $ok -> $([ $((after - before)) = "$ok" ] && echo 'none lost' || echo 'MISMATCH'); dialtone $alive"
done
grep -E '^(RssAnon|RssFile)' "/proc/$DPID/status" | tr '\n' ' '; echo
mem() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$DPID/status"; }
echo "dialtone memory: peak RSS (VmHWM) $(mem VmHWM) KiB, RSS now $(mem VmRSS) KiB"
# Memory returned after the storm: finished UDP transactions linger 32 s in
# sipgo (INVITEs and everything not on the REGISTER fast path); wait past it.
sleep "${SETTLE:-60}"
echo "dialtone memory ${SETTLE:-60} s after the storms: RSS $(mem VmRSS) KiB"
snap settled
