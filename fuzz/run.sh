#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with cargo-fuzz on the stable toolchain
# (RUSTC_BOOTSTRAP=1 unlocks the sanitizer flags cargo-fuzz needs). Seed corpora: fuzz/corpus/.
# Exit 1 at the first target that crashes, runs out of memory or times out.
#   bash fuzz/run.sh 600     # ten minutes per target
#   bash fuzz/run.sh 10      # the smoke .ci/run does
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECONDS_PER="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
mkdir -p target
cargo fuzz build -O
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  log="target/fuzz-$t.log"
  set +e
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER" -max_len=70000 \
    -rss_limit_mb=2048 -timeout=10 > "$log" 2>&1
  rc=$?
  set -e
  printf '%-24s %s\n' "$t" "$(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
  if [ "$rc" -ne 0 ]; then
    echo "fuzz target $t FAILED (exit $rc); the input is in fuzz/artifacts/$t/"
    grep -E "panicked|SUMMARY|ERROR" "$log" | head -10
    exit 1
  fi
done
