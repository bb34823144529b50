//! The scan-protocol and dose guard on the gateway's routes, end to end through the `radguard`
//! binary, pynetdicom playing protocol manager, RIS and modality (objects written by
//! tests/py/make_guard_objects.py):
//! - protocols and approvals from a peer not in `protocol_managers`: 0x0124, nothing reaches
//!   the modality; from a manager: approvals pass, a protocol in bounds and approved passes,
//!   one out of bounds, unapproved or approved by the wrong person gets 0xC510 and never
//!   reaches the modality; each refusal raises a `detection` (rule guard-protocol); so do a
//!   protocol whose only approval has expired and one whose CTDIvol is stated in the 32 cm
//!   phantom where the limits are for the 16 cm one;
//! - dose reports reach the archive whatever they say; one over the notification value
//!   without a reason raises a `detection` (rule guard-dose), one under it none;
//! - worklist answers: a dirty one ends the query with 0xC511 (refuse) or reaches the
//!   modality cleaned (clean);
//! - protocols and approvals sent to a modality as C-STORE sub-operations of its own C-GET
//!   (tests/py/guard_get.py as archive and as modality): the upstream is the sender, so only
//!   `protocol_upstreams` lets them through (a client peer in `protocol_managers` does not);
//!   refused ones are answered to the archive (0x0124 / 0xC510), which counts them as failed in
//!   its final C-GET response; the modality receives only what passed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const GUARD: &str = r#"
[guard]
approvers = ["Curie^Marie"]
protocol_managers = ["pm"]
worklist_protocols = ["99RAD:CTHEAD"]

[[guard.limit]]
name = "head"
body_parts = ["HEAD"]
kvp = [80, 140]
tube_current_ma = [10, 500]
ctdivol_notification = 80
ctdivol_alert = 1000
phantom_cm = 16
"#;

fn objects(dir: &Path) -> PathBuf {
    let out = dir.join("objects");
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("make_guard_objects.py")).arg(&out);
    let o = run(&mut cmd, Duration::from_secs(120));
    assert!(o.success(), "make_guard_objects.py failed:\n{}", o.text());
    out
}

fn guard_detections(rg: &Radguard, rule: &str) -> Vec<Value> {
    rg.detections()
        .into_iter()
        .filter(|e| e["rule"] == rule)
        .collect()
}

fn uid_of(path: &Path) -> String {
    // The received files are named <SOPInstanceUID>.dcm; read the sent file's UID with pydicom.
    let mut cmd = Command::new(venv_python());
    cmd.args([
        "-c",
        "import sys; from pydicom import dcmread; print(dcmread(sys.argv[1]).SOPInstanceUID)",
    ])
    .arg(path);
    let o = run(&mut cmd, Duration::from_secs(60));
    assert!(o.success(), "{}", o.text());
    o.stdout.trim().to_string()
}

