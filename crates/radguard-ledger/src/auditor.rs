//! What `radguard ledger …` does for auditors, as typed results: proof bundles (inclusion,
//! consistency; RFC 9162 proofs under a C2SP signed checkpoint), their offline check with the
//! public key alone, and recording trusted files as originals. The binary prints them.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rayon::prelude::*;
use serde_json::json;

use crate::entry::{EntryError, LedgerEntry, Timestamp};
use crate::fingerprint::{fingerprint_file, FingerprintError};
use crate::ledger::{Ledger, LedgerError, LedgerView};
use crate::merkle::{self, Hash, ProofError};
use crate::note::{Checkpoint, NoteError, VerifierKey};
use crate::verify::{self, PixelComparison, Verdict};

/// Why a proof bundle could not be made, or files could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum AuditorError {
    /// The ledger failed (I/O, database, a stored log that does not check out).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The ledger in `dir` could not be opened (or created).
    #[error("ledger {}: {source}", dir.display())]
    OpenLedger {
        dir: PathBuf,
        #[source]
        source: LedgerError,
    },
    /// The file that selects the entry could not be fingerprinted.
    #[error("{}: {source}", path.display())]
    Fingerprint {
        path: PathBuf,
        #[source]
        source: FingerprintError,
    },
    #[error("the file has no SOP Instance UID")]
    NoSopInstanceUid,
    #[error("no such entry in the ledger")]
    NoSuchEntry,
    /// A stored entry could not be encoded for the bundle.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// The earlier checkpoint is not a checkpoint of this log signed by its key.
    #[error("earlier checkpoint: {0}")]
    EarlierCheckpoint(#[source] NoteError),
    /// The log did not only grow from the earlier checkpoint (RFC 9162 §2.1.4): a fork or a
    /// rewritten history.
    #[error("the log is NOT consistent with the earlier checkpoint: {0}")]
    Inconsistent(#[source] ProofError),
}

/// Which entry an inclusion proof is for.
#[derive(Debug, Clone, Copy)]
pub enum EntrySelector<'a> {
    /// The entry at this index.
    Index(u64),
    /// The first entry logged for this SOP Instance UID.
    Uid(&'a str),
    /// The first entry logged for this DICOM file's SOP Instance UID.
    File(&'a Path),
}

fn hashes_b64(h: &[Hash]) -> Vec<String> {
    h.iter().map(|x| B64.encode(x)).collect()
}

fn parse_hashes(v: &serde_json::Value) -> Result<Vec<Hash>, UnreadableBundle> {
    v.as_array()
        .ok_or(UnreadableBundle::ProofNotArray)?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| B64.decode(s).ok())
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or(UnreadableBundle::ProofHashes)
        })
        .collect()
}

/// The inclusion proof bundle (`radguard-inclusion-proof-v1`) of an entry against the current
/// signed head: everything [`check_bundle`] needs besides the verifier key.
pub fn inclusion_bundle(
    view: &LedgerView,
    which: EntrySelector<'_>,
) -> Result<serde_json::Value, AuditorError> {
    let first_logged = |uid: &str| view.lookup(uid).map(|found| found.into_iter().next());
    let entry = match which {
        EntrySelector::Index(i) => view.entry(i)?,
        EntrySelector::Uid(uid) => first_logged(uid)?,
        EntrySelector::File(f) => first_logged(
            &fingerprint_file(f)
                .map_err(|source| AuditorError::Fingerprint {
                    path: f.to_path_buf(),
                    source,
                })?
                .sop_instance_uid
                .ok_or(AuditorError::NoSopInstanceUid)?,
        )?,
    }
    .ok_or(AuditorError::NoSuchEntry)?;
    let (head, proof) = view.prove_included(&entry)?;
    let data = entry.entry.encode()?;
    Ok(json!({
        "type": "radguard-inclusion-proof-v1",
        "origin": head.checkpoint.origin,
        "index": entry.index,
        "tree_size": head.checkpoint.size,
        "entry": B64.encode(&data),
        "proof": hashes_b64(&proof),
        "checkpoint": head.note,
        "sop_instance_uid": entry.entry.sop_instance_uid,
        "fingerprint": entry.entry.fingerprint.digest.to_hex(),
        "logged_at": entry.entry.time.to_rfc3339(),
    }))
}

/// The consistency proof bundle (`radguard-consistency-proof-v1`) from the earlier checkpoint
/// `old_note` (a signed note of this log) to the current head. The proof is checked before it
/// is returned: a log that did not only grow from `old_note` is an error.
pub fn consistency_bundle(
    view: &LedgerView,
    old_note: &str,
) -> Result<serde_json::Value, AuditorError> {
    let old = Checkpoint::open(old_note, view.key()).map_err(AuditorError::EarlierCheckpoint)?;
    let head = view.refresh()?;
    let proof = view.consistency_proof(old.size, head.checkpoint.size)?;
    merkle::verify_consistency(
        old.size,
        head.checkpoint.size,
        &proof,
        &old.root,
        &head.checkpoint.root,
    )
    .map_err(AuditorError::Inconsistent)?;
    Ok(json!({
        "type": "radguard-consistency-proof-v1",
        "origin": head.checkpoint.origin,
        "old_size": old.size,
        "old_checkpoint": old_note,
        "new_size": head.checkpoint.size,
        "new_checkpoint": head.note,
        "proof": hashes_b64(&proof),
    }))
}

