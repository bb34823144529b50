//! Malware scanning and content disarm for DICOM Part 10 files and media (threat T4).
//!
//! A DICOM file can also be an executable: the 128-byte preamble may hold a DOS/PE header
//! whose sections hide in a private element (CVE-2019-11687, "PEDICOM"), or an ELF header.
//! This crate decides whether a file is safe to import, and rebuilds files so they are.
//!
//! # Map
//!
//! - [`scan_path`], [`scan_reader`], [`scan_bytes`], [`scan_dataset`] — one file or stream
//!   in, a [`FileReport`] out: a [`Verdict`] and [`Finding`]s with severity, code, offset and
//!   a one-line message. Streaming: memory stays at a few hundred KiB whatever the size.
//! - [`sanitize_file`] — content disarm and reconstruction: a new Part 10 file with a zeroed
//!   preamble and a rebuilt meta group, written under a validated UID (or a SHA-256) inside
//!   the output folder; what cannot be made safe goes to `quarantine/` with a reason file.
//! - [`batch`] — files, folders and media scanned or sanitized in parallel, with progress
//!   through a callback: what `radguard scan` and `radguard sanitize` run (their arguments,
//!   output and exit status are the binary's).
//!
//! Inside: `source` (bounded buffer with look-ahead probes), `signature` (structural checks
//! for PE, ELF, Mach-O), `content` (chunked signature search in values), `walker` (the Part 10
//! scan: preamble, then the meta group and the data set read by `radguard-dicom`'s one
//! grammar — `part10::read_meta_group`, the `tokens::Tokenizer`, the `inflate::Inflater` —
//! with the checks the grammar leaves to its consumers, and trailing data), `dicomdir`
//! (Referenced File ID checks).
//!
//! # Example
//!
//! ```no_run
//! use radguard_media::{scan_path, ScanOptions, Verdict};
//! let report = scan_path("/media/cdrom/DICOM/IM0001".as_ref(), &ScanOptions::default());
//! if report.verdict != Verdict::Clean {
//!     for f in &report.findings {
//!         println!("{} {} {:?} {}", f.severity, f.code, f.offset, f.message);
//!     }
//! }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod batch;
mod bytes;
mod content;
mod dicomdir;
mod report;
mod sanitize;
mod signature;
mod source;
mod walker;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use report::{DataSetFacts, FileReport, Finding, FindingCode, Severity, Verdict};
pub use sanitize::{sanitize_file, SanitizeError, SanitizeOptions, SanitizeOutcome};

use radguard_dicom::limits::Limits;
use source::Source;
use walker::Walker;

/// Limits and switches for a scan. `Default` gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// Accept a TIFF header in the preamble (dual-personality pathology files) as
    /// informational instead of suspicious. Default: false.
    pub allow_tiff_preamble: bool,
    /// Deepest allowed sequence nesting. Default: [`Limits::SCANNER`] (32, as the gateway).
    pub max_depth: usize,
    /// Largest value length believed at all; longer is "impossible". Default: 2 GiB.
    pub max_value_length: u64,
    /// Largest value for short-text and numeric VRs before it is "oversized". Default: 1 MiB.
    pub max_text_length: u64,
    /// Largest inflated size of a Deflated data set. Default: [`Limits::SCANNER`] (1 GiB).
    pub max_inflated_bytes: u64,
    /// Largest inflated:compressed ratio of a Deflated data set. Default: [`Limits::SCANNER`]
    /// (200).
    pub max_inflate_ratio: u64,
    /// The ratio is only enforced after this many inflated bytes. Default: [`Limits::SCANNER`]
    /// (16 MiB).
    pub inflate_ratio_floor: u64,
    /// Check that files referenced by a DICOMDIR exist and stay inside the media root.
    /// Default: true.
    pub check_dicomdir_files: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            allow_tiff_preamble: false,
            max_depth: Limits::SCANNER.max_depth,
            max_value_length: 2 << 30,
            max_text_length: 1 << 20,
            max_inflated_bytes: Limits::SCANNER.max_inflated,
            max_inflate_ratio: Limits::SCANNER.max_inflate_ratio,
            inflate_ratio_floor: Limits::SCANNER.inflate_ratio_floor,
            check_dicomdir_files: true,
        }
    }
}

