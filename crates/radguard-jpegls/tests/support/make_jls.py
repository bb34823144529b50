#!/usr/bin/env python3
"""JPEG-LS test streams made by DCMTK, for radguard-jpegls's differential test.

  make_jls.py OUT_DIR

For each variant: a native image made here (numpy, pydicom), encoded with /usr/bin/dcmcjpls
(lossless and near-lossless, interleave modes, thresholds, reset, fragments), decoded back with
/usr/bin/dcmdjpls. Writes NAME.fK.jls (the codestream of frame K, gathered from its fragments)
and NAME.raw (dcmdjpls's pixel data: little-endian samples, all frames), and one line per
variant in manifest.tsv: NAME WIDTH HEIGHT FRAMES SAMPLES BYTES_PER_SAMPLE.

Restart markers: dcmcjpls cannot write them, so "rst-" variants are spliced from strips of the
image encoded separately (each strip as its own stream), joined with RSTm markers under one
header with a DRI segment: T.87 restarts the coder and its line buffers at each RSTm, so the
spliced stream decodes to the strips' decodings stacked.
"""
import os
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = "1.2.826.0.1.3680043.10.1137."  # test-only UID root
SC = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture


def image(rows, cols, frames, spp, bits, seed):
    """Smooth shapes, flat areas (run mode), noise, and a band of full-range noise (escape
    codes)."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    out = []
    for f in range(frames):
        planes = []
        for s in range(spp):
            base = (np.sin((xx + 7 * f + 3 * s) / 9.0) * np.cos(yy / 13.0) + 1) * top / 3
            base += rng.normal(0, max(1.0, top / 200), (rows, cols))
            base[(yy // 8 + xx // 8 + s) % 3 == 0] = (top // 5) * (s + 1)  # flat blocks
            if rows > 4:
                band = rows // 2
                base[band : band + 2, :] = rng.integers(0, top + 1, (min(2, rows - band), cols))
            planes.append(np.clip(np.rint(base), 0, top))
        out.append(np.stack(planes, axis=-1))
    return np.stack(out).astype(np.uint16 if bits > 8 else np.uint8)


def write_native(path, px, bits_stored, signed=False):
    frames, rows, cols, spp = px.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC
    meta.MediaStorageSOPInstanceUID = generate_uid(ROOT)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(ROOT)
    ds.SeriesInstanceUID = generate_uid(ROOT)
    ds.PatientID = "JLS"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = "RGB" if spp == 3 else "MONOCHROME2"
    if spp == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8 if px.dtype == np.uint8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    data = px.astype("<u2" if ds.BitsAllocated == 16 else "u1").tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if ds.BitsAllocated == 8 else "OW"
    ds.save_as(str(path), enforce_file_format=True)


def dcmtk(tool, args, src, dst):
    subprocess.run(["/usr/bin/" + tool, *args, str(src), str(dst)], check=True,
                   stdout=subprocess.DEVNULL)


def encode(out, name, px, bits, args, signed=False):
    """Native -> dcmcjpls -> (frames, dcmdjpls raw bytes)."""
    native = os.path.join(out, name + ".native.dcm")
    jls = os.path.join(out, name + ".jls.dcm")
    back = os.path.join(out, name + ".back.dcm")
    write_native(native, px, bits, signed)
    dcmtk("dcmcjpls", args, native, jls)
    dcmtk("dcmdjpls", [], jls, back)
    ds = pydicom.dcmread(jls)
    nframes = px.shape[0]
    frames = list(generate_frames(ds.PixelData, number_of_frames=nframes))
    raw = pydicom.dcmread(back).PixelData[: px.size * px.itemsize]
    for p in (native, jls, back):
        os.remove(p)
    return frames, raw


def markers(stream):
    """(marker, start, end) of the header segments up to and including SOS."""
    pos, out = 2, []
    while True:
        m = stream[pos + 1]
        length = int.from_bytes(stream[pos + 2 : pos + 4], "big")
        out.append((m, pos, pos + 2 + length))
        pos += 2 + length
        if m == 0xDA:
            return out


def splice(strips, rows, interval):
    """One stream with restart interval `interval` from single-scan strip streams."""
    first = strips[0]
    segs = markers(first)
    head = bytearray(first[:2])
    for m, s, e in segs:
        seg = bytearray(first[s:e])
        if m == 0xF7:  # SOF55: the full height
            seg[5:7] = rows.to_bytes(2, "big")
        if m == 0xDA:
            head += b"\xff\xdd\x00\x04" + interval.to_bytes(2, "big")
        head += seg
    body = bytearray()
    for i, st in enumerate(strips):
        sos_end = markers(st)[-1][2]
        eoi = st.rindex(b"\xff\xd9")
        if i:
            body += bytes([0xFF, 0xD0 + (i - 1) % 8])
        body += st[sos_end:eoi]
    return bytes(head + body + b"\xff\xd9")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = []

    def emit(name, px, frames, raw):
        _, rows, cols, spp = px.shape
        for k, f in enumerate(frames):
            with open(os.path.join(out, f"{name}.f{k}.jls"), "wb") as fh:
                fh.write(f)
        with open(os.path.join(out, name + ".raw"), "wb") as fh:
            fh.write(raw)
        manifest.append(f"{name}\t{cols}\t{rows}\t{len(frames)}\t{spp}\t{px.itemsize}")

    def variant(name, rows, cols, frames, spp, alloc, bits, args, seed=1, signed=False):
        px = image(rows, cols, frames, spp, bits, seed)
        if alloc == 16:
            px = px.astype(np.uint16)
        fr, raw = encode(out, name, px, bits, args, signed)
        emit(name, px, fr, raw)

    near = lambda d: ["+en", "+md", str(d)]
    # Monochrome 8 bit.
    variant("m8-lossless", 64, 64, 1, 1, 8, 8, ["+el"])
    for d in (1, 3, 7):
        variant(f"m8-near{d}", 64, 64, 1, 1, 8, 8, near(d), seed=d)
    variant("m8-thresholds", 64, 64, 1, 1, 8, 8, ["+el", "+t1", "5", "+t2", "10", "+t3", "30", "+rs", "100"])
    variant("m8-reset16", 64, 64, 1, 1, 8, 8, ["+el", "+rs", "16"])
    variant("m8-frames3", 48, 40, 3, 1, 8, 8, ["+el"])
    variant("m8-fragments", 96, 96, 2, 1, 8, 8, ["+el", "+fs", "1"])
    variant("m8-1x1", 1, 1, 1, 1, 8, 8, ["+el"])
    variant("m8-1x57", 1, 57, 1, 1, 8, 8, ["+el"])
    variant("m8-57x1", 57, 1, 1, 1, 8, 8, ["+el"])
    variant("m8-37x53-near2", 37, 53, 1, 1, 8, 8, near(2))
    # Monochrome 12 bit in 16.
    variant("m12-lossless", 64, 64, 1, 1, 16, 12, ["+el"])
    for d in (2, 7):
        variant(f"m12-near{d}", 64, 64, 1, 1, 16, 12, near(d), seed=d)
    variant("m12-frames3", 40, 48, 3, 1, 16, 12, ["+el"])
    variant("m12-thresholds", 64, 64, 1, 1, 16, 12, ["+el", "+t1", "20", "+t2", "80", "+t3", "300", "+rs", "200"])
    variant("m12-cooked", 64, 64, 1, 1, 16, 12, ["+el", "+pc"])
    # Monochrome 16 bit.
    variant("m16-lossless", 64, 64, 1, 1, 16, 16, ["+el"])
    for d in (1, 10):
        variant(f"m16-near{d}", 64, 64, 1, 1, 16, 16, near(d), seed=d)
    variant("m16-signed", 64, 64, 1, 1, 16, 16, ["+el"], signed=True)
    variant("m16-frames2-fragments", 64, 64, 2, 1, 16, 16, ["+el", "+fs", "2"])
    variant("m10-lossless", 50, 70, 1, 1, 16, 10, ["+el"])
    # RGB 8 bit in the three interleave modes.
    for il in ("il", "is", "in"):
        variant(f"rgb8-{il}-lossless", 64, 64, 1, 3, 8, 8, ["+el", "+" + il])
        variant(f"rgb8-{il}-near2", 64, 64, 1, 3, 8, 8, near(2) + ["+" + il], seed=2)
    variant("rgb8-is-frames3", 32, 48, 3, 3, 8, 8, ["+el", "+is"])
    # (dcmcjpls 3.6.7 aborts in malloc on "+is +rs 16": line interleave only.)
    variant("rgb8-il-reset16", 64, 64, 1, 3, 8, 8, ["+el", "+il", "+rs", "16"])
    variant("rgb8-il-37x53", 37, 53, 1, 3, 8, 8, ["+el", "+il"])
    variant("rgb8-is-1x1", 1, 1, 1, 3, 8, 8, ["+el", "+is"])
    # RGB 16 bit (dcmdjpls 3.6.7 cannot decode its own 16-bit RGB "+in" streams).
    for il in ("il", "is"):
        variant(f"rgb16-{il}-lossless", 40, 40, 1, 3, 16, 16, ["+el", "+" + il])
    variant("rgb16-is-near3", 40, 40, 1, 3, 16, 16, near(3) + ["+is"], seed=3)

    # Restart markers, spliced from strips.
    def restart(name, rows, cols, spp, alloc, bits, args, interval):
        px = image(rows, cols, 1, spp, bits, 9)
        if alloc == 16:
            px = px.astype(np.uint16)
        strips, raws = [], []
        for i, top in enumerate(range(0, rows, interval)):
            part = np.ascontiguousarray(px[:, top : top + interval])
            fr, raw = encode(out, f"{name}-strip{i}", part, bits, args)
            strips.append(fr[0])
            raws.append(raw)
        emit(name, px, [splice(strips, rows, interval)], b"".join(raws))

    restart("rst-m8-lossless", 70, 33, 1, 8, 8, ["+el"], 16)
    restart("rst-m16-near3", 40, 40, 1, 16, 16, near(3), 8)
    restart("rst-rgb8-il", 40, 24, 3, 8, 8, ["+el", "+il"], 8)
    restart("rst-rgb8-is-near2", 40, 24, 3, 8, 8, near(2) + ["+is"], 5)
    restart("rst-m12-every-line", 20, 30, 1, 16, 12, ["+el"], 1)

    with open(os.path.join(out, "manifest.tsv"), "w") as fh:
        fh.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
