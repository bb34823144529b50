//! `radguard guard check FILE…`: protocol, approval, dose and worklist objects checked offline
//! against the `[guard]` limits the gateway uses (radguard-guard). Protocol Approvals among the
//! files are read first, so that a protocol and its approval can be checked together; dose
//! reports accumulate per study in the order given.
//!
//! Exit status: 0 every file passes, 1 any finding, 2 usage error or a file that cannot be read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use radguard_dicom::limits::Limits;
use radguard_dicom::part10::read_head;
use radguard_dicom::tree::{parse, DataSet, TreeOptions};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use radguard_guard::dose::{check_dose, DoseWatch};
use radguard_guard::protocol::{check_protocol, Approvals};
use radguard_guard::worklist::{check_worklist, WorklistDecision};
use radguard_guard::{classify, Decision, Finding, GuardConfig, ObjectKind};

const EXIT_FINDINGS: u8 = 1;
const EXIT_USAGE: u8 = 2;
/// Larger files are not protocols, dose reports or worklist answers.
const MAX_FILE: u64 = 64 << 20;

#[derive(Subcommand)]
pub enum GuardCommand {
    /// Check Defined Procedure Protocol, Protocol Approval, CT Radiation Dose SR and worklist
    /// answer files against the [guard] limits (the gateway's). Exit 0 all pass, 1 any finding,
    /// 2 usage error or unreadable file.
    Check(CheckArgs),
}

#[derive(Args)]
pub struct CheckArgs {
    /// Part 10 files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The gateway's config file (its [guard] section); default: the built-in defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One JSON object per file, as an array.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: GuardCommand) -> ExitCode {
    match command {
        GuardCommand::Check(args) => ExitCode::from(check(&args)),
    }
}

struct Read {
    ds: DataSet,
    big_endian: bool,
}

fn read(path: &Path) -> Result<Read, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let head = read_head(&bytes).map_err(|e| e.to_string())?;
    let ts_uid = head
        .meta
        .transfer_syntax_uid
        .ok_or("no Transfer Syntax UID in the file meta")?;
    let ts = TransferSyntax::from_uid(&ts_uid).map_err(|e| e.to_string())?;
    let data = bytes.get(head.data_start..).unwrap_or_default();
    let ds =
        parse(data, &ts, Limits::OFFLINE, TreeOptions::default()).map_err(|e| e.to_string())?;
    Ok(Read {
        ds,
        big_endian: ts.encoding == Encoding::ExplicitBig,
    })
}

/// One file's outcome.
#[derive(serde::Serialize)]
struct Outcome {
    file: String,
    /// protocol, approval, dose-report, worklist-answer, other, unreadable.
    kind: &'static str,
    /// pass, refuse, alert, clean, error.
    verdict: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    findings: Vec<FindingOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct FindingOut {
    kind: &'static str,
    detail: String,
}

fn out(findings: &[Finding]) -> Vec<FindingOut> {
    findings
        .iter()
        .map(|f| FindingOut {
            kind: f.kind.name(),
            detail: f.detail.clone(),
        })
        .collect()
}

fn check(args: &CheckArgs) -> u8 {
    let cfg = match &args.config {
        Some(path) => match radguard_config::load_file(path) {
            Ok(l) => l.guard,
            Err(e) => {
                eprintln!("{e}");
                return EXIT_USAGE;
            }
        },
        None => GuardConfig::default(),
    };
    let read: Vec<(String, Result<Read, String>)> = args
        .files
        .iter()
        .map(|p| (p.display().to_string(), read(p)))
        .collect();
    let mut outcomes: Vec<Option<Outcome>> = read.iter().map(|_| None).collect();
    // Approvals first: a protocol is judged with every approval given.
    let mut approvals = Approvals::new();
    for ((file, r), slot) in read.iter().zip(outcomes.iter_mut()) {
        let Ok(r) = r else { continue };
        if classify(&r.ds) != ObjectKind::ProtocolApproval {
            continue;
        }
        *slot = Some(match approvals.add(&r.ds) {
            Ok(_) => outcome(file, "approval", "pass", None, vec![]),
            Err(f) => outcome(file, "approval", "refuse", None, vec![f]),
        });
    }
    let mut watch = DoseWatch::new(cfg.max_studies);
    for ((file, r), slot) in read.iter().zip(outcomes.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                *slot = Some(Outcome {
                    error: Some(e.clone()),
                    ..outcome(file, "unreadable", "error", None, vec![])
                });
                continue;
            }
        };
        *slot = Some(match classify(&r.ds) {
            ObjectKind::DefinedProtocol => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                let rep = check_protocol(&r.ds, &cfg, &approvals, r.big_endian, now);
                match rep.decision {
                    Decision::Pass => outcome(file, "protocol", "pass", None, rep.findings),
                    Decision::Refuse { status } => {
                        outcome(file, "protocol", "refuse", Some(status), rep.findings)
                    }
                }
            }
            ObjectKind::DoseReport => {
                let mut rep = check_dose(&r.ds, &cfg, r.big_endian);
                rep.findings.extend(watch.observe(&rep, &cfg));
                let verdict = if rep.findings.is_empty() {
                    "pass"
                } else {
                    "alert"
                };
                outcome(file, "dose-report", verdict, None, rep.findings)
            }
            ObjectKind::WorklistAnswer => {
                let mut ds = r.ds.clone();
                let rep = check_worklist(&mut ds, &cfg);
                match rep.decision {
                    WorklistDecision::Pass => {
                        outcome(file, "worklist-answer", "pass", None, rep.findings)
                    }
                    WorklistDecision::Cleaned => {
                        outcome(file, "worklist-answer", "clean", None, rep.findings)
                    }
                    WorklistDecision::Refuse { status } => outcome(
                        file,
                        "worklist-answer",
                        "refuse",
                        Some(status),
                        rep.findings,
                    ),
                }
            }
            // Approvals were judged above.
            ObjectKind::ProtocolApproval | ObjectKind::Other => {
                outcome(file, "other", "pass", None, vec![])
            }
        });
    }
    let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    if args.json {
        match serde_json::to_string_pretty(&outcomes) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("{e}");
                return EXIT_USAGE;
            }
        }
    } else {
        for o in &outcomes {
            print_text(o);
        }
    }
    if outcomes.iter().any(|o| o.error.is_some()) {
        EXIT_USAGE
    } else if outcomes.iter().any(|o| !o.findings.is_empty()) {
        EXIT_FINDINGS
    } else {
        0
    }
}

fn outcome(
    file: &str,
    kind: &'static str,
    verdict: &'static str,
    status: Option<u16>,
    findings: Vec<Finding>,
) -> Outcome {
    Outcome {
        file: file.to_string(),
        kind,
        verdict,
        status: status.map(|s| format!("0x{s:04X}")),
        findings: out(&findings),
        error: None,
    }
}

fn print_text(o: &Outcome) {
    match (&o.error, &o.status) {
        (Some(e), _) => eprintln!("{}: cannot read: {e}", o.file),
        (None, Some(s)) => println!("{}: {} {} {s}", o.file, o.kind, o.verdict),
        (None, None) => println!("{}: {} {}", o.file, o.kind, o.verdict),
    }
    for f in &o.findings {
        println!("  {}: {}", f.kind, f.detail);
    }
}
