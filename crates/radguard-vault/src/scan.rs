//! Reading the indexed attributes out of a stored file without loading it.
//!
//! The data set is walked with dicom-parser's lazy reader: element headers are decoded, values
//! are skipped (never allocated) except for the handful of short text attributes the index
//! keeps, and the walk stops at the first top-level element of group 7FE0 (Pixel Data and its
//! float variants). `OpenFileOptions::read_until` would also stop at Pixel Data, but it
//! allocates every preceding value at its declared length, so a crafted 4 GiB length in front
//! of Pixel Data would become a 4 GiB allocation; here a declared length is only compared with
//! the bytes left in the file.

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom};
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_parser::dataset::lazy_read::LazyDataSetReader;
use dicom_parser::dataset::LazyDataToken;
use dicom_parser::StatefulDecode;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// The walk stops at the first top-level element at or after this tag.
const STOP: Tag = Tag(0x7FE0, 0x0000);

/// Longest value read for an indexed text attribute (PS3.5 allows 64 characters for LO and UI).
const MAX_TEXT_LEN: u32 = 1024;

/// What the index learns from a data set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct IndexAttrs {
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    /// Set when the data set could not be parsed or disagrees with the command.
    pub warning: Option<String>,
}

/// What the command (or the File Meta group) said the instance is.
pub(crate) struct Expected<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax: &'a str,
}

#[derive(Default)]
struct Found {
    patient_id: Option<String>,
    study_uid: Option<String>,
    series_uid: Option<String>,
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
}

/// Reads the index attributes from the data set that starts at byte `data_offset` of `path`.
/// Never fails: whatever goes wrong becomes the `warning`.
pub(crate) fn scan(path: &Path, data_offset: u64, expected: &Expected<'_>) -> IndexAttrs {
    let mut found = Found::default();
    let problem = walk(path, data_offset, expected.transfer_syntax, &mut found).err();
    if problem.is_some() {
        // Attributes from a data set that does not parse are not trusted for the index.
        found = Found::default();
    }
    let mut warnings: Vec<String> = problem.into_iter().collect();
    // Only compare identifying UIDs when the walk got far enough to have seen them.
    if warnings.is_empty() {
        match found.sop_instance_uid.as_deref() {
            None => warnings.push("data set has no SOP Instance UID (0008,0018)".into()),
            Some(uid) if uid != expected.sop_instance_uid => warnings.push(format!(
                "data set SOP Instance UID {uid} differs from the command's {}",
                expected.sop_instance_uid
            )),
            Some(_) => {}
        }
        match found.sop_class_uid.as_deref() {
            Some(uid) if uid != expected.sop_class_uid => warnings.push(format!(
                "data set SOP Class UID {uid} differs from the command's {}",
                expected.sop_class_uid
            )),
            _ => {}
        }
    }
    IndexAttrs {
        patient_id: found.patient_id,
        study_uid: found.study_uid,
        series_uid: found.series_uid,
        warning: if warnings.is_empty() {
            None
        } else {
            Some(warnings.join("; "))
        },
    }
}

