//! Detectors fed by the gateway's events: reconnaissance (refused associations, associations
//! without a request, scanner signatures), bulk query (universal C-FIND at PATIENT or STUDY
//! level), bulk retrieve (instances per peer: C-GET sub-operations the client acknowledged and
//! C-MOVE completed sub-operations; bytes of C-GET sub-operations; over configured limits or a
//! learned per-peer baseline; C-MOVE to a new destination), identity drift (a known peer with
//! another implementation, certificate or address) and off-hours activity (configured hours, or
//! a per-peer weekly profile of 168 hour slots learned over `learning_days`).
//!
//! Pure logic: no I/O, no clock, no tasks. The caller feeds every [`Event`] with the time it
//! chose ([`Detectors::observe_at`]: a [`Now`] with milliseconds of a monotonic clock and,
//! optionally, the wall clock as Unix time + UTC offset, [`Wall`]; [`Detectors::observe`]
//! without a wall clock, where `off-hours` and learned baselines do nothing) and gets the
//! [`Detection`]s back; `radguard serve` turns each into a `security-alert` event (alert kind
//! `detection`), which the audit trail records as a PS3.15 A.5 Security Alert (110113).
//!
//! **Learning survives restarts through the caller.** History is fed with
//! [`Detectors::learn_association`] (serve: the audit trail's admitted associations of the last
//! 2 × `learning_days`, read at start); the learned bulk-retrieve peaks go out with
//! [`Detectors::baselines`] when [`Detectors::baselines_changed`] and come back with
//! [`Detectors::restore_baselines`] (serve: a file in the data folder).
//!
//! **Bounded memory whatever the peers send.** Every table (associations followed, each rule's
//! sources or peers, the first-seen identities, the weekly profiles) has a bound from the config
//! ([`DetectConfig::max_sources`], [`DetectConfig::max_associations`]) and evicts its least
//! recently used entry; each sliding window holds at most 65 entries
//! (the window slides in 64 steps). An attacker spraying addresses or AE titles evicts entries;
//! the tables never grow past their bound.
//!
//! **No PHI in a detection.** The evidence is counts, thresholds, the query level, AE titles,
//! addresses, implementation names and certificate fingerprints: never a patient's name or ID
//! or a study's UID (a bulk query is recognised from the identifier, which is not kept).
//!
//! **Responses.** A rule's `response` (`alert`, `throttle`, `block`) and whom it names
//! (`block_by`: address, calling AE or certificate) are carried in the detection; this crate
//! only decides. `radguard serve` enforces them through the block list (radguard-block): a
//! block refuses the subject's new associations and cuts its running ones, a throttle limits
//! its associations per minute.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod config;
mod table;
pub mod week;
mod window;

use std::net::{IpAddr, SocketAddr};

use radguard_events::{AssocId, Blame, Event, IntegrityStore, SubOperations, Subject};
use serde::{Deserialize, Serialize};

pub use config::{
    default_rules, default_signatures, Baseline, BlockBy, DetectConfig, DriftAttribute, Response,
    Rule, RuleKind, Signature,
};
pub use table::Lru;
pub use week::{Hours, Now, Wall};
use window::Window;

/// What was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counted {
    RefusedAssociations,
    AssociationsWithoutRequest,
    UniversalQueries,
    InstancesRetrieved,
    /// Bytes of the data sets of C-GET sub-operations the client acknowledged.
    BytesRetrieved,
}

/// What an `off-hours` detection was judged against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "basis")]
pub enum OffHoursBasis {
    /// Outside every one of the configured `hours`.
    Hours { hours: Vec<String> },
    /// The learned profile: `seen` associations of the peer in this hour of the week over
    /// `days` days of history, under `threshold`.
    Profile {
        seen: u64,
        days: u64,
        threshold: u64,
    },
}

/// One attribute a known peer changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub attribute: DriftAttribute,
    pub first: String,
    pub now: String,
}

/// Why a rule fired: typed counts and thresholds (no patient data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Evidence {
    /// `count` events in the last `window_secs`, at or over `threshold`.
    Count {
        counted: Counted,
        count: u64,
        threshold: u64,
        window_secs: u64,
        /// bulk-query: the Query/Retrieve Level of the query that reached the threshold.
        #[serde(skip_serializing_if = "Option::is_none")]
        level: Option<String>,
    },
    /// A scanner signature matched.
    Signature {
        signature: String,
        implementation_version: Option<String>,
    },
    /// A C-MOVE to a destination not among the peer's `known` ones, after `moves_seen` C-MOVEs
    /// (at least `learning`).
    NewDestination {
        destination: String,
        known: usize,
        moves_seen: u64,
        learning: u64,
    },
    /// A known peer's identity changed.
    IdentityDrift { drifts: Vec<Drift> },
    /// An instance arrived under a SOP Instance UID kept with other content.
    Overwrite {
        store: IntegrityStore,
        sop_instance: String,
        /// Digests (hex) of the content kept and of the one that arrived.
        kept: String,
        arrived: String,
        /// Whether the gateway refused it (or recorded and relayed it).
        refused: bool,
    },
    /// An admitted association at a local time the peer does not work: `weekday` (Mon to Sun)
    /// and `hour` (0 to 23).
    OffHours {
        weekday: String,
        hour: u8,
        basis: OffHoursBasis,
    },
    /// bulk-retrieve with a learned baseline: `count` in the last `window_secs` reached
    /// `limit` = `factor` × `peak` (the peer's largest window over its learning period), which
    /// is above the configured limit.
    OverBaseline {
        counted: Counted,
        count: u64,
        limit: u64,
        peak: u64,
        factor: u64,
        window_secs: u64,
    },
}

