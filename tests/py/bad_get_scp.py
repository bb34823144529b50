#!/usr/bin/env python3
"""bad_get_scp.py -- a Study Root C-GET SCP (pynetdicom) whose second sub-operation is malformed.

Usage:  .venv/bin/python tests/py/bad_get_scp.py [--port 0] [--aet BADGET] [--filler N]
                                                 [--malformed-first] [--verbose]

Binds 127.0.0.1 only. When ready it prints exactly one line to stdout:
    bad_get_scp.py: listening on 127.0.0.1:PORT
Then it logs one line to stdout per step (flushed), all starting with "bad_get_scp.py: " and
ending with the time since start, e.g. " [+1.234 s]". --verbose: pynetdicom's debug log on stderr.

Accepts Verification (C-ECHO), Study Root Query/Retrieve - GET and, for the C-STORE
sub-operations, CT Image Storage with SCP/SCU role selection (PS3.7 D.3.3.4: the requestor is
the Storage SCP), in Explicit or Implicit VR Little Endian. Every C-GET
request gets, whatever it asks for, two C-STORE sub-operations on the same association:
  1. a valid CT instance (SOP Instance UID VALID_UID, Patient ID RG-GET), 64 x 64 x 16 bit;
  2. the same image with another SOP Instance UID (BAD_UID) whose data set holds Patient ID
     (0010,0020) twice on the wire (RG-GET, then RG-GET-DUP; otherwise valid), encoded by hand
     in the transfer syntax negotiated for CT Image Storage: pydicom's Dataset cannot hold a
     repeated element. --filler N (default 0) puts a private OB element of N bytes
     ((0009,0010) creator "RADGUARD FILLER", (0009,1000)) before Patient ID, so that the
     repeated element arrives after N bytes of the data set have streamed.
--malformed-first sends the two in the other order (the malformed one as sub-operation 1).
Logged steps: "C-GET-RQ message id N", "CT Image Storage context C, transfer syntax T",
"sub-operation 1 (valid, UID): sending", "sub-operation 2 (Patient ID (0010,0020) twice, the
repeated element at byte N, UID): sending", "sub-operation K: C-STORE-RSP 0xSSSS" (or
"sub-operation K: no C-STORE-RSP"), "association aborted", "association released".

pynetdicom's C-GET service sends the sub-operations itself (Association.send_c_store) from the
datasets the handler yields; for the malformed one the handler's association sends instead the
data set bytes of a Part 10 file written here (send_c_store with a path and
_config.STORE_SEND_CHUNKED_DATASET: the file's data set goes out as it is, never re-encoded).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

START = time.monotonic()
ROOT = "1.2.826.0.1.3680043.8.498.2"
STUDY_UID = f"{ROOT}.1"
SERIES_UID = f"{ROOT}.1.1"
VALID_UID = f"{ROOT}.1.1.1"
BAD_UID = f"{ROOT}.1.1.2"
ROWS = COLUMNS = 64


def log(msg: str) -> None:
    print(f"bad_get_scp.py: {msg} [+{time.monotonic() - START:.3f} s]", flush=True)


def encoded(ds: Dataset, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    return fp.getvalue()


def ct_head(sop_instance: str) -> Dataset:
    """The elements of the CT instance before Patient ID (0010,0020)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = "20240102"
    ds.Modality = "CT"
    ds.PatientName = "Firewall^Get"
    ds.PatientID = "RG-GET"
    return ds


