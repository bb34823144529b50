//! The block list as data: entries, matching, extension, expiry, removal, the bound.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most entries kept at once (a few hundred bytes each).
pub const DEFAULT_MAX_ENTRIES: usize = 65_536;

/// Who an entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Subject {
    /// The source IP address of the connection (any port).
    Address(IpAddr),
    /// The calling AE title, compared without its padding (PS3.8 §9.3.2: trailing spaces are
    /// not significant).
    CallingAe(String),
    /// The SHA-256 of the client's TLS certificate, lowercase hex.
    Certificate(String),
}

/// A subject written in a way `radguard block` does not understand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("an AE title is 1 to 16 characters, not only spaces, without backslash or control characters (got {0:?})")]
    CallingAe(String),
    #[error("a certificate is named by its SHA-256: 64 hex digits (got {0:?})")]
    Certificate(String),
    #[error("{0:?} is not a subject: address=IP, calling-ae=AE or certificate=SHA256 (or a bare IP address)")]
    Unknown(String),
}

impl Subject {
    /// An address subject.
    pub fn address(ip: IpAddr) -> Self {
        Subject::Address(ip)
    }

    /// A calling AE subject, checked and trimmed (PS3.5 §6.2 AE: 16 characters at most, no
    /// backslash or control characters).
    pub fn calling_ae(ae: &str) -> Result<Self, SubjectError> {
        let t = ae.trim_matches(' ');
        if t.is_empty() || t.len() > 16 || t.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(SubjectError::CallingAe(ae.to_string()));
        }
        Ok(Subject::CallingAe(t.to_string()))
    }

    /// A certificate subject: its SHA-256 as 64 hex digits (stored lowercase).
    pub fn certificate(sha256: &str) -> Result<Self, SubjectError> {
        let t = sha256.trim().replace(':', "");
        if t.len() != 64 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(SubjectError::Certificate(sha256.to_string()));
        }
        Ok(Subject::Certificate(t.to_ascii_lowercase()))
    }

    /// The kind's name: `address`, `calling-ae`, `certificate`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::Address(_) => "address",
            Subject::CallingAe(_) => "calling-ae",
            Subject::Certificate(_) => "certificate",
        }
    }

    /// The value alone (address, AE title, fingerprint).
    pub fn value(&self) -> String {
        match self {
            Subject::Address(ip) => ip.to_string(),
            Subject::CallingAe(ae) => ae.clone(),
            Subject::Certificate(c) => c.clone(),
        }
    }
}

/// `address=IP`, `calling-ae=AE`, `certificate=SHA256`: what `radguard block` prints and reads.
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind(), self.value())
    }
}

impl FromStr for Subject {
    type Err = SubjectError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some(("address", v)) => v
                .trim()
                .parse()
                .map(Subject::Address)
                .map_err(|_| SubjectError::Address(v.to_string())),
            Some(("calling-ae", v)) => Subject::calling_ae(v),
            Some(("certificate", v)) => Subject::certificate(v),
            _ => s
                .trim()
                .parse()
                .map(Subject::Address)
                .map_err(|_| SubjectError::Unknown(s.to_string())),
        }
    }
}

/// What the gateway does with a matching association request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum Action {
    /// Refuse every new association (and cut the running ones when the entry is made).
    Block,
    /// Admit at most `per_minute` associations in any 60 seconds.
    Throttle { per_minute: u32 },
}

impl Action {
    /// `block` or `throttle N/min`.
    pub fn describe(&self) -> String {
        match self {
            Action::Block => "block".into(),
            Action::Throttle { per_minute } => format!("throttle {per_minute}/min"),
        }
    }

    fn same_kind(&self, other: &Action) -> bool {
        matches!(
            (self, other),
            (Action::Block, Action::Block) | (Action::Throttle { .. }, Action::Throttle { .. })
        )
    }
}

/// Who made an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A detection rule's response.
    Detection,
    /// An operator (`radguard block add`).
    Operator,
}

