//! `radguard vault check|verify`: the vault of a data folder (`<data>/vault`) checked on
//! demand, next to a running gateway or not (the vault is opened read-only: no recovery, the
//! index not written).
//!
//! `check` is fast: the index against the files present and their sizes, and files no index
//! row names. `verify` also re-hashes every object at full speed (a progress bar on a
//! terminal), judges a changed one (encrypted-looking or not, as the scrub does) and, for
//! instances the integrity ledger logged (origin routes), compares the object with the logged
//! fingerprint. Exit status 0 all good, 1 problems found, 2 usage or store error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use radguard_ledger::verify::{self, Verdict};
use radguard_vault::scrub::{self, FindingKind};
use radguard_vault::{Problem, Vault};
use serde::Serialize;

use super::files_bar::{FilesBar, Tick};

const BAR: &str = "{elapsed_precise} [{bar:40}] {pos}/{len} objects {msg}";
const BAR_CHARS: &str = "=> ";

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The data folder of `radguard serve --data` (the vault is its `vault/`).
    #[arg(long, default_value = "./radguard-data")]
    pub data: PathBuf,
    /// One JSON object on stdout: `ok`, `objects`, `bytes` and `problems` (each with `finding`,
    /// `sha256`, `sop_instance_uid`, `path`, `detail`).
    #[arg(long)]
    pub json: bool,
    /// No progress bar (verify; it is drawn only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// One problem, as printed.
