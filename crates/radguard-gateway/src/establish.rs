//! Association establishment (PS3.8 states Sta2→Sta3): read the A-ASSOCIATE-RQ under the
//! ARTIM timer, identify the peer, ask the policy, plan the presentation contexts.

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
use crate::negotiate::{effective_max, implementation, max_length, plan_contexts, ContextPlan};
use crate::reader::ReadError;
use crate::shared::Shared;

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

pub async fn establish(shared: &Shared, conn: &mut ClientConn) -> Option<Admitted> {
    let artim = shared.settings.artim_timeout;
    let frame = match tokio::time::timeout(artim, conn.reader.next()).await {
        Err(_) => {
            shared.bus.emit(Event::AssociationAborted {
                assoc: conn.id,
                blame: Blame::Peer,
                why: "ARTIM expired before an A-ASSOCIATE-RQ arrived".into(),
            });
            return None;
        }
        Ok(Err(ReadError::Frame(e))) => {
            let reason = e.abort_reason();
            conn.abort(shared, reason, Blame::Peer, e.to_string()).await;
            return None;
        }
        Ok(Err(e)) => {
            shared.bus.emit(Event::AssociationAborted {
                assoc: conn.id,
                blame: Blame::Peer,
                why: format!("before association: {e}"),
            });
            return None;
        }
        Ok(Ok(f)) => f,
    };
    if frame.ty == PduType::Abort {
        // Sta2 + Evt16 (AA-2): close the transport, answer nothing.
        shared.bus.emit(Event::AssociationAborted {
            assoc: conn.id,
            blame: Blame::Peer,
            why: "A-ABORT before any A-ASSOCIATE-RQ".into(),
        });
        return None;
    }
    if frame.ty != PduType::AssociateRq {
        let why = format!("{} where an A-ASSOCIATE-RQ was expected", frame.ty.name());
        conn.abort(shared, AbortReason::UnexpectedPdu, Blame::Peer, why)
            .await;
        return None;
    }
    let rq = match decode_control(&frame.bytes) {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(_) => {
            let why = "A-ASSOCIATE-RQ could not be decoded".to_string();
            conn.abort(shared, AbortReason::InvalidPduParameter, Blame::Peer, why)
                .await;
            return None;
        }
        Err(e) => {
            conn.abort(
                shared,
                AbortReason::InvalidPduParameter,
                Blame::Peer,
                e.to_string(),
            )
            .await;
            return None;
        }
    };
    drop(frame);
    let (impl_class, impl_version) = implementation(&rq.user_variables);
    shared.bus.emit(Event::AssociationRequested {
        assoc: conn.id,
        source: conn.source,
        calling_ae: rq.calling_ae_title.clone(),
        called_ae: rq.called_ae_title.clone(),
        implementation_class_uid: impl_class.clone().unwrap_or_default(),
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
    if rq.protocol_version & 1 == 0 {
        let why = format!(
            "protocol version 0x{:04X} not supported",
            rq.protocol_version
        );
        conn.reject(shared, (1, 2, 2), (None, None), Blame::Peer, why)
            .await;
        return None;
    }
    let calling_raw = rq.calling_ae_title.clone();
    let called_raw = rq.called_ae_title.clone();
    if rq.application_context_name.trim_end_matches('\0') != uids::APPLICATION_CONTEXT {
        let why = "application context name not supported".to_string();
        conn.reject(
            shared,
            (1, 1, 2),
            (Some(&calling_raw), Some(&called_raw)),
            Blame::Peer,
            why,
        )
        .await;
        return None;
    }
    let calling = match AeTitle::new(&calling_raw) {
        Ok(a) => a,
        Err(e) => {
            let why = format!("calling AE title invalid: {e}");
            alert(shared, conn, AlertKind::PeerNotRecognized, &why);
            conn.reject(
                shared,
                (1, 1, 3),
                (Some(&calling_raw), Some(&called_raw)),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    let called = match AeTitle::new(&called_raw) {
        Ok(a) => a,
        Err(e) => {
            let why = format!("called AE title invalid: {e}");
            conn.reject(
                shared,
                (1, 1, 7),
                (Some(&calling_raw), Some(&called_raw)),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    if impl_class.is_none() {
        let why = "A-ASSOCIATE-RQ without Implementation Class UID".to_string();
        conn.abort(shared, AbortReason::InvalidPduParameter, Blame::Peer, why)
            .await;
        return None;
    }
    if !*shared.admit.borrow() {
        let why = "the audit trail cannot be written: refusing rather than relaying unaudited"
            .to_string();
        conn.reject(
            shared,
            (2, 3, 2),
            (Some(&calling_raw), Some(&called_raw)),
            Blame::Local,
            why,
        )
        .await;
        return None;
    }
    let policy = shared.policy.borrow().clone();
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
    let verdict = tokio::task::spawn_blocking(move || p.admit_with(&facts, &identity)).await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let why = format!("admission check failed: {e}");
            conn.abort(shared, AbortReason::NotSpecified, Blame::Local, why)
                .await;
            return None;
        }
    };
    let admission = match verdict {
        Ok(a) => a,
        Err(refusal) => {
            let why = match &refusal {
                AssociationRefusal::CallingAeNotRecognized { why } => {
                    format!("{refusal} (condition: {})", why.condition())
                }
                AssociationRefusal::CalledAeNotRecognized => refusal.to_string(),
            };
            alert(shared, conn, AlertKind::PeerNotRecognized, &why);
            conn.reject(
                shared,
                refusal.rj_triple(),
                (Some(calling.as_str()), Some(called.as_str())),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    // Only now does the association count against `max_associations`: a connection that is
    // still negotiating (or never will) holds a connection slot, not an association slot.
    let Ok(permit) = shared.global.clone().try_acquire_owned() else {
        conn.reject(
            shared,
            (2, 3, 2),
            (Some(calling.as_str()), Some(called.as_str())),
            Blame::Local,
            "global association limit reached".into(),
        )
        .await;
        return None;
    };
    conn.assoc_permit = Some(permit);
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
    let plan = match plan {
        // De-identifying routes cannot transform Deflated data sets in the stream: that
        // transfer syntax is not offered upstream.
        Ok(mut p) if shared.tls.borrow().deid.contains_key(&called) => {
            for c in p.iter_mut().filter(|c| c.rejected.is_none()) {
                // Queries and retrieves would carry identifiers out unchanged.
                let abs = c.proposed.abstract_syntax.trim_end_matches('\0');
                if radguard_policy::sop::FIND_MODELS.contains(&abs)
                    || radguard_policy::sop::MOVE_MODELS.contains(&abs)
                    || radguard_policy::sop::GET_MODELS.contains(&abs)
                {
                    c.rejected = Some(PresentationContextResultReason::UserRejection);
                    continue;
                }
                c.proposed
                    .transfer_syntaxes
                    .retain(|t| TransferSyntax::from_uid(t).is_ok_and(|t| !t.deflated));
                if c.proposed.transfer_syntaxes.is_empty() {
                    c.rejected =
                        Some(PresentationContextResultReason::TransferSyntaxesNotSupported);
                }
            }
            p
        }
        Ok(p) => p,
        Err(e) => {
            conn.abort(
                shared,
                AbortReason::InvalidPduParameter,
                Blame::Peer,
                e.to_string(),
            )
            .await;
            return None;
        }
    };
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
        conn.abort(shared, AbortReason::InvalidPduParameter, Blame::Peer, why)
            .await;
        return None;
    }
    let user_identity_response = admission.user_identity_response().map(<[u8]>::to_vec);
    Some(Admitted {
        rq,
        admission,
        policy,
        plan,
        client_accepts,
        user_identity_response,
    })
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

fn alert(shared: &Shared, conn: &ClientConn, kind: AlertKind, detail: &str) {
    shared.bus.emit(Event::SecurityAlert {
        assoc: Some(conn.id),
        kind,
        source: Some(conn.source),
        detail: detail.to_string(),
    });
}