fn counted_name(counted: Counted) -> &'static str {
    match counted {
        Counted::RefusedAssociations => "refused associations",
        Counted::AssociationsWithoutRequest => "associations without a request",
        Counted::UniversalQueries => "universal queries",
        Counted::InstancesRetrieved => "instances retrieved",
        Counted::BytesRetrieved => "bytes retrieved",
    }
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub rule: String,
    pub kind: RuleKind,
    #[serde(flatten)]
    pub response: Response,
    /// The association that made the rule fire, if one did.
    pub assoc: Option<AssocId>,
    pub source: Option<SocketAddr>,
    /// The peer's name in the policy, once admitted.
    pub peer: Option<String>,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    /// SHA-256 of the client's TLS certificate, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Whom a block or throttle response names.
    pub block_by: BlockBy,
    pub evidence: Evidence,
}

impl Detection {
    /// The `detection` event of the bus (audited as a PS3.15 A.5 Security Alert, 110113):
    /// rule, kind, response and evidence as fields, and [`Detection::summary`] as its detail.
    pub fn event(&self) -> Event {
        Event::Detection {
            assoc: self.assoc,
            source: self.source,
            peer: self.peer.clone(),
            calling_ae: self.calling_ae.clone(),
            called_ae: self.called_ae.clone(),
            rule: self.rule.clone(),
            rule_kind: self.kind.name().to_string(),
            response: self.response.name().to_string(),
            evidence: serde_json::to_value(&self.evidence).unwrap_or(serde_json::Value::Null),
            detail: self.summary(),
        }
    }

    /// One line for an alert's detail and the log: rule, who, evidence, response (no PHI).
    pub fn summary(&self) -> String {
        let mut s = format!("rule {} ({})", self.rule, self.kind.name());
        if let Some(p) = &self.peer {
            s.push_str(&format!(" peer {p}"));
        }
        if let Some(a) = &self.source {
            s.push_str(&format!(" from {}", a.ip()));
        }
        if let (Some(c), Some(d)) = (&self.calling_ae, &self.called_ae) {
            s.push_str(&format!(" {c:?} -> {d:?}"));
        }
        s.push_str(": ");
        match &self.evidence {
            Evidence::Count {
                counted,
                count,
                threshold,
                window_secs,
                level,
            } => {
                let what = counted_name(*counted);
                s.push_str(&format!(
                    "{count} {what} in {window_secs} s (threshold {threshold})"
                ));
                if let Some(l) = level {
                    s.push_str(&format!(", level {l}"));
                }
            }
            Evidence::Signature {
                signature,
                implementation_version,
            } => {
                s.push_str(&format!("scanner signature {signature:?}"));
                if let Some(v) = implementation_version {
                    s.push_str(&format!(", implementation version {v:?}"));
                }
            }
            Evidence::NewDestination {
                destination,
                known,
                moves_seen,
                ..
            } => s.push_str(&format!(
                "C-MOVE to new destination {destination:?} ({known} known, {moves_seen} C-MOVEs seen)"
            )),
            Evidence::Overwrite {
                store,
                sop_instance,
                kept,
                arrived,
                refused,
            } => s.push_str(&format!(
                "SOP Instance {sop_instance} already in the {} with digest {kept}, now {arrived} ({})",
                store.name(),
                if *refused { "refused" } else { "recorded and relayed" }
            )),
            Evidence::IdentityDrift { drifts } => {
                let parts: Vec<String> = drifts
                    .iter()
                    .map(|d| format!("{} {:?} -> {:?}", d.attribute.name(), d.first, d.now))
                    .collect();
                s.push_str(&format!("identity drift: {}", parts.join(", ")));
            }
            Evidence::OffHours {
                weekday,
                hour,
                basis,
            } => {
                s.push_str(&format!(
                    "off-hours association {weekday} {hour:02}:00-{:02}:00 local",
                    hour.saturating_add(1)
                ));
                match basis {
                    OffHoursBasis::Hours { hours } => {
                        s.push_str(&format!(", outside {}", hours.join(", ")))
                    }
                    OffHoursBasis::Profile {
                        seen,
                        days,
                        threshold,
                    } => s.push_str(&format!(
                        ", {seen} associations in this hour over {days} days (threshold {threshold})"
                    )),
                }
            }
            Evidence::OverBaseline {
                counted,
                count,
                limit,
                peak,
                factor,
                window_secs,
            } => s.push_str(&format!(
                "{count} {} in {window_secs} s (learned baseline: {factor} x peak {peak} = {limit})",
                counted_name(*counted)
            )),
        }
        let response = match self.response {
            Response::Alert => "alert".to_string(),
            Response::Throttle {
                per_minute,
                for_secs,
            } => format!("throttle {per_minute}/min {for_secs} s"),
            Response::Block { for_secs } => format!("block {for_secs} s"),
        };
        s.push_str(&format!("; response {response}"));
        s
    }
}

