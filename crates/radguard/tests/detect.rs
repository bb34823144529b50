//! Detection end to end, through the `radguard` binary with real DCMTK tools: an AE-title
//! enumeration loop (echoscu with wrong called AE titles) fires recon-refused once with the
//! right counts; echoscu as nmap's dicom-ping (`ECHOSCU` calling `ANY-SCP`) fires
//! scanner-signature; findscu with universal matching at STUDY level through radguard to
//! dcmqrscp fires bulk-query (a query narrowed to one patient does not); movescu of a whole
//! study through radguard from dcmqrscp to storescp fires bulk-retrieve with the instance count
//! the C-MOVE responses report; a connect-and-idle loop (raw associations released or aborted
//! without a request) fires recon-idle; a pynetdicom client posing as a peer first seen with
//! DCMTK fires identity-drift naming both implementations; a user-identity guessing loop
//! (wrong passcodes, each refused) fires recon-refused. Each detection is a
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
    rg.wait_detection("rule scanners");
    // Three more guesses, then an association the `marker` rule fires on: the detectors see
    // events in order, so its detection proves they saw the guesses (recon-refused fires once
    // per window per source; the scanner rule likewise).
    for i in 4..7 {
        assert!(!echoscu(rg.port(), SCU, &format!("GUESS{i}")).success());
    }
    assert!(!echoscu(rg.port(), "ECHOSCU", "ANY-SCP").success());
    assert!(!echoscu(rg.port(), "MARKER", "ANY-SCP").success());
    let all = rg.wait_detection("rule marker");
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
    let all = rg.wait_detection("rule bulk");
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
    let all = rg.wait_detection("rule pull");
    assert_eq!(all.len(), 1, "one detection per peer per window: {all:#?}");
    let detail = all[0]["detail"].as_str().unwrap();
    assert!(detail.contains("(bulk-retrieve) peer lab"), "{detail}");
    // Counted as the move goes, from its pending responses' Number of Completed Sub-operations
    // (dcmqrscp sends one per instance): the rule fires at the third instance, not when the
    // whole study is done (a retrieve aborted before its final response is still counted).
    assert!(
        detail.contains(": 3 instances retrieved in 600 s (threshold 3)"),
        "{detail}"
    );
    // No patient data in the alert.
    let text = serde_json::to_string(&all[0]).unwrap();
    assert!(!text.contains(&d.ct_patient_id()), "{text}");
    assert!(!text.contains(&d.ct_study_uid()), "{text}");
    wait_audited(&rg, &["rule pull"]);
}

/// A `scanner-signature` rule named `name` whose one signature is the calling AE title
/// `name` in upper case: a marker whose detection proves the detectors saw every event before
/// it (they see the bus in order).
fn marker_rule(name: &str) -> String {
    format!(
        "\n[[detect.rule]]\nname = {name:?}\nkind = \"scanner-signature\"\n\
         signatures = [{{ name = {name:?}, calling_ae = {:?} }}]\n",
        name.to_ascii_uppercase()
    )
}

/// The peer the markers call as: admitted (echo only), so a marker is neither refused nor idle.
fn marker_peer(cfg: Config) -> Config {
    cfg.peer(
        "markers",
        &["MARK1", "MARK2"],
        &["127.0.0.1/32"],
        &["echo"],
        &[],
        &[],
    )
}

/// A C-ECHO as the marker `name`; returns every detection once the marker's is in the log.
fn mark(rg: &Radguard, name: &str) -> Vec<Value> {
    echoscu(rg.port(), &name.to_ascii_uppercase(), "RADGUARD")
        .assert_success("echoscu as a marker peer");
    rg.wait_detection(&format!("rule {name}"))
}

/// Waits until the log holds at least `n` events named any of `names`.
fn wait_events(rg: &Radguard, names: &[&str], n: usize) {
    let count = || {
        rg.events()
            .iter()
            .filter(|e| names.iter().any(|name| e["event"] == *name))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(30), || count() >= n),
        "fewer than {n} {names:?} events; log:\n{}",
        rg.log()
    );
}

/// The detections of rule `rule`.
fn of_rule<'a>(all: &'a [Value], rule: &str) -> Vec<&'a Value> {
    let needle = format!("rule {rule} (");
    all.iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.starts_with(&needle)))
        .collect()
}

const ENDED: [&str; 2] = ["association-released", "association-aborted"];

