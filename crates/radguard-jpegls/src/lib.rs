//! A bounded JPEG-LS decoder in safe Rust (ITU-T T.87 | ISO/IEC 14495-1, the LOCO-I
//! algorithm), for DICOM's JPEG-LS Lossless (1.2.840.10008.1.2.4.80) and Near-Lossless
//! (1.2.840.10008.1.2.4.81) transfer syntaxes (PS3.5 §A.4.3, §8.2.3).
//!
//! Decodes 2–16-bit samples, 1–4 components, interleave modes none, line and sample,
//! NEAR ≥ 0, restart markers (DRI/RSTm) and custom preset coding parameters (LSE id 1).
//! Refused as [`Error::Unsupported`]: mapping tables (palettes, LSE id 2/3, Tm ≠ 0), extended
//! dimensions (LSE id 4), subsampled components, point transform, DNL-defined heights and
//! CharLS's HP colour transforms (none is allowed in DICOM).
//!
//! Why Radguard has its own decoder: it decodes pixel data received from the network inside
//! the gateway's process, so the decoder must be memory-safe and bounded, and the default
//! build must not need a C++ toolchain (CharLS, via the `charls` crate, needs cmake and g++).
//! The pure-Rust crates looked at did not fit: `pure_jpegls` 2.0 decodes single-component,
//! non-interleaved streams without restart markers only; `dicom-toolkit-codec` 0.5 ignores
//! restart intervals and comes with a whole second DICOM toolkit and a JPEG 2000 codec.
//!
//! Bounds: the output size is checked against [`Limits`] before anything is allocated; every
//! malformed stream is an [`Error`] (no panics, no `unsafe`); work is bounded by the output
//! size (a run bit fills at most 2^15 samples, a Golomb code is at most LIMIT bits).
//! Correctness is checked sample for sample against DCMTK's `dcmdjpls` on the streams
//! `dcmcjpls` writes (`tests/dcmtk.rs`: 42 variants, restart intervals spliced from strips), and
//! the decoder is fuzzed (`fuzz/fuzz_targets/jpegls.rs`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

mod bits;
mod scan;

use bits::{segment_end, BitReader};
use scan::{default_thresholds, Coder, ScanParams};

/// Most components in a frame this decoder accepts (T.87 allows 255; DICOM uses 1 or 3).
pub const MAX_COMPONENTS: usize = 4;

/// Why a stream was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a JPEG-LS stream: no SOI marker")]
    NoSoi,
    #[error("the stream ends inside a header")]
    TruncatedHeader,
    #[error("unexpected marker 0xFF{marker:02X} at byte {offset}")]
    UnexpectedMarker { marker: u8, offset: usize },
    #[error("invalid {0}")]
    InvalidHeader(&'static str),
    #[error("unsupported JPEG-LS feature: {0}")]
    Unsupported(&'static str),
    #[error("the image needs {bytes} bytes, more than the limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("the coded data of a scan ends early")]
    TruncatedScan,
    #[error("invalid coded data: {0}")]
    InvalidCodedData(&'static str),
    #[error("expected restart marker RST{expected}, found 0xFF{found:02X}")]
    RestartMarker { expected: u8, found: u8 },
    #[error("component {0} is not in any scan")]
    MissingComponent(u8),
    #[error("internal decoder error")]
    Internal,
}

/// Resource limits, checked before allocation.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest decoded image, in bytes of 16-bit samples (width × height × components × 2).
    pub max_output_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_output_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The frame header (SOF55, T.87 §C.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub width: u32,
    pub height: u32,
    /// Sample precision P, 2..=16.
    pub precision: u8,
    /// Component identifiers, in frame order.
    pub components: Vec<u8>,
}

/// A decoded image: samples pixel-interleaved in frame component order, row by row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub header: FrameHeader,
    pub samples: Vec<u16>,
}

/// Preset coding parameters (LSE id 1, T.87 §C.2.4.1.1); 0 means the default.
#[derive(Debug, Clone, Copy, Default)]
struct Presets {
    maxval: u16,
    t1: u16,
    t2: u16,
    t3: u16,
    reset: u16,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DRI: u8 = 0xDD;
const SOF55: u8 = 0xF7;
const LSE: u8 = 0xF8;
const COM: u8 = 0xFE;
const APP8: u8 = 0xE8;

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Result<u8, Error> {
        let b = *self.data.get(self.pos).ok_or(Error::TruncatedHeader)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let s = self
            .data
            .get(self.pos..self.pos.saturating_add(n))
            .ok_or(Error::TruncatedHeader)?;
        self.pos += n;
        Ok(s)
    }
    /// The next marker, skipping fill bytes (0xFF) before it (T.81 §B.1.1.2).
    fn marker(&mut self) -> Result<u8, Error> {
        let offset = self.pos;
        if self.u8()? != 0xFF {
            return Err(Error::InvalidHeader("marker: a marker was expected"));
        }
        loop {
            match self.u8()? {
                0xFF => continue,
                0x00 => return Err(Error::UnexpectedMarker { marker: 0, offset }),
                m => return Ok(m),
            }
        }
    }
    /// A marker segment's body (after its 2-byte length).
    fn segment(&mut self) -> Result<&'a [u8], Error> {
        let len = usize::from(self.u16()?);
        let body = len
            .checked_sub(2)
            .ok_or(Error::InvalidHeader("segment length"))?;
        self.bytes(body)
    }
}

