"""Seed inputs for the `fingerprint` fuzz target: small images in each transfer syntax the
target selects, prefixed by the selector byte and a piece-size byte, plus one Part 10 file
(selector 255). Run with the project's venv:  .venv/bin/python fuzz/seeds/make_fingerprint_seeds.py
"""
import io
import pathlib
import sys

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus/fingerprint")
SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless]


def image(bits: int, spp: int, rows: int = 4, cols: int = 5, frames: int = 1) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"{bits}-{spp}-{frames}"])
    ds.PatientID = "FUZZ"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, spp
    ds.PhotometricInterpretation = "RGB" if spp == 3 else "MONOCHROME2"
    if spp == 3:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits - 4 if bits == 16 else bits, (bits - 5 if bits == 16 else bits - 1)
    ds.PixelRepresentation = 1 if bits == 16 else 0
    dtype = {8: np.uint8, 16: np.int16, 32: np.uint32}[bits]
    arr = (np.arange(rows * cols * spp * frames) * 37 % 251).astype(dtype)
    ds.PixelData = arr.tobytes()
    return ds


def encoded(ds: Dataset, ts) -> bytes:
    ds = ds.copy()
    if ts == RLELossless:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, encoding_plugin="pydicom")
        ts_little, implicit = True, False
    else:
        ts_little = ts != ExplicitVRBigEndian
        implicit = ts == ImplicitVRLittleEndian
    buf = io.BytesIO()
    fp = DicomFileLike(buf)
    fp.is_little_endian = ts_little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return buf.getvalue()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    n = 0
    for sel, ts in enumerate(SYNTAXES):
        for bits, spp, frames in [(8, 1, 1), (16, 1, 2), (8, 3, 1), (32, 1, 1)]:
            try:
                body = encoded(image(bits, spp, frames=frames), ts)
            except Exception as e:  # an encoder that cannot do this layout: skip the seed
                print(f"skip {ts.name} {bits}/{spp}: {e}", file=sys.stderr)
                continue
            for step in (0, 6):
                (OUT / f"seed-{sel}-{bits}-{spp}-{frames}-{step}").write_bytes(bytes([sel, step]) + body)
                n += 1
    # JPEG Baseline / JPEG-LS selectors with encapsulated fragments (not real codestreams:
    # the parser must cope with whatever is inside).
    for sel in (4, 5):
        ds = image(8, 1)
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + bytes(20) + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"
        buf = io.BytesIO()
        fp = DicomFileLike(buf)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
        (OUT / f"seed-{sel}-encapsulated").write_bytes(bytes([sel, 3]) + buf.getvalue())
        n += 1
    # A Part 10 file.
    ds = image(16, 1)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    (OUT / "seed-255-part10").write_bytes(bytes([255, 9]) + buf.getvalue())
    n += 1
    print(f"{n} seeds in {OUT}")


if __name__ == "__main__":
    main()
