#!/usr/bin/env bash
# Builds every fuzz target (fuzz/fuzz_targets) and runs each for SECONDS (default 60) on its corpus
# (fuzz/corpus/TARGET, seeded in the repository). A crash, a leak or an input that takes over 120 s
# (a PKCS#12 file may ask for millions of key-derivation rounds, several times) fails the run and
# leaves its input in fuzz/artifacts/TARGET; copy it into fuzz/regressions/TARGET with the fix, so
# that `cargo test` (tests/fuzz_corpora.rs) replays it from then on.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]
# cargo-fuzz builds with the stable toolchain: RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
[[ $# -gt 0 ]] && shift
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || mapfile -t targets < <(cargo fuzz list)
cargo fuzz build
summary=()
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo fuzz run "$target" -- -max_total_time="$seconds" -timeout=120 -rss_limit_mb=3072 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $target FAILED (a finding leaves its input in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | awk '{print $2}')
  summary+=("$target: ${runs:-?} runs in ${seconds} s, coverage ${cov:-?} edges, corpus $(ls "corpus/$target" | wc -l) files")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
