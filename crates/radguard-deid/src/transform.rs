//! The transform: a resolved [`Profile`] and a [`SiteKey`] applied to a data set, at every
//! depth of nested sequences, producing a [`Report`] of what was done (tags and paths only,
//! never the original values).

use std::collections::HashSet;

use dicom_core::{Tag, VR};

use crate::clean::{dummy_value, empty_value, shift_da, shift_dt, Identifiers};
use crate::codec::{
    is_text_vr, pad, tag_str, trim_padding, DataSet, Element, EncodeError, ParseError, Value,
};
use crate::keys::SiteKey;
use crate::profile::{is_private, BurnedInPolicy, DeidOption, Op, Profile, Resolved};
use crate::table::Table;

pub const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
pub const PATIENT_NAME: Tag = Tag(0x0010, 0x0010);
pub const PATIENT_BIRTH_DATE: Tag = Tag(0x0010, 0x0030);
pub const SOP_CLASS_UID: Tag = Tag(0x0008, 0x0016);
pub const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
pub const MODALITY: Tag = Tag(0x0008, 0x0060);
pub const IMAGE_TYPE: Tag = Tag(0x0008, 0x0008);
pub const BURNED_IN_ANNOTATION: Tag = Tag(0x0028, 0x0301);
pub const PATIENT_IDENTITY_REMOVED: Tag = Tag(0x0012, 0x0062);
pub const DEID_METHOD: Tag = Tag(0x0012, 0x0063);
pub const DEID_METHOD_CODE_SEQUENCE: Tag = Tag(0x0012, 0x0064);
pub const LONGITUDINAL_TEMPORAL_MODIFIED: Tag = Tag(0x0028, 0x0303);
pub const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);

/// SOP classes whose images usually carry text burned into the pixels: secondary capture
/// (screen saves, scanned documents) and ultrasound.
pub const BURNS_TEXT_SOP_CLASSES: [(&str, &str); 10] = [
    ("1.2.840.10008.5.1.4.1.1.7", "Secondary Capture Image"),
    (
        "1.2.840.10008.5.1.4.1.1.7.1",
        "Multi-frame Single Bit Secondary Capture Image",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.4",
        "Multi-frame True Color Secondary Capture Image",
    ),
    ("1.2.840.10008.5.1.4.1.1.6.1", "Ultrasound Image"),
    ("1.2.840.10008.5.1.4.1.1.6.2", "Enhanced US Volume"),
    (
        "1.2.840.10008.5.1.4.1.1.3.1",
        "Ultrasound Multi-frame Image",
    ),
    ("1.2.840.10008.5.1.4.1.1.6", "Ultrasound Image (Retired)"),
    (
        "1.2.840.10008.5.1.4.1.1.3",
        "Ultrasound Multi-frame Image (Retired)",
    ),
];

/// Why an instance was not de-identified. Nothing partial is ever produced on error.
#[derive(Debug, thiserror::Error)]
pub enum DeidError {
    #[error("refused: {reason}; pixel data may hold burned-in text and Clean Pixel Data is not implemented (allow it with burned-in = allow)")]
    BurnedIn { reason: String },
    #[error("cannot parse the data set: {0}")]
    Parse(#[from] ParseError),
    #[error("cannot encode the de-identified data set: {0}")]
    Encode(#[from] EncodeError),
    #[error("the elements before Pixel Data exceed the {cap}-byte limit")]
    HeadTooLarge { cap: usize },
    #[error("the elements after Pixel Data exceed the {cap}-byte limit")]
    TailTooLarge { cap: usize },
    #[error("transfer syntax {0} cannot be de-identified in a stream")]
    UnsupportedTransferSyntax(String),
    #[error("the data set ended inside the pixel data")]
    TruncatedPixelData,
    #[error("malformed encapsulated pixel data: {0}")]
    BadFragments(String),
    #[error("the stream already failed")]
    StreamFailed,
}

impl DeidError {
    /// The C-STORE failure status a gateway should answer with: 0124H Refused: Not
    /// authorized (burned-in annotation), A700H Out of resources (too large), C000H Cannot
    /// understand (everything that is wrong with the data set).
    pub fn dimse_status(&self) -> u16 {
        match self {
            DeidError::BurnedIn { .. } => 0x0124,
            DeidError::HeadTooLarge { .. } | DeidError::TailTooLarge { .. } => 0xA700,
            _ => 0xC000,
        }
    }

    /// Whether the sender's data is at fault (as opposed to a local limit or policy).
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, DeidError::BurnedIn { .. })
    }
}

