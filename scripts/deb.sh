#!/usr/bin/env bash
# Builds portvakt_<version>_amd64.deb (cargo deb) and tests it as an administrator meets it:
#  1. `dpkg -i` into a Debian bookworm root made with mmdebstrap;
#  2. the portvakt system user, and the owners and modes of what the package installed;
#  3. `portvakt check` and `portvakt run` inside the root (chroot, as the portvakt user), serving a
#     proxied call to a verifying echo upstream with a token from the mock Maskinporten
#     (examples/mock_peers.rs, on 127.0.0.1 outside the root);
#  4. `dpkg --purge`, and that nothing the package made is left;
#  5. lintian on the package, and `systemd-analyze security --offline=true` on the units.
# Prints the package's size, lintian's words and the units' exposure scores. Run as root (CI does).
#   scripts/deb.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# mmdebstrap, chroot and dpkg in the root need root.
[ "$(id -u)" -eq 0 ] || exec sudo -E bash "$0" "$@"

fail() { echo "deb: FAILED: $*" >&2; exit 1; }
# shellcheck source=scripts/peers.sh
. scripts/peers.sh
install_missing mmdebstrap:mmdebstrap lintian:lintian systemd-analyze:systemd curl:curl
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --quiet

out=target/debian
rm -rf "$out"
cargo deb --locked --output "$out/" >/dev/null
deb=$(ls "$out"/portvakt_*_amd64.deb)
echo "deb: built $(basename "$deb"), $(du -k "$deb" | cut -f1) KiB"

work=$(mktemp -d /tmp/portvakt-deb.XXXXXX)
root="$work/root"
peers_pid=""
portvakt_pid=""
cleanup() {
  [ -n "$portvakt_pid" ] && kill "$portvakt_pid" 2>/dev/null || true
  [ -n "$peers_pid" ] && kill "$peers_pid" 2>/dev/null || true
  mountpoint -q "$root/proc" 2>/dev/null && umount "$root/proc" || true
  rm -rf "$work"
}
trap cleanup EXIT

# 1. A bare Debian root, and the package installed into it as an administrator would.
mmdebstrap --quiet --variant=minbase --include=adduser bookworm "$root" http://deb.debian.org/debian
cp "$deb" "$root/tmp/portvakt.deb"
chroot "$root" dpkg -i /tmp/portvakt.deb >/dev/null || fail "dpkg -i"

# 2. The user and what the package installed, with owners and modes.
user=$(chroot "$root" getent passwd portvakt) || fail "no portvakt user"
IFS=: read -r _ _ uid _ _ home shell <<<"$user"
[ "$uid" -lt 1000 ] || fail "portvakt is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "portvakt's shell is $shell"
expect() { # path owner:group mode
  got=$(chroot "$root" stat -c '%U:%G %a' "$1") || fail "$1 missing"
  [ "$got" = "$2 $3" ] || fail "$1 is $got, not $2 $3"
  echo "deb:   $1  $got"
}
echo "deb: installed (uid $uid, home $home):"
expect /usr/bin/portvakt root:root 755
expect /etc/portvakt root:portvakt 750
expect /etc/portvakt/keys root:portvakt 750
expect /etc/portvakt/portvakt.yaml root:portvakt 640
expect /var/lib/portvakt portvakt:portvakt 750
expect /lib/systemd/system/portvakt.service root:root 644
expect /lib/systemd/system/portvakt-rotate.service root:root 644
expect /lib/systemd/system/portvakt-rotate.timer root:root 644
expect /usr/share/doc/portvakt/copyright root:root 644
grep -q '^/etc/portvakt/portvakt.yaml$' "$root/var/lib/dpkg/info/portvakt.conffiles" \
  || fail "portvakt.yaml is not a conffile"

# 3. Configured against the mock peers, checked and run as the service would run it.
start_peers "$work/peers"
port=$(free_port)
admin=$(free_port)
cp "$work/peers/client.pem" "$root/etc/portvakt/keys/vendor.pem"
chroot "$root" chown root:portvakt /etc/portvakt/keys/vendor.pem
chroot "$root" chmod 0640 /etc/portvakt/keys/vendor.pem
cat >"$root/etc/portvakt/portvakt.yaml" <<YAML
listen: 127.0.0.1:$port
admin_listen: 127.0.0.1:$admin
maskinporten:
  environment: custom
  issuer: $ISSUER
clients:
  vendor:
    client_id: $CLIENT_ID
    key:
      pem: /etc/portvakt/keys/vendor.pem
      kid: $KID
routes:
  - name: nav
    prefix: /nav/
    upstream: $UPSTREAM
    client: vendor
    scopes: [nav:example/scope]
YAML
mount -t proc proc "$root/proc" 2>/dev/null || true
as_portvakt() { chroot --userspec=portvakt:portvakt "$root" "$@"; }
as_portvakt /usr/bin/portvakt check --config /etc/portvakt/portvakt.yaml >/dev/null \
  || fail "portvakt check as the portvakt user"
echo "deb: portvakt check passed as the portvakt user"
# chroot execs portvakt, so this pid is portvakt's own.
chroot --userspec=portvakt:portvakt "$root" /usr/bin/portvakt run --config /etc/portvakt/portvakt.yaml \
  >"$work/run.log" 2>&1 &
portvakt_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
proxied_call_arrives "$port" || { cat "$work/run.log" >&2; fail "the proxied call"; }
echo "deb: a proxied call reached the upstream with a verified token"
kill -TERM "$portvakt_pid"
wait "$portvakt_pid" || fail "portvakt did not stop cleanly on SIGTERM"
portvakt_pid=""
umount "$root/proc" 2>/dev/null || true

# 4. Purged: nothing the package made is left (the administrator's key stays, as it should).
rm "$root/etc/portvakt/keys/vendor.pem"
chroot "$root" dpkg --purge portvakt >/dev/null || fail "dpkg --purge"
for path in /usr/bin/portvakt /etc/portvakt /var/lib/portvakt /lib/systemd/system/portvakt.service \
    /usr/share/doc/portvakt; do
  [ ! -e "$root$path" ] || fail "$path is left after purge"
done
echo "deb: purged, nothing left"

# 5. What lintian says, and how exposed the units are.
said=$(lintian --tag-display-limit 0 "$deb" 2>&1 | grep -v 'running with root privileges' || true)
echo "deb: lintian: ${said:-no tags}" | sed '2,$s/^/deb:   /'
! grep -q '^E:' <<<"$said" || fail "lintian found errors"
for unit in portvakt.service portvakt-rotate.service; do
  line=$(systemd-analyze security --offline=true "deploy/debian/$unit" 2>&1 | grep 'Overall exposure level' || true)
  score=$(grep -oE '[0-9]+\.[0-9]+' <<<"$line" | head -n 1)
  echo "deb: $unit: exposure ${score:-?} (systemd-analyze security --offline=true)"
  # "OK" or better: 2.0 or under.
  awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.0) }' || fail "$unit is exposed: $line"
done
