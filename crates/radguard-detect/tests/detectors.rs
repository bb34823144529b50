//! Each detector on event sequences (no sockets).

use std::net::SocketAddr;

use radguard_detect::*;
use radguard_events::{AssocId, Blame, Event, IntegrityStore, SubOperations, Subject};
use radguard_events::{Identifier, TlsFacts};

const SEC: u64 = 1000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn requested(id: u64, source: &str, calling: &str, called: &str, version: Option<&str>) -> Event {
    Event::AssociationRequested {
        assoc: AssocId(id),
        source: addr(source),
        calling_ae: calling.into(),
        called_ae: called.into(),
        implementation_class_uid: "1.2.276.0.7230010.3.0.3.6.4".into(),
        implementation_version: version.map(Into::into),
        contexts: 1,
        tls: None,
        user_identity: None,
    }
}

fn refused(id: u64, source: &str, called: &str) -> Event {
    Event::AssociationRefused {
        assoc: AssocId(id),
        source: addr(source),
        calling_ae: Some("PROBE".into()),
        called_ae: Some(called.into()),
        result: 1,
        rj_source: 1,
        reason: 7,
        blame: Blame::Peer,
        why: "called AE title not recognised".into(),
    }
}

fn accepted(id: u64, peer: &str) -> Event {
    Event::AssociationAccepted {
        assoc: AssocId(id),
        peer: peer.into(),
        route: "pacs".into(),
        accepted_contexts: 1,
        rejected_contexts: 0,
        max_pdu_client: 16384,
        max_pdu_upstream: 16384,
        authenticated_user: None,
    }
}

fn released(id: u64) -> Event {
    Event::AssociationReleased {
        assoc: AssocId(id),
        bytes_from_client: 0,
        bytes_from_upstream: 0,
    }
}

fn request(id: u64, command: &str) -> Event {
    Event::DimseRequest {
        assoc: AssocId(id),
        message_id: 1,
        command: command.into(),
        sop_class: None,
        sop_instance: None,
        move_destination: None,
        subject: None,
        identifier: None,
    }
}

fn find(id: u64, level: &str, subject: Subject) -> Event {
    Event::DimseRequest {
        assoc: AssocId(id),
        message_id: 1,
        command: "CFindRq".into(),
        sop_class: Some("1.2.840.10008.5.1.4.1.2.2.1".into()),
        sop_instance: None,
        move_destination: None,
        subject: Some(subject),
        identifier: Some(Identifier {
            transfer_syntax: "1.2.840.10008.1.2".into(),
            level: Some(level.into()),
            dataset: Vec::new(),
            truncated: false,
        }),
    }
}

fn cmove(id: u64, dest: &str) -> Event {
    Event::DimseRequest {
        assoc: AssocId(id),
        message_id: 1,
        command: "CMoveRq".into(),
        sop_class: None,
        sop_instance: None,
        move_destination: Some(dest.into()),
        subject: None,
        identifier: None,
    }
}

fn get_suboperation(id: u64, status: u16) -> Event {
    Event::DimseResponse {
        assoc: AssocId(id),
        message_id: 7,
        command: "CStoreRsp".into(),
        status,
        from: Blame::Peer,
        sop_class: None,
        sop_instance: None,
        subject: None,
        sub_operations: None,
        bytes: None,
    }
}

/// A C-MOVE-RSP from the upstream for Message ID `msg` with the given counts.
fn move_response(id: u64, msg: u16, status: u16, completed: u16, warning: u16) -> Event {
    Event::DimseResponse {
        assoc: AssocId(id),
        message_id: msg,
        command: "CMoveRsp".into(),
        status,
        from: Blame::Upstream,
        sop_class: None,
        sop_instance: None,
        subject: None,
        sub_operations: Some(SubOperations {
            remaining: (status == 0xFF00).then_some(1),
            completed: Some(completed),
            failed: Some(0),
            warning: Some(warning),
        }),
        bytes: None,
    }
}