/// One thing done to one element.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Where: `(0008,1140)[0](0008,1155)`.
    pub path: String,
    /// The attribute keyword from the table (empty for attributes the table does not list).
    pub name: String,
    pub op: Op,
    /// The table code that decided it (`X`, `Z/D`, ...) or `-` for rules outside the table.
    pub code: String,
    /// The option column that overrode the Basic column, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What was done to one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub profile: String,
    pub options: Vec<String>,
    pub table_edition: String,
    pub key_id: String,
    pub changes: Vec<Change>,
    pub private_removed: usize,
    pub private_kept: usize,
    pub uids_replaced: usize,
    pub dates_shifted: usize,
    pub text_identifiers_scrubbed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_shift_days: Option<i32>,
    pub patient_id_pseudonymised: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_class_uid: Option<String>,
    /// The SOP Instance UID after de-identification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    /// Set when burned-in annotation was let through by policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burned_in_allowed: Option<String>,
}

/// A profile bound to a site key: the thing that de-identifies.
#[derive(Debug, Clone)]
pub struct Deidentifier {
    profile: Profile,
    key: SiteKey,
}

/// Per-instance state kept between the head and the tail of a streamed data set.
#[derive(Debug, Clone)]
pub struct Session {
    ids: Identifiers,
    date_offset: i32,
    report: Report,
}

impl Session {
    pub fn report(&self) -> &Report {
        &self.report
    }

    pub fn into_report(self) -> Report {
        self.report
    }
}

