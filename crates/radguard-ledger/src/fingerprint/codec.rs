//! Decoding lossless encapsulated pixel data one frame at a time: RLE Lossless with the decoder
//! below (PS3.5 Annex G; bounds-checked and fast), JPEG-LS Lossless with `radguard-jpegls`
//! (safe Rust, bounded), JPEG Lossless with dicom-rs's transfer syntax registry
//! (jpeg-decoder). A panic inside a third-party decoder on hostile data becomes a decode error.

use std::borrow::Cow;

use dicom_encoding::adapters::{PixelDataObject, RawPixelData};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::pixels::{Layout, PixelSink, MAX_FRAME_BYTES};
use super::FingerprintError;

/// Encapsulated pixel data held for decoding.
pub struct Encapsulated<'a> {
    pub transfer_syntax: &'a str,
    pub layout: &'a Layout,
    pub photometric: &'a str,
    pub offset_table: &'a [u32],
    pub fragments: &'a [Vec<u8>],
}

impl PixelDataObject for Encapsulated<'_> {
    fn transfer_syntax_uid(&self) -> &str {
        self.transfer_syntax
    }
    fn rows(&self) -> Option<u16> {
        u16::try_from(self.layout.rows).ok()
    }
    fn cols(&self) -> Option<u16> {
        u16::try_from(self.layout.columns).ok()
    }
    fn samples_per_pixel(&self) -> Option<u16> {
        u16::try_from(self.layout.samples_per_pixel).ok()
    }
    fn bits_allocated(&self) -> Option<u16> {
        u16::try_from(self.layout.bits_allocated).ok()
    }
    fn bits_stored(&self) -> Option<u16> {
        u16::try_from(self.layout.bits_stored).ok()
    }
    fn photometric_interpretation(&self) -> Option<&str> {
        Some(self.photometric)
    }
    fn number_of_frames(&self) -> Option<u32> {
        Some(self.layout.frames)
    }
    fn number_of_fragments(&self) -> Option<u32> {
        u32::try_from(self.fragments.len()).ok()
    }
    fn fragment(&self, fragment: usize) -> Option<Cow<'_, [u8]>> {
        self.fragments
            .get(fragment)
            .map(|f| Cow::Borrowed(f.as_slice()))
    }
    fn offset_table(&self) -> Option<Cow<'_, [u32]>> {
        Some(Cow::Borrowed(self.offset_table))
    }
    fn raw_pixel_data(&self) -> Option<RawPixelData> {
        Some(RawPixelData {
            fragments: self.fragments.iter().cloned().collect(),
            offset_table: self.offset_table.iter().copied().collect(),
        })
    }
}

/// Parses a Basic Offset Table item value (little-endian u32 offsets).
pub fn offset_table(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .filter_map(|c| c.try_into().ok().map(u32::from_le_bytes))
        .collect()
}

/// The RLE header (PS3.5 G.5): 16 little-endian u32 words, the number of segments and then
/// the offsets of up to 15 segments.
fn rle_header(fragment: &[u8]) -> Option<[usize; 16]> {
    let (header, _) = fragment.split_first_chunk::<64>()?;
    let mut words = [0usize; 16];
    for (w, b) in words.iter_mut().zip(header.chunks_exact(4)) {
        *w = u32::from_le_bytes(b.try_into().ok()?) as usize;
    }
    Some(words)
}

