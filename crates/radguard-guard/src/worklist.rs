//! Modality Worklist answers (the identifiers of C-FIND-RSP for 1.2.840.10008.5.1.4.31) on their
//! way to a modality: what the modality will show and scan from. Checked:
//! - control characters (PS3.5 §6.1.3: only ESC in every text VR; CR, LF, FF and TAB also in
//!   LT, ST, UT): a console or a downstream parser that takes them as commands or line breaks;
//! - values longer than their VR allows (PS3.5 Table 6.2-1): the classic overflow of fixed
//!   buffers in modality software;
//! - values not of their VR: an element whose explicit VR is not the dictionary's, or whose
//!   value does not read as its VR (DA, TM, UI, AS, IS, DS, CS);
//! - Scheduled Protocol Code Sequence (0040,0008) codes outside `guard.worklist_protocols`.
//!
//! `worklist_action = "refuse"` refuses the answer; `"clean"` removes what is wrong (control
//! characters dropped, values cut to their length, values not of their VR emptied, codes not
//! allowed removed) and the answer goes on.

use dicom_core::{Tag, VR};
use radguard_dicom::tokens::implicit_vr;
use radguard_dicom::tree::{is_text_vr, DataSet, Element, Value};

use crate::config::{GuardConfig, WorklistAction};
use crate::values::{self, items};
use crate::{Finding, FindingKind, STATUS_WORKLIST_REFUSED};

/// Deepest nesting followed (a worklist answer nests 2–3 deep).
pub const MAX_DEPTH: usize = 16;

/// What happens to a worklist answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorklistDecision {
    Pass,
    /// Cleaned in place; relay the cleaned answer.
    Cleaned,
    Refuse {
        status: u16,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorklistReport {
    pub findings: Vec<Finding>,
    pub decision: WorklistDecision,
}

/// The longest value of a VR in bytes (PS3.5 Table 6.2-1); PN per component group.
fn max_len(vr: VR) -> Option<usize> {
    Some(match vr {
        VR::AE => 16,
        VR::AS => 4,
        VR::CS => 16,
        VR::DA => 8,
        VR::DS => 16,
        VR::DT => 26,
        VR::IS => 12,
        VR::LO => 64,
        VR::LT => 10240,
        VR::PN => 64,
        VR::SH => 16,
        VR::ST => 1024,
        VR::TM => 14,
        VR::UI => 64,
        _ => return None,
    })
}

fn control_allowed(vr: VR, b: u8) -> bool {
    b == 0x1B
        || (matches!(vr, VR::LT | VR::ST | VR::UT) && matches!(b, b'\r' | b'\n' | 0x0C | b'\t'))
}

fn is_control(vr: VR, b: u8) -> bool {
    (b < 0x20 || b == 0x7F) && !control_allowed(vr, b)
}

/// Whether one value (no backslash) reads as its VR.
fn value_ok(vr: VR, v: &str) -> bool {
    let v = v.trim_matches(' ');
    if v.is_empty() {
        return true;
    }
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match vr {
        VR::DA => v.len() == 8 && digits(v),
        VR::TM => {
            let (hms, frac) = v.split_once('.').unwrap_or((v, ""));
            matches!(hms.len(), 2 | 4 | 6) && digits(hms) && digits(frac) && frac.len() <= 6
        }
        VR::UI => {
            v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && !v.starts_with('.')
                && !v.ends_with('.')
                && !v.contains("..")
        }
        VR::AS => {
            v.len() == 4
                && v.get(..3).is_some_and(digits)
                && matches!(v.get(3..), Some("D" | "W" | "M" | "Y"))
        }
        VR::IS => {
            !v.trim_start_matches(['+', '-']).is_empty() && digits(v.trim_start_matches(['+', '-']))
        }
        VR::DS => v.parse::<f64>().is_ok_and(f64::is_finite),
        VR::CS => v
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'_'),
        _ => true,
    }
}

struct Checker<'a> {
    action: WorklistAction,
    codes: &'a [(String, String)],
    findings: Vec<Finding>,
}

fn tag_name(t: Tag) -> String {
    radguard_dicom::tree::tag_str(t)
}

