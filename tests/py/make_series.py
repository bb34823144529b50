#!/usr/bin/env python3
"""make_series.py -- writes one CT series of COUNT small instances (Part 10, Explicit VR LE).

Usage:  .venv/bin/python tests/py/make_series.py OUT_DIR --count 300 --root UID_ROOT
                                                  [--patient-id ID]

Files: OUT_DIR/CT_0001.dcm ... (names sort in instance order); SOP Instance UIDs
ROOT.3.1 ... ROOT.3.COUNT, study ROOT.1, series ROOT.2; 8x8 16-bit pixels each, so a long series
goes through a gateway quickly. The directory is written whole into OUT_DIR.tmp-PID and then
renamed, so concurrent runs never see half a series; an existing OUT_DIR is left as it is.
Prints the SOP Instance UIDs, one a line, in file order.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def instance(root: str, n: int, patient_id: str) -> Dataset:
    sop = f"{root}.3.{n}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"{root}.9"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyDate = "20240101"
    ds.Modality = "CT"
    ds.PatientName = "SERIES^LONG"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = f"{root}.1"
    ds.SeriesInstanceUID = f"{root}.2"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = n
    ds.ImagePositionPatient = [0, 0, n]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = b"".join(((n + i) % 4096).to_bytes(2, "little") for i in range(8 * 8))
    return ds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--patient-id", default="SERIES-1")
    a = ap.parse_args()
    out = Path(a.out)
    if not out.is_dir():
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for n in range(1, a.count + 1):
            instance(a.root, n, a.patient_id).save_as(
                tmp / f"CT_{n:04}.dcm", enforce_file_format=True
            )
        try:
            tmp.rename(out)
        except OSError:
            # Another run renamed its copy first: theirs is the same series.
            shutil.rmtree(tmp, ignore_errors=True)
    for n in range(1, a.count + 1):
        print(f"{a.root}.3.{n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
