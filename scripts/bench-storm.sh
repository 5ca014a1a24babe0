#!/usr/bin/env bash
# A re-registration storm (BENCHMARKS.md "storms"): starts dialtone on a fresh
# data directory on loopback, creates USERS users through the admin API, then
# has every one of them send its first REGISTER at the same moment (sipload
# -once: no retransmissions, no retries), over TCP and then over UDP. Prints
# how many registered on the first try, how many got 503 + Retry-After, how
# many got no answer, and checks that the live bindings are exactly the
# REGISTERs answered 200 (nothing acknowledged is lost).
#   usage: scripts/bench-storm.sh [USERS]    (default 5000; 100000 takes ~4 min to provision)
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${1:-5000}
TOKEN=bench-storm-token-0123456789
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/dialtone" ./cmd/dialtone
go build -o "$work/sipload" ./cmd/sipload
"$work/dialtone" --data "$work/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
  --domain storm.test --bootstrap-token "$TOKEN" --log-format json 2>"$work/dialtone.log" &
DPID=$!
pids+=("$DPID")
for _ in $(seq 100); do grep -q 'dialtone ready' "$work/dialtone.log" 2>/dev/null && break; sleep 0.1; done
ready=$(grep 'dialtone ready' "$work/dialtone.log")
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$ready" "$1"; }
SIP=$(field sip_udp)
ADMIN=$(field admin)

echo "== provisioning $USERS users"
SIPLOAD_TOKEN="$TOKEN" "$work/sipload" provision -admin "http://$ADMIN" -users "$USERS" -parallel 64 -out "$work/users.csv" | tail -1
live() { curl -sf -H "Authorization: Bearer $TOKEN" "http://$ADMIN/api/v1/accounts/default/registrations" |
  python3 -c 'import json,sys; print(len(json.load(sys.stdin)["registrations"]))'; }
total_ok=0
for t in tcp udp; do
  echo "== storm over $t: $USERS users at once"
  "$work/sipload" -target "$SIP" -transport "$t" -users-file "$work/users.csv" -domain storm.test -once -timeout 10s \
    -target-pid "$DPID" -json >"$work/$t.out" 2>&1 || true
  grep -v '^{' "$work/$t.out" | grep -E 'storm:|registrations|failure' || true
  ok=$(grep '^{' "$work/$t.out" | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
  total_ok=$((total_ok + ok))
  n=$(live)
  echo "live bindings: $n; REGISTERs answered 200 so far: $total_ok -> $([ "$n" = "$total_ok" ] && echo 'none lost' || echo 'MISMATCH')"
done
echo "dialtone resident memory: $(ps -o rss= -p "$DPID") KiB"
