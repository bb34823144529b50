//! Association establishment (PS3.8 states Sta2→Sta3), one type per phase:
//!
//! ```text
//! ClientConn ─read under ARTIM─▶ Requested ─identify─▶ Identified ─admit─▶ Permitted ─plan─▶ Admitted
//! ```
//!
//! Each phase returns `Result<Next, Refusal>`; a [`Refusal`] says what the client gets
//! (A-ASSOCIATE-RJ, A-ABORT, or a plain close) and which events and alerts it raises, and
//! [`Refusal::send`] is the one place that carries it out.

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PresentationContextResultReason, UserIdentityType, UserVariableItem,
};
use radguard_dicom::pdu::{decode_control, AbortReason, PduType};
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::types::uids;
use radguard_dicom::AeTitle;
use radguard_events::{AlertKind, Blame, Event, UserIdentityInfo};
use radguard_policy::{
    Admission, AssociationFacts, AssociationRefusal, ContextDecision, IdentityFacts, Policy,
    RejectWhy, Route, UserIdentityClaim, UserIdentityKind,
};

use crate::conn::{ClientConn, MIN_PDU};
use crate::inspect::Pipeline;
use crate::negotiate::{effective_max, implementation, max_length, plan_contexts, ContextPlan};
use crate::reader::ReadError;
use crate::shared::{cert_key, unix_ms, BlockVerdict, Registration, Shared};

/// An association the policy admitted, with its planned contexts.
pub struct Admitted {
    pub rq: AssociationRQ,
    pub admission: Admission,
    pub policy: Policy,
    pub plan: Vec<ContextPlan>,
    /// What the client accepts (its Maximum Length, capped by ours).
    pub client_accepts: u32,
    /// The User Identity server response to put in the A-ASSOCIATE-AC (item 0x59), if any.
    pub user_identity_response: Option<Vec<u8>>,
    /// What inspects the association's data sets (firewall, ledger, de-identification).
    pub pipeline: Pipeline,
    /// Its place among the running associations: a block of its subject cuts it.
    pub registration: Registration,
}

impl Admitted {
    /// The extra A-ASSOCIATE-AC user information items the gateway adds itself.
    pub fn ac_items(&self) -> Vec<UserVariableItem> {
        match &self.user_identity_response {
            Some(r) => {
                let mut v = (r.len() as u16).to_be_bytes().to_vec();
                v.extend_from_slice(r);
                vec![UserVariableItem::Unknown(0x59, v)]
            }
            None => vec![],
        }
    }
}

/// How establishment ended without an association: what the client is sent, and what is
/// recorded.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing is sent, the transport is closed (ARTIM expired, the peer aborted or went away
    /// in Sta2). Recorded as aborted by the peer.
    Close { why: String },
    /// A-ABORT (provider) with `reason` (PS3.8 §9.3.8); blame on the peer raises a protocol
    /// violation alert.
    Abort {
        reason: AbortReason,
        blame: Blame,
        why: String,
    },
    /// A-ASSOCIATE-RJ with this result/source/reason (PS3.8 §9.3.4).
    Reject {
        rj: (u8, u8, u8),
        /// The calling and called AE titles as recorded (none before they were read).
        names: Option<(String, String)>,
        blame: Blame,
        why: String,
        /// The alert raised before answering (peer not recognized), if any.
        alert: Option<AlertKind>,
    },
}

impl Refusal {
    fn abort(reason: AbortReason, blame: Blame, why: impl Into<String>) -> Self {
        Refusal::Abort {
            reason,
            blame,
            why: why.into(),
        }
    }

    fn peer_abort(reason: AbortReason, why: impl Into<String>) -> Self {
        Self::abort(reason, Blame::Peer, why)
    }

    fn reject(rj: (u8, u8, u8), names: (&str, &str), blame: Blame, why: String) -> Self {
        Refusal::Reject {
            rj,
            names: Some((names.0.to_string(), names.1.to_string())),
            blame,
            why,
            alert: None,
        }
    }

    fn alerting(mut self, kind: AlertKind) -> Self {
        if let Refusal::Reject { alert, .. } = &mut self {
            *alert = Some(kind);
        }
        self
    }

