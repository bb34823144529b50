//! Refusals: exact A-ASSOCIATE-RJ codes, presentation-context results and DIMSE statuses as
//! a pynetdicom client sees them, and proof that nothing refused reached the upstream.

mod common;

use common::*;
use std::time::Duration;

/// A storescp upstream plus radguard routing called AE "ARCHIVE" to it, with `peer` config.
fn setup(peer: impl FnOnce(Config) -> Config) -> (StoreScp, Radguard) {
    let scp = StoreScp::start("ARCHIVE");
    let cfg = peer(Config::new()).route("ARCHIVE", scp.port, "ARCHIVE");
    let rg = Radguard::start_fresh(&cfg.toml());
    (scp, rg)
}

fn assert_nothing_reached(scp: &StoreScp) {
    assert!(
        scp.files().is_empty(),
        "the upstream received files: {:?}",
        scp.files()
    );
}

fn assert_no_upstream_association(scp: &StoreScp) {
    assert_nothing_reached(scp);
    assert_eq!(
        scp.associations(),
        0,
        "the upstream saw an association:\n{}",
        scp.log()
    );
}

#[test]
fn unknown_calling_ae_is_rejected_1_1_3() {
    let d = test_data();
    let (scp, rg) = setup(|c| c.open_peer("lab", &["PROBE"], &["RECV"]));
    assert_rejected(&probe(rg.port(), "STRANGER", "ARCHIVE", &["echo"]), 1, 1, 3);
    let v = probe_store(rg.port(), "STRANGER", "ARCHIVE", &[], &d.ct_files()[..2]);
    assert_rejected(&v, 1, 1, 3);
    assert_no_upstream_association(&scp);
}

#[test]
fn unknown_called_ae_is_rejected_1_1_7() {
    let d = test_data();
    let (scp, rg) = setup(|c| c.open_peer("lab", &["PROBE"], &["RECV"]));
    assert_rejected(&probe(rg.port(), "PROBE", "NOWHERE", &["echo"]), 1, 1, 7);
    let v = probe_store(rg.port(), "PROBE", "NOWHERE", &[], &d.ct_files()[..2]);
    assert_rejected(&v, 1, 1, 7);
    assert_no_upstream_association(&scp);
}

