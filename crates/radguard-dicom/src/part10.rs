//! The one File Meta Information reader and writer (PS3.10 §7.1), and the one Implementation
//! Class UID and version name for everything the product writes.
//!
//! The reader runs the meta group through the [`crate::tokens`] grammar (explicit VR little
//! endian, group 0002); the meta group ends where group 0002 ends. A File Meta Information Group
//! Length that disagrees with that is reported as an issue, not followed: two readers that end
//! the meta group at different places see two different data sets.

use crate::limits::Limits;
use crate::tokens::{AnomalyKind, ErrorKind, GrammarError, Token, Tokenizer};
use crate::ts::Encoding;
use crate::types::uids;

/// Length of the preamble before `DICM`.
pub const PREAMBLE_LEN: usize = 128;
/// Largest File Meta Information group read (real ones are a few hundred bytes).
pub const MAX_META: usize = 64 * 1024;
/// Radguard's Implementation Class UID, in everything it writes and in its A-ASSOCIATE PDUs.
pub const IMPLEMENTATION_CLASS_UID: &str = uids::IMPLEMENTATION_CLASS_UID;
/// Radguard's Implementation Version Name.
pub const IMPLEMENTATION_VERSION_NAME: &str = uids::IMPLEMENTATION_VERSION_NAME;

/// What the meta group says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// (0002,0000), as declared.
    pub group_length: Option<u32>,
    /// (0002,0001) File Meta Information Version.
    pub version: Option<Vec<u8>>,
    pub media_storage_sop_class_uid: Option<String>,
    pub media_storage_sop_instance_uid: Option<String>,
    pub transfer_syntax_uid: Option<String>,
    pub implementation_class_uid: Option<String>,
    pub implementation_version_name: Option<String>,
    pub source_ae_title: Option<String>,
}

/// Readable irregularities of a meta group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetaIssue {
    #[error("File Meta Information Group Length (0002,0000) is missing")]
    GroupLengthMissing,
    #[error("File Meta Information Group Length is not the first element or not 4 bytes")]
    GroupLengthMisplaced { offset: u64 },
    #[error(
        "File Meta Information Group Length says {declared} bytes, the meta group has {actual}"
    )]
    GroupLengthMismatch { declared: u32, actual: u64 },
    #[error("{0}")]
    Anomaly(AnomalyKind),
}

/// Why the bytes are not a readable Part 10 head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("no DICM prefix at byte 128 or 0")]
    NoPrefix,
    #[error("the file ends inside the File Meta Information")]
    Truncated,
    #[error("File Meta Information is malformed: {0}")]
    Malformed(GrammarError),
    #[error("File Meta Information is longer than {MAX_META} bytes")]
    TooLong,
}

/// A Part 10 head: where the meta group and the data set start, and what the meta says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10Head {
    /// True for a 128-byte preamble before `DICM`; false for `DICM` at byte 0.
    pub preamble: bool,
    /// Offset of the first meta element.
    pub meta_start: usize,
    /// Offset of the data set.
    pub data_start: usize,
    pub meta: FileMeta,
    pub issues: Vec<MetaIssue>,
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .trim_start_matches(' ')
        .to_string()
}

/// Reads the head of a Part 10 file from its first bytes (at least up to the end of the meta
/// group; a buffer of `PREAMBLE_LEN + 4 + MAX_META` bytes is always enough).
pub fn read_head(bytes: &[u8]) -> Result<Part10Head, MetaError> {
    let (preamble, meta_start) = if bytes.get(PREAMBLE_LEN..PREAMBLE_LEN + 4) == Some(b"DICM") {
        (true, PREAMBLE_LEN + 4)
    } else if bytes.get(..4) == Some(b"DICM") {
        (false, 4)
    } else {
        return Err(MetaError::NoPrefix);
    };
    let body = bytes.get(meta_start..).unwrap_or_default();
    let (meta, len, issues) = read_meta_group(body)?;
    Ok(Part10Head {
        preamble,
        meta_start,
        data_start: meta_start + len,
        meta,
        issues,
    })
}