/// Decodes every frame into canonical samples and streams them into `sink`.
pub fn decode_into(src: &Encapsulated<'_>, sink: &mut PixelSink) -> Result<(), FingerprintError> {
    let layout = src.layout;
    if layout.bits_allocated == 1 || layout.float {
        return Err(FingerprintError::UnsupportedPixelLayout(
            "encapsulated single-bit or float pixel data".into(),
        ));
    }
    let frame_bytes = layout.frame_bytes();
    if frame_bytes > MAX_FRAME_BYTES {
        return Err(FingerprintError::UnsupportedPixelLayout(format!(
            "frame of {frame_bytes} bytes is larger than {MAX_FRAME_BYTES}"
        )));
    }
    let frames = layout.frames;
    if src.fragments.len() < frames as usize && !src.fragments.is_empty() {
        return Err(FingerprintError::Decode {
            frame: src.fragments.len() as u32,
            reason: format!("{frames} frames but only {} fragments", src.fragments.len()),
        });
    }
    if frames > 1 && src.fragments.len() != frames as usize && src.offset_table.is_empty() {
        return Err(FingerprintError::Decode {
            frame: 0,
            reason: "several fragments per frame and no Basic Offset Table".into(),
        });
    }
    let rle = src.transfer_syntax == radguard_dicom::ts::RLE_LOSSLESS;
    let jpegls = src.transfer_syntax == radguard_dicom::ts::JPEG_LS_LOSSLESS;
    if rle && src.fragments.len() != frames as usize {
        return Err(FingerprintError::Decode {
            frame: 0,
            reason: format!(
                "RLE needs one fragment per frame: {} fragments for {frames} frames",
                src.fragments.len()
            ),
        });
    }
    let reader = if rle || jpegls {
        None
    } else {
        Some(
            TransferSyntaxRegistry
                .get(src.transfer_syntax)
                .and_then(|ts| ts.pixel_data_reader())
                .ok_or_else(|| {
                    FingerprintError::UnsupportedTransferSyntax(src.transfer_syntax.to_string())
                })?,
        )
    };
    // Buffers are reused across frames and, per thread, across instances (no fresh pages for
    // every image).
    thread_local! {
        static BUFFERS: std::cell::RefCell<[Vec<u8>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
    }
    BUFFERS.with(|cell| -> Result<(), FingerprintError> {
        let mut guard = cell.borrow_mut();
        let [decoded, canonical, scratch] = &mut *guard;
        for frame in 0..frames {
            decoded.clear();
            match reader {
                None if jpegls => {
                    let stream = frame_stream(src, frame)
                        .map_err(|reason| FingerprintError::Decode { frame, reason })?;
                    jpegls_decode_frame(&stream, layout, decoded)
                        .map_err(|reason| FingerprintError::Decode { frame, reason })?;
                }
                None => {
                    let fragment = src
                        .fragments
                        .get(frame as usize)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    rle_decode_frame(fragment, layout, decoded, scratch)
                        .map_err(|reason| FingerprintError::Decode { frame, reason })?;
                }
                Some(reader) => {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        reader.decode_frame(src, frame, decoded)
                    }));
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            return Err(FingerprintError::Decode {
                                frame,
                                reason: e.to_string(),
                            })
                        }
                        Err(_) => {
                            return Err(FingerprintError::Decode {
                                frame,
                                reason: "the decoder failed on malformed data".into(),
                            })
                        }
                    }
                }
            }
            if decoded.len() as u64 != frame_bytes {
                return Err(FingerprintError::Decode {
                    frame,
                    reason: format!("decoded {} bytes, expected {frame_bytes}", decoded.len()),
                });
            }
            if layout.needs_masking() {
                canonical.clear();
                layout.canonicalise(decoded, canonical);
                sink.value(canonical);
            } else {
                sink.value(decoded);
            }
        }
        Ok(())
    })?;
    if layout.total_bytes() % 2 == 1 {
        sink.value(&[0]);
    }
    Ok(())
}

/// The encapsulated bytes of frame `frame` (PS3.5 §A.4): its fragment when there is one
/// fragment per frame, all fragments for a single frame, otherwise the fragments the Basic
/// Offset Table assigns to it (offsets count item headers too, 8 bytes each).
pub fn frame_stream<'a>(src: &'a Encapsulated<'_>, frame: u32) -> Result<Cow<'a, [u8]>, String> {
    let frames = src.layout.frames as usize;
    let f = frame as usize;
    if src.fragments.len() == frames {
        return src
            .fragments
            .get(f)
            .map(|v| Cow::Borrowed(v.as_slice()))
            .ok_or_else(|| "no fragment for the frame".into());
    }
    if frames == 1 {
        return Ok(Cow::Owned(src.fragments.concat()));
    }
    let start = u64::from(
        *src.offset_table
            .get(f)
            .ok_or("no Basic Offset Table entry")?,
    );
    let end = src
        .offset_table
        .get(f + 1)
        .map_or(u64::MAX, |e| u64::from(*e));
    if end < start {
        return Err("Basic Offset Table offsets decrease".into());
    }
    let mut at = 0u64;
    let mut out = Vec::new();
    let mut found = false;
    for fragment in src.fragments {
        if at >= start && at < end {
            out.extend_from_slice(fragment);
            found = true;
        }
        at += 8 + fragment.len() as u64;
    }
    if !found {
        return Err("the Basic Offset Table points at no fragment".into());
    }
    Ok(Cow::Owned(out))
}

