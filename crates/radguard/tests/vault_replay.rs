//! Recovery from the vault: `radguard vault replay` into an empty Orthanc delivers every one of
//! 300 instances once, data sets unchanged; a replay killed with kill -9 resumes from its state
//! file without duplicates or gaps; a changed vault object is refused (reported, not sent);
//! `radguard vault export` writes Part 10 files dcmdump reads, with the vault's hashes.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `n` CT instances (copies of the test CT slice with their own SOP Instance UIDs, one series).
fn make_series(dir: &Path, n: usize, tag: &str) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let src = test_data().ct_files()[0].clone();
    let script = format!(
        r#"
import pydicom, sys
ds = pydicom.dcmread(sys.argv[1])
for i in range({n}):
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7433.21.{tag}.%d" % (i + 1)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.7433.21.{tag}"
    ds.InstanceNumber = i + 1
    ds.save_as("%s/img%04d.dcm" % (sys.argv[2], i + 1), enforce_file_format=True)
"#
    );
    let mut cmd = Command::new(venv_python());
    cmd.arg("-c").arg(script).arg(&src).arg(dir);
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(out.success(), "making the series failed:\n{}", out.text());
    (1..=n)
        .map(|i| dir.join(format!("img{i:04}.dcm")))
        .collect()
}

/// Fills `data`'s vault through the gateway: a hold route whose archive stays down (origin:
/// every instance is also fingerprinted into the ledger, so replay checks both), or a plain
/// vault route. The gateway is stopped on return.
fn fill_vault(data: &Path, files: &[PathBuf], hold: bool) {
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
    // A closed port: the hold route's archive never comes up.
    let closed = free_port();
    cfg.push_str(&format!(
        "\n[[route]]\ncalled_ae = \"HOLD\"\nupstream = \"127.0.0.1:{closed}\"\nupstream_ae = \"GONE\"\norigin = true\non_upstream_down = \"hold\"\nhold_backoff_base_ms = 1000\nhold_backoff_cap_ms = 5000\n"
    ));
    let rg = Radguard::start(&cfg, data);
    storescu(rg.port(), "MOD", if hold { "HOLD" } else { "VAULT" }, files)
        .assert_success("storescu -> vault");
    drop(rg);
    assert_eq!(vault_index(data).len(), files.len(), "vault filled");
}

/// `radguard vault replay --json` to Orthanc; (exit code, report, all output).
fn replay(data: &Path, orthanc: &Orthanc, extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut cmd = replay_cmd(data, orthanc, extra);
    let out = run(&mut cmd, Duration::from_secs(600));
    let v = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
    (out.code, v, out.all())
}

fn replay_cmd(data: &Path, orthanc: &Orthanc, extra: &[&str]) -> Command {
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["vault", "replay", "--json", "--called-ae", &orthanc.aet])
        .arg("--to")
        .arg(format!("127.0.0.1:{}", orthanc.dicom_port))
        .arg("--data")
        .arg(data)
        .args(extra);
    cmd
}

/// SOP Instance UIDs Orthanc stores, and how many NewInstance changes it logged.
fn orthanc_uids(o: &Orthanc) -> (Vec<String>, usize) {
    let expanded = o.get_json("/instances?expand");
    let uids: Vec<String> = expanded
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["MainDicomTags"]["SOPInstanceUID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let changes = o.get_json("/changes?limit=100000");
    let new = changes["Changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ChangeType"] == "NewInstance")
        .count();
    (uids, new)
}

/// Rows of the replay state: SOP Instance UIDs the archive confirmed, with their run.
fn state_rows(state: &Path) -> Vec<(String, i64)> {
    let Ok(c) =
        rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut s) = c.prepare("SELECT sop_instance_uid, run FROM sent") else {
        return Vec::new();
    };
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn assert_all_once(o: &Orthanc, want: &[String]) {
    let (uids, new) = orthanc_uids(o);
    assert_eq!(o.instance_count(), want.len() as u64, "Orthanc's count");
    assert_eq!(new, want.len(), "one NewInstance per instance");
    let got: HashSet<&String> = uids.iter().collect();
    let want_set: HashSet<&String> = want.iter().collect();
    assert_eq!(got, want_set, "Orthanc holds exactly the vault's instances");
}

