//! The protocol guard: Defined Procedure Protocol objects (CT and XA, PS3.3 C.34) checked
//! against the site's limits, and against the Protocol Approval objects (PS3.3 C.34.3) seen
//! before them.
//!
//! Parameters are read wherever the protocol holds them (any nesting, the tree's bounds): the
//! attribute itself (KVP (0018,0060), X-Ray Tube Current in mA (0018,9330) or X-Ray Tube Current
//! (0018,1151), Exposure Time in ms (0018,9328) or Exposure Time (0018,1150), CTDIvol
//! (0018,9345), Scan Length (0018,1302)), and every constraint on it: an item whose Selector
//! Attribute (0072,0026) names one of them, with the values of its Constraint Value Sequence
//! (0082,0034) and Recommended Default Value Sequence (0082,0035). A protocol that merely
//! *allows* 1000 mA is out of bounds even when its default is low: the console would let it be
//! chosen. A value that is not a number is a finding, never skipped.

use std::collections::{HashMap, VecDeque};

use dicom_core::Tag;
use radguard_dicom::tree::{DataSet, Element, Value};

use crate::config::{limits_in_phantom, GuardConfig, Limits, Phantom};
use crate::values::{self, code, items, numbers, text};
use crate::{Decision, Finding, FindingKind, STATUS_NOT_AUTHORIZED, STATUS_PROTOCOL_REFUSED};

const KVP: Tag = Tag(0x0018, 0x0060);
const TUBE_CURRENT_MA: Tag = Tag(0x0018, 0x9330);
const TUBE_CURRENT: Tag = Tag(0x0018, 0x1151);
const EXPOSURE_TIME_MS: Tag = Tag(0x0018, 0x9328);
const EXPOSURE_TIME: Tag = Tag(0x0018, 0x1150);
const CTDIVOL: Tag = Tag(0x0018, 0x9345);
const SCAN_LENGTH: Tag = Tag(0x0018, 0x1302);
/// CTDI Phantom Type Code Sequence (PS3.3 C.8.15.3.8 CT Exposure Macro; CID 4052).
const CTDI_PHANTOM: Tag = Tag(0x0018, 0x9346);
const SELECTOR_ATTRIBUTE: Tag = Tag(0x0072, 0x0026);
const CONSTRAINT_VALUES: Tag = Tag(0x0082, 0x0034);
const RECOMMENDED_DEFAULTS: Tag = Tag(0x0082, 0x0035);
/// Selector IS/DS/FD/FL/UL/US/SL/SS Value (PS3.3 Table 10-20).
const SELECTOR_VALUES: [Tag; 8] = [
    Tag(0x0072, 0x0064),
    Tag(0x0072, 0x0072),
    Tag(0x0072, 0x0074),
    Tag(0x0072, 0x0076),
    Tag(0x0072, 0x0078),
    Tag(0x0072, 0x007A),
    Tag(0x0072, 0x007C),
    Tag(0x0072, 0x007E),
];
const APPROVAL_SEQUENCE: Tag = Tag(0x0044, 0x0100);
const ASSERTION_CODE_SEQUENCE: Tag = Tag(0x0044, 0x0101);
const ASSERTER_SEQUENCE: Tag = Tag(0x0044, 0x0103);
const APPROVAL_SUBJECT_SEQUENCE: Tag = Tag(0x0044, 0x0109);
const REFERENCED_SOP_INSTANCE: Tag = Tag(0x0008, 0x1155);
const PERSON_ID_CODE_SEQUENCE: Tag = Tag(0x0040, 0x1101);
const ASSERTION_EXPIRATION: Tag = Tag(0x0044, 0x0105);
/// Expiration DateTime (0008,0416) of the protocol itself, when it states one.
const EXPIRATION: Tag = Tag(0x0008, 0x0416);

/// Deepest nesting the walker follows (the grammar caps trees it builds at 32).
pub const MAX_DEPTH: usize = 64;
/// Protocols whose approvals are remembered; the oldest forgotten first.
pub const MAX_APPROVED: usize = 4096;

/// Assertion codes (CID 800) that approve: "Approved for use at the institution", "… in the
/// clinical trial", "… for experimental use", "… on pregnant patients".
const APPROVING: [&str; 4] = ["128603", "128604", "128611", "128605"];
/// Assertion codes (CID 800) that disapprove, and "Deprecated protocol" (128610): an approval
/// withdrawn by a later assertion about the protocol.
const DISAPPROVING: [&str; 6] = ["128609", "128612", "128623", "128624", "128617", "128610"];

/// Which limit a parameter is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Param {
    Kvp,
    TubeCurrent,
    ExposureTime,
    Ctdivol,
    ScanLength,
}

