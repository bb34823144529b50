//! The built-in vault (route with `vault = true`): write-once storage under the data dir,
//! duplicate detection, conflict refusal, persistence across restarts; and the embedded
//! default configuration (`radguard serve --data DIR` without --config).

mod common;

use common::*;
use std::ffi::OsString;
use std::path::Path;

fn vault_config() -> String {
    Config::new()
        .peer(
            "lab",
            &["PROBE", "RG_SCU"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .vault_route("VAULT")
        .toml()
}

/// Stored objects: `*.dcm` files anywhere under the data dir (the vault keeps its committed
/// objects as `<data>/vault/objects/ab/cd/<sha256>.dcm`; partial files are not `*.dcm`).
fn objects(data: &Path) -> usize {
    files_under(data, ".dcm").len()
}

#[test]
fn store_duplicate_conflict_and_restart() {
    let d = test_data();
    let data_tmp = tmp_dir("vault-data");
    let data = data_tmp.path().to_path_buf();
    let cfg = vault_config();
    let ct = d.ct_files();

    let rg = Radguard::start(&cfg, &data);
    let v = probe(rg.port(), "PROBE", "VAULT", &["echo"]);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    echoscu(rg.port(), "RG_SCU", "VAULT").assert_success("echoscu -> vault");

    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &ct);
    assert_eq!(statuses(&v), vec![Some(0); 24], "{v:#}");
    assert_eq!(objects(&data), 24, "*.dcm files under {}", data.display());
    assert_received(&ct, &data, false);

    // identical duplicates: success, nothing new
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &ct);
    assert_eq!(statuses(&v), vec![Some(0); 24], "{v:#}");
    assert_eq!(objects(&data), 24);

    // same SOP Instance UID, different content: 0x0111 duplicate SOP instance, nothing stored
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &[d.conflict_file()]);
    assert_eq!(statuses(&v), vec![Some(0x0111)], "{v:#}");
    assert_eq!(objects(&data), 24);
    // ... and a detection of the `overwrite` rule with the two SHA-256 digests.
    let uid = d.sop_instance_uid("conflict/CT_0001_CONFLICT.dcm");
    let seen = wait_until(std::time::Duration::from_secs(30), || {
        rg.events().iter().any(|e| {
            e["event"] == "detection"
                && e["rule"] == "overwrite"
                && e["evidence"]["store"] == "vault"
                && e["evidence"]["sop_instance"] == uid.as_str()
                && e["evidence"]["refused"] == true
                && e["evidence"]["kept"]
                    .as_str()
                    .is_some_and(|k| k.len() == 64)
                && e["evidence"]["kept"] != e["evidence"]["arrived"]
        })
    });
    assert!(seen, "no overwrite detection in the log:\n{}", rg.log());

    // DCMTK client too
    storescu(rg.port(), "RG_SCU", "VAULT", &d.mr_files()).assert_success("storescu -> vault");
    assert_eq!(objects(&data), 26);

    let st = rg.stop();
    assert!(
        st.success(),
        "radguard should exit 0 on SIGTERM, got {st:?}"
    );

    // restart on the same data dir: it still knows everything
    let rg = Radguard::start(&cfg, &data);
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &ct);
    assert_eq!(statuses(&v), vec![Some(0); 24], "{v:#}");
    assert_eq!(objects(&data), 26, "no duplicate files after a restart");
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &[d.conflict_file()]);
    assert_eq!(statuses(&v), vec![Some(0x0111)], "{v:#}");
    assert_eq!(objects(&data), 26);
    let mut all = ct.clone();
    all.extend(d.mr_files());
    assert_received(&all, &data, false);
}

/// `radguard serve --data DIR` with no config: loopback listener on 127.0.0.1:11112, vault
/// route RADGUARD, any calling AE from loopback may echo and store, nothing else.
#[test]
fn embedded_default_listens_on_11112() {
    assert!(
        !is_listening(11112),
        "port 11112 is in use: this test runs radguard with its embedded default config, which \
         listens on 127.0.0.1:11112; stop whatever listens there (e.g. the lab's dcmtk-scp)"
    );
    let d = test_data();
    let data_tmp = tmp_dir("default-data");
    let data = data_tmp.path();
    let args: Vec<OsString> = vec!["serve".into(), "--data".into(), data.into()];
    let rg = Radguard::start_args(&args, data);
    let addrs: Vec<String> = rg
        .stdout_lines()
        .iter()
        .filter_map(|l| parse_listening(l))
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        addrs,
        vec!["127.0.0.1:11112"],
        "stdout:\n{:?}",
        rg.stdout_lines()
    );

    let v = probe(11112, "ANY_AE", "RADGUARD", &["echo"]);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    let v = probe_store(11112, "OTHER_AE", "RADGUARD", &[], &d.ct_files()[..1]);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    assert_eq!(objects(data), 1);
    let pid = format!("PatientID={}", d.ct_patient_id());
    let v = probe(
        11112,
        "ANY_AE",
        "RADGUARD",
        &[
            "--contexts",
            "Verification,StudyRootQueryRetrieveInformationModelFind",
            "find",
            "--key",
            &pid,
        ],
    );
    assert_eq!(
        context_result(&v, uid::STUDY_ROOT_FIND),
        Some(1),
        "find is not allowed by default\n{v:#}"
    );
    assert_rejected(&probe(11112, "ANY_AE", "SOMEWHERE", &["echo"]), 1, 1, 7);
}

/// Instances stored in the vault are scanned (radguard-media): a Windows executable hidden in a
/// private element (PEDICOM) raises a SecurityAlert naming the instance.
#[test]
fn vault_scans_what_it_stores() {
    let d = test_data();
    let dir = tmp_dir("pe-payload");
    let evil = dir.path().join("evil.dcm");
    let out = run(
        std::process::Command::new(venv_python())
            .arg(py_script("make_pe_payload.py"))
            .arg(&d.ct_files()[0])
            .arg(&evil),
        std::time::Duration::from_secs(60),
    );
    assert!(out.success(), "{}", out.all());
    let rg = Radguard::start_fresh(&vault_config());
    // A clean instance raises nothing; the executable-carrying one does.
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &[d.mr_files()[0].clone()]);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    assert!(
        !rg.log().contains("vault instance"),
        "clean instance raised an alert"
    );
    let v = probe_store(rg.port(), "PROBE", "VAULT", &[], &[evil]);
    assert_eq!(statuses(&v), vec![Some(0)], "{v:#}");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || rg
            .log()
            .contains("vault instance")),
        "no SecurityAlert for the hidden executable:\n{}",
        rg.log()
    );
}
