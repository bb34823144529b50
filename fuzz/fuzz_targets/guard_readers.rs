//! The scan-protocol and dose guard's readers (radguard-guard) over any data set the one
//! grammar builds: the protocol reader and its limits, the Protocol Approval reader, the CT
//! Radiation Dose SR content-tree walker and the study accumulator, the worklist answer
//! checks (both actions). None may panic; a cleaned worklist answer, checked again, is never
//! refused for a control character or a disallowed protocol code it was cleaned of.
//!
//! Input layout: byte 0 selects the encoding (0 explicit LE, 1 implicit LE, 2 explicit BE); the
//! rest is the data set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::limits::Limits;
use radguard_dicom::tree::{parse_encoded, TreeOptions};
use radguard_dicom::ts::Encoding;
use radguard_guard::dose::{check_dose, DoseWatch};
use radguard_guard::protocol::{check_protocol, Approvals};
use radguard_guard::worklist::check_worklist;
use radguard_guard::{classify, FindingKind, GuardConfig, WorklistAction};

const LIMITS: Limits = Limits {
    max_elements: 1 << 14,
    ..Limits::GATEWAY
};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let enc = match sel % 3 {
        0 => Encoding::ExplicitLittle,
        1 => Encoding::ImplicitLittle,
        _ => Encoding::ExplicitBig,
    };
    let be = enc == Encoding::ExplicitBig;
    let Ok(ds) = parse_encoded(rest, enc, LIMITS, TreeOptions::default()) else {
        return;
    };
    let mut cfg = GuardConfig {
        approvers: vec!["Curie^Marie".into()],
        worklist_protocols: vec!["99RAD:CTHEAD".into()],
        ..GuardConfig::default()
    };
    let _ = classify(&ds);
    let mut approvals = Approvals::new();
    let _ = approvals.add(&ds);
    // A fixed clock (2026-01-01T12:00Z): a run is reproducible.
    let _ = check_protocol(&ds, &cfg, &approvals, be, 1_767_268_800);
    let report = check_dose(&ds, &cfg, be);
    let mut watch = DoseWatch::new(2);
    let _ = watch.observe(&report, &cfg);
    let _ = watch.observe(&report, &cfg);
    let mut refused = ds.clone();
    let _ = check_worklist(&mut refused, &cfg);
    cfg.worklist_action = WorklistAction::Clean;
    let mut cleaned = ds;
    let _ = check_worklist(&mut cleaned, &cfg);
    cfg.worklist_action = WorklistAction::Refuse;
    let again = check_worklist(&mut cleaned, &cfg);
    for f in &again.findings {
        assert!(
            !matches!(
                f.kind,
                FindingKind::ControlCharacter | FindingKind::ProtocolCodeNotAllowed
            ),
            "cleaned answer still has {f}"
        );
    }
});
