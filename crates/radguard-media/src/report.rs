//! What a scan says about one file: a [`Verdict`] derived from a list of [`Finding`]s.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How bad one finding is. The verdict of a file is derived from its worst finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, changes nothing (e.g. a non-zero but harmless preamble).
    Info,
    /// Unusual and possibly hostile; the file is `suspicious`.
    Warning,
    /// The file breaks the encoding rules; the file is `malformed`.
    Error,
    /// Executable content or a path-traversal attempt; the file is `malicious`.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        })
    }
}

/// What kind of problem a finding reports. Stable names (`snake_case`) are used in `--json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingCode {
    /// No `DICM` magic at offset 128, and the bytes do not look like a raw data set.
    NotDicom,
    /// A raw data set without the Part 10 preamble and meta header.
    NoPart10Header,
    /// An executable header (PE, ELF, Mach-O, `#!`) in the 128-byte preamble.
    PreambleExecutable,
    /// A DOS `MZ` header in the preamble whose `e_lfanew` does not lead to `PE\0\0`.
    PreambleDosHeader,
    /// An archive or document signature (ZIP, PDF) in the preamble.
    PreambleArchive,
    /// A TIFF header in the preamble (dual-personality file).
    PreambleTiff,
    /// The preamble is neither zero nor a known signature.
    PreambleNonZero,
    /// A PE, ELF or Mach-O image found inside an element value (structurally checked).
    EmbeddedExecutable,
    /// An encapsulated document whose content does not match its MIME type, or a PDF with
    /// active content (JavaScript, launch actions, embedded files).
    EncapsulatedDocument,
    /// Bytes after the end of the data set.
    TrailingData,
    /// File Meta Information Group Length missing or not equal to the meta group's size.
    MetaGroupLength,
    /// A required meta element is missing, mis-encoded or invalid.
    MetaInvalid,
    /// The Transfer Syntax UID is not one this scanner knows.
    UnknownTransferSyntax,
    /// Media Storage SOP Class/Instance UID differ from SOP Class/Instance UID.
    MetaMismatch,
    /// A value length that cannot be right: beyond the end of the data, or inside a
    /// container that is shorter.
    ImpossibleLength,
    /// A value length larger than the configured maximum for its VR.
    OversizedValue,
    /// Odd length, or a length that is not a multiple of the VR's unit size.
    BadLength,
    /// Undefined length (0xFFFFFFFF) on an element other than SQ, UN or encapsulated pixel data.
    UndefinedLengthMisuse,
    /// Sequences nested deeper than the configured limit.
    NestingTooDeep,
    /// Pixel Data length differs from Rows × Columns × Samples × Bits Allocated × Frames.
    PixelDataLength,
    /// Encapsulated pixel data that does not follow the item / delimiter structure.
    EncapsulationInvalid,
    /// A Deflated data set that inflates past the configured size or ratio limit.
    DeflateBomb,
    /// The deflate stream is corrupt.
    DeflateInvalid,
    /// The data ends in the middle of an element.
    Truncated,
    /// Structural problem in the data set (bad VR, bad item tag, tags out of order...).
    Structure,
    /// A DICOMDIR Referenced File ID with `..`, an absolute path or bad characters.
    DicomdirPath,
    /// A DICOMDIR Referenced File ID that resolves outside the media root.
    DicomdirOutsideRoot,
    /// A file referenced by a DICOMDIR does not exist.
    DicomdirMissingFile,
    /// The file could not be read.
    Io,
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serde name is the display name.
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{self:?}"));
        f.write_str(&s)
    }
}

/// One observation about a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: FindingCode,
    /// Byte offset in the file where the problem is, when it has one. Inside a Deflated data
    /// set the offset is in the inflated stream (the message says so).
    pub offset: Option<u64>,
    /// One line, for people.
    pub message: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        code: FindingCode,
        offset: Option<u64>,
        message: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            code,
            offset,
            message: message.into(),
        }
    }
}

/// The outcome for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A DICOM file with nothing worse than informational findings.
    Clean,
    /// A DICOM file with unusual content that may be hostile (warnings).
    Suspicious,
    /// A file that breaks the DICOM encoding rules (errors).
    Malformed,
    /// Not a DICOM file at all.
    NotDicom,
    /// Executable content or a path-traversal attempt (critical findings).
    Malicious,
}

impl Verdict {
    /// The verdict implied by a list of findings: any critical finding → `Malicious`; else a
    /// `not_dicom` finding → `NotDicom`; else any error → `Malformed`; else any warning →
    /// `Suspicious`; else `Clean`.
    pub fn from_findings(findings: &[Finding]) -> Verdict {
        let worst = findings.iter().map(|f| f.severity).max();
        if worst == Some(Severity::Critical) {
            Verdict::Malicious
        } else if findings.iter().any(|f| f.code == FindingCode::NotDicom) {
            Verdict::NotDicom
        } else if worst == Some(Severity::Error) {
            Verdict::Malformed
        } else if worst == Some(Severity::Warning) {
            Verdict::Suspicious
        } else {
            Verdict::Clean
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Suspicious => "suspicious",
            Verdict::Malformed => "malformed",
            Verdict::NotDicom => "not-dicom",
            Verdict::Malicious => "malicious",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts learnt while walking a data set, kept for callers (sanitize, gateway, reports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataSetFacts {
    /// Transfer Syntax UID from the meta header (raw, trimmed).
    pub transfer_syntax: Option<String>,
    /// SOP Class UID (0008,0016) of the data set.
    pub sop_class_uid: Option<String>,
    /// SOP Instance UID (0008,0018) of the data set.
    pub sop_instance_uid: Option<String>,
    /// Whether the file is a DICOMDIR (Media Storage Directory Storage).
    pub is_dicomdir: bool,
    /// Offset of the first data set byte after the meta group (Part 10 files).
    pub dataset_start: Option<u64>,
    /// Number of bytes that belong to the Part 10 file (preamble, meta, data set); bytes past
    /// this are trailing data. For a Deflated data set: the compressed end.
    pub dataset_end: Option<u64>,
    /// Total bytes read.
    pub bytes_read: u64,
}

/// The scan result for one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub facts: Option<DataSetFacts>,
}

impl FileReport {
    /// Builds a report and derives its verdict from the findings.
    pub fn new(path: PathBuf, findings: Vec<Finding>, facts: Option<DataSetFacts>) -> Self {
        let verdict = Verdict::from_findings(&findings);
        FileReport {
            path,
            verdict,
            findings,
            facts,
        }
    }

    /// The worst severity among the findings, for callers that want a one-word summary.
    pub fn worst_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}
