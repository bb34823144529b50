//! Fingerprints of DICOM Part 10 files: the File Meta Information gives the transfer syntax,
//! the rest of the file is streamed through a [`Fingerprinter`].

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{Detailed, Fingerprint, FingerprintError, Fingerprinter, Options};

/// Read size while streaming a file.
const CHUNK: usize = 512 * 1024;
/// Largest File Meta Information group accepted.
const MAX_META: usize = 64 * 1024;
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
    let (d, size) = run(path, Options::default())?;
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
        },
    )
    .map(|(d, _)| d)
}

/// Splits a Part 10 file held in memory: its transfer syntax UID and where the data set starts.
pub fn part10_data_set(bytes: &[u8]) -> Result<(String, usize), FingerprintError> {
    let meta_start = if bytes.get(128..132) == Some(b"DICM") {
        132
    } else if bytes.get(..4) == Some(b"DICM") {
        4
    } else {
        return Err(FingerprintError::NotPart10("no DICM prefix".into()));
    };
    parse_meta(bytes, meta_start)
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
    while have < MAX_META + 132 {
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
    // Always `Some`: `parse_meta` refuses a data set start past the end of its input.
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

/// Reads the File Meta Information (explicit VR little endian, group 0002) starting at `start`;
/// returns the transfer syntax UID and where the data set begins.
fn parse_meta(buf: &[u8], start: usize) -> Result<(String, usize), FingerprintError> {
    let bad = |r: &str| FingerprintError::NotPart10(r.to_string());
    let mut pos = start;
    let mut ts = None;
    let mut end_by_length: Option<usize> = None;
    loop {
        if let Some(end) = end_by_length {
            if pos >= end {
                break;
            }
        }
        let Some(&[g0, g1, e0, e1, v0, v1, l0, l1]) = chunk_at::<8>(buf, pos) else {
            if end_by_length.is_none() && ts.is_some() && pos == buf.len() {
                break; // a file holding only meta information
            }
            return Err(bad("File Meta Information is truncated or too long"));
        };
        let group = u16::from_le_bytes([g0, g1]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([e0, e1]);
        let vr = [v0, v1];
        let (len, hdr) = if matches!(&vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT" | b"UC" | b"UR") {
            let &l = chunk_at::<4>(buf, pos + 8)
                .ok_or_else(|| bad("File Meta Information is truncated"))?;
            (u32::from_le_bytes(l) as usize, 12)
        } else {
            (u16::from_le_bytes([l0, l1]) as usize, 8)
        };
        let value = buf
            .get(pos + hdr..pos + hdr + len)
            .ok_or_else(|| bad("File Meta Information element runs past its end"))?;
        match (element, value) {
            (0x0000, &[b0, b1, b2, b3]) => {
                let g = u32::from_le_bytes([b0, b1, b2, b3]) as usize;
                end_by_length = Some((pos + hdr + len).saturating_add(g));
            }
            (0x0010, _) => {
                let s = String::from_utf8_lossy(value)
                    .trim_end_matches(['\0', ' '])
                    .to_string();
                ts = Some(s);
            }
            _ => {}
        }
        pos += hdr + len;
    }
    let ts = ts.ok_or_else(|| bad("no Transfer Syntax UID in the File Meta Information"))?;
    let data_start = end_by_length.unwrap_or(pos);
    if data_start > buf.len() {
        return Err(bad(META_PAST_END));
    }
    Ok((ts, data_start))
}

/// `N` bytes of `buf` starting at `at`, if there are that many.
fn chunk_at<const N: usize>(buf: &[u8], at: usize) -> Option<&[u8; N]> {
    buf.get(at..)?.first_chunk::<N>()
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
            let (ts, start) = parse_meta(&f, 132).expect("meta");
            assert_eq!(ts, "1.2.840.10008.1.2");
            assert_eq!(start, ds_at);
        }
    }

    #[test]
    fn broken_meta_is_refused() {
        let f = meta("1.2.840.10008.1.2", true);
        assert!(parse_meta(&f[..f.len() - 3], 132).is_err());
        let mut no_ts = vec![0u8; 128];
        no_ts.extend_from_slice(b"DICM");
        no_ts.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        assert!(parse_meta(&no_ts, 132).is_err());
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