def ct_tail(n: int) -> Dataset:
    """The elements of the CT instance after Patient ID (0010,0020)."""
    ds = Dataset()
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = (np.arange(ROWS * COLUMNS, dtype="<u2") * 7 + n) % 4096
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def file_meta(sop_instance: str, ts: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def valid_instance() -> Dataset:
    ds = ct_head(VALID_UID)
    ds.update(ct_tail(1))
    ds.file_meta = file_meta(VALID_UID, ExplicitVRLittleEndian)
    return ds


def duplicated_instance(implicit: bool, little: bool, filler: int) -> tuple[bytes, int]:
    """The data set of BAD_UID with (0010,0020) twice, and the offset of the repeated element:
    the elements up to Patient ID, Patient ID again, the rest -- each part encoded by pydicom
    in the negotiated transfer syntax."""
    head = ct_head(BAD_UID)
    if filler:
        head.add_new(0x00090010, "LO", "RADGUARD FILLER")
        head.add_new(0x00091000, "OB", bytes(range(256)) * (filler // 256) + bytes(filler % 256))
    dup = Dataset()
    dup.PatientID = "RG-GET-DUP"
    first = encoded(head, implicit, little)
    raw = first + encoded(dup, implicit, little) + encoded(ct_tail(2), implicit, little)
    return raw, len(first)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 = any free port")
    ap.add_argument("--aet", default="BADGET")
    ap.add_argument("--filler", type=int, default=0, help="private OB bytes before Patient ID")
    ap.add_argument("--malformed-first", action="store_true", help="the malformed one first")
    ap.add_argument("--verbose", action="store_true", help="pynetdicom debug log on stderr")
    a = ap.parse_args()

    if a.verbose:
        from pynetdicom import debug_logger

        debug_logger()

    # send_c_store(path) sends the file's data set bytes as they are.
    _config.STORE_SEND_CHUNKED_DATASET = True
    work = tempfile.TemporaryDirectory(prefix="bad_get_scp-")

    ae = AE(ae_title=a.aet)
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    # Uncompressed little endian only: the raw data set is encoded by hand (never deflated).
    little_endian = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet, little_endian)
    # The requestor takes the SCP role for CT Image Storage (SCP/SCU Role Selection).
    ae.add_supported_context(CTImageStorage, little_endian, scu_role=True, scp_role=True)
    ae.add_supported_context(Verification, little_endian)

    def on_get(event):
        assoc = event.assoc
        log(f"C-GET-RQ message id {event.request.MessageID}")
        cts = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage]
        if not cts:
            log("no accepted CT Image Storage context: no sub-operations")
            yield 0
            return
        cx = cts[0]
        ts = cx.transfer_syntax[0]
        log(f"CT Image Storage context {cx.context_id}, transfer syntax {ts}")

        raw, offset = duplicated_instance(ts.is_implicit_VR, ts.is_little_endian, a.filler)
        path = os.path.join(work.name, f"{BAD_UID}.dcm")
        with open(path, "wb") as f:
            f.write(b"\0" * 128 + b"DICM")
            write_file_meta_info(f, file_meta(BAD_UID, ts), enforce_standard=True)
            f.write(raw)

        send_c_store = assoc.send_c_store
        sub = {"n": 0}

        def send(dataset, *args, **kwargs):
            # pynetdicom's C-GET service calls this for every dataset the handler yields.
            sub["n"] += 1
            n = sub["n"]
            if dataset.SOPInstanceUID == BAD_UID:
                log(
                    f"sub-operation {n} (Patient ID (0010,0020) twice, the repeated element "
                    f"at byte {offset}, {BAD_UID}, {len(raw)} bytes): sending"
                )
                status = send_c_store(path, *args, **kwargs)
            else:
                log(f"sub-operation {n} (valid, {dataset.SOPInstanceUID}): sending")
                status = send_c_store(dataset, *args, **kwargs)
            if "Status" in status:
                log(f"sub-operation {n}: C-STORE-RSP 0x{status.Status:04X}")
            else:
                log(f"sub-operation {n}: no C-STORE-RSP")
            return status

        assoc.send_c_store = send

        # A stand-in naming the malformed instance; `send` sends the file's bytes in its place.
        stand_in = Dataset()
        stand_in.SOPClassUID = CTImageStorage
        stand_in.SOPInstanceUID = BAD_UID
        stand_in.file_meta = file_meta(BAD_UID, ts)
        instances = [valid_instance(), stand_in]
        if a.malformed_first:
            instances.reverse()
        yield len(instances)
        for ds in instances:
            yield 0xFF00, ds
        log("sub-operations done")

    def on_aborted(event):
        log("association aborted")

    def on_released(event):
        log("association released")

    handlers = [
        (evt.EVT_C_GET, on_get),
        (evt.EVT_ABORTED, on_aborted),
        (evt.EVT_RELEASED, on_released),
    ]
    server = ae.start_server(("127.0.0.1", a.port), block=False, evt_handlers=handlers)
    port = server.server_address[1]
    print(f"bad_get_scp.py: listening on 127.0.0.1:{port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        work.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
