//! The audit record: what one entry of the trail says.
//!
//! A record is one fact the gateway reported ([`AuditEvent`]), with the time, the association it
//! belongs to and what is known about the peer on that association ([`Peer`]). Facts that today's
//! gateway events do not carry yet (patient IDs, study UIDs, query data sets, TLS and user
//! identity facts) are `Option`s: the records and the ATNA messages gain them as soon as the
//! events do. The chain fields (`node`, `seq`, `prev`) are set by [`crate::chain::seal`].

use serde::{Deserialize, Serialize};

/// Version of the record encoding; part of every entry.
pub const RECORD_VERSION: u32 = 1;

/// One entry of the trail. Its canonical encoding is its compact JSON in field order
/// ([`crate::chain::seal`]); the stored bytes, not a re-encoding, are what the chain hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Encoding version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The chain this record belongs to: one per gateway (several may share a PostgreSQL store).
    pub node: String,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hex SHA-256 of the previous entry's canonical encoding (64 zeros for the first).
    pub prev: String,
    /// When the gateway reported the fact (milliseconds since the Unix epoch, UTC).
    pub time_ms: i64,
    /// The event bus sequence number the record came from (none for records the audit writer
    /// derives itself, such as transfer summaries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    /// The association the fact belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assoc: Option<u64>,
    /// What is known about the peer on that association.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    /// The fact itself.
    pub event: AuditEvent,
}

impl AuditRecord {
    /// A record not yet placed in a chain (`node`, `seq` and `prev` empty).
    pub fn draft(time_ms: i64, assoc: Option<u64>, peer: Option<Peer>, event: AuditEvent) -> Self {
        AuditRecord {
            v: RECORD_VERSION,
            node: String::new(),
            seq: 0,
            prev: String::new(),
            time_ms,
            event_seq: None,
            assoc,
            peer,
            event,
        }
    }

    /// The record's kind (what `--kind` filters on).
    pub fn kind(&self) -> RecordKind {
        self.event.kind()
    }

    /// Every patient ID the record mentions, sorted and without duplicates.
    pub fn patient_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = match &self.event {
            AuditEvent::DimseRequest { patient, .. }
            | AuditEvent::DimseResponse { patient, .. }
            | AuditEvent::InstanceStored { patient, .. } => {
                patient.iter().map(|p| p.id.clone()).collect()
            }
            AuditEvent::TransferBegun { transfer }
            | AuditEvent::InstancesTransferred { transfer } => {
                transfer.patient.iter().map(|p| p.id.clone()).collect()
            }
            _ => Vec::new(),
        };
        ids.retain(|id| !id.is_empty());
        ids.sort();
        ids.dedup();
        ids
    }
}

/// A patient as DICOM identifies one: Patient ID (0010,0020) and, if known, Patient's Name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatientRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// TLS facts of a connection (none for plain TCP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// Subject of the peer's certificate, if it presented one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_subject: Option<String>,
    /// Hex SHA-256 of the peer's certificate (DER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_cert_sha256: Option<String>,
}

/// A PS3.8 User Identity negotiation (never the passcode or token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    /// `username`, `username-passcode`, `kerberos`, `saml` or `jwt`.
    pub kind: String,
    /// The user the peer claimed (username, Kerberos principal, SAML/JWT subject).
    pub user: String,
    /// Whether the gateway accepted the identity (none: not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<bool>,
}

/// Who is on the other end of an association, as far as the gateway knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The peer's socket address (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calling_ae: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_ae: Option<String>,
    /// The peer's name in the policy, once admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The route (upstream) the association was relayed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The upstream's socket address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The gateway's own address the peer connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserIdentity>,
}

impl Peer {
    /// The IP part of `address` (what `--peer` matches besides AE title and policy name).
    pub fn ip(&self) -> Option<String> {
        let a = self.address.as_deref()?;
        match a.parse::<std::net::SocketAddr>() {
            Ok(sa) => Some(sa.ip().to_string()),
            Err(_) => Some(a.to_string()),
        }
    }
}