#[test]
fn connect_and_idle_loop_is_recon_idle() {
    let cfg = marker_peer(
        Config::new()
            .peer("lab", &[SCU], &["127.0.0.1/32"], &["echo"], &[], &[])
            .vault_route("RADGUARD"),
    );
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"idle\"\nkind = \"recon-idle\"\nthreshold = 5\n\
         window_secs = 600\n{}{}",
        cfg.toml(),
        audit_toml(),
        marker_rule("mark1"),
        marker_rule("mark2")
    );
    let rg = Radguard::start_fresh(&toml);
    // Four idle associations (released, aborted, ...) and one with a C-ECHO: under the
    // threshold, the echo is not idle.
    for i in 0..4 {
        idle_association(rg.port(), SCU, "RADGUARD", i % 2 == 1);
    }
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu (a request: not idle)");
    wait_events(&rg, &ENDED, 5);
    let all = mark(&rg, "mark1");
    assert!(of_rule(&all, "idle").is_empty(), "fired early: {all:#?}");
    // The fifth idle association reaches the threshold.
    idle_association(rg.port(), SCU, "RADGUARD", false);
    rg.wait_detection("rule idle");
    // Two more in the same window: no second detection.
    idle_association(rg.port(), SCU, "RADGUARD", true);
    idle_association(rg.port(), SCU, "RADGUARD", false);
    // 5 + the fifth + two more + the first marker.
    wait_events(&rg, &ENDED, 9);
    let all = mark(&rg, "mark2");
    let idle = of_rule(&all, "idle");
    assert_eq!(idle.len(), 1, "{all:#?}");
    assert_eq!(
        idle[0]["detail"].as_str().unwrap(),
        "rule idle (recon-idle) peer lab from 127.0.0.1 \"RG_SCU\" -> \"RADGUARD\": \
         5 associations without a request in 600 s (threshold 5); response alert"
    );
    assert_eq!(
        idle[0]["source"]
            .as_str()
            .map(|s| s.starts_with("127.0.0.1:")),
        Some(true),
        "{:#}",
        idle[0]
    );
    wait_audited(&rg, &["rule idle"]);
}

/// pynetdicom's own Implementation Class UID and Version Name, from the venv's package.
fn pynetdicom_implementation() -> (String, String) {
    let out = run(
        std::process::Command::new(venv_python()).args([
            "-c",
            "import pynetdicom as p; print(p.PYNETDICOM_IMPLEMENTATION_UID); \
             print(p.PYNETDICOM_IMPLEMENTATION_VERSION)",
        ]),
        Duration::from_secs(60),
    );
    out.assert_success("python -c 'import pynetdicom'");
    let mut lines = out.stdout.lines().map(|l| l.trim().to_string());
    let uid = lines.next().expect("the UID");
    let version = lines.next().expect("the version name");
    (uid, version)
}

