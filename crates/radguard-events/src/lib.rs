//! The typed events every part of Radguard emits, and the bus that carries them.
//!
//! The gateway emits one [`Event`] per association step, decision and refusal. Today the bus
//! writes each event as one structured JSON log line (`tracing`); the audit trail, detectors and
//! the dashboard subscribe to the same bus ([`EventBus::subscribe`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// Identifies one association for its whole life (unique within one gateway process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AssocId(pub u64);

impl std::fmt::Display for AssocId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "A{}", self.0)
    }
}

/// Who is responsible for a failure; feeds the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Blame {
    /// The client (calling peer) sent something wrong or went away.
    Peer,
    /// The upstream (called destination) failed or refused.
    Upstream,
    /// The gateway itself (limits, shutdown, local I/O).
    Local,
}

/// The outcome of storing an instance in the built-in vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VaultOutcome {
    Stored,
    DuplicateIdentical,
    Conflict,
    Failed,
}

/// The kinds of security alert the gateway raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A peer's identity did not match the policy (unknown AE, wrong address).
    PeerNotRecognized,
    /// A request the policy does not allow.
    NotAuthorized,
    /// A protocol violation (malformed or unexpected PDU, bad command).
    ProtocolViolation,
    /// An instance arrived with a known SOP Instance UID but different content.
    InstanceConflict,
    /// A data set the data-set firewall refused (or, at level `log`, would have): PS3.5
    /// violations an unpatched parser behind the gateway could choke on or misread.
    MalformedDataSet,
    /// A bound was reached (a hold route's quota or the disk high-water mark): requests are
    /// refused with 0xA700 until it clears.
    ResourceExhausted,
    /// A held instance has waited for its destination longer than the route's
    /// `hold_max_age_secs`.
    HoldOverdue,
    /// Vault objects cannot be made immutable (the file system has no such flag, or the
    /// process lacks CAP_LINUX_IMMUTABLE): ransomware with root could delete or encrypt them.
    /// Emitted once at start with `[vault] immutable = "auto"`.
    VaultNotImmutable,
    /// A held instance its destination refused `hold_max_attempts` times with a failure
    /// status was parked: the rest of its destination's queue goes on without it.
    HoldParked,
    /// The vault's scrub found a stored object missing, changed, unreadable, encrypted-looking,
    /// or a file in its object tree the index does not know.
    VaultIntegrity,
    /// Many vault objects changed or became encrypted-looking within a short window: the
    /// pattern of ransomware encrypting an archive in place.
    Ransomware,
}

/// Where an instance's first content is kept, against which a later one is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntegrityStore {
    /// The integrity ledger of an origin route (radguard-ledger).
    Ledger,
    /// The built-in vault (radguard-vault).
    Vault,
}

impl IntegrityStore {
    pub fn name(self) -> &'static str {
        match self {
            IntegrityStore::Ledger => "ledger",
            IntegrityStore::Vault => "vault",
        }
    }
}

/// Whose images a request concerned: the identifying attributes from the head of its data set
/// (C-STORE) or identifier (C-FIND/MOVE/GET). These are patient identifiers: they go to the audit
/// store and to subscribers, never into the ordinary log lines ([`Event::for_log`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub accession_number: Option<String>,
}

/// A query/retrieve identifier as received (at most 64 KiB are kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identifier {
    pub transfer_syntax: String,
    /// Query/Retrieve Level (0008,0052).
    pub level: Option<String>,
    #[serde(skip)]
    pub dataset: Vec<u8>,
    /// True when the identifier was longer than what was kept.
    pub truncated: bool,
}

/// The TLS session of a client connection.
/// The Number of Remaining/Completed/Failed/Warning Sub-operations of a C-MOVE-RSP or
/// C-GET-RSP (0000,1020)-(0000,1023), PS3.7 §9.1.3/§9.1.4. Each is absent when the response
/// does not carry it (a final response may omit Remaining; a peer may omit any).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsFacts {
    pub protocol: String,
    pub cipher_suite: String,
    pub peer_subject: Option<String>,
    pub peer_cert_sha256: Option<String>,
}

