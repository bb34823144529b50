#!/usr/bin/env python3
"""check_deid.py SENT_DIR RECV_DIR: checks what a de-identifying route delivered.

For every received file: Patient Identity Removed = YES, no patient name/birth date left,
Patient ID not the original, SOP Instance UID replaced (2.25.), and pixel data byte-identical
to the sent file with the same InstanceNumber. All received files share one Study and one Series
Instance UID. Prints one JSON object; exit 0 when every check holds.
"""
import json
import sys
from pathlib import Path

import pydicom

sent_dir, recv_dir = Path(sys.argv[1]), Path(sys.argv[2])
sent = {}
for p in sorted(sent_dir.iterdir()):
    ds = pydicom.dcmread(p)
    sent[int(ds.InstanceNumber)] = ds
problems, studies, series = [], set(), set()
recv = sorted(p for p in recv_dir.iterdir() if p.is_file())
for p in recv:
    ds = pydicom.dcmread(p)
    orig = sent.get(int(ds.InstanceNumber))
    if orig is None:
        problems.append(f"{p.name}: no sent file with InstanceNumber {ds.InstanceNumber}")
        continue
    if ds.get("PatientIdentityRemoved") != "YES":
        problems.append(f"{p.name}: PatientIdentityRemoved is {ds.get('PatientIdentityRemoved')!r}")
    if str(ds.get("PatientName", "")) not in ("",):
        problems.append(f"{p.name}: PatientName left: {ds.PatientName}")
    if ds.get("PatientID") == orig.get("PatientID"):
        problems.append(f"{p.name}: PatientID unchanged")
    if ds.get("PatientBirthDate", "") not in ("", None):
        problems.append(f"{p.name}: PatientBirthDate left")
    if ds.SOPInstanceUID == orig.SOPInstanceUID or not ds.SOPInstanceUID.startswith("2.25."):
        problems.append(f"{p.name}: SOP Instance UID not replaced")
    if ds.PixelData != orig.PixelData:
        problems.append(f"{p.name}: pixel data differs")
    studies.add(ds.StudyInstanceUID)
    series.add(ds.SeriesInstanceUID)
if len(studies) > 1 or len(series) > 1:
    problems.append(f"UIDs not consistent across the series: {len(studies)} studies, {len(series)} series")
print(json.dumps({"received": len(recv), "problems": problems}))
sys.exit(1 if problems or not recv else 0)
