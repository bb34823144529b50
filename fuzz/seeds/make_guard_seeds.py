#!/usr/bin/env python3
"""Seeds for the guard_readers fuzz target: the data sets of the objects
tests/py/make_guard_objects.py writes (protocols, approvals, dose SRs, worklist answers), each
after the target's encoding byte (0: Explicit VR Little Endian). Files over 8 KiB are skipped.

Usage: .venv/bin/python fuzz/seeds/make_guard_seeds.py   (from the repository root)
"""
import hashlib
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[2]
out = root / "fuzz/corpus/guard_readers"
out.mkdir(parents=True, exist_ok=True)
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run([sys.executable, str(root / "tests/py/make_guard_objects.py"), tmp], check=True,
                   stdout=subprocess.DEVNULL)
    for f in sorted(Path(tmp).glob("*.dcm")):
        b = f.read_bytes()
        # (0002,0000) UL right after DICM: its value is the meta group's length.
        (meta_len,) = struct.unpack_from("<I", b, 132 + 8)
        data = b[132 + 12 + meta_len:]
        if len(data) > 8192:
            continue
        seed = b"\x00" + data
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        print(f.name)
