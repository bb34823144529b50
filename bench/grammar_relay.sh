#!/usr/bin/env bash
# Before/after relay benchmark: the relay's CPU-s/GB, MB/s and ratio to direct on plain, origin
# (fingerprint + ledger) and de-identifying routes, for two radguard binaries in the same run
# (alternating, same storescp, same data), with the direct storescu -> storescp path beside them.
# TCP_NODELAY=1 for DCMTK on every path. Used for the one data-set grammar (BASE_COMMIT=539706d,
# the default) and for the data-set firewall (BASE_COMMIT=c10059a: the last commit without it, so
# "before" is validation off and "after" validation on at the default level, safe).
#
#   BEFORE=/path/to/old/radguard bash bench/grammar_relay.sh     # REPS=3 by default
#   BASE_COMMIT=c10059a bash bench/grammar_relay.sh
#   BEFORE_TOML=... / AFTER_TOML=...: TOML appended to that side's config (see below)
#   RESTART_EVERY=10: both gateways started afresh every 10 reps (see below)
#
# BEFORE defaults to a release build of BASE_COMMIT in a git worktree at
# bench/out/before-<commit> (built on first use). Needs: Debian dcmtk, the project's .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-3}"
# ROUTES: which routes to time (default all three); REPEAT: how many times each storescu sends the
# 300-file series on its one association (default 1; longer transfers make the start-up jitter of
# a process a smaller share of each timing).
ROUTES="${ROUTES:-BENCH_SCP BENCH_ORIGIN BENCH_DEID}"
REPEAT="${REPEAT:-1}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
OUT="$ROOT/bench/out"
SCP_PORT="${SCP_PORT:-21212}"
A_PORT="${A_PORT:-21213}"
B_PORT="${B_PORT:-21214}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
BASE_COMMIT="${BASE_COMMIT:-539706d}"
mkdir -p "$OUT"
export TCP_NODELAY=1

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
[ -x "$DCMTK/storescu" ] || { echo "bench: DCMTK missing ($DCMTK/storescu)" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
cargo build --release -q -p radguard --bin radguard
AFTER="$ROOT/target/release/radguard"
if [ -z "${BEFORE:-}" ]; then
  if [ ! -d "$OUT/before-$BASE_COMMIT" ]; then git worktree add -f "$OUT/before-$BASE_COMMIT" "$BASE_COMMIT" >/dev/null; fi
  (cd "$OUT/before-$BASE_COMMIT" && CARGO_TARGET_DIR="$OUT/before-target" cargo build --release -q -p radguard --bin radguard)
  BEFORE="$OUT/before-target/release/radguard"
fi
CT_BYTES=$(( $(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1) * REPEAT ))
SERIES=(); for _ in $(seq "$REPEAT"); do SERIES+=("$DATA/ct-series"); done
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'kill $SCP_PID $A_PID $B_PID 2>/dev/null || true; chattr -R -i "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
SCP_PID=""; A_PID=""; B_PID=""

config() {
cat <<TOML
[server]
listen = ["127.0.0.1:$1"]
max_pdu_length = 65536
[[peer]]
name = "bench"
ae_titles = ["BENCH_SCU"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]
[[route]]
called_ae = "BENCH_SCP"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
[[route]]
called_ae = "BENCH_DEID"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
deidentify = { profile = "basic", options = ["retain-long-modified-dates"], key_file = "$WORK/deid.key" }
[[route]]
called_ae = "BENCH_ORIGIN"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
origin = true
TOML
}
printf '%s\n' 7f3a9c0e5b2d4f61a8e7c3b9d0f1e2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6 > "$WORK/deid.key"
config "$A_PORT" > "$WORK/before.toml"
config "$B_PORT" > "$WORK/after.toml"
# Extra TOML for one side, e.g. the same binary with detection off as "before":
#   BEFORE=target/release/radguard BEFORE_TOML=$'[detect]\nenabled = false' bash bench/grammar_relay.sh
printf '%s\n' "${BEFORE_TOML:-}" >> "$WORK/before.toml"
printf '%s\n' "${AFTER_TOML:-}" >> "$WORK/after.toml"

wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
now() { echo "$EPOCHREALTIME"; }

"$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
# BEFORE_DATA / AFTER_DATA: a side's data folder (default a fresh one), e.g. a filled vault.
start_gateways() {
  RADGUARD_LOG=warn "$BEFORE" serve --config "$WORK/before.toml" --data "${BEFORE_DATA:-$WORK/a-data}" > "$WORK/a.out" 2> "$WORK/a.err" & A_PID=$!
  RADGUARD_LOG=warn "$AFTER" serve --config "$WORK/after.toml" --data "${AFTER_DATA:-$WORK/b-data}" > "$WORK/b.out" 2> "$WORK/b.err" & B_PID=$!
  wait_port "$A_PORT"; wait_port "$B_PORT"
}
# RESTART_EVERY=N: both gateways are stopped and started again (fresh default data folders)
# every N reps. Two processes keep what they drew at start for a whole run — where the loader
# and allocator put things, which threads share a core — and an A/A run of two identical
# gateways showed their CPU per GB 7-12 % apart (RESULTS §18): within one run that difference
# is fixed and looks like an effect. Restarting makes it noise that the reps average out.
stop_gateways() {
  kill "$A_PID" "$B_PID" 2>/dev/null || true
  wait "$A_PID" "$B_PID" 2>/dev/null || true
  for d in a-data b-data; do chattr -R -i "$WORK/$d" 2>/dev/null || true; rm -rf "${WORK:?}/$d"; done
}
start_gateways
wait_port "$SCP_PORT"

results="$OUT/grammar-relay-raw.tsv"
: > "$results"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
  if [ "${RESTART_EVERY:-0}" -gt 0 ] && [ "$rep" -gt 1 ] && [ $(((rep - 1) % RESTART_EVERY)) = 0 ]; then
    stop_gateways; start_gateways
  fi
  for route in $ROUTES; do
    # Alternate which binary goes first, so neither gains from its position in the rep.
    order="direct before after"; [ $((rep % 2)) = 1 ] && order="direct after before"
    for bin in $order; do
      [ $bin = direct ] && [ $route != "${ROUTES%% *}" ] && continue
      case $bin in direct) port=$SCP_PORT; pid=$SCP_PID;; before) port=$A_PORT; pid=$A_PID;; after) port=$B_PORT; pid=$B_PID;; esac
      c0=$(cpu_ticks $pid); t0=$(now)
      "$DCMTK/storescu" -aet BENCH_SCU -aec "$route" 127.0.0.1 "$port" +sd "${SERIES[@]}" > "$WORK/scu.log" 2>&1 \
        || { echo "storescu failed ($bin $route):" >&2; cat "$WORK/scu.log" >&2; exit 1; }
      t1=$(now); c1=$(cpu_ticks $pid)
      grep -q '^E:' "$WORK/scu.log" && { echo "storescu reported errors ($bin $route)" >&2; cat "$WORK/scu.log" >&2; exit 1; }
      [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$route" "$bin" "$CT_BYTES" \
        "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" "$rep" >> "$results"
    done
  done
done

.venv/bin/python - "$results" "$CT_BYTES" "$BEFORE" "$REPEAT" <<'PY' | tee "$OUT/grammar-relay-latest.md"
import statistics, sys, os, datetime, random
raw, ct_bytes, before, repeat = sys.argv[1:5]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
print(f"## Before/after relay benchmark {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC\n")
print(f"machine: {os.cpu_count()} cores, {cpu}; CT = 300 files x {repeat} / {int(ct_bytes)/1e6:.1f} MB per association; "
      f"TCP_NODELAY=1; median of the timed runs after 1 warm-up; before = {before}\n")
print("| route | direct MB/s | before MB/s | after MB/s | before/direct | after/direct | before CPU-s/GB | after CPU-s/GB | after/before CPU |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
d = [float(r[3]) for r in rows if r[1] == "direct"]
b = int(ct_bytes)
md = statistics.median(d)
labels = (("BENCH_SCP", "plain relay"), ("BENCH_ORIGIN", "origin (fingerprint + ledger)"), ("BENCH_DEID", "de-identifying"))
timed = {r[0] for r in rows}
for route, label in labels:
    if route not in timed:
        continue
    out = {}
    for binary in ("before", "after"):
        rr = [r for r in rows if r[0] == route and r[1] == binary]
        t = statistics.median(float(r[3]) for r in rr)
        cpu_gb = sum(float(r[4]) for r in rr) / (sum(int(r[2]) for r in rr) / 1e9)
        out[binary] = (b / t / 1e6, cpu_gb)
    direct = b / md / 1e6
    print(f"| {label} | {direct:.0f} | {out['before'][0]:.0f} | {out['after'][0]:.0f} | "
          f"{out['before'][0]/direct:.2f} | {out['after'][0]/direct:.2f} | "
          f"{out['before'][1]:.2f} | {out['after'][1]:.2f} | {out['after'][1]/out['before'][1]:.2f} |")

# Paired: in each rep the two sides ran back to back (their order alternating), so drift in the
# machine's load falls on both. The difference after - before of their ratios to direct (the
# median direct time of the run: a rep's own direct run would add its noise to both), per rep:
# median, and a 95 % bootstrap interval of that median (10,000 resamples of the reps, fixed seed).
direct_by_rep = {r[5]: md for r in rows if r[1] == "direct"}
print("\n| route | reps | median of (after - before)/direct per rep | 95 % interval |")
print("|---|---:|---:|---|")
rng = random.Random(20261207)
for route, label in labels:
    if route not in timed:
        continue
    sides = {}
    for r in rows:
        if r[0] == route and r[1] in ("before", "after"):
            sides.setdefault(r[5], {})[r[1]] = float(r[3])
    diffs = [direct_by_rep[k] / s["after"] - direct_by_rep[k] / s["before"]
             for k, s in sides.items() if len(s) == 2 and k in direct_by_rep]
    boots = sorted(statistics.median(rng.choices(diffs, k=len(diffs))) for _ in range(10000))
    print(f"| {label} | {len(diffs)} | {statistics.median(diffs):+.3f} | "
          f"{boots[249]:+.3f} .. {boots[9749]:+.3f} |")
PY