#[test]
fn protocols_need_a_manager_limits_and_an_approval_and_dose_reports_alert() {
    let tmp = tmp_dir("guard-route");
    let dir = objects(tmp.path());
    let f = |n: &str| dir.join(n);
    let modality = PyScp::start("MODALITY", &[]);
    let toml = Config::new()
        .peer("pm", &["PM"], &["127.0.0.1/32"], &["store"], &["*"], &[])
        .peer("ris", &["RIS"], &["127.0.0.1/32"], &["store"], &["*"], &[])
        .route("MODALITY", modality.port, "MODALITY")
        .toml()
        + GUARD;
    let rg = Radguard::start_fresh(&toml);

    // Not a protocol manager: 0x0124 for a protocol and for an approval.
    let v = probe_store(
        rg.port(),
        "RIS",
        "MODALITY",
        &[],
        &[f("protocol_ok.dcm"), f("approval_ok.dcm")],
    );
    assert_eq!(statuses(&v), [Some(0x0124), Some(0x0124)], "{v}");

    // A manager: approvals pass; a protocol in bounds and approved passes; the others 0xC510.
    let sent = [
        "approval_ok.dcm",
        "approval_high.dcm",
        "approval_wrong.dcm",
        "approval_expired.dcm",
        "approval_body_phantom.dcm",
        "protocol_ok.dcm",
        "protocol_high.dcm",
        "protocol_unapproved.dcm",
        "protocol_wrong_approver.dcm",
        "protocol_expired_approval.dcm",
        "protocol_body_phantom.dcm",
    ];
    let paths: Vec<PathBuf> = sent.iter().map(|n| f(n)).collect();
    let v = probe_store(rg.port(), "PM", "MODALITY", &[], &paths);
    assert_eq!(
        statuses(&v),
        [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0xC510),
            Some(0xC510),
            Some(0xC510),
            Some(0xC510),
            Some(0xC510)
        ],
        "{v}\n{}",
        rg.log()
    );

    // Dose reports: both reach the archive side; only the one over the notification value
    // without a reason alerts.
    let v = probe_store(
        rg.port(),
        "PM",
        "MODALITY",
        &[],
        &[f("dose_under.dcm"), f("dose_notification.dcm")],
    );
    assert_eq!(statuses(&v), [Some(0), Some(0)], "{v}");

    // The modality has exactly what passed (success means stored: every answer is in).
    let mut received: Vec<String> = modality
        .files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    received.sort();
    let mut expected: Vec<String> = [
        "approval_ok.dcm",
        "approval_high.dcm",
        "approval_wrong.dcm",
        "approval_expired.dcm",
        "approval_body_phantom.dcm",
        "protocol_ok.dcm",
        "dose_under.dcm",
        "dose_notification.dcm",
    ]
    .iter()
    .map(|n| uid_of(&f(n)))
    .collect();
    expected.sort();
    assert_eq!(received, expected);

    // The detections: two not-a-manager refusals, five protocol refusals, one dose alert.
    let ok = wait_until(Duration::from_secs(30), || {
        guard_detections(&rg, "guard-protocol").len() == 7
            && guard_detections(&rg, "guard-dose").len() == 1
    });
    assert!(ok, "detections missing; log:\n{}", rg.log());
    let protocol = guard_detections(&rg, "guard-protocol");
    let kinds: Vec<&str> = protocol
        .iter()
        .map(|e| e["rule_kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "not-protocol-manager",
            "not-protocol-manager",
            "tube-current-out-of-range",
            "unapproved",
            "wrong-approver",
            "approval-expired",
            "phantom-mismatch"
        ]
    );
    assert!(protocol.iter().all(|e| e["response"] == "refuse"));
    let dose = &guard_detections(&rg, "guard-dose")[0];
    assert_eq!(dose["rule_kind"], "dose-notification-without-reason");
    assert_eq!(dose["response"], "alert");
    assert_eq!(dose["peer"], "pm");
    // No patient data in the evidence.
    assert!(
        !serde_json::to_string(dose).unwrap().contains("Doe"),
        "{dose}"
    );
}

struct Mwl {
    port: u16,
    _proc: Proc,
}

fn mwl_serve(dir: &Path, answers: &[PathBuf]) -> Mwl {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("mwl.py"))
        .args(["serve", "--aet", "RIS"])
        .args(answers);
    let log = dir.join("mwl-logs");
    std::fs::create_dir_all(&log).unwrap();
    let mut proc = Proc::spawn("mwl.py", &mut cmd, &log, false);
    let out = log.join("mwl.py.out");
    let mut port = None;
    wait_until(START_TIMEOUT, || {
        port = std::fs::read_to_string(&out).ok().and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("mwl.py: listening on 127.0.0.1:")?
                    .trim()
                    .parse::<u16>()
                    .ok()
            })
        });
        port.is_some() || proc.exited().is_some()
    });
    let Some(port) = port else {
        panic!("mwl.py did not report its port:\n{}", proc.log());
    };
    Mwl { port, _proc: proc }
}

fn mwl_query(port: u16) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("mwl.py")).args([
        "query",
        "--port",
        &port.to_string(),
        "--calling-ae",
        "CT1",
        "--called-ae",
        "RIS",
    ]);
    let o = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(o.success(), "{}", o.text());
    serde_json::from_str(o.stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", o.text()))
}

