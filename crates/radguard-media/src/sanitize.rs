//! Content disarm and reconstruction: parse a file, rebuild it from the parsed model.
//!
//! The output is a new Part 10 file: 128 zero bytes, `DICM`, a meta group rebuilt from the
//! data set by [`radguard_dicom::part10::write_head`] (Media Storage SOP Class/Instance UID from
//! SOP Class/Instance UID, the product's one Implementation Class UID), then the data set.
//! The data set is read into a tree by the one grammar ([`radguard_dicom::tree`], under
//! [`Limits::SCANNER`], the scan's own limits) and written back from the tree in the input's
//! encoding, each sequence and item in the length form it was read with: the output's data set
//! is the input's bytes but for what was dropped, padded to even length or recomputed (group
//! lengths). Deflated data sets are written inflated (Explicit VR Little Endian). Bytes after
//! the data set are never read into the model, so they cannot reach the output. Every output is
//! scanned again before it is written; anything that is not `clean` is quarantined instead.
//!
//! Safety of paths: the output name is the SOP Instance UID after [`Uid::new`] validated it
//! (digits and dots only, so no separators and no `..`), or the SHA-256 of the output. The
//! input name is never used. Files are created with no-clobber semantics inside the output
//! folder, and the `quarantine` folder is refused if it is a symbolic link.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::write_head;
use radguard_dicom::tokens::TagStr;
use radguard_dicom::tree::{self, pad, DataSet, Element, Lengths, TreeOptions, UnSequences, Value};
use radguard_dicom::ts::{
    Encoding, TransferSyntax, EXPLICIT_VR_LE, JPIP_HTJ2K_REFERENCED, JPIP_HTJ2K_REFERENCED_DEFLATE,
    JPIP_REFERENCED, JPIP_REFERENCED_DEFLATE,
};
use radguard_dicom::types::Uid;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::content::{ContentHit, ContentScanner};
use crate::report::{FileReport, FindingCode, Severity, Verdict};
use crate::{scan_bytes, scan_path, ScanOptions};

/// (0008,0016) SOP Class UID.
const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
/// (0008,0018) SOP Instance UID.
const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
/// (0042,0011) Encapsulated Document.
const ENCAPSULATED_DOCUMENT: Tag = Tag(0x0042, 0x0011);

/// How the sanitizer reads a data set: strictly (a repeated or out-of-order element is read
/// differently by different parsers, so the file is quarantined, not rebuilt), and with UN
/// kept as it came, so that the output keeps the input's VRs and encoding.
const SANITIZE_TREE: TreeOptions = TreeOptions {
    strict_order: true,
    un_sequences: UnSequences::Keep,
};

/// What to remove while rebuilding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SanitizeOptions {
    /// Options for the scans before and after rebuilding.
    pub scan: ScanOptions,
    /// Drop private elements (odd groups), except blocks whose Private Creator is in
    /// `keep_private_creators`. Private elements holding executables are dropped always.
    pub drop_private: bool,
    /// Private Creator values (exact, trailing spaces ignored) whose blocks are kept when
    /// `drop_private` is set.
    pub keep_private_creators: Vec<String>,
    /// Drop overlay groups (6000–601E,xxxx).
    pub drop_overlays: bool,
    /// Do not import instances that carry an Encapsulated Document (0042,0011): they are
    /// quarantined instead.
    pub drop_encapsulated_documents: bool,
    /// Largest input read into memory for rebuilding. Default: 1 GiB.
    pub max_input_bytes: u64,
}

impl Default for SanitizeOptions {
    fn default() -> Self {
        SanitizeOptions {
            scan: ScanOptions::default(),
            drop_private: false,
            keep_private_creators: Vec::new(),
            drop_overlays: false,
            drop_encapsulated_documents: false,
            max_input_bytes: 1 << 30,
        }
    }
}

/// What happened to one input.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SanitizeOutcome {
    /// A clean copy was written (or an identical one was already there).
    Written {
        input: PathBuf,
        output: PathBuf,
        sop_instance_uid: Option<String>,
        /// What the rebuild changed, for people.
        changes: Vec<String>,
        /// The same content was already in the output folder.
        duplicate: bool,
    },
    /// The input could not be made safe; a copy and a reason file are in `quarantine/`.
    Quarantined {
        input: PathBuf,
        copy: PathBuf,
        reason_file: PathBuf,
        reasons: Vec<String>,
    },
    /// Not an instance to import (a DICOMDIR, which refers to the input names).
    Skipped { input: PathBuf, reason: String },
}