/// Reads a meta group from the start of `bytes`: the meta, its length, and its issues.
pub fn read_meta_group(bytes: &[u8]) -> Result<(FileMeta, usize, Vec<MetaIssue>), MetaError> {
    let limits = Limits {
        max_value_length: MAX_META as u32,
        ..Limits::GATEWAY
    };
    let mut tz = Tokenizer::new(Encoding::ExplicitLittle, limits);
    let mut meta = FileMeta::default();
    let mut issues = Vec::new();
    let mut end: Option<usize> = None;
    let mut current: Option<(u16, Vec<u8>)> = None;
    let mut first = true;
    // Where the last complete meta element ended.
    let mut boundary = 0usize;
    let mut value_end = 0usize;
    let mut held: Option<AnomalyKind> = None;
    let mut group_length_end: Option<u64> = None;
    let window = bytes.get(..bytes.len().min(MAX_META + 1)).unwrap_or(bytes);
    for t in tz.tokens(window) {
        match t {
            Token::Element(h) => {
                if h.tag.group() != 0x0002 {
                    end = Some(h.offset as usize);
                    break;
                }
                if let Some(kind) = held.take() {
                    issues.push(MetaIssue::Anomaly(kind));
                }
                if h.depth > 0 || h.kind != crate::tokens::ElementKind::Value {
                    return Err(MetaError::Malformed(GrammarError {
                        offset: h.offset,
                        kind: ErrorKind::NotAnItem { tag: h.tag },
                    }));
                }
                if h.tag.element() == 0 {
                    if first {
                        group_length_end = Some(
                            h.offset
                                + u64::from(h.header_len)
                                + u64::from(h.length.defined().unwrap_or(0)),
                        );
                    } else {
                        issues.push(MetaIssue::GroupLengthMisplaced { offset: h.offset });
                    }
                }
                first = false;
                value_end = (h.offset
                    + u64::from(h.header_len)
                    + u64::from(h.length.defined().unwrap_or(0)))
                    as usize;
                current = Some((h.tag.element(), Vec::new()));
            }
            Token::Value(v) => {
                if let Some((_, buf)) = current.as_mut() {
                    buf.extend_from_slice(v);
                }
            }
            Token::ValueEnd => {
                boundary = value_end;
                let Some((element, v)) = current.take() else {
                    continue;
                };
                match element {
                    0x0000 if group_length_end.is_some() && meta.group_length.is_none() => {
                        match <[u8; 4]>::try_from(v.as_slice()) {
                            Ok(b) => meta.group_length = Some(u32::from_le_bytes(b)),
                            Err(_) => {
                                issues.push(MetaIssue::GroupLengthMisplaced { offset: 0 });
                                group_length_end = None;
                            }
                        }
                    }
                    0x0001 => meta.version = Some(v),
                    0x0002 => meta.media_storage_sop_class_uid = Some(text(&v)),
                    0x0003 => meta.media_storage_sop_instance_uid = Some(text(&v)),
                    0x0010 => meta.transfer_syntax_uid = Some(text(&v)),
                    0x0012 => meta.implementation_class_uid = Some(text(&v)),
                    0x0013 => meta.implementation_version_name = Some(text(&v)),
                    0x0016 => meta.source_ae_title = Some(text(&v)),
                    _ => {}
                }
            }
            // An anomaly comes before its element: it is the meta group's only when that element
            // is in group 0002 (a data set starting with a lower group is not out of order).
            Token::Anomaly(a) => held = Some(a.kind),
            Token::Error(e) => {
                // The data set after the meta group may be implicit VR: a header that is not
                // explicit VR is the end of the meta group when its group is not 0002.
                let at = e.offset as usize;
                let group = window
                    .get(at..)
                    .and_then(|g| g.first_chunk::<2>())
                    .map(|g| u16::from_le_bytes(*g));
                if group.is_some_and(|g| g != 0x0002) {
                    end = Some(at);
                    break;
                }
                return Err(MetaError::Malformed(e));
            }
            _ => {}
        }
    }
    let end = match end {
        Some(e) => e,
        None if window.len() > MAX_META => return Err(MetaError::TooLong),
        None if tz.at_top_level_boundary() && current.is_none() && !first => window.len(),
        // Fewer bytes than an element header after the meta group: when they do not start
        // group 0002 they belong to the data set (a truncated one), not to the meta group.
        None if current.is_none()
            && !first
            && window
                .get(boundary..)
                .and_then(|r| r.first_chunk::<2>())
                .is_some_and(|g| u16::from_le_bytes(*g) != 0x0002) =>
        {
            boundary
        }
        None => return Err(MetaError::Truncated),
    };
    match (meta.group_length, group_length_end) {
        (Some(declared), Some(after)) => {
            let actual = (end as u64).saturating_sub(after);
            if u64::from(declared) != actual {
                issues.push(MetaIssue::GroupLengthMismatch { declared, actual });
            }
        }
        _ => issues.insert(0, MetaIssue::GroupLengthMissing),
    }
    Ok((meta, end, issues))
}

fn put_element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

fn padded(s: &str, pad: u8) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(pad);
    }
    v
}

