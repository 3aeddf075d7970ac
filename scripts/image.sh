#!/usr/bin/env bash
# Builds the container image from the Dockerfile with podman and runs it as production would:
# read-only root, uid 65532, no capabilities, configuration and key mounted read-only. Checks
# `portvakt check`, then `run` serving a proxied call with a verified token (the mock Maskinporten
# and echo upstream of examples/mock_peers.rs, on 127.0.0.1), the HEALTHCHECK command exiting 0,
# and a clean stop on SIGTERM; prints the image's size.
#
# Public image registries cannot be reached from these machines, so the Dockerfile's two bases
# (build arguments BUILD_IMAGE and RUNTIME_IMAGE) are made here from Debian's packages with
# mmdebstrap, unless PORTVAKT_PUBLIC_BASES=1 asks for the public ones:
#   runtime: libc6, libgcc-s1 and ca-certificates, and a nonroot user 65532 (what distroless/cc holds);
#   build:   a minimal bookworm with gcc, and this machine's Rust toolchain.
# podman as these machines allow it: runc (crun refuses their cgroups), the vfs storage driver,
# host networking, and a containers.conf without default ulimits. Run as root (CI does).
#   scripts/image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"

fail() { echo "image: FAILED: $*" >&2; exit 1; }
# shellcheck source=scripts/peers.sh
. scripts/peers.sh
install_missing podman:podman runc:runc mmdebstrap:mmdebstrap curl:curl

mkdir -p target/podman
conf="$PWD/target/podman/containers.conf"
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$conf"
export CONTAINERS_CONF="$conf"
pm() { podman --storage-driver vfs --runtime runc "$@"; }

work=$(mktemp -d /tmp/portvakt-image.XXXXXX)
name="portvakt-image-test-$$"
peers_pid=""
cleanup() {
  pm rm -f "$name" >/dev/null 2>&1 || true
  [ -n "$peers_pid" ] && kill "$peers_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

build_args=()
if [ "${PORTVAKT_PUBLIC_BASES:-0}" != 1 ]; then
  runtime_base=localhost/portvakt-runtime-base:bookworm
  build_base=localhost/portvakt-build-base:bookworm
  if ! pm image exists "$runtime_base"; then
    root="$work/runtime"
    mmdebstrap --quiet --variant=extract --include=libc6,libgcc-s1,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian
    # extract runs no maintainer scripts: the CA bundle and the users are made here.
    mkdir -p "$root/etc/ssl/certs" "$root/home/nonroot" "$root/tmp"
    cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
    chown 65532:65532 "$root/home/nonroot"
    chmod 1777 "$root/tmp"
    rm -rf "$root/var/cache/apt" "$root/var/lib/apt/lists" "$root/usr/share/doc" "$root/usr/share/man"
    tar -C "$root" -c . | pm import --quiet - "$runtime_base" >/dev/null
  fi
  if ! pm image exists "$build_base"; then
    root="$work/build"
    mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,ca-certificates \
      bookworm "$root" http://deb.debian.org/debian
    sysroot=$(rustc --print sysroot)
    mkdir -p "$root/usr/local/rust"
    # The toolchain without its documentation.
    tar -C "$sysroot" --exclude=./share -c . | tar -C "$root/usr/local/rust" -x
    # The build fetches crates: it trusts what this machine trusts (a TLS-inspecting proxy's CA
    # between it and crates.io among them).
    cp --remove-destination /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    tar -C "$root" -c . | pm import --quiet \
      --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' - "$build_base" >/dev/null
  fi
  build_args=(--build-arg "BUILD_IMAGE=$build_base" --build-arg "RUNTIME_IMAGE=$runtime_base")
fi

image=localhost/portvakt:test
# The docker image format: OCI has no HEALTHCHECK.
pm build --quiet --format docker --network host "${build_args[@]}" -t "$image" . >/dev/null \
  || fail "podman build"
size=$(pm image inspect --format '{{.Size}}' "$image")
echo "image: built $image, $((size / 1000000)) MB"

# The peers, and a configuration and key mounted read-only as a Kubernetes secret would be.
start_peers "$work/peers"
port=$(free_port)
mkdir -p "$work/etc"
cp "$work/peers/client.pem" "$work/etc/client.pem"
cat >"$work/etc/portvakt.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:9090
maskinporten:
  environment: custom
  issuer: $ISSUER
clients:
  vendor:
    client_id: $CLIENT_ID
    key:
      pem: client.pem
      kid: $KID
routes:
  - name: nav
    prefix: /nav/
    upstream: $UPSTREAM
    client: vendor
    scopes: [nav:example/scope]
YAML
chown -R 65532:65532 "$work/etc"
chmod 0500 "$work/etc"
chmod 0400 "$work/etc"/*
as_production=(--network host --read-only --user 65532:65532 --cap-drop=ALL
  --security-opt no-new-privileges -v "$work/etc:/etc/portvakt:ro")

pm run --rm "${as_production[@]}" "$image" check --config /etc/portvakt/portvakt.yaml >/dev/null \
  || fail "portvakt check in the image"
echo "image: portvakt check passed (read-only, uid 65532, no capabilities)"

pm run -d --name "$name" "${as_production[@]}" "$image" >/dev/null || fail "podman run"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:9090/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
proxied_call_arrives "$port" || { pm logs "$name" >&2; fail "the proxied call"; }
echo "image: a proxied call reached the upstream with a verified token"
# The image's HEALTHCHECK, run by the engine as it runs it on its interval.
check=$(pm inspect --format '{{json .Config.Healthcheck.Test}}' "$name")
[ "$check" = '["CMD","/usr/local/bin/portvakt","health"]' ] || fail "the image's HEALTHCHECK is $check"
pm healthcheck run "$name" >/dev/null || fail "the HEALTHCHECK command ($check) failed"
echo "image: HEALTHCHECK $check exits 0"
pm stop --time 20 "$name" >/dev/null
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { pm logs "$name" >&2; fail "portvakt exited $code on SIGTERM"; }
echo "image: stopped cleanly on SIGTERM (exit 0)"
echo "image: size $((size / 1000000)) MB ($size bytes)"
