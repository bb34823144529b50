#!/usr/bin/env python3
"""n_scp.py -- pynetdicom MPPS SCP and Storage Commitment Push Model SCP for Radguard's DIMSE-N
integration tests (crates/radguard/tests/dimse_n.rs).

Usage:  .venv/bin/python tests/py/n_scp.py [--port 0] [--aet NSCP]

Binds 127.0.0.1 only. When ready it prints exactly one line to stdout:
    n_scp.py: listening on 127.0.0.1:PORT
then one line per event, flushed at once:
    n_scp.py: association from AE          (each association, as it is requested)
    n_scp.py: received N-CREATE|N-SET|N-ACTION|N-GET|N-DELETE class=UID instance=UID
    n_scp.py: event-report status=0xSSSS       (Storage Commitment's report, see below)
MPPS: N-CREATE and N-SET are answered 0x0000 (N-CREATE echoes its attribute list). Storage
Commitment: N-ACTION (Request Storage Commitment) is answered 0x0000; then, on the same
association (PS3.4 J.3.3), the SCP sends an N-EVENT-REPORT (event type 1: all instances
committed) listing the requested references, and logs the status the other side answered
(0xFFFF when no answer came).
--report-to-file PATH: the report goes instead on a NEW association the SCP opens (PS3.4 J.3.3),
to the target written in PATH ("HOST PORT CALLED_AE", read when the report is due), proposing
Storage Commitment Push Model with SCP/SCU Role Selection (PS3.7 D.3.3.4: the requestor takes
the SCP role); it logs "report association to AE: accepted|rejected|aborted" first.
"""
from __future__ import annotations

import argparse
import sys
import threading

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
    Verification,
)

TS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
NAMES = {
    evt.EVT_N_CREATE: "N-CREATE",
    evt.EVT_N_SET: "N-SET",
    evt.EVT_N_GET: "N-GET",
    evt.EVT_N_DELETE: "N-DELETE",
}


def say(line: str) -> None:
    sys.stdout.write(f"n_scp.py: {line}\n")
    sys.stdout.flush()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--aet", default="NSCP")
    ap.add_argument("--report-to-file", default=None)
    a = ap.parse_args()

    ae = AE(ae_title=a.aet)
    ae.network_timeout = 30
    ae.dimse_timeout = 30
    ae.acse_timeout = 30
    for uid in (ModalityPerformedProcedureStep, StorageCommitmentPushModel, Verification):
        ae.add_supported_context(uid, TS)

    def request_of(event):
        rq = event.request
        cls = getattr(rq, "AffectedSOPClassUID", None) or getattr(rq, "RequestedSOPClassUID", "")
        inst = getattr(rq, "AffectedSOPInstanceUID", None) or getattr(
            rq, "RequestedSOPInstanceUID", ""
        )
        return cls, inst

    def on_n(event):
        cls, inst = request_of(event)
        say(f"received {NAMES[event.event]} class={cls} instance={inst}")
        if event.event == evt.EVT_N_CREATE:
            ds = event.attribute_list
            ds.SOPClassUID = cls
            ds.SOPInstanceUID = inst
            return 0x0000, ds
        if event.event == evt.EVT_N_SET:
            return 0x0000, event.modification_list
        return 0x0000, None

    def on_action(event):
        cls, inst = request_of(event)
        say(f"received N-ACTION class={cls} instance={inst}")
        info = event.action_information
        assoc = event.assoc

        def report():
            ds = Dataset()
            ds.TransactionUID = info.TransactionUID
            ds.ReferencedSOPSequence = info.ReferencedSOPSequence
            # The report goes after the N-ACTION-RSP: wait until the reactor sent it.
            for _ in range(500):
                if not assoc.is_established:
                    break
                if sent.wait(0.01):
                    break
            if a.report_to_file:
                separate(ds, cls, inst)
                return
            status, _reply = assoc.send_n_event_report(ds, 1, cls, inst)
            code = getattr(status, "Status", 0xFFFF) if status else 0xFFFF
            say(f"event-report status=0x{code:04X}")

        def separate(ds, cls, inst):
            with open(a.report_to_file) as f:
                host, port, called = f.read().split()
            rae = AE(ae_title=a.aet)
            rae.network_timeout = rae.dimse_timeout = rae.acse_timeout = 30
            rae.add_requested_context(StorageCommitmentPushModel, TS)
            role = build_role(StorageCommitmentPushModel, scp_role=True)
            rassoc = rae.associate(host, int(port), ae_title=called, ext_neg=[role])
            if not rassoc.is_established:
                state = "rejected" if rassoc.is_rejected else "aborted"
                say(f"report association to {called}: {state}")
                return
            say(f"report association to {called}: accepted")
            try:
                status, _reply = rassoc.send_n_event_report(ds, 1, cls, inst)
            except ValueError as e:  # no accepted context in the SCP role
                say(f"event-report not sent: {e}")
                rassoc.release()
                return
            code = getattr(status, "Status", 0xFFFF) if status else 0xFFFF
            say(f"event-report status=0x{code:04X}")
            if rassoc.is_established:
                rassoc.release()

        sent = threading.Event()
        pending.append(sent)
        threading.Thread(target=report, daemon=True).start()
        return 0x0000, None

    pending: list[threading.Event] = []

    def on_sent(event):
        # The N-ACTION-RSP is out: the report may follow.
        if getattr(event, "message", None) is not None and type(event.message).__name__ == "N_ACTION_RSP":
            while pending:
                pending.pop().set()

    def on_requested(event):
        say(f"association from {event.assoc.requestor.ae_title}")

    handlers = [(e, on_n) for e in NAMES] + [
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_N_ACTION, on_action),
        (evt.EVT_DIMSE_SENT, on_sent),
    ]
    server = ae.start_server(("127.0.0.1", a.port), block=False, evt_handlers=handlers)
    say(f"listening on 127.0.0.1:{server.server_address[1]}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