/// What is known of a running association.
#[derive(Debug, Clone, Default)]
struct AssocFacts {
    source: Option<SocketAddr>,
    calling_ae: Option<String>,
    called_ae: Option<String>,
    implementation_class_uid: Option<String>,
    implementation_version: Option<String>,
    certificate: Option<String>,
    peer: Option<String>,
    accepted: bool,
    requests: u64,
    /// C-MOVEs in progress: (Message ID, sub-operations already counted), so that a pending
    /// response's completed count and the final one's are counted once between them. At most
    /// [`MAX_MOVES_PER_ASSOC`] (oldest dropped).
    moves: Vec<(u16, u64)>,
}

/// C-MOVEs followed at once on one association (PS3.7 §D.3.3.3: asynchronous operations are
/// negotiated; a peer cannot grow this table past the bound).
const MAX_MOVES_PER_ASSOC: usize = 16;

/// Instances a C-MOVE response says were sent: completed + warning sub-operations (PS3.4
/// C.4.2.1.5: a warning sub-operation still stored the instance).
fn moved(s: &SubOperations) -> u64 {
    u64::from(s.completed.unwrap_or(0)) + u64::from(s.warning.unwrap_or(0))
}

/// Who a count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Source(IpAddr),
    Peer(String),
}

/// The first identity seen of a peer.
#[derive(Debug, Clone)]
struct FirstSeen {
    values: Vec<(DriftAttribute, String)>,
    last_fired: Option<u64>,
}

/// The destinations a peer moved to.
#[derive(Debug, Default)]
struct Destinations {
    moves: u64,
    known: Lru<String, ()>,
}

impl Default for Lru<String, ()> {
    fn default() -> Self {
        Lru::new(config::MAX_DESTINATIONS_PER_PEER)
    }
}

/// A peer's weekly profile (off-hours).
#[derive(Debug, Default)]
struct Profile {
    /// Wall-clock time of the first association learned (the learning period's start).
    since_ms: Option<i64>,
    /// Learned profile: admitted associations per hour of the week ([`week::WEEK_HOURS`]
    /// counters; empty with configured hours).
    counts: Vec<u32>,
    /// The local hour (since the epoch) of the last detection: one per peer per hour slot.
    last_fired: Option<i64>,
}

impl Profile {
    /// Counts one association at `wall`; returns how many the slot held before.
    fn learn(&mut self, wall: Wall) -> u32 {
        let since = self.since_ms.get_or_insert(wall.unix_ms);
        *since = (*since).min(wall.unix_ms);
        if self.counts.len() != week::WEEK_HOURS {
            self.counts = vec![0; week::WEEK_HOURS];
        }
        match self.counts.get_mut(wall.hour_of_week()) {
            Some(c) => {
                let before = *c;
                *c = c.saturating_add(1);
                before
            }
            None => 0,
        }
    }
}

/// What bulk-retrieve keeps per peer: the two windows and, with a learned baseline, the
/// learning period's start and the peaks seen in it.
#[derive(Debug, Default)]
struct Retrieval {
    instances: Window,
    bytes: Window,
    since_ms: Option<i64>,
    peak_instances: u64,
    peak_bytes: u64,
}

#[derive(Debug)]
enum State {
    Counts(Lru<Key, Window>),
    Destinations(Lru<Key, Destinations>),
    Identities(Lru<String, FirstSeen>),
    Profiles(Lru<String, Profile>),
    Retrievals(Lru<Key, Retrieval>),
}

/// One peer's learned bulk-retrieve baseline, as persisted between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedPeak {
    /// The rule's name.
    pub rule: String,
    /// The peer's policy name.
    pub peer: String,
    /// When the learning period began (milliseconds since the Unix epoch).
    pub since_ms: i64,
    /// The largest count of instances, and of bytes, in one window during the learning period.
    pub instances: u64,
    pub bytes: u64,
}

/// Every learned bulk-retrieve baseline ([`Detectors::baselines`]), for the caller to keep
/// across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baselines {
    pub peaks: Vec<LearnedPeak>,
}

#[derive(Debug)]
struct Armed {
    rule: Rule,
    state: State,
}

/// The detectors of one gateway: the rules in force and their tables.
#[derive(Debug)]
pub struct Detectors {
    assocs: Lru<AssocId, AssocFacts>,
    rules: Vec<Armed>,
    /// A learned baseline changed since [`Detectors::baselines_changed`] last said so.
    baselines_dirty: bool,
}

