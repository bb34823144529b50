//! Detectors fed by the gateway's events: reconnaissance (refused associations, associations
//! without a request, scanner signatures), bulk query (universal C-FIND at PATIENT or STUDY
//! level), bulk retrieve (instances per peer: C-GET sub-operations the client acknowledged and
//! C-MOVE completed sub-operations; C-MOVE to a new destination) and identity drift
//! (a known peer with another implementation, certificate or address).
//!
//! Pure logic: no I/O, no clock, no tasks. The caller feeds every [`Event`] with the time it
//! chose ([`Detectors::observe`], milliseconds of a monotonic clock) and gets the
//! [`Detection`]s back; `radguard serve` turns each into a `security-alert` event (alert kind
//! `detection`), which the audit trail records as a PS3.15 A.5 Security Alert (110113).
//!
//! **Bounded memory whatever the peers send.** Every table (associations followed, each rule's
//! sources or peers, the first-seen identities) has a bound from the config
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
mod window;

use std::net::{IpAddr, SocketAddr};

use radguard_events::{AssocId, Blame, Event, IntegrityStore, SubOperations, Subject};
use serde::Serialize;

pub use config::{
    default_rules, default_signatures, BlockBy, DetectConfig, DriftAttribute, Response, Rule,
    RuleKind, Signature,
};
pub use table::Lru;
use window::Window;

/// What was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Counted {
    RefusedAssociations,
    AssociationsWithoutRequest,
    UniversalQueries,
    InstancesRetrieved,
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
                let what = match counted {
                    Counted::RefusedAssociations => "refused associations",
                    Counted::AssociationsWithoutRequest => "associations without a request",
                    Counted::UniversalQueries => "universal queries",
                    Counted::InstancesRetrieved => "instances retrieved",
                };
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

#[derive(Debug)]
enum State {
    Counts(Lru<Key, Window>),
    Destinations(Lru<Key, Destinations>),
    Identities(Lru<String, FirstSeen>),
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
                    _ => State::Counts(Lru::new(cap)),
                };
                Armed { rule, state }
            })
            .collect();
        Detectors {
            assocs: Lru::new(config.max_associations),
            rules,
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
            })
            .max()
            .unwrap_or(0);
        (self.assocs.len(), largest)
    }

    /// Feeds one event seen at `now_ms` (a monotonic clock in milliseconds); returns what
    /// fired.
    pub fn observe(&mut self, now_ms: u64, event: &Event) -> Vec<Detection> {
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
                ..
            } if command == "CStoreRsp" && (*status == 0 || (0xB000..=0xBFFF).contains(status)) => {
                let facts = self.assocs.peek(assoc).cloned().unwrap_or_default();
                if let Some(key) = peer_key(&facts) {
                    self.count(
                        now_ms,
                        RuleKind::BulkRetrieve,
                        &key,
                        1,
                        Counted::InstancesRetrieved,
                        None,
                        (*assoc, &facts),
                        &mut out,
                    );
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
                        self.count(
                            now_ms,
                            RuleKind::BulkRetrieve,
                            &key,
                            n,
                            Counted::InstancesRetrieved,
                            None,
                            (*assoc, &facts),
                            &mut out,
                        );
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
