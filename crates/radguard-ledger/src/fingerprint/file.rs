//! Fingerprints of DICOM Part 10 files: the File Meta Information (read by the one meta reader,
//! `radguard_dicom::part10`) gives the transfer syntax, the rest of the file is streamed through
//! a [`Fingerprinter`].

use std::fs::File;
use std::io::Read;
use std::path::Path;

use radguard_dicom::limits::Limits;
use radguard_dicom::part10::{read_head, MetaError, MetaIssue, MAX_META, PREAMBLE_LEN};
use radguard_dicom::tokens::AnomalyKind;

use super::{Detailed, Fingerprint, FingerprintError, Fingerprinter, Options};

/// Read size while streaming a file.
const CHUNK: usize = 512 * 1024;
/// Why a data set start past the end of the bytes read is refused.
const META_PAST_END: &str = "File Meta Information group length runs past the end of the file";

/// The fingerprint of a file and what was read on the way.
#[derive(Debug, Clone)]
pub struct FileFingerprint {
    pub fingerprint: Fingerprint,
    pub sop_instance_uid: Option<String>,
    pub transfer_syntax: String,
    /// Bytes in the file.
    pub size: u64,
}

/// Fingerprints a Part 10 file (preamble, `DICM`, File Meta Information, data set).
pub fn fingerprint_file(path: &Path) -> Result<FileFingerprint, FingerprintError> {
    let (d, size) = run(
        path,
        Options {
            limits: Limits::OFFLINE,
            ..Options::default()
        },
    )?;
    Ok(FileFingerprint {
        fingerprint: d.fingerprint,
        sop_instance_uid: d.sop_instance_uid,
        transfer_syntax: d.transfer_syntax,
        size,
    })
}

/// Like [`fingerprint_file`], also returning the canonical samples (for region reports).
pub fn fingerprint_file_with_pixels(
    path: &Path,
    max_encapsulated: u64,
) -> Result<Detailed, FingerprintError> {
    run(
        path,
        Options {
            max_encapsulated,
            keep_pixels: true,
            limits: Limits::OFFLINE,
        },
    )
    .map(|(d, _)| d)
}

/// Splits a Part 10 file held in memory (at least up to the end of its File Meta Information):
/// its transfer syntax UID and where the data set starts.
///
/// The meta group ends where group 0002 ends. A File Meta Information Group Length that says
/// otherwise, or a meta element repeated or out of order, is refused: a reader that followed the
/// group length, or took the other copy of the Transfer Syntax UID, would read another data set.
pub fn part10_data_set(bytes: &[u8]) -> Result<(String, usize), FingerprintError> {
    let head = read_head(bytes).map_err(|e| {
        FingerprintError::NotPart10(match e {
            MetaError::NoPrefix => "no DICM prefix".into(),
            e => e.to_string(),
        })
    })?;
    for issue in &head.issues {
        match issue {
            MetaIssue::GroupLengthMissing => {}
            MetaIssue::GroupLengthMismatch { .. } | MetaIssue::GroupLengthMisplaced { .. } => {
                return Err(FingerprintError::NotPart10(issue.to_string()))
            }
            MetaIssue::Anomaly(
                a @ (AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. }),
            ) => {
                return Err(FingerprintError::NotPart10(format!(
                    "File Meta Information: {a}"
                )))
            }
            MetaIssue::Anomaly(_) => {}
        }
    }
    let ts = head.meta.transfer_syntax_uid.ok_or_else(|| {
        FingerprintError::NotPart10("no Transfer Syntax UID in the File Meta Information".into())
    })?;
    if head.data_start > bytes.len() {
        return Err(FingerprintError::NotPart10(META_PAST_END.into()));
    }
    Ok((ts, head.data_start))
}

fn run(path: &Path, options: Options) -> Result<(Detailed, u64), FingerprintError> {
    // One read buffer per thread, reused for every file.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() != CHUNK {
            *buf = vec![0u8; CHUNK];
        }
        run_with(path, options, &mut buf)
    })
}

