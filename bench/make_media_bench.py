#!/usr/bin/env python3
"""make_media_bench.py OUTDIR -- data for bench/scan.sh (deterministic, idempotent).

  OUTDIR/ct/CT_0001.dcm..CT_0300.dcm  300-slice CT series, 512x512 16-bit, Explicit VR LE
  OUTDIR/large/MF_512MiB.dcm          Multi-frame Grayscale Word SC, 1024 frames of 512x512
                                      16-bit = 512 MiB of pixel data, written frame by frame
                                      (the generator never holds the whole image)
Needs the project venv (pydicom + numpy). Ideas from shared/lab/make-data.py.
"""
import hashlib
import io
import struct
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

CT = "1.2.840.10008.5.1.4.1.1.2"
MF_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
ROOT = "1.2.826.0.1.3680043.8.498."


def uid(*parts) -> str:
    h = int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16)
    return (ROOT + str(h))[:64].rstrip(".")


def base(sop_class, sop_uid) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = "Bench^Patient"
    ds.PatientID = "BENCH-1"
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series", sop_class)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def ct_series(out: Path, n: int = 300) -> None:
    d = out / "ct"
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[-256:256, -256:256]
    body = (xx**2 / 200**2 + yy**2 / 150**2) < 1
    rng = np.random.default_rng(1)
    for i in range(1, n + 1):
        p = d / f"CT_{i:04d}.dcm"
        if p.exists():
            continue
        ds = base(CT, uid("ct", i))
        ds.Modality = "CT"
        ds.InstanceNumber = i
        ds.SliceLocation = float(i)
        ds.ImagePositionPatient = [-180.0, -180.0, float(i)]
        img = np.where(body, 1040, 24).astype(np.int32) + rng.normal(0, 12, (512, 512)).astype(np.int32)
        ds.PixelData = np.clip(img, 0, 4095).astype(np.uint16).tobytes()
        ds.save_as(p, enforce_file_format=True)


def large(out: Path, frames: int = 1024) -> None:
    d = out / "large"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "MF_512MiB.dcm"
    frame_bytes = 512 * 512 * 2
    if p.exists() and p.stat().st_size > frames * frame_bytes:
        return
    ds = base(MF_WORD_SC, uid("large", frames))
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rng = np.random.default_rng(2)
    tiles = [rng.integers(0, 4096, (512, 512), dtype=np.uint16).tobytes() for _ in range(8)]
    tmp = p.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, frames * frame_bytes))
        for i in range(frames):
            f.write(tiles[i % len(tiles)])
    tmp.rename(p)


def main() -> int:
    out = Path(sys.argv[1])
    ct_series(out)
    large(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
