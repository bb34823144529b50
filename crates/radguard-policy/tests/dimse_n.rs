//! DIMSE-N in the policy: the `allow` N-services, `n_sop_classes` and `receive` keys (errors
//! at FILE:LINE:COL), and both decisions — the peer's requests (`Policy::dimse`) and the
//! called side's (`Policy::dimse_from_called`) — for every operation × allowed or not × SOP
//! class listed or not, plus the presentation contexts they open.

mod common;

use radguard_dicom::types::status;
use radguard_dicom::{CommandField, Operation};
use radguard_policy::*;

use common::*;

const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

const N_OPS: [(Operation, CommandField, &str); 6] = [
    (
        Operation::NEventReport,
        CommandField::NEventReportRq,
        "n-event-report",
    ),
    (Operation::NGet, CommandField::NGetRq, "n-get"),
    (Operation::NSet, CommandField::NSetRq, "n-set"),
    (Operation::NAction, CommandField::NActionRq, "n-action"),
    (Operation::NCreate, CommandField::NCreateRq, "n-create"),
    (Operation::NDelete, CommandField::NDeleteRq, "n-delete"),
];

fn policy(body: &str) -> Policy {
    parse_ok(&with_peer(&format!(
        "ae_titles = [\"CT01\"]\naddresses = [\"10.0.0.1\"]\n{body}"
    )))
    .policy
}

fn adm(p: &Policy) -> Admission {
    admit(p, "10.0.0.1", "CT01", "RADGUARD")
}

fn n_facts(command: CommandField, class: &str) -> DimseFacts {
    DimseFacts {
        command,
        sop_class: Some(class.to_string()),
        move_destination: None,
    }
}

#[test]
fn every_operation_allowed_or_not_class_in_or_out_both_directions() {
    for (op, field, name) in N_OPS {
        for allowed in [false, true] {
            // The peer always has some N-service, so that n_sop_classes is valid.
            let other = if op == Operation::NGet {
                "n-set"
            } else {
                "n-get"
            };
            let allow = if allowed {
                format!("[\"{name}\", \"{other}\"]")
            } else {
                format!("[\"{other}\"]")
            };
            let p = policy(&format!(
                "allow = {allow}\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]"
            ));
            let a = adm(&p);
            for (class, listed) in [(MPPS, true), (COMMITMENT, false), (CT, false)] {
                let got = p.dimse(&a, &n_facts(field, class));
                if class == CT {
                    // Not an operation of a Storage class at all.
                    let e = got.expect_err(name);
                    assert_eq!(
                        e.reason,
                        DimseRefusalReason::UnrecognizedCommand(field.to_u16())
                    );
                    assert_eq!(e.status, status::UNRECOGNIZED_OPERATION);
                    let e = p
                        .dimse_from_called(&a, &n_facts(field, class))
                        .expect_err(name);
                    assert_eq!(e.status, status::UNRECOGNIZED_OPERATION);
                    continue;
                }
                match (allowed, listed) {
                    (true, true) => {
                        let permit = got.unwrap_or_else(|e| panic!("{name} {class}: {e}"));
                        assert_eq!(permit.command(), field);
                    }
                    (false, _) => {
                        let e = got.expect_err(name);
                        assert_eq!(e.reason, DimseRefusalReason::OperationNotAllowed(op));
                        assert_eq!(e.status, status::REFUSED_NOT_AUTHORIZED);
                    }
                    (true, false) => {
                        let e = got.expect_err(name);
                        assert_eq!(e.reason, DimseRefusalReason::SopClassNotAllowed, "{name}");
                        assert_eq!(e.status, status::REFUSED_NOT_AUTHORIZED);
                    }
                }
                // `allow` never lets the called side send anything.
                let e = p
                    .dimse_from_called(&a, &n_facts(field, class))
                    .expect_err(name);
                assert_eq!(
                    e.status,
                    status::REFUSED_NOT_AUTHORIZED,
                    "{name} from called"
                );
            }
        }
    }
}

