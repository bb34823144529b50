//! The checks of one target, in order, one connection at a time (each waits for its slot from
//! the [`Pacer`]):
//!
//! 1. TLS (`tls://` targets): [`crate::tls::check`].
//! 2. Called AE title: a random one, a blank one, then well-known defaults (PS3.8 §9.3.2:
//!    the called AE title is the first thing a server can check).
//! 3. The capability association: a random calling AE title to the called AE title that
//!    worked, proposing verification, storage, query/retrieve and worklist contexts; its
//!    A-ASSOCIATE-AC gives the accepted contexts, the maximum PDU length and the
//!    implementation identity; C-ECHO on it when verification was accepted. A storage context
//!    accepted here is "storage from an unknown AE": no instance is ever sent.
//! 4. C-MOVE of a study that exists nowhere to a destination AE title that exists nowhere.
//! 5. With `query`: C-FIND at PATIENT and STUDY level with universal matching; the first
//!    answer is counted, C-CANCEL is sent at once (PS3.7 §9.3.2.3), the rest is drained and
//!    dropped; no identifier is decoded, kept or printed.

use std::time::Instant;

use radguard_dicom::dimse::{encode_cancel, encode_request};
use radguard_dicom::types::CommandField;
use radguard_tls::rustls::pki_types::CertificateDer;
use serde::Serialize;

use crate::findings::{self, Finding};
use crate::pace::Pacer;
use crate::services::{self, sop};
use crate::target::Target;
use crate::tls::{self, TlsReport};
use crate::vulns::{Hit, Identity, Table};
use crate::wire::{self, Association, Outcome, Proposal, Stream, Timeouts};
use crate::ProbeError;

/// Called AE titles tried when a random one is refused: defaults of common products.
pub const DEFAULT_CALLED: &[&str] = &[
    "ANY-SCP", "STORESCP", "ORTHANC", "DCM4CHEE", "DCMQRSCP", "PACS", "RADGUARD",
];

/// How the probe runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Associations (connections) per second, at most.
    pub rate: f64,
    pub timeouts: Timeouts,
    /// Run the C-FIND check (off in the default safe mode).
    pub query: bool,
    /// Called AE titles the operator knows, tried after the defaults.
    pub called: Vec<String>,
    /// Trust anchors for the TLS chain check.
    pub ca: Option<Vec<CertificateDer<'static>>>,
    /// Our Maximum Length Received.
    pub max_pdu: u32,
    /// Products and versions the operator knows (e.g. `Orthanc` `1.10.1`): products built on
    /// a toolkit answer with the toolkit's identity, so their own version cannot be read from
    /// the association.
    pub products: Vec<(String, String)>,
}

/// One association attempt, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub purpose: String,
    pub calling: String,
    pub called: String,
    /// `accepted`, `rejected R/S/r`, `aborted`, `no answer: ...`, `error: ...`.
    pub outcome: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
}

/// The implementation identity the peer announced.
#[derive(Debug, Clone, Serialize)]
pub struct Implementation {
    pub class_uid: Option<String>,
    pub version_name: Option<String>,
    pub toolkit: Option<String>,
    pub version: Option<String>,
}

/// A presentation context of the capability association.
#[derive(Debug, Clone, Serialize)]
pub struct ContextSummary {
    pub family: String,
    pub abstract_syntax: String,
    pub accepted: bool,
    pub result: u8,
}

/// A C-FIND at one level.
#[derive(Debug, Clone, Serialize)]
pub struct FindResult {
    pub level: String,
    /// `answered` (at least one match), `no-match`, `refused`, `not-offered`, `error`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Pending answers seen (the first one, plus any the server sent before the cancel).
    pub answers_counted: u32,
}

/// The service checks.
#[derive(Debug, Clone, Serialize)]
pub struct Services {
    /// `success`, `status 0x....`, `not-offered`, `not-reached`, `error: ...`.
    pub echo: String,
    /// `accepted` (a storage context from an unknown AE; nothing sent), `refused`,
    /// `not-reached`.
    pub store_context: String,
    /// `refused` (0xA801 or another failure status), `not-refused` (success: the study the
    /// probe names matches nothing, so nothing was sent), `not-offered`, `not-reached`,
    /// `error: ...`.
    pub move_unknown_destination: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub move_status: Option<u16>,
    /// `skipped (--query not given)`, `run`, `not-reached`.
    pub find: String,
    pub find_results: Vec<FindResult>,
}

