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
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

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
wait_ready
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
