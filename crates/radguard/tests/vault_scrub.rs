//! The vault's scrub in a real gateway: the 24-slice CT series stored through a vault route
//! with DCMTK storescu, then files changed under the vault (bytes flipped, replaced by random
//! bytes, deleted, many rewritten) raise `vault-integrity` alerts within the scrub interval and a
//! many-file rewrite one `ransomware` alert; `radguard vault check|verify --json` report the same
//! tampering with exit status 1, and a clean vault gives status 0 and no alert after a full pass.
//! Every wait is for the event that proves the outcome, bounded.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The scrub interval of these tests, in seconds.
const INTERVAL_SECS: u64 = 2;

fn config(threshold: u32) -> String {
    let mut cfg = Config::new()
        .peer(
            "modality",
            &["MOD"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .vault_route("VAULT")
        .toml();
    // 64 MiB/s: a pass over the series takes well under a second even on a busy machine.
    cfg.push_str(&format!(
        "\n[scrub]\nrate_bytes_per_sec = 67108864\ninterval_secs = {INTERVAL_SECS}\nransomware_threshold = {threshold}\nransomware_window_secs = 600\n"
    ));
    cfg
}

/// Starts a gateway, stores the CT series in its vault and waits for the first full pass
/// that covers all of it. Returns the gateway and the object files.
fn start_with_series(threshold: u32) -> (Radguard, Vec<PathBuf>) {
    let rg = Radguard::start_fresh(&config(threshold));
    let files = test_data().ct_files();
    storescu(rg.port(), "MOD", "VAULT", &files).assert_success("storescu to the vault");
    let n = files.len() as u64;
    wait_pass(&rg, |p| p["objects"].as_u64() == Some(n));
    let objects = files_under(&rg.data_dir.join("vault/objects"), ".dcm");
    assert_eq!(objects.len(), files.len());
    (rg, objects)
}

fn events_named(rg: &Radguard, name: &str) -> Vec<Value> {
    rg.events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

fn alerts(rg: &Radguard, kind: &str) -> Vec<Value> {
    events_named(rg, "security-alert")
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Waits (60 s at most) for a `vault-scrub-pass` event that `want` accepts; returns it.
fn wait_pass(rg: &Radguard, want: impl Fn(&Value) -> bool) -> Value {
    let mut found = None;
    let ok = wait_until(Duration::from_secs(60), || {
        found = events_named(rg, "vault-scrub-pass")
            .into_iter()
            .find(|e| want(e));
        found.is_some()
    });
    assert!(
        ok,
        "no such vault-scrub-pass; log tail:\n{}",
        tail(&rg.log())
    );
    found.unwrap()
}

/// Waits (60 s at most) until `n` scrub findings are logged; returns them.
fn wait_findings(rg: &Radguard, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(60), || {
        got = events_named(rg, "vault-scrub-finding");
        got.len() >= n
    });
    assert!(
        ok,
        "{} findings, wanted {n}; log tail:\n{}",
        got.len(),
        tail(&rg.log())
    );
    got
}

fn sha_of(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// What an attacker with root does first: the immutable flag off (a no-op where it was never
/// set, e.g. on tmpfs), the file writable.
fn unlock(path: &Path) {
    if Path::new("/usr/bin/chattr").is_file() {
        let _ = Command::new("/usr/bin/chattr")
            .arg("-i")
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status();
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod object");
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

/// `radguard vault check|verify --json --data DATA`: exit code and the JSON.
fn vault_cmd(which: &str, data: &Path) -> (i32, Value) {
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["vault", which, "--json", "--data"]).arg(data);
    let out = run(&mut cmd, Duration::from_secs(120));
    let code = out.code.unwrap_or(-1);
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("vault {which} --json: {e}\n{}", out.text()));
    (code, v)
}

fn problem<'a>(v: &'a Value, sha: &str) -> Option<&'a Value> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["sha256"] == sha)
}

#[test]
fn clean_vault_passes_without_alert_and_checks_clean() {
    let (rg, objects) = start_with_series(5);
    // A second full pass (the first may have started before the last instance was stored),
    // both without findings.
    let first_seq = wait_pass(&rg, |p| p["objects"].as_u64() == Some(objects.len() as u64))["seq"]
        .as_u64()
        .unwrap();
    let pass = wait_pass(&rg, |p| p["seq"].as_u64() > Some(first_seq));
    assert_eq!(pass["findings"], 0, "{pass}");
    assert!(pass["bytes"].as_u64().unwrap() > 0);
    assert!(events_named(&rg, "vault-scrub-finding").is_empty());
    assert!(alerts(&rg, "vault-integrity").is_empty());
    assert!(alerts(&rg, "ransomware").is_empty());
    for which in ["check", "verify"] {
        let (code, v) = vault_cmd(which, &rg.data_dir);
        assert_eq!(code, 0, "vault {which}: {v}");
        assert_eq!(v["ok"], true);
        assert_eq!(v["mode"], which);
        assert_eq!(v["objects"], objects.len() as u64);
        assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    }
    // The pass figures survive in the state file, so a restart resumes.
    assert!(rg.data_dir.join("vault/scrub-state").is_file());
}

#[test]
fn flipped_random_and_deleted_objects_raise_alerts() {
    let (rg, objects) = start_with_series(5);
    let (flipped, encrypted, deleted) = (&objects[3], &objects[10], &objects[17]);
    let t0 = Instant::now();
    unlock(flipped);
    let mut bytes = fs::read(flipped).unwrap();
    let n = bytes.len();
    for b in bytes.iter_mut().skip(n - 32) {
        *b ^= 0x5A;
    }
    fs::write(flipped, &bytes).unwrap();
    unlock(encrypted);
    let len = fs::metadata(encrypted).unwrap().len() as usize;
    fs::write(encrypted, random_bytes(len)).unwrap();
    unlock(deleted);
    fs::remove_file(deleted).unwrap();
    // A ransom note planted in the object tree (dated back: younger files may be a commit in
    // progress and are left for a later pass).
    let note = rg.data_dir.join("vault/objects/README-DECRYPT.txt");
    fs::write(&note, b"your images are encrypted").unwrap();
    fs::File::options()
        .write(true)
        .open(&note)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    let findings = wait_findings(&rg, 4);
    let elapsed = t0.elapsed();
    let kind = |p: &PathBuf| {
        findings
            .iter()
            .find(|f| f["sha256"] == sha_of(p))
            .map(|f| f["finding"].as_str().unwrap().to_string())
    };
    assert_eq!(kind(flipped).as_deref(), Some("changed"), "{findings:?}");
    assert_eq!(
        kind(encrypted).as_deref(),
        Some("encrypted-looking"),
        "{findings:?}"
    );
    assert_eq!(kind(deleted).as_deref(), Some("missing"), "{findings:?}");
    assert!(
        findings
            .iter()
            .any(|f| f["finding"] == "unindexed" && f["sha256"] == "README-DECRYPT.txt"),
        "{findings:?}"
    );
    // Within the interval (plus a pass, with slack for a machine under load).
    assert!(
        elapsed < Duration::from_secs(INTERVAL_SECS + 30),
        "alerts after {elapsed:?}"
    );
    // Each finding is an alert naming the object and its SOP Instance UID; no patient data.
    let vi = alerts(&rg, "vault-integrity");
    for p in [flipped, encrypted, deleted] {
        let a = vi
            .iter()
            .find(|a| a["detail"].as_str().unwrap().contains(&sha_of(p)))
            .unwrap_or_else(|| panic!("no vault-integrity alert for {}: {vi:?}", p.display()));
        assert!(
            a["detail"].as_str().unwrap().contains("SOP Instance UID"),
            "{a}"
        );
        assert!(
            !a["detail"]
                .as_str()
                .unwrap()
                .contains(&test_data().ct_patient_id()),
            "{a}"
        );
    }
    // Three tampered objects are below the ransomware threshold of five.
    assert!(alerts(&rg, "ransomware").is_empty());
    // Not raised again: the second pass that ends after the last finding started after it
    // and finds nothing new.
    let last = findings
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .max()
        .unwrap();
    let mut later = Vec::new();
    let ok = wait_until(Duration::from_secs(60), || {
        later = events_named(&rg, "vault-scrub-pass")
            .into_iter()
            .filter(|p| p["seq"].as_u64() > Some(last))
            .collect();
        later.len() >= 2
    });
    assert!(ok, "no second pass; log tail:\n{}", tail(&rg.log()));
    assert_eq!(later[1]["findings"], 0, "{later:?}");
    assert_eq!(events_named(&rg, "vault-scrub-finding").len(), 4);

    // On demand: check sees the deleted object and the note (sizes are unchanged for the
    // others); verify sees all four, judged as the scrub judges them. The gateway is still
    // running.
    let (code, v) = vault_cmd("check", &rg.data_dir);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(problem(&v, &sha_of(deleted)).unwrap()["finding"], "missing");
    let unindexed = |v: &Value| {
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["finding"] == "unindexed" && p["path"] == note.to_str().unwrap())
    };
    assert!(unindexed(&v), "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");
    let (code, v) = vault_cmd("verify", &rg.data_dir);
    assert_eq!(code, 1, "{v}");
    assert_eq!(problem(&v, &sha_of(flipped)).unwrap()["finding"], "changed");
    assert_eq!(
        problem(&v, &sha_of(encrypted)).unwrap()["finding"],
        "encrypted-looking"
    );
    let missing = problem(&v, &sha_of(deleted)).unwrap();
    assert_eq!(missing["finding"], "missing");
    assert!(missing["sop_instance_uid"]
        .as_str()
        .unwrap()
        .starts_with("1."));
    assert!(unindexed(&v), "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 4, "{v}");
    // A store that is not there is a usage/store error.
    let empty = tmp_dir("no-vault");
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["vault", "check", "--data"]).arg(empty.path());
    let out = run(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.code, Some(2), "{}", out.text());
}

#[test]
fn many_file_rewrite_raises_the_ransomware_alert() {
    let (rg, objects) = start_with_series(5);
    // What ransomware does: every file rewritten with ciphertext of the same size.
    for p in objects.iter().take(20) {
        unlock(p);
        let len = fs::metadata(p).unwrap().len() as usize;
        fs::write(p, random_bytes(len)).unwrap();
    }
    let findings = wait_findings(&rg, 20);
    assert!(
        findings.iter().all(|f| f["finding"] == "encrypted-looking"),
        "{findings:?}"
    );
    let r = alerts(&rg, "ransomware");
    assert_eq!(r.len(), 1, "one alert per burst: {r:?}");
    let detail = r[0]["detail"].as_str().unwrap();
    assert!(detail.contains("ransomware_threshold 5"), "{detail}");
    assert!(detail.starts_with("5 vault objects"), "{detail}");
    assert_eq!(alerts(&rg, "vault-integrity").len(), 20);
}