/// An operator's removal, not yet reported by the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub at_unix_ms: u64,
    /// Who removed it (the operator's login name, or "operator").
    pub by: String,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub subject: Subject,
    #[serde(flatten)]
    pub action: Action,
    /// The rule that made it (or `operator`).
    pub rule: String,
    /// Why: the detection's summary or the operator's text (no PHI).
    pub reason: String,
    pub since_unix_ms: u64,
    pub until_unix_ms: u64,
    pub origin: Origin,
    /// The gateway has emitted (and so audited) this entry's creation.
    #[serde(default)]
    pub announced: bool,
    /// Removed by an operator; the gateway reports the removal, then drops the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

impl Entry {
    /// In force at `now`: not removed, not expired.
    pub fn in_force(&self, now_unix_ms: u64) -> bool {
        self.removed.is_none() && now_unix_ms < self.until_unix_ms
    }
}

/// What is known of an association request, for [`BlockList::matching`].
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub ip: IpAddr,
    pub calling_ae: &'a str,
    /// SHA-256 of the client certificate, lowercase hex (TLS listeners).
    pub cert_sha256: Option<&'a str>,
}

/// Which entries a removal means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Id(u64),
    Subject(Subject),
}

impl FromStr for Selector {
    type Err = SubjectError;

    /// A number is an id; anything else a subject.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<u64>() {
            Ok(id) => Ok(Selector::Id(id)),
            Err(_) => s.parse().map(Selector::Subject),
        }
    }
}

/// What [`BlockList::add`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The entry as it is now.
    pub entry: Entry,
    /// An entry for the same subject and action existed: it was extended, not duplicated.
    pub extended: bool,
    /// The list was full: this entry made room (to be audited as removed).
    pub evicted: Option<Entry>,
}

/// The list. Serialised as `{"version":1,"next_id":..,"entries":[..]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub struct BlockList {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    /// Ids by subject (at most one block and one throttle each).
    index: HashMap<Subject, Vec<u64>>,
    max: usize,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    next_id: u64,
    entries: Vec<Entry>,
}

impl From<Stored> for BlockList {
    fn from(s: Stored) -> Self {
        let mut l = BlockList::new();
        for e in s.entries {
            l.next_id = l.next_id.max(e.id.saturating_add(1));
            l.insert(e);
        }
        l.next_id = l.next_id.max(s.next_id);
        l
    }
}

impl From<BlockList> for Stored {
    fn from(l: BlockList) -> Self {
        Stored {
            version: 1,
            next_id: l.next_id,
            entries: l.entries.into_values().collect(),
        }
    }
}

impl Default for BlockList {
    fn default() -> Self {
        Self::new()
    }
}

impl BlockList {
    /// An empty list bounded by [`DEFAULT_MAX_ENTRIES`].
    pub fn new() -> Self {
        Self::with_max(DEFAULT_MAX_ENTRIES)
    }

