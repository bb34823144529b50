//! Canonical pixel samples: the pixel data as little-endian samples of Bits Allocated bits,
//! each holding the stored value (the Bits Stored bits ending at High Bit) sign-extended when
//! Pixel Representation is 1, colour samples interleaved (planar configuration 0), and the
//! element padded to even length with one zero byte.

use sha2::{Digest as _, Sha256};

use dicom_core::VR;

use super::{split_at_most, FingerprintError};

/// (7FE0,0008) Float Pixel Data and (7FE0,0009) Double Float Pixel Data.
pub const FLOAT_PIXEL_DATA: u32 = 0x7FE0_0008;
pub const DOUBLE_FLOAT_PIXEL_DATA: u32 = 0x7FE0_0009;

/// Largest frame Radguard buffers (planar native data, decoded frames).
pub const MAX_FRAME_BYTES: u64 = 512 * 1024 * 1024;

/// How the samples of an image are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rows: u32,
    pub columns: u32,
    pub frames: u32,
    pub samples_per_pixel: u32,
    pub bits_allocated: u32,
    pub bits_stored: u32,
    /// Bit position of the lowest stored bit (High Bit + 1 - Bits Stored).
    pub shift: u32,
    pub signed: bool,
    /// Native colour data stored plane by plane (Planar Configuration 1).
    pub planar: bool,
    /// YBR_FULL_422 native data: two samples per pixel on average.
    pub ybr422: bool,
    /// Float or double float pixel data: samples are copied, never masked.
    pub float: bool,
}

/// Raw image attributes, as read from the data set.
#[derive(Debug, Clone, Default)]
pub struct ImageAttributes {
    pub rows: Option<u16>,
    pub columns: Option<u16>,
    pub samples_per_pixel: Option<u16>,
    pub bits_allocated: Option<u16>,
    pub bits_stored: Option<u16>,
    pub high_bit: Option<u16>,
    pub pixel_representation: Option<u16>,
    pub planar_configuration: Option<u16>,
    pub number_of_frames: Option<String>,
    pub photometric: Option<String>,
}

