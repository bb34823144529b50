//! The scan-protocol and dose guard on the relay's routes (radguard-guard's checks, the
//! `[guard]` section): what the relay asks of it and the `detection` events it raises.
//!
//! - A C-STORE of a Defined Procedure Protocol (CT, XA) or a Protocol Approval: refused with
//!   0x0124 unless the peer is in `protocol_managers` (a C-GET's sub-operation: unless the
//!   upstream is in `protocol_upstreams`, crate::called); else held whole (at most [`MAX_HELD`]
//!   bytes) and judged before anything reaches the upstream: an approval is remembered (for
//!   every association: approvals and protocols may come on different ones), a protocol out of
//!   bounds or not approved is refused with 0xC510.
//! - A C-STORE of an X-Ray Radiation Dose SR: read as it streams (at most [`MAX_HELD`] bytes),
//!   forwarded unchanged; its findings and the study's accumulated CTDIvol raise detections.
//! - A Modality Worklist C-FIND answer from the upstream: checked before the client gets it,
//!   refused (0xC511, the query ended) or cleaned (re-encoded) per `worklist_action`.
//!
//! Every kind is recognized by SOP class on every relay route: a protocol, a dose report or a
//! worklist answer is what it is whatever route carries it.

use std::sync::Mutex;

use radguard_dicom::limits::Limits;
use radguard_dicom::tree::{encode_elements, parse, TreeOptions};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use radguard_events::{AssocId, Event};
use radguard_guard::dose::{check_dose, DoseWatch};
use radguard_guard::protocol::{check_protocol, may_manage, Approvals};
use radguard_guard::worklist::{check_worklist, WorklistDecision};
use radguard_guard::{
    Decision, Finding, FindingKind, GuardConfig, CT_DEFINED_PROTOCOL, ENHANCED_XRAY_DOSE_SR,
    MODALITY_WORKLIST_FIND, PROTOCOL_APPROVAL, STATUS_PROTOCOL_REFUSED, XA_DEFINED_PROTOCOL,
    XRAY_DOSE_SR,
};

/// The most bytes of a protocol, approval or dose report the guard holds or reads (such objects
/// are kilobytes; a "protocol" of more is refused, a dose report of more is reported unread).
pub const MAX_HELD: usize = 16 << 20;

/// A C-STORE data set the guard reads: what it is and, for a dose report read as it streams,
/// its bytes (bounded by [`MAX_HELD`]; a held protocol's bytes are the relay's hold).
pub struct Reading {
    pub context_id: u8,
    pub sop_class: String,
    pub sop_instance: Option<String>,
    pub message_id: u16,
    pub transfer_syntax: String,
    bytes: Vec<u8>,
    over: bool,
}

impl Reading {
    pub fn new(
        context_id: u8,
        sop_class: String,
        sop_instance: Option<String>,
        message_id: u16,
        transfer_syntax: String,
    ) -> Reading {
        Reading {
            context_id,
            sop_class,
            sop_instance,
            message_id,
            transfer_syntax,
            bytes: Vec::new(),
            over: false,
        }
    }

    /// Keeps a fragment, until [`MAX_HELD`] bytes (then nothing more).
    pub fn feed(&mut self, data: &[u8]) {
        if self.over {
            return;
        }
        if self.bytes.len().saturating_add(data.len()) > MAX_HELD {
            self.over = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }

    /// The data set, unless it was over [`MAX_HELD`] bytes.
    pub fn bytes(&self) -> Option<&[u8]> {
        (!self.over).then_some(self.bytes.as_slice())
    }
}

/// The guard in force: its config, the approvals seen and the dose accumulator, shared by
/// every association.
pub struct Guard {
    cfg: GuardConfig,
    approvals: Mutex<Approvals>,
    dose: Mutex<DoseWatch>,
}

/// What the relay does with a C-STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePlan {
    /// Not the guard's.
    Pass,
    /// Refused now (the peer may not manage protocols): the status and why.
    Refuse { status: u16, why: String },
    /// Held whole and judged by [`Guard::judge_held`].
    Hold,
    /// Read as it streams and judged by [`Guard::watch_dose`]; forwarded anyway.
    Watch,
}

/// A worklist answer's fate.
#[derive(Debug)]
pub enum Answer {
    Pass,
    /// Relay these bytes instead (the cleaned answer), with the findings for the detection.
    Cleaned(Vec<u8>, Vec<Finding>),
    Refuse(u16, Vec<Finding>),
}

fn read(
    bytes: &[u8],
    ts_uid: &str,
    limits: Limits,
) -> Result<(radguard_dicom::tree::DataSet, TransferSyntax), Finding> {
    let ts = TransferSyntax::from_uid(ts_uid).unwrap_or_else(|_| TransferSyntax::explicit_vr_le());
    parse(bytes, &ts, limits, TreeOptions::default())
        .map(|ds| (ds, ts))
        .map_err(|e| Finding::new(FindingKind::Malformed, e.to_string()))
}