#[test]
fn receive_decides_the_called_sides_requests() {
    for received in [false, true] {
        let receive = if received {
            "receive = [\"n-event-report\"]\n"
        } else {
            ""
        };
        let p = policy(&format!(
            "allow = [\"n-action\"]\n{receive}n_sop_classes = [\"StorageCommitmentPushModel\"]"
        ));
        let a = adm(&p);
        for (class, listed) in [(COMMITMENT, true), (MPPS, false)] {
            for (op, field, name) in N_OPS {
                let got = p.dimse_from_called(&a, &n_facts(field, class));
                if received && listed && op == Operation::NEventReport {
                    assert_eq!(got.expect("report").command(), field);
                    continue;
                }
                let e = got.expect_err(name);
                assert_eq!(e.status, status::REFUSED_NOT_AUTHORIZED, "{name} {class}");
                let expected = if op != Operation::NEventReport || !received {
                    DimseRefusalReason::OperationNotAllowed(op)
                } else {
                    DimseRefusalReason::SopClassNotAllowed
                };
                assert_eq!(e.reason, expected, "{name} {class} received={received}");
            }
            // `receive` never lets the peer send an N-EVENT-REPORT itself.
            let e = p
                .dimse(&a, &n_facts(CommandField::NEventReportRq, class))
                .expect_err("peer's own report");
            assert_eq!(
                e.reason,
                DimseRefusalReason::OperationNotAllowed(Operation::NEventReport)
            );
        }
        // Only DIMSE-N requests are judged for the called side; responses never.
        for field in [CommandField::CStoreRq, CommandField::Other(0x0160)] {
            let e = p.dimse_from_called(&a, &n_facts(field, CT)).unwrap_err();
            assert_eq!(e.status, status::UNRECOGNIZED_OPERATION, "{field:?}");
        }
        let e = p
            .dimse_from_called(&a, &n_facts(CommandField::NEventReportRsp, COMMITMENT))
            .unwrap_err();
        assert_eq!(e.status, status::UNRECOGNIZED_OPERATION);
    }
}

#[test]
fn n_responses_and_unknown_commands_are_not_requests() {
    let p = policy("allow = [\"n-create\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]");
    let a = adm(&p);
    for (_, field, name) in N_OPS {
        let e = p
            .dimse(&a, &n_facts(field.response(), MPPS))
            .expect_err(name);
        assert_eq!(e.reason, DimseRefusalReason::NotARequest(field.response()));
        assert_eq!(e.status, status::UNRECOGNIZED_OPERATION);
    }
    let e = p
        .dimse(&a, &n_facts(CommandField::Other(0x0160), MPPS))
        .unwrap_err();
    assert_eq!(e.status, status::UNRECOGNIZED_OPERATION);
    // Without a class: 0x0120.
    let facts = DimseFacts {
        command: CommandField::NCreateRq,
        sop_class: None,
        move_destination: None,
    };
    assert_eq!(
        p.dimse(&a, &facts).unwrap_err().status,
        status::MISSING_ATTRIBUTE
    );
}

#[test]
fn contexts_open_only_for_listed_classes_of_n_peers() {
    let p = policy(
        "allow = [\"echo\", \"n-create\", \"n-set\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]",
    );
    let a = adm(&p);
    assert_eq!(p.context(&a, MPPS), ContextDecision::Accept);
    assert_eq!(
        p.context(&a, COMMITMENT),
        ContextDecision::Reject(RejectWhy::AbstractSyntaxNotSupported)
    );
    // A receive-only peer gets its class's context too (the report arrives on it).
    let p = policy("allow = [\"echo\"]\nreceive = [\"n-event-report\"]\nn_sop_classes = [\"1.2.840.10008.1.20.1\"]");
    assert_eq!(p.context(&adm(&p), COMMITMENT), ContextDecision::Accept);
    // Default deny: a peer without N-services never gets them.
    let p = policy("allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]");
    let a = adm(&p);
    for class in [MPPS, COMMITMENT] {
        assert_eq!(
            p.context(&a, class),
            ContextDecision::Reject(RejectWhy::AbstractSyntaxNotSupported)
        );
        for (op, field, _) in N_OPS {
            assert_eq!(
                p.dimse(&a, &n_facts(field, class)).unwrap_err().reason,
                DimseRefusalReason::OperationNotAllowed(op)
            );
            assert!(p.dimse_from_called(&a, &n_facts(field, class)).is_err());
        }
    }
}

