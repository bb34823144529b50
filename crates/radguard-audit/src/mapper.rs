//! From bus events to audit records (pure; no I/O).
//!
//! The [`Mapper`] keeps a small context per open association (peer address, AE titles, policy
//! name, outstanding C-STOREs) so that every record of an association names its peer, and so that
//! at the end of an association it can add one `instances-transferred` summary per patient and
//! outcome, as PS3.15 A.5.3 asks (one message for the successes, one for the failures).

use std::collections::{BTreeMap, HashMap};

use radguard_events::{AlertKind, Blame, Event, EventRecord, Subject, VaultOutcome};

use crate::record::{
    AuditEvent, AuditRecord, DetectionRule, Participant, PatientRef, Peer, SopClassRef, StudyRef,
    Transfer, TransferAction,
};

/// Most associations whose context is kept at once; the oldest are forgotten past this (their
/// records are still written, without peer details, and the count is in [`Mapper::evicted`]).
pub const DEFAULT_MAX_ASSOCIATIONS: usize = 65_536;

#[derive(Debug, Clone)]
struct StoreItem {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    study: Option<String>,
    patient: Option<PatientRef>,
}

#[derive(Debug, Default)]
struct AssocCtx {
    peer: Peer,
    outstanding: HashMap<u16, StoreItem>,
    done: Vec<(StoreItem, Result<(), String>)>,
    begun: Vec<Option<String>>,
}

/// Turns events into draft records. One per gateway process; feed it every event in order.
#[derive(Debug)]
pub struct Mapper {
    assocs: BTreeMap<u64, AssocCtx>,
    max_assocs: usize,
    /// The gateway's listening address, once known (used as the local end of associations).
    listen: Option<String>,
    evicted: u64,
}

impl Default for Mapper {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ASSOCIATIONS)
    }
}

fn blame_str(b: Blame) -> String {
    match b {
        Blame::Peer => "peer",
        Blame::Upstream => "upstream",
        Blame::Local => "local",
    }
    .to_string()
}

/// The kebab-case name of an alert kind (as in the event's JSON).
pub fn alert_name(k: AlertKind) -> &'static str {
    match k {
        AlertKind::PeerNotRecognized => "peer-not-recognized",
        AlertKind::NotAuthorized => "not-authorized",
        AlertKind::ProtocolViolation => "protocol-violation",
        AlertKind::InstanceConflict => "instance-conflict",
        AlertKind::MalformedDataSet => "malformed-data-set",
        AlertKind::ResourceExhausted => "resource-exhausted",
        AlertKind::HoldOverdue => "hold-overdue",
        AlertKind::VaultNotImmutable => "vault-not-immutable",
        AlertKind::HoldParked => "hold-parked",
        AlertKind::VaultIntegrity => "vault-integrity",
        AlertKind::Ransomware => "ransomware",
    }
}

/// The participant a block-list subject names (`address=IP`, `calling-ae=AE`), if any.
fn block_peer(subject: &str) -> Option<Peer> {
    match subject.split_once('=') {
        Some(("address", a)) => Some(Peer {
            address: Some(a.to_string()),
            ..Peer::default()
        }),
        Some(("calling-ae", ae)) => Some(Peer {
            calling_ae: Some(ae.to_string()),
            ..Peer::default()
        }),
        _ => None,
    }
}

fn vault_outcome(o: VaultOutcome) -> &'static str {
    match o {
        VaultOutcome::Stored => "stored",
        VaultOutcome::DuplicateIdentical => "duplicate-identical",
        VaultOutcome::Conflict => "conflict",
        VaultOutcome::Failed => "failed",
    }
}

/// Whether a C-STORE response status means the instance was stored: success (0000) or a
/// warning (0001, Bxxx) per PS3.4 B.2.3.
pub fn store_status_ok(status: u16) -> bool {
    status == 0x0000 || status == 0x0001 || status & 0xF000 == 0xB000
}

impl Mapper {
    pub fn new(max_assocs: usize) -> Self {
        Mapper {
            assocs: BTreeMap::new(),
            max_assocs: max_assocs.max(1),
            listen: None,
            evicted: 0,
        }
    }

    /// Associations forgotten because more than the maximum were open at once.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Associations currently tracked.
    pub fn open_associations(&self) -> usize {
        self.assocs.len()
    }

    fn ctx(&mut self, assoc: u64) -> &mut AssocCtx {
        if !self.assocs.contains_key(&assoc) {
            while self.assocs.len() >= self.max_assocs {
                if self.assocs.pop_first().is_some() {
                    self.evicted += 1;
                }
            }
            let peer = Peer {
                local: self.listen.clone(),
                ..Peer::default()
            };
            self.assocs.insert(
                assoc,
                AssocCtx {
                    peer,
                    ..AssocCtx::default()
                },
            );
        }
        // Just inserted or already present.
        self.assocs.entry(assoc).or_default()
    }

    fn peer_of(&self, assoc: u64) -> Option<Peer> {
        self.assocs.get(&assoc).map(|c| c.peer.clone())
    }

