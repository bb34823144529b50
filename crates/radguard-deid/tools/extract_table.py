#!/usr/bin/env python3
"""Generate crates/radguard-deid/data/table_e1_1.tsv from a carried edition of PS3.15 Table E.1-1.

Source: the `idiscore` wheel from PyPI (version 1.2), whose module `idiscore/_public_dicom.py`
holds a scrape of Table E.1-1 ("Application Level Confidentiality Profile Attributes") with the
Basic Profile column and every option column. Only the facts are taken (tag or tag pattern,
attribute name, action code per column); the module is read with `ast` and never imported or
executed, and none of its code is reused.

Usage:
    pip download --no-deps idiscore==1.2 -d /tmp/wheels
    python3 tools/extract_table.py /tmp/wheels/idiscore-1.2.0-py3-none-any.whl > data/table_e1_1.tsv
    # optional cross-check of the Basic column against dicom-anonymizer's lists:
    python3 tools/extract_table.py WHEEL --compare /path/to/dicomfields_2024b.py > /dev/null

The output is tab-separated, with `#` header lines recording the source, the scrape date, the
edition and the row count. Columns: tag, name, then one action code per column (empty cell =
the column says nothing about the row):

    basic  rtn_safe_priv  rtn_uids  rtn_dev_id  rtn_inst_id  rtn_pat_chars
    rtn_long_full_dates  rtn_long_modif_dates  clean_desc  clean_struct_cont  clean_graph

Tags are written `GGGGEEEE` (upper-case hex), patterns with `x` for any hex digit
(`50xxxxxx`, `60xx3000`), and `PRIVATE` for the Private Attributes row.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import zipfile
from pathlib import Path

MODULE = "idiscore/_public_dicom.py"

# Variable name of each column's rule set in the source -> our column name, in output order.
COLUMNS = [
    ("basic_profile", "basic"),
    ("retain_safe_private", "rtn_safe_priv"),
    ("retain_uid", "rtn_uids"),
    ("retain_device_id", "rtn_dev_id"),
    ("retain_institution_id", "rtn_inst_id"),
    ("retain_patient_characteristics", "rtn_pat_chars"),
    ("retain_full_dates", "rtn_long_full_dates"),
    ("retain_modified_dates", "rtn_long_modif_dates"),
    ("clean_descriptors", "clean_desc"),
    ("clean_structured_content", "clean_struct_cont"),
    ("clean_graphics", "clean_graph"),
]

# The source's names for the action codes -> the code as printed in Table E.1-1.
CODES = {
    "DUMMY": "D",
    "EMPTY": "Z",
    "REMOVE": "X",
    "KEEP": "K",
    "CLEAN": "C",
    "UID": "U",
    "EMPTY_OR_DUMMY": "Z/D",
    "REMOVE_OR_EMPTY": "X/Z",
    "REMOVE_OR_DUMMY": "X/D",
    "REMOVE_OR_EMPTY_OR_DUMMY": "X/Z/D",
    "REMOVE_OR_EMPTY_OR_UID": "X/Z/U*",
}


def read_source(path: Path) -> str:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            return z.read(MODULE).decode("utf-8")
    return path.read_text(encoding="utf-8")


def tag_of(node: ast.expr) -> str:
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"line {node.lineno}: unexpected tag expression")
    kind = node.func.id
    if kind == "PrivateTags":
        return "PRIVATE"
    if kind not in ("SingleTag", "RepeatingGroup") or len(node.args) != 1:
        raise ValueError(f"line {node.lineno}: unexpected tag constructor {kind}")
    arg = node.args[0]
    if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
        raise ValueError(f"line {node.lineno}: tag is not a string literal")
    t = arg.value.replace(" ", "").replace(",", "").strip("()")
    if not re.fullmatch(r"[0-9a-fA-Fx]{8}", t):
        raise ValueError(f"line {node.lineno}: bad tag {arg.value!r}")
    if kind == "SingleTag" and "x" in t:
        raise ValueError(f"line {node.lineno}: single tag with a wildcard")
    return "".join(c.upper() if c != "x" else "x" for c in t)


def code_of(node: ast.expr) -> str:
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ActionCodes"
        and node.attr in CODES
    ):
        return CODES[node.attr]
    raise ValueError(f"line {node.lineno}: unknown action code expression")


def comment_on(lines: list[str], lineno: int) -> str:
    m = re.search(r"#\s*(.*?)\s*$", lines[lineno - 1])
    return m.group(1) if m else ""


def extract(src: str):
    tree = ast.parse(src)
    lines = src.splitlines()
    doc = ast.get_docstring(tree) or ""
    m = re.search(r"scrape date:\s*(\S+)", doc)
    scrape_date = m.group(1) if m else "unknown"
    m = re.search(r"(https?://\S+)", doc)
    url = m.group(1) if m else "unknown"

    sets: dict[str, dict] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1):
            continue
        target = stmt.targets[0]
        call = stmt.value
        if not (isinstance(target, ast.Name) and isinstance(call, ast.Call)):
            continue
        if not (isinstance(call.func, ast.Name) and call.func.id == "RawNemaRuleSet"):
            continue
        kw = {k.arg: k.value for k in call.keywords}
        rules = kw["rules"]
        if not isinstance(rules, ast.List):
            raise ValueError(f"{target.id}: rules is not a list literal")
        rows = []
        for el in rules.elts:
            if not (isinstance(el, ast.Tuple) and len(el.elts) == 2):
                raise ValueError(f"line {el.lineno}: rule is not a pair")
            tag = tag_of(el.elts[0])
            name = comment_on(lines, el.end_lineno)
            if tag == "PRIVATE":
                name = "Private Attributes"
            rows.append((tag, name, code_of(el.elts[1])))
        code = kw["code"].value if isinstance(kw.get("code"), ast.Constant) else ""
        sets[target.id] = {"code": code, "rows": rows}
    return scrape_date, url, sets


def dcm_anonymizer_basic(path: Path) -> dict[str, str]:
    """Basic column from a dicom-anonymizer `dicomfields_*.py` list module (facts only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {
        "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
        "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
    }
    out = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            code = names.get(stmt.targets[0].id)
            if code is None or not isinstance(stmt.value, ast.List):
                continue
            for el in stmt.value.elts:
                if isinstance(el, ast.Tuple) and len(el.elts) == 2:
                    g, e = (x.value for x in el.elts)  # type: ignore[attr-defined]
                    out[f"{g:04X}{e:04X}"] = code
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="idiscore wheel or its _public_dicom.py")
    ap.add_argument("--compare", type=Path, action="append", default=[],
                    help="dicom-anonymizer dicomfields_*.py to compare the Basic column with")
    args = ap.parse_args()

    scrape_date, url, sets = extract(read_source(args.source))
    missing = [v for v, _ in COLUMNS if v not in sets]
    if missing:
        print(f"missing rule sets: {missing}", file=sys.stderr)
        return 1

    names: dict[str, str] = {}
    table: dict[str, dict[str, str]] = {}
    order: list[str] = []
    for var, col in COLUMNS:
        seen = set()
        for tag, name, code in sets[var]["rows"]:
            if tag in seen:
                print(f"{var}: duplicate row {tag}", file=sys.stderr)
                return 1
            seen.add(tag)
            if tag not in table:
                table[tag] = {}
                order.append(tag)
            if name and tag not in names:
                names[tag] = name
            table[tag][col] = code
    no_basic = [t for t in order if "basic" not in table[t]]
    if no_basic:
        print(f"rows without a Basic Profile action: {no_basic}", file=sys.stderr)
        return 1

    def sort_key(t: str):
        return (1, t) if t == "PRIVATE" else (0, t.replace("x", "0"))

    rows = sorted(order, key=sort_key)
    codes = {col: sets[var]["code"] for var, col in COLUMNS}
    out = sys.stdout
    out.write("# PS3.15 Table E.1-1 Application Level Confidentiality Profile Attributes\n")
    out.write("# generated by crates/radguard-deid/tools/extract_table.py; do not edit by hand\n")
    out.write("# source: PyPI idiscore 1.2, idiscore/_public_dicom.py (facts only)\n")
    out.write(f"# scraped-from: {url}\n")
    out.write(f"# scrape-date: {scrape_date}\n")
    out.write(f"# edition: current edition as published on {scrape_date}\n")
    n_pat = sum(1 for t in rows if "x" in t)
    n_priv = sum(1 for t in rows if t == "PRIVATE")
    out.write(f"# rows: {len(rows)} ({len(rows) - n_pat - n_priv} attributes, {n_pat} "
              f"repeating-group patterns, {n_priv} private-attributes row)\n")
    out.write("# column-codes: " + " ".join(f"{c}={codes[c]}" for _, c in COLUMNS) + "\n")
    out.write("\t".join(["tag", "name"] + [c for _, c in COLUMNS]) + "\n")
    for t in rows:
        cells = [t, names.get(t, "")] + [table[t].get(c, "") for _, c in COLUMNS]
        if any("\t" in c or "\n" in c for c in cells):
            print(f"{t}: tab or newline in a cell", file=sys.stderr)
            return 1
        out.write("\t".join(cells) + "\n")

    for cmp in args.compare:
        theirs = dcm_anonymizer_basic(cmp)
        ours = {t: table[t]["basic"] for t in rows if "x" not in t and t != "PRIVATE"}
        only_ours = sorted(set(ours) - set(theirs))
        only_theirs = sorted(set(theirs) - set(ours))
        differ = sorted(t for t in set(ours) & set(theirs) if ours[t] != theirs[t])
        print(f"{cmp.name}: {len(theirs)} single-tag rows; ours {len(ours)}; "
              f"only ours {len(only_ours)} {only_ours}; only theirs {len(only_theirs)} "
              f"{only_theirs}; action differs {len(differ)} "
              f"{[(t, ours[t], theirs[t]) for t in differ]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
