//! The `[guard]` section of the gateway's config file and its `[[guard.limit]]` entries, read
//! from the whole file so that every problem is reported as `FILE:LINE:COL: field `key`: message`.
//!
//! ```toml
//! [guard]
//! approvers = ["Curie^Marie"]    # who may approve protocols (Person Name or person ID)
//! protocol_managers = ["pm"]     # peers (policy names) that may send protocols to a modality
//! protocol_upstreams = ["ARCHIVE"] # upstream AE titles whose C-GET sub-operations may carry them
//! worklist_protocols = ["99RAD:CTHEAD"]  # allowed Scheduled Protocol codes; none: not checked
//! worklist_action = "refuse"     # or "clean"
//! max_studies = 4096             # studies whose accumulated CTDIvol is followed (LRU)
//!
//! [[guard.limit]]                # none: the defaults of `default_limits` (AAPM / NEMA XR 25)
//! name = "adult-head"
//! body_parts = ["HEAD", "BRAIN"] # "*": any body part
//! min_age_years = 18             # default 0
//! max_age_years = 200            # exclusive; default none
//! kvp = [70, 150]
//! tube_current_ma = [10, 800]
//! exposure_time_ms = [100, 5000]
//! ctdivol_notification = 80.0    # mGy
//! ctdivol_alert = 1000.0         # mGy
//! dlp_notification = 1500.0      # mGy·cm
//! dlp_alert = 5000.0             # mGy·cm
//! max_scan_length_mm = 400
//! phantom_cm = 16                # the CTDI phantom its CTDIvol/DLP values refer to (16 or 32)
//! ```

use serde::Deserialize;

use radguard_toml::{read_section, Placed, PlacedErrors, Seg};

/// Default bound of the studies the dose watch follows.
pub const DEFAULT_MAX_STUDIES: usize = 4096;
/// The largest `max_studies` accepted.
pub const MAX_STUDIES: usize = 1 << 20;

/// What the gateway does with a worklist answer that fails a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorklistAction {
    /// The answer is not relayed: the modality gets a failure status.
    #[default]
    Refuse,
    /// The offending values are removed (control characters dropped, over-long values cut,
    /// values not of their VR emptied, disallowed protocol codes removed) and the answer relayed.
    Clean,
}

/// One `[[guard.limit]]`: the site's limits for a body part and an age group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub name: String,
    /// Body Part Examined values (or the code meanings of a dose SR's Target Region), compared
    /// upper-case without spaces; `"*"` for any.
    pub body_parts: Vec<String>,
    #[serde(default)]
    pub min_age_years: f64,
    /// Exclusive upper bound.
    pub max_age_years: Option<f64>,
    /// Tube voltage range (kV).
    pub kvp: Option<[f64; 2]>,
    /// Tube current range (mA).
    pub tube_current_ma: Option<[f64; 2]>,
    /// Exposure time range (ms).
    pub exposure_time_ms: Option<[f64; 2]>,
    /// CTDIvol notification value (mGy; NEMA XR 25 "Notification Value").
    pub ctdivol_notification: Option<f64>,
    /// CTDIvol alert value (mGy; NEMA XR 25 "Alert Value"), also for a study's accumulated
    /// CTDIvol.
    pub ctdivol_alert: Option<f64>,
    /// DLP notification value (mGy·cm).
    pub dlp_notification: Option<f64>,
    /// DLP alert value (mGy·cm).
    pub dlp_alert: Option<f64>,
    /// Longest scan (mm).
    pub max_scan_length_mm: Option<f64>,
    /// The CTDI phantom (PS3.16 CID 4052: 16 cm head, 32 cm body) its CTDIvol and DLP values
    /// refer to; none: any. An object's CTDIvol measured in the other phantom is about twice
    /// (16 cm) or half (32 cm) the value, so it is never compared with this entry's values.
    pub phantom_cm: Option<u32>,
}

/// The CTDI dosimetry phantom a CTDIvol refers to (PS3.16 CID 4052 "Phantom Devices"; the
/// CTDI Phantom Type Code Sequence (0018,9346) of a protocol, the CTDIw Phantom Type (113835)
/// of a dose SR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phantom {
    /// (113690, DCM, "IEC Head Dosimetry Phantom"): 16 cm PMMA.
    Head16,
    /// (113691, DCM, "IEC Body Dosimetry Phantom"): 32 cm PMMA.
    Body32,
}

