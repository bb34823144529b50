//! `radguard alerts` end to end, with real DCMTK echoscu against the `radguard` binary and its
//! default detection rules: echoscu as nmap's dicom-ping (`ECHOSCU` calling `ANY-SCP`) fires
//! the default scanner-signature rule; `radguard alerts --json --data DIR` lists the Security
//! Alert with its rule and source (and so does the text form, and `--config` with `--data`);
//! `--rule`, `--kind` and `--since` filters that match nothing print nothing; `--follow`
//! started before an AE-title enumeration loop prints the recon-refused detection it fires.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::audit_e2e::*;
use common::*;
use serde_json::Value;

const NODE: &str = "gw-alerts";
const SCU: &str = "RG_SCU";

/// A gateway with the default detection rules (no `[detect]`) and its own audit chain.
fn start() -> Radguard {
    let cfg = Config::new()
        .peer("lab", &[SCU], &["127.0.0.1/32"], &["echo"], &[], &[])
        .vault_route("RADGUARD");
    Radguard::start_fresh(&format!("{}\n[audit]\nnode = {NODE:?}\n", cfg.toml()))
}

/// `radguard alerts ARGS...`, run to completion.
fn alerts<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("alerts").args(args);
    run(&mut cmd, CLIENT_TIMEOUT)
}

/// `radguard alerts --json --data DATA EXTRA...`: exit 0, every line a JSON object.
fn alerts_json(data: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<&OsStr> = vec!["--json".as_ref(), "--data".as_ref(), data.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let out = alerts(&args);
    out.assert_success("radguard alerts --json");
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", out.text()))
        })
        .collect()
}

/// Fires the default scanner-signature rule and waits until the trail records its alert.
fn trigger_scanner(rg: &Radguard) {
    assert!(
        !echoscu(rg.port(), "ECHOSCU", "ANY-SCP").success(),
        "nmap's dicom-ping was accepted"
    );
    let store = sqlite_store(&rg.data_dir);
    wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        rows.iter()
            .any(|r| r.kind() == "security-alert" && r.entry.contains("rule scanner-signature ("))
    })
    .unwrap_or_else(|| {
        panic!(
            "no scanner-signature alert in the trail; log:\n{}",
            rg.log()
        )
    });
}

fn is_scanner_alert(v: &Value) -> bool {
    v["kind"] == "detection"
        && v["rule"] == "scanner-signature"
        && v["rule_kind"] == "scanner-signature"
        && v["response"] == "alert"
        && v["evidence"]["signature"] == "nmap dicom-ping"
        && v["calling_ae"] == "ECHOSCU"
        && v["called_ae"] == "ANY-SCP"
        && v["node"] == NODE
        && v["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
        && v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("scanner signature \"nmap dicom-ping\""))
}

