#!/usr/bin/env bash
# compare.sh's job with an HTTPS upstream, the case every NAV, KS and Altinn call is: nginx, HAProxy
# and portvakt in turns accept plain HTTP on loopback, add "Authorization: Bearer <token>", and
# forward over keep-alive TLS (verified against a CA made for the run) to one nginx upstream.
#
# Usage (from the project's root, after `cargo build --release`; bench/run.sh tls does both):
#   bench/tls.sh [--rounds N] [--seconds S] [--connections C] [--http2 [--portvakt-http1] [--haproxy-h2]]
#                [--delay MS]
# --http2 makes the upstream offer HTTP/2 by ALPN: portvakt then speaks HTTP/2 to it (its pooled
# client), nginx and HAProxy HTTP/1.1. Without it the upstream offers HTTP/1.1 only.
# --portvakt-http1 sets the route's `upstream_http2: false`, so portvakt speaks HTTP/1.1 as well.
# --haproxy-h2 puts `alpn h2` on HAProxy's server line, so HAProxy speaks HTTP/2 to the upstream too.
# --delay MS puts a relay that delays every chunk by MS milliseconds each way (bench/delay_relay.py)
# between each proxy and the upstream, a stand-in for netem, which this kernel lacks; the
# connections each proxy opened to the upstream are then printed too.
# Prints a table per round and, last, one line:
#   RESULT rps_ratio_vs_nginx=X p99_ratio_vs_nginx=Y rps_ratio_vs_haproxy=Z rss_mb=M
set -euo pipefail
rounds=3 seconds=5 conns=64 h2="" pv_h2="" hap_alpn="" delay=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --connections) conns=$2; shift 2 ;;
    --http2) h2=" http2"; shift ;;
    --portvakt-http1) pv_h2="    upstream_http2: false"; shift ;;
    --haproxy-h2) hap_alpn=" alpn h2"; shift ;;
    --delay) delay=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
need=()
for t in nginx haproxy wrk openssl; do command -v $t >/dev/null || need+=($t); done
if ((${#need[@]})); then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
fi
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

UP=19281 NGX=19282 HAP=19283 PV=19284 PVA=19285 TOK=19286
# Where each proxy sends its upstream calls: the upstream itself, or its own delaying relay.
UP_NGX=$UP UP_HAP=$UP UP_PV=$UP
[[ -n $delay ]] && UP_NGX=19291 UP_HAP=19292 UP_PV=19293
TOKEN=eyJhbGciOiJSUzI1NiJ9.eyJzY29wZSI6ImJlbmNoIn0.c2lnbmF0dXJl

# A CA and the upstream's certificate for 127.0.0.1, made for this run.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 \
  -subj "/CN=portvakt bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$dir/up.key" -out "$dir/up.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/up.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -out "$dir/up.pem" -days 2 -extfile "$dir/ext.cnf" 2>/dev/null

cat >"$dir/upstream.conf" <<EOF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP ssl$h2; ssl_certificate $dir/up.pem; ssl_certificate_key $dir/up.key;
    location / { default_type application/json; return 200 '{"auth":"\$http_authorization"}'; } } }
EOF
cat >"$dir/nginx.conf" <<EOF
worker_processes auto; daemon off; pid $dir/ngx.pid; error_log $dir/ngx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_NGX; keepalive 128; }
  server { listen 127.0.0.1:$NGX;
    location /bench/ { proxy_pass https://backend/; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_verify on; proxy_ssl_trusted_certificate $dir/ca.pem; proxy_ssl_name 127.0.0.1;
      proxy_ssl_session_reuse on; proxy_set_header Authorization "Bearer $TOKEN"; } } }
EOF
cat >"$dir/haproxy.cfg" <<EOF
global
  maxconn 8192
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:$HAP
  http-request set-header Authorization "Bearer $TOKEN"
  http-request replace-path /bench/(.*) /\1
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:$UP_HAP ssl verify required ca-file $dir/ca.pem$hap_alpn
EOF
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
cat >"$dir/portvakt.yaml" <<EOF
listen: 127.0.0.1:$PV
admin_listen: 127.0.0.1:$PVA
maskinporten:
  environment: custom
  issuer: http://127.0.0.1:$TOK/
  token_endpoint: http://127.0.0.1:$TOK/token
clients:
  bench:
    client_id: bench-client
    key:
      pem: $dir/key.pem
      kid: bench-kid