impl ScanOptions {
    /// The bounds the grammar reads the data set under: [`Limits::SCANNER`] with these options'
    /// nesting, value length and inflate caps.
    pub(crate) fn limits(&self) -> Limits {
        let longest = Limits::SCANNER.max_value_length;
        Limits {
            max_depth: self.max_depth,
            max_value_length: u32::try_from(self.max_value_length)
                .unwrap_or(longest)
                .min(longest),
            max_inflated: self.max_inflated_bytes,
            max_inflate_ratio: self.max_inflate_ratio,
            inflate_ratio_floor: self.inflate_ratio_floor,
            ..Limits::SCANNER
        }
    }
}

fn io_report(path: PathBuf, what: &str, e: &std::io::Error) -> FileReport {
    FileReport::new(
        path,
        vec![Finding::new(
            Severity::Error,
            FindingCode::Io,
            None,
            format!("{what}: {e}"),
        )],
        None,
    )
}

fn run<R: Read>(
    path: PathBuf,
    src: &mut Source<R>,
    total: Option<u64>,
    opts: &ScanOptions,
) -> (FileReport, Vec<(u64, String)>) {
    let mut w = Walker::new(opts, total);
    let res = w.walk_file(src);
    let mut findings = std::mem::take(&mut w.findings);
    if let Err(e) = res {
        findings.push(Finding::new(
            Severity::Error,
            FindingCode::Io,
            Some(src.pos()),
            format!("read error: {e}"),
        ));
    }
    let ids = std::mem::take(&mut w.ref_file_ids);
    (FileReport::new(path, findings, Some(w.facts)), ids)
}

/// Scans one file. Never fails: I/O problems are findings with code `io`.
///
/// A DICOMDIR's Referenced File IDs are checked against the folder the DICOMDIR is in (the
/// media root).
pub fn scan_path(path: &Path, opts: &ScanOptions) -> FileReport {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return io_report(path.to_path_buf(), "cannot open", &e),
    };
    let total = match file.metadata() {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return FileReport::new(
                path.to_path_buf(),
                vec![Finding::new(
                    Severity::Info,
                    FindingCode::NotDicom,
                    None,
                    "not a regular file",
                )],
                None,
            )
        }
        Err(e) => return io_report(path.to_path_buf(), "cannot stat", &e),
    };
    let mut src = Source::new(file);
    let (mut report, ids) = run(path.to_path_buf(), &mut src, Some(total), opts);
    let is_dir = report.facts.as_ref().is_some_and(|f| f.is_dicomdir);
    if is_dir && opts.check_dicomdir_files {
        report
            .findings
            .extend(dicomdir::check_references(path, &ids));
        report.verdict = Verdict::from_findings(&report.findings);
    }
    report
}

/// Scans a Part 10 stream of unknown length (preamble, meta group, data set). The report's
/// path is `-`. DICOMDIR references are not resolved (there is no media root).
pub fn scan_reader<R: Read>(reader: R, opts: &ScanOptions) -> FileReport {
    let mut src = Source::new(reader);
    run(PathBuf::from("-"), &mut src, None, opts).0
}

/// Scans a Part 10 file held in memory (lengths are checked against its size).
pub fn scan_bytes(bytes: &[u8], opts: &ScanOptions) -> FileReport {
    let mut src = Source::new(bytes);
    run(PathBuf::from("-"), &mut src, Some(bytes.len() as u64), opts).0
}

/// Scans a bare data set (no preamble, no meta group) encoded in `transfer_syntax`, as
/// received in a C-STORE: what the gateway uses before it stores an instance.
pub fn scan_dataset<R: Read>(reader: R, transfer_syntax: &str, opts: &ScanOptions) -> FileReport {
    let mut src = Source::new(reader);
    let mut w = Walker::new(opts, None);
    let res = w.walk_dataset_only(&mut src, transfer_syntax);
    let mut findings = std::mem::take(&mut w.findings);
    if let Err(e) = res {
        findings.push(Finding::new(
            Severity::Error,
            FindingCode::Io,
            Some(src.pos()),
            format!("read error: {e}"),
        ));
    }
    FileReport::new(PathBuf::from("-"), findings, Some(w.facts))
}
