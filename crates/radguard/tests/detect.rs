//! Detection end to end, through the `radguard` binary with real DCMTK tools: an AE-title
//! enumeration loop (echoscu with wrong called AE titles) fires recon-refused once with the
//! right counts; echoscu as nmap's dicom-ping (`ECHOSCU` calling `ANY-SCP`) fires
//! scanner-signature; findscu with universal matching at STUDY level through radguard to
//! dcmqrscp fires bulk-query (a query narrowed to one patient does not); movescu of a whole
//! study through radguard from dcmqrscp to storescp fires bulk-retrieve with the instance count
//! the C-MOVE responses report. Each detection is a
//! `security-alert` event (kind `detection`, no patient data) and a Security Alert (110113)
//! record in the audit trail.

mod common;

use std::time::Duration;

use common::audit_e2e::*;
use common::*;
use radguard_audit::atna::{message_for, AtnaSource};
use serde_json::Value;

const NODE: &str = "gw-detect";
const SCU: &str = "RG_SCU";

fn audit_toml() -> String {
    format!("\n[audit]\nnode = {NODE:?}\n")
}

/// The security-alert events of kind detection in the gateway's log.
fn detections(rg: &Radguard) -> Vec<Value> {
    rg.events()
        .into_iter()
        .filter(|e| e["event"] == "security-alert" && e["kind"] == "detection")
        .collect()
}

/// Waits until the log holds a detection whose detail contains `needle`; returns all of them.
fn wait_detection(rg: &Radguard, needle: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        all = detections(rg);
        all.iter()
            .any(|e| e["detail"].as_str().is_some_and(|d| d.contains(needle)))
    });
    assert!(ok, "no detection {needle:?}; log:\n{}", rg.log());
    all
}

/// Waits until the audit trail holds a detection Security Alert whose detail contains each
/// needle; checks its A.5 message (110113, type code `detection`).
fn wait_audited(rg: &Radguard, needles: &[&str]) {
    let store = sqlite_store(&rg.data_dir);
    let has = |rows: &[TrailRow], n: &str| {
        rows.iter().any(|r| {
            r.kind() == "security-alert" && r.entry.contains("\"detection\"") && r.entry.contains(n)
        })
    };
    let rows = wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        needles.iter().all(|n| has(rows, n))
    })
    .unwrap_or_else(|| panic!("audit trail lacks {needles:?}; log:\n{}", rg.log()));
    let src = AtnaSource::new(NODE);
    for n in needles {
        let row = rows
            .iter()
            .find(|r| r.kind() == "security-alert" && r.entry.contains(n))
            .expect("found above");
        let msg = message_for(&row.record, &src).expect("a Security Alert has an A.5 message");
        let xml = msg.to_xml();
        assert!(xml.contains("110113"), "{xml}");
        assert!(
            xml.contains("csd-code=\"detection\"") || xml.contains("\"detection\""),
            "{xml}"
        );
    }
}

#[test]
fn enumeration_loop_and_scanner_signature() {
    let cfg = Config::new()
        .peer("lab", &[SCU], &["127.0.0.1/32"], &["echo"], &[], &[])
        .vault_route("RADGUARD");
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"enum\"\nkind = \"recon-refused\"\nthreshold = 5\nwindow_secs = 600\n\n\
         [[detect.rule]]\nname = \"scanners\"\nkind = \"scanner-signature\"\n\n\
         [[detect.rule]]\nname = \"marker\"\nkind = \"scanner-signature\"\n\
         signatures = [{{ name = \"marker\", calling_ae = \"MARKER\" }}]\n",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu with the right AE titles");
    // AE-title enumeration: 4 wrong called AE titles, under the threshold.
    for i in 0..4 {
        let out = echoscu(rg.port(), SCU, &format!("GUESS{i}"));
        assert!(!out.success(), "GUESS{i} was accepted");
    }
    // nmap's dicom-ping: its signature fires on the request (and it is the 5th refusal).
    let out = echoscu(rg.port(), "ECHOSCU", "ANY-SCP");
    assert!(!out.success());
    wait_detection(&rg, "rule scanners");
    // Three more guesses, then an association the `marker` rule fires on: the detectors see
    // events in order, so its detection proves they saw the guesses (recon-refused fires once
    // per window per source; the scanner rule likewise).
    for i in 4..7 {
        assert!(!echoscu(rg.port(), SCU, &format!("GUESS{i}")).success());
    }
    assert!(!echoscu(rg.port(), "ECHOSCU", "ANY-SCP").success());
    assert!(!echoscu(rg.port(), "MARKER", "ANY-SCP").success());
    let all = wait_detection(&rg, "rule marker");
    let enums: Vec<&Value> = all
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().contains("rule enum"))
        .collect();
    assert_eq!(enums.len(), 1, "{all:#?}");
    let detail = enums[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("5 refused associations in 600 s (threshold 5)"),
        "{detail}"
    );
    assert!(detail.contains("from 127.0.0.1"), "{detail}");
    assert!(detail.contains("response alert"), "{detail}");
    assert_eq!(
        enums[0]["source"]
            .as_str()
            .map(|s| s.starts_with("127.0.0.1:")),
        Some(true)
    );
    let scanners: Vec<&Value> = all
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().contains("rule scanners"))
        .collect();
    assert_eq!(scanners.len(), 1, "{all:#?}");
    let detail = scanners[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("scanner signature \"nmap dicom-ping\""),
        "{detail}"
    );
    assert!(detail.contains("\"ECHOSCU\" -> \"ANY-SCP\""), "{detail}");
    wait_audited(&rg, &["rule enum", "rule scanners"]);
}

