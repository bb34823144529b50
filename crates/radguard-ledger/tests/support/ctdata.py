#!/usr/bin/env python3
"""Test data for radguard-ledger: synthetic CT series, CT-GAN-like tampering, benign rewrites,
and an independent reference implementation of the Radguard fingerprint (docs/fingerprint.md).

Run with the project's venv interpreter (pydicom, numpy):

  ctdata.py series OUT_DIR --slices N --rows R --cols C [--syntax explicit|implicit|big]
            [--bits-stored 16] [--signed 1] [--seed 1]
  ctdata.py tamper IN OUT --mode raise|flatten|patient-id [--x X --y Y --size 24 --delta 300]
  ctdata.py rewrite IN OUT [--private]        # new random preamble (+ a private element)
  ctdata.py fingerprint FILE...               # prints "<fingerprint hex> <path>" per file
  ctdata.py colour OUT [--frames 3 --rows 40 --cols 48]   # RGB multi-frame Secondary Capture
"""
import argparse
import hashlib
import os
import struct
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ROOT = "1.2.826.0.1.3680043.10.1137."  # test-only UID root

SYNTAXES = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
}


def phantom(rows, cols, z, seed, bits_stored, signed):
    """A body-like phantom in HU: air outside, soft tissue, a bony ring, lung-ish holes, noise."""
    rng = np.random.default_rng(seed * 1000 + z)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    r = np.hypot((yy - cy) / (rows * 0.45), (xx - cx) / (cols * 0.40))
    hu = np.full((rows, cols), -1000.0)
    hu[r < 1.0] = 40.0
    hu[(r > 0.85) & (r < 1.0)] = 700.0
    for side in (-1, 1):
        lr = np.hypot((yy - cy) / (rows * 0.22), (xx - cx - side * cols * 0.17) / (cols * 0.12))
        hu[lr < 1.0] = -850.0
    hu += rng.normal(0, 12, size=hu.shape)
    hu += 30 * np.sin(z / 3.0)
    slope, intercept = 1.0, (-1024.0 if not signed else 0.0)
    stored = np.round((hu - intercept) / slope)
    lo, hi = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    stored = np.clip(stored, lo, hi)
    return stored.astype(np.int16 if signed else np.uint16), slope, intercept