/// The query a C-FIND (or C-MOVE/C-GET identifier) carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryData {
    /// Query/Retrieve Level (0008,0052), if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Transfer syntax UID of the data set bytes.
    pub transfer_syntax: String,
    /// The identifier data set exactly as received, base64.
    pub dataset_base64: String,
}

/// One side of a transfer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ae_title: Option<String>,
    /// `ip:port` or host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The instances of one SOP Class within a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SopClassRef {
    pub uid: String,
    pub instances: Vec<String>,
}

/// One study in a transfer; `uid` is none while the gateway does not report study UIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub sop_classes: Vec<SopClassRef>,
}

/// How instances moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransferAction {
    /// C-STORE from the calling peer through the gateway.
    Store,
    /// C-MOVE: the called side sends to the move destination.
    Move,
    /// C-GET: the called side sends back to the calling peer.
    Get,
}

/// A set of instances of (at most) one patient moving between two nodes: the subject of the
/// Begin Transferring (110102) and DICOM Instances Transferred (110104) messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub action: TransferAction,
    pub source: Participant,
    pub destination: Participant,
    /// The peer that asked for the transfer when it is neither side (C-MOVE's caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requestor: Option<Participant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientRef>,
    pub studies: Vec<StudyRef>,
    /// Whether every instance listed arrived (one message for successes, one for failures).
    pub succeeded: bool,
    /// Why instances failed (DIMSE status, refusal reason, abort).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl Transfer {
    /// Number of instances listed.
    pub fn instance_count(&self) -> usize {
        self.studies
            .iter()
            .flat_map(|s| &s.sop_classes)
            .map(|c| c.instances.len())
            .sum()
    }
}

/// The rule behind a detection alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionRule {
    pub name: String,
    pub kind: String,
    pub response: String,
    pub evidence: serde_json::Value,
}

/// What happened. Variants mirror `radguard_events::Event` (a detection is a `SecurityAlert` with its rule), plus the records the
/// audit writer itself adds (`TransferBegun`, `InstancesTransferred`, `EventsLost`,
/// `AuditStarted`, `AuditStopped`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AuditEvent {
    ApplicationStart {
        listen: String,
        ae_title: String,
    },
    ApplicationStopping {
        running: u64,
    },
    ApplicationStop {
        aborted: u64,
    },
    AssociationRequested {
        implementation_class_uid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        implementation_version: Option<String>,
        contexts: u64,
    },
    AssociationAccepted {
        accepted_contexts: u64,
        rejected_contexts: u64,
        max_pdu_client: u32,
        max_pdu_upstream: u32,
    },
    AssociationRefused {
        result: u8,
        rj_source: u8,
        reason: u8,
        blame: String,
        why: String,
    },
    ContextRejected {
        context_id: u8,
        abstract_syntax: String,
        why: String,
    },
    DimseRequest {
        message_id: u16,
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sop_class: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sop_instance: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        move_destination: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        study_uid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patient: Option<PatientRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<QueryData>,
    },
    DimseRefused {
        message_id: u16,
        command: String,
        status: u16,
        why: String,
    },
    DimseResponse {
        message_id: u16,
        command: String,
        status: u16,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sop_class: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sop_instance: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        study_uid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patient: Option<PatientRef>,
    },
    InstanceStored {
        sop_instance: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sop_class: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        study_uid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        patient: Option<PatientRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        bytes: u64,
        outcome: String,
    },
    SecurityAlert {
        alert: String,
        detail: String,
        /// Detections: the rule's name, kind and response, and its evidence as typed by the
        /// rule (absent on other alerts and on records written before detections had them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<DetectionRule>,
    },
    AssociationReleased {
        bytes_from_client: u64,
        bytes_from_upstream: u64,
    },
    AssociationAborted {
        blame: String,
        why: String,
    },
    /// Derived: the first instance of a patient on an association was sent (or a C-MOVE/C-GET
    /// asked for instances).
    TransferBegun {
        transfer: Transfer,
    },
    /// Derived at the end of an association: which instances arrived (or failed).
    InstancesTransferred {
        transfer: Transfer,
    },
    /// The audit writer fell behind the event bus and lost events.
    EventsLost {
        count: u64,
    },
    /// The audit writer started recording to `store`.
    AuditStarted {
        store: String,
    },
    /// The audit writer stopped (orderly shutdown).
    AuditStopped {
        records: u64,
    },
    /// The audit trail was read through the operator console (PS3.15 A.5.3.2 Audit Log Used):
    /// by whom (the console user; the client's address is the record's peer address) and what
    /// was asked.
    AuditLogUsed {
        user: String,
        query: String,
    },
}

