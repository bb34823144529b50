#!/usr/bin/env python3
"""make_archive.py -- writes a small archive: PATIENTS patients x STUDIES studies x INSTANCES CT
instances (one series per study; Part 10, Explicit VR LE, 8x8 pixels), for tests that load a
PACS with several patients before querying and retrieving through a gateway.

Usage:  .venv/bin/python tests/py/make_archive.py OUT_DIR --root UID_ROOT
            [--patients 4] [--studies 2] [--instances 3] [--prefix ARC]

Patient p (1-based): Patient ID PREFIX-P<p>, Patient's Name PREFIX^PATIENT<p>. Study s of
patient p: Study Instance UID ROOT.<p>.<s>, Accession Number PREFIX<p>S<s>, series
ROOT.<p>.<s>.1, SOP Instance UIDs ROOT.<p>.<s>.1.<n>. Files: OUT_DIR/P<p>S<s>/CT_<n>.dcm and
OUT_DIR/MANIFEST.json, a list of {patient_id, patient_name, study_uid, accession, dir,
instances}. The directory is written whole into OUT_DIR.tmp-PID and then renamed, so
concurrent runs never see half an archive; an existing OUT_DIR is left as it is. Prints the
manifest.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def instance(root: str, prefix: str, p: int, s: int, n: int) -> Dataset:
    study = f"{root}.{p}.{s}"
    series = f"{study}.1"
    sop = f"{series}.{n}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"{root}.9"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyDate = f"202401{s:02}"
    ds.StudyTime = "120000"
    ds.Modality = "CT"
    ds.PatientName = f"{prefix}^PATIENT{p}"
    ds.PatientID = f"{prefix}-P{p}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.AccessionNumber = f"{prefix}{p}S{s}"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = str(s)
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
    ds.PixelData = b"".join(
        ((p * 7 + s * 3 + n + i) % 4096).to_bytes(2, "little") for i in range(64)
    )
    return ds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--root", required=True)
    ap.add_argument("--patients", type=int, default=4)
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--instances", type=int, default=3)
    ap.add_argument("--prefix", default="ARC")
    a = ap.parse_args()
    out = Path(a.out)
    if not out.is_dir():
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        manifest = []
        for p in range(1, a.patients + 1):
            for s in range(1, a.studies + 1):
                d = tmp / f"P{p}S{s}"
                d.mkdir()
                for n in range(1, a.instances + 1):
                    instance(a.root, a.prefix, p, s, n).save_as(
                        d / f"CT_{n:04}.dcm", enforce_file_format=True
                    )
                manifest.append(
                    {
                        "patient_id": f"{a.prefix}-P{p}",
                        "patient_name": f"{a.prefix}^PATIENT{p}",
                        "study_uid": f"{a.root}.{p}.{s}",
                        "accession": f"{a.prefix}{p}S{s}",
                        "dir": d.name,
                        "instances": a.instances,
                    }
                )
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
        try:
            tmp.rename(out)
        except OSError:
            # Another run renamed its copy first: theirs is the same archive.
            shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.write((out / "MANIFEST.json").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
