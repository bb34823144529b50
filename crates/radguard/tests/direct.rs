//! Harness self-test on the DIRECT path (no radguard): every peer, client and helper the
//! gateway tests rely on is exercised here against the real peers. When these pass and a
//! gateway test fails, the gateway is at fault, not the lab.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn data_is_generated_and_complete() {
    let d = test_data();
    assert_eq!(d.ct_files().len(), 24);
    assert_eq!(d.mr_files().len(), 2);
    for p in [
        d.sc_file(),
        d.pdf_file(),
        d.implicit_file(),
        d.conflict_file(),
    ] {
        assert!(p.is_file(), "{} missing", p.display());
    }
    assert_eq!(
        d.sop_instance_uid("ct/CT_0001.dcm"),
        d.sop_instance_uid("conflict/CT_0001_CONFLICT.dcm")
    );
    assert_ne!(
        d.entry("ct/CT_0001.dcm")["sha256"],
        d.entry("conflict/CT_0001_CONFLICT.dcm")["sha256"]
    );
    assert_eq!(
        d.entry("pdf/PDF_0001.dcm")["sop_class_uid"],
        uid::ENCAPSULATED_PDF_STORAGE
    );
    assert_eq!(
        d.entry("implicit/CT_IMPLICIT.dcm")["transfer_syntax_uid"],
        "1.2.840.10008.1.2"
    );
}

#[test]
fn storescu_series_to_storescp() {
    let d = test_data();
    let scp = StoreScp::start("DIRECT_SCP");
    echoscu(scp.port, "RG_SCU", "DIRECT_SCP").assert_success("echoscu -> storescp");
    storescu(scp.port, "RG_SCU", "DIRECT_SCP", &[d.ct_dir()])
        .assert_success("storescu -> storescp");
    assert_eq!(scp.files().len(), 24);
    assert_eq!(
        scp.associations(),
        2,
        "echo + one association for the series"
    );
    assert_same_dirs(&d.ct_dir(), &scp.dir);
}

#[test]
fn probe_to_pyscp_and_rejections() {
    let d = test_data();
    let scp = PyScp::start(
        "PYSCP",
        &[
            "--require-called-aet",
            "--require-calling-aet",
            "PROBE",
            "--max-associations",
            "2",
        ],
    );
    let v = probe(scp.port, "PROBE", "PYSCP", &["echo"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)]);
    assert_rejected(&probe(scp.port, "PROBE", "WRONG", &["echo"]), 1, 1, 7);
    assert_rejected(&probe(scp.port, "OTHER", "PYSCP", &["echo"]), 1, 1, 3);
    let closed = free_port();
    assert_eq!(
        probe(closed, "PROBE", "PYSCP", &["echo"])["association"],
        "connect-failed"
    );

    // pynetdicom has no find here: the context is rejected with "abstract syntax not supported"
    let v = probe(
        scp.port,
        "PROBE",
        "PYSCP",
        &[
            "--contexts",
            "Verification,StudyRootQueryRetrieveInformationModelFind",
            "find",
        ],
    );
    assert_accepted(&v);
    assert_eq!(context_result(&v, uid::STUDY_ROOT_FIND), Some(3));
    assert_eq!(context_result(&v, uid::VERIFICATION), Some(0));

    let files: Vec<String> = d.ct_files()[..3]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["store"];
    args.extend(files.iter().map(String::as_str));
    let v = probe(scp.port, "PROBE", "PYSCP", &args);
    assert_eq!(statuses(&v), vec![Some(0); 3], "{v:#}");
    assert_eq!(scp.files().len(), 3);

    // two held associations fill --max-associations 2: the third is rejected (2,3,2)
    let mut h1 = probe_spawn(scp.port, "PROBE", "PYSCP", &["echo", "--hold", "4"]);
    let mut h2 = probe_spawn(scp.port, "PROBE", "PYSCP", &["echo", "--hold", "4"]);
    assert!(h1.wait_ready(Duration::from_secs(20)) && h2.wait_ready(Duration::from_secs(20)));
    assert_rejected(&probe(scp.port, "PROBE", "PYSCP", &["echo"]), 2, 3, 2);
    for h in [h1, h2] {
        let v = h.wait_json(Duration::from_secs(30));
        assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
        assert_eq!(v["released"], true);
    }
}

