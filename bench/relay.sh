#!/usr/bin/env bash
# Relay benchmark: DCMTK storescu -> storescp directly vs. through radguard, in the same run,
# alternating, under both Nagle settings. Reports MB/s, the through/direct ratio, radguard's CPU
# seconds per GB relayed, its peak RSS, and the median C-ECHO association time direct vs through.
#
#   bash bench/relay.sh            # REPS=3 by default; MODES="nodelay default"
#   REPS=5 MODES=nodelay bash bench/relay.sh
#
# Needs: Debian dcmtk (/usr/bin/storescu, storescp), the project's .venv (pydicom, numpy) for the
# data generator. Everything runs on 127.0.0.1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-3}"
MODES="${MODES:-nodelay default}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
OUT="$ROOT/bench/out"
SCP_PORT="${SCP_PORT:-21112}"
RG_PORT="${RG_PORT:-21113}"
RG2_PORT="${RG2_PORT:-21114}"   # a second gateway with the audit trail off (issue 4's ratio)
DCMTK="${DCMTK_BIN:-/usr/bin}"
mkdir -p "$OUT"

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
[ -x "$DCMTK/storescu" ] || { echo "bench: DCMTK missing ($DCMTK/storescu)" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
cargo build --release -q -p radguard --bin radguard --example echo_bench
RG="$ROOT/target/release/radguard"
ECHO_BENCH="$ROOT/target/release/examples/echo_bench"
CT_BYTES=$(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1)
LG_FILE="$DATA/large/MF_0001.dcm"
LG_BYTES=$(stat -c %s "$LG_FILE")
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'kill $SCP_PID $RG_PID $RG2_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
SCP_PID=""; RG_PID=""; RG2_PID=""

cat > "$WORK/radguard.toml" <<TOML
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
called_ae = "BENCH_SCP"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"

# The same upstream through a de-identifying route and through an origin (ledger) route.
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
printf '%s\n' 7f3a9c0e5b2d4f61a8e7c3b9d0f1e2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6 > "$WORK/deid.key"
sed -e "s/127.0.0.1:$RG_PORT/127.0.0.1:$RG2_PORT/" "$WORK/radguard.toml" > "$WORK/radguard-noaudit.toml"
printf '\n[audit]\nenabled = false\n' >> "$WORK/radguard-noaudit.toml"

wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
now() { echo "$EPOCHREALTIME"; }

results="$OUT/relay-raw.tsv"
: > "$results"
for mode in $MODES; do
  if [ "$mode" = nodelay ]; then export TCP_NODELAY=1; else unset TCP_NODELAY; fi
  "$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
  RADGUARD_LOG=warn "$RG" serve --config "$WORK/radguard.toml" --data "$WORK/rg-data" > "$WORK/rg.out" 2> "$WORK/rg.err" & RG_PID=$!
  RADGUARD_LOG=warn "$RG" serve --config "$WORK/radguard-noaudit.toml" --data "$WORK/rg2-data" > "$WORK/rg2.out" 2> "$WORK/rg2.err" & RG2_PID=$!
  wait_port "$SCP_PORT"; wait_port "$RG_PORT"; wait_port "$RG2_PORT"
  for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
    for what in ct large; do
      paths="direct via"
      # De-identifying and origin routes, in the same run (CT series, NODELAY only).
      [ "$what" = ct ] && [ "$mode" = nodelay ] && paths="direct via deid origin noaudit"
      for path in $paths; do
        port=$SCP_PORT; [ $path != direct ] && port=$RG_PORT
        pid=$RG_PID; [ $path = noaudit ] && { port=$RG2_PORT; pid=$RG2_PID; }
        aec=BENCH_SCP; [ $path = deid ] && aec=BENCH_DEID; [ $path = origin ] && aec=BENCH_ORIGIN
        if [ $what = ct ]; then args=(+sd "$DATA/ct-series"); bytes=$CT_BYTES; else args=("$LG_FILE"); bytes=$LG_BYTES; fi
        c0=$(cpu_ticks $pid); t0=$(now)
        "$DCMTK/storescu" -aet BENCH_SCU -aec "$aec" 127.0.0.1 "$port" "${args[@]}" > "$WORK/scu.log" 2>&1 \
          || { echo "storescu failed ($mode $what $path):" >&2; cat "$WORK/scu.log" >&2; exit 1; }
        t1=$(now); c1=$(cpu_ticks $pid)
        grep -q '^E:' "$WORK/scu.log" && { echo "storescu reported errors" >&2; cat "$WORK/scu.log" >&2; exit 1; }
        [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$what" "$path" "$bytes" \
          "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" >> "$results"
      done
    done
  done
  echo_direct=$("$ECHO_BENCH" "127.0.0.1:$SCP_PORT" BENCH_SCU BENCH_SCP 200)
  echo_via=$("$ECHO_BENCH" "127.0.0.1:$RG_PORT" BENCH_SCU BENCH_SCP 200)
  printf 'echo\t%s\t%s\t%s\n' "$mode" "$echo_direct" "$echo_via" >> "$OUT/relay-echo.tsv.tmp"
  hwm=$(awk '/VmHWM/{print $2}' "/proc/$RG_PID/status")
  printf 'rss\t%s\t%s\n' "$mode" "$hwm" >> "$OUT/relay-rss.tsv.tmp"
  kill $RG_PID $RG2_PID $SCP_PID; wait $RG_PID $RG2_PID $SCP_PID 2>/dev/null || true
done

.venv/bin/python - "$results" "$OUT/relay-echo.tsv.tmp" "$OUT/relay-rss.tsv.tmp" "$CT_BYTES" "$LG_BYTES" <<'PY' | tee "$OUT/relay-latest.md"
import json, statistics, sys, platform, os, subprocess, datetime
raw, echo_f, rss_f, ct_bytes, lg_bytes = sys.argv[1:6]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
print(f"## Relay benchmark {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC\n")
print(f"machine: {os.cpu_count()} cores, {cpu}; kernel {platform.release()}; "
      f"CT = 300 files / {int(ct_bytes)/1e6:.1f} MB, large = 1 file / {int(lg_bytes)/1e6:.1f} MB; "
      f"median of {sum(1 for r in rows if r[0] == rows[0][0] and r[1] == 'ct' and r[2] == 'direct') if rows else 0} timed runs per cell after 1 warm-up, alternating direct/through\n")
print("| Nagle mode | data | direct MB/s | through MB/s | ratio | radguard CPU-s/GB |")
print("|---|---|---:|---:|---:|---:|")
for mode in ("nodelay", "default"):
    for what in ("ct", "large"):
        d = [r for r in rows if r[0] == mode and r[1] == what and r[2] == "direct"]
        v = [r for r in rows if r[0] == mode and r[1] == what and r[2] == "via"]
        if not d or not v:
            continue
        md = statistics.median(float(r[4]) for r in d); mv = statistics.median(float(r[4]) for r in v)
        b = int(d[0][3])
        cpu_gb = sum(float(r[5]) for r in v) / (sum(int(r[3]) for r in v) / 1e9)
        print(f"| {mode} | {what} | {b/md/1e6:.0f} | {b/mv/1e6:.0f} | {md/mv:.2f} | {cpu_gb:.2f} |")
for extra, label in (("deid", "de-identifying route"), ("origin", "origin route (fingerprint + ledger)"), ("noaudit", "plain relay, audit trail OFF")):
    d = [r for r in rows if r[0] == "nodelay" and r[1] == "ct" and r[2] == "direct"]
    e = [r for r in rows if r[0] == "nodelay" and r[1] == "ct" and r[2] == extra]
    v = [r for r in rows if r[0] == "nodelay" and r[1] == "ct" and r[2] == "via"]
    if d and e and v:
        md = statistics.median(float(r[4]) for r in d); me = statistics.median(float(r[4]) for r in e)
        mv = statistics.median(float(r[4]) for r in v)
        b = int(d[0][3])
        cpu_gb = sum(float(r[5]) for r in e) / (sum(int(r[3]) for r in e) / 1e9)
        print(f"| nodelay | ct, {label} | {b/md/1e6:.0f} | {b/me/1e6:.0f} | {md/me:.2f} (vs plain relay {mv/me:.2f}) | {cpu_gb:.2f} |")
print()
print("| Nagle mode | C-ECHO assoc median direct | through | added |")
print("|---|---:|---:|---:|")
for l in open(echo_f):
    _, mode, d, v = l.rstrip("\n").split("\t")
    d, v = json.loads(d), json.loads(v)
    print(f"| {mode} | {d['median_us']/1000:.3f} ms | {v['median_us']/1000:.3f} ms | {(v['median_us']-d['median_us'])/1000:.3f} ms |")
print()
for l in open(rss_f):
    _, mode, kb = l.split()
    print(f"radguard peak RSS ({mode} run, incl. the 512 MiB relays): {int(kb)/1024:.1f} MiB  ")
PY
rm -f "$OUT/relay-echo.tsv.tmp" "$OUT/relay-rss.tsv.tmp"