/// Reads only the frame header, without decoding.
pub fn read_header(data: &[u8]) -> Result<FrameHeader, Error> {
    let mut cur = Cursor { data, pos: 0 };
    if cur.marker()? != SOI {
        return Err(Error::NoSoi);
    }
    loop {
        let offset = cur.pos;
        match cur.marker()? {
            SOF55 => return parse_sof(cur.segment()?),
            0xE0..=0xEF | COM | LSE | DRI => {
                cur.segment()?;
            }
            marker => return Err(Error::UnexpectedMarker { marker, offset }),
        }
    }
}

fn parse_sof(body: &[u8]) -> Result<FrameHeader, Error> {
    let mut c = Cursor { data: body, pos: 0 };
    let precision = c.u8()?;
    let height = c.u16()?;
    let width = c.u16()?;
    let nf = c.u8()?;
    if !(2..=16).contains(&precision) {
        return Err(Error::InvalidHeader("SOF55 sample precision"));
    }
    if height == 0 {
        return Err(Error::Unsupported(
            "number of lines defined by a DNL marker",
        ));
    }
    if width == 0 {
        return Err(Error::InvalidHeader("SOF55 width 0"));
    }
    if nf == 0 {
        return Err(Error::InvalidHeader("SOF55 component count 0"));
    }
    if usize::from(nf) > MAX_COMPONENTS {
        return Err(Error::Unsupported("more than 4 components"));
    }
    if body.len() != 6 + 3 * usize::from(nf) {
        return Err(Error::InvalidHeader("SOF55 length"));
    }
    let mut components = Vec::with_capacity(usize::from(nf));
    for _ in 0..nf {
        let id = c.u8()?;
        let sampling = c.u8()?;
        let _tq = c.u8()?;
        if sampling != 0x11 {
            return Err(Error::Unsupported("subsampled components"));
        }
        if components.contains(&id) {
            return Err(Error::InvalidHeader("SOF55 duplicate component identifier"));
        }
        components.push(id);
    }
    Ok(FrameHeader {
        width: u32::from(width),
        height: u32::from(height),
        precision,
        components,
    })
}

fn parse_lse(body: &[u8]) -> Result<Presets, Error> {
    let mut c = Cursor { data: body, pos: 0 };
    match c.u8()? {
        1 => {
            if body.len() != 11 {
                return Err(Error::InvalidHeader("LSE preset parameters length"));
            }
            Ok(Presets {
                maxval: c.u16()?,
                t1: c.u16()?,
                t2: c.u16()?,
                t3: c.u16()?,
                reset: c.u16()?,
            })
        }
        2 | 3 => Err(Error::Unsupported("mapping tables (LSE id 2/3)")),
        4 => Err(Error::Unsupported("extended dimensions (LSE id 4)")),
        _ => Err(Error::InvalidHeader("LSE id")),
    }
}

