//! Requests the called side (the upstream SCP) sends the client on the client's own
//! association. A C-GET's C-STORE sub-operations answer the client's own C-GET and pass under
//! the firewall (relay.rs); a DIMSE-N request — Storage Commitment's N-EVENT-REPORT is the one
//! PS3.4 J.3.3 sends this way — is judged here under the policy in force, like the client's
//! requests are in [`crate::gate`]: default deny, the peer's `receive` and `n_sop_classes`
//! decide. A refused one is answered to the upstream by the gateway; the client never sees it.
//!
//! A C-GET's C-STORE sub-operation carrying a Defined Procedure Protocol or a Protocol Approval
//! goes through the scan-protocol guard like a C-STORE toward the modality from a client
//! (guard.rs): the sender is the upstream, so `[guard] protocol_upstreams` (the route's
//! `upstream_ae`) decides who may send one, not `protocol_managers`; allowed, it is held whole
//! and judged against the limits and approvals before any of it reaches the client. A refused
//! one is answered to the upstream (0x0124 / 0xC510), which counts it as a failed
//! sub-operation in its C-GET responses (PS3.4 C.4.3.1.3.1); the client never sees it.

use radguard_dicom::dimse::{encode_response, Command};
use radguard_dicom::CommandField;
use radguard_policy::{Admission, DimseFacts, Policy};

