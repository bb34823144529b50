//! The dose watch: CT Radiation Dose SRs (X-Ray Radiation Dose SR Storage with TID 10011 "CT
//! Radiation Dose"), their irradiation events (TID 10013 "CT Irradiation Event Data": Mean
//! CTDIvol, DLP) and Dose Check details (TID 10015: the alert and notification containers, each
//! with a Reason for Proceeding and the person authorizing it, NEMA XR 25).
//!
//! The content tree is read by [`read_content`], a bounded walker over the radguard-dicom tree
//! ([`MAX_SR_DEPTH`] levels, [`MAX_SR_ITEMS`] content items): a tree that is not a dose report,
//! or a content item without its value type or concept name, or a NUM whose value is not a
//! number, is a [`FindingKind::MalformedSr`], never a panic and never a silent pass.
//!
//! An event over the notification or alert value without a recorded reason *and* authorizing
//! person is a finding; a study whose accumulated CTDIvol crosses the alert value is one too
//! ([`DoseWatch`], keyed by Study Instance UID, bounded, least recently used forgotten first).
//! The dose watch never refuses: the exam has already happened; the alert is what stops the
//! next one.

use std::collections::{BTreeMap, HashMap, HashSet};

use dicom_core::Tag;
use radguard_dicom::tree::DataSet;

use crate::config::{limits_in_phantom, GuardConfig, Phantom};
use crate::values::{self, code, items, numbers, text};
use crate::{Finding, FindingKind};

const CONCEPT_NAME: Tag = Tag(0x0040, 0xA043);
const VALUE_TYPE: Tag = Tag(0x0040, 0xA040);
const CONTENT_SEQUENCE: Tag = Tag(0x0040, 0xA730);
const MEASURED_VALUE_SEQUENCE: Tag = Tag(0x0040, 0xA300);
const NUMERIC_VALUE: Tag = Tag(0x0040, 0xA30A);
const FLOATING_POINT_VALUE: Tag = Tag(0x0040, 0xA161);
const UNITS: Tag = Tag(0x0040, 0x08EA);
const TEXT_VALUE: Tag = Tag(0x0040, 0xA160);
const CONCEPT_CODE: Tag = Tag(0x0040, 0xA168);
const UID_VALUE: Tag = Tag(0x0040, 0xA124);
const REFERENCED_CONTENT_ITEM: Tag = Tag(0x0040, 0xDB73);

/// Deepest content nesting followed (TID 10011 nests about 6 deep).
pub const MAX_SR_DEPTH: usize = 24;
/// Most content items read in one report.
pub const MAX_SR_ITEMS: usize = 100_000;
/// Irradiation event UIDs remembered per study (to count a report sent twice once).
pub const MAX_EVENTS_PER_STUDY: usize = 4096;

/// DCM concept codes (PS3.16 Annex D) the watch reads.
pub mod codes {
    pub const XRAY_DOSE_REPORT: &str = "113701";
    pub const CT_ACQUISITION: &str = "113819";
    pub const MEAN_CTDIVOL: &str = "113830";
    pub const DLP: &str = "113838";
    /// CTDIw Phantom Type (TID 10013), a CID 4052 code.
    pub const CTDIW_PHANTOM_TYPE: &str = "113835";
    pub const IRRADIATION_EVENT_UID: &str = "113769";
    pub const TARGET_REGION: &str = "123014";
    pub const ALERT_DETAILS: &str = "113900";
    pub const NOTIFICATION_DETAILS: &str = "113908";
    pub const REASON_FOR_PROCEEDING: &str = "113907";
    pub const PERSON_NAME: &str = "113870";
}

/// A content item's value, as far as the watch needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemValue {
    Container(Vec<Node>),
    /// NUM: the number (none when the item carries no measured value) and its unit code.
    Num(Option<f64>, String),
    Text(String),
    /// CODE: its code meaning and its code value.
    Code(String, String),
    Uid(String),
    /// Any other value type (DATETIME, IMAGE, …), or a by-reference item.
    Other,
}

