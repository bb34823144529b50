//! The residual-PHI check, usable on any tool's output: every element that the profile
//! should have removed or emptied and did not, private attributes that should be gone,
//! missing de-identification markers, original UIDs still present, and free-text elements
//! (LO, LT, ST, UT, PN, SH, UC) whose value contains a patient's name, ID or birth date.

use std::collections::HashSet;

use dicom_core::{Tag, VR};

use crate::clean::{IdentifierKind, Identifiers};
use crate::codec::{tag_str, DataSet, Element, Value};
use crate::profile::{is_private, DeidOption, Op, Profile, ProfileError, ProfileName};
use crate::table::{Action, Table};
use crate::transform::{
    DEID_METHOD_CODE_SEQUENCE, PATIENT_BIRTH_DATE, PATIENT_ID, PATIENT_IDENTITY_REMOVED,
    PATIENT_NAME,
};

/// What kind of residue was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// An attribute the profile removes (X) is present.
    NotRemoved,
    /// An attribute the profile empties (Z, or X/Z) has a value.
    NotEmptied,
    /// A private attribute that the profile removes is present.
    PrivateAttribute,
    /// A UID of the originals is still present.
    OriginalUid,
    /// A free-text value contains a patient's name, ID or birth date.
    IdentifierInText,
    /// Patient Identity Removed (0012,0062) is not YES.
    NotMarked,
}

/// One residue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub path: String,
    pub name: String,
    pub detail: String,
}

/// What the check compares against.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Names, IDs and birth dates of the patients in the originals.
    pub identifiers: Identifiers,
    /// UIDs of the originals (from rows with U), which must not survive.
    pub uids: HashSet<String>,
}

impl Known {
    /// Learn from an original data set.
    pub fn learn(&mut self, original: &DataSet, profile: &Profile) {
        self.identifiers
            .extend(&Identifiers::patient_core(original));
        collect_uids(original, profile, &mut self.uids);
    }
}