impl Phantom {
    /// The phantom of a CID 4052 code value (DCM); other phantoms are not CTDI phantoms.
    pub fn from_code(value: &str) -> Option<Phantom> {
        match value.trim() {
            "113690" => Some(Phantom::Head16),
            "113691" => Some(Phantom::Body32),
            _ => None,
        }
    }

    /// Its diameter (cm), as `phantom_cm` names it.
    pub fn cm(self) -> u32 {
        match self {
            Phantom::Head16 => 16,
            Phantom::Body32 => 32,
        }
    }
}

/// The `[guard]` table; every key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Who may approve protocols: an Asserter's Person Name (as written, `Family^Given`) or
    /// the Code Value of its Person Identification Code Sequence.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Peers (policy names) that may send Defined Procedure Protocol and Protocol Approval
    /// objects toward a modality.
    #[serde(default)]
    pub protocol_managers: Vec<String>,
    /// Upstreams (a relay route's `upstream_ae`) that may send Defined Procedure Protocol and
    /// Protocol Approval objects to a modality as C-STORE sub-operations of the modality's own
    /// C-GET (PS3.4 C.4.3): there the sender is the archive the route connects to, not a
    /// policy peer.
    #[serde(default)]
    pub protocol_upstreams: Vec<String>,
    /// Allowed Scheduled Protocol codes in worklist answers, `SCHEME:CODE`; empty: not checked.
    #[serde(default)]
    pub worklist_protocols: Vec<String>,
    #[serde(default)]
    pub worklist_action: WorklistAction,
    #[serde(default = "default_max_studies")]
    pub max_studies: usize,
    /// The site's limits; none means [`default_limits`].
    #[serde(default)]
    pub limit: Vec<LimitConfig>,
}

fn default_max_studies() -> usize {
    DEFAULT_MAX_STUDIES
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            approvers: Vec::new(),
            protocol_managers: Vec::new(),
            protocol_upstreams: Vec::new(),
            worklist_protocols: Vec::new(),
            worklist_action: WorklistAction::Refuse,
            max_studies: DEFAULT_MAX_STUDIES,
            limit: Vec::new(),
        }
    }
}

const HEAD: &[&str] = &["HEAD", "BRAIN", "SKULL"];
const TORSO: &[&str] = &[
    "CHEST",
    "THORAX",
    "ABDOMEN",
    "PELVIS",
    "CHESTABDOMEN",
    "ABDOMENPELVIS",
    "CHESTABDOMENPELVIS",
    "CHESTABDPELVIS",
    "TRUNK",
];

fn limit(name: &str, parts: &[&str], ages: (f64, Option<f64>), notification: f64) -> LimitConfig {
    LimitConfig {
        name: name.into(),
        body_parts: parts.iter().map(|s| s.to_string()).collect(),
        min_age_years: ages.0,
        max_age_years: ages.1,
        kvp: Some([70.0, 150.0]),
        tube_current_ma: None,
        exposure_time_ms: None,
        ctdivol_notification: Some(notification),
        ctdivol_alert: Some(1000.0),
        dlp_notification: None,
        dlp_alert: None,
        max_scan_length_mm: None,
        phantom_cm: None,
    }
}

