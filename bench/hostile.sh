#!/usr/bin/env bash
# Hostile-load benchmark (issue 7): radguard's memory before, during and after 100,000 malformed
# associations (then ROUNDS-1 more rounds of them, to tell a leak from a high-water mark), and a
# well-behaved peer's store throughput during that flood and during a flood of thousands of
# connections from one address, as a fraction of its throughput alone. Prints a markdown table
# (also written to bench/out/hostile-latest.md).
#
#   bash bench/hostile.sh                       # 100,000 associations or 5 minutes, whichever first
#   N=20000 MAX_SECS=60 WINDOW=10 ROUNDS=1 bash bench/hostile.sh
#   SKIP_BUILD=1 bash bench/hostile.sh          # use the existing target/release/radguard
#   MAX_CONNECTIONS=64 bash bench/hostile.sh    # connection cap = association cap: connections
#                                               # still negotiating compete with associations
#                                               # (how radguard behaved before max_connections)
#
# Setup: radguard (release build) relays route ARCHIVE to a DCMTK storescp (--ignore: it receives
# and acknowledges but does not write, so the gateway is what is measured). The good peer is DCMTK
# storescu from 127.0.0.1 sending the 24-slice CT series of the test data, one association per
# run, in a loop. The attacker is a Python asyncio client connecting from 127.0.0.2..127.0.0.9
# (CONC connections in flight over 8 source addresses, so that no address reaches the per-peer
# cap and nearly every connection meets the parsers), cycling through the malformed openings of
# crates/radguard/tests/hostile.rs. Attacker, gateway, upstream and good peer share one machine:
# the throughput fraction is therefore a lower bound (the attacker's CPU is reported). The
# malformed flood comes from 8 addresses with as many connections in flight as the association
# cap (64): connections that never associate must not take the associations' slots (they hold
# `max_connections` slots); the one-address flood is the issue's scenario.
#
# Needs: Debian dcmtk (/usr/bin/storescu, storescp), python3, GNU time (/usr/bin/time), the project's .venv (only when the
# test data has to be generated). Everything runs on loopback.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-100000}"
MAX_SECS="${MAX_SECS:-300}"
CONC="${CONC:-64}"
WINDOW="${WINDOW:-20}"
BURST="${BURST:-2000}"
BWIN="${BWIN:-8}"
BURST_REPS="${BURST_REPS:-3}"
ROUNDS="${ROUNDS:-3}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
OUT="$ROOT/bench/out"
DATA="$ROOT/target/test-data"
mkdir -p "$OUT"

for t in storescu storescp; do
  [ -x "$DCMTK/$t" ] || { echo "bench: DCMTK $t missing ($DCMTK/$t): run scripts/setup-test-env.sh" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "bench: python3 missing" >&2; exit 2; }
