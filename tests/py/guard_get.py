#!/usr/bin/env python3
"""guard_get.py -- C-GET over pynetdicom for the scan-protocol guard's tests: an archive that
answers a modality's C-GET with protocol objects as C-STORE sub-operations on the modality's
own association (PS3.4 C.4.3, SCP/SCU Role Selection PS3.7 D.3.3.4), and the modality.

  guard_get.py --aet ARCHIVE [--port 0] serve FILE...
        a Study Root C-GET SCP on 127.0.0.1 (port 0: any free port) answering every C-GET with the files'
        data sets as sub-operations, in order; prints "guard_get.py: listening on
        127.0.0.1:PORT", then one line per sub-operation answered by the modality:
        "guard_get.py: sub-operation N SOP_INSTANCE_UID: C-STORE-RSP 0xSSSS".
  guard_get.py --aet CT1 --port P get --called-ae ARCHIVE --out DIR SOP_CLASS...
        the modality: a Study Root C-GET (STUDY level, any study) proposing each SOP_CLASS with
        the SCP role; stores what it receives in DIR as SOP_INSTANCE_UID.dcm; prints ONE JSON
        object: {"statuses": [...], "final": {"status", "completed", "failed", "warning",
        "failed_uids": [...]}, "received": [SOP Instance UIDs], "error": null}
"""
import argparse
import json
import sys
import threading
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

TS = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def serve(a):
    files = [dcmread(f) for f in a.files]
    ae = AE(ae_title=a.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_supported_context(GET, TS)
    for cls in sorted({str(ds.SOPClassUID) for ds in files}):
        ae.add_supported_context(cls, TS, scu_role=True, scp_role=True)

    def on_get(event):
        assoc = event.assoc
        send = assoc.send_c_store
        n = {"i": 0}

        def logged(dataset, *args, **kwargs):
            n["i"] += 1
            status = send(dataset, *args, **kwargs)
            code = f"0x{status.Status:04X}" if "Status" in status else "none"
            print(f"guard_get.py: sub-operation {n['i']} {dataset.SOPInstanceUID}: "
                  f"C-STORE-RSP {code}", flush=True)
            return status

        assoc.send_c_store = logged
        yield len(files)
        for ds in files:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    server = ae.start_server(("127.0.0.1", a.port), block=False,
                             evt_handlers=[(evt.EVT_C_GET, on_get)])
    print(f"guard_get.py: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


def get(a):
    out = {"statuses": [], "final": None, "received": [], "error": None}
    dest = Path(a.out)
    dest.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title=a.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(GET)
    for cls in a.classes:
        ae.add_requested_context(cls, TS)
    roles = [build_role(cls, scp_role=True) for cls in a.classes]

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        uid = str(ds.SOPInstanceUID)
        ds.save_as(dest / f"{uid}.dcm", enforce_file_format=True)
        out["received"].append(uid)
        return 0x0000

    assoc = ae.associate("127.0.0.1", a.port, ae_title=a.called_ae, ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if not assoc.is_established:
        out["error"] = "association not established"
        print(json.dumps(out))
        return
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = ""
    for status, ident in assoc.send_c_get(q, GET):
        code = status.Status if status and "Status" in status else None
        out["statuses"].append(code)
        if code is not None and code not in (0xFF00, 0xFF01):
            failed = []
            if ident is not None and "FailedSOPInstanceUIDList" in ident:
                v = ident.FailedSOPInstanceUIDList
                failed = [str(v)] if isinstance(v, str) else [str(x) for x in v]
            out["final"] = {
                "status": code,
                "completed": status.get("NumberOfCompletedSuboperations"),
                "failed": status.get("NumberOfFailedSuboperations"),
                "warning": status.get("NumberOfWarningSuboperations"),
                "failed_uids": failed,
            }
    assoc.release()
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--aet", required=True, help="own AE title")
    ap.add_argument("--port", type=int, required=True, help="serve: listen on; get: connect to")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("files", nargs="+")
    g = sub.add_parser("get")
    g.add_argument("--called-ae", default="ARCHIVE")
    g.add_argument("--out", required=True)
    g.add_argument("classes", nargs="+")
    a = ap.parse_args()
    serve(a) if a.cmd == "serve" else get(a)


if __name__ == "__main__":
    sys.exit(main())
