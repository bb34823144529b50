#!/usr/bin/env python3
"""Write a deterministic CT series with PHI for the de-identification tests and benchmark.

usage: gen_series.py OUTDIR N [SIZE]

N slices of SIZE×SIZE (default 64) 16-bit pixels, Explicit VR Little Endian, one study and
series, hash-derived UIDs; the patient's name also appears in free text (Study Description,
Image Comments) and a private block, so that a residual-PHI check has something to find.
"""

import hashlib
import os
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian


def uid(*parts):
    h = int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:16], "big")
    return f"2.25.{h}"


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    study, series, frame = uid("study"), uid("series"), uid("frame")
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = uid("sop", i)
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.Modality = "CT"
        ds.PatientName = "MUSTERMANN^ERIKA"
        ds.PatientID = "PAT-889911"
        ds.PatientBirthDate = "19640812"
        ds.PatientSex = "F"
        ds.PatientAge = "059Y"
        ds.StudyDate = "20240301"
        ds.SeriesDate = "20240301"
        ds.ContentDate = "20240301"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC-2024-0042"
        ds.InstitutionName = "St. Example Hospital"
        ds.ReferringPhysicianName = "HOUSE^GREGORY"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT chest for Erika Mustermann"
        ds.ImageComments = "patient PAT-889911 born 12.08.1964"
        ds.BurnedInAnnotation = "NO"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.ReferencedImageSequence = Sequence([Dataset()])
        ds.ReferencedImageSequence[0].ReferencedSOPClassUID = ds.SOPClassUID
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = uid("sop", max(i - 1, 0))
        block = ds.private_block(0x0029, "RADGUARD TEST", create=True)
        block.add_new(0x10, "LO", "private copy of MUSTERMANN")
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = rng.integers(0, 4096, size=(size, size), dtype=np.uint16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        pydicom.dcmwrite(os.path.join(out, f"slice{i:04d}.dcm"), ds, enforce_file_format=True)
    print(f"wrote {n} slices to {out}")


if __name__ == "__main__":
    main()
