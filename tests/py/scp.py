#!/usr/bin/env python3
"""scp.py -- pynetdicom Storage SCP + Verification SCP for Radguard's integration tests.

Usage:  .venv/bin/python tests/py/scp.py --out DIR [--port 0] [--aet PYSCP] [options]

Binds 127.0.0.1 only. When ready it prints exactly one line to stdout:
    scp.py: listening on 127.0.0.1:PORT
Every received data set is written to DIR/<SOPInstanceUID>.dcm exactly as received (a Part-10
file: preamble + file meta built by pynetdicom + the data set bytes as they came over the wire,
in the negotiated transfer syntax), atomically (temporary name, then rename).

Fault injection (for upstream-failure tests):
  --die-after-bytes N   the process exits abruptly (os._exit, no A-ABORT, TCP reset/close) once
                        more than N bytes of P-DATA have been received on an association
  --abort-on-store      answer every C-STORE request with an A-ABORT instead of a response
  --store-status S      answer C-STORE with status S (e.g. 0xA700) and store nothing
  --refuse-uid UID      answer C-STORE of this SOP Instance UID only with --refuse-status
                        (default 0xA900) and store nothing (a "poison" instance)
  --store-delay-ms N    wait N ms before answering each C-STORE (a slow archive)
  --arrivals            append each stored SOP Instance UID to DIR/arrivals.txt, in the
                        order the C-STOREs were answered (across associations)
Acceptance checks (for testing the probe itself):
  --require-called-aet  reject associations whose called AE is not --aet  (1,1,7)
  --require-calling-aet AE[,AE]  reject other calling AEs (1,1,3)
  --max-associations N  reject beyond N concurrent associations (2,3,2)
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="directory for received instances")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--aet", default="PYSCP")
    ap.add_argument("--die-after-bytes", type=int, default=None)
    ap.add_argument("--abort-on-store", action="store_true")
    ap.add_argument("--store-status", type=lambda s: int(s, 0), default=None)
    ap.add_argument("--refuse-uid", default=None)
    ap.add_argument("--refuse-status", type=lambda s: int(s, 0), default=0xA900)
    ap.add_argument("--store-delay-ms", type=int, default=0)
    ap.add_argument("--arrivals", action="store_true")
    ap.add_argument("--require-called-aet", action="store_true")
    ap.add_argument("--require-calling-aet", default=None)
    ap.add_argument("--max-associations", type=int, default=32)
    ap.add_argument("--verbose", action="store_true", help="pynetdicom debug log on stderr")
    a = ap.parse_args()

    if a.verbose:
        from pynetdicom import debug_logger

        debug_logger()
    os.makedirs(a.out, exist_ok=True)

    ae = AE(ae_title=a.aet)
    ae.maximum_associations = a.max_associations
    ae.maximum_pdu_size = 0  # unlimited
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    ae.require_called_aet = a.require_called_aet
    if a.require_calling_aet:
        ae.require_calling_aet = a.require_calling_aet.split(",")
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Defined Procedure Protocol (CT, XA) and Protocol Approval Storage: a modality's protocol
    # store (pynetdicom does not list them among its storage contexts).
    for uid in ("1.2.840.10008.5.1.4.1.1.200.1", "1.2.840.10008.5.1.4.1.1.200.7",
                "1.2.840.10008.5.1.4.1.1.200.3"):
        ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)

    received: dict[int, int] = {}
    lock = threading.Lock()

    def on_data(event):
        if a.die_after_bytes is None:
            return
        with lock:
            key = id(event.assoc)
            received[key] = received.get(key, 0) + len(event.data)
            if received[key] > a.die_after_bytes:
                sys.stderr.write(f"scp.py: dying after {received[key]} bytes\n")
                sys.stderr.flush()
                os._exit(3)

    def on_store(event):
        if a.abort_on_store:
            event.assoc.abort()
            return 0xC000
        if a.store_status is not None:
            return a.store_status
        sop = event.request.AffectedSOPInstanceUID
        if a.refuse_uid is not None and sop == a.refuse_uid:
            sys.stderr.write(f"scp.py: refusing {sop} with 0x{a.refuse_status:04X}\n")
            sys.stderr.flush()
            return a.refuse_status
        if a.store_delay_ms:
            time.sleep(a.store_delay_ms / 1000)
        path = os.path.join(a.out, f"{sop}.dcm")
        tmp = os.path.join(a.out, f".{sop}.{threading.get_ident()}.part")
        with open(tmp, "wb") as f:
            f.write(event.encoded_dataset())
        os.replace(tmp, path)
        if a.arrivals:
            with lock, open(os.path.join(a.out, "arrivals.txt"), "a") as f:
                f.write(sop + "\n")
        return 0x0000

    handlers = [(evt.EVT_C_STORE, on_store)]
    if a.die_after_bytes is not None:
        handlers.append((evt.EVT_DATA_RECV, on_data))
    server = ae.start_server(("127.0.0.1", a.port), block=False, evt_handlers=handlers)
    port = server.server_address[1]
    print(f"scp.py: listening on 127.0.0.1:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
