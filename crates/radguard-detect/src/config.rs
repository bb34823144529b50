//! The `[detect]` section of the gateway's config file and its `[[detect.rule]]` entries, read
//! from the whole file so that every problem is reported as `FILE:LINE:COL: field `key`: message`.
//!
//! ```toml
//! [detect]
//! enabled = true            # default true: detection is on even when the section is absent
//! max_sources = 4096        # entries per rule table (sources, peers); least recently used evicted
//! max_associations = 4096   # associations followed at once; least recently used evicted
//!
//! [[detect.rule]]           # none: the default rules (`default_rules`); some: exactly these
//! name = "recon-refused"
//! kind = "recon-refused"
//! threshold = 10
//! window_secs = 60
//! response = "alert"        # "alert" (default), "throttle", "block": see below
//! block_secs = 3600         # block/throttle: for how long (default 3600)
//! block_by = "address"      # block/throttle: "address" (default), "calling-ae", "certificate"
//! throttle_per_minute = 6   # throttle: associations admitted per minute (default 6)
//!
//! [[detect.rule]]
//! name = "night"
//! kind = "off-hours"
//! hours = ["Mon-Fri 07:00-19:00"]   # none: a learned weekly profile (learning_days, threshold)
//!
//! [[detect.rule]]
//! name = "bulk"
//! kind = "bulk-retrieve"
//! max_bytes = 10_000_000_000 # next to threshold (instances)
//! baseline = "learned"       # + factor (3), learning_days (14)
//! ```
//!
//! `radguard serve` enforces the responses: a `block` puts the subject on the block list
//! (new associations refused, running ones cut), a `throttle` limits its associations per
//! minute; both are audited, kept in `<data>/blocks.json` and shown by `radguard block list`.

use serde::{Deserialize, Serialize};

use radguard_toml::{read_section, Placed, PlacedErrors, Seg};

pub use crate::week::Hours;

/// Default bound of each rule's table of sources or peers.
pub const DEFAULT_MAX_SOURCES: usize = 4096;
/// Default bound of the associations followed at once.
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 4096;
/// The largest table bound accepted (memory is a few hundred bytes per entry).
pub const MAX_TABLE: usize = 1 << 20;
/// Default duration of a `block` or `throttle` response.
pub const DEFAULT_BLOCK_SECS: u64 = 3600;
/// Default rate of a `throttle` response: associations admitted per minute.
pub const DEFAULT_THROTTLE_PER_MINUTE: u32 = 6;
/// Destinations remembered per peer by `new-move-destination`.
pub const MAX_DESTINATIONS_PER_PEER: usize = 64;

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    /// Refused associations from one source address (AE title enumeration, user-identity
    /// guessing).
    ReconRefused,
    /// Accepted associations that end without any DIMSE request, per source address
    /// (connect-and-idle probing).
    ReconIdle,
    /// A scanner's known AE titles or implementation version name.
    ScannerSignature,
    /// C-FIND with universal matching at PATIENT or STUDY level (the whole patient list), per
    /// peer, from a peer not in `allow`.
    BulkQuery,
    /// Instances retrieved per peer: C-GET sub-operations the client acknowledged, C-MOVE
    /// completed (and warning) sub-operations from the responses' counts.
    BulkRetrieve,
    /// A C-MOVE to a destination AE title the peer never used before.
    NewMoveDestination,
    /// A known peer with another implementation, certificate or address than first seen.
    IdentityDrift,
    /// An instance whose SOP Instance UID the ledger or the vault already keeps with other
    /// content (CT-GAN: a scan altered and sent again under its UID). Fires on every attempt
    /// (threshold and window do not apply); always armed, even with detection off, because the
    /// integrity stores report conflicts through it.
    Overwrite,
    /// An admitted association outside the peer's configured `hours`, or (without `hours`) in
    /// an hour of the week the peer's learned profile has (almost) never seen.
    OffHours,
}

impl RuleKind {
    /// Every kind, in the order of the default rules.
    pub const ALL: [RuleKind; 9] = [
        RuleKind::ReconRefused,
        RuleKind::ReconIdle,
        RuleKind::ScannerSignature,
        RuleKind::BulkQuery,
        RuleKind::BulkRetrieve,
        RuleKind::NewMoveDestination,
        RuleKind::IdentityDrift,
        RuleKind::Overwrite,
        RuleKind::OffHours,
    ];