/// Why a bundle did not check out.
#[derive(Debug, thiserror::Error)]
pub enum CheckFailure {
    /// The bundle or file does not check out (forged, tampered, another instance, wrong key).
    #[error(transparent)]
    Invalid(#[from] InvalidBundle),
    /// The input could not be read at all (not JSON, not a bundle, a field missing).
    #[error(transparent)]
    Unreadable(#[from] UnreadableBundle),
}

/// What in a readable bundle (or the file checked with it) does not check out.
#[derive(Debug, thiserror::Error)]
pub enum InvalidBundle {
    /// The inclusion bundle's checkpoint is not signed by the key (or is malformed).
    #[error("checkpoint: {0}")]
    Checkpoint(#[source] NoteError),
    /// The logged entry in the bundle does not decode.
    #[error("entry: {0}")]
    Entry(#[source] EntryError),
    /// The entry is not proven at its index under the checkpoint's root (RFC 9162 §2.1.3).
    #[error("inclusion proof: {0}")]
    InclusionProof(#[source] ProofError),
    /// The file to check could not be fingerprinted.
    #[error("{}: {source}", path.display())]
    Fingerprint {
        path: PathBuf,
        #[source]
        source: FingerprintError,
    },
    /// The file is not the proven instance (another SOP Instance UID, or none).
    #[error("{} is another instance", .0.display())]
    AnotherInstance(PathBuf),
    /// The file is the proven instance, but its fingerprint differs from the logged one.
    #[error(
        "{} is {} (changed attributes: [{}], pixels: {:?})",
        path.display(),
        verdict.as_str(),
        changed_attributes.join(", "),
        pixels
    )]
    Changed {
        path: PathBuf,
        verdict: Verdict,
        /// Keywords of the fingerprinted attributes that differ.
        changed_attributes: Vec<String>,
        pixels: PixelComparison,
    },
    /// The consistency bundle's new checkpoint is not signed by the key (or is malformed).
    #[error("new checkpoint: {0}")]
    NewCheckpoint(#[source] NoteError),
    /// The earlier checkpoint is not signed by the key (or is malformed).
    #[error("old checkpoint: {0}")]
    OldCheckpoint(#[source] NoteError),
    /// The new checkpoint's tree does not extend the old one (RFC 9162 §2.1.4).
    #[error("consistency proof: {0}")]
    ConsistencyProof(#[source] ProofError),
}

/// Why an input is not a readable proof bundle.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableBundle {
    #[error("bundle: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a Radguard proof bundle")]
    NotABundle,
    #[error("bundle has no {0}")]
    MissingField(&'static str),
    /// A checkpoint field (named) is not a string.
    #[error("{0} must be text")]
    NotText(&'static str),
    #[error("index must be a number")]
    IndexNotNumber,
    #[error("entry must be base64")]
    EntryNotBase64,
    #[error("proof must be an array")]
    ProofNotArray,
    #[error("proof hashes must be base64 SHA-256 values")]
    ProofHashes,
}

/// Checks a proof bundle with the verifier key alone (no ledger needed): on success, a sentence
/// saying what was proven and the bundle's facts as JSON. With `file`, the file must be the
/// proven instance, unchanged; `old_checkpoint` replaces the bundle's own earlier checkpoint
/// of a consistency bundle.
pub fn check_bundle(
    text: &str,
    key: &VerifierKey,
    file: Option<&Path>,
    old_checkpoint: Option<&str>,
) -> Result<(String, serde_json::Value), CheckFailure> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(UnreadableBundle::Json)?;
    let field = |name: &'static str| v.get(name).ok_or(UnreadableBundle::MissingField(name));
    let text_field =
        |name: &'static str| field(name)?.as_str().ok_or(UnreadableBundle::NotText(name));
    match v.get("type").and_then(|t| t.as_str()) {
        Some("radguard-inclusion-proof-v1") => {
            let note = text_field("checkpoint")?;
            let cp = Checkpoint::open(note, key).map_err(InvalidBundle::Checkpoint)?;
            let index = field("index")?
                .as_u64()
                .ok_or(UnreadableBundle::IndexNotNumber)?;
            let data = field("entry")?
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or(UnreadableBundle::EntryNotBase64)?;
            let entry = LedgerEntry::decode(&data).map_err(InvalidBundle::Entry)?;
            let proof = parse_hashes(field("proof")?)?;
            merkle::verify_inclusion(&merkle::leaf_hash(&data), index, cp.size, &proof, &cp.root)
                .map_err(InvalidBundle::InclusionProof)?;
            let mut msg = format!(
                "entry {index} (SOP Instance UID {}, fingerprint {}, logged {}) is in {} at tree size {}",
                entry.sop_instance_uid,
                entry.fingerprint.digest,
                entry.time.to_rfc3339(),
                cp.origin,
                cp.size
            );
            if let Some(f) = file {
                let fp = fingerprint_file(f).map_err(|source| InvalidBundle::Fingerprint {
                    path: f.to_path_buf(),
                    source,
                })?;
                if fp.sop_instance_uid.as_deref() != Some(entry.sop_instance_uid.as_str()) {
                    return Err(InvalidBundle::AnotherInstance(f.to_path_buf()).into());
                }
                let cmp = verify::compare(&fp.fingerprint, &entry.fingerprint);
                if cmp.verdict != Verdict::Unchanged {
                    return Err(InvalidBundle::Changed {
                        path: f.to_path_buf(),
                        verdict: cmp.verdict,
                        changed_attributes: cmp
                            .changed_attributes
                            .iter()
                            .map(|t| crate::fingerprint::attribute_name(*t))
                            .collect(),
                        pixels: cmp.pixels,
                    }
                    .into());
                }
                msg.push_str(&format!("; {} is that instance, unchanged", f.display()));
            }
            Ok((
                msg,
                json!({ "index": index, "tree_size": cp.size, "origin": cp.origin }),
            ))
        }
        Some("radguard-consistency-proof-v1") => {
            let new_note = text_field("new_checkpoint")?;
            let new = Checkpoint::open(new_note, key).map_err(InvalidBundle::NewCheckpoint)?;
            let old_note = match old_checkpoint {
                Some(n) => n,
                None => text_field("old_checkpoint")?,
            };
            let old = Checkpoint::open(old_note, key).map_err(InvalidBundle::OldCheckpoint)?;
            let proof = parse_hashes(field("proof")?)?;
            merkle::verify_consistency(old.size, new.size, &proof, &old.root, &new.root)
                .map_err(InvalidBundle::ConsistencyProof)?;
            Ok((
                format!(
                    "{} at tree size {} extends the checkpoint at tree size {} (append-only)",
                    new.origin, new.size, old.size
                ),
                json!({ "old_size": old.size, "new_size": new.size, "origin": new.origin }),
            ))
        }
        _ => Err(UnreadableBundle::NotABundle.into()),
    }
}

/// What became of one input of [`record_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Appended as entry `index`.
    Appended { index: u64 },
    /// The same content was already logged as entry `index`.
    Duplicate { index: u64 },
    /// Entry `index` holds other content for the same SOP Instance UID.
    Conflict { index: u64 },
    /// Not recorded: unreadable, not fingerprintable, or without a SOP Instance UID.
    Error(String),
}

/// The totals of [`record_files`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub appended: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub errors: usize,
    /// The log's size afterwards.
    pub log_size: u64,
}

/// Records the DICOM files under `paths` as originals in the ledger in `dir` (created with
/// `origin` when given, else it must exist), as an origin route would; files are fingerprinted
/// in parallel and appended in order. `each` gets every input's outcome as it is known: first
/// the inputs that could not be walked, then the files in order. A failing append stops it.
pub fn record_files(
    dir: &Path,
    origin: Option<&str>,
    gateway_id: &str,
    paths: &[PathBuf],
    each: &mut dyn FnMut(&Path, &Recorded),
) -> Result<RecordSummary, AuditorError> {
    let ledger = match origin {
        Some(o) => Ledger::open(dir, o),
        None => Ledger::open_existing(dir),
    }
    .map_err(|source| AuditorError::OpenLedger {
        dir: dir.to_path_buf(),
        source,
    })?;
    let (files, problems) = verify::collect_files(paths);
    let assoc = format!("record-{}", Timestamp::now().0);
    // Fingerprint in parallel, append in order.
    let prints: Vec<_> = files.par_iter().map(|f| (f, fingerprint_file(f))).collect();
    let mut sum = RecordSummary {
        errors: problems.len(),
        ..RecordSummary::default()
    };
    for (path, why) in problems {
        each(&path, &Recorded::Error(why));
    }
    for (path, fp) in prints {
        let outcome = match fp {
            Err(e) => {
                sum.errors += 1;
                Recorded::Error(e.to_string())
            }
            Ok(fp) => match fp.sop_instance_uid {
                None => {
                    sum.errors += 1;
                    Recorded::Error("no SOP Instance UID".into())
                }
                Some(uid) => {
                    let outcome = ledger.append(LedgerEntry {
                        fingerprint: fp.fingerprint,
                        sop_instance_uid: uid,
                        time: Timestamp::now(),
                        gateway_id: gateway_id.to_string(),
                        assoc_id: assoc.clone(),
                    })?;
                    let index = outcome.index;
                    if outcome.conflict.is_some() {
                        sum.conflicts += 1;
                        Recorded::Conflict { index }
                    } else if outcome.appended {
                        sum.appended += 1;
                        Recorded::Appended { index }
                    } else {
                        sum.duplicates += 1;
                        Recorded::Duplicate { index }
                    }
                }
            },
        };
        each(path, &outcome);
    }
    sum.log_size = ledger.size();
    Ok(sum)
}
