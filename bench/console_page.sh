#!/usr/bin/env bash
# What the console's live overview costs the browser that shows it while the gateway relays: one
# release gateway with its console on 127.0.0.1:$ADMIN_PORT, a headless Chromium on the overview
# (server-sent events), and, alternating, an "active" window (storescu sends the CT series
# $REPEAT times on one association through the gateway to storescp) and an "idle" window of the
# same length (nothing sent). Chromium's CPU (user + system, every process of its profile) is
# read at each window's edges. The difference active − idle is the page's work caused by the
# traffic it shows (live rows, totals, chart), which competes with the relay for the same cores
# when the browser runs on the gateway's host (bench/console.sh).
#
#   REPS=10 bash bench/console_page.sh
#   BIN=/path/to/other/radguard REPS=10 bash bench/console_page.sh   # another build's page
#
# Needs: Debian dcmtk and chromium, the project's .venv (bench data).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-10}"
REPEAT="${REPEAT:-8}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
SCP_PORT="${SCP_PORT:-21412}"
GW_PORT="${GW_PORT:-21413}"
ADMIN_PORT="${ADMIN_PORT:-21480}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
BIN="${BIN:-$ROOT/target/release/radguard}"
export TCP_NODELAY=1

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
[ -x "$DCMTK/storescu" ] || { echo "bench: DCMTK missing ($DCMTK/storescu)" >&2; exit 2; }
command -v chromium >/dev/null || { echo "bench: chromium missing" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p radguard --bin radguard
CT_BYTES=$(( $(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1) * REPEAT ))
SERIES=(); for _ in $(seq "$REPEAT"); do SERIES+=("$DATA/ct-series"); done
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
SCP_PID=""; GW_PID=""; CHROME_PID=""
cleanup() {
  for p in $CHROME_PID $SCP_PID $GW_PID; do kill "$p" 2>/dev/null || true; done
  pkill -f "user-data-dir=$WORK/chrome" 2>/dev/null || true
  chattr -R -i "$WORK" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/gw.toml" <<TOML
[server]
listen = ["127.0.0.1:$GW_PORT"]
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
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
TOML

wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
# Chromium's CPU ticks, all processes of this profile (renderer, browser, utility).
chrome_ticks() {
  local t=0 p
  for p in $(pgrep -f "user-data-dir=$WORK/chrome"); do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

"$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
RADGUARD_LOG=warn "$BIN" serve --config "$WORK/gw.toml" --data "$WORK/data" > "$WORK/gw.out" 2> "$WORK/gw.err" & GW_PID=$!
wait_port "$SCP_PORT"; wait_port "$GW_PORT"; wait_port "$ADMIN_PORT"
chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$WORK/chrome" \
  "http://127.0.0.1:$ADMIN_PORT/#/overview" > "$WORK/chromium.log" 2>&1 & CHROME_PID=$!
for _ in $(seq 300); do
  ss -tn state established "( sport = :$ADMIN_PORT )" | grep -q ESTAB && break; sleep 0.1
done
sleep 3

results="$WORK/raw.tsv"
: > "$results"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
  c0=$(chrome_ticks); t0=$EPOCHREALTIME
  "$DCMTK/storescu" -aet BENCH_SCU -aec BENCH_SCP 127.0.0.1 "$GW_PORT" +sd "${SERIES[@]}" > "$WORK/scu.log" 2>&1 \
    || { echo "storescu failed:" >&2; cat "$WORK/scu.log" >&2; exit 1; }
  t1=$EPOCHREALTIME; c1=$(chrome_ticks)
  active=$(echo "$t1 - $t0" | bc -l)
  # The page finishes what the association's end caused (its last rows, totals, chart) inside
  # the active window's account: wait as long again as the association's last report interval.
  sleep 2
  c2=$(chrome_ticks); t2=$EPOCHREALTIME
  sleep "$active"
  sleep 2
  c3=$(chrome_ticks); t3=$EPOCHREALTIME
  [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\t%s\n' "$rep" \
    "$(echo "$t2 - $t0" | bc -l)" "$(echo "($c2 - $c0) / $TCK" | bc -l)" \
    "$(echo "$t3 - $t2" | bc -l)" "$(echo "($c3 - $c2) / $TCK" | bc -l)" >> "$results"
done
kill -0 "$CHROME_PID" 2>/dev/null || { echo "chromium EXITED early" >&2; tail -5 "$WORK/chromium.log" >&2; exit 1; }

.venv/bin/python - "$results" "$CT_BYTES" <<'PY'
import statistics, sys, datetime, os
raw, nbytes = sys.argv[1], int(sys.argv[2])
rows = [[float(x) for x in l.split("\t")[1:]] for l in open(raw) if l.strip()]
print(f"## Console page cost {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
      f"load {open('/proc/loadavg').read().split()[0]}, {len(rows)} reps, {nbytes/1e9:.2f} GB per association\n")
act = [c / t for t, c, _, _ in rows]
idle = [c / t for _, _, t, c in rows]
diff = [a - i for a, i in zip(act, idle)]
print("| chromium CPU-s per s | active (association running) | idle | active − idle |")
print("|---|---:|---:|---:|")
print(f"| median | {statistics.median(act):.4f} | {statistics.median(idle):.4f} | {statistics.median(diff):.4f} |")
print(f"| mean | {statistics.mean(act):.4f} | {statistics.mean(idle):.4f} | {statistics.mean(diff):.4f} |")
print(f"\nactive − idle as a share of the {os.cpu_count()}-core machine: "
      f"{100 * statistics.median(diff) / os.cpu_count():.2f} % (median)")
PY
