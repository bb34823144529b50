//! Association negotiation as pure functions over dicom-ul's PDU types: which presentation
//! contexts go upstream, what the upstream is asked, and what the client is answered.
//!
//! Maximum Length items are rewritten in both directions so that no PDU either side may send is
//! longer than the other side accepts or than the gateway's own cap: P-DATA PDUs then pass through
//! unchanged and the gateway holds at most one PDU per direction.

use dicom_ul::pdu::{
    AssociationAC, AssociationRQ, PresentationContextProposed, PresentationContextResult,
    PresentationContextResultReason, UserVariableItem,
};
use radguard_dicom::types::uids;
use std::collections::HashSet;

/// Why the request itself is malformed (answered with A-ABORT reason 6, or RJ where PS3.8 says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("presentation context ID {0} is even or zero")]
    BadContextId(u8),
    #[error("presentation context ID {0} is proposed twice")]
    DuplicateContextId(u8),
    #[error("no presentation context proposed")]
    NoContexts,
    #[error("presentation context {0} proposes no transfer syntax")]
    NoTransferSyntax(u8),
}

/// The decision for each proposed context, in proposal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextPlan {
    pub proposed: PresentationContextProposed,
    /// `None` = forward (or accept locally); `Some` = answer with this rejection ourselves.
    pub rejected: Option<PresentationContextResultReason>,
}

