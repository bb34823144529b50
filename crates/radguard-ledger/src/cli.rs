//! `radguard verify` and `radguard ledger …`: clap argument structs and `run_*` functions that
//! return the process exit code. The `*_with` variants write to a given output (for tests).

use std::io::{IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rayon::prelude::*;
use serde_json::json;

use crate::entry::LedgerEntry;
use crate::fingerprint::fingerprint_file;
use crate::ledger::{Ledger, LedgerView};
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, VerifierKey};
use crate::verify::{self, Context, Report, Verdict};

/// Exit code: every file verified, nothing altered.
pub const EXIT_OK: i32 = 0;
/// Exit code: at least one file is altered.
pub const EXIT_ALTERED: i32 = 1;
/// Exit code: errors (unreadable files, a ledger that does not check out, bad arguments).
pub const EXIT_ERROR: i32 = 2;

const DEFAULT_LEDGER: &str = "./radguard-data/ledger";

/// Prove that DICOM files are the images the scanner produced, or show what changed.
///
/// Each file's fingerprint (identifying attributes and decoded pixels, see docs/fingerprint.md)
/// is compared with the one logged when the instance first passed a Radguard origin route.
/// Verdicts: `unchanged` (the entry is proven in the signed log), `altered` (names the changed
/// attributes; with --vault, the bounding box of changed pixels per frame), `lossy-reencoded`
/// (pixels went through a lossy codec; identity attributes match), `unknown` (never logged),
/// `unsupported`, `error`.
///
/// Exit status: 0 nothing altered, 1 something altered, 2 errors (and nothing altered).
#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// Files, or folders searched recursively (files without the DICM prefix are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Ledger directory; repeat for several gateways' ledgers (the first that logged an
    /// instance decides).
    #[arg(long = "ledger", value_name = "DIR", default_value = DEFAULT_LEDGER)]
    pub ledgers: Vec<PathBuf>,
    /// Verifier key to trust (signed-note format `name+hash+key`, or a file holding it)
    /// instead of each ledger's own verifier.key; repeatable, matched by origin.
    #[arg(long = "key", value_name = "KEY|FILE")]
    pub keys: Vec<String>,
    /// Vault directory with the originals, for the changed-region report.
    #[arg(long, value_name = "DIR")]
    pub vault: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
}

/// Auditor tools for a ledger: checkpoints, inclusion and consistency proofs, and offline checks
/// of them with the public key alone.
#[derive(clap::Args, Debug, Clone)]
pub struct LedgerArgs {
    #[command(subcommand)]
    pub command: LedgerCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum LedgerCommand {
    /// Sign a checkpoint of the log now and print it (C2SP signed note). Keep it: later
    /// consistency proofs show the log only grew from it. Needs the signing key.
    Checkpoint {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_LEDGER)]
        ledger: PathBuf,
    },
    /// Print an inclusion proof bundle (JSON) for an entry, against the current signed head.
    Prove {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_LEDGER)]
        ledger: PathBuf,
        /// The entry's SOP Instance UID.
        #[arg(long, conflicts_with_all = ["index", "file"], value_name = "UID")]
        uid: Option<String>,
        /// The entry's index.
        #[arg(long, conflicts_with = "file", value_name = "N")]
        index: Option<u64>,
        /// A DICOM file: its SOP Instance UID selects the entry.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print a consistency proof bundle (JSON) from an earlier checkpoint to the current head.
    Consistency {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_LEDGER)]
        ledger: PathBuf,
        /// The earlier checkpoint (signed note file).
        #[arg(long, value_name = "FILE", conflicts_with = "from_size")]
        from: Option<PathBuf>,
        /// The earlier tree size (its checkpoint is looked up among those issued).
        #[arg(long, value_name = "N")]
        from_size: Option<u64>,
    },
    /// Check a proof bundle offline with the public key alone; with --file, also check that
    /// the file is the logged instance.
    Check {
        /// The bundle (from `prove` or `consistency`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Verifier key (`name+hash+key` or a file holding it).
        #[arg(long, value_name = "KEY|FILE")]
        key: String,
        /// A DICOM file that should be the proven instance.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Your own copy of the earlier checkpoint, for consistency bundles (otherwise the one
        /// in the bundle is used).
        #[arg(long, value_name = "FILE")]
        old_checkpoint: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Record files as originals, as an origin route would (for instances that did not pass a
    /// gateway, e.g. imported straight from a modality's export). Only record files you trust:
    /// whatever is recorded first for a SOP Instance UID is what later copies are held to.
    Record {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_LEDGER)]
        ledger: PathBuf,
        /// Origin name, needed to create a new ledger (e.g. radguard.example.org/ledger/ct1).
        #[arg(long, value_name = "NAME")]
        origin: Option<String>,
        /// Gateway id written into the entries.
        #[arg(long, value_name = "ID", default_value = "import")]
        gateway_id: String,
        /// Files, or folders searched recursively.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Print the ledger's public key in signed-note verifier format.
    ExportKey {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_LEDGER)]
        ledger: PathBuf,
    },
}