fn param(tag: Tag) -> Option<(Param, &'static str)> {
    Some(match tag {
        KVP => (Param::Kvp, "KVP (0018,0060)"),
        TUBE_CURRENT_MA => (Param::TubeCurrent, "X-Ray Tube Current in mA (0018,9330)"),
        TUBE_CURRENT => (Param::TubeCurrent, "X-Ray Tube Current (0018,1151)"),
        EXPOSURE_TIME_MS => (Param::ExposureTime, "Exposure Time in ms (0018,9328)"),
        EXPOSURE_TIME => (Param::ExposureTime, "Exposure Time (0018,1150)"),
        CTDIVOL => (Param::Ctdivol, "CTDIvol (0018,9345)"),
        SCAN_LENGTH => (Param::ScanLength, "Scan Length (0018,1302)"),
        _ => return None,
    })
}

fn check_value(p: Param, what: &str, v: f64, l: &Limits, out: &mut Vec<Finding>) {
    let range = |r: Option<[f64; 2]>, kind: FindingKind, unit: &str, out: &mut Vec<Finding>| {
        if let Some([lo, hi]) = r {
            if v < lo || v > hi {
                out.push(Finding::new(
                    kind,
                    format!("{what} {v} {unit} outside {lo}–{hi} {unit}"),
                ));
            }
        }
    };
    match p {
        Param::Kvp => range(l.kvp, FindingKind::KvpOutOfRange, "kV", out),
        Param::TubeCurrent => range(
            l.tube_current_ma,
            FindingKind::TubeCurrentOutOfRange,
            "mA",
            out,
        ),
        Param::ExposureTime => range(
            l.exposure_time_ms,
            FindingKind::ExposureTimeOutOfRange,
            "ms",
            out,
        ),
        Param::Ctdivol if !l.phantom_mismatch.is_empty() => out.push(Finding::new(
            FindingKind::PhantomMismatch,
            format!(
                "{what} {v} mGy in the {} cm phantom: the limits that apply ({}) are for the other phantom",
                l.phantom.map_or(0, Phantom::cm),
                l.phantom_mismatch.join(", ")
            ),
        )),
        Param::Ctdivol => {
            if let Some(a) = l.ctdivol_alert.filter(|a| v > *a) {
                out.push(Finding::new(
                    FindingKind::CtdivolOverLimit,
                    format!("{what} {v} mGy over the alert value {a} mGy"),
                ));
            } else if let Some(n) = l.ctdivol_notification.filter(|n| v > *n) {
                out.push(Finding::new(
                    FindingKind::CtdivolOverLimit,
                    format!("{what} {v} mGy over the notification value {n} mGy"),
                ));
            }
        }
        Param::ScanLength => {
            if let Some(m) = l.max_scan_length_mm.filter(|m| v > *m) {
                out.push(Finding::new(
                    FindingKind::ScanLengthOverLimit,
                    format!("{what} {v} mm over {m} mm"),
                ));
            }
        }
    }
}

fn check_element(e: &Element, l: &Limits, be: bool, out: &mut Vec<Finding>) {
    let Some((p, what)) = param(e.tag) else {
        return;
    };
    match numbers(e, be) {
        Ok(vs) => vs.into_iter().for_each(|v| check_value(p, what, v, l, out)),
        Err(values::NotNumeric(why)) => out.push(Finding::new(
            FindingKind::Malformed,
            format!("{what}: {why}"),
        )),
    }
}

/// The tag an AT value names.
fn at_tag(e: &Element, be: bool) -> Option<Tag> {
    let Value::Bytes(b) = &e.value else {
        return None;
    };
    let b: [u8; 4] = b.get(..4)?.try_into().ok()?;
    let (g, el) = if be {
        (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
        )
    } else {
        (
            u16::from_le_bytes([b[0], b[1]]),
            u16::from_le_bytes([b[2], b[3]]),
        )
    };
    Some(Tag(g, el))
}

/// The limits for one protocol, by the CTDI phantom its CTDIvol values refer to.
struct ByPhantom {
    unknown: Limits,
    head: Limits,
    body: Limits,
}

impl ByPhantom {
    fn get(&self, p: Option<Phantom>) -> &Limits {
        match p {
            None => &self.unknown,
            Some(Phantom::Head16) => &self.head,
            Some(Phantom::Body32) => &self.body,
        }
    }
}

