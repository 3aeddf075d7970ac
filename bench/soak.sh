#!/usr/bin/env bash
# The soak (examples/soak.rs): 64 mixed callers against the release binary for SECONDS (default
# 600), with 6 s tokens, revoked tokens, key files replaced and configuration reloads; loopback only,
# bounded, stops by itself. Prints the figures docs/security.md reports and "RESULT soak passed".
#   bench/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin portvakt --example soak
ulimit -n "$(ulimit -Hn)"
SOAK_SECONDS=${1:-600} exec target/release/examples/soak
