#!/usr/bin/env bash
# TLS benchmark: DCMTK `storescu +tls` -> `storescp +tls` directly vs. `storescu +tls` -> radguard
# (tls_listen, peer bound to the client certificate) -> `storescp +tls` (route with TLS and
# radguard's client certificate), in the same run, alternating direct/through, TCP_NODELAY=1 on
# every DCMTK process. Same data as bench/relay.sh (bench/gen_relay_data.py: a 300-slice CT series
# in one association, and one 512 MiB instance). Reports MB/s, the through/direct ratio (target
# >= 0.9), radguard's CPU seconds per GB, and the TLS association set-up time (N x `echoscu
# +tls`, one process per association: median direct vs. through) as a markdown table.
#
#   bash bench/tls.sh                      # REPS=3 timed runs per cell after 1 warm-up, ECHOS=50
#   REPS=5 ECHOS=100 bash bench/tls.sh
#   RG_MAX_PDU=16384 bash bench/tls.sh     # radguard's max_pdu_length (default 65536, as relay.sh)
#   RADGUARD_LOG=info bash bench/tls.sh    # radguard's events on stderr (kept in bench/out/tls-failed/
#                                          # when a run fails; default warn, as relay.sh)
#
# Certificates: `radguard tls init` twice (the gateway side with a client "bench" for storescu,
# and the archive side whose gateway certificate serves storescp). storescp requires a client
# certificate from the gateway side's CA: the storescu client's directly, radguard's through it.
# Needs: Debian dcmtk, the project's .venv (pydicom, numpy). Everything runs on 127.0.0.1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-3}"
ECHOS="${ECHOS:-50}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
OUT="$ROOT/bench/out"
SCP_PORT="${SCP_PORT:-21212}"
RG_PORT="${RG_PORT:-21213}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
RG_MAX_PDU="${RG_MAX_PDU:-65536}"
mkdir -p "$OUT"
LOAD0=$(cut -d' ' -f1 /proc/loadavg)