/// Splits the proposal into what the policy allows and what the gateway rejects itself.
pub fn plan_contexts(
    rq: &AssociationRQ,
    mut allowed: impl FnMut(&str) -> Option<PresentationContextResultReason>,
) -> Result<Vec<ContextPlan>, RequestError> {
    if rq.presentation_contexts.is_empty() {
        return Err(RequestError::NoContexts);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(rq.presentation_contexts.len());
    for pc in &rq.presentation_contexts {
        if pc.id % 2 == 0 {
            return Err(RequestError::BadContextId(pc.id));
        }
        if !seen.insert(pc.id) {
            return Err(RequestError::DuplicateContextId(pc.id));
        }
        if pc.transfer_syntaxes.is_empty() {
            return Err(RequestError::NoTransferSyntax(pc.id));
        }
        out.push(ContextPlan {
            proposed: pc.clone(),
            rejected: allowed(pc.abstract_syntax.trim_end_matches('\0')),
        });
    }
    Ok(out)
}

/// The Maximum Length a side announced (0 = unlimited), capped by the gateway's own limit.
pub fn effective_max(announced: Option<u32>, cap: u32) -> u32 {
    match announced {
        None | Some(0) => cap,
        Some(v) => v.min(cap),
    }
}

pub fn max_length(vars: &[UserVariableItem]) -> Option<u32> {
    vars.iter().find_map(|v| match v {
        UserVariableItem::MaxLength(m) => Some(*m),
        _ => None,
    })
}

pub fn implementation(vars: &[UserVariableItem]) -> (Option<String>, Option<String>) {
    let mut class = None;
    let mut version = None;
    for v in vars {
        match v {
            UserVariableItem::ImplementationClassUID(u) => class = Some(u.clone()),
            UserVariableItem::ImplementationVersionName(n) => version = Some(n.clone()),
            _ => {}
        }
    }
    (class, version)
}

/// The A-ASSOCIATE-RQ sent upstream: only the allowed contexts; Maximum Length = what the
/// client accepts (capped); the client's implementation identity, role selection and extended
/// negotiation for the forwarded abstract syntaxes pass; user identity and unknown items do not
/// (the gateway is the party that authenticates the client).
pub fn upstream_rq(
    rq: &AssociationRQ,
    plan: &[ContextPlan],
    calling_ae: &str,
    called_ae: &str,
    client_accepts: u32,
) -> AssociationRQ {
    let forwarded: Vec<PresentationContextProposed> = plan
        .iter()
        .filter(|p| p.rejected.is_none())
        .map(|p| p.proposed.clone())
        .collect();
    let syntaxes: HashSet<&str> = forwarded
        .iter()
        .map(|p| p.abstract_syntax.as_str())
        .collect();
    let mut vars = vec![UserVariableItem::MaxLength(client_accepts)];
    for v in &rq.user_variables {
        match v {
            UserVariableItem::ImplementationClassUID(_)
            | UserVariableItem::ImplementationVersionName(_) => vars.push(v.clone()),
            UserVariableItem::ScuScpRoleSelectionSubItem(uid, _)
            | UserVariableItem::SopClassExtendedNegotiationSubItem(uid, _)
                if syntaxes.contains(uid.as_str()) =>
            {
                vars.push(v.clone())
            }
            _ => {}
        }
    }
    if implementation(&vars).0.is_none() {
        vars.push(UserVariableItem::ImplementationClassUID(
            uids::IMPLEMENTATION_CLASS_UID.to_string(),
        ));
    }
    AssociationRQ {
        protocol_version: 1,
        calling_ae_title: calling_ae.to_string(),
        called_ae_title: called_ae.to_string(),
        application_context_name: uids::APPLICATION_CONTEXT.to_string(),
        presentation_contexts: forwarded,
        user_variables: vars,
    }
}

/// The A-ASSOCIATE-AC for the client, merged from the upstream's answer and the gateway's own
/// rejections. Maximum Length = what the upstream accepts (capped). Contexts the upstream did
/// not answer are reported as rejected (no reason).
pub fn client_ac(
    rq: &AssociationRQ,
    plan: &[ContextPlan],
    upstream: &AssociationAC,
    upstream_accepts: u32,
) -> AssociationAC {
    let results = plan
        .iter()
        .map(|p| {
            let first_ts = p
                .proposed
                .transfer_syntaxes
                .first()
                .cloned()
                .unwrap_or_default();
            match &p.rejected {
                Some(reason) => PresentationContextResult {
                    id: p.proposed.id,
                    reason: reason.clone(),
                    transfer_syntax: first_ts,
                },
                None => upstream
                    .presentation_contexts
                    .iter()
                    .find(|r| r.id == p.proposed.id)
                    .cloned()
                    .unwrap_or(PresentationContextResult {
                        id: p.proposed.id,
                        reason: PresentationContextResultReason::NoReason,
                        transfer_syntax: first_ts,
                    }),
            }
        })
        .collect();
    let mut vars = vec![UserVariableItem::MaxLength(upstream_accepts)];
    for v in &upstream.user_variables {
        match v {
            UserVariableItem::ImplementationClassUID(_)
            | UserVariableItem::ImplementationVersionName(_)
            | UserVariableItem::ScuScpRoleSelectionSubItem(..)
            | UserVariableItem::SopClassExtendedNegotiationSubItem(..) => vars.push(v.clone()),
            _ => {}
        }
    }
    if implementation(&vars).0.is_none() {
        vars.push(UserVariableItem::ImplementationClassUID(
            uids::IMPLEMENTATION_CLASS_UID.to_string(),
        ));
    }
    AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: uids::APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables: vars,
    }
}

