#!/usr/bin/env bash
# bench/jpegls.sh -- decode time of radguard-jpegls against CharLS (C++, the decoder Radguard
# used before) on a 512x512 16-bit CT frame (ctdata.py's phantom, JPEG-LS Lossless by
# dcmcjpls). Prints both best-of-ROUNDS times and the ratio; not a test.
#
#   bash bench/jpegls.sh           # Env: ROUNDS (default 30), BENCH_DIR (target/bench-jpegls)
#
# Needs: DCMTK, the project venv (scripts/setup-test-env.sh), and cmake + g++ for CharLS
# (this bench only: bench/jpegls is its own cargo project, outside the workspace).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${BENCH_DIR:-$ROOT/target/bench-jpegls}"
ROUNDS="${ROUNDS:-30}"
mkdir -p "$DIR"
"$ROOT/.venv/bin/python" "$ROOT/crates/radguard-ledger/tests/support/ctdata.py" series "$DIR/ct" \
  --slices 1 --rows 512 --cols 512 >/dev/null
src="$(ls "$DIR"/ct/*.dcm | head -1)"
/usr/bin/dcmcjpls +el "$src" "$DIR/ct-jls.dcm"
"$ROOT/.venv/bin/python" - "$DIR/ct-jls.dcm" "$DIR/ct.jls" <<'PY'
import sys
import pydicom
from pydicom.encaps import generate_frames
ds = pydicom.dcmread(sys.argv[1])
open(sys.argv[2], "wb").write(next(generate_frames(ds.PixelData, number_of_frames=1)))
PY
cargo run --release --quiet --manifest-path "$ROOT/bench/jpegls/Cargo.toml" \
  --target-dir "$DIR/target" -- "$DIR/ct.jls" "$ROUNDS"
