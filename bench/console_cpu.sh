#!/usr/bin/env bash
# What watching the operator console costs the gateway itself, in CPU seconds per GB: the same
# release binary twice, "off" with `[admin] enabled = false` and "on" with its console on
# 127.0.0.1:$ADMIN_PORT, scraped every second by a real Prometheus and shown in a headless
# Chromium on the live overview (server-sent events). Both relay the same series to the same
# storescp, alternating (order swapped every rep); each side's user + system CPU time
# (/proc/PID/stat) is read before and after its transfer. Throughput is not compared: this is
# meant to run on a loaded machine, where only the CPU a process spends per byte is stable.
#
#   REPS=40 bash bench/console_cpu.sh            # the series 8 times per association
#   ON_TOML=$'[admin]\nenabled = false' REPS=40 bash bench/console_cpu.sh   # A/A: the method's noise
#   PERF=1 REPS=10 bash bench/console_cpu.sh     # also `perf record --call-graph dwarf` of both
#
# Prints CPU-s/GB per side, and per rep the ratio on/off of the CPU per GB: its median and a
# 95 % bootstrap interval of that median. With PERF=1 the profiles are in bench/out/perf-{on,off}.data
# and bench/perf_share.py prints, per side, the share of the gateway's samples spent in the
# console's code, the event bus, the audit trail, detection and the relay (the CPU numbers of
# such a run include perf's own cost on both sides).
#
# Needs: Debian dcmtk, prometheus, chromium, the project's .venv (bench data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-40}"
REPEAT="${REPEAT:-8}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
OUT="$ROOT/bench/out"
SCP_PORT="${SCP_PORT:-21312}"
OFF_PORT="${OFF_PORT:-21313}"
ON_PORT="${ON_PORT:-21314}"
ADMIN_PORT="${ADMIN_PORT:-21380}"
PROM_PORT="${PROM_PORT:-21390}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
BIN="${BIN:-$ROOT/target/release/radguard}"
mkdir -p "$OUT"
export TCP_NODELAY=1

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
[ -x "$DCMTK/storescu" ] || { echo "bench: DCMTK missing ($DCMTK/storescu)" >&2; exit 2; }
command -v prometheus >/dev/null || { echo "bench: prometheus missing" >&2; exit 2; }
command -v chromium >/dev/null || { echo "bench: chromium missing" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p radguard --bin radguard
CT_BYTES=$(( $(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1) * REPEAT ))
SERIES=(); for _ in $(seq "$REPEAT"); do SERIES+=("$DATA/ct-series"); done
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
SCP_PID=""; OFF_PID=""; ON_PID=""; PROM_PID=""; CHROME_PID=""; PERF_PIDS=()
cleanup() {
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for p in $CHROME_PID $PROM_PID $SCP_PID $OFF_PID $ON_PID; do kill "$p" 2>/dev/null || true; done
  pkill -f "user-data-dir=$WORK/chrome" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

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
TOML
}
config "$OFF_PORT" > "$WORK/off.toml"
config "$ON_PORT" > "$WORK/on.toml"
DEFAULT_OFF=$'[admin]\nenabled = false'
DEFAULT_ON=$'[admin]\nlisten = "127.0.0.1:'"$ADMIN_PORT"'"'
printf '%s\n' "${OFF_TOML:-$DEFAULT_OFF}" >> "$WORK/off.toml"
printf '%s\n' "${ON_TOML:-$DEFAULT_ON}" >> "$WORK/on.toml"

wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

"$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
RADGUARD_LOG=warn "$BIN" serve --config "$WORK/off.toml" --data "$WORK/off-data" > "$WORK/off.out" 2> "$WORK/off.err" & OFF_PID=$!
RADGUARD_LOG=warn "$BIN" serve --config "$WORK/on.toml" --data "$WORK/on-data" > "$WORK/on.out" 2> "$WORK/on.err" & ON_PID=$!
wait_port "$SCP_PORT"; wait_port "$OFF_PORT"; wait_port "$ON_PORT"

WATCHED=""
if curl -sf "http://127.0.0.1:$ADMIN_PORT/" > /dev/null; then
  WATCHED=1
  cat > "$WORK/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: radguard
    static_configs:
      - targets: ['127.0.0.1:$ADMIN_PORT']
YML
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 & PROM_PID=$!
  chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$WORK/chrome" \
    "http://127.0.0.1:$ADMIN_PORT/#/overview" > "$WORK/chromium.log" 2>&1 & CHROME_PID=$!
  # The page holds its event stream before anything is timed.
  for _ in $(seq 300); do
    ss -tn state established "( sport = :$ADMIN_PORT )" | grep -q ESTAB && break; sleep 0.1
  done
  sleep 2
fi

if [ -n "${PERF:-}" ]; then
  for side in off on; do
    case $side in off) pid=$OFF_PID;; on) pid=$ON_PID;; esac
    perf record --call-graph "${PERF_CALLGRAPH:-dwarf,16384}" -F "${PERF_FREQ:-199}" -p "$pid" \
      -o "$OUT/perf-$side.data" > "$WORK/perf-$side.log" 2>&1 & PERF_PIDS+=($!)
  done
  sleep 1
