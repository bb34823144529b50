#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the stable toolchain
# (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags cargo-fuzz needs). Seed corpora: fuzz/corpus/.
#   bash fuzz/run.sh 600     # ten minutes per target
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS_PER="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  echo "== $t (${SECONDS_PER}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER" -max_len=70000 2>&1 | grep -E "^(#[0-9]+.*DONE|==|SUMMARY|Done)" || true
  cargo fuzz run "$t" "corpus/$t" -- -runs=0 >/dev/null 2>&1 || { echo "FAIL: $t"; exit 1; }
done