use crate::gate::Contexts;
use crate::guard::{Guard, MAX_HELD};
use crate::inspect::Checking;
use radguard_guard::protocol::may_manage_upstream;
use radguard_guard::{
    Decision, Finding, FindingKind, CT_DEFINED_PROTOCOL, PROTOCOL_APPROVAL,
    STATUS_PROTOCOL_REFUSED, XA_DEFINED_PROTOCOL,
};

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
    let mut judged_class = request.sop_class.as_ref().map(|u| u.to_string());
    if let Some(class) = &request.sop_class {
        // A Print Management Meta SOP class context carries its members' messages (the
        // Printer's N-EVENT-REPORT); the policy judges the negotiated class.
        match crate::gate::class_on_context(class.as_str(), abstract_syntax) {
            Some(c) => judged_class = Some(c.to_string()),
            None => {
                return refuse(
                    radguard_dicom::types::status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
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
        move_destination: None,
    };
    match policy.dimse_from_called(admission, &facts) {
        Ok(_) => CalledVerdict::Pass,
        Err(refusal) => refuse(refusal.status, refusal.comment().to_string()),
    }
}

/// A C-STORE sub-operation of the called side held whole for the guard: nothing of it reaches
/// the client before it is judged.
pub struct HeldStore {
    pub context_id: u8,
    pub raw: Vec<u8>,
    pub command: Command,
    /// The data set so far (at most [`MAX_HELD`] bytes).
    pub data: Vec<u8>,
    /// The route's firewall on the data set.
    pub checking: Option<Checking>,
}

/// What becomes of a C-STORE request from the called side.
#[derive(Debug, PartialEq)]
pub enum CalledStore {
    /// Not the guard's: relayed as it streams (under the firewall).
    Pass,
    /// A protocol or approval from an upstream that may send them: hold it whole.
    Hold,
    /// Answer the upstream with this response; the findings go into the detection.
    Refuse(CalledRefusal, Vec<Finding>),
    /// A protocol or approval without a Message ID: it cannot be answered, abort.
    Abort(String),
}

/// A C-STORE response to the upstream for a sub-operation the gateway refuses.
pub fn store_refusal(command: &Command, status: u16, comment: String) -> Option<CalledRefusal> {
    let message_id = command.message_id?;
    let response = encode_response(
        CommandField::CStoreRq,
        message_id,
        command.affected_sop_class.as_deref(),
        command.affected_sop_instance.as_deref(),
        status,
        Some(&comment),
    );
    Some(CalledRefusal {
        field: CommandField::CStoreRq,
        message_id,
        status,
        comment,
        response,
    })
}

/// The guard's plan for a C-STORE request the upstream `upstream_ae` sent the client (a C-GET
/// sub-operation): protocols and approvals only from `protocol_upstreams`.
pub fn plan_called_store(guard: &Guard, upstream_ae: &str, command: &Command) -> CalledStore {
    let class = command.affected_sop_class.as_deref().unwrap_or_default();
    if !matches!(
        class,
        CT_DEFINED_PROTOCOL | XA_DEFINED_PROTOCOL | PROTOCOL_APPROVAL
    ) {
        return CalledStore::Pass;
    }
    if command.message_id.is_none() {
        return CalledStore::Abort(format!("upstream C-STORE of {class} without a Message ID"));
    }
    match may_manage_upstream(guard.config(), upstream_ae) {
        Decision::Pass => CalledStore::Hold,
        Decision::Refuse { status } => {
            let f = Finding::new(
                FindingKind::NotProtocolManager,
                format!(
                    "upstream {} may not send protocols (guard.protocol_upstreams)",
                    upstream_ae.trim()
                ),
            );
            match store_refusal(
                command,
                status,
                "Radguard guard: not a protocol manager".into(),
            ) {
                Some(r) => CalledStore::Refuse(r, vec![f]),
                None => CalledStore::Abort("upstream C-STORE without a Message ID".into()),
            }
        }
    }
}

impl HeldStore {
    /// Keeps a fragment; `Err` (and the data dropped) past [`MAX_HELD`] bytes.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), Finding> {
        if self.data.len().saturating_add(data.len()) > MAX_HELD {
            self.data = Vec::new();
            return Err(Finding::new(
                FindingKind::Malformed,
                format!("protocol object over {MAX_HELD} bytes"),
            ));
        }
        self.data.extend_from_slice(data);
        Ok(())
    }

    /// The held object, whole, judged by the guard (`ts_uid`: its context's transfer syntax):
    /// `Ok` relays it to the client, else the answer to the upstream and the findings.
    pub fn judge(&self, guard: &Guard, ts_uid: &str) -> Result<(), (CalledRefusal, Vec<Finding>)> {
        let class = self
            .command
            .affected_sop_class
            .as_deref()
            .unwrap_or_default();
        match guard.judge_held(class, &self.data, ts_uid) {
            Ok(()) => Ok(()),
            Err((status, findings)) => Err(self.refusal(status, findings)),
        }
    }

    /// The answer to the upstream refusing it with `status`.
    pub fn refusal(&self, status: u16, findings: Vec<Finding>) -> (CalledRefusal, Vec<Finding>) {
        let first = findings.first().map_or("refused", |f| f.kind.name());
        let comment = format!("Radguard guard: {first}");
        // Held only with a Message ID (plan_called_store).
        let r = store_refusal(&self.command, status, comment).unwrap_or(CalledRefusal {
            field: CommandField::CStoreRq,
            message_id: 0,
            status,
            comment: String::new(),
            response: Vec::new(),
        });
        (r, findings)
    }

    /// Refused for being over [`MAX_HELD`] bytes (0xC510).
    pub fn too_large(&self, f: Finding) -> (CalledRefusal, Vec<Finding>) {
        self.refusal(STATUS_PROTOCOL_REFUSED, vec![f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{
        AssociationAC, PresentationContextProposed, PresentationContextResult,
        PresentationContextResultReason,
    };
    use radguard_dicom::types::status;
    use radguard_policy::{parse_config, AssociationFacts};

    const COMMITMENT: &str = "1.2.840.10008.1.20.1";
    const MPPS: &str = "1.2.840.10008.3.1.2.3.3";

    fn setup(peer: &str) -> (Policy, Admission, Contexts) {
        let toml = format!(
            "[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"127.0.0.1\"]\n{peer}\n\n\
             [[route]]\ncalled_ae = \"ARCHIVE\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"ARCHIVE\"\n"
        );
        let policy = parse_config(&toml, "test.toml").unwrap().policy;
        let facts = AssociationFacts {
            source: "127.0.0.1".parse().unwrap(),
            calling_ae: radguard_dicom::AeTitle::new("CT01").unwrap(),
            called_ae: radguard_dicom::AeTitle::new("ARCHIVE").unwrap(),
        };
        let adm = policy.admit(&facts).unwrap();
        let proposed: Vec<PresentationContextProposed> = [(1, COMMITMENT), (3, MPPS)]
            .into_iter()
            .map(|(id, abs)| PresentationContextProposed {
                id,
                abstract_syntax: abs.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            })
            .collect();
        let ac = AssociationAC {
            protocol_version: 1,
            calling_ae_title: "CT01".into(),
            called_ae_title: "ARCHIVE".into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: [1, 3]
                .into_iter()
                .map(|id| PresentationContextResult {
                    id,
                    reason: PresentationContextResultReason::Acceptance,
                    transfer_syntax: "1.2.840.10008.1.2".into(),
                })
                .collect(),
            user_variables: vec![],
        };
        (policy, adm, Contexts::from_ac(&proposed, &ac))
    }

    fn report(class: &str, event: bool) -> Command {
        Command {
            field: Some(CommandField::NEventReportRq.to_u16()),
            message_id: Some(7),
            affected_sop_class: Some(class.into()),
            affected_sop_instance: Some("1.2.840.10008.1.20.1.1".into()),
            event_type_id: event.then_some(1),
            data_set_type: Some(0x0000),
            ..Command::default()
        }
    }

    fn refusal(v: CalledVerdict) -> (u16, Command) {
        match v {
            CalledVerdict::Refuse(r) => (r.status, Command::decode(&r.response).unwrap()),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn the_report_passes_only_when_received_and_listed() {
        let both = "allow = [\"n-action\"]\nreceive = [\"n-event-report\"]\nn_sop_classes = [\"StorageCommitmentPushModel\", \"ModalityPerformedProcedureStep\"]";
        let (p, a, cx) = setup(both);
        assert_eq!(
            judge_called(&p, &a, &cx, 1, &report(COMMITMENT, true)),
            CalledVerdict::Pass
        );
        // Not received: answered to the upstream with 0x0124, as an N-EVENT-REPORT-RSP for
        // its Message ID naming the class and instance.
        let (p, a, cx) =
            setup("allow = [\"n-action\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]");
        let (st, rsp) = refusal(judge_called(&p, &a, &cx, 1, &report(COMMITMENT, true)));
        assert_eq!(st, status::REFUSED_NOT_AUTHORIZED);
        assert_eq!(rsp.command_field(), Some(CommandField::NEventReportRsp));
        assert_eq!(rsp.responded_to, Some(7));
        assert_eq!(rsp.status, Some(status::REFUSED_NOT_AUTHORIZED));
        assert_eq!(rsp.affected_sop_class.as_deref(), Some(COMMITMENT));
        assert_eq!(
            rsp.affected_sop_instance.as_deref(),
            Some("1.2.840.10008.1.20.1.1")
        );
    }

    #[test]
    fn malformed_or_mismatched_reports_are_refused() {
        let both = "allow = [\"n-action\"]\nreceive = [\"n-event-report\"]\nn_sop_classes = [\"StorageCommitmentPushModel\", \"ModalityPerformedProcedureStep\"]";
        let (p, a, cx) = setup(both);
        // No Event Type ID (PS3.7 §10.3.1).
        let (st, _) = refusal(judge_called(&p, &a, &cx, 1, &report(COMMITMENT, false)));
        assert_eq!(st, status::MISSING_ATTRIBUTE);
        // The class of another context.
        let (st, _) = refusal(judge_called(&p, &a, &cx, 3, &report(COMMITMENT, true)));
        assert_eq!(st, status::REFUSED_SOP_CLASS_NOT_SUPPORTED);
        // A context that was not accepted, or no Message ID: abort.
        assert!(matches!(
            judge_called(&p, &a, &cx, 5, &report(COMMITMENT, true)),
            CalledVerdict::Abort(_)
        ));
        let mut no_id = report(COMMITMENT, true);
        no_id.message_id = None;
        assert!(matches!(
            judge_called(&p, &a, &cx, 1, &no_id),
            CalledVerdict::Abort(_)
        ));
        // Any other N-request from the called side: not received.
        let mut set = report(MPPS, true);
        set.field = Some(CommandField::NSetRq.to_u16());
        set.requested_sop_class = set.affected_sop_class.take();
        set.requested_sop_instance = set.affected_sop_instance.take();
        let (st, rsp) = refusal(judge_called(&p, &a, &cx, 3, &set));
        assert_eq!(st, status::REFUSED_NOT_AUTHORIZED);
        assert_eq!(rsp.command_field(), Some(CommandField::NSetRsp));
        assert_eq!(rsp.affected_sop_class.as_deref(), Some(MPPS));
    }
}