impl Layout {
    /// The layout of the pixel data element `tag`.
    pub fn new(tag: u32, a: &ImageAttributes) -> Result<Layout, FingerprintError> {
        let missing = FingerprintError::MissingImageAttribute;
        let rows = u32::from(a.rows.ok_or(missing("Rows"))?);
        let columns = u32::from(a.columns.ok_or(missing("Columns"))?);
        let frames = match a.number_of_frames.as_deref().map(str::trim) {
            None | Some("") => 1,
            Some(s) => s.parse::<u32>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                FingerprintError::UnsupportedPixelLayout(format!("Number of Frames {s:?}"))
            })?,
        };
        let float = matches!(tag, FLOAT_PIXEL_DATA | DOUBLE_FLOAT_PIXEL_DATA);
        let samples_per_pixel = u32::from(a.samples_per_pixel.unwrap_or(1));
        if samples_per_pixel == 0 {
            return Err(FingerprintError::UnsupportedPixelLayout(
                "Samples per Pixel 0".into(),
            ));
        }
        let (bits_allocated, bits_stored, shift, signed) = if float {
            let bits = if tag == FLOAT_PIXEL_DATA { 32 } else { 64 };
            (bits, bits, 0, false)
        } else {
            let ba = u32::from(a.bits_allocated.ok_or(missing("BitsAllocated"))?);
            if !matches!(ba, 1 | 8 | 16 | 32) {
                return Err(FingerprintError::UnsupportedPixelLayout(format!(
                    "Bits Allocated {ba}"
                )));
            }
            let bs = u32::from(a.bits_stored.unwrap_or(ba as u16));
            if bs == 0 || bs > ba {
                return Err(FingerprintError::UnsupportedPixelLayout(format!(
                    "Bits Stored {bs} with Bits Allocated {ba}"
                )));
            }
            let hb = u32::from(a.high_bit.unwrap_or((bs - 1) as u16));
            if hb + 1 < bs || hb >= ba {
                return Err(FingerprintError::UnsupportedPixelLayout(format!(
                    "High Bit {hb} with Bits Stored {bs} and Bits Allocated {ba}"
                )));
            }
            (ba, bs, hb + 1 - bs, a.pixel_representation == Some(1))
        };
        let photometric = a.photometric.as_deref().map(str::trim).unwrap_or("");
        let layout = Layout {
            rows,
            columns,
            frames,
            samples_per_pixel,
            bits_allocated,
            bits_stored,
            shift,
            signed,
            planar: samples_per_pixel > 1 && a.planar_configuration == Some(1),
            ybr422: photometric == "YBR_FULL_422",
            float,
        };
        // Rows × Columns × Samples × bytes × Number of Frames can exceed u64 (all from the
        // peer's data set): refuse it here so that every size computed later fits.
        let total = layout
            .frame_samples()
            .checked_mul(layout.sample_bytes() as u64)
            .and_then(|b| b.checked_mul(u64::from(layout.frames)));
        if total.is_none() {
            return Err(FingerprintError::UnsupportedPixelLayout(format!(
                "{} frames of {} x {} x {} samples do not fit in 2^64 bytes",
                layout.frames, layout.rows, layout.columns, layout.samples_per_pixel
            )));
        }
        Ok(layout)
    }

    /// Bytes per sample (1 for single-bit data, handled as bytes).
    pub fn sample_bytes(&self) -> usize {
        (self.bits_allocated as usize / 8).max(1)
    }

    /// Samples in one frame.
    pub fn frame_samples(&self) -> u64 {
        let per_pixel = if self.ybr422 {
            2
        } else {
            u64::from(self.samples_per_pixel)
        };
        u64::from(self.rows) * u64::from(self.columns) * per_pixel
    }

    /// Bytes of one frame (bits allocated ≥ 8).
    pub fn frame_bytes(&self) -> u64 {
        self.frame_samples() * self.sample_bytes() as u64
    }

    /// Bytes of all frames: the canonical value before padding.
    pub fn total_bytes(&self) -> u64 {
        if self.bits_allocated == 1 {
            (self.frame_samples() * u64::from(self.frames)).div_ceil(8)
        } else {
            self.frame_bytes() * u64::from(self.frames)
        }
    }

    /// Can the canonical form be produced without touching the bytes?
    fn identity(&self, swap: usize) -> bool {
        swap <= 1 && !self.planar && self.masking().is_none()
    }

    /// Do samples need masking or sign extension (step 2 of the canonical form)?
    pub fn needs_masking(&self) -> bool {
        self.masking().is_some()
    }

    /// (shift, stored bits, signed) when samples need masking.
    fn masking(&self) -> Option<(u32, u32, bool)> {
        if self.float || self.bits_allocated == 1 {
            return None;
        }
        if self.bits_stored == self.bits_allocated && self.shift == 0 {
            return None;
        }
        Some((self.shift, self.bits_stored, self.signed))
    }

    /// Appends the canonical form of whole little-endian samples.
    pub fn canonicalise(&self, src: &[u8], out: &mut Vec<u8>) {
        let Some((shift, bits, signed)) = self.masking() else {
            out.extend_from_slice(src);
            return;
        };
        let start = out.len();
        out.extend_from_slice(src);
        // `start` is the length `out` had before: the range is always there.
        let dst = out.get_mut(start..).unwrap_or_default();
        match self.sample_bytes() {
            1 => {
                let mask = ((1u16 << bits) - 1) as u8;
                let sign = 1u8 << (bits - 1);
                for b in dst.iter_mut() {
                    let mut v = (*b >> shift) & mask;
                    if signed && v & sign != 0 {
                        v |= !mask;
                    }
                    *b = v;
                }
            }
            2 => {
                let mask = ((1u32 << bits) - 1) as u16;
                let sign = 1u16 << (bits - 1);
                for c in dst.chunks_exact_mut(2) {
                    let Ok(c): Result<&mut [u8; 2], _> = c.try_into() else {
                        continue;
                    };
                    let mut v = (u16::from_le_bytes(*c) >> shift) & mask;
                    if signed && v & sign != 0 {
                        v |= !mask;
                    }
                    *c = v.to_le_bytes();
                }
            }
            _ => {
                let mask = ((1u64 << bits) - 1) as u32;
                let sign = 1u32 << (bits - 1);
                for c in dst.chunks_exact_mut(4) {
                    let Ok(c): Result<&mut [u8; 4], _> = c.try_into() else {
                        continue;
                    };
                    let mut v = (u32::from_le_bytes(*c) >> shift) & mask;
                    if signed && v & sign != 0 {
                        v |= !mask;
                    }
                    *c = v.to_le_bytes();
                }
            }
        }
    }
}

