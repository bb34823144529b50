//! DICOM Part 10 files: read the preamble and meta group, stream the data set through
//! [`StreamDeid`], and write a new file (zeroed preamble, rebuilt meta with the new SOP
//! Instance UID). Files are written to a temporary name in the output folder and renamed
//! only when complete, so a failure never leaves a half-written output.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dicom_core::{Tag, VR};
use sha2::{Digest, Sha256};

use crate::codec::{
    encode_elements, parse_dataset, Cursor, DataSet, Element, PErr, Syntax, TransferSyntax,
    EXPLICIT_VR_LE,
};
use crate::stream::{Outcome, StreamDeid, DEFAULT_HEAD_CAP};
use crate::transform::{DeidError, Deidentifier, SOP_CLASS_UID, SOP_INSTANCE_UID};

/// Radguard's implementation class UID (a fixed UUID-derived UID).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.164358097546618436373302232404712538722";
/// Implementation Version Name written in the meta group.
pub const IMPLEMENTATION_VERSION: &str = concat!("RADGUARD_", env!("CARGO_PKG_VERSION"));

/// Largest meta group accepted.
const MAX_META: usize = 64 * 1024;
/// Largest inflated size of a deflated data set.
const MAX_INFLATED: u64 = 4 * 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// Why a file could not be de-identified.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a DICOM Part 10 file (no DICM prefix after a 128-byte preamble)")]
    NotPart10,
    #[error("bad file meta information: {0}")]
    BadMeta(String),
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("the deflated data set inflates past {MAX_INFLATED} bytes")]
    InflateLimit,
    #[error("a DICOMDIR names patients and files; regenerate it for the output instead")]
    Dicomdir,
    #[error(
        "another input with the same SOP Instance UID but other content was already written as {0}"
    )]
    DuplicateInstance(String),
    #[error("{0}")]
    Deid(#[from] DeidError),
}

/// Media Storage Directory Storage (DICOMDIR).
pub const MEDIA_STORAGE_DIRECTORY: &str = "1.2.840.10008.1.3.10";

/// What the meta group said.
#[derive(Debug, Clone)]
pub struct Meta {
    pub transfer_syntax: TransferSyntax,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
}

fn text(e: &Element) -> Option<String> {
    e.text_value()
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
}