impl Guard {
    pub fn new(cfg: GuardConfig) -> Guard {
        let max = cfg.max_studies;
        Guard {
            cfg,
            approvals: Mutex::new(Approvals::new()),
            dose: Mutex::new(DoseWatch::new(max)),
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.cfg
    }

    /// The plan for a C-STORE of `sop_class` from `peer` (its policy name).
    pub fn store_plan(&self, sop_class: &str, peer: &str) -> StorePlan {
        match sop_class {
            CT_DEFINED_PROTOCOL | XA_DEFINED_PROTOCOL | PROTOCOL_APPROVAL => {
                match may_manage(&self.cfg, peer) {
                    Decision::Pass => StorePlan::Hold,
                    Decision::Refuse { status } => StorePlan::Refuse {
                        status,
                        why: format!(
                            "peer {peer} may not manage protocols (guard.protocol_managers)"
                        ),
                    },
                }
            }
            XRAY_DOSE_SR | ENHANCED_XRAY_DOSE_SR => StorePlan::Watch,
            _ => StorePlan::Pass,
        }
    }

    /// A held protocol or approval, whole: `Ok` to forward it, else the status and findings.
    pub fn judge_held(
        &self,
        sop_class: &str,
        bytes: &[u8],
        ts_uid: &str,
    ) -> Result<(), (u16, Vec<Finding>)> {
        let refuse = |f: Vec<Finding>| Err((STATUS_PROTOCOL_REFUSED, f));
        let (ds, ts) = match read(bytes, ts_uid, Limits::GATEWAY) {
            Ok(r) => r,
            Err(f) => return refuse(vec![f]),
        };
        let be = ts.encoding == Encoding::ExplicitBig;
        if sop_class == PROTOCOL_APPROVAL {
            let Ok(mut a) = self.approvals.lock() else {
                return refuse(vec![Finding::new(
                    FindingKind::Malformed,
                    "approvals unavailable",
                )]);
            };
            return match a.add(&ds) {
                Ok(_) => Ok(()),
                Err(f) => refuse(vec![f]),
            };
        }
        let report = match self.approvals.lock() {
            Ok(a) => check_protocol(&ds, &self.cfg, &a, be, now_unix()),
            Err(_) => {
                return refuse(vec![Finding::new(
                    FindingKind::Malformed,
                    "approvals unavailable",
                )])
            }
        };
        match report.decision {
            Decision::Pass => Ok(()),
            Decision::Refuse { status } => Err((status, report.findings)),
        }
    }

    /// A dose report, whole (or `None`: more than [`MAX_HELD`] bytes, not read): its findings
    /// and the study's.
    pub fn watch_dose(&self, bytes: Option<&[u8]>, ts_uid: &str) -> Vec<Finding> {
        let Some(bytes) = bytes else {
            return vec![Finding::new(
                FindingKind::MalformedSr,
                format!("dose report over {MAX_HELD} bytes, not read"),
            )];
        };
        let (ds, ts) = match read(bytes, ts_uid, Limits::GATEWAY) {
            Ok(r) => r,
            Err(f) => return vec![Finding::new(FindingKind::MalformedSr, f.detail)],
        };
        let mut report = check_dose(&ds, &self.cfg, ts.encoding == Encoding::ExplicitBig);
        if let Ok(mut w) = self.dose.lock() {
            report.findings.extend(w.observe(&report, &self.cfg));
        }
        report.findings
    }

    /// A C-FIND answer's identifier on a context of `abstract_syntax`.
    pub fn worklist_answer(&self, abstract_syntax: &str, bytes: &[u8], ts_uid: &str) -> Answer {
        if abstract_syntax != MODALITY_WORKLIST_FIND {
            return Answer::Pass;
        }
        let (mut ds, ts) = match read(bytes, ts_uid, Limits::QUERY) {
            Ok(r) => r,
            // The firewall read it already: not reachable unless the two disagree.
            Err(f) => return Answer::Refuse(radguard_guard::STATUS_WORKLIST_REFUSED, vec![f]),
        };
        let report = check_worklist(&mut ds, &self.cfg);
        match report.decision {
            WorklistDecision::Pass => Answer::Pass,
            WorklistDecision::Refuse { status } => Answer::Refuse(status, report.findings),
            WorklistDecision::Cleaned => {
                let mut out = Vec::new();
                match encode_elements(&ds.elements, ts.encoding, &mut out) {
                    Ok(()) => Answer::Cleaned(out, report.findings),
                    Err(e) => Answer::Refuse(
                        radguard_guard::STATUS_WORKLIST_REFUSED,
                        vec![Finding::new(FindingKind::Malformed, e.to_string())],
                    ),
                }
            }
        }
    }
}

/// Seconds since 1970 UTC, for approval and protocol expiry (radguard-guard has no clock).
fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The `detection` event of a guard decision: rule `guard-protocol`, `guard-dose` or
/// `guard-worklist`, the first finding's kind as the rule kind, the response (`refuse`,
/// `alert`, `clean`), every finding as evidence (no patient data: tags, values, limits).
pub fn detection(
    assoc: AssocId,
    rule: &str,
    peer: &str,
    response: &str,
    sop_class: &str,
    findings: &[Finding],
) -> Event {
    let kind = findings.first().map_or("guard", |f| f.kind.name());
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| serde_json::json!({"kind": f.kind.name(), "detail": f.detail}))
        .collect();
    let summary: Vec<String> = findings.iter().map(ToString::to_string).collect();
    Event::Detection {
        assoc: Some(assoc),
        source: None,
        peer: Some(peer.to_string()),
        calling_ae: None,
        called_ae: None,
        rule: rule.to_string(),
        rule_kind: kind.to_string(),
        response: response.to_string(),
        evidence: serde_json::json!({
            "type": "guard",
            "sop_class": sop_class,
            "findings": list,
        }),
        detail: format!(
            "rule {rule} ({kind}) peer {peer}: {}; {response}",
            summary.join("; ")
        ),
    }
}