/// Walks the protocol: `phantom` is the CTDI phantom stated at this level or above (a CTDI
/// Phantom Type Code Sequence applies to the CTDIvol beside it and below it).
fn walk(
    ds: &DataSet,
    set: &ByPhantom,
    phantom: Option<Phantom>,
    be: bool,
    depth: usize,
    out: &mut Vec<Finding>,
) {
    let phantom = code(ds, CTDI_PHANTOM)
        .and_then(|c| Phantom::from_code(&c.1))
        .or(phantom);
    let l = set.get(phantom);
    if depth > MAX_DEPTH {
        out.push(Finding::new(
            FindingKind::Malformed,
            format!("nested deeper than {MAX_DEPTH} levels"),
        ));
        return;
    }
    // A constraint on a watched attribute (PS3.3 C.34 protocol element constraints).
    if let Some(sel) = ds.get(SELECTOR_ATTRIBUTE) {
        if let Some((p, what)) = at_tag(sel, be).and_then(param) {
            for seq in [CONSTRAINT_VALUES, RECOMMENDED_DEFAULTS] {
                for item in items(ds, seq) {
                    for e in item.elements.iter() {
                        if !SELECTOR_VALUES.contains(&e.tag) {
                            continue;
                        }
                        match numbers(e, be) {
                            Ok(vs) => vs.into_iter().for_each(|v| check_value(p, what, v, l, out)),
                            Err(values::NotNumeric(why)) => out.push(Finding::new(
                                FindingKind::Malformed,
                                format!("constraint on {what}: {why}"),
                            )),
                        }
                    }
                }
            }
        }
    }
    for e in &ds.elements {
        match &e.value {
            Value::Items(items) => {
                for item in items {
                    walk(item, set, phantom, be, depth + 1, out);
                }
            }
            Value::Bytes(_) => check_element(e, l, be, out),
            Value::Fragments(_) => {}
        }
    }
}

/// One approval or disapproval of a protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The asserter's Person Name, or its person ID, or its Station AE title.
    pub asserter: Vec<String>,
    pub approves: bool,
    /// Its Assertion Expiration DateTime (0044,0105), seconds since 1970 UTC.
    pub expires: Option<i64>,
}

/// The Protocol Approval objects seen: per approved SOP Instance UID, its assertions. Bounded
/// ([`MAX_APPROVED`] protocols, the oldest forgotten first).
#[derive(Debug, Default, Clone)]
pub struct Approvals {
    by_protocol: HashMap<String, Vec<Assertion>>,
    order: VecDeque<String>,
}

/// Assertions kept per protocol at most (an approval object repeated forever adds nothing).
const MAX_ASSERTIONS: usize = 64;

impl Approvals {
    pub fn new() -> Approvals {
        Approvals::default()
    }

    /// Reads a Protocol Approval object (PS3.3 C.34.3 Protocol Approval Module): its Approval
    /// Subject Sequence names the protocols, its Approval Sequence the assertions. A finding
    /// when it names no protocol or asserts nothing readable.
    pub fn add(&mut self, ds: &DataSet) -> Result<usize, Finding> {
        let subjects: Vec<String> = items(ds, APPROVAL_SUBJECT_SEQUENCE)
            .iter()
            .filter_map(|i| text(i, REFERENCED_SOP_INSTANCE))
            .collect();
        if subjects.is_empty() {
            return Err(Finding::new(
                FindingKind::Malformed,
                "Protocol Approval without an Approval Subject Sequence (0044,0109) item naming a protocol",
            ));
        }
        let mut assertions = Vec::new();
        for a in items(ds, APPROVAL_SEQUENCE) {
            let Some((_, code_value, _)) = code(a, ASSERTION_CODE_SEQUENCE) else {
                continue;
            };
            let approves = if APPROVING.contains(&code_value.as_str()) {
                true
            } else if DISAPPROVING.contains(&code_value.as_str()) {
                false
            } else {
                continue;
            };
            let mut asserter = Vec::new();
            for who in items(a, ASSERTER_SEQUENCE) {
                asserter.extend(text(who, values::PERSON_NAME));
                asserter.extend(code(who, PERSON_ID_CODE_SEQUENCE).map(|c| c.1));
            }
            let expires = match text(a, ASSERTION_EXPIRATION) {
                None => None,
                Some(dt) => Some(values::datetime_unix(&dt).ok_or_else(|| {
                    Finding::new(
                        FindingKind::Malformed,
                        format!("Assertion Expiration DateTime (0044,0105) {dt:?} is not a DT"),
                    )
                })?),
            };
            assertions.push(Assertion {
                asserter,
                approves,
                expires,
            });
        }
        if assertions.is_empty() {
            return Err(Finding::new(
                FindingKind::Malformed,
                "Protocol Approval without an Approval Sequence (0044,0100) item with a CID 800 assertion code",
            ));
        }
        for s in &subjects {
            if !self.by_protocol.contains_key(s) {
                if self.order.len() >= MAX_APPROVED {
                    if let Some(old) = self.order.pop_front() {
                        self.by_protocol.remove(&old);
                    }
                }
                self.order.push_back(s.clone());
            }
            let list = self.by_protocol.entry(s.clone()).or_default();
            for a in &assertions {
                if list.len() < MAX_ASSERTIONS && !list.contains(a) {
                    list.push(a.clone());
                }
            }
        }
        Ok(subjects.len())
    }

