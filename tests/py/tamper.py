#!/usr/bin/env python3
"""tamper.py FILE OUT: a CT-GAN-like change — raise a 24x24 region by 300 (stored values) —
written as a new file (the original is not modified)."""
import sys

import numpy as np
import pydicom

ds = pydicom.dcmread(sys.argv[1])
a = ds.pixel_array.copy()
r0, c0 = a.shape[0] // 3, a.shape[1] // 3
a[r0:r0 + 24, c0:c0 + 24] = np.clip(a[r0:r0 + 24, c0:c0 + 24].astype(np.int32) + 300, 0, 4095).astype(a.dtype)
ds.PixelData = a.tobytes()
ds.save_as(sys.argv[2])