    /// The kebab-case name (as in the config file).
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::ReconRefused => "recon-refused",
            RuleKind::ReconIdle => "recon-idle",
            RuleKind::ScannerSignature => "scanner-signature",
            RuleKind::BulkQuery => "bulk-query",
            RuleKind::BulkRetrieve => "bulk-retrieve",
            RuleKind::NewMoveDestination => "new-move-destination",
            RuleKind::IdentityDrift => "identity-drift",
            RuleKind::Overwrite => "overwrite",
            RuleKind::OffHours => "off-hours",
        }
    }

    /// Default (threshold, window in seconds).
    fn defaults(self) -> (u64, u64) {
        match self {
            RuleKind::ReconRefused => (10, 60),
            RuleKind::ReconIdle => (10, 60),
            RuleKind::ScannerSignature => (1, 300),
            RuleKind::BulkQuery => (1, 300),
            RuleKind::BulkRetrieve => (1000, 3600),
            RuleKind::NewMoveDestination => (1, 3600),
            RuleKind::IdentityDrift => (1, 3600),
            RuleKind::Overwrite => (1, 1),
            // off-hours: fewer than 1 association in the slot over the learning history; the
            // window is not used (one alert per peer per hour slot).
            RuleKind::OffHours => (1, 3600),
        }
    }
}

/// What the gateway is to do when a rule fires (recorded in the detection and its alert;
/// `radguard serve` enforces `throttle` and `block` through the block list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "response")]
pub enum Response {
    Alert,
    /// At most `per_minute` associations from the subject for `for_secs`.
    Throttle {
        per_minute: u32,
        for_secs: u64,
    },
    /// No new association from the subject for `for_secs`; its running ones are cut.
    Block {
        for_secs: u64,
    },
}

/// Whom a `block` or `throttle` response names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockBy {
    /// The source IP address.
    #[default]
    Address,
    /// The calling AE title.
    CallingAe,
    /// The client's TLS certificate (SHA-256); a detection without one blocks nothing.
    Certificate,
}

impl Response {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            Response::Alert => "alert",
            Response::Throttle { .. } => "throttle",
            Response::Block { .. } => "block",
        }
    }
}

/// The response as written in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResponseName {
    Alert,
    Throttle,
    Block,
}

/// An identity attribute `identity-drift` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftAttribute {
    /// Implementation Class UID (PS3.7 D.3.3.2).
    ImplementationClassUid,
    /// Implementation Version Name (PS3.7 D.3.3.2.2).
    ImplementationVersion,
    /// SHA-256 of the client's TLS certificate ("none" without one).
    Certificate,
    /// Source IP address (the port is not compared).
    Address,
}

impl DriftAttribute {
    /// Its name in the config (`attributes = [...]`), also used in alerts.
    pub fn name(self) -> &'static str {
        match self {
            DriftAttribute::ImplementationClassUid => "implementation-class-uid",
            DriftAttribute::ImplementationVersion => "implementation-version",
            DriftAttribute::Certificate => "certificate",
            DriftAttribute::Address => "address",
        }
    }
}

/// A scanner signature: every field given must match (AE titles compared without padding).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// What the signature is (in the evidence), e.g. "nmap dicom-ping".
    pub name: String,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    pub implementation_version: Option<String>,
}

impl Signature {
    fn new(name: &str, calling: &str, called: &str, version: Option<&str>) -> Self {
        Signature {
            name: name.into(),
            calling_ae: Some(calling.into()),
            called_ae: Some(called.into()),
            implementation_version: version.map(Into::into),
        }
    }
}

/// The default scanner signatures: nmap's dicom-ping script (calling `ECHOSCU`, called
/// `ANY-SCP`) and Shodan's DICOM crawler (`FINDSCU` calling `ANY-SCP` with DCMTK 3.6.0 or
/// 3.6.2 version names).
pub fn default_signatures() -> Vec<Signature> {
    vec![
        Signature::new("nmap dicom-ping", "ECHOSCU", "ANY-SCP", None),
        Signature::new("shodan", "FINDSCU", "ANY-SCP", Some("OFFIS_DCMTK_360")),
        Signature::new("shodan", "FINDSCU", "ANY-SCP", Some("OFFIS_DCMTK_362")),
    ]
}

