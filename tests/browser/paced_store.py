#!/usr/bin/env python3
"""paced_store.py -- a C-STORE SCU (pynetdicom) whose one association stays open while a browser
watches it: after each --hold-after count of files sent it holds the association until the
next go file exists (PATH.1 for the first hold, PATH.2 for the second, ...), then goes on; after
the last file it releases.

Usage:  .venv/bin/python tests/browser/paced_store.py --port P --calling AE --called AE
            --hold-after N [--hold-after M ...] --go PATH [--hold-timeout S] FILE...

Every step is one flushed stdout line starting with "paced_store.py: ":
    "associated", "sent K/N 0xSSSS", "holding after K", "go K", "released",
    or "error: ..." (then exit 1). Exit 0 when every C-STORE answered Success (0x0000).
Each hold is bounded by --hold-timeout (default 120 s): a test that never says go still ends.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from pydicom import dcmread
from pynetdicom import AE


def say(msg: str) -> None:
    print(f"paced_store.py: {msg}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--calling", required=True)
    p.add_argument("--called", required=True)
    p.add_argument("--hold-after", type=int, action="append", required=True)
    p.add_argument("--go", required=True)
    p.add_argument("--hold-timeout", type=float, default=120.0)
    p.add_argument("files", nargs="+")
    a = p.parse_args()

    datasets = [dcmread(f) for f in a.files]
    ae = AE(ae_title=a.calling)
    # One context per (SOP class, transfer syntax) pair the files use.
    seen = set()
    for ds in datasets:
        key = (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(key[0], [key[1]])
    assoc = ae.associate("127.0.0.1", a.port, ae_title=a.called)
    if not assoc.is_established:
        say("error: association not established")
        return 1
    say("associated")
    ok = True
    holds = sorted(set(a.hold_after))
    for i, ds in enumerate(datasets, start=1):
        if i - 1 in holds:
            n = holds.index(i - 1) + 1
            go = f"{a.go}.{n}"
            say(f"holding after {i - 1}")
            deadline = time.monotonic() + a.hold_timeout
            while not os.path.exists(go):
                if time.monotonic() > deadline:
                    say(f"error: no {go} within the hold timeout")
                    assoc.abort()
                    return 1
                time.sleep(0.05)
            say(f"go {i - 1}")
        status = assoc.send_c_store(ds)
        code = getattr(status, "Status", None)
        say(f"sent {i}/{len(datasets)} " + ("none" if code is None else f"0x{code:04X}"))
        if code != 0:
            ok = False
    assoc.release()
    say("released")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