/// Reads a verifier key given as text or as a file holding it.
pub fn load_key(arg: &str) -> Result<VerifierKey, String> {
    if let Ok(k) = VerifierKey::parse(arg) {
        return Ok(k);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| format!("key {arg}: {e}"))?;
    VerifierKey::parse(&text).map_err(|e| format!("key {arg}: {e}"))
}

fn open_views(args: &VerifyArgs) -> Result<Vec<LedgerView>, String> {
    let pinned: Vec<VerifierKey> = args
        .keys
        .iter()
        .map(|k| load_key(k))
        .collect::<Result<_, _>>()?;
    let mut views = Vec::new();
    for dir in &args.ledgers {
        let key = if pinned.is_empty() {
            None
        } else {
            let own = std::fs::read_to_string(dir.join(crate::VERIFIER_KEY_FILE))
                .ok()
                .and_then(|t| VerifierKey::parse(&t).ok());
            let name = own.as_ref().map(|k| k.name().to_string());
            let k = pinned
                .iter()
                .find(|k| Some(k.name()) == name.as_deref())
                .or_else(|| {
                    if pinned.len() == 1 {
                        pinned.first()
                    } else {
                        None
                    }
                })
                .ok_or_else(|| format!("no --key given for the ledger in {}", dir.display()))?;
            Some(k.clone())
        };
        views.push(
            LedgerView::open(dir, key).map_err(|e| format!("ledger {}: {e}", dir.display()))?,
        );
    }
    Ok(views)
}

/// `radguard verify`.
pub fn run_verify(args: VerifyArgs) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_verify_with(&args, &mut out)
}

fn region_text(r: &verify::Region) -> String {
    format!(
        "frame {} x {}..{} y {}..{} ({} px, max diff {})",
        r.frame, r.x_min, r.x_max, r.y_min, r.y_max, r.changed_pixels, r.max_abs_diff
    )
}

fn report_line(r: &Report) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = &r.ledger {
        if r.verdict == Verdict::Unchanged {
            parts.push(format!(
                "entry {} in {} (proven in checkpoint {}), logged {}",
                m.index, m.origin, m.checkpoint_size, m.logged_at
            ));
        }
    }
    if !r.changed_attributes.is_empty() {
        parts.push(format!("changed: {}", r.changed_attributes.join(", ")));
    }
    if r.pixels_differ == Some(false) && r.verdict == Verdict::Altered {
        parts.push("pixels identical".into());
    }
    if r.pixels_differ == Some(true) {
        if r.regions.is_empty() {
            parts.push("pixels differ".into());
        } else {
            let regions: Vec<String> = r.regions.iter().map(region_text).collect();
            parts.push(format!("pixels differ: {}", regions.join("; ")));
        }
    }
    if let Some(d) = &r.detail {
        parts.push(d.clone());
    }
    let label = if r.verdict == Verdict::Altered {
        "ALTERED".to_string()
    } else {
        r.verdict.as_str().to_string()
    };
    format!("{label:<16} {}  {}", r.path.display(), parts.join("; "))
}

