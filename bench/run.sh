#!/usr/bin/env bash
# portvakt's benchmarks, reproducible from a clean checkout (docs/performance.md has the figures).
#   bench/run.sh compare [compare.sh options]  throughput and p99 against nginx and HAProxy, and RSS
#                                              under load (../shared/bench/compare.sh)
#   bench/run.sh tls [--http2] [options]       the same with an HTTPS upstream (bench/tls.sh)
#   bench/run.sh limits                        cold start, first call, 1 GB up and down, and
#                                              10,000 idle keep-alive callers (examples/limits.rs)
#   bench/run.sh consents [N]                  portvakt's memory as N (default 100,000) distinct
#                                              consents pass through (examples/consents.rs)
#   bench/run.sh                               all three (consents apart: it takes minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
[[ $# -gt 0 ]] && shift
cargo build --release --quiet
case $what in
  compare) exec bash ../shared/bench/compare.sh "$@" ;;
  tls) exec bash bench/tls.sh "$@" ;;
  limits)
    cargo build --release --quiet --example limits
    # 10,000 callers need 10,000 descriptors here and as many in portvakt.
    ulimit -n "$(ulimit -Hn)"
    exec target/release/examples/limits ;;
  consents)
    cargo build --release --quiet --example consents
    exec target/release/examples/consents "$@" ;;
  all)
    bash "$0" compare "$@"
    bash "$0" tls
    bash "$0" limits ;;
  *) echo "usage: bench/run.sh [compare [options] | tls [--http2] [options] | limits | consents [N]]" >&2; exit 2 ;;
esac
