#!/usr/bin/env python3
"""Check a de-identified all-rows data set against Table E.1-1, with pydicom.

usage: check_rows.py TABLE.tsv INPUT.dcm OUTPUT.dcm CARRIER_TAG [OPTION ...]

Reads the table file itself and derives each row's expected outcome from the codes
(options override Basic, K over C; X and X/D remove; Z, X/Z, Z/D, X/Z/D empty (Patient ID:
pseudonym); D dummy; K keep; C clean; U, X/Z/U* new UIDs), then checks every single-tag row
present in INPUT at top level and inside the CARRIER sequence. Prints "rows checked: N" and
exits 1 listing every mismatch.
"""

import sys

import pydicom
from pydicom.tag import Tag

COLUMNS = {
    "retain-safe-private": "rtn_safe_priv",
    "retain-uids": "rtn_uids",
    "retain-device-identity": "rtn_dev_id",
    "retain-institution-identity": "rtn_inst_id",
    "retain-patient-characteristics": "rtn_pat_chars",
    "retain-long-full-dates": "rtn_long_full_dates",
    "retain-long-modified-dates": "rtn_long_modif_dates",
    "clean-descriptors": "clean_desc",
    "clean-structured-content": "clean_struct_cont",
    "clean-graphics": "clean_graph",
}


def load(path):
    rows = []
    header = None
    for line in open(path, encoding="utf-8"):
        line = line.rstrip("\n")
        if line.startswith("#") or not line:
            continue
        cells = line.split("\t")
        if header is None:
            header = cells
            continue
        rows.append(dict(zip(header, cells)))
    return rows


def expected(row, options):
    code = row["basic"]
    chosen = None
    for o in options:
        c = row[COLUMNS[o]]
        if c and (chosen is None or (chosen != "K" and c == "K")):
            chosen = c
    if chosen:
        code = chosen
    return {
        "X": "removed", "X/D": "removed",
        "Z": "empty", "X/Z": "empty", "Z/D": "empty", "X/Z/D": "empty",
        "D": "dummy", "K": "keep", "C": "clean", "U": "uid", "X/Z/U*": "uid",
    }[code]


def value_bytes(elem):
    v = elem.value
    if elem.VR == "SQ":
        return None
    if isinstance(v, bytes):
        if elem.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            return v
        return v.rstrip(b"\0 ")
    return str(v).encode("latin-1", "replace")


def check(scope_in, scope_out, rows, options, where, problems):
    n = 0
    for row in rows:
        t = row["tag"]
        if "x" in t or t == "PRIVATE":
            continue
        tag = Tag(int(t, 16))
        if tag not in scope_in or tag.group <= 2:
            continue
        n += 1
        exp = expected(row, options)
        src = scope_in[tag]
        out = scope_out.get(tag)
        label = f"{where} {t} {row['name']} {src.VR}: expected {exp}"
        if exp == "clean" and src.VR in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            exp = "removed"  # binary values cannot be searched for text: removed
        if exp == "removed":
            if out is not None:
                problems.append(f"{label}, still present")
            continue
        if out is None:
            problems.append(f"{label}, missing")
            continue
        if exp == "empty":
            if tag == Tag(0x0010, 0x0020):
                if not out.value or out.value == src.value:
                    problems.append(f"{label}, Patient ID not pseudonymised")
            elif out.VR == "SQ":
                if len(out.value) != 0:
                    problems.append(f"{label}, sequence has items")
            elif out.value not in (None, "", b"") and str(out.value) != "":
                problems.append(f"{label}, value {out.value!r}")
        elif exp == "dummy":
            if out.VR == "SQ":
                if len(out.value) != 1 or len(out.value[0]) != 0:
                    problems.append(f"{label}, not one empty item")
            elif out.VR == "UI":
                if not str(out.value).startswith("2.25."):
                    problems.append(f"{label}, UID {out.value!r}")
            elif value_bytes(out) in (b"", value_bytes(src)):
                problems.append(f"{label}, value {out.value!r}")
        elif exp == "keep":
            if out.VR == "SQ":
                if len(out.value) != 1 or out.value[0].get((0x0008, 0x0100)) is None:
                    problems.append(f"{label}, sequence content lost")
            elif value_bytes(out) != value_bytes(src):
                problems.append(f"{label}, value changed {src.value!r} -> {out.value!r}")
        elif exp == "uid":
            if out.VR == "SQ":
                continue
            if not str(out.value).startswith("2.25.") or out.value == src.value:
                problems.append(f"{label}, UID {out.value!r}")
        elif exp == "clean":
            if out.VR == "SQ":
                cv = out.value[0].get((0x0008, 0x0100)) if len(out.value) else None
                if cv is None or "ROWTEST" in str(cv.value):
                    problems.append(f"{label}, sequence text not cleaned")
            elif out.VR in ("DA", "DT"):
                if str(out.value) == str(src.value) or str(out.value) > str(src.value):
                    problems.append(f"{label}, date {out.value!r} not shifted back")
            elif out.VR in ("LO", "LT", "SH", "ST", "UT", "UC", "PN", "CS"):
                if "ROWTEST" in str(out.value).upper():
                    problems.append(f"{label}, identifier left in {out.value!r}")
            elif out.VR == "AE":
                if str(out.value) == str(src.value) or not str(out.value).startswith("RG"):
                    problems.append(f"{label}, AE {out.value!r}")
    return n


def main():
    table, inp, outp, carrier = sys.argv[1:5]
    options = sys.argv[5:]
    rows = load(table)
    a = pydicom.dcmread(inp)
    b = pydicom.dcmread(outp)
    problems = []
    n = check(a, b, rows, options, "top", problems)
    ctag = Tag(int(carrier, 16))
    n += check(a[ctag].value[0], b[ctag].value[0], rows, options, "nested", problems)
    if b.get((0x0012, 0x0062)) is None or b[0x0012, 0x0062].value != "YES":
        problems.append("PatientIdentityRemoved is not YES")
    codes = [i.CodeValue for i in b[0x0012, 0x0064].value]
    if codes[0] != "113100" or any(i.CodingSchemeDesignator != "DCM" for i in b[0x0012, 0x0064].value):
        problems.append(f"method codes {codes}")
    print(f"rows checked: {n}")
    for p in problems:
        print("MISMATCH", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