/// `radguard verify`, writing to `out`.
pub fn run_verify_with(args: &VerifyArgs, out: &mut dyn Write) -> i32 {
    let started = Instant::now();
    let views = match open_views(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("radguard verify: {e}");
            return EXIT_ERROR;
        }
    };
    let ctx = Context::new(views, args.vault.clone());
    let (files, problems) = verify::collect_files(&args.paths);
    let jobs = args
        .jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(jobs).build() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("radguard verify: {e}");
            return EXIT_ERROR;
        }
    };
    let progress = if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(files.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} files {binary_bytes_per_sec} eta {eta}",
        ) {
            pb.set_style(style);
        }
        Some(pb)
    } else {
        None
    };
    let mut reports: Vec<Report> = pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                let r = verify::verify_file(f, &ctx);
                if let Some(pb) = &progress {
                    pb.inc(1);
                }
                r
            })
            .collect()
    });
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    for (path, why) in problems {
        let mut r = Report {
            path,
            verdict: Verdict::Error,
            sop_instance_uid: None,
            fingerprint: None,
            transfer_syntax: None,
            ledger: None,
            changed_attributes: Vec::new(),
            pixels_differ: None,
            regions: Vec::new(),
            detail: None,
            size: 0,
        };
        r.detail = Some(why);
        reports.push(r);
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = reports.iter().map(|r| r.size).sum();
    let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
    let altered = count(Verdict::Altered);
    let errors = count(Verdict::Error);
    let mb_per_s = if seconds > 0.0 {
        bytes as f64 / 1e6 / seconds
    } else {
        0.0
    };
    let written = if args.json {
        let doc = json!({
            "results": reports,
            "summary": {
                "files": reports.len(),
                "unchanged": count(Verdict::Unchanged),
                "altered": altered,
                "lossy_reencoded": count(Verdict::LossyReencoded),
                "unknown": count(Verdict::Unknown),
                "unsupported": count(Verdict::Unsupported),
                "errors": errors,
                "bytes": bytes,
                "seconds": seconds,
                "mb_per_s": mb_per_s,
                "jobs": jobs,
            }
        });
        serde_json::to_writer_pretty(&mut *out, &doc)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(out))
    } else {
        let mut res = Ok(());
        for r in &reports {
            res = res.and_then(|_| writeln!(out, "{}", report_line(r)));
        }
        res.and_then(|_| {
            writeln!(
                out,
                "{} files ({:.1} MB) in {:.2} s ({:.1} MB/s): {} unchanged, {} altered, {} lossy-reencoded, {} unknown, {} unsupported, {} errors",
                reports.len(),
                bytes as f64 / 1e6,
                seconds,
                mb_per_s,
                count(Verdict::Unchanged),
                altered,
                count(Verdict::LossyReencoded),
                count(Verdict::Unknown),
                count(Verdict::Unsupported),
                errors
            )
        })
    };
    if let Err(e) = written {
        eprintln!("radguard verify: writing the report: {e}");
        return EXIT_ERROR;
    }
    if altered > 0 {
        EXIT_ALTERED
    } else if errors > 0 {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// `radguard ledger …`.
pub fn run_ledger(args: LedgerArgs) -> i32 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_ledger_with(&args, &mut out)
}

fn hashes_b64(h: &[Hash]) -> Vec<String> {
    h.iter().map(|x| B64.encode(x)).collect()
}

fn parse_hashes(v: &serde_json::Value) -> Result<Vec<Hash>, String> {
    v.as_array()
        .ok_or("proof must be an array")?
        .iter()
        .map(|h| {
            h.as_str()
                .and_then(|s| B64.decode(s).ok())
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| "proof hashes must be base64 SHA-256 values".to_string())
        })
        .collect()
}