/// The called AE title checks.
#[derive(Debug, Clone, Serialize)]
pub struct CalledAe {
    /// `accepted`, `rejected`, `no-answer`, `not-reached`.
    pub random: String,
    pub blank: String,
    /// Defaults (or operator-given titles) that were accepted.
    pub accepted: Vec<String>,
    /// The title the later checks used.
    pub used: Option<String>,
}

/// Everything about one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tls: Option<TlsReport>,
    pub called_ae: CalledAe,
    /// `accepted`, `rejected`, `not-determined`.
    pub random_calling_ae: String,
    pub contexts: Vec<ContextSummary>,
    pub max_pdu: Option<u32>,
    pub implementation: Option<Implementation>,
    /// Known vulnerabilities of the identified toolkit version and of the products the
    /// operator named (`--product`).
    pub vulnerabilities: Vec<Hit>,
    pub services: Services,
    pub associations: Vec<Attempt>,
    pub findings: Vec<Finding>,
}

/// Random upper-case AE title: `prefix` + hex (16 characters at most).
pub fn random_ae(prefix: &str) -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        b = [0x5a; 6];
    }
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!("{prefix}{hex}").chars().take(16).collect()
}

/// A fresh UID under 2.25 (PS3.5 B.2) that names nothing.
pub fn random_uid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        b = [7; 16];
    }
    format!("2.25.{}", u128::from_be_bytes(b))
}

struct Run<'a> {
    target: &'a Target,
    opts: &'a Options,
    pacer: &'a mut Pacer,
    started: Instant,
    tls_config: Option<std::sync::Arc<radguard_tls::rustls::ClientConfig>>,
    attempts: Vec<Attempt>,
    implementation: Option<wire::Accepted>,
}

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Accepted(_) => "accepted".into(),
        Outcome::Rejected {
            result,
            source,
            reason,
        } => format!("rejected {result}/{source}/{reason}"),
        Outcome::Aborted => "aborted".into(),
        Outcome::NoAnswer { detail } => format!("no answer: {detail}"),
    }
}

fn verdict(o: &Outcome) -> String {
    match o {
        Outcome::Accepted(_) => "accepted",
        Outcome::Rejected { .. } | Outcome::Aborted => "rejected",
        Outcome::NoAnswer { .. } => "no-answer",
    }
    .into()
}

impl Run<'_> {
    fn stream(&mut self) -> Result<Box<dyn Stream>, ProbeError> {
        self.pacer.wait();
        let t = &self.opts.timeouts;
        let tcp = wire::connect_tcp(&self.target.host, self.target.port, t)?;
        match &self.tls_config {
            None => Ok(Box::new(tcp)),
            Some(cfg) => Ok(Box::new(wire::tls_handshake(
                cfg.clone(),
                &self.target.host,
                tcp,
                t.connect.max(t.io),
            )?)),
        }
    }

    /// One association attempt; the association when accepted.
    fn associate(
        &mut self,
        purpose: &str,
        calling: &str,
        called: &str,
        abstract_syntaxes: &[&str],
        transfer_syntaxes: &[&str],
    ) -> Result<(Outcome, Option<Association>), ProbeError> {
        let p = Proposal {
            calling: calling.into(),
            called: called.into(),
            abstract_syntaxes: abstract_syntaxes.iter().map(|s| s.to_string()).collect(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|s| s.to_string()).collect(),
            max_pdu: self.opts.max_pdu,
        };
        let stream = self.stream();
        // After the pacer's wait: when the connection was opened.
        let at_ms = self.started.elapsed().as_millis() as u64;
        let r = stream.and_then(|s| wire::associate(s, &p));
        let outcome = match &r {
            Ok((o, _)) => outcome_text(o),
            Err(e) => format!("error: {e}"),
        };
        self.attempts.push(Attempt {
            purpose: purpose.into(),
            calling: calling.into(),
            called: if called.trim().is_empty() {
                "(blank)".into()
            } else {
                called.into()
            },
            outcome,
            at_ms,
        });
        if let Ok((Outcome::Accepted(ac), _)) = &r {
            if self.implementation.is_none() {
                self.implementation = Some(ac.clone());
            }
        }
        r
    }

    /// Associate for a plain yes/no question; releases at once.
    fn ask(&mut self, purpose: &str, called: &str) -> String {
        match self.associate(
            purpose,
            &random_ae("RGPROBE"),
            called,
            &[sop::VERIFICATION],
            &[sop::IMPLICIT_LE],
        ) {
            Ok((o, assoc)) => {
                if let Some(a) = assoc {
                    a.release();
                }
                verdict(&o)
            }
            Err(e) => format!("error: {e}"),
        }
    }
}

