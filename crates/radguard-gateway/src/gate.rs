//! The request gate: every DIMSE request a client sends passes here before anything is
//! forwarded or stored. It checks the command set (PS3.7), the presentation context it came on,
//! and the policy; the outcome is either a [`Verdict::Pass`] carrying the policy's proof, or the
//! response the gateway gives itself.

use std::collections::HashMap;

use dicom_ul::pdu::{AssociationAC, PresentationContextResultReason};
use radguard_dicom::dimse::{Command, Request};
use radguard_dicom::types::status;
use radguard_dicom::CommandField;
use radguard_events::AlertKind;
use radguard_policy::{Admission, DimseFacts, DimseRefusalReason, OnRevoke, Permitted, Policy};

/// The accepted presentation contexts: id → (abstract syntax, transfer syntax).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Contexts(HashMap<u8, (String, String)>);

impl Contexts {
    /// From the A-ASSOCIATE-AC the client received, and the proposals it answered.
    pub fn from_ac(
        proposed: &[dicom_ul::pdu::PresentationContextProposed],
        ac: &AssociationAC,
    ) -> Self {
        let mut m = HashMap::new();
        for r in &ac.presentation_contexts {
            if r.reason != PresentationContextResultReason::Acceptance {
                continue;
            }
            if let Some(p) = proposed.iter().find(|p| p.id == r.id) {
                m.insert(
                    r.id,
                    (
                        p.abstract_syntax.trim_end_matches('\0').to_string(),
                        r.transfer_syntax.trim_end_matches('\0').to_string(),
                    ),
                );
            }
        }
        Contexts(m)
    }

