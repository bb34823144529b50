//! The `radguard deid` subcommand: clap arguments and a runner that returns the exit status.
//! The binary wires it in; all the work is in the library.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::check::{check_dataset, claimed_profile, Finding, Known};
use crate::part10::{deidentify_file, read_file, FileError};
use crate::profile::{BurnedInPolicy, DeidOption, Profile, ProfileName};
use crate::spec::DeidSpec;
use crate::transform::{Deidentifier, Report};

/// Exit status: everything de-identified (or, with --check, no residue found).
pub const EXIT_OK: i32 = 0;
/// Exit status: at least one input quarantined (or, with --check, residue found).
pub const EXIT_FINDINGS: i32 = 1;
/// Exit status: bad arguments, unreadable key, unusable output folder.
pub const EXIT_USAGE: i32 = 2;

/// De-identify DICOM files per PS3.15 Annex E (Basic Application Level Confidentiality
/// Profile and its options), or check files for residual PHI.
///
/// Every element at every depth of nested sequences is handled per Table E.1-1 (the carried
/// edition is embedded; see `radguard-deid`'s README). UIDs become `2.25.<n>` and the
/// Patient ID a pseudonym, both HMAC-SHA256 under the site key (--key-file; there is no way
/// to run without one), so the same inputs give the same outputs in every run and on every
/// machine sharing the key. Private attributes are removed (unless --option
/// retain-safe-private and listed in --safe-private), and so are curves and overlays. The
/// markers (0012,0062) = YES, (0012,0063), (0012,0064) and (0028,0303) are set. Pixel data is
/// never changed: instances with Burned In Annotation = YES, or of a class that usually has
/// burned-in text (secondary capture, ultrasound, screen saves), are quarantined unless
/// --allow-burned-in.
///
/// Outputs go to DIR/<new SOP Instance UID>.dcm (never named after the input, never outside
/// DIR), each with a JSON report of what was removed or replaced in DIR/reports/ (tags only,
/// no values). Inputs that cannot be de-identified are not written; their reason goes to
/// DIR/quarantine/<sha256 of the input path>.json (which names the input path: keep that
/// folder in-house).
/// Outputs are written to a temporary name and renamed when complete.
///
/// With --check, the inputs are read, not changed: every attribute that the profile should
/// have removed or emptied, private attributes, missing markers, and free text holding the
/// patient's name, ID or birth date (those of --against originals, or the file's own) are
/// reported.
///
/// Exit status: 0 all written (--check: nothing found), 1 something quarantined (--check:
/// residue found or a file unreadable), 2 usage error.
#[derive(Debug, Clone, clap::Args)]
pub struct DeidArgs {
    /// Files or folders (walked recursively; symbolic links to folders are not followed).
    #[arg(required = true, value_name = "IN")]
    pub inputs: Vec<PathBuf>,

    /// Output folder (created if missing). Not used with --check.
    #[arg(
        long,
        short = 'o',
        value_name = "DIR",
        required_unless_present = "check"
    )]
    pub out: Option<PathBuf>,

    /// The confidentiality profile.
    #[arg(long, value_enum, default_value_t = ProfileName::Basic)]
    pub profile: ProfileName,

    /// A profile option (repeatable). clean-pixel-data and
    /// clean-recognizable-visual-features are not implemented and are refused. With
    /// --check: the options to judge by (default: those the file claims in (0012,0064)).
    #[arg(long = "option", value_enum, value_name = "OPTION")]
    pub options: Vec<DeidOption>,

    /// The per-site secret key: a file of at least 16 bytes (surrounding whitespace is
    /// ignored), e.g. made with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'`.
    #[arg(long, value_name = "FILE", required_unless_present = "check")]
    pub key_file: Option<PathBuf>,

    /// With --option retain-safe-private: the safe private attributes, one
    /// `GGGG,"PRIVATE CREATOR",EE` per line.
    #[arg(long, value_name = "FILE")]
    pub safe_private: Option<PathBuf>,

    /// Write instances with burned-in annotation too (their pixel data is NOT cleaned).
    #[arg(long)]
    pub allow_burned_in: bool,

    /// Largest size of the elements before Pixel Data, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub max_head_mib: usize,

    /// Number of files processed in parallel [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// Print one JSON object per input on stdout (JSON Lines); the summary goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Never show a progress bar (it is only shown when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,

    /// Check the inputs for residual PHI instead of de-identifying them.
    #[arg(long, conflicts_with_all = ["out", "key_file", "allow_burned_in"])]
    pub check: bool,

    /// With --check: original files or folders whose patient names, IDs, birth dates and
    /// UIDs must not appear in the inputs.
    #[arg(long, value_name = "ORIGINAL", requires = "check")]
    pub against: Vec<PathBuf>,
}