/// Preamble (zeros), `DICM` and File Meta Information for an instance, with Radguard's
/// implementation identity. A pure function of its arguments: the same instance always gets the
/// same bytes (the vault's content addresses depend on it).
pub fn write_head(sop_class: &str, sop_instance: &str, transfer_syntax: &str) -> Vec<u8> {
    let mut group = Vec::with_capacity(256);
    put_element(&mut group, 0x0001, b"OB", &[0, 1]);
    put_element(&mut group, 0x0002, b"UI", &padded(sop_class, 0));
    put_element(&mut group, 0x0003, b"UI", &padded(sop_instance, 0));
    put_element(&mut group, 0x0010, b"UI", &padded(transfer_syntax, 0));
    put_element(
        &mut group,
        0x0012,
        b"UI",
        &padded(IMPLEMENTATION_CLASS_UID, 0),
    );
    put_element(
        &mut group,
        0x0013,
        b"SH",
        &padded(IMPLEMENTATION_VERSION_NAME, b' '),
    );
    let mut out = vec![0u8; PREAMBLE_LEN];
    out.extend_from_slice(b"DICM");
    put_element(&mut out, 0x0000, b"UL", &(group.len() as u32).to_le_bytes());
    out.extend_from_slice(&group);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut f = write_head("1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2");
        let ds = f.len();
        f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        let h = read_head(&f).unwrap();
        assert!(h.preamble);
        assert_eq!(h.data_start, ds);
        assert_eq!(h.issues, vec![]);
        assert_eq!(
            h.meta.transfer_syntax_uid.as_deref(),
            Some("1.2.840.10008.1.2")
        );
        assert_eq!(
            h.meta.media_storage_sop_instance_uid.as_deref(),
            Some("1.2.3.45")
        );
        assert_eq!(
            h.meta.implementation_class_uid.as_deref(),
            Some(IMPLEMENTATION_CLASS_UID)
        );
        assert_eq!(
            h.meta.implementation_version_name.as_deref(),
            Some(IMPLEMENTATION_VERSION_NAME)
        );
        // Only meta information: the data set starts at the end.
        let only = write_head("1.2", "1.3", "1.2.840.10008.1.2.1");
        assert_eq!(read_head(&only).unwrap().data_start, only.len());
    }

    #[test]
    fn same_bytes_as_dicom_object() {
        let ours = write_head(
            "1.2.840.10008.5.1.4.1.1.7",
            "1.2.3.4.5",
            "1.2.840.10008.1.2.1",
        );
        let table = dicom_object::FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("1.2.3.4.5")
            .transfer_syntax("1.2.840.10008.1.2.1")
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
            .build()
            .unwrap();
        let mut theirs = vec![0u8; PREAMBLE_LEN];
        theirs.extend_from_slice(b"DICM");
        table.write(&mut theirs).unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn group_length_disagreeing_is_an_issue_and_not_followed() {
        let mut f = write_head("1.2", "1.3", "1.2.840.10008.1.2");
        f[140..144].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let ds = f.len();
        f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        let h = read_head(&f).unwrap();
        assert_eq!(h.data_start, ds);
        assert!(matches!(
            h.issues.as_slice(),
            [MetaIssue::GroupLengthMismatch {
                declared: 0x7FFF_FFFF,
                ..
            }]
        ));
    }

    /// A data set whose first element is in group 0000 (lower than 0002) is not an irregular
    /// meta group.
    #[test]
    fn data_set_group_below_0002_is_no_meta_issue() {
        let mut f = write_head("1.2", "1.3", "1.2.840.10008.1.2");
        let ds = f.len();
        f.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 4, 0, 0, 0, 0, 0, 0, 0]);
        let h = read_head(&f).unwrap();
        assert_eq!(h.data_start, ds);
        assert_eq!(h.issues, vec![]);
    }

    #[test]
    fn broken_heads() {
        assert_eq!(read_head(b"not dicom"), Err(MetaError::NoPrefix));
        let f = write_head("1.2", "1.3", "1.2.840.10008.1.2");
        assert_eq!(read_head(&f[..f.len() - 3]), Err(MetaError::Truncated));
        // A complete meta group followed by less than a header of another group: the data set
        // starts there (and is truncated), the meta group is whole.
        let mut short = f.clone();
        short.extend_from_slice(&[0x08, 0x00, 0x16]);
        assert_eq!(read_head(&short).unwrap().data_start, f.len());
        let mut bad = f.clone();
        bad[132 + 12 + 4] = b'x'; // the version element's VR
        assert!(matches!(read_head(&bad), Err(MetaError::Malformed(_))));
        // No group length: an issue, still read.
        let mut no_gl = vec![0u8; 128];
        no_gl.extend_from_slice(b"DICM");
        no_gl.extend_from_slice(f.get(144..).unwrap());
        let h = read_head(&no_gl).unwrap();
        assert_eq!(h.issues, vec![MetaIssue::GroupLengthMissing]);
        assert_eq!(h.data_start, no_gl.len());
    }
}
