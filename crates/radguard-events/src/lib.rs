//! The typed events every part of Radguard emits, and the bus that carries them.
//!
//! The gateway emits one [`Event`] per association step, decision and refusal. Today the bus
//! writes each event as one structured JSON log line (`tracing`); the audit trail, detectors and
//! the dashboard subscribe to the same bus ([`EventBus::subscribe`]).
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
    },
    InstanceStored {
        assoc: AssocId,
        sop_instance: String,
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
    AssociationReleased {
        assoc: AssocId,
        bytes_from_client: u64,
        bytes_from_upstream: u64,
    },
    AssociationAborted {
        assoc: AssocId,
        blame: Blame,
        why: String,
    },
    ShutdownStarted {
        running: usize,
    },
    ShutdownFinished {
        aborted: usize,
    },
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
        match serde_json::to_string(&record) {
            Ok(json) => tracing::info!(target: "radguard::event", event = %json),
            Err(e) => tracing::error!(target: "radguard::event", "event not serialisable: {e}"),
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
}