    /// Answers the client, records the outcome, and closes the connection.
    pub async fn send(self, shared: &Shared, conn: &mut ClientConn) {
        match self {
            Refusal::Close { why } => shared.bus.emit(Event::AssociationAborted {
                assoc: conn.id,
                blame: Blame::Peer,
                why,
            }),
            Refusal::Abort { reason, blame, why } => conn.abort(shared, reason, blame, why).await,
            Refusal::Reject {
                rj,
                names,
                blame,
                why,
                alert,
            } => {
                if let Some(kind) = alert {
                    shared.bus.emit(Event::SecurityAlert {
                        assoc: Some(conn.id),
                        kind,
                        source: Some(conn.source),
                        detail: why.clone(),
                    });
                }
                let names = names
                    .as_ref()
                    .map_or((None, None), |(a, b)| (Some(a.as_str()), Some(b.as_str())));
                conn.reject(shared, rj, names, blame, why).await;
            }
        }
    }
}

/// Establishes the association on `conn`, phase by phase; on success `conn` holds one of the
/// `max_associations` slots.
pub async fn establish(shared: &Shared, conn: &mut ClientConn) -> Result<Admitted, Refusal> {
    let requested = Requested::read(shared, conn).await?;
    let identified = requested.identify()?;
    let permitted = identified.admit(shared, conn).await?;
    permitted.plan(shared, conn)
}

/// Phase 1: an A-ASSOCIATE-RQ, read under the ARTIM timer and decoded (Sta2 → Sta3).
pub struct Requested {
    rq: AssociationRQ,
    implementation_class: Option<String>,
}

impl Requested {
    /// Reads and decodes the request, and records it.
    async fn read(shared: &Shared, conn: &mut ClientConn) -> Result<Self, Refusal> {
        let artim = shared.settings.artim_timeout;
        let frame = match tokio::time::timeout(artim, conn.reader.next()).await {
            Err(_) => {
                return Err(Refusal::Close {
                    why: "ARTIM expired before an A-ASSOCIATE-RQ arrived".into(),
                })
            }
            Ok(Err(ReadError::Frame(e))) => {
                return Err(Refusal::peer_abort(e.abort_reason(), e.to_string()))
            }
            Ok(Err(e)) => {
                return Err(Refusal::Close {
                    why: format!("before association: {e}"),
                })
            }
            Ok(Ok(f)) => f,
        };
        if frame.ty == PduType::Abort {
            // Sta2 + Evt16 (AA-2): close the transport, answer nothing.
            return Err(Refusal::Close {
                why: "A-ABORT before any A-ASSOCIATE-RQ".into(),
            });
        }
        if frame.ty != PduType::AssociateRq {
            let why = format!("{} where an A-ASSOCIATE-RQ was expected", frame.ty.name());
            return Err(Refusal::peer_abort(AbortReason::UnexpectedPdu, why));
        }
        let rq = match decode_control(&frame.bytes) {
            Ok(Pdu::AssociationRQ(rq)) => rq,
            Ok(_) => {
                return Err(Refusal::peer_abort(
                    AbortReason::InvalidPduParameter,
                    "A-ASSOCIATE-RQ could not be decoded",
                ))
            }
            Err(e) => {
                return Err(Refusal::peer_abort(
                    AbortReason::InvalidPduParameter,
                    e.to_string(),
                ))
            }
        };
        drop(frame);
        let (implementation_class, impl_version) = implementation(&rq.user_variables);
        shared.bus.emit(Event::AssociationRequested {
            assoc: conn.id,
            source: conn.source,
            calling_ae: rq.calling_ae_title.clone(),
            called_ae: rq.called_ae_title.clone(),
            implementation_class_uid: implementation_class.clone().unwrap_or_default(),
            implementation_version: impl_version,
            contexts: rq.presentation_contexts.len(),
            tls: conn.tls.clone(),
            user_identity: user_identity_claim(&rq.user_variables).map(|c| UserIdentityInfo {
                kind: c.kind.code(),
                user: match c.kind {
                    UserIdentityKind::Username | UserIdentityKind::UsernamePasscode => Some(
                        String::from_utf8_lossy(&c.primary)
                            .chars()
                            .take(64)
                            .collect(),
                    ),
                    _ => None,
                },
            }),
        });
        Ok(Requested {
            rq,
            implementation_class,
        })
    }

