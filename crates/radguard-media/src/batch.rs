//! Files, folders and media in batch (what `radguard scan` and `radguard sanitize` run):
//! inputs walked, each scanned or rebuilt, the work spread over a thread pool. Results are
//! returned typed, progress goes to a callback; nothing is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::{
    sanitize_file, scan_path, FileReport, SanitizeError, SanitizeOptions, SanitizeOutcome,
    ScanOptions,
};

/// Why a batch could not start (nothing was scanned or written).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// A path that does not exist.
    #[error("{}: {source}", path.display())]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The output folder cannot be created.
    #[error("cannot create {}: {source}", path.display())]
    OutDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {0}")]
    Workers(#[from] rayon::ThreadPoolBuildError),
}

/// How far a batch is: `Started` once with the number of files, then `FileDone` once per file,
/// from the worker threads in any order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Started { files: usize },
    FileDone,
}

/// A scan over files.
#[derive(Debug)]
pub struct ScanBatch {
    /// One report per file, in walk order.
    pub reports: Vec<FileReport>,
    /// Time spent scanning (after the paths were walked).
    pub elapsed: Duration,
}

/// Scan `paths` (files, folders walked) on `jobs` threads (0: one per CPU). Files that cannot
/// be read are reports with an `io` finding, not errors.
pub fn scan_files(
    paths: &[PathBuf],
    opts: &ScanOptions,
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<ScanBatch, BatchError> {
    let files = collect(paths, None)?;
    let pool = pool(jobs)?;
    let started = Instant::now();
    progress(Progress::Started { files: files.len() });
    let reports: Vec<FileReport> = pool.install(|| {
        files
            .par_iter()
            .map(|p| {
                let r = scan_path(p, opts);
                progress(Progress::FileDone);
                r
            })
            .collect()
    });
    Ok(ScanBatch {
        reports,
        elapsed: started.elapsed(),
    })
}

/// One input of a sanitize batch: its outcome, or why it could not be handled at all.
pub type Sanitized = (PathBuf, Result<SanitizeOutcome, SanitizeError>);

/// Rebuild `inputs` (files, folders walked; the output folder itself is skipped) into `out`
/// (created if missing) on `jobs` threads (0: one per CPU).
pub fn sanitize_files(
    inputs: &[PathBuf],
    out: &Path,
    opts: &SanitizeOptions,
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<Sanitized>, BatchError> {
    std::fs::create_dir_all(out).map_err(|source| BatchError::OutDir {
        path: out.to_path_buf(),
        source,
    })?;
    let out_canon = std::fs::canonicalize(out).ok();
    let files = collect(inputs, out_canon.as_deref())?;
    let pool = pool(jobs)?;
    progress(Progress::Started { files: files.len() });
    Ok(pool.install(|| {
        files
            .par_iter()
            .map(|p| {
                let r = sanitize_file(p, out, opts);
                progress(Progress::FileDone);
                (p.clone(), r)
            })
            .collect()
    }))
}

/// Expands files and folders into a list of files (folders sorted, walked recursively;
/// folders that cannot be read are listed as files, so that they get an I/O finding).
/// Folders at or under `skip_under` (canonical) are not walked.
pub fn collect(paths: &[PathBuf], skip_under: Option<&Path>) -> Result<Vec<PathBuf>, BatchError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| BatchError::Input {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk_dir(p, &mut out, skip_under);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk_dir(dir: &Path, out: &mut Vec<PathBuf>, skip_under: Option<&Path>) {
    if let (Some(skip), Ok(canon)) = (skip_under, std::fs::canonicalize(dir)) {
        if canon.starts_with(skip) {
            return;
        }
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        // Unreadable folders show up as an I/O finding when scanned as a file.
        out.push(dir.to_path_buf());
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk_dir(&p, out, skip_under),
            Ok(m) if m.file_type().is_symlink() => {
                // Follow links to files, never links to folders (loops, escapes).
                if std::fs::metadata(&p).is_ok_and(|t| t.is_file()) {
                    out.push(p);
                }
            }
            Ok(_) => out.push(p),
            Err(_) => out.push(p),
        }
    }
}

fn pool(jobs: usize) -> Result<rayon::ThreadPool, BatchError> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?)
}
