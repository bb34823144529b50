//! `radguard scan` and `radguard sanitize`: arguments, output, exit status. The work is
//! [`radguard_media::batch`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use radguard_dicom::limits::Limits;
use radguard_media::batch::{self, ScanBatch};
use radguard_media::{FileReport, SanitizeOptions, SanitizeOutcome, ScanOptions, Verdict};

use super::files_bar::FilesBar;

/// Exit status: everything clean (scan) or written (sanitize).
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one file is not clean (scan) or was quarantined (sanitize).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: bad arguments, a path that does not exist, an unusable output folder.
pub const EXIT_USAGE: u8 = 2;

const BAR: &str = "{elapsed_precise} [{bar:40}] {pos}/{len} files {msg}";
const BAR_CHARS: &str = "=> ";

/// Check DICOM files, folders and media (CD, DVD, USB stick with a DICOMDIR) for malware.
///
/// Each file gets a verdict: clean, suspicious, malformed, not-dicom or malicious, with
/// findings (severity, byte offset, explanation). Looks for executables hidden in the
/// 128-byte preamble (PE/DOS, ELF, Mach-O, #! scripts; ZIP, PDF; TIFF only with
/// --allow-tiff) and inside element values, bytes after the data set, a bad meta header,
/// impossible lengths, misplaced undefined lengths, deep nesting, pixel data of the wrong
/// size, deflate bombs, and DICOMDIR paths that leave the media or name missing files.
/// Files are only read, never changed.
///
/// Exit status: 0 all files clean, 1 at least one file is not clean (including not-dicom),
/// 2 usage error.
#[derive(Debug, Clone, clap::Args)]
pub struct ScanArgs {
    /// Files or folders to scan. Folders are walked recursively (symbolic links to folders
    /// are not followed). Point it at the mounted CD to check a patient's disc.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Print one JSON object per file on stdout (JSON Lines); the summary goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Number of files scanned in parallel [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// Accept a TIFF header in the preamble (dual-personality whole-slide images) instead of
    /// calling the file suspicious.
    #[arg(long)]
    pub allow_tiff: bool,

    /// Deepest sequence nesting accepted.
    #[arg(long, value_name = "N", default_value_t = Limits::SCANNER.max_depth)]
    pub max_depth: usize,

    /// Largest inflated size of a Deflated data set, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = Limits::SCANNER.max_inflated >> 20)]
    pub max_inflated_mib: u64,

    /// Largest inflated:compressed ratio of a Deflated data set (checked past 16 MiB).
    #[arg(long, value_name = "RATIO", default_value_t = Limits::SCANNER.max_inflate_ratio)]
    pub max_inflate_ratio: u64,

    /// List only files that are not clean (the summary is always printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Never show a progress bar (it is only shown when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// Rebuild DICOM files into clean copies (content disarm and reconstruction).
///
/// Each input is parsed and written anew into --out: preamble zeroed, meta header rebuilt
/// from the data set, bytes after the data set dropped, private elements holding
/// executables dropped, and optionally all private elements, overlays or encapsulated
/// documents. Output files are named <SOP Instance UID>.dcm (after validating the UID) or
/// <sha256>.dcm, never after the input's name, and are never written outside --out. Every
/// output is scanned again and must be clean. What cannot be made safe is copied to
/// <out>/quarantine/<sha256>.quarantined with a <sha256>.reason.txt. DICOMDIR files are
/// skipped (they name the original files). Inputs are never modified.
///
/// Exit status: 0 everything written or skipped, 1 something quarantined, 2 usage or output
/// folder error.
#[derive(Debug, Clone, clap::Args)]
pub struct SanitizeArgs {
    /// Files or folders to sanitize (folders recursively).
    #[arg(required = true, value_name = "IN")]
    pub inputs: Vec<PathBuf>,

    /// Output folder; created if missing. Clean copies go here, the rest to DIR/quarantine/.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub out: PathBuf,

    /// Print one JSON object per input on stdout (JSON Lines); the summary goes to stderr.
    #[arg(long)]
    pub json: bool,