    /// Checks what PS3.8 requires of the request itself: protocol version, application
    /// context, AE titles, Implementation Class UID.
    fn identify(self) -> Result<Identified, Refusal> {
        let rq = self.rq;
        if rq.protocol_version & 1 == 0 {
            return Err(Refusal::Reject {
                rj: (1, 2, 2),
                names: None,
                blame: Blame::Peer,
                why: format!(
                    "protocol version 0x{:04X} not supported",
                    rq.protocol_version
                ),
                alert: None,
            });
        }
        let raw = (rq.calling_ae_title.as_str(), rq.called_ae_title.as_str());
        if rq.application_context_name.trim_end_matches('\0') != uids::APPLICATION_CONTEXT {
            let why = "application context name not supported".to_string();
            return Err(Refusal::reject((1, 1, 2), raw, Blame::Peer, why));
        }
        let calling = AeTitle::new(raw.0).map_err(|e| {
            let why = format!("calling AE title invalid: {e}");
            Refusal::reject((1, 1, 3), raw, Blame::Peer, why).alerting(AlertKind::PeerNotRecognized)
        })?;
        let called = AeTitle::new(raw.1).map_err(|e| {
            let why = format!("called AE title invalid: {e}");
            Refusal::reject((1, 1, 7), raw, Blame::Peer, why)
        })?;
        if self.implementation_class.is_none() {
            return Err(Refusal::peer_abort(
                AbortReason::InvalidPduParameter,
                "A-ASSOCIATE-RQ without Implementation Class UID",
            ));
        }
        Ok(Identified {
            rq,
            calling,
            called,
        })
    }
}

/// Phase 2: a well-formed request from named AEs, not yet admitted.
pub struct Identified {
    rq: AssociationRQ,
    calling: AeTitle,
    called: AeTitle,
}

impl Identified {
    /// Asks the policy in force (peer, certificate, user identity) and takes one of the
    /// `max_associations` slots.
    async fn admit(self, shared: &Shared, conn: &mut ClientConn) -> Result<Permitted, Refusal> {
        let Identified {
            rq,
            calling,
            called,
        } = self;
        if !*shared.admit.borrow() {
            let why = "the audit trail cannot be written: refusing rather than relaying unaudited"
                .to_string();
            let raw = (rq.calling_ae_title.as_str(), rq.called_ae_title.as_str());
            return Err(Refusal::reject((2, 3, 2), raw, Blame::Local, why));
        }
        // The block list (responses of detection rules, operators' blocks): before the policy,
        // so a blocked source costs one lookup. Registered first, so a block published while
        // this one is being admitted cuts it rather than missing it.
        let cert = conn.cert.as_ref().map(|c| cert_key(&c.sha256_hex));
        let registration =
            shared.register(conn.id, conn.source.ip(), calling.as_str(), cert.clone());
        let block_facts = radguard_block::Facts {
            ip: conn.source.ip(),
            calling_ae: calling.as_str(),
            cert_sha256: cert.as_deref(),
        };
        match shared.check_blocks(&block_facts) {
            BlockVerdict::Pass => {}
            // PS3.8 §9.3.4: rejected-transient (a block ends), service-user, no reason given.
            BlockVerdict::Blocked(e) => {
                let left = e.until_unix_ms.saturating_sub(unix_ms()).div_ceil(1000);
                let why = format!(
                    "blocked by rule {} (block {}, {}) for {left} s more",
                    e.rule, e.id, e.subject
                );
                let raw = (calling.as_str(), called.as_str());
                return Err(Refusal::reject((2, 1, 1), raw, Blame::Peer, why));
            }
            // Rejected-transient, service-provider (presentation), local limit exceeded.
            BlockVerdict::Throttled(e) => {
                let why = format!(
                    "throttled by rule {} (block {}, {}): {}",
                    e.rule,
                    e.id,
                    e.subject,
                    e.action.describe()
                );
                let raw = (calling.as_str(), called.as_str());
                return Err(Refusal::reject((2, 3, 2), raw, Blame::Peer, why));
            }
        }
        let policy = shared.policy_now();
        let facts = AssociationFacts {
            source: conn.source.ip(),
            calling_ae: calling.clone(),
            called_ae: called.clone(),
        };
        let identity = IdentityFacts {
            client_cert: conn.cert.clone(),
            user: user_identity_claim(&rq.user_variables),
        };
        // Passcode checks (Argon2) are slow on purpose: off the async threads.
        let p = policy.clone();
        let verdict = tokio::task::spawn_blocking(move || p.admit_with(&facts, &identity))
            .await
            .map_err(|e| {
                let why = format!("admission check failed: {e}");
                Refusal::abort(AbortReason::NotSpecified, Blame::Local, why)
            })?;
        let names = (calling.as_str(), called.as_str());
        let admission = verdict.map_err(|refusal| {
            let why = match &refusal {
                AssociationRefusal::CallingAeNotRecognized { why } => {
                    format!("{refusal} (condition: {})", why.condition())
                }
                AssociationRefusal::CalledAeNotRecognized => refusal.to_string(),
            };
            Refusal::reject(refusal.rj_triple(), names, Blame::Peer, why)
                .alerting(AlertKind::PeerNotRecognized)
        })?;
        // Only now does the association count against `max_associations`: a connection that
        // is still negotiating (or never will) holds a connection slot, not an association
        // slot.
        let Ok(permit) = shared.global.clone().try_acquire_owned() else {
            let why = "global association limit reached".to_string();
            return Err(Refusal::reject((2, 3, 2), names, Blame::Local, why));
        };
        conn.assoc_permit = Some(permit);
        Ok(Permitted {
            rq,
            called,
            policy,
            admission,
            registration,
        })
    }
}