/// Run `radguard deid`.
pub fn run_deid(args: DeidArgs) -> i32 {
    if args.check {
        return run_check(&args);
    }
    let (Some(out), Some(key_file)) = (args.out.clone(), args.key_file.clone()) else {
        eprintln!("radguard deid: --out and --key-file are required");
        return EXIT_USAGE;
    };
    let spec = DeidSpec {
        profile: args.profile,
        options: args.options.clone(),
        key_file,
        safe_private_file: args.safe_private.clone(),
        burned_in: if args.allow_burned_in {
            BurnedInPolicy::Allow
        } else {
            BurnedInPolicy::Refuse
        },
        max_head_mib: Some(args.max_head_mib),
    };
    let (deid, cap) = match spec.build().and_then(|d| Ok((d, spec.head_cap()?))) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("radguard deid: {e}");
            return EXIT_USAGE;
        }
    };
    let dirs = match prepare_out(&out) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("radguard deid: output folder {}: {e}", out.display());
            return EXIT_USAGE;
        }
    };
    let files = match collect_inputs(&args.inputs, Some(&dirs.out)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("radguard deid: {e}");
            return EXIT_USAGE;
        }
    };
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(0))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("radguard deid: cannot start workers: {e}");
            return EXIT_USAGE;
        }
    };
    let bar = progress(files.len(), args.no_progress);
    let started = Instant::now();
    let results: Vec<FileLine> = pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                let r = one_file(f, &deid, &dirs, cap);
                bar.inc(1);
                r
            })
            .collect()
    });
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    let mut quarantined = 0usize;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &results {
        if r.status == "quarantined" {
            quarantined += 1;
            *reasons
                .entry(short_reason(r.reason.as_deref().unwrap_or("")))
                .or_default() += 1;
        }
        if args.json {
            if let Ok(s) = serde_json::to_string(r) {
                let _ = writeln!(stdout, "{s}");
            }
        } else if r.status == "quarantined" {
            let _ = writeln!(
                stdout,
                "QUARANTINED {}: {}",
                r.input,
                r.reason.as_deref().unwrap_or("")
            );
        }
    }
    let written = results.len() - quarantined;
    eprintln!(
        "radguard deid: {} input(s): {written} written to {}, {quarantined} quarantined; {:.2}s ({:.1} files/s)",
        results.len(),
        dirs.out.display(),
        elapsed,
        results.len() as f64 / elapsed.max(1e-9)
    );
    for (why, n) in &reasons {
        eprintln!("  {n} × {why}");
    }
    if quarantined > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

fn short_reason(r: &str) -> String {
    r.split(" at byte")
        .next()
        .unwrap_or(r)
        .chars()
        .take(100)
        .collect()
}

struct OutDirs {
    out: PathBuf,
    reports: PathBuf,
    quarantine: PathBuf,
}

/// Create the output folder and its two subfolders; refuse subfolders that are symbolic
/// links (they would lead writes outside DIR).
fn prepare_out(out: &Path) -> std::io::Result<OutDirs> {
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    let sub = |name: &str| -> std::io::Result<PathBuf> {
        let p = out.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => Err(std::io::Error::other(
                format!("{} exists and is not a folder", p.display()),
            )),
            Ok(_) => Ok(p),
            Err(_) => {
                std::fs::create_dir(&p)?;
                Ok(p)
            }
        }
    };
    Ok(OutDirs {
        reports: sub("reports")?,
        quarantine: sub("quarantine")?,
        out,
    })
}