    /// Number of files processed in parallel [default: number of CPUs].
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,

    /// Accept a TIFF header in the input's preamble (it is zeroed in the output anyway).
    #[arg(long)]
    pub allow_tiff: bool,

    /// Drop all private elements (odd groups) except blocks of --keep-private-creator.
    #[arg(long)]
    pub drop_private: bool,

    /// With --drop-private: keep the private block of this Private Creator (repeatable),
    /// e.g. --keep-private-creator "SIEMENS CSA HEADER".
    #[arg(long, value_name = "CREATOR", requires = "drop_private")]
    pub keep_private_creator: Vec<String>,

    /// Drop overlay groups (6000-601E,xxxx): burnt-in annotations and overlay bitmaps.
    #[arg(long)]
    pub drop_overlays: bool,

    /// Quarantine instances that carry an Encapsulated Document (PDF, CDA, STL...) instead
    /// of importing them.
    #[arg(long)]
    pub drop_encapsulated_documents: bool,

    /// Largest input file rebuilt, in MiB (rebuilding holds the file in memory).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub max_input_mib: u64,

    /// List only inputs that were not written as-is (the summary is always printed).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = None;
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(u);
    }
    match unit {
        None => format!("{n} B"),
        Some(u) => format!("{v:.1} {u}"),
    }
}

fn print_report(out: &mut impl Write, r: &FileReport) -> std::io::Result<()> {
    writeln!(out, "{:<11} {}", r.verdict.as_str(), r.path.display())?;
    for f in &r.findings {
        let off = f.offset.map(|o| format!(" @{o}")).unwrap_or_default();
        writeln!(
            out,
            "    {:<8} {}{}: {}",
            f.severity, f.code, off, f.message
        )?;
    }
    Ok(())
}

/// The worker threads for --jobs: 0 is refused (None is one per CPU).
fn jobs(cmd: &str, jobs: Option<usize>) -> Result<usize, u8> {
    match jobs {
        Some(0) => {
            eprintln!("radguard {cmd}: --jobs must be at least 1");
            Err(EXIT_USAGE)
        }
        Some(j) => Ok(j),
        None => Ok(0),
    }
}