/// One content item: its concept name (DCM code value; other schemes keep `scheme:code`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub concept: String,
    pub value: ItemValue,
}

struct Walk {
    items: usize,
    be: bool,
}

fn concept_of(ds: &DataSet) -> Option<String> {
    code(ds, CONCEPT_NAME).map(|(scheme, value, _)| {
        if scheme == "DCM" {
            value
        } else {
            format!("{scheme}:{value}")
        }
    })
}

fn malformed(why: impl Into<String>) -> Finding {
    Finding::new(FindingKind::MalformedSr, why)
}

impl Walk {
    fn content(&mut self, ds: &DataSet, depth: usize) -> Result<Vec<Node>, Finding> {
        if depth > MAX_SR_DEPTH {
            return Err(malformed(format!(
                "content tree deeper than {MAX_SR_DEPTH} levels"
            )));
        }
        let mut out = Vec::new();
        for item in items(ds, CONTENT_SEQUENCE) {
            self.items += 1;
            if self.items > MAX_SR_ITEMS {
                return Err(malformed(format!("more than {MAX_SR_ITEMS} content items")));
            }
            if item.get(REFERENCED_CONTENT_ITEM).is_some() {
                // By-reference relationship (PS3.3 C.17.3.2.4): no value of its own.
                continue;
            }
            let vt = text(item, VALUE_TYPE)
                .ok_or_else(|| malformed("a content item without Value Type (0040,A040)"))?;
            let concept = concept_of(item).ok_or_else(|| {
                malformed(format!(
                    "a {vt} content item without Concept Name Code Sequence (0040,A043)"
                ))
            })?;
            let value = match vt.as_str() {
                "CONTAINER" => ItemValue::Container(self.content(item, depth + 1)?),
                "NUM" => self.num(item, &concept)?,
                "TEXT" => ItemValue::Text(text(item, TEXT_VALUE).unwrap_or_default()),
                "PNAME" => ItemValue::Text(text(item, values::PERSON_NAME).unwrap_or_default()),
                "CODE" => {
                    let (_, value, meaning) = code(item, CONCEPT_CODE)
                        .ok_or_else(|| malformed(format!("CODE {concept} without a code")))?;
                    ItemValue::Code(meaning, value)
                }
                "UIDREF" => ItemValue::Uid(text(item, UID_VALUE).unwrap_or_default()),
                _ => ItemValue::Other,
            };
            // Items below a non-container (HAS PROPERTIES, …) are read too.
            if !matches!(value, ItemValue::Container(_)) && item.get(CONTENT_SEQUENCE).is_some() {
                let children = self.content(item, depth + 1)?;
                out.push(Node { concept, value });
                out.push(Node {
                    concept: String::new(),
                    value: ItemValue::Container(children),
                });
                continue;
            }
            out.push(Node { concept, value });
        }
        Ok(out)
    }

    fn num(&mut self, item: &DataSet, concept: &str) -> Result<ItemValue, Finding> {
        let Some(mv) = items(item, MEASURED_VALUE_SEQUENCE).first() else {
            return Ok(ItemValue::Num(None, String::new()));
        };
        let unit = code(mv, UNITS).map(|c| c.1).unwrap_or_default();
        // The Floating Point Value, when present, is the value at full precision (PS3.3
        // C.18.1.1); else the Numeric Value (DS).
        let e = mv
            .get(FLOATING_POINT_VALUE)
            .or_else(|| mv.get(NUMERIC_VALUE));
        let Some(e) = e else {
            return Err(malformed(format!("NUM {concept} without a Numeric Value")));
        };
        let v = numbers(e, self.be)
            .map_err(|w| malformed(format!("NUM {concept}: {}", w.0)))?
            .first()
            .copied();
        Ok(ItemValue::Num(v, unit))
    }
}

/// Reads a dose report's content tree (bounded). `be`: the data set is big endian.
pub fn read_content(ds: &DataSet, be: bool) -> Result<Vec<Node>, Finding> {
    match concept_of(ds).as_deref() {
        Some(codes::XRAY_DOSE_REPORT) => {}
        Some(c) => {
            return Err(malformed(format!(
                "root concept {c} is not X-Ray Radiation Dose Report (113701)"
            )))
        }
        None => return Err(malformed("no root Concept Name Code Sequence (0040,A043)")),
    }
    Walk { items: 0, be }.content(ds, 0)
}

