#!/usr/bin/env python3
"""make_pe_payload.py IN OUT: copy of a DICOM file with a Windows executable (a DOS header whose
e_lfanew leads to a PE header) hidden in a private OB element, as PEDICOM does. Test data."""
import struct
import sys

import pydicom

ds = pydicom.dcmread(sys.argv[1])
dos = bytearray(b"MZ" + b"\0" * 0x3A + struct.pack("<I", 0x40))
pe = b"PE\0\0" + struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102) + b"\0" * 0xE0
payload = bytes(dos) + pe + b"\0" * 64
block = ds.private_block(0x0011, "RADGUARD TEST", create=True)
block.add_new(0x10, "OB", payload)
ds.save_as(sys.argv[2])