fn one_rule(rule: RuleConfigLite) -> Detectors {
    let cfg = DetectConfig {
        rule: vec![rule.into_config()],
        ..DetectConfig::default()
    };
    Detectors::new(&cfg)
}

/// A rule written the short way in tests.
struct RuleConfigLite {
    kind: RuleKind,
    threshold: u64,
    window_secs: u64,
}

impl RuleConfigLite {
    fn into_config(self) -> config::RuleConfig {
        config::RuleConfig {
            name: format!("t-{}", self.kind.name()),
            kind: self.kind,
            threshold: Some(self.threshold),
            window_secs: Some(self.window_secs),
            response: None,
            block_secs: None,
            block_by: None,
            throttle_per_minute: None,
            signatures: None,
            allow: None,
            levels: None,
            learning: None,
            attributes: None,
            hours: None,
            peers: None,
            learning_days: None,
            max_bytes: None,
            baseline: None,
            factor: None,
        }
    }
}

fn lite(kind: RuleKind, threshold: u64, window_secs: u64) -> RuleConfigLite {
    RuleConfigLite {
        kind,
        threshold,
        window_secs,
    }
}

#[test]
fn recon_refused_fires_at_the_threshold_not_below_and_once_per_window() {
    let mut d = one_rule(lite(RuleKind::ReconRefused, 5, 60));
    for i in 0..4 {
        let out = d.observe(i * SEC, &refused(i, "10.0.0.9:40000", &format!("AE{i}")));
        assert!(out.is_empty(), "fired below the threshold at {i}");
    }
    let out = d.observe(4 * SEC, &refused(4, "10.0.0.9:40001", "AE4"));
    assert_eq!(out.len(), 1);
    let det = &out[0];
    assert_eq!(det.rule, "t-recon-refused");
    assert_eq!(det.kind, RuleKind::ReconRefused);
    assert_eq!(det.response, Response::Alert);
    assert_eq!(det.source, Some(addr("10.0.0.9:40001")));
    assert_eq!(det.called_ae.as_deref(), Some("AE4"));
    assert_eq!(
        det.evidence,
        Evidence::Count {
            counted: Counted::RefusedAssociations,
            count: 5,
            threshold: 5,
            window_secs: 60,
            level: None
        }
    );
    // Still going within the window: no second detection.
    for i in 5..20 {
        assert!(d
            .observe(5 * SEC + i, &refused(i, "10.0.0.9:1", "X"))
            .is_empty());
    }
    // Another source has its own count.
    assert!(d
        .observe(6 * SEC, &refused(30, "10.0.0.8:1", "X"))
        .is_empty());
    let line = det.summary();
    assert!(
        line.contains("5 refused associations in 60 s (threshold 5)"),
        "{line}"
    );
}

#[test]
fn recon_refused_window_slides() {
    let mut d = one_rule(lite(RuleKind::ReconRefused, 3, 10));
    // Two refusals, then a third 10 s after the first: the first has left the window.
    assert!(d.observe(0, &refused(1, "10.0.0.9:1", "A")).is_empty());
    assert!(d
        .observe(5 * SEC, &refused(2, "10.0.0.9:1", "B"))
        .is_empty());
    assert!(d
        .observe(10 * SEC, &refused(3, "10.0.0.9:1", "C"))
        .is_empty());
    // The fourth makes three within 10 s (5, 10, 12).
    let out = d.observe(12 * SEC, &refused(4, "10.0.0.9:1", "D"));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].evidence, Evidence::Count { count: 3, .. }));
}

