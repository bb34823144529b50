#!/usr/bin/env bash
# bench/verify.sh -- `radguard verify` throughput on a 300-slice 512x512 CT series, native and
# RLE Lossless, against `openssl dgst -sha256` over the same files in the same run (one core
# hashing the file bytes with the CPU's SHA instructions: the practical limit).
#
#   bash bench/verify.sh            # release build, generate data once, 3 rounds, best of each
#
# Env: BENCH_DIR (default target/bench-verify), SLICES (300), ROUNDS (3), JOBS (all cores),
#      RESULTS (default $BENCH_DIR/verify-results.md).
# Needs: DCMTK dcmcrle, the project venv (scripts/setup-test-env.sh), openssl
# (scripts/setup-radguard-ledger.sh). It never touches the gateway: the ledger is filled with
# `ledger record`, which fingerprints the files exactly as an origin route would.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="${BENCH_DIR:-$ROOT/target/bench-verify}"
SLICES="${SLICES:-300}"
ROUNDS="${ROUNDS:-3}"
JOBS="${JOBS:-$(nproc)}"
RESULTS="${RESULTS:-$WORK/verify-results.md}"
PY="$ROOT/.venv/bin/python"
CTDATA="$ROOT/crates/radguard-ledger/tests/support/ctdata.py"

log() { printf '[bench/verify] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ -x "$PY" ]] || die "$PY missing: run scripts/setup-test-env.sh"
[[ -x /usr/bin/dcmcrle ]] || die "/usr/bin/dcmcrle missing: install DCMTK"
command -v openssl >/dev/null || die "openssl missing: run scripts/setup-radguard-ledger.sh"

log "building (release)"
cargo build --release -q -p radguard --bin radguard
BIN="$ROOT/target/release/radguard"

mkdir -p "$WORK"
stamp="$WORK/.data-$SLICES"
if [[ ! -f "$stamp" ]]; then
  rm -rf "$WORK/native" "$WORK/rle"
  log "generating $SLICES slices of 512x512 (signed 16-bit, explicit VR LE)"
  "$PY" "$CTDATA" series "$WORK/native" --slices "$SLICES" --rows 512 --cols 512 --seed 3
  log "RLE Lossless copies (dcmcrle)"
  mkdir -p "$WORK/rle"
  for f in "$WORK"/native/*.dcm; do /usr/bin/dcmcrle "$f" "$WORK/rle/$(basename "$f")"; done
  touch "$stamp"
fi

log "recording the originals in a fresh ledger"
rm -rf "$WORK/ledger"
"$BIN" ledger record --ledger "$WORK/ledger" --origin radguard.bench/ledger/ct "$WORK/native" >/dev/null

# run OUT CMD...: wall and CPU (user + sys) seconds of one command, as "wall cpu".
run() {
  local out=$1; shift
  /usr/bin/time -f '%e %U %S' -o "$WORK/time.txt" "$@" >"$out"
  awk '{ printf "%s %.3f\n", $1, $2 + $3 }' "$WORK/time.txt"
}
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / 1e6 / (s > 0 ? s : 1e-9) }'; }
[[ -x /usr/bin/time ]] || die "/usr/bin/time missing (Debian package time)"

declare -A ssl_w ssl_c v1_w v1_c vn_w vn_c bytes_of
for set in native rle; do
  files=("$WORK/$set"/*.dcm)
  bytes_of[$set]=$(cat "${files[@]}" | wc -c)
  cat "${files[@]}" >/dev/null # warm the page cache: every run reads from memory
  ssl_w[$set]=1e9; ssl_c[$set]=1e9; v1_w[$set]=1e9; v1_c[$set]=1e9; vn_w[$set]=1e9; vn_c[$set]=1e9
  for ((r = 1; r <= ROUNDS; r++)); do
    read -r w c < <(run /dev/null openssl dgst -sha256 "${files[@]}")
    ssl_w[$set]=$(min "${ssl_w[$set]}" "$w"); ssl_c[$set]=$(min "${ssl_c[$set]}" "$c")
    for j in 1 "$JOBS"; do
      read -r w c < <(run "$WORK/verify-$set.json" "$BIN" verify "$WORK/$set" --ledger "$WORK/ledger" --json -j "$j")
      unchanged=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["summary"]["unchanged"])' "$WORK/verify-$set.json")
      [[ "$unchanged" == "${#files[@]}" ]] || die "$set: only $unchanged of ${#files[@]} unchanged"
      if [[ $j == 1 ]]; then
        v1_w[$set]=$(min "${v1_w[$set]}" "$w"); v1_c[$set]=$(min "${v1_c[$set]}" "$c")
      else
        vn_w[$set]=$(min "${vn_w[$set]}" "$w"); vn_c[$set]=$(min "${vn_c[$set]}" "$c")
      fi
    done
    log "$set round $r: openssl ${ssl_w[$set]}s, verify -j1 ${v1_w[$set]}s, -j$JOBS ${vn_w[$set]}s (best wall so far)"
  done
done

cpu=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
load=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "## verify throughput, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$SLICES slices of 512x512, signed 16-bit CT (synthetic phantom), page cache warm, best of $ROUNDS rounds."
  echo "CPU: $cpu, $(nproc) cores, load average $load at the end (the machine is shared); $(openssl version | cut -d' ' -f1-2)."
  echo "MB = 10^6 bytes of DICOM files. Wall: MB per second of elapsed time (what the issue's target"
  echo "compares). CPU: MB per CPU-second (user + sys), which other load on the machine does not distort."
  echo
  echo "| series | files MB | openssl dgst -sha256 wall / CPU | verify -j1 wall / CPU | verify -j$JOBS wall / CPU | wall ratio -j$JOBS |"
  echo "|---|---|---|---|---|---|"
  for set in native rle; do
    b=${bytes_of[$set]}
    ratio=$(awk -v a="${ssl_w[$set]}" -v b="${vn_w[$set]}" 'BEGIN { printf "%.2f", a / b }')
    printf '| %s | %.1f | %s / %s MB/s | %s / %s MB/s | %s / %s MB/s | %sx |\n' "$set" \
      "$(awk -v n="$b" 'BEGIN { print n / 1e6 }')" \
      "$(mbps "$b" "${ssl_w[$set]}")" "$(mbps "$b" "${ssl_c[$set]}")" \
      "$(mbps "$b" "${v1_w[$set]}")" "$(mbps "$b" "${v1_c[$set]}")" \
      "$(mbps "$b" "${vn_w[$set]}")" "$(mbps "$b" "${vn_c[$set]}")" "$ratio"
  done
  echo
} | tee "$RESULTS"
log "results in $RESULTS"
