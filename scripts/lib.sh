# shellcheck shell=bash
# What the bench and conformance scripts share; source it after setting TMP
# (the scripts' temporary directory, holding dialtone.log) and DPID.

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

# jget KEY FILE: a value (number or string) from the last JSON line sipload printed.
jget() { { grep '^{' "$2" || true; } | tail -1 | sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }

# wait_ready: waits for "dialtone ready" in $TMP/dialtone.log (text log
# format) while $DPID runs; sets READY_LINE, SIP_UDP, SIP_TCP, ADMIN and
# DEBUG_ADDR (empty without --debug-addr).
wait_ready() {
	local i
	for i in $(seq 1000); do
		grep -q 'dialtone ready' "$TMP/dialtone.log" && break
		kill -0 "$DPID" 2>/dev/null || { cat "$TMP/dialtone.log"; echo "dialtone exited" >&2; exit 1; }
		sleep 0.01
	done
	READY_LINE=$(grep 'dialtone ready' "$TMP/dialtone.log" | head -1)
	[ -n "$READY_LINE" ] || { cat "$TMP/dialtone.log"; echo "dialtone did not become ready" >&2; exit 1; }
	SIP_UDP=$(sed -n 's/.*sip_udp=\([^ ]*\).*/\1/p' <<<"$READY_LINE")
	SIP_TCP=$(sed -n 's/.*sip_tcp=\([^ ]*\).*/\1/p' <<<"$READY_LINE")
	ADMIN=$(sed -n 's/.* admin=\([^ ]*\).*/\1/p' <<<"$READY_LINE")
	DEBUG_ADDR=$(sed -n 's/.*pprof listening.* addr=\([^ ]*\).*/\1/p' "$TMP/dialtone.log" | head -1)
}