/// Decodes one JPEG-LS frame (PS3.5 §A.4.3, ITU-T T.87) into little-endian, pixel-interleaved
/// samples of the layout's Bits Allocated, appended to `out`. The stream's frame header must
/// match Rows, Columns and Samples per Pixel, and its precision fit Bits Allocated.
pub fn jpegls_decode_frame(
    stream: &[u8],
    layout: &Layout,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let header = radguard_jpegls::read_header(stream).map_err(|e| e.to_string())?;
    if header.width != layout.columns
        || header.height != layout.rows
        || header.components.len() as u32 != layout.samples_per_pixel
    {
        return Err(format!(
            "JPEG-LS frame of {} x {} x {} samples, the data set says {} x {} x {}",
            header.width,
            header.height,
            header.components.len(),
            layout.columns,
            layout.rows,
            layout.samples_per_pixel
        ));
    }
    let bytes = layout.sample_bytes();
    if u32::from(header.precision) > 8 * bytes as u32 {
        return Err(format!(
            "JPEG-LS precision {} in Bits Allocated {}",
            header.precision, layout.bits_allocated
        ));
    }
    // The header matches the layout, whose frame is at most MAX_FRAME_BYTES: the decoder's
    // own limit is the same bound for 16-bit samples.
    let limits = radguard_jpegls::Limits {
        max_output_bytes: layout.frame_samples().saturating_mul(2),
    };
    let image = radguard_jpegls::decode(stream, &limits).map_err(|e| e.to_string())?;
    out.reserve(image.samples.len() * bytes);
    if bytes == 1 {
        // Precision ≤ 8: every sample fits in a byte.
        out.extend(image.samples.iter().map(|s| *s as u8));
    } else {
        for s in &image.samples {
            out.extend_from_slice(&s.to_le_bytes());
            out.resize(out.len() + bytes - 2, 0);
        }
    }
    Ok(())
}

/// Decodes one RLE Lossless frame (PS3.5 Annex G) into little-endian, pixel-interleaved samples
/// appended to `out`. `scratch` is reused between frames.
pub fn rle_decode_frame(
    fragment: &[u8],
    layout: &Layout,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    let bps = layout.sample_bytes();
    let spp = layout.samples_per_pixel as usize;
    let pixels = (layout.rows as usize) * (layout.columns as usize);
    let segments = bps * spp;
    let [count, offsets @ ..] =
        rle_header(fragment).ok_or("RLE header is shorter than 64 bytes")?;
    if count != segments {
        return Err(format!("{count} RLE segments, the image needs {segments}"));
    }
    let offsets = offsets.get(..segments).ok_or_else(|| {
        format!(
            "{segments} RLE segments, the header has room for {}",
            offsets.len()
        )
    })?;
    let start = out.len();
    out.resize(start + pixels * segments, 0);
    // Always `Some`: `start` is the length `out` had before growing.
    let Some(frame) = out.get_mut(start..) else {
        return Err("RLE frame buffer out of range".into());
    };
    for (seg, &from) in offsets.iter().enumerate() {
        // A segment ends where the next begins; the last one at the end of the fragment.
        let to = offsets.get(seg + 1).copied().unwrap_or(fragment.len());
        let data = fragment
            .get(from..to)
            .ok_or_else(|| format!("RLE segment {seg} lies outside the fragment"))?;
        scratch.clear();
        packbits(data, pixels, scratch)?;
        // `packbits` yields exactly `pixels` bytes.
        let decoded = scratch
            .get(..pixels)
            .ok_or_else(|| format!("RLE segment {seg} decodes short"))?;
        // Segment order: for each sample, most significant byte first.
        let sample = seg / bps;
        let byte = bps - 1 - seg % bps;
        let stride = segments;
        let offset = sample * bps + byte;
        if stride == 1 {
            frame.copy_from_slice(decoded);
        } else {
            for (dst, src) in frame.iter_mut().skip(offset).step_by(stride).zip(decoded) {
                *dst = *src;
            }
        }
    }
    Ok(())
}