/// One `[[detect.rule]]` as written; the keys a kind does not use are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub kind: RuleKind,
    pub threshold: Option<u64>,
    pub window_secs: Option<u64>,
    pub response: Option<ResponseName>,
    /// With `response = "block"` or `"throttle"`: for how long (default
    /// [`DEFAULT_BLOCK_SECS`]).
    pub block_secs: Option<u64>,
    /// With `response = "block"` or `"throttle"`: whom (default address).
    pub block_by: Option<BlockBy>,
    /// With `response = "throttle"`: associations per minute (default
    /// [`DEFAULT_THROTTLE_PER_MINUTE`]).
    pub throttle_per_minute: Option<u32>,
    /// scanner-signature: the signatures (default [`default_signatures`]).
    pub signatures: Option<Vec<Signature>>,
    /// bulk-query: peers (policy names) allowed to query the whole list.
    pub allow: Option<Vec<String>>,
    /// bulk-query: the query levels watched (default PATIENT and STUDY).
    pub levels: Option<Vec<String>>,
    /// new-move-destination: C-MOVEs seen from a peer before a new destination is alerted on
    /// (default 20).
    pub learning: Option<u64>,
    /// identity-drift: the attributes compared (default all).
    pub attributes: Option<Vec<DriftAttribute>>,
    /// off-hours: the hours the peers may work (`"Mon-Fri 07:00-19:00"`, local time); none: a
    /// profile learned per peer.
    pub hours: Option<Vec<String>>,
    /// off-hours: the peers (policy names) the rule applies to (default every admitted peer).
    pub peers: Option<Vec<String>>,
    /// off-hours (learned profile) and bulk-retrieve (`baseline = "learned"`): days of history a
    /// peer needs before the rule judges it against what was learned (default 14).
    pub learning_days: Option<u64>,
    /// bulk-retrieve: bytes of data sets retrieved per peer per window that fire (C-GET only:
    /// a C-MOVE's data sets go to its destination, not through the peer's association).
    pub max_bytes: Option<u64>,
    /// bulk-retrieve: `"configured"` (default: `threshold` and `max_bytes`) or `"learned"`.
    pub baseline: Option<Baseline>,
    /// bulk-retrieve with `baseline = "learned"`: the multiple of the learned peak that fires
    /// (default 3).
    pub factor: Option<u64>,
}

/// How bulk-retrieve sets its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// `threshold` (instances) and `max_bytes`, as configured.
    #[default]
    Configured,
    /// Per peer, the largest counts per window seen over `learning_days`; after that, a window
    /// fires at max(configured limit, `factor` × learned peak).
    Learned,
}

/// A rule with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub threshold: u64,
    pub window_secs: u64,
    pub response: Response,
    /// Whom a block or throttle names.
    pub block_by: BlockBy,
    pub signatures: Vec<Signature>,
    pub allow: Vec<String>,
    pub levels: Vec<String>,
    pub learning: u64,
    pub attributes: Vec<DriftAttribute>,
    /// off-hours: the configured hours (empty: the learned profile).
    pub hours: Vec<Hours>,
    /// off-hours: the peers it applies to (none: all).
    pub peers: Option<Vec<String>>,
    pub learning_days: u64,
    pub max_bytes: Option<u64>,
    pub baseline: Baseline,
    pub factor: u64,
}

/// Default `learning` of new-move-destination.
pub const DEFAULT_LEARNING: u64 = 20;
/// Default `learning_days` of off-hours and bulk-retrieve's learned baseline.
pub const DEFAULT_LEARNING_DAYS: u64 = 14;
/// Default `factor` of bulk-retrieve's learned baseline.
pub const DEFAULT_FACTOR: u64 = 3;
/// The longest learning period accepted (days).
pub const MAX_LEARNING_DAYS: u64 = 366;

impl Rule {
    /// The default rule of a kind (named after it).
    pub fn default_for(kind: RuleKind) -> Rule {
        let (threshold, window_secs) = kind.defaults();
        Rule {
            name: kind.name().to_string(),
            kind,
            threshold,
            window_secs,
            response: Response::Alert,
            block_by: BlockBy::Address,
            signatures: default_signatures(),
            allow: Vec::new(),
            levels: vec!["PATIENT".into(), "STUDY".into()],
            learning: DEFAULT_LEARNING,
            attributes: vec![
                DriftAttribute::ImplementationClassUid,
                DriftAttribute::ImplementationVersion,
                DriftAttribute::Certificate,
                DriftAttribute::Address,
            ],
            hours: Vec::new(),
            peers: None,
            learning_days: DEFAULT_LEARNING_DAYS,
            max_bytes: None,
            baseline: Baseline::Configured,
            factor: DEFAULT_FACTOR,
        }
    }