fn trimmed(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || c == '\0')
}

/// True when a matching key asks for everything: absent, empty, or only wildcards (PS3.4
/// C.2.2.2.3 universal matching, C.2.2.2.4 wildcard matching).
fn universal(v: &Option<String>) -> bool {
    v.as_deref()
        .is_none_or(|s| trimmed(s).chars().all(|c| c == '*' || c == '?'))
}

impl Detectors {
    /// The detectors of `config` (its rules, or the defaults), tables empty.
    pub fn new(config: &DetectConfig) -> Self {
        let cap = config.max_sources;
        let rules = config
            .rules()
            .into_iter()
            .map(|rule| {
                let state = match rule.kind {
                    RuleKind::NewMoveDestination => State::Destinations(Lru::new(cap)),
                    RuleKind::IdentityDrift => State::Identities(Lru::new(cap)),
                    RuleKind::OffHours => State::Profiles(Lru::new(cap)),
                    RuleKind::BulkRetrieve => State::Retrievals(Lru::new(cap)),
                    _ => State::Counts(Lru::new(cap)),
                };
                Armed { rule, state }
            })
            .collect();
        Detectors {
            assocs: Lru::new(config.max_associations),
            rules,
            baselines_dirty: false,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|a| &a.rule)
    }

    /// Entries held: (associations followed, the largest rule table).
    pub fn table_sizes(&self) -> (usize, usize) {
        let largest = self
            .rules
            .iter()
            .map(|a| match &a.state {
                State::Counts(t) => t.len(),
                State::Destinations(t) => t.len(),
                State::Identities(t) => t.len(),
                State::Profiles(t) => t.len(),
                State::Retrievals(t) => t.len(),
            })
            .max()
            .unwrap_or(0);
        (self.assocs.len(), largest)
    }

