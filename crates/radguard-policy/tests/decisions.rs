//! The three decisions (admission, presentation context, DIMSE request) and the firewall level
//! of each route.

mod common;

use radguard_dicom::types::status;
use radguard_dicom::{CommandField, Operation};
use radguard_policy::*;

use common::*;

// ------------------------------------------------------------------------------------------
// Decisions.

const AE_UNKNOWN: AssociationRefusal = AssociationRefusal::CallingAeNotRecognized {
    why: PeerMismatch::UnknownAeTitle,
};
const ADDR_DENIED: AssociationRefusal = AssociationRefusal::CallingAeNotRecognized {
    why: PeerMismatch::AddressNotAllowed,
};

#[test]
fn admit_matches_ae_and_address() {
    let p = full();
    let cases: [(&str, &str, &str, &str); 10] = [
        ("10.1.2.3", "CT01", "PACS", "ct-scanner"),
        ("10.1.255.255", "CT01B", "RADGUARD", "ct-scanner"),
        ("fd00:1::abcd", "CT01", "PACS", "ct-scanner"),
        ("::ffff:10.1.0.1", "CT01", "PACS", "ct-scanner"),
        ("10.2.0.5", "WS01", "ARCHIVE", "workstation"),
        ("::1", "WS01", "PACS", "workstation"),
        ("::ffff:10.2.0.5", "WS01", "PACS", "workstation"),
        ("10.3.0.200", "VIEWER", "PACS", "viewer"),
        ("127.0.0.1", "WHATEVER", "RADGUARD", "loopback"),
        ("::ffff:127.1.2.3", "CT01", "RADGUARD", "loopback"),
    ];
    for (src, calling, called, peer) in cases {
        let a = admit(&p, src, calling, called);
        assert_eq!(a.peer_name(), peer, "{calling}@{src}");
        assert_eq!(a.peer().name(), peer);
        assert_eq!(a.called_ae().as_str(), called);
        assert_eq!(a.calling_ae().as_str(), calling);
        assert_eq!(a.source(), ip(src));
        assert_eq!(a.facts(), &facts(src, calling, called));
        assert_eq!(Some(a.route()), p.route_for(&ae(called)));
    }
    let a = admit(&p, "10.1.2.3", "CT01", "PACS");
    assert_eq!(
        a.route(),
        &Route::Upstream {
            addr: "127.0.0.1:4242".into(),
            upstream_ae: ae("ORTHANC"),
            upstream_calling_ae: None
        }
    );
    assert_eq!(
        admit(&p, "10.1.2.3", "CT01", "RADGUARD").route(),
        &Route::Vault
    );
}

#[test]
fn admit_refusals() {
    let p = full();
    // The "*" loopback peer makes every AE title known, so mismatches are about the address.
    let refused = [
        ("10.9.9.9", "CT01", "PACS", ADDR_DENIED),
        ("10.2.0.6", "WS01", "PACS", ADDR_DENIED),
        ("::2", "WS01", "PACS", ADDR_DENIED),
        ("::1", "CT01", "PACS", ADDR_DENIED),
        ("fd00:2::1", "CT01", "PACS", ADDR_DENIED),
        // IPv6 that merely *embeds* an IPv4 address is not IPv4-mapped.
        ("::127.0.0.1", "X", "RADGUARD", ADDR_DENIED),
        ("64:ff9b::7f00:1", "X", "RADGUARD", ADDR_DENIED),
        // Calling side is checked before the called AE.
        ("10.9.9.9", "CT01", "NOPE", ADDR_DENIED),
        (
            "10.1.2.3",
            "CT01",
            "NOPE",
            AssociationRefusal::CalledAeNotRecognized,
        ),
        (
            "127.0.0.1",
            "ANY",
            "ORTHANC",
            AssociationRefusal::CalledAeNotRecognized,
        ),
    ];
    for (src, calling, called, want) in refused {
        assert_eq!(
            p.admit(&facts(src, calling, called)),
            Err(want),
            "{calling}@{src} -> {called}"
        );
    }

    // Without a "*" peer an unlisted AE title is reported as such.
    let strict = parse_ok(&with_routes(VAULT_ROUTE)).policy;
    assert_eq!(
        strict.admit(&facts("10.0.0.1", "B", "RADGUARD")),
        Err(AE_UNKNOWN)
    );
    assert_eq!(
        strict.admit(&facts("10.0.0.2", "B", "RADGUARD")),
        Err(AE_UNKNOWN)
    );
    assert_eq!(
        strict.admit(&facts("10.0.0.2", "A", "RADGUARD")),
        Err(ADDR_DENIED)
    );
    assert_eq!(
        strict.admit(&facts("10.0.0.2", "A", "NOPE")),
        Err(ADDR_DENIED)
    );
    assert!(strict.admit(&facts("10.0.0.1", "A", "RADGUARD")).is_ok());
    // AE titles are compared after trimming, case-sensitively.
    assert!(strict
        .admit(&facts("10.0.0.1", " A  ", "RADGUARD "))
        .is_ok());
    assert_eq!(
        strict.admit(&facts("10.0.0.1", "a", "RADGUARD")),
        Err(AE_UNKNOWN)
    );
}