#[test]
fn recon_idle_counts_associations_that_end_without_a_request() {
    let mut d = one_rule(lite(RuleKind::ReconIdle, 3, 60));
    let mut fired = Vec::new();
    for i in 0..3u64 {
        d.observe(
            i * SEC,
            &requested(i, "10.1.1.1:5000", "WS", "RADGUARD", None),
        );
        d.observe(i * SEC, &accepted(i, "ws"));
        fired.extend(d.observe(i * SEC + 1, &released(i)));
        assert_eq!(fired.len(), (i == 2) as usize, "at {i}");
    }
    assert!(matches!(
        fired[0].evidence,
        Evidence::Count {
            counted: Counted::AssociationsWithoutRequest,
            count: 3,
            threshold: 3,
            ..
        }
    ));
    assert_eq!(fired[0].peer.as_deref(), Some("ws"));
    // Associations with a request (a C-ECHO) do not count.
    let mut d = one_rule(lite(RuleKind::ReconIdle, 2, 60));
    for i in 0..10 {
        d.observe(i, &requested(i, "10.1.1.1:5000", "WS", "RADGUARD", None));
        d.observe(i, &accepted(i, "ws"));
        d.observe(i, &request(i, "CEchoRq"));
        assert!(d.observe(i, &released(i)).is_empty());
    }
}

#[test]
fn scanner_signatures_match_the_defaults() {
    let mut d = Detectors::new(&DetectConfig::default());
    // nmap dicom-ping.
    let out = d.observe(
        0,
        &requested(1, "192.0.2.7:999", "ECHOSCU", "ANY-SCP", None),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, "scanner-signature");
    assert_eq!(
        out[0].evidence,
        Evidence::Signature {
            signature: "nmap dicom-ping".into(),
            implementation_version: None
        }
    );
    // Shodan, with its DCMTK version name (padded as on the wire).
    let out = d.observe(
        0,
        &requested(
            2,
            "198.51.100.1:1",
            "FINDSCU",
            "ANY-SCP ",
            Some("OFFIS_DCMTK_362"),
        ),
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].summary().contains("OFFIS_DCMTK_362"));
    // FINDSCU with a current DCMTK: not Shodan's.
    let out = d.observe(
        0,
        &requested(
            3,
            "198.51.100.2:1",
            "FINDSCU",
            "ANY-SCP",
            Some("OFFIS_DCMTK_369"),
        ),
    );
    assert!(out.is_empty());
    // The same scanner again within the window: quiet.
    assert!(d
        .observe(
            SEC,
            &requested(4, "192.0.2.7:1000", "ECHOSCU", "ANY-SCP", None)
        )
        .is_empty());
}

fn subject(pid: Option<&str>, name: Option<&str>) -> Subject {
    Subject {
        patient_id: pid.map(Into::into),
        patient_name: name.map(Into::into),
        ..Subject::default()
    }
}

#[test]
fn bulk_query_fires_on_universal_patient_and_study_queries_only() {
    let cfg = DetectConfig {
        rule: vec![config::RuleConfig {
            allow: Some(vec!["archive-admin".into()]),
            ..lite(RuleKind::BulkQuery, 1, 60).into_config()
        }],
        ..DetectConfig::default()
    };
    let mut d = Detectors::new(&cfg);
    d.observe(0, &requested(1, "10.2.0.1:1", "WS1", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws1"));
    // Narrowed down: a patient, an accession number, a series-level query.
    assert!(d
        .observe(0, &find(1, "STUDY", subject(Some("PID-1"), None)))
        .is_empty());
    assert!(d
        .observe(0, &find(1, "PATIENT", subject(None, Some("DOE^*"))))
        .is_empty());
    let by_accession = Subject {
        accession_number: Some("ACC42".into()),
        ..Subject::default()
    };
    assert!(d.observe(0, &find(1, "STUDY", by_accession)).is_empty());
    assert!(d
        .observe(0, &find(1, "SERIES", subject(None, None)))
        .is_empty());
    // Universal at STUDY level: fires, with the level and no patient data.
    let out = d.observe(SEC, &find(1, "STUDY", subject(Some("*"), None)));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::UniversalQueries,
            count: 1,
            threshold: 1,
            window_secs: 60,
            level: Some("STUDY".into())
        }
    );
    assert_eq!(out[0].peer.as_deref(), Some("ws1"));
    // An allowed peer is not watched.
    d.observe(0, &requested(2, "10.2.0.2:1", "ADMIN", "RADGUARD", None));
    d.observe(0, &accepted(2, "archive-admin"));
    assert!(d
        .observe(SEC, &find(2, "PATIENT", subject(None, None)))
        .is_empty());
}