    /// The assertions about a protocol.
    pub fn of(&self, sop_instance: &str) -> &[Assertion] {
        self.by_protocol
            .get(sop_instance)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_protocol.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_protocol.is_empty()
    }
}

/// The guard's verdict on one protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolReport {
    pub findings: Vec<Finding>,
    pub decision: Decision,
    /// The `[[guard.limit]]` entries applied.
    pub limits_from: Vec<String>,
}

/// Whether a peer (its policy name) may send protocols and approvals toward a modality: those
/// named in `protocol_managers` only; others get 0x0124 (Refused: Not Authorized).
pub fn may_manage(cfg: &GuardConfig, peer: &str) -> Decision {
    if cfg.protocol_managers.iter().any(|p| p == peer) {
        Decision::Pass
    } else {
        Decision::Refuse {
            status: STATUS_NOT_AUTHORIZED,
        }
    }
}

/// Whether the upstream whose AE title (a relay route's `upstream_ae`) is `upstream_ae` may
/// send protocols and approvals as C-GET sub-operations: named in `protocol_upstreams` only
/// (compared as AE titles: trailing spaces are not significant, PS3.5 §6.2); others get
/// 0x0124.
pub fn may_manage_upstream(cfg: &GuardConfig, upstream_ae: &str) -> Decision {
    if cfg
        .protocol_upstreams
        .iter()
        .any(|p| p.trim() == upstream_ae.trim())
    {
        Decision::Pass
    } else {
        Decision::Refuse {
            status: STATUS_NOT_AUTHORIZED,
        }
    }
}

fn approved(cfg: &GuardConfig, list: &[Assertion], now: i64) -> Option<Finding> {
    if list.is_empty() {
        return Some(Finding::new(
            FindingKind::Unapproved,
            "no Protocol Approval names this protocol",
        ));
    }
    let allowed = |a: &Assertion| {
        a.asserter
            .iter()
            .any(|who| cfg.approvers.iter().any(|x| x.trim() == who.trim()))
    };
    if list.iter().any(|a| !a.approves) {
        return Some(Finding::new(
            FindingKind::WrongApprover,
            "a Protocol Approval disapproves or deprecates this protocol",
        ));
    }
    let current = |a: &Assertion| a.expires.is_none_or(|e| e > now);
    if list.iter().any(|a| a.approves && allowed(a) && current(a)) {
        None
    } else if list.iter().any(|a| a.approves && allowed(a)) {
        Some(Finding::new(
            FindingKind::ApprovalExpired,
            "every approval by a configured approver is past its Assertion Expiration DateTime (0044,0105)",
        ))
    } else {
        Some(Finding::new(
            FindingKind::WrongApprover,
            "approved only by asserters not in guard.approvers",
        ))
    }
}