fn run_with(
    path: &Path,
    options: Options,
    buf: &mut [u8],
) -> Result<(Detailed, u64), FingerprintError> {
    let mut file = File::open(path)?;
    // Read enough for the preamble and the meta group.
    let mut have = 0usize;
    while have < PREAMBLE_LEN + 4 + MAX_META {
        let free = match buf.get_mut(have..) {
            Some(free) if !free.is_empty() => free,
            _ => break,
        };
        let n = file.read(free)?;
        if n == 0 {
            break;
        }
        have += n;
    }
    // `Read` never reports more bytes than the buffer holds.
    let head = buf.get(..have).unwrap_or_default();
    let (ts, data_start) = part10_data_set(head)?;
    let mut fp = Fingerprinter::with_options(&ts, options)?;
    // Always `Some`: `part10_data_set` refuses a data set start past the end of its input.
    let data_set = head
        .get(data_start..)
        .ok_or_else(|| FingerprintError::NotPart10(META_PAST_END.into()))?;
    fp.feed(data_set);
    let mut size = have as u64;
    loop {
        if fp.error().is_some() {
            break;
        }
        let n = file.read(buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        fp.feed(buf.get(..n).unwrap_or_default()); // `n <= buf.len()`, as above
    }
    Ok((fp.finish_detailed()?, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ts: &str, with_group_length: bool) -> Vec<u8> {
        let mut tsv = ts.as_bytes().to_vec();
        if tsv.len() % 2 == 1 {
            tsv.push(0);
        }
        let mut body = Vec::new();
        body.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0, 2, 0, 0, 0, 0, 1]);
        body.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        body.extend_from_slice(&(tsv.len() as u16).to_le_bytes());
        body.extend_from_slice(&tsv);
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        if with_group_length {
            out.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn meta_with_and_without_group_length() {
        for gl in [true, false] {
            let mut f = meta("1.2.840.10008.1.2", gl);
            let ds_at = f.len();
            f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
            let (ts, start) = part10_data_set(&f).expect("meta");
            assert_eq!(ts, "1.2.840.10008.1.2");
            assert_eq!(start, ds_at);
        }
    }

    #[test]
    fn broken_meta_is_refused() {
        let f = meta("1.2.840.10008.1.2", true);
        assert!(matches!(
            part10_data_set(&f[..f.len() - 3]),
            Err(FingerprintError::NotPart10(_))
        ));
        let mut no_ts = vec![0u8; 128];
        no_ts.extend_from_slice(b"DICM");
        no_ts.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        assert!(matches!(
            part10_data_set(&no_ts),
            Err(FingerprintError::NotPart10(_))
        ));
        assert!(matches!(
            part10_data_set(b"not a DICOM file"),
            Err(FingerprintError::NotPart10(_))
        ));
    }

    /// Two Transfer Syntax UIDs: one reader takes the first, another the last, and each parses
    /// a different data set from the same bytes.
    #[test]
    fn a_repeated_meta_element_is_refused() {
        let mut f = meta("1.2.840.10008.1.2", false);
        f.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I', 20, 0]);
        f.extend_from_slice(b"1.2.840.10008.1.2.1\0");
        f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 2, 0, b'1', 0]);
        assert!(matches!(
            part10_data_set(&f),
            Err(FingerprintError::NotPart10(m)) if m.contains("twice")
        ));
    }

    /// A group length that ends the meta group early: a reader that followed it would start
    /// the data set inside the meta group.
    #[test]
    fn group_length_short_of_the_meta_group_is_refused() {
        let mut f = meta("1.2.840.10008.1.2", true);
        f[140..144].copy_from_slice(&14u32.to_le_bytes());
        f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        assert!(matches!(
            part10_data_set(&f),
            Err(FingerprintError::NotPart10(_))
        ));
    }

    /// A group length pointing past the end of the file, then a data set element: the data
    /// set start used to be taken as is, and the file reader sliced at it.
    #[test]
    fn group_length_past_the_end_is_refused() {
        let mut f = meta("1.2.840.10008.1.2", true);
        f[140..144].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        f.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        assert!(matches!(
            part10_data_set(&f),
            Err(FingerprintError::NotPart10(_))
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("past-end.dcm");
        std::fs::write(&path, &f).expect("write");
        assert!(matches!(
            fingerprint_file(&path),
            Err(FingerprintError::NotPart10(_))
        ));
    }
}
