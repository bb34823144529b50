#!/usr/bin/env python3
"""compare_dirs.py -- check that every DICOM file in SENTDIR arrived intact in RECVDIR.

Usage:  .venv/bin/python tests/py/compare_dirs.py SENTDIR RECVDIR [--allow-extra]

Files are matched by SOP Instance UID (both trees are searched recursively for `*.dcm` files;
hidden files are ignored; names do not matter). The data sets are compared element by element (compare.py; the file meta is ignored).
Exit 0 when every sent instance was received identical and (unless --allow-extra) nothing
else was received; otherwise exit 1 with one line per problem. Last line: a summary.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import compare_files  # noqa: E402


def index(root: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    problems: list[str] = []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or p.suffix != ".dcm":
            continue
        try:
            ds = dcmread(p, stop_before_pixels=True, force=True)
            uid = str(ds.SOPInstanceUID)
        except Exception as e:
            problems.append(f"{p}: unreadable ({type(e).__name__}: {e})")
            continue
        if uid in found:
            problems.append(f"{p}: duplicate SOP Instance UID {uid} (also {found[uid]})")
            continue
        found[uid] = p
    return found, problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sent", type=Path)
    ap.add_argument("recv", type=Path)
    ap.add_argument("--allow-extra", action="store_true")
    a = ap.parse_args()
    sent, problems = index(a.sent)
    recv, p2 = index(a.recv)
    problems += p2
    same = 0
    for uid, sp in sent.items():
        rp = recv.get(uid)
        if rp is None:
            problems.append(f"{sp}: not received (SOP Instance UID {uid})")
            continue
        diffs = compare_files(str(sp), str(rp))
        if diffs:
            problems.append(f"{sp} != {rp}:")
            problems.extend("    " + d for d in diffs[:20])
        else:
            same += 1
    if not a.allow_extra:
        for uid in sorted(set(recv) - set(sent)):
            problems.append(f"{recv[uid]}: received but not sent (SOP Instance UID {uid})")
    for p in problems:
        print(p)
    print(f"compare_dirs.py: {len(sent)} sent, {len(recv)} received, {same} identical, "
          f"{len(problems)} problem line(s)")
    return 0 if not problems and same == len(sent) else 1


if __name__ == "__main__":
    sys.exit(main())
