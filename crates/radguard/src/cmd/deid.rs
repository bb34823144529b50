//! `radguard deid` and `radguard deid --check`: arguments, output, exit status. The work is
//! [`radguard_deid::batch`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use radguard_deid::batch::{self, CheckBatch, DeidBatch, FileStatus};
use radguard_deid::{BurnedInPolicy, DeidOption, DeidSpec, ProfileName};

use super::files_bar::FilesBar;

/// Exit status: everything de-identified (or, with --check, no residue found).
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one input quarantined (or, with --check, residue found).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: bad arguments, unreadable key, unusable output folder.
pub const EXIT_USAGE: u8 = 2;

const BAR: &str = "{bar:40} {pos}/{len} files {per_sec} eta {eta}";

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
    #[arg(long, value_enum, default_value_t = ProfileArg::Basic)]
    pub profile: ProfileArg,

    /// A profile option (repeatable). clean-pixel-data and
    /// clean-recognizable-visual-features are not implemented and are refused. With
    /// --check: the options to judge by (default: those the file claims in (0012,0064)).
    #[arg(long = "option", value_enum, value_name = "OPTION")]
    pub options: Vec<OptionArg>,

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

/// `--profile`: the command-line face of [`ProfileName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// Basic Application Level Confidentiality Profile (PS3.15 E.2).
    Basic,
}

impl From<ProfileArg> for ProfileName {
    fn from(p: ProfileArg) -> Self {
        match p {
            ProfileArg::Basic => ProfileName::Basic,
        }
    }
}

/// `--option`: the command-line face of [`DeidOption`] (spelled as [`DeidOption::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptionArg {
    /// Retain Safe Private Option (113111): keep private attributes on the safe list.
    RetainSafePrivate,
    /// Retain UIDs Option (113110).
    RetainUids,
    /// Retain Device Identity Option (113109).
    RetainDeviceIdentity,
    /// Retain Institution Identity Option (113112).
    RetainInstitutionIdentity,
    /// Retain Patient Characteristics Option (113108).
    RetainPatientCharacteristics,
    /// Retain Longitudinal Temporal Information with Full Dates Option (113106).
    RetainLongFullDates,
    /// Retain Longitudinal Temporal Information with Modified Dates Option (113107).
    RetainLongModifiedDates,
    /// Clean Descriptors Option (113105).
    CleanDescriptors,
    /// Clean Structured Content Option (113104).
    CleanStructuredContent,
    /// Clean Graphics Option (113103).
    CleanGraphics,
    /// Clean Pixel Data Option (113101): not implemented; asking for it is an error.
    CleanPixelData,
    /// Clean Recognizable Visual Features Option (113102): not implemented; an error.
    CleanRecognizableVisualFeatures,
}

impl From<OptionArg> for DeidOption {
    fn from(o: OptionArg) -> Self {
        match o {
            OptionArg::RetainSafePrivate => DeidOption::RetainSafePrivate,
            OptionArg::RetainUids => DeidOption::RetainUids,
            OptionArg::RetainDeviceIdentity => DeidOption::RetainDeviceIdentity,
            OptionArg::RetainInstitutionIdentity => DeidOption::RetainInstitutionIdentity,
            OptionArg::RetainPatientCharacteristics => DeidOption::RetainPatientCharacteristics,
            OptionArg::RetainLongFullDates => DeidOption::RetainLongFullDates,
            OptionArg::RetainLongModifiedDates => DeidOption::RetainLongModifiedDates,
            OptionArg::CleanDescriptors => DeidOption::CleanDescriptors,
            OptionArg::CleanStructuredContent => DeidOption::CleanStructuredContent,
            OptionArg::CleanGraphics => DeidOption::CleanGraphics,
            OptionArg::CleanPixelData => DeidOption::CleanPixelData,
            OptionArg::CleanRecognizableVisualFeatures => {
                DeidOption::CleanRecognizableVisualFeatures
            }
        }
    }
}

/// Runs `radguard deid`.
pub fn run(args: DeidArgs) -> ExitCode {
    ExitCode::from(if args.check {
        run_check(&args)
    } else {
        run_deid(&args)
    })
}