#[test]
fn replay_300_once_resume_after_kill_9_and_export() {
    let tmp = tmp_dir("replay");
    let files = make_series(&tmp.path().join("series"), 300, "1");
    let data = tmp.path().join("data");
    fill_vault(&data, &files, true);
    let uids = vault_index(&data);

    // 1. A full replay into an empty Orthanc: 300 sent, each once, data sets unchanged.
    let o1 = Orthanc::start("REBUILT1", &[]);
    let (code, v, all) = replay(&data, &o1, &[]);
    assert_eq!(code, Some(0), "replay:\n{all}");
    assert_eq!(v["selected"], 300, "{all}");
    assert_eq!(v["sent"], 300, "{all}");
    assert_eq!(v["already_present"], 0, "{all}");
    assert_eq!(v["failed"].as_array().map(Vec::len), Some(0), "{all}");
    // The hold route fingerprinted every instance into the ledger: each was checked against it.
    assert_eq!(v["ledger_checked"], 300, "{all}");
    assert_all_once(&o1, &uids);
    for (i, f) in files.iter().enumerate().step_by(60) {
        let uid = format!("1.2.826.0.1.3680043.9.7433.21.1.{}", i + 1);
        let id = o1.find_instance(&uid).expect("in Orthanc");
        let got = tmp.path().join(format!("got-{i}.dcm"));
        o1.download(&id, &got);
        assert_same_dataset(f, &got);
    }
    // A second run with the same state file sends nothing: all already present.
    let (code, v, all) = replay(&data, &o1, &[]);
    assert_eq!(code, Some(0), "rerun:\n{all}");
    assert_eq!(
        (v["sent"].as_u64(), v["already_present"].as_u64()),
        (Some(0), Some(300)),
        "{all}"
    );
    assert_all_once(&o1, &uids);

    // 2. kill -9 mid-way into another empty Orthanc, then resume: no gaps, none twice.
    let o2 = Orthanc::start("REBUILT2", &[]);
    let state = tmp.path().join("replay2.sqlite");
    let state_arg = state.to_str().unwrap();
    let mut cmd = replay_cmd(&data, &o2, &["--state", state_arg, "--batch", "10"]);
    let mut p = Proc::spawn("replay", &mut cmd, tmp.path(), false);
    let started = wait_until(Duration::from_secs(120), || {
        p.exited().is_some() || state_rows(&state).len() >= 40
    });
    assert!(started, "no progress in the state file:\n{}", p.log());
    assert!(
        p.exited().is_none(),
        "replay ended before the kill:\n{}",
        p.log()
    );
    p.kill();
    let confirmed = state_rows(&state);
    let k = confirmed.len();
    assert!((40..300).contains(&k), "{k} confirmed at the kill");
    assert!(confirmed.iter().all(|(_, run)| *run == 1));
    let (code, v, all) = replay(&data, &o2, &["--state", state_arg]);
    assert_eq!(code, Some(0), "resumed replay:\n{all}");
    // The rerun sends exactly what was not confirmed (the one in flight at the kill among
    // them: the only instance that can have been sent twice) ...
    assert_eq!(v["already_present"].as_u64(), Some(k as u64), "{all}");
    assert_eq!(v["sent"].as_u64(), Some(300 - k as u64), "{all}");
    let resent = v["resent_after_interruption"].as_str();
    if let Some(u) = resent {
        assert!(
            !confirmed.iter().any(|(c, _)| c == u),
            "the resent instance was not confirmed before the kill"
        );
    }
    // ... every instance is confirmed exactly once across both runs, and Orthanc has them all.
    let rows = state_rows(&state);
    assert_eq!(rows.len(), 300);
    let by_uid: HashSet<&String> = rows.iter().map(|(u, _)| u).collect();
    assert_eq!(by_uid, uids.iter().collect(), "no gaps");
    assert_eq!(rows.iter().filter(|(_, r)| *r == 2).count(), 300 - k);
    assert_all_once(&o2, &uids);

    // 3. Export: Part 10 files dcmdump reads, named by UIDs, with the vault's hashes.
    let out = tmp.path().join("export");
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["vault", "export", "--json", "--data"])
        .arg(&data)
        .arg(&out);
    let o = run(&mut cmd, Duration::from_secs(300));
    assert_eq!(o.code, Some(0), "export:\n{}", o.all());
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("export JSON");
    assert_eq!(v["written"], 300, "{}", o.all());
    let exported = files_under(&out, ".dcm");
    assert_eq!(exported.len(), 300);
    let objects: HashSet<String> = files_under(&data.join("vault"), ".dcm")
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let hashes: HashSet<String> = exported.iter().map(|p| sha256_hex(p)).collect();
    assert_eq!(hashes, objects, "exported bytes = vault objects");
    let study_dirs: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(study_dirs.len(), 1, "one study folder: {study_dirs:?}");
    let series = study_dirs[0].join("1.2.826.0.1.3680043.9.7433.21.1");
    assert!(series.is_dir(), "<study>/<series>/ layout: {study_dirs:?}");
    for p in exported.iter().step_by(75) {
        dcmtk("dcmdump", &[p.as_os_str()]).assert_success("dcmdump of an exported file");
    }
    // A non-empty folder is refused without --resume; with it nothing is rewritten.
    let o = run(&mut cmd, Duration::from_secs(300));
    assert_eq!(o.code, Some(2), "non-empty DIR:\n{}", o.all());
    cmd.arg("--resume");
    let o = run(&mut cmd, Duration::from_secs(300));
    assert_eq!(o.code, Some(0), "--resume:\n{}", o.all());
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("export JSON");
    assert_eq!(
        (v["written"].as_u64(), v["already_there"].as_u64()),
        (Some(0), Some(300))
    );
}