#[test]
fn bulk_query_threshold_counts_per_peer() {
    let mut d = one_rule(lite(RuleKind::BulkQuery, 3, 60));
    d.observe(0, &requested(1, "10.2.0.1:1", "WS1", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws1"));
    assert!(d
        .observe(0, &find(1, "PATIENT", subject(None, None)))
        .is_empty());
    assert!(d
        .observe(SEC, &find(1, "PATIENT", subject(Some(""), Some("*"))))
        .is_empty());
    let out = d.observe(2 * SEC, &find(1, "PATIENT", subject(None, Some("**"))));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].evidence, Evidence::Count { count: 3, .. }));
}

#[test]
fn bulk_retrieve_counts_get_suboperations_per_peer() {
    let mut d = one_rule(lite(RuleKind::BulkRetrieve, 100, 60));
    d.observe(0, &requested(1, "10.3.0.1:1", "WS1", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws1"));
    d.observe(0, &request(1, "CGetRq"));
    for i in 0..99 {
        assert!(d.observe(i, &get_suboperation(1, 0)).is_empty(), "at {i}");
    }
    // A failed sub-operation is not an instance retrieved.
    assert!(d.observe(100, &get_suboperation(1, 0xA700)).is_empty());
    let out = d.observe(101, &get_suboperation(1, 0xB000));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::InstancesRetrieved,
            count: 100,
            threshold: 100,
            window_secs: 60,
            level: None
        }
    );
    // The window slides: 60 s later the count starts over.
    for i in 0..99 {
        assert!(d.observe(70 * SEC + i, &get_suboperation(1, 0)).is_empty());
    }
}

#[test]
fn bulk_retrieve_counts_move_suboperations_from_the_final_response() {
    let mut d = one_rule(lite(RuleKind::BulkRetrieve, 10, 60));
    d.observe(0, &requested(1, "10.3.0.2:1", "WS2", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws2"));
    d.observe(0, &cmove(1, "WS2"));
    // 9 completed: under the threshold.
    assert!(d.observe(SEC, &move_response(1, 1, 0, 9, 0)).is_empty());
    // The next C-MOVE: 0 completed + 1 warning reaches 10 (a warning sub-operation stored the
    // instance).
    d.observe(2 * SEC, &cmove(1, "WS2"));
    let out = d.observe(2 * SEC, &move_response(1, 2, 0xB000, 0, 1));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].peer.as_deref(), Some("ws2"));
    assert_eq!(
        out[0].evidence,
        Evidence::Count {
            counted: Counted::InstancesRetrieved,
            count: 10,
            threshold: 10,
            window_secs: 60,
            level: None
        }
    );
    assert!(
        out[0].summary().contains("10 instances retrieved"),
        "{}",
        out[0].summary()
    );
    // The window slides: 60 s later 9 more are under the threshold again.
    assert!(d
        .observe(70 * SEC, &move_response(1, 3, 0, 9, 0))
        .is_empty());
    // A C-MOVE response without counts, or failed sub-operations only, counts nothing.
    let mut no_counts = move_response(1, 4, 0, 0, 0);
    if let Event::DimseResponse { sub_operations, .. } = &mut no_counts {
        *sub_operations = None;
    }
    assert!(d.observe(71 * SEC, &no_counts).is_empty());
    let out = d.observe(72 * SEC, &move_response(1, 5, 0, 1, 0));
    assert_eq!(out.len(), 1, "9 + 0 + 1 reach 10 in the window");
}