/// The User Identity a client presented (never its passcode or token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserIdentityInfo {
    /// PS3.7 D.3.3.7 type: 1 username, 2 username + passcode, 3 Kerberos, 4 SAML, 5 JWT.
    pub kind: u8,
    /// The username for types 1 and 2.
    pub user: Option<String>,
}

/// Everything the gateway reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Listening {
        addr: SocketAddr,
        ae_title: String,
    },
    AssociationRequested {
        assoc: AssocId,
        source: SocketAddr,
        calling_ae: String,
        called_ae: String,
        implementation_class_uid: String,
        implementation_version: Option<String>,
        contexts: usize,
        /// TLS session facts when the client connected to a TLS listener.
        tls: Option<TlsFacts>,
        /// The User Identity presented (removed from log lines).
        user_identity: Option<UserIdentityInfo>,
    },
    AssociationRefused {
        assoc: AssocId,
        source: SocketAddr,
        calling_ae: Option<String>,
        called_ae: Option<String>,
        result: u8,
        rj_source: u8,
        reason: u8,
        blame: Blame,
        why: String,
    },
    AssociationAccepted {
        assoc: AssocId,
        peer: String,
        route: String,
        accepted_contexts: usize,
        rejected_contexts: usize,
        max_pdu_client: u32,
        max_pdu_upstream: u32,
        /// The user the policy authenticated (User Identity type 2 or 5), if any.
        authenticated_user: Option<String>,
    },
    ContextRejected {
        assoc: AssocId,
        context_id: u8,
        abstract_syntax: String,
        why: String,
    },
    DimseRequest {
        assoc: AssocId,
        message_id: u16,
        command: String,
        sop_class: Option<String>,
        sop_instance: Option<String>,
        move_destination: Option<String>,
        /// C-FIND/C-MOVE/C-GET: the patient and study the identifier names (PHI: removed from
        /// log lines). C-STORE subjects come with the response.
        subject: Option<Subject>,
        /// C-FIND/C-MOVE/C-GET: the identifier as received (PHI: removed from log lines).
        identifier: Option<Identifier>,
    },
    DimseRefused {
        assoc: AssocId,
        message_id: u16,
        command: String,
        status: u16,
        why: String,
    },
    DimseResponse {
        assoc: AssocId,
        message_id: u16,
        command: String,
        status: u16,
        from: Blame,
        sop_class: Option<String>,
        sop_instance: Option<String>,
        /// Patient/study of the request (PHI: removed from log lines).
        subject: Option<Subject>,
        /// C-MOVE-RSP/C-GET-RSP: the sub-operation counts the response carries (PS3.7 §9.1.3,
        /// §9.1.4). Counts only, not PHI.
        sub_operations: Option<SubOperations>,
        /// The C-STORE-RSP of a C-GET sub-operation (PS3.4 C.4.3): the bytes of the data set
        /// the gateway relayed to the client for it (the data PDVs' value fields).
        bytes: Option<u64>,
    },
    InstanceStored {
        assoc: AssocId,
        sop_instance: String,
        /// Patient/study of the instance (PHI: removed from log lines).
        subject: Option<Subject>,
        sha256: Option<String>,
        bytes: u64,
        outcome: VaultOutcome,
    },
    SecurityAlert {
        assoc: Option<AssocId>,
        kind: AlertKind,
        source: Option<SocketAddr>,
        detail: String,
    },
    /// A detection rule fired (radguard-detect, or the relay's inline C-FIND cap): an alert
    /// with the rule's name and kind, its response, and the evidence (counts, thresholds, AE
    /// titles, addresses; no patient data), audited as a PS3.15 A.5 Security Alert (110113).
    Detection {
        assoc: Option<AssocId>,
        source: Option<SocketAddr>,
        /// Who, as the detectors knew it (the association may have ended before the rule
        /// fired): the peer's policy name and the AE titles.
        peer: Option<String>,
        calling_ae: Option<String>,
        called_ae: Option<String>,
        /// The rule's `name` in `[[detect.rule]]`.
        rule: String,
        /// The rule's `kind` (kebab-case).
        rule_kind: String,
        /// What the gateway does about it: `alert`, `throttle`, `block`, `refuse`.
        response: String,
        /// The evidence as the rule types it (radguard-detect `Evidence`, serialized).
        evidence: serde_json::Value,
        /// One line: rule, who, evidence, response.
        detail: String,
    },
    /// An instance arrived whose SOP Instance UID is already kept with different content (the
    /// CT-GAN pattern: a scan altered and sent again under its UID). A fact for the detectors:
    /// the `overwrite` rule turns it into a detection.
    OverwriteAttempt {
        assoc: AssocId,
        store: IntegrityStore,
        sop_instance: String,
        /// Digests (hex) of the content kept first and of the one that arrived: the object's
        /// SHA-256 in the vault, the instance fingerprint in the ledger.
        kept: String,
        arrived: String,
        /// True when the gateway refused the instance; false when it was recorded and relayed.
        refused: bool,
    },
    AssociationReleased {
        assoc: AssocId,
        bytes_from_client: u64,
        bytes_from_upstream: u64,
    },
    /// A relayed association's bytes so far (at most one every 500 ms, after an upstream's
    /// final response): the console shows bytes and rate while a series is sent. Not audited.
    AssociationProgress {
        assoc: AssocId,
        bytes_from_client: u64,
        bytes_from_upstream: u64,
    },
    AssociationAborted {
        assoc: AssocId,
        blame: Blame,
        why: String,
    },
    /// A C-STORE on an origin route was fingerprinted and appended to the integrity ledger.
    InstanceFingerprinted {
        assoc: AssocId,
        sop_instance: String,
        fingerprint: String,
        ledger_index: u64,
        /// The SOP Instance UID was already logged with a different fingerprint.
        conflict: bool,
    },
    /// A C-STORE data set was de-identified on its way out (counts only, no values).
    Deidentified {
        assoc: AssocId,
        message_id: u16,
        new_sop_instance: String,
        uids_replaced: usize,
        private_removed: usize,
        dates_shifted: usize,
        /// Set when an instance with burned-in annotation was let through by the route's policy.
        burned_in_allowed: Option<String>,
    },
    ConfigReloaded {
        ok: bool,
        detail: String,
    },
    /// A block-list entry was made or extended: a detection rule's `block` or `throttle`
    /// response, or an operator's `radguard block add`. `cut`: running associations aborted.
    BlockAdded {
        id: u64,
        /// `address=IP`, `calling-ae=AE` or `certificate=SHA256`.
        subject: String,
        /// `block` or `throttle N/min`.
        action: String,
        rule: String,
        /// The detection's summary or the operator's text (no PHI).
        reason: String,
        until_unix_ms: u64,
        /// `detection` or `operator`.
        origin: String,
        cut: usize,
    },
    /// A block-list entry was removed before its end: by an operator (`radguard block
    /// remove`), or evicted because the list was full (`by` says which).
    BlockRemoved {
        id: u64,
        subject: String,
        action: String,
        rule: String,
        by: String,
    },
    /// A block-list entry reached its end.
    BlockExpired {
        id: u64,
        subject: String,
        action: String,
        rule: String,
    },
    /// An operator's action through the console (acknowledging an alert, removing a block,
    /// a reload) or a refused console login: audited as a PS3.15 A.5 Security Alert (110113).
    /// No token or session id is ever in it.
    AdminAction {
        /// The console user (the `[[admin.token]]` name, `local` without tokens), or `-` for a
        /// failed login.
        user: String,
        role: String,
        /// The HTTP client's address.
        client: String,
        /// `alert-acknowledged`, `block-removed`, `config-reload`, `login-failed`.
        action: String,
        /// What it was done to (`alert 12`, `block 3`), empty when nothing.
        target: String,
        ok: bool,
        detail: String,
    },
    /// The audit trail was read through the console: a PS3.15 A.5.3.2 Audit Log Used (110101).
    AuditLogRead {
        user: String,
        client: String,
        /// The filters, as asked (`kind=..., since=..., limit=...`).
        query: String,
    },
    /// A C-STORE accepted on a hold route while its upstream could not be reached: stored in
    /// the vault (fsync + index) and queued for `dest` before the client's success.
    HoldQueued {
        assoc: AssocId,
        route: String,
        /// `AE@host:port`.
        dest: String,
        sop_instance: String,
        /// Instances of the route waiting, this one included.
        waiting: u64,
    },
    /// A held instance was delivered: the destination answered `status` (success or warning).
    HoldForwarded {
        dest: String,
        sop_instance: String,
        status: u16,
        /// From acceptance to the destination's answer.
        waited_ms: u64,
    },
    /// The forwarder could not deliver (connect, negotiation, a failure status): it retries
    /// after `retry_in_ms` (capped exponential backoff with jitter).
    HoldRetry {
        dest: String,
        failures: u32,
        retry_in_ms: u64,
        why: String,
    },
    /// Instances waiting for `dest` and the oldest one's age (emitted every few seconds while
    /// any wait, and once when the queue empties).
    HoldDepth {
        dest: String,
        waiting: u64,
        oldest_age_secs: u64,
    },
    /// An operator removed a held instance from the queue (`radguard queue drop --yes`); it
    /// stays in the vault and is never forwarded.
    HoldDropped {
        by: String,
        dest: String,
        sop_instance: String,
    },
    /// The vault's scrub found something wrong with one object (also raised as a
    /// `vault-integrity` security alert). No patient data: the object's hash, its SOP Instance
    /// UID when the index knows it, and what was found.
    VaultScrubFinding {
        /// The object's SHA-256 (its name), or the stray file's name when it has none.
        sha256: String,
        sop_instance: Option<String>,
        /// `missing`, `changed`, `unreadable`, `encrypted-looking`, `unindexed`.
        finding: String,
        detail: String,
    },
    /// The scrub finished a full pass over the vault.
    VaultScrubPass {
        objects: u64,
        bytes: u64,
        findings: u64,
        /// From the pass's first object to its last (pauses of the rate limit included).
        duration_ms: u64,
    },
    ShutdownStarted {
        running: usize,
    },
    ShutdownFinished {
        aborted: usize,
    },
}

