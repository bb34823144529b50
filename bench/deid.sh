#!/usr/bin/env bash
# bench/deid.sh -- files/s of `radguard deid` (CLI, both cores) on a generated 300-slice
# 512x512 CT series, against `cp` of the same files in the same run (page cache warm).
#
#   bench/deid.sh                       # builds the deid example in release, generates the series
#   DEID_BIN=path bench/deid.sh         # use another binary taking `deid`'s arguments
#   SLICES=300 SIZE=512 JOBS=2 bench/deid.sh
#
# The series comes from crates/radguard-deid/tests/py/gen_series.py (the venv's pydicom and
# numpy). Results are printed and written to bench/results/deid.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out/deid}
PY=${PYTHON:-$ROOT/.venv/bin/python}
SLICES=${SLICES:-300}
SIZE=${SIZE:-512}
JOBS=${JOBS:-2}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/deid.md}
mkdir -p "$(dirname "$RESULTS")" "$OUT"
[[ -x "$PY" ]] || { echo "bench/deid.sh: $PY missing (run scripts/setup-test-env.sh)" >&2; exit 1; }
if [[ -z "${DEID_BIN:-}" ]]; then
  cargo build --release -q -p radguard-deid --example deid --manifest-path "$ROOT/Cargo.toml" >&2
  DEID_BIN=$ROOT/target/release/examples/deid
fi

SERIES=$OUT/series-${SLICES}x${SIZE}
if [[ $(find "$SERIES" -name '*.dcm' 2>/dev/null | wc -l) -ne $SLICES ]]; then
  rm -rf "$SERIES"
  "$PY" "$ROOT/crates/radguard-deid/tests/py/gen_series.py" "$SERIES" "$SLICES" "$SIZE" >&2
fi
KEY=$OUT/site.key
[[ -s "$KEY" ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$KEY"
BYTES=$(du -sb "$SERIES" | cut -f1)

now() { date +%s.%N; }
best_deid=""; best_cp=""
for run in 1 2 3; do
  rm -rf "$OUT/result" "$OUT/copy"
  t0=$(now)
  "$DEID_BIN" "$SERIES" --out "$OUT/result" --key-file "$KEY" -j "$JOBS" --no-progress \
    --option retain-long-modified-dates >/dev/null 2>"$OUT/deid.log" || { cat "$OUT/deid.log" >&2; exit 1; }
  t1=$(now)
  cp -r "$SERIES" "$OUT/copy"
  t2=$(now)
  d=$(echo "$t1 - $t0" | bc -l); c=$(echo "$t2 - $t1" | bc -l)
  if [[ -z "$best_deid" ]] || (( $(echo "$d < $best_deid" | bc -l) )); then best_deid=$d; fi
  if [[ -z "$best_cp" ]] || (( $(echo "$c < $best_cp" | bc -l) )); then best_cp=$c; fi
done
written=$(find "$OUT/result" -maxdepth 1 -name '*.dcm' | wc -l)
[[ $written -eq $SLICES ]] || { echo "bench/deid.sh: only $written of $SLICES written" >&2; exit 1; }
fps=$(echo "$SLICES / $best_deid" | bc -l)
mbs=$(echo "$BYTES / $best_deid / 1048576" | bc -l)
cps=$(echo "$SLICES / $best_cp" | bc -l)
{
  echo "# radguard deid benchmark"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPU(s), jobs=$JOBS, $(uname -m)"
  echo
  echo "| what | files | MiB | best of 3 (s) | files/s | MiB/s |"
  echo "|---|---|---|---|---|---|"
  printf '| deid CLI (basic + retain-long-modified-dates) | %d | %.1f | %.3f | %.1f | %.1f |\n' \
    "$SLICES" "$(echo "$BYTES / 1048576" | bc -l)" "$best_deid" "$fps" "$mbs"
  printf '| cp -r (same files) | %d | %.1f | %.3f | %.1f | %.1f |\n' \
    "$SLICES" "$(echo "$BYTES / 1048576" | bc -l)" "$best_cp" "$cps" "$(echo "$BYTES / $best_cp / 1048576" | bc -l)"
} | tee "$RESULTS"
