//! The data-set firewall's checks: a token consumer that decides, while a data set streams past,
//! whether it is valid enough to reach the parser behind the gateway.
//!
//! Devices and archives run DICOM parsers that cannot be patched (DCMTK and Orthanc have had CVEs
//! triggered by malformed data sets: out-of-bounds reads, integer overflows, type confusion); a
//! gateway in front of them is a virtual patch only if it refuses what they could choke on or
//! misread. Every check reads the one grammar's tokens ([`crate::tokens`]), so what the firewall
//! accepts is exactly what the audit trail, the fingerprint and de-identification read.
//!
//! Three levels: [`Level::Strict`] refuses any deviation from PS3.5; [`Level::Safe`] refuses what
//! is ambiguous or dangerous and tolerates the deviations real modalities commonly produce (each
//! listed in [`Check::tolerated_by_safe`]); [`Level::Log`] refuses nothing and reports everything.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::inflate::DataSetReader;
use crate::limits::Limits;
use crate::tokens::{AnomalyKind, ElementKind, ErrorKind, Length, TagStr, Token};
use crate::ts::TransferSyntax;
use crate::types::Uid;

/// How much the firewall refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Any deviation from PS3.5 is refused.
    Strict,
    /// Ambiguous or dangerous deviations are refused; common benign ones are tolerated.
    Safe,
    /// Nothing is refused; every deviation is reported.
    Log,
}

/// What a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// The bytes are not a data set (unknown VR, an item or delimiter where an element belongs,
    /// an undefined length where none is allowed, a corrupt deflate stream).
    Structure,
    /// Elements not in ascending tag order (PS3.5 §7.1).
    Order,
    /// The same element twice in one data set (PS3.5 §7.1).
    Duplicate,
    /// A length that overruns its container or the data set, or exceeds the limits.
    Length,
    /// Sequences nested past the limit.
    Depth,
    /// More elements than the limit (2^21 in a stored instance, 2^16 in an identifier).
    ElementCount,
    /// The data set ends inside an element, item or sequence.
    Truncated,
    /// An odd value length (PS3.5 §7.1.1: values have even length).
    OddLength,
    /// Non-zero reserved bytes in an explicit VR header (PS3.5 §7.1.2).
    ReservedBytes,
    /// A delimitation item with a non-zero length (PS3.5 §7.5). Refused by `safe`: a reader
    /// that honours the length skips bytes that another reads as elements.
    DelimiterLength,
    /// A VR other than the dictionary's for a standard element that changes how the value is
    /// parsed (SQ against non-SQ, numbers against text or bytes): type confusion.
    VrConfusion,
    /// A VR other than the dictionary's of the same kind (text for text, bytes for bytes).
    VrVariant,
    /// A value length impossible for its VR (a US value of 3 bytes, a UI longer than 64).
    ValueLength,
    /// A UID that is not a valid UID (PS3.5 §9.1): characters other than digits and dots, an
    /// empty component, longer than 64.
    Uid,
    /// A UID component with a leading zero (PS3.5 §9.1 forbids it; older devices write them).
    UidLeadingZero,
    /// An image attribute the pixel length check needs that is not a number (Number of Frames
    /// "1A"): a parser computing the frame count from it reads the pixel data differently.
    ImageAttribute,
    /// Native Pixel Data shorter than Rows × Columns × Samples × Bits Allocated × Frames says.
    PixelLength,
    /// Native Pixel Data longer than the image attributes say (beyond one byte of padding).
    PixelExcess,
}

impl Check {
    /// The deviations [`Level::Safe`] lets through, because real modalities produce them and
    /// they do not change what a parser reads:
    /// - odd value lengths (some encoders forget the padding byte; every parser reads the
    ///   declared length);
    /// - a VR that differs from the dictionary's when both are text or both binary of the same
    ///   unit (private re-encodings, retired VRs: e.g. OB/OW, SH/LO);
    /// - Pixel Data longer than the image attributes need (padding, vendor trailers);
    /// - UID components with a leading zero (older devices' UID roots; a UID is compared as a
    ///   string, so every parser reads the same UID).
    pub fn tolerated_by_safe(self) -> bool {
        matches!(
            self,
            Check::OddLength | Check::VrVariant | Check::PixelExcess | Check::UidLeadingZero
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Check::Structure => "structure",
            Check::Order => "order",
            Check::Duplicate => "duplicate",
            Check::Length => "length",
            Check::Depth => "depth",
            Check::ElementCount => "element-count",
            Check::Truncated => "truncated",
            Check::OddLength => "odd-length",
            Check::DelimiterLength => "delimiter-length",
            Check::ReservedBytes => "reserved-bytes",
            Check::VrConfusion => "vr-confusion",
            Check::VrVariant => "vr-variant",
            Check::ValueLength => "value-length",
            Check::Uid => "uid",
            Check::UidLeadingZero => "uid-leading-zero",
            Check::ImageAttribute => "image-attribute",
            Check::PixelLength => "pixel-length",
            Check::PixelExcess => "pixel-excess",
        }
    }
}