/// `radguard ledger …`, writing to `out`.
pub fn run_ledger_with(args: &LedgerArgs, out: &mut dyn Write) -> i32 {
    match ledger_command(&args.command, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radguard ledger: {e}");
            EXIT_ERROR
        }
    }
}

fn ledger_command(cmd: &LedgerCommand, out: &mut dyn Write) -> Result<i32, String> {
    let w = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes()).map_err(|e| e.to_string());
    match cmd {
        LedgerCommand::Checkpoint { ledger } => {
            let l = Ledger::open_existing(ledger).map_err(|e| e.to_string())?;
            let cp = l.checkpoint().map_err(|e| e.to_string())?;
            w(out, &cp.note)?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Record {
            ledger,
            origin,
            gateway_id,
            paths,
        } => record(ledger, origin.as_deref(), gateway_id, paths, out),
        LedgerCommand::ExportKey { ledger } => {
            let view = LedgerView::open(ledger, None).map_err(|e| e.to_string())?;
            w(out, &format!("{}\n", view.key()))?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Prove {
            ledger,
            uid,
            index,
            file,
        } => {
            let view = LedgerView::open(ledger, None).map_err(|e| e.to_string())?;
            let entry = if let Some(i) = index {
                view.entry(*i).map_err(|e| e.to_string())?
            } else {
                let uid = match (uid, file) {
                    (Some(u), _) => u.clone(),
                    (None, Some(f)) => fingerprint_file(f)
                        .map_err(|e| format!("{}: {e}", f.display()))?
                        .sop_instance_uid
                        .ok_or("the file has no SOP Instance UID")?,
                    (None, None) => return Err("give --uid, --index or --file".into()),
                };
                view.lookup(&uid)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .next()
            }
            .ok_or("no such entry in the ledger")?;
            let (head, proof) = view.prove_included(&entry).map_err(|e| e.to_string())?;
            let data = entry.entry.encode().map_err(|e| e.to_string())?;
            let bundle = json!({
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
            });
            w(
                out,
                &format!(
                    "{}\n",
                    serde_json::to_string_pretty(&bundle).map_err(|e| e.to_string())?
                ),
            )?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Consistency {
            ledger,
            from,
            from_size,
        } => {
            let view = LedgerView::open(ledger, None).map_err(|e| e.to_string())?;
            let old_note = match (from, from_size) {
                (Some(f), _) => {
                    std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?
                }
                (None, Some(n)) => view
                    .checkpoint_at(*n)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("no checkpoint of size {n} was issued"))?,
                (None, None) => return Err("give --from FILE or --from-size N".into()),
            };
            let old = Checkpoint::open(&old_note, view.key())
                .map_err(|e| format!("earlier checkpoint: {e}"))?;
            let head = view.refresh().map_err(|e| e.to_string())?;
            let proof = view
                .consistency_proof(old.size, head.checkpoint.size)
                .map_err(|e| e.to_string())?;
            merkle::verify_consistency(
                old.size,
                head.checkpoint.size,
                &proof,
                &old.root,
                &head.checkpoint.root,
            )
            .map_err(|e| format!("the log is NOT consistent with the earlier checkpoint: {e}"))?;
            let bundle = json!({
                "type": "radguard-consistency-proof-v1",
                "origin": head.checkpoint.origin,
                "old_size": old.size,
                "old_checkpoint": old_note,
                "new_size": head.checkpoint.size,
                "new_checkpoint": head.note,
                "proof": hashes_b64(&proof),
            });
            w(
                out,
                &format!(
                    "{}\n",
                    serde_json::to_string_pretty(&bundle).map_err(|e| e.to_string())?
                ),
            )?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Check {
            bundle,
            key,
            file,
            old_checkpoint,
            json: as_json,
        } => {
            let key = load_key(key)?;
            let text = std::fs::read_to_string(bundle)
                .map_err(|e| format!("{}: {e}", bundle.display()))?;
            let old = match old_checkpoint {
                Some(p) => {
                    Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?)
                }
                None => None,
            };
            let result = check_bundle(&text, &key, file.as_deref(), old.as_deref());
            let (code, message, extra) = match result {
                Ok((msg, extra)) => (EXIT_OK, msg, extra),
                Err(Failure::Invalid(msg)) => (EXIT_ALTERED, msg, serde_json::Value::Null),
                Err(Failure::Usage(msg)) => return Err(msg),
            };
            if *as_json {
                let doc = json!({ "valid": code == EXIT_OK, "message": message, "details": extra });
                w(
                    out,
                    &format!(
                        "{}\n",
                        serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
                    ),
                )?;
            } else {
                w(
                    out,
                    &format!(
                        "{} {message}\n",
                        if code == EXIT_OK { "OK" } else { "INVALID" }
                    ),
                )?;
            }
            Ok(code)
        }
    }
}

fn record(
    dir: &Path,
    origin: Option<&str>,
    gateway_id: &str,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> Result<i32, String> {
    let ledger = match origin {
        Some(o) => Ledger::open(dir, o),
        None => Ledger::open_existing(dir),
    }
    .map_err(|e| format!("ledger {}: {e}", dir.display()))?;
    let (files, problems) = verify::collect_files(paths);
    let assoc = format!("record-{}", crate::entry::Timestamp::now().0);
    // Fingerprint in parallel, append in order.
    let prints: Vec<_> = files.par_iter().map(|f| (f, fingerprint_file(f))).collect();
    let (mut appended, mut duplicates, mut conflicts, mut errors) = (0, 0, 0, problems.len());
    for (path, why) in &problems {
        writeln!(out, "error      {}  {why}", path.display()).map_err(|e| e.to_string())?;
    }
    for (path, fp) in prints {
        let line = match fp {
            Err(e) => {
                errors += 1;
                format!("error      {}  {e}", path.display())
            }
            Ok(fp) => match fp.sop_instance_uid {
                None => {
                    errors += 1;
                    format!("error      {}  no SOP Instance UID", path.display())
                }
                Some(uid) => {
                    let outcome = ledger
                        .append(LedgerEntry {
                            fingerprint: fp.fingerprint,
                            sop_instance_uid: uid,
                            time: crate::entry::Timestamp::now(),
                            gateway_id: gateway_id.to_string(),
                            assoc_id: assoc.clone(),
                        })
                        .map_err(|e| e.to_string())?;
                    if outcome.conflict.is_some() {
                        conflicts += 1;
                        format!(
                            "CONFLICT   {}  entry {} has other content",
                            path.display(),
                            outcome.index
                        )
                    } else if outcome.appended {
                        appended += 1;
                        format!("recorded   {}  entry {}", path.display(), outcome.index)
                    } else {
                        duplicates += 1;
                        format!("duplicate  {}  entry {}", path.display(), outcome.index)
                    }
                }
            },
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    writeln!(
        out,
        "{appended} recorded, {duplicates} already logged, {conflicts} conflicts, {errors} errors; log size {}",
        ledger.size()
    )
    .map_err(|e| e.to_string())?;
    Ok(if conflicts > 0 {
        EXIT_ALTERED
    } else if errors > 0 {
        EXIT_ERROR
    } else {
        EXIT_OK
    })
}

enum Failure {
    /// The bundle or file does not check out.
    Invalid(String),
    /// The input could not be read at all.
    Usage(String),
}

/// Checks a proof bundle with the verifier key alone (no ledger needed).
fn check_bundle(
    text: &str,
    key: &VerifierKey,
    file: Option<&Path>,
    old_checkpoint: Option<&str>,
) -> Result<(String, serde_json::Value), Failure> {
    let invalid = |s: String| Failure::Invalid(s);
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Failure::Usage(format!("bundle: {e}")))?;
    let field = |name: &str| {
        v.get(name)
            .ok_or_else(|| Failure::Usage(format!("bundle has no {name}")))
    };
    match v.get("type").and_then(|t| t.as_str()) {
        Some("radguard-inclusion-proof-v1") => {
            let note = field("checkpoint")?
                .as_str()
                .ok_or(Failure::Usage("checkpoint must be text".into()))?;
            let cp =
                Checkpoint::open(note, key).map_err(|e| invalid(format!("checkpoint: {e}")))?;
            let index = field("index")?
                .as_u64()
                .ok_or(Failure::Usage("index must be a number".into()))?;
            let data = field("entry")?
                .as_str()
                .and_then(|s| B64.decode(s).ok())
                .ok_or(Failure::Usage("entry must be base64".into()))?;
            let entry = LedgerEntry::decode(&data).map_err(|e| invalid(format!("entry: {e}")))?;
            let proof = parse_hashes(field("proof")?).map_err(Failure::Usage)?;
            merkle::verify_inclusion(&merkle::leaf_hash(&data), index, cp.size, &proof, &cp.root)
                .map_err(|e| invalid(format!("inclusion proof: {e}")))?;
            let mut msg = format!(
                "entry {index} (SOP Instance UID {}, fingerprint {}, logged {}) is in {} at tree size {}",
                entry.sop_instance_uid,
                entry.fingerprint.digest,
                entry.time.to_rfc3339(),
                cp.origin,
                cp.size
            );
            if let Some(f) = file {
                let fp =
                    fingerprint_file(f).map_err(|e| invalid(format!("{}: {e}", f.display())))?;
                if fp.sop_instance_uid.as_deref() != Some(entry.sop_instance_uid.as_str()) {
                    return Err(invalid(format!("{} is another instance", f.display())));
                }
                let cmp = verify::compare(&fp.fingerprint, &entry.fingerprint);
                if cmp.verdict != Verdict::Unchanged {
                    let changed: Vec<String> = cmp
                        .changed_attributes
                        .iter()
                        .map(|t| crate::fingerprint::attribute_name(*t))
                        .collect();
                    return Err(invalid(format!(
                        "{} is {} (changed attributes: [{}], pixels: {:?})",
                        f.display(),
                        cmp.verdict.as_str(),
                        changed.join(", "),
                        cmp.pixels
                    )));
                }
                msg.push_str(&format!("; {} is that instance, unchanged", f.display()));
            }
            Ok((
                msg,
                json!({ "index": index, "tree_size": cp.size, "origin": cp.origin }),
            ))
        }
        Some("radguard-consistency-proof-v1") => {
            let new_note = field("new_checkpoint")?
                .as_str()
                .ok_or(Failure::Usage("new_checkpoint must be text".into()))?;
            let new = Checkpoint::open(new_note, key)
                .map_err(|e| invalid(format!("new checkpoint: {e}")))?;
            let old_note = match old_checkpoint {
                Some(n) => n.to_string(),
                None => field("old_checkpoint")?
                    .as_str()
                    .ok_or(Failure::Usage("old_checkpoint must be text".into()))?
                    .to_string(),
            };
            let old = Checkpoint::open(&old_note, key)
                .map_err(|e| invalid(format!("old checkpoint: {e}")))?;
            let proof = parse_hashes(field("proof")?).map_err(Failure::Usage)?;
            merkle::verify_consistency(old.size, new.size, &proof, &old.root, &new.root)
                .map_err(|e| invalid(format!("consistency proof: {e}")))?;
            Ok((
                format!(
                    "{} at tree size {} extends the checkpoint at tree size {} (append-only)",
                    new.origin, new.size, old.size
                ),
                json!({ "old_size": old.size, "new_size": new.size, "origin": new.origin }),
            ))
        }
        _ => Err(Failure::Usage("not a Radguard proof bundle".into())),
    }
}