/// The default limits (docs/config.md lists them with their sources): CTDIvol notification
/// values of the AAPM "Dose Check Guidelines" (version 1.0, 2011; revised) — adult head 80 mGy
/// and pediatric head under 2 years 50 mGy, 2–5 years 60 mGy (16 cm phantom), adult torso
/// 50 mGy (32 cm), pediatric torso under 10 years 25 mGy in the 16 cm phantom and 10 mGy in the
/// 32 cm one — and the CTDIvol alert value AAPM suggests for NEMA XR 25's Dose Check
/// (1000 mGy). kVp 70–150 is the range of clinical CT tubes, not a standard's number; no tube
/// current, exposure time, DLP or scan length is limited by default.
pub fn default_limits() -> Vec<LimitConfig> {
    let in_phantom = |l: LimitConfig, cm: u32| LimitConfig {
        phantom_cm: Some(cm),
        ..l
    };
    vec![
        in_phantom(limit("adult-head", HEAD, (18.0, None), 80.0), 16),
        in_phantom(
            limit("pediatric-head-under-2", HEAD, (0.0, Some(2.0)), 50.0),
            16,
        ),
        in_phantom(
            limit("pediatric-head-2-to-5", HEAD, (2.0, Some(6.0)), 60.0),
            16,
        ),
        in_phantom(
            limit("pediatric-head-6-to-17", HEAD, (6.0, Some(18.0)), 80.0),
            16,
        ),
        in_phantom(limit("adult-torso", TORSO, (18.0, None), 50.0), 32),
        in_phantom(
            limit("pediatric-torso-under-10", TORSO, (0.0, Some(10.0)), 25.0),
            16,
        ),
        in_phantom(
            limit(
                "pediatric-torso-under-10-32cm",
                TORSO,
                (0.0, Some(10.0)),
                10.0,
            ),
            32,
        ),
        in_phantom(
            limit("pediatric-torso-10-to-17", TORSO, (10.0, Some(18.0)), 50.0),
            32,
        ),
        LimitConfig {
            ctdivol_notification: None,
            ..limit("any", &["*"], (0.0, None), 0.0)
        },
    ]
}

/// Upper-case, spaces and underscores removed: how body parts are compared.
pub fn normalize_body_part(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_uppercase)
        .collect()
}

/// The limits in force for one object: the strictest value of every entry that applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// The entries merged (their names, in file order).
    pub from: Vec<String>,
    pub kvp: Option<[f64; 2]>,
    pub tube_current_ma: Option<[f64; 2]>,
    pub exposure_time_ms: Option<[f64; 2]>,
    pub ctdivol_notification: Option<f64>,
    pub ctdivol_alert: Option<f64>,
    pub dlp_notification: Option<f64>,
    pub dlp_alert: Option<f64>,
    pub max_scan_length_mm: Option<f64>,
    /// The object's CTDI phantom, when known.
    pub phantom: Option<Phantom>,
    /// The phantom is known, entries for the body part and age set CTDIvol or DLP values, but
    /// all for the other phantom (their names): the values cannot be compared.
    pub phantom_mismatch: Vec<String>,
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn range_opt(a: Option<[f64; 2]>, b: Option<[f64; 2]>) -> Option<[f64; 2]> {
    match (a, b) {
        (Some([a0, a1]), Some([b0, b1])) => Some([a0.max(b0), a1.min(b1)]),
        (a, b) => a.or(b),
    }
}

impl Limits {
    /// Whether an object's CTDIvol or DLP has a value to be compared with.
    pub fn has_dose_values(&self) -> bool {
        self.ctdivol_notification.is_some()
            || self.ctdivol_alert.is_some()
            || self.dlp_notification.is_some()
            || self.dlp_alert.is_some()
    }

    fn merge(&mut self, l: &LimitConfig) {
        self.from.push(l.name.clone());
        self.kvp = range_opt(self.kvp, l.kvp);
        self.tube_current_ma = range_opt(self.tube_current_ma, l.tube_current_ma);
        self.exposure_time_ms = range_opt(self.exposure_time_ms, l.exposure_time_ms);
        self.max_scan_length_mm = min_opt(self.max_scan_length_mm, l.max_scan_length_mm);
    }

    /// The entry's CTDIvol and DLP values.
    fn merge_dose(&mut self, l: &LimitConfig) {
        self.ctdivol_notification = min_opt(self.ctdivol_notification, l.ctdivol_notification);
        self.ctdivol_alert = min_opt(self.ctdivol_alert, l.ctdivol_alert);
        self.dlp_notification = min_opt(self.dlp_notification, l.dlp_notification);
        self.dlp_alert = min_opt(self.dlp_alert, l.dlp_alert);
    }
}

fn has_dose_values(l: &LimitConfig) -> bool {
    l.ctdivol_notification.is_some()
        || l.ctdivol_alert.is_some()
        || l.dlp_notification.is_some()
        || l.dlp_alert.is_some()
}