#[test]
fn refusal_triples_and_messages() {
    assert_eq!(AE_UNKNOWN.rj_triple(), (1, 1, 3));
    assert_eq!(ADDR_DENIED.rj_triple(), (1, 1, 3));
    assert_eq!(
        AssociationRefusal::CalledAeNotRecognized.rj_triple(),
        (1, 1, 7)
    );
    assert_eq!(AssociationRefusal::CalledAeNotRecognized.rj_result(), 1);
    assert_eq!(AssociationRefusal::CalledAeNotRecognized.rj_source(), 1);
    assert_eq!(AssociationRefusal::CalledAeNotRecognized.rj_reason(), 7);
    // Messages name the failed condition, never an expected value.
    let p = full();
    let e = p
        .admit(&facts("10.9.9.9", "CT01", "PACS"))
        .expect_err("refused");
    let text = e.to_string();
    assert!(text.contains("address"), "{text}");
    for secret in ["10.1.0.0", "ct-scanner", "CT01", "PACS"] {
        assert!(!text.contains(secret), "{text}");
    }
}

#[test]
fn context_decisions() {
    use ContextDecision::Accept;
    let rej = ContextDecision::Reject;
    let op = |o| rej(RejectWhy::OperationNotAllowed(o));
    let p = full();
    let ct = admit(&p, "10.1.0.1", "CT01", "PACS"); // echo, store {CT, MR}
    let ws = admit(&p, "10.2.0.5", "WS01", "PACS"); // echo, find, move
    let viewer = admit(&p, "10.3.0.1", "VIEWER", "PACS"); // find, get, store classes "*"
    let lo = admit(&p, "127.0.0.1", "X", "RADGUARD"); // echo, store {"*", private}

    let table: [(&str, [ContextDecision; 4]); 18] = [
        (VERIFY, [Accept, Accept, op(Operation::Echo), Accept]),
        (CT, [Accept, op(Operation::Store), Accept, Accept]),
        (MR, [Accept, op(Operation::Store), Accept, Accept]),
        (
            US,
            [
                rej(RejectWhy::SopClassNotAllowed),
                op(Operation::Store),
                Accept,
                Accept,
            ],
        ),
        (
            PRIVATE,
            [
                rej(RejectWhy::AbstractSyntaxNotSupported),
                rej(RejectWhy::AbstractSyntaxNotSupported),
                rej(RejectWhy::AbstractSyntaxNotSupported),
                Accept,
            ],
        ),
        (
            PATIENT_FIND,
            [op(Operation::Find), Accept, Accept, op(Operation::Find)],
        ),
        (
            STUDY_FIND,
            [op(Operation::Find), Accept, Accept, op(Operation::Find)],
        ),
        (
            PS_FIND,
            [op(Operation::Find), Accept, Accept, op(Operation::Find)],
        ),
        (
            MWL_FIND,
            [op(Operation::Find), Accept, Accept, op(Operation::Find)],
        ),
        (
            PATIENT_MOVE,
            [
                op(Operation::Move),
                Accept,
                op(Operation::Move),
                op(Operation::Move),
            ],
        ),
        (
            STUDY_MOVE,
            [
                op(Operation::Move),
                Accept,
                op(Operation::Move),
                op(Operation::Move),
            ],
        ),
        (
            PS_MOVE,
            [
                op(Operation::Move),
                Accept,
                op(Operation::Move),
                op(Operation::Move),
            ],
        ),
        (
            PATIENT_GET,
            [
                op(Operation::Get),
                op(Operation::Get),
                Accept,
                op(Operation::Get),
            ],
        ),
        (
            STUDY_GET,
            [
                op(Operation::Get),
                op(Operation::Get),
                Accept,
                op(Operation::Get),
            ],
        ),
        (
            PS_GET,
            [
                op(Operation::Get),
                op(Operation::Get),
                Accept,
                op(Operation::Get),
            ],
        ),
        (
            STORAGE_COMMITMENT,
            [rej(RejectWhy::AbstractSyntaxNotSupported); 4],
        ),
        (
            HANGING_PROTOCOL_FIND,
            [rej(RejectWhy::AbstractSyntaxNotSupported); 4],
        ),
        (
            "1.2.840.10008.1.2.1",
            [rej(RejectWhy::AbstractSyntaxNotSupported); 4],
        ),
    ];
    for (uid, want) in table {
        for (adm, want) in [&ct, &ws, &viewer, &lo].into_iter().zip(want) {
            assert_eq!(p.context(adm, uid), want, "{} / {uid}", adm.peer_name());
        }
    }
    // Malformed abstract syntaxes and padding.
    for junk in [
        "",
        "not-a-uid",
        "1..2",
        "1.2.840.10008.1.1.",
        &"1".repeat(65),
    ] {
        assert_eq!(
            p.context(&lo, junk),
            rej(RejectWhy::AbstractSyntaxNotSupported),
            "{junk:?}"
        );
    }
    assert_eq!(p.context(&ct, "1.2.840.10008.5.1.4.1.1.2\0"), Accept);
    assert_eq!(RejectWhy::AbstractSyntaxNotSupported.pc_result(), 3);
    assert_eq!(RejectWhy::SopClassNotAllowed.pc_result(), 1);
    assert_eq!(
        RejectWhy::OperationNotAllowed(Operation::Echo).pc_result(),
        1
    );
}

