//! PS3.15 A.5 messages: every message type, built from records with every fact, validates
//! against the A.5.1 schema (xmllint, RELAX NG) and passes the A.5.2/A.5.3 checks; messages from
//! today's gateway events lack only the facts the events do not carry.

mod common;

use base64::Engine as _;
use common::a5;
use radguard_audit::atna::{message_for, AtnaSource};
use radguard_audit::mapper::Mapper;
use radguard_audit::record::*;
use radguard_events::{AlertKind, AssocId, Blame, Event, EventRecord};

fn peer(user: bool) -> Peer {
    Peer {
        address: Some("192.0.2.10:40001".into()),
        calling_ae: Some("CT_SCANNER".into()),
        called_ae: Some("PACS".into()),
        name: Some("ct-1".into()),
        route: Some("pacs".into()),
        upstream: Some("198.51.100.5:104".into()),
        local: Some("192.0.2.1:11112".into()),
        tls: Some(TlsFacts {
            version: "TLSv1_3".into(),
            cipher_suite: "TLS13_AES_256_GCM_SHA384".into(),
            peer_subject: Some("CN=ct-1".into()),
            peer_cert_sha256: Some("ab".repeat(32)),
        }),
        user: user.then(|| UserIdentity {
            kind: "username-passcode".into(),
            user: "dr.who".into(),
            accepted: Some(true),
        }),
    }
}

fn rec(peer: Option<Peer>, e: AuditEvent) -> AuditRecord {
    let mut r = AuditRecord::draft(1_700_000_000_000, Some(7), peer, e);
    r.node = "gw1".into();
    r.seq = 1;
    r
}

fn transfer(succeeded: bool) -> Transfer {
    Transfer {
        action: TransferAction::Store,
        source: Participant {
            ae_title: Some("CT_SCANNER".into()),
            address: Some("192.0.2.10:40001".into()),
        },
        destination: Participant {
            ae_title: Some("PACS".into()),
            address: Some("198.51.100.5:104".into()),
        },
        requestor: None,
        patient: Some(PatientRef {
            id: "PAT-001".into(),
            name: Some("Doe^Jane".into()),
        }),
        studies: vec![StudyRef {
            uid: Some("1.2.3.4.5".into()),
            sop_classes: vec![SopClassRef {
                uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                instances: vec!["1.2.3.4.5.1".into(), "1.2.3.4.5.2".into()],
            }],
        }],
        succeeded,
        failures: if succeeded {
            vec![]
        } else {
            vec!["1.2.3.4.5.2: C-STORE status 0xA700".into()]
        },
    }
}