/// Where canonical pixel bytes go: a hasher, and optionally a copy (for `verify`'s
/// changed-region report).
#[derive(Debug, Default)]
pub struct PixelSink {
    pub hasher: Sha256,
    pub value_len: u64,
    pub copy: Option<Vec<u8>>,
}

impl PixelSink {
    pub fn new(copy: bool) -> Self {
        PixelSink {
            hasher: Sha256::new(),
            value_len: 0,
            copy: copy.then(Vec::new),
        }
    }

    /// Bytes that are part of the hashed element but not of the value (headers).
    pub fn header(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn value(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.value_len += bytes.len() as u64;
        if let Some(c) = self.copy.as_mut() {
            c.extend_from_slice(bytes);
        }
    }
}

/// Streams native pixel value bytes (in the source byte order) into canonical form.
#[derive(Debug)]
pub struct Native {
    layout: Layout,
    total: u64,
    consumed: u64,
    /// Byte-swap unit of the source: 1 (none), 2 (OW in big endian), 4 (OF), 8 (OD).
    swap: usize,
    /// Bytes processed together: whole swap units and whole samples.
    unit: usize,
    carry: Vec<u8>,
    identity: bool,
    scratch: Vec<u8>,
    /// Planar data: one frame of planes being gathered.
    plane_buf: Vec<u8>,
}

impl Native {
    /// `big_endian` is the source encoding and `vr` the element's VR there.
    pub fn new(layout: Layout, big_endian: bool, vr: VR) -> Result<Native, FingerprintError> {
        let swap = if !big_endian {
            1
        } else {
            match vr {
                VR::OW => 2,
                VR::OF | VR::OL => 4,
                VR::OD | VR::OV => 8,
                _ => 1,
            }
        };
        if layout.planar && layout.frame_bytes() > MAX_FRAME_BYTES {
            return Err(FingerprintError::UnsupportedPixelLayout(format!(
                "planar frame of {} bytes is larger than {MAX_FRAME_BYTES}",
                layout.frame_bytes()
            )));
        }
        let unit = swap.max(layout.sample_bytes());
        let identity = layout.identity(swap);
        let total = layout.total_bytes();
        Ok(Native {
            layout,
            total,
            consumed: 0,
            swap,
            unit,
            carry: Vec::with_capacity(8),
            identity,
            scratch: Vec::new(),
            plane_buf: Vec::new(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The canonical value length (before the even-length pad).
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn push(&mut self, bytes: &[u8], sink: &mut PixelSink) {
        let (bytes, _) = split_at_most(bytes, self.total - self.consumed);
        self.consumed += bytes.len() as u64;
        if self.identity {
            sink.value(bytes);
            return;
        }
        let mut input = bytes;
        // Complete a unit started by the previous chunk.
        if !self.carry.is_empty() {
            let need = self.unit - self.carry.len();
            let (head, rest) = split_at_most(input, need as u64);
            self.carry.extend_from_slice(head);
            input = rest;
            if self.carry.len() < self.unit {
                return;
            }
            let carry = std::mem::take(&mut self.carry);
            self.process(&carry, sink);
        }
        let whole = input.len() - input.len() % self.unit;
        let (whole, partial) = split_at_most(input, whole as u64);
        // Bounded scratch: process in slices of at most 1 MiB.
        for piece in whole.chunks(1 << 20) {
            self.process(piece, sink);
        }
        self.carry.extend_from_slice(partial);
    }

    /// Whole units: swap, canonicalise, de-plane.
    fn process(&mut self, src: &[u8], sink: &mut PixelSink) {
        self.scratch.clear();
        if self.swap > 1 {
            let mut swapped = src.to_vec();
            for c in swapped.chunks_exact_mut(self.swap) {
                c.reverse();
            }
            self.layout.canonicalise(&swapped, &mut self.scratch);
        } else {
            self.layout.canonicalise(src, &mut self.scratch);
        }
        if !self.layout.planar {
            sink.value(&self.scratch);
            return;
        }
        let frame = self.layout.frame_bytes() as usize;
        let mut data: &[u8] = &self.scratch;
        while !data.is_empty() {
            let (head, rest) = split_at_most(data, (frame - self.plane_buf.len()) as u64);
            self.plane_buf.extend_from_slice(head);
            data = rest;
            if self.plane_buf.len() == frame {
                let interleaved = interleave(&self.plane_buf, &self.layout);
                sink.value(&interleaved);
                self.plane_buf.clear();
            }
        }
    }

    /// Ends the element: the value must have covered every sample; pads to even length.
    pub fn finish(mut self, sink: &mut PixelSink) -> Result<(), FingerprintError> {
        if self.consumed < self.total {
            return Err(FingerprintError::PixelDataTooShort {
                expected: self.total,
                actual: self.consumed,
            });
        }
        if !self.carry.is_empty() {
            // A trailing partial swap unit (odd 8-bit data stored as OW): copy as is.
            let carry = std::mem::take(&mut self.carry);
            sink.value(&carry);
        }
        if self.total % 2 == 1 {
            sink.value(&[0]);
        }
        Ok(())
    }
}

/// Planar configuration 1 → 0 for one frame.
pub fn interleave(planes: &[u8], layout: &Layout) -> Vec<u8> {
    let spp = layout.samples_per_pixel as usize;
    let sb = layout.sample_bytes();
    let pixels = (layout.rows as usize) * (layout.columns as usize);
    let plane = pixels * sb;
    let mut out = vec![0u8; planes.len()];
    for p in 0..pixels {
        for s in 0..spp {
            let src = s * plane + p * sb;
            let dst = (p * spp + s) * sb;
            if let (Some(from), Some(to)) = (planes.get(src..src + sb), out.get_mut(dst..dst + sb))
            {
                to.copy_from_slice(from);
            }
        }
    }
    out
}

/// The canonical Pixel Data element header: tag, VR (OB for ≤ 8 bits, OW above; OF/OD for
/// float data) and the padded length.
pub fn element_header(tag: u32, layout: &Layout, value_len: u64) -> Vec<u8> {
    let vr: &[u8; 2] = match tag {
        FLOAT_PIXEL_DATA => b"OF",
        DOUBLE_FLOAT_PIXEL_DATA => b"OD",
        _ if layout.bits_allocated <= 8 => b"OB",
        _ => b"OW",
    };
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    h.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    h.extend_from_slice(vr);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(&(value_len.min(u64::from(u32::MAX - 1)) as u32).to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIXEL_DATA: u32 = 0x7FE0_0010;

    fn attrs(ba: u16, bs: u16, hb: u16, pr: u16) -> ImageAttributes {
        ImageAttributes {
            rows: Some(2),
            columns: Some(2),
            samples_per_pixel: Some(1),
            bits_allocated: Some(ba),
            bits_stored: Some(bs),
            high_bit: Some(hb),
            pixel_representation: Some(pr),
            planar_configuration: None,
            number_of_frames: None,
            photometric: Some("MONOCHROME2".into()),
        }
    }

    fn run(layout: Layout, big: bool, vr: VR, src: &[u8], chunk: usize) -> Vec<u8> {
        let mut sink = PixelSink::new(true);
        let mut n = Native::new(layout, big, vr).expect("layout");
        for c in src.chunks(chunk) {
            n.push(c, &mut sink);
        }
        n.finish(&mut sink).expect("complete");
        sink.copy.expect("copy")
    }

    #[test]
    fn signed_12_bit_samples_are_masked_and_sign_extended() {
        let l = Layout::new(PIXEL_DATA, &attrs(16, 12, 11, 1)).expect("layout");
        // -1 with junk in the top nibble, 0x7FF, -2048, 5 with junk.
        let src = [0xFF, 0xFF, 0xFF, 0x07, 0x00, 0x08, 0x05, 0xA0];
        let want = [0xFF, 0xFF, 0xFF, 0x07, 0x00, 0xF8, 0x05, 0x00];
        for chunk in 1..=8 {
            assert_eq!(
                run(l.clone(), false, VR::OW, &src, chunk),
                want,
                "chunk {chunk}"
            );
        }
        // The same samples in explicit VR big endian (OW is byte-swapped per word).
        let be: Vec<u8> = src.chunks(2).flat_map(|c| [c[1], c[0]]).collect();
        for chunk in 1..=8 {
            assert_eq!(
                run(l.clone(), true, VR::OW, &be, chunk),
                want,
                "BE chunk {chunk}"
            );
        }
    }

    /// Regression: the largest sizes a data set can announce overflowed u64 in `total_bytes`
    /// (a panic in debug builds, a wrong size in release).
    #[test]
    fn sizes_that_do_not_fit_in_u64_are_refused() {
        let mut a = attrs(32, 32, 31, 0);
        a.rows = Some(u16::MAX);
        a.columns = Some(u16::MAX);
        a.samples_per_pixel = Some(u16::MAX);
        a.number_of_frames = Some(u32::MAX.to_string());
        let e = Layout::new(PIXEL_DATA, &a).expect_err("overflowing layout");
        assert!(
            matches!(e, FingerprintError::UnsupportedPixelLayout(ref m) if m.contains("2^64")),
            "{e}"
        );
        // The same image with one frame fits.
        a.number_of_frames = Some("1".into());
        let l = Layout::new(PIXEL_DATA, &a).expect("one frame");
        assert_eq!(l.total_bytes(), 65_535u64.pow(3) * 4);
    }

    #[test]
    fn high_bit_shift_and_unsigned() {
        // Bits Stored 12, High Bit 15: the value sits in the top 12 bits.
        let l = Layout::new(PIXEL_DATA, &attrs(16, 12, 15, 0)).expect("layout");
        let src = [0x10, 0x00, 0xF0, 0xFF, 0x00, 0x00, 0x01, 0x00];
        assert_eq!(
            run(l, false, VR::OW, &src, 3),
            [0x01, 0x00, 0xFF, 0x0F, 0x00, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn identity_when_nothing_to_do_and_padding() {
        let mut a = attrs(8, 8, 7, 0);
        a.rows = Some(1);
        a.columns = Some(3);
        let l = Layout::new(PIXEL_DATA, &a).expect("layout");
        assert_eq!(l.total_bytes(), 3);
        // Trailing bytes beyond the image (the source's own pad) are not part of the value.
        assert_eq!(run(l, false, VR::OB, &[1, 2, 3, 0], 1), [1, 2, 3, 0]);
        let l = Layout::new(PIXEL_DATA, &attrs(16, 16, 15, 1)).expect("layout");
        assert!(l.identity(1));
        assert!(!l.identity(2));
    }

    #[test]
    fn planar_colour_is_interleaved() {
        let mut a = attrs(8, 8, 7, 0);
        a.samples_per_pixel = Some(3);
        a.planar_configuration = Some(1);
        a.rows = Some(1);
        a.columns = Some(2);
        a.number_of_frames = Some("2".into());
        let l = Layout::new(PIXEL_DATA, &a).expect("layout");
        // Two frames of R R G G B B.
        let src = [1, 2, 3, 4, 5, 6, 11, 12, 13, 14, 15, 16];
        for chunk in 1..=12 {
            assert_eq!(
                run(l.clone(), false, VR::OB, &src, chunk),
                [1, 3, 5, 2, 4, 6, 11, 13, 15, 12, 14, 16],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn short_pixel_data_is_an_error() {
        let l = Layout::new(PIXEL_DATA, &attrs(16, 16, 15, 0)).expect("layout");
        let mut sink = PixelSink::new(false);
        let mut n = Native::new(l, false, VR::OW).expect("layout");
        n.push(&[0; 6], &mut sink);
        assert!(matches!(
            n.finish(&mut sink),
            Err(FingerprintError::PixelDataTooShort {
                expected: 8,
                actual: 6
            })
        ));
    }

    #[test]
    fn impossible_layouts_are_refused() {
        assert!(Layout::new(PIXEL_DATA, &attrs(12, 12, 11, 0)).is_err());
        assert!(Layout::new(PIXEL_DATA, &attrs(16, 17, 16, 0)).is_err());
        assert!(Layout::new(PIXEL_DATA, &attrs(16, 12, 16, 0)).is_err());
        let mut a = attrs(16, 16, 15, 0);
        a.rows = None;
        assert!(matches!(
            Layout::new(PIXEL_DATA, &a),
            Err(FingerprintError::MissingImageAttribute("Rows"))
        ));
        a.rows = Some(1);
        a.number_of_frames = Some("0".into());
        assert!(Layout::new(PIXEL_DATA, &a).is_err());
    }
}
