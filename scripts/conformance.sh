#!/usr/bin/env bash
# RFC conformance, dialtone and Kamailio side by side (make conformance).
#
# Builds dialtone, sipload and cmd/conformance; starts Kamailio 5.6 with
# scripts/kamailio/kamailio.cfg (the make bench-compare configuration: the
# password of user U is pw-U) and dialtone on a fresh data directory with one
# user created through the admin API; then sends every message of
# sip/testdata/conformance over UDP and TCP, with and without credentials,
# to both and prints one table: message, answer the RFC requires, dialtone's
# answer, Kamailio's answer, and the clause that decides where they differ.
# Exits 1 when dialtone answers any message other than the RFC requires
# (CONFORMANCE_FAIL_ON= to only print). Everything it starts is stopped on
# exit; only loopback addresses are used. CONFORMANCE_KEEP=1 keeps the
# temporary directory (logs).
set -euo pipefail
cd "$(dirname "$0")/.."

DOMAIN=conformance.test
GO=${GO:-go}
FAIL_ON=${CONFORMANCE_FAIL_ON-dialtone}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dialtone-conformance.XXXXXX")
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${CONFORMANCE_KEEP:-}" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v kamailio >/dev/null 2>&1; then
	echo "== installing kamailio (Debian package)"
	SUDO=
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio >/dev/null
fi
command -v python3 >/dev/null 2>&1 || { echo "python3 is needed to pick a free port (it comes with kamailio)" >&2; exit 1; }

echo "== building dialtone, sipload and conformance"
mkdir -p bin
$GO build -trimpath -o bin/dialtone ./cmd/dialtone
$GO build -trimpath -o bin/sipload ./cmd/sipload
$GO build -trimpath -o bin/conformance ./cmd/conformance

# free_port: a port free for both UDP and TCP on 127.0.0.1.
free_port() {
	python3 - <<'PY'
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
PY
}

KPORT=$(free_port)
mkdir -p "$TMP/kamailio"
echo "== starting kamailio $(kamailio -v 2>/dev/null | sed -n 's/^version: //p' | head -1) on 127.0.0.1:$KPORT"
kamailio -f scripts/kamailio/kamailio.cfg -DD -E -m 64 -M 16 -Y "$TMP/kamailio" \
	-l "udp:127.0.0.1:$KPORT" -l "tcp:127.0.0.1:$KPORT" >"$TMP/kamailio.log" 2>&1 &
PIDS+=($!)

echo "== starting dialtone (fresh data directory)"
TOKEN="conf-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
bin/dialtone --data "$TMP/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
	--domain "$DOMAIN" --bootstrap-token "$TOKEN" --log-level info >"$TMP/dialtone.log" 2>&1 &
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
SIPLOAD_TOKEN="$TOKEN" bin/sipload provision -admin "http://$ADMIN" -users 1 -user-prefix 7 -parallel 1 -out "$TMP/users.csv" >/dev/null

echo "== sending sip/testdata/conformance to both (UDP and TCP, with and without credentials)"
echo
status=0
bin/conformance -wait 10s -fail-on "$FAIL_ON" \
	-target "name=dialtone,udp=$SIP_UDP,tcp=$SIP_TCP,users-file=$TMP/users.csv" \
	-target "name=kamailio,addr=127.0.0.1:$KPORT,domain=$DOMAIN,user=3001,password=pw-3001" "$@" || status=$?
for p in "${PIDS[@]}"; do
	kill -0 "$p" 2>/dev/null || { echo "a server died during the run (see $TMP)" >&2; CONFORMANCE_KEEP=1; status=1; }
done
exit $status
