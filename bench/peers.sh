#!/usr/bin/env bash
# Relay benchmark against what a hospital would put in front instead, all in one run, alternating
# per transfer: the 300-slice CT series by storescu to storescp (TCP_NODELAY=1 everywhere)
#   direct                      storescu -> storescp
#   haproxy                     -> HAProxy (mode tcp) -> storescp              (plain relay peer)
#   radguard plain/origin/deid  -> radguard route -> storescp
#   stunnel-tls                 storescu +tls -> stunnel (TLS termination) -> storescp
#   radguard-tls                storescu +tls -> radguard tls_listen (mutual TLS) -> storescp
# Reports MB/s, the ratio to direct, and the middlebox's CPU-s/GB (stunnel: no client
# certificate check; radguard: client certificate pinned per peer, policy, audit trail).
#   REPS=5 bash bench/peers.sh            # RADGUARD=/path/to/radguard for another build
# Needs: Debian dcmtk, haproxy, stunnel4; the project's .venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REPS="${REPS:-3}"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
OUT="$ROOT/bench/out"
BASE="${BASE_PORT:-21300}"
SCP=$BASE; HAP=$((BASE + 1)); RG=$((BASE + 2)); RGT=$((BASE + 3)); STN=$((BASE + 4))
DCMTK="${DCMTK_BIN:-/usr/bin}"
mkdir -p "$OUT"
export TCP_NODELAY=1
for t in haproxy stunnel4; do command -v $t >/dev/null || { echo "bench: $t missing (apt-get install haproxy stunnel4)" >&2; exit 2; }; done
.venv/bin/python bench/gen_relay_data.py "$DATA"
# RADGUARD=/path/to/radguard measures another build (e.g. an older commit's) in the same setup.
if [ -z "${RADGUARD:-}" ]; then cargo build --release -q -p radguard --bin radguard; fi
RGX="${RADGUARD:-$ROOT/target/release/radguard}"
CT_BYTES=$(du -cb "$DATA"/ct-series/*.dcm | tail -1 | cut -f1)
TCK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$RGX" tls init "$WORK/gw" --client bench > /dev/null
printf '%s\n' 7f3a9c0e5b2d4f61a8e7c3b9d0f1e2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6 > "$WORK/deid.key"
cat > "$WORK/radguard.toml" <<TOML
[server]
listen = ["127.0.0.1:$RG"]
tls_listen = ["127.0.0.1:$RGT"]
max_pdu_length = 65536
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
[[route]]
called_ae = "BENCH_SCP"
upstream = "127.0.0.1:$SCP"
upstream_ae = "BENCH_SCP"
[[route]]
called_ae = "BENCH_ORIGIN"
upstream = "127.0.0.1:$SCP"
upstream_ae = "BENCH_SCP"
origin = true
[[route]]
called_ae = "BENCH_DEID"
upstream = "127.0.0.1:$SCP"
upstream_ae = "BENCH_SCP"
deidentify = { profile = "basic", options = ["retain-long-modified-dates"], key_file = "$WORK/deid.key" }
TOML
cat > "$WORK/haproxy.cfg" <<CFG
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend dicom
  bind 127.0.0.1:$HAP
  default_backend scp
backend scp
  server s1 127.0.0.1:$SCP
CFG
cat > "$WORK/stunnel.conf" <<CFG
foreground = yes
pid =
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[dicom]
accept = 127.0.0.1:$STN
connect = 127.0.0.1:$SCP
cert = $WORK/gw/gateway.pem
key = $WORK/gw/gateway-key.pem
CFG
wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
"$DCMTK/storescp" -aet BENCH_SCP --ignore "$SCP" > "$WORK/scp.log" 2>&1 & PIDS+=($!); SCP_PID=$!
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 & PIDS+=($!); HAP_PID=$!
stunnel4 "$WORK/stunnel.conf" > "$WORK/stunnel.log" 2>&1 & PIDS+=($!); STN_PID=$!
RADGUARD_LOG=warn "$RGX" serve --config "$WORK/radguard.toml" --data "$WORK/rg-data" > "$WORK/rg.out" 2> "$WORK/rg.err" & PIDS+=($!); RG_PID=$!
for p in $SCP $HAP $RG $RGT $STN; do wait_port $p; done
TLS_ARGS=(+tls "$WORK/gw/client-bench-key.pem" "$WORK/gw/client-bench.pem" -pw +cf "$WORK/gw/ca.pem")
results="$OUT/peers-raw.tsv"; : > "$results"
for rep in $(seq 0 "$REPS"); do   # rep 0 = warm-up, not recorded
  for path in direct haproxy plain origin deid stunnel-tls radguard-tls; do
    tls=(); aec=BENCH_SCP
    case $path in
      direct) port=$SCP; pid=$SCP_PID;;
      haproxy) port=$HAP; pid=$HAP_PID;;
      plain) port=$RG; pid=$RG_PID;;
      origin) port=$RG; pid=$RG_PID; aec=BENCH_ORIGIN;;
      deid) port=$RG; pid=$RG_PID; aec=BENCH_DEID;;
      stunnel-tls) port=$STN; pid=$STN_PID; tls=("${TLS_ARGS[@]}");;
      radguard-tls) port=$RGT; pid=$RG_PID; tls=("${TLS_ARGS[@]}");;
    esac
    c0=$(cpu_ticks $pid); t0=$EPOCHREALTIME
    "$DCMTK/storescu" "${tls[@]}" -aet BENCH_SCU -aec $aec 127.0.0.1 $port +sd "$DATA/ct-series" > "$WORK/scu.log" 2>&1 \
      || { echo "storescu failed ($path):" >&2; cat "$WORK/scu.log" "$WORK/rg.err" >&2; exit 1; }
    t1=$EPOCHREALTIME; c1=$(cpu_ticks $pid)
    grep -q '^E:' "$WORK/scu.log" && { echo "storescu reported errors ($path)" >&2; cat "$WORK/scu.log" >&2; exit 1; }
    [ "$rep" -gt 0 ] && printf '%s\t%s\t%s\t%s\n' "$path" "$CT_BYTES" "$(echo "$t1 - $t0" | bc -l)" "$(echo "($c1 - $c0) / $TCK" | bc -l)" >> "$results"
  done
done
.venv/bin/python - "$results" "$CT_BYTES" "$REPS" <<'PY' | tee "$OUT/peers-latest.md"
import statistics, sys, os, datetime
raw, b, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [l.rstrip("\n").split("\t") for l in open(raw) if l.strip()]
med = lambda p: statistics.median(float(r[2]) for r in rows if r[0] == p)
cpu = lambda p: sum(float(r[3]) for r in rows if r[0] == p) / (sum(int(r[1]) for r in rows if r[0] == p) / 1e9)
print(f"## Relay vs HAProxy and stunnel {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC\n")
print(f"{os.cpu_count()} cores; CT = 300 files / {b/1e6:.1f} MB; TCP_NODELAY=1; median of {reps} timed runs after 1 warm-up, alternating\n")
print("| path | MB/s | ratio to direct | middlebox CPU-s/GB |")
print("|---|---:|---:|---:|")
d = med("direct")
for p in ("direct", "haproxy", "plain", "origin", "deid", "stunnel-tls", "radguard-tls"):
    c = "—" if p == "direct" else f"{cpu(p):.2f}"
    print(f"| {p} | {b/med(p)/1e6:.0f} | {d/med(p):.2f} | {c} |")
PY