#[test]
fn bulk_retrieve_counts_pending_and_final_move_responses_once() {
    let mut d = one_rule(lite(RuleKind::BulkRetrieve, 10, 60));
    d.observe(0, &requested(1, "10.3.0.3:1", "WS3", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws3"));
    d.observe(0, &cmove(1, "WS3"));
    // Pending responses carry the running count: 3, 6, 9 completed is 9 instances, not 18.
    for (t, done) in [(1, 3), (2, 6), (3, 9)] {
        assert!(
            d.observe(t * SEC, &move_response(1, 1, 0xFF00, done, 0))
                .is_empty(),
            "pending {done}"
        );
    }
    // The final response repeats the total: nothing more is counted.
    assert!(d.observe(4 * SEC, &move_response(1, 1, 0, 9, 0)).is_empty());
    // A second C-MOVE on the same association: its own count starts from zero.
    let out = d.observe(5 * SEC, &move_response(1, 2, 0xFF00, 1, 0));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].evidence, Evidence::Count { count: 10, .. }));
    // A count going backwards (a confused or hostile upstream) counts nothing and does not
    // lower what was counted.
    let mut d = one_rule(lite(RuleKind::BulkRetrieve, 10, 60));
    d.observe(0, &requested(2, "10.3.0.4:1", "WS4", "RADGUARD", None));
    d.observe(0, &accepted(2, "ws4"));
    assert!(d
        .observe(SEC, &move_response(2, 1, 0xFF00, 8, 0))
        .is_empty());
    assert!(d
        .observe(SEC, &move_response(2, 1, 0xFF00, 2, 0))
        .is_empty());
    assert!(d.observe(SEC, &move_response(2, 1, 0, 9, 0)).is_empty());
    let out = d.observe(SEC, &move_response(2, 2, 0, 1, 0));
    assert_eq!(out.len(), 1);
    assert!(matches!(out[0].evidence, Evidence::Count { count: 10, .. }));
}

#[test]
fn bulk_retrieve_ignores_counts_of_c_get_responses_and_peer_responses() {
    // C-GET keeps counting the C-STORE sub-operations the client acknowledged: its final
    // C-GET-RSP's counts would count them twice.
    let mut d = one_rule(lite(RuleKind::BulkRetrieve, 3, 60));
    d.observe(0, &requested(1, "10.3.0.5:1", "WS5", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws5"));
    d.observe(0, &request(1, "CGetRq"));
    assert!(d.observe(1, &get_suboperation(1, 0)).is_empty());
    assert!(d.observe(2, &get_suboperation(1, 0)).is_empty());
    let mut get_rsp = move_response(1, 1, 0, 2, 0);
    if let Event::DimseResponse { command, .. } = &mut get_rsp {
        *command = "CGetRsp".into();
    }
    assert!(d.observe(3, &get_rsp).is_empty());
    // A C-MOVE-RSP from the client (it answers no C-MOVE of this peer) counts nothing.
    let mut from_peer = move_response(1, 2, 0, 5, 0);
    if let Event::DimseResponse { from, .. } = &mut from_peer {
        *from = Blame::Peer;
    }
    assert!(d.observe(4, &from_peer).is_empty());
    assert_eq!(d.observe(5, &get_suboperation(1, 0)).len(), 1);
}

#[test]
fn new_move_destination_after_learning() {
    let cfg = DetectConfig {
        rule: vec![config::RuleConfig {
            learning: Some(3),
            ..lite(RuleKind::NewMoveDestination, 1, 60).into_config()
        }],
        ..DetectConfig::default()
    };
    let mut d = Detectors::new(&cfg);
    d.observe(0, &requested(1, "10.4.0.1:1", "WS1", "RADGUARD", None));
    d.observe(0, &accepted(1, "ws1"));
    // Learning: three moves, two destinations.
    assert!(d.observe(0, &cmove(1, "WS1")).is_empty());
    assert!(d.observe(0, &cmove(1, "WS1-B")).is_empty());
    assert!(d.observe(0, &cmove(1, "WS1")).is_empty());
    // Known destination after learning: quiet.
    assert!(d.observe(0, &cmove(1, "WS1-B")).is_empty());
    let out = d.observe(0, &cmove(1, "EXFIL "));
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].evidence,
        Evidence::NewDestination {
            destination: "EXFIL".into(),
            known: 2,
            moves_seen: 4,
            learning: 3
        }
    );
    // Now known.
    assert!(d.observe(0, &cmove(1, "EXFIL")).is_empty());
}

