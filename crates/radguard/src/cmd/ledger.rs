//! `radguard verify` and `radguard ledger …`: arguments, text and JSON output, the progress bar
//! and exit codes over `radguard_ledger` (verdicts, proof bundles, offline checks, recording).

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail};
use radguard_ledger::auditor::{self, CheckFailure, EntrySelector, Recorded};
use radguard_ledger::note::VerifierKey;
use radguard_ledger::verify::{self, Context, Report, Verdict};
use radguard_ledger::{Ledger, LedgerView};
use serde_json::json;

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
fn run_verify_with(args: &VerifyArgs, out: &mut dyn Write) -> i32 {
    let started = Instant::now();
    let views = match args
        .keys
        .iter()
        .map(|k| verify::load_key(k))
        .collect::<Result<Vec<VerifierKey>, _>>()
        .and_then(|pinned| verify::open_views(&args.ledgers, &pinned))
    {
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
    let verified = verify::verify_all(&files, &ctx, jobs, &|_| {
        if let Some(pb) = &progress {
            pb.inc(1);
        }
    });
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut reports: Vec<Report> = match verified {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radguard verify: {e}");
            return EXIT_ERROR;
        }
    };
    for (path, why) in problems {
        reports.push(Report::unreadable(path, why));
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
    match ledger_command(&args.command, &mut out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radguard ledger: {e}");
            EXIT_ERROR
        }
    }
}

fn pretty(v: &serde_json::Value) -> serde_json::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// Reads a text file; the error names the file.
fn read_text(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// One `radguard ledger` command. Errors are printed with `{}` (no source chain): each one's
/// message already names what failed and why.
fn ledger_command(cmd: &LedgerCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let w = |out: &mut dyn Write, s: &str| out.write_all(s.as_bytes());
    match cmd {
        LedgerCommand::Checkpoint { ledger } => {
            let l = Ledger::open_existing(ledger)?;
            let cp = l.checkpoint()?;
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
            let view = LedgerView::open(ledger, None)?;
            w(out, &format!("{}\n", view.key()))?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Prove {
            ledger,
            uid,
            index,
            file,
        } => {
            let view = LedgerView::open(ledger, None)?;
            let which = match (index, uid, file) {
                (Some(i), _, _) => EntrySelector::Index(*i),
                (None, Some(u), _) => EntrySelector::Uid(u),
                (None, None, Some(f)) => EntrySelector::File(f),
                (None, None, None) => bail!("give --uid, --index or --file"),
            };
            w(out, &pretty(&auditor::inclusion_bundle(&view, which)?)?)?;
            Ok(EXIT_OK)
        }
        LedgerCommand::Consistency {
            ledger,
            from,
            from_size,
        } => {
            let view = LedgerView::open(ledger, None)?;
            let old_note = match (from, from_size) {
                (Some(f), _) => read_text(f)?,
                (None, Some(n)) => view
                    .checkpoint_at(*n)?
                    .ok_or_else(|| anyhow!("no checkpoint of size {n} was issued"))?,
                (None, None) => bail!("give --from FILE or --from-size N"),
            };
            w(
                out,
                &pretty(&auditor::consistency_bundle(&view, &old_note)?)?,
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
            let key = verify::load_key(key)?;
            let text = read_text(bundle)?;
            let old = old_checkpoint.as_deref().map(read_text).transpose()?;
            let result = auditor::check_bundle(&text, &key, file.as_deref(), old.as_deref());
            let (code, message, extra) = match result {
                Ok((msg, extra)) => (EXIT_OK, msg, extra),
                Err(CheckFailure::Invalid(why)) => {
                    (EXIT_ALTERED, why.to_string(), serde_json::Value::Null)
                }
                Err(CheckFailure::Unreadable(why)) => return Err(why.into()),
            };
            if *as_json {
                let doc = json!({ "valid": code == EXIT_OK, "message": message, "details": extra });
                w(out, &pretty(&doc)?)?;
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
    dir: &std::path::Path,
    origin: Option<&str>,
    gateway_id: &str,
    paths: &[PathBuf],
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut written = Ok(());
    let sum = auditor::record_files(dir, origin, gateway_id, paths, &mut |path, outcome| {
        let line = match outcome {
            Recorded::Error(why) => format!("error      {}  {why}", path.display()),
            Recorded::Conflict { index } => format!(
                "CONFLICT   {}  entry {index} has other content",
                path.display()
            ),
            Recorded::Appended { index } => format!("recorded   {}  entry {index}", path.display()),
            Recorded::Duplicate { index } => {
                format!("duplicate  {}  entry {index}", path.display())
            }
        };
        if written.is_ok() {
            written = writeln!(out, "{line}");
        }
    })?;
    written?;
    writeln!(
        out,
        "{} recorded, {} already logged, {} conflicts, {} errors; log size {}",
        sum.appended, sum.duplicates, sum.conflicts, sum.errors, sum.log_size
    )?;
    Ok(if sum.conflicts > 0 {
        EXIT_ALTERED
    } else if sum.errors > 0 {
        EXIT_ERROR
    } else {
        EXIT_OK
    })
}
