#!/usr/bin/env python3
"""make_data.py -- deterministic DICOM test data for Radguard's integration tests.

Usage:  .venv/bin/python tests/data/make_data.py OUTDIR [--force]

Writes (byte-identical on every run: fixed seed, UIDs are SHA-512 derived from it):

  OUTDIR/ct/CT_0001..0024.dcm   CT Image Storage, 24 slices 256x256, 16 bit allocated / 12 stored,
                                Explicit VR Little Endian, one patient/study/series
  OUTDIR/mr/MR_0001..0002.dcm   MR Image Storage, 256x256, Explicit VR LE (another patient/study)
  OUTDIR/sc/SC_RGB_0001.dcm     Secondary Capture Image Storage, RGB 160x120, Explicit VR LE
  OUTDIR/implicit/CT_IMPLICIT.dcm  CT in Implicit VR Little Endian (own series, CT study)
  OUTDIR/pdf/PDF_0001.dcm       Encapsulated PDF Storage (non-image SOP class)
  OUTDIR/conflict/CT_0001_CONFLICT.dcm
                                same SOP Instance UID as ct/CT_0001.dcm, different pixel data
  OUTDIR/MANIFEST.json          every file: path, bytes, sha256, SOP class/instance UID,
                                transfer syntax, patient/study/series; plus the key IDs

Re-running is cheap: if OUTDIR/MANIFEST.json was written by the same script version and every
file listed in it has the recorded size, nothing is done (pydicom/numpy are not even imported).
Concurrent runs are serialised with a lock file (OUTDIR.lock).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

SEED = 20250101
GENERATOR_VERSION = 1
CT_SLICES = 24
CT_SIZE = 256

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
ENCAP_PDF = "1.2.840.10008.5.1.4.1.1.104.1"

CT_PATIENT = ("TEST^CT^PATIENT", "RG-CT-0001", "19640312", "F")
MR_PATIENT = ("TEST^MR^PATIENT", "RG-MR-0002", "19790721", "M")


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def up_to_date(out: Path) -> bool:
    mf = out / "MANIFEST.json"
    try:
        m = json.loads(mf.read_text())
    except (OSError, ValueError):
        return False
    if m.get("generator") != {"version": GENERATOR_VERSION, "seed": SEED,
                              "script_sha256": script_hash()}:
        return False
    for f in m.get("files", []):
        p = out / f["path"]
        try:
            if p.stat().st_size != f["bytes"]:
                return False
        except OSError:
            return False
    return bool(m.get("files"))


class Gen:
    def __init__(self, out: Path):
        import numpy as np  # noqa: F401  (imported lazily: the skip path stays fast)
        import pydicom  # noqa: F401

        self.out = out
        self.files: list[dict] = []

    # ------------------------------------------------------------ helpers
    def uid(self, *parts) -> str:
        from pydicom.uid import generate_uid

        src = "|".join(["radguard-tests", str(SEED), *map(str, parts)])
        return str(generate_uid(entropy_srcs=[src]))

    def rng(self, *parts):
        import numpy as np

        h = hashlib.sha256("|".join(map(str, (SEED, *parts))).encode()).digest()
        return np.random.default_rng(int.from_bytes(h[:8], "little"))

    def base(self, sop_class: str, sop_uid: str, ts: str):
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ts
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "RG_TESTGEN_1"
        meta.SourceApplicationEntityTitle = "RG_TESTGEN"
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.InstanceCreationDate = "20250101"
        ds.InstanceCreationTime = "101530"
        return ds

    def patient(self, ds, p) -> None:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = p
        ds.IssuerOfPatientID = "RG-TEST-HOSP"

    def study(self, ds, key: str, desc: str, accession: str) -> None:
        ds.StudyInstanceUID = self.uid("study", key)
        ds.StudyDate = "20250101"
        ds.StudyTime = "101502"
        ds.StudyID = accession[-4:]
        ds.AccessionNumber = accession
        ds.StudyDescription = desc
        ds.ReferringPhysicianName = "REFERRER^ROBERT^^DR"
        ds.InstitutionName = "Radguard Test Hospital"
        ds.StationName = "RG-" + key.upper()
        ds.Manufacturer = "Radguard tests (synthetic)"
        ds.ManufacturerModelName = "make_data.py"

    def save(self, ds, rel: str, role: str) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        self.files.append({
            "path": rel,
            "role": role,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "transfer_syntax_uid": str(ds.file_meta.TransferSyntaxUID),
            "patient_id": str(ds.PatientID),
            "study_instance_uid": str(ds.StudyInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
        })

    # ----------------------------------------------------------------- CT
    def ct_pixels(self, z: float, key: str, i: int):
        import numpy as np

        n, sp = CT_SIZE, 500.0 / CT_SIZE
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        x, y = (x - n / 2) * sp, (y - n / 2) * sp
        hu = np.full((n, n), -1000.0, np.float32)
        hu[(x / 165) ** 2 + (y / 115) ** 2 <= 1] = -90.0
        inner = (x / 152) ** 2 + (y / 102) ** 2 <= 1
        hu[inner] = 40.0
        t = float(np.clip((z + 50) / 200.0, 0.0, 1.0))
        if t > 0:
            for sx in (-1, 1):
                hu[((x - sx * 70) / (55 * t + 1)) ** 2 + ((y + 10) / (75 * t + 1)) ** 2 <= 1] = -840.0
        hu[(x / 18) ** 2 + ((y - 70) / 16) ** 2 <= 1] = 650.0
        hu[((x + 15) / 13) ** 2 + ((y - 40) / 13) ** 2 <= 1] = 220.0
        hu += self.rng("ct-noise", key, i).normal(0, 12, hu.shape).astype(np.float32)
        return np.clip(hu + 1024, 0, 4095).astype(np.uint16)

    def ct_dataset(self, i: int, key: str, ts: str):
        sop = self.uid("ct", key, i)
        ds = self.base(CT_IMAGE, sop, ts)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        self.patient(ds, CT_PATIENT)
        self.study(ds, "ct", "CT CHEST W CONTRAST", "ACC20250101001")
        ds.Modality = "CT"
        ds.SeriesInstanceUID = self.uid("series", "ct", key)
        ds.SeriesNumber = 2 if key == "main" else 90
        ds.SeriesDescription = "AX 5mm STANDARD" if key == "main" else f"AX {key.upper()}"
        ds.SeriesDate, ds.SeriesTime = "20250101", "101744"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "FFS"
        ds.FrameOfReferenceUID = self.uid("for", "ct")
        ds.PositionReferenceIndicator = ""
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = i + 1
        ds.ContentDate, ds.ContentTime = "20250101", f"1018{i % 60:02d}"
        z = -60.0 + 5.0 * i
        ds.SliceThickness = "5"
        ds.KVP = "120"
        ds.XRayTubeCurrent = "280"
        ds.ConvolutionKernel = "STANDARD"
        ds.GantryDetectorTilt = "0"
        ds.ImagePositionPatient = ["-250", "-250", f"{z:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = CT_SIZE
        ds.PixelSpacing = ["1.953125", "1.953125"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = self.ct_pixels(z, key, i).tobytes()
        ds["PixelData"].VR = "OW"
        return ds

    def make(self) -> None:
        import numpy as np
        from pydicom.sequence import Sequence
        from pydicom.uid import ExplicitVRLittleEndian as EVRLE
        from pydicom.uid import ImplicitVRLittleEndian as IVRLE

        for i in range(CT_SLICES):
            self.save(self.ct_dataset(i, "main", EVRLE), f"ct/CT_{i + 1:04d}.dcm", "ct-series")

        # conflict: same SOP Instance UID as ct/CT_0001.dcm, different pixel data
        ds = self.ct_dataset(0, "main", EVRLE)
        px = np.frombuffer(ds.PixelData, np.uint16).copy()
        px[: CT_SIZE * 8] = 4095  # a bright band across the top rows
        ds.PixelData = px.tobytes()
        self.save(ds, "conflict/CT_0001_CONFLICT.dcm", "conflict")

        self.save(self.ct_dataset(0, "implicit", IVRLE), "implicit/CT_IMPLICIT.dcm", "implicit")

        for i in range(2):
            sop = self.uid("mr", i)
            ds = self.base(MR_IMAGE, sop, EVRLE)
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
            self.patient(ds, MR_PATIENT)
            self.study(ds, "mr", "MR BRAIN WO CONTRAST", "ACC20250101002")
            ds.Modality = "MR"
            ds.SeriesInstanceUID = self.uid("series", "mr")
            ds.SeriesNumber, ds.SeriesDescription = 3, "AX T2 FSE"
            ds.BodyPartExamined = "HEAD"
            ds.PatientPosition = "HFS"
            ds.FrameOfReferenceUID = self.uid("for", "mr")
            ds.PositionReferenceIndicator = ""
            ds.InstanceNumber = i + 1
            ds.ScanningSequence, ds.SequenceVariant = "SE", "SK"
            ds.ScanOptions, ds.MRAcquisitionType = "FS", "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "4000", "96", 15
            ds.MagneticFieldStrength, ds.ImagingFrequency = "1.5", "63.87"
            ds.SliceThickness = "5"
            z = -20.0 + 6 * i
            ds.ImagePositionPatient = ["-120", "-120", f"{z:.1f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SliceLocation = f"{z:.1f}"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = 256
            ds.PixelSpacing = ["0.9375", "0.9375"]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            y, x = np.mgrid[0:256, 0:256].astype(np.float32) - 128
            img = np.zeros((256, 256), np.float32)
            img[(x / 80) ** 2 + (y / 100) ** 2 <= 1] = 900
            img[(x / 74) ** 2 + (y / 94) ** 2 <= 1] = 500
            img[(x / 12) ** 2 + (y / (25 - 2 * i)) ** 2 <= 1] = 1600
            img += self.rng("mr", i).normal(0, 20, img.shape).astype(np.float32)
            ds.PixelData = np.clip(img, 0, 4095).astype(np.uint16).tobytes()
            ds["PixelData"].VR = "OW"
            self.save(ds, f"mr/MR_{i + 1:04d}.dcm", "mr")

        ds = self.base(SC_IMAGE, self.uid("sc"), EVRLE)
        self.patient(ds, CT_PATIENT)
        self.study(ds, "ct", "CT CHEST W CONTRAST", "ACC20250101001")
        ds.Modality, ds.ConversionType = "OT", "WSD"
        ds.SeriesInstanceUID = self.uid("series", "sc")
        ds.SeriesNumber, ds.InstanceNumber = 300, 1
        ds.SeriesDescription = "3D VR SCREENSHOT"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.BurnedInAnnotation = "YES"
        ds.PatientOrientation = ""
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.Rows, ds.Columns = 120, 160
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        y, x = np.mgrid[0:120, 0:160]
        rgb = np.zeros((120, 160, 3), np.uint8)
        rgb[..., 0] = (x * 255 // 159).astype(np.uint8)
        rgb[..., 1] = (y * 255 // 119).astype(np.uint8)
        rgb[..., 2] = 96
        rgb[5:15, 5:100] = 255
        ds.PixelData = rgb.tobytes()
        self.save(ds, "sc/SC_RGB_0001.dcm", "sc")

        ds = self.base(ENCAP_PDF, self.uid("pdf"), EVRLE)
        self.patient(ds, CT_PATIENT)
        self.study(ds, "ct", "CT CHEST W CONTRAST", "ACC20250101001")
        ds.Modality, ds.ConversionType = "DOC", "WSD"
        ds.SeriesInstanceUID = self.uid("series", "pdf")
        ds.SeriesNumber, ds.InstanceNumber = 900, 1
        ds.ContentDate, ds.ContentTime = "20250101", "120000"
        ds.AcquisitionDateTime = "20250101120000"
        ds.BurnedInAnnotation = "YES"
        ds.DocumentTitle = "Radiology report (synthetic)"
        ds.ConceptNameCodeSequence = Sequence()
        ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
        pdf = minimal_pdf("Radguard synthetic report - not a real patient")
        if len(pdf) % 2:
            pdf += b"\x00"
        ds.EncapsulatedDocument = pdf
        ds.EncapsulatedDocumentLength = len(pdf)
        self.save(ds, "pdf/PDF_0001.dcm", "pdf")

    def manifest(self) -> dict:
        ct = [f for f in self.files if f["role"] == "ct-series"]
        return {
            "generator": {"version": GENERATOR_VERSION, "seed": SEED,
                          "script_sha256": script_hash()},
            "ct": {"patient_id": CT_PATIENT[1], "study_instance_uid": ct[0]["study_instance_uid"],
                   "series_instance_uid": ct[0]["series_instance_uid"], "slices": len(ct)},
            "mr": {"patient_id": MR_PATIENT[1]},
            "files": self.files,
        }


def minimal_pdf(text: str) -> bytes:
    """A tiny valid one-page PDF (with correct xref offsets)."""
    content = f"BT /F1 14 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs, 1):
        offs.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--force", action="store_true", help="regenerate even if up to date")
    a = ap.parse_args()
    out = a.outdir.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(str(out) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not a.force and up_to_date(out):
            print(f"[make_data] {out} is up to date")
            return 0
        tmp = Path(f"{out}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        g = Gen(tmp)
        g.make()
        (tmp / "MANIFEST.json").write_text(json.dumps(g.manifest(), indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        print(f"[make_data] wrote {len(g.files)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
