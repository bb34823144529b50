#!/usr/bin/env python3
"""compare.py -- compare the data sets of two DICOM files element by element (not the file meta).

Usage:  .venv/bin/python tests/py/compare.py A B
Exit 0 when identical (same tags, VRs and values, recursively into sequences); otherwise exit 1
and print one line per difference. Exit 2 when a file cannot be read.
"""
from __future__ import annotations

import sys

from pydicom import dcmread
from pydicom.dataset import Dataset


def diff_datasets(a: Dataset, b: Dataset, path: str = "") -> list[str]:
    out: list[str] = []
    tags = sorted(set(a.keys()) | set(b.keys()))
    for tag in tags:
        where = f"{path}{tag}"
        if tag not in a:
            out.append(f"{where} {b[tag].keyword}: only in B")
            continue
        if tag not in b:
            out.append(f"{where} {a[tag].keyword}: only in A")
            continue
        ea, eb = a[tag], b[tag]
        name = f"{where} {ea.keyword}".rstrip()
        if ea.VR != eb.VR:
            out.append(f"{name}: VR {ea.VR} != {eb.VR}")
        if ea.VR == "SQ" or eb.VR == "SQ":
            sa, sb = list(ea.value or []), list(eb.value or [])
            if len(sa) != len(sb):
                out.append(f"{name}: {len(sa)} items != {len(sb)} items")
            for i, (ia, ib) in enumerate(zip(sa, sb)):
                out.extend(diff_datasets(ia, ib, f"{name}[{i}]."))
            continue
        va, vb = ea.value, eb.value
        if va != vb:
            out.append(f"{name}: {short(va)} != {short(vb)}")
    return out


def short(v) -> str:
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def compare_files(pa: str, pb: str) -> list[str]:
    a = dcmread(pa, force=True)
    b = dcmread(pb, force=True)
    return diff_datasets(a, b)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        diffs = compare_files(sys.argv[1], sys.argv[2])
    except Exception as e:
        print(f"compare.py: cannot read: {type(e).__name__}: {e}")
        return 2
    for d in diffs:
        print(d)
    if diffs:
        print(f"compare.py: {len(diffs)} difference(s) between {sys.argv[1]} and {sys.argv[2]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