fn full_fact_records() -> Vec<(&'static str, AuditRecord)> {
    let query = QueryData {
        level: Some("STUDY".into()),
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        dataset_base64: base64::engine::general_purpose::STANDARD
            .encode(b"\x08\x00\x52\x00CS\x06\x00STUDY "),
    };
    let req = |command: &str, q: Option<QueryData>| AuditEvent::DimseRequest {
        message_id: 3,
        command: command.into(),
        sop_class: Some("1.2.840.10008.5.1.4.1.2.2.1".into()),
        sop_instance: None,
        move_destination: Some("WORKSTATION".into()),
        study_uid: Some("1.2.3.4.5".into()),
        patient: Some(PatientRef {
            id: "PAT-001".into(),
            name: None,
        }),
        query: q,
    };
    vec![
        (
            "110100 start",
            rec(
                None,
                AuditEvent::ApplicationStart {
                    listen: "192.0.2.1:11112".into(),
                    ae_title: "RADGUARD".into(),
                },
            ),
        ),
        (
            "110100 stop",
            rec(None, AuditEvent::ApplicationStop { aborted: 2 }),
        ),
        (
            "110102 store",
            rec(
                Some(peer(false)),
                AuditEvent::TransferBegun {
                    transfer: transfer(true),
                },
            ),
        ),
        ("110102 move", rec(Some(peer(false)), req("CMoveRq", None))),
        ("110102 get", rec(Some(peer(false)), req("CGetRq", None))),
        (
            "110104 ok",
            rec(
                Some(peer(false)),
                AuditEvent::InstancesTransferred {
                    transfer: transfer(true),
                },
            ),
        ),
        (
            "110104 failed",
            rec(
                Some(peer(false)),
                AuditEvent::InstancesTransferred {
                    transfer: transfer(false),
                },
            ),
        ),
        (
            "110112",
            rec(Some(peer(false)), req("CFindRq", Some(query))),
        ),
        (
            "110113 node auth",
            rec(
                Some(peer(false)),
                AuditEvent::SecurityAlert {
                    alert: "peer-not-recognized".into(),
                    detail: "calling AE \"X\" unknown".into(),
                    rule: None,
                },
            ),
        ),
        (
            "110113 restricted",
            rec(
                Some(peer(false)),
                AuditEvent::SecurityAlert {
                    alert: "not-authorized".into(),
                    detail: "C-MOVE refused".into(),
                    rule: None,
                },
            ),
        ),
        (
            "110113 protocol",
            rec(
                Some(peer(false)),
                AuditEvent::SecurityAlert {
                    alert: "protocol-violation".into(),
                    detail: "PDU too long".into(),
                    rule: None,
                },
            ),
        ),
        (
            "110113 conflict",
            rec(
                Some(peer(false)),
                AuditEvent::SecurityAlert {
                    alert: "instance-conflict".into(),
                    detail: "same UID, other content".into(),
                    rule: None,
                },
            ),
        ),
        (
            "110113 audit started",
            rec(
                None,
                AuditEvent::AuditStarted {
                    store: "sqlite:/var/lib/radguard/audit.sqlite".into(),
                },
            ),
        ),
        (
            "110113 audit stopped",
            rec(None, AuditEvent::AuditStopped { records: 5 }),
        ),
        (
            "110113 events lost",
            rec(None, AuditEvent::EventsLost { count: 12 }),
        ),
        (
            "110114 login",
            rec(
                Some(peer(true)),
                AuditEvent::AssociationAccepted {
                    accepted_contexts: 1,
                    rejected_contexts: 0,
                    max_pdu_client: 1,
                    max_pdu_upstream: 1,
                },
            ),
        ),
        (
            "110114 login failed",
            rec(
                Some(peer(true)),
                AuditEvent::AssociationRefused {
                    result: 1,
                    rj_source: 1,
                    reason: 3,
                    blame: "peer".into(),
                    why: "bad passcode".into(),
                },
            ),
        ),
        (
            "110114 logout",
            rec(
                Some(peer(true)),
                AuditEvent::AssociationReleased {
                    bytes_from_client: 1,
                    bytes_from_upstream: 1,
                },
            ),
        ),
    ]
}

fn src() -> AtnaSource {
    let mut s = AtnaSource::new("gw1");
    s.ae_title = Some("RADGUARD".into());
    s.enterprise_site_id = Some("Radiology-Site-A".into());
    s
}