#[test]
fn identity_drift_on_version_certificate_and_address() {
    let mut d = one_rule(lite(RuleKind::IdentityDrift, 1, 60));
    d.observe(
        0,
        &requested(1, "10.5.0.1:1", "CT1", "RADGUARD", Some("CT_V1")),
    );
    assert!(d.observe(0, &accepted(1, "ct1")).is_empty());
    // Same identity from another port: quiet.
    d.observe(
        SEC,
        &requested(2, "10.5.0.1:2", "CT1", "RADGUARD", Some("CT_V1")),
    );
    assert!(d.observe(SEC, &accepted(2, "ct1")).is_empty());
    // Another version name and another address.
    d.observe(
        2 * SEC,
        &requested(3, "10.9.9.9:2", "CT1", "RADGUARD", Some("PYNETDICOM_300")),
    );
    let out = d.observe(2 * SEC, &accepted(3, "ct1"));
    assert_eq!(out.len(), 1);
    let Evidence::IdentityDrift { drifts } = &out[0].evidence else {
        panic!("{:?}", out[0].evidence)
    };
    assert_eq!(
        drifts,
        &vec![
            Drift {
                attribute: DriftAttribute::ImplementationVersion,
                first: "CT_V1".into(),
                now: "PYNETDICOM_300".into()
            },
            Drift {
                attribute: DriftAttribute::Address,
                first: "10.5.0.1".into(),
                now: "10.9.9.9".into()
            },
        ]
    );
    // A certificate change, after the window.
    let mut e = requested(4, "10.5.0.1:3", "CT1", "RADGUARD", Some("CT_V1"));
    if let Event::AssociationRequested { tls, .. } = &mut e {
        *tls = Some(TlsFacts {
            peer_cert_sha256: Some("ab12".into()),
            ..TlsFacts::default()
        });
    }
    d.observe(70 * SEC, &e);
    let out = d.observe(70 * SEC, &accepted(4, "ct1"));
    assert_eq!(out.len(), 1);
    let Evidence::IdentityDrift { drifts } = &out[0].evidence else {
        panic!()
    };
    assert_eq!(drifts.len(), 1);
    assert_eq!(drifts[0].attribute, DriftAttribute::Certificate);
    assert_eq!(drifts[0].now, "ab12");
}

#[test]
fn disabled_detects_nothing() {
    let mut d = Detectors::new(&DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    });
    for i in 0..100 {
        assert!(d
            .observe(
                i,
                &requested(i, "192.0.2.7:999", "ECHOSCU", "ANY-SCP", None)
            )
            .is_empty());
        assert!(d.observe(i, &refused(i, "10.0.0.9:1", "X")).is_empty());
    }
}

fn overwrite(id: u64, store: IntegrityStore, refused: bool) -> Event {
    Event::OverwriteAttempt {
        assoc: AssocId(id),
        store,
        sop_instance: "1.2.3.4".into(),
        kept: "aa".repeat(32),
        arrived: "bb".repeat(32),
        refused,
    }
}

#[test]
fn overwrite_fires_on_every_attempt_with_the_digests_and_who() {
    let mut d = Detectors::new(&DetectConfig::default());
    d.observe(0, &requested(1, "10.1.2.3:4000", "CT1", "ARCHIVE", None));
    d.observe(1, &accepted(1, "ct"));
    for (i, store) in [
        IntegrityStore::Ledger,
        IntegrityStore::Vault,
        IntegrityStore::Vault,
    ]
    .into_iter()
    .enumerate()
    {
        let fired = d.observe(10 + i as u64, &overwrite(1, store, i > 0));
        assert_eq!(fired.len(), 1, "attempt {i}: {fired:?}");
        let f = &fired[0];
        assert_eq!(
            (f.rule.as_str(), f.kind),
            ("overwrite", RuleKind::Overwrite)
        );
        assert_eq!(f.peer.as_deref(), Some("ct"));
        assert_eq!(f.source, Some(addr("10.1.2.3:4000")));
        assert_eq!(
            f.evidence,
            Evidence::Overwrite {
                store,
                sop_instance: "1.2.3.4".into(),
                kept: "aa".repeat(32),
                arrived: "bb".repeat(32),
                refused: i > 0,
            }
        );
        let Event::Detection {
            rule,
            rule_kind,
            response,
            evidence,
            detail,
            ..
        } = f.event()
        else {
            panic!("not a detection event");
        };
        assert_eq!(
            (rule.as_str(), rule_kind.as_str(), response.as_str()),
            ("overwrite", "overwrite", "alert")
        );
        assert_eq!(evidence["store"], store.name());
        assert_eq!(evidence["type"], "overwrite");
        assert!(
            detail.starts_with("rule overwrite (overwrite) peer ct from 10.1.2.3"),
            "{detail}"
        );
    }
}

