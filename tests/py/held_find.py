#!/usr/bin/env python3
"""held_find.py -- one association held open across several Study Root C-FINDs, each query
after the first waiting for a go file, so a test can change things (e.g. reload the gateway's
policy) between two queries of the same association, never racing the client.

Usage:  .venv/bin/python tests/py/held_find.py --port PORT --calling-ae A --called-ae C
            --queries N --go-dir DIR [--level STUDY] [--key Keyword=Value ...]
            [--return-key Keyword ...] [--timeout SECONDS]

Steps on stdout, one line each, flushed (tests wait for them):
  held_find.py: associated (at S s)
  held_find.py: query I done (at S s)
Query I is sent with Message ID I. Before query I+1 (I >= 1) it waits up to --timeout for
DIR/go-<I+1>. It stops early when the association is gone. Last line: one JSON object
{"association": "accepted" | "rejected" | "aborted" | "connect-failed",
 "queries": [{"statuses": [...], "matches": M, "secs": S}, ...],   # one per query sent
 "abort": {"source": 2, "reason": 0} | null,             # an A-ABORT PDU received
 "aborted": bool, "released": bool, "error": null | "text", "elapsed_secs": S}
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Its pynetdicom requestor workaround applies on import; its key parsing and status reading
# are the ones every other probe uses.
import dicom_probe
from pynetdicom import AE, evt
from pynetdicom import sop_class as sc
from pynetdicom.pdu import A_ABORT_RQ


T0 = time.monotonic()


def step(text: str) -> None:
    print(f"held_find.py: {text} (at {time.monotonic() - T0:.3f} s)", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--calling-ae", required=True)
    ap.add_argument("--called-ae", required=True)
    ap.add_argument("--queries", type=int, required=True)
    ap.add_argument("--go-dir", required=True)
    ap.add_argument("--level", default="STUDY")
    ap.add_argument("--key", action="append", default=[])
    ap.add_argument("--return-key", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()

    out: dict = {"association": None, "queries": [], "abort": None, "aborted": False,
                 "released": False, "error": None}

    def on_pdu(event):
        if isinstance(event.pdu, A_ABORT_RQ):
            out["abort"] = {"source": int(event.pdu.source),
                            "reason": int(event.pdu.reason_diagnostic)}

    ae = AE(ae_title=a.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = a.timeout
    ae.connection_timeout = a.timeout
    model = sc.StudyRootQueryRetrieveInformationModelFind
    ae.add_requested_context(model, dicom_probe.UNCOMPRESSED)
    assoc = ae.associate(a.host, a.port, ae_title=a.called_ae,
                         evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)])
    if assoc.is_established:
        out["association"] = "accepted"
    elif assoc.is_rejected:
        out["association"] = "rejected"
    else:
        out["association"] = "aborted"
    if assoc.is_established:
        step("associated")
        query = dicom_probe.parse_keys(a.key, a.level, a.return_key)
        try:
            for i in range(1, a.queries + 1):
                if i > 1:
                    go = Path(a.go_dir) / f"go-{i}"
                    deadline = time.monotonic() + a.timeout
                    while not go.exists() and time.monotonic() < deadline:
                        time.sleep(0.02)
                    if not go.exists():
                        out["error"] = f"{go} did not appear within {a.timeout} s"
                        break
                if not assoc.is_established or out["abort"] is not None:
                    break
                q: dict = {"statuses": [], "matches": 0}
                t = time.monotonic()
                out["queries"].append(q)
                for status, ident in assoc.send_c_find(query, model, msg_id=i):
                    st = dicom_probe.status_of(status)
                    q["statuses"].append(st)
                    if st in (0xFF00, 0xFF01) and ident is not None:
                        q["matches"] += 1
                q["secs"] = round(time.monotonic() - t, 3)
                step(f"query {i} done")
        except Exception as e:  # report, never a traceback instead of the JSON
            out["error"] = f"{type(e).__name__}: {e}"
        last = out["queries"][-1]["statuses"][-1:] if out["queries"] else []
        if last and last[0] not in (0x0000, 0xFF00, 0xFF01):
            # A refused request may be followed by the acceptor's A-ABORT (PS3.8 §9.2): let it
            # arrive before releasing, or the release waits the whole ACSE timeout for an
            # A-RELEASE-RP that never comes.
            deadline = time.monotonic() + 5
            while (assoc.is_established and out["abort"] is None
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        if assoc.is_established and out["abort"] is None:
            assoc.release()
        out["released"] = bool(assoc.is_released)
        out["aborted"] = bool(assoc.is_aborted) or out["abort"] is not None
    out["elapsed_secs"] = round(time.monotonic() - T0, 3)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