/// What is wrong with the `[guard]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    #[error("must be 1 to {MAX_STUDIES} (it is {0})")]
    TableSize(usize),
    #[error("a limit needs a name")]
    EmptyName,
    #[error("limit name {0:?} is used by another limit")]
    DuplicateName(String),
    #[error("at least one body part (or \"*\") is needed")]
    NoBodyParts,
    #[error("must be a finite number of at least 0")]
    Negative,
    #[error("the range's minimum is above its maximum")]
    Range,
    #[error("max_age_years must be above min_age_years")]
    Ages,
    #[error("the alert value must not be below the notification value (NEMA XR 25)")]
    AlertBelowNotification,
    #[error("{0:?} is not SCHEME:CODE")]
    Code(String),
    #[error("an empty name cannot be matched")]
    EmptyEntry,
    #[error("must be 16 (head phantom) or 32 (body phantom), PS3.16 CID 4052 (it is {0})")]
    Phantom(u32),
}

/// One problem in the `[guard]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;
/// Every problem found in the `[guard]` section, in file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

#[derive(Deserialize)]
struct Document {
    guard: Option<GuardConfig>,
}

fn bad(v: f64) -> bool {
    !v.is_finite() || v < 0.0
}

impl GuardConfig {
    /// Reads and checks the `[guard]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults.
    pub fn from_document(src: &str, file: &str) -> Result<GuardConfig, ConfigErrors> {
        read_section(
            src,
            file,
            Problem::Toml,
            |doc: Document| doc.guard.unwrap_or_default(),
            GuardConfig::problems,
        )
    }