#[test]
fn every_message_type_validates_against_the_schema_and_the_a5_rules() {
    let mut seen = std::collections::BTreeSet::new();
    for (what, r) in full_fact_records() {
        let m = message_for(&r, &src()).unwrap_or_else(|| panic!("{what}: no message"));
        seen.insert(m.event_id.code.clone());
        let xml = m.to_xml();
        assert!(!xml.contains('\n'), "{what}: one line");
        a5::xmllint(&xml).unwrap_or_else(|e| panic!("{what}: schema: {e}\n{xml}"));
        let v = a5::check(&xml);
        assert!(v.is_empty(), "{what}: {v:#?}\n{xml}");
    }
    let want: std::collections::BTreeSet<String> =
        ["110100", "110102", "110104", "110112", "110113", "110114"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    assert_eq!(seen, want);
}

#[test]
fn messages_carry_the_facts() {
    let recs = full_fact_records();
    let xml = |name: &str| {
        let r = &recs.iter().find(|(w, _)| *w == name).unwrap().1;
        message_for(r, &src()).unwrap().to_xml()
    };
    let q = xml("110112");
    let doc = roxmltree::Document::parse(&q).unwrap();
    let query = doc
        .descendants()
        .find(|n| n.has_tag_name("ParticipantObjectQuery"))
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(query.text().unwrap())
        .unwrap();
    assert_eq!(bytes, b"\x08\x00\x52\x00CS\x06\x00STUDY ");
    assert!(q.contains("ParticipantObjectID=\"1.2.840.10008.5.1.4.1.2.2.1\""));
    assert!(q.contains("NetworkAccessPointID=\"192.0.2.10\" NetworkAccessPointTypeCode=\"2\""));
    assert!(q.contains("AlternativeUserID=\"AETITLES=CT_SCANNER\""));
    let t = xml("110104 failed");
    assert!(t.contains("EventOutcomeIndicator=\"4\""), "{t}");
    assert!(t.contains("0xA700"), "{t}");
    assert!(t.contains("<SOPClass UID=\"1.2.840.10008.5.1.4.1.1.2\" NumberOfInstances=\"2\"><Instance UID=\"1.2.3.4.5.1\"/>"), "{t}");
    assert!(t.contains("ParticipantObjectID=\"PAT-001\""), "{t}");
    assert!(
        t.contains("AuditEnterpriseSiteID=\"Radiology-Site-A\""),
        "{t}"
    );
    let s = xml("110113 node auth");
    assert!(s.contains("csd-code=\"110126\""), "{s}");
    let l = xml("110114 login failed");
    assert!(
        l.contains("UserID=\"dr.who\"") && l.contains("EventOutcomeIndicator=\"4\""),
        "{l}"
    );
}

fn overwrite_detection(a: AssocId) -> Event {
    Event::Detection {
        assoc: Some(a),
        source: Some("127.0.0.1:4000".parse().unwrap()),
        peer: Some("ct".into()),
        calling_ae: Some("CT1".into()),
        called_ae: Some("ARCHIVE".into()),
        rule: "ct-gan".into(),
        rule_kind: "overwrite".into(),
        response: "alert".into(),
        evidence: serde_json::json!({"type": "overwrite", "store": "vault", "refused": true}),
        detail: "rule ct-gan (overwrite): SOP Instance 1.2.3 already in the vault".into(),
    }
}

/// A detection is a Security Alert record carrying its rule; its A.5 message has the
/// `detection` type code and the rule kind's (an overwrite keeps "Conflicting Instance
/// Content" and the serious-failure outcome the stores gave it).
#[test]
fn a_detection_keeps_its_rule_in_the_record_and_the_message() {
    let mut m = Mapper::default();
    let recs = m.map(&ev(1, overwrite_detection(AssocId(9))));
    assert_eq!(recs.len(), 1);
    let AuditEvent::SecurityAlert { alert, rule, .. } = &recs[0].event else {
        panic!("{:?}", recs[0].event);
    };
    assert_eq!(alert, "detection");
    let rule = rule.as_ref().expect("the rule");
    assert_eq!(
        (rule.name.as_str(), rule.kind.as_str()),
        ("ct-gan", "overwrite")
    );
    assert_eq!(rule.evidence["store"], "vault");
    // The record survives the store's JSON round trip with its rule.
    let back: AuditRecord =
        serde_json::from_str(&serde_json::to_string(&recs[0]).unwrap()).unwrap();
    assert_eq!(back.event, recs[0].event);
    let xml = message_for(&recs[0], &src()).unwrap().to_xml();
    assert!(xml.contains("csd-code=\"detection\""), "{xml}");
    assert!(xml.contains("csd-code=\"instance-conflict\""), "{xml}");
    assert!(xml.contains("EventOutcomeIndicator=\"8\""), "{xml}");
}

fn ev(seq: u64, event: Event) -> EventRecord {
    EventRecord {
        seq,
        time_ms: 1_700_000_000_000 + u128::from(seq),
        event,
    }
}

/// Records the mapper makes from today's events: schema-valid, no rule errors, and the only
/// gaps are the facts the events do not carry (study UID, patient, query data set).
#[test]
fn messages_from_todays_events_lack_only_unreported_facts() {
    let a = AssocId(1);
    let events = vec![
        Event::Listening {
            addr: "127.0.0.1:11112".parse().unwrap(),
            ae_title: "RADGUARD".into(),
        },
        Event::AssociationRequested {
            assoc: a,
            source: "127.0.0.1:5000".parse().unwrap(),
            calling_ae: "FINDSCU".into(),
            called_ae: "PACS".into(),
            implementation_class_uid: "1.2".into(),
            implementation_version: None,
            contexts: 3,
            tls: None,
            user_identity: None,
        },
        Event::AssociationAccepted {
            assoc: a,
            peer: "ws".into(),
            route: "pacs".into(),
            accepted_contexts: 3,
            rejected_contexts: 0,
            max_pdu_client: 1,
            max_pdu_upstream: 1,
            authenticated_user: None,
        },
        Event::DimseRequest {
            assoc: a,
            message_id: 1,
            command: "CFindRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.2.2.1".into()),
            sop_instance: None,
            move_destination: None,
            subject: None,
            identifier: None,
        },
        Event::DimseRequest {
            assoc: a,
            message_id: 2,
            command: "CMoveRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.2.2.2".into()),
            sop_instance: None,
            move_destination: Some("WS".into()),
            subject: None,
            identifier: None,
        },
        Event::DimseRequest {
            assoc: a,
            message_id: 3,
            command: "CStoreRq".into(),
            sop_class: Some("1.2.840.10008.5.1.4.1.1.7".into()),
            sop_instance: Some("1.2.3.9".into()),
            move_destination: None,
            subject: None,
            identifier: None,
        },
        Event::DimseResponse {
            assoc: a,
            message_id: 3,
            command: "CStoreRsp".into(),
            status: 0,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: Some(radguard_events::Subject {
                patient_id: Some("PAT-9".into()),
                study_uid: Some("1.2.3.77".into()),
                ..Default::default()
            }),
            sub_operations: None,
            bytes: None,
        },
        Event::SecurityAlert {
            assoc: Some(a),
            kind: AlertKind::NotAuthorized,
            source: None,
            detail: "x".into(),
        },
        overwrite_detection(a),
        Event::AssociationReleased {
            assoc: a,
            bytes_from_client: 1,
            bytes_from_upstream: 1,
        },
        Event::ShutdownFinished { aborted: 0 },
    ];
    let mut m = Mapper::default();
    let mut n = 0;
    for (i, e) in events.into_iter().enumerate() {
        for mut r in m.map(&ev(i as u64, e)) {
            r.node = "gw1".into();
            let Some(msg) = message_for(&r, &src()) else {
                continue;
            };
            n += 1;
            let xml = msg.to_xml();
            a5::xmllint(&xml).unwrap_or_else(|e| panic!("{:?}: {e}\n{xml}", r.kind()));
            assert_eq!(
                a5::errors(&xml),
                Vec::<String>::new(),
                "{:?}\n{xml}",
                r.kind()
            );
            for f in a5::missing_facts(&xml) {
                assert!(
                    f.contains("query data set")
                        || f.contains("TransferSyntax")
                        || (r.kind() == RecordKind::DimseRequest
                            && (f.contains("Study Instance UID") || f.contains("patient"))),
                    "{:?}: unexpected gap {f}",
                    r.kind()
                );
            }
        }
    }
    assert_eq!(
        n, 8,
        "start, query, move, transfer-begun, alert, detection, transferred, stop"
    );
}