#[test]
fn config_keys() {
    let base = "ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\n";
    // n_sop_classes required with an n-service in allow or receive.
    let src = with_peer(&format!("{base}allow = [\"n-create\"]"));
    one_err(
        &src,
        "[[peer]]",
        "peer[0].n_sop_classes",
        "required when allow or receive",
    );
    let src = with_peer(&format!(
        "{base}allow = [\"echo\"]\nreceive = [\"n-event-report\"]"
    ));
    one_err(
        &src,
        "[[peer]]",
        "peer[0].n_sop_classes",
        "required when allow or receive",
    );
    // ... and only then.
    let src = with_peer(&format!(
        "{base}allow = [\"echo\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]"
    ));
    one_err(
        &src,
        "n_sop_classes",
        "peer[0].n_sop_classes",
        "only allowed when",
    );
    // Storage classes, Q/R models, Verification and unknown keywords are not N classes.
    for (bad, msg) in [
        ("CTImageStorage", "not a SOP class of the DIMSE-N services"),
        (
            "1.2.840.10008.5.1.4.1.2.2.1",
            "not a SOP class of the DIMSE-N services",
        ),
        ("Verification", "not a SOP class of the DIMSE-N services"),
        ("NoSuchClass", "unknown SOP class keyword"),
        ("1.02.3", "invalid UID"),
    ] {
        let src = with_peer(&format!(
            "{base}allow = [\"n-create\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\", \"{bad}\"]"
        ));
        one_err(&src, bad, "peer[0].n_sop_classes[1]", msg);
    }
    let src = with_peer(&format!(
        "{base}allow = [\"n-create\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\", \"1.2.840.10008.3.1.2.3.3\"]"
    ));
    one_err(
        &src,
        "1.2.840.10008.3.1.2.3.3\"]",
        "peer[0].n_sop_classes[1]",
        "listed twice",
    );
    let src = with_peer(&format!("{base}allow = [\"n-create\"]\nn_sop_classes = []"));
    one_err(
        &src,
        "n_sop_classes",
        "peer[0].n_sop_classes",
        "at least one",
    );
    // receive: only n-event-report, once.
    let src = with_peer(&format!(
        "{base}allow = [\"n-action\"]\nreceive = [\"n-set\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]"
    ));
    one_err(
        &src,
        "\"n-set\"",
        "peer[0].receive[0]",
        "expected \"n-event-report\"",
    );
    let src = with_peer(&format!(
        "{base}allow = [\"n-action\"]\nreceive = [\"n-event-report\", \"n-event-report\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]"
    ));
    one_err(
        &src,
        "\"n-event-report\"]",
        "peer[0].receive[1]",
        "duplicate",
    );
    // Every n-service name parses; a private (unknown) UID is accepted on purpose.
    let p = policy(
        "allow = [\"n-create\", \"n-set\", \"n-action\", \"n-delete\", \"n-get\", \"n-event-report\"]\n\
         receive = [\"n-event-report\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\", \"1.2.3.4.5\"]",
    );
    let peer = p.peers().next().unwrap();
    assert_eq!(peer.allowed().len(), 6);
    assert!(peer.allowed().iter().all(|op| op.is_normalized()));
    assert_eq!(peer.receives().len(), 1);
    assert_eq!(peer.n_sop_classes().unwrap().len(), 2);
    let text = p.describe();
    assert!(
        text.contains("DIMSE-N SOP classes: 1.2.3.4.5, ModalityPerformedProcedureStep"),
        "{text}"
    );
    assert!(text.contains("receives: n-event-report"), "{text}");
}
