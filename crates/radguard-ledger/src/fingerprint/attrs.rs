//! The fingerprinted attributes and their canonical encoding (explicit VR little endian,
//! defined length, normalised padding). `docs/fingerprint.md` is generated from the same table
//! in spirit and checked against it by a test, so the two cannot drift apart.

use sha2::{Digest as _, Sha256};

/// A fingerprinted attribute: tag, the VR used for its canonical encoding (the dictionary VR,
/// whatever VR the source file used), and its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute {
    pub tag: u32,
    pub vr: Vr,
    pub keyword: &'static str,
}

/// The value representations the listed attributes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vr {
    CS,
    DA,
    DS,
    DT,
    IS,
    LO,
    PN,
    SH,
    TM,
    UI,
    US,
}

impl Vr {
    pub fn code(self) -> &'static [u8; 2] {
        match self {
            Vr::CS => b"CS",
            Vr::DA => b"DA",
            Vr::DS => b"DS",
            Vr::DT => b"DT",
            Vr::IS => b"IS",
            Vr::LO => b"LO",
            Vr::PN => b"PN",
            Vr::SH => b"SH",
            Vr::TM => b"TM",
            Vr::UI => b"UI",
            Vr::US => b"US",
        }
    }
}

const fn a(tag: u32, vr: Vr, keyword: &'static str) -> Attribute {
    Attribute { tag, vr, keyword }
}

/// The fingerprinted attributes, in ascending tag order. Identity (patient, study, series,
/// instance), acquisition date and time, and everything that changes how the pixels are read
/// or where they lie in the patient.
pub const ATTRIBUTES: &[Attribute] = &[
    a(0x0008_0005, Vr::CS, "SpecificCharacterSet"),
    a(0x0008_0016, Vr::UI, "SOPClassUID"),
    a(0x0008_0018, Vr::UI, "SOPInstanceUID"),
    a(0x0008_0020, Vr::DA, "StudyDate"),
    a(0x0008_0021, Vr::DA, "SeriesDate"),
    a(0x0008_0022, Vr::DA, "AcquisitionDate"),
    a(0x0008_0023, Vr::DA, "ContentDate"),
    a(0x0008_002A, Vr::DT, "AcquisitionDateTime"),
    a(0x0008_0030, Vr::TM, "StudyTime"),
    a(0x0008_0031, Vr::TM, "SeriesTime"),
    a(0x0008_0032, Vr::TM, "AcquisitionTime"),
    a(0x0008_0033, Vr::TM, "ContentTime"),
    a(0x0008_0050, Vr::SH, "AccessionNumber"),
    a(0x0008_0060, Vr::CS, "Modality"),
    a(0x0010_0010, Vr::PN, "PatientName"),
    a(0x0010_0020, Vr::LO, "PatientID"),
    a(0x0010_0021, Vr::LO, "IssuerOfPatientID"),
    a(0x0010_0030, Vr::DA, "PatientBirthDate"),
    a(0x0010_0040, Vr::CS, "PatientSex"),
    a(0x0018_0050, Vr::DS, "SliceThickness"),
    a(0x0018_0088, Vr::DS, "SpacingBetweenSlices"),
    a(0x0020_000D, Vr::UI, "StudyInstanceUID"),
    a(0x0020_000E, Vr::UI, "SeriesInstanceUID"),
    a(0x0020_0010, Vr::SH, "StudyID"),
    a(0x0020_0011, Vr::IS, "SeriesNumber"),
    a(0x0020_0012, Vr::IS, "AcquisitionNumber"),
    a(0x0020_0013, Vr::IS, "InstanceNumber"),
    a(0x0020_0020, Vr::CS, "PatientOrientation"),
    a(0x0020_0032, Vr::DS, "ImagePositionPatient"),
    a(0x0020_0037, Vr::DS, "ImageOrientationPatient"),
    a(0x0020_0052, Vr::UI, "FrameOfReferenceUID"),
    a(0x0020_0060, Vr::CS, "Laterality"),
    a(0x0020_0062, Vr::CS, "ImageLaterality"),
    a(0x0020_1041, Vr::DS, "SliceLocation"),
    a(0x0028_0002, Vr::US, "SamplesPerPixel"),
    a(0x0028_0004, Vr::CS, "PhotometricInterpretation"),
    a(0x0028_0008, Vr::IS, "NumberOfFrames"),
    a(0x0028_0010, Vr::US, "Rows"),
    a(0x0028_0011, Vr::US, "Columns"),
    a(0x0028_0030, Vr::DS, "PixelSpacing"),
    a(0x0028_0100, Vr::US, "BitsAllocated"),
    a(0x0028_0101, Vr::US, "BitsStored"),
    a(0x0028_0102, Vr::US, "HighBit"),
    a(0x0028_0103, Vr::US, "PixelRepresentation"),
    a(0x0028_1052, Vr::DS, "RescaleIntercept"),
    a(0x0028_1053, Vr::DS, "RescaleSlope"),
    a(0x0028_1054, Vr::LO, "RescaleType"),
];