/// Failures that are not the input's fault: the output folder or the input cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SanitizeError {
    #[error("output folder {path}: {source}")]
    OutDir { path: PathBuf, source: io::Error },
    #[error("quarantine folder {path} is not a plain folder (symbolic link?)")]
    QuarantineNotDir { path: PathBuf },
    #[error("reading {path}: {source}")]
    Input { path: PathBuf, source: io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Rebuilds `input` into `out_dir` (which must exist). The input is only read.
pub fn sanitize_file(
    input: &Path,
    out_dir: &Path,
    opts: &SanitizeOptions,
) -> Result<SanitizeOutcome, SanitizeError> {
    match fs::metadata(out_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(SanitizeError::OutDir {
                path: out_dir.to_path_buf(),
                source: io::Error::other("not a folder"),
            })
        }
        Err(e) => {
            return Err(SanitizeError::OutDir {
                path: out_dir.to_path_buf(),
                source: e,
            })
        }
    }
    let input_err = |e| SanitizeError::Input {
        path: input.to_path_buf(),
        source: e,
    };
    let meta = fs::metadata(input).map_err(input_err)?;
    if !meta.is_file() {
        return Ok(SanitizeOutcome::Skipped {
            input: input.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    let report = scan_path(input, &opts.scan);
    if report.facts.as_ref().is_some_and(|f| f.is_dicomdir) {
        return Ok(SanitizeOutcome::Skipped {
            input: input.to_path_buf(),
            reason: "DICOMDIR: it names the input files; build a new one for the sanitized set"
                .into(),
        });
    }
    let mut reasons = Vec::new();
    if report.verdict == Verdict::NotDicom {
        reasons.push("not a DICOM file".to_string());
    } else if report
        .findings
        .iter()
        .any(|f| f.code == FindingCode::NoPart10Header)
    {
        reasons.push("no Part 10 header (raw data set); cannot tell its transfer syntax".into());
    } else if meta.len() > opts.max_input_bytes {
        reasons.push(format!(
            "{} bytes, more than the {}-byte limit for rebuilding",
            meta.len(),
            opts.max_input_bytes
        ));
    }
    // Structural errors mean another parser may read the file differently from ours (and a
    // deflate bomb must not be inflated by a parser without limits): do not rebuild those.
    // Meta group errors are fine: the meta group is rebuilt from the data set.
    for f in &report.findings {
        let fixable = matches!(
            f.code,
            FindingCode::MetaGroupLength
                | FindingCode::MetaMismatch
                | FindingCode::MetaInvalid
                | FindingCode::PreambleExecutable
                | FindingCode::PreambleDosHeader
                | FindingCode::TrailingData
                // Private ones are dropped below; public ones make the file unfixable there.
                | FindingCode::EmbeddedExecutable
        );
        if f.severity >= Severity::Error && f.code != FindingCode::Io && !fixable {
            reasons.push(format!("{} {}: {}", f.severity, f.code, f.message));
        } else if f.code == FindingCode::Io {
            reasons.push(format!("cannot be read: {}", f.message));
        }
    }
    if !reasons.is_empty() {
        return quarantine(input, out_dir, &reasons, &report);
    }
    match rebuild(input, &report, opts).map_err(input_err)? {
        Rebuilt::Ok {
            bytes,
            uid,
            changes,
        } => write_output(input, out_dir, &bytes, uid, changes),
        Rebuilt::Unfixable(reasons) => quarantine(input, out_dir, &reasons, &report),
    }
}

enum Rebuilt {
    Ok {
        bytes: Vec<u8>,
        uid: Option<Uid>,
        changes: Vec<String>,
    },
    Unfixable(Vec<String>),
}

fn rebuild(input: &Path, report: &FileReport, opts: &SanitizeOptions) -> io::Result<Rebuilt> {
    let facts = report.facts.clone().unwrap_or_default();
    let mut changes = Vec::new();
    for f in &report.findings {
        match f.code {
            FindingCode::PreambleExecutable
            | FindingCode::PreambleDosHeader
            | FindingCode::PreambleArchive
            | FindingCode::PreambleTiff
            | FindingCode::PreambleNonZero => {
                push_once(&mut changes, "preamble zeroed".to_string());
            }
            FindingCode::TrailingData => changes.push(format!("dropped: {}", f.message)),
            FindingCode::MetaGroupLength | FindingCode::MetaMismatch | FindingCode::MetaInvalid => {
                push_once(&mut changes, "meta group rebuilt".to_string())
            }
            _ => {}
        }
    }
    // Read the Part 10 file up to the end of its data set; trailing bytes never enter.
    let mut bytes = Vec::new();
    File::open(input)?
        .take(opts.max_input_bytes)
        .read_to_end(&mut bytes)?;
    if let Some(end) = facts.dataset_end {
        if (end as usize) < bytes.len() {
            bytes.truncate(end as usize);
        }
    }
    // Only the data set bytes are parsed: the meta group is not trusted (a wrong group length
    // makes some parsers swallow data set elements) and is rebuilt from scratch.
    let (Some(start), Some(ts_in)) = (facts.dataset_start, facts.transfer_syntax.clone()) else {
        return Ok(Rebuilt::Unfixable(vec!["no Part 10 meta group".into()]));
    };
    let ts = match TransferSyntax::from_uid(&ts_in) {
        Ok(t) if t.known => t,
        _ => {
            return Ok(Rebuilt::Unfixable(vec![format!(
                "unknown transfer syntax {ts_in:?}"
            )]))
        }
    };
    // A start past the end leaves nothing to parse.
    let dataset = usize::try_from(start)
        .ok()
        .and_then(|s| bytes.get(s..))
        .unwrap_or_default();
    // The same grammar and limits as the scan that let the file through; read strictly (an
    // element seen twice or out of order is two data sets to two readers: not rebuilt), UN
    // kept as it came (the output keeps the input's encoding and VRs).
    let mut ds = match tree::parse(dataset, &ts, Limits::SCANNER, SANITIZE_TREE) {
        Ok(ds) => ds,
        Err(e) => {
            return Ok(Rebuilt::Unfixable(vec![format!(
                "cannot be parsed for rebuilding: {e}"
            )]))
        }
    };
    drop(bytes);
    // A deflated data set is written inflated, in the same encoding (PS3.5 §A.5).
    let ts_out = if ts.deflated {
        let plain = match ts.uid() {
            JPIP_REFERENCED_DEFLATE => JPIP_REFERENCED,
            JPIP_HTJ2K_REFERENCED_DEFLATE => JPIP_HTJ2K_REFERENCED,
            _ => EXPLICIT_VR_LE,
        };
        changes.push(format!(
            "deflated data set re-encoded as {}",
            TransferSyntax::from_uid(plain)
                .ok()
                .and_then(|t| t.name())
                .unwrap_or(plain)
        ));
        plain
    } else {
        ts.uid()
    };

    if opts.drop_encapsulated_documents && ds.get(ENCAPSULATED_DOCUMENT).is_some() {
        return Ok(Rebuilt::Unfixable(vec![
            "carries an Encapsulated Document (--drop-encapsulated-documents)".into(),
        ]));
    }
    // Written in the input's encoding (inflated), each sequence and item in the length form
    // it came with: the data set keeps its bytes but for what is dropped or padded here.
    let encoding = ts.encoding;
    let mut cleaned = Cleaned::default();
    let mut unfixable = Vec::new();
    let at = changes.len();
    clean(
        &mut ds,
        encoding,
        0,
        opts,
        &mut cleaned,
        &mut changes,
        &mut unfixable,
    );
    if !unfixable.is_empty() {
        return Ok(Rebuilt::Unfixable(unfixable));
    }
    let summary = [
        (cleaned.overlays, "dropped {} overlay elements"),
        (cleaned.private, "dropped {} private elements"),
    ];
    let summary: Vec<String> = summary
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, f)| f.replace("{}", &n.to_string()))
        .collect();
    changes.splice(at..at, summary);
    if cleaned.padded > 0 {
        changes.push(format!(
            "padded {} odd-length values to even length",
            cleaned.padded
        ));
    }
    if cleaned.group_lengths > 0 {
        changes.push(format!(
            "{} group lengths recomputed",
            cleaned.group_lengths
        ));
    }

    let text = |tag: Tag| {
        ds.text(tag)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let Some(class) = text(SOP_CLASS_UID) else {
        return Ok(Rebuilt::Unfixable(vec!["no SOP Class UID".into()]));
    };
    let Some(instance) = text(SOP_INSTANCE_UID) else {
        return Ok(Rebuilt::Unfixable(vec!["no SOP Instance UID".into()]));
    };
    // The meta group names them: they must be UIDs (the rebuilt file would not scan clean
    // otherwise, and a value longer than a meta element can hold must not reach the writer).
    for (what, v) in [("SOP Class UID", &class), ("SOP Instance UID", &instance)] {
        if let Err(e) = Uid::new(v) {
            return Ok(Rebuilt::Unfixable(vec![format!(
                "{what} {:?} is not a valid UID: {e}",
                v.chars().take(80).collect::<String>()
            )]));
        }
    }
    let uid = Uid::new(&instance).ok();
    let mut out = write_head(&class, &instance, ts_out);
    if let Err(e) = tree::encode_elements_with(&ds.elements, encoding, Lengths::AsRead, &mut out) {
        return Ok(Rebuilt::Unfixable(vec![format!(
            "cannot be re-encoded: {e}"
        )]));
    }
    drop(ds);
    // The rebuilt file must scan clean, or it is not written.
    let check = scan_bytes(&out, &opts.scan);
    if check.verdict != Verdict::Clean {
        let mut r = vec![format!("the rebuilt file is still {}", check.verdict)];
        r.extend(
            check
                .findings
                .iter()
                .filter(|f| f.severity > Severity::Info)
                .map(|f| format!("{} {}: {}", f.severity, f.code, f.message)),
        );
        return Ok(Rebuilt::Unfixable(r));
    }
    Ok(Rebuilt::Ok {
        bytes: out,
        uid,
        changes,
    })
}

fn push_once(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// A private creator element (gggg,0010-00FF) of an odd group (PS3.5 §7.8.1).
fn is_private_creator(tag: Tag) -> bool {
    tag.group() % 2 == 1 && (0x0010..=0x00FF).contains(&tag.element())
}

/// The (group, block) a private element belongs to: a creator reserves block `xx` of
/// (gggg,xx00-xxFF) (PS3.5 §7.8.1); group lengths and other low elements are block 0.
fn private_block(tag: Tag) -> (u16, u16) {
    let block = if tag.element() <= 0x00FF {
        tag.element()
    } else {
        tag.element() >> 8
    };
    (tag.group(), block)
}

/// What [`clean`] did, over the whole tree.
#[derive(Debug, Default)]
struct Cleaned {
    overlays: usize,
    private: usize,
    padded: usize,
    group_lengths: usize,
}

/// Cleans `ds` (encoded in `encoding`) and every item in it, at any depth:
/// - overlay groups dropped (top level, with `drop_overlays`);
/// - private elements dropped but the blocks of the listed creators (with `drop_private`;
///   each item has its own creators, PS3.5 §7.8.1);
/// - private elements holding executables dropped; public ones reported as unfixable;
/// - odd-length values padded to even length (PS3.5 §7.1.1: as the VR says, text with a space,
///   UI and binary with NUL; an odd length is a finding that keeps the output from scanning
///   clean). Encapsulated fragments are left as they are: the pixel data stays identical;
/// - a group length (gggg,0000; retired in data sets, PS3.5 §7.2) rewritten where the size
///   of its group changed, so that it stays what it was; one stale in the input stays as it
///   came, like every byte not changed here.
fn clean(
    ds: &mut DataSet,
    encoding: Encoding,
    depth: usize,
    opts: &SanitizeOptions,
    n: &mut Cleaned,
    changes: &mut Vec<String>,
    unfixable: &mut Vec<String>,
) {
    let before = tree::group_sizes(&ds.elements, encoding, Lengths::AsRead);
    let count = ds.elements.len();
    if depth == 0 && opts.drop_overlays {
        ds.elements
            .retain(|e| !((0x6000..=0x601E).contains(&e.tag.group()) && e.tag.group() % 2 == 0));
    }
    n.overlays += count - ds.elements.len();
    if opts.drop_private {
        n.private += drop_private(ds, &opts.keep_private_creators);
    }
    ds.elements.retain_mut(|e| {
        let enc = tree::item_encoding(e, encoding);
        if let Value::Items(items) = &mut e.value {
            for item in items.iter_mut() {
                clean(item, enc, depth + 1, opts, n, changes, unfixable);
            }
            return true;
        }
        if !holds_executable_value(e) {
            if let Value::Bytes(b) = &mut e.value {
                if b.len() % 2 == 1 {
                    *b = pad(e.vr, std::mem::take(b));
                    n.padded += 1;
                }
            }
            return true;
        }
        if e.tag.group() % 2 == 1 {
            changes.push(format!(
                "dropped private element {} holding executable code{}",
                TagStr(e.tag),
                if depth > 0 { " (in a sequence)" } else { "" }
            ));
            false
        } else {
            unfixable.push(format!(
                "public element {} holds an executable",
                TagStr(e.tag)
            ));
            true
        }
    });
    let after = tree::group_sizes(&ds.elements, encoding, Lengths::AsRead);
    for e in ds.elements.iter_mut().filter(|e| e.tag.element() == 0) {
        let group = e.tag.group();
        let size = after.get(&group).copied().unwrap_or(0);
        if before.get(&group).copied().unwrap_or(0) == size {
            continue;
        }
        let Ok(size) = u32::try_from(size) else {
            unfixable.push(format!(
                "group {group:04X} is too large for its group length"
            ));
            continue;
        };
        let mut v = Vec::with_capacity(4);
        encoding.put_u32(&mut v, size);
        e.value = Value::Bytes(v);
        n.group_lengths += 1;
    }
}

/// Drops the private elements (odd groups) of `ds` but the blocks of the listed creators.
/// Returns how many were dropped.
fn drop_private(ds: &mut DataSet, keep: &[String]) -> usize {
    let kept_blocks: Vec<(u16, u16)> = ds
        .elements
        .iter()
        .filter(|e| is_private_creator(e.tag))
        .filter(|e| {
            e.text_value().is_some_and(|v| {
                let v = String::from_utf8_lossy(v);
                keep.iter().any(|k| k.trim_end() == v)
            })
        })
        .map(|e| (e.tag.group(), e.tag.element()))
        .collect();
    let before = ds.elements.len();
    ds.elements
        .retain(|e| e.tag.group() % 2 == 0 || kept_blocks.contains(&private_block(e.tag)));
    before - ds.elements.len()
}

/// Whether a value (not a sequence) holds an executable: a structurally valid one, or in a
/// private element a bare PE header too (PEDICOM: the DOS header is in the preamble, the rest
/// in a private element).
fn holds_executable_value(e: &Element) -> bool {
    match &e.value {
        Value::Bytes(b) => {
            (b.len() >= 24 && holds_executable(b)) || (e.tag.group() % 2 == 1 && holds_pe_header(b))
        }
        Value::Fragments(frags) => frags.iter().any(|f| holds_executable(f)),
        Value::Items(_) => false,
    }
}

/// Whether bytes hold a structurally valid executable.
fn holds_executable(bytes: &[u8]) -> bool {
    let mut s = ContentScanner::new(false);
    s.feed(bytes, 0);
    s.finish();
    s.hits.iter().any(|h| matches!(h, ContentHit::Exe { .. }))
}

/// Whether bytes hold `PE\0\0`, a known machine type and a PE32/PE32+ optional header magic.
fn holds_pe_header(bytes: &[u8]) -> bool {
    memchr_all(bytes, b"PE\0\0").any(|i| {
        // PE signature (4), file header (20), then the optional header's magic (2).
        let Some(hdr) = bytes.get(i..).and_then(|b| b.first_chunk::<26>()) else {
            return false;
        };
        let [.., m0, m1] = *hdr;
        crate::signature::is_pe_header(hdr).is_some()
            && matches!(u16::from_le_bytes([m0, m1]), 0x10b | 0x20b)
    })
}

fn memchr_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let read = buf
            .get(..n)
            .ok_or_else(|| io::Error::other("read returned more bytes than the buffer holds"))?;
        h.update(read);
    }
    Ok(hex::encode(h.finalize()))
}

/// Writes `bytes` as `dir/name` without ever replacing an existing file. Returns false if
/// the name is taken.
fn create_new(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<bool> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".radguard-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    match tmp.persist_noclobber(dir.join(name)) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

fn write_output(
    input: &Path,
    out_dir: &Path,
    bytes: &[u8],
    uid: Option<Uid>,
    changes: Vec<String>,
) -> Result<SanitizeOutcome, SanitizeError> {
    let hash = sha256_hex(bytes);
    let base = match &uid {
        Some(u) => u.as_str().to_string(),
        None => hash.clone(),
    };
    let werr = |name: &str, e| SanitizeError::Write {
        path: out_dir.join(name),
        source: e,
    };
    for name in [format!("{base}.dcm"), format!("{base}.{}.dcm", &hash[..16])] {
        if create_new(out_dir, &name, bytes).map_err(|e| werr(&name, e))? {
            return Ok(SanitizeOutcome::Written {
                input: input.to_path_buf(),
                output: out_dir.join(&name),
                sop_instance_uid: uid.map(|u| u.as_str().to_string()),
                changes,
                duplicate: false,
            });
        }
        // Taken: identical content is a duplicate, anything else tries the next name.
        let existing = out_dir.join(&name);
        if sha256_file(&existing).ok().as_deref() == Some(hash.as_str()) {
            return Ok(SanitizeOutcome::Written {
                input: input.to_path_buf(),
                output: existing,
                sop_instance_uid: uid.map(|u| u.as_str().to_string()),
                changes,
                duplicate: true,
            });
        }
    }
    Err(werr(
        &base,
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "output names taken by other content",
        ),
    ))
}

fn quarantine(
    input: &Path,
    out_dir: &Path,
    reasons: &[String],
    report: &FileReport,
) -> Result<SanitizeOutcome, SanitizeError> {
    let qdir = out_dir.join("quarantine");
    match fs::symlink_metadata(&qdir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return Err(SanitizeError::QuarantineNotDir { path: qdir }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir(&qdir).map_err(|e| SanitizeError::OutDir {
                path: qdir.clone(),
                source: e,
            })?;
        }
        Err(e) => {
            return Err(SanitizeError::OutDir {
                path: qdir,
                source: e,
            })
        }
    }
    let hash = sha256_file(input).map_err(|e| SanitizeError::Input {
        path: input.to_path_buf(),
        source: e,
    })?;
    let copy_name = format!("{hash}.quarantined");
    let reason_name = format!("{hash}.reason.txt");
    let werr = |name: &str, e| SanitizeError::Write {
        path: qdir.join(name),
        source: e,
    };
    // Copy through a temporary file in the quarantine folder, never replacing anything.
    let copy = qdir.join(&copy_name);
    if fs::symlink_metadata(&copy).is_err() {
        let mut tmp = tempfile::Builder::new()
            .prefix(".radguard-")
            .tempfile_in(&qdir)
            .map_err(|e| werr(&copy_name, e))?;
        let mut f = File::open(input).map_err(|e| SanitizeError::Input {
            path: input.to_path_buf(),
            source: e,
        })?;
        io::copy(&mut f, tmp.as_file_mut()).map_err(|e| werr(&copy_name, e))?;
        match tmp.persist_noclobber(&copy) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(werr(&copy_name, e.error)),
        }
    }
    let mut text = String::new();
    text.push_str(&format!("input: {}\n", input.display()));
    text.push_str(&format!("sha256: {hash}\n"));
    text.push_str(&format!("verdict: {}\n", report.verdict));
    text.push_str("reasons:\n");
    for r in reasons {
        text.push_str(&format!("  - {r}\n"));
    }
    if !report.findings.is_empty() {
        text.push_str("findings:\n");
        for f in &report.findings {
            let off = f
                .offset
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into());
            text.push_str(&format!(
                "  - {} {} @{}: {}\n",
                f.severity, f.code, off, f.message
            ));
        }
    }
    let reason_file = qdir.join(&reason_name);
    // A later run may add another input with the same content: keep the first reason file.
    create_new(&qdir, &reason_name, text.as_bytes()).map_err(|e| werr(&reason_name, e))?;
    Ok(SanitizeOutcome::Quarantined {
        input: input.to_path_buf(),
        copy,
        reason_file,
        reasons: reasons.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use dicom_core::VR;
    use radguard_dicom::part10::read_head;
    use radguard_dicom::tree::Element;
    use radguard_dicom::ts::{Encoding, DEFLATED_EXPLICIT_VR_LE};

    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const INSTANCE: &str = "1.2.826.0.1.3680043.9.7433.3.10";

    fn el(g: u16, e: u16, vr: VR, v: &[u8]) -> Element {
        Element::bytes(Tag(g, e), vr, v.to_vec())
    }

    /// A sequence (or, with VR UN, a UN of undefined length) with undefined length, its
    /// items undefined too.
    fn undefined_seq(g: u16, e: u16, vr: VR, items: Vec<Vec<Element>>) -> Element {
        Element {
            undefined_length: true,
            ..Element::new(
                Tag(g, e),
                vr,
                Value::Items(
                    items
                        .into_iter()
                        .map(|elements| DataSet {
                            elements,
                            undefined_length: true,
                        })
                        .collect(),
                ),
            )
        }
    }

    fn ids() -> Vec<Element> {
        vec![
            el(0x0008, 0x0016, VR::UI, b"1.2.840.10008.5.1.4.1.1.2\0"),
            el(0x0008, 0x0018, VR::UI, b"1.2.826.0.1.3680043.9.7433.3.10\0"),
        ]
    }

    /// A 64-byte ELF header (x86-64 executable).
    fn elf() -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        e[0x10] = 2;
        e[0x12] = 0x3e;
        e[0x14] = 1;
        e
    }

    fn data_set_bytes(ds: &DataSet) -> Vec<u8> {
        let mut out = Vec::new();
        tree::encode_elements_with(
            &ds.elements,
            Encoding::ExplicitLittle,
            Lengths::AsRead,
            &mut out,
        )
        .unwrap();
        out
    }

    /// Writes `ds` as an Explicit VR Little Endian Part 10 file and sanitizes it.
    fn run(ds: &DataSet, opts: &SanitizeOptions) -> (SanitizeOutcome, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.dcm");
        let mut file = write_head(CT, INSTANCE, EXPLICIT_VR_LE);
        file.extend(data_set_bytes(ds));
        fs::write(&input, file).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        (sanitize_file(&input, &out, opts).unwrap(), dir)
    }

    fn output(o: &SanitizeOutcome) -> (Vec<u8>, Vec<String>) {
        let SanitizeOutcome::Written {
            output, changes, ..
        } = o
        else {
            panic!("{o:?}")
        };
        let bytes = fs::read(output).unwrap();
        let head = read_head(&bytes).unwrap();
        (bytes[head.data_start..].to_vec(), changes.clone())
    }

    #[test]
    fn the_data_set_keeps_its_bytes_but_odd_lengths() {
        let mut elements = ids();
        elements.extend([
            undefined_seq(
                0x0008,
                0x1140,
                VR::SQ,
                vec![vec![el(0x0008, 0x1155, VR::UI, b"1.2.3\0")]],
            ),
            el(0x0009, 0x0010, VR::LO, b"ACME 1.0"),
            // A private sequence as UN of undefined length: implicit VR LE inside.
            undefined_seq(
                0x0009,
                0x1001,
                VR::UN,
                vec![vec![el(0x0009, 0x0010, VR::LO, b"ACME")]],
            ),
            // Defined lengths stay defined.
            Element::new(
                Tag(0x0040, 0xA730),
                VR::SQ,
                Value::Items(vec![DataSet::new(vec![el(
                    0x0040,
                    0xA010,
                    VR::CS,
                    b"CONTAINS",
                )])]),
            ),
            el(0x0010, 0x0020, VR::LO, b"ODD"),
        ]);
        elements.sort_by_key(|e| e.tag);
        let ds = DataSet::new(elements);
        let (o, _dir) = run(&ds, &SanitizeOptions::default());
        let (got, changes) = output(&o);
        let mut padded = ds.clone();
        padded.get_mut(Tag(0x0010, 0x0020)).unwrap().value = Value::Bytes(b"ODD ".to_vec());
        assert_eq!(got, data_set_bytes(&padded), "{changes:?}");
        assert_ne!(got, data_set_bytes(&ds));
        assert_eq!(changes, ["padded 1 odd-length values to even length"]);
        // Undefined lengths as they came: two sequences, two items.
        let undefined = got.windows(4).filter(|w| w == &[0xFF; 4]).count();
        assert_eq!(undefined, 4);
    }

    #[test]
    fn private_elements_are_dropped_in_every_item_but_kept_blocks() {
        let item = vec![
            el(0x0011, 0x0010, VR::LO, b"SAFE CREATOR"),
            el(0x0011, 0x1001, VR::LO, b"kept too"),
            el(0x0013, 0x0010, VR::LO, b"OTHER "),
            el(0x0013, 0x1001, VR::OB, &elf()),
        ];
        let mut elements = ids();
        elements.extend([
            el(0x0009, 0x0010, VR::LO, b"ACME"),
            el(0x0009, 0x1001, VR::LO, b"dropped "),
            el(0x0011, 0x0010, VR::LO, b"SAFE CREATOR"),
            el(0x0011, 0x1001, VR::LO, b"kept"),
            undefined_seq(0x0040, 0xA730, VR::SQ, vec![item]),
        ]);
        let mut ds = DataSet::new(elements);
        // A group length that is right in the input is right in the output.
        let size = |ds: &DataSet| {
            let sizes = tree::group_sizes(&ds.elements, Encoding::ExplicitLittle, Lengths::AsRead);
            Value::Bytes((sizes[&0x0040] as u32).to_le_bytes().to_vec())
        };
        ds.put(el(0x0040, 0x0000, VR::UL, &[0; 4]));
        ds.get_mut(Tag(0x0040, 0x0000)).unwrap().value = size(&ds);
        let drop = SanitizeOptions {
            drop_private: true,
            keep_private_creators: vec!["SAFE CREATOR".into()],
            ..SanitizeOptions::default()
        };
        let (o, _dir) = run(&ds, &drop);
        let (got, changes) = output(&o);
        let read = |b: &[u8]| {
            tree::parse_encoded(b, Encoding::ExplicitLittle, Limits::SCANNER, SANITIZE_TREE)
                .unwrap()
        };
        let out = read(&got);
        let tags = |d: &DataSet| d.elements.iter().map(|e| e.tag).collect::<Vec<_>>();
        assert_eq!(
            tags(&out),
            [
                SOP_CLASS_UID,
                SOP_INSTANCE_UID,
                Tag(0x0011, 0x0010),
                Tag(0x0011, 0x1001),
                Tag(0x0040, 0x0000),
                Tag(0x0040, 0xA730)
            ]
        );
        assert_eq!(out.get(Tag(0x0040, 0x0000)).unwrap().value, size(&out));
        assert_ne!(size(&out), size(&ds));
        let Some(Value::Items(items)) = out.get(Tag(0x0040, 0xA730)).map(|e| &e.value) else {
            panic!()
        };
        assert_eq!(tags(&items[0]), [Tag(0x0011, 0x0010), Tag(0x0011, 0x1001)]);
        assert_eq!(
            changes,
            ["dropped 4 private elements", "1 group lengths recomputed"]
        );

        // Without the option, only the executable goes, from inside its item.
        let (o, _dir) = run(&ds, &SanitizeOptions::default());
        let (got, changes) = output(&o);
        let out = read(&got);
        let Some(Value::Items(items)) = out.get(Tag(0x0040, 0xA730)).map(|e| &e.value) else {
            panic!()
        };
        assert_eq!(items[0].elements.len(), 3);
        assert_eq!(out.elements.len(), 8);
        assert_eq!(out.get(Tag(0x0040, 0x0000)).unwrap().value, size(&out));
        assert_eq!(
            changes,
            [
                "dropped private element (0013,1001) holding executable code (in a sequence)",
                "1 group lengths recomputed"
            ]
        );

        // A public element holding one cannot be fixed.
        let mut public = ds.clone();
        public.put(el(0x0042, 0x0011, VR::OB, &elf()));
        let (o, _dir) = run(&public, &SanitizeOptions::default());
        let SanitizeOutcome::Quarantined { reasons, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(reasons, ["public element (0042,0011) holds an executable"]);
    }

    #[test]
    fn deflated_data_sets_are_written_inflated_in_the_matching_syntax() {
        use std::io::Write as _;
        let mut elements = ids();
        elements.push(el(0x0010, 0x0020, VR::LO, b"PID1"));
        let plain = data_set_bytes(&DataSet::new(elements));
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).unwrap();
        let z = z.finish().unwrap();
        for (deflated, inflated) in [
            (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE),
            (JPIP_REFERENCED_DEFLATE, JPIP_REFERENCED),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let input = dir.path().join("in.dcm");
            let mut file = write_head(CT, INSTANCE, deflated);
            file.extend(&z);
            fs::write(&input, file).unwrap();
            let o = sanitize_file(&input, dir.path(), &SanitizeOptions::default()).unwrap();
            let SanitizeOutcome::Written { output, .. } = &o else {
                panic!("{deflated}: {o:?}")
            };
            let bytes = fs::read(output).unwrap();
            let head = read_head(&bytes).unwrap();
            assert_eq!(head.meta.transfer_syntax_uid.as_deref(), Some(inflated));
            assert_eq!(bytes[head.data_start..], plain[..]);
        }
    }

    #[test]
    fn repeated_elements_are_quarantined_not_rebuilt() {
        let mut elements = ids();
        elements.push(el(0x0010, 0x0020, VR::LO, b"PID1"));
        elements.push(el(0x0010, 0x0020, VR::LO, b"PID2"));
        let (o, _dir) = run(&DataSet::new(elements), &SanitizeOptions::default());
        let SanitizeOutcome::Quarantined { reasons, .. } = o else {
            panic!("{o:?}")
        };
        assert!(
            reasons[0].starts_with("cannot be parsed for rebuilding")
                && reasons[0].contains("appears twice"),
            "{reasons:?}"
        );
    }

    #[test]
    fn odd_values_are_padded_as_the_vr_says_and_group_lengths_follow() {
        let mut ds = DataSet::new(vec![
            el(0x0008, 0x0000, VR::UL, &44u32.to_le_bytes()),
            el(0x0008, 0x0018, VR::UI, b"1.2.3"),
            el(0x0009, 0x0000, VR::UL, &[0; 4]),
            el(0x0009, 0x1001, VR::OB, b"\x01"),
            el(0x0010, 0x0000, VR::UL, &[0; 4]),
            el(0x0010, 0x0010, VR::PN, b"DOE"),
            el(0x0010, 0x0020, VR::LO, b"EVEN"),
            Element::new(
                Tag(0x7FE0, 0x0010),
                VR::OB,
                Value::Fragments(vec![vec![], b"odd".to_vec()]),
            ),
        ]);
        let mut n = Cleaned::default();
        let (mut changes, mut unfixable) = (Vec::new(), Vec::new());
        let opts = SanitizeOptions::default();
        let enc = Encoding::ExplicitLittle;
        clean(&mut ds, enc, 0, &opts, &mut n, &mut changes, &mut unfixable);
        assert_eq!((n.padded, n.group_lengths), (3, 3));
        let values: Vec<&Value> = ds.elements.iter().map(|e| &e.value).collect();
        assert_eq!(
            values,
            [
                // 8 + 5 was 13 (stale 44 kept as it came had the group not changed).
                &Value::Bytes(14u32.to_le_bytes().to_vec()),
                &Value::Bytes(b"1.2.3\0".to_vec()),
                &Value::Bytes(14u32.to_le_bytes().to_vec()),
                &Value::Bytes(b"\x01\0".to_vec()),
                &Value::Bytes(24u32.to_le_bytes().to_vec()),
                &Value::Bytes(b"DOE ".to_vec()),
                &Value::Bytes(b"EVEN".to_vec()),
                // Fragments are not padded: the pixel data stays identical.
                &Value::Fragments(vec![vec![], b"odd".to_vec()]),
            ]
        );
        assert!(changes.is_empty() && unfixable.is_empty());
        // Nothing changed in a group: its group length stays as it came, stale or not.
        let mut ds = DataSet::new(vec![
            el(0x0008, 0x0000, VR::UL, &99u32.to_le_bytes()),
            el(0x0008, 0x0018, VR::UI, b"1.2.30"),
        ]);
        let kept = ds.clone();
        let mut n = Cleaned::default();
        clean(&mut ds, enc, 0, &opts, &mut n, &mut changes, &mut unfixable);
        assert_eq!(ds, kept);
    }
}
