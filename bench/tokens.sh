#!/usr/bin/env bash
# bench/tokens.sh -- throughput of the one data-set grammar (radguard-dicom's tokenizer through
# part10::read_head + inflate::DataSetReader, fed in 256 KiB chunks) against memchr-class
# scanning of the same bytes in memory (the physical limit of touching every byte once).
#
#   bash bench/tokens.sh            # REPS=5 passes per measurement, best and median reported
#
# Data: bench/gen_relay_data.py (the relay benchmark's 300-slice 512x512 CT series, ~150 MiB,
# and its ~537 MB single instance), in $BENCH_DATA (default bench/out/data). Needs the .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-5}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
cargo build --release -q -p radguard-dicom --example token_bench
BIN="$ROOT/target/release/examples/token_bench"
echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" --reps "$REPS" "ct-300=$DATA/ct-series" "large=$DATA/large/MF_0001.dcm" > "$ROOT/bench/out/tokens.tsv"
awk -F'\t' 'NR == 1 {
    print "| data | files | MB | elements | tokenizer GB/s | tokenizer + memchr of values GB/s | memchr GB/s | sum GB/s | tokenizer / memchr | (tokenizer + memchr) / memchr | elements/s |"
    print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    next }
  { printf "| %s | %d | %.0f | %d | %s (%s) | %s (%s) | %s (%s) | %s (%s) | %s | %s | %.1f M |\n",
      $1, $2, $3 / 1e6, $4, $6, $5, $8, $7, $10, $9, $12, $11, $13, $14, $15 / 1e6 }' \
  "$ROOT/bench/out/tokens.tsv"
echo "# GB/s: median of $REPS passes (best in parentheses); ratios of the medians"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
