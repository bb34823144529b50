#!/usr/bin/env python3
"""check_sanitized.py PAIRS.tsv -- verify sanitize outputs with pydicom.

Each line of PAIRS.tsv is "INPUT<TAB>OUTPUT[<TAB>flags]". For every pair:
  * pydicom reads OUTPUT (without force) and its preamble is 128 zero bytes;
  * every public attribute of INPUT (outside group 0002) is in OUTPUT with an equal value,
    recursively through sequences, and OUTPUT has no public attribute INPUT lacks;
  * Pixel Data bytes are identical.
flags: "no-overlays" (60xx groups are expected to be gone).
Prints one line per problem and exits 1 if there is any.
"""
import sys
import warnings

import pydicom
from pydicom.sequence import Sequence

warnings.simplefilter("ignore")


def public(ds, skip_overlays):
    out = {}
    for elem in ds:
        t = elem.tag
        # Group 0000 is never in a data set: that is pydicom reading trailing bytes.
        if t.group in (0x0000, 0x0002) or t.is_private:
            continue
        if skip_overlays and 0x6000 <= t.group <= 0x601E and t.group % 2 == 0:
            continue
        out[t] = elem
    return out


def compare(a, b, where, problems, skip_overlays):
    pa, pb = public(a, skip_overlays), public(b, skip_overlays)
    for t in pa.keys() - pb.keys():
        problems.append(f"{where}: {t} missing in output")
    for t in pb.keys() - pa.keys():
        problems.append(f"{where}: {t} added in output")
    for t in pa.keys() & pb.keys():
        ea, eb = pa[t], pb[t]
        va, vb = ea.value, eb.value
        if isinstance(va, Sequence) or isinstance(vb, Sequence):
            if not (isinstance(va, Sequence) and isinstance(vb, Sequence)) or len(va) != len(vb):
                problems.append(f"{where}: {t} sequence differs")
                continue
            for i, (ia, ib) in enumerate(zip(va, vb)):
                compare(ia, ib, f"{where}{t}[{i}]", problems, skip_overlays)
            continue
        if va != vb:
            problems.append(f"{where}: {t} {ea.keyword}: {va!r:.80} != {vb!r:.80}")


def main():
    problems = []
    n = 0
    for line in open(sys.argv[1], encoding="utf-8"):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2:
            continue
        src, dst = parts[0], parts[1]
        flags = parts[2].split(",") if len(parts) > 2 else []
        n += 1
        try:
            a = pydicom.dcmread(src, force=True)
            b = pydicom.dcmread(dst)
        except Exception as e:  # noqa: BLE001 - report any reader failure
            problems.append(f"{dst}: pydicom cannot read: {e}")
            continue
        if b.preamble != b"\0" * 128:
            problems.append(f"{dst}: preamble not zeroed")
        compare(a, b, dst, problems, "no-overlays" in flags)
        if "PixelData" in a and a.PixelData != b.get("PixelData"):
            problems.append(f"{dst}: pixel data differs from {src}")
    for p in problems:
        print(p)
    print(f"checked {n} outputs, {len(problems)} problems")
    sys.exit(1 if problems or n == 0 else 0)


if __name__ == "__main__":
    main()
