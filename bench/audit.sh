#!/usr/bin/env bash
# Audit trail benchmarks, release build, SQLite and PostgreSQL:
#
#  1. Writer throughput: records/s of the audit writer alone (synthetic C-ECHO associations on
#     the event bus, 4 events each, committed to the store with signed checkpoints): the
#     radguard-audit example audit_bench, 3 runs per store, median reported.
#  2. A burst of BURST C-ECHO associations through the gateway (examples/echo_bench: sequential
#     associations, each A-ASSOCIATE -> C-ECHO -> A-RELEASE, relayed to DCMTK storescp): the
#     trail must hold every association (association-accepted == association-released == BURST,
#     no events-lost record) and `radguard audit verify` must pass. Reports the burst time, the
#     time the writer needed after the last association to have everything committed, and the
#     end-to-end records/s.
#
# Usage:  bash bench/audit.sh [WRITER_ASSOCIATIONS] [BURST]      (defaults 5000 and 10000)
# Needs:  Debian dcmtk (/usr/bin/storescp); for PostgreSQL scripts/setup-radguard-audit.sh (the
#         test cluster on 127.0.0.1:55432, or RADGUARD_TEST_PG). Everything runs on 127.0.0.1.
# Env:    RG_PORT, SCP_PORT (defaults 21213, 21212); RADGUARD_TEST_PG.
# Prints a Markdown table on stdout (progress on stderr); exit 1 if a burst was not fully
# recorded or did not verify.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${1:-5000}"
BURST="${2:-10000}"
PG="${RADGUARD_TEST_PG:-host=127.0.0.1 port=55432 user=radguard password=radguard dbname=radguard_test}"
RG_PORT="${RG_PORT:-21213}"
SCP_PORT="${SCP_PORT:-21212}"
DCMTK="${DCMTK_BIN:-/usr/bin}"

log() { printf '[bench/audit] %s\n' "$*" >&2; }
[ -x "$DCMTK/storescp" ] || { log "DCMTK missing ($DCMTK/storescp): run scripts/setup-test-env.sh"; exit 2; }
command -v psql >/dev/null || { log "psql missing: run scripts/setup-radguard-audit.sh"; exit 2; }
psql -X -q -d "$PG" -tAc 'SELECT 1' >/dev/null \
  || { log "PostgreSQL unreachable ($PG): run scripts/setup-radguard-audit.sh"; exit 2; }

log "building (release): radguard, echo_bench, audit_bench"
cargo build -q --release -p radguard --bin radguard --example echo_bench
cargo build -q --release -p radguard-audit --example audit_bench
RG="$ROOT/target/release/radguard"
ECHO_BENCH="$ROOT/target/release/examples/echo_bench"
AUDIT_BENCH="$ROOT/target/release/examples/audit_bench"

WORK="$(mktemp -d)"
SCHEMAS=()
SCP_PID=""; RG_PID=""
cleanup() {
  for p in $RG_PID $SCP_PID; do kill "$p" 2>/dev/null || true; done
  for s in "${SCHEMAS[@]}"; do psql -X -q -d "$PG" -c "DROP SCHEMA IF EXISTS $s CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b-a}'; }

# ---------------------------------------------------------------- 1. writer throughput
writer_rate() { # STORE -> median records/s of 3 runs
  local store="$1" out rates=()
  for run in 1 2 3; do
    out="$("$AUDIT_BENCH" "$store" "$N")"
    log "audit_bench $run: $out"
    [[ "$out" == *"lost_events=0 "* ]] || { log "events lost in the writer benchmark"; exit 1; }
    rates+=("$(sed -n 's/.*records_per_s=\([0-9]*\).*/\1/p' <<<"$out")")
  done
  printf '%s\n' "${rates[@]}" | median
}
W_SQLITE="$(writer_rate "$WORK/writer.sqlite")"
S="bench_writer_$$"; SCHEMAS+=("$S")
W_PG="$(writer_rate "postgresql:${PG}#schema=${S}")"

# ---------------------------------------------------------------- 2. burst through the gateway
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; log "port $1 not up"; exit 1; }

mkdir -p "$WORK/recv"
TCP_NODELAY=1 "$DCMTK/storescp" -aet BENCH_SCP -od "$WORK/recv" "$SCP_PORT" >"$WORK/storescp.log" 2>&1 &
SCP_PID=$!
wait_port "$SCP_PORT"

count() { # STORE KIND -> number of records of that kind
  "$RG" audit search --store "$1" --kind "$2" --limit 0 --json 2>/dev/null | grep -c . || true
}

