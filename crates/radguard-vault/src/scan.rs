//! Reading the indexed attributes out of a stored file without loading it.
//!
//! The data set is read with the one grammar (radguard-dicom's tokenizer, through
//! `DataSetReader`, so deflated data sets are read too): element headers are decoded, values
//! pass as chunks (never allocated at their declared length) except for the handful of short text
//! attributes the index keeps, and the walk stops at the first top-level element of group 7FE0
//! (Pixel Data and its float variants). A declared length is compared with the bytes left in
//! the file before anything else.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::text::{SpecificCharacterSet, TextCodec};
use radguard_dicom::inflate::DataSetReader;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{ErrorKind, Length, Token};
use radguard_dicom::ts::TransferSyntax;

/// The walk stops at the first top-level element at or after this tag.
const STOP: Tag = Tag(0x7FE0, 0x0000);

/// Longest value read for an indexed text attribute (PS3.5 allows 64 characters for LO and UI).
const MAX_TEXT_LEN: u32 = 1024;

/// Read size while walking a stored file.
const CHUNK: usize = 64 * 1024;

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
    let ts = TransferSyntax::from_uid(ts_uid)
        .ok()
        .filter(|t| t.known)
        .ok_or_else(|| format!("unknown transfer syntax {ts_uid}; data set not parsed"))?;
    let mut file = File::open(path).map_err(|e| format!("cannot open stored file: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot stat stored file: {e}"))?
        .len();
    file.seek(SeekFrom::Start(data_offset))
        .map_err(|e| format!("cannot seek to the data set: {e}"))?;
    let mut reader =
        DataSetReader::new(&ts, Limits::OFFLINE).with_total(file_len.saturating_sub(data_offset));
    let mut walk = Walk::default();
    let mut buf = vec![0u8; CHUNK];
    while !walk.done {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read stored file: {e}"))?;
        if n == 0 {
            break;
        }
        reader.feed(buf.get(..n).unwrap_or_default(), |t| walk.token(t));
        if let Some(e) = walk.error.take() {
            return Err(e);
        }
    }
    if !walk.done {
        if let Err(e) = reader.finish() {
            return Err(format!("data set truncated: {e}"));
        }
    }
    *found = walk.found;
    Ok(())
}

/// The token consumer: top-level text attributes until the pixel data.
#[derive(Default)]
struct Walk {
    found: Found,
    charset: Option<SpecificCharacterSet>,
    collecting: Option<(Tag, Vec<u8>)>,
    error: Option<String>,
    done: bool,
}

impl Walk {
    fn token(&mut self, t: Token<'_>) {
        if self.done || self.error.is_some() {
            return;
        }
        match t {
            Token::Element(h) if h.depth == 0 => {
                if h.tag >= STOP {
                    self.done = true;
                    return;
                }
                let wanted = [
                    tags::SPECIFIC_CHARACTER_SET,
                    tags::SOP_CLASS_UID,
                    tags::SOP_INSTANCE_UID,
                    tags::PATIENT_ID,
                    tags::STUDY_INSTANCE_UID,
                    tags::SERIES_INSTANCE_UID,
                ]
                .contains(&h.tag);
                if !wanted {
                    return;
                }
                match h.length {
                    Length::Defined(len) if len > MAX_TEXT_LEN => {
                        self.error = Some(format!(
                            "element {} is {len} bytes long, more than any valid value",
                            h.tag
                        ));
                    }
                    _ => self.collecting = Some((h.tag, Vec::new())),
                }
            }
            Token::Value(v) => {
                if let Some((_, buf)) = self.collecting.as_mut() {
                    buf.extend_from_slice(v);
                }
            }
            Token::ValueEnd => {
                if let Some((tag, bytes)) = self.collecting.take() {
                    self.value(tag, &bytes);
                }
            }
            Token::Error(e) => {
                self.error = Some(match e.kind {
                    ErrorKind::PastEnd {
                        tag,
                        length,
                        available,
                    } => format!(
                        "data set truncated: element {tag} declares {length} bytes, {available} remain"
                    ),
                    _ => format!("data set unparseable: {e}"),
                });
            }
            _ => {}
        }
    }

    fn value(&mut self, tag: Tag, bytes: &[u8]) {
        let decoded = match &self.charset {
            Some(cs) => cs.decode(bytes).ok(),
            None => None,
        }
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
        let text = decoded
            .trim_end_matches([' ', '\0'])
            .trim_start_matches(' ')
            .to_string();
        if tag == tags::SPECIFIC_CHARACTER_SET {
            // PS3.5 §6.1.2.5.3: the first value names the character set of the data set.
            let first = text.split('\\').next().unwrap_or_default().trim();
            self.charset = SpecificCharacterSet::from_code(first);
            return;
        }
        let text = (!text.is_empty()).then_some(text);
        let slot = match tag {
            tags::SOP_CLASS_UID => &mut self.found.sop_class_uid,
            tags::SOP_INSTANCE_UID => &mut self.found.sop_instance_uid,
            tags::PATIENT_ID => &mut self.found.patient_id,
            tags::STUDY_INSTANCE_UID => &mut self.found.study_uid,
            tags::SERIES_INSTANCE_UID => &mut self.found.series_uid,
            _ => return,
        };
        // A repeated element: the first occurrence is indexed, as the gateway's head sniffer
        // (and so the audit trail), DCMTK and pydicom read it.
        if slot.is_none() {
            *slot = text;
        }
    }
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

    /// Deflated Explicit VR Little Endian is read through the one grammar's inflater.
    #[test]
    fn deflated_data_sets_are_indexed() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0"));
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        ds.extend(ele(0x0010, 0x0020, b"LO", b"PID-42"));
        ds.extend(ele_long(0x7FE0, 0x0010, b"OW", 4, &[1, 2, 3, 4]));
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&ds).expect("deflate");
        let z = z.finish().expect("deflate");
        let attrs = scan_bytes(&z, "1.2.840.10008.1.2.1.99");
        assert_eq!(attrs.warning, None);
        assert_eq!(attrs.patient_id.as_deref(), Some("PID-42"));
    }

    #[test]
    fn the_first_of_a_repeated_element_is_indexed() {
        let mut ds = Vec::new();
        ds.extend(ele(0x0008, 0x0018, b"UI", b"1.2.3\0"));
        ds.extend(ele(0x0010, 0x0020, b"LO", b"P-FIRST "));
        ds.extend(ele(0x0010, 0x0020, b"LO", b"P-SECOND"));
        let attrs = scan_bytes(&ds, EVRLE);
        assert_eq!(attrs.patient_id.as_deref(), Some("P-FIRST"));
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
