//! DICOM Part 10 files: read the preamble and meta group (the one File Meta reader,
//! [`radguard_dicom::part10::read_head`]), stream the data set through [`StreamDeid`] (inflating
//! a deflated one with [`radguard_dicom::inflate::Inflater`]'s decompression-bomb caps), and write
//! a new file (zeroed preamble, meta rebuilt by [`radguard_dicom::part10::write_head`] with the new
//! SOP Instance UID). Files are written to a temporary name in the output folder and renamed
//! only when complete, so a failure never leaves a half-written output.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use radguard_dicom::inflate::{DataSetReader, InflateError, Inflater};
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::{read_head, write_head, MetaError, MetaIssue, MAX_META, PREAMBLE_LEN};
use radguard_dicom::tokens::AnomalyKind;
use radguard_dicom::ts;
use sha2::{Digest, Sha256};

use crate::codec::{tree_builder, DataSet, ParseError, TransferSyntax};
use crate::stream::{Outcome, StreamDeid, DEFAULT_HEAD_CAP};
use crate::transform::{DeidError, Deidentifier, SOP_CLASS_UID, SOP_INSTANCE_UID};

const CHUNK: usize = 256 * 1024;

/// Why a file could not be de-identified.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a DICOM Part 10 file (no DICM prefix)")]
    NotPart10,
    #[error("bad file meta information: {0}")]
    BadMeta(String),
    #[error("unsupported transfer syntax {0}")]
    UnsupportedTransferSyntax(String),
    #[error("{0}")]
    Inflate(#[from] InflateError),
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

/// Reads the preamble and meta group; returns the meta and the data set bytes already read.
///
/// A transfer syntax that de-identification cannot read (not a valid UID, or not one PS3.6
/// lists) is refused. Elements repeated or out of order in the meta group are refused too:
/// two readers could take different Transfer Syntax UIDs from it.
pub fn read_meta(r: &mut impl Read) -> Result<(Meta, Vec<u8>), FileError> {
    // Enough for any meta group read_head accepts: preamble, prefix and MAX_META + 1 bytes.
    let want = PREAMBLE_LEN + 4 + MAX_META + 1;
    let mut buf = Vec::with_capacity(4096);
    r.by_ref().take(want as u64).read_to_end(&mut buf)?;
    let head = read_head(&buf).map_err(|e| match e {
        MetaError::NoPrefix => FileError::NotPart10,
        e => FileError::BadMeta(e.to_string()),
    })?;
    // Only irregularities of group 0002 itself: the reader also reports the first data set
    // element as out of order after the meta group when its group is 0000.
    if let Some(issue) = head.issues.iter().find(|i| match i {
        MetaIssue::Anomaly(
            AnomalyKind::Duplicate { tag } | AnomalyKind::OutOfOrder { tag, .. },
        ) => tag.group() == 0x0002,
        _ => false,
    }) {
        return Err(FileError::BadMeta(issue.to_string()));
    }
    let ts_uid = head
        .meta
        .transfer_syntax_uid
        .clone()
        .ok_or_else(|| FileError::BadMeta("no Transfer Syntax UID (0002,0010)".into()))?;
    let transfer_syntax = match TransferSyntax::from_uid(&ts_uid) {
        Ok(t) if t.known => t,
        _ => return Err(FileError::UnsupportedTransferSyntax(ts_uid)),
    };
    let rest = buf.split_off(head.data_start.min(buf.len()));
    Ok((
        Meta {
            transfer_syntax,
            sop_class_uid: head.meta.media_storage_sop_class_uid,
            sop_instance_uid: head.meta.media_storage_sop_instance_uid,
        },
        rest,
    ))
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

/// What [`deidentify_part10`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub outcome: Outcome,
    /// The input's meta group.
    pub meta: Meta,
    /// The Media Storage SOP Instance UID written in the output's meta group.
    pub sop_instance_uid: String,
}

/// The transfer syntax a de-identified copy of a deflated data set is written in: the same
/// encoding without the deflate (PS3.5 §A.5; the JPIP Referenced Deflate syntaxes keep their
/// referenced pixel data).
fn inflated_uid(t: &TransferSyntax) -> &str {
    match t.uid() {
        ts::JPIP_REFERENCED_DEFLATE => ts::JPIP_REFERENCED,
        ts::JPIP_HTJ2K_REFERENCED_DEFLATE => ts::JPIP_HTJ2K_REFERENCED,
        _ if t.deflated => ts::EXPLICIT_VR_LE,
        uid => uid,
    }
}

/// Where the de-identified data set goes: held until the head is done (the meta group needs
/// the new SOP Instance UID), then written through.
struct Output<'a, W: Write> {
    w: &'a mut W,
    stream: StreamDeid,
    meta: &'a Meta,
    deid: &'a Deidentifier,
    out_ts: &'a str,
    held: Vec<u8>,
    out: Vec<u8>,
    uid: Option<String>,
}