    /// Learns one admitted association of `peer` at `wall` from history (the audit trail read
    /// at start) into every learned `off-hours` profile; fires nothing.
    pub fn learn_association(&mut self, peer: &str, wall: Wall) {
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::OffHours && a.rule.hours.is_empty())
        {
            if !applies(&armed.rule, peer) {
                continue;
            }
            if let State::Profiles(table) = &mut armed.state {
                table
                    .entry_or_insert_with(peer.to_string(), Profile::default)
                    .learn(wall);
            }
        }
    }

    /// The days of history the learned `off-hours` profiles want (the largest
    /// `learning_days`); none when no rule learns a profile.
    pub fn profile_learning_days(&self) -> Option<u64> {
        self.rules
            .iter()
            .filter(|a| a.rule.kind == RuleKind::OffHours && a.rule.hours.is_empty())
            .map(|a| a.rule.learning_days)
            .max()
    }

    /// The learned bulk-retrieve baselines of peers (by policy name), for the caller to keep.
    pub fn baselines(&self) -> Baselines {
        let mut peaks = Vec::new();
        for armed in &self.rules {
            let State::Retrievals(table) = &armed.state else {
                continue;
            };
            if armed.rule.baseline != Baseline::Learned {
                continue;
            }
            for (key, r) in table.iter() {
                if let (Key::Peer(peer), Some(since_ms)) = (key, r.since_ms) {
                    peaks.push(LearnedPeak {
                        rule: armed.rule.name.clone(),
                        peer: peer.clone(),
                        since_ms,
                        instances: r.peak_instances,
                        bytes: r.peak_bytes,
                    });
                }
            }
        }
        peaks.sort_by(|a, b| (&a.rule, &a.peer).cmp(&(&b.rule, &b.peer)));
        Baselines { peaks }
    }

    /// Whether a learned baseline changed since the last call (the caller saves
    /// [`Detectors::baselines`] then).
    pub fn baselines_changed(&mut self) -> bool {
        std::mem::take(&mut self.baselines_dirty)
    }

    /// Takes back baselines saved by an earlier run (entries of rules no longer learning are
    /// ignored; the tables keep their bound).
    pub fn restore_baselines(&mut self, saved: &Baselines) {
        for p in &saved.peaks {
            for armed in self.rules.iter_mut().filter(|a| {
                a.rule.kind == RuleKind::BulkRetrieve
                    && a.rule.baseline == Baseline::Learned
                    && a.rule.name == p.rule
            }) {
                if let State::Retrievals(table) = &mut armed.state {
                    let r =
                        table.entry_or_insert_with(Key::Peer(p.peer.clone()), Retrieval::default);
                    r.since_ms = Some(p.since_ms);
                    r.peak_instances = p.instances;
                    r.peak_bytes = p.bytes;
                }
            }
        }
    }

    /// Feeds one event seen at `now_ms` (a monotonic clock in milliseconds) without a wall
    /// clock (`off-hours` and learned baselines do nothing); returns what fired.
    pub fn observe(&mut self, now_ms: u64, event: &Event) -> Vec<Detection> {
        self.observe_at(Now::mono(now_ms), event)
    }

    /// Feeds one event seen at `now` (monotonic and wall clocks); returns what fired.
    pub fn observe_at(&mut self, now: Now, event: &Event) -> Vec<Detection> {
        let now_ms = now.mono_ms;
        let mut out = Vec::new();
        if self.rules.is_empty() {
            return out;
        }
        match event {
            Event::AssociationRequested {
                assoc,
                source,
                calling_ae,
                called_ae,
                implementation_class_uid,
                implementation_version,
                tls,
                ..
            } => {
                let facts = AssocFacts {
                    source: Some(*source),
                    calling_ae: Some(trimmed(calling_ae).to_string()),
                    called_ae: Some(trimmed(called_ae).to_string()),
                    implementation_class_uid: Some(implementation_class_uid.clone()),
                    implementation_version: implementation_version
                        .as_deref()
                        .map(|v| trimmed(v).to_string()),
                    certificate: tls.as_ref().and_then(|t| t.peer_cert_sha256.clone()),
                    ..AssocFacts::default()
                };
                self.signatures(now_ms, *assoc, &facts, &mut out);
                *self
                    .assocs
                    .entry_or_insert_with(*assoc, AssocFacts::default) = facts;
            }
            Event::AssociationRefused {
                assoc,
                source,
                calling_ae,
                called_ae,
                ..
            } => {
                self.assocs.remove(assoc);
                let facts = AssocFacts {
                    source: Some(*source),
                    calling_ae: calling_ae.as_deref().map(|s| trimmed(s).to_string()),
                    called_ae: called_ae.as_deref().map(|s| trimmed(s).to_string()),
                    ..AssocFacts::default()
                };
                let key = Key::Source(source.ip());
                self.count(
                    now_ms,
                    RuleKind::ReconRefused,
                    &key,
                    1,
                    Counted::RefusedAssociations,
                    None,
                    (*assoc, &facts),
                    &mut out,
                );
            }
            Event::OverwriteAttempt {
                assoc,
                store,
                sop_instance,
                kept,
                arrived,
                refused,
            } => {
                let facts = self.assocs.peek(assoc).cloned().unwrap_or_default();
                for armed in self
                    .rules
                    .iter()
                    .filter(|a| a.rule.kind == RuleKind::Overwrite)
                {
                    out.push(detection(
                        &armed.rule,
                        *assoc,
                        &facts,
                        Evidence::Overwrite {
                            store: *store,
                            sop_instance: sop_instance.clone(),
                            kept: kept.clone(),
                            arrived: arrived.clone(),
                            refused: *refused,
                        },
                    ));
                }
            }
            Event::AssociationAccepted { assoc, peer, .. } => {
                let facts = self
                    .assocs
                    .entry_or_insert_with(*assoc, AssocFacts::default);
                facts.accepted = true;
                facts.peer = Some(peer.clone());
                let facts = facts.clone();
                self.drift(now_ms, *assoc, &facts, &mut out);
                self.off_hours(now, *assoc, &facts, &mut out);
            }
            Event::DimseRequest {
                assoc,
                command,
                move_destination,
                subject,
                identifier,
                ..
            } => {
                let facts = match self.assocs.get_mut(assoc) {
                    Some(f) => {
                        f.requests = f.requests.saturating_add(1);
                        f.clone()
                    }
                    None => AssocFacts::default(),
                };
                match command.as_str() {
                    "CFindRq" => {
                        let level = identifier.as_ref().and_then(|i| i.level.as_deref());
                        self.bulk_query(now_ms, *assoc, &facts, level, subject.as_ref(), &mut out);
                    }
                    "CMoveRq" => {
                        if let Some(dest) = move_destination {
                            self.new_destination(now_ms, *assoc, &facts, dest, &mut out);
                        }
                    }
                    _ => {}
                }
            }
            // A C-GET sub-operation the client acknowledged: one instance retrieved
            // (PS3.4 C.4.3: the C-STOREs of a C-GET travel on the same association).
            Event::DimseResponse {
                assoc,
                command,
                status,
                from: Blame::Peer,
                bytes,
                ..
            } if command == "CStoreRsp" && (*status == 0 || (0xB000..=0xBFFF).contains(status)) => {
                let facts = self.assocs.peek(assoc).cloned().unwrap_or_default();
                if let Some(key) = peer_key(&facts) {
                    let bytes = bytes.unwrap_or(0);
                    self.retrieve(now, &key, 1, bytes, (*assoc, &facts), &mut out);
                }
            }
            // A C-MOVE's sub-operations are C-STOREs on another association (PS3.4 C.4.2):
            // counted from the responses' Number of Completed/Warning Sub-operations. Each
            // response adds the growth since the previous one of the same C-MOVE, so pending
            // responses and the final one are not counted twice.
            Event::DimseResponse {
                assoc,
                message_id,
                command,
                status,
                from: Blame::Upstream | Blame::Local,
                sub_operations,
                ..
            } if command == "CMoveRsp" => {
                let final_response = !matches!(*status, 0xFF00 | 0xFF01);
                let Some(facts) = self.assocs.get_mut(assoc) else {
                    return out;
                };
                let seen = sub_operations.as_ref().map_or(0, moved);
                let index = facts.moves.iter().position(|(id, _)| id == message_id);
                let before = index
                    .and_then(|i| facts.moves.get(i))
                    .map_or(0, |(_, counted)| *counted);
                let total = seen.max(before);
                match index {
                    Some(i) if final_response => {
                        facts.moves.remove(i);
                    }
                    Some(i) => {
                        if let Some(entry) = facts.moves.get_mut(i) {
                            entry.1 = total;
                        }
                    }
                    None if !final_response => {
                        if facts.moves.len() >= MAX_MOVES_PER_ASSOC {
                            facts.moves.remove(0);
                        }
                        facts.moves.push((*message_id, total));
                    }
                    None => {}
                }
                let n = total - before;
                let facts = facts.clone();
                if n > 0 {
                    if let Some(key) = peer_key(&facts) {
                        // The data sets go to the move destination: instances only.
                        self.retrieve(now, &key, n, 0, (*assoc, &facts), &mut out);
                    }
                }
            }
            Event::AssociationReleased { assoc, .. } | Event::AssociationAborted { assoc, .. } => {
                if let Some(facts) = self.assocs.remove(assoc) {
                    if facts.accepted && facts.requests == 0 {
                        if let Some(src) = facts.source {
                            self.count(
                                now_ms,
                                RuleKind::ReconIdle,
                                &Key::Source(src.ip()),
                                1,
                                Counted::AssociationsWithoutRequest,
                                None,
                                (*assoc, &facts),
                                &mut out,
                            );
                        }
                    }
                }
            }
            _ => {}
        }
        out
    }

    /// Adds `n` to `key` in every rule of `kind`; each that reaches its threshold fires.
    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        now: u64,
        kind: RuleKind,
        key: &Key,
        n: u64,
        counted: Counted,
        level: Option<&str>,
        (assoc, facts): (AssocId, &AssocFacts),
        out: &mut Vec<Detection>,
    ) {
        for armed in self.rules.iter_mut().filter(|a| a.rule.kind == kind) {
            let State::Counts(table) = &mut armed.state else {
                continue;
            };
            let rule = &armed.rule;
            let w = table.entry_or_insert_with(key.clone(), Window::default);
            let total = w.add(now, n, rule.window_ms());
            if w.fires(now, total, rule.threshold, rule.window_ms()) {
                out.push(detection(
                    rule,
                    assoc,
                    facts,
                    Evidence::Count {
                        counted,
                        count: total,
                        threshold: rule.threshold,
                        window_secs: rule.window_secs,
                        level: level.map(str::to_string),
                    },
                ));
            }
        }
    }

    /// Adds `instances` and `bytes` retrieved by `key` to every bulk-retrieve rule; each
    /// window that reaches its limit (configured, or learned after the learning period) fires.
    fn retrieve(
        &mut self,
        now: Now,
        key: &Key,
        instances: u64,
        bytes: u64,
        (assoc, facts): (AssocId, &AssocFacts),
        out: &mut Vec<Detection>,
    ) {
        let mono = now.mono_ms;
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::BulkRetrieve)
        {
            let State::Retrievals(table) = &mut armed.state else {
                continue;
            };
            let rule = &armed.rule;
            let w = rule.window_ms();
            let r = table.entry_or_insert_with(key.clone(), Retrieval::default);
            let n_total = r.instances.add(mono, instances, w);
            let b_total = r.bytes.add(mono, bytes, w);
            let learning = rule.baseline == Baseline::Learned;
            // The learning period runs on the wall clock (it survives restarts); without one
            // the baseline is not learned.
            let learned = match (learning, now.wall) {
                (true, Some(wall)) => {
                    let since = *r.since_ms.get_or_insert_with(|| {
                        self.baselines_dirty = true;
                        wall.unix_ms
                    });
                    wall.unix_ms.saturating_sub(since) >= rule.learning_ms()
                }
                _ => false,
            };
            if learning && now.wall.is_some() && !learned {
                if n_total > r.peak_instances {
                    r.peak_instances = n_total;
                    self.baselines_dirty = true;
                }
                if b_total > r.peak_bytes {
                    r.peak_bytes = b_total;
                    self.baselines_dirty = true;
                }
            }
            let window_secs = rule.window_secs;
            let learned_limit =
                |configured: Option<u64>, peak: u64| -> Option<(u64, Option<u64>)> {
                    let raised = rule.factor.saturating_mul(peak);
                    match configured {
                        Some(c) if !learned || peak == 0 || c >= raised => Some((c, None)),
                        _ if learned && peak > 0 => Some((raised, Some(peak))),
                        _ => None,
                    }
                };
            for (counted, added, total, limit) in [
                (
                    Counted::InstancesRetrieved,
                    instances,
                    n_total,
                    learned_limit(Some(rule.threshold), r.peak_instances),
                ),
                (
                    Counted::BytesRetrieved,
                    bytes,
                    b_total,
                    learned_limit(rule.max_bytes, r.peak_bytes),
                ),
            ] {
                let Some((limit, peak)) = limit else { continue };
                if added == 0 {
                    continue;
                }
                let window = match counted {
                    Counted::BytesRetrieved => &mut r.bytes,
                    _ => &mut r.instances,
                };
                if !window.fires(mono, total, limit, w) {
                    continue;
                }
                let evidence = match peak {
                    None => Evidence::Count {
                        counted,
                        count: total,
                        threshold: limit,
                        window_secs,
                        level: None,
                    },
                    Some(peak) => Evidence::OverBaseline {
                        counted,
                        count: total,
                        limit,
                        peak,
                        factor: rule.factor,
                        window_secs,
                    },
                };
                out.push(detection(rule, assoc, facts, evidence));
            }
        }
    }

    /// An admitted association of a peer at a local time its hours or learned profile do not
    /// cover (a stolen identity used at night); one detection per peer per hour.
    fn off_hours(
        &mut self,
        now: Now,
        assoc: AssocId,
        facts: &AssocFacts,
        out: &mut Vec<Detection>,
    ) {
        let (Some(wall), Some(peer)) = (now.wall, facts.peer.as_deref()) else {
            return;
        };
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::OffHours)
        {
            let rule = &armed.rule;
            if !applies(rule, peer) {
                continue;
            }
            let State::Profiles(table) = &mut armed.state else {
                continue;
            };
            let p = table.entry_or_insert_with(peer.to_string(), Profile::default);
            let basis = if rule.hours.is_empty() {
                // The association is learned whatever it fires: a peer's new working hours
                // become its profile (one detection per slot, not one a week forever).
                let seen = p.learn(wall);
                let since = p.since_ms.unwrap_or(wall.unix_ms);
                let history = wall.unix_ms.saturating_sub(since);
                (history >= rule.learning_ms() && u64::from(seen) < rule.threshold).then(|| {
                    OffHoursBasis::Profile {
                        seen: u64::from(seen),
                        days: u64::try_from(history / week::DAY_MS).unwrap_or(0),
                        threshold: rule.threshold,
                    }
                })
            } else {
                let minute = wall.minute_of_week();
                (!rule.hours.iter().any(|h| h.contains(minute))).then(|| OffHoursBasis::Hours {
                    hours: rule.hours.iter().map(|h| h.text.clone()).collect(),
                })
            };
            let Some(basis) = basis else { continue };
            let hour = wall.hour_index();
            if p.last_fired == Some(hour) {
                continue;
            }
            p.last_fired = Some(hour);
            out.push(detection(
                rule,
                assoc,
                facts,
                Evidence::OffHours {
                    weekday: week::DAYS
                        .get(wall.weekday())
                        .copied()
                        .unwrap_or("?")
                        .to_string(),
                    hour: wall.hour(),
                    basis,
                },
            ));
        }
    }

    fn signatures(
        &mut self,
        now: u64,
        assoc: AssocId,
        facts: &AssocFacts,
        out: &mut Vec<Detection>,
    ) {
        let Some(src) = facts.source else { return };
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::ScannerSignature)
        {
            let rule = &armed.rule;
            let Some(sig) = rule.signatures.iter().find(|s| matches(s, facts)) else {
                continue;
            };
            let State::Counts(table) = &mut armed.state else {
                continue;
            };
            let w = table.entry_or_insert_with(Key::Source(src.ip()), Window::default);
            let total = w.add(now, 1, rule.window_ms());
            if w.fires(now, total, rule.threshold, rule.window_ms()) {
                out.push(detection(
                    rule,
                    assoc,
                    facts,
                    Evidence::Signature {
                        signature: sig.name.clone(),
                        implementation_version: facts.implementation_version.clone(),
                    },
                ));
            }
        }
    }

    fn bulk_query(
        &mut self,
        now: u64,
        assoc: AssocId,
        facts: &AssocFacts,
        level: Option<&str>,
        subject: Option<&Subject>,
        out: &mut Vec<Detection>,
    ) {
        let Some(level) = level.map(|l| trimmed(l).to_ascii_uppercase()) else {
            return;
        };
        // The whole list: no patient narrowed down, and at STUDY level no study either (a
        // query by Accession Number or Study Instance UID is an ordinary worklist lookup).
        let everyone = match subject {
            None => true,
            Some(s) => {
                universal(&s.patient_id)
                    && universal(&s.patient_name)
                    && (level == "PATIENT"
                        || (universal(&s.accession_number) && universal(&s.study_uid)))
            }
        };
        if !everyone {
            return;
        }
        let Some(key) = peer_key(facts) else { return };
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::BulkQuery)
        {
            let rule = &armed.rule;
            if !rule.levels.contains(&level) {
                continue;
            }
            if facts
                .peer
                .as_ref()
                .is_some_and(|p| rule.allow.iter().any(|a| a == p))
            {
                continue;
            }
            let State::Counts(table) = &mut armed.state else {
                continue;
            };
            let w = table.entry_or_insert_with(key.clone(), Window::default);
            let total = w.add(now, 1, rule.window_ms());
            if w.fires(now, total, rule.threshold, rule.window_ms()) {
                out.push(detection(
                    rule,
                    assoc,
                    facts,
                    Evidence::Count {
                        counted: Counted::UniversalQueries,
                        count: total,
                        threshold: rule.threshold,
                        window_secs: rule.window_secs,
                        level: Some(level.clone()),
                    },
                ));
            }
        }
    }

    fn new_destination(
        &mut self,
        _now: u64,
        assoc: AssocId,
        facts: &AssocFacts,
        dest: &str,
        out: &mut Vec<Detection>,
    ) {
        let Some(key) = peer_key(facts) else { return };
        let dest = trimmed(dest).to_string();
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::NewMoveDestination)
        {
            let rule = &armed.rule;
            let State::Destinations(table) = &mut armed.state else {
                continue;
            };
            let d = table.entry_or_insert_with(key.clone(), Destinations::default);
            let seen = d.known.get_mut(&dest).is_some();
            if !seen && d.moves >= rule.learning {
                out.push(detection(
                    rule,
                    assoc,
                    facts,
                    Evidence::NewDestination {
                        destination: dest.clone(),
                        known: d.known.len(),
                        moves_seen: d.moves,
                        learning: rule.learning,
                    },
                ));
            }
            d.moves = d.moves.saturating_add(1);
            d.known.entry_or_insert_with(dest.clone(), || ());
        }
    }

    fn drift(&mut self, now: u64, assoc: AssocId, facts: &AssocFacts, out: &mut Vec<Detection>) {
        let Some(peer) = facts.peer.clone() else {
            return;
        };
        for armed in self
            .rules
            .iter_mut()
            .filter(|a| a.rule.kind == RuleKind::IdentityDrift)
        {
            let rule = &armed.rule;
            let State::Identities(table) = &mut armed.state else {
                continue;
            };
            let values: Vec<(DriftAttribute, String)> = rule
                .attributes
                .iter()
                .map(|a| (*a, attribute(facts, *a)))
                .collect();
            let first = table.entry_or_insert_with(peer.clone(), || FirstSeen {
                values: values.clone(),
                last_fired: None,
            });
            let drifts: Vec<Drift> = first
                .values
                .iter()
                .zip(&values)
                .filter(|((_, a), (_, b))| a != b)
                .map(|((attr, a), (_, b))| Drift {
                    attribute: *attr,
                    first: a.clone(),
                    now: b.clone(),
                })
                .collect();
            if drifts.is_empty() {
                continue;
            }
            let quiet = first
                .last_fired
                .is_none_or(|t| now.saturating_sub(t) >= rule.window_ms());
            if quiet {
                first.last_fired = Some(now);
                out.push(detection(
                    rule,
                    assoc,
                    facts,
                    Evidence::IdentityDrift { drifts },
                ));
            }
        }
    }
}

