#!/usr/bin/env python3
"""Read de-identified outputs with pydicom and compare them with their originals.

usage: verify_outputs.py PAIRS.json

PAIRS.json: [[original, output], ...]. For each pair: the output reads; (0012,0062) is YES;
(0012,0064) holds DCM 113100; Patient's Name is empty; the SOP Instance UID starts with 2.25.
and differs from the original; the pixel data bytes (native or encapsulated) are identical.
Prints "verified: N" and exits 1 listing every problem.
"""

import json
import sys

import pydicom


def main():
    pairs = json.load(open(sys.argv[1]))
    problems = []
    for orig, out in pairs:
        a = pydicom.dcmread(orig, force=True)
        b = pydicom.dcmread(out)
        if b.get("PatientIdentityRemoved") != "YES":
            problems.append(f"{out}: PatientIdentityRemoved {b.get('PatientIdentityRemoved')!r}")
        codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in b.get("DeidentificationMethodCodeSequence", [])]
        if ("113100", "DCM") not in codes:
            problems.append(f"{out}: method codes {codes}")
        if str(b.get("PatientName", "")) != "":
            problems.append(f"{out}: PatientName {b.PatientName!r}")
        if "SOPInstanceUID" in a:
            new = b.get("SOPInstanceUID")
            if new is None or not str(new).startswith("2.25.") or new == a.SOPInstanceUID:
                problems.append(f"{out}: SOPInstanceUID {new}")
            elif b.file_meta.MediaStorageSOPInstanceUID != new:
                problems.append(f"{out}: meta SOP Instance UID differs from the data set's")
        else:
            meta_uid = str(b.file_meta.get("MediaStorageSOPInstanceUID", ""))
            if meta_uid and not meta_uid.startswith("2.25."):
                problems.append(f"{out}: meta SOP Instance UID {meta_uid}")
        pa = a.get((0x7FE0, 0x0010))
        pb = b.get((0x7FE0, 0x0010))
        if (pa is None) != (pb is None) or (pa is not None and pa.value != pb.value):
            problems.append(f"{out}: pixel data differs from {orig}")
    print(f"verified: {len(pairs)}")
    for p in problems:
        print("PROBLEM", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