pub const SAMPLES_PER_PIXEL: u32 = 0x0028_0002;
pub const PHOTOMETRIC_INTERPRETATION: u32 = 0x0028_0004;
pub const PLANAR_CONFIGURATION: u32 = 0x0028_0006;
pub const NUMBER_OF_FRAMES: u32 = 0x0028_0008;
pub const ROWS: u32 = 0x0028_0010;
pub const COLUMNS: u32 = 0x0028_0011;
pub const BITS_ALLOCATED: u32 = 0x0028_0100;
pub const BITS_STORED: u32 = 0x0028_0101;
pub const HIGH_BIT: u32 = 0x0028_0102;
pub const PIXEL_REPRESENTATION: u32 = 0x0028_0103;
pub const SOP_INSTANCE_UID: u32 = 0x0008_0018;

/// The attribute for a tag, if it is fingerprinted.
pub fn lookup(tag: u32) -> Option<&'static Attribute> {
    ATTRIBUTES
        .binary_search_by_key(&tag, |a| a.tag)
        .ok()
        .and_then(|i| ATTRIBUTES.get(i))
}

/// The keyword of a fingerprinted tag, or `(gggg,eeee)`.
pub fn name(tag: u32) -> String {
    lookup(tag)
        .map(|a| a.keyword.to_string())
        .unwrap_or_else(|| tag_string(tag))
}

/// `(gggg,eeee)` in upper-case hex.
pub fn tag_string(tag: u32) -> String {
    format!("({:04X},{:04X})", tag >> 16, tag & 0xFFFF)
}

/// Tags the parser must also read although they are not fingerprinted (they describe how the
/// native pixel data is laid out, which the canonical form removes).
pub fn is_layout_only(tag: u32) -> bool {
    tag == PLANAR_CONFIGURATION
}

/// Canonical value of a string attribute: each backslash-separated value loses its leading and
/// trailing spaces (and NULs), the values are joined again, and the result is padded to even
/// length (UI with NUL, others with a space).
fn canonical_text(vr: Vr, raw: &[u8]) -> Vec<u8> {
    let trim = |v: &[u8]| -> Vec<u8> {
        let is_pad = |b: &u8| *b == b' ' || *b == 0;
        let start = v.iter().position(|b| !is_pad(b)).unwrap_or(v.len());
        let end = v.iter().rposition(|b| !is_pad(b)).map_or(start, |e| e + 1);
        v.get(start..end).unwrap_or_default().to_vec()
    };
    let mut out: Vec<u8> = Vec::with_capacity(raw.len() + 1);
    for (i, part) in raw.split(|b| *b == b'\\').enumerate() {
        if i > 0 {
            out.push(b'\\');
        }
        out.extend_from_slice(&trim(part));
    }
    // A value made only of empty parts ("\\") keeps its separators: it says something different
    // from an empty value, and no benign tool changes one into the other.
    if out.len() % 2 == 1 {
        out.push(if vr == Vr::UI { 0 } else { b' ' });
    }
    out
}

/// Canonical value of a US attribute given in the source byte order: little endian.
fn canonical_us(raw: &[u8], big_endian: bool) -> Option<Vec<u8>> {
    if raw.len() % 2 == 1 {
        return None;
    }
    let mut out = raw.to_vec();
    if big_endian {
        for pair in out.chunks_exact_mut(2) {
            pair.swap(0, 1);
        }
    }
    Some(out)
}

