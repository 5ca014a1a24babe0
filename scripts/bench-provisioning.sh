#!/usr/bin/env bash
# Provisioning speed against DESIGN.md's target: rendering and serving a
# handset config within 2x the time nginx takes to serve the same bytes as a
# static file. Both over HTTPS on loopback with the same certificate, the same
# wrk load (keep-alive connections), one after the other on this machine.
# Installs nginx and wrk from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16}

need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o "$work/dialtone" ./cmd/dialtone
"$work/dialtone" cert --out "$work" --host 127.0.0.1,localhost >/dev/null
TOKEN=bench-provisioning-token-0123456789
"$work/dialtone" --data "$work/data" --sip-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --provisioning-addr 127.0.0.1:0 \
  --domain bench.example.test --bootstrap-token "$TOKEN" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  --log-format json 2>"$work/dialtone.log" &
pids+=($!)
for _ in $(seq 100); do grep -q 'dialtone ready' "$work/dialtone.log" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(grep 'dialtone ready' "$work/dialtone.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["admin"])')
PROV=$(grep 'dialtone ready' "$work/dialtone.log" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["provisioning"])')
api() { curl -sfk -H "Authorization: Bearer $TOKEN" "$@"; }
API="https://$ADMIN/api/v1/accounts/default"
USER=$(api -X POST "$API/users" -d '{"extension":"1002","name":"Ada Lovelace"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
USER2=$(api -X POST "$API/users" -d '{"extension":"1003","name":"Grace Hopper"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api -X POST "$API/devices" -d "{\"mac\":\"805ec0aabbcc\",\"model\":\"T54W\",\"lines\":[{\"line\":1,\"user_id\":\"$USER\"},{\"line\":2,\"user_id\":\"$USER2\"}]}" >/dev/null
eval "$(api "$API/provisioning" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("PURL=%s PUSER=%s PPASS=%s" % (d["url"], d["username"], d["password"]))')"
PATHPART=$(python3 -c "import sys,urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).path)" "$PURL")
UA="Yealink SIP-T54W 96.86.0.100 80:5e:c0:aa:bb:cc"
BASIC=$(printf '%s:%s' "$PUSER" "$PPASS" | base64 -w0)
curl -sfk -H "Authorization: Basic $BASIC" -A "$UA" "https://$PROV${PATHPART}805ec0aabbcc.cfg" -o "$work/805ec0aabbcc.cfg"
SIZE=$(stat -c %s "$work/805ec0aabbcc.cfg")

NPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www"
cp "$work/805ec0aabbcc.cfg" "$work/www/"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  server {
    listen 127.0.0.1:$NPORT ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    root $work/www;
  }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work" &
pids+=($!)
sleep 0.5

bench() { # name url [header...]
  local name=$1 url=$2; shift 2
  local args=()
  for h in "$@"; do args+=(-H "$h"); done
  wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${args[@]}" "$url" >"$work/$name.wrk"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.wrk")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.wrk")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.wrk")
  printf '%-10s %12s req/s   p50 %-9s p99 %s\n' "$name" "$rps" "$p50" "$p99"
  echo "$rps" >"$work/$name.rps"
}

echo "config: $SIZE bytes (T54W, 2 lines); wrk -t1 -c$CONNS -d$DURATION over HTTPS (keep-alive), $(nproc) cores"
bench nginx "https://127.0.0.1:$NPORT/805ec0aabbcc.cfg"
bench dialtone "https://$PROV${PATHPART}805ec0aabbcc.cfg" "Authorization: Basic $BASIC" "User-Agent: $UA"
python3 - "$work/nginx.rps" "$work/dialtone.rps" <<'PY'
import sys
n = float(open(sys.argv[1]).read()); d = float(open(sys.argv[2]).read())
ratio = n / d
print(f"time per config, dialtone/nginx: {ratio:.2f}x  (target: <= 2x) -> {'MET' if ratio <= 2 else 'NOT MET'}")
PY
# Every served config was rendered from the store and recorded on the device:
api "$API/devices/805ec0aabbcc" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("device last_provisioned_at:", d["last_provisioned_at"])'