#[derive(Debug, Clone, Serialize)]
struct Found {
    /// `missing`, `size-mismatch`, `changed`, `encrypted-looking`, `unreadable`,
    /// `unindexed`, `ledger-mismatch`, `index-log-broken`, `row-not-logged`,
    /// `row-differs-from-log`, `logged-row-missing`, `index-log-checkpoint`,
    /// `index-log-rewritten`.
    finding: String,
    sha256: Option<String>,
    sop_instance_uid: Option<String>,
    path: PathBuf,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Outcome {
    ok: bool,
    /// `check` or `verify`.
    mode: &'static str,
    objects: u64,
    bytes: u64,
    problems: Vec<Found>,
}

pub fn run_check(args: CheckArgs) -> ExitCode {
    if let Some(code) = super::datadir::refuse_newer_exit(&args.data) {
        return code;
    }
    finish(check(&args.data), args.json)
}

pub fn run_verify(args: CheckArgs) -> ExitCode {
    if let Some(code) = super::datadir::refuse_newer_exit(&args.data) {
        return code;
    }
    finish(verify_all(&args.data, args.no_progress), args.json)
}

fn finish(r: anyhow::Result<Outcome>, json: bool) -> ExitCode {
    let out = match r {
        Ok(o) => o,
        Err(e) => {
            eprintln!("radguard: {e:#}");
            return ExitCode::from(2);
        }
    };
    if json {
        match serde_json::to_string(&out) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("radguard: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        for p in &out.problems {
            println!("{}: {}", p.finding, p.detail);
        }
        println!(
            "{}: {} objects, {} bytes, {} problem(s)",
            out.mode,
            out.objects,
            out.bytes,
            out.problems.len()
        );
    }
    ExitCode::from(if out.ok { 0 } else { 1 })
}

fn open(data: &Path) -> anyhow::Result<Vault> {
    let dir = data.join("vault");
    Vault::open_read_only(&dir).with_context(|| format!("opening the vault in {}", dir.display()))
}

/// The SHA-256 an object path names (its file stem), if it looks like one.
fn sha_of(path: &Path) -> Option<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check(data: &Path) -> anyhow::Result<Outcome> {
    let vault = open(data)?;
    let rows = vault.list().context("reading the vault index")?;
    let problems = vault.check().context("checking the vault")?;
    let mut found = Vec::new();
    for p in problems {
        let f = match p {
            Problem::MissingObject {
                sop_instance_uid,
                path,
            } => {
                let sha = sha_of(&path);
                Found {
                    finding: "missing".into(),
                    detail: format!(
                        "vault object {} (SOP Instance UID {sop_instance_uid}) is missing",
                        sha.as_deref().unwrap_or("?")
                    ),
                    sha256: sha,
                    sop_instance_uid: Some(sop_instance_uid),
                    path,
                }
            }
            Problem::SizeMismatch {
                sop_instance_uid,
                path,
                expected,
                actual,
            } => {
                let sha = sha_of(&path);
                Found {
                    finding: "size-mismatch".into(),
                    detail: format!(
                        "vault object {} (SOP Instance UID {sop_instance_uid}) has {actual} bytes, \
                         {expected} were stored",
                        sha.as_deref().unwrap_or("?")
                    ),
                    sha256: sha,
                    sop_instance_uid: Some(sop_instance_uid),
                    path,
                }
            }
            Problem::HashMismatch {
                sop_instance_uid,
                path,
                actual_sha256,
            } => {
                let sha = sha_of(&path);
                Found {
                    finding: "changed".into(),
                    detail: format!(
                        "vault object {} (SOP Instance UID {sop_instance_uid}) now hashes to \
                         {actual_sha256}",
                        sha.as_deref().unwrap_or("?")
                    ),
                    sha256: sha,
                    sop_instance_uid: Some(sop_instance_uid),
                    path,
                }
            }
            Problem::UnindexedObject { path, reason } => {
                let sha = sha_of(&path);
                Found {
                    finding: "unindexed".into(),
                    detail: format!("file {} in the object tree: {reason}", path.display()),
                    sha256: sha,
                    sop_instance_uid: None,
                    path,
                }
            }
            Problem::StrayFile { path } => Found {
                finding: "unindexed".into(),
                detail: format!(
                    "file {} in the object tree does not follow the layout",
                    path.display()
                ),
                sha256: None,
                sop_instance_uid: None,
                path,
            },
            Problem::RowNotLogged { sop_instance_uid } => index_row(
                "row-not-logged",
                "is in the index but not in the index log (added behind the vault's back)",
                sop_instance_uid,
            ),
            Problem::RowDiffersFromLog { sop_instance_uid } => index_row(
                "row-differs-from-log",
                "differs from its index log line (rewritten in the index)",
                sop_instance_uid,
            ),
            Problem::LoggedRowMissing { sop_instance_uid } => index_row(
                "logged-row-missing",
                "is in the index log but gone from the index (deleted from it)",
                sop_instance_uid,
            ),
            Problem::IndexLogBroken { path, line, reason } => Found {
                finding: "index-log-broken".into(),
                detail: format!("index log {} line {line}: {reason}", path.display()),
                sha256: None,
                sop_instance_uid: None,
                path,
            },
            other => Found {
                finding: "other".into(),
                detail: format!("{other:?}"),
                sha256: None,
                sop_instance_uid: None,
                path: PathBuf::new(),
            },
        };
        found.push(f);
    }
    found.extend(index_log_checkpoint(data, &vault)?);
    Ok(Outcome {
        ok: found.is_empty(),
        mode: "check",
        objects: rows.len() as u64,
        bytes: rows.iter().map(|r| r.size).sum(),
        problems: found,
    })
}

/// A problem between the index and its log, about one row.
fn index_row(finding: &str, what: &str, sop_instance_uid: String) -> Found {
    Found {
        finding: finding.into(),
        detail: format!("the index row of SOP Instance UID {sop_instance_uid} {what}"),
        sha256: None,
        sop_instance_uid: Some(sop_instance_uid),
        path: PathBuf::from("index.sqlite"),
    }
}

/// The index log's signed checkpoint (`vault/index-log/checkpoint`, written by the gateway
/// with the integrity ledger's key): its signature checked with the ledger's verifier key and
/// the log compared with the head it names. A log rewritten before that head — even into a
/// consistent chain, which `Vault::check` cannot tell — no longer leads to it. Nothing to check
/// when the folder has no checkpoint or no ledger key (a vault from before the log, or a
/// gateway without a ledger).
fn index_log_checkpoint(data: &Path, vault: &Vault) -> anyhow::Result<Vec<Found>> {
    use radguard_ledger::note::{open_note, Checkpoint, VerifierKey};
    let Some(note) = vault
        .index_log_checkpoint()
        .context("reading the index log's checkpoint")?
    else {
        return Ok(Vec::new());
    };
    let key_path = data.join("ledger").join(radguard_ledger::VERIFIER_KEY_FILE);
    let Ok(key_text) = std::fs::read_to_string(&key_path) else {
        return Ok(Vec::new());
    };
    let path = vault.root().join("index-log/checkpoint");
    let problem = |finding: &str, detail: String| Found {
        finding: finding.into(),
        detail,
        sha256: None,
        sop_instance_uid: None,
        path: path.clone(),
    };
    let key = VerifierKey::parse(&key_text)
        .with_context(|| format!("reading the ledger's verifier key {}", key_path.display()))?;
    // Its origin (`<ledger origin>/vault-index-log`) is not the key's name: the note is opened
    // with the key, then its text parsed as a checkpoint.
    let cp = match open_note(&note, &key).map(Checkpoint::parse) {
        Ok(Ok(cp)) => cp,
        Ok(Err(e)) | Err(e) => {
            return Ok(vec![problem(
                "index-log-checkpoint",
                format!("the index log's checkpoint does not verify with the ledger's key: {e}"),
            )])
        }
    };
    let head = radguard_vault::IndexLogHead {
        count: cp.size,
        hash: hex::encode(cp.root),
    };
    if vault
        .index_log_matches(&head)
        .context("reading the index log")?
    {
        return Ok(Vec::new());
    }
    Ok(vec![problem(
        "index-log-rewritten",
        format!(
            "the index log no longer leads to its signed head ({} lines, {}): lines were \
             changed or removed since it was signed",
            head.count, head.hash
        ),
    )])
}

fn verify_all(data: &Path, no_progress: bool) -> anyhow::Result<Outcome> {
    let vault = open(data)?;
    let rows = vault.list().context("reading the vault index")?;
    // The ledger of origin routes, when the data folder has one.
    let ledger_dir = data.join("ledger");
    let ctx = if ledger_dir.join(radguard_ledger::DB_FILE).is_file() {
        let view = radguard_ledger::LedgerView::open(&ledger_dir, None)
            .with_context(|| format!("opening the integrity ledger in {}", ledger_dir.display()))?;
        Some(verify::Context::new(vec![view], None))
    } else {
        None
    };
    let bar = FilesBar::new(no_progress, 2, BAR, Some(BAR_CHARS));
    bar.update(Tick::Started(rows.len()));
    let mut found = Vec::new();
    let mut bytes = 0u64;
    for row in &rows {
        match scrub::check_object(row) {
            Some(f) => found.push(Found {
                finding: f.kind.name().into(),
                detail: f.detail(),
                sha256: Some(f.sha256),
                sop_instance_uid: f.sop_instance_uid,
                path: f.path,
            }),
            None => {
                bytes += row.size;
                if let Some(ctx) = &ctx {
                    let report = verify::verify_file(&row.path, ctx);
                    if report.verdict == Verdict::Altered {
                        found.push(Found {
                            finding: "ledger-mismatch".into(),
                            detail: format!(
                                "vault object {} (SOP Instance UID {}) differs from the integrity \
                                 ledger's fingerprint{}",
                                row.sha256,
                                row.sop_instance_uid,
                                report.detail.map(|d| format!(": {d}")).unwrap_or_default()
                            ),
                            sha256: Some(row.sha256.clone()),
                            sop_instance_uid: Some(row.sop_instance_uid.clone()),
                            path: row.path.clone(),
                        });
                    }
                }
            }
        }
        bar.update(Tick::FileDone);
    }
    bar.finish();
    // Files no row names (the re-hash above only covers indexed objects).
    for (path, sha) in vault.object_files().context("listing the object tree")? {
        let known = match &sha {
            Some(s) => vault.has_object(s).context("reading the vault index")?,
            None => false,
        };
        if !known {
            found.push(Found {
                finding: FindingKind::Unindexed.name().into(),
                detail: format!(
                    "file {} in the vault's object tree is not in the index",
                    path.display()
                ),
                sha256: sha,
                sop_instance_uid: None,
                path,
            });
        }
    }
    Ok(Outcome {
        ok: found.is_empty(),
        mode: "verify",
        objects: rows.len() as u64,
        bytes,
        problems: found,
    })
}