/// Runs every check against `target`.
pub fn probe_target(
    target: &Target,
    opts: &Options,
    pacer: &mut Pacer,
    table: &Table,
) -> TargetReport {
    let mut report = TargetReport {
        target: target.to_string(),
        reachable: true,
        error: None,
        tls: None,
        called_ae: CalledAe {
            random: "not-reached".into(),
            blank: "not-reached".into(),
            accepted: Vec::new(),
            used: None,
        },
        random_calling_ae: "not-determined".into(),
        contexts: Vec::new(),
        max_pdu: None,
        implementation: None,
        vulnerabilities: Vec::new(),
        services: Services {
            echo: "not-reached".into(),
            store_context: "not-reached".into(),
            move_unknown_destination: "not-reached".into(),
            move_status: None,
            find: if opts.query {
                "not-reached".into()
            } else {
                "skipped (--query not given)".into()
            },
            find_results: Vec::new(),
        },
        associations: Vec::new(),
        findings: Vec::new(),
    };
    let mut run = Run {
        target,
        opts,
        pacer,
        started: Instant::now(),
        tls_config: None,
        attempts: Vec::new(),
        implementation: None,
    };
    if target.tls {
        match tls::check(
            run.pacer,
            &target.host,
            target.port,
            &opts.timeouts,
            opts.ca.as_deref(),
        ) {
            Ok(t) => report.tls = Some(t),
            Err(e) => {
                report.reachable = false;
                report.error = Some(e.to_string());
            }
        }
        match tls::probe_client_config() {
            Ok(c) => run.tls_config = Some(c),
            Err(e) => report.error = Some(e.to_string()),
        }
    }
    let tls_blocks = report
        .tls
        .as_ref()
        .is_some_and(|t| !t.offered || t.client_certificate == "required");
    if report.reachable && !tls_blocks {
        association_checks(&mut run, &mut report, table);
    }
    for (name, version) in &opts.products {
        let id = Identity {
            toolkit: name.clone(),
            version: Some(version.clone()),
        };
        report.vulnerabilities.extend(table.hits(&id, "--product"));
    }
    report.associations = std::mem::take(&mut run.attempts);
    report.findings = findings::derive(&report, target);
    report
}