#[test]
fn universal_study_query_is_a_bulk_query() {
    let d = test_data();
    let qr = DcmQrScp::start("QRSCP", &[]);
    qr.load(&d.ct_files());
    let cfg = Config::new()
        .open_peer("lab", &[SCU], &["*"])
        .route("QRSCP", qr.port, "QRSCP");
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"bulk\"\nkind = \"bulk-query\"\n\n\
         [[detect.rule]]\nname = \"scanners\"\nkind = \"scanner-signature\"\n",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    // One patient: an ordinary query.
    let pid = d.ct_patient_id();
    let f = findscu(
        rg.port(),
        SCU,
        "QRSCP",
        &[&format!("PatientID={pid}"), "StudyInstanceUID"],
    );
    f.assert_success("findscu for one patient");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    // Every study: universal matching on Patient ID and Patient's Name at STUDY level.
    let f = findscu(
        rg.port(),
        SCU,
        "QRSCP",
        &["PatientID=*", "PatientName=", "StudyInstanceUID"],
    );
    f.assert_success("findscu for every study");
    assert!(f.find_matches() >= 1, "{}", f.text());
    let all = wait_detection(&rg, "rule bulk");
    assert_eq!(all.len(), 1, "only the universal query fired: {all:#?}");
    let detail = all[0]["detail"].as_str().unwrap();
    assert!(detail.contains("peer lab"), "{detail}");
    assert!(
        detail.contains("1 universal queries in 300 s (threshold 1), level STUDY"),
        "{detail}"
    );
    // No patient data in the alert.
    assert!(!detail.contains(&pid), "{detail}");
    let text = serde_json::to_string(&all[0]).unwrap();
    assert!(!text.contains(&pid), "{text}");
    wait_audited(&rg, &["rule bulk"]);
}

#[test]
fn study_move_is_a_bulk_retrieve_counted_from_the_move_responses() {
    let d = test_data();
    let ct = d.ct_files();
    assert!(ct.len() >= 5, "the CT study has {} instances", ct.len());
    let recv = StoreScp::start("RECV");
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port)]);
    qr.load(&ct);
    let cfg = Config::new()
        .open_peer("lab", &[SCU], &["RECV"])
        .route("QRSCP", qr.port, "QRSCP");
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"pull\"\nkind = \"bulk-retrieve\"\nthreshold = 3\n\
         window_secs = 600\n",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let study = format!("StudyInstanceUID={}", d.ct_study_uid());
    movescu(rg.port(), SCU, "QRSCP", "RECV", &[&study])
        .assert_success("movescu -> radguard -> dcmqrscp (destination RECV)");
    assert_eq!(recv.files().len(), ct.len(), "storescp got the study");
    let all = wait_detection(&rg, "rule pull");
    assert_eq!(all.len(), 1, "one detection per peer per window: {all:#?}");
    let detail = all[0]["detail"].as_str().unwrap();
    assert!(detail.contains("(bulk-retrieve) peer lab"), "{detail}");
    // The whole study, counted once (pending responses and the final one do not add up).
    assert!(
        detail.contains(&format!(
            ": {} instances retrieved in 600 s (threshold 3)",
            ct.len()
        )),
        "{detail}"
    );
    // No patient data in the alert.
    let text = serde_json::to_string(&all[0]).unwrap();
    assert!(!text.contains(&d.ct_patient_id()), "{text}");
    assert!(!text.contains(&d.ct_study_uid()), "{text}");
    wait_audited(&rg, &["rule pull"]);
}
