#!/usr/bin/env bash
# The relay with its operator console watched vs not, in one run: the same release binary on
# both sides of bench/grammar_relay.sh (alternating, same storescp, same data, direct path
# beside them), "before" with `[admin] enabled = false`, "after" with its console on
# 127.0.0.1:$ADMIN_PORT, scraped every second by a real Prometheus and shown in a headless
# Chromium on the live overview (server-sent events). Target: "after" no more than 0.01 lower
# than "before" in ratio to direct.
#
#   REPS=40 bash bench/console.sh     # plain relay, the series 8 times per association
#   ROUTES="BENCH_SCP BENCH_ORIGIN BENCH_DEID" REPEAT=2 REPS=30 bash bench/console.sh
#
# Both gateways are started afresh every RESTART_EVERY reps (default 10; the browser's event
# stream reconnects by itself): a pair of processes keeps a bias of its own for its lifetime, so
# one pair per run made run-to-run differences of ±0.015 (RESULTS §24).
#
# Read the paired table: per rep, the watched side's ratio to direct minus the unwatched one's,
# its median and a 95 % bootstrap interval. An A/A run of the method (the same config on both
# sides) is `BEFORE=target/release/radguard ROUTES=BENCH_SCP REPEAT=8 BEFORE_TOML=$'[admin]\nenabled
# = false' AFTER_TOML=$'[admin]\nenabled = false' bash bench/grammar_relay.sh`.
#
# Needs: what grammar_relay.sh needs, plus Debian's prometheus and chromium
# (scripts/setup-radguard-web.sh, scripts/setup-web-test.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ADMIN_PORT="${ADMIN_PORT:-21280}"
PROM_PORT="${PROM_PORT:-21290}"
command -v prometheus >/dev/null || { echo "bench: prometheus missing" >&2; exit 2; }
command -v chromium >/dev/null || { echo "bench: chromium missing" >&2; exit 2; }
WORK=$(mktemp -d)
PROM_PID=""; CHROME_PID=""
cleanup() {
  [ -n "$CHROME_PID" ] && kill "$CHROME_PID" 2>/dev/null || true
  [ -n "$PROM_PID" ] && kill "$PROM_PID" 2>/dev/null || true
  pkill -f "user-data-dir=$WORK/chrome" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

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
  --web.listen-address="127.0.0.1:$PROM_PORT" > "$WORK/prometheus.log" 2>&1 &
PROM_PID=$!

# The browser opens the overview as soon as the watched gateway's console answers.
(
  for _ in $(seq 1 900); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/" > /dev/null && break
    sleep 1
  done
  exec chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$WORK/chrome" \
    "http://127.0.0.1:$ADMIN_PORT/#/overview"
) > "$WORK/chromium.log" 2>&1 &
CHROME_PID=$!

cargo build --release -q -p radguard --bin radguard
ROUTES="${ROUTES:-BENCH_SCP}" REPEAT="${REPEAT:-8}" REPS="${REPS:-40}" RESTART_EVERY="${RESTART_EVERY:-10}" \
BEFORE="$ROOT/target/release/radguard" \
BEFORE_TOML=$'[admin]\nenabled = false' \
AFTER_TOML=$'[admin]\nlisten = "127.0.0.1:'"$ADMIN_PORT"$'"' \
  bash bench/grammar_relay.sh
# The run's paired reps, kept for pooling with other runs (bench/paired_pool.py).
cp bench/out/grammar-relay-raw.tsv "bench/out/console-raw-$(date -u +%Y%m%dT%H%M).tsv"

# The watchers watched: Prometheus scraped the console (failed scrapes counted before and after
# the first successful one: before it, the watched gateway was not started yet), the browser
# held its event stream.
curl -sf "http://127.0.0.1:$PROM_PORT/api/v1/query" \
  --data-urlencode 'query=up{job="radguard"}[1h]' | python3 -c '
import json, sys
values = [int(v) for _, v in json.load(sys.stdin)["data"]["result"][0]["values"]]
first = values.index(1) if 1 in values else len(values)
after = values[first:]
print(f"prometheus: {sum(after)} successful of {len(after)} scrapes of the watched console since its "
      f"first answer (1 s interval; {first} before the gateway was up)")
'
# What the watchers themselves took of the 2 cores (user + system CPU seconds since they started).
cpu_of() { local t=0; for p in "$@"; do
  [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "scale=1; $t / $(getconf CLK_TCK)" | bc; }
echo "watchers' CPU: chromium $(cpu_of $(pgrep -f "user-data-dir=$WORK/chrome")) s, prometheus $(cpu_of "$PROM_PID") s, over $SECONDS s of this script"
if kill -0 "$CHROME_PID" 2>/dev/null; then
  echo "chromium: the overview stayed open for the whole run"
else
  echo "chromium: EXITED early (see its log below)"; tail -5 "$WORK/chromium.log"
fi