#[test]
fn worklist_answers_are_refused_or_cleaned() {
    let tmp = tmp_dir("guard-mwl");
    let dir = objects(tmp.path());
    let ris = mwl_serve(
        tmp.path(),
        &[dir.join("mwl_clean.dcm"), dir.join("mwl_dirty.dcm")],
    );
    let base = Config::new()
        .peer("ct", &["CT1"], &["127.0.0.1/32"], &["find"], &[], &[])
        .route("RIS", ris.port, "RIS")
        .toml();

    // Refuse (default action): the clean answer, then the query ends with 0xC511.
    let rg = Radguard::start_fresh(&(base.clone() + GUARD));
    let v = mwl_query(rg.port());
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["identifiers"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["identifiers"][0]["codes"][0], "99RAD:CTHEAD");
    assert_eq!(
        v["statuses"].as_array().unwrap().last().unwrap(),
        0xC511,
        "{v}"
    );
    let ok = wait_until(Duration::from_secs(30), || {
        !guard_detections(&rg, "guard-worklist").is_empty()
    });
    assert!(ok, "no detection; log:\n{}", rg.log());
    let d = &guard_detections(&rg, "guard-worklist")[0];
    assert_eq!(d["response"], "refuse");
    assert_eq!(d["rule_kind"], "control-character");
    drop(rg);

    // Clean: both answers; the dirty one without its control characters and its code.
    let rg = Radguard::start_fresh(
        &(base + &GUARD.replace("[guard]\n", "[guard]\nworklist_action = \"clean\"\n")),
    );
    let v = mwl_query(rg.port());
    let ids = v["identifiers"].as_array().unwrap();
    assert_eq!(ids.len(), 2, "{v}\n{}", rg.log());
    assert_eq!(v["statuses"].as_array().unwrap().last().unwrap(), 0, "{v}");
    let name = ids[1]["PatientName"].as_str().unwrap();
    assert!(
        !name.chars().any(|c| c.is_control() && c != '\u{1b}'),
        "{name:?}"
    );
    assert!(name.starts_with("Doe^John"), "{name:?}");
    assert_eq!(ids[1]["codes"], serde_json::json!([]), "{v}");
    let ok = wait_until(Duration::from_secs(30), || {
        guard_detections(&rg, "guard-worklist")
            .iter()
            .any(|d| d["response"] == "clean")
    });
    assert!(ok, "no clean detection; log:\n{}", rg.log());
}

/// The modality's C-GET through the gateway (tests/py/guard_get.py get), proposing the protocol
/// and approval storage classes with the SCP role.
fn modality_get(port: u16, out: &Path) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("guard_get.py"))
        .args(["--aet", "CT1", "--port", &port.to_string(), "get"])
        .args(["--called-ae", "ARCHIVE", "--out"])
        .arg(out)
        .args([
            "1.2.840.10008.5.1.4.1.1.200.1", // CT Defined Procedure Protocol Storage
            "1.2.840.10008.5.1.4.1.1.200.3", // Protocol Approval Storage
        ]);
    let o = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(o.success(), "{}", o.text());
    serde_json::from_str(o.stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", o.text()))
}