/// One irradiation event of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub uid: Option<String>,
    pub ctdivol: Option<f64>,
    pub dlp: Option<f64>,
    pub target: Option<String>,
    /// The CTDI phantom its CTDIvol and DLP refer to (CTDIw Phantom Type).
    pub phantom: Option<Phantom>,
    /// A Dose Check alert container with both a reason and a person.
    pub alert_reasoned: bool,
    /// A Dose Check notification (or alert) container with both a reason and a person.
    pub notification_reasoned: bool,
}

fn visit<'a>(nodes: &'a [Node], f: &mut impl FnMut(&'a Node)) {
    for n in nodes {
        f(n);
        if let ItemValue::Container(c) = &n.value {
            visit(c, f);
        }
    }
}

/// Whether a Dose Check container holds a Reason for Proceeding and a Person Name, both
/// non-empty.
fn reasoned(details: &[Node]) -> bool {
    let (mut reason, mut person) = (false, false);
    visit(details, &mut |n| match (&n.concept[..], &n.value) {
        (codes::REASON_FOR_PROCEEDING, ItemValue::Text(t)) => reason |= !t.trim().is_empty(),
        (codes::PERSON_NAME, ItemValue::Text(t)) => person |= !t.trim().is_empty(),
        _ => {}
    });
    reason && person
}

fn event(nodes: &[Node]) -> Event {
    let mut e = Event {
        uid: None,
        ctdivol: None,
        dlp: None,
        target: None,
        phantom: None,
        alert_reasoned: false,
        notification_reasoned: false,
    };
    visit(nodes, &mut |n| match (&n.concept[..], &n.value) {
        (codes::MEAN_CTDIVOL, ItemValue::Num(v, _)) => e.ctdivol = e.ctdivol.or(*v),
        (codes::DLP, ItemValue::Num(v, _)) => e.dlp = e.dlp.or(*v),
        (codes::IRRADIATION_EVENT_UID, ItemValue::Uid(u)) => e.uid = Some(u.clone()),
        (codes::TARGET_REGION, ItemValue::Code(m, _)) => e.target = Some(m.clone()),
        (codes::CTDIW_PHANTOM_TYPE, ItemValue::Code(_, v)) => {
            e.phantom = e.phantom.or(Phantom::from_code(v))
        }
        (codes::ALERT_DETAILS, ItemValue::Container(c)) => e.alert_reasoned |= reasoned(c),
        (codes::NOTIFICATION_DETAILS, ItemValue::Container(c)) => {
            e.notification_reasoned |= reasoned(c)
        }
        _ => {}
    });
    e.notification_reasoned |= e.alert_reasoned;
    e
}

/// What a dose report says and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct DoseReport {
    pub study: Option<String>,
    pub age_years: Option<f64>,
    pub body_part: Option<String>,
    pub events: Vec<Event>,
    pub findings: Vec<Finding>,
}