impl Checker<'_> {
    fn clean(&self) -> bool {
        self.action == WorklistAction::Clean
    }

    fn element(&mut self, e: &mut Element) {
        let vr = e.vr;
        let tag = e.tag;
        let Value::Bytes(b) = &mut e.value else {
            return;
        };
        if !is_text_vr(vr) {
            return;
        }
        let dict = implicit_vr(tag);
        if dict != VR::UN && vr != VR::UN && dict != vr && tag.group() & 1 == 0 {
            self.findings.push(Finding::new(
                FindingKind::WrongVr,
                format!(
                    "{} has VR {vr:?}, the dictionary's is {dict:?}",
                    tag_name(tag)
                ),
            ));
            if self.clean() {
                b.clear();
            }
            return;
        }
        // UI values are padded with one NUL (PS3.5 §6.2): padding, not content.
        let body = if vr == VR::UI {
            b.len() - b.iter().rev().take_while(|&&c| c == 0).count()
        } else {
            b.len()
        };
        if b.iter().take(body).any(|&c| is_control(vr, c)) {
            self.findings.push(Finding::new(
                FindingKind::ControlCharacter,
                format!("{} ({vr:?}) holds a control character", tag_name(tag)),
            ));
            if self.clean() {
                b.truncate(body);
                b.retain(|&c| !is_control(vr, c));
            }
        }
        let multi = !matches!(vr, VR::LT | VR::ST | VR::UT | VR::UR);
        if let Some(max) = max_len(vr) {
            let text = String::from_utf8_lossy(b).into_owned();
            let values: Vec<&str> = if multi {
                text.split('\\').collect()
            } else {
                vec![text.as_str()]
            };
            let too_long = |v: &str| {
                let v = v.trim_end_matches(['\0', ' ']);
                if vr == VR::PN {
                    v.split('=').any(|g| g.len() > max)
                } else {
                    v.len() > max
                }
            };
            if values.iter().any(|v| too_long(v)) {
                self.findings.push(Finding::new(
                    FindingKind::OverLongValue,
                    format!("{} ({vr:?}) has a value over {max} bytes", tag_name(tag)),
                ));
                if self.clean() {
                    let cut: Vec<String> = values
                        .iter()
                        .map(|v| {
                            let v = v.trim_end_matches(['\0', ' ']);
                            let mut end = v.len().min(max);
                            while !v.is_char_boundary(end) {
                                end -= 1;
                            }
                            v.get(..end).unwrap_or_default().to_string()
                        })
                        .collect();
                    *b = cut.join("\\").into_bytes();
                }
            }
        }
        let text = String::from_utf8_lossy(b).into_owned();
        let text = text.trim_end_matches(['\0', ' ']);
        if text.split('\\').any(|v| !value_ok(vr, v)) {
            self.findings.push(Finding::new(
                FindingKind::WrongVr,
                format!("{} does not read as {vr:?}", tag_name(tag)),
            ));
            if self.clean() {
                b.clear();
            }
        }
        if self.clean() && b.len() % 2 == 1 {
            // Even length (PS3.5 §7.1.1), padded as the VR pads.
            b.push(if vr == VR::UI { 0 } else { b' ' });
        }
    }

    fn protocol_codes(&mut self, sps: &mut DataSet) {
        if self.codes.is_empty() {
            return;
        }
        let Some(seq) = sps.get_mut(values::SCHEDULED_PROTOCOL_CODE_SEQUENCE) else {
            return;
        };
        let Value::Items(list) = &mut seq.value else {
            return;
        };
        let codes = self.codes;
        let allowed = |item: &DataSet| {
            let scheme = values::text(item, values::CODING_SCHEME).unwrap_or_default();
            let value = values::text(item, values::CODE_VALUE).unwrap_or_default();
            codes.iter().any(|(s, c)| *s == scheme && *c == value)
        };
        let mut bad = Vec::new();
        for item in list.iter() {
            if !allowed(item) {
                bad.push(format!(
                    "{}:{}",
                    values::text(item, values::CODING_SCHEME).unwrap_or_default(),
                    values::text(item, values::CODE_VALUE).unwrap_or_default()
                ));
            }
        }
        for b in bad {
            self.findings.push(Finding::new(
                FindingKind::ProtocolCodeNotAllowed,
                format!("Scheduled Protocol Code {b} is not in guard.worklist_protocols"),
            ));
        }
        if self.clean() {
            list.retain(allowed);
        }
    }

    fn data_set(&mut self, ds: &mut DataSet, depth: usize) {
        if depth > MAX_DEPTH {
            self.findings.push(Finding::new(
                FindingKind::WrongVr,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
            if self.clean() {
                ds.elements.clear();
            }
            return;
        }
        for e in ds.elements.iter_mut() {
            if let Value::Items(list) = &mut e.value {
                let is_sps = e.tag == values::SPS_SEQUENCE;
                for item in list.iter_mut() {
                    self.data_set(item, depth + 1);
                    // After the item's own values: the codes are judged as they will be sent.
                    if is_sps {
                        self.protocol_codes(item);
                    }
                }
            } else {
                self.element(e);
            }
        }
    }
}

/// Checks a worklist answer (cleaning it in place under `worklist_action = "clean"`).
pub fn check_worklist(ds: &mut DataSet, cfg: &GuardConfig) -> WorklistReport {
    let codes = cfg.worklist_codes();
    let mut c = Checker {
        action: cfg.worklist_action,
        codes: &codes,
        findings: Vec::new(),
    };
    c.data_set(ds, 0);
    let decision = if c.findings.is_empty() {
        WorklistDecision::Pass
    } else if cfg.worklist_action == WorklistAction::Clean {
        WorklistDecision::Cleaned
    } else {
        WorklistDecision::Refuse {
            status: STATUS_WORKLIST_REFUSED,
        }
    };
    WorklistReport {
        findings: c.findings,
        decision,
    }
}

/// The Scheduled Protocol codes of an answer, as `SCHEME:CODE` (for logs and tests).
pub fn scheduled_protocol_codes(ds: &DataSet) -> Vec<String> {
    items(ds, values::SPS_SEQUENCE)
        .iter()
        .flat_map(|sps| items(sps, values::SCHEDULED_PROTOCOL_CODE_SEQUENCE))
        .map(|i| {
            format!(
                "{}:{}",
                values::text(i, values::CODING_SCHEME).unwrap_or_default(),
                values::text(i, values::CODE_VALUE).unwrap_or_default()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(tag: Tag, vr: VR, s: &str) -> Element {
        Element::text(tag, vr, s)
    }
    fn code_item(scheme: &str, value: &str) -> DataSet {
        DataSet::new(vec![
            txt(values::CODE_VALUE, VR::SH, value),
            txt(values::CODING_SCHEME, VR::SH, scheme),
            txt(values::CODE_MEANING, VR::LO, "Head"),
        ])
    }
    fn answer(name: &str, sps_extra: Vec<Element>, codes: Vec<DataSet>) -> DataSet {
        let mut sps = vec![
            txt(Tag(0x0008, 0x0060), VR::CS, "CT"),
            txt(Tag(0x0040, 0x0001), VR::AE, "CT1"),
            txt(Tag(0x0040, 0x0002), VR::DA, "20261207"),
            txt(Tag(0x0040, 0x0003), VR::TM, "093000"),
            Element::new(
                values::SCHEDULED_PROTOCOL_CODE_SEQUENCE,
                VR::SQ,
                Value::Items(codes),
            ),
        ];
        sps.extend(sps_extra);
        sps.sort_by_key(|e| e.tag);
        DataSet::new(vec![
            txt(values::PATIENT_AGE, VR::AS, "045Y"),
            txt(Tag(0x0010, 0x0010), VR::PN, name),
            txt(Tag(0x0010, 0x0020), VR::LO, "P1"),
            txt(values::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            Element::new(
                values::SPS_SEQUENCE,
                VR::SQ,
                Value::Items(vec![DataSet::new(sps)]),
            ),
        ])
    }
    fn cfg(action: WorklistAction) -> GuardConfig {
        GuardConfig {
            worklist_protocols: vec!["99RAD:CTHEAD".into()],
            worklist_action: action,
            ..GuardConfig::default()
        }
    }
    fn kinds(r: &WorklistReport) -> Vec<FindingKind> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_clean_answer_passes() {
        let mut ds = answer("Doe^John", vec![], vec![code_item("99RAD", "CTHEAD")]);
        let before = ds.clone();
        let r = check_worklist(&mut ds, &cfg(WorklistAction::Refuse));
        assert_eq!(r.findings, vec![]);
        assert_eq!(r.decision, WorklistDecision::Pass);
        assert_eq!(ds, before);
        // No allowed list: codes are not checked.
        let mut ds = answer("Doe^John", vec![], vec![code_item("X", "Y")]);
        let r = check_worklist(&mut ds, &GuardConfig::default());
        assert_eq!(r.findings, vec![]);
    }

    #[test]
    fn each_check_refuses() {
        let ok = || vec![code_item("99RAD", "CTHEAD")];
        let cases: Vec<(DataSet, FindingKind)> = vec![
            (
                answer("Doe^John\x07", vec![], ok()),
                FindingKind::ControlCharacter,
            ),
            (
                answer("Doe\r\nJohn", vec![], ok()),
                FindingKind::ControlCharacter,
            ),
            (
                answer(&"A".repeat(65), vec![], ok()),
                FindingKind::OverLongValue,
            ),
            (
                answer(
                    "Doe",
                    vec![txt(Tag(0x0040, 0x0001), VR::AE, "AETITLE-TOO-LONG-X")],
                    ok(),
                ),
                FindingKind::OverLongValue,
            ),
            (
                answer(
                    "Doe",
                    vec![txt(Tag(0x0040, 0x0002), VR::DA, "2026-1-7")],
                    ok(),
                ),
                FindingKind::WrongVr,
            ),
            (
                answer(
                    "Doe",
                    vec![txt(Tag(0x0040, 0x0002), VR::LO, "20261207")],
                    ok(),
                ),
                FindingKind::WrongVr,
            ),
            (
                answer("Doe", vec![txt(Tag(0x0008, 0x0060), VR::CS, "ct;rm")], ok()),
                FindingKind::WrongVr,
            ),
            (
                answer("Doe", vec![], vec![code_item("99RAD", "CTPERF")]),
                FindingKind::ProtocolCodeNotAllowed,
            ),
        ];
        for (mut ds, kind) in cases {
            let r = check_worklist(&mut ds, &cfg(WorklistAction::Refuse));
            assert_eq!(kinds(&r), vec![kind], "{:?}", r.findings);
            assert_eq!(
                r.decision,
                WorklistDecision::Refuse {
                    status: STATUS_WORKLIST_REFUSED
                }
            );
        }
        // Text VRs may hold line breaks; PN may have 64 bytes per component group.
        let mut ds = answer(
            &format!("{}={}", "A".repeat(64), "B".repeat(64)),
            vec![txt(Tag(0x0040, 0x0400), VR::LT, "line one\r\nline two")],
            ok(),
        );
        assert_eq!(
            check_worklist(&mut ds, &cfg(WorklistAction::Refuse)).findings,
            vec![]
        );
    }

    #[test]
    fn clean_removes_what_is_wrong() {
        let mut ds = answer(
            &format!("Doe^John\x1b$B\x00{}", "A".repeat(70)),
            vec![txt(Tag(0x0040, 0x0002), VR::DA, "notadate")],
            vec![code_item("99RAD", "CTHEAD"), code_item("99RAD", "CTPERF")],
        );
        let r = check_worklist(&mut ds, &cfg(WorklistAction::Clean));
        assert_eq!(r.decision, WorklistDecision::Cleaned);
        assert_eq!(
            kinds(&r),
            vec![
                FindingKind::ControlCharacter,
                FindingKind::OverLongValue,
                FindingKind::WrongVr,
                FindingKind::ProtocolCodeNotAllowed,
            ]
        );
        // Cleaned: a second check finds nothing.
        let again = check_worklist(&mut ds, &cfg(WorklistAction::Refuse));
        assert_eq!(again.findings, vec![], "{:?}", again.findings);
        assert_eq!(
            scheduled_protocol_codes(&ds),
            vec!["99RAD:CTHEAD".to_string()]
        );
        let name = ds.text(Tag(0x0010, 0x0010)).unwrap();
        assert!(name.len() <= 64 && name.contains(&0x1B), "ESC kept");
    }
}