#[test]
fn known_peer_with_another_implementation_is_identity_drift() {
    let cfg = marker_peer(
        Config::new()
            .peer("lab", &[SCU], &["127.0.0.1/32"], &["echo"], &[], &[])
            .vault_route("RADGUARD"),
    );
    // Default attributes (all): address and certificate do not change here, so the evidence
    // must name exactly the two implementation attributes.
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"drift\"\nkind = \"identity-drift\"\n{}",
        cfg.toml(),
        audit_toml(),
        marker_rule("mark1")
    );
    let rg = Radguard::start_fresh(&toml);
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu: the peer as first seen");
    // The same AE title from the same address, admitted, but another implementation.
    let v = probe(rg.port(), SCU, "RADGUARD", &["echo"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    rg.wait_detection("rule drift");
    // What each client announced, as the gateway saw it.
    let requested: Vec<Value> = rg
        .events()
        .into_iter()
        .filter(|e| e["event"] == "association-requested")
        .collect();
    assert!(requested.len() >= 2, "{requested:#?}");
    let imp = |e: &Value, k: &str| e[k].as_str().unwrap_or("none").trim().to_string();
    let (dcmtk_uid, dcmtk_ver) = (
        imp(&requested[0], "implementation_class_uid"),
        imp(&requested[0], "implementation_version"),
    );
    // DCMTK's root (OFFIS) and version name.
    assert!(dcmtk_uid.starts_with("1.2.276.0.7230010.3."), "{dcmtk_uid}");
    assert!(dcmtk_ver.starts_with("OFFIS_DCMTK_"), "{dcmtk_ver}");
    let (py_uid, py_ver) = pynetdicom_implementation();
    assert_eq!(
        (
            imp(&requested[1], "implementation_class_uid"),
            imp(&requested[1], "implementation_version")
        ),
        (py_uid.clone(), py_ver.clone())
    );
    // The pynetdicom client again (same drift, within the quiet time) and DCMTK again (the
    // identity first seen: no drift): no more detections.
    assert_accepted(&probe(rg.port(), SCU, "RADGUARD", &["echo"]));
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu again");
    wait_events(&rg, &["association-accepted"], 4);
    let all = mark(&rg, "mark1");
    let drift = of_rule(&all, "drift");
    assert_eq!(drift.len(), 1, "{all:#?}");
    assert_eq!(
        drift[0]["detail"].as_str().unwrap(),
        format!(
            "rule drift (identity-drift) peer lab from 127.0.0.1 \"RG_SCU\" -> \"RADGUARD\": \
             identity drift: implementation-class-uid {dcmtk_uid:?} -> {py_uid:?}, \
             implementation-version {dcmtk_ver:?} -> {py_ver:?}; response alert"
        )
    );
    wait_audited(&rg, &["rule drift", &py_ver]);
}

#[test]
fn user_identity_guessing_loop_is_recon_refused() {
    const USER: &str = "alice";
    const PASS: &str = "correct horse battery staple";
    let hash = radguard_tls::hash_passcode(PASS).expect("argon2id hash");
    let cfg = marker_peer(Config::new().vault_route("RADGUARD"));
    let toml = format!(
        "{}\n[[peer]]\nname = \"lab\"\nae_titles = [{SCU:?}]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\"]\nuser_identity = \"required\"\nusers = [{USER:?}]\n\n\
         [[user]]\nname = {USER:?}\npasscode_argon2 = {hash:?}\n{}\n\
         [[detect.rule]]\nname = \"guess\"\nkind = \"recon-refused\"\nthreshold = 4\n\
         window_secs = 600\n{}{}",
        cfg.toml(),
        audit_toml(),
        marker_rule("mark1"),
        marker_rule("mark2")
    );
    let rg = Radguard::start_fresh(&toml);
    let with = |pass: &str| {
        probe(
            rg.port(),
            SCU,
            "RADGUARD",
            &[
                "--user-identity-type",
                "2",
                "--user",
                USER,
                "--passcode",
                pass,
                "echo",
            ],
        )
    };
    // The right passcode is accepted: the peer and user are set up.
    let v = with(PASS);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    let guesses: Vec<String> = (0..6).map(|i| format!("guess-{i}")).collect();
    let guess = |i: usize| {
        let v = with(&guesses[i]);
        // PS3.7 D.3.3.7: a wrong passcode is refused 1/1/3 like every identity failure.
        assert_rejected(&v, 1, 1, 3);
    };
    // Three wrong passcodes: under the threshold.
    for i in 0..3 {
        guess(i);
    }
    wait_events(&rg, &["association-refused"], 3);
    let all = mark(&rg, "mark1");
    assert!(of_rule(&all, "guess").is_empty(), "fired early: {all:#?}");
    // The fourth reaches it; two more in the same window do not fire again.
    guess(3);
    rg.wait_detection("rule guess");
    guess(4);
    guess(5);
    wait_events(&rg, &["association-refused"], 6);
    let all = mark(&rg, "mark2");
    let fired = of_rule(&all, "guess");
    assert_eq!(fired.len(), 1, "{all:#?}");
    assert_eq!(
        fired[0]["detail"].as_str().unwrap(),
        "rule guess (recon-refused) from 127.0.0.1 \"RG_SCU\" -> \"RADGUARD\": \
         4 refused associations in 600 s (threshold 4); response alert"
    );
    // Each refusal was for the passcode, and no passcode is anywhere in the log.
    let rejected = rg
        .events()
        .into_iter()
        .filter(|e| {
            e["event"] == "security-alert"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("wrong passcode"))
        })
        .count();
    assert_eq!(rejected, 6, "{}", rg.log());
    let log = rg.log();
    assert!(!log.contains(PASS), "the passcode was logged");
    for g in &guesses {
        assert!(
            !log.contains(g.as_str()),
            "a guessed passcode was logged: {g}"
        );
    }
    wait_audited(&rg, &["rule guess"]);
}