/// Whether an off-hours rule applies to `peer` (its `peers`, or every peer).
fn applies(rule: &Rule, peer: &str) -> bool {
    rule.peers
        .as_ref()
        .is_none_or(|ps| ps.iter().any(|p| p == peer))
}

/// Counts per peer go under its policy name; before admission (or for an association the
/// table no longer holds) under its source address.
fn peer_key(facts: &AssocFacts) -> Option<Key> {
    match (&facts.peer, facts.source) {
        (Some(p), _) => Some(Key::Peer(p.clone())),
        (None, Some(s)) => Some(Key::Source(s.ip())),
        (None, None) => None,
    }
}

fn attribute(facts: &AssocFacts, a: DriftAttribute) -> String {
    let v = match a {
        DriftAttribute::ImplementationClassUid => facts.implementation_class_uid.clone(),
        DriftAttribute::ImplementationVersion => facts.implementation_version.clone(),
        DriftAttribute::Certificate => facts.certificate.clone(),
        DriftAttribute::Address => facts.source.map(|s| s.ip().to_string()),
    };
    v.unwrap_or_else(|| "none".to_string())
}

fn matches(sig: &Signature, facts: &AssocFacts) -> bool {
    let eq = |want: &Option<String>, got: &Option<String>| match want {
        None => true,
        Some(w) => got.as_deref().is_some_and(|g| trimmed(g) == trimmed(w)),
    };
    eq(&sig.calling_ae, &facts.calling_ae)
        && eq(&sig.called_ae, &facts.called_ae)
        && eq(&sig.implementation_version, &facts.implementation_version)
}

fn detection(rule: &Rule, assoc: AssocId, facts: &AssocFacts, evidence: Evidence) -> Detection {
    Detection {
        rule: rule.name.clone(),
        kind: rule.kind,
        response: rule.response,
        assoc: Some(assoc),
        source: facts.source,
        peer: facts.peer.clone(),
        calling_ae: facts.calling_ae.clone(),
        called_ae: facts.called_ae.clone(),
        certificate: facts.certificate.clone(),
        block_by: rule.block_by,
        evidence,
    }
}