#[test]
fn get_alone_opens_storage_contexts() {
    let src = with_peer("ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"get\"]\nstore_sop_classes = [\"CTImageStorage\"]");
    let p = parse_ok(&src).policy;
    let a = admit(&p, "10.0.0.1", "A", "RADGUARD");
    assert_eq!(p.context(&a, CT), ContextDecision::Accept);
    assert_eq!(
        p.context(&a, MR),
        ContextDecision::Reject(RejectWhy::SopClassNotAllowed)
    );
    assert_eq!(p.context(&a, STUDY_GET), ContextDecision::Accept);
    // ... but the peer itself may not C-STORE.
    let r = p.dimse(&a, &store(CT)).expect_err("store not allowed");
    assert_eq!(
        r.reason,
        DimseRefusalReason::OperationNotAllowed(Operation::Store)
    );
    assert_eq!(r.status, 0x0124);
}

fn req(command: CommandField, sop_class: Option<&str>) -> DimseFacts {
    DimseFacts {
        command,
        sop_class: sop_class.map(str::to_string),
        move_destination: None,
    }
}

fn store(class: &str) -> DimseFacts {
    req(CommandField::CStoreRq, Some(class))
}

fn mv(class: &str, dest: Option<&str>) -> DimseFacts {
    DimseFacts {
        command: CommandField::CMoveRq,
        sop_class: Some(class.to_string()),
        move_destination: dest.map(ae),
    }
}

fn refused(p: &Policy, a: &Admission, r: &DimseFacts) -> (u16, DimseRefusalReason) {
    match p.dimse(a, r) {
        Ok(_) => panic!("{r:?} for {} should be refused", a.peer_name()),
        Err(e) => {
            assert_eq!(e.status, e.reason.status());
            (e.status, e.reason)
        }
    }
}

fn permitted(p: &Policy, a: &Admission, r: &DimseFacts) {
    match p.dimse(a, r) {
        Ok(ok) => assert_eq!(ok.command(), r.command),
        Err(e) => panic!("{r:?} for {} refused: {e}", a.peer_name()),
    }
}