/// Phase 3: admitted by the policy, holding an association slot; its presentation contexts
/// and inspection pipeline are not set up yet.
pub struct Permitted {
    rq: AssociationRQ,
    called: AeTitle,
    policy: Policy,
    admission: Admission,
    registration: Registration,
}

impl Permitted {
    /// Builds the route's inspection pipeline, decides every proposed presentation context
    /// (policy, the vault's services, what a de-identifying route can transform) and the
    /// Maximum Length towards the client.
    fn plan(self, shared: &Shared, conn: &ClientConn) -> Result<Admitted, Refusal> {
        let Permitted {
            rq,
            called,
            policy,
            admission,
            registration,
        } = self;
        let is_vault = matches!(admission.route(), Route::Vault);
        let plan = plan_contexts(&rq, |abs| match policy.context(&admission, abs) {
            ContextDecision::Accept => {
                if is_vault && !vault_serves(abs) {
                    Some(PresentationContextResultReason::AbstractSyntaxNotSupported)
                } else {
                    None
                }
            }
            ContextDecision::Reject(why) => Some(match why {
                RejectWhy::AbstractSyntaxNotSupported => {
                    PresentationContextResultReason::AbstractSyntaxNotSupported
                }
                _ => PresentationContextResultReason::UserRejection,
            }),
        });
        let mut plan =
            plan.map_err(|e| Refusal::peer_abort(AbortReason::InvalidPduParameter, e.to_string()))?;
        let pipeline = Pipeline::for_route(shared, conn.id, &policy, &called);
        if pipeline.deid().is_some() {
            deid_contexts(&mut plan);
        }
        for p in plan.iter().filter(|p| p.rejected.is_some()) {
            shared.bus.emit(Event::ContextRejected {
                assoc: conn.id,
                context_id: p.proposed.id,
                abstract_syntax: p.proposed.abstract_syntax.clone(),
                why: match &p.rejected {
                    Some(PresentationContextResultReason::UserRejection) => "not allowed by policy",
                    _ => "abstract syntax not supported",
                }
                .to_string(),
            });
        }
        let client_accepts = effective_max(
            max_length(&rq.user_variables),
            shared.settings.max_pdu_length,
        );
        if client_accepts < MIN_PDU {
            let why = format!("Maximum Length {client_accepts} is below {MIN_PDU}");
            return Err(Refusal::peer_abort(AbortReason::InvalidPduParameter, why));
        }
        let user_identity_response = admission.user_identity_response().map(<[u8]>::to_vec);
        Ok(Admitted {
            rq,
            admission,
            policy,
            plan,
            client_accepts,
            user_identity_response,
            pipeline,
            registration,
        })
    }
}