#[test]
fn lists_a_detection_with_its_rule_and_source() {
    let rg = start();
    trigger_scanner(&rg);
    let data = rg.data_dir.as_path();

    let all = alerts_json(data, &[]);
    let scanner: Vec<&Value> = all.iter().filter(|v| is_scanner_alert(v)).collect();
    assert_eq!(scanner.len(), 1, "{all:#?}");
    // Exactly the trail's alerts: its other records (the refused association) are not listed.
    let trail = read_trail(&sqlite_store(data), NODE);
    assert!(trail.iter().any(|r| r.kind() == "association-refused"));
    let recorded = trail
        .iter()
        .filter(|r| r.kind() == "security-alert" || r.kind() == "events-lost")
        .count();
    assert_eq!(all.len(), recorded, "{all:#?}");

    // The same store through the gateway's config.
    let cfg = rg.config_path.as_deref().expect("started with a config");
    let cfg_str = cfg.to_str().unwrap();
    assert_eq!(alerts_json(data, &["--config", cfg_str]), all);

    // Text: time, kind, rule, source, detail.
    let out = alerts(&[OsStr::new("--data"), data.as_os_str()]);
    out.assert_success("radguard alerts");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(" detection scanner-signature "))
        .unwrap_or_else(|| panic!("no detection line:\n{}", out.text()));
    assert!(line.contains(" ECHOSCU@127.0.0.1:"), "{line}");
    assert!(
        line.contains("| rule scanner-signature (scanner-signature)"),
        "{line}"
    );

    // Filters that keep it, and filters that match nothing print nothing.
    let kept = alerts_json(
        data,
        &[
            "--rule",
            "scanner-signature",
            "--kind",
            "detection",
            "--since",
            "1h",
        ],
    );
    assert_eq!(kept.len(), 1, "{kept:#?}");
    assert!(is_scanner_alert(&kept[0]), "{kept:#?}");
    for filter in [
        &["--rule", "no-such-rule"][..],
        &["--kind", "instance-conflict"],
        &["--since", "2999-01-01"],
    ] {
        assert_eq!(alerts_json(data, filter), Vec::<Value>::new(), "{filter:?}");
        let mut args: Vec<&OsStr> = vec!["--data".as_ref(), data.as_os_str()];
        args.extend(filter.iter().map(OsStr::new));
        let out = alerts(&args);
        out.assert_success("radguard alerts with a filter");
        assert_eq!(out.stdout, "", "{filter:?}: {}", out.text());
    }

    // Usage and store errors: exit 2.
    assert_eq!(alerts(&["--no-such-flag"]).code, Some(2));
    let empty = tmp_dir("alerts-empty");
    let out = alerts(&[OsStr::new("--data"), empty.path().as_os_str()]);
    assert_eq!(out.code, Some(2), "{}", out.text());
    assert!(out.stderr.contains("no audit store"), "{}", out.text());
}

#[test]
fn follow_prints_a_new_alert() {
    let rg = start();
    trigger_scanner(&rg);
    let logs = tmp_dir("alerts-follow");
    let mut cmd = Command::new(Radguard::exe());
    cmd.args([
        "alerts",
        "--follow",
        "--json",
        "--kind",
        "detection",
        "--data",
    ])
    .arg(&rg.data_dir);
    let mut follower = Proc::spawn("alerts", &mut cmd, logs.path(), false);
    let out_file = logs.path().join("alerts.out");
    let lines = || -> Vec<Value> {
        std::fs::read_to_string(&out_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The alert recorded before it started: printed first, so it is following from here on.
    assert!(
        wait_until(Duration::from_secs(30), || lines()
            .iter()
            .any(is_scanner_alert)),
        "alerts --follow did not print the first alert:\n{}",
        follower.log()
    );
    assert!(!lines().iter().any(|v| v["rule"] == "recon-refused"));
    // An AE-title enumeration loop: 10 refused associations in 60 s fire the default
    // recon-refused rule (the scanner's refused association counts as well).
    for i in 0..10 {
        assert!(
            !echoscu(rg.port(), SCU, &format!("GUESS{i}")).success(),
            "GUESS{i} was accepted"
        );
    }
    let ok = wait_until(Duration::from_secs(30), || {
        lines().iter().any(|v| {
            v["kind"] == "detection"
                && v["rule"] == "recon-refused"
                && v["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("127.0.0.1:"))
        })
    });
    assert!(
        ok,
        "alerts --follow did not print the new alert:\n{}\ngateway:\n{}",
        follower.log(),
        rg.log()
    );
    assert!(
        follower.exited().is_none(),
        "alerts --follow ended:\n{}",
        follower.log()
    );
    // Each alert once.
    let got = lines();
    assert_eq!(
        got.iter().filter(|v| is_scanner_alert(v)).count(),
        1,
        "{got:#?}"
    );
    assert_eq!(
        got.iter().filter(|v| v["rule"] == "recon-refused").count(),
        1,
        "{got:#?}"
    );
    follower.kill();
}