#[test]
fn dimse_permitted() {
    let p = full();
    let ct = admit(&p, "10.1.0.1", "CT01", "PACS");
    let ws = admit(&p, "10.2.0.5", "WS01", "PACS");
    let viewer = admit(&p, "10.3.0.1", "VIEWER", "PACS");
    let lo = admit(&p, "127.0.0.1", "X", "RADGUARD");

    permitted(&p, &ct, &req(CommandField::CEchoRq, Some(VERIFY)));
    permitted(&p, &ct, &store(CT));
    permitted(&p, &ct, &store(MR));
    permitted(&p, &lo, &store(US));
    permitted(&p, &lo, &store(PRIVATE));
    permitted(&p, &lo, &store("1.2.840.10008.5.1.4.1.1.2\0"));
    for model in [PATIENT_FIND, STUDY_FIND, PS_FIND, MWL_FIND] {
        permitted(&p, &ws, &req(CommandField::CFindRq, Some(model)));
        permitted(&p, &viewer, &req(CommandField::CFindRq, Some(model)));
    }
    for model in [PATIENT_MOVE, STUDY_MOVE, PS_MOVE] {
        permitted(&p, &ws, &mv(model, Some("WS01")));
        permitted(&p, &ws, &mv(model, Some("WS02")));
    }
    for model in [PATIENT_GET, STUDY_GET, PS_GET] {
        permitted(&p, &viewer, &req(CommandField::CGetRq, Some(model)));
    }
    // C-CANCEL: for peers with find, move or get; no SOP class needed.
    permitted(&p, &ws, &req(CommandField::CCancelRq, None));
    permitted(&p, &viewer, &req(CommandField::CCancelRq, None));
}

#[test]
fn dimse_refused() {
    use DimseRefusalReason as R;
    let p = full();
    let ct = admit(&p, "10.1.0.1", "CT01", "PACS");
    let ws = admit(&p, "10.2.0.5", "WS01", "PACS");
    let viewer = admit(&p, "10.3.0.1", "VIEWER", "PACS");
    let lo = admit(&p, "127.0.0.1", "X", "RADGUARD");

    let not_auth = status::REFUSED_NOT_AUTHORIZED;
    let cases: Vec<(&Admission, DimseFacts, u16, R)> = vec![
        // Operation not allowed: 0x0124.
        (
            &viewer,
            req(CommandField::CEchoRq, Some(VERIFY)),
            not_auth,
            R::OperationNotAllowed(Operation::Echo),
        ),
        (
            &ws,
            store(CT),
            not_auth,
            R::OperationNotAllowed(Operation::Store),
        ),
        (
            &viewer,
            store(CT),
            not_auth,
            R::OperationNotAllowed(Operation::Store),
        ),
        (
            &ct,
            req(CommandField::CFindRq, Some(STUDY_FIND)),
            not_auth,
            R::OperationNotAllowed(Operation::Find),
        ),
        (
            &viewer,
            mv(STUDY_MOVE, Some("WS01")),
            not_auth,
            R::OperationNotAllowed(Operation::Move),
        ),
        (
            &ws,
            req(CommandField::CGetRq, Some(STUDY_GET)),
            not_auth,
            R::OperationNotAllowed(Operation::Get),
        ),
        (
            &ct,
            req(CommandField::CCancelRq, None),
            not_auth,
            R::OperationNotAllowed(Operation::Find),
        ),
        (
            &lo,
            req(CommandField::CCancelRq, None),
            not_auth,
            R::OperationNotAllowed(Operation::Find),
        ),
        // SOP class not allowed (or not matching the command): 0x0124.
        (&ct, store(US), not_auth, R::SopClassNotAllowed),
        (&ct, store(PRIVATE), not_auth, R::SopClassNotAllowed),
        (&lo, store(STUDY_FIND), not_auth, R::SopClassNotAllowed),
        (&lo, store(VERIFY), not_auth, R::SopClassNotAllowed),
        (
            &lo,
            store("1.2.840.10008.1.3.10"),
            not_auth,
            R::SopClassNotAllowed,
        ),
        (&lo, store("junk"), not_auth, R::SopClassNotAllowed),
        (
            &ct,
            req(CommandField::CEchoRq, Some(CT)),
            not_auth,
            R::SopClassNotAllowed,
        ),
        (
            &ws,
            req(CommandField::CFindRq, Some(STUDY_MOVE)),
            not_auth,
            R::SopClassNotAllowed,
        ),
        (
            &ws,
            req(CommandField::CFindRq, Some(HANGING_PROTOCOL_FIND)),
            not_auth,
            R::SopClassNotAllowed,
        ),
        (
            &ws,
            mv(STUDY_FIND, Some("WS01")),
            not_auth,
            R::SopClassNotAllowed,
        ),
        (
            &viewer,
            req(CommandField::CGetRq, Some(STUDY_FIND)),
            not_auth,
            R::SopClassNotAllowed,
        ),
        // Move destination: 0xA801.
        (
            &ws,
            mv(STUDY_MOVE, Some("EVIL")),
            0xA801,
            R::MoveDestinationNotAllowed,
        ),
        (
            &ws,
            mv(STUDY_MOVE, Some("ws01")),
            0xA801,
            R::MoveDestinationNotAllowed,
        ),
        // Missing command elements: 0x0120.
        (
            &ws,
            mv(STUDY_MOVE, None),
            0x0120,
            R::MissingAttribute("Move Destination"),
        ),
        (
            &ct,
            req(CommandField::CStoreRq, None),
            0x0120,
            R::MissingAttribute("Affected SOP Class UID"),
        ),
        (
            &ct,
            req(CommandField::CEchoRq, None),
            0x0120,
            R::MissingAttribute("Affected SOP Class UID"),
        ),
        // Unknown commands, N-services on a C-service's SOP class and responses: 0x0211.
        (
            &lo,
            req(CommandField::Other(0x0160), None),
            0x0211,
            R::UnrecognizedCommand(0x0160),
        ),
        (
            &lo,
            req(CommandField::NGetRq, Some(CT)),
            0x0211,
            R::UnrecognizedCommand(0x0110),
        ),
        (
            &lo,
            req(CommandField::NSetRsp, None),
            0x0211,
            R::NotARequest(CommandField::NSetRsp),
        ),
        (
            &lo,
            req(CommandField::CStoreRsp, Some(CT)),
            0x0211,
            R::NotARequest(CommandField::CStoreRsp),
        ),
        (
            &lo,
            req(CommandField::CEchoRsp, Some(VERIFY)),
            0x0211,
            R::NotARequest(CommandField::CEchoRsp),
        ),
        (
            &ws,
            req(CommandField::CFindRsp, Some(STUDY_FIND)),
            0x0211,
            R::NotARequest(CommandField::CFindRsp),
        ),
        (
            &ws,
            req(CommandField::CMoveRsp, Some(STUDY_MOVE)),
            0x0211,
            R::NotARequest(CommandField::CMoveRsp),
        ),
        (
            &viewer,
            req(CommandField::CGetRsp, Some(STUDY_GET)),
            0x0211,
            R::NotARequest(CommandField::CGetRsp),
        ),
    ];
    for (adm, r, status, reason) in cases {
        assert_eq!(
            refused(&p, adm, &r),
            (status, reason),
            "{} {r:?}",
            adm.peer_name()
        );
    }
}

