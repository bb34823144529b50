#!/usr/bin/env bash
# Seed inputs for the `jpegls` fuzz target: the smallest streams of radguard-jpegls's
# differential test (dcmcjpls: lossless and near-lossless, 8/12/16 bits, monochrome and RGB in
# the three interleave modes, LSE thresholds, restart intervals). Needs DCMTK and the venv.
#   bash fuzz/seeds/make_jpegls_seeds.sh        # writes fuzz/corpus/jpegls/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$ROOT/.venv/bin/python" "$ROOT/crates/radguard-jpegls/tests/support/make_jls.py" "$tmp"
out="$ROOT/fuzz/corpus/jpegls"
mkdir -p "$out"
for n in m8-1x1 rgb8-is-1x1 m8-57x1 m8-1x57 m8-37x53-near2 m8-near7 m8-thresholds m12-near7 \
         m16-near10 rgb8-is-frames3 rgb8-il-37x53 rgb8-in-near2 rst-m12-every-line \
         rst-rgb8-is-near2 rst-m8-lossless rst-rgb8-il rst-m16-near3; do
  cp "$tmp/$n.f0.jls" "$out/seed-$n.jls"
done
ls "$out" | wc -l