fn sha256_hex(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(fs::read(p).unwrap()))
}

#[test]
fn changed_object_is_refused_by_replay_and_export() {
    let tmp = tmp_dir("replay-tamper");
    let files = make_series(&tmp.path().join("series"), 5, "2");
    let data = tmp.path().join("data");
    fill_vault(&data, &files, false);
    // Flip one byte near the end of the third object (index order = storescu's order).
    let uid = "1.2.826.0.1.3680043.9.7433.21.2.3";
    let objects = files_under(&data.join("vault"), ".dcm");
    let victim = objects
        .iter()
        .find(|p| {
            let b = fs::read(p).unwrap();
            b.windows(uid.len() + 1).any(|w| {
                &w[..uid.len()] == uid.as_bytes() && (w[uid.len()] == 0 || w[uid.len()] == b' ')
            })
        })
        .expect("the object of instance 3")
        .clone();
    let mut perms = fs::metadata(&victim).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&victim, perms).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    fs::write(&victim, bytes).unwrap();

    let o = Orthanc::start("REBUILT3", &[]);
    let (code, v, all) = replay(&data, &o, &[]);
    assert_eq!(code, Some(1), "a failed instance: exit 1\n{all}");
    assert_eq!(v["sent"], 4, "{all}");
    assert_eq!(v["ledger_checked"], 0, "a vault route: hash only\n{all}");
    let failed = v["failed"].as_array().expect("failed list");
    assert_eq!(failed.len(), 1, "{all}");
    assert_eq!(failed[0]["sop_instance"], uid, "{all}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vault file changed")),
        "{all}"
    );
    assert_eq!(o.instance_count(), 4, "the changed object was not sent");
    assert!(o.find_instance(uid).is_none());

    // Selection: --study and --since/--until pick from the index; the rerun resends nothing
    // confirmed and refuses the changed object again.
    let study = test_data().ct_study_uid();
    let (code, v, all) = replay(&data, &o, &["--study", &study, "--since", "1d"]);
    assert_eq!(code, Some(1), "{all}");
    assert_eq!(
        (
            v["selected"].as_u64(),
            v["already_present"].as_u64(),
            v["sent"].as_u64()
        ),
        (Some(5), Some(4), Some(0)),
        "{all}"
    );
    let (code, v, all) = replay(&data, &o, &["--until", "2000-01-01"]);
    assert_eq!((code, v["selected"].as_u64()), (Some(0), Some(0)), "{all}");
    let (code, v, all) = replay(&data, &o, &["--study", "1.2.3.999"]);
    assert_eq!((code, v["selected"].as_u64()), (Some(0), Some(0)), "{all}");
    let (code, _, all) = replay(&data, &o, &["--since", "yesterday"]);
    assert_eq!(code, Some(2), "a bad time is a usage error\n{all}");

    let out = tmp.path().join("export");
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["vault", "export", "--flat", "--json", "--data"])
        .arg(&data)
        .arg(&out);
    let r = run(&mut cmd, Duration::from_secs(120));
    assert_eq!(r.code, Some(1), "export:\n{}", r.all());
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("export JSON");
    assert_eq!(v["written"], 4);
    assert!(
        !out.join(format!("{uid}.dcm")).exists(),
        "changed object not exported"
    );
    assert_eq!(files_under(&out, "").len(), 4, "no partial file left");
}