#[test]
fn address_not_allowed_is_rejected_1_1_3() {
    let d = test_data();
    let (scp, rg) = setup(|c| {
        c.peer(
            "far-away",
            &["PROBE"],
            &["10.9.9.9/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
    });
    assert_rejected(&probe(rg.port(), "PROBE", "ARCHIVE", &["echo"]), 1, 1, 3);
    let v = probe_store(rg.port(), "PROBE", "ARCHIVE", &[], &d.ct_files()[..2]);
    assert_rejected(&v, 1, 1, 3);
    assert_no_upstream_association(&scp);
}

#[test]
fn echo_only_peer_gets_storage_context_user_rejected() {
    let d = test_data();
    let (scp, rg) = setup(|c| {
        c.peer(
            "echo-only",
            &["PROBE"],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
    });

    let v = probe(
        rg.port(),
        "PROBE",
        "ARCHIVE",
        &["--contexts", "Verification,CTImageStorage", "echo"],
    );
    assert_accepted(&v);
    assert_eq!(
        context_result(&v, uid::CT_IMAGE_STORAGE),
        Some(1),
        "CT: user rejection\n{v:#}"
    );
    assert_eq!(context_result(&v, uid::VERIFICATION), Some(0), "{v:#}");
    assert_eq!(statuses(&v), vec![Some(0)], "echo still works\n{v:#}");

    let v = probe_store(
        rg.port(),
        "PROBE",
        "ARCHIVE",
        &["--contexts", "Verification,CTImageStorage"],
        &d.ct_files()[..2],
    );
    assert_eq!(context_result(&v, uid::CT_IMAGE_STORAGE), Some(1), "{v:#}");
    assert_eq!(
        statuses(&v),
        vec![None, None],
        "nothing can be stored\n{v:#}"
    );
    assert_nothing_reached(&scp);
}

#[test]
fn ct_only_peer_gets_pdf_context_user_rejected() {
    let d = test_data();
    let (scp, rg) = setup(|c| {
        c.peer(
            "ct-only",
            &["PROBE"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["CTImageStorage"],
            &[],
        )
    });

    let v = probe_store(rg.port(), "PROBE", "ARCHIVE", &[], &[d.pdf_file()]);
    assert_eq!(
        context_result(&v, uid::ENCAPSULATED_PDF_STORAGE),
        Some(1),
        "{v:#}"
    );
    // pynetdicom aborts by itself when no context was accepted, so nothing was sent at all.
    assert!(statuses(&v).iter().all(|s| s.is_none()), "{v:#}");
    assert_nothing_reached(&scp);

    // in one association with an allowed CT: the CT goes through, the PDF does not
    let v = probe_store(
        rg.port(),
        "PROBE",
        "ARCHIVE",
        &[],
        &[d.pdf_file(), d.ct_files()[0].clone()],
    );
    assert_eq!(
        context_result(&v, uid::ENCAPSULATED_PDF_STORAGE),
        Some(1),
        "{v:#}"
    );
    assert_eq!(context_result(&v, uid::CT_IMAGE_STORAGE), Some(0), "{v:#}");
    assert_eq!(statuses(&v), vec![None, Some(0)], "{v:#}");
    assert_received(&d.ct_files()[..1], &scp.dir, false);
}

#[test]
fn find_by_peer_without_find_is_context_rejected() {
    let d = test_data();
    // upstream that does support C-FIND, so only radguard can be the one saying no
    let qr = DcmQrScp::start("QRSCP", &[]);
    qr.load(&d.ct_files()[..2]);
    let cfg = Config::new()
        .peer(
            "no-find",
            &["PROBE"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route("QRSCP", qr.port, "QRSCP");
    let rg = Radguard::start_fresh(&cfg.toml());

    let pid = format!("PatientID={}", d.ct_patient_id());
    let v = probe(
        rg.port(),
        "PROBE",
        "QRSCP",
        &[
            "--contexts",
            "Verification,StudyRootQueryRetrieveInformationModelFind",
            "find",
            "--key",
            &pid,
        ],
    );
    assert_accepted(&v);
    assert_eq!(context_result(&v, uid::STUDY_ROOT_FIND), Some(1), "{v:#}");
    assert_eq!(context_result(&v, uid::VERIFICATION), Some(0), "{v:#}");
    assert!(statuses(&v).is_empty(), "no C-FIND may be answered:\n{v:#}");
    assert!(v.get("matches").is_none_or(|m| m == 0), "{v:#}");
}

#[test]
fn move_to_destination_not_allowed_is_a801() {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let evil = StoreScp::start("EVIL");
    // the archive itself would happily send to both
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port), ("EVIL", evil.port)]);
    qr.load(&[d.ct_dir()]);
    let cfg = Config::new()
        .open_peer("lab", &["PROBE"], &["RECV"])
        .route("QRSCP", qr.port, "QRSCP");
    let rg = Radguard::start_fresh(&cfg.toml());

    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    let v = probe(
        rg.port(),
        "PROBE",
        "QRSCP",
        &["move", "EVIL", "--key", &study],
    );
    assert_accepted(&v);
    assert_eq!(
        statuses(&v),
        vec![Some(0xA801)],
        "C-MOVE to EVIL: move destination unknown\n{v:#}"
    );
    assert!(
        evil.files().is_empty() && evil.associations() == 0,
        "EVIL got data:\n{}",
        evil.log()
    );
    assert!(recv.files().is_empty());
}

#[test]
fn max_associations_per_peer_is_rejected_2_3_2() {
    // pynetdicom upstream: handles concurrent associations (DCMTK storescp serialises them)
    let py = PyScp::start("PYSCP", &[]);
    let cfg = Config::new()
        .server("max_associations_per_peer = 2")
        .peer(
            "lab",
            &["PROBE"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route("PYSCP", py.port, "PYSCP");
    let rg = Radguard::start_fresh(&cfg.toml());

    let mut holders = vec![
        probe_spawn(rg.port(), "PROBE", "PYSCP", &["echo", "--hold", "6"]),
        probe_spawn(rg.port(), "PROBE", "PYSCP", &["echo", "--hold", "6"]),
    ];
    for h in &mut holders {
        assert!(
            h.wait_ready(Duration::from_secs(20)),
            "holding association not established"
        );
    }
    assert_rejected(&probe(rg.port(), "PROBE", "PYSCP", &["echo"]), 2, 3, 2);
    for h in holders {
        let v = h.wait_json(Duration::from_secs(30));
        assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
        assert_eq!(v["released"], true, "{v:#}");
    }
    // the slots are free again
    let ok = wait_until(Duration::from_secs(10), || {
        probe(rg.port(), "PROBE", "PYSCP", &["echo"])["association"] == "accepted"
    });
    assert!(
        ok,
        "association still refused after the holders released theirs:\n{}",
        rg.log()
    );
    assert!(py.files().is_empty());
}
