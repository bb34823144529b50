//! Content disarm and reconstruction: parse a file, rebuild it from the parsed model.
//!
//! The output is a new Part 10 file: 128 zero bytes, `DICM`, a meta group rebuilt from the
//! data set by [`radguard_dicom::part10::write_head`] (Media Storage SOP Class/Instance UID from
//! SOP Class/Instance UID, the product's one Implementation Class UID), then the data set
//! re-encoded by `dicom-object` in the input's transfer syntax (Deflated becomes Explicit VR
//! Little Endian). Bytes after the data set are
//! never read into the model, so they cannot reach the output. Every output is scanned again
//! before it is written; anything that is not `clean` is quarantined instead.
//!
//! Safety of paths: the output name is the SOP Instance UID after [`Uid::new`] validated it
//! (digits and dots only, so no separators and no `..`), or the SHA-256 of the output. The
//! input name is never used. Files are created with no-clobber semantics inside the output
//! folder, and the `quarantine` folder is refused if it is a symbolic link.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use dicom_core::header::Header as _;
use dicom_core::value::Value;
use dicom_core::Tag;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use radguard_dicom::part10::write_head;
use radguard_dicom::ts::{TransferSyntax, EXPLICIT_VR_LE};
use radguard_dicom::types::Uid;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::content::{ContentHit, ContentScanner};
use crate::report::{FileReport, FindingCode, Severity, Verdict};
use crate::{scan_bytes, scan_path, ScanOptions};

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
    let ts_info = match TransferSyntax::from_uid(&ts_in) {
        Ok(t) if t.known => t,
        _ => {
            return Ok(Rebuilt::Unfixable(vec![format!(
                "unknown transfer syntax {ts_in:?}"
            )]))
        }
    };
    let Some(ts) = TransferSyntaxRegistry.get(ts_info.uid()) else {
        return Ok(Rebuilt::Unfixable(vec![format!(
            "transfer syntax {ts_in:?} is not supported for rebuilding"
        )]));
    };
    // A start past the end leaves nothing to parse.
    let dataset = usize::try_from(start)
        .ok()
        .and_then(|s| bytes.get(s..))
        .unwrap_or_default();
    let parsed = InMemDicomObject::read_dataset_with_ts(dataset, ts);
    let mut obj: InMemDicomObject = match parsed {
        Ok(o) => o,
        Err(e) => {
            return Ok(Rebuilt::Unfixable(vec![format!(
                "cannot be parsed for rebuilding: {e}"
            )]))
        }
    };
    drop(bytes);
    let ts_out = if ts_info.deflated {
        changes.push("deflated data set re-encoded as Explicit VR Little Endian".into());
        EXPLICIT_VR_LE
    } else {
        ts_info.uid()
    };
    let Some(ts_out_codec) = TransferSyntaxRegistry.get(ts_out) else {
        return Ok(Rebuilt::Unfixable(vec![format!(
            "transfer syntax {ts_out:?} is not supported for rebuilding"
        )]));
    };

    if opts.drop_encapsulated_documents && obj.get(Tag(0x0042, 0x0011)).is_some() {
        return Ok(Rebuilt::Unfixable(vec![
            "carries an Encapsulated Document (--drop-encapsulated-documents)".into(),
        ]));
    }
    if opts.drop_overlays {
        let overlay: Vec<Tag> = obj
            .tags()
            .filter(|t| (0x6000..=0x601E).contains(&t.group()) && t.group() % 2 == 0)
            .collect();
        if !overlay.is_empty() {
            changes.push(format!("dropped {} overlay elements", overlay.len()));
        }
        for t in overlay {
            obj.remove_element(t);
        }
    }
    if opts.drop_private {
        let n = drop_private(&mut obj, &opts.keep_private_creators);
        if n > 0 {
            changes.push(format!("dropped {n} private elements"));
        }
    }
    let mut unfixable = Vec::new();
    disarm(&mut obj, 0, &mut changes, &mut unfixable);
    if !unfixable.is_empty() {
        return Ok(Rebuilt::Unfixable(unfixable));
    }

    let text = |tag: Tag| {
        obj.get(tag)
            .and_then(|e| e.value().to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
    };
    let Some(class) = text(Tag(0x0008, 0x0016)) else {
        return Ok(Rebuilt::Unfixable(vec!["no SOP Class UID".into()]));
    };
    let Some(instance) = text(Tag(0x0008, 0x0018)) else {
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
    if let Err(e) = obj.write_dataset_with_ts(&mut out, ts_out_codec) {
        return Ok(Rebuilt::Unfixable(vec![format!(
            "cannot be re-encoded: {e}"
        )]));
    }
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

fn drop_private(obj: &mut InMemDicomObject, keep: &[String]) -> usize {
    // Private creator elements (gggg,0010-00FF) whose value is on the keep list.
    let mut kept_blocks: Vec<(u16, u16)> = Vec::new();
    for e in obj.iter() {
        let t = e.tag();
        if t.group() % 2 == 1 && (0x0010..=0x00FF).contains(&t.element()) {
            if let Ok(v) = e.value().to_str() {
                let v = v.trim_end_matches(['\0', ' ']);
                if keep.iter().any(|k| k.trim_end() == v) {
                    kept_blocks.push((t.group(), t.element()));
                }
            }
        }
    }
    let drop: Vec<Tag> = obj
        .tags()
        .filter(|t| t.group() % 2 == 1)
        .filter(|t| {
            let block = if t.element() <= 0x00FF {
                t.element()
            } else {
                t.element() >> 8
            };
            !kept_blocks.contains(&(t.group(), block))
        })
        .collect();
    let n = drop.len();
    for t in drop {
        obj.remove_element(t);
    }
    n
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

/// Drops private elements that hold executables (at any depth); public elements that hold
/// one make the file unfixable.
fn disarm(
    obj: &mut InMemDicomObject,
    depth: usize,
    changes: &mut Vec<String>,
    unfixable: &mut Vec<String>,
) {
    let tags: Vec<Tag> = obj.tags().collect();
    for tag in tags {
        let mut exe = false;
        let mut is_seq = false;
        if let Some(e) = obj.get(tag) {
            match e.value() {
                Value::Primitive(p) => {
                    exe = p.to_bytes().len() >= 24 && holds_executable(&p.to_bytes())
                }
                Value::PixelSequence(s) => exe = s.fragments().iter().any(|f| holds_executable(f)),
                Value::Sequence(_) => is_seq = true,
            }
        }
        if is_seq {
            obj.update_value(tag, |v| {
                if let Some(items) = v.items_mut() {
                    for item in items.iter_mut() {
                        disarm(item, depth + 1, changes, unfixable);
                    }
                }
            });
            continue;
        }
        // A private element may also hold the rest of an executable whose DOS header was in
        // the preamble (PEDICOM): a bare PE header is enough to drop it.
        if !exe && tag.group() % 2 == 1 {
            if let Some(Value::Primitive(p)) = obj.get(tag).map(|e| e.value()) {
                exe = holds_pe_header(&p.to_bytes());
            }
        }
        if exe {
            if tag.group() % 2 == 1 {
                obj.remove_element(tag);
                changes.push(format!(
                    "dropped private element ({:04X},{:04X}) holding executable code{}",
                    tag.group(),
                    tag.element(),
                    if depth > 0 { " (in a sequence)" } else { "" }
                ));
            } else {
                unfixable.push(format!(
                    "public element ({:04X},{:04X}) holds an executable",
                    tag.group(),
                    tag.element()
                ));
            }
        }
    }
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