/// PackBits: a header byte n; 0..=127 copies the next n + 1 bytes, -127..=-1 repeats the next
/// byte 1 - n times, -128 does nothing. Decodes until `want` bytes (a trailing pad is
/// ignored); fewer is an error.
fn packbits(mut data: &[u8], want: usize, out: &mut Vec<u8>) -> Result<(), String> {
    out.reserve(want);
    while out.len() < want {
        let Some((&n, rest)) = data.split_first() else {
            return Err(format!(
                "RLE segment decodes to {} bytes, expected {want}",
                out.len()
            ));
        };
        data = rest;
        let n = n as i8;
        if n >= 0 {
            let len = n as usize + 1;
            let (lit, rest) = data
                .split_at_checked(len)
                .ok_or("RLE literal run past the end of the segment")?;
            out.extend_from_slice(lit);
            data = rest;
        } else if n != -128 {
            let (&b, rest) = data
                .split_first()
                .ok_or("RLE replicate run past the end of the segment")?;
            data = rest;
            let len = 1 + (-(n as i16)) as usize;
            out.resize(out.len() + len, b);
        }
    }
    out.truncate(want);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(rows: u32, cols: u32, spp: u32, ba: u32) -> Layout {
        Layout {
            rows,
            columns: cols,
            frames: 1,
            samples_per_pixel: spp,
            bits_allocated: ba,
            bits_stored: ba,
            shift: 0,
            signed: false,
            planar: false,
            ybr422: false,
            float: false,
        }
    }

    fn fragment(segments: &[Vec<u8>]) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&(segments.len() as u32).to_le_bytes());
        let mut off = 64u32;
        for (i, s) in segments.iter().enumerate() {
            h[4 + 4 * i..8 + 4 * i].copy_from_slice(&off.to_le_bytes());
            off += s.len() as u32;
        }
        for s in segments {
            h.extend_from_slice(s);
        }
        h
    }

    #[test]
    fn packbits_runs() {
        let mut out = Vec::new();
        // literal 3, replicate 4 × 0x07, no-op, literal 1, pad byte
        packbits(&[2, 1, 2, 3, 0xFD, 7, 0x80, 0, 9, 0], 8, &mut out).expect("ok");
        assert_eq!(out, [1, 2, 3, 7, 7, 7, 7, 9]);
        let mut out = Vec::new();
        assert!(packbits(&[2, 1, 2], 3, &mut out).is_err());
        let mut out = Vec::new();
        assert!(packbits(&[0xFF], 2, &mut out).is_err());
        let mut out = Vec::new();
        assert!(packbits(&[0, 1], 3, &mut out).is_err());
    }

    #[test]
    fn sixteen_bit_and_colour_frames() {
        // 2 pixels of 16 bits: 0x1234, 0xABCD. Segment 0 = MSBs, segment 1 = LSBs.
        let f = fragment(&[vec![1, 0x12, 0xAB], vec![1, 0x34, 0xCD]]);
        let mut out = Vec::new();
        rle_decode_frame(&f, &layout(1, 2, 1, 16), &mut out, &mut Vec::new()).expect("ok");
        assert_eq!(out, [0x34, 0x12, 0xCD, 0xAB]);
        // RGB 8-bit, 2 pixels: R, G, B segments.
        let f = fragment(&[vec![1, 1, 2], vec![1, 3, 4], vec![1, 5, 6]]);
        let mut out = Vec::new();
        rle_decode_frame(&f, &layout(1, 2, 3, 8), &mut out, &mut Vec::new()).expect("ok");
        assert_eq!(out, [1, 3, 5, 2, 4, 6]);
    }

    #[test]
    fn hostile_fragments_are_errors() {
        let l = layout(1, 2, 1, 16);
        let mut out = Vec::new();
        assert!(rle_decode_frame(&[1, 0, 0], &l, &mut out, &mut Vec::new()).is_err());
        let mut f = fragment(&[vec![1, 0x12, 0xAB], vec![1, 0x34, 0xCD]]);
        f[0] = 15;
        assert!(rle_decode_frame(&f, &l, &mut out, &mut Vec::new()).is_err());
        let mut f = fragment(&[vec![1, 0x12, 0xAB], vec![1, 0x34, 0xCD]]);
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(rle_decode_frame(&f, &l, &mut out, &mut Vec::new()).is_err());
        let mut f = fragment(&[vec![1, 0x12, 0xAB], vec![1, 0x34, 0xCD]]);
        f[8..12].copy_from_slice(&2u32.to_le_bytes()); // segment 1 before segment 0 ends
        let _ = rle_decode_frame(&f, &l, &mut out, &mut Vec::new());
    }

    #[test]
    fn an_empty_image_decodes_to_nothing() {
        // Rows 0: two empty 16-bit segments. Writing the second byte of each sample used to
        // slice the empty frame at 1.
        let f = fragment(&[vec![], vec![]]);
        let mut out = Vec::new();
        rle_decode_frame(&f, &layout(0, 2, 1, 16), &mut out, &mut Vec::new()).expect("ok");
        assert!(out.is_empty());
    }

    /// An RLE fragment whose header claims 16 segments: the header only has room for 15
    /// offsets. Such a frame used to index past the 64-byte header.
    fn sixteen_segments() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&16u32.to_le_bytes());
        for i in 0..15u32 {
            f.extend_from_slice(&(64 + 2 * i).to_le_bytes());
        }
        for _ in 0..16 {
            f.extend_from_slice(&[0, 7]); // a literal run of one byte
        }
        f
    }

    #[test]
    fn more_segments_than_the_header_holds_is_an_error() {
        let mut out = Vec::new();
        let got = rle_decode_frame(
            &sixteen_segments(),
            &layout(1, 1, 16, 8),
            &mut out,
            &mut Vec::new(),
        );
        assert!(got.is_err(), "{got:?}");
    }

    #[test]
    fn more_segments_than_the_header_holds_is_an_error_when_streamed() {
        fn el(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
            let mut v = Vec::new();
            v.extend_from_slice(&group.to_le_bytes());
            v.extend_from_slice(&element.to_le_bytes());
            v.extend_from_slice(vr);
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
            v.extend_from_slice(value);
            v
        }
        fn item(tag: [u8; 4], value: &[u8]) -> Vec<u8> {
            let mut v = tag.to_vec();
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
            v.extend_from_slice(value);
            v
        }
        let mut d = Vec::new();
        d.extend(el(0x0028, 0x0002, b"US", &16u16.to_le_bytes()));
        d.extend(el(0x0028, 0x0010, b"US", &1u16.to_le_bytes()));
        d.extend(el(0x0028, 0x0011, b"US", &1u16.to_le_bytes()));
        d.extend(el(0x0028, 0x0100, b"US", &8u16.to_le_bytes()));
        d.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(item([0xFE, 0xFF, 0x00, 0xE0], &[]));
        d.extend(item([0xFE, 0xFF, 0x00, 0xE0], &sixteen_segments()));
        d.extend(item([0xFE, 0xFF, 0xDD, 0xE0], &[]));
        let mut fp = crate::fingerprint::Fingerprinter::new(radguard_dicom::ts::RLE_LOSSLESS)
            .expect("RLE is supported");
        fp.feed(&d);
        assert!(matches!(
            fp.finish(),
            Err(FingerprintError::Decode { frame: 0, .. })
        ));
    }
}