fn collect_uids(ds: &DataSet, profile: &Profile, out: &mut HashSet<String>) {
    for e in &ds.elements {
        match &e.value {
            Value::Items(items) => {
                for i in items {
                    collect_uids(i, profile, out);
                }
            }
            Value::Bytes(_)
                if e.vr == VR::UI
                    && !is_private(e.tag)
                    && profile.lookup(e.tag).is_some_and(|r| r.op == Op::Uid) =>
            {
                if let Some(v) = e.text_value() {
                    for u in v.split(|&b| b == b'\\') {
                        let u = String::from_utf8_lossy(u).trim().to_string();
                        if !u.is_empty() && !u.starts_with("1.2.840.10008.") {
                            out.insert(u);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The profile a file claims in its De-identification Method Code Sequence, if any.
pub fn claimed_profile(ds: &DataSet) -> Option<Result<Profile, ProfileError>> {
    let Some(Element {
        value: Value::Items(items),
        ..
    }) = ds.get(DEID_METHOD_CODE_SEQUENCE)
    else {
        return None;
    };
    let mut opts = Vec::new();
    let mut basic = false;
    for it in items {
        let code = it
            .text(Tag(0x0008, 0x0100))
            .map(|v| String::from_utf8_lossy(v).trim().to_string());
        let scheme = it
            .text(Tag(0x0008, 0x0102))
            .map(|v| String::from_utf8_lossy(v).trim().to_string());
        if scheme.as_deref() != Some("DCM") {
            continue;
        }
        match code.as_deref() {
            Some("113100") => basic = true,
            Some(c) => {
                if let Some(o) = DeidOption::from_code(c) {
                    // Pixel options are claims about pixels; the check looks at attributes.
                    if !matches!(
                        o,
                        DeidOption::CleanPixelData | DeidOption::CleanRecognizableVisualFeatures
                    ) {
                        opts.push(o);
                    }
                }
            }
            None => {}
        }
    }
    basic.then(|| Profile::new(ProfileName::Basic, opts))
}

const FREE_TEXT: [VR; 7] = [VR::LO, VR::LT, VR::ST, VR::UT, VR::PN, VR::SH, VR::UC];

/// Coded values (not free text) in SH/LO: Code Value, Coding Scheme Designator, Coding
/// Scheme Version, Long Code Value, URN Code Value.
const CODED: [Tag; 5] = [
    Tag(0x0008, 0x0100),
    Tag(0x0008, 0x0102),
    Tag(0x0008, 0x0103),
    Tag(0x0008, 0x0119),
    Tag(0x0008, 0x0120),
];

/// Check one data set. With `known` from the originals the free text and UIDs are compared
/// against them; without, against the file's own patient name, ID and birth date (found in
/// other elements than those three).
pub fn check_dataset(ds: &DataSet, profile: &Profile, known: Option<&Known>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let own;
    let (ids, uids) = match known {
        Some(k) => (&k.identifiers, Some(&k.uids)),
        None => {
            own = Identifiers::patient_core(ds);
            (&own, None)
        }
    };
    let marked = ds
        .text(PATIENT_IDENTITY_REMOVED)
        .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"YES"));
    if !marked {
        findings.push(Finding {
            kind: FindingKind::NotMarked,
            path: tag_str(PATIENT_IDENTITY_REMOVED),
            name: "PatientIdentityRemoved".into(),
            detail: "Patient Identity Removed is not YES".into(),
        });
    }
    walk(
        ds,
        "",
        0,
        profile,
        ids,
        uids,
        known.is_some(),
        &mut findings,
    );
    findings
}

#[allow(clippy::too_many_arguments)]
fn walk(
    ds: &DataSet,
    path: &str,
    depth: usize,
    profile: &Profile,
    ids: &Identifiers,
    uids: Option<&HashSet<String>>,
    against_originals: bool,
    out: &mut Vec<Finding>,
) {
    let table = Table::standard();
    let retain_private = profile.has(DeidOption::RetainSafePrivate);
    for e in &ds.elements {
        let p = format!("{path}{}", tag_str(e.tag));
        let name = table.row(e.tag).map(|r| r.name.clone()).unwrap_or_default();
        if is_private(e.tag) {
            let creator = (0x0010..=0x00FF).contains(&e.tag.element());
            if !creator && e.tag.element() > 0x00FF {
                let safe = retain_private
                    && ds
                        .get(Tag(e.tag.group(), e.tag.element() >> 8))
                        .and_then(|c| c.text_value())
                        .is_some_and(|c| {
                            profile.safe_private().contains(
                                String::from_utf8_lossy(c).trim(),
                                e.tag.group(),
                                (e.tag.element() & 0xFF) as u8,
                            )
                        });
                if !safe {
                    out.push(Finding {
                        kind: FindingKind::PrivateAttribute,
                        path: p.clone(),
                        name: String::new(),
                        detail: "private attribute not on the safe list".into(),
                    });
                    continue;
                }
            }
        } else if let Some(r) = profile.lookup(e.tag) {
            // Judge only what a reader can judge without the original: presence for X,
            // emptiness for Z and X/Z. Rows that allow a dummy (D, Z/D, X/D, X/Z/D) are
            // judged by the identifier match below.
            match r.action {
                Action::X => {
                    out.push(Finding {
                        kind: FindingKind::NotRemoved,
                        path: p.clone(),
                        name: name.clone(),
                        detail: "the profile removes this attribute".into(),
                    });
                }
                Action::Z | Action::XZ if !e.is_empty() => out.push(Finding {
                    kind: FindingKind::NotEmptied,
                    path: p.clone(),
                    name: name.clone(),
                    detail: format!("the profile empties this attribute ({})", r.action),
                }),
                _ => {}
            }
        }
        match &e.value {
            Value::Items(items) => {
                for (i, it) in items.iter().enumerate() {
                    walk(
                        it,
                        &format!("{p}[{i}]"),
                        depth + 1,
                        profile,
                        ids,
                        uids,
                        against_originals,
                        out,
                    );
                }
            }
            Value::Bytes(_) => {
                let v = e.text_value().unwrap_or_default();
                if e.vr == VR::UI {
                    if let Some(uids) = uids {
                        for u in v.split(|&b| b == b'\\') {
                            let u = String::from_utf8_lossy(u).trim().to_string();
                            if uids.contains(&u) {
                                out.push(Finding {
                                    kind: FindingKind::OriginalUid,
                                    path: p.clone(),
                                    name: name.clone(),
                                    detail: "a UID of the originals is still present".into(),
                                });
                                break;
                            }
                        }
                    }
                }
                // The file's own name/ID/birth date elements are judged by their rows.
                let own_source = !against_originals
                    && depth == 0
                    && [PATIENT_NAME, PATIENT_ID, PATIENT_BIRTH_DATE].contains(&e.tag);
                if FREE_TEXT.contains(&e.vr) && !own_source && !CODED.contains(&e.tag) {
                    if let Some((_, _, kind)) = ids.find(v) {
                        let what = match kind {
                            IdentifierKind::Name => "the patient's name",
                            IdentifierKind::Id => "the patient's ID",
                            IdentifierKind::BirthDate => "the patient's birth date",
                        };
                        out.push(Finding {
                            kind: FindingKind::IdentifierInText,
                            path: p.clone(),
                            name: name.clone(),
                            detail: format!("{:?} text contains {what}", e.vr),
                        });
                    }
                }
            }
            Value::Fragments(_) => {}
        }
    }
}