    /// The learning period in milliseconds.
    pub fn learning_ms(&self) -> i64 {
        i64::try_from(self.learning_days)
            .unwrap_or(i64::MAX)
            .saturating_mul(crate::week::DAY_MS)
    }

    /// The window in milliseconds.
    pub fn window_ms(&self) -> u64 {
        self.window_secs.saturating_mul(1000)
    }
}

impl RuleConfig {
    /// The rule, defaults applied.
    pub fn resolve(&self) -> Rule {
        let mut r = Rule::default_for(self.kind);
        r.name = self.name.clone();
        if let Some(t) = self.threshold {
            r.threshold = t;
        }
        if let Some(w) = self.window_secs {
            r.window_secs = w;
        }
        r.response = match self.response.unwrap_or(ResponseName::Alert) {
            ResponseName::Alert => Response::Alert,
            ResponseName::Throttle => Response::Throttle {
                per_minute: self
                    .throttle_per_minute
                    .unwrap_or(DEFAULT_THROTTLE_PER_MINUTE),
                for_secs: self.block_secs.unwrap_or(DEFAULT_BLOCK_SECS),
            },
            ResponseName::Block => Response::Block {
                for_secs: self.block_secs.unwrap_or(DEFAULT_BLOCK_SECS),
            },
        };
        r.block_by = self.block_by.unwrap_or_default();
        if let Some(s) = &self.signatures {
            r.signatures = s.clone();
        }
        if let Some(a) = &self.allow {
            r.allow = a.clone();
        }
        if let Some(l) = &self.levels {
            r.levels = l.iter().map(|l| l.trim().to_ascii_uppercase()).collect();
        }
        if let Some(l) = self.learning {
            r.learning = l;
        }
        if let Some(a) = &self.attributes {
            r.attributes = a.clone();
        }
        if let Some(h) = &self.hours {
            // Checked by `problems`: an entry that does not parse is an error of the file.
            r.hours = h.iter().filter_map(|h| Hours::parse(h).ok()).collect();
        }
        r.peers = self.peers.clone();
        if let Some(d) = self.learning_days {
            r.learning_days = d;
        }
        r.max_bytes = self.max_bytes;
        if let Some(b) = self.baseline {
            r.baseline = b;
        }
        if let Some(f) = self.factor {
            r.factor = f;
        }
        r
    }