#[test]
fn storescu_to_pyscp_and_probe_to_storescp() {
    let d = test_data();
    let py = PyScp::start("PYSCP", &[]);
    storescu(py.port, "RG_SCU", "PYSCP", &[d.ct_dir()]).assert_success("storescu -> scp.py");
    assert_same_dirs(&d.ct_dir(), &py.dir);

    let scp = StoreScp::start("DIRECT_SCP");
    let files: Vec<String> = d
        .ct_files()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["store"];
    args.extend(files.iter().map(String::as_str));
    let v = probe(scp.port, "PROBE", "DIRECT_SCP", &args);
    assert_eq!(statuses(&v), vec![Some(0); 24], "{v:#}");
    assert_same_dirs(&d.ct_dir(), &scp.dir);
}

#[test]
fn find_and_move_on_dcmqrscp() {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port)]);
    qr.load(&[d.ct_dir(), d.mr_files()[0].clone()]);
    let pid = format!("PatientID={}", d.ct_patient_id());
    let f = findscu(qr.port, "RG_SCU", "QRSCP", &[&pid, "StudyInstanceUID"]);
    f.assert_success("findscu -> dcmqrscp");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    let v = probe(qr.port, "PROBE", "QRSCP", &["find", "--key", &pid]);
    assert_eq!(v["matches"], 1, "{v:#}");
    assert_eq!(
        v["identifiers"][0]["StudyInstanceUID"],
        d.ct_study_uid().as_str()
    );

    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    movescu(qr.port, "RG_SCU", "QRSCP", "RECV", &[&study]).assert_success("movescu -> dcmqrscp");
    assert_same_dirs(&d.ct_dir(), &recv.dir);
    let v = probe(
        qr.port,
        "PROBE",
        "QRSCP",
        &["move", "NOT_IN_TABLE", "--key", &study],
    );
    assert_eq!(statuses(&v).last(), Some(&Some(0xA801)), "{v:#}");
}

#[test]
fn orthanc_store_find_move() {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let o = Orthanc::start("ORTHANC", &[("RECV", recv.port)]);
    assert_eq!(o.instance_count(), 0);
    storescu(o.dicom_port, "RG_SCU", "ORTHANC", &[d.ct_dir()])
        .assert_success("storescu -> Orthanc");
    assert_eq!(o.instance_count(), 24);
    let id = o
        .find_instance(&d.sop_instance_uid("ct/CT_0005.dcm"))
        .expect("CT_0005 in Orthanc");
    let tmp = tmp_dir("dl");
    let got = tmp.path().join("got.dcm");
    o.download(&id, &got);
    assert_same_dataset(&d.path("ct/CT_0005.dcm"), &got);

    let pid = format!("PatientID={}", d.ct_patient_id());
    let f = findscu(
        o.dicom_port,
        "RG_SCU",
        "ORTHANC",
        &[&pid, "StudyInstanceUID"],
    );
    f.assert_success("findscu -> Orthanc");
    assert_eq!(f.find_matches(), 1, "{}", f.text());

    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    movescu(o.dicom_port, "RG_SCU", "ORTHANC", "RECV", &[&study])
        .assert_success("movescu -> Orthanc");
    assert_same_dirs(&d.ct_dir(), &recv.dir);
}

#[test]
fn pyscp_fault_injection() {
    let d = test_data();
    let files: Vec<String> = d.ct_files()[..6]
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["store"];
    args.extend(files.iter().map(String::as_str));

    let mut py = PyScp::start("PYSCP", &["--die-after-bytes", "300000"]);
    let v = probe(py.port, "PROBE", "PYSCP", &args);
    let st = statuses(&v);
    assert!(
        st.iter().any(Option::is_none) && v["aborted"] == true,
        "{v:#}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || py.exited().is_some()),
        "scp.py should have died"
    );

    let py = PyScp::start("PYSCP", &["--abort-on-store"]);
    let v = probe(py.port, "PROBE", "PYSCP", &args);
    assert_eq!(statuses(&v)[0], None, "{v:#}");
    assert_eq!(v["aborted"], true, "{v:#}");
}