if [ ! -f "$DATA/MANIFEST.json" ]; then
  [ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
  .venv/bin/python tests/data/make_data.py "$DATA"
fi
FILES=("$DATA"/ct/CT_*.dcm)
[ "${#FILES[@]}" -ge 10 ] || { echo "bench: no CT series in $DATA/ct" >&2; exit 2; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p radguard --bin radguard
fi
RG="$ROOT/target/release/radguard"
[ -x "$RG" ] || { echo "bench: $RG missing" >&2; exit 2; }

WORK=$(mktemp -d)
SCP_PID=""; RG_PID=""; LOAD_PID=""; SAMPLER_PID=""
cleanup() {
  for p in $LOAD_PID $SAMPLER_PID $RG_PID $SCP_PID; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free port below the ephemeral range (a flood leaves thousands of ephemeral ports in
# TIME_WAIT, and storescp binds 0.0.0.0 without SO_REUSEADDR).
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(1000):
    p = random.randint(20000, 32000)
    try:
        for a in ("0.0.0.0", "127.0.0.1"):
            s = socket.socket(); s.bind((a, p)); s.close()
        print(p); break
    except OSError:
        pass
PY
}
wait_port() { for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "bench: port $1 not up" >&2; exit 1; }
# CPU seconds (user + system) process $1 has used.
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0; }
mem() { awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {print r+0, h+0}' "/proc/$RG_PID/status" 2>/dev/null || echo "0 0"; }

SCP_PORT=$(free_port)
TCP_NODELAY=1 "$DCMTK/storescp" --ignore -aet ARCHIVE "$SCP_PORT" > "$WORK/storescp.log" 2>&1 &
SCP_PID=$!
wait_port "$SCP_PORT" || { cat "$WORK/storescp.log" >&2; exit 1; }

cat > "$WORK/radguard.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
artim_timeout_secs = 5
idle_timeout_secs = 30
max_associations = 64
max_associations_per_peer = 16
max_connections = ${MAX_CONNECTIONS:-256}
[[peer]]
name = "good"
ae_titles = ["GOOD"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]
[[route]]
called_ae = "ARCHIVE"
upstream = "127.0.0.1:$SCP_PORT"
upstream_ae = "ARCHIVE"
TOML
RADGUARD_LOG=warn "$RG" serve --config "$WORK/radguard.toml" --data "$WORK/data" > "$WORK/radguard.out" 2> "$WORK/radguard.err" &
RG_PID=$!
RG_PORT=""
for _ in $(seq 200); do
  RG_PORT=$(sed -n 's/^radguard: listening on dicom:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/radguard.out" | head -1)
  [ -n "$RG_PORT" ] && break
  kill -0 "$RG_PID" 2>/dev/null || { echo "bench: radguard exited" >&2; cat "$WORK/radguard.err" >&2; exit 1; }
  sleep 0.05
done
[ -n "$RG_PORT" ] || { echo "bench: radguard did not report its port" >&2; exit 1; }

# The good peer: storescu runs in a loop for SECS seconds; prints "files seconds failures".
good_peer() {
  local secs=$1 files=0 fails=0 t0 t1
  t0=$EPOCHREALTIME
  while :; do
    t1=$EPOCHREALTIME
    if awk -v a="$t1" -v b="$t0" -v s="$secs" 'BEGIN { exit !(a - b >= s) }'; then break; fi
    if TCP_NODELAY=1 "$DCMTK/storescu" -v -aet GOOD -aec ARCHIVE -to 15 -ta 15 -td 60 \
        127.0.0.1 "$RG_PORT" "${FILES[@]}" > "$WORK/storescu.log" 2>&1; then
      files=$((files + ${#FILES[@]}))
    else
      fails=$((fails + 1))
      { grep -E "Association Rejected|Result|Source|Reason|Abort|failed|Error" "$WORK/storescu.log" \
          | tr -s ' \n' ' '; echo; } >> "$WORK/good-failures.txt" || true
    fi
  done
  t1=$EPOCHREALTIME
  echo "$files $(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }') $fails"
}

# The good peer while process $1 runs (at least one run); prints "files seconds failures".
good_peer_while() {
  local pid=$1 files=0 fails=0 t0 t1
  t0=$EPOCHREALTIME
  while :; do
    if TCP_NODELAY=1 "$DCMTK/storescu" -v -aet GOOD -aec ARCHIVE -to 15 -ta 15 -td 60 \
        127.0.0.1 "$RG_PORT" "${FILES[@]}" > "$WORK/storescu.log" 2>&1; then
      files=$((files + ${#FILES[@]}))
    else
      fails=$((fails + 1))
      { grep -E "Association Rejected|Result|Source|Reason|Abort|failed|Error" "$WORK/storescu.log" \
          | tr -s ' \n' ' '; echo; } >> "$WORK/good-failures.txt" || true
    fi
    kill -0 "$pid" 2>/dev/null || break
  done
  t1=$EPOCHREALTIME
  echo "$files $(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.2f", a - b }') $fails"
}

# The attacker (python3 stdlib only).
cat > "$WORK/attack.py" <<'PY'
import asyncio, json, os, random, struct, sys, time

port, n, max_secs, conc, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
SOURCES = [f"127.0.0.{k}" for k in range(2, 10)] if mode == "malformed" else ["127.0.0.2"]

def item(t, body): return bytes([t, 0]) + struct.pack(">H", len(body)) + body
def pdu(t, body): return bytes([t, 0]) + struct.pack(">I", len(body)) + body
def ae(s): return s.encode().ljust(16, b" ")[:16]
def rq(version=1, calling="HOSTILE", called="ARCHIVE", ctx=((1, "1.2.840.10008.1.1"),), impl=True, maxlen=16384):
    b = struct.pack(">HH", version, 0) + ae(called) + ae(calling) + bytes(32)
    b += item(0x10, b"1.2.840.10008.3.1.1.1")
    for i, a in ctx:
        b += item(0x20, bytes([i, 0, 0, 0]) + item(0x30, a.encode()) + item(0x40, b"1.2.840.10008.1.2"))
    u = item(0x51, struct.pack(">I", maxlen)) + (item(0x52, b"1.2.3.4") if impl else b"")
    return pdu(0x01, b + item(0x50, u))

good = rq()
CASES = [
    ("unknown PDU type", pdu(0x09, bytes(4))),
    ("4 GiB length", b"\x01\x00\xff\xff\xff\xf0" + good[6:16]),
    ("P-DATA first", pdu(0x04, struct.pack(">I", 4) + b"\x01\x03ab")),
    ("A-ABORT first", pdu(0x07, bytes(4))),
    ("release first", pdu(0x05, bytes(4))),
    ("truncated RQ + FIN", good[: len(good) // 2]),
    ("item overruns PDU", good[:99] + b"\x20\x00\x04\x00" + good[103:]),
    ("duplicate context IDs", rq(ctx=((1, "1.2.840.10008.1.1"), (1, "1.2.840.10008.5.1.4.1.1.2")))),
    ("even context ID", rq(ctx=((2, "1.2.840.10008.1.1"),))),
    ("protocol version 2", rq(version=2)),
    ("non-ASCII calling AE", pdu(0x01, rq()[6:10] + ae("ARCHIVE") + "HÖSTILE".encode().ljust(16, b" ") + rq()[42:])),
    ("no impl class UID", rq(impl=False)),
    ("max length 16", rq(maxlen=16)),
    ("unknown peer (address)", good),
    ("random bytes", None),
]
# The burst also holds silent connections (they wait for ARTIM); the malformed run does not
# (slow and silent peers are crates/radguard/tests/flood.rs's subject).
if mode == "burst":
    CASES.append(("silent", b""))

async def one(i, stats):
    name, payload = CASES[i % len(CASES)]
    if payload is None:
        payload = os.urandom(random.randint(1, 300))
    src = SOURCES[i % len(SOURCES)]
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0)), 10)
    except Exception as e:
        stats["connect failed"] = stats.get("connect failed", 0) + 1
        return
    what = "closed"
    try:
        if payload:
            w.write(payload)
            await w.drain()
            if name == "truncated RQ + FIN":
                w.write_eof()
        head = await asyncio.wait_for(r.read(10), 15)
        if len(head) >= 10 and head[0] == 0x07:
            what = f"A-ABORT {head[8]}/{head[9]}"
        elif len(head) >= 10 and head[0] == 0x03:
            what = f"RJ {head[7]}/{head[8]}/{head[9]}"
        elif head:
            what = f"PDU 0x{head[0]:02X}"
    except asyncio.TimeoutError:
        what = "NO ANSWER in 15 s"
    except ConnectionResetError:
        what = "reset"
    except OSError as e:
        what = f"{type(e).__name__} ({os.strerror(e.errno) if e.errno else e})"
    except Exception as e:
        what = type(e).__name__
    finally:
        w.close()
    key = what if mode == "burst" else f"{what}"
    stats[key] = stats.get(key, 0) + 1

async def main():
    stats, t0, i = {}, time.monotonic(), 0
    sem = asyncio.Semaphore(conc)
    tasks = set()
    async def run(k):
        async with sem:
            await one(k, stats)
    while i < n and time.monotonic() - t0 < max_secs:
        await sem.acquire(); sem.release()
        t = asyncio.ensure_future(run(i)); tasks.add(t); t.add_done_callback(tasks.discard)
        i += 1
        if i % 64 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    el = time.monotonic() - t0
    print(json.dumps({"started": i, "seconds": round(el, 1), "rate": round(i / el, 1), "outcomes": stats}))

asyncio.run(main())
PY

echo "bench: radguard $RG_PORT (pid $RG_PID), storescp $SCP_PORT; warming up" >&2
good_peer 3 > /dev/null
read -r RSS0 HWM0 < <(mem)

echo "bench: good peer alone for ${WINDOW}s" >&2
read -r A_FILES A_SECS A_FAIL < <(good_peer "$WINDOW")

echo "bench: ${N} malformed associations (max ${MAX_SECS}s, ${CONC} in flight)" >&2
( while kill -0 "$RG_PID" 2>/dev/null; do mem >> "$WORK/mem.txt"; sleep 1; done ) &
SAMPLER_PID=$!
CPU0=$(cpu_secs "$RG_PID"); T0=$EPOCHREALTIME
/usr/bin/time -f "%U %S" -o "$WORK/attack.cpu" \
  python3 "$WORK/attack.py" "$RG_PORT" "$N" "$MAX_SECS" "$CONC" malformed > "$WORK/attack.json" &
LOAD_PID=$!
sleep 3
read -r F_FILES F_SECS F_FAIL < <(good_peer "$WINDOW")
wait "$LOAD_PID"; LOAD_PID=""
CPU1=$(cpu_secs "$RG_PID"); T1=$EPOCHREALTIME
RG_CPU=$(awk -v a="$CPU1" -v b="$CPU0" 'BEGIN { printf "%.1f", a - b }')
ATT_CPU=$(awk '{ printf "%.1f", $1 + $2 }' "$WORK/attack.cpu")
FLOOD_WALL=$(awk -v a="$T1" -v b="$T0" 'BEGIN { printf "%.1f", a - b }')
kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
read -r RSS_PEAK HWM_PEAK < <(sort -n -k1 "$WORK/mem.txt" | tail -1)
sleep 6
read -r RSS1 HWM1 < <(mem)

# More rounds of the same malformed flood: a leak grows with every round, allocator high water
# does not.
ROUND_ROWS=""
for r in $(seq 2 "$ROUNDS"); do
  echo "bench: round $r of ${N} malformed associations" >&2
  python3 "$WORK/attack.py" "$RG_PORT" "$N" "$MAX_SECS" "$CONC" malformed > "$WORK/attack-$r.json"
  sleep 6
  read -r RSSR HWMR < <(mem)
  RN=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["started"], "in", d["seconds"], "s")' "$WORK/attack-$r.json")
  ROUND_ROWS="$ROUND_ROWS| radguard VmRSS after round $r ($RN, +6 s) | $RSSR KiB (VmHWM $HWMR KiB) |\n"
done

# The one-address flood of the issue: BURST connections from 127.0.0.2, 500 in flight, the good
# peer storing for exactly as long as the flood lasts; BURST_REPS times, each paired with a
# window of the good peer alone just before it (pairs cancel most of the drift that other users
# of the machine cause).
BFRACS=""; BOUT=""; B_FAIL=0; B_TOTAL=0; BDURS=""
for rep in $(seq 1 "$BURST_REPS"); do
  echo "bench: one-address flood $rep/$BURST_REPS ($BURST connections, 500 in flight)" >&2
  read -r P_FILES P_SECS P_FAIL < <(good_peer "$BWIN")
  python3 "$WORK/attack.py" "$RG_PORT" "$BURST" 120 500 burst > "$WORK/burst-$rep.json" &
  LOAD_PID=$!
  read -r Q_FILES Q_SECS Q_FAIL < <(good_peer_while "$LOAD_PID")
  wait "$LOAD_PID"; LOAD_PID=""
  B_FAIL=$((B_FAIL + Q_FAIL + P_FAIL))
  f=$(awk -v a="$Q_FILES" -v b="$Q_SECS" -v c="$P_FILES" -v d="$P_SECS" 'BEGIN { printf "%.2f", (c > 0 && b > 0 ? (a / b) / (c / d) : 0) }')
  BFRACS="$BFRACS $f"
  n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["started"])' "$WORK/burst-$rep.json")
  B_TOTAL=$((B_TOTAL + n))
  BDURS="$BDURS $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"])' "$WORK/burst-$rep.json")"
done
BOUT=$(python3 - "$WORK"/burst-*.json <<'PY'
import json, sys
tot = {}
for f in sys.argv[1:]:
    for k, v in json.load(open(f))["outcomes"].items():
        tot[k] = tot.get(k, 0) + v
print(", ".join(f"{k}: {v}" for k, v in sorted(tot.items(), key=lambda x: -x[1])))
PY
)
BFRAC_MED=$(echo $BFRACS | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
sleep 6
read -r RSS2 HWM2 < <(mem)
ALIVE=yes; kill -0 "$RG_PID" 2>/dev/null || ALIVE=NO

rate() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0 ? a / b : 0) }'; }
A_RATE=$(rate "$A_FILES" "$A_SECS"); F_RATE=$(rate "$F_FILES" "$F_SECS")
frac() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
FRAC=$(frac "$F_RATE" "$A_RATE")
ATTACK=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["started"], d["seconds"], d["rate"])' "$WORK/attack.json")
read -r A_N A_S A_R <<< "$ATTACK"
OUTCOMES=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["outcomes"]; print(", ".join(f"{k}: {v}" for k,v in sorted(d.items(), key=lambda x:-x[1])))' "$WORK/attack.json")
CPUS=$(nproc)

REPORT="$OUT/hostile-latest.md"
{
  echo "### Hostile load (bench/hostile.sh, $(date -u +%F), release build, $CPUS cores shared)"
  echo
  echo "| figure | value |"
  echo "|---|---|"
  echo "| caps | max_associations 64, max_connections ${MAX_CONNECTIONS:-256}, per peer 16 |"
  echo "| malformed associations | $A_N in $A_S s ($A_R/s), $CONC in flight from 8 addresses |"
  echo "| their answers | $OUTCOMES |"
  echo "| radguard VmRSS before | $RSS0 KiB (VmHWM $HWM0 KiB) |"
  echo "| radguard VmRSS during (peak sampled each second) | $RSS_PEAK KiB |"
  echo "| radguard VmRSS after round 1 (+6 s) | $RSS1 KiB (VmHWM $HWM1 KiB) |"
  printf "%b" "$ROUND_ROWS"
  echo "| good peer alone | $A_RATE instances/s ($A_FILES in $A_SECS s, $A_FAIL failed runs) |"
  echo "| good peer during the malformed flood (8 addresses, $CONC in flight) | $F_RATE instances/s ($F_FILES in $F_SECS s, $F_FAIL failed runs) |"
  INSIDE=$(awk -v a="$A_S" -v w="$WINDOW" 'BEGIN { print (a >= w + 3 ? "" : " — the flood ended before the window did: raise N") }')
  echo "| **throughput fraction during the malformed flood** | **$FRAC** (target ≥ 0.8)$INSIDE |"
  echo "| CPU during the malformed flood ($FLOOD_WALL s wall, $CPUS cores) | attacker $ATT_CPU s, radguard $RG_CPU s (the rest: the good peer's storescu and storescp) |"
  if [ -s "$WORK/good-failures.txt" ]; then
    echo "| why the good peer's runs failed | $(sort "$WORK/good-failures.txt" | uniq -c | sed 's/^ *//' | tr '\n' ';' | sed 's/|/\\|/g') |"
  fi
  echo "| one-address floods: $BURST_REPS × $BURST connections from 127.0.0.2, 500 in flight (durations:$BDURS s) | $BOUT |"
  echo "| **good peer during a one-address flood / alone (paired)** | **median $BFRAC_MED** (each:$BFRACS; $B_FAIL failed runs) (target ≥ 0.8) |"
  echo "| radguard VmRSS after the floods (+6 s) | $RSS2 KiB (VmHWM $HWM2 KiB) |"
  echo "| radguard still running | $ALIVE |"
} | tee "$REPORT"
cp "$WORK/good-failures.txt" "$OUT/hostile-good-failures.txt" 2>/dev/null || true
[ "$ALIVE" = yes ] && [ "$F_FAIL" = 0 ] && [ "$B_FAIL" = 0 ]