/// De-identifying routes cannot transform Deflated data sets in the stream (that transfer
/// syntax is not offered upstream), and queries, retrieves and DIMSE-N services (an MPPS
/// names the patient) would carry identifiers out unchanged (refused): only Verification and
/// storage pass.
fn deid_contexts(plan: &mut [ContextPlan]) {
    for c in plan.iter_mut().filter(|c| c.rejected.is_none()) {
        let abs = c.proposed.abstract_syntax.trim_end_matches('\0');
        if !vault_serves(abs) {
            c.rejected = Some(PresentationContextResultReason::UserRejection);
            continue;
        }
        c.proposed
            .transfer_syntaxes
            .retain(|t| TransferSyntax::from_uid(t).is_ok_and(|t| !t.deflated));
        if c.proposed.transfer_syntaxes.is_empty() {
            c.rejected = Some(PresentationContextResultReason::TransferSyntaxesNotSupported);
        }
    }
}

/// The User Identity sub-item of an A-ASSOCIATE-RQ, as the policy sees it.
fn user_identity_claim(vars: &[UserVariableItem]) -> Option<UserIdentityClaim> {
    vars.iter().find_map(|v| match v {
        UserVariableItem::UserIdentityItem(u) => {
            let code = match u.identity_type() {
                UserIdentityType::Username => 1,
                UserIdentityType::UsernamePassword => 2,
                UserIdentityType::KerberosServiceTicket => 3,
                UserIdentityType::SamlAssertion => 4,
                UserIdentityType::Jwt => 5,
                _ => 0,
            };
            Some(UserIdentityClaim {
                kind: UserIdentityKind::from_code(code),
                primary: u.primary_field(),
                secondary: u.secondary_field(),
                positive_response_requested: u.positive_response_requested(),
            })
        }
        _ => None,
    })
}

/// The vault stores instances and answers C-ECHO; it does not serve queries or retrieves.
fn vault_serves(abstract_syntax: &str) -> bool {
    abstract_syntax == uids::VERIFICATION
        || radguard_policy::sop::is_storage_sop_class(abstract_syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requested(edit: impl FnOnce(&mut AssociationRQ)) -> Requested {
        let mut rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "MODALITY".into(),
            called_ae_title: "RADGUARD".into(),
            application_context_name: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![],
            user_variables: vec![UserVariableItem::ImplementationClassUID("1.2.3".into())],
        };
        edit(&mut rq);
        let (implementation_class, _) = implementation(&rq.user_variables);
        Requested {
            rq,
            implementation_class,
        }
    }

    fn rejected(r: Result<Identified, Refusal>) -> ((u8, u8, u8), Option<AlertKind>) {
        match r {
            Err(Refusal::Reject { rj, alert, .. }) => (rj, alert),
            Err(other) => panic!("expected an A-ASSOCIATE-RJ, got {other:?}"),
            Ok(_) => panic!("expected an A-ASSOCIATE-RJ, got through"),
        }
    }

    #[test]
    fn a_well_formed_request_is_identified() {
        let id = requested(|_| {}).identify().expect("identified");
        assert_eq!(id.calling.as_str(), "MODALITY");
        assert_eq!(id.called.as_str(), "RADGUARD");
    }

    #[test]
    fn identify_refuses_what_ps3_8_does_not_allow() {
        // PS3.8 §9.3.4: the result/source/reason of each refusal.
        let r = requested(|rq| rq.protocol_version = 2).identify();
        assert_eq!(rejected(r), ((1, 2, 2), None));
        let r = requested(|rq| rq.application_context_name = "1.2.3".into()).identify();
        assert_eq!(rejected(r), ((1, 1, 2), None));
        let r = requested(|rq| rq.calling_ae_title = String::new()).identify();
        assert_eq!(rejected(r), ((1, 1, 3), Some(AlertKind::PeerNotRecognized)));
        let r = requested(|rq| rq.called_ae_title = String::new()).identify();
        assert_eq!(rejected(r), ((1, 1, 7), None));
        match requested(|rq| rq.user_variables.clear()).identify() {
            Err(Refusal::Abort { reason, blame, .. }) => {
                assert_eq!(reason, AbortReason::InvalidPduParameter);
                assert_eq!(blame, Blame::Peer);
            }
            _ => panic!("a request without Implementation Class UID is aborted"),
        }
    }
}