/// Runs `radguard scan`.
pub fn run_scan(args: ScanArgs) -> ExitCode {
    let opts = ScanOptions {
        allow_tiff_preamble: args.allow_tiff,
        max_depth: args.max_depth,
        max_inflated_bytes: args.max_inflated_mib.saturating_mul(1 << 20),
        max_inflate_ratio: args.max_inflate_ratio,
        ..ScanOptions::default()
    };
    let jobs = match jobs("scan", args.jobs) {
        Ok(j) => j,
        Err(code) => return ExitCode::from(code),
    };
    let bar = FilesBar::new(args.no_progress, 2, BAR, Some(BAR_CHARS));
    let result = batch::scan_files(&args.paths, &opts, jobs, &|p| bar.update(p.into()));
    bar.finish();
    match result {
        Ok(b) => ExitCode::from(report_scan(&b, &args)),
        Err(e) => {
            eprintln!("radguard scan: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn report_scan(b: &ScanBatch, args: &ScanArgs) -> u8 {
    let reports = &b.reports;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    let mut bytes = 0u64;
    for r in reports {
        *counts.entry(r.verdict).or_default() += 1;
        bytes += r.facts.as_ref().map(|f| f.bytes_read).unwrap_or(0);
        let res = if args.json {
            serde_json::to_string(r)
                .map_err(std::io::Error::other)
                .and_then(|s| writeln!(out, "{s}"))
        } else if args.quiet && r.verdict == Verdict::Clean {
            Ok(())
        } else {
            print_report(&mut out, r)
        };
        if res.is_err() {
            // stdout closed (e.g. piped into head): stop printing, keep the status.
            break;
        }
    }
    let _ = out.flush();
    let secs = b.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(", {}/s", human_bytes((bytes as f64 / secs) as u64))
    } else {
        String::new()
    };
    let parts: Vec<String> = [
        Verdict::Clean,
        Verdict::Suspicious,
        Verdict::Malformed,
        Verdict::NotDicom,
        Verdict::Malicious,
    ]
    .iter()
    .map(|v| format!("{} {}", counts.get(v).copied().unwrap_or(0), v))
    .collect();
    let summary = format!(
        "scanned {} files ({}) in {:.2} s{}: {}",
        reports.len(),
        human_bytes(bytes),
        secs,
        rate,
        parts.join(", ")
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    let worst = reports.iter().any(|r| r.verdict != Verdict::Clean);
    if worst {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

/// Runs `radguard sanitize`.
pub fn run_sanitize(args: SanitizeArgs) -> ExitCode {
    let opts = SanitizeOptions {
        scan: ScanOptions {
            allow_tiff_preamble: args.allow_tiff,
            ..ScanOptions::default()
        },
        drop_private: args.drop_private,
        keep_private_creators: args.keep_private_creator.clone(),
        drop_overlays: args.drop_overlays,
        drop_encapsulated_documents: args.drop_encapsulated_documents,
        max_input_bytes: args.max_input_mib.saturating_mul(1 << 20),
    };
    let jobs = match jobs("sanitize", args.jobs) {
        Ok(j) => j,
        Err(code) => return ExitCode::from(code),
    };
    let bar = FilesBar::new(args.no_progress, 2, BAR, Some(BAR_CHARS));
    let result = batch::sanitize_files(&args.inputs, &args.out, &opts, jobs, &|p| {
        bar.update(p.into())
    });
    bar.finish();
    let results = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("radguard sanitize: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let (mut written, mut dups, mut quarantined, mut skipped, mut errors) = (0, 0, 0, 0, 0);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (input, r) in &results {
        let line = match r {
            Ok(o) => {
                match o {
                    SanitizeOutcome::Written { duplicate, .. } => {
                        written += 1;
                        if *duplicate {
                            dups += 1;
                        }
                    }
                    SanitizeOutcome::Quarantined { .. } => quarantined += 1,
                    SanitizeOutcome::Skipped { .. } => skipped += 1,
                }
                if args.json {
                    serde_json::to_string(o).unwrap_or_default()
                } else {
                    human_outcome(o, args.quiet)
                }
            }
            Err(e) => {
                errors += 1;
                if args.json {
                    serde_json::json!({"outcome": "error", "input": input, "error": e.to_string()})
                        .to_string()
                } else {
                    format!("error       {}: {e}", input.display())
                }
            }
        };
        if !line.is_empty() && writeln!(out, "{line}").is_err() {
            break;
        }
    }
    let _ = out.flush();
    let summary = format!(
        "sanitized {} files: {written} written ({dups} duplicates), {quarantined} quarantined, {skipped} skipped, {errors} errors; output in {}",
        results.len(),
        args.out.display()
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    ExitCode::from(if errors > 0 {
        EXIT_USAGE
    } else if quarantined > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    })
}

fn human_outcome(o: &SanitizeOutcome, quiet: bool) -> String {
    match o {
        SanitizeOutcome::Written {
            input,
            output,
            changes,
            duplicate,
            ..
        } => {
            if quiet && changes.is_empty() {
                return String::new();
            }
            let mut s = format!(
                "{:<11} {} -> {}",
                if *duplicate { "duplicate" } else { "written" },
                input.display(),
                output.display()
            );
            for c in changes {
                s.push_str(&format!("\n    {c}"));
            }
            s
        }
        SanitizeOutcome::Quarantined {
            input,
            copy,
            reasons,
            ..
        } => {
            let mut s = format!(
                "{:<11} {} -> {}",
                "quarantined",
                input.display(),
                copy.display()
            );
            for r in reasons {
                s.push_str(&format!("\n    {r}"));
            }
            s
        }
        SanitizeOutcome::Skipped { input, reason } => {
            format!("{:<11} {}: {reason}", "skipped", input.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(human_bytes(5 << 50), "5120.0 TiB");
    }
}
