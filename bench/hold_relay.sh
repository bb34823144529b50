#!/usr/bin/env bash
# What a hold route's relay costs over a plain refuse route: one radguard, two origin routes to
# the same storescp, the only difference `on_upstream_down = "hold"` (the relay then keeps each
# C-STORE's bytes until the upstream answers: memory up to 4 MiB, the rest in a file). Sends the
# 300-slice CT series (the memory path) and one large multi-frame instance (the spill path),
# alternating the routes, and reports radguard's CPU-s/GB and MB/s per route.
#
#   RADGUARD=target/release/radguard REPS=5 FRAMES=128 bash bench/hold_relay.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RADGUARD="${RADGUARD:-$ROOT/target/release/radguard}"
REPS="${REPS:-5}"
FRAMES="${FRAMES:-128}"
DATA="${BENCH_DATA:-$ROOT/bench/out/hold-data}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
SCP_PORT="${SCP_PORT:-21312}"
RG_PORT="${RG_PORT:-21313}"
export TCP_NODELAY=1
[ -x "$RADGUARD" ] || { echo "bench: no radguard at $RADGUARD" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA" --frames "$FRAMES" >/dev/null
WORK=$(mktemp -d)
trap 'kill $SCP_PID $RG_PID 2>/dev/null || true; chattr -R -i "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
SCP_PID=""; RG_PID=""
cat > "$WORK/rg.toml" <<TOML
[server]
listen = ["127.0.0.1:$RG_PORT"]
max_pdu_length = 65536
[[peer]]
name = "bench"
ae_titles = ["BENCH_SCU"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]
[[route]]
called_ae = "REFUSE"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
origin = true
[[route]]
called_ae = "HOLD"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
origin = true
on_upstream_down = "hold"
TOML
wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
"$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
RADGUARD_LOG=warn "$RADGUARD" serve --config "$WORK/rg.toml" --data "$WORK/data" > "$WORK/rg.out" 2> "$WORK/rg.err" & RG_PID=$!
wait_port "$SCP_PORT"; wait_port "$RG_PORT"
TCK=$(getconf CLK_TCK)
raw="$WORK/raw.tsv"; : > "$raw"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up
  for set in ct large; do
    order="REFUSE HOLD"; [ $((rep % 2)) = 1 ] && order="HOLD REFUSE"
    for route in $order; do
      bytes=$(du -cb "$DATA/$( [ $set = ct ] && echo ct-series || echo large )" | tail -1 | cut -f1)
      c0=$(cpu_ticks $RG_PID); t0=$EPOCHREALTIME
      "$DCMTK/storescu" -aet BENCH_SCU -aec "$route" 127.0.0.1 "$RG_PORT" +sd \
        "$DATA/$( [ $set = ct ] && echo ct-series || echo large )" > "$WORK/scu.log" 2>&1 \
        || { echo "storescu failed ($route $set)" >&2; cat "$WORK/scu.log" >&2; exit 1; }
      t1=$EPOCHREALTIME; c1=$(cpu_ticks $RG_PID)
      grep -q '^E:' "$WORK/scu.log" && { echo "storescu errors ($route $set)" >&2; exit 1; }
      [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\t%s\n' "$set" "$route" "$bytes" \
        "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" >> "$raw"
    done
  done
done
.venv/bin/python - "$raw" "$RADGUARD" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
print(f"radguard: {sys.argv[2]}; {len({r[0] for r in rows})} sets, reps per route: {len(rows)//4}")
print("| data | route | MB/s (median) | CPU-s/GB | hold/refuse CPU |")
print("|---|---|---:|---:|---:|")
for s in ("ct", "large"):
    cpu = {}
    for route in ("REFUSE", "HOLD"):
        rr = [r for r in rows if r[0] == s and r[1] == route]
        mbs = statistics.median(int(r[2]) / float(r[3]) / 1e6 for r in rr)
        cpu[route] = sum(float(r[4]) for r in rr) / (sum(int(r[2]) for r in rr) / 1e9)
        ratio = f"{cpu['HOLD'] / cpu['REFUSE']:.2f}" if route == "HOLD" else ""
        print(f"| {s} | {route} | {mbs:.0f} | {cpu[route]:.2f} | {ratio} |")
PY