/// The A-ASSOCIATE-AC the gateway gives itself (built-in vault, or nothing to forward):
/// allowed contexts accepted with the first proposed transfer syntax `pick_ts` accepts.
pub fn local_ac(
    rq: &AssociationRQ,
    plan: &[ContextPlan],
    max: u32,
    mut pick_ts: impl FnMut(&str, &[String]) -> Option<String>,
) -> AssociationAC {
    let results = plan
        .iter()
        .map(|p| {
            let first_ts = p
                .proposed
                .transfer_syntaxes
                .first()
                .cloned()
                .unwrap_or_default();
            match &p.rejected {
                Some(reason) => PresentationContextResult {
                    id: p.proposed.id,
                    reason: reason.clone(),
                    transfer_syntax: first_ts,
                },
                None => match pick_ts(&p.proposed.abstract_syntax, &p.proposed.transfer_syntaxes) {
                    Some(ts) => PresentationContextResult {
                        id: p.proposed.id,
                        reason: PresentationContextResultReason::Acceptance,
                        transfer_syntax: ts,
                    },
                    None => PresentationContextResult {
                        id: p.proposed.id,
                        reason: PresentationContextResultReason::TransferSyntaxesNotSupported,
                        transfer_syntax: first_ts,
                    },
                },
            }
        })
        .collect();
    AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: uids::APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables: vec![
            UserVariableItem::MaxLength(max),
            UserVariableItem::ImplementationClassUID(uids::IMPLEMENTATION_CLASS_UID.to_string()),
            UserVariableItem::ImplementationVersionName(
                uids::IMPLEMENTATION_VERSION_NAME.to_string(),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rq(ids: &[(u8, &str)]) -> AssociationRQ {
        AssociationRQ {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: "PACS".into(),
            application_context_name: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: ids
                .iter()
                .map(|(id, a)| PresentationContextProposed {
                    id: *id,
                    abstract_syntax: a.to_string(),
                    transfer_syntaxes: vec![
                        uids::EXPLICIT_VR_LE.into(),
                        uids::IMPLICIT_VR_LE.into(),
                    ],
                })
                .collect(),
            user_variables: vec![
                UserVariableItem::MaxLength(0),
                UserVariableItem::ImplementationClassUID("1.2.3".into()),
                UserVariableItem::Unknown(0x58, vec![1, 2]),
            ],
        }
    }

    fn allow_echo(a: &str) -> Option<PresentationContextResultReason> {
        (a != uids::VERIFICATION).then_some(PresentationContextResultReason::UserRejection)
    }

    #[test]
    fn forwards_only_allowed_contexts_and_caps_length() {
        let r = rq(&[(1, uids::VERIFICATION), (3, "1.2.840.10008.5.1.4.1.1.2")]);
        let plan = plan_contexts(&r, allow_echo).unwrap();
        let max = effective_max(max_length(&r.user_variables), 65536);
        assert_eq!(max, 65536);
        let up = upstream_rq(&r, &plan, "SCU", "ARCHIVE", max);
        assert_eq!(up.presentation_contexts.len(), 1);
        assert_eq!(up.called_ae_title, "ARCHIVE");
        assert_eq!(max_length(&up.user_variables), Some(65536));
        assert!(!up
            .user_variables
            .iter()
            .any(|v| matches!(v, UserVariableItem::Unknown(..))));
        let ac = AssociationAC {
            protocol_version: 1,
            calling_ae_title: "SCU".into(),
            called_ae_title: "ARCHIVE".into(),
            application_context_name: uids::APPLICATION_CONTEXT.into(),
            presentation_contexts: vec![PresentationContextResult {
                id: 1,
                reason: PresentationContextResultReason::Acceptance,
                transfer_syntax: uids::IMPLICIT_VR_LE.into(),
            }],
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        };
        let up_max = effective_max(max_length(&ac.user_variables), 65536);
        let c = client_ac(&r, &plan, &ac, up_max);
        assert_eq!(c.called_ae_title, "PACS");
        assert_eq!(c.presentation_contexts.len(), 2);
        assert_eq!(
            c.presentation_contexts[0].reason,
            PresentationContextResultReason::Acceptance
        );
        assert_eq!(
            c.presentation_contexts[1].reason,
            PresentationContextResultReason::UserRejection
        );
        assert_eq!(max_length(&c.user_variables), Some(16384));
    }

    #[test]
    fn malformed_proposals() {
        assert_eq!(
            plan_contexts(&rq(&[]), allow_echo),
            Err(RequestError::NoContexts)
        );
        assert_eq!(
            plan_contexts(&rq(&[(2, uids::VERIFICATION)]), allow_echo),
            Err(RequestError::BadContextId(2))
        );
        assert_eq!(
            plan_contexts(
                &rq(&[(1, uids::VERIFICATION), (1, uids::VERIFICATION)]),
                allow_echo
            ),
            Err(RequestError::DuplicateContextId(1))
        );
    }

    #[test]
    fn max_rules() {
        assert_eq!(effective_max(Some(0), 1000), 1000);
        assert_eq!(effective_max(None, 1000), 1000);
        assert_eq!(effective_max(Some(500), 1000), 500);
        assert_eq!(effective_max(Some(5000), 1000), 1000);
    }
}
