//! De-identifying routes (`deidentify = { ... }`): storescu → radguard → storescp; what arrives
//! is de-identified (PS3.15 Annex E basic profile), pixel data untouched, UIDs consistent across
//! the series and across runs, the sender sees success with its own SOP Instance UIDs; instances
//! that may carry burned-in text are refused; queries are refused on such a route.

mod common;

use common::*;
use std::fs;
use std::process::Command;
use std::time::Duration;

fn deid_config(scp_port: u16, key: &std::path::Path) -> String {
    let mut cfg = Config::new()
        .peer(
            "modality",
            &["RG_SCU", "PROBE"],
            &["127.0.0.1/32"],
            &["echo", "store", "find"],
            &["*"],
            &[],
        )
        .toml();
    cfg.push_str(&format!(
        "\n[[route]]\ncalled_ae = \"TELERAD\"\nupstream = \"127.0.0.1:{scp_port}\"\nupstream_ae = \"ARCHIVE\"\n\
         deidentify = {{ profile = \"basic\", options = [\"retain-long-modified-dates\"], key_file = \"{}\" }}\n",
        key.display()
    ));
    cfg
}

fn check(sent: &std::path::Path, recv: &std::path::Path) -> serde_json::Value {
    let out = run(
        Command::new(venv_python())
            .arg(py_script("check_deid.py"))
            .arg(sent)
            .arg(recv),
        Duration::from_secs(120),
    );
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("check_deid.py output not JSON ({e}):\n{}", out.all()));
    assert!(
        out.success(),
        "de-identification check failed: {v:#}\n{}",
        out.all()
    );
    v
}

#[test]
fn series_through_a_deidentifying_route() {
    let d = test_data();
    let keydir = tmp_dir("deid-key");
    let key = keydir.path().join("site.key");
    fs::write(
        &key,
        "7f3a9c0e5b2d4f61a8e7c3b9d0f1e2a4c6b8d0e2f4a6c8e0b2d4f6a8c0e2b4d6\n",
    )
    .unwrap();

    let scp = StoreScp::start("ARCHIVE");
    let rg = Radguard::start_fresh(&deid_config(scp.port, &key));
    storescu(rg.port(), "RG_SCU", "TELERAD", &[d.ct_dir()])
        .assert_success("storescu -> deid route");
    let n = d.ct_files().len();
    assert_eq!(scp.files().len(), n, "instances received");
    let v = check(&d.ct_dir(), &scp.dir);
    assert_eq!(v["received"], n);
    let first_uids: Vec<String> = {
        let mut f: Vec<String> = scp
            .files()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        f.sort();
        f
    };

    // A second run (fresh gateway and archive, same key) gives the same UIDs.
    let scp2 = StoreScp::start("ARCHIVE");
    let rg2 = Radguard::start_fresh(&deid_config(scp2.port, &key));
    storescu(rg2.port(), "RG_SCU", "TELERAD", &[d.ct_dir()]).assert_success("second run");
    let mut second: Vec<String> = scp2
        .files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into())
        .collect();
    second.sort();
    assert_eq!(
        first_uids, second,
        "UIDs differ between two runs with the same key"
    );

    // The sender got its own SOP Instance UIDs back: the probe checks each response's status,
    // and pynetdicom reports a mismatching Affected SOP Instance UID as an error.
    let v = probe_store(rg.port(), "PROBE", "TELERAD", &[], &d.ct_files()[..2]);
    assert_eq!(statuses(&v), vec![Some(0), Some(0)], "{v:#}");

    // Patient identifiers never appear in the gateway's log lines.
    let log = rg.log();
    assert!(
        !log.contains(&d.ct_patient_id()),
        "patient ID in the gateway log"
    );
}

#[test]
fn burned_in_and_queries_are_refused_on_a_deidentifying_route() {
    let d = test_data();
    let keydir = tmp_dir("deid-key");
    let key = keydir.path().join("site.key");
    fs::write(
        &key,
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let scp = StoreScp::start("ARCHIVE");
    let rg = Radguard::start_fresh(&deid_config(scp.port, &key));
    // Secondary Capture may carry burned-in text: refused (0x0124), nothing forwarded.
    let v = probe_store(rg.port(), "PROBE", "TELERAD", &[], &[d.sc_file()]);
    assert_eq!(statuses(&v), vec![Some(0x0124)], "{v:#}");
    // C-FIND would carry identifiers out unchanged: its context is refused (user rejection).
    let v = probe(
        rg.port(),
        "PROBE",
        "TELERAD",
        &["find", "--key", &format!("PatientID={}", d.ct_patient_id())],
    );
    assert_eq!(
        context_result(&v, "1.2.840.10008.5.1.4.1.2.2.1"),
        Some(1),
        "{v:#}"
    );
    assert!(
        scp.files().is_empty(),
        "something reached the archive: {:?}",
        scp.files()
    );
}