    /// The records one event produces, in order (usually one; an association's end may add
    /// transfer summaries before it, a first C-STORE adds a `transfer-begun` after it).
    pub fn map(&mut self, ev: &EventRecord) -> Vec<AuditRecord> {
        let time_ms = i64::try_from(ev.time_ms).unwrap_or(i64::MAX);
        let mut out = Vec::with_capacity(1);
        let push = |out: &mut Vec<AuditRecord>, assoc: Option<u64>, peer: Option<Peer>, e| {
            let mut r = AuditRecord::draft(time_ms, assoc, peer, e);
            r.event_seq = Some(ev.seq);
            out.push(r);
        };
        match &ev.event {
            Event::Listening { addr, ae_title } => {
                self.listen = Some(addr.to_string());
                push(
                    &mut out,
                    None,
                    None,
                    AuditEvent::ApplicationStart {
                        listen: addr.to_string(),
                        ae_title: ae_title.clone(),
                    },
                );
            }
            Event::ShutdownStarted { running } => push(
                &mut out,
                None,
                None,
                AuditEvent::ApplicationStopping {
                    running: *running as u64,
                },
            ),
            // Counted in the transfer records; the event itself carries no patient facts. An
            // overwrite attempt is recorded through the `overwrite` rule's detection; progress
            // is for the console (the release records the totals).
            Event::Deidentified { .. }
            | Event::InstanceFingerprinted { .. }
            | Event::OverwriteAttempt { .. }
            | Event::AssociationProgress { .. } => {}
            Event::ConfigReloaded { ok, detail } => push(
                &mut out,
                None,
                None,
                AuditEvent::SecurityAlert {
                    alert: if *ok {
                        "security-configuration".into()
                    } else {
                        "security-configuration-refused".into()
                    },
                    detail: detail.clone(),
                    rule: None,
                },
            ),
            // Block-list changes: PS3.15 A.5.3.11 Security Alert, Security Configuration.
            Event::BlockAdded {
                id,
                subject,
                action,
                rule,
                reason,
                until_unix_ms,
                origin,
                cut,
            } => push(
                &mut out,
                None,
                block_peer(subject),
                AuditEvent::SecurityAlert {
                    alert: "block-added".into(),
                    detail: format!(
                        "block {id} {subject}: {action} until {until_unix_ms} (unix ms), \
                         rule {rule} ({origin}), {cut} running association(s) cut: {reason}"
                    ),
                    rule: None,
                },
            ),
            Event::BlockRemoved {
                id,
                subject,
                action,
                rule,
                by,
            } => push(
                &mut out,
                None,
                block_peer(subject),
                AuditEvent::SecurityAlert {
                    alert: "block-removed".into(),
                    detail: format!("block {id} {subject}: {action} (rule {rule}) removed by {by}"),
                    rule: None,
                },
            ),
            Event::BlockExpired {
                id,
                subject,
                action,
                rule,
            } => push(
                &mut out,
                None,
                block_peer(subject),
                AuditEvent::SecurityAlert {
                    alert: "block-expired".into(),
                    detail: format!("block {id} {subject}: {action} (rule {rule}) expired"),
                    rule: None,
                },
            ),
            // The operator console: an action (or a refused login) is a Security Alert whose
            // type code says what changed (`atna::alert_type`); the console user and the HTTP
            // client are its participant.
            Event::AdminAction {
                user,
                role,
                client,
                action,
                target,
                ok,
                detail,
            } => push(
                &mut out,
                None,
                Some(Peer {
                    address: Some(client.clone()),
                    user: (user != "-").then(|| crate::record::UserIdentity {
                        kind: crate::atna::CONSOLE_USER.into(),
                        user: user.clone(),
                        accepted: Some(true),
                    }),
                    ..Peer::default()
                }),
                AuditEvent::SecurityAlert {
                    alert: format!("console-{action}"),
                    detail: format!(
                        "console user {user} ({role}) from {client}: {action}{}{}: {detail}",
                        if target.is_empty() { "" } else { " " },
                        target,
                    ) + if *ok { "" } else { " (not done)" },
                    rule: None,
                },
            ),
            Event::AuditLogRead {
                user,
                client,
                query,
            } => push(
                &mut out,
                None,
                Some(Peer {
                    address: Some(client.clone()),
                    ..Peer::default()
                }),
                AuditEvent::AuditLogUsed {
                    user: user.clone(),
                    query: query.clone(),
                },
            ),
            // An operator's removal of a held instance: it will never reach its destination.
            Event::HoldDropped {
                by,
                dest,
                sop_instance,
            } => push(
                &mut out,
                None,
                None,
                AuditEvent::SecurityAlert {
                    alert: "hold-dropped".into(),
                    detail: format!(
                        "held instance {sop_instance} for {dest} dropped from the queue by {by}"
                    ),
                    rule: None,
                },
            ),
            // The store itself is audited through the association's own events; the queue's
            // progress is operational (log lines, console), not an audit record.
            Event::HoldQueued { .. }
            | Event::HoldForwarded { .. }
            | Event::HoldRetry { .. }
            | Event::HoldDepth { .. } => {}
            // The scrub's findings are audited through the `vault-integrity` alert raised with
            // each; a pass is operational.
            Event::VaultScrubFinding { .. } | Event::VaultScrubPass { .. } => {}
            Event::ShutdownFinished { aborted } => push(
                &mut out,
                None,
                None,
                AuditEvent::ApplicationStop {
                    aborted: *aborted as u64,
                },
            ),
            Event::AssociationRequested {
                assoc,
                source,
                calling_ae,
                called_ae,
                implementation_class_uid,
                implementation_version,
                contexts,
                tls,
                user_identity,
            } => {
                let ctx = self.ctx(assoc.0);
                ctx.peer.address = Some(source.to_string());
                ctx.peer.tls = tls.as_ref().map(|t| crate::record::TlsFacts {
                    version: t.protocol.clone(),
                    cipher_suite: t.cipher_suite.clone(),
                    peer_subject: t.peer_subject.clone(),
                    peer_cert_sha256: t.peer_cert_sha256.clone(),
                });
                ctx.peer.user = user_identity.as_ref().map(|u| crate::record::UserIdentity {
                    kind: match u.kind {
                        1 => "username",
                        2 => "username-passcode",
                        3 => "kerberos",
                        4 => "saml",
                        5 => "jwt",
                        _ => "unknown",
                    }
                    .to_string(),
                    user: u.user.clone().unwrap_or_default(),
                    accepted: None,
                });
                ctx.peer.calling_ae = Some(calling_ae.clone());
                ctx.peer.called_ae = Some(called_ae.clone());
                let peer = ctx.peer.clone();
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(peer),
                    AuditEvent::AssociationRequested {
                        implementation_class_uid: implementation_class_uid.clone(),
                        implementation_version: implementation_version.clone(),
                        contexts: *contexts as u64,
                    },
                );
            }
            Event::AssociationRefused {
                assoc,
                source,
                calling_ae,
                called_ae,
                result,
                rj_source,
                reason,
                blame,
                why,
            } => {
                let mut peer = self
                    .assocs
                    .remove(&assoc.0)
                    .map(|c| c.peer)
                    .unwrap_or_else(|| Peer {
                        local: self.listen.clone(),
                        ..Peer::default()
                    });
                peer.address = Some(source.to_string());
                if calling_ae.is_some() {
                    peer.calling_ae = calling_ae.clone();
                }
                if called_ae.is_some() {
                    peer.called_ae = called_ae.clone();
                }
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(peer),
                    AuditEvent::AssociationRefused {
                        result: *result,
                        rj_source: *rj_source,
                        reason: *reason,
                        blame: blame_str(*blame),
                        why: why.clone(),
                    },
                );
            }
            Event::AssociationAccepted {
                assoc,
                peer,
                route,
                accepted_contexts,
                rejected_contexts,
                max_pdu_client,
                max_pdu_upstream,
                authenticated_user,
            } => {
                let ctx = self.ctx(assoc.0);
                ctx.peer.name = Some(peer.clone());
                if let Some(u) = ctx.peer.user.as_mut() {
                    u.accepted = Some(authenticated_user.is_some());
                    if let Some(name) = authenticated_user {
                        u.user = name.clone();
                    }
                }
                ctx.peer.route = Some(route.clone());
                let p = ctx.peer.clone();
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(p),
                    AuditEvent::AssociationAccepted {
                        accepted_contexts: *accepted_contexts as u64,
                        rejected_contexts: *rejected_contexts as u64,
                        max_pdu_client: *max_pdu_client,
                        max_pdu_upstream: *max_pdu_upstream,
                    },
                );
            }
            Event::ContextRejected {
                assoc,
                context_id,
                abstract_syntax,
                why,
            } => {
                let p = self.peer_of(assoc.0);
                push(
                    &mut out,
                    Some(assoc.0),
                    p,
                    AuditEvent::ContextRejected {
                        context_id: *context_id,
                        abstract_syntax: abstract_syntax.clone(),
                        why: why.clone(),
                    },
                );
            }
            Event::DimseRequest {
                assoc,
                message_id,
                command,
                sop_class,
                sop_instance,
                move_destination,
                subject,
                identifier,
            } => {
                let ctx = self.ctx(assoc.0);
                let peer = ctx.peer.clone();
                let patient = subject.as_ref().and_then(|s| {
                    s.patient_id.clone().map(|id| crate::record::PatientRef {
                        id,
                        name: s.patient_name.clone(),
                    })
                });
                let study_uid = subject.as_ref().and_then(|s| s.study_uid.clone());
                let query = identifier.as_ref().map(|q| crate::record::QueryData {
                    level: q.level.clone(),
                    transfer_syntax: q.transfer_syntax.clone(),
                    dataset_base64: {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.encode(&q.dataset)
                    },
                });
                if command == "CStoreRq" {
                    let item = StoreItem {
                        sop_class: sop_class.clone(),
                        sop_instance: sop_instance.clone(),
                        study: None,
                        patient: None,
                    };
                    ctx.outstanding.insert(*message_id, item);
                }
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(peer),
                    AuditEvent::DimseRequest {
                        message_id: *message_id,
                        command: command.clone(),
                        sop_class: sop_class.clone(),
                        sop_instance: sop_instance.clone(),
                        move_destination: move_destination.clone(),
                        study_uid,
                        patient,
                        query,
                    },
                );
            }
            Event::DimseRefused {
                assoc,
                message_id,
                command,
                status,
                why,
            } => {
                let ctx = self.ctx(assoc.0);
                // Only a refused C-STORE ends a store item: a refused request of the called
                // side (an N-EVENT-REPORT) carries the upstream's Message ID, which may equal
                // one of the client's.
                let item = (command == "CStoreRq")
                    .then(|| ctx.outstanding.remove(message_id))
                    .flatten();
                if let Some(item) = item {
                    ctx.done.push((
                        item,
                        Err(format!("refused by policy (0x{status:04X}): {why}")),
                    ));
                }
                let p = ctx.peer.clone();
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(p),
                    AuditEvent::DimseRefused {
                        message_id: *message_id,
                        command: command.clone(),
                        status: *status,
                        why: why.clone(),
                    },
                );
            }
            // A pending C-MOVE/C-GET response carries progress for the detectors: the trail
            // records the final response.
            Event::DimseResponse {
                status: 0xFF00 | 0xFF01,
                ..
            } => {}
            Event::DimseResponse {
                assoc,
                message_id,
                command,
                status,
                from,
                sop_class,
                sop_instance,
                subject,
                ..
            } => {
                let (study_uid, patient) = subject_facts(subject.as_ref());
                let ctx = self.ctx(assoc.0);
                let mut begun = None;
                if command == "CStoreRsp" {
                    if let Some(mut item) = ctx.outstanding.remove(message_id) {
                        if item.sop_class.is_none() {
                            item.sop_class = sop_class.clone();
                        }
                        if item.sop_instance.is_none() {
                            item.sop_instance = sop_instance.clone();
                        }
                        item.study = study_uid.clone();
                        item.patient = patient.clone();
                        // Begin Transferring: the first instance of each patient on the
                        // association (the response is when the patient is known).
                        let key = item.patient.as_ref().map(|p| p.id.clone());
                        if !ctx.begun.contains(&key) {
                            ctx.begun.push(key);
                            begun =
                                Some(store_transfer(&ctx.peer, &[item.clone()], true, Vec::new()));
                        }
                        let outcome = if store_status_ok(*status) {
                            Ok(())
                        } else {
                            Err(format!("C-STORE status 0x{status:04X}"))
                        };
                        ctx.done.push((item, outcome));
                    }
                }
                let p = ctx.peer.clone();
                push(
                    &mut out,
                    Some(assoc.0),
                    Some(p.clone()),
                    AuditEvent::DimseResponse {
                        message_id: *message_id,
                        command: command.clone(),
                        status: *status,
                        from: blame_str(*from),
                        sop_class: sop_class.clone(),
                        sop_instance: sop_instance.clone(),
                        study_uid,
                        patient,
                    },
                );
                if let Some(transfer) = begun {
                    push(
                        &mut out,
                        Some(assoc.0),
                        Some(p),
                        AuditEvent::TransferBegun { transfer },
                    );
                }
            }
            Event::InstanceStored {
                assoc,
                sop_instance,
                subject,
                sha256,
                bytes,
                outcome,
            } => {
                let (study_uid, patient) = subject_facts(subject.as_ref());
                let p = self.peer_of(assoc.0);
                push(
                    &mut out,
                    Some(assoc.0),
                    p,
                    AuditEvent::InstanceStored {
                        sop_instance: sop_instance.clone(),
                        sop_class: None,
                        study_uid,
                        patient,
                        sha256: sha256.clone(),
                        bytes: *bytes,
                        outcome: vault_outcome(*outcome).to_string(),
                    },
                );
            }
            Event::SecurityAlert {
                assoc,
                kind,
                source,
                detail,
            } => {
                let mut p = assoc.and_then(|a| self.peer_of(a.0));
                if let Some(src) = source {
                    let peer = p.get_or_insert_with(Peer::default);
                    peer.address = Some(src.to_string());
                }
                push(
                    &mut out,
                    assoc.map(|a| a.0),
                    p,
                    AuditEvent::SecurityAlert {
                        alert: alert_name(*kind).to_string(),
                        detail: detail.clone(),
                        rule: None,
                    },
                );
            }
            Event::Detection {
                assoc,
                source,
                peer,
                calling_ae,
                called_ae,
                rule,
                rule_kind,
                response,
                evidence,
                detail,
            } => {
                // The association may have ended before the rule fired (recon-idle fires on
                // its release): what the detectors knew of it fills the gaps.
                let mut p = assoc.and_then(|a| self.peer_of(a.0));
                if source.is_some() || peer.is_some() || calling_ae.is_some() {
                    let who = p.get_or_insert_with(Peer::default);
                    if let Some(src) = source {
                        who.address = Some(src.to_string());
                    }
                    who.name = who.name.take().or_else(|| peer.clone());
                    who.calling_ae = who.calling_ae.take().or_else(|| calling_ae.clone());
                    who.called_ae = who.called_ae.take().or_else(|| called_ae.clone());
                }
                push(
                    &mut out,
                    assoc.map(|a| a.0),
                    p,
                    AuditEvent::SecurityAlert {
                        alert: "detection".into(),
                        detail: detail.clone(),
                        rule: Some(DetectionRule {
                            name: rule.clone(),
                            kind: rule_kind.clone(),
                            response: response.clone(),
                            evidence: evidence.clone(),
                        }),
                    },
                );
            }
            Event::AssociationReleased {
                assoc,
                bytes_from_client,
                bytes_from_upstream,
            } => {
                let ctx = self.assocs.remove(&assoc.0);
                let peer = ctx.as_ref().map(|c| c.peer.clone());
                if let Some(ctx) = ctx {
                    for t in
                        finish_transfers(ctx, "no response before the association was released")
                    {
                        push(
                            &mut out,
                            Some(assoc.0),
                            peer.clone(),
                            AuditEvent::InstancesTransferred { transfer: t },
                        );
                    }
                }
                push(
                    &mut out,
                    Some(assoc.0),
                    peer,
                    AuditEvent::AssociationReleased {
                        bytes_from_client: *bytes_from_client,
                        bytes_from_upstream: *bytes_from_upstream,
                    },
                );
            }
            Event::AssociationAborted { assoc, blame, why } => {
                let ctx = self.assocs.remove(&assoc.0);
                let peer = ctx.as_ref().map(|c| c.peer.clone());
                if let Some(ctx) = ctx {
                    for t in finish_transfers(ctx, &format!("association aborted: {why}")) {
                        push(
                            &mut out,
                            Some(assoc.0),
                            peer.clone(),
                            AuditEvent::InstancesTransferred { transfer: t },
                        );
                    }
                }
                push(
                    &mut out,
                    Some(assoc.0),
                    peer,
                    AuditEvent::AssociationAborted {
                        blame: blame_str(*blame),
                        why: why.clone(),
                    },
                );
            }
        }
        out
    }
}