/// Reads a CT Radiation Dose SR and judges each irradiation event against the limits for its
/// Target Region (else the report's Body Part Examined) and the patient's age.
pub fn check_dose(ds: &DataSet, cfg: &GuardConfig, be: bool) -> DoseReport {
    let mut report = DoseReport {
        study: text(ds, values::STUDY_INSTANCE_UID),
        age_years: values::age_years(ds),
        body_part: text(ds, values::BODY_PART_EXAMINED),
        events: Vec::new(),
        findings: Vec::new(),
    };
    let nodes = match read_content(ds, be) {
        Ok(n) => n,
        Err(f) => {
            report.findings.push(f);
            return report;
        }
    };
    let mut acquisitions = Vec::new();
    visit(&nodes, &mut |n| {
        if let (codes::CT_ACQUISITION, ItemValue::Container(c)) = (&n.concept[..], &n.value) {
            acquisitions.push(c);
        }
    });
    let limits = cfg.limits();
    for (i, c) in acquisitions.into_iter().enumerate() {
        let e = event(c);
        let part = e.target.as_deref().or(report.body_part.as_deref());
        let l = limits_in_phantom(&limits, part, report.age_years, e.phantom);
        let name = e.uid.clone().unwrap_or_else(|| format!("#{}", i + 1));
        if !l.phantom_mismatch.is_empty() && (e.ctdivol.is_some() || e.dlp.is_some()) {
            // A 16 cm value read against 32 cm limits (or the reverse) is about 2x off: not
            // compared, said.
            report.findings.push(Finding::new(
                FindingKind::PhantomMismatch,
                format!(
                    "irradiation event {name}: CTDIvol/DLP in the {} cm phantom, the limits that apply ({}) are for the other phantom",
                    e.phantom.map_or(0, Phantom::cm),
                    l.phantom_mismatch.join(", ")
                ),
            ));
        }
        let over = |v: Option<f64>, limit: Option<f64>| match (v, limit) {
            (Some(v), Some(l)) => v > l,
            _ => false,
        };
        let fmt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        let what = format!(
            "irradiation event {name}: CTDIvol {} mGy, DLP {} mGy·cm",
            fmt(e.ctdivol),
            fmt(e.dlp)
        );
        if over(e.ctdivol, l.ctdivol_alert) || over(e.dlp, l.dlp_alert) {
            if !e.alert_reasoned {
                report.findings.push(Finding::new(
                    FindingKind::DoseAlert,
                    format!(
                        "{what} over the alert value (CTDIvol {} mGy, DLP {} mGy·cm) without a reason for proceeding and an authorizing person",
                        fmt(l.ctdivol_alert),
                        fmt(l.dlp_alert)
                    ),
                ));
            }
        } else if (over(e.ctdivol, l.ctdivol_notification) || over(e.dlp, l.dlp_notification))
            && !e.notification_reasoned
        {
            report.findings.push(Finding::new(
                FindingKind::DoseNotification,
                format!(
                    "{what} over the notification value (CTDIvol {} mGy, DLP {} mGy·cm) without a reason for proceeding and an authorizing person",
                    fmt(l.ctdivol_notification),
                    fmt(l.dlp_notification)
                ),
            ));
        }
        report.events.push(e);
    }
    report
}

#[derive(Debug)]
struct Study {
    ctdivol: f64,
    alert: Option<f64>,
    events: HashSet<String>,
    alerted: bool,
    tick: u64,
}

/// Accumulated CTDIvol per study (Study Instance UID), fed by the caller with each report.
/// Bounded: at most `max_studies`, the least recently fed forgotten first.
#[derive(Debug)]
pub struct DoseWatch {
    max: usize,
    studies: HashMap<String, Study>,
    by_tick: BTreeMap<u64, String>,
    tick: u64,
}

