#!/usr/bin/env python3
"""mwl.py -- Modality Worklist (1.2.840.10008.5.1.4.31) over pynetdicom, for the guard's tests.

  mwl.py serve --aet RIS ANSWER.dcm...   a worklist SCP on 127.0.0.1 (free port) answering every
                                         C-FIND with these identifiers in order; prints
                                         "mwl.py: listening on 127.0.0.1:PORT"
  mwl.py query --port P --calling-ae CT1 --called-ae RIS
                                         a modality's worklist query; prints ONE JSON object:
                                         {"statuses": [...], "identifiers": [{"PatientName",
                                          "codes": ["SCHEME:CODE", ...]}], "error": null}
"""
import argparse
import json
import sys
import threading

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom import evt

MWL = "1.2.840.10008.5.1.4.31"


def serve(a):
    answers = []
    for f in a.answers:
        ds = dcmread(f)
        ds.file_meta = None
        del ds.file_meta
        answers.append(ds)
    ae = AE(ae_title=a.aet)
    ae.add_supported_context(MWL, ALL_TRANSFER_SYNTAXES)

    def on_find(event):
        for ds in answers:
            if event.is_cancelled:
                return
            yield 0xFF00, ds

    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    print(f"mwl.py: listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


def query(a):
    out = {"statuses": [], "identifiers": [], "error": None}
    ae = AE(ae_title=a.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(MWL)
    assoc = ae.associate("127.0.0.1", a.port, ae_title=a.called_ae)
    if not assoc.is_established:
        out["error"] = "association not established"
        print(json.dumps(out))
        return
    q = Dataset()
    q.PatientName = ""
    q.PatientID = ""
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledStationAETitle = ""
    sps.ScheduledProtocolCodeSequence = []
    q.ScheduledProcedureStepSequence = [sps]
    for status, ident in assoc.send_c_find(q, MWL):
        out["statuses"].append(status.Status if status else None)
        if ident is not None and status and status.Status in (0xFF00, 0xFF01):
            codes = []
            for s in ident.get("ScheduledProcedureStepSequence", []):
                for c in s.get("ScheduledProtocolCodeSequence", []):
                    codes.append(f"{c.CodingSchemeDesignator}:{c.CodeValue}")
            out["identifiers"].append({"PatientName": str(ident.get("PatientName", "")),
                                       "codes": codes})
    assoc.release()
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--aet", default="RIS")
    s.add_argument("answers", nargs="+")
    q = sub.add_parser("query")
    q.add_argument("--port", type=int, required=True)
    q.add_argument("--calling-ae", default="CT1")
    q.add_argument("--called-ae", default="RIS")
    a = ap.parse_args()
    serve(a) if a.cmd == "serve" else query(a)


if __name__ == "__main__":
    sys.exit(main())