    /// The `hours` entries that do not read, with their index and why.
    fn hours_problems(&self) -> Vec<(usize, Problem)> {
        self.hours
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(j, h)| Hours::parse(h).err().map(|e| (j, Problem::Hours(e))))
            .collect()
    }

    /// What is wrong with this rule (each with its key).
    fn problems(&self) -> Vec<(&'static str, Problem)> {
        let mut out = Vec::new();
        if self.name.trim().is_empty() {
            out.push(("name", Problem::EmptyName));
        }
        if self.threshold == Some(0) {
            out.push(("threshold", Problem::Zero("threshold")));
        }
        if self.window_secs == Some(0) {
            out.push(("window_secs", Problem::Zero("window_secs")));
        }
        if self.block_secs == Some(0) {
            out.push(("block_secs", Problem::Zero("block_secs")));
        }
        let enforced = matches!(
            self.response,
            Some(ResponseName::Block | ResponseName::Throttle)
        );
        if self.block_secs.is_some() && !enforced {
            out.push(("block_secs", Problem::BlockSecsWithoutBlock));
        }
        if self.block_by.is_some() && !enforced {
            out.push(("block_by", Problem::BlockByWithoutBlock));
        }
        if self.throttle_per_minute == Some(0) {
            out.push(("throttle_per_minute", Problem::Zero("throttle_per_minute")));
        }
        if self.throttle_per_minute.is_some() && self.response != Some(ResponseName::Throttle) {
            out.push(("throttle_per_minute", Problem::RateWithoutThrottle));
        }
        let k = self.kind;
        let mut only = |key: &'static str, set: bool, kind: RuleKind| {
            if set && k != kind {
                out.push((key, Problem::NotForKind(key, k.name())));
            }
        };
        only(
            "signatures",
            self.signatures.is_some(),
            RuleKind::ScannerSignature,
        );
        only("allow", self.allow.is_some(), RuleKind::BulkQuery);
        only("levels", self.levels.is_some(), RuleKind::BulkQuery);
        only(
            "learning",
            self.learning.is_some(),
            RuleKind::NewMoveDestination,
        );
        only(
            "attributes",
            self.attributes.is_some(),
            RuleKind::IdentityDrift,
        );
        only("hours", self.hours.is_some(), RuleKind::OffHours);
        only("peers", self.peers.is_some(), RuleKind::OffHours);
        only(
            "max_bytes",
            self.max_bytes.is_some(),
            RuleKind::BulkRetrieve,
        );
        only("baseline", self.baseline.is_some(), RuleKind::BulkRetrieve);
        only("factor", self.factor.is_some(), RuleKind::BulkRetrieve);
        if self.learning_days.is_some() && !matches!(k, RuleKind::OffHours | RuleKind::BulkRetrieve)
        {
            out.push((
                "learning_days",
                Problem::NotForKind("learning_days", k.name()),
            ));
        }
        if let Some(sigs) = &self.signatures {
            if sigs.iter().any(|s| {
                s.calling_ae.is_none()
                    && s.called_ae.is_none()
                    && s.implementation_version.is_none()
            }) {
                out.push(("signatures", Problem::EmptySignature));
            }
        }
        if let Some(levels) = &self.levels {
            for l in levels {
                let u = l.trim().to_ascii_uppercase();
                if !matches!(u.as_str(), "PATIENT" | "STUDY" | "SERIES" | "IMAGE") {
                    out.push(("levels", Problem::Level(l.clone())));
                }
            }
        }
        if self.attributes.as_ref().is_some_and(|a| a.is_empty()) {
            out.push(("attributes", Problem::NoAttributes));
        }
        if let Some(hours) = &self.hours {
            if hours.is_empty() {
                out.push(("hours", Problem::NoHours));
            }
        }
        if let Some(d) = self.learning_days {
            if d == 0 || d > MAX_LEARNING_DAYS {
                out.push(("learning_days", Problem::LearningDays(d)));
            }
        }
        if self.max_bytes == Some(0) {
            out.push(("max_bytes", Problem::Zero("max_bytes")));
        }
        if self.factor == Some(0) {
            out.push(("factor", Problem::Zero("factor")));
        }
        if self.factor.is_some() && self.baseline != Some(Baseline::Learned) {
            out.push(("factor", Problem::FactorWithoutLearned));
        }
        if self.kind == RuleKind::OffHours && self.window_secs.is_some() {
            out.push(("window_secs", Problem::NotForKind("window_secs", k.name())));
        }
        if self.kind == RuleKind::OffHours && self.hours.is_some() {
            if self.threshold.is_some() {
                out.push(("threshold", Problem::NotWithHours("threshold")));
            }
            if self.learning_days.is_some() {
                out.push(("learning_days", Problem::NotWithHours("learning_days")));
            }
        }
        if self.kind == RuleKind::BulkRetrieve
            && self.learning_days.is_some()
            && self.baseline != Some(Baseline::Learned)
        {
            out.push(("learning_days", Problem::LearningDaysWithoutLearned));
        }
        out
    }
}

/// The `[detect]` table; every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Detection on (default) or off.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Bound of each rule's table of sources or peers.
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
    /// Bound of the associations followed at once.
    #[serde(default = "default_max_associations")]
    pub max_associations: usize,
    /// The rules; none means [`default_rules`].
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

fn yes() -> bool {
    true
}
fn default_max_sources() -> usize {
    DEFAULT_MAX_SOURCES
}
fn default_max_associations() -> usize {
    DEFAULT_MAX_ASSOCIATIONS
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            max_sources: DEFAULT_MAX_SOURCES,
            max_associations: DEFAULT_MAX_ASSOCIATIONS,
            rule: Vec::new(),
        }
    }
}

/// One rule of each kind, with the defaults of docs/config.md.
pub fn default_rules() -> Vec<Rule> {
    RuleKind::ALL
        .iter()
        .map(|k| Rule::default_for(*k))
        .collect()
}

