//! `radguard probe TARGET...`: the security posture of DICOM endpoints (radguard-probe), as
//! text, JSON or HTML; exit status 0 nothing found, 1 findings, 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use radguard_probe::{Options, Target, Timeouts};

#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// Endpoints: HOST:PORT (plain DICOM) or tls://HOST:PORT (DICOM over TLS). Probed one
    /// after the other.
    #[arg(required = true, value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// The report as one JSON document on stdout (instead of text).
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Safe mode (the default): no query is sent. Only --query turns the C-FIND check on.
    #[arg(long, default_value_t = true, conflicts_with = "query")]
    pub safe: bool,
    /// Also send C-FIND at PATIENT and STUDY level with universal matching: the first answer
    /// is counted and cancelled at once; nothing is kept or printed.
    #[arg(long)]
    pub query: bool,
    /// At most this many connections (associations, TLS handshakes) per second, one at a time.
    #[arg(long, default_value_t = 2.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Seconds to connect (TCP, TLS handshake).
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds for each read, write and answer.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
    /// A called AE title you know (tried after the common defaults); repeatable.
    #[arg(long, value_name = "AE")]
    pub called: Vec<String>,
    /// A product and version you know, as NAME=VERSION (e.g. Orthanc=1.10.1), matched against
    /// the vulnerability table too: products built on a toolkit (Orthanc on DCMTK) announce
    /// the toolkit's identity, not their own. Repeatable.
    #[arg(long, value_name = "NAME=VERSION", value_parser = parse_product)]
    pub product: Vec<(String, String)>,
    /// CA certificates (PEM) the server's TLS chain should verify against.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    s.parse()
        .map_err(|e: radguard_probe::ProbeError| e.to_string())
}

fn parse_product(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((n, v))
            if !n.trim().is_empty() && radguard_probe::vulns::parse_version(v).is_some() =>
        {
            Ok((n.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("{s:?}: expected NAME=VERSION, e.g. Orthanc=1.10.1")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if r.is_finite() && r > 0.0 && r <= 50.0 {
        Ok(r)
    } else {
        Err("the rate must be > 0 and at most 50 connections per second".into())
    }
}

/// Runs `radguard probe`.
pub fn run(args: ProbeArgs) -> ExitCode {
    match go(&args) {
        Ok(true) => ExitCode::from(1),
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radguard probe: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn go(args: &ProbeArgs) -> anyhow::Result<bool> {
    for a in &args.called {
        radguard_dicom::AeTitle::new(a).with_context(|| format!("--called {a:?}"))?;
    }
    let ca = match &args.ca {
        None => None,
        Some(p) => {
            Some(radguard_tls::load_certs(p).with_context(|| format!("--ca {}", p.display()))?)
        }
    };
    let opts = Options {
        rate: args.rate,
        timeouts: Timeouts {
            connect: Duration::from_secs(args.connect_timeout.max(1)),
            io: Duration::from_secs(args.timeout.max(1)),
        },
        query: args.query,
        called: args.called.clone(),
        ca,
        max_pdu: 16384,
        products: args.product.clone(),
    };
    let report = radguard_probe::run(&args.targets, &opts).context("probe")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if let Some(p) = &args.html {
        std::fs::write(p, report.html()).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(report.has_findings())
}