/// The C-STORE-RSP statuses the archive logged for its sub-operations, in order.
fn sub_operation_statuses(archive: &ScriptedScp) -> Vec<String> {
    archive
        .steps()
        .lines()
        .filter_map(|l| Some(l.split(": C-STORE-RSP ").nth(1)?.trim().to_string()))
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn protocols_in_c_get_sub_operations_need_an_allowed_upstream() {
    let tmp = tmp_dir("guard-get");
    let dir = objects(tmp.path());
    let sent = [
        "approval_ok.dcm",
        "approval_high.dcm",
        "protocol_ok.dcm",
        "protocol_high.dcm",
        "protocol_unapproved.dcm",
    ];
    let uid = |n: &str| uid_of(&dir.join(n));
    let mut args = vec!["serve".to_string()];
    args.extend(
        sent.iter()
            .map(|n| dir.join(n).to_string_lossy().into_owned()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let archive = ScriptedScp::start("guard_get.py", "ARCHIVE", &args);
    let base = Config::new()
        .peer("ct", &["CT1"], &["127.0.0.1/32"], &["get"], &["*"], &[])
        .route("ARCHIVE", archive.port, "ARCHIVE")
        .toml();

    // The modality's peer is a protocol manager, but it is not the sender: every sub-operation
    // is refused with 0x0124, the archive counts them failed, the modality receives nothing.
    let guard = GUARD.replace(
        "protocol_managers = [\"pm\"]",
        "protocol_managers = [\"ct\"]",
    );
    let rg = Radguard::start_fresh(&(base.clone() + &guard));
    let recv = tmp.path().join("recv-1");
    let v = modality_get(rg.port(), &recv);
    assert_eq!(v["error"], Value::Null, "{v}");
    assert_eq!(v["received"], serde_json::json!([]), "{v}\n{}", rg.log());
    let last = &v["final"];
    assert_eq!(last["status"], 0xA702, "{v}");
    assert_eq!(last["failed"], 5, "{v}");
    assert_eq!(last["completed"], 0, "{v}");
    assert_eq!(sub_operation_statuses(&archive), vec!["0x0124"; 5]);
    assert!(files_under(&recv, ".dcm").is_empty());
    let ok = wait_until(Duration::from_secs(30), || {
        guard_detections(&rg, "guard-protocol").len() == 5
    });
    assert!(ok, "detections missing; log:\n{}", rg.log());
    for d in guard_detections(&rg, "guard-protocol") {
        assert_eq!(d["rule_kind"], "not-protocol-manager", "{d}");
        assert_eq!(d["peer"], "upstream ARCHIVE", "{d}");
    }
    drop(rg);

    // The upstream may send protocols: approvals and the approved protocol in bounds reach the
    // modality; the protocol out of bounds and the unapproved one get 0xC510 and are failed
    // sub-operations in the archive's final response (0xB000, their UIDs listed).
    let from = archive.steps().len();
    let guard = GUARD.replace("[guard]\n", "[guard]\nprotocol_upstreams = [\"ARCHIVE\"]\n");
    let rg = Radguard::start_fresh(&(base + &guard));
    let recv = tmp.path().join("recv-2");
    let v = modality_get(rg.port(), &recv);
    assert_eq!(v["error"], Value::Null, "{v}");
    let last = &v["final"];
    assert_eq!(last["status"], 0xB000, "{v}\n{}", rg.log());
    assert_eq!(last["completed"], 3, "{v}");
    assert_eq!(last["failed"], 2, "{v}");
    let failed: Vec<String> = serde_json::from_value(last["failed_uids"].clone()).unwrap();
    assert_eq!(
        sorted(failed),
        sorted(vec![
            uid("protocol_high.dcm"),
            uid("protocol_unapproved.dcm")
        ])
    );
    let passed = sorted(vec![
        uid("approval_ok.dcm"),
        uid("approval_high.dcm"),
        uid("protocol_ok.dcm"),
    ]);
    let received: Vec<String> = serde_json::from_value(v["received"].clone()).unwrap();
    assert_eq!(sorted(received), passed);
    let on_disk: Vec<String> = files_under(&recv, ".dcm")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sorted(on_disk), passed);
    let steps = archive.steps_since(from);
    let statuses: Vec<&str> = steps
        .lines()
        .filter_map(|l| Some(l.split(": C-STORE-RSP ").nth(1)?.trim()))
        .collect();
    assert_eq!(statuses, ["0x0000", "0x0000", "0x0000", "0xC510", "0xC510"]);
    let ok = wait_until(Duration::from_secs(30), || {
        guard_detections(&rg, "guard-protocol").len() == 2
    });
    assert!(ok, "detections missing; log:\n{}", rg.log());
    let kinds: Vec<String> = guard_detections(&rg, "guard-protocol")
        .iter()
        .map(|e| e["rule_kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["tube-current-out-of-range", "unapproved"]);
}