fn walk(path: &Path, data_offset: u64, ts_uid: &str, found: &mut Found) -> Result<(), String> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| format!("unknown transfer syntax {ts_uid}; data set not parsed"))?;
    if matches!(ts.codec(), Codec::Dataset(_)) {
        return Err(format!(
            "transfer syntax {ts_uid} encodes the whole data set; not parsed"
        ));
    }
    let file = File::open(path).map_err(|e| format!("cannot open stored file: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot stat stored file: {e}"))?
        .len();
    let mut src = BufReader::new(file);
    src.seek(SeekFrom::Start(data_offset))
        .map_err(|e| format!("cannot seek to the data set: {e}"))?;
    let mut reader =
        LazyDataSetReader::new_with_ts(src, ts).map_err(|e| format!("data set unreadable: {e}"))?;

    // Depth counts open sequences and items: top-level elements are at depth 0.
    let mut depth: usize = 0;
    // A defined-length top-level element at which the walk stopped (normally Pixel Data).
    let mut stopped_at: Option<(Tag, u32)> = None;
    while let Some(token) = reader.advance() {
        let token = token.map_err(|e| format!("data set unparseable: {e}"))?;
        match token {
            LazyDataToken::ElementHeader(header) => {
                if depth == 0 && header.tag >= STOP {
                    stopped_at = Some((header.tag, header.len.0));
                    break;
                }
            }
            LazyDataToken::SequenceStart { tag, .. } => {
                if depth == 0 && tag >= STOP {
                    break;
                }
                depth += 1;
            }
            LazyDataToken::PixelSequenceStart => {
                if depth == 0 {
                    break;
                }
                depth += 1;
            }
            LazyDataToken::ItemStart { .. } => depth += 1,
            LazyDataToken::ItemEnd | LazyDataToken::SequenceEnd => {
                depth = depth.saturating_sub(1);
            }
            LazyDataToken::LazyValue { header, decoder } => {
                let remaining = file_len.saturating_sub(decoder.position());
                if u64::from(header.len.0) > remaining {
                    return Err(format!(
                        "data set truncated: element {} declares {} bytes, {remaining} remain",
                        header.tag, header.len.0
                    ));
                }
                let token = LazyDataToken::LazyValue { header, decoder };
                let wanted = depth == 0
                    && [
                        tags::SPECIFIC_CHARACTER_SET,
                        tags::SOP_CLASS_UID,
                        tags::SOP_INSTANCE_UID,
                        tags::PATIENT_ID,
                        tags::STUDY_INSTANCE_UID,
                        tags::SERIES_INSTANCE_UID,
                    ]
                    .contains(&header.tag);
                if !wanted {
                    token
                        .skip()
                        .map_err(|e| format!("data set unreadable: {e}"))?;
                    continue;
                }
                if header.len.0 > MAX_TEXT_LEN {
                    return Err(format!(
                        "element {} is {} bytes long, more than any valid value",
                        header.tag, header.len.0
                    ));
                }
                // Reading (0008,0005) through the decoder also switches its character set.
                let value = token
                    .into_value()
                    .map_err(|e| format!("element {} unreadable: {e}", header.tag))?;
                let text = value
                    .to_str()
                    .trim_end_matches([' ', '\0'])
                    .trim_start_matches(' ')
                    .to_string();
                let text = (!text.is_empty()).then_some(text);
                match header.tag {
                    tags::SOP_CLASS_UID => found.sop_class_uid = text,
                    tags::SOP_INSTANCE_UID => found.sop_instance_uid = text,
                    tags::PATIENT_ID => found.patient_id = text,
                    tags::STUDY_INSTANCE_UID => found.study_uid = text,
                    tags::SERIES_INSTANCE_UID => found.series_uid = text,
                    _ => {}
                }
            }
            other => {
                other
                    .skip()
                    .map_err(|e| format!("data set unreadable: {e}"))?;
            }
        }
    }

    if let Some((tag, len)) = stopped_at {
        if len != u32::MAX {
            let pos = reader.into_decoder().position();
            let remaining = file_len.saturating_sub(pos);
            if u64::from(len) > remaining {
                return Err(format!(
                    "data set truncated: element {tag} declares {len} bytes, {remaining} remain"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scan_bytes(bytes: &[u8], ts: &str) -> IndexAttrs {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(&[0u8; 10]).expect("write");
        f.write_all(bytes).expect("write");
        f.flush().expect("flush");
        scan(
            f.path(),
            10,
            &Expected {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.7",
                sop_instance_uid: "1.2.3",
                transfer_syntax: ts,
            },
        )
    }

    /// Explicit VR little endian element with a short (16-bit) length.
    fn ele(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&group.to_le_bytes());
        v.extend_from_slice(&elem.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    /// Explicit VR little endian element with a 32-bit length (OB, OW, SQ, UN...).
    fn ele_long(group: u16, elem: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&group.to_le_bytes());
        v.extend_from_slice(&elem.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    const EVRLE: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn finds_attributes_and_stops_at_pixel_data() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        ds.extend(ele(0x0010, 0x0020, b"LO", b"PID-42"));
        ds.extend(ele(0x0020, 0x000D, b"UI", b"1.2.3.4\0"));
        ds.extend(ele(0x0020, 0x000E, b"UI", b"1.2.3.5\0"));
        // Pixel Data: 4 bytes declared and present.
        ds.extend(ele_long(0x7FE0, 0x0010, b"OW", 4, &[1, 2, 3, 4]));
        let attrs = scan_bytes(&ds, EVRLE);
        assert_eq!(
            attrs,
            IndexAttrs {
                patient_id: Some("PID-42".into()),
                study_uid: Some("1.2.3.4".into()),
                series_uid: Some("1.2.3.5".into()),
                warning: None,
            }
        );
    }

    #[test]
    fn huge_declared_length_is_not_allocated() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        // A private OB element claiming almost 4 GiB, with 2 bytes behind it.
        ds.extend(ele_long(0x0009, 0x1010, b"OB", 0xFFFF_FFF0, &[0, 0]));
        let attrs = scan_bytes(&ds, EVRLE);
        let w = attrs.warning.expect("warning");
        assert!(w.contains("truncated"), "{w}");
    }

    #[test]
    fn truncated_pixel_data_is_reported() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        ds.extend(ele_long(0x7FE0, 0x0010, b"OW", 1000, &[0; 10]));
        let w = scan_bytes(&ds, EVRLE).warning.expect("warning");
        assert!(w.contains("truncated"), "{w}");
    }

    #[test]
    fn sequences_are_walked_not_indexed() {
        let mut item = Vec::new();
        item.extend(ele(0x0010, 0x0020, b"LO", b"INNER!"));
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        // (0008,1115) Referenced Series Sequence, undefined length, one undefined-length item.
        let mut sq = Vec::new();
        sq.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        sq.extend(&item);
        sq.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        sq.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        ds.extend(ele_long(0x0008, 0x1115, b"SQ", 0xFFFF_FFFF, &sq));
        ds.extend(ele(0x0010, 0x0020, b"LO", b"OUTER!"));
        let attrs = scan_bytes(&ds, EVRLE);
        assert_eq!(attrs.warning, None);
        assert_eq!(attrs.patient_id.as_deref(), Some("OUTER!"));
    }

    #[test]
    fn garbage_and_mismatches_are_warnings() {
        let w = scan_bytes(b"this is not DICOM at all", EVRLE).warning;
        assert!(w.is_some());

        let ds = ele(0x0008, 0x0018, b"UI", b"1.2.4\0");
        let w = scan_bytes(&ds, EVRLE).warning.expect("warning");
        assert!(w.contains("differs"), "{w}");

        let ds = ele(0x0010, 0x0020, b"LO", b"PID-42");
        let w = scan_bytes(&ds, EVRLE).warning.expect("warning");
        assert!(w.contains("no SOP Instance UID"), "{w}");

        let w = scan_bytes(&ds, "1.2.3.999").warning.expect("warning");
        assert!(w.contains("unknown transfer syntax"), "{w}");
    }

    #[test]
    fn overlong_indexed_value_is_refused() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        ds.extend(ele(0x0010, 0x0020, b"LO", &[b'A'; 2000]));
        let attrs = scan_bytes(&ds, EVRLE);
        assert!(attrs.warning.expect("warning").contains("2000 bytes"));
        assert_eq!(attrs.patient_id, None);
    }
}
