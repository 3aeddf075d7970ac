#!/usr/bin/env bash
# What `cargo test` needs besides Rust, on Debian: a C compiler (aws-lc-sys builds C) and Chromium
# (the status page is rendered headless in tests/status_page.rs). Idempotent; run as root or with sudo.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