/// Study UID and patient of an event's subject (empty strings count as absent).
fn subject_facts(s: Option<&Subject>) -> (Option<String>, Option<PatientRef>) {
    let Some(s) = s else { return (None, None) };
    let study = s.study_uid.clone().filter(|u| !u.is_empty());
    let patient = s
        .patient_id
        .clone()
        .filter(|p| !p.is_empty())
        .map(|id| PatientRef {
            id,
            name: s.patient_name.clone().filter(|n| !n.is_empty()),
        });
    (study, patient)
}

/// The two ends of a C-STORE relayed through the gateway: the calling peer sends, the called
/// AE (the route's upstream, or the built-in vault) receives.
fn store_transfer(
    peer: &Peer,
    items: &[StoreItem],
    succeeded: bool,
    failures: Vec<String>,
) -> Transfer {
    let source = Participant {
        ae_title: peer.calling_ae.clone(),
        address: peer.address.clone(),
    };
    let destination = Participant {
        ae_title: peer.called_ae.clone(),
        address: peer.upstream.clone().or_else(|| peer.local.clone()),
    };
    // study -> sop class -> instances, in first-seen order.
    let mut studies: Vec<StudyRef> = Vec::new();
    for it in items {
        let study = find_or_push(
            &mut studies,
            |s| s.uid == it.study,
            || StudyRef {
                uid: it.study.clone(),
                sop_classes: Vec::new(),
            },
        );
        let class_uid = it.sop_class.clone().unwrap_or_default();
        let class = find_or_push(
            &mut study.sop_classes,
            |c| c.uid == class_uid,
            || SopClassRef {
                uid: class_uid.clone(),
                instances: Vec::new(),
            },
        );
        if let Some(i) = &it.sop_instance {
            class.instances.push(i.clone());
        }
    }
    Transfer {
        action: TransferAction::Store,
        source,
        destination,
        requestor: None,
        patient: items.first().and_then(|i| i.patient.clone()),
        studies,
        succeeded,
        failures,
    }
}