#[test]
fn refusal_comments_fit_error_comment_and_hide_values() {
    use DimseRefusalReason as R;
    let all = [
        R::OperationNotAllowed(Operation::Move),
        R::SopClassNotAllowed,
        R::MoveDestinationNotAllowed,
        R::MissingAttribute("Move Destination"),
        R::UnrecognizedCommand(0x0160),
        R::NotARequest(CommandField::CStoreRsp),
        R::AdmissionWithdrawn,
    ];
    for reason in all {
        let r = DimseRefusal {
            status: reason.status(),
            reason,
        };
        let c = r.comment();
        assert!(!c.is_empty() && c.len() <= 64 && c.is_ascii(), "{c:?}");
        assert!(!r.to_string().is_empty());
    }
}

#[test]
fn live_swap_narrows_running_associations() {
    let old = full();
    let ct = admit(&old, "10.1.0.1", "CT01", "PACS");

    // The same text parsed again: a different Arc, same grants (re-admitted by facts).
    let same = full();
    permitted(&same, &ct, &store(CT));
    assert_eq!(same.context(&ct, CT), ContextDecision::Accept);

    // The peer lost MR storage: refused at once.
    let narrowed = parse_ok(&FULL.replace(
        "store_sop_classes = [\"CTImageStorage\", \"1.2.840.10008.5.1.4.1.1.4\"]",
        "store_sop_classes = [\"CTImageStorage\"]",
    ));
    permitted(&narrowed.policy, &ct, &store(CT));
    assert_eq!(
        refused(&narrowed.policy, &ct, &store(MR)).1,
        DimseRefusalReason::SopClassNotAllowed
    );

    // The peer's address range was removed: everything is withdrawn.
    let moved = parse_ok(&FULL.replace("10.1.0.0/16", "10.9.0.0/16")).policy;
    assert_eq!(
        refused(&moved, &ct, &store(CT)),
        (0x0124, DimseRefusalReason::AdmissionWithdrawn)
    );
    assert_eq!(
        moved.context(&ct, CT),
        ContextDecision::Reject(RejectWhy::AdmissionWithdrawn)
    );

    // The route now points elsewhere: withdrawn too (the upstream link is the old one).
    let rerouted = parse_ok(&FULL.replace("127.0.0.1:4242", "127.0.0.1:4243")).policy;
    assert_eq!(
        refused(&rerouted, &ct, &store(CT)).1,
        DimseRefusalReason::AdmissionWithdrawn
    );

    // Policy is cheap to share across threads.
    fn assert_share<T: Clone + Send + Sync + 'static>() {}
    assert_share::<Policy>();
    assert_share::<Admission>();
    let clone = old.clone();
    assert_eq!(clone, old);
    permitted(&clone, &ct, &store(CT));
}