fn run_deid(args: &DeidArgs) -> u8 {
    let (Some(out), Some(key_file)) = (args.out.clone(), args.key_file.clone()) else {
        eprintln!("radguard deid: --out and --key-file are required");
        return EXIT_USAGE;
    };
    let spec = DeidSpec {
        profile: args.profile.into(),
        options: args.options.iter().map(|&o| o.into()).collect(),
        key_file,
        safe_private_file: args.safe_private.clone(),
        burned_in: if args.allow_burned_in {
            BurnedInPolicy::Allow
        } else {
            BurnedInPolicy::Refuse
        },
        max_head_mib: Some(args.max_head_mib),
    };
    let bar = FilesBar::new(args.no_progress, 0, BAR, None);
    let result = batch::deidentify_files(&spec, &args.inputs, &out, args.jobs.unwrap_or(0), &|p| {
        bar.update(p.into())
    });
    bar.finish();
    match result {
        Ok(b) => report_deid(&b, args.json),
        Err(e) => {
            eprintln!("radguard deid: {e}");
            EXIT_USAGE
        }
    }
}

fn report_deid(b: &DeidBatch, json: bool) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &b.files {
        if let Some(w) = &r.warning {
            eprintln!("radguard deid: {w}");
        }
        if r.status == FileStatus::Quarantined {
            *reasons
                .entry(short_reason(r.reason.as_deref().unwrap_or("")))
                .or_default() += 1;
        }
        if json {
            if let Ok(s) = serde_json::to_string(r) {
                let _ = writeln!(stdout, "{s}");
            }
        } else if r.status == FileStatus::Quarantined {
            let _ = writeln!(
                stdout,
                "QUARANTINED {}: {}",
                r.input,
                r.reason.as_deref().unwrap_or("")
            );
        }
    }
    let quarantined = b.quarantined();
    let written = b.files.len() - quarantined;
    let elapsed = b.elapsed.as_secs_f64();
    eprintln!(
        "radguard deid: {} input(s): {written} written to {}, {quarantined} quarantined; {:.2}s ({:.1} files/s)",
        b.files.len(),
        b.out.display(),
        elapsed,
        b.files.len() as f64 / elapsed.max(1e-9)
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

fn run_check(args: &DeidArgs) -> u8 {
    let options: Vec<DeidOption> = args.options.iter().map(|&o| o.into()).collect();
    let bar = FilesBar::new(args.no_progress, 0, BAR, None);
    let result = batch::check_files(
        &args.inputs,
        args.profile.into(),
        &options,
        &args.against,
        args.jobs.unwrap_or(0),
        &|p| bar.update(p.into()),
    );
    bar.finish();
    match result {
        Ok(c) => report_check(&c, args.json),
        Err(e) => {
            eprintln!("radguard deid --check: {e}");
            EXIT_USAGE
        }
    }
}

fn report_check(c: &CheckBatch, json: bool) -> u8 {
    let mut stdout = std::io::stdout().lock();
    let (mut dirty, mut errors, mut total) = (0usize, 0usize, 0usize);
    for l in &c.lines {
        if l.error.is_some() {
            errors += 1;
        }
        if !l.findings.is_empty() {
            dirty += 1;
            total += l.findings.len();
        }
        if json {
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
        "radguard deid --check: {} file(s), {dirty} with residual PHI ({total} finding(s)), {errors} unreadable, {} not DICOM Part 10 (skipped)",
        c.lines.len(),
        c.skipped
    );
    if dirty > 0 || errors > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Every library option has its command-line value, spelled as the library spells it.
    #[test]
    fn option_args_cover_the_library() {
        let args: Vec<DeidOption> = OptionArg::value_variants()
            .iter()
            .map(|&o| o.into())
            .collect();
        assert_eq!(args, DeidOption::ALL);
        for &o in OptionArg::value_variants() {
            let name = o.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(name.as_deref(), Some(DeidOption::from(o).name()));
        }
    }
}