/// One deviation found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub check: Check,
    /// Offset in the data set (inflated, for a deflated transfer syntax).
    pub offset: u64,
    /// What was wrong, without values (no patient data in alerts).
    pub detail: String,
}

impl Violation {
    /// The check and the offset alone (for a 64-character DICOM Error Comment).
    pub fn summary(&self) -> String {
        format!("{} at byte {}", self.check.name(), self.offset)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} check failed at byte {}: {}",
            self.check.name(),
            self.offset,
            self.detail
        )
    }
}

impl Level {
    /// Whether this level refuses a data set with this deviation.
    pub fn refuses(self, check: Check) -> bool {
        match self {
            Level::Strict => true,
            Level::Safe => !check.tolerated_by_safe(),
            Level::Log => false,
        }
    }
}

/// Most deviations kept for the report (the first refusal is always kept).
const MAX_REPORTED: usize = 32;
/// Longest value collected for a check (UIDs and the image attributes are far shorter).
const MAX_COLLECT: usize = 1024;

/// The top-level image attributes the pixel length check needs.
#[derive(Debug, Default, Clone, Copy)]
struct Image {
    rows: Option<u64>,
    columns: Option<u64>,
    samples: Option<u64>,
    bits: Option<u64>,
    frames: Option<u64>,
    /// Photometric Interpretation YBR_FULL_422 or YBR_PARTIAL_422: two chroma samples shared
    /// by each pair of pixels (PS3.3 C.7.6.3.1.2), two samples' worth of bytes per pixel.
    subsampled: bool,
}

impl Image {
    /// Bytes of native pixel data the attributes call for, when all are known.
    fn expected(&self, bits: Option<u64>) -> Option<u64> {
        let samples = match (self.samples.unwrap_or(1), self.subsampled) {
            (3, true) => 2,
            (n, _) => n,
        };
        let pixels = self
            .rows?
            .checked_mul(self.columns?)?
            .checked_mul(samples)?
            .checked_mul(self.frames.unwrap_or(1).max(1))?;
        let bits = pixels.checked_mul(bits?)?;
        Some(bits.div_ceil(8))
    }
}

/// The streaming firewall for one data set.
#[derive(Debug)]
pub struct Validator {
    reader: DataSetReader,
    checks: Checks,
}

/// The checks' state, apart from the reader (tokens borrow the reader's input).
#[derive(Debug)]
struct Checks {
    level: Level,
    refusal: Option<Violation>,
    found: Vec<Violation>,
    /// The element whose value is collected for a check: (tag, VR, depth, value offset).
    collecting: Option<(Tag, VR, usize, u64)>,
    /// A defined-length UN element whose tag the dictionary knows as a sequence, read as the
    /// sequence it holds (PS3.5 §6.2.2: Implicit VR Little Endian), as de-identification and
    /// pydicom read it: the firewall, the offset its bytes start at (less the synthetic header).
    un_sequence: Option<(Box<Validator>, u64)>,
    limits: Limits,
    value: Vec<u8>,
    image: Image,
    /// Byte order of the current element's data set (for the image attributes).
    big_endian: bool,
}

impl Validator {
    pub fn new(ts: &TransferSyntax, limits: Limits, level: Level) -> Validator {
        Validator {
            reader: DataSetReader::new(ts, limits),
            checks: Checks {
                level,
                un_sequence: None,
                limits,
                refusal: None,
                found: Vec::new(),
                collecting: None,
                value: Vec::new(),
                image: Image::default(),
                big_endian: false,
            },
        }
    }