routes:
  - name: bench
    prefix: /bench/
    upstream: https://127.0.0.1:$UP_PV/
    ca_file: $dir/ca.pem
$pv_h2
    client: bench
    scopes: [bench:scope]
EOF

python3 "$here/../../shared/bench/token_stub.py" $TOK >/dev/null 2>&1 & pids+=($!)
nginx -c "$dir/upstream.conf" & pids+=($!)
if [[ -n $delay ]]; then
  for relay in $UP_NGX $UP_HAP $UP_PV; do
    python3 "$here/delay_relay.py" $relay $UP "$delay" "$dir/opened.$relay" & pids+=($!)
  done
fi
nginx -c "$dir/nginx.conf" & pids+=($!)
haproxy -q -f "$dir/haproxy.cfg" & pids+=($!)
target/release/portvakt run --config "$dir/portvakt.yaml" >"$dir/portvakt.log" 2>&1 & pv=$!; pids+=($pv)

for port in $UP $NGX $HAP $PV $TOK ${delay:+$UP_NGX $UP_HAP $UP_PV}; do
  for _ in $(seq 50); do (: >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
for port in $NGX $HAP $PV; do
  got=$(curl -s --max-time 5 "http://127.0.0.1:$port/bench/check" || true)
  if [[ $got != *"Bearer $TOKEN"* ]]; then
    echo "the proxy on port $port did not inject the token; it answered: ${got:0:300}" >&2
    [[ $port == "$PV" ]] && tail -20 "$dir/portvakt.log" >&2
    exit 1
  fi
done

measure() { # port -> "rps p50_ms p99_ms errors"
  wrk -t1 -c"$conns" -d"${seconds}s" --latency "http://127.0.0.1:$1/bench/x" | awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
    /Non-2xx|Socket errors/ {err=err $0}
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    END {printf "%.0f %.3f %.3f %s\n", rps, ms(p50), ms(p99), (err==""?"-":"errors")}'
}
echo "upstream: HTTPS, offering ${h2:+HTTP/2 and }HTTP/1.1${pv_h2:+; the portvakt route sets upstream_http2: false}${hap_alpn:+; HAProxy speaks HTTP/2 to it}${delay:+; ${delay} ms each way}"
printf '%-6s %-10s %10s %9s %9s %s\n' round proxy rps p50_ms p99_ms errors
declare -a r_ngx r_pv r_hap p_ngx p_pv
for r in $(seq "$rounds"); do
  read -r a b c e <<<"$(measure $NGX)"; printf '%-6s %-10s %10s %9s %9s %s\n' $r nginx $a $b $c $e; r_ngx+=($a); p_ngx+=($c)
  read -r a b c e <<<"$(measure $PV)";  printf '%-6s %-10s %10s %9s %9s %s\n' $r portvakt $a $b $c $e; r_pv+=($a); p_pv+=($c)
  read -r a b c e <<<"$(measure $HAP)"; printf '%-6s %-10s %10s %9s %9s %s\n' $r haproxy $a $b $c $e; r_hap+=($a)
done
rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$pv/status)
if [[ -n $delay ]]; then
  opened() { cat "$dir/opened.$1" 2>/dev/null || echo 0; }
  echo "upstream connections opened over all rounds: nginx $(opened $UP_NGX), portvakt $(opened $UP_PV), haproxy $(opened $UP_HAP)"
fi
python3 - "${r_ngx[*]}" "${r_pv[*]}" "${r_hap[*]}" "${p_ngx[*]}" "${p_pv[*]}" "$rss" <<'EOF'
import statistics as s, sys
ngx, pv, hap, pn, pp = ([float(x) for x in a.split()] for a in sys.argv[1:6])
def spread(xs):
    xs = list(xs)
    return f"{s.median(xs):.2f}", f"{min(xs):.2f}-{max(xs):.2f}"
rps, rps_r = spread(p / n for p, n in zip(pv, ngx))
p99, p99_r = spread(p / n for p, n in zip(pp, pn))
hr, hr_r = spread(p / h for p, h in zip(pv, hap))
print(f"RESULT rps_ratio_vs_nginx={rps} ({rps_r}) p99_ratio_vs_nginx={p99} ({p99_r}) rps_ratio_vs_haproxy={hr} ({hr_r}) rss_mb={sys.argv[6]}")
EOF
