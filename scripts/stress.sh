#!/usr/bin/env bash
# The long run of issue 27's timing stress (tests/smuggling.rs): many callers at once, at random
# interleavings around the park timer, against the strict recording upstream; first on a plain
# listener for SECONDS (default 600), then on a TLS listener for as long. Prints each run's figures
# line; a smuggled request, a foreign answer or a malformed upstream request fails it.
#   scripts/stress.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
log=$(mktemp)
for listener in plain tls; do
  if ! STRESS_SECONDS="$seconds" cargo test --release --test smuggling \
      "many_callers_at_random_interleavings_get_only_their_own_answers_$listener" \
      -- --exact --nocapture >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "stress: $listener FAILED" >&2
    exit 1
  fi
  grep -E '^stress ' "$log" || true
done
rm -f "$log"