def make_slice(rows, cols, z, n, series, syntax, bits_stored, signed, seed):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    sop = f"{series['root']}.{z + 1}"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.StudyDate = "20240517"
    ds.SeriesDate = "20240517"
    ds.AcquisitionDate = "20240517"
    ds.ContentDate = "20240517"
    ds.StudyTime = "101500"
    ds.AcquisitionTime = "101512.250000"
    ds.AccessionNumber = "ACC0001"
    ds.Modality = "CT"
    ds.Manufacturer = "Radguard Test"
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = "PID-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1.25"
    ds.KVP = "120"
    ds.StudyInstanceUID = series["study"]
    ds.SeriesInstanceUID = series["series"]
    ds.StudyID = "1"
    ds.SeriesNumber = "2"
    ds.AcquisitionNumber = "1"
    ds.InstanceNumber = str(z + 1)
    ds.ImagePositionPatient = ["-250.0", "-250.0", f"{-z * 1.25:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = series["for"]
    ds.SliceLocation = f"{-z * 1.25:.2f}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = ["0.9765625", "0.9765625"]
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    stored, slope, intercept = phantom(rows, cols, z, seed, bits_stored, signed)
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    # A nested sequence, so parsers must skip one.
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_IMAGE_STORAGE
    ref.ReferencedSOPInstanceUID = f"{series['root']}.9999"
    ds.ReferencedImageSequence = [ref]
    ds.PixelData = stored.tobytes()  # native little endian; pydicom swaps for big endian
    ds["PixelData"].VR = "OW"
    return ds


def save(ds, path, syntax):
    ds.file_meta.TransferSyntaxUID = syntax
    little = syntax != ExplicitVRBigEndian
    implicit = syntax == ImplicitVRLittleEndian
    if not little:
        arr = np.frombuffer(ds.PixelData, dtype="<i2" if ds.PixelRepresentation else "<u2")
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if little:
        ds.save_as(path, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    else:
        pydicom.filewriter.dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)


def cmd_series(a):
    os.makedirs(a.out, exist_ok=True)
    base = f"{ROOT}{a.seed}"
    series = {
        "root": base + ".3",
        "study": base + ".1",
        "series": base + ".2",
        "for": base + ".4",
    }
    syntax = SYNTAXES[a.syntax]
    for z in range(a.slices):
        ds = make_slice(a.rows, a.cols, z, a.slices, series, syntax, a.bits_stored, bool(a.signed), a.seed)
        save(ds, os.path.join(a.out, f"ct{z + 1:04d}.dcm"), syntax)


def native_array(ds):
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress()
    return ds.pixel_array.copy()


def cmd_tamper(a):
    ds = pydicom.dcmread(a.input)
    syntax = ds.file_meta.TransferSyntaxUID
    if a.mode == "patient-id":
        ds.PatientID = "PID-6666"
    else:
        arr = native_array(ds).astype(np.int32)
        region = arr[a.y : a.y + a.size, a.x : a.x + a.size]
        slope = float(ds.get("RescaleSlope", 1) or 1)
        if a.mode == "raise":
            region += int(round(a.delta / slope))
        elif a.mode == "flatten":
            region[:, :] = int(round(float(np.median(region))))
        lo, hi = (-(1 << (ds.BitsStored - 1)), (1 << (ds.BitsStored - 1)) - 1) if ds.PixelRepresentation else (0, (1 << ds.BitsStored) - 1)
        arr = np.clip(arr, lo, hi).astype(np.int16 if ds.PixelRepresentation else np.uint16)
        if syntax.is_compressed:
            syntax = ExplicitVRLittleEndian
            ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW"
        if syntax == ExplicitVRBigEndian:
            save(ds, a.output, syntax)
            return
    ds.save_as(a.output, enforce_file_format=True)


def cmd_rewrite(a):
    ds = pydicom.dcmread(a.input)
    ds.preamble = bytes((i * 37 + 11) % 256 for i in range(128))
    if a.private:
        block = ds.private_block(0x0009, "RADGUARD TEST", create=True)
        block.add_new(0x01, "LO", "added by a benign tool")
    ds.save_as(a.output, enforce_file_format=True)


# ---------------------------------------------------------------- reference fingerprint
# An independent implementation of docs/fingerprint.md, used to cross-check the Rust one.

ATTRIBUTES = [
    (0x00080005, "CS"), (0x00080016, "UI"), (0x00080018, "UI"), (0x00080020, "DA"),
    (0x00080021, "DA"), (0x00080022, "DA"), (0x00080023, "DA"), (0x0008002A, "DT"),
    (0x00080030, "TM"), (0x00080031, "TM"), (0x00080032, "TM"), (0x00080033, "TM"),
    (0x00080050, "SH"), (0x00080060, "CS"), (0x00100010, "PN"), (0x00100020, "LO"),
    (0x00100021, "LO"), (0x00100030, "DA"), (0x00100040, "CS"), (0x00180050, "DS"),
    (0x00180088, "DS"), (0x0020000D, "UI"), (0x0020000E, "UI"), (0x00200010, "SH"),
    (0x00200011, "IS"), (0x00200012, "IS"), (0x00200013, "IS"), (0x00200020, "CS"),
    (0x00200032, "DS"), (0x00200037, "DS"), (0x00200052, "UI"), (0x00200060, "CS"),
    (0x00200062, "CS"), (0x00201041, "DS"), (0x00280002, "US"), (0x00280004, "CS"),
    (0x00280008, "IS"), (0x00280010, "US"), (0x00280011, "US"), (0x00280030, "DS"),
    (0x00280100, "US"), (0x00280101, "US"), (0x00280102, "US"), (0x00280103, "US"),
    (0x00281052, "DS"), (0x00281053, "DS"), (0x00281054, "LO"),
]


def canonical_value(vr, raw):
    if vr == "US":
        return raw
    parts = [p.strip(b" \0") for p in raw.split(b"\\")]
    v = b"\\".join(parts)
    if len(v) % 2:
        v += b"\0" if vr == "UI" else b" "
    return v


def raw_bytes(ds, tag, vr, big):
    """The element's value bytes exactly as stored in the file (before pydicom converts it)."""
    item = ds.get_item(tag)
    if item is None:
        return None
    if isinstance(item, pydicom.dataelem.RawDataElement):
        raw = item.value or b""
    else:  # pydicom converts a few elements while reading (Specific Character Set)
        v = item.value
        if isinstance(v, (list, pydicom.multival.MultiValue)):
            v = "\\".join(str(x) for x in v)
        raw = b"" if v is None else str(v).encode("latin-1")
    if vr == "US" and big:
        raw = b"".join(raw[i : i + 2][::-1] for i in range(0, len(raw), 2))
    return raw


def reference_fingerprint(path):
    ds = pydicom.dcmread(path)
    big = ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    a = hashlib.sha256()
    for tag, vr in ATTRIBUTES:
        raw = raw_bytes(ds, tag, vr, big)
        if raw is None:
            continue
        v = canonical_value(vr, raw)
        a.update(struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode() + struct.pack("<H", len(v)) + v)
    if "PixelData" not in ds:
        kind, p = 0, bytes(32)
    else:
        arr = native_array(ds)  # stored values, sign-extended per Pixel Representation
        ba = ds.BitsAllocated
        dtype = {8: "<i1" if ds.PixelRepresentation else "<u1", 16: "<i2" if ds.PixelRepresentation else "<u2",
                 32: "<i4" if ds.PixelRepresentation else "<u4"}[ba]
        value = np.ascontiguousarray(arr).astype(dtype).tobytes()
        if len(value) % 2:
            value += b"\0"
        header = struct.pack("<HH", 0x7FE0, 0x0010) + (b"OB" if ba <= 8 else b"OW") + b"\0\0" + struct.pack("<I", len(value))
        kind, p = 1, hashlib.sha256(header + value).digest()
    f = hashlib.sha256(b"radguard-fingerprint-v1\n" + bytes([kind]) + a.digest() + p)
    return f.hexdigest()


def cmd_fingerprint(a):
    for path in a.files:
        print(reference_fingerprint(path), path)


def cmd_colour(a):
    """An 8-bit RGB multi-frame Secondary Capture (planar configuration 0): colour blocks,
    gradients and noise."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0 : a.rows, 0 : a.cols]
    frames = []
    for f in range(a.frames):
        px = np.stack([(xx * 5 + f * 20) % 256, (yy * 3 + (xx // 8) * 40) % 256,
                       ((xx // 6 + yy // 6) % 2) * 200 + f], axis=-1).astype(np.int32)
        px += rng.integers(-3, 4, px.shape)
        frames.append(np.clip(px, 0, 255).astype(np.uint8))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # Multi-frame True Color SC
    meta.MediaStorageSOPInstanceUID = generate_uid(ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(ROOT)
    ds.SeriesInstanceUID = generate_uid(ROOT)
    ds.PatientID = "PID-0002"
    ds.Modality = "OT"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = a.frames
    ds.Rows, ds.Columns = a.rows, a.cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    data = np.stack(frames).tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)
    ds["PixelData"].VR = "OB"
    save(ds, a.out, ExplicitVRLittleEndian)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("series")
    s.add_argument("out")
    s.add_argument("--slices", type=int, default=6)
    s.add_argument("--rows", type=int, default=64)
    s.add_argument("--cols", type=int, default=64)
    s.add_argument("--syntax", choices=sorted(SYNTAXES), default="explicit")
    s.add_argument("--bits-stored", type=int, default=16)
    s.add_argument("--signed", type=int, default=1)
    s.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("tamper")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--mode", choices=["raise", "flatten", "patient-id"], required=True)
    t.add_argument("--x", type=int, default=20)
    t.add_argument("--y", type=int, default=20)
    t.add_argument("--size", type=int, default=24)
    t.add_argument("--delta", type=float, default=300.0)
    r = sub.add_parser("rewrite")
    r.add_argument("input")
    r.add_argument("output")
    r.add_argument("--private", action="store_true")
    f = sub.add_parser("fingerprint")
    f.add_argument("files", nargs="+")
    c = sub.add_parser("colour")
    c.add_argument("out")
    c.add_argument("--frames", type=int, default=3)
    c.add_argument("--rows", type=int, default=40)
    c.add_argument("--cols", type=int, default=48)
    a = p.parse_args()
    {"series": cmd_series, "tamper": cmd_tamper, "rewrite": cmd_rewrite, "fingerprint": cmd_fingerprint,
     "colour": cmd_colour}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