macro_rules! kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// The kind of a record, as stored in the index and accepted by `--kind`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RecordKind { $($variant),* }

        impl RecordKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [RecordKind] = &[$(RecordKind::$variant),*];

            /// The kebab-case name (same as the JSON `kind` tag).
            pub fn as_str(self) -> &'static str {
                match self { $(RecordKind::$variant => $name),* }
            }
        }

        impl AuditEvent {
            /// The kind of this event.
            pub fn kind(&self) -> RecordKind {
                match self { $(AuditEvent::$variant { .. } => RecordKind::$variant),* }
            }
        }
    };
}

kinds! {
    ApplicationStart => "application-start",
    ApplicationStopping => "application-stopping",
    ApplicationStop => "application-stop",
    AssociationRequested => "association-requested",
    AssociationAccepted => "association-accepted",
    AssociationRefused => "association-refused",
    ContextRejected => "context-rejected",
    DimseRequest => "dimse-request",
    DimseRefused => "dimse-refused",
    DimseResponse => "dimse-response",
    InstanceStored => "instance-stored",
    SecurityAlert => "security-alert",
    AssociationReleased => "association-released",
    AssociationAborted => "association-aborted",
    TransferBegun => "transfer-begun",
    InstancesTransferred => "instances-transferred",
    EventsLost => "events-lost",
    AuditStarted => "audit-started",
    AuditStopped => "audit-stopped",
    AuditLogUsed => "audit-log-used",
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecordKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RecordKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RecordKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown record kind {s:?}; one of: {}", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_json_tags() {
        let samples = vec![
            AuditEvent::ApplicationStart {
                listen: "127.0.0.1:11112".into(),
                ae_title: "RG".into(),
            },
            AuditEvent::EventsLost { count: 3 },
            AuditEvent::DimseRequest {
                message_id: 1,
                command: "CFindRq".into(),
                sop_class: None,
                sop_instance: None,
                move_destination: None,
                study_uid: None,
                patient: None,
                query: None,
            },
        ];
        for e in samples {
            let json = serde_json::to_value(&e).unwrap();
            assert_eq!(json["kind"], e.kind().as_str());
        }
    }

    #[test]
    fn kinds_parse_back() {
        for k in RecordKind::ALL {
            assert_eq!(k.as_str().parse::<RecordKind>(), Ok(*k));
        }
        assert!("bogus".parse::<RecordKind>().is_err());
    }

    #[test]
    fn records_round_trip_and_omit_unknown_facts() {
        let r = AuditRecord::draft(
            5,
            Some(7),
            Some(Peer {
                address: Some("10.0.0.1:4000".into()),
                ..Peer::default()
            }),
            AuditEvent::InstanceStored {
                sop_instance: "1.2.3".into(),
                sop_class: None,
                study_uid: None,
                patient: Some(PatientRef {
                    id: "P1".into(),
                    name: None,
                }),
                sha256: None,
                bytes: 10,
                outcome: "stored".into(),
            },
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("study_uid"), "{json}");
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.patient_ids(), vec!["P1".to_string()]);
        assert_eq!(r.peer.unwrap().ip().as_deref(), Some("10.0.0.1"));
    }
}