/// Read the preamble and meta group; returns the meta and the data set bytes already read.
pub fn read_meta(r: &mut impl Read) -> Result<(Meta, Vec<u8>), FileError> {
    let mut pre = [0u8; 132];
    if let Err(e) = r.read_exact(&mut pre) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FileError::NotPart10
        } else {
            FileError::Io(e)
        });
    }
    if pre.get(128..132) != Some(b"DICM") {
        return Err(FileError::NotPart10);
    }
    let mut buf = Vec::new();
    let mut meta = DataSet::default();
    let mut eof = false;
    loop {
        let mut c = Cursor::new(&buf, 132, !eof);
        let mut done = false;
        loop {
            if c.at_end() {
                done = eof;
                break;
            }
            match c.peek_tag(Syntax::ExplicitLittle) {
                Ok(t) if t.group() != 0x0002 => {
                    done = true;
                    break;
                }
                Ok(_) => {}
                Err(PErr::Incomplete) => break,
                Err(PErr::Bad(e)) => return Err(FileError::BadMeta(e.to_string())),
            }
            let start = c.pos;
            match c.element(Syntax::ExplicitLittle, 0) {
                Ok(e) => meta.elements.push(e),
                Err(PErr::Incomplete) => {
                    c.pos = start;
                    break;
                }
                Err(PErr::Bad(e)) => return Err(FileError::BadMeta(e.to_string())),
            }
        }
        let consumed = c.pos;
        if done {
            buf.drain(..consumed);
            break;
        }
        buf.drain(..consumed);
        if buf.len() > MAX_META || meta.elements.len() > 64 {
            return Err(FileError::BadMeta("meta group too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk)?;
        if n == 0 {
            eof = true;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let ts_uid = meta
        .get(Tag(0x0002, 0x0010))
        .and_then(text)
        .ok_or_else(|| FileError::BadMeta("no Transfer Syntax UID (0002,0010)".into()))?;
    let transfer_syntax =
        TransferSyntax::from_uid(&ts_uid).ok_or(FileError::UnsupportedTransferSyntax(ts_uid))?;
    Ok((
        Meta {
            transfer_syntax,
            sop_class_uid: meta.get(Tag(0x0002, 0x0002)).and_then(text),
            sop_instance_uid: meta.get(Tag(0x0002, 0x0003)).and_then(text),
        },
        buf,
    ))
}

/// Encode a Part 10 header: zeroed preamble, `DICM`, and a fresh meta group.
pub fn encode_header(sop_class: &str, sop_instance: &str, ts_uid: &str) -> Vec<u8> {
    let ui = |e: u16, v: &str| Element::text(Tag(0x0002, e), VR::UI, v);
    let group = vec![
        Element::bytes(Tag(0x0002, 0x0001), VR::OB, vec![0, 1]),
        ui(0x0002, sop_class),
        ui(0x0003, sop_instance),
        ui(0x0010, ts_uid),
        ui(0x0012, IMPLEMENTATION_CLASS_UID),
        Element::text(Tag(0x0002, 0x0013), VR::SH, IMPLEMENTATION_VERSION),
    ];
    let mut body = Vec::new();
    // Values here are short; encoding cannot fail.
    let _ = encode_elements(&group, Syntax::ExplicitLittle, &mut body);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    let gl = Element::bytes(
        Tag(0x0002, 0x0000),
        VR::UL,
        (body.len() as u32).to_le_bytes().to_vec(),
    );
    let _ = encode_elements(std::slice::from_ref(&gl), Syntax::ExplicitLittle, &mut out);
    out.extend_from_slice(&body);
    out
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// A reader that fails past a byte limit (inflate bombs).
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other("inflate limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What [`deidentify_part10`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub outcome: Outcome,
    /// The input's meta group.
    pub meta: Meta,
    /// The Media Storage SOP Instance UID written in the output's meta group.
    pub sop_instance_uid: String,
}

/// De-identify a Part 10 stream into `w`. `w` holds a complete file only when this returns
/// `Ok`. Deflated input is written as Explicit VR Little Endian.
pub fn deidentify_part10(
    r: impl Read,
    w: &mut impl Write,
    deid: &Arc<Deidentifier>,
    cap: usize,
) -> Result<Written, FileError> {
    let mut r = r;
    let (meta, first) = read_meta(&mut r)?;
    if meta.sop_class_uid.as_deref() == Some(MEDIA_STORAGE_DIRECTORY) {
        return Err(FileError::Dicomdir);
    }
    let (mut source, out_ts): (Box<dyn Read + '_>, &str) = if meta.transfer_syntax.deflated {
        let chained = std::io::Cursor::new(first).chain(r);
        let inflated = flate2::read::DeflateDecoder::new(chained);
        (
            Box::new(Limited {
                inner: inflated,
                left: MAX_INFLATED,
            }),
            EXPLICIT_VR_LE,
        )
    } else {
        (
            Box::new(std::io::Cursor::new(first).chain(r)),
            meta.transfer_syntax.uid.as_str(),
        )
    };
    let mut stream =
        StreamDeid::with_syntax(Arc::clone(deid), meta.transfer_syntax.syntax).with_cap(cap);
    let mut held = Vec::new(); // output until the head is done (the meta needs its UID)
    let mut header_written = false;
    let mut written_uid = String::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + 4096);
    loop {
        let n = match source.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.to_string() == "inflate limit" => return Err(FileError::InflateLimit),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        stream.push(chunk.get(..n).unwrap_or_default(), &mut out)?;
        if !header_written {
            held.append(&mut out);
            if let Some(rep) = stream.report().filter(|_| stream.head_done()) {
                let (header, uid) = header_for(rep, &meta, deid, out_ts);
                written_uid = uid;
                w.write_all(&header)?;
                w.write_all(&held)?;
                held = Vec::new();
                header_written = true;
            }
        } else {
            w.write_all(&out)?;
            out.clear();
        }
    }
    let outcome = stream.finish(&mut out)?;
    if !header_written {
        let (header, uid) = header_for(&outcome.report, &meta, deid, out_ts);
        written_uid = uid;
        w.write_all(&header)?;
        w.write_all(&held)?;
    }
    w.write_all(&out)?;
    w.flush()?;
    Ok(Written {
        outcome,
        meta,
        sop_instance_uid: written_uid,
    })
}

fn header_for(
    rep: &crate::transform::Report,
    meta: &Meta,
    deid: &Deidentifier,
    ts: &str,
) -> (Vec<u8>, String) {
    let class = rep
        .sop_class_uid
        .clone()
        .or_else(|| meta.sop_class_uid.clone())
        .unwrap_or_default();
    let inst = rep.sop_instance_uid.clone().unwrap_or_else(|| {
        meta.sop_instance_uid
            .as_deref()
            .map(|u| deid.map_uid(u))
            .unwrap_or_default()
    });
    (encode_header(&class, &inst, ts), inst)
}

/// A UID that is safe to use as a file name (PS3.5 9.1 syntax, at most 64 characters).
pub fn is_valid_uid(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !u.starts_with('.')
        && !u.ends_with('.')
        && !u.contains("..")
}

/// The result of de-identifying one file.
#[derive(Debug)]
pub struct FileResult {
    pub output: PathBuf,
    pub outcome: Outcome,
    pub input_sha256: String,
}

/// De-identify `input` into `out_dir/<new SOP Instance UID>.dcm` (or `<sha256>.dcm` when the
/// UID is missing or unusable as a name), via a temporary file renamed into place. On error
/// nothing is left in `out_dir`; the input's SHA-256 is returned with the error when known.
pub fn deidentify_file(
    input: &Path,
    deid: &Arc<Deidentifier>,
    out_dir: &Path,
    cap: Option<usize>,
) -> Result<FileResult, (FileError, Option<String>)> {
    let f = File::open(input).map_err(|e| (e.into(), None))?;
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(CHUNK, f),
        hash: Sha256::new(),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".radguard-deid-")
        .suffix(".partial")
        .tempfile_in(out_dir)
        .map_err(|e| (e.into(), None))?;
    let mut w = std::io::BufWriter::with_capacity(CHUNK, tmp);
    let res = deidentify_part10(&mut hashing, &mut w, deid, cap.unwrap_or(DEFAULT_HEAD_CAP));
    // Hash the rest of the input too (the stream may stop before EOF on error).
    let _ = std::io::copy(&mut hashing, &mut std::io::sink());
    let sha = hex::encode(hashing.hash.finalize());
    let written = res.map_err(|e| (e, Some(sha.clone())))?;
    let outcome = written.outcome;
    let tmp = w
        .into_inner()
        .map_err(|e| (e.into_error().into(), Some(sha.clone())))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| (e.into(), Some(sha.clone())))?;
    let name = if is_valid_uid(&written.sop_instance_uid) {
        format!("{}.dcm", written.sop_instance_uid)
    } else {
        format!("{sha}.dcm")
    };
    let output = out_dir.join(&name);
    if let Err(e) = tmp.persist_noclobber(&output) {
        // Same name: the same instance again (identical output, fine), or another instance
        // claiming the same UID (refused: never overwrite an output).
        let same = match (std::fs::read(e.file.path()), std::fs::read(&output)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err((FileError::DuplicateInstance(name), Some(sha)));
        }
    }
    Ok(FileResult {
        output,
        outcome,
        input_sha256: sha,
    })
}

/// Read a whole Part 10 file into a data set (for checks; the pixel data is read too).
pub fn read_file(path: &Path) -> Result<(Meta, DataSet), FileError> {
    let mut f = BufReader::new(File::open(path)?);
    let (meta, first) = read_meta(&mut f)?;
    let mut rest = first;
    if meta.transfer_syntax.deflated {
        let mut inflated = Vec::new();
        let chained = std::io::Cursor::new(rest).chain(f);
        let mut d = Limited {
            inner: flate2::read::DeflateDecoder::new(chained),
            left: MAX_INFLATED,
        };
        d.read_to_end(&mut inflated).map_err(|e| {
            if e.to_string() == "inflate limit" {
                FileError::InflateLimit
            } else {
                FileError::Io(e)
            }
        })?;
        rest = inflated;
    } else {
        f.read_to_end(&mut rest)?;
    }
    let ds = parse_dataset(&rest, meta.transfer_syntax.syntax).map_err(DeidError::from)?;
    Ok((meta, ds))
}

/// The SOP Class and Instance UIDs of a data set, as text.
pub fn sop_uids(ds: &DataSet) -> (Option<String>, Option<String>) {
    let t = |tag| {
        ds.text(tag)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    };
    (t(SOP_CLASS_UID), t(SOP_INSTANCE_UID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_names() {
        assert!(is_valid_uid("1.2.3"));
        assert!(!is_valid_uid("../1.2"));
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("1.2."));
        assert!(!is_valid_uid(""));
        assert!(!is_valid_uid(&"1".repeat(65)));
    }

    #[test]
    fn header_round_trip() {
        let h = encode_header("1.2.840.10008.5.1.4.1.1.2", "2.25.1", EXPLICIT_VR_LE);
        let mut extra = h.clone();
        extra.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T']);
        let (meta, rest) = read_meta(&mut std::io::Cursor::new(extra)).unwrap();
        assert_eq!(meta.sop_instance_uid.as_deref(), Some("2.25.1"));
        assert_eq!(meta.transfer_syntax.uid, EXPLICIT_VR_LE);
        assert_eq!(rest.len(), 10);
        assert!(matches!(
            read_meta(&mut std::io::Cursor::new(vec![0u8; 200])),
            Err(FileError::NotPart10)
        ));
    }
}