/// Replay over TLS to DCMTK `storescp +tls` (it requires a client certificate from radguard's
/// CA): with --tls/--ca/--cert/--key, and again through a config route's `tls` settings
/// (--config/--route); without TLS the archive cannot be reached (run stopped, exit 1).
#[test]
fn replay_over_tls_with_flags_and_with_a_route() {
    use common::tls_peers::*;
    let tmp = tmp_dir("replay-tls");
    let files = make_series(&tmp.path().join("series"), 4, "3");
    let data = tmp.path().join("data");
    fill_vault(&data, &files, false);
    let gw = Pki::init("replay-gw", &["modality"]);
    let archive = Pki::init("replay-ar", &["unused"]);
    let tls: Vec<String> = dcmtk_tls(&archive.gateway_key(), &archive.gateway_cert(), &gw.ca())
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = tls.iter().map(String::as_str).collect();

    // Plain to a TLS-only archive: no association, nothing sent, exit 1.
    let scp = StoreScp::start_with("TLSARCHIVE", &refs);
    let to = format!("127.0.0.1:{}", scp.port);
    let base = |cmd: &mut Command| {
        cmd.args(["vault", "replay", "--json", "--data"]).arg(&data);
    };
    let mut cmd = Command::new(Radguard::exe());
    base(&mut cmd);
    cmd.args(["--to", &to, "--called-ae", "TLSARCHIVE"]);
    let o = run(&mut cmd, Duration::from_secs(120));
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
    assert_eq!(o.code, Some(1), "{}", o.all());
    assert_eq!(
        (v["sent"].as_u64(), v["not_attempted"].as_u64()),
        (Some(0), Some(4)),
        "{}",
        o.all()
    );
    assert!(v["stopped"].is_string(), "{}", o.all());

    // TLS from flags: all four arrive identical.
    let mut cmd = Command::new(Radguard::exe());
    base(&mut cmd);
    cmd.args([
        "--to",
        &to,
        "--called-ae",
        "TLSARCHIVE",
        "--tls",
        "--server-name",
        "localhost",
    ])
    .arg("--ca")
    .arg(archive.ca())
    .arg("--cert")
    .arg(gw.gateway_cert())
    .arg("--key")
    .arg(gw.gateway_key());
    let o = run(&mut cmd, Duration::from_secs(120));
    assert_eq!(o.code, Some(0), "{}", o.all());
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("JSON");
    assert_eq!(v["sent"], 4, "{}", o.all());
    assert_same_dirs(&tmp.path().join("series"), &scp.dir);

    // TLS from a route of the gateway's config, to a second archive (own state file).
    let scp2 = StoreScp::start_with("TLSARCHIVE", &refs);
    let cfg = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[[peer]]\nname = \"modality\"\n\
         ae_titles = [\"MOD\"]\naddresses = [\"127.0.0.1/32\"]\nallow = [\"echo\"]\n\n[[route]]\ncalled_ae = \"PACS\"\n\
         upstream = \"127.0.0.1:{}\"\nupstream_ae = \"TLSARCHIVE\"\n\
         tls = {{ ca = {:?}, server_name = \"localhost\", client_cert = {:?}, client_key = {:?} }}\n",
        scp2.port,
        archive.ca(),
        gw.gateway_cert(),
        gw.gateway_key()
    );
    let cfg_path = tmp.path().join("radguard.toml");
    fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = Command::new(Radguard::exe());
    base(&mut cmd);
    cmd.arg("--config").arg(&cfg_path).args(["--route", "PACS"]);
    let o = run(&mut cmd, Duration::from_secs(120));
    assert_eq!(o.code, Some(0), "{}", o.all());
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("JSON");
    assert_eq!(v["sent"], 4, "{}", o.all());
    assert_eq!(v["target"], format!("TLSARCHIVE@127.0.0.1:{}", scp2.port));
    assert_same_dirs(&tmp.path().join("series"), &scp2.dir);
}