fn association_checks(run: &mut Run<'_>, report: &mut TargetReport, table: &Table) {
    // 2. Called AE titles.
    let random_called = random_ae("RGNOSUCHAE");
    report.called_ae.random = run.ask("random called AE title", &random_called);
    if report.called_ae.random.starts_with("error") {
        report.reachable = false;
        report.error = Some(report.called_ae.random.clone());
        return;
    }
    report.called_ae.blank = run.ask("blank called AE title", "                ");
    if report.called_ae.random == "accepted" {
        report.called_ae.used = Some(random_called);
    } else {
        let mut tries: Vec<String> = DEFAULT_CALLED.iter().map(|s| s.to_string()).collect();
        tries.extend(run.opts.called.iter().cloned());
        for ae in tries {
            if run.ask("default called AE title", &ae) == "accepted" {
                report.called_ae.accepted.push(ae.clone());
                report.called_ae.used = Some(ae);
                break;
            }
        }
        if report.called_ae.used.is_none() && report.called_ae.blank == "accepted" {
            report.called_ae.used = Some("                ".into());
        }
    }
    let Some(called) = report.called_ae.used.clone() else {
        record_identity(run, report, table);
        return;
    };

    // 3. Capability association from a random calling AE.
    let all: Vec<&str> = sop::PROPOSED.iter().map(|(_, a)| *a).collect();
    let calling = random_ae("RGPROBE");
    match run.associate(
        "capabilities (random calling AE title)",
        &calling,
        &called,
        &all,
        &[sop::EXPLICIT_LE, sop::IMPLICIT_LE],
    ) {
        Ok((Outcome::Accepted(ac), Some(mut assoc))) => {
            report.random_calling_ae = "accepted".into();
            report.max_pdu = ac.max_pdu;
            report.contexts = ac
                .contexts
                .iter()
                .map(|c| ContextSummary {
                    family: sop::family(&c.abstract_syntax).into(),
                    abstract_syntax: c.abstract_syntax.clone(),
                    accepted: c.accepted(),
                    result: c.result,
                })
                .collect();
            report.services.store_context = if report
                .contexts
                .iter()
                .any(|c| c.family == "storage" && c.accepted)
            {
                "accepted".into()
            } else {
                "refused".into()
            };
            report.services.echo = echo(&mut assoc);
            assoc.release();
        }
        Ok((o, _)) => {
            report.random_calling_ae = verdict(&o);
            if report.random_calling_ae == "accepted" {
                report.random_calling_ae = "not-determined".into();
            }
            report.services.echo = "not-reached (association refused)".into();
            report.services.store_context = "refused".into();
            report.services.move_unknown_destination = "not-reached (association refused)".into();
            if run.opts.query {
                report.services.find = "not-reached (association refused)".into();
            }
            record_identity(run, report, table);
            return;
        }
        Err(e) => {
            report.random_calling_ae = "not-determined".into();
            report.services.echo = format!("error: {e}");
        }
    }
    record_identity(run, report, table);

    // 4. C-MOVE to an unknown destination.
    let move_class = [sop::STUDY_ROOT_MOVE, sop::PATIENT_ROOT_MOVE]
        .into_iter()
        .find(|a| {
            report
                .contexts
                .iter()
                .any(|c| c.accepted && c.abstract_syntax == *a)
        });
    match move_class {
        None => report.services.move_unknown_destination = "not-offered".into(),
        Some(class) => {
            let (verdict, status) = c_move(run, &called, class);
            report.services.move_unknown_destination = verdict;
            report.services.move_status = status;
        }
    }

    // 5. C-FIND, only when asked for.
    if run.opts.query {
        report.services.find = "run".into();
        report.services.find_results = c_find(run, &called, &report.contexts);
    }
}

fn record_identity(run: &Run<'_>, report: &mut TargetReport, table: &Table) {
    if let Some(ac) = &run.implementation {
        let id = table.identify(
            ac.implementation_class_uid.as_deref(),
            ac.implementation_version_name.as_deref(),
        );
        if let Some(id) = &id {
            report.vulnerabilities = table.hits(id, "association");
        }
        if report.max_pdu.is_none() {
            report.max_pdu = ac.max_pdu;
        }
        let (toolkit, version) = match id {
            Some(Identity { toolkit, version }) => (Some(toolkit), version),
            None => (None, None),
        };
        report.implementation = Some(Implementation {
            class_uid: ac.implementation_class_uid.clone(),
            version_name: ac.implementation_version_name.clone(),
            toolkit,
            version,
        });
    }
}

fn status_text(s: Option<u16>) -> String {
    match s {
        Some(0) => "success".into(),
        Some(s) => format!("status 0x{s:04X}"),
        None => "status missing".into(),
    }
}

fn echo(assoc: &mut Association) -> String {
    let Some(ctx) = assoc.context_for(sop::VERIFICATION).map(|c| c.id) else {
        return "not-offered".into();
    };
    let id = assoc.next_id();
    let cmd = encode_request(CommandField::CEchoRq, id, sop::VERIFICATION, None, false);
    if let Err(e) = assoc.send(ctx, &cmd, None) {
        return format!("error: {e}");
    }
    match assoc.read_message() {
        Ok(m) => status_text(m.command.status),
        Err(e) => format!("error: {e}"),
    }
}

/// PS3.4 C.4.2.1.5 / Table C.4-2: Pending 0xFF00/0xFF01; anything else ends the operation.
fn is_pending(s: Option<u16>) -> bool {
    matches!(s, Some(0xFF00 | 0xFF01))
}