/// The coding parameters of a scan from the presets and NEAR (T.87 §C.2.4.1.1).
fn scan_params(frame: &FrameHeader, p: &Presets, near: u8) -> Result<ScanParams, Error> {
    let full = (1i32 << frame.precision) - 1;
    let maxval = if p.maxval == 0 {
        full
    } else {
        i32::from(p.maxval)
    };
    if maxval > full {
        return Err(Error::InvalidHeader("LSE MAXVAL larger than 2^P - 1"));
    }
    let near = i32::from(near);
    if near > (maxval / 2).min(255) {
        return Err(Error::InvalidHeader("SOS NEAR larger than MAXVAL / 2"));
    }
    let (d1, d2, d3) = default_thresholds(maxval, near);
    let pick = |v: u16, d: i32| if v == 0 { d } else { i32::from(v) };
    let t1 = pick(p.t1, d1);
    let t2 = pick(p.t2, d2);
    let t3 = pick(p.t3, d3);
    let reset = pick(p.reset, 64);
    if !(near < t1 && t1 <= t2 && t2 <= t3 && t3 <= maxval) {
        return Err(Error::InvalidHeader("LSE thresholds"));
    }
    if !(3..=maxval.max(255)).contains(&reset) {
        return Err(Error::InvalidHeader("LSE RESET"));
    }
    Ok(ScanParams {
        maxval,
        t1,
        t2,
        t3,
        reset,
        near,
    })
}

/// The output being assembled: samples pixel-interleaved, `nf` per pixel.
struct Output {
    width: usize,
    nf: usize,
    samples: Vec<u16>,
}

impl Output {
    /// Stores one decoded line of component `comp` (line buffers carry one edge sample on
    /// each side, `stride` samples per pixel, the component at `offset`).
    fn put(
        &mut self,
        row: usize,
        comp: usize,
        line: &[i32],
        stride: usize,
        offset: usize,
    ) -> Result<(), Error> {
        let start = row * self.width * self.nf;
        let dst = self
            .samples
            .get_mut(start..start + self.width * self.nf)
            .ok_or(Error::Internal)?;
        let src = line
            .get(stride..stride * (self.width + 1))
            .ok_or(Error::Internal)?;
        for (d, s) in dst
            .iter_mut()
            .skip(comp)
            .step_by(self.nf)
            .zip(src.iter().skip(offset).step_by(stride))
        {
            *d = *s as u16;
        }
        Ok(())
    }
}

/// Decodes a whole JPEG-LS stream (SOI … EOI).
pub fn decode(data: &[u8], limits: &Limits) -> Result<Image, Error> {
    let mut cur = Cursor { data, pos: 0 };
    if cur.marker()? != SOI {
        return Err(Error::NoSoi);
    }
    let mut frame: Option<FrameHeader> = None;
    let mut out: Option<Output> = None;
    let mut decoded = [false; MAX_COMPONENTS];
    let mut presets = Presets::default();
    let mut restart_interval = 0u32;
    loop {
        let offset = cur.pos;
        match cur.marker()? {
            SOF55 => {
                if frame.is_some() {
                    return Err(Error::InvalidHeader("second SOF55"));
                }
                let f = parse_sof(cur.segment()?)?;
                let samples = u64::from(f.width) * u64::from(f.height) * f.components.len() as u64;
                let bytes = samples * 2;
                if bytes > limits.max_output_bytes {
                    return Err(Error::TooLarge {
                        bytes,
                        limit: limits.max_output_bytes,
                    });
                }
                let samples = usize::try_from(samples).map_err(|_| Error::TooLarge {
                    bytes,
                    limit: limits.max_output_bytes,
                })?;
                out = Some(Output {
                    width: f.width as usize,
                    nf: f.components.len(),
                    samples: vec![0; samples],
                });
                frame = Some(f);
            }
            LSE => presets = parse_lse(cur.segment()?)?,
            DRI => {
                let body = cur.segment()?;
                restart_interval = match *body {
                    [a, b] => u32::from(u16::from_be_bytes([a, b])),
                    [a, b, c] => u32::from_be_bytes([0, a, b, c]),
                    [a, b, c, d] => u32::from_be_bytes([a, b, c, d]),
                    _ => return Err(Error::InvalidHeader("DRI length")),
                };
            }
            APP8 => {
                let body = cur.segment()?;
                // CharLS's HP colour transform marker ("mrfx" + transform id): the samples
                // would need an inverse transform DICOM does not allow (PS3.5 §8.2.3).
                if let [b'm', b'r', b'f', b'x', t, ..] = *body {
                    if t != 0 {
                        return Err(Error::Unsupported("HP colour transform"));
                    }
                }
            }
            0xE0..=0xEF | COM => {
                cur.segment()?;
            }
            SOS => {
                let (Some(f), Some(o)) = (frame.as_ref(), out.as_mut()) else {
                    return Err(Error::InvalidHeader("SOS before SOF55"));
                };
                let body = cur.segment()?;
                let end = decode_scan(
                    f,
                    body,
                    data,
                    cur.pos,
                    &presets,
                    restart_interval,
                    o,
                    &mut decoded,
                )?;
                cur.pos = end;
            }
            EOI => {
                let (Some(f), Some(o)) = (frame, out) else {
                    return Err(Error::InvalidHeader("EOI before any frame"));
                };
                for (id, done) in f.components.iter().zip(decoded) {
                    if !done {
                        return Err(Error::MissingComponent(*id));
                    }
                }
                return Ok(Image {
                    header: f,
                    samples: o.samples,
                });
            }
            marker => return Err(Error::UnexpectedMarker { marker, offset }),
        }
    }
}

