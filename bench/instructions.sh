#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: one number per workload that does not
# drift with the machine's load or clock, so that a change's cost can be compared exactly.
#
# Usage (from the project's root; builds the release binary):
#   bench/instructions.sh [--requests N]
#   PORTVAKT_BIN=path/to/portvakt bench/instructions.sh   (another build, e.g. from a git worktree)
#   KEEP_PROFILE=DIR bench/instructions.sh   (keeps each workload's callgrind profile as DIR/NAME.out,
#                                              for callgrind_annotate)
# Workloads, each a fixed count of sequential keep-alive GETs from one caller after a warm-up
# (the token is fetched during the warm-up and is not counted):
#   plain   an http:// upstream (nginx), HTTP/1.1
#   h2      an https:// upstream (nginx with TLS and HTTP/2), spoken to over HTTP/2 by ALPN
#   h1tls   the same upstream with the route's upstream_http2: false (HTTP/1.1 over TLS)
# Prints one line per workload and, last:
#   RESULT plain_ir_per_request=A h2_ir_per_request=B h1tls_ir_per_request=C
set -euo pipefail
requests=2000
while [[ $# -gt 0 ]]; do
  case $1 in
    --requests) requests=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
need=()
for t in nginx valgrind openssl python3; do command -v $t >/dev/null || need+=($t); done
if ((${#need[@]})); then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null
fi
cd "$(dirname "$0")/.."
bin=${PORTVAKT_BIN:-target/release/portvakt}
[[ -n ${PORTVAKT_BIN:-} ]] || cargo build --release --quiet
here=$(pwd)/bench
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

UP=19381 UPS=19382 PV=19384 TOK=19386

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 \
  -subj "/CN=portvakt bench CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$dir/up.key" -out "$dir/up.csr" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/up.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -out "$dir/up.pem" -days 2 -extfile "$dir/ext.cnf" 2>/dev/null
cat >"$dir/upstream.conf" <<EOF
worker_processes 1; daemon off; pid $dir/up.pid; error_log $dir/up.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; listen 127.0.0.1:$UPS ssl http2;
    ssl_certificate $dir/up.pem; ssl_certificate_key $dir/up.key;
    location / { default_type application/json; return 200 '{"auth":"\$http_authorization"}'; } } }
EOF
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/key.pem" 2>/dev/null
python3 "$here/../../shared/bench/token_stub.py" $TOK >/dev/null 2>&1 & pids+=($!)
nginx -c "$dir/upstream.conf" & pids+=($!)
for port in $UP $UPS $TOK; do
  for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# A caller that makes exactly N sequential keep-alive requests and checks each answer.
cat >"$dir/caller.py" <<'EOF'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for i in range(n):
    c.request("GET", f"/bench/x?i={i}")
    r = c.getresponse()
    body = r.read()
    if r.status != 200 or b"Bearer " not in body:
        sys.exit(f"request {i}: {r.status} {body[:200]!r}")
EOF

# workload name, upstream, extra route line -> instructions per request
count() {
  cat >"$dir/$1.yaml" <<EOF
listen: 127.0.0.1:$PV
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
    upstream: $2
    ca_file: $dir/ca.pem
    client: bench
    scopes: [bench:scope]
$3
EOF
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/$1.%p.out" \
    "$bin" run --config "$dir/$1.yaml" >"$dir/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/$PV) 2>/dev/null && break; sleep 0.1; done
  python3 "$dir/caller.py" $PV 50                      # warm-up: token, pool, caches
  callgrind_control -i on $pid >/dev/null 2>&1
  python3 "$dir/caller.py" $PV "$requests"
  # Dump before anything else: switching instrumentation off would drop what was counted.
  callgrind_control -d $pid >/dev/null 2>&1
  kill $pid; wait $pid 2>/dev/null || true
  [[ -z ${KEEP_PROFILE:-} ]] || cp "$dir/$1.$pid.out.1" "$KEEP_PROFILE/$1.out"
  local ir
  ir=$(cat "$dir"/$1.$pid.out.1 | awk '/^summary:/ {s+=$2} END {print s}')
  echo "$1 $((ir / requests))"
}

results=()
for w in "plain http://127.0.0.1:$UP/" "h2 https://127.0.0.1:$UPS/" "h1tls https://127.0.0.1:$UPS/"; do
  set -- $w
  extra=""
  [[ $1 == h1tls ]] && extra="    upstream_http2: false"
  read -r name ir <<<"$(count "$1" "$2" "$extra")"
  printf '%-6s %12s instructions per request (%s requests)\n' "$name" "$ir" "$requests"
  results+=("${name}_ir_per_request=$ir")
done
echo "RESULT ${results[*]}"
