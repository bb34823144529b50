//! Files and folders in batch (what `radguard deid` runs): inputs walked, each de-identified
//! into an output folder (named by its new SOP Instance UID, with a report of what changed) or
//! quarantined with a record of why, or checked for residual PHI; the work is spread over a
//! thread pool. Results are returned typed, progress goes to a callback; nothing is printed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::check::{check_dataset, claimed_profile, Finding, Known};
use crate::part10::{deidentify_file, read_file, FileError};
use crate::profile::{DeidOption, Profile, ProfileError, ProfileName};
use crate::spec::{DeidSpec, SpecError};
use crate::transform::{Deidentifier, Report};

/// Why a batch could not start (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The key, the safe private list or the profile options.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("output folder {}: {source}", path.display())]
    OutDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An input that does not exist or a folder that cannot be walked.
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start workers: {0}")]
    Workers(#[from] rayon::ThreadPoolBuildError),
}

/// How far a batch is: `Started` once with the number of files, then `FileDone` once per file,
/// from the worker threads in any order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Started { files: usize },
    FileDone,
}

/// What happened to one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Written,
    Quarantined,
}

/// One input's outcome (serialized: one line of `radguard deid --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileLine {
    pub input: String,
    pub status: FileStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The report or quarantine record that could not be written (the outcome stands).
    #[serde(skip)]
    pub warning: Option<String>,
}

/// A de-identification batch.
#[derive(Debug)]
pub struct DeidBatch {
    /// The output folder, canonical.
    pub out: PathBuf,
    /// One line per input, in input order.
    pub files: Vec<FileLine>,
    /// Time spent on the files (after the inputs were listed).
    pub elapsed: Duration,
}

impl DeidBatch {
    /// The inputs that were quarantined.
    pub fn quarantined(&self) -> usize {
        self.files
            .iter()
            .filter(|f| f.status == FileStatus::Quarantined)
            .count()
    }
}

/// The output folder and its two subfolders.
#[derive(Debug, Clone)]
pub struct OutDirs {
    pub out: PathBuf,
    pub reports: PathBuf,
    pub quarantine: PathBuf,
}

impl OutDirs {
    /// Create the output folder and its two subfolders; refuse subfolders that are symbolic
    /// links (they would lead writes outside DIR).
    pub fn prepare(out: &Path) -> std::io::Result<OutDirs> {
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
}

/// De-identify `inputs` (files, folders walked) into `out` per `spec`, on `jobs` threads (0:
/// one per CPU). Outputs go to OUT/<new SOP Instance UID>.dcm with a report in OUT/reports/;
/// inputs that cannot be de-identified get a record in OUT/quarantine/ instead.
pub fn deidentify_files(
    spec: &DeidSpec,
    inputs: &[PathBuf],
    out: &Path,
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<DeidBatch, BatchError> {
    let deid = spec.build()?;
    let cap = spec.head_cap()?;
    let dirs = OutDirs::prepare(out).map_err(|source| BatchError::OutDir {
        path: out.to_path_buf(),
        source,
    })?;
    let files = collect_inputs(inputs, Some(&dirs.out))?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    progress(Progress::Started { files: files.len() });
    let started = Instant::now();
    let lines: Vec<FileLine> = pool.install(|| {
        files
            .par_iter()
            .map(|f| {
                let r = one_file(f, &deid, &dirs, cap);
                progress(Progress::FileDone);
                r
            })
            .collect()
    });
    Ok(DeidBatch {
        out: dirs.out,
        files: lines,
        elapsed: started.elapsed(),
    })
}

/// Walk inputs: files as given, folders recursively (not following symbolic links to
/// folders), skipping `exclude` (the output folder) and sorted for a stable order.
pub fn collect_inputs(
    inputs: &[PathBuf],
    exclude: Option<&Path>,
) -> Result<Vec<PathBuf>, BatchError> {
    let mut files = Vec::new();
    for input in inputs {
        let err = |source| BatchError::Input {
            path: input.clone(),
            source,
        };
        let meta = std::fs::metadata(input).map_err(err)?;
        if meta.is_dir() {
            walk_dir(input, exclude, &mut files).map_err(err)?;
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
            // The de-identified file is complete; only its report would be missing.
            let warning = write_json_atomic(&dirs.reports, &format!("{stem}.json"), &report)
                .err()
                .map(|e| format!("cannot write the report for {name}: {e}"));
            FileLine {
                input: shown,
                status: FileStatus::Written,
                output: Some(r.output.display().to_string()),
                reason: None,
                changes: Some(r.outcome.report.changes.len()),
                sha256: Some(r.input_sha256),
                warning,
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
            let warning = write_json_atomic(&dirs.quarantine, &format!("{id}.json"), &rec)
                .err()
                .map(|we| format!("cannot write the quarantine record for {shown}: {we}"));
            FileLine {
                input: shown,
                status: FileStatus::Quarantined,
                output: None,
                reason: Some(reason),
                changes: None,
                sha256: sha,
                warning,
            }
        }
    }
}

/// One checked file (serialized: one line of `radguard deid --check --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckLine {
    pub file: String,
    /// The file could not be read as DICOM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub findings: Vec<Finding>,
}

/// A residual-PHI check over files.
#[derive(Debug)]
pub struct CheckBatch {
    /// One line per DICOM Part 10 file (or unreadable one), in input order.
    pub lines: Vec<CheckLine>,
    /// Files that are not DICOM Part 10 (reports, notes): nothing to check.
    pub skipped: usize,
}

/// Check `inputs` (files, folders walked) for residual PHI, on `jobs` threads (0: one per
/// CPU). Each file is judged by `options` if given, else by the options it claims in
/// (0012,0064); the identifiers of the `against` originals must not appear anywhere.
pub fn check_files(
    inputs: &[PathBuf],
    profile: ProfileName,
    options: &[DeidOption],
    against: &[PathBuf],
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<CheckBatch, BatchError> {
    let given = if options.is_empty() {
        None
    } else {
        Some(Profile::new(profile, options.iter().copied())?)
    };
    let basic = Profile::new(profile, [])?;
    let known = if against.is_empty() {
        None
    } else {
        let originals = collect_inputs(against, None)?;
        let mut k = Known::default();
        for f in &originals {
            if let Ok((_, ds)) = read_file(f) {
                k.learn(&ds, given.as_ref().unwrap_or(&basic));
            }
        }
        Some(k)
    };
    let files = collect_inputs(inputs, None)?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    progress(Progress::Started { files: files.len() });
    let lines: Vec<CheckLine> = pool.install(|| {
        files
            .par_iter()
            .filter_map(|f| {
                let line = match read_file(f) {
                    // Not DICOM (reports, notes): nothing to check.
                    Err(FileError::NotPart10) => None,
                    Ok((_, ds)) => {
                        let claimed = claimed_profile(&ds).and_then(Result::ok);
                        let profile = given.as_ref().or(claimed.as_ref()).unwrap_or(&basic);
                        Some(CheckLine {
                            file: f.display().to_string(),
                            error: None,
                            findings: check_dataset(&ds, profile, known.as_ref()),
                        })
                    }
                    Err(e) => Some(CheckLine {
                        file: f.display().to_string(),
                        error: Some(e.to_string()),
                        findings: Vec::new(),
                    }),
                };
                progress(Progress::FileDone);
                line
            })
            .collect()
    });
    let skipped = files.len() - lines.len();
    Ok(CheckBatch { lines, skipped })
}