// ------------------------------------------------------------------------------------------
// The data-set firewall's level per route.

#[test]
fn firewall_level_defaults_to_safe_and_accepts_each_level() {
    let c = parse_ok(&with_routes(
        "[[route]]\ncalled_ae = \"A\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"U\"\n",
    ));
    assert_eq!(c.policy.routes()[0].firewall, FirewallLevel::Safe);
    for (text, level) in [
        ("strict", FirewallLevel::Strict),
        ("safe", FirewallLevel::Safe),
        ("log", FirewallLevel::Log),
    ] {
        let c = parse_ok(&with_routes(&format!(
            "[[route]]\ncalled_ae = \"A\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"U\"\nfirewall = \"{text}\"\n[[route]]\ncalled_ae = \"V\"\nvault = true\nfirewall = \"{text}\"\n"
        )));
        assert_eq!(c.policy.routes()[0].firewall, level, "{text}");
        assert_eq!(
            c.policy.routes()[1].firewall,
            level,
            "{text} on the vault route"
        );
    }
}

#[test]
fn unknown_firewall_level_is_an_error_at_its_line() {
    let src = with_routes(
        "[[route]]\ncalled_ae = \"A\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"U\"\nfirewall = \"off\"\n",
    );
    one_err(
        &src,
        "firewall = \"off\"",
        "route[0].firewall",
        "\"off\": expected \"strict\", \"safe\" or \"log\"",
    );
}

#[test]
fn on_revoke_defaults_to_abort_and_names_bad_values() {
    assert_eq!(
        parse_ok(ECHO_PEER_WITH_VAULT).server.on_revoke,
        OnRevoke::Abort
    );
    let src = format!("[server]\non_revoke = \"refuse-requests\"\n{ECHO_PEER_WITH_VAULT}");
    assert_eq!(parse_ok(&src).server.on_revoke, OnRevoke::RefuseRequests);
    let src = format!("[server]\non_revoke = \"ignore\"\n{ECHO_PEER_WITH_VAULT}");
    one_err(
        &src,
        "on_revoke = \"ignore\"",
        "server.on_revoke",
        "\"ignore\": expected \"abort\" or \"refuse-requests\"",
    );
}

const ECHO_PEER_WITH_VAULT: &str = "[[peer]]\nname = \"p\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n";

#[test]
fn restart_needed_names_the_keys_a_reload_cannot_apply() {
    let old = parse_ok(ECHO_PEER_WITH_VAULT);
    // Policy changes (peers, routes) are what a reload applies.
    let policy_only = parse_ok(&ECHO_PEER_WITH_VAULT.replace("10.0.0.1", "10.0.0.2"));
    assert_eq!(old.restart_needed(&policy_only), Vec::<&str>::new());
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:104\"]\non_revoke = \"refuse-requests\"\n\n[audit]\nenabled = false\n\n{ECHO_PEER_WITH_VAULT}"
    );
    assert_eq!(
        old.restart_needed(&parse_ok(&src)),
        ["server.listen", "server.on_revoke"]
    );
}