impl Event {
    /// The event as it may appear in an ordinary log line: patient identifiers removed.
    pub fn for_log(&self) -> std::borrow::Cow<'_, Event> {
        let has_phi = match self {
            Event::DimseResponse { subject, .. } | Event::InstanceStored { subject, .. } => {
                subject.is_some()
            }
            Event::DimseRequest {
                subject,
                identifier,
                ..
            } => subject.is_some() || identifier.is_some(),
            Event::AssociationRequested { user_identity, .. } => user_identity.is_some(),
            _ => false,
        };
        if !has_phi {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut e = self.clone();
        match &mut e {
            Event::DimseResponse { subject, .. } | Event::InstanceStored { subject, .. } => {
                *subject = None
            }
            Event::DimseRequest {
                subject,
                identifier,
                ..
            } => {
                *subject = None;
                *identifier = None;
            }
            Event::AssociationRequested { user_identity, .. } => *user_identity = None,
            _ => {}
        }
        std::borrow::Cow::Owned(e)
    }
}

/// An event with its time (milliseconds since the Unix epoch) and a sequence number.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub seq: u64,
    pub time_ms: u128,
    #[serde(flatten)]
    pub event: Event,
}

/// The one bus. Cheap to clone; emitting never blocks (slow subscribers lose old events and
/// are told how many through `broadcast::error::RecvError::Lagged`).
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<EventRecord>>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus {
            tx,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records an event: one JSON log line, then the subscribers.
    pub fn emit(&self, event: Event) {
        let record = EventRecord {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            event,
        };
        // Serialised only when the log line is wanted (`RADGUARD_LOG=warn` skips it: a relay
        // emits a few events per instance).
        if tracing::enabled!(target: "radguard::event", tracing::Level::INFO) {
            let log_view = EventRecord {
                seq: record.seq,
                time_ms: record.time_ms,
                event: record.event.for_log().into_owned(),
            };
            match serde_json::to_string(&log_view) {
                Ok(json) => tracing::info!(target: "radguard::event", event = %json),
                Err(e) => {
                    tracing::error!(target: "radguard::event", "event not serialisable: {e}")
                }
            }
        }
        // No subscriber is fine: the log line is the record for now.
        let _ = self.tx.send(Arc::new(record));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_in_order() {
        let bus = EventBus::new(8);
        let mut rx = bus.subscribe();
        bus.emit(Event::ShutdownStarted { running: 2 });
        bus.emit(Event::ShutdownFinished { aborted: 0 });
        let a = rx.recv().await.unwrap();
        let b = rx.recv().await.unwrap();
        assert_eq!(a.seq + 1, b.seq);
        assert_eq!(a.event, Event::ShutdownStarted { running: 2 });
        let json = serde_json::to_value(&*b).unwrap();
        assert_eq!(json["event"], "shutdown-finished");
        assert_eq!(json["aborted"], 0);
    }

    #[test]
    fn log_view_has_no_patient_identifiers() {
        let e = Event::InstanceStored {
            assoc: AssocId(1),
            sop_instance: "1.2.3".into(),
            subject: Some(Subject {
                patient_id: Some("PID-SECRET".into()),
                ..Default::default()
            }),
            sha256: None,
            bytes: 1,
            outcome: VaultOutcome::Stored,
        };
        let log = serde_json::to_string(&*e.for_log()).unwrap();
        assert!(!log.contains("PID-SECRET"), "{log}");
        let full = serde_json::to_string(&e).unwrap();
        assert!(full.contains("PID-SECRET"));
        let q = Event::DimseRequest {
            assoc: AssocId(1),
            message_id: 1,
            command: "CFindRq".into(),
            sop_class: None,
            sop_instance: None,
            move_destination: None,
            subject: Some(Subject {
                patient_id: Some("PID-SECRET".into()),
                ..Default::default()
            }),
            identifier: Some(Identifier::default()),
        };
        let log = serde_json::to_string(&*q.for_log()).unwrap();
        assert!(!log.contains("PID-SECRET"), "{log}");
        let a = Event::AssociationRequested {
            assoc: AssocId(1),
            source: "127.0.0.1:1".parse().unwrap(),
            calling_ae: "A".into(),
            called_ae: "B".into(),
            implementation_class_uid: "1.2".into(),
            implementation_version: None,
            contexts: 1,
            tls: None,
            user_identity: Some(UserIdentityInfo {
                kind: 2,
                user: Some("alice-secret".into()),
            }),
        };
        let log = serde_json::to_string(&*a.for_log()).unwrap();
        assert!(!log.contains("alice-secret"), "{log}");
        // A C-MOVE response: the subject goes, the sub-operation counts (not PHI) stay.
        let r = Event::DimseResponse {
            assoc: AssocId(1),
            message_id: 1,
            command: "CMoveRsp".into(),
            status: 0,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: Some(Subject {
                patient_id: Some("PID-SECRET".into()),
                ..Default::default()
            }),
            sub_operations: Some(SubOperations {
                remaining: None,
                completed: Some(24),
                failed: Some(0),
                warning: Some(1),
            }),
            bytes: None,
        };
        let log = serde_json::to_value(&*r.for_log()).unwrap();
        assert!(!log.to_string().contains("PID-SECRET"), "{log}");
        assert_eq!(log["sub_operations"]["completed"], 24, "{log}");
        assert_eq!(log["sub_operations"]["warning"], 1, "{log}");
    }
}