/// Checks a Defined Procedure Protocol: every parameter against the limits for its body part
/// (Body Part Examined (0018,0015), else the Anatomic Region Sequence's code meaning) and age
/// (Patient Age, when the protocol has one: else the strictest), and its approval: a current
/// one (`now`: seconds since 1970 UTC, against Assertion Expiration DateTime (0044,0105)), and
/// the protocol's own Expiration DateTime (0008,0416) not passed. `be`: the data set is big
/// endian. Any finding refuses it with [`STATUS_PROTOCOL_REFUSED`].
pub fn check_protocol(
    ds: &DataSet,
    cfg: &GuardConfig,
    approvals: &Approvals,
    be: bool,
    now: i64,
) -> ProtocolReport {
    let mut findings = Vec::new();
    if let Some(dt) = text(ds, EXPIRATION) {
        match values::datetime_unix(&dt) {
            Some(t) if t <= now => findings.push(Finding::new(
                FindingKind::ProtocolExpired,
                format!("Expiration DateTime (0008,0416) {dt} has passed"),
            )),
            Some(_) => {}
            None => findings.push(Finding::new(
                FindingKind::Malformed,
                format!("Expiration DateTime (0008,0416) {dt:?} is not a DT"),
            )),
        }
    }
    let body = text(ds, values::BODY_PART_EXAMINED)
        .or_else(|| code(ds, values::ANATOMIC_REGION_SEQUENCE).map(|c| c.2));
    let entries = cfg.limits();
    let at = |p| limits_in_phantom(&entries, body.as_deref(), values::age_years(ds), p);
    let set = ByPhantom {
        unknown: at(None),
        head: at(Some(Phantom::Head16)),
        body: at(Some(Phantom::Body32)),
    };
    walk(ds, &set, None, be, 0, &mut findings);
    match text(ds, values::SOP_INSTANCE_UID) {
        None => findings.push(Finding::new(
            FindingKind::Malformed,
            "no SOP Instance UID (0008,0018): no approval can name it",
        )),
        Some(uid) => findings.extend(approved(cfg, approvals.of(&uid), now)),
    }
    let decision = if findings.is_empty() {
        Decision::Pass
    } else {
        Decision::Refuse {
            status: STATUS_PROTOCOL_REFUSED,
        }
    };
    ProtocolReport {
        findings,
        decision,
        limits_from: set.unknown.from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitConfig;
    use dicom_core::VR;

    fn fd(tag: Tag, v: f64) -> Element {
        Element::bytes(tag, VR::FD, v.to_le_bytes().to_vec())
    }
    fn txt(tag: Tag, vr: VR, s: &str) -> Element {
        Element::text(tag, vr, s)
    }
    fn seq(tag: Tag, items: Vec<DataSet>) -> Element {
        Element::new(tag, VR::SQ, Value::Items(items))
    }
    fn code_item(scheme: &str, value: &str) -> DataSet {
        DataSet::new(vec![
            txt(values::CODE_VALUE, VR::SH, value),
            txt(values::CODING_SCHEME, VR::SH, scheme),
            txt(values::CODE_MEANING, VR::LO, "x"),
        ])
    }

    fn cfg() -> GuardConfig {
        GuardConfig {
            approvers: vec!["Curie^Marie".into(), "PHYS-1".into()],
            protocol_managers: vec!["pm".into()],
            protocol_upstreams: vec!["ARCHIVE".into()],
            limit: vec![LimitConfig {
                name: "head".into(),
                body_parts: vec!["HEAD".into()],
                min_age_years: 0.0,
                max_age_years: None,
                kvp: Some([80.0, 140.0]),
                tube_current_ma: Some([10.0, 500.0]),
                exposure_time_ms: Some([100.0, 2000.0]),
                ctdivol_notification: Some(80.0),
                ctdivol_alert: Some(1000.0),
                dlp_notification: None,
                dlp_alert: None,
                max_scan_length_mm: Some(250.0),
                phantom_cm: None,
            }],
            ..GuardConfig::default()
        }
    }

    fn protocol(extra: Vec<Element>) -> DataSet {
        let mut element = vec![
            txt(KVP, VR::DS, "120"),
            fd(TUBE_CURRENT_MA, 300.0),
            fd(EXPOSURE_TIME_MS, 1000.0),
            fd(CTDIVOL, 60.0),
            txt(SCAN_LENGTH, VR::IS, "200"),
        ];
        element.extend(extra);
        let mut ds = DataSet::new(vec![
            txt(values::SOP_CLASS_UID, VR::UI, crate::CT_DEFINED_PROTOCOL),
            txt(values::SOP_INSTANCE_UID, VR::UI, "1.2.3.4"),
            txt(values::BODY_PART_EXAMINED, VR::CS, "HEAD"),
            seq(
                Tag(0x0018, 0x9920),
                vec![DataSet::new(vec![seq(
                    Tag(0x0018, 0x991F),
                    vec![DataSet::new(element)],
                )])],
            ),
        ]);
        ds.elements.sort_by_key(|e| e.tag);
        ds
    }

    fn approval(who: &str, code_value: &str, subject: &str) -> DataSet {
        DataSet::new(vec![
            txt(values::SOP_CLASS_UID, VR::UI, crate::PROTOCOL_APPROVAL),
            seq(
                APPROVAL_SEQUENCE,
                vec![DataSet::new(vec![
                    seq(ASSERTION_CODE_SEQUENCE, vec![code_item("DCM", code_value)]),
                    seq(
                        ASSERTER_SEQUENCE,
                        vec![DataSet::new(vec![txt(values::PERSON_NAME, VR::PN, who)])],
                    ),
                ])],
            ),
            seq(
                APPROVAL_SUBJECT_SEQUENCE,
                vec![DataSet::new(vec![txt(
                    REFERENCED_SOP_INSTANCE,
                    VR::UI,
                    subject,
                )])],
            ),
        ])
    }

    fn approved_by(who: &str) -> Approvals {
        let mut a = Approvals::new();
        a.add(&approval(who, "128603", "1.2.3.4")).unwrap();
        a
    }

    /// 2026-01-01T12:00:00Z.
    const NOW: i64 = 1_767_268_800;

    /// An approval whose assertion expires at `expires` (a DT).
    fn approval_until(who: &str, code_value: &str, subject: &str, expires: &str) -> DataSet {
        let mut a = approval(who, code_value, subject);
        let Some(Element {
            value: Value::Items(items),
            ..
        }) = a.get_mut(APPROVAL_SEQUENCE)
        else {
            panic!()
        };
        items[0].put(txt(ASSERTION_EXPIRATION, VR::DT, expires));
        a
    }

    #[test]
    fn expired_or_deprecated_approvals_do_not_count() {
        let ds = protocol(vec![]);
        let judge = |a: &Approvals| kinds(&check_protocol(&ds, &cfg(), a, false, NOW));
        // Expires in the future: approved; an hour ago (with its offset): expired.
        let mut a = Approvals::new();
        a.add(&approval_until(
            "Curie^Marie",
            "128603",
            "1.2.3.4",
            "20270101",
        ))
        .unwrap();
        assert_eq!(judge(&a), vec![]);
        let mut a = Approvals::new();
        a.add(&approval_until(
            "Curie^Marie",
            "128603",
            "1.2.3.4",
            "20260101120000+0100",
        ))
        .unwrap();
        assert_eq!(judge(&a), vec![FindingKind::ApprovalExpired]);
        // Another, current approval by an approver still covers it.
        a.add(&approval("PHYS-1", "128603", "1.2.3.4")).unwrap();
        assert_eq!(judge(&a), vec![]);
        // An expiry that is not a DT: the approval is refused, not read as forever.
        assert!(Approvals::new()
            .add(&approval_until("Curie^Marie", "128603", "1.2.3.4", "soon"))
            .is_err());
        // Deprecated (128610) after an approval: withdrawn.
        let mut a = approved_by("Curie^Marie");
        a.add(&approval("Curie^Marie", "128610", "1.2.3.4"))
            .unwrap();
        assert_eq!(judge(&a), vec![FindingKind::WrongApprover]);
    }

    #[test]
    fn an_expired_protocol_is_refused() {
        let a = approved_by("Curie^Marie");
        let at = |dt: &str| {
            let ds = protocol(vec![]);
            let mut ds = ds;
            ds.put(txt(EXPIRATION, VR::DT, dt));
            check_protocol(&ds, &cfg(), &a, false, NOW)
        };
        assert_eq!(
            kinds(&at("20260101115959")),
            vec![FindingKind::ProtocolExpired]
        );
        assert_eq!(
            at("20260101115959").decision,
            Decision::Refuse {
                status: STATUS_PROTOCOL_REFUSED
            }
        );
        assert_eq!(kinds(&at("20260102")), vec![]);
        assert_eq!(kinds(&at("tomorrow")), vec![FindingKind::Malformed]);
    }

    #[test]
    fn ctdivol_is_compared_only_with_limits_of_its_phantom() {
        // Head 16 cm: 80 mGy; body 32 cm: 30 mGy; both for HEAD (a test, not a site's table).
        let mut c = cfg();
        c.limit[0].phantom_cm = Some(16);
        let mut body = c.limit[0].clone();
        body.name = "head-in-body-phantom".into();
        body.phantom_cm = Some(32);
        body.ctdivol_notification = Some(30.0);
        c.limit.push(body);
        let a = approved_by("Curie^Marie");
        let phantom = |value: &str| seq(CTDI_PHANTOM, vec![code_item("DCM", value)]);
        let judge = |extra: Vec<Element>, c: &GuardConfig| {
            kinds(&check_protocol(&protocol(extra), c, &a, false, NOW))
        };
        // 60 mGy (the protocol's CTDIvol): under 80 in the head phantom, over 30 in the body
        // phantom, and without a stated phantom the strictest (30) applies.
        assert_eq!(judge(vec![phantom("113690")], &c), vec![]);
        assert_eq!(
            judge(vec![phantom("113691")], &c),
            vec![FindingKind::CtdivolOverLimit]
        );
        assert_eq!(judge(vec![], &c), vec![FindingKind::CtdivolOverLimit]);
        // Only a 16 cm limit and a 32 cm value: not compared, a finding of its own.
        let mut only_head = cfg();
        only_head.limit[0].phantom_cm = Some(16);
        assert_eq!(
            judge(vec![phantom("113691")], &only_head),
            vec![FindingKind::PhantomMismatch]
        );
        // A phantom stated above the CTDIvol applies to it.
        let mut ds = protocol(vec![]);
        ds.put(phantom("113691"));
        assert_eq!(
            kinds(&check_protocol(&ds, &only_head, &a, false, NOW)),
            vec![FindingKind::PhantomMismatch]
        );
    }

    fn kinds(r: &ProtocolReport) -> Vec<FindingKind> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn in_range_and_approved_passes() {
        let r = check_protocol(
            &protocol(vec![]),
            &cfg(),
            &approved_by("Curie^Marie"),
            false,
            NOW,
        );
        assert_eq!(r.findings, vec![]);
        assert_eq!(r.decision, Decision::Pass);
        assert_eq!(r.limits_from, vec!["head".to_string()]);
    }

    #[test]
    fn every_limit_refuses_past_either_bound() {
        let a = approved_by("Curie^Marie");
        let cases: Vec<(Element, FindingKind)> = vec![
            (txt(KVP, VR::DS, "79.9"), FindingKind::KvpOutOfRange),
            (txt(KVP, VR::DS, "140.1"), FindingKind::KvpOutOfRange),
            (fd(TUBE_CURRENT_MA, 9.0), FindingKind::TubeCurrentOutOfRange),
            (
                fd(TUBE_CURRENT_MA, 501.0),
                FindingKind::TubeCurrentOutOfRange,
            ),
            (
                txt(TUBE_CURRENT, VR::IS, "900"),
                FindingKind::TubeCurrentOutOfRange,
            ),
            (
                fd(EXPOSURE_TIME_MS, 99.0),
                FindingKind::ExposureTimeOutOfRange,
            ),
            (
                txt(EXPOSURE_TIME, VR::IS, "2001"),
                FindingKind::ExposureTimeOutOfRange,
            ),
            (fd(CTDIVOL, 80.5), FindingKind::CtdivolOverLimit),
            (fd(CTDIVOL, 1200.0), FindingKind::CtdivolOverLimit),
            (
                txt(SCAN_LENGTH, VR::IS, "251"),
                FindingKind::ScanLengthOverLimit,
            ),
        ];
        for (e, kind) in cases {
            let tag = e.tag;
            let mut ds = protocol(vec![]);
            // Replace the value in the protocol element.
            let Value::Items(outer) = &mut ds.get_mut(Tag(0x0018, 0x9920)).unwrap().value else {
                panic!()
            };
            let Value::Items(inner) = &mut outer[0].elements[0].value else {
                panic!()
            };
            inner[0].put(e);
            let r = check_protocol(&ds, &cfg(), &a, false, NOW);
            assert_eq!(kinds(&r), vec![kind], "{tag:?}: {:?}", r.findings);
            assert_eq!(
                r.decision,
                Decision::Refuse {
                    status: STATUS_PROTOCOL_REFUSED
                }
            );
        }
        // The bounds themselves pass.
        let mut ds = protocol(vec![]);
        ds.put(txt(KVP, VR::DS, "80\\140"));
        ds.put(fd(CTDIVOL, 80.0));
        ds.put(txt(SCAN_LENGTH, VR::IS, "250"));
        assert_eq!(check_protocol(&ds, &cfg(), &a, false, NOW).findings, vec![]);
    }

    #[test]
    fn alert_value_is_named_over_notification() {
        let mut ds = protocol(vec![]);
        ds.put(fd(CTDIVOL, 1500.0));
        let r = check_protocol(&ds, &cfg(), &approved_by("Curie^Marie"), false, NOW);
        assert!(r.findings[0].detail.contains("alert value 1000"), "{r:?}");
    }

    #[test]
    fn constraints_on_a_parameter_are_checked() {
        let mut at = Vec::new();
        at.extend_from_slice(&0x0018u16.to_le_bytes());
        at.extend_from_slice(&0x9330u16.to_le_bytes());
        let constraint = DataSet::new(vec![
            Element::bytes(SELECTOR_ATTRIBUTE, VR::AT, at),
            seq(
                CONSTRAINT_VALUES,
                vec![DataSet::new(vec![fd(Tag(0x0072, 0x0074), 1000.0)])],
            ),
            seq(
                RECOMMENDED_DEFAULTS,
                vec![DataSet::new(vec![fd(Tag(0x0072, 0x0074), 200.0)])],
            ),
        ]);
        let ds = protocol(vec![seq(Tag(0x0082, 0x0036), vec![constraint])]);
        let r = check_protocol(&ds, &cfg(), &approved_by("Curie^Marie"), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::TubeCurrentOutOfRange], "{r:?}");
        assert!(r.findings[0].detail.contains("1000"));
    }

    #[test]
    fn unreadable_parameters_refuse() {
        let ds = protocol(vec![txt(KVP, VR::DS, "12O")]);
        let r = check_protocol(&ds, &cfg(), &approved_by("Curie^Marie"), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::Malformed]);
        let ds = protocol(vec![Element::bytes(CTDIVOL, VR::FD, vec![1, 2, 3])]);
        let r = check_protocol(&ds, &cfg(), &approved_by("Curie^Marie"), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::Malformed]);
        let mut ds = protocol(vec![]);
        ds.remove(values::SOP_INSTANCE_UID);
        let r = check_protocol(&ds, &cfg(), &approved_by("Curie^Marie"), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::Malformed]);
    }

    #[test]
    fn approval_rules() {
        let ds = protocol(vec![]);
        let r = check_protocol(&ds, &cfg(), &Approvals::new(), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::Unapproved]);
        let r = check_protocol(&ds, &cfg(), &approved_by("Mallory^Eve"), false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::WrongApprover]);
        // An approval of another protocol does not cover this one.
        let mut other = Approvals::new();
        other
            .add(&approval("Curie^Marie", "128603", "9.9"))
            .unwrap();
        let r = check_protocol(&ds, &cfg(), &other, false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::Unapproved]);
        // A disapproval by anyone wins over an approval.
        let mut a = approved_by("Curie^Marie");
        a.add(&approval("Curie^Marie", "128623", "1.2.3.4"))
            .unwrap();
        let r = check_protocol(&ds, &cfg(), &a, false, NOW);
        assert_eq!(kinds(&r), vec![FindingKind::WrongApprover]);
        // An assertion code outside CID 800 asserts nothing.
        let mut a = Approvals::new();
        assert!(a
            .add(&approval("Curie^Marie", "999999", "1.2.3.4"))
            .is_err());
        // Person ID instead of the name.
        let mut by_id = approval("Somebody", "128603", "1.2.3.4");
        let Value::Items(approvals) = &mut by_id.get_mut(APPROVAL_SEQUENCE).unwrap().value else {
            panic!()
        };
        let Value::Items(asserters) = &mut approvals[0].get_mut(ASSERTER_SEQUENCE).unwrap().value
        else {
            panic!()
        };
        asserters[0].put(seq(PERSON_ID_CODE_SEQUENCE, vec![code_item("L", "PHYS-1")]));
        let mut a = Approvals::new();
        a.add(&by_id).unwrap();
        assert_eq!(check_protocol(&ds, &cfg(), &a, false, NOW).findings, vec![]);
        // An approval naming no protocol.
        let mut none = approval("Curie^Marie", "128603", "1.2.3.4");
        none.remove(APPROVAL_SUBJECT_SEQUENCE);
        assert!(Approvals::new().add(&none).is_err());
    }

    #[test]
    fn approvals_are_bounded() {
        let mut a = Approvals::new();
        for i in 0..MAX_APPROVED + 10 {
            a.add(&approval("Curie^Marie", "128603", &format!("1.{i}")))
                .unwrap();
        }
        assert_eq!(a.len(), MAX_APPROVED);
        assert!(a.of("1.0").is_empty(), "oldest forgotten");
        assert_eq!(a.of(&format!("1.{}", MAX_APPROVED + 9)).len(), 1);
    }

    #[test]
    fn protocol_managers() {
        assert_eq!(may_manage(&cfg(), "pm"), Decision::Pass);
        assert_eq!(
            may_manage(&cfg(), "ris"),
            Decision::Refuse {
                status: STATUS_NOT_AUTHORIZED
            }
        );
    }

    #[test]
    fn protocol_upstreams() {
        // The archive a route connects to, by its AE title; a peer's name is not an upstream.
        assert_eq!(may_manage_upstream(&cfg(), "ARCHIVE"), Decision::Pass);
        assert_eq!(may_manage_upstream(&cfg(), "ARCHIVE  "), Decision::Pass);
        for other in ["pm", "archive", "OTHER"] {
            assert_eq!(
                may_manage_upstream(&cfg(), other),
                Decision::Refuse {
                    status: STATUS_NOT_AUTHORIZED
                }
            );
        }
    }

    #[test]
    fn deep_trees_are_bounded() {
        let mut ds = DataSet::new(vec![txt(KVP, VR::DS, "500")]);
        for _ in 0..MAX_DEPTH + 5 {
            ds = DataSet::new(vec![seq(Tag(0x0018, 0x9920), vec![ds])]);
        }
        let mut out = Vec::new();
        let none = ByPhantom {
            unknown: Limits::default(),
            head: Limits::default(),
            body: Limits::default(),
        };
        walk(&ds, &none, None, false, 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, FindingKind::Malformed);
    }
}