    /// Feeds the next chunk. Returns the first deviation this level refuses, once there is one
    /// (the data set must then not be completed at the destination).
    pub fn feed(&mut self, chunk: &[u8]) -> Option<&Violation> {
        if self.checks.refusal.is_none() {
            let checks = &mut self.checks;
            self.reader.feed(chunk, |t| {
                if checks.refusal.is_none() {
                    checks.token(t)
                }
            });
        }
        self.checks.refusal.as_ref()
    }

    /// The end of the data set: the first refused deviation, if any, and all found.
    pub fn finish(mut self) -> Outcome {
        if self.checks.refusal.is_none() {
            if let Err(e) = self.reader.finish() {
                self.checks.error(e.offset, e.kind);
            }
        }
        Outcome {
            refusal: self.checks.refusal,
            found: self.checks.found,
        }
    }

    /// The first refused deviation so far.
    pub fn refusal(&self) -> Option<&Violation> {
        self.checks.refusal.as_ref()
    }
}

impl Checks {
    fn report(&mut self, check: Check, offset: u64, detail: String) {
        let v = Violation {
            check,
            offset,
            detail,
        };
        if self.level.refuses(check) && self.refusal.is_none() {
            self.refusal = Some(v.clone());
        }
        if self.found.len() < MAX_REPORTED {
            self.found.push(v);
        }
    }

    fn error(&mut self, offset: u64, kind: ErrorKind) {
        let check = match kind {
            ErrorKind::Overrun { .. }
            | ErrorKind::PastEnd { .. }
            | ErrorKind::ValueTooLong { .. }
            | ErrorKind::TooLarge { .. } => Check::Length,
            ErrorKind::TooDeep { .. } => Check::Depth,
            ErrorKind::TooManyElements { .. } => Check::ElementCount,
            ErrorKind::Truncated(_) => Check::Truncated,
            _ => Check::Structure,
        };
        self.report(check, offset, kind.to_string());
    }

    fn token(&mut self, t: Token<'_>) {
        match t {
            Token::Element(h) => {
                self.big_endian = h.encoding.big_endian();
                self.element_checks(&h);
                if let Some(sub) = self.un_as_sequence(&h) {
                    self.un_sequence = Some(sub);
                } else if h.kind == ElementKind::Value && wants_value(&h) {
                    self.collecting =
                        Some((h.tag, h.vr, h.depth, h.offset + u64::from(h.header_len)));
                    self.value.clear();
                }
            }
            Token::Value(v) if self.un_sequence.is_some() => {
                if let Some((sub, _)) = self.un_sequence.as_mut() {
                    sub.feed(v);
                }
            }
            Token::Value(v) if self.collecting.is_some() => {
                let room = MAX_COLLECT.saturating_sub(self.value.len());
                self.value
                    .extend_from_slice(v.get(..v.len().min(room)).unwrap_or_default());
            }
            Token::ValueEnd if self.un_sequence.is_some() => {
                if let Some((sub, base)) = self.un_sequence.take() {
                    let outcome = sub.finish();
                    let found = outcome.refusal.iter().chain(
                        outcome
                            .found
                            .iter()
                            .filter(|f| Some(*f) != outcome.refusal.as_ref()),
                    );
                    for f in found {
                        self.report(
                            f.check,
                            base + f.offset,
                            format!(
                                "in a UN value read as a sequence (PS3.5 §6.2.2): {}",
                                f.detail
                            ),
                        );
                    }
                }
            }
            Token::ValueEnd => {
                if let Some((tag, vr, depth, at)) = self.collecting.take() {
                    let value = std::mem::take(&mut self.value);
                    self.value_checks(tag, vr, depth, at, &value);
                    self.value = value;
                }
            }
            Token::Anomaly(a) => {
                let check = match a.kind {
                    AnomalyKind::OutOfOrder { .. } => Check::Order,
                    AnomalyKind::Duplicate { .. } => Check::Duplicate,
                    AnomalyKind::OddLength { .. } => Check::OddLength,
                    AnomalyKind::DelimiterLength { .. } => Check::DelimiterLength,
                    AnomalyKind::ReservedBytes { .. } => Check::ReservedBytes,
                };
                self.report(check, a.offset, a.kind.to_string());
            }
            Token::Error(e) => self.error(e.offset, e.kind),
            _ => {}
        }
    }