#[test]
fn disabled_still_reports_overwrites() {
    let mut d = Detectors::new(&DetectConfig {
        enabled: false,
        ..DetectConfig::default()
    });
    assert!(d
        .observe(
            0,
            &requested(1, "192.0.2.7:999", "ECHOSCU", "ANY-SCP", None)
        )
        .is_empty());
    assert_eq!(
        d.observe(1, &overwrite(1, IntegrityStore::Vault, true))
            .len(),
        1
    );
}

/// A small deterministic generator (xorshift) for the spray.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn spraying_a_million_sources_and_ae_titles_keeps_the_tables_at_their_bound() {
    let cfg = DetectConfig {
        max_sources: 1000,
        max_associations: 500,
        ..DetectConfig::default()
    };
    let mut d = Detectors::new(&cfg);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut fired = 0usize;
    for i in 0..1_000_000u64 {
        let r = rng.next();
        let ip = std::net::Ipv4Addr::from((r >> 32) as u32);
        let source = SocketAddr::from((ip, (r & 0xFFFF) as u16));
        let calling = format!("A{:X}", r & 0xFFF_FFFF);
        let peer = format!("p{}", r % 100_000);
        let now = i;
        let e = match i % 4 {
            0 => Event::AssociationRefused {
                assoc: AssocId(i),
                source,
                calling_ae: Some(calling),
                called_ae: Some("ANY".into()),
                result: 1,
                rj_source: 1,
                reason: 7,
                blame: Blame::Peer,
                why: String::new(),
            },
            1 => Event::AssociationRequested {
                assoc: AssocId(i),
                source,
                calling_ae: calling,
                called_ae: "ANY-SCP".into(),
                implementation_class_uid: "1.2".into(),
                implementation_version: None,
                contexts: 1,
                tls: None,
                user_identity: None,
            },
            // Accepted under sprayed peer names, never released: the association table and
            // the identity table fill.
            2 => accepted(i - 1, &peer),
            _ => cmove(i - 2, &format!("D{}", r % 1_000_000)),
        };
        fired += d
            .observe(now, &e)
            .iter()
            .filter(|x| x.kind == RuleKind::ReconRefused)
            .count();
        if i % 100_000 == 0 {
            let (assocs, largest) = d.table_sizes();
            assert!(assocs <= 500 && largest <= 1000, "{assocs} {largest}");
        }
    }
    let (assocs, largest) = d.table_sizes();
    assert!(assocs <= 500, "{assocs}");
    assert!(largest <= 1000, "{largest}");
    assert!(largest >= 900, "the tables were used: {largest}");
    // A sprayed source never repeats: recon-refused cannot fire.
    assert_eq!(fired, 0);
}

#[test]
fn drift_attribute_names_are_the_config_names() {
    // Alerts name an attribute as the config does (`attributes = [...]`).
    for a in [
        DriftAttribute::ImplementationClassUid,
        DriftAttribute::ImplementationVersion,
        DriftAttribute::Certificate,
        DriftAttribute::Address,
    ] {
        let toml_name = toml::Value::try_from(a).expect("serializes");
        assert_eq!(toml_name.as_str(), Some(a.name()));
    }
}
