//! `radguard probe`: the security posture of a DICOM endpoint, measured without touching
//! patient data.
//!
//! Modules:
//! - [`target`]: `host:port` / `tls://host:port`.
//! - [`pace`]: the rate limit; every connection waits for its slot, nothing runs in parallel.
//! - [`wire`]: the blocking DICOM upper-layer client over radguard-dicom's PDU/DIMSE types
//!   (dicom-ul for association PDUs), every step under a timeout.
//! - [`tls`]: TLS offered, versions and suites accepted, certificate, client certificate
//!   required (rustls: what it cannot offer is reported as not tested).
//! - [`services`]: the C-MOVE / C-FIND requests and identifiers.
//! - [`checks`]: the checks of one target, in order; [`findings`]: what they mean (severity +
//!   remediation), pure.
//! - [`vulns`]: implementation class UID / version name → toolkit + version → known
//!   vulnerabilities, from `data/vulns.toml` (each entry with its source).
//! - [`report`]: JSON, text and HTML.
//!
//! The crate prints nothing; the `radguard` binary owns flags, output and exit codes.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod checks;
pub mod findings;
pub mod pace;
pub mod report;
pub mod services;
pub mod target;
pub mod tls;
pub mod vulns;
pub mod wire;

pub use checks::{Options, TargetReport};
pub use findings::{Finding, Severity};
pub use report::Report;
pub use target::Target;
pub use wire::Timeouts;

/// Why the probe could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("bad target {0}")]
    Target(String),
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("encoding: {0}")]
    Encode(String),
    #[error("vulnerability table: {0}")]
    Table(String),
}

/// Probes every target in order, sharing one rate limit.
pub fn run(targets: &[Target], opts: &Options) -> Result<Report, ProbeError> {
    let table = vulns::Table::shipped()?;
    let mut pacer = pace::Pacer::new(opts.rate);
    let reports = targets
        .iter()
        .map(|t| checks::probe_target(t, opts, &mut pacer, &table))
        .collect();
    Ok(Report {
        probe: "radguard probe",
        rate_per_second: opts.rate,
        safe: !opts.query,
        connections: pacer.count(),
        targets: reports,
    })
}