    /// The firewall for the content of a defined-length UN element that the dictionary knows
    /// as a sequence: fed a synthetic Implicit VR Little Endian header for the same tag and
    /// length first, so the value is read as that sequence.
    fn un_as_sequence(&self, h: &crate::tokens::Header) -> Option<(Box<Validator>, u64)> {
        let Length::Defined(len) = h.length else {
            return None;
        };
        if h.vr != VR::UN
            || h.kind != ElementKind::Value
            || crate::tokens::implicit_vr(h.tag) != VR::SQ
        {
            return None;
        }
        let limits = Limits {
            max_depth: self.limits.max_depth.saturating_sub(h.depth + 1),
            ..self.limits
        };
        let ts = TransferSyntax::implicit_vr_le();
        let mut sub = Validator::new(&ts, limits, self.level);
        let mut header = Vec::with_capacity(8);
        header.extend_from_slice(&h.tag.group().to_le_bytes());
        header.extend_from_slice(&h.tag.element().to_le_bytes());
        header.extend_from_slice(&len.to_le_bytes());
        sub.feed(&header);
        let value_at = h.offset + u64::from(h.header_len);
        Some((Box::new(sub), value_at.saturating_sub(8)))
    }

    fn element_checks(&mut self, h: &crate::tokens::Header) {
        // Pixel data at the top level: its length against the image attributes (a viewer that
        // trusts Rows x Columns reads past a shorter buffer).
        let bits = match h.tag {
            crate::tokens::PIXEL_DATA => self.image.bits,
            // PS3.3 C.7.6.24: 32-bit and 64-bit IEEE floats.
            crate::tokens::FLOAT_PIXEL_DATA => Some(32),
            crate::tokens::DOUBLE_FLOAT_PIXEL_DATA => Some(64),
            _ => None,
        };
        if h.depth == 0 && h.kind == ElementKind::Value && bits.is_some() {
            if let (Some(expected), Length::Defined(len)) = (self.image.expected(bits), h.length) {
                let len = u64::from(len);
                let detail = || {
                    format!(
                        "Pixel Data holds {len} bytes, the image attributes call for {expected}"
                    )
                };
                if len < expected {
                    self.report(Check::PixelLength, h.offset, detail());
                } else if len > expected + 1 {
                    self.report(Check::PixelExcess, h.offset, detail());
                }
            }
        }
        if let Length::Defined(len) = h.length {
            if let Some(unit) = unit(h.vr) {
                if len % unit != 0 {
                    self.report(
                        Check::ValueLength,
                        h.offset,
                        format!(
                            "{} ({}) has length {len}, not a multiple of {unit}",
                            TagStr(h.tag),
                            h.vr.to_string()
                        ),
                    );
                }
            }
        }
        if !h.encoding.explicit() || h.tag.group() % 2 == 1 || h.tag.element() == 0 {
            return;
        }
        let Some(VirtualVr::Exact(dict)) = StandardDataDictionary.by_tag(h.tag).map(|e| e.vr())
        else {
            return;
        };
        if h.vr == dict || h.vr == VR::UN {
            return;
        }
        // SQ against non-SQ changes the structure a parser reads; numbers against text or bytes
        // change how the value is interpreted (type confusion).
        let check = if class(h.vr) != class(dict) {
            Check::VrConfusion
        } else {
            Check::VrVariant
        };
        self.report(
            check,
            h.offset,
            format!(
                "{} has VR {}, the dictionary says {}",
                TagStr(h.tag),
                h.vr.to_string(),
                dict.to_string()
            ),
        );
    }

