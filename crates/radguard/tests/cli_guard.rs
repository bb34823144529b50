//! `radguard guard check` (the real binary) over protocol, approval, dose report and worklist
//! objects written by pydicom (tests/py/make_guard_objects.py): every object gets the documented
//! answer, exit status 0/1/2, `--json`, config errors placed. What each check finds in detail is
//! tested in radguard-guard.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

const CONFIG: &str = r#"
[[peer]]
name = "pm"
ae_titles = ["PM"]
addresses = ["127.0.0.1"]
allow = ["echo"]

[[route]]
called_ae = "RADGUARD"
vault = true

[guard]
approvers = ["Curie^Marie"]
protocol_managers = ["pm"]
worklist_protocols = ["99RAD:CTHEAD"]

[[guard.limit]]
name = "head"
body_parts = ["HEAD"]
kvp = [80, 140]
tube_current_ma = [10, 500]
exposure_time_ms = [100, 2000]
ctdivol_notification = 80
ctdivol_alert = 1000
max_scan_length_mm = 250
"#;

struct Objects {
    dir: PathBuf,
    config: PathBuf,
    _tmp: tempfile::TempDir,
}

fn objects() -> &'static Objects {
    static O: OnceLock<Objects> = OnceLock::new();
    O.get_or_init(|| {
        let tmp = common::tmp_dir("cli-guard");
        let dir = tmp.path().join("objects");
        let mut cmd = Command::new(common::venv_python());
        cmd.arg(common::py_script("make_guard_objects.py"))
            .arg(&dir);
        let out = common::run(&mut cmd, Duration::from_secs(120));
        assert!(
            out.success(),
            "make_guard_objects.py failed:\n{}",
            out.text()
        );
        let config = tmp.path().join("guard.toml");
        std::fs::write(&config, CONFIG).unwrap();
        Objects {
            dir,
            config,
            _tmp: tmp,
        }
    })
}

fn check(config: Option<&Path>, files: &[&str], json: bool) -> Output {
    let o = objects();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_radguard"));
    cmd.args(["guard", "check"]);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    if json {
        cmd.arg("--json");
    }
    for f in files {
        cmd.arg(o.dir.join(f));
    }
    cmd.output().expect("run radguard")
}

/// The JSON outcomes by file name.
fn outcomes(out: &Output) -> Vec<(String, Value)> {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let file = Path::new(o["file"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (file, o.clone())
        })
        .collect()
}

fn finding_kinds(o: &Value) -> Vec<String> {
    o["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn everything_in_bounds_passes_with_exit_0() {
    let c = objects().config.clone();
    let out = check(
        Some(&c),
        &[
            "protocol_ok.dcm",
            "approval_ok.dcm",
            "dose_under.dcm",
            "dose_notification_reasoned.dcm",
            "mwl_clean.dcm",
        ],
        true,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (file, o) in outcomes(&out) {
        assert_eq!(o["verdict"], "pass", "{file}: {o}");
        assert!(finding_kinds(&o).is_empty(), "{file}: {o}");
    }
}

#[test]
fn each_object_gets_its_documented_answer() {
    let c = objects().config.clone();
    // (file, verdict, status, finding kinds); approvals are given with every run.
    let cases: &[(&str, &str, Option<&str>, &[&str])] = &[
        (
            "protocol_high.dcm",
            "refuse",
            Some("0xC510"),
            &["tube-current-out-of-range"],
        ),
        (
            "protocol_unapproved.dcm",
            "refuse",
            Some("0xC510"),
            &["unapproved"],
        ),
        (
            "protocol_wrong_approver.dcm",
            "refuse",
            Some("0xC510"),
            &["wrong-approver"],
        ),
        (
            "dose_notification.dcm",
            "alert",
            None,
            &["dose-notification-without-reason"],
        ),
        (
            "dose_notification_no_person.dcm",
            "alert",
            None,
            &["dose-notification-without-reason"],
        ),
        (
            "dose_alert.dcm",
            "alert",
            None,
            &[
                "dose-alert-without-reason",
                "study-accumulated-ctdivol-alert",
            ],
        ),
        (
            "mwl_dirty.dcm",
            "refuse",
            Some("0xC511"),
            &["control-character", "protocol-code-not-allowed"],
        ),
        (
            "mwl_long_station.dcm",
            "refuse",
            Some("0xC511"),
            &["over-long-value"],
        ),
    ];
    for (file, verdict, status, kinds) in cases {
        let out = check(
            Some(&c),
            &[
                "approval_ok.dcm",
                "approval_high.dcm",
                "approval_wrong.dcm",
                file,
            ],
            true,
        );
        assert_eq!(out.status.code(), Some(1), "{file}");
        let all = outcomes(&out);
        let (_, o) = all.iter().find(|(f, _)| f == file).unwrap();
        assert_eq!(o["verdict"], *verdict, "{file}: {o}");
        assert_eq!(o["status"].as_str(), *status, "{file}: {o}");
        assert_eq!(finding_kinds(o), *kinds, "{file}: {o}");
    }
}

#[test]
fn a_study_alerts_when_its_accumulated_ctdivol_crosses_the_alert_value() {
    let c = objects().config.clone();
    // 980 mGy alone: under the alert value.
    let out = check(Some(&c), &["dose_study_b.dcm"], true);
    assert_eq!(out.status.code(), Some(0));
    // After the first report of the study (70 mGy): 1050 mGy.
    let out = check(Some(&c), &["dose_study_a.dcm", "dose_study_b.dcm"], true);
    assert_eq!(out.status.code(), Some(1));
    let all = outcomes(&out);
    assert!(finding_kinds(&all[0].1).is_empty());
    assert_eq!(
        finding_kinds(&all[1].1),
        ["study-accumulated-ctdivol-alert"]
    );
    assert!(
        all[1].1["findings"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("1050"),
        "{}",
        all[1].1
    );
}

#[test]
fn text_output_and_defaults() {
    // Without --config: the defaults (no approver configured: nothing is approved; the AAPM
    // adult head notification value, 80 mGy).
    let out = check(
        None,
        &[
            "protocol_ok.dcm",
            "approval_ok.dcm",
            "dose_notification.dcm",
        ],
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("protocol_ok.dcm: protocol refuse 0xC510"),
        "{text}"
    );
    assert!(text.contains("  wrong-approver: "), "{text}");
    assert!(
        text.contains("dose_notification.dcm: dose-report alert")
            && text.contains("notification value (CTDIvol 80 mGy"),
        "{text}"
    );
}

#[test]
fn unreadable_files_and_bad_configs_exit_2() {
    let o = objects();
    let junk = o.dir.join("junk.bin");
    std::fs::write(&junk, b"not dicom at all").unwrap();
    let out = check(Some(&o.config), &["protocol_ok.dcm", "junk.bin"], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("junk.bin: cannot read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = o.dir.join("bad.toml");
    std::fs::write(&bad, CONFIG.replace("kvp = [80, 140]", "kvp = [140, 80]")).unwrap();
    let out = check(Some(&bad), &["protocol_ok.dcm"], false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:") && err.contains("field `guard.limit[0].kvp`"),
        "{err}"
    );
    // No file at all: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_radguard"))
        .args(["guard", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