/// The first element matching `pred`, or a new one made by `make` and pushed.
// The index comes from `position` or is the last slot right after a push:
// always in range.
#[allow(clippy::indexing_slicing)]
fn find_or_push<T>(v: &mut Vec<T>, pred: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> &mut T {
    let i = v.iter().position(pred).unwrap_or_else(|| {
        v.push(make());
        v.len() - 1
    });
    &mut v[i]
}

/// Closes an association's transfers: one summary per (patient, succeeded).
fn finish_transfers(mut ctx: AssocCtx, unanswered: &str) -> Vec<Transfer> {
    let mut pending: Vec<(u16, StoreItem)> = ctx.outstanding.drain().collect();
    pending.sort_by_key(|(id, _)| *id);
    for (_, item) in pending {
        ctx.done.push((item, Err(unanswered.to_string())));
    }
    // (patient, succeeded, items, failure notes)
    type Group = (Option<String>, bool, Vec<StoreItem>, Vec<String>);
    let mut groups: Vec<Group> = Vec::new();
    for (item, outcome) in ctx.done {
        let key = item.patient.as_ref().map(|p| p.id.clone());
        let ok = outcome.is_ok();
        let g = find_or_push(
            &mut groups,
            |g| g.0 == key && g.1 == ok,
            || (key.clone(), ok, Vec::new(), Vec::new()),
        );
        if let Err(why) = outcome {
            let what = item.sop_instance.as_deref().unwrap_or("(unknown instance)");
            g.3.push(format!("{what}: {why}"));
        }
        g.2.push(item);
    }
    groups
        .into_iter()
        .map(|(_, ok, items, failures)| store_transfer(&ctx.peer, &items, ok, failures))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_events::AssocId;
    use std::sync::atomic::{AtomicU64, Ordering};

    static SEQ: AtomicU64 = AtomicU64::new(0);

    fn rec(event: Event) -> EventRecord {
        EventRecord {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            time_ms: 1_700_000_000_000,
            event,
        }
    }

    fn requested(m: &mut Mapper, id: u64) -> Vec<AuditRecord> {
        m.map(&rec(Event::AssociationRequested {
            assoc: AssocId(id),
            source: "192.0.2.7:40000".parse().unwrap(),
            calling_ae: "MODALITY".into(),
            called_ae: "ARCHIVE".into(),
            implementation_class_uid: "1.2.3".into(),
            implementation_version: None,
            contexts: 3,
            tls: None,
            user_identity: None,
        }))
    }

    fn store_rq(m: &mut Mapper, id: u64, msg: u16, inst: &str) -> Vec<AuditRecord> {
        m.map(&rec(Event::DimseRequest {
            assoc: AssocId(id),
            message_id: msg,
            command: "CStoreRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.1.2".into()),
            sop_instance: Some(inst.into()),
            move_destination: None,
            subject: None,
            identifier: None,
        }))
    }

    fn store_rsp(m: &mut Mapper, id: u64, msg: u16, status: u16) -> Vec<AuditRecord> {
        store_rsp_of(m, id, msg, status, None)
    }

    fn store_rsp_of(
        m: &mut Mapper,
        id: u64,
        msg: u16,
        status: u16,
        patient: Option<&str>,
    ) -> Vec<AuditRecord> {
        m.map(&rec(Event::DimseResponse {
            assoc: AssocId(id),
            message_id: msg,
            command: "CStoreRsp".into(),
            status,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: patient.map(|p| Subject {
                patient_id: Some(p.into()),
                patient_name: Some(format!("{p}^Name")),
                study_uid: Some(format!("1.2.{p}")),
                ..Subject::default()
            }),
            sub_operations: None,
            bytes: None,
        }))
    }

    #[test]
    fn dimse_n_requests_responses_and_refusals_are_records() {
        // MPPS and Storage Commitment: the bus names them like the C-services ("NCreateRq"),
        // and each is one record naming the command, not a store transfer.
        let mut m = Mapper::default();
        requested(&mut m, 1);
        let r = m.map(&rec(Event::DimseRequest {
            assoc: AssocId(1),
            message_id: 3,
            command: "NCreateRq".into(),
            sop_class: Some("1.2.840.10008.3.1.2.3.3".into()),
            sop_instance: Some("1.2.3.4".into()),
            move_destination: None,
            subject: None,
            identifier: None,
        }));
        assert_eq!(r.len(), 1);
        assert!(matches!(
            &r[0].event,
            AuditEvent::DimseRequest { command, sop_instance: Some(i), .. }
                if command == "NCreateRq" && i == "1.2.3.4"
        ));
        let r = m.map(&rec(Event::DimseResponse {
            assoc: AssocId(1),
            message_id: 3,
            command: "NCreateRsp".into(),
            status: 0,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: None,
            sub_operations: None,
            bytes: None,
        }));
        assert_eq!(r.len(), 1, "no transfer record for an N-CREATE: {r:#?}");
        assert!(matches!(
            &r[0].event,
            AuditEvent::DimseResponse { command, status: 0, .. } if command == "NCreateRsp"
        ));
        // The client's C-STORE 9 is in flight when the upstream's N-EVENT-REPORT 9 is refused:
        // the store's outcome is still the upstream's answer to it.
        store_rq(&mut m, 1, 9, "1.2.3.9");
        let r = m.map(&rec(Event::DimseRefused {
            assoc: AssocId(1),
            message_id: 9,
            command: "NEventReportRq".into(),
            status: 0x0124,
            why: "from the called side: Radguard: operation not allowed".into(),
        }));
        assert_eq!(r.len(), 1);
        assert!(matches!(
            &r[0].event,
            AuditEvent::DimseRefused { command, status: 0x0124, .. } if command == "NEventReportRq"
        ));
        assert!(
            m.ctx(1).outstanding.contains_key(&9),
            "the client's C-STORE 9 was taken by the called side's refusal"
        );
    }

    #[test]
    fn pending_retrieve_progress_is_not_a_record_and_the_final_response_is() {
        let mut m = Mapper::default();
        requested(&mut m, 1);
        let response = |status| Event::DimseResponse {
            assoc: AssocId(1),
            message_id: 5,
            command: "CMoveRsp".into(),
            status,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: None,
            sub_operations: Some(radguard_events::SubOperations {
                remaining: Some(3),
                completed: Some(1),
                ..Default::default()
            }),
            bytes: None,
        };
        assert!(m.map(&rec(response(0xFF00))).is_empty());
        let r = m.map(&rec(response(0)));
        assert_eq!(r.len(), 1);
        assert!(matches!(
            r[0].event,
            AuditEvent::DimseResponse { status: 0, .. }
        ));
    }

    #[test]
    fn every_record_of_an_association_names_its_peer() {
        let mut m = Mapper::default();
        m.map(&rec(Event::Listening {
            addr: "127.0.0.1:11112".parse().unwrap(),
            ae_title: "RADGUARD".into(),
        }));
        let r = requested(&mut m, 1);
        assert_eq!(r.len(), 1);
        let p = r[0].peer.clone().unwrap();
        assert_eq!(p.calling_ae.as_deref(), Some("MODALITY"));
        assert_eq!(p.local.as_deref(), Some("127.0.0.1:11112"));
        let r = m.map(&rec(Event::AssociationAccepted {
            assoc: AssocId(1),
            peer: "ct-scanner".into(),
            route: "pacs".into(),
            accepted_contexts: 2,
            rejected_contexts: 1,
            max_pdu_client: 16384,
            max_pdu_upstream: 16384,
            authenticated_user: None,
        }));
        assert_eq!(
            r[0].peer.as_ref().unwrap().name.as_deref(),
            Some("ct-scanner")
        );
        let r = m.map(&rec(Event::SecurityAlert {
            assoc: Some(AssocId(1)),
            kind: AlertKind::NotAuthorized,
            source: None,
            detail: "no".into(),
        }));
        assert_eq!(
            r[0].peer.as_ref().unwrap().ip().as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(r[0].kind().as_str(), "security-alert");
        let r = m.map(&rec(Event::AssociationReleased {
            assoc: AssocId(1),
            bytes_from_client: 1,
            bytes_from_upstream: 2,
        }));
        assert_eq!(r.len(), 1, "no transfer, no summary");
        assert_eq!(m.open_associations(), 0);
    }

    #[test]
    fn stores_are_summarised_per_outcome_at_release() {
        let mut m = Mapper::default();
        requested(&mut m, 2);
        assert_eq!(store_rq(&mut m, 2, 1, "1.1").len(), 1);
        assert_eq!(store_rq(&mut m, 2, 2, "1.2").len(), 1);
        assert_eq!(store_rq(&mut m, 2, 3, "1.3").len(), 1);
        assert_eq!(store_rq(&mut m, 2, 4, "1.4").len(), 1);
        let r = store_rsp(&mut m, 2, 1, 0x0000);
        assert_eq!(r.len(), 2, "first C-STORE response adds transfer-begun");
        assert_eq!(r[1].kind().as_str(), "transfer-begun");
        assert_eq!(store_rsp(&mut m, 2, 2, 0xB007).len(), 1);
        assert_eq!(store_rsp(&mut m, 2, 3, 0xA700).len(), 1);
        // message 4 never answered
        let r = m.map(&rec(Event::AssociationReleased {
            assoc: AssocId(2),
            bytes_from_client: 1,
            bytes_from_upstream: 2,
        }));
        assert_eq!(r.len(), 3, "{r:#?}");
        let t = |i: usize| match &r[i].event {
            AuditEvent::InstancesTransferred { transfer } => transfer.clone(),
            other => panic!("{other:?}"),
        };
        let ok = t(0);
        assert!(ok.succeeded);
        assert_eq!(ok.instance_count(), 2);
        assert_eq!(ok.source.ae_title.as_deref(), Some("MODALITY"));
        assert_eq!(ok.destination.ae_title.as_deref(), Some("ARCHIVE"));
        let failed = t(1);
        assert!(!failed.succeeded);
        assert_eq!(failed.instance_count(), 2);
        assert_eq!(failed.failures.len(), 2);
        assert!(
            failed.failures[0].contains("0xA700"),
            "{:?}",
            failed.failures
        );
        assert!(
            failed.failures[1].contains("no response"),
            "{:?}",
            failed.failures
        );
        assert_eq!(r[2].kind().as_str(), "association-released");
    }

    #[test]
    fn refused_and_aborted_stores_count_as_failures() {
        let mut m = Mapper::default();
        requested(&mut m, 3);
        store_rq(&mut m, 3, 1, "2.1");
        m.map(&rec(Event::DimseRefused {
            assoc: AssocId(3),
            message_id: 1,
            command: "CStoreRq".into(),
            status: 0x0124,
            why: "not permitted".into(),
        }));
        store_rq(&mut m, 3, 2, "2.2");
        let r = m.map(&rec(Event::AssociationAborted {
            assoc: AssocId(3),
            blame: Blame::Peer,
            why: "A-ABORT".into(),
        }));
        assert_eq!(r.len(), 2);
        match &r[0].event {
            AuditEvent::InstancesTransferred { transfer } => {
                assert!(!transfer.succeeded);
                assert_eq!(transfer.instance_count(), 2);
                assert!(transfer.failures[0].contains("refused by policy (0x0124)"));
                assert!(transfer.failures[1].contains("aborted"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r[1].kind().as_str(), "association-aborted");
    }

    #[test]
    fn refusal_closes_the_context_and_keeps_the_facts() {
        let mut m = Mapper::default();
        requested(&mut m, 4);
        let r = m.map(&rec(Event::AssociationRefused {
            assoc: AssocId(4),
            source: "192.0.2.7:40000".parse().unwrap(),
            calling_ae: None,
            called_ae: None,
            result: 1,
            rj_source: 1,
            reason: 3,
            blame: Blame::Peer,
            why: "calling AE not recognized".into(),
        }));
        let p = r[0].peer.clone().unwrap();
        assert_eq!(
            p.calling_ae.as_deref(),
            Some("MODALITY"),
            "kept from the request"
        );
        assert_eq!(m.open_associations(), 0);
    }

    #[test]
    fn context_count_is_bounded() {
        let mut m = Mapper::new(3);
        for id in 0..10 {
            requested(&mut m, id);
        }
        assert_eq!(m.open_associations(), 3);
        assert_eq!(m.evicted(), 7);
        // A late event for a forgotten association still gives a record.
        let r = m.map(&rec(Event::AssociationReleased {
            assoc: AssocId(0),
            bytes_from_client: 0,
            bytes_from_upstream: 0,
        }));
        assert_eq!(r.len(), 1);
        assert!(r[0].peer.is_none());
    }

    #[test]
    fn subjects_split_transfers_per_patient_and_are_searchable() {
        let mut m = Mapper::default();
        requested(&mut m, 5);
        for (msg, inst) in [(1, "3.1"), (2, "3.2"), (3, "3.3")] {
            store_rq(&mut m, 5, msg, inst);
        }
        let r = store_rsp_of(&mut m, 5, 1, 0, Some("P1"));
        assert_eq!(r[0].patient_ids(), vec!["P1".to_string()]);
        assert_eq!(r.len(), 2);
        let r = store_rsp_of(&mut m, 5, 2, 0, Some("P2"));
        assert_eq!(r.len(), 2, "new patient, new transfer-begun");
        match &r[1].event {
            AuditEvent::TransferBegun { transfer } => {
                assert_eq!(transfer.patient.as_ref().unwrap().id, "P2");
                assert_eq!(
                    transfer.patient.as_ref().unwrap().name.as_deref(),
                    Some("P2^Name")
                );
                assert_eq!(transfer.studies[0].uid.as_deref(), Some("1.2.P2"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store_rsp_of(&mut m, 5, 3, 0, Some("P1")).len(), 1);
        let r = m.map(&rec(Event::AssociationReleased {
            assoc: AssocId(5),
            bytes_from_client: 0,
            bytes_from_upstream: 0,
        }));
        let pats: Vec<(String, usize)> = r
            .iter()
            .filter_map(|x| match &x.event {
                AuditEvent::InstancesTransferred { transfer } => Some((
                    transfer.patient.as_ref().unwrap().id.clone(),
                    transfer.instance_count(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(pats, vec![("P1".to_string(), 2), ("P2".to_string(), 1)]);
    }

    #[test]
    fn block_list_changes_are_security_alerts_naming_the_subject() {
        let mut m = Mapper::new(16);
        let r = m.map(&rec(Event::BlockAdded {
            id: 3,
            subject: "address=10.0.0.7".into(),
            action: "block".into(),
            rule: "bulk".into(),
            reason: "rule bulk: 40 instances retrieved".into(),
            until_unix_ms: 5000,
            origin: "detection".into(),
            cut: 1,
        }));
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].peer.as_ref().unwrap().address.as_deref(),
            Some("10.0.0.7")
        );
        match &r[0].event {
            AuditEvent::SecurityAlert { alert, detail, .. } => {
                assert_eq!(alert, "block-added");
                assert!(detail.contains("block 3 address=10.0.0.7"), "{detail}");
                assert!(detail.contains("1 running association(s) cut"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let r = m.map(&rec(Event::BlockRemoved {
            id: 3,
            subject: "calling-ae=EVIL".into(),
            action: "block".into(),
            rule: "bulk".into(),
            by: "alice".into(),
        }));
        assert_eq!(
            r[0].peer.as_ref().unwrap().calling_ae.as_deref(),
            Some("EVIL")
        );
        assert!(
            matches!(&r[0].event, AuditEvent::SecurityAlert { alert, detail, .. }
            if alert == "block-removed" && detail.contains("removed by alice"))
        );
        let r = m.map(&rec(Event::BlockExpired {
            id: 3,
            subject: "certificate=ab".into(),
            action: "throttle 6/min".into(),
            rule: "t".into(),
        }));
        assert!(r[0].peer.is_none());
        assert!(
            matches!(&r[0].event, AuditEvent::SecurityAlert { alert, .. } if alert == "block-expired")
        );
        let (code, outcome) = crate::atna::alert_type("block-added");
        assert_eq!((code.code.as_str(), outcome), ("110129", 0));
    }

    #[test]
    fn store_statuses() {
        for ok in [0x0000, 0x0001, 0xB000, 0xB006, 0xB007] {
            assert!(store_status_ok(ok), "{ok:04X}");
        }
        for bad in [0xA700, 0xA900, 0xC000, 0x0110, 0x0122, 0x0124, 0xFE00] {
            assert!(!store_status_ok(bad), "{bad:04X}");
        }
    }
}