burst() { # NAME AUDIT_TOML STORE -> sets ROW (the table fields)
  local name="$1" audit="$2" store="$3" data="$WORK/data-$1"
  mkdir -p "$data"
  cat >"$WORK/$name.toml" <<TOML
[server]
listen = ["127.0.0.1:$RG_PORT"]
[[peer]]
name = "bench"
ae_titles = ["BENCH_SCU"]
addresses = ["127.0.0.1/32"]
allow = ["echo"]
[[route]]
called_ae = "BENCH_SCP"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
$audit
TOML
  "$RG" serve --config "$WORK/$name.toml" --data "$data" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  RG_PID=$!
  wait_port "$RG_PORT"
  # Admitted only once the audit writer has reached the store.
  for _ in $(seq 200); do [ "$(count "$store" application-start)" -ge 1 ] && break; sleep 0.05; done
  log "$name: $BURST C-ECHO associations through the gateway"
  local t0 t1 t2 echo_json
  t0="$(now)"
  echo_json="$("$ECHO_BENCH" "127.0.0.1:$RG_PORT" BENCH_SCU BENCH_SCP "$BURST")"
  t1="$(now)"
  local released=0
  for _ in $(seq 1200); do
    released="$(count "$store" association-released)"
    [ "$released" -ge "$BURST" ] && break
    sleep 0.05
  done
  t2="$(now)"
  kill -TERM "$RG_PID"; wait "$RG_PID" || true; RG_PID=""
  local accepted requested lost verify records ok
  requested="$(count "$store" association-requested)"
  accepted="$(count "$store" association-accepted)"
  released="$(count "$store" association-released)"
  lost="$(count "$store" events-lost)"
  verify="$("$RG" audit verify --store "$store" --key "$data/audit-signing.key.pub" --json || true)"
  records="$(sed -n 's/.*"records":\([0-9]*\).*/\1/p' <<<"$verify")"
  [[ "$verify" == *'"ok":true'* ]] && ok=pass || ok=FAIL
  log "$name: echo_bench $echo_json; requested=$requested accepted=$accepted released=$released lost=$lost records=$records verify=$ok"
  local median_us burst_s lag_s e2e
  median_us="$(sed -n 's/.*"median_us":\([0-9]*\).*/\1/p' <<<"$echo_json")"
  burst_s="$(elapsed "$t0" "$t1")"
  lag_s="$(elapsed "$t1" "$t2")"
  e2e="$(awk -v r="$records" -v a="$t0" -v b="$t2" 'BEGIN {printf "%.0f", r/(b-a)}')"
  local full=yes
  if [ "$accepted" -ne "$BURST" ] || [ "$released" -ne "$BURST" ] || [ "$requested" -ne "$BURST" ] || [ "$lost" -ne 0 ] || [ "$ok" != pass ]; then
    full=NO; FAILED=1
  fi
  ROW="$accepted/$released|$lost|$full|$burst_s|$median_us|$lag_s|$records|$e2e|$ok"
}

FAILED=0
ROW=""
burst sqlite "[audit]
node = \"bench-burst\"" "$WORK/data-sqlite/audit.sqlite"
B_SQLITE="$ROW"
S="bench_burst_$$"; SCHEMAS+=("$S")
burst postgresql "[audit]
node = \"bench-burst\"
store = \"postgresql\"
postgresql = \"$PG\"
postgresql_schema = \"$S\"" "postgresql:${PG}#schema=${S}"
B_PG="$ROW"

row() { # STORE WRITER_RATE BURST_FIELDS
  IFS='|' read -r recorded lost full burst_s median_us lag_s records e2e ok <<<"$3"
  printf '| %s | %s | %s | %s | %s | %s | %s s | %s | %s s | %s | %s |\n' \
    "$1" "$2" "$BURST" "$recorded" "$lost" "$full" "$burst_s" "$median_us" "$lag_s" "$e2e" "$ok"
}
echo
echo "Audit trail, release build, $(nproc) CPU(s), $(date -u +%Y-%m-%d). Writer: $N synthetic C-ECHO associations (4 events, 4 records each), median of 3 runs. Burst: $BURST sequential C-ECHO associations through radguard to DCMTK storescp."
echo
echo "| store | writer records/s | burst associations | recorded accepted/released | events lost | fully recorded | burst time | echo median µs | writer lag after burst | end-to-end records/s | verify |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
row SQLite "$W_SQLITE" "$B_SQLITE"
row PostgreSQL "$W_PG" "$B_PG"
exit "$FAILED"
