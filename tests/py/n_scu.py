#!/usr/bin/env python3
"""n_scu.py -- pynetdicom DIMSE-N SCU for Radguard's integration tests: a modality's MPPS
(N-CREATE, then N-SET to COMPLETED) or a Storage Commitment request (N-ACTION) whose
N-EVENT-REPORT it waits for on the same association.

Usage:  .venv/bin/python tests/py/n_scu.py --port P --called AE --calling AE mpps
        .venv/bin/python tests/py/n_scu.py --port P --called AE --calling AE commit \
            [--until-file PATH]

Prints one JSON object on stdout:
    {"associated": bool, "contexts": {uid: result}, "statuses": [..], "reports": [..]}
`statuses`: the status of each request (null when no response came); `reports`: the Event Type
IDs of the N-EVENT-REPORTs received (answered 0x0000). `commit` waits (at most 60 s) until a
report arrived, or until --until-file exists (the test creates it once it saw that the report
was answered elsewhere: nothing is waited for by time alone).
`commit --listen PORT`: the modality also accepts associations on 127.0.0.1:PORT (its own AE
title) for Storage Commitment Push Model with the requestor in the SCP role (PS3.4 J.3.3: the
SCP may send the report on a new association), and counts the reports it receives there too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel

TS = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known instance, PS3.4 J.3.5


def status_of(st) -> int | None:
    return int(st.Status) if st is not None and "Status" in st else None


def mpps_create() -> Dataset:
    ds = Dataset()
    ds.PatientName = "MPPS^TEST"
    ds.PatientID = "MPPS-1"
    ds.PerformedProcedureStepID = "PPS-1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20260101"
    ds.PerformedProcedureStepStartTime = "120000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.ScheduledStepAttributesSequence = [Dataset()]
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = generate_uid()
    return ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--called", default="RADGUARD")
    ap.add_argument("--calling", default="MODALITY")
    ap.add_argument("--until-file", default=None)
    ap.add_argument("--listen", type=int, default=None)
    ap.add_argument("mode", choices=["mpps", "commit"])
    a = ap.parse_args()

    ae = AE(ae_title=a.calling)
    ae.network_timeout = 30
    ae.dimse_timeout = 30
    ae.acse_timeout = 30
    cls = ModalityPerformedProcedureStep if a.mode == "mpps" else StorageCommitmentPushModel
    ae.add_requested_context(cls, TS)
    reports: list[int] = []

    def on_report(event):
        reports.append(int(event.request.EventTypeID))
        return 0x0000, None

    server = None
    if a.listen is not None:
        # The acceptor accepts the requestor's proposal: SCU role no, SCP role yes.
        ae.add_supported_context(StorageCommitmentPushModel, TS, scu_role=False, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", a.listen),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
        )

    out: dict = {"associated": False, "contexts": {}, "statuses": [], "reports": reports}
    assoc = ae.associate(
        "127.0.0.1",
        a.port,
        ae_title=a.called,
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)],
    )
    if assoc.is_established:
        out["associated"] = True
        for cx in assoc.accepted_contexts:
            out["contexts"][str(cx.abstract_syntax)] = 0
        for cx in assoc.rejected_contexts:
            out["contexts"][str(cx.abstract_syntax)] = cx.result
        if str(cls) in out["contexts"] and out["contexts"][str(cls)] == 0:
            if a.mode == "mpps":
                inst = generate_uid()
                st, _ = assoc.send_n_create(mpps_create(), cls, inst)
                out["statuses"].append(status_of(st))
                mod = Dataset()
                mod.PerformedProcedureStepStatus = "COMPLETED"
                mod.PerformedProcedureStepEndDate = "20260101"
                mod.PerformedProcedureStepEndTime = "121000"
                st, _ = assoc.send_n_set(mod, cls, inst)
                out["statuses"].append(status_of(st))
            else:
                info = Dataset()
                info.TransactionUID = generate_uid()
                ref = Dataset()
                ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
                ref.ReferencedSOPInstanceUID = generate_uid()
                info.ReferencedSOPSequence = [ref]
                st, _ = assoc.send_n_action(info, 1, cls, COMMITMENT_INSTANCE)
                out["statuses"].append(status_of(st))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not reports and assoc.is_established:
                    if a.until_file and os.path.exists(a.until_file):
                        break
                    time.sleep(0.02)
        if assoc.is_established:
            assoc.release()
    else:
        for cx in getattr(assoc, "rejected_contexts", []):
            out["contexts"][str(cx.abstract_syntax)] = cx.result
    if server is not None:
        server.shutdown()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