impl Deidentifier {
    /// A site key is required: there is no way to de-identify without one.
    pub fn new(profile: Profile, key: SiteKey) -> Deidentifier {
        Deidentifier { profile, key }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The UID that replaces `uid` under this profile (unchanged with Retain UIDs, and for
    /// UIDs defined by the standard). Use it to rewrite the C-STORE command's Affected SOP
    /// Instance UID so that it matches the de-identified data set.
    pub fn map_uid(&self, uid: &str) -> String {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let r = self.profile.lookup(SOP_INSTANCE_UID);
        if r.is_some_and(|r| r.op == Op::Keep) || uid.starts_with("1.2.840.10008.") {
            uid.to_string()
        } else {
            self.key.uid(uid)
        }
    }

    /// De-identify a whole data set in place.
    pub fn transform(&self, ds: &mut DataSet) -> Result<Report, DeidError> {
        let mut s = self.begin(ds)?;
        self.apply_head(&mut s, ds);
        Ok(s.into_report())
    }

    /// Start an instance: check burned-in annotation, collect the identifiers the text
    /// cleaner looks for, and derive the per-patient date offset. `head` is the data set
    /// (or its elements before Pixel Data).
    pub fn begin(&self, head: &DataSet) -> Result<Session, DeidError> {
        let burned = burned_in_reason(head);
        let mut report = Report {
            profile: "basic".into(),
            options: self
                .profile
                .options()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
            table_edition: Table::standard().edition.clone(),
            key_id: self.key.id(),
            sop_class_uid: head
                .text(SOP_CLASS_UID)
                .map(|v| String::from_utf8_lossy(v).into_owned()),
            ..Report::default()
        };
        if let Some(reason) = burned {
            match self.profile.burned_in() {
                BurnedInPolicy::Refuse => return Err(DeidError::BurnedIn { reason }),
                BurnedInPolicy::Allow => report.burned_in_allowed = Some(reason),
            }
        }
        let ids = Identifiers::collect(head);
        let patient: Vec<u8> = match head.text(PATIENT_ID) {
            Some(id) if !id.is_empty() => id.to_vec(),
            _ => [
                head.text(PATIENT_NAME).unwrap_or_default(),
                b"\\",
                head.text(PATIENT_BIRTH_DATE).unwrap_or_default(),
            ]
            .concat(),
        };
        let date_offset = self.key.date_offset_days(&patient);
        if self.profile.has(DeidOption::RetainLongModifiedDates) {
            report.date_shift_days = Some(date_offset);
        }
        Ok(Session {
            ids,
            date_offset,
            report,
        })
    }

    /// Transform the head (everything before Pixel Data, or the whole data set) and add the
    /// de-identification markers.
    pub fn apply_head(&self, s: &mut Session, ds: &mut DataSet) {
        self.walk(s, ds, "", false);
        self.add_markers(ds);
        s.report.sop_instance_uid = ds
            .text(SOP_INSTANCE_UID)
            .map(|v| String::from_utf8_lossy(v).into_owned());
    }

    /// Transform elements that follow Pixel Data (no markers are added there).
    pub fn apply_tail(&self, s: &mut Session, ds: &mut DataSet) {
        self.walk(s, ds, "", false);
    }

    fn add_markers(&self, ds: &mut DataSet) {
        ds.put(Element::text(PATIENT_IDENTITY_REMOVED, VR::CS, "YES"));
        let codes = self.profile.method_codes();
        let meanings: Vec<&str> = codes.iter().map(|(_, m)| *m).collect();
        ds.put(Element::text(DEID_METHOD, VR::LO, &meanings.join("\\")));
        let items = codes
            .iter()
            .map(|(code, meaning)| {
                DataSet::new(vec![
                    Element::text(Tag(0x0008, 0x0100), VR::SH, code),
                    Element::text(Tag(0x0008, 0x0102), VR::SH, "DCM"),
                    Element::text(Tag(0x0008, 0x0104), VR::LO, meaning),
                ])
            })
            .collect();
        ds.put(Element::new(
            DEID_METHOD_CODE_SEQUENCE,
            VR::SQ,
            Value::Items(items),
        ));
        ds.put(Element::text(
            LONGITUDINAL_TEMPORAL_MODIFIED,
            VR::CS,
            self.profile.temporal_marker(),
        ));
    }

    fn record(s: &mut Session, path: &str, tag: Tag, op: Op, r: Option<Resolved>) {
        let name = Table::standard()
            .row(tag)
            .map(|row| row.name.clone())
            .unwrap_or_default();
        s.report.changes.push(Change {
            path: format!("{path}{}", tag_str(tag)),
            name,
            op,
            code: r
                .map(|r| r.action.code().to_string())
                .unwrap_or_else(|| "-".into()),
            by: r.and_then(|r| r.by).map(|c| c.header().to_string()),
        });
    }

    /// Apply the profile to one data set level. `clean` is set inside a sequence being
    /// cleaned (`C`): text that the table does not list is scrubbed of identifiers too.
    fn walk(&self, s: &mut Session, ds: &mut DataSet, path: &str, clean: bool) {
        let retain_private = self.profile.has(DeidOption::RetainSafePrivate);
        let creators: Vec<(u16, u8, String)> = ds
            .elements
            .iter()
            .filter(|e| is_private(e.tag) && (0x0010..=0x00FF).contains(&e.tag.element()))
            .filter_map(|e| {
                e.text_value().map(|v| {
                    (
                        e.tag.group(),
                        e.tag.element() as u8,
                        String::from_utf8_lossy(v).trim().to_string(),
                    )
                })
            })
            .collect();
        let mut kept_blocks: HashSet<(u16, u8)> = HashSet::new();
        let mut purge_groups: HashSet<u16> = HashSet::new();
        let mut out = Vec::with_capacity(ds.elements.len());
        for mut e in std::mem::take(&mut ds.elements) {
            let tag = e.tag;
            if tag.element() == 0x0000 {
                continue; // group lengths: stale after any change, retired in data sets
            }
            if is_private(tag) {
                if (0x0010..=0x00FF).contains(&tag.element()) {
                    out.push(e); // private creator: kept below only if its block is
                    continue;
                }
                let block = (tag.element() >> 8) as u8;
                let safe = retain_private
                    && creators
                        .iter()
                        .find(|(g, b, _)| *g == tag.group() && *b == block)
                        .is_some_and(|(g, _, c)| {
                            self.profile.safe_private().contains(
                                c,
                                *g,
                                (tag.element() & 0xFF) as u8,
                            )
                        });
                if safe {
                    kept_blocks.insert((tag.group(), block));
                    s.report.private_kept += 1;
                    if let Value::Items(items) = &mut e.value {
                        self.walk_items(s, items, path, tag, clean);
                    }
                    out.push(e);
                } else {
                    s.report.private_removed += 1;
                }
                continue;
            }
            match self.profile.lookup(tag) {
                None => {
                    match &mut e.value {
                        Value::Items(items) => self.walk_items(s, items, path, tag, clean),
                        Value::Bytes(b) if clean && is_text_vr(e.vr) && e.vr != VR::UI => {
                            let (nb, n) = s.ids.scrub(b);
                            if n > 0 {
                                *b = nb;
                                s.report.text_identifiers_scrubbed += n;
                                Self::record(s, path, tag, Op::Clean, None);
                            }
                        }
                        _ => {}
                    }
                    out.push(e);
                }
                Some(r) => {
                    if let Some(e) = self.apply(s, e, r, path, clean, &mut purge_groups) {
                        out.push(e);
                    }
                }
            }
        }
        // Private creators stay only when an element of their block stayed.
        out.retain(|e| {
            !(is_private(e.tag)
                && (0x0010..=0x00FF).contains(&e.tag.element())
                && !kept_blocks.contains(&(e.tag.group(), e.tag.element() as u8)))
        });
        // An overlay plane without its data is invalid: the rest of its group goes too.
        if !purge_groups.is_empty() {
            let mut kept = Vec::with_capacity(out.len());
            for e in out {
                if purge_groups.contains(&e.tag.group()) {
                    Self::record(s, path, e.tag, Op::Remove, None);
                } else {
                    kept.push(e);
                }
            }
            out = kept;
        }
        ds.elements = out;
    }

    fn walk_items(
        &self,
        s: &mut Session,
        items: &mut [DataSet],
        path: &str,
        tag: Tag,
        clean: bool,
    ) {
        for (i, item) in items.iter_mut().enumerate() {
            let p = format!("{path}{}[{i}]", tag_str(tag));
            self.walk(s, item, &p, clean);
        }
    }

    /// Apply one resolved row to one element; `None` removes it.
    fn apply(
        &self,
        s: &mut Session,
        mut e: Element,
        r: Resolved,
        path: &str,
        clean: bool,
        purge_groups: &mut HashSet<u16>,
    ) -> Option<Element> {
        let tag = e.tag;
        let is_seq = matches!(e.value, Value::Items(_));
        match r.op {
            Op::Remove => {
                Self::record(s, path, tag, Op::Remove, Some(r));
                if (tag.group() & 0xFF00) == 0x6000 && tag.element() == 0x3000 {
                    purge_groups.insert(tag.group());
                }
                None
            }
            Op::Empty | Op::Dummy if tag == PATIENT_ID => {
                match e.text_value() {
                    Some(v) if !v.is_empty() => {
                        let p = self.key.patient_id(v);
                        e.value = Value::Bytes(pad(VR::LO, p.into_bytes()));
                        s.report.patient_id_pseudonymised = true;
                        Self::record(s, path, tag, Op::Dummy, Some(r));
                    }
                    _ => {
                        e.value = Value::Bytes(Vec::new());
                        Self::record(s, path, tag, Op::Empty, Some(r));
                    }
                }
                Some(e)
            }
            Op::Empty => {
                if !e.is_empty() {
                    Self::record(s, path, tag, Op::Empty, Some(r));
                }
                e.value = empty_value(if is_seq { VR::SQ } else { e.vr });
                Some(e)
            }
            Op::Dummy => {
                if e.vr == VR::UI {
                    self.map_uids(s, &mut e, path, r);
                } else {
                    e.value = dummy_value(if is_seq { VR::SQ } else { e.vr });
                    Self::record(s, path, tag, Op::Dummy, Some(r));
                }
                Some(e)
            }
            Op::Keep => {
                if let Value::Items(items) = &mut e.value {
                    self.walk_items(s, items, path, tag, clean);
                }
                Some(e)
            }
            Op::Uid => {
                if let Value::Items(items) = &mut e.value {
                    // X/Z/U* on a sequence: keep it; the UIDs inside are replaced by their rows.
                    self.walk_items(s, items, path, tag, clean);
                } else {
                    self.map_uids(s, &mut e, path, r);
                }
                Some(e)
            }
            Op::Clean => self.clean(s, e, r, path),
        }
    }

    fn map_uids(&self, s: &mut Session, e: &mut Element, path: &str, r: Resolved) {
        let Some(v) = e.text_value() else {
            return;
        };
        if v.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(v.len() + 16);
        let mut n = 0;
        for (i, one) in v.split(|&b| b == b'\\').enumerate() {
            if i > 0 {
                out.push(b'\\');
            }
            let u = String::from_utf8_lossy(trim_padding(one.trim_ascii_start()));
            if u.is_empty() || u.starts_with("1.2.840.10008.") {
                out.extend_from_slice(u.as_bytes());
            } else {
                out.extend_from_slice(self.key.uid(&u).as_bytes());
                n += 1;
            }
        }
        e.vr = if e.vr == VR::UN { VR::UN } else { VR::UI };
        e.value = Value::Bytes(pad(VR::UI, out));
        if n > 0 {
            s.report.uids_replaced += n;
            Self::record(s, path, e.tag, Op::Uid, Some(r));
        }
    }

    fn clean(&self, s: &mut Session, mut e: Element, r: Resolved, path: &str) -> Option<Element> {
        let tag = e.tag;
        if let Value::Items(items) = &mut e.value {
            self.walk_items(s, items, path, tag, true);
            return Some(e);
        }
        let Value::Bytes(b) = &e.value else {
            // Encapsulated fragments cannot be cleaned.
            Self::record(s, path, tag, Op::Remove, Some(r));
            return None;
        };
        match e.vr {
            VR::DA | VR::DT => {
                let shifted = if e.vr == VR::DA {
                    shift_da(b, s.date_offset)
                } else {
                    shift_dt(b, s.date_offset)
                };
                match shifted {
                    Some(v) => {
                        if !v.is_empty() {
                            s.report.dates_shifted += 1;
                        }
                        e.value = Value::Bytes(v);
                        Self::record(s, path, tag, Op::Clean, Some(r));
                    }
                    None => {
                        e.value = Value::Bytes(Vec::new());
                        Self::record(s, path, tag, Op::Empty, Some(r));
                    }
                }
                Some(e)
            }
            VR::TM => Some(e), // a whole-day shift leaves times as they are
            VR::UI => {
                self.map_uids(s, &mut e, path, r);
                Some(e)
            }
            VR::AE => {
                let v = trim_padding(b);
                if !v.is_empty() {
                    let mapped: Vec<String> = v
                        .split(|&x| x == b'\\')
                        .map(|one| self.key.ae_title(one.trim_ascii()))
                        .collect();
                    e.value = Value::Bytes(pad(VR::AE, mapped.join("\\").into_bytes()));
                    Self::record(s, path, tag, Op::Clean, Some(r));
                }
                Some(e)
            }
            vr if is_text_vr(vr) => {
                let (nb, n) = s.ids.scrub(b);
                if n > 0 {
                    s.report.text_identifiers_scrubbed += n;
                    e.value = Value::Bytes(nb);
                    Self::record(s, path, tag, Op::Clean, Some(r));
                }
                Some(e)
            }
            VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN => {
                // Binary values (overlay bitmaps, curve data) cannot be checked for text.
                Self::record(s, path, tag, Op::Remove, Some(r));
                None
            }
            _ => Some(e), // numbers carry no identifying text
        }
    }
}

/// Why an instance probably has text burned into its pixels, if it does.
pub fn burned_in_reason(ds: &DataSet) -> Option<String> {
    if let Some(v) = ds.text(BURNED_IN_ANNOTATION) {
        if v.trim_ascii().eq_ignore_ascii_case(b"YES") {
            return Some("Burned In Annotation (0028,0301) is YES".into());
        }
    }
    if let Some(v) = ds.text(SOP_CLASS_UID) {
        let v = String::from_utf8_lossy(v);
        if let Some((_, name)) = BURNS_TEXT_SOP_CLASSES.iter().find(|(u, _)| *u == v.trim()) {
            return Some(format!("SOP class {name} usually has burned-in text"));
        }
    }
    if let Some(v) = ds.text(MODALITY) {
        if v.trim_ascii().eq_ignore_ascii_case(b"US") {
            return Some("modality US usually has burned-in text".into());
        }
    }
    if let Some(v) = ds.text(IMAGE_TYPE) {
        if v.split(|&b| b == b'\\')
            .any(|x| x.trim_ascii().eq_ignore_ascii_case(b"SCREEN SAVE"))
        {
            return Some("Image Type says SCREEN SAVE".into());
        }
    }
    None
}
