# Sourced by scripts/deb.sh and scripts/image.sh, which define `fail`: the Debian packages they
# need, the mock peers their portvakt is configured against, and the check of one proxied call.

# Installs the Debian package of each `command:package` whose command is missing.
install_missing() {
  local need=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null 2>&1 || need+=("${spec#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# A port on 127.0.0.1 that was free a moment ago.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts the mock Maskinporten and echo upstream (examples/mock_peers.rs) writing into DIR, sets
# peers_pid, and reads ISSUER, UPSTREAM, KID and CLIENT_ID; the client's key is DIR/client.pem.
start_peers() {
  cargo build --release --locked --quiet --example mock_peers
  target/release/examples/mock_peers "$1" &
  peers_pid=$!
  for _ in $(seq 1 100); do [ -f "$1/peers.env" ] && break; sleep 0.1; done
  [ -f "$1/peers.env" ] || fail "the mock peers did not start"
  # shellcheck disable=SC1091
  . "$1/peers.env"
}

# GET /nav/hello?x=1 through portvakt on PORT: the echo upstream must have got it at /hello?x=1
# with a token it verified. Returns non-zero, saying why, when not.
proxied_call_arrives() {
  local answer
  answer=$(curl -fsS "http://127.0.0.1:$1/nav/hello?x=1") || { echo "the proxied call failed" >&2; return 1; }
  echo "$answer" | python3 -c '
import json, sys
a = json.load(sys.stdin)
assert a["token"]["verified"] is True, a["token"]
assert a["target"] == "/hello?x=1", a["target"]
' || { echo "the upstream did not get the call with a verified token: $answer" >&2; return 1; }
}