    /// What is wrong with the values (each with its key path).
    pub fn problems(&self) -> Vec<(Vec<Seg<'static>>, Problem)> {
        let mut out = Vec::new();
        let g = |k: &'static str| vec![Seg::Key("guard"), Seg::Key(k)];
        if self.max_studies == 0 || self.max_studies > MAX_STUDIES {
            out.push((g("max_studies"), Problem::TableSize(self.max_studies)));
        }
        for (key, list) in [
            ("approvers", &self.approvers),
            ("protocol_managers", &self.protocol_managers),
            ("protocol_upstreams", &self.protocol_upstreams),
        ] {
            for (i, a) in list.iter().enumerate() {
                if a.trim().is_empty() {
                    let mut p = g(key);
                    p.push(Seg::Index(i));
                    out.push((p, Problem::EmptyEntry));
                }
            }
        }
        for (i, c) in self.worklist_protocols.iter().enumerate() {
            if parse_code(c).is_none() {
                let mut p = g("worklist_protocols");
                p.push(Seg::Index(i));
                out.push((p, Problem::Code(c.clone())));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.limit.iter().enumerate() {
            let at = |key: &'static str| {
                vec![
                    Seg::Key("guard"),
                    Seg::Key("limit"),
                    Seg::Index(i),
                    Seg::Key(key),
                ]
            };
            if l.name.trim().is_empty() {
                out.push((at("name"), Problem::EmptyName));
            } else if !names.insert(l.name.as_str()) {
                out.push((at("name"), Problem::DuplicateName(l.name.clone())));
            }
            if l.body_parts.is_empty() || l.body_parts.iter().any(|b| b.trim().is_empty()) {
                out.push((at("body_parts"), Problem::NoBodyParts));
            }
            if let Some(cm) = l.phantom_cm.filter(|cm| ![16, 32].contains(cm)) {
                out.push((at("phantom_cm"), Problem::Phantom(cm)));
            }
            if bad(l.min_age_years) {
                out.push((at("min_age_years"), Problem::Negative));
            }
            if let Some(max) = l.max_age_years {
                if bad(max) {
                    out.push((at("max_age_years"), Problem::Negative));
                } else if max <= l.min_age_years {
                    out.push((at("max_age_years"), Problem::Ages));
                }
            }
            for (key, r) in [
                ("kvp", l.kvp),
                ("tube_current_ma", l.tube_current_ma),
                ("exposure_time_ms", l.exposure_time_ms),
            ] {
                if let Some([lo, hi]) = r {
                    if bad(lo) || bad(hi) {
                        out.push((at(key), Problem::Negative));
                    } else if lo > hi {
                        out.push((at(key), Problem::Range));
                    }
                }
            }
            for (key, v) in [
                ("ctdivol_notification", l.ctdivol_notification),
                ("ctdivol_alert", l.ctdivol_alert),
                ("dlp_notification", l.dlp_notification),
                ("dlp_alert", l.dlp_alert),
                ("max_scan_length_mm", l.max_scan_length_mm),
            ] {
                if v.is_some_and(bad) {
                    out.push((at(key), Problem::Negative));
                }
            }
            for (key, n, a) in [
                ("ctdivol_alert", l.ctdivol_notification, l.ctdivol_alert),
                ("dlp_alert", l.dlp_notification, l.dlp_alert),
            ] {
                if let (Some(n), Some(a)) = (n, a) {
                    if a < n {
                        out.push((at(key), Problem::AlertBelowNotification));
                    }
                }
            }
        }
        out
    }

    /// The limits configured, or [`default_limits`] when none is.
    pub fn limits(&self) -> Vec<LimitConfig> {
        if self.limit.is_empty() {
            default_limits()
        } else {
            self.limit.clone()
        }
    }

    /// The allowed worklist protocol codes as (scheme, code).
    pub fn worklist_codes(&self) -> Vec<(String, String)> {
        self.worklist_protocols
            .iter()
            .filter_map(|c| parse_code(c))
            .collect()
    }
}

/// `SCHEME:CODE` → (scheme, code); both non-empty.
pub fn parse_code(s: &str) -> Option<(String, String)> {
    let (scheme, code) = s.split_once(':')?;
    let (scheme, code) = (scheme.trim(), code.trim());
    (!scheme.is_empty() && !code.is_empty()).then(|| (scheme.to_string(), code.to_string()))
}

/// The limits for an object of `body_part` (none: unknown) and patient age in years (none:
/// unknown). Entries naming the body part apply, else the `"*"` entries; of those, the ones
/// whose age group holds the age — all of them when the age is unknown, so that an object
/// without an age is judged by the strictest values (a child's). The strictest value of each
/// wins.
pub fn limits_for(entries: &[LimitConfig], body_part: Option<&str>, age: Option<f64>) -> Limits {
    limits_in_phantom(entries, body_part, age, None)
}

/// [`limits_for`] an object whose CTDIvol and DLP refer to `phantom` (none: not stated). The
/// CTDIvol and DLP values come only from entries for that phantom or for any (`phantom_cm`
/// unset); without a stated phantom from every entry, so that the strictest applies. When the
/// phantom is stated and the entries that apply set such values only for the other phantom,
/// [`Limits::phantom_mismatch`] names them and no dose value is set: a 16 cm CTDIvol is about
/// twice the 32 cm one of the same exposure, and the guard does not convert (the ratio depends
/// on the scanner, beam and filter).
pub fn limits_in_phantom(
    entries: &[LimitConfig],
    body_part: Option<&str>,
    age: Option<f64>,
    phantom: Option<Phantom>,
) -> Limits {
    let part = body_part.map(normalize_body_part).unwrap_or_default();
    let names = |l: &LimitConfig| {
        !part.is_empty()
            && l.body_parts
                .iter()
                .any(|b| b.trim() != "*" && normalize_body_part(b) == part)
    };
    let any = |l: &LimitConfig| l.body_parts.iter().any(|b| b.trim() == "*");
    let ages = |l: &LimitConfig| match age {
        None => true,
        Some(a) => a >= l.min_age_years && l.max_age_years.is_none_or(|m| a < m),
    };
    let mut chosen: Vec<&LimitConfig> = entries.iter().filter(|l| names(l) && ages(l)).collect();
    if chosen.is_empty() {
        chosen = entries.iter().filter(|l| any(l) && ages(l)).collect();
    }
    let mut out = Limits {
        phantom,
        ..Limits::default()
    };
    let fits = |l: &LimitConfig| match (phantom, l.phantom_cm) {
        (Some(p), Some(cm)) => p.cm() == cm,
        _ => true,
    };
    for l in &chosen {
        out.merge(l);
        if fits(l) {
            out.merge_dose(l);
        }
    }
    if !out.has_dose_values() {
        out.phantom_mismatch = chosen
            .iter()
            .filter(|l| has_dose_values(l) && !fits(l))
            .map(|l| l.name.clone())
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_section_gives_the_defaults() {
        let c = GuardConfig::from_document("[server]\nae_title = \"X\"\n", "f.toml").unwrap();
        assert_eq!(c, GuardConfig::default());
        assert_eq!(c.limits(), default_limits());
        assert!(c.problems().is_empty());
        // The defaults pass their own checks.
        let d = GuardConfig {
            limit: default_limits(),
            ..GuardConfig::default()
        };
        assert!(d.problems().is_empty(), "{:?}", d.problems());
    }

    #[test]
    fn default_values_are_the_aapm_notification_values() {
        let l = default_limits();
        let head = |age| limits_for(&l, Some("HEAD"), Some(age));
        assert_eq!(head(40.0).ctdivol_notification, Some(80.0));
        assert_eq!(head(1.0).ctdivol_notification, Some(50.0));
        assert_eq!(head(3.0).ctdivol_notification, Some(60.0));
        let torso = |age| limits_for(&l, Some("chest"), Some(age));
        assert_eq!(torso(40.0).ctdivol_notification, Some(50.0));
        // A child's torso: 25 mGy in the 16 cm phantom, 10 mGy in the 32 cm one; not stated:
        // the strictest.
        let child = |p| limits_in_phantom(&l, Some("chest"), Some(4.0), p);
        assert_eq!(
            child(Some(Phantom::Head16)).ctdivol_notification,
            Some(25.0)
        );
        assert_eq!(
            child(Some(Phantom::Body32)).ctdivol_notification,
            Some(10.0)
        );
        assert_eq!(torso(4.0).ctdivol_notification, Some(10.0));
        // An adult torso value in the 16 cm phantom has no limit to be compared with.
        let adult16 = limits_in_phantom(&l, Some("chest"), Some(40.0), Some(Phantom::Head16));
        assert_eq!(adult16.ctdivol_notification, None);
        assert_eq!(adult16.phantom_mismatch, vec!["adult-torso".to_string()]);
        assert!(torso(40.0).phantom_mismatch.is_empty());
        assert_eq!(head(40.0).ctdivol_alert, Some(1000.0));
        // Unknown age: the strictest of the body part's entries.
        assert_eq!(
            limits_for(&l, Some("Head"), None).ctdivol_notification,
            Some(50.0)
        );
        // Unknown body part: the catch-all (alert value only).
        let other = limits_for(&l, Some("KNEE"), Some(30.0));
        assert_eq!(other.ctdivol_notification, None);
        assert_eq!(other.ctdivol_alert, Some(1000.0));
        assert_eq!(other.from, vec!["any".to_string()]);
        assert_eq!(
            limits_for(&l, None, None).from,
            vec!["any".to_string()],
            "no body part: the catch-all"
        );
    }

    #[test]
    fn strictest_values_win() {
        let src = r#"
[[guard.limit]]
name = "a"
body_parts = ["HEAD"]
kvp = [80, 140]
ctdivol_notification = 70
[[guard.limit]]
name = "b"
body_parts = ["head"]
kvp = [90, 150]
ctdivol_notification = 60
ctdivol_alert = 900
"#;
        let c = GuardConfig::from_document(src, "f.toml").unwrap();
        let l = limits_for(&c.limits(), Some("HEAD"), Some(30.0));
        assert_eq!(l.kvp, Some([90.0, 140.0]));
        assert_eq!(l.ctdivol_notification, Some(60.0));
        assert_eq!(l.ctdivol_alert, Some(900.0));
        // No catch-all configured: an unknown body part has no limits.
        let none = limits_for(&c.limits(), Some("KNEE"), Some(30.0));
        assert_eq!(none, Limits::default());
    }

    #[test]
    fn problems_are_placed() {
        let src = r#"[guard]
max_studies = 0
worklist_protocols = ["NOCOLON"]
approvers = [" "]

[[guard.limit]]
name = "a"
body_parts = []
kvp = [150, 70]
ctdivol_notification = 80
ctdivol_alert = 50
min_age_years = 10
max_age_years = 5

[[guard.limit]]
name = "a"
body_parts = ["HEAD"]
dlp_alert = -1
"#;
        let e = GuardConfig::from_document(src, "f.toml").unwrap_err();
        let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 9, "{lines:#?}");
        assert!(
            lines[0].starts_with("f.toml:2:15: field `guard.max_studies`"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("NOCOLON"), "{}", lines[1]);
        assert!(lines[2].starts_with("f.toml:4:"), "{}", lines[2]);
        assert!(
            lines[3].contains("guard.limit[0].body_parts"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("minimum is above"), "{}", lines[4]);
        assert!(lines[5].contains("NEMA XR 25"), "{}", lines[5]);
        assert!(lines[6].contains("max_age_years"), "{}", lines[6]);
        assert!(lines[7].contains("used by another"), "{}", lines[7]);
        assert!(
            lines[8].starts_with("f.toml:18:") && lines[8].contains("dlp_alert"),
            "{}",
            lines[8]
        );
        let e = GuardConfig::from_document("[guard]\nnope = 1\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2:1"), "{e}");
        let e = GuardConfig::from_document("[guard]\nworklist_action = \"shred\"\n", "f.toml")
            .unwrap_err();
        assert!(e.to_string().contains("shred"), "{e}");
    }

    #[test]
    fn the_docs_example_reads_commented_and_uncommented() {
        let docs = include_str!("../../../docs/config.md");
        let at = docs
            .find("## Scan protocols and dose")
            .expect("the [guard] section of docs/config.md");
        let rest = &docs[at..];
        let start = rest.find("```toml\n").expect("its example") + "```toml\n".len();
        let block = &rest[start..start + rest[start..].find("```").expect("end of example")];
        let c = GuardConfig::from_document(block, "config.md").unwrap();
        assert_eq!(c.limit[0].name, "adult-head");
        // Every key uncommented: still valid, and each key is read.
        let all: String = block
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with("#"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = GuardConfig::from_document(&all, "config.md").unwrap();
        assert_eq!(c.approvers, vec!["Curie^Marie".to_string()]);
        assert_eq!(c.worklist_action, WorklistAction::Refuse);
        assert_eq!(c.limit[0].dlp_alert, Some(5000.0));
        assert_eq!(c.limit[0].max_scan_length_mm, Some(400.0));
        assert_eq!(c.limit[0].phantom_cm, Some(16));
        assert_eq!(c.protocol_upstreams, vec!["ARCHIVE".to_string()]);
    }

    #[test]
    fn phantoms_are_16_or_32_cm() {
        let src = "[guard]\n[[guard.limit]]\nname = \"a\"\nbody_parts = [\"*\"]\nphantom_cm = 20\n";
        let e = GuardConfig::from_document(src, "f.toml").unwrap_err();
        assert!(e.to_string().contains("guard.limit[0].phantom_cm"), "{e}");
        assert!(e.to_string().contains("CID 4052"), "{e}");
        let ok = src.replace("20", "32");
        assert_eq!(
            GuardConfig::from_document(&ok, "f.toml").unwrap().limit[0].phantom_cm,
            Some(32)
        );
        assert_eq!(Phantom::from_code("113690"), Some(Phantom::Head16));
        assert_eq!(Phantom::from_code("113691"), Some(Phantom::Body32));
        assert_eq!(Phantom::from_code("113692"), None);
    }

    #[test]
    fn codes_read() {
        assert_eq!(
            parse_code("99RAD:CT1"),
            Some(("99RAD".into(), "CT1".into()))
        );
        assert_eq!(parse_code(":CT1"), None);
        assert_eq!(parse_code("X:"), None);
        let c = GuardConfig::from_document(
            "[guard]\nworklist_protocols = [\"A:1\"]\nworklist_action = \"clean\"\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.worklist_codes(), vec![("A".into(), "1".into())]);
        assert_eq!(c.worklist_action, WorklistAction::Clean);
    }
}
