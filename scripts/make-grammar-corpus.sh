#!/usr/bin/env bash
# make-grammar-corpus.sh -- the corpus of DICOM files the data-set grammar is checked against
# (crates/radguard-dicom/tests/differential.rs compares its tokens with dicom-rs and pydicom).
#
#   bash scripts/make-grammar-corpus.sh OUTDIR [--force]
#
# OUTDIR/generated/...   the project's generated test data (tests/data/make_data.py)
# OUTDIR/pydicom/...     the sample files that ship inside the installed pydicom package
#                        (pydicom/data/test_files: what `pydicom.data.get_testdata_files()`
#                        finds locally; nothing is downloaded), deliberately broken ones
#                        included; path separators become "__"
# OUTDIR/dcmtk/NAME.VARIANT.dcm
#                        DCMTK re-encodings of a few of those files in every transfer syntax
#                        the project handles: implicit LE, explicit LE (defined and undefined
#                        sequence lengths, with group lengths), explicit BE, deflated, RLE
#                        (one fragment per frame and 1 KiB fragments), JPEG lossless (process
#                        14 and SV1), JPEG-LS lossless. A tool that refuses an input is named on
#                        stdout and its output skipped.
# OUTDIR/FILES.txt       every corpus file, one path relative to OUTDIR a line, sorted
#
# Deterministic (same inputs and tool versions give the same bytes) and idempotent: a stamp
# records this script's hash and the tool versions; while it matches, nothing is redone.
# Concurrent runs are serialised with OUTDIR.lock. Needs what scripts/setup-test-env.sh
# installs: DCMTK in /usr/bin and the venv in <root>/.venv.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${RADGUARD_TEST_PYTHON:-$ROOT/.venv/bin/python}"
DCMTK="${DCMTK_BIN:-/usr/bin}"
OUT="${1:?usage: make-grammar-corpus.sh OUTDIR [--force]}"
FORCE="${2:-}"
HINT="run \`bash scripts/setup-test-env.sh\` (as root) first"

die() { echo "make-grammar-corpus: $*" >&2; exit 1; }
[[ -x "$PY" ]] || die "$PY is missing: $HINT"
for t in dcmconv dcmcrle dcmcjpeg dcmcjpls dcmdump; do
  [[ -x "$DCMTK/$t" ]] || die "$DCMTK/$t is missing: $HINT"
done
"$PY" -c 'import pydicom' 2>/dev/null || die "pydicom is not installed in $PY: $HINT"

OUT="$(realpath -m "$OUT")"
[[ "$OUT" != / && "$OUT" != "$ROOT" ]] || die "refusing OUTDIR $OUT"
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9

stamp() {
  sha256sum "${BASH_SOURCE[0]}" "$ROOT/tests/data/make_data.py" | cut -d' ' -f1
  "$DCMTK/dcmconv" --version | head -1
  "$PY" -c 'import pydicom, sys; print(pydicom.__version__, sys.version.split()[0])'
}
want="$(stamp)"
if [[ "$FORCE" != --force && -f "$OUT/STAMP" && "$(cat "$OUT/STAMP")" == "$want" \
      && -f "$OUT/FILES.txt" ]]; then
  missing=0
  while read -r f; do [[ -f "$OUT/$f" ]] || { missing=1; break; }; done < "$OUT/FILES.txt"
  if [[ $missing -eq 0 ]]; then
    echo "make-grammar-corpus: $OUT is up to date ($(wc -l < "$OUT/FILES.txt") files)"
    exit 0
  fi
fi

rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp/generated" "$OUT.tmp/pydicom" "$OUT.tmp/dcmtk"
TMP="$OUT.tmp"

# 1. The project's generated data (its own up-to-date check makes this cheap when cached).
GEN="$OUT.gen"
"$PY" "$ROOT/tests/data/make_data.py" "$GEN" >/dev/null
(cd "$GEN" && find . -name '*.dcm' -type f | LC_ALL=C sort) | while read -r f; do
  mkdir -p "$TMP/generated/$(dirname "$f")"
  cp "$GEN/$f" "$TMP/generated/$f"
done

# 2. pydicom's bundled sample files: every file of its test_files directory that is not
#    documentation, source or another format (the broken DICOM files stay: they are the
#    interesting differential cases).
"$PY" - "$TMP/pydicom" <<'PY'
import shutil, sys
from pathlib import Path
from pydicom.data.data_manager import DATA_ROOT

out = Path(sys.argv[1])
base = Path(DATA_ROOT) / "test_files"
skip_suffix = {".py", ".txt", ".json", ".dump", ".gz", ".icc", ".pyc", ".md"}
for p in sorted(base.rglob("*")):
    if not p.is_file() or p.suffix.lower() in skip_suffix or p.name == "README":
        continue
    if "__pycache__" in p.parts:
        continue
    name = "__".join(p.relative_to(base).parts)
    shutil.copyfile(p, out / name)
PY

# 3. DCMTK re-encodings. Inputs: a few generated files and a few pydicom files with nested
#    sequences (the generated data has few), so that sequences are seen in every syntax.
SOURCES=(
  "generated/ct/CT_0001.dcm"
  "generated/mr/MR_0001.dcm"
  "generated/sc/SC_RGB_0001.dcm"
  "generated/implicit/CT_IMPLICIT.dcm"
  "generated/pdf/PDF_0001.dcm"
  "pydicom/rtplan.dcm"
  "pydicom/test-SR.dcm"
  "pydicom/CT_small.dcm"
)
VARIANTS=(
  "implicit-le:dcmconv +ti"
  "explicit-le:dcmconv +te"
  "explicit-le-undef:dcmconv +te -e"
  "explicit-le-grouplen:dcmconv +te +g"
  "explicit-be:dcmconv +tb"
  "implicit-le-undef:dcmconv +ti -e"
  "deflated:dcmconv +td"
  "deflated-undef:dcmconv +td -e"
  "rle:dcmcrle"
  "rle-frag1k:dcmcrle +fs 1"
  "jpeg-p14:dcmcjpeg +el"
  "jpeg-sv1:dcmcjpeg +e1"
  "jpeg-ls:dcmcjpls +el"
  "jpeg-ls-undef:dcmcjpls +el -e"
)
refused=0
for src in "${SOURCES[@]}"; do
  [[ -f "$TMP/$src" ]] || die "corpus source $src is missing"
  stem="$(basename "$src" .dcm)"
  for v in "${VARIANTS[@]}"; do
    name="${v%%:*}"
    read -r -a cmd <<< "${v#*:}"
    tool="${cmd[0]}"
    dst="$TMP/dcmtk/$stem.$name.dcm"
    if ! err="$("$DCMTK/$tool" "${cmd[@]:1}" "$TMP/$src" "$dst" 2>&1)"; then
      echo "make-grammar-corpus: $tool ${cmd[*]:1} refused $src: $(echo "$err" | head -2 | tr '\n' ' ')"
      rm -f "$dst"
      refused=$((refused + 1))
    fi
  done
done

(cd "$TMP" && find . -type f -not -name FILES.txt -not -name STAMP | sed 's|^\./||' \
  | LC_ALL=C sort) > "$TMP/FILES.txt"
echo "$want" > "$TMP/STAMP"
rm -rf "$OUT"
mv "$TMP" "$OUT"
echo "make-grammar-corpus: $OUT: $(wc -l < "$OUT/FILES.txt") files ($refused re-encodings refused)"