/// Walk inputs: files as given, folders recursively (not following symbolic links to
/// folders), skipping `exclude` (the output folder) and sorted for a stable order.
pub fn collect_inputs(inputs: &[PathBuf], exclude: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| format!("{}: {e}", input.display()))?;
        if meta.is_dir() {
            walk_dir(input, exclude, &mut files)
                .map_err(|e| format!("{}: {e}", input.display()))?;
        } else {
            files.push(input.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk_dir(dir: &Path, exclude: Option<&Path>, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if let (Some(ex), Ok(c)) = (exclude, dir.canonicalize()) {
        if c == ex {
            return Ok(());
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let p = entry.path();
        if ft.is_dir() {
            walk_dir(&p, exclude, out)?;
        } else if ft.is_file() || (ft.is_symlink() && p.metadata().is_ok_and(|m| m.is_file())) {
            out.push(p);
        }
    }
    Ok(())
}

fn progress(n: usize, off: bool) -> ProgressBar {
    if off || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// One line of `--json` output.
#[derive(Debug, serde::Serialize)]
struct FileLine {
    input: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// The per-file report written to DIR/reports/.
#[derive(Debug, serde::Serialize)]
struct FileReport<'a> {
    output: String,
    input_sha256: &'a str,
    bytes_in: u64,
    bytes_out: u64,
    pixel_data_passed_through: bool,
    #[serde(flatten)]
    report: &'a Report,
}

#[derive(Debug, serde::Serialize)]
struct QuarantineRecord<'a> {
    input: String,
    input_sha256: Option<&'a str>,
    reason: &'a str,
}

fn write_json_atomic(dir: &Path, name: &str, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".radguard-deid-")
        .suffix(".partial")
        .tempfile_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, value).map_err(std::io::Error::other)?;
    tmp.write_all(b"\n")?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

fn one_file(input: &Path, deid: &Arc<Deidentifier>, dirs: &OutDirs, cap: usize) -> FileLine {
    let shown = input.display().to_string();
    let is_dicomdir = input
        .file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
    let result = if is_dicomdir {
        Err((FileError::Dicomdir, None))
    } else {
        deidentify_file(input, deid, &dirs.out, Some(cap))
    };
    match result {
        Ok(r) => {
            let name = r
                .output
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let report = FileReport {
                output: name.clone(),
                input_sha256: &r.input_sha256,
                bytes_in: r.outcome.bytes_in,
                bytes_out: r.outcome.bytes_out,
                pixel_data_passed_through: r.outcome.had_pixel_data,
                report: &r.outcome.report,
            };
            let stem = name.trim_end_matches(".dcm");
            if let Err(e) = write_json_atomic(&dirs.reports, &format!("{stem}.json"), &report) {
                // The de-identified file is complete; only its report is missing.
                eprintln!("radguard deid: cannot write the report for {name}: {e}");
            }
            FileLine {
                input: shown,
                status: "written",
                output: Some(r.output.display().to_string()),
                reason: None,
                changes: Some(r.outcome.report.changes.len()),
                sha256: Some(r.input_sha256),
            }
        }
        Err((e, sha)) => {
            let reason = e.to_string();
            // One record per input path (identical files at two paths get two records).
            let id = hex::encode(Sha256::digest(input.as_os_str().as_encoded_bytes()));
            let rec = QuarantineRecord {
                input: shown.clone(),
                input_sha256: sha.as_deref(),
                reason: &reason,
            };
            if let Err(we) = write_json_atomic(&dirs.quarantine, &format!("{id}.json"), &rec) {
                eprintln!("radguard deid: cannot write the quarantine record for {shown}: {we}");
            }
            FileLine {
                input: shown,
                status: "quarantined",
                output: None,
                reason: Some(reason),
                changes: None,
                sha256: sha,
            }
        }
    }
}

/// One line of `--check --json` output.
#[derive(Debug, serde::Serialize)]
struct CheckLine {
    file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    findings: Vec<Finding>,
}

fn run_check(args: &DeidArgs) -> i32 {
    let given = if args.options.is_empty() {
        None
    } else {
        match Profile::new(args.profile, args.options.iter().copied()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("radguard deid --check: {e}");
                return EXIT_USAGE;
            }
        }
    };
    let basic = match Profile::new(args.profile, []) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("radguard deid --check: {e}");
            return EXIT_USAGE;
        }
    };
    let known = if args.against.is_empty() {
        None
    } else {
        let originals = match collect_inputs(&args.against, None) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("radguard deid --check: {e}");
                return EXIT_USAGE;
            }
        };
        let mut k = Known::default();
        for f in &originals {
            if let Ok((_, ds)) = read_file(f) {
                k.learn(&ds, given.as_ref().unwrap_or(&basic));
            }
        }
        Some(k)
    };
    let files = match collect_inputs(&args.inputs, None) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("radguard deid --check: {e}");
            return EXIT_USAGE;
        }
    };
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.unwrap_or(0))
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("radguard deid --check: {e}");
            return EXIT_USAGE;
        }
    };
    let bar = progress(files.len(), args.no_progress);
    let lines: Vec<CheckLine> = pool.install(|| {
        files
            .par_iter()
            .filter_map(|f| {
                let line = match read_file(f) {
                    // Not DICOM (reports, notes): nothing to check.
                    Err(FileError::NotPart10) => {
                        bar.inc(1);
                        return None;
                    }
                    Ok((_, ds)) => {
                        let claimed = claimed_profile(&ds).and_then(Result::ok);
                        let profile = given.as_ref().or(claimed.as_ref()).unwrap_or(&basic);
                        CheckLine {
                            file: f.display().to_string(),
                            error: None,
                            findings: check_dataset(&ds, profile, known.as_ref()),
                        }
                    }
                    Err(e) => CheckLine {
                        file: f.display().to_string(),
                        error: Some(e.to_string()),
                        findings: Vec::new(),
                    },
                };
                bar.inc(1);
                Some(line)
            })
            .collect()
    });
    bar.finish_and_clear();
    let skipped = files.len() - lines.len();
    let mut stdout = std::io::stdout().lock();
    let (mut dirty, mut errors, mut total) = (0usize, 0usize, 0usize);
    for l in &lines {
        if l.error.is_some() {
            errors += 1;
        }
        if !l.findings.is_empty() {
            dirty += 1;
            total += l.findings.len();
        }
        if args.json {
            if let Ok(s) = serde_json::to_string(l) {
                let _ = writeln!(stdout, "{s}");
            }
            continue;
        }
        if let Some(e) = &l.error {
            let _ = writeln!(stdout, "{}: ERROR {e}", l.file);
        }
        for f in &l.findings {
            let _ = writeln!(
                stdout,
                "{}: {} {} {}: {}",
                l.file,
                serde_json::to_value(f.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                f.path,
                f.name,
                f.detail
            );
        }
    }
    eprintln!(
        "radguard deid --check: {} file(s), {dirty} with residual PHI ({total} finding(s)), {errors} unreadable, {skipped} not DICOM Part 10 (skipped)",
        lines.len()
    );
    if dirty > 0 || errors > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}
