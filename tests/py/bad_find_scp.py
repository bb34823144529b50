#!/usr/bin/env python3
"""bad_find_scp.py -- a Study Root C-FIND SCP (pynetdicom) whose second answer is malformed.

Usage:  .venv/bin/python tests/py/bad_find_scp.py [--port 0] [--aet BADFIND] [--cancel-wait S]
                                                  [--verbose]

Binds 127.0.0.1 only. When ready it prints exactly one line to stdout:
    bad_find_scp.py: listening on 127.0.0.1:PORT
Then it logs one line to stdout per step (flushed), all starting with "bad_find_scp.py: " and
ending with the time since start, e.g. " [+1.234 s]". --verbose: pynetdicom's debug log on stderr.

Every C-FIND request gets, whatever it asks for:
  1. a Pending answer with a valid identifier (PatientID RG-FIND-1);
  2. a Pending answer whose identifier holds Patient ID (0010,0020) twice on the wire
     (RG-FIND-2, then RG-FIND-2-DUP; otherwise valid), encoded by hand in the negotiated
     transfer syntax: pydicom's Dataset cannot hold a repeated element;
  3. after waiting up to --cancel-wait seconds (default 10) for a C-CANCEL-RQ for the request
     (logged as "C-CANCEL-RQ received for message id N", or "no C-CANCEL-RQ for message id N
     within S s"), a third valid Pending answer (PatientID RG-FIND-3), sent whether or not a
     cancel arrived ("sent pending 3 (valid)");
  4. the final Success response (after --final-delay seconds more, default 0, with the third).
An A-RELEASE-RQ is logged when it arrives ("A-RELEASE-RQ received").
The handler sends the responses itself (dimse.send_msg) instead of yielding them: pynetdicom
stops a yielding handler, and swallows the A-RELEASE-RQ without answering it, when the release
arrives while the handler still runs -- which a client that got its final answer from a gateway
early may well do. Association ends are logged ("association aborted", "association released").
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

START = time.monotonic()
STUDY_UIDS = {
    1: "1.2.826.0.1.3680043.8.498.1001",
    2: "1.2.826.0.1.3680043.8.498.1002",
    3: "1.2.826.0.1.3680043.8.498.1003",
}


def log(msg: str) -> None:
    print(f"bad_find_scp.py: {msg} [+{time.monotonic() - START:.3f} s]", flush=True)


def encoded(ds: Dataset, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def answer(n: int, patient_id: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = STUDY_UIDS[n]
    return ds


def duplicated_answer(implicit: bool, little: bool) -> bytes:
    """Answer 2 with (0010,0020) twice: the elements up to Patient ID, Patient ID again, the
    rest -- each part encoded by pydicom in the negotiated transfer syntax. The repeated element
    starts at byte 32: (0008,0052) "STUDY " is 14 bytes, (0010,0020) "RG-FIND-2 " 18."""
    head = Dataset()
    head.QueryRetrieveLevel = "STUDY"
    head.PatientID = "RG-FIND-2"
    dup = Dataset()
    dup.PatientID = "RG-FIND-2-DUP"
    tail = Dataset()
    tail.StudyInstanceUID = STUDY_UIDS[2]
    return b"".join(encoded(d, implicit, little) for d in (head, dup, tail))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--aet", default="BADFIND")
    ap.add_argument("--cancel-wait", type=float, default=10.0)
    ap.add_argument(
        "--final-delay",
        type=float,
        default=0.0,
        help="seconds between the cancel (or its timeout) and the third answer and final status",
    )
    ap.add_argument("--verbose", action="store_true", help="pynetdicom debug log on stderr")
    a = ap.parse_args()

    if a.verbose:
        from pynetdicom import debug_logger

        debug_logger()

    ae = AE(ae_title=a.aet)
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    # Uncompressed little endian only: the raw identifier is encoded by hand (never deflated).
    ae.add_supported_context(
        StudyRootQueryRetrieveInformationModelFind,
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
    )

    def on_find(event):
        req = event.request
        msg_id = req.MessageID
        cx_id = event.context.context_id
        ts = event.context.transfer_syntax
        implicit, little = ts.is_implicit_VR, ts.is_little_endian
        dimse = event.assoc.dimse
        log(f"C-FIND-RQ message id {msg_id} (transfer syntax {ts})")

        def send(status: int, identifier: bytes | None) -> None:
            rsp = C_FIND()
            rsp.MessageIDBeingRespondedTo = msg_id
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            rsp.Status = status
            if identifier is not None:
                rsp.Identifier = BytesIO(identifier)
            dimse.send_msg(rsp, cx_id)

        send(0xFF00, encoded(answer(1, "RG-FIND-1"), implicit, little))
        log("sent pending 1 (valid)")
        send(0xFF00, duplicated_answer(implicit, little))
        log("sent pending 2 (Patient ID (0010,0020) twice)")
        # The DUL thread files C-CANCEL-RQs under dimse.cancel_req while this handler runs.
        deadline = time.monotonic() + a.cancel_wait
        while msg_id not in dimse.cancel_req and time.monotonic() < deadline:
            if not event.assoc.is_established:
                break
            time.sleep(0.01)
        if msg_id in dimse.cancel_req:
            log(f"C-CANCEL-RQ received for message id {msg_id}")
        else:
            log(f"no C-CANCEL-RQ for message id {msg_id} within {a.cancel_wait} s")
        if a.final_delay:
            time.sleep(a.final_delay)
        if not event.assoc.is_established:
            log("association gone before pending 3")
            return
        send(0xFF00, encoded(answer(3, "RG-FIND-3"), implicit, little))
        log("sent pending 3 (valid)")
        log("sending final success")
        # A generator that yields nothing: pynetdicom then sends the final Success itself.
        yield from ()

    def on_pdu_recv(event):
        # PS3.8 9.3.6: an A-RELEASE-RQ (PDU type 0x05), logged when it arrives.
        if getattr(event.pdu, "pdu_type", None) == 0x05:
            log("A-RELEASE-RQ received")

    def on_aborted(event):
        log("association aborted")

    def on_released(event):
        log("association released")

    handlers = [
        (evt.EVT_C_FIND, on_find),
        (evt.EVT_PDU_RECV, on_pdu_recv),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_RELEASED, on_released),
    ]
    server = ae.start_server(("127.0.0.1", a.port), block=False, evt_handlers=handlers)
    port = server.server_address[1]
    print(f"bad_find_scp.py: listening on 127.0.0.1:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