fi

results="$OUT/console-cpu-raw.tsv"
: > "$results"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
  order="off on"; [ $((rep % 2)) = 1 ] && order="on off"
  for side in $order; do
    case $side in off) port=$OFF_PORT; pid=$OFF_PID;; on) port=$ON_PORT; pid=$ON_PID;; esac
    c0=$(cpu_ticks $pid); t0=$EPOCHREALTIME
    "$DCMTK/storescu" -aet BENCH_SCU -aec BENCH_SCP 127.0.0.1 "$port" +sd "${SERIES[@]}" > "$WORK/scu.log" 2>&1 \
      || { echo "storescu failed ($side):" >&2; cat "$WORK/scu.log" >&2; exit 1; }
    t1=$EPOCHREALTIME; c1=$(cpu_ticks $pid)
    grep -q '^E:' "$WORK/scu.log" && { echo "storescu reported errors ($side)" >&2; cat "$WORK/scu.log" >&2; exit 1; }
    [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$side" "$CT_BYTES" \
      "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" >> "$results"
  done
done

if [ -n "$WATCHED" ]; then
  kill -0 "$CHROME_PID" 2>/dev/null && echo "chromium: the overview stayed open for the whole run" \
    || { echo "chromium: EXITED early"; tail -5 "$WORK/chromium.log"; }
  curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" --data-urlencode 'query=up{job="radguard"}[1h]' \
    | .venv/bin/python -c 'import json,sys; v=[int(x) for _,x in json.load(sys.stdin)["data"]["result"][0]["values"]]; print(f"prometheus: {sum(v)} successful of {len(v)} scrapes")'
else
  echo "the \"on\" side has no console (A/A run)"
fi

if [ -n "${PERF:-}" ]; then
  for p in "${PERF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PERF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PERF_PIDS=()
  for side in off on; do
    echo "perf, $side side (share of the gateway's samples whose stack passes through):"
    perf script -i "$OUT/perf-$side.data" 2>/dev/null | python3 bench/perf_share.py
  done
fi

.venv/bin/python - "$results" "$REPEAT" <<'PY' | tee "$OUT/console-cpu-latest.md"
import statistics, sys, random, datetime, os
raw, repeat = sys.argv[1:3]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
print(f"## Console CPU {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
      f"series x {repeat} per association, load {open('/proc/loadavg').read().split()[0]}\n")
per = {}
for rep, side, b, t, cpu in rows:
    per.setdefault(rep, {})[side] = (int(b), float(t), float(cpu))
def cpu_gb(side):
    rr = [p[side] for p in per.values() if side in p]
    return sum(c for _, _, c in rr) / (sum(b for b, _, _ in rr) / 1e9)
ratios = [p["on"][2] / p["off"][2] for p in per.values() if len(p) == 2 and p["off"][2] > 0]
rng = random.Random(20261207)
boots = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(10000))
print("| reps | off CPU-s/GB | on CPU-s/GB | on/off (sums) | median on/off per rep | 95 % interval |")
print("|---:|---:|---:|---:|---:|---|")
print(f"| {len(ratios)} | {cpu_gb('off'):.3f} | {cpu_gb('on'):.3f} | {cpu_gb('on')/cpu_gb('off'):.3f} | "
      f"{statistics.median(ratios):.3f} | {boots[249]:.3f} .. {boots[9749]:.3f} |")
PY
