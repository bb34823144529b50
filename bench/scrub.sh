#!/usr/bin/env bash
# The relay while the vault's scrub runs at its default rate vs with the scrub off, in one run:
# the same release binary on both sides of bench/grammar_relay.sh (alternating, same storescp,
# same data, direct path beside them). Both sides get a copy of the same filled vault (the
# relay benchmark's CT series and its 512 MiB multi-frame, ~660 MB: a pass at 8 MiB/s takes
# over a minute, and `interval_secs = 1` starts the next at once, so the scrub never idles).
# "before": `[scrub] enabled = false`; "after": the scrub on at its default rate. The relayed
# route is the plain one (BENCH_SCP). Target: "after" no more than 0.02 lower than "before" in
# ratio to direct.
#
#   REPS=30 bash bench/scrub.sh                 # the lead's run on a quiet machine
#   REPS=2 REPEAT=1 bash bench/scrub.sh         # a quick look that the method works
#
# Read the paired table: per rep, the scrubbing side's ratio to direct minus the other's, its
# median and a 95 % bootstrap interval. Needs what grammar_relay.sh needs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${BENCH_DATA:-$ROOT/bench/out/data}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
FILL_PORT="${FILL_PORT:-21215}"
[ -x .venv/bin/python ] || { echo "bench: .venv missing: run scripts/setup-test-env.sh" >&2; exit 2; }
.venv/bin/python bench/gen_relay_data.py "$DATA"
cargo build --release -q -p radguard --bin radguard
BIN="$ROOT/target/release/radguard"
WORK=$(mktemp -d)
FILL_PID=""
trap '[ -n "$FILL_PID" ] && kill "$FILL_PID" 2>/dev/null; chattr -R -i "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

# Fill one vault through a vault route (scrub off while filling), then copy it for each side.
cat > "$WORK/fill.toml" <<TOML
[server]
listen = ["127.0.0.1:$FILL_PORT"]
[[peer]]
name = "bench"
ae_titles = ["BENCH_SCU"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store"]
store_sop_classes = ["*"]
[[route]]
called_ae = "BENCH_VAULT"
vault = true
[scrub]
enabled = false
TOML
RADGUARD_LOG=warn "$BIN" serve --config "$WORK/fill.toml" --data "$WORK/fill" > "$WORK/fill.out" 2>&1 & FILL_PID=$!
for _ in $(seq 200); do (echo > /dev/tcp/127.0.0.1/$FILL_PORT) 2>/dev/null && break; sleep 0.05; done
FILL_DIRS=("$DATA/ct-series"); [ -d "$DATA/large" ] && FILL_DIRS+=("$DATA/large")
"$DCMTK/storescu" -aet BENCH_SCU -aec BENCH_VAULT 127.0.0.1 "$FILL_PORT" +sd "${FILL_DIRS[@]}" > "$WORK/fill-scu.log" 2>&1 \
  || { echo "bench: filling the vault failed" >&2; cat "$WORK/fill-scu.log" >&2; exit 1; }
kill "$FILL_PID"; wait "$FILL_PID" 2>/dev/null || true; FILL_PID=""
echo "vault: $(du -sh "$WORK/fill/vault/objects" | cut -f1) in $(find "$WORK/fill/vault/objects" -name '*.dcm' | wc -l) objects"
cp -a "$WORK/fill" "$WORK/before-data"
cp -a "$WORK/fill" "$WORK/after-data"

ROUTES="${ROUTES:-BENCH_SCP}" REPEAT="${REPEAT:-8}" REPS="${REPS:-30}" \
BEFORE="$BIN" BEFORE_DATA="$WORK/before-data" AFTER_DATA="$WORK/after-data" \
BEFORE_TOML=$'[scrub]\nenabled = false' \
AFTER_TOML=$'[scrub]\ninterval_secs = 1' \
  bash bench/grammar_relay.sh

# grammar_relay.sh's exit sent SIGTERM: give the gateways a moment to save and stop.
sleep 3
# The scrub did run on the "after" side: its saved position in the current pass (bytes since
# the pass started; a pass ends every ~80 s, so this is not the total).
echo "after side's scrub state (saved every 5 s):"
sed 's/^/  /' "$WORK/after-data/vault/scrub-state" 2>/dev/null || echo "  MISSING: the scrub did not run"
[ -e "$WORK/before-data/vault/scrub-state" ] && echo "  WARNING: the before side scrubbed too" || true