/// What is wrong with the `[detect]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    #[error("must be at least 1 (it is 0)")]
    Zero(&'static str),
    #[error("must be 1 to {MAX_TABLE} (it is {0})")]
    TableSize(usize),
    #[error("a rule needs a name")]
    EmptyName,
    #[error("rule name {0:?} is used by another rule")]
    DuplicateName(String),
    #[error("block_secs is for response = \"block\" or \"throttle\" only")]
    BlockSecsWithoutBlock,
    #[error("block_by is for response = \"block\" or \"throttle\" only")]
    BlockByWithoutBlock,
    #[error("throttle_per_minute is for response = \"throttle\" only")]
    RateWithoutThrottle,
    #[error("{0} does not apply to a rule of kind {1}")]
    NotForKind(&'static str, &'static str),
    #[error("a signature needs at least one of calling_ae, called_ae, implementation_version")]
    EmptySignature,
    #[error("unknown query level {0:?} (PATIENT, STUDY, SERIES or IMAGE)")]
    Level(String),
    #[error("at least one attribute is needed")]
    NoAttributes,
    #[error("at least one entry is needed (or no hours: a learned profile)")]
    NoHours,
    #[error("{0}")]
    Hours(String),
    #[error("must be 1 to {MAX_LEARNING_DAYS} days (it is {0})")]
    LearningDays(u64),
    #[error("factor is for baseline = \"learned\" only")]
    FactorWithoutLearned,
    #[error("learning_days is for baseline = \"learned\" only")]
    LearningDaysWithoutLearned,
    #[error("{0} is for the learned profile only (no hours)")]
    NotWithHours(&'static str),
}

/// One problem in the `[detect]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;

/// Every problem found in the `[detect]` section (never empty when returned as an error), in
/// file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

/// Only the section this crate owns.
#[derive(Deserialize)]
struct Document {
    detect: Option<DetectConfig>,
}

impl DetectConfig {
    /// Reads and checks the `[detect]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults (detection on, the default rules).
    pub fn from_document(src: &str, file: &str) -> Result<DetectConfig, ConfigErrors> {
        read_section(
            src,
            file,
            Problem::Toml,
            |doc: Document| doc.detect.unwrap_or_default(),
            DetectConfig::problems,
        )
    }

    /// What is wrong with the values (each with its key path).
    pub fn problems(&self) -> Vec<(Vec<Seg<'static>>, Problem)> {
        let mut out = Vec::new();
        for (key, v) in [
            ("max_sources", self.max_sources),
            ("max_associations", self.max_associations),
        ] {
            if v == 0 || v > MAX_TABLE {
                out.push((
                    vec![Seg::Key("detect"), Seg::Key(key)],
                    Problem::TableSize(v),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.rule.iter().enumerate() {
            let at = |key: &'static str| {
                vec![
                    Seg::Key("detect"),
                    Seg::Key("rule"),
                    Seg::Index(i),
                    Seg::Key(key),
                ]
            };
            if !names.insert(r.name.as_str()) {
                out.push((at("name"), Problem::DuplicateName(r.name.clone())));
            }
            for (key, p) in r.problems() {
                out.push((at(key), p));
            }
            for (j, p) in r.hours_problems() {
                let mut path = at("hours");
                path.push(Seg::Index(j));
                out.push((path, p));
            }
        }
        out
    }

    /// The rules in force: the configured ones, or [`default_rules`] when none is configured.
    /// The rules armed: the configured ones (or the defaults), only the `overwrite` ones when
    /// detection is off; an `overwrite` rule is added when none is configured, since the
    /// integrity stores report conflicts through it.
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = if self.rule.is_empty() {
            default_rules()
        } else {
            self.rule.iter().map(RuleConfig::resolve).collect()
        };
        if !rules.iter().any(|r| r.kind == RuleKind::Overwrite) {
            rules.push(Rule::default_for(RuleKind::Overwrite));
        }
        if !self.enabled {
            rules.retain(|r| r.kind == RuleKind::Overwrite);
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_section_gives_the_default_rules_on() {
        let c = DetectConfig::from_document("[server]\nae_title = \"X\"\n", "f.toml").unwrap();
        assert_eq!(c, DetectConfig::default());
        assert!(c.enabled);
        let rules = c.rules();
        assert_eq!(rules.len(), RuleKind::ALL.len());
        assert_eq!(rules[0].name, "recon-refused");
        assert_eq!((rules[0].threshold, rules[0].window_secs), (10, 60));
    }

    #[test]
    fn detection_off_keeps_only_the_overwrite_rule() {
        let c = DetectConfig::from_document("[detect]\nenabled = false\n", "f.toml").unwrap();
        let kinds: Vec<RuleKind> = c.rules().iter().map(|r| r.kind).collect();
        assert_eq!(kinds, vec![RuleKind::Overwrite]);
        let src = "[detect]\nenabled = false\n[[detect.rule]]\nname = \"ow\"\nkind = \"overwrite\"\nresponse = \"block\"\n";
        let c = DetectConfig::from_document(src, "f.toml").unwrap();
        let rules = c.rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].name, "ow");
    }

    #[test]
    fn rules_are_read_with_their_defaults() {
        let src = r#"
[detect]
max_sources = 100

[[detect.rule]]
name = "enum"
kind = "recon-refused"
threshold = 3
response = "block"

[[detect.rule]]
name = "q"
kind = "bulk-query"
allow = ["admin"]
levels = ["patient"]
"#;
        let c = DetectConfig::from_document(src, "f.toml").unwrap();
        assert_eq!(c.max_sources, 100);
        let rules = c.rules();
        // The two configured, and the `overwrite` rule the integrity stores report through.
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[2].kind, RuleKind::Overwrite);
        assert_eq!(rules[0].threshold, 3);
        assert_eq!(rules[0].window_secs, 60);
        assert_eq!(
            rules[0].response,
            Response::Block {
                for_secs: DEFAULT_BLOCK_SECS
            }
        );
        assert_eq!(rules[1].allow, vec!["admin".to_string()]);
        assert_eq!(rules[1].levels, vec!["PATIENT".to_string()]);
    }

    #[test]
    fn problems_are_placed() {
        let src = r#"[detect]
max_sources = 0

[[detect.rule]]
name = "a"
kind = "recon-idle"
threshold = 0
allow = ["x"]

[[detect.rule]]
name = "a"
kind = "bulk-query"
block_secs = 5
levels = ["WARD"]
"#;
        let e = DetectConfig::from_document(src, "f.toml").unwrap_err();
        let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert!(
            lines[0].starts_with("f.toml:2:15: field `detect.max_sources`"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("f.toml:7:13: field `detect.rule[0].threshold`"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("allow does not apply to a rule of kind recon-idle"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("detect.rule[1].name") && lines[3].contains("used by another"));
        assert!(
            lines[4].contains("block_secs is for response"),
            "{}",
            lines[4]
        );
        assert!(
            lines[5].starts_with("f.toml:14:") && lines[5].contains("WARD"),
            "{}",
            lines[5]
        );
        // The enforcement keys belong to the responses that use them.
        let src = "[[detect.rule]]\nname = \"a\"\nkind = \"recon-idle\"\nblock_by = \"calling-ae\"\nthrottle_per_minute = 3\n";
        let e = DetectConfig::from_document(src, "f.toml").unwrap_err();
        let lines: Vec<String> = e.errors().iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert!(
            lines[0].starts_with("f.toml:4:12: field `detect.rule[0].block_by`"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("f.toml:5:")
                && lines[1].contains("for response = \"throttle\" only"),
            "{}",
            lines[1]
        );
        let src = "[[detect.rule]]\nname = \"a\"\nkind = \"recon-idle\"\nresponse = \"throttle\"\nthrottle_per_minute = 0\n";
        let e = DetectConfig::from_document(src, "f.toml").unwrap_err();
        assert!(
            e.to_string().contains("detect.rule[0].throttle_per_minute"),
            "{e}"
        );
        let src = "[[detect.rule]]\nname = \"a\"\nkind = \"recon-idle\"\nresponse = \"throttle\"\nblock_by = \"certificate\"\nblock_secs = 9\n";
        let r = &DetectConfig::from_document(src, "f.toml").unwrap().rules()[0];
        assert_eq!(
            r.response,
            Response::Throttle {
                per_minute: DEFAULT_THROTTLE_PER_MINUTE,
                for_secs: 9
            }
        );
        assert_eq!(r.block_by, BlockBy::Certificate);
        // An unknown key and an unknown kind: the TOML parser's words, placed.
        let e = DetectConfig::from_document("[detect]\nnope = 1\n", "f.toml").unwrap_err();
        assert!(e.errors()[0].to_string().starts_with("f.toml:2:1"), "{}", e);
        let e = DetectConfig::from_document(
            "[[detect.rule]]\nname = \"x\"\nkind = \"telepathy\"\n",
            "f.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("telepathy"), "{e}");
    }
}
