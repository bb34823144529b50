//! Origin routes (`origin = true`): every C-STORE relayed is fingerprinted while it streams and
//! appended to the integrity ledger before the archive's success goes back; `radguard verify`
//! then proves the archive's copies unchanged, names a tampered one, and a C-STORE of a logged
//! SOP Instance UID with different content is refused before the archive has it whole.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn origin_config(port: u16, upstream_ae: &str) -> String {
    let mut cfg = Config::new()
        .peer(
            "ct-scanner",
            &["RG_SCU", "PROBE"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .toml();
    cfg.push_str(&format!(
        "\n[[route]]\ncalled_ae = \"ARCHIVE\"\nupstream = \"127.0.0.1:{port}\"\nupstream_ae = \"{upstream_ae}\"\norigin = true\n"
    ));
    cfg
}

fn verify(
    ledger: &std::path::Path,
    paths: &[&std::path::Path],
) -> (Option<i32>, serde_json::Value, String) {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("verify")
        .arg("--ledger")
        .arg(ledger)
        .arg("--json")
        .args(paths);
    let out = run(&mut cmd, Duration::from_secs(120));
    let v = serde_json::from_str(out.stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.code, v, out.all())
}

#[test]
fn stores_are_fingerprinted_and_verified_and_conflicts_refused() {
    let d = test_data();
    let scp = StoreScp::start("ARCHIVE");
    let rg = Radguard::start_fresh(&origin_config(scp.port, "ARCHIVE"));
    let ledger = rg.data_dir.join("ledger");
    storescu(rg.port(), "RG_SCU", "ARCHIVE", &[d.ct_dir()])
        .assert_success("storescu -> origin route");
    let n = d.ct_files().len();
    assert_eq!(scp.files().len(), n);

    // The archive's copies verify as unchanged (storescp rewrote the meta header: no matter).
    let (code, v, all) = verify(&ledger, &[&scp.dir]);
    assert_eq!(code, Some(0), "verify failed:\n{all}");
    let verdicts: Vec<&str> = v["results"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["verdict"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(verdicts, vec!["unchanged"; n], "{all}");

    // A CT-GAN-like change to one copy is named as altered (exit 1).
    let tampered_dir = tmp_dir("tampered");
    let tampered = tampered_dir.path().join("tampered.dcm");
    let out = run(
        Command::new(venv_python())
            .arg(py_script("tamper.py"))
            .arg(&scp.files()[0])
            .arg(&tampered),
        Duration::from_secs(60),
    );
    assert!(out.success(), "{}", out.all());
    let (code, v, all) = verify(&ledger, &[tampered.as_path()]);
    assert_eq!(code, Some(1), "tampered copy not reported:\n{all}");
    assert_eq!(v["results"][0]["verdict"], "altered", "{all}");

    // Same SOP Instance UID, different content: refused (never success) before the last
    // fragment goes upstream, so the archive never holds the conflicting copy whole. (storescp
    // itself deletes the partial file it started under the same name, original included: that
    // is storescp's handling of an aborted duplicate, not something the gateway sent.)
    let v = probe_store(rg.port(), "PROBE", "ARCHIVE", &[], &[d.conflict_file()]);
    assert_ne!(
        statuses(&v),
        vec![Some(0)],
        "conflicting instance got success: {v:#}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (code, v, all) = verify(&ledger, &[&scp.dir]);
    assert_eq!(
        code,
        Some(0),
        "the archive holds an altered copy after the refusal:\n{all}"
    );
    assert_eq!(v["summary"]["altered"], 0, "{all}");
    // The overwrite attempt is a detection of the `overwrite` rule (on by default), with the
    // ledger's two fingerprints as evidence.
    let uid = d.sop_instance_uid("conflict/CT_0001_CONFLICT.dcm");
    let seen = wait_until(Duration::from_secs(30), || {
        rg.events().iter().any(|e| {
            e["event"] == "detection"
                && e["rule"] == "overwrite"
                && e["evidence"]["store"] == "ledger"
                && e["evidence"]["sop_instance"] == uid.as_str()
                && e["evidence"]["refused"] == true
                && e["evidence"]["kept"] != e["evidence"]["arrived"]
        })
    });
    assert!(seen, "no overwrite detection in the log:\n{}", rg.log());
}

/// Deflated Explicit VR Little Endian on the wire (storescu -xd, storescp +xd): the origin route
/// fingerprints the deflated data set through the one grammar's inflater, and the archive's
/// deflated copies verify as unchanged (the fingerprint does not depend on the encoding).
#[test]
fn deflated_stores_are_fingerprinted_and_verify_unchanged() {
    let d = test_data();
    let scp = StoreScp::start_with("ARCHIVE", &["+xd"]);
    let rg = Radguard::start_fresh(&origin_config(scp.port, "ARCHIVE"));
    let ledger = rg.data_dir.join("ledger");
    let files: Vec<_> = d.ct_files().into_iter().take(4).collect();
    storescu_with(rg.port(), "RG_SCU", "ARCHIVE", &["-xd"], &files)
        .assert_success("storescu -xd -> origin route");
    let stored = scp.files();
    assert_eq!(stored.len(), files.len());
    // The archive really holds deflated copies (the transfer went deflated end to end).
    let meta = dcmtk(
        "dcmdump",
        &[std::ffi::OsString::from("-M"), stored[0].clone().into()],
    );
    assert!(
        meta.stdout.contains("DeflatedLittleEndianExplicit"),
        "storescp's copy is not deflated:\n{}",
        meta.all()
    );
    let (code, v, all) = verify(&ledger, &[&scp.dir]);
    assert_eq!(code, Some(0), "verify failed:\n{all}");
    assert_eq!(v["summary"]["unchanged"], files.len(), "{all}");
    // And the originals (explicit VR) verify against the same entries.
    let (code, v, all) = verify(&ledger, &[d.ct_files()[0].as_path()]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(v["results"][0]["verdict"], "unchanged", "{all}");
}

/// End to end with a real archive: storescu → radguard (origin route) → Orthanc; the study
/// fetched back from Orthanc verifies as unchanged; a change made inside Orthanc's own storage
/// is reported as altered.
#[test]
fn orthanc_copies_verify_and_tampering_inside_orthanc_is_found() {
    let d = test_data();
    // No storage cache, so a file changed on disk is what Orthanc serves.
    let orthanc = Orthanc::start_extra(
        "ORTHANC",
        &serde_json::json!({"MaximumStorageCacheSize": 0}),
    );
    let rg = Radguard::start_fresh(&origin_config(orthanc.dicom_port, "ORTHANC"));
    let ledger = rg.data_dir.join("ledger");
    storescu(rg.port(), "RG_SCU", "ARCHIVE", &[d.ct_dir()])
        .assert_success("storescu -> origin -> Orthanc");
    let ids: Vec<String> = orthanc
        .get_json("/instances")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), d.ct_files().len(), "instances in Orthanc");

    let fetched = tmp_dir("fetched");
    for (i, id) in ids.iter().take(3).enumerate() {
        let (code, body) = orthanc.get(&format!("/instances/{id}/file"));
        assert_eq!(code, 200);
        std::fs::write(fetched.path().join(format!("{i}.dcm")), body).unwrap();
    }
    let (code, v, all) = verify(&ledger, &[fetched.path()]);
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(v["summary"]["unchanged"], 3, "{all}");

    // Alter the first instance inside Orthanc's storage, then fetch it again.
    let info = orthanc.get_json(&format!("/instances/{}/attachments/dicom/info", ids[0]));
    let uuid = info["Uuid"].as_str().expect("attachment uuid").to_string();
    let stored = orthanc
        .storage_dir()
        .expect("storage dir")
        .join(&uuid[0..2])
        .join(&uuid[2..4])
        .join(&uuid);
    assert!(stored.exists(), "attachment file {}", stored.display());
    let altered = fetched.path().join("altered-in-orthanc.dcm");
    let out = run(
        Command::new(venv_python())
            .arg(py_script("tamper.py"))
            .arg(&stored)
            .arg(&altered),
        Duration::from_secs(60),
    );
    assert!(out.success(), "{}", out.all());
    std::fs::copy(&altered, &stored).unwrap();
    std::fs::remove_file(&altered).unwrap();
    let (code, body) = orthanc.get(&format!("/instances/{}/file", ids[0]));
    assert_eq!(code, 200);
    let refetched = tmp_dir("refetched");
    std::fs::write(refetched.path().join("0.dcm"), body).unwrap();
    let (code, v, all) = verify(&ledger, &[refetched.path()]);
    assert_eq!(code, Some(1), "tampering inside Orthanc not found:\n{all}");
    assert_eq!(v["results"][0]["verdict"], "altered", "{all}");
}
