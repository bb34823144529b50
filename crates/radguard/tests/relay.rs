//! Relay through radguard to real peers: DCMTK storescp / dcmqrscp, Orthanc, pynetdicom.
//! Every client here is allowed everything (loopback peer, all five operations, every storage
//! SOP class); the data that arrives must be identical to the data sent.

mod common;

use common::*;

/// AE titles the clients use (DCMTK tools and dicom_probe.py).
const CLIENTS: &[&str] = &["RG_SCU", "PROBE"];

fn gateway(routes: impl FnOnce(Config) -> Config, move_destinations: &[&str]) -> Radguard {
    let cfg = routes(Config::new().open_peer("lab", CLIENTS, move_destinations));
    Radguard::start_fresh(&cfg.toml())
}

#[test]
fn echoscu_and_storescu_series_to_storescp() {
    let d = test_data();
    let scp = StoreScp::start("ARCHIVE");
    let rg = gateway(|c| c.route("ARCHIVE", scp.port, "ARCHIVE"), &["RECV"]);

    echoscu(rg.port(), "RG_SCU", "ARCHIVE").assert_success("echoscu -> radguard -> storescp");
    storescu(rg.port(), "RG_SCU", "ARCHIVE", &[d.ct_dir()])
        .assert_success("storescu +sd (one association) -> radguard -> storescp");

    assert_eq!(
        scp.files().len(),
        24,
        "storescp received:\n{:?}",
        scp.files()
    );
    assert_same_dirs(&d.ct_dir(), &scp.dir);
    assert_eq!(
        scp.associations(),
        2,
        "one upstream association per client association:\n{}",
        scp.log()
    );
}

#[test]
fn storescu_series_to_orthanc() {
    let d = test_data();
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let rg = gateway(
        |c| c.route("PACS", orthanc.dicom_port, "ORTHANC"),
        &["RECV"],
    );

    echoscu(rg.port(), "RG_SCU", "PACS").assert_success("echoscu -> radguard -> Orthanc");
    storescu(rg.port(), "RG_SCU", "PACS", &[d.ct_dir()])
        .assert_success("storescu -> radguard -> Orthanc");
    assert_eq!(orthanc.instance_count(), 24);

    let id = orthanc
        .find_instance(&d.sop_instance_uid("ct/CT_0007.dcm"))
        .expect("CT_0007 stored in Orthanc");
    let tmp = tmp_dir("orthanc-dl");
    let got = tmp.path().join("CT_0007.dcm");
    orthanc.download(&id, &got);
    assert_same_dataset(&d.path("ct/CT_0007.dcm"), &got);
}

#[test]
fn storescu_mixed_to_pynetdicom_scp() {
    let d = test_data();
    let py = PyScp::start("PYSCP", &[]);
    let rg = gateway(|c| c.route("PYSCP", py.port, "PYSCP"), &["RECV"]);

    let mut sent = d.ct_files();
    sent.extend(d.mr_files());
    sent.push(d.sc_file());
    sent.push(d.implicit_file());
    storescu(rg.port(), "RG_SCU", "PYSCP", &sent).assert_success("storescu -> radguard -> scp.py");
    assert_received(&sent, &py.dir, false);
}

#[test]
fn probe_to_storescp() {
    let d = test_data();
    let scp = StoreScp::start("ARCHIVE");
    let rg = gateway(|c| c.route("ARCHIVE", scp.port, "ARCHIVE"), &["RECV"]);

    let v = probe(rg.port(), "PROBE", "ARCHIVE", &["echo", "--count", "3"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0); 3], "{v:#}");

    let mut sent = d.ct_files();
    sent.extend(d.mr_files());
    sent.push(d.sc_file());
    let v = probe_store(rg.port(), "PROBE", "ARCHIVE", &[], &sent);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0); sent.len()], "{v:#}");
    assert_eq!(v["released"], true, "{v:#}");
    assert_received(&sent, &scp.dir, false);
}

#[test]
fn find_and_move_via_dcmqrscp() {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port)]);
    qr.load(&[d.ct_dir(), d.path("mr")]);
    let rg = gateway(|c| c.route("QRSCP", qr.port, "QRSCP"), &["RECV"]);

    let pid = format!("PatientID={}", d.ct_patient_id());
    let f = findscu(rg.port(), "RG_SCU", "QRSCP", &[&pid, "StudyInstanceUID"]);
    f.assert_success("findscu -> radguard -> dcmqrscp");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    let v = probe(rg.port(), "PROBE", "QRSCP", &["find", "--key", &pid]);
    assert_eq!(v["matches"], 1, "{v:#}");
    assert_eq!(
        v["identifiers"][0]["StudyInstanceUID"],
        d.ct_study_uid().as_str(),
        "{v:#}"
    );
    assert_eq!(statuses(&v).last(), Some(&Some(0)), "{v:#}");

    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    movescu(rg.port(), "RG_SCU", "QRSCP", "RECV", &[&study])
        .assert_success("movescu -> radguard -> dcmqrscp (destination RECV)");
    assert_same_dirs(&d.ct_dir(), &recv.dir);
}

#[test]
fn find_and_move_via_orthanc() {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let orthanc = Orthanc::start("ORTHANC", &[("RECV", recv.port)]);
    storescu(
        orthanc.dicom_port,
        "LOADER",
        "ORTHANC",
        &[d.ct_dir(), d.path("mr")],
    )
    .assert_success("storescu -> Orthanc (load, direct)");
    let rg = gateway(
        |c| c.route("PACS", orthanc.dicom_port, "ORTHANC"),
        &["RECV"],
    );

    let pid = format!("PatientID={}", d.ct_patient_id());
    let f = findscu(rg.port(), "RG_SCU", "PACS", &[&pid, "StudyInstanceUID"]);
    f.assert_success("findscu -> radguard -> Orthanc");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    let v = probe(rg.port(), "PROBE", "PACS", &["find", "--key", &pid]);
    assert_eq!(v["matches"], 1, "{v:#}");

    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    movescu(rg.port(), "RG_SCU", "PACS", "RECV", &[&study])
        .assert_success("movescu -> radguard -> Orthanc (destination RECV)");
    assert_same_dirs(&d.ct_dir(), &recv.dir);
}
