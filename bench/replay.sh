#!/usr/bin/env bash
# Recovery throughput: `radguard vault replay` against a direct DCMTK storescu of the same files,
# same run, same receiver (DCMTK storescp --ignore: it receives every byte and answers success,
# storing nothing, so the sender is what is measured).
#
#  1. N CT slices (bench/gen_relay_data.py: 512x512x16 bit, Explicit VR LE, ~0.5 MiB each) are
#     stored into a fresh vault through `radguard serve` (a vault route, DCMTK storescu).
#  2. REPS times, alternating which goes first: storescu of the N files (one association), then
#     `radguard vault replay` of the vault (a fresh state file each time, so all N are sent; each
#     object's SHA-256 is checked before sending; one association per 500 instances).
#  3. Medians; the ratio = replay instances/s divided by storescu instances/s.
#
# Usage:  bash bench/replay.sh [N] [REPS]        (defaults 300 and 3)
# Needs:  Debian dcmtk (/usr/bin/storescu, storescp), the .venv (pydicom, numpy).
# Env:    RG (a radguard binary; default: build target/release/radguard), RG_PORT, SCP_PORT
#         (defaults 21223, 21222). TCP_NODELAY=1 for DCMTK on every path. Everything on 127.0.0.1.
# Prints a Markdown table on stdout (progress on stderr).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-300}"
REPS="${2:-3}"
RG_PORT="${RG_PORT:-21223}"
SCP_PORT="${SCP_PORT:-21222}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
export TCP_NODELAY=1

log() { printf '[bench/replay] %s\n' "$*" >&2; }
[ -x "$DCMTK/storescp" ] || { log "DCMTK missing ($DCMTK/storescp): run scripts/setup-test-env.sh"; exit 2; }
if [ -z "${RG:-}" ]; then
  log "building (release): radguard"
  cargo build -q --release -p radguard --bin radguard
  RG="$ROOT/target/release/radguard"
fi

WORK="$(mktemp -d)"
SCP_PID=""; RG_PID=""
cleanup() {
  for p in $RG_PID $SCP_PID; do kill "$p" 2>/dev/null || true; done
  # The vault's objects are immutable where the flag can be set (root, [vault] immutable).
  chattr -R -i "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
wait_port() { for _ in $(seq 400); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; log "port $1 not up"; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b-a}'; }

log "generating $N slices"
.venv/bin/python bench/gen_relay_data.py "$WORK/gen" --slices "$N" --frames 1 >&2
FILES=("$WORK"/gen/ct-series/*.dcm)
BYTES="$(cat "${FILES[@]}" | wc -c)"

log "filling the vault through radguard serve"
cat >"$WORK/radguard.toml" <<EOF
[server]
listen = ["127.0.0.1:$RG_PORT"]
ae_title = "RADGUARD"

[[peer]]
name = "bench"
ae_titles = ["BENCH"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]

[[route]]
called_ae = "VAULT"
vault = true
EOF
"$RG" serve --config "$WORK/radguard.toml" --data "$WORK/data" >"$WORK/rg.log" 2>&1 &
RG_PID=$!
wait_port "$RG_PORT"
"$DCMTK/storescu" -aet BENCH -aec VAULT 127.0.0.1 "$RG_PORT" "${FILES[@]}" >"$WORK/fill.log" 2>&1
kill "$RG_PID"; wait "$RG_PID" 2>/dev/null || true; RG_PID=""

"$DCMTK/storescp" --ignore -aet ARCHIVE "$SCP_PORT" >"$WORK/storescp.log" 2>&1 &
SCP_PID=$!
wait_port "$SCP_PORT"

direct() {
  local t0 t1
  t0="$(now)"
  "$DCMTK/storescu" -aet BENCH -aec ARCHIVE 127.0.0.1 "$SCP_PORT" "${FILES[@]}" >"$WORK/direct.log" 2>&1
  t1="$(now)"
  elapsed "$t0" "$t1"
}
replay() {
  local t0 t1 out
  rm -f "$WORK/state.sqlite"*
  t0="$(now)"
  out="$("$RG" vault replay --json --to "127.0.0.1:$SCP_PORT" --called-ae ARCHIVE \
    --data "$WORK/data" --state "$WORK/state.sqlite")"
  t1="$(now)"
  grep -q "\"sent\":$N," <<<"$out" || { log "replay did not send $N: $out"; exit 1; }
  elapsed "$t0" "$t1"
}

D=(); R=()
for rep in $(seq "$REPS"); do
  if (( rep % 2 )); then d="$(direct)"; r="$(replay)"; else r="$(replay)"; d="$(direct)"; fi
  log "rep $rep: storescu ${d}s, replay ${r}s"
  D+=("$d"); R+=("$r")
done
DM="$(printf '%s\n' "${D[@]}" | median)"
RM="$(printf '%s\n' "${R[@]}" | median)"
awk -v n="$N" -v b="$BYTES" -v d="$DM" -v r="$RM" -v reps="$REPS" 'BEGIN {
  printf "| sender (%d instances, %.0f MB, median of %d) | seconds | instances/s | MB/s |\n", n, b/1e6, reps
  printf "|---|---|---|---|\n"
  printf "| DCMTK storescu (direct) | %.2f | %.0f | %.1f |\n", d, n/d, b/1e6/d
  printf "| radguard vault replay | %.2f | %.0f | %.1f |\n", r, n/r, b/1e6/r
  printf "\nreplay / storescu throughput ratio: %.2f\n", d/r
}'