/// The checks can fail: broken messages are caught by the schema and by the rules.
#[test]
fn broken_messages_are_rejected() {
    let (_, r) = full_fact_records()
        .into_iter()
        .find(|(w, _)| *w == "110112")
        .unwrap();
    let good = message_for(&r, &src()).unwrap().to_xml();
    for (what, bad) in [
        (
            "no EventID",
            good.replacen(
                "<EventID csd-code=\"110112\" codeSystemName=\"DCM\" originalText=\"Query\"/>",
                "",
                1,
            ),
        ),
        (
            "outcome 3",
            good.replacen(
                "EventOutcomeIndicator=\"0\"",
                "EventOutcomeIndicator=\"3\"",
                1,
            ),
        ),
        ("no participant", {
            let s = good.find("<ActiveParticipant").unwrap();
            let e = good.find("<AuditSourceIdentification").unwrap();
            format!("{}{}", &good[..s], &good[e..])
        }),
        (
            "no originalText",
            good.replacen(" originalText=\"Query\"", "", 1),
        ),
    ] {
        assert!(a5::xmllint(&bad).is_err(), "{what} passed the schema");
    }
    for (what, bad) in [
        (
            "wrong meaning",
            good.replacen("originalText=\"Query\"", "originalText=\"Queries\"", 1),
        ),
        ("wrong role", good.replacen("110153", "110152", 1)),
        (
            "two requestors",
            good.replacen("UserIsRequestor=\"false\"", "UserIsRequestor=\"true\"", 1),
        ),
        (
            "wrong system",
            good.replacen("codeSystemName=\"DCM\"", "codeSystemName=\"LN\"", 1),
        ),
    ] {
        assert!(!a5::errors(&bad).is_empty(), "{what} passed the rules");
    }
}