[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
[ -x "$DCMTK/storescu" ] || { echo "bench: DCMTK missing ($DCMTK/storescu)" >&2; exit 2; }
for p in "$SCP_PORT" "$RG_PORT"; do
  if (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "bench: port $p is taken (set SCP_PORT/RG_PORT)" >&2; exit 2; fi
done
.venv/bin/python bench/gen_relay_data.py "$DATA"
cargo build --release -q -p radguard --bin radguard
RG="$ROOT/target/release/radguard"
CT_BYTES=$(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1)
LG_FILE="$DATA/large/MF_0001.dcm"
LG_BYTES=$(stat -c %s "$LG_FILE")
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
SCP_PID=""; RG_PID=""
cleanup() {
  local rc=$?
  [ -n "$RG_PID" ] && kill "$RG_PID" 2>/dev/null || true
  [ -n "$SCP_PID" ] && kill "$SCP_PID" 2>/dev/null || true
  [ -n "$RG_PID$SCP_PID" ] && wait $RG_PID $SCP_PID 2>/dev/null || true
  if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then   # keep the logs of a failed run
    rm -rf "$OUT/tls-failed"; mkdir -p "$OUT/tls-failed"
    cp "$WORK"/*.log "$WORK"/rg.* "$WORK"/radguard.toml "$OUT/tls-failed/" 2>/dev/null || true
    echo "bench: logs of the failed run in $OUT/tls-failed/" >&2
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
export TCP_NODELAY=1

# --- certificates (radguard makes them itself)
"$RG" tls init "$WORK/gw" --client bench > /dev/null
"$RG" tls init "$WORK/ar" --client unused > /dev/null
FP=$("$RG" tls fingerprint --json "$WORK/gw/client-bench.pem" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)[0]["sha256_hex"])')
SCU_KEY="$WORK/gw/client-bench-key.pem"; SCU_CERT="$WORK/gw/client-bench.pem"

cat > "$WORK/radguard.toml" <<TOML
[server]
tls_listen = ["127.0.0.1:$RG_PORT"]
max_pdu_length = $RG_MAX_PDU
[server.tls]
cert = "$WORK/gw/gateway.pem"
key = "$WORK/gw/gateway-key.pem"
client_ca = "$WORK/gw/ca.pem"
[[peer]]
name = "bench"
ae_titles = ["BENCH_SCU"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]
cert_sha256 = ["$FP"]
[[route]]
called_ae = "BENCH_SCP"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "BENCH_SCP"
tls = { ca = "$WORK/ar/ca.pem", server_name = "localhost", client_cert = "$WORK/gw/gateway.pem", client_key = "$WORK/gw/gateway-key.pem" }
TOML
"$RG" config check "$WORK/radguard.toml" > /dev/null

wait_port() { for _ in $(seq 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# storescp +tls: the archive's certificate; requires a client certificate from the gateway CA.
"$DCMTK/storescp" -aet BENCH_SCP --ignore +tls "$WORK/ar/gateway-key.pem" "$WORK/ar/gateway.pem" -pw \
  +cf "$WORK/gw/ca.pem" "$SCP_PORT" > "$WORK/scp.log" 2>&1 & SCP_PID=$!
RADGUARD_LOG="${RADGUARD_LOG:-warn}" "$RG" serve --config "$WORK/radguard.toml" --data "$WORK/rg-data" > "$WORK/rg.out" 2> "$WORK/rg.err" & RG_PID=$!
wait_port "$SCP_PORT"; wait_port "$RG_PORT"

# The client verifies whom it talks to: the archive's CA directly, radguard's CA through it.
tls_args() { # $1 = direct|via
  local ca="$WORK/ar/ca.pem"; [ "$1" = via ] && ca="$WORK/gw/ca.pem"
  printf '%s\n' +tls "$SCU_KEY" "$SCU_CERT" -pw +cf "$ca"
}
port_of() { if [ "$1" = via ]; then echo "$RG_PORT"; else echo "$SCP_PORT"; fi; }

results="$WORK/raw.tsv"; : > "$results"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
  for what in ct large; do
    for path in direct via; do
      mapfile -t tls < <(tls_args "$path")
      if [ "$what" = ct ]; then args=(+sd "$DATA/ct-series"); bytes=$CT_BYTES; else args=("$LG_FILE"); bytes=$LG_BYTES; fi
      c0=$(cpu_ticks "$RG_PID"); t0=$EPOCHREALTIME
      "$DCMTK/storescu" "${tls[@]}" -aet BENCH_SCU -aec BENCH_SCP 127.0.0.1 "$(port_of "$path")" "${args[@]}" \
        > "$WORK/scu.log" 2>&1 || { echo "storescu +tls failed ($what $path):" >&2; cat "$WORK/scu.log" >&2; exit 1; }
      t1=$EPOCHREALTIME; c1=$(cpu_ticks "$RG_PID")
      if grep -q '^E:' "$WORK/scu.log"; then echo "storescu reported errors ($what $path)" >&2; cat "$WORK/scu.log" >&2; exit 1; fi
      [ "$rep" -gt 0 ] && printf 'store\t%s\t%s\t%s\t%s\t%s\n' "$what" "$path" "$bytes" \
        "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" >> "$results"
    done
  done
done

# TLS association set-up: one echoscu +tls process per association (process start, dictionary
# load, TCP + TLS handshake with client certificate, A-ASSOCIATE, C-ECHO, release), alternating.
for i in $(seq 0 "$ECHOS"); do
  for path in direct via; do
    mapfile -t tls < <(tls_args "$path")
    t0=$EPOCHREALTIME
    "$DCMTK/echoscu" "${tls[@]}" -aet BENCH_SCU -aec BENCH_SCP 127.0.0.1 "$(port_of "$path")" > "$WORK/echo.log" 2>&1 \
      || { echo "echoscu +tls failed ($path):" >&2; cat "$WORK/echo.log" >&2; exit 1; }
    t1=$EPOCHREALTIME
    [ "$i" -gt 0 ] && printf 'echo\t-\t%s\t0\t%s\t0\n' "$path" "$(echo "$t1 - $t0" | bc -l)" >> "$results"
  done
done
# Reference: the same echoscu process against a closed port (process start + dictionary load only).
t0=$EPOCHREALTIME
for _ in $(seq 10); do "$DCMTK/echoscu" -aet BENCH_SCU -aec BENCH_SCP 127.0.0.1 9 > /dev/null 2>&1 || true; done
t1=$EPOCHREALTIME
printf 'noconn\t-\t-\t0\t%s\t0\n' "$(echo "($t1 - $t0) / 10" | bc -l)" >> "$results"
hwm=$(awk '/VmHWM/{print $2}' "/proc/$RG_PID/status")
# What each hop negotiates (openssl s_client with the same client certificate).
session() { # $1 = port, $2 = CA
  openssl s_client -connect "127.0.0.1:$1" -CAfile "$2" -cert "$SCU_CERT" -key "$SCU_KEY" </dev/null 2>/dev/null \
    | sed -n 's/^New, \(.*\), Cipher is \(.*\)$/\1 \2/p' | head -1 || true
}
SESS_DIRECT=$(session "$SCP_PORT" "$WORK/ar/ca.pem")
SESS_VIA=$(session "$RG_PORT" "$WORK/gw/ca.pem")
cp "$results" "$OUT/tls-raw.tsv"

.venv/bin/python - "$results" "$CT_BYTES" "$LG_BYTES" "$hwm" "$REPS" "$ECHOS" "$LOAD0" "$SESS_DIRECT" "$SESS_VIA" "$RG_MAX_PDU" <<'PY' | tee "$OUT/tls-latest.md"
import datetime, os, platform, statistics, sys
raw, ct_bytes, lg_bytes, hwm, reps, echos, load0, sess_direct, sess_via, max_pdu = sys.argv[1:11]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].split(":", 1)[1].strip()
print(f"## TLS benchmark {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
print(f"machine: {os.cpu_count()} cores, {cpu}; kernel {platform.release()}; load average at start: "
      f"{load0}; CT = 300 files / {int(ct_bytes)/1e6:.1f} MB in one "
      f"association, large = 1 file / {int(lg_bytes)/1e6:.1f} MB; DCMTK storescu +tls -> storescp +tls "
      f"--ignore, TCP_NODELAY=1, mutual TLS on every hop, radguard max_pdu_length {max_pdu}; median of {reps} timed runs per cell after "
      f"1 warm-up, alternating direct/through\n")
print("| data | direct MB/s | through radguard MB/s | ratio (target >= 0.9) | radguard CPU-s/GB |")
print("|---|---:|---:|---:|---:|")
for what in ("ct", "large"):
    d = [r for r in rows if r[0] == "store" and r[1] == what and r[2] == "direct"]
    v = [r for r in rows if r[0] == "store" and r[1] == what and r[2] == "via"]
    md = statistics.median(float(r[4]) for r in d); mv = statistics.median(float(r[4]) for r in v)
    b = int(d[0][3])
    cpu_gb = sum(float(r[5]) for r in v) / (sum(int(r[3]) for r in v) / 1e9)
    print(f"| {what} | {b/md/1e6:.0f} | {b/mv/1e6:.0f} | {md/mv:.2f} | {cpu_gb:.2f} |")
print()
ed = [float(r[4]) * 1000 for r in rows if r[0] == "echo" and r[2] == "direct"]
ev = [float(r[4]) * 1000 for r in rows if r[0] == "echo" and r[2] == "via"]
nc = [float(r[4]) * 1000 for r in rows if r[0] == "noconn"]
q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]
print(f"| TLS association set-up ({echos} x `echoscu +tls`, one process each) | median | p90 |")
print("|---|---:|---:|")
print(f"| direct to storescp +tls | {statistics.median(ed):.1f} ms | {q(ed, .9):.1f} ms |")
print(f"| through radguard (TLS in, TLS out) | {statistics.median(ev):.1f} ms | {q(ev, .9):.1f} ms |")
print(f"| added by radguard | {statistics.median(ev) - statistics.median(ed):.1f} ms | |")
print(f"| (echoscu process start + dictionary, closed port) | {statistics.median(nc):.1f} ms | |")
print()
print(f"TLS sessions (openssl s_client, same client certificate): storescp +tls: {sess_direct or '?'}; "
      f"radguard: {sess_via or '?'}  ")
print(f"radguard peak RSS: {int(hwm)/1024:.1f} MiB  ")
PY
