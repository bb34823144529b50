#!/usr/bin/env python3
"""dicom_probe.py -- a pynetdicom SCU that reports exactly what happened as ONE JSON object.

Usage:  .venv/bin/python tests/py/dicom_probe.py [common options] COMMAND [args]

Common options: --host 127.0.0.1 --port PORT --calling-ae PROBE --called-ae ANY-SCP
                --contexts UID|Keyword[,...]   propose exactly these abstract syntaxes
                --timeout SECONDS (ACSE/DIMSE/network/connect timeouts, default 20)
                --ready-file PATH  (created once the association is established)
                --tls-ca CA.pem [--tls-cert CERT.pem --tls-key KEY.pem] [--tls-server-name N]
                                   DICOM over TLS: verify the acceptor against CA.pem and the
                                   name N (default localhost), present the client certificate
                --user-identity-type 1|2|3|4|5 [--user NAME] [--passcode P] [--jwt TOKEN]
                                   [--positive-response]
                                   send a User Identity sub-item (PS3.7 D.3.3.7): type 1 user,
                                   2 user + passcode, 5 JWT (primary field = the token)
Commands:
  echo [--count N] [--hold SECONDS] [--then-count M]
                                      C-ECHO N times, keep the association open SECONDS, then
                                      C-ECHO M more times (statuses of all in order)
  store FILE...                       C-STORE every file in ONE association
  find [--level STUDY] [--key Keyword=Value ...] [--return-key Keyword ...]
                                      Study Root C-FIND
  move DEST_AE [--level STUDY] [--key Keyword=Value ...]   Study Root C-MOVE

Output (stdout, one JSON object; the exit status is 0 unless the arguments were bad):
{
  "command": "echo",
  "association": "accepted" | "rejected" | "aborted" | "connect-failed",
  "rejection": {"result": 1, "source": 1, "reason": 3} | null,
  "abort": {"source": 2, "reason": 0} | null,       # an A-ABORT PDU received, if any
  "contexts": {"accepted": [{"id", "abstract_syntax", "transfer_syntax", "result"}],
               "rejected": [{"id", "abstract_syntax", "result"}]},
  "statuses": [0, ...],           # one per DIMSE request/response (null = no response)
  "results": [...],               # store: per file {file, sop_class_uid, sop_instance_uid,
                                  #   status, error}; find/move: per response {status, ...}
  "matches": 3,                   # find: number of pending responses with an identifier
  "identifiers": [{...}],         # find: the identifiers, keyword -> string
  "final": {...},                 # move: last response (status, completed, failed, warning)
  "aborted": false,               # the association ended with an A-ABORT / A-P-ABORT
  "note": "...",                  # only when pynetdicom saw the close before a received RJ
  "released": true,
  "error": null | "text",
  "tls": {"version": "TLSv1.3", "cipher": "..."},   # only with --tls-ca (null: no TLS session)
  "user_identity_response": {"present": true, "server_response_hex": ""}
                                  # only with --user-identity-type: the acceptor's User
                                  # Identity sub-item in the A-ASSOCIATE-AC, if any
}
"""
from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom import sop_class as sc
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import UserIdentityNegotiation

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _keep_responses_for_the_sender() -> None:
    """Work around a race in pynetdicom's requestor (3.0): its association reactor thread
    pauses itself between `_is_paused = True` and `_reactor_checkpoint.wait()`; a send_*()
    method that clears the checkpoint in that window sees the reactor "paused", sends, and the
    reactor -- not paused after all -- then takes the response off the DIMSE queue when it
    arrives fast (a gateway answers in one write; a peer with Nagle on is slower) and drops it
    as an "unexpected ... service message", so the sender times out. Here a response the
    reactor takes is put back on the queue for the sender that waits for it."""
    from pynetdicom.association import Association

    serve = Association._serve_request

    def _serve_request(self, msg, context_id):
        if msg is not None and not msg.is_valid_request and getattr(
            msg, "is_valid_response", False
        ):
            print("dicom_probe.py: a response the reactor took went back to the sender",
                  file=sys.stderr)
            self.dimse.msg_queue.put((context_id, msg))
            return
        serve(self, msg, context_id)

    Association._serve_request = _serve_request