/// Decodes one scan whose coded data starts at `data[start]`; returns where the marker after
/// it starts.
#[allow(clippy::too_many_arguments)]
fn decode_scan(
    frame: &FrameHeader,
    header: &[u8],
    data: &[u8],
    start: usize,
    presets: &Presets,
    restart_interval: u32,
    out: &mut Output,
    decoded: &mut [bool; MAX_COMPONENTS],
) -> Result<usize, Error> {
    let mut c = Cursor {
        data: header,
        pos: 0,
    };
    let ns = usize::from(c.u8()?);
    if ns == 0 || ns > frame.components.len() || header.len() != 4 + 2 * ns {
        return Err(Error::InvalidHeader("SOS component count or length"));
    }
    // Positions of the scan's components in the frame.
    let mut comps = Vec::with_capacity(ns);
    for _ in 0..ns {
        let id = c.u8()?;
        let tm = c.u8()?;
        if tm != 0 {
            return Err(Error::Unsupported("mapping tables (Tm != 0)"));
        }
        let pos = frame
            .components
            .iter()
            .position(|x| *x == id)
            .ok_or(Error::InvalidHeader("SOS component not in the frame"))?;
        let done = decoded.get_mut(pos).ok_or(Error::Internal)?;
        if *done {
            return Err(Error::InvalidHeader("component in two scans"));
        }
        *done = true;
        comps.push(pos);
    }
    let near = c.u8()?;
    let ilv = c.u8()?;
    let pt = c.u8()?;
    if pt != 0 {
        return Err(Error::Unsupported("point transform"));
    }
    if ilv > 2 {
        return Err(Error::InvalidHeader("SOS interleave mode"));
    }
    if ns > 1 && ilv == 0 {
        return Err(Error::InvalidHeader(
            "several components without interleaving",
        ));
    }
    let params = scan_params(frame, presets, near)?;
    let mut coder = Coder::new(&params);
    let width = frame.width as usize;
    let height = frame.height as usize;
    let interval = if restart_interval == 0 {
        height
    } else {
        (restart_interval as usize).min(height)
    };
    // Interleave mode 2 keeps all components of a pixel together; otherwise each component
    // has its own lines.
    let sample_mode = ns > 1 && ilv == 2;
    let (lines, stride) = if sample_mode { (1, ns) } else { (ns, 1) };
    let mut prev: Vec<Vec<i32>> = vec![vec![0; (width + 2) * stride]; lines];
    let mut curr: Vec<Vec<i32>> = vec![vec![0; (width + 2) * stride]; lines];
    let mut run_index = vec![0usize; lines];
    let mut pos = start;
    let mut row = 0usize;
    let mut rst = 0u8;
    loop {
        let seg_end = segment_end(data, pos);
        let mut br = BitReader::new(data.get(pos..seg_end).ok_or(Error::Internal)?);
        let stop = (row + interval).min(height);
        while row < stop {
            for l in 0..lines {
                let (p, q) = (
                    prev.get_mut(l).ok_or(Error::Internal)?,
                    curr.get_mut(l).ok_or(Error::Internal)?,
                );
                let ri = run_index.get_mut(l).ok_or(Error::Internal)?;
                if sample_mode {
                    coder.line_interleaved(&mut br, ns, p, q, ri)?;
                    for (k, comp) in comps.iter().enumerate() {
                        out.put(row, *comp, q, ns, k)?;
                    }
                } else {
                    coder.line(&mut br, p, q, ri)?;
                    out.put(row, *comps.get(l).ok_or(Error::Internal)?, q, 1, 0)?;
                }
                std::mem::swap(p, q);
            }
            row += 1;
        }
        if row == height {
            return Ok(seg_end);
        }
        // A restart marker: the decoder starts afresh, as at the start of the scan (T.87
        // §C.2.5, §D.2).
        // Fill bytes (0xFF) may precede the marker (T.81 §B.1.1.2).
        let mut at = seg_end;
        while data.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        match data.get(at..at + 2) {
            Some([0xFF, m]) if *m == 0xD0 + rst => {}
            Some([_, m]) => {
                return Err(Error::RestartMarker {
                    expected: rst,
                    found: *m,
                })
            }
            _ => return Err(Error::TruncatedScan),
        }
        rst = (rst + 1) % 8;
        pos = at + 2;
        coder.restart();
        for l in prev.iter_mut().chain(curr.iter_mut()) {
            l.fill(0);
        }
        run_index.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1×1 8-bit image of value 0x33 as dcmcjpls writes it (SOF55 at 2, SOS at 15, coded
    /// data 00 00 01 64, a fill byte, EOI).
    const ONE: [u8; 32] = [
        0xFF, 0xD8, 0xFF, 0xF7, 0x00, 0x0B, 0x08, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01, 0x11, 0x00,
        0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x64, 0xFF,
        0xFF, 0xD9,
    ];

    fn one() -> Vec<u8> {
        ONE.to_vec()
    }

    #[test]
    fn one_pixel_decodes() {
        let img = decode(&one(), &Limits::default()).expect("decode");
        assert_eq!(img.header.width, 1);
        assert_eq!(img.header.precision, 8);
        assert_eq!(img.samples, [0x33]);
        assert_eq!(read_header(&one()).expect("header"), img.header);
    }

    #[test]
    fn declared_size_is_checked_before_allocation() {
        let mut s = one();
        s[7..11].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]); // 65535 × 65535
        assert_eq!(
            decode(&s, &Limits::default()),
            Err(Error::TooLarge {
                bytes: 65535 * 65535 * 2,
                limit: 512 * 1024 * 1024
            })
        );
    }

    #[test]
    fn features_outside_dicom_are_refused() {
        let mut s = one();
        s[7..9].copy_from_slice(&[0, 0]); // height 0: DNL
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::Unsupported(_))
        ));
        let mut s = one();
        s[21] = 1; // Tm: a mapping table
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::Unsupported(_))
        ));
        let mut s = one();
        s[13] = 0x21; // horizontal sampling factor 2
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::Unsupported(_))
        ));
        let mut s = one();
        s[24] = 1; // point transform
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::Unsupported(_))
        ));
        // An LSE mapping table segment before the scan.
        let mut s = one()[..15].to_vec();
        s.extend_from_slice(&[0xFF, 0xF8, 0x00, 0x05, 0x02, 0x01, 0x01]);
        s.extend_from_slice(&one()[15..]);
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn invalid_parameters_are_errors() {
        let mut s = one();
        s[22] = 200; // NEAR > MAXVAL / 2
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::InvalidHeader(_))
        ));
        let mut s = one();
        s[6] = 1; // precision 1
        assert!(matches!(
            decode(&s, &Limits::default()),
            Err(Error::InvalidHeader(_))
        ));
        // LSE thresholds out of order: T1 = 10 > T2 = 5.
        let mut s = one()[..15].to_vec();
        s.extend_from_slice(&[
            0xFF, 0xF8, 0x00, 0x0D, 0x01, 0, 255, 0, 10, 0, 5, 0, 21, 0, 64,
        ]);
        s.extend_from_slice(&one()[15..]);
        assert_eq!(
            decode(&s, &Limits::default()),
            Err(Error::InvalidHeader("LSE thresholds"))
        );
        // A scan before the frame header.
        let s: Vec<u8> = [&one()[..2], &one()[15..]].concat();
        assert!(decode(&s, &Limits::default()).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let s = one();
        for cut in 0..s.len() {
            assert!(decode(&s[..cut], &Limits::default()).is_err(), "cut {cut}");
        }
    }
}
