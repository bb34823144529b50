#!/usr/bin/env python3
"""Deterministic benchmark data for the relay benchmark (bench/relay.sh).

    .venv/bin/python bench/gen_relay_data.py OUTDIR [--slices 300] [--frames 1024]

OUTDIR/ct-series/CT_0001.dcm..  CT Image Storage, 512x512 16-bit (12 stored), Explicit VR LE,
                                one patient/study/series (~150 MiB for 300 slices)
OUTDIR/large/MF_0001.dcm        Multi-frame Grayscale Word SC, N frames 512x512x16 bit
                                (1024 frames = 512 MiB of pixel data), written in a stream

Re-running with the same parameters is a no-op (a stamp file records them).
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

CT = "1.2.840.10008.5.1.4.1.1.2"
MF = "1.2.840.10008.5.1.4.1.1.7.3"


def uid(*parts):
    h = int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:16], "big")
    return f"2.25.{h}"


def base(sop_class, sop_inst, study, series):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_inst
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_inst
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientName = "BENCH^RELAY"
    ds.PatientID = "BENCH0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "BENCH1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def ct_series(out: Path, slices: int):
    d = out / "ct-series"
    d.mkdir(parents=True, exist_ok=True)
    study, series = uid("study"), uid("series", "ct")
    rng = np.random.default_rng(20261129)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2) < 200 ** 2
    for i in range(1, slices + 1):
        ds = base(CT, uid("ct", i), study, series)
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = i
        ds.ImagePositionPatient = [-250.0, -250.0, -0.625 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.9765625, 0.9765625]
        ds.SliceThickness = 0.625
        ds.KVP = 120
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        img = np.where(body, 1024 + 40, 24).astype(np.uint16)
        img = img + rng.integers(0, 60, size=(512, 512), dtype=np.uint16)
        ds.PixelData = img.tobytes()
        ds.save_as(d / f"CT_{i:04d}.dcm", enforce_file_format=True)


def large(out: Path, frames: int):
    d = out / "large"
    d.mkdir(parents=True, exist_ok=True)
    ds = base(MF, uid("mf"), uid("study"), uid("series", "mf"))
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.PixelData = b""  # placeholder; the pixel data element is written in a stream below
    del ds.PixelData
    path = d / "MF_0001.dcm"
    ds.save_as(path, enforce_file_format=True)
    frame = (np.arange(512 * 512, dtype=np.uint32) % 4096).astype(np.uint16).tobytes()
    length = len(frame) * frames
    with open(path, "ab") as f:
        # (7FE0,0010) OW, explicit VR LE: tag, VR, 2 reserved bytes, 32-bit length
        f.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(frames):
            f.write(frame)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--frames", type=int, default=1024)
    a = ap.parse_args()
    out = Path(a.out)
    stamp = out / ".params.json"
    params = {"slices": a.slices, "frames": a.frames, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        print(f"bench data up to date in {out}", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    ct_series(out, a.slices)
    large(out, a.frames)
    stamp.write_text(json.dumps(params))
    print(f"bench data written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