fn c_move(run: &mut Run<'_>, called: &str, class: &str) -> (String, Option<u16>) {
    let r = run.associate(
        "C-MOVE to an unknown destination",
        &random_ae("RGPROBE"),
        called,
        &[class],
        &[sop::IMPLICIT_LE],
    );
    let mut assoc = match r {
        Ok((_, Some(a))) => a,
        Ok((o, None)) => return (format!("not-reached ({})", outcome_text(&o)), None),
        Err(e) => return (format!("error: {e}"), None),
    };
    let Some(ctx) = assoc.context_for(class).map(|c| c.id) else {
        assoc.release();
        return ("not-offered".into(), None);
    };
    let id = assoc.next_id();
    let destination = random_ae("RGNOWHERE");
    let identifier = if class == sop::STUDY_ROOT_MOVE {
        services::move_identifier(&random_uid())
    } else {
        services::find_identifier("PATIENT")
    };
    if let Err(e) = assoc.send(
        ctx,
        &radguard_dicom::dimse::encode_move_request(id, class, &destination),
        Some(&identifier),
    ) {
        assoc.abort();
        return (format!("error: {e}"), None);
    }
    // Pending answers (sub-operations under way) are read until the final one, bounded.
    for _ in 0..256 {
        match assoc.read_message() {
            Ok(m) if is_pending(m.command.status) => continue,
            Ok(m) => {
                assoc.release();
                let s = m.command.status;
                // PS3.4 C.4.2.1.5: 0x0000 success, 0xB000 warning: the request was taken. The
                // probe's study matches nothing, so "not-refused" only says the destination
                // was not checked before the search (a server may check it only when it has
                // something to send); a refusal (0xA801 or any failure) says it was.
                let v = match s {
                    Some(0x0000 | 0xB000) => "not-refused",
                    _ => "refused",
                };
                return (v.into(), s);
            }
            Err(e) => {
                assoc.abort();
                return (format!("error: {e}"), None);
            }
        }
    }
    assoc.abort();
    ("error: too many pending answers".into(), None)
}

fn c_find(run: &mut Run<'_>, called: &str, contexts: &[ContextSummary]) -> Vec<FindResult> {
    let plans = [
        ("PATIENT", sop::PATIENT_ROOT_FIND),
        ("STUDY", sop::STUDY_ROOT_FIND),
    ];
    let mut out = Vec::new();
    for (level, class) in plans {
        let offered = contexts
            .iter()
            .any(|c| c.accepted && c.abstract_syntax == class);
        if !offered {
            out.push(FindResult {
                level: level.into(),
                outcome: "not-offered".into(),
                status: None,
                answers_counted: 0,
            });
            continue;
        }
        out.push(find_one(run, called, level, class));
    }
    out
}

fn find_one(run: &mut Run<'_>, called: &str, level: &str, class: &str) -> FindResult {
    let mut res = FindResult {
        level: level.into(),
        outcome: "error".into(),
        status: None,
        answers_counted: 0,
    };
    let r = run.associate(
        &format!("C-FIND {level} universal match"),
        &random_ae("RGPROBE"),
        called,
        &[class],
        &[sop::IMPLICIT_LE],
    );
    let mut assoc = match r {
        Ok((_, Some(a))) => a,
        Ok((o, None)) => {
            res.outcome = format!("not-reached ({})", outcome_text(&o));
            return res;
        }
        Err(e) => {
            res.outcome = format!("error: {e}");
            return res;
        }
    };
    let Some(ctx) = assoc.context_for(class).map(|c| c.id) else {
        assoc.release();
        res.outcome = "not-offered".into();
        return res;
    };
    let id = assoc.next_id();
    let cmd = encode_request(CommandField::CFindRq, id, class, None, true);
    if let Err(e) = assoc.send(ctx, &cmd, Some(&services::find_identifier(level))) {
        assoc.abort();
        res.outcome = format!("error: {e}");
        return res;
    }
    let mut cancelled = false;
    // Bounded: a server that ignores the cancel is aborted after 1000 answers.
    for _ in 0..1000 {
        match assoc.read_message() {
            Ok(m) if is_pending(m.command.status) => {
                res.answers_counted += 1;
                res.outcome = "answered".into();
                if !cancelled {
                    cancelled = true;
                    if assoc.send(ctx, &encode_cancel(id), None).is_err() {
                        assoc.abort();
                        return res;
                    }
                }
            }
            Ok(m) => {
                res.status = m.command.status;
                if !cancelled {
                    res.outcome = match m.command.status {
                        Some(0) => "no-match".into(),
                        _ => "refused".into(),
                    };
                }
                assoc.release();
                return res;
            }
            Err(e) => {
                if !cancelled {
                    res.outcome = format!("error: {e}");
                }
                assoc.abort();
                return res;
            }
        }
    }
    assoc.abort();
    res
}
