#!/usr/bin/env bash
# bench/scan.sh -- throughput of `radguard scan` against `cat` and `openssl dgst -sha256` on the
# same files in the same run (page cache warm), and peak RSS scanning a 512 MiB file.
#
#   bench/scan.sh                 # builds target/release/radguard, generates data in bench/out
#   RADGUARD_BIN=path bench/scan.sh
#
# Data: bench/make_media_bench.py (300-slice 512x512 CT series, 512 MiB multi-frame file) and
# every DICOM file in pydicom's wheel. Results are printed and written to bench/results/scan.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out}
PY=${PYTHON:-$ROOT/.venv/bin/python}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results/scan.md}
mkdir -p "$(dirname "$RESULTS")"
if [[ -z "${RADGUARD_BIN:-}" ]]; then
  cargo build --release -p radguard --manifest-path "$ROOT/Cargo.toml" >&2
  RADGUARD_BIN=$ROOT/target/release/radguard
fi
BIN=$RADGUARD_BIN

"$PY" "$ROOT/bench/make_media_bench.py" "$OUT"
PYDICOM_DIR=$("$PY" -c "import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), 'data'))")

# File lists (pydicom: only DICOM files, as the tests select them).
mapfile -t CT_FILES < <(find "$OUT/ct" -name '*.dcm' | sort)
mapfile -t PD_FILES < <(find "$PYDICOM_DIR" -type f \( -name '*.dcm' -o -name 'DICOMDIR*' \) | sort)
LARGE=$OUT/large/MF_512MiB.dcm

now() { date +%s.%N; }
# run LABEL CMD... : best of 3 wall-clock seconds (outputs discarded, exit status ignored)
best() {
  local best=""
  for _ in 1 2 3; do
    local t0 t1
    t0=$(now); "$@" >/dev/null 2>&1 || true; t1=$(now)
    local dt; dt=$(echo "$t1 - $t0" | bc -l)
    if [[ -z "$best" ]] || (( $(echo "$dt < $best" | bc -l) )); then best=$dt; fi
  done
  echo "$best"
}
mbps() { echo "scale=1; $1 / 1000000 / $2" | bc -l; }

{
echo "# radguard scan benchmark"
echo
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs, $(uname -m); binary: $BIN"
echo
echo "| data set | files | MB | tool | seconds (best of 3) | MB/s |"
echo "|---|---:|---:|---|---:|---:|"
for set in ct pydicom; do
  if [[ $set == ct ]]; then files=("${CT_FILES[@]}"); else files=("${PD_FILES[@]}"); fi
  bytes=$(cat "${files[@]}" | wc -c)
  cat "${files[@]}" >/dev/null   # warm the page cache
  mb=$(echo "scale=1; $bytes / 1000000" | bc -l)
  t=$(best cat "${files[@]}");                      echo "| $set | ${#files[@]} | $mb | cat | $t | $(mbps "$bytes" "$t") |"
  t=$(best openssl dgst -sha256 "${files[@]}");     echo "| $set | ${#files[@]} | $mb | openssl dgst -sha256 | $t | $(mbps "$bytes" "$t") |"
  t=$(best "$BIN" scan -q --no-progress "${files[@]}"); echo "| $set | ${#files[@]} | $mb | radguard scan | $t | $(mbps "$bytes" "$t") |"
  t=$(best "$BIN" scan -q --no-progress -j 1 "${files[@]}"); echo "| $set | ${#files[@]} | $mb | radguard scan -j 1 | $t | $(mbps "$bytes" "$t") |"
done
echo
bytes=$(stat -c %s "$LARGE")
cat "$LARGE" >/dev/null
t=$(best "$BIN" scan -q --no-progress "$LARGE")
rss=$( { /usr/bin/time -v "$BIN" scan -q --no-progress "$LARGE" >/dev/null; } 2>&1 | awk -F': ' '/Maximum resident set size/ {print $2}')
echo "| large | 1 | $(echo "scale=1; $bytes / 1000000" | bc -l) | radguard scan | $t | $(mbps "$bytes" "$t") |"
echo
echo "Peak RSS scanning the $(( bytes / 1048576 )) MiB file: $(( rss / 1024 )) MiB (${rss} KiB; target <= 64 MiB)"
} | tee "$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