impl DoseWatch {
    pub fn new(max_studies: usize) -> DoseWatch {
        DoseWatch {
            max: max_studies.max(1),
            studies: HashMap::new(),
            by_tick: BTreeMap::new(),
            tick: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.studies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.studies.is_empty()
    }

    /// The CTDIvol accumulated for a study so far.
    pub fn accumulated(&self, study: &str) -> Option<f64> {
        self.studies.get(study).map(|s| s.ctdivol)
    }

    /// Adds a report's events to its study (an event UID already counted is not counted
    /// again); a finding the first time the study's sum passes the alert value (the lowest
    /// alert value of its events' limits).
    pub fn observe(&mut self, report: &DoseReport, cfg: &GuardConfig) -> Option<Finding> {
        let study = report.study.as_ref()?;
        let limits = cfg.limits();
        self.tick += 1;
        let tick = self.tick;
        if !self.studies.contains_key(study) && self.studies.len() >= self.max {
            if let Some((_, old)) = self.by_tick.pop_first() {
                self.studies.remove(&old);
            }
        }
        let s = self.studies.entry(study.clone()).or_insert(Study {
            ctdivol: 0.0,
            alert: None,
            events: HashSet::new(),
            alerted: false,
            tick,
        });
        self.by_tick.remove(&s.tick);
        s.tick = tick;
        self.by_tick.insert(tick, study.clone());
        for e in &report.events {
            let Some(v) = e.ctdivol else { continue };
            if let Some(uid) = &e.uid {
                if s.events.contains(uid) {
                    continue;
                }
                if s.events.len() < MAX_EVENTS_PER_STUDY {
                    s.events.insert(uid.clone());
                }
            }
            s.ctdivol += v;
            let part = e.target.as_deref().or(report.body_part.as_deref());
            let a = limits_in_phantom(&limits, part, report.age_years, e.phantom).ctdivol_alert;
            s.alert = match (s.alert, a) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        }
        match s.alert {
            Some(a) if s.ctdivol > a && !s.alerted => {
                s.alerted = true;
                Some(Finding::new(
                    FindingKind::StudyAccumulatedAlert,
                    format!(
                        "study {study}: accumulated CTDIvol {} mGy over the alert value {a} mGy",
                        s.ctdivol
                    ),
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitConfig;
    use dicom_core::VR;
    use radguard_dicom::tree::{Element, Value};

    fn txt(tag: Tag, vr: VR, s: &str) -> Element {
        Element::text(tag, vr, s)
    }
    fn seq(tag: Tag, items: Vec<DataSet>) -> Element {
        Element::new(tag, VR::SQ, Value::Items(items))
    }
    fn concept(c: &str) -> Element {
        seq(
            CONCEPT_NAME,
            vec![DataSet::new(vec![
                txt(values::CODE_VALUE, VR::SH, c),
                txt(values::CODING_SCHEME, VR::SH, "DCM"),
                txt(values::CODE_MEANING, VR::LO, "m"),
            ])],
        )
    }
    fn item(vt: &str, c: &str, mut rest: Vec<Element>) -> DataSet {
        rest.push(txt(VALUE_TYPE, VR::CS, vt));
        rest.push(concept(c));
        rest.sort_by_key(|e| e.tag);
        DataSet::new(rest)
    }
    fn container(c: &str, children: Vec<DataSet>) -> DataSet {
        item("CONTAINER", c, vec![seq(CONTENT_SEQUENCE, children)])
    }
    fn num(c: &str, v: &str) -> DataSet {
        item(
            "NUM",
            c,
            vec![seq(
                MEASURED_VALUE_SEQUENCE,
                vec![DataSet::new(vec![txt(NUMERIC_VALUE, VR::DS, v)])],
            )],
        )
    }
    fn text_item(vt: &str, c: &str, tag: Tag, v: &str) -> DataSet {
        item(vt, c, vec![txt(tag, VR::UT, v)])
    }
    fn details(c: &str, reason: bool, person: bool) -> DataSet {
        let mut ch = vec![];
        if reason {
            ch.push(text_item(
                "TEXT",
                codes::REASON_FOR_PROCEEDING,
                TEXT_VALUE,
                "obese patient",
            ));
        }
        if person {
            ch.push(text_item(
                "PNAME",
                codes::PERSON_NAME,
                values::PERSON_NAME,
                "Curie^Marie",
            ));
        }
        container(c, ch)
    }
    fn acquisition(uid: &str, ctdivol: &str, extra: Vec<DataSet>) -> DataSet {
        let mut dose = vec![num(codes::MEAN_CTDIVOL, ctdivol), num(codes::DLP, "500")];
        dose.extend(extra);
        container(
            codes::CT_ACQUISITION,
            vec![
                text_item("UIDREF", codes::IRRADIATION_EVENT_UID, UID_VALUE, uid),
                container("113829", dose),
            ],
        )
    }
    fn report(study: &str, events: Vec<DataSet>) -> DataSet {
        let mut els = vec![
            txt(values::SOP_CLASS_UID, VR::UI, crate::XRAY_DOSE_SR),
            txt(values::STUDY_INSTANCE_UID, VR::UI, study),
            txt(values::BODY_PART_EXAMINED, VR::CS, "HEAD"),
            txt(values::PATIENT_AGE, VR::AS, "045Y"),
            txt(VALUE_TYPE, VR::CS, "CONTAINER"),
            concept(codes::XRAY_DOSE_REPORT),
            seq(CONTENT_SEQUENCE, events),
        ];
        els.sort_by_key(|e| e.tag);
        DataSet::new(els)
    }

    fn cfg() -> GuardConfig {
        GuardConfig {
            limit: vec![LimitConfig {
                name: "head".into(),
                body_parts: vec!["HEAD".into()],
                min_age_years: 0.0,
                max_age_years: None,
                kvp: None,
                tube_current_ma: None,
                exposure_time_ms: None,
                ctdivol_notification: Some(80.0),
                ctdivol_alert: Some(1000.0),
                dlp_notification: Some(1500.0),
                dlp_alert: Some(5000.0),
                max_scan_length_mm: None,
                phantom_cm: None,
            }],
            ..GuardConfig::default()
        }
    }

    fn kinds(r: &DoseReport) -> Vec<FindingKind> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn under_the_notification_value_is_quiet() {
        let r = check_dose(
            &report("1.1", vec![acquisition("9.1", "60", vec![])]),
            &cfg(),
            false,
        );
        assert_eq!(r.findings, vec![]);
        assert_eq!(r.events.len(), 1);
        assert_eq!(r.events[0].ctdivol, Some(60.0));
        assert_eq!(r.events[0].dlp, Some(500.0));
        assert_eq!(r.study.as_deref(), Some("1.1"));
        // The value itself is not over.
        let r = check_dose(
            &report("1.1", vec![acquisition("9.1", "80", vec![])]),
            &cfg(),
            false,
        );
        assert_eq!(r.findings, vec![]);
    }

    #[test]
    fn notification_needs_reason_and_person() {
        for (reason, person, alert) in [
            (false, false, true),
            (true, false, true),
            (false, true, true),
            (true, true, false),
        ] {
            let ev = acquisition(
                "9.1",
                "81",
                vec![details(codes::NOTIFICATION_DETAILS, reason, person)],
            );
            let r = check_dose(&report("1.1", vec![ev]), &cfg(), false);
            let want = if alert {
                vec![FindingKind::DoseNotification]
            } else {
                vec![]
            };
            assert_eq!(kinds(&r), want, "reason {reason} person {person}");
        }
        // DLP alone over its notification value.
        let mut ev = acquisition("9.1", "10", vec![]);
        let Value::Items(top) = &mut ev.get_mut(CONTENT_SEQUENCE).unwrap().value else {
            panic!()
        };
        let Value::Items(dose) = &mut top[1].get_mut(CONTENT_SEQUENCE).unwrap().value else {
            panic!()
        };
        dose[1] = num(codes::DLP, "1600");
        let r = check_dose(&report("1.1", vec![ev]), &cfg(), false);
        assert_eq!(kinds(&r), vec![FindingKind::DoseNotification]);
    }

    #[test]
    fn alert_needs_its_own_reason() {
        let ev = acquisition("9.1", "1200", vec![]);
        let r = check_dose(&report("1.1", vec![ev]), &cfg(), false);
        assert_eq!(kinds(&r), vec![FindingKind::DoseAlert]);
        // A notification reason does not cover an alert.
        let ev = acquisition(
            "9.1",
            "1200",
            vec![details(codes::NOTIFICATION_DETAILS, true, true)],
        );
        let r = check_dose(&report("1.1", vec![ev]), &cfg(), false);
        assert_eq!(kinds(&r), vec![FindingKind::DoseAlert]);
        let ev = acquisition(
            "9.1",
            "1200",
            vec![details(codes::ALERT_DETAILS, true, true)],
        );
        let r = check_dose(&report("1.1", vec![ev]), &cfg(), false);
        assert_eq!(kinds(&r), vec![]);
    }

    #[test]
    fn study_accumulation_crosses_once_and_counts_events_once() {
        let c = cfg();
        let mut w = DoseWatch::new(10);
        let one = |uid: &str| {
            check_dose(
                &report("1.1", vec![acquisition(uid, "400", vec![])]),
                &c,
                false,
            )
        };
        assert_eq!(w.observe(&one("9.1"), &c), None);
        // The same report again: not counted twice.
        assert_eq!(w.observe(&one("9.1"), &c), None);
        assert_eq!(w.accumulated("1.1"), Some(400.0));
        assert_eq!(w.observe(&one("9.2"), &c), None);
        assert_eq!(w.accumulated("1.1"), Some(800.0));
        let f = w.observe(&one("9.3"), &c).expect("1200 > 1000");
        assert_eq!(f.kind, FindingKind::StudyAccumulatedAlert);
        assert!(f.detail.contains("1200"), "{f}");
        assert_eq!(w.observe(&one("9.4"), &c), None, "alerted once");
        // Another study starts from zero.
        let other = check_dose(
            &report("2.2", vec![acquisition("9.9", "400", vec![])]),
            &c,
            false,
        );
        assert_eq!(w.observe(&other, &c), None);
        assert_eq!(w.accumulated("2.2"), Some(400.0));
    }

    #[test]
    fn the_watch_is_bounded_lru() {
        let c = cfg();
        let mut w = DoseWatch::new(3);
        let r = |s: &str| check_dose(&report(s, vec![acquisition("9", "1", vec![])]), &c, false);
        for s in ["a", "b", "c"] {
            w.observe(&r(s), &c);
        }
        w.observe(&r("a"), &c); // a used most recently
        w.observe(&r("d"), &c); // evicts b
        assert_eq!(w.len(), 3);
        assert!(w.accumulated("b").is_none());
        assert!(w.accumulated("a").is_some());
        assert!(w.accumulated("d").is_some());
    }

    #[test]
    fn malformed_srs_are_findings() {
        let c = cfg();
        let mk = |events: Vec<DataSet>| check_dose(&report("1", events), &c, false);
        // A content item without a value type.
        let mut no_vt = num(codes::MEAN_CTDIVOL, "1");
        no_vt.remove(VALUE_TYPE);
        assert_eq!(kinds(&mk(vec![no_vt])), vec![FindingKind::MalformedSr]);
        // Without a concept name.
        let mut no_cn = num(codes::MEAN_CTDIVOL, "1");
        no_cn.remove(CONCEPT_NAME);
        assert_eq!(kinds(&mk(vec![no_cn])), vec![FindingKind::MalformedSr]);
        // A NUM that is not a number, and one with no value at all.
        assert_eq!(
            kinds(&mk(vec![acquisition("9", "lots", vec![])])),
            vec![FindingKind::MalformedSr]
        );
        let empty_mv = item(
            "NUM",
            codes::MEAN_CTDIVOL,
            vec![seq(MEASURED_VALUE_SEQUENCE, vec![DataSet::default()])],
        );
        assert_eq!(kinds(&mk(vec![empty_mv])), vec![FindingKind::MalformedSr]);
        // A NUM with no measured value item: allowed (PS3.3 C.18.1), nothing to judge.
        let no_mv = item("NUM", codes::MEAN_CTDIVOL, vec![]);
        assert_eq!(kinds(&mk(vec![no_mv])), vec![]);
        // CODE without its code.
        let code_item = item("CODE", codes::TARGET_REGION, vec![]);
        assert_eq!(kinds(&mk(vec![code_item])), vec![FindingKind::MalformedSr]);
        // Not a dose report at all.
        let mut other = report("1", vec![]);
        other.put(concept("126000"));
        assert_eq!(
            kinds(&check_dose(&other, &c, false)),
            vec![FindingKind::MalformedSr]
        );
        let mut none = report("1", vec![]);
        none.remove(CONCEPT_NAME);
        assert_eq!(
            kinds(&check_dose(&none, &c, false)),
            vec![FindingKind::MalformedSr]
        );
        // Content Sequence that is not a sequence: no content (nothing to judge, no panic).
        let mut flat = report("1", vec![]);
        flat.put(txt(CONTENT_SEQUENCE, VR::UT, "x"));
        assert_eq!(kinds(&check_dose(&flat, &c, false)), vec![]);
    }

    #[test]
    fn deep_and_wide_trees_are_bounded() {
        let c = cfg();
        let mut deep = num(codes::MEAN_CTDIVOL, "1");
        for _ in 0..MAX_SR_DEPTH + 3 {
            deep = container("113829", vec![deep]);
        }
        let r = check_dose(&report("1", vec![deep]), &c, false);
        assert_eq!(kinds(&r), vec![FindingKind::MalformedSr]);
        assert!(r.findings[0].detail.contains("deeper"));
        let wide: Vec<DataSet> = (0..MAX_SR_ITEMS + 1)
            .map(|_| DataSet::new(vec![txt(REFERENCED_CONTENT_ITEM, VR::UL, "")]))
            .collect();
        let r = check_dose(&report("1", wide), &c, false);
        assert_eq!(kinds(&r), vec![FindingKind::MalformedSr]);
        assert!(r.findings[0].detail.contains("more than"));
    }

    #[test]
    fn pediatric_and_unknown_ages_use_their_values() {
        let c = GuardConfig::default(); // AAPM defaults
        let mut r = report("1", vec![acquisition("9", "55", vec![])]);
        // Adult head at 55 mGy: under 80.
        assert_eq!(kinds(&check_dose(&r, &c, false)), vec![]);
        // A one-year-old's head at 55 mGy: over 50.
        r.put(txt(values::PATIENT_AGE, VR::AS, "012M"));
        assert_eq!(
            kinds(&check_dose(&r, &c, false)),
            vec![FindingKind::DoseNotification]
        );
        // No age: the strictest (pediatric) value.
        r.remove(values::PATIENT_AGE);
        assert_eq!(
            kinds(&check_dose(&r, &c, false)),
            vec![FindingKind::DoseNotification]
        );
    }

    fn phantom(value: &str) -> DataSet {
        item(
            "CODE",
            codes::CTDIW_PHANTOM_TYPE,
            vec![seq(
                CONCEPT_CODE,
                vec![DataSet::new(vec![
                    txt(values::CODE_VALUE, VR::SH, value),
                    txt(values::CODING_SCHEME, VR::SH, "DCM"),
                    txt(values::CODE_MEANING, VR::LO, "IEC Dosimetry Phantom"),
                ])],
            )],
        )
    }

    #[test]
    fn events_are_judged_by_the_limits_of_their_phantom() {
        // The AAPM defaults: a child's torso (5 years) at 20 mGy is under the 16 cm value
        // (25 mGy) and over the 32 cm one (10 mGy).
        let c = GuardConfig::default();
        let child = |events| {
            let mut r = report("1", events);
            r.put(txt(values::BODY_PART_EXAMINED, VR::CS, "CHEST"));
            r.put(txt(values::PATIENT_AGE, VR::AS, "005Y"));
            r
        };
        let r = check_dose(
            &child(vec![acquisition("1", "20", vec![phantom("113690")])]),
            &c,
            false,
        );
        assert_eq!(kinds(&r), vec![]);
        assert_eq!(r.events[0].phantom, Some(Phantom::Head16));
        let r = check_dose(
            &child(vec![acquisition("1", "20", vec![phantom("113691")])]),
            &c,
            false,
        );
        assert_eq!(kinds(&r), vec![FindingKind::DoseNotification]);
        // Not stated: the strictest of both.
        let r = check_dose(&child(vec![acquisition("1", "20", vec![])]), &c, false);
        assert_eq!(kinds(&r), vec![FindingKind::DoseNotification]);
        // An adult head (16 cm limits only) reported in the 32 cm phantom: not compared, said.
        let r = check_dose(
            &report("2", vec![acquisition("2", "20", vec![phantom("113691")])]),
            &c,
            false,
        );
        assert_eq!(kinds(&r), vec![FindingKind::PhantomMismatch]);
        assert!(r.findings[0].detail.contains("32 cm"), "{:?}", r.findings);
    }
}
