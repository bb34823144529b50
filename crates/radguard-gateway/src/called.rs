//! Requests the called side (the upstream SCP) sends the client on the client's own
//! association. A C-GET's C-STORE sub-operations answer the client's own C-GET and pass under
//! the firewall (relay.rs); a DIMSE-N request — Storage Commitment's N-EVENT-REPORT is the one
//! PS3.4 J.3.3 sends this way — is judged here under the policy in force, like the client's
//! requests are in [`crate::gate`]: default deny, the peer's `receive` and `n_sop_classes`
//! decide. A refused one is answered to the upstream by the gateway; the client never sees it.

use radguard_dicom::dimse::{encode_response, Command};
use radguard_dicom::CommandField;
use radguard_policy::{Admission, DimseFacts, Policy};

use crate::gate::Contexts;

/// What becomes of a request from the called side.
#[derive(Debug, PartialEq, Eq)]
pub enum CalledVerdict {
    /// Relay it to the client (its data set under the firewall).
    Pass,
    /// Answer the upstream with this response; drop the request and its data set.
    Refuse(CalledRefusal),
    /// It cannot be answered (no Message ID, or a context that was not accepted): abort.
    Abort(String),
}

/// A request of the called side the gateway answers itself.
#[derive(Debug, PartialEq, Eq)]
pub struct CalledRefusal {
    pub field: CommandField,
    pub message_id: u16,
    pub status: u16,
    /// The Error Comment (0000,0902) of the response.
    pub comment: String,
    /// The response command set for the upstream.
    pub response: Vec<u8>,
}

/// Judges a DIMSE-N request from the called side: required elements (PS3.7 §10.3), its SOP
/// class against the presentation context, then [`Policy::dimse_from_called`].
pub fn judge_called(
    policy: &Policy,
    admission: &Admission,
    contexts: &Contexts,
    context_id: u8,
    command: &Command,
) -> CalledVerdict {
    let Some((abstract_syntax, _)) = contexts.get(context_id) else {
        return CalledVerdict::Abort(format!(
            "upstream request on presentation context {context_id}, which was not accepted"
        ));
    };
    let field = command.command_field().unwrap_or(CommandField::Other(0));
    let refuse = |status: u16, comment: String| match command.message_id {
        Some(message_id) => {
            let response = encode_response(
                field,
                message_id,
                command
                    .affected_sop_class
                    .as_deref()
                    .or(command.requested_sop_class.as_deref()),
                command
                    .affected_sop_instance
                    .as_deref()
                    .or(command.requested_sop_instance.as_deref()),
                status,
                Some(&comment),
            );
            CalledVerdict::Refuse(CalledRefusal {
                field,
                message_id,
                status,
                comment,
                response,
            })
        }
        None => CalledVerdict::Abort(format!("upstream request without a Message ID: {comment}")),
    };
    let request = match command.validate_request() {
        Ok(r) => r,
        Err(p) => return refuse(p.status, p.detail),
    };
    if let Some(class) = &request.sop_class {
        if class.as_str() != abstract_syntax {
            return refuse(
                radguard_dicom::types::status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                format!(
                    "SOP class {class} does not match the presentation context's abstract syntax"
                ),
            );
        }
    }
    let facts = DimseFacts {
        command: request.field,
        sop_class: request.sop_class.as_ref().map(|u| u.to_string()),
        move_destination: None,
    };
    match policy.dimse_from_called(admission, &facts) {
        Ok(_) => CalledVerdict::Pass,
        Err(refusal) => refuse(refusal.status, refusal.comment().to_string()),
    }
}