/// The canonical value bytes of an attribute, or `None` if its length cannot be right for its
/// VR (a US value of odd length).
pub fn canonical_value(attr: &Attribute, raw: &[u8], big_endian: bool) -> Option<Vec<u8>> {
    match attr.vr {
        Vr::US => canonical_us(raw, big_endian),
        vr => Some(canonical_text(vr, raw)),
    }
}

/// The canonical element: tag (group, element, each u16 LE), VR, then a 2-byte LE length (all
/// listed VRs use the short form), then the value.
pub fn canonical_element(attr: &Attribute, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&((attr.tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((attr.tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(attr.vr.code());
    // Values of the listed VRs are at most 64 KiB - 2 (the parser refuses longer ones).
    out.extend_from_slice(&(value.len().min(0xFFFE) as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// The first 8 bytes of SHA-256 over a canonical element: what the ledger keeps per attribute
/// so that `verify` can name the attributes that changed.
pub fn element_digest(element: &[u8]) -> [u8; 8] {
    let full: [u8; 32] = Sha256::digest(element).into();
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

/// Reads a canonical US value (the first one).
pub fn us_value(canonical: &[u8]) -> Option<u16> {
    canonical.first_chunk::<2>().map(|&b| u16::from_le_bytes(b))
}

/// Reads the first value of a canonical text attribute as a string.
pub fn text_value(canonical: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(canonical).ok()?;
    let first = s.split('\\').next()?;
    Some(first.trim_matches(|c| c == ' ' || c == '\0').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in ATTRIBUTES.windows(2) {
            assert!(
                w[0].tag < w[1].tag,
                "{} before {}",
                w[0].keyword,
                w[1].keyword
            );
        }
        assert_eq!(lookup(0x0010_0020).map(|a| a.keyword), Some("PatientID"));
        assert!(lookup(0x0010_1010).is_none());
        assert_eq!(name(0x0010_0020), "PatientID");
        assert_eq!(name(0x0009_1001), "(0009,1001)");
    }

    #[test]
    fn text_padding_is_normalised() {
        let pid = lookup(0x0010_0020).expect("listed");
        assert_eq!(canonical_value(pid, b"ABC ", false).expect("ok"), b"ABC ");
        assert_eq!(canonical_value(pid, b" ABC", false).expect("ok"), b"ABC ");
        assert_eq!(canonical_value(pid, b"ABC\0", false).expect("ok"), b"ABC ");
        assert_eq!(canonical_value(pid, b"AB", false).expect("ok"), b"AB");
        let uid = lookup(0x0008_0018).expect("listed");
        assert_eq!(
            canonical_value(uid, b"1.2.3\0", false).expect("ok"),
            b"1.2.3\0"
        );
        assert_eq!(
            canonical_value(uid, b"1.2.3 ", false).expect("ok"),
            b"1.2.3\0"
        );
        let ds = lookup(0x0028_0030).expect("listed");
        assert_eq!(
            canonical_value(ds, b" 0.5\\0.5 ", false).expect("ok"),
            b"0.5\\0.5 "
        );
        assert_ne!(
            canonical_value(ds, b"0.5\\0.5", false),
            canonical_value(ds, b"0.50\\0.5", false)
        );
        assert_eq!(canonical_value(pid, b"", false).expect("ok"), b"");
    }

    #[test]
    fn us_values_become_little_endian() {
        let rows = lookup(ROWS).expect("listed");
        assert_eq!(
            canonical_value(rows, &[0x02, 0x00], true).expect("ok"),
            [0x00, 0x02]
        );
        assert_eq!(
            canonical_value(rows, &[0x02, 0x00], false).expect("ok"),
            [0x02, 0x00]
        );
        assert!(canonical_value(rows, &[0x02], false).is_none());
        assert_eq!(us_value(&[0x00, 0x02]), Some(512));
    }

    #[test]
    fn element_layout() {
        let rows = lookup(ROWS).expect("listed");
        assert_eq!(
            canonical_element(rows, &[0x00, 0x02]),
            [0x28, 0x00, 0x10, 0x00, b'U', b'S', 0x02, 0x00, 0x00, 0x02]
        );
    }
}
