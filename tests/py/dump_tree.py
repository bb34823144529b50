#!/usr/bin/env python3
"""dump_tree.py -- the element tree of DICOM files as pydicom reads them, as JSON lines.

Usage:  .venv/bin/python tests/py/dump_tree.py FILE...

For each FILE, one line of JSON:

  {"file": FILE,
   "meta": [NODE...],            File Meta Information elements (group 0002), as read
   "encoding": {"implicit_vr": bool, "little_endian": bool} | null,
                                 the encoding pydicom actually read the data set in (it may
                                 differ from the Transfer Syntax when pydicom's heuristics
                                 decide so)
   "tree": [NODE...],            the data set's elements in file order
   "error": null | "Type: message",  pydicom failed (the tree is what it read before)
   "warnings": ["..."]}          what pydicom warned or logged while reading

  NODE = {"tag": "GGGGEEEE", "vr": "XX" | null, "vr_read": "XX" | null, "len": N | null,
          "items": [[NODE...]...],        for sequences (as pydicom parsed them)
          "fragments": [N...],            for encapsulated pixel data: the length of every
                                          item, the Basic Offset Table first
          "error": "..."}                 this element's value could not be converted

"vr" is the VR as stored (null in implicit VR: the file carries none), "vr_read" the VR pydicom
uses after its dictionary look-ups (it turns UN into the dictionary VR); "len" is the value
length as stored in the element header (null: undefined length; "len_unknown": true when
pydicom converted the element before it could be seen). The file is read with
dcmread(force=True, defer_size=None); elements are taken from the data set in file order
without converting them except where needed to see nested items. A file pydicom cannot read is
a data point, not a crash: its line carries the error.
"""
from __future__ import annotations

import json
import logging
import sys
import traceback
import warnings

import pydicom
from pydicom import config, filereader
from pydicom.dataelem import RawDataElement
from pydicom.encaps import generate_fragments

UNDEFINED = 0xFFFFFFFF


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a broken log record is still a data point
            self.messages.append(repr(record.msg))


# Stored value lengths by (tag, value position): pydicom converts some elements while reading
# (the meta group, Specific Character Set) and a converted element no longer knows its stored
# length, so the lengths are recorded as pydicom's own element generator yields them.
_LENGTHS: dict[tuple[int, int], int] = {}
_generator = filereader.data_element_generator


def _recording_generator(*args, **kwargs):
    for e in _generator(*args, **kwargs):
        if isinstance(e, RawDataElement):
            _LENGTHS[(int(e.tag), e.value_tell)] = e.length
        yield e


filereader.data_element_generator = _recording_generator


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _node(ds, tag, elem) -> dict:
    node: dict = {"tag": f"{int(tag):08X}"}
    if isinstance(elem, RawDataElement):
        node["vr"] = elem.VR
        node["len"] = None if elem.length == UNDEFINED else int(elem.length)
    else:
        # Only undefined-length sequences come out of the reader already converted (an
        # explicit VR UN of undefined length is SQ by then: PS3.5 §6.2.2).
        node["vr"] = None if ds.original_encoding[0] else elem.VR
        if elem.is_undefined_length:
            node["len"] = None
        elif (length := _LENGTHS.get((int(tag), elem.file_tell))) is not None:
            node["len"] = None if length == UNDEFINED else int(length)
        else:
            node["len"] = None
            node["len_unknown"] = True
    try:
        converted = ds[tag]
    except Exception as e:  # noqa: BLE001 -- any failure is reported, not raised
        node["vr_read"] = None
        node["error"] = _err(e)
        return node
    node["vr_read"] = converted.VR
    if converted.VR == "SQ":
        node["items"] = [_tree(item) for item in (converted.value or [])]
    elif (
        node["len"] is None
        and isinstance(elem, RawDataElement)
        and isinstance(elem.value, bytes | bytearray)
    ):
        try:
            endian = "<" if elem.is_little_endian else ">"
            node["fragments"] = [len(f) for f in generate_fragments(elem.value, endianness=endian)]
        except Exception as e:  # noqa: BLE001
            node["error"] = _err(e)
    return node


def _tree(ds) -> list[dict]:
    out = []
    # The private dict keeps file order (Dataset iteration sorts by tag) and the raw elements.
    for tag, elem in list(ds._dict.items()):
        out.append(_node(ds, tag, elem))
    return out


def dump(path: str) -> dict:
    result: dict = {"file": path, "meta": [], "encoding": None, "tree": [], "error": None,
                    "warnings": []}
    _LENGTHS.clear()
    collect = _Collect()
    logger = logging.getLogger("pydicom")
    logger.addHandler(collect)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                ds = pydicom.dcmread(path, force=True, defer_size=None)
            except Exception as e:  # noqa: BLE001
                result["error"] = _err(e)
                ds = None
            if ds is not None:
                try:
                    result["meta"] = _tree(ds.file_meta) if ds.file_meta is not None else []
                except Exception as e:  # noqa: BLE001
                    result["error"] = "meta: " + _err(e)
                # The elements as read say which encoding was used (pydicom may switch from
                # the transfer syntax's; the data set's own record keeps the declared one).
                raw = next((e for e in ds._dict.values() if isinstance(e, RawDataElement)), None)
                enc = ((raw.is_implicit_VR, raw.is_little_endian) if raw is not None
                       else ds.original_encoding)
                if enc[0] is not None:
                    result["encoding"] = {"implicit_vr": bool(enc[0]),
                                          "little_endian": bool(enc[1])}
                try:
                    result["tree"] = _tree(ds)
                except Exception as e:  # noqa: BLE001
                    result["error"] = result["error"] or _err(e)
        result["warnings"] = [str(w.message) for w in caught] + collect.messages
    finally:
        logger.removeHandler(collect)
    return result


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    # Read as the library does by default, but never raise on what it can recover from.
    config.settings.reading_validation_mode = config.WARN
    for path in argv:
        try:
            line = dump(path)
        except Exception as e:  # noqa: BLE001 -- never stop the batch
            line = {"file": path, "meta": [], "encoding": None, "tree": [],
                    "error": "dump_tree: " + _err(e), "warnings": [traceback.format_exc()]}
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