    fn value_checks(&mut self, tag: Tag, vr: VR, depth: usize, at: u64, value: &[u8]) {
        if vr == VR::UI {
            let text = String::from_utf8_lossy(value);
            let text = text.trim_end_matches(['\0', ' ']);
            for (i, uid) in text.split('\\').enumerate() {
                if uid.is_empty() {
                    continue;
                }
                if let Err(e) = Uid::new(uid) {
                    let check = if leading_zeros_only(uid) {
                        Check::UidLeadingZero
                    } else {
                        Check::Uid
                    };
                    self.report(
                        check,
                        at,
                        format!("{} value {} is not a valid UID: {e}", TagStr(tag), i + 1),
                    );
                    return;
                }
            }
        }
        if depth == 0 && tag.group() == 0x0028 {
            let n = value
                .first_chunk::<2>()
                .map(|b| {
                    if self.big_endian {
                        u16::from_be_bytes(*b)
                    } else {
                        u16::from_le_bytes(*b)
                    }
                })
                .map(u64::from);
            match tag.element() {
                0x0002 => self.image.samples = n,
                0x0010 => self.image.rows = n,
                0x0011 => self.image.columns = n,
                0x0100 => self.image.bits = n,
                0x0004 => {
                    let text = String::from_utf8_lossy(value);
                    let pi = text.trim_matches(['\0', ' ']);
                    self.image.subsampled = matches!(pi, "YBR_FULL_422" | "YBR_PARTIAL_422");
                }
                0x0008 => {
                    let text = String::from_utf8_lossy(value);
                    let text = text.trim_matches(['\0', ' ']);
                    self.image.frames = text.strip_prefix('+').unwrap_or(text).parse().ok();
                    if self.image.frames.is_none() && !text.is_empty() {
                        self.report(
                            Check::ImageAttribute,
                            at,
                            format!("{} (Number of Frames) is not a number", TagStr(tag)),
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a UID is invalid only for leading zeros in its components.
fn leading_zeros_only(uid: &str) -> bool {
    let stripped: Vec<&str> = uid
        .split('.')
        .map(|c| match c.trim_start_matches('0') {
            "" if !c.is_empty() => "0",
            rest => rest,
        })
        .collect();
    Uid::new(&stripped.join(".")).is_ok()
}

/// What the checks need to see of a value.
fn wants_value(h: &crate::tokens::Header) -> bool {
    h.vr == VR::UI
        || (h.depth == 0
            && h.tag.group() == 0x0028
            && matches!(
                h.tag.element(),
                0x0002 | 0x0004 | 0x0008 | 0x0010 | 0x0011 | 0x0100
            ))
}

/// The unit size of fixed-size binary VRs.
fn unit(vr: VR) -> Option<u32> {
    match vr {
        VR::US | VR::SS | VR::OW => Some(2),
        VR::UL | VR::SL | VR::FL | VR::AT | VR::OF | VR::OL => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// Text, binary numbers, or bytes: how a parser interprets a value.
fn class(vr: VR) -> u8 {
    match vr {
        VR::SQ => 0,
        VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::AT | VR::SV | VR::UV => 1,
        VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN => 2,
        _ => 3,
    }
}

/// The outcome at the end of a data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The first deviation the level refuses.
    pub refusal: Option<Violation>,
    /// Every deviation found (bounded), refused or tolerated.
    pub found: Vec<Violation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ts::Encoding;

    fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], v: &[u8]) {
        out.extend_from_slice(&g.to_le_bytes());
        out.extend_from_slice(&e.to_le_bytes());
        out.extend_from_slice(vr);
        let long = VR::from_binary(*vr).is_some_and(crate::tokens::long_form);
        if long {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(v);
    }

    /// A small valid CT-like data set: 2 x 2 pixels of 16 bits.
    fn valid() -> Vec<u8> {
        let mut d = Vec::new();
        el(
            &mut d,
            0x0008,
            0x0016,
            b"UI",
            b"1.2.840.10008.5.1.4.1.1.2\0",
        );
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        el(&mut d, 0x0010, 0x0020, b"LO", b"P-FIRST ");
        el(&mut d, 0x0020, 0x000D, b"UI", b"1.2.3.5\0");
        el(&mut d, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
        el(&mut d, 0x0028, 0x0010, b"US", &2u16.to_le_bytes());
        el(&mut d, 0x0028, 0x0011, b"US", &2u16.to_le_bytes());
        el(&mut d, 0x0028, 0x0100, b"US", &16u16.to_le_bytes());
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 8]);
        d
    }

    fn run(d: &[u8], level: Level, chunk: usize) -> Outcome {
        let ts = TransferSyntax::explicit_vr_le();
        let mut v = Validator::new(&ts, Limits::GATEWAY, level);
        for c in d.chunks(chunk.max(1)) {
            v.feed(c);
        }
        v.finish()
    }

    fn refused(d: &[u8], level: Level) -> Option<Check> {
        let whole = run(d, level, d.len());
        for chunk in [1, 3, 7] {
            assert_eq!(run(d, level, chunk).refusal, whole.refusal, "chunk {chunk}");
        }
        whole.refusal.map(|v| v.check)
    }

    #[test]
    fn a_valid_data_set_passes_every_level() {
        let d = valid();
        for level in [Level::Strict, Level::Safe, Level::Log] {
            let o = run(&d, level, 5);
            assert_eq!(o.refusal, None, "{level:?}: {:?}", o.found);
            assert!(o.found.is_empty(), "{:?}", o.found);
        }
        let ts = TransferSyntax::from_uid(crate::ts::IMPLICIT_VR_LE).unwrap();
        assert_eq!(ts.encoding, Encoding::ImplicitLittle);
    }

    /// The three data sets of the firewall's motivation: a repeated Patient ID, an item never
    /// closed (a sequence delimiter where the item delimiter belongs), a Patient ID after group
    /// 0020.
    #[test]
    fn the_three_motivating_cases_are_refused() {
        let mut twice = valid();
        let at = twice.windows(8).position(|w| w == b"P-FIRST ").unwrap() + 8;
        let mut second = Vec::new();
        el(&mut second, 0x0010, 0x0020, b"LO", b"P-SECOND");
        twice.splice(at..at, second);
        assert_eq!(refused(&twice, Level::Safe), Some(Check::Duplicate));

        let mut unclosed = Vec::new();
        el(&mut unclosed, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        unclosed.extend_from_slice(&[0x09, 0x00, 0x10, 0x10, b'S', b'Q', 0, 0]);
        unclosed.extend_from_slice(&[0xFF; 4]);
        unclosed.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        el(&mut unclosed, 0x0009, 0x1011, b"LO", b"XY");
        unclosed.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        el(&mut unclosed, 0x0010, 0x0020, b"LO", b"PID1");
        assert_eq!(refused(&unclosed, Level::Safe), Some(Check::Structure));

        let mut late = Vec::new();
        el(&mut late, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        el(&mut late, 0x0020, 0x000D, b"UI", b"1.2.3.5\0");
        el(&mut late, 0x0010, 0x0020, b"LO", b"PID1");
        assert_eq!(refused(&late, Level::Safe), Some(Check::Order));
        // `log` lets all three through, and says why.
        for d in [&twice, &unclosed, &late] {
            let o = run(d, Level::Log, 4);
            assert_eq!(o.refusal, None);
            assert!(!o.found.is_empty());
        }
    }

    #[test]
    fn one_case_per_check() {
        // Bad UID; a leading zero alone is tolerated by safe (older devices' roots).
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.2a.34\0");
        assert_eq!(refused(&d, Level::Safe), Some(Check::Uid));
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x0018, b"UI", b"1..34\0");
        assert_eq!(refused(&d, Level::Safe), Some(Check::Uid));
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.02.34\0");
        assert_eq!(refused(&d, Level::Safe), None);
        assert_eq!(refused(&d, Level::Strict), Some(Check::UidLeadingZero));
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x0018, b"UI", b"1.02..3\0");
        assert_eq!(refused(&d, Level::Safe), Some(Check::Uid));
        // Number of Frames that is not a number.
        let mut d = valid();
        let at = d.windows(4).position(|w| w == [0x28, 0, 0x10, 0]).unwrap();
        let mut frames = Vec::new();
        el(&mut frames, 0x0028, 0x0008, b"IS", b"1A");
        d.splice(at..at, frames);
        assert_eq!(refused(&d, Level::Safe), Some(Check::ImageAttribute));
        // YBR_FULL_422: two samples' worth of bytes per pixel, not three.
        let mut d = valid();
        let at = d.windows(4).position(|w| w == [0x28, 0, 0x02, 0]).unwrap();
        d.splice(at + 8..at + 10, 3u16.to_le_bytes());
        let at = d.windows(4).position(|w| w == [0x28, 0, 0x10, 0]).unwrap();
        let mut pi = Vec::new();
        el(&mut pi, 0x0028, 0x0004, b"CS", b"YBR_FULL_422");
        d.splice(at..at, pi.clone());
        let n = d.len();
        d.truncate(n - 20);
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 16]);
        assert_eq!(refused(&d, Level::Strict), None);
        let n = d.len();
        d.truncate(n - 28);
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 12]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::PixelLength));
        // Pixel Data shorter than the image needs.
        let mut d = valid();
        let n = d.len();
        d.truncate(n - 20);
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 6]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::PixelLength));
        // Pixel Data longer: tolerated by safe, refused by strict.
        let mut d = valid();
        let n = d.len();
        d.truncate(n - 20);
        el(&mut d, 0x7FE0, 0x0010, b"OW", &[0; 64]);
        assert_eq!(refused(&d, Level::Safe), None);
        assert_eq!(refused(&d, Level::Strict), Some(Check::PixelExcess));
        // A US of 3 bytes.
        let mut d = Vec::new();
        el(&mut d, 0x0028, 0x0010, b"US", &[1, 0, 0]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::ValueLength));
        // Type confusion: Rows as text.
        let mut d = Vec::new();
        el(&mut d, 0x0028, 0x0010, b"LO", b"12");
        assert_eq!(refused(&d, Level::Safe), Some(Check::VrConfusion));
        // A text VR variant: tolerated by safe, refused by strict.
        let mut d = Vec::new();
        el(&mut d, 0x0010, 0x0020, b"SH", b"PID1");
        assert_eq!(refused(&d, Level::Safe), None);
        assert_eq!(refused(&d, Level::Strict), Some(Check::VrVariant));
        // Odd length: tolerated by safe.
        let mut d = Vec::new();
        el(&mut d, 0x0010, 0x0020, b"LO", b"P1X");
        assert_eq!(refused(&d, Level::Safe), None);
        assert_eq!(refused(&d, Level::Strict), Some(Check::OddLength));
        // A non-zero item delimiter length: refused by safe.
        let mut d = Vec::new();
        d.extend_from_slice(&[
            0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        d.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 4, 0, 0, 0]);
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::DelimiterLength));
        // Non-zero reserved bytes in a long-form header.
        let mut d = Vec::new();
        d.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 8, 2, 0, 0, 0, 0, 0]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::ReservedBytes));
        // Truncated.
        let d = valid();
        assert_eq!(
            refused(&d[..d.len() - 3], Level::Safe),
            Some(Check::Truncated)
        );
        // A length past its item.
        let mut d = Vec::new();
        d.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0]);
        d.extend_from_slice(&14u32.to_le_bytes());
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        d.extend_from_slice(&6u32.to_le_bytes());
        el(&mut d, 0x0008, 0x1150, b"UI", b"1.2\0");
        assert_eq!(refused(&d, Level::Safe), Some(Check::Length));
        // A UN value of a standard sequence's tag is read as that sequence (PS3.5 §6.2.2):
        // garbage in it is refused, a well-formed implicit VR sequence passes.
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x1140, b"UN", &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::Structure));
        let mut item = Vec::new();
        item.extend_from_slice(&[0x08, 0x00, 0x50, 0x11, 4, 0, 0, 0]);
        item.extend_from_slice(b"1.2\0");
        let mut content = vec![0xFE, 0xFF, 0x00, 0xE0];
        content.extend_from_slice(&(item.len() as u32).to_le_bytes());
        content.extend_from_slice(&item);
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x1140, b"UN", &content);
        assert_eq!(refused(&d, Level::Strict), None);
        let at = 12 + 8 + 8; // the UN header, the item header, the element header
        let mut bad = content.clone();
        bad[8 + 8..8 + 11].copy_from_slice(b"1a2");
        let mut d = Vec::new();
        el(&mut d, 0x0008, 0x1140, b"UN", &bad);
        let o = run(&d, Level::Safe, 3);
        let v = o.refusal.expect("a bad UID inside the UN sequence");
        assert_eq!((v.check, v.offset), (Check::Uid, at as u64));
        // Float Pixel Data shorter than Rows x Columns x 32 bits.
        let mut d = valid();
        let n = d.len();
        d.truncate(n - 20);
        el(&mut d, 0x7FE0, 0x0008, b"OF", &[0; 12]);
        assert_eq!(refused(&d, Level::Safe), Some(Check::PixelLength));
        let mut d = valid();
        let n = d.len();
        d.truncate(n - 20);
        el(&mut d, 0x7FE0, 0x0008, b"OF", &[0; 16]);
        assert_eq!(refused(&d, Level::Strict), None);
        // More elements than the limit allows.
        let mut d = Vec::new();
        for e in 0..20u16 {
            el(&mut d, 0x0009, 0x1000 + e, b"LO", b"XY");
        }
        let few = Limits {
            max_elements: 19,
            ..Limits::GATEWAY
        };
        let mut v = Validator::new(&TransferSyntax::explicit_vr_le(), few, Level::Safe);
        v.feed(&d);
        let o = v.finish();
        assert_eq!(
            o.refusal.map(|v| (v.check, v.offset)),
            Some((Check::ElementCount, 19 * 10))
        );
        // Nesting past the limit.
        let mut d = Vec::new();
        for _ in 0..40 {
            d.extend_from_slice(&[
                0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        assert_eq!(refused(&d, Level::Safe), Some(Check::Depth));
    }
}