impl<W: Write> Output<'_, W> {
    /// Feeds data set bytes (inflated, when the file is deflated).
    fn push(&mut self, bytes: &[u8]) -> Result<(), FileError> {
        self.stream.push(bytes, &mut self.out)?;
        if self.uid.is_none() {
            self.held.append(&mut self.out);
            if let Some(rep) = self.stream.report().filter(|_| self.stream.head_done()) {
                let (header, uid) = header_for(rep, self.meta, self.deid, self.out_ts);
                self.w.write_all(&header)?;
                self.w.write_all(&std::mem::take(&mut self.held))?;
                self.uid = Some(uid);
            }
        } else {
            self.w.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    fn finish(self) -> Result<(Outcome, String), FileError> {
        let Output {
            w,
            stream,
            meta,
            deid,
            out_ts,
            held,
            mut out,
            uid,
        } = self;
        let outcome = stream.finish(&mut out)?;
        let uid = match uid {
            Some(uid) => uid,
            None => {
                let (header, uid) = header_for(&outcome.report, meta, deid, out_ts);
                w.write_all(&header)?;
                w.write_all(&held)?;
                uid
            }
        };
        w.write_all(&out)?;
        w.flush()?;
        Ok((outcome, uid))
    }
}

/// De-identify a Part 10 stream into `w`. `w` holds a complete file only when this returns
/// `Ok`. A deflated data set is inflated (under [`Limits::OFFLINE`]'s decompression-bomb caps)
/// and written without the deflate; bytes after the end of its deflate stream are dropped.
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
    let stream =
        StreamDeid::with_encoding(Arc::clone(deid), meta.transfer_syntax.encoding).with_cap(cap);
    let mut inflater = meta
        .transfer_syntax
        .deflated
        .then(|| Inflater::new(Limits::OFFLINE));
    let mut o = Output {
        w,
        stream,
        meta: &meta,
        deid,
        out_ts: inflated_uid(&meta.transfer_syntax),
        held: Vec::new(),
        out: Vec::with_capacity(CHUNK + 4096),
        uid: None,
    };
    let mut source = std::io::Cursor::new(first).chain(r);
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = source.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        let bytes = chunk.get(..n).unwrap_or_default();
        match inflater.as_mut() {
            None => o.push(bytes)?,
            Some(inf) => {
                let mut failed = None;
                inf.feed(bytes, |plain| {
                    if failed.is_none() {
                        failed = o.push(plain).err();
                    }
                })?;
                if let Some(e) = failed {
                    return Err(e);
                }
            }
        }
    }
    if inflater.as_ref().is_some_and(|inf| !inf.done()) {
        return Err(InflateError::Truncated.into());
    }
    let (outcome, sop_instance_uid) = o.finish()?;
    Ok(Written {
        outcome,
        meta,
        sop_instance_uid,
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
    (write_head(&class, &inst, ts), inst)
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

/// Read a whole Part 10 file into a data set (for checks; the pixel data is read too), a
/// deflated one through the inflater, under [`Limits::OFFLINE`].
pub fn read_file(path: &Path) -> Result<(Meta, DataSet), FileError> {
    let mut f = BufReader::new(File::open(path)?);
    let (meta, first) = read_meta(&mut f)?;
    let mut reader = DataSetReader::new(&meta.transfer_syntax, Limits::OFFLINE);
    let mut tree = tree_builder(Limits::OFFLINE);
    tree.read(&mut reader, &first).map_err(DeidError::from)?;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        tree.read(&mut reader, chunk.get(..n).unwrap_or_default())
            .map_err(DeidError::from)?;
    }
    reader
        .finish()
        .map_err(|e| DeidError::from(ParseError::from(e)))?;
    let ds = tree.finish().map_err(DeidError::from)?;
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
    fn meta_round_trip() {
        let h = write_head("1.2.840.10008.5.1.4.1.1.2", "2.25.1", ts::EXPLICIT_VR_LE);
        let mut extra = h.clone();
        extra.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T']);
        let (meta, rest) = read_meta(&mut std::io::Cursor::new(extra)).unwrap();
        assert_eq!(meta.sop_instance_uid.as_deref(), Some("2.25.1"));
        assert_eq!(meta.transfer_syntax.uid(), ts::EXPLICIT_VR_LE);
        assert_eq!(rest.len(), 10);
        assert!(matches!(
            read_meta(&mut std::io::Cursor::new(vec![0u8; 200])),
            Err(FileError::NotPart10)
        ));
        // Syntaxes de-identification cannot read are refused by name.
        for uid in ["1.2.840.10008.1.2.4.999", "1.3.6.1.4.1.5962.300.1", "1..2"] {
            let h = write_head("1.2.840.10008.5.1.4.1.1.2", "2.25.1", uid);
            assert!(
                matches!(
                    read_meta(&mut std::io::Cursor::new(h)),
                    Err(FileError::UnsupportedTransferSyntax(u)) if u == uid
                ),
                "{uid}"
            );
        }
    }

    #[test]
    fn a_repeated_transfer_syntax_in_the_meta_is_refused() {
        let h = write_head("1.2.840.10008.5.1.4.1.1.2", "2.25.1", ts::EXPLICIT_VR_LE);
        // (0002,0010) again after (0002,0013), with the group length grown to match.
        let mut f = h.clone();
        let extra = [
            0x02, 0x00, 0x10, 0x00, b'U', b'I', 18, 0, b'1', b'.', b'2', b'.', b'8', b'4', b'0',
            b'.', b'1', b'0', b'0', b'0', b'8', b'.', b'1', b'.', b'2', 0,
        ];
        f.extend_from_slice(&extra);
        let gl = u32::from_le_bytes(f[140..144].try_into().unwrap()) + extra.len() as u32;
        f[140..144].copy_from_slice(&gl.to_le_bytes());
        assert!(matches!(
            read_meta(&mut std::io::Cursor::new(f)),
            Err(FileError::BadMeta(_))
        ));
    }

    fn deflated_file(data_set: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut f = write_head(
            "1.2.840.10008.5.1.4.1.1.2",
            "2.25.1",
            ts::DEFLATED_EXPLICIT_VR_LE,
        );
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data_set).unwrap();
        f.extend_from_slice(&z.finish().unwrap());
        f
    }

    fn deid() -> Arc<Deidentifier> {
        let p = crate::Profile::new(crate::ProfileName::Basic, []).unwrap();
        let k = crate::SiteKey::from_bytes(b"radguard-test-key-0123456789abcdef").unwrap();
        Arc::new(Deidentifier::new(p, k))
    }

    #[test]
    fn deflated_files_are_inflated_under_the_bomb_caps() {
        // (0008,0060) CS "CT", (0010,0010) PN "DOE^JOHN": de-identified, written inflated.
        let mut ds = vec![0x08, 0x00, 0x60, 0x00, b'C', b'S', 2, 0, b'C', b'T'];
        ds.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 8, 0]);
        ds.extend_from_slice(b"DOE^JOHN");
        let mut out = Vec::new();
        deidentify_part10(
            std::io::Cursor::new(deflated_file(&ds)),
            &mut out,
            &deid(),
            DEFAULT_HEAD_CAP,
        )
        .unwrap();
        let h = read_head(&out).unwrap();
        assert_eq!(
            h.meta.transfer_syntax_uid.as_deref(),
            Some(ts::EXPLICIT_VR_LE)
        );
        assert!(!out.windows(8).any(|w| w == b"DOE^JOHN"));
        // Cut short: the deflate stream never ends.
        let f = deflated_file(&ds);
        let r = deidentify_part10(
            std::io::Cursor::new(&f[..f.len() - 4]),
            &mut Vec::new(),
            &deid(),
            DEFAULT_HEAD_CAP,
        );
        assert!(matches!(r, Err(FileError::Inflate(_))), "{r:?}");
        // 40 MiB of zeros in one OB value: past the 200:1 ratio, refused while inflating.
        let mut bomb = vec![0x09, 0x00, 0x10, 0x10, b'O', b'B', 0, 0];
        bomb.extend_from_slice(&(40u32 << 20).to_le_bytes());
        bomb.resize(12 + (40 << 20), 0);
        // (A head cap above the value's size, so that only the inflater can refuse it.)
        let r = deidentify_part10(
            std::io::Cursor::new(deflated_file(&bomb)),
            &mut Vec::new(),
            &deid(),
            64 << 20,
        );
        assert!(
            matches!(r, Err(FileError::Inflate(InflateError::Ratio { .. }))),
            "{r:?}"
        );
    }
}