    /// An empty list of at most `max` entries (at least 1).
    pub fn with_max(max: usize) -> Self {
        BlockList {
            next_id: 1,
            entries: BTreeMap::new(),
            index: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Sets the bound (entries past it are evicted at the next [`BlockList::add`]).
    pub fn set_max(&mut self, max: usize) {
        self.max = max.max(1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, by id (tombstones included).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    fn insert(&mut self, e: Entry) {
        self.index.entry(e.subject.clone()).or_default().push(e.id);
        self.entries.insert(e.id, e);
    }

    fn take(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if let Some(ids) = self.index.get_mut(&e.subject) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.index.remove(&e.subject);
            }
        }
        Some(e)
    }

    /// Adds an entry, or extends the one for the same subject and action (its end becomes the
    /// later of both; a throttle takes the new rate; a removed one comes back). `announced`
    /// says whether the caller reports the change itself (the gateway) or leaves it to the
    /// gateway (`radguard block add`).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        subject: Subject,
        action: Action,
        rule: &str,
        reason: &str,
        origin: Origin,
        now_unix_ms: u64,
        until_unix_ms: u64,
        announced: bool,
    ) -> Added {
        let existing = self.index.get(&subject).and_then(|ids| {
            ids.iter().copied().find(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|e| e.action.same_kind(&action))
            })
        });
        if let Some(e) = existing.and_then(|id| self.entries.get_mut(&id)) {
            e.until_unix_ms = e.until_unix_ms.max(until_unix_ms);
            e.action = action;
            e.rule = rule.to_string();
            e.reason = reason.to_string();
            e.origin = origin;
            e.removed = None;
            e.announced = announced;
            return Added {
                entry: e.clone(),
                extended: true,
                evicted: None,
            };
        }
        let evicted = if self.entries.len() >= self.max {
            self.evict()
        } else {
            None
        };
        let id = self.next_id;
        self.next_id = self.next_id.saturating_add(1);
        let entry = Entry {
            id,
            subject,
            action,
            rule: rule.to_string(),
            reason: reason.to_string(),
            since_unix_ms: now_unix_ms,
            until_unix_ms,
            origin,
            announced,
            removed: None,
        };
        self.insert(entry.clone());
        Added {
            entry,
            extended: false,
            evicted,
        }
    }

    /// The oldest entry a detection made, else the oldest entry.
    fn evict(&mut self) -> Option<Entry> {
        let id = self
            .entries
            .values()
            .find(|e| e.origin == Origin::Detection)
            .or_else(|| self.entries.values().next())
            .map(|e| e.id)?;
        self.take(id)
    }

    /// The entry in force at `now` that applies to an association request: a block before a
    /// throttle, whichever subject it names. At most three hash lookups.
    pub fn matching(&self, facts: &Facts<'_>, now_unix_ms: u64) -> Option<&Entry> {
        let mut subjects = vec![Subject::Address(facts.ip)];
        if let Ok(ae) = Subject::calling_ae(facts.calling_ae) {
            subjects.push(ae);
        }
        if let Some(c) = facts.cert_sha256 {
            subjects.push(Subject::Certificate(c.to_ascii_lowercase()));
        }
        let mut throttle = None;
        for s in &subjects {
            for id in self.index.get(s).into_iter().flatten() {
                let Some(e) = self.entries.get(id).filter(|e| e.in_force(now_unix_ms)) else {
                    continue;
                };
                match e.action {
                    Action::Block => return Some(e),
                    Action::Throttle { .. } => {
                        throttle.get_or_insert(e);
                    }
                }
            }
        }
        throttle
    }

    /// Removes and returns the entries whose end is past (`until <= now`), tombstones apart.
    pub fn expire(&mut self, now_unix_ms: u64) -> Vec<Entry> {
        let ids: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.removed.is_none() && e.until_unix_ms <= now_unix_ms)
            .map(|e| e.id)
            .collect();
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// The earliest end among the entries in force, for the expiry timer.
    pub fn next_expiry(&self) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.removed.is_none())
            .map(|e| e.until_unix_ms)
            .min()
    }

    /// Removes the selected entries now (no tombstone) and returns them.
    pub fn remove(&mut self, sel: &Selector) -> Vec<Entry> {
        let ids = self.selected(sel);
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Marks the selected entries removed (tombstones for the gateway to report) and returns
    /// them as marked; entries already marked are not selected again.
    pub fn mark_removed(&mut self, sel: &Selector, by: &str, now_unix_ms: u64) -> Vec<Entry> {
        let ids = self.selected(sel);
        let mut out = Vec::new();
        for id in ids {
            if let Some(e) = self.entries.get_mut(&id) {
                e.removed = Some(Removed {
                    at_unix_ms: now_unix_ms,
                    by: by.to_string(),
                });
                out.push(e.clone());
            }
        }
        out
    }

    fn selected(&self, sel: &Selector) -> Vec<u64> {
        let live = |id: &u64| self.entries.get(id).is_some_and(|e| e.removed.is_none());
        match sel {
            Selector::Id(id) => Some(*id).into_iter().filter(live).collect(),
            Selector::Subject(s) => self
                .index
                .get(s)
                .into_iter()
                .flatten()
                .copied()
                .filter(live)
                .collect(),
        }
    }

    /// Drops the tombstones and returns them (the gateway reports each removal).
    pub fn take_removed(&mut self) -> Vec<Entry> {
        let ids: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.removed.is_some())
            .map(|e| e.id)
            .collect();
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Marks every entry not reported yet as reported and returns them (the gateway reports
    /// each addition).
    pub fn take_unannounced(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        for e in self.entries.values_mut() {
            if !e.announced && e.removed.is_none() {
                e.announced = true;
                out.push(e.clone());
            }
        }
        out
    }
}