_keep_responses_for_the_sender()


def resolve_sop(name: str) -> str:
    name = name.strip()
    if name and name[0].isdigit():
        return name
    uid = getattr(sc, name, None)
    if uid is None:
        raise SystemExit(f"dicom_probe.py: unknown SOP class keyword {name!r}")
    return str(uid)


def status_of(ds) -> int | None:
    if ds is None or "Status" not in ds:
        return None
    return int(ds.Status)


def ds_to_dict(ds: Dataset | None) -> dict:
    out: dict = {}
    if ds is None:
        return out
    for elem in ds:
        if elem.VR == "SQ":
            continue
        kw = elem.keyword or str(elem.tag)
        v = elem.value
        if isinstance(v, bytes):
            v = v.hex()
        elif v is not None and not isinstance(v, (int, float)):
            v = str(v)
        out[kw] = v
    return out


def parse_keys(pairs: list[str], level: str, return_keys: list[str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for kw in return_keys:
        setattr(ds, kw, "")
    for p in pairs:
        if "=" not in p:
            raise SystemExit(f"dicom_probe.py: --key wants Keyword=Value, got {p!r}")
        k, v = p.split("=", 1)
        setattr(ds, k, v)
    return ds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--calling-ae", default="PROBE")
    ap.add_argument("--called-ae", default="ANY-SCP")
    ap.add_argument("--contexts", default=None,
                    help="comma-separated abstract syntaxes (UIDs or pynetdicom keywords)")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--max-pdu", type=int, default=16384)
    ap.add_argument("--ready-file", default=None)
    ap.add_argument("--verbose", action="store_true", help="pynetdicom debug log on stderr")
    ap.add_argument("--tls-ca", default=None, help="speak TLS; CA file the acceptor must chain to")
    ap.add_argument("--tls-cert", default=None, help="client certificate (PEM) to present")
    ap.add_argument("--tls-key", default=None, help="its private key (PEM)")
    ap.add_argument("--tls-server-name", default="localhost",
                    help="name the acceptor's certificate must carry (default localhost)")
    ap.add_argument("--user-identity-type", type=int, default=None, choices=[1, 2, 3, 4, 5],
                    help="send a User Identity sub-item of this type")
    ap.add_argument("--user", default=None, help="user name (types 1 and 2)")
    ap.add_argument("--passcode", default=None, help="passcode (type 2)")
    ap.add_argument("--jwt", default=None, help="token (type 5; also the primary field of 3/4)")
    ap.add_argument("--positive-response", action="store_true",
                    help="ask the acceptor for a positive response")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("echo")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--then-count", type=int, default=0)
    p = sub.add_parser("store")
    p.add_argument("files", nargs="+")
    for name in ("find", "move"):
        p = sub.add_parser(name)
        if name == "move":
            p.add_argument("dest_ae")
        p.add_argument("--level", default="STUDY")
        p.add_argument("--key", action="append", default=[])
        if name == "find":
            p.add_argument("--return-key", action="append",
                           default=["StudyInstanceUID", "PatientID"])
    a = ap.parse_args()
    if (a.tls_cert is None) != (a.tls_key is None):
        ap.error("--tls-cert and --tls-key go together")
    if (a.tls_cert is not None) and a.tls_ca is None:
        ap.error("--tls-cert needs --tls-ca")
    if a.verbose:
        from pynetdicom import debug_logger

        debug_logger()

    out: dict = {"command": a.command, "association": None, "rejection": None, "abort": None,
                 "contexts": {"accepted": [], "rejected": []}, "statuses": [], "results": [],
                 "aborted": False, "released": False, "error": None}
    t0 = time.monotonic()

    ae = AE(ae_title=a.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = a.timeout
    ae.connection_timeout = a.timeout
    ae.maximum_pdu_size = a.max_pdu

    # --- what to propose
    files: list[tuple[str, Dataset | None, str | None]] = []
    if a.command == "store":
        for f in a.files:
            try:
                files.append((f, dcmread(f), None))
            except Exception as e:  # report, keep going
                files.append((f, None, f"unreadable: {e}"))
    if a.contexts:
        wanted = [resolve_sop(x) for x in a.contexts.split(",") if x.strip()]
    elif a.command == "echo":
        wanted = [str(sc.Verification)]
    elif a.command == "find":
        wanted = [str(sc.StudyRootQueryRetrieveInformationModelFind)]
    elif a.command == "move":
        wanted = [str(sc.StudyRootQueryRetrieveInformationModelMove)]
    else:
        wanted = []
        for _, ds, _ in files:
            if ds is not None and str(ds.SOPClassUID) not in wanted:
                wanted.append(str(ds.SOPClassUID))
    for uid in wanted:
        tss = list(UNCOMPRESSED)
        for _, ds, _ in files:
            if ds is not None and str(ds.SOPClassUID) == uid:
                ts = str(ds.file_meta.TransferSyntaxUID)
                if ts not in tss:
                    tss.insert(0, ts)
        ae.add_requested_context(uid, tss)

    # --- events: connection opened? A-ABORT PDU received?
    state: dict = {"connected": False, "rj": None, "tls": None}

    def on_open(event):
        state["connected"] = True
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if isinstance(sock, ssl.SSLSocket):
            cipher = sock.cipher()
            state["tls"] = {"version": sock.version(), "cipher": cipher[0] if cipher else None}

    def on_pdu(event):
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            state["rj"] = {"result": int(event.pdu.result), "source": int(event.pdu.source),
                           "reason": int(event.pdu.reason_diagnostic)}
        if isinstance(event.pdu, A_ABORT_RQ):
            out["abort"] = {"source": int(event.pdu.source),
                            "reason": int(event.pdu.reason_diagnostic)}

    handlers = [(evt.EVT_CONN_OPEN, on_open), (evt.EVT_PDU_RECV, on_pdu)]
    kwargs: dict = {}
    if a.tls_ca is not None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=a.tls_ca)
        if a.tls_cert is not None:
            ctx.load_cert_chain(a.tls_cert, a.tls_key)
        kwargs["tls_args"] = (ctx, a.tls_server_name)
    if a.user_identity_type is not None:
        ui = UserIdentityNegotiation()
        ui.user_identity_type = a.user_identity_type
        if a.user_identity_type in (1, 2):
            ui.primary_field = (a.user or "").encode("utf-8")
        else:
            ui.primary_field = (a.jwt or "").encode("ascii")
        if a.user_identity_type == 2:
            ui.secondary_field = (a.passcode or "").encode("utf-8")
        ui.positive_response_requested = a.positive_response
        kwargs["ext_neg"] = [ui]
    assoc = ae.associate(a.host, a.port, ae_title=a.called_ae, evt_handlers=handlers, **kwargs)
    if a.tls_ca is not None:
        out["tls"] = state["tls"]
    if a.user_identity_type is not None:
        rsp = assoc.acceptor.user_identity if assoc.is_established else None
        out["user_identity_response"] = {
            "present": rsp is not None,
            "server_response_hex": (rsp.server_response or b"").hex() if rsp is not None else None,
        }

    if assoc.is_established:
        out["association"] = "accepted"
    elif assoc.is_rejected:
        out["association"] = "rejected"
        prim = assoc.acceptor.primitive
        out["rejection"] = {"result": int(prim.result), "source": int(prim.result_source),
                            "reason": int(prim.diagnostic)}
    elif state["rj"] is not None:
        # An A-ASSOCIATE-RJ arrived, but the acceptor closed the connection so promptly that
        # pynetdicom processed the close first and reports an abort: report what was received.
        out["association"] = "rejected"
        out["rejection"] = state["rj"]
        out["note"] = "A-ASSOCIATE-RJ received; pynetdicom saw the connection close first"
    elif not state["connected"]:
        out["association"] = "connect-failed"
    else:
        out["association"] = "aborted"
        out["aborted"] = True

    # Reported whenever an A-ASSOCIATE-AC arrived, also when pynetdicom then aborts because it
    # accepted no context (it does that itself: "No accepted presentation contexts").
    for cx in assoc.accepted_contexts:
        out["contexts"]["accepted"].append({
            "id": cx.context_id, "abstract_syntax": str(cx.abstract_syntax),
            "transfer_syntax": str(cx.transfer_syntax[0]), "result": cx.result})
    for cx in assoc.rejected_contexts:
        out["contexts"]["rejected"].append({
            "id": cx.context_id, "abstract_syntax": str(cx.abstract_syntax),
            "result": cx.result})
    if out["contexts"]["rejected"] and not out["contexts"]["accepted"] and out["aborted"]:
        out["note"] = "A-ASSOCIATE-AC with every context rejected; pynetdicom then aborted"
    if assoc.is_established:
        if a.ready_file:
            Path(a.ready_file).write_text("established\n")
        try:
            run(a, assoc, out, files)
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"
        if assoc.is_established:
            assoc.release()
        out["released"] = bool(assoc.is_released)
        out["aborted"] = bool(assoc.is_aborted) or out["abort"] is not None
    out["elapsed_secs"] = round(time.monotonic() - t0, 3)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def run(a, assoc, out: dict, files) -> None:
    if a.command == "echo":
        for _ in range(a.count):
            out["statuses"].append(status_of(assoc.send_c_echo()))
            if not assoc.is_established:
                break
        deadline = time.monotonic() + a.hold
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(a.then_count):
            if not assoc.is_established:
                break
            out["statuses"].append(status_of(assoc.send_c_echo()))
    elif a.command == "store":
        gone = False  # no response once: the association is gone, send nothing more
        for f, ds, err in files:
            res = {"file": f, "sop_class_uid": None, "sop_instance_uid": None,
                   "status": None, "error": err}
            if ds is not None:
                res["sop_class_uid"] = str(ds.SOPClassUID)
                res["sop_instance_uid"] = str(ds.SOPInstanceUID)
                if gone or not assoc.is_established or assoc.is_aborted or out["abort"]:
                    res["error"] = "not sent: association no longer established"
                else:
                    try:
                        res["status"] = status_of(assoc.send_c_store(ds))
                    except ValueError as e:  # no accepted presentation context
                        res["error"] = str(e)
                    except RuntimeError as e:
                        res["error"] = str(e)
                    if res["status"] is None and res["error"] is None:
                        res["error"] = "no response (association aborted or timed out)"
                        gone = True
            out["results"].append(res)
            out["statuses"].append(res["status"])
    elif a.command == "find":
        query = parse_keys(a.key, a.level, a.return_key)
        model = sc.StudyRootQueryRetrieveInformationModelFind
        matches, idents = 0, []
        for status, ident in assoc.send_c_find(query, model):
            st = status_of(status)
            out["statuses"].append(st)
            out["results"].append({"status": st, "identifier": ds_to_dict(ident)})
            if st in (0xFF00, 0xFF01) and ident is not None:
                matches += 1
                idents.append(ds_to_dict(ident))
        out["matches"] = matches
        out["identifiers"] = idents
    elif a.command == "move":
        query = parse_keys(a.key, a.level, [])
        model = sc.StudyRootQueryRetrieveInformationModelMove
        final = None
        for status, _ident in assoc.send_c_move(query, a.dest_ae, model):
            st = status_of(status)
            out["statuses"].append(st)
            r = {"status": st}
            if status is not None:
                for k in ("NumberOfCompletedSuboperations", "NumberOfFailedSuboperations",
                          "NumberOfWarningSuboperations", "NumberOfRemainingSuboperations"):
                    if k in status:
                        r[k] = int(status[k].value)
            out["results"].append(r)
            final = r
        out["final"] = final


if __name__ == "__main__":
    sys.exit(main())