    pub fn get(&self, id: u8) -> Option<(&str, &str)> {
        self.0.get(&id).map(|(a, t)| (a.as_str(), t.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What to do with one request.
#[derive(Debug)]
pub enum Verdict {
    /// Relay (or serve) it.
    Pass { request: Request, permit: Permitted },
    /// Answer it ourselves with this status; consume its data set; forward nothing.
    Refuse(Refused),
    /// It cannot be answered (no message ID, or on a context that was not accepted): abort.
    Abort(String),
}

/// A request the gateway answers itself, with the response it gives.
#[derive(Debug)]
pub struct Refused {
    pub field: CommandField,
    pub message_id: u16,
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
    pub status: u16,
    /// The Error Comment (0000,0902) of the response.
    pub comment: String,
    /// The policy in force no longer admits the association's peer (a reload removed or
    /// narrowed it): `[server] on_revoke` decides what happens to the association.
    pub revoked: bool,
}

impl Refused {
    /// The kind of security alert a refused request raises.
    pub fn alert_kind(&self) -> AlertKind {
        AlertKind::NotAuthorized
    }

    /// The alert's detail when it says more than the Error Comment: that the peer was revoked.
    pub fn detail(&self) -> Option<String> {
        self.revoked.then(|| {
            format!(
                "{} (the peer is no longer admitted by the policy in force)",
                self.comment
            )
        })
    }

    /// Why the association is aborted once the refusal is answered, when it is: its peer was
    /// revoked and `[server] on_revoke = "abort"`. The A-ABORT's reason is "not specified"
    /// (PS3.8 §9.3.8), the gateway's own decision.
    pub fn abort_after(&self, on_revoke: OnRevoke) -> Option<String> {
        (self.revoked && on_revoke == OnRevoke::Abort).then(|| {
            "admission withdrawn by the policy in force (on_revoke = \"abort\")".to_string()
        })
    }
}

/// The Meta SOP classes of Print Management (PS3.4 H.3): negotiated as one abstract syntax,
/// while each DIMSE-N message names the SOP class of the object it acts on.
const PRINT_META: [(&str, &[&str]); 2] = [
    (
        // Basic Grayscale Print Management Meta SOP Class.
        "1.2.840.10008.5.1.1.9",
        &[
            "1.2.840.10008.5.1.1.1",  // Basic Film Session
            "1.2.840.10008.5.1.1.2",  // Basic Film Box
            "1.2.840.10008.5.1.1.4",  // Basic Grayscale Image Box
            "1.2.840.10008.5.1.1.16", // Printer
        ],
    ),
    (
        // Basic Color Print Management Meta SOP Class.
        "1.2.840.10008.5.1.1.18",
        &[
            "1.2.840.10008.5.1.1.1",   // Basic Film Session
            "1.2.840.10008.5.1.1.2",   // Basic Film Box
            "1.2.840.10008.5.1.1.4.1", // Basic Color Image Box
            "1.2.840.10008.5.1.1.16",  // Printer
        ],
    ),
];

/// The SOP class a request of `class` on a context of `abstract_syntax` is judged as: the
/// class itself when it is the abstract syntax, the Meta SOP class when the class is one of
/// its members (the policy's `n_sop_classes` names what was negotiated), else none (PS3.7
/// 0x0122: the class does not belong on that context).
pub fn class_on_context<'a>(class: &'a str, abstract_syntax: &'a str) -> Option<&'a str> {
    if class == abstract_syntax {
        return Some(class);
    }
    PRINT_META
        .iter()
        .any(|(meta, members)| *meta == abstract_syntax && members.contains(&class))
        .then_some(abstract_syntax)
}

pub fn judge(
    policy: &Policy,
    admission: &Admission,
    contexts: &Contexts,
    context_id: u8,
    command: &Command,
) -> Verdict {
    let Some((abstract_syntax, _ts)) = contexts.get(context_id) else {
        return Verdict::Abort(format!(
            "message on presentation context {context_id}, which was not accepted"
        ));
    };
    let refuse_as = |status: u16, comment: String, revoked: bool| -> Verdict {
        match command.message_id.or(command.responded_to) {
            Some(message_id) => Verdict::Refuse(Refused {
                field: command.command_field().unwrap_or(CommandField::Other(0)),
                message_id,
                // DIMSE-N requests name a Requested SOP class/instance; their responses
                // carry it back as Affected (PS3.7 §10.3).
                sop_class: command
                    .affected_sop_class
                    .clone()
                    .or_else(|| command.requested_sop_class.clone()),
                sop_instance: command
                    .affected_sop_instance
                    .clone()
                    .or_else(|| command.requested_sop_instance.clone()),
                status,
                comment,
                revoked,
            }),
            None => Verdict::Abort(format!("request without a Message ID: {comment}")),
        }
    };
    let refuse = |status: u16, comment: String| refuse_as(status, comment, false);
    let request = match command.validate_request() {
        Ok(r) => r,
        Err(p) => return refuse(p.status, p.detail),
    };
    let mut judged_class = request.sop_class.as_ref().map(|u| u.to_string());
    if let Some(class) = &request.sop_class {
        match class_on_context(class.as_str(), abstract_syntax) {
            Some(c) => judged_class = Some(c.to_string()),
            None => {
                return refuse(
                    status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                    format!(
                    "SOP class {class} does not match the presentation context's abstract syntax"
                ),
                )
            }
        }
    }
    let facts = DimseFacts {
        command: request.field,
        sop_class: judged_class,
        move_destination: request.move_destination.clone(),
    };
    match policy.dimse(admission, &facts) {
        Ok(permit) => Verdict::Pass { request, permit },
        Err(refusal) => refuse_as(
            refusal.status,
            refusal.comment().to_string(),
            refusal.reason == DimseRefusalReason::AdmissionWithdrawn,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::class_on_context;

    #[test]
    fn print_members_are_judged_as_their_meta_class() {
        let grey = "1.2.840.10008.5.1.1.9";
        let color = "1.2.840.10008.5.1.1.18";
        // Film Box on the grayscale meta context: judged as the meta class.
        assert_eq!(class_on_context("1.2.840.10008.5.1.1.2", grey), Some(grey));
        assert_eq!(class_on_context("1.2.840.10008.5.1.1.16", grey), Some(grey));
        // A color image box belongs to the color meta class only.
        assert_eq!(
            class_on_context("1.2.840.10008.5.1.1.4.1", color),
            Some(color)
        );
        assert_eq!(class_on_context("1.2.840.10008.5.1.1.4.1", grey), None);
        // Any other mismatch stays refused; an exact match is itself.
        let mpps = "1.2.840.10008.3.1.2.3.3";
        assert_eq!(class_on_context("1.2.840.10008.5.1.1.1", mpps), None);
        assert_eq!(class_on_context(mpps, mpps), Some(mpps));
    }
}
