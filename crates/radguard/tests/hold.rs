//! Hold routes (`on_upstream_down = "hold"`): with the archive (Orthanc) down, a 300-instance
//! series gets success (stored in the vault, queued) while another route to an archive that is
//! up is served meanwhile; once Orthanc is up, all 300 arrive once, in order, and verify
//! unchanged against the ledger; a kill -9 while forwarding loses nothing; the quota and the
//! disk high-water mark answer 0xA700 with an alert; an archive killed in the middle of an
//! association costs the modality nothing (the rest is held, then forwarded). Backoff is
//! shortened (200 ms .. 1 s).

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SERIES_UID: &str = "1.2.826.0.1.3680043.9.7433.19.1";

/// `n` CT instances (copies of the test CT slice with their own SOP Instance UIDs, one new
/// series), named so that sorted order is sending order. Returns the files and their UIDs.
fn make_series(dir: &Path, n: usize, tag: &str) -> (Vec<PathBuf>, Vec<String>) {
    fs::create_dir_all(dir).unwrap();
    let src = test_data().ct_files()[0].clone();
    let script = format!(
        r#"
import pydicom, sys
ds = pydicom.dcmread(sys.argv[1])
for i in range({n}):
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.9.7433.19.{tag}.%d" % (i + 1)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = "{SERIES_UID}.{tag}"
    ds.InstanceNumber = i + 1
    ds.save_as("%s/img%04d.dcm" % (sys.argv[2], i + 1), enforce_file_format=True)
"#
    );
    let mut cmd = Command::new(venv_python());
    cmd.arg("-c").arg(script).arg(&src).arg(dir);
    let out = run(&mut cmd, Duration::from_secs(120));
    assert!(out.success(), "making the series failed:\n{}", out.text());
    let files: Vec<PathBuf> = (1..=n)
        .map(|i| dir.join(format!("img{i:04}.dcm")))
        .collect();
    let uids = (1..=n)
        .map(|i| format!("1.2.826.0.1.3680043.9.7433.19.{tag}.{i}"))
        .collect();
    (files, uids)
}

fn hold_config(archive_port: u16, extra: &str, up_port: Option<u16>) -> String {
    let mut cfg = Config::new()
        .peer(
            "modality",
            &["MOD"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .toml();
    cfg.push_str(&format!(
        "\n[[route]]\ncalled_ae = \"HOLD\"\nupstream = \"127.0.0.1:{archive_port}\"\nupstream_ae = \"ORTHANC\"\norigin = true\non_upstream_down = \"hold\"\nhold_backoff_base_ms = 200\nhold_backoff_cap_ms = 1000\n{extra}\n"
    ));
    if let Some(p) = up_port {
        cfg.push_str(&format!(
            "\n[[route]]\ncalled_ae = \"UP\"\nupstream = \"127.0.0.1:{p}\"\nupstream_ae = \"UPARCH\"\n"
        ));
    }
    cfg
}

fn events_named(rg: &Radguard, name: &str) -> Vec<Value> {
    rg.events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect()
}

/// Waits until the log holds at least `n` events `name` (bounded), returns them.
fn wait_events(rg: &Radguard, name: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(timeout, || {
        got = events_named(rg, name);
        got.len() >= n
    });
    assert!(
        ok,
        "{} {name} events, wanted {n}; log tail:\n{}",
        got.len(),
        tail(&rg.log())
    );
    got
}

/// Asserts Orthanc's arrival order is the sending order, naming the first difference.
fn assert_order(got: &[String], want: &[String]) {
    let first = got.iter().zip(want).position(|(g, w)| g != w);
    assert!(
        first.is_none() && got.len() == want.len(),
        "arrival order differs from the sending order at position {first:?} ({} arrived, {} sent): got {:?}",
        got.len(),
        want.len(),
        first.map(|i| &got[i..(i + 3).min(got.len())])
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Orthanc on a given DICOM port (the hold route's archive, started late).
struct Archive {
    http_port: u16,
    proc: Proc,
    tmp: Option<tempfile::TempDir>,
}

impl Archive {
    fn start(dicom_port: u16) -> Archive {
        Archive::start_in(dicom_port, tmp_dir("orthanc-hold"))
    }

    /// Kills Orthanc with SIGKILL; its folder (storage and index) is returned for a restart.
    fn kill_9(mut self) -> tempfile::TempDir {
        self.proc.kill();
        self.tmp.take().expect("the archive's folder")
    }

    /// Orthanc on the storage and index in `tmp` (a restart keeps what it had).
    fn start_in(dicom_port: u16, tmp: tempfile::TempDir) -> Archive {
        let exe = require_tool(ORTHANC_BIN);
        let storage = tmp.path().join("db");
        fs::create_dir_all(&storage).unwrap();
        for _ in 0..3 {
            let http_port = free_port();
            let cfg = serde_json::json!({
                "Name": "RG-TEST-HOLD",
                "StorageDirectory": storage,
                "IndexDirectory": storage,
                "StorageCompression": false,
                "Plugins": [],
                "HttpServerEnabled": true,
                "HttpPort": http_port,
                "RemoteAccessAllowed": false,
                "AuthenticationEnabled": false,
                "DicomServerEnabled": true,
                "DicomAet": "ORTHANC",
                "DicomPort": dicom_port,
                "DicomCheckCalledAet": false,
                "DicomAlwaysAllowEcho": true,
                "DicomAlwaysAllowStore": true,
                "DicomThreadsCount": 2,
                "UnknownSopClassAccepted": false,
                "OverwriteInstances": false,
                "StableAge": 60,
            });
            let cfg_path = tmp.path().join("orthanc.json");
            fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
            let mut cmd = Command::new(&exe);
            cmd.arg(&cfg_path);
            let mut proc = Proc::spawn("orthanc", &mut cmd, tmp.path(), false);
            let up = wait_until(Duration::from_secs(60), || {
                proc.exited().is_some()
                    || (is_listening(dicom_port)
                        && http_get(http_port, "/system").is_ok_and(|(st, _)| st == 200))
            });
            if up && proc.exited().is_none() {
                return Archive {
                    http_port,
                    proc,
                    tmp: Some(tmp),
                };
            }
            proc.kill();
        }
        panic!("Orthanc did not start on port {dicom_port}");
    }

    fn get_json(&self, path: &str) -> Value {
        let (st, body) = http_get(self.http_port, path).expect("Orthanc REST");
        assert_eq!(st, 200, "GET {path}");
        serde_json::from_slice(&body).expect("JSON")
    }

    fn count(&self) -> u64 {
        self.get_json("/statistics")["CountInstances"]
            .as_u64()
            .unwrap_or(0)
    }

    /// SOP Instance UIDs in the order Orthanc received them (its change log).
    fn arrival_order(&self) -> Vec<String> {
        let expanded = self.get_json("/instances?expand");
        let uid_of: std::collections::HashMap<String, String> = expanded
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["ID"].as_str().unwrap().to_string(),
                    i["MainDicomTags"]["SOPInstanceUID"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        let changes = self.get_json("/changes?limit=10000");
        changes["Changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ChangeType"] == "NewInstance")
            .filter_map(|c| uid_of.get(c["ID"].as_str().unwrap()).cloned())
            .collect()
    }

    fn download_all(&self, to: &Path) {
        fs::create_dir_all(to).unwrap();
        let ids = self.get_json("/instances");
        for id in ids.as_array().unwrap() {
            let id = id.as_str().unwrap();
            let (st, body) =
                http_get(self.http_port, &format!("/instances/{id}/file")).expect("download");
            assert_eq!(st, 200);
            fs::write(to.join(format!("{id}.dcm")), body).unwrap();
        }
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        self.proc.kill();
    }
}

fn verify(ledger: &Path, dir: &Path) -> (Option<i32>, Value, String) {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("verify")
        .arg("--ledger")
        .arg(ledger)
        .arg("--json")
        .arg(dir);
    let out = run(&mut cmd, Duration::from_secs(300));
    let v = serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null);
    (out.code, v, out.all())
}

#[test]
fn archive_down_series_held_then_forwarded_in_order_once_and_unchanged() {
    let tmp = tmp_dir("hold");
    let (files, uids) = make_series(&tmp.path().join("series"), 300, "1");
    let archive_port = free_port();
    let up = StoreScp::start("UPARCH");
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", Some(up.port)));

    // Orthanc is down: the modality's 300 C-STOREs succeed (stored, queued).
    storescu(rg.port(), "MOD", "HOLD", &files)
        .assert_success("storescu -> hold route, archive down");
    let queued = wait_events(&rg, "hold-queued", 300, Duration::from_secs(30));
    assert_eq!(queued.len(), 300, "one hold-queued per instance");
    assert!(
        !is_listening(archive_port),
        "the archive must still be down"
    );
    // The forwarder is failing against the closed port ...
    wait_events(&rg, "hold-retry", 2, Duration::from_secs(30));
    // ... and a second route, whose archive is up, is served meanwhile.
    let ct = test_data().ct_files();
    storescu(rg.port(), "MOD", "UP", &ct).assert_success("storescu -> up route");
    assert_eq!(
        up.files().len(),
        ct.len(),
        "the up route's archive got the series"
    );
    assert!(
        events_named(&rg, "hold-forwarded").is_empty(),
        "nothing can have been forwarded yet"
    );

    // Orthanc comes up: all 300 arrive, once, in the order they were sent.
    let orthanc = Archive::start(archive_port);
    let fwd = wait_events(&rg, "hold-forwarded", 300, Duration::from_secs(240));
    let fwd_uids: Vec<&str> = fwd
        .iter()
        .filter_map(|e| e["sop_instance"].as_str())
        .collect();
    assert_eq!(fwd_uids.len(), 300, "each instance forwarded once");
    assert_eq!(
        fwd_uids.iter().collect::<HashSet<_>>().len(),
        300,
        "no instance forwarded twice"
    );
    assert_eq!(orthanc.count(), 300);
    assert_eq!(
        orthanc.arrival_order(),
        uids,
        "arrival order = sending order"
    );
    // The queue says it is empty.
    let ok = wait_until(Duration::from_secs(30), || {
        events_named(&rg, "hold-depth")
            .last()
            .is_some_and(|e| e["waiting"] == 0)
    });
    assert!(ok, "no hold-depth with waiting = 0:\n{}", tail(&rg.log()));

    // The archive's copies verify unchanged against the fingerprints taken at acceptance.
    let got = tmp.path().join("from-orthanc");
    orthanc.download_all(&got);
    let (code, v, all) = verify(&rg.data_dir.join("ledger"), &got);
    assert_eq!(code, Some(0), "verify:\n{all}");
    let unchanged = v["results"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["verdict"] == "unchanged").count())
        .unwrap_or(0);
    assert_eq!(unchanged, 300, "verify:\n{all}");
}

#[test]
fn kill_9_while_forwarding_loses_nothing() {
    let tmp = tmp_dir("hold-kill");
    let n = 300;
    let (files, uids) = make_series(&tmp.path().join("series"), n, "2");
    let archive_port = free_port();
    let data = tmp_dir("hold-kill-data");
    let cfg = hold_config(archive_port, "", None);
    let rg = Radguard::start(&cfg, data.path());
    storescu(rg.port(), "MOD", "HOLD", &files).assert_success("storescu -> hold route");
    wait_events(&rg, "hold-queued", n, Duration::from_secs(30));

    let orthanc = Archive::start(archive_port);
    // Some have been forwarded, not all: kill -9 in the middle of forwarding.
    wait_events(&rg, "hold-forwarded", 20, Duration::from_secs(120));
    rg.signal("KILL");
    let mut rg = rg;
    assert!(
        rg.wait_exit(Duration::from_secs(20)).is_some(),
        "radguard did not die"
    );
    let before = events_named(&rg, "hold-forwarded").len();
    assert!(
        before < n,
        "everything was forwarded before the kill ({before})"
    );
    drop(rg);

    // Restarted on the same data folder, it delivers the rest: nothing missing.
    let rg2 = Radguard::start(&cfg, data.path());
    let ok = wait_until(Duration::from_secs(240), || orthanc.count() >= n as u64);
    assert!(
        ok,
        "Orthanc has {} of {n}:\n{}",
        orthanc.count(),
        tail(&rg2.log())
    );
    let got: HashSet<String> = orthanc.arrival_order().into_iter().collect();
    for u in &uids {
        assert!(got.contains(u), "{u} missing after the restart");
    }
    // At most the instance in flight at the kill is sent again.
    let after = wait_events(&rg2, "hold-forwarded", n - before, Duration::from_secs(60)).len();
    assert!(
        before + after <= n + 1,
        "{before} before + {after} after the restart: more than one re-sent"
    );
    // The order of arrival held across the restart.
    assert_order(&orthanc.arrival_order(), &uids);
}

#[test]
fn quota_and_disk_high_water_refuse_with_a700_and_alert() {
    let tmp = tmp_dir("hold-quota");
    let (files, _) = make_series(&tmp.path().join("series"), 8, "3");
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_config(archive_port, "hold_quota = 5", None));
    let v = probe_store(rg.port(), "MOD", "HOLD", &[], &files);
    let st = statuses(&v);
    assert_eq!(st.len(), 8, "{v}");
    assert!(
        st[..5].iter().all(|s| *s == Some(0)),
        "first five held: {st:?}"
    );
    assert!(
        st[5..].iter().all(|s| *s == Some(0xA700)),
        "then 0xA700: {st:?}"
    );
    let alerts: Vec<Value> = rg
        .events()
        .into_iter()
        .filter(|e| e["event"] == "security-alert" && e["kind"] == "resource-exhausted")
        .collect();
    assert_eq!(alerts.len(), 3, "one alert per refused C-STORE");
    assert!(alerts[0]["detail"]
        .as_str()
        .unwrap()
        .contains("hold_quota 5"));

    // The operator's view: five queued; a drop needs --yes and is reported (audited).
    let queue = |args: &[&str]| {
        let mut cmd = Command::new(Radguard::exe());
        cmd.arg("queue").args(args).arg("--data").arg(&rg.data_dir);
        run(&mut cmd, Duration::from_secs(60))
    };
    let out = queue(&["list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{}", out.all());
    let seq = rows[0]["seq"].as_i64().unwrap().to_string();
    let out = queue(&["drop", &seq]);
    assert_eq!(out.code, Some(2), "drop without --yes: {}", out.all());
    let out = queue(&["drop", &seq, "--yes"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let dropped = wait_events(&rg, "hold-dropped", 1, Duration::from_secs(30));
    assert_eq!(dropped[0]["sop_instance"], rows[0]["sop_instance"]);
    let out = queue(&["list", "--json"]);
    let waiting = out
        .stdout
        .lines()
        .filter(|l| l.contains("\"queued\"") || l.contains("\"in-flight\""))
        .count();
    assert_eq!(waiting, 4, "{}", out.all());
    assert_eq!(queue(&["retry"]).code, Some(0));
    drop(rg);

    // A disk high-water mark below the disk's use: refused before anything is stored.
    let rg = Radguard::start_fresh(&hold_config(
        archive_port,
        "hold_high_water_percent = 1",
        None,
    ));
    let v = probe_store(rg.port(), "MOD", "HOLD", &[], &files[..1]);
    assert_eq!(statuses(&v), vec![Some(0xA700)], "{v}");
    assert!(events_named(&rg, "hold-queued").is_empty());
    let alert = rg
        .events()
        .into_iter()
        .find(|e| e["event"] == "security-alert" && e["kind"] == "resource-exhausted")
        .expect("resource-exhausted alert");
    assert!(alert["detail"]
        .as_str()
        .unwrap()
        .contains("hold_high_water_percent 1"));
}

#[test]
fn a_held_file_changed_in_the_vault_is_quarantined_not_sent() {
    let tmp = tmp_dir("hold-tamper");
    let (files, uids) = make_series(&tmp.path().join("series"), 3, "4");
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", None));
    storescu(rg.port(), "MOD", "HOLD", &files).assert_success("storescu -> hold route");
    wait_events(&rg, "hold-queued", 3, Duration::from_secs(30));

    // Someone with access to the data folder changes the second instance's last byte.
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["queue", "list", "--json", "--data"])
        .arg(&rg.data_dir);
    let out = run(&mut cmd, Duration::from_secs(60));
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = rows
        .iter()
        .find(|r| r["sop_instance"] == uids[1].as_str())
        .expect("row");
    let path = PathBuf::from(row["path"].as_str().unwrap());
    let mut perm = fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&path, perm).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    fs::write(&path, bytes).unwrap();

    let orthanc = Archive::start(archive_port);
    wait_events(&rg, "hold-forwarded", 2, Duration::from_secs(120));
    let ok = wait_until(Duration::from_secs(30), || {
        rg.events().iter().any(|e| {
            e["event"] == "security-alert"
                && e["kind"] == "instance-conflict"
                && e["detail"].as_str().is_some_and(|d| d.contains(&uids[1]))
        })
    });
    assert!(ok, "no alert for the changed file:\n{}", tail(&rg.log()));
    assert_eq!(orthanc.count(), 2);
    assert_order(
        &orthanc.arrival_order(),
        &[uids[0].clone(), uids[2].clone()],
    );
}

/// storescu's responses in its `-v` log: (all, successful).
fn store_responses(out: &Output) -> (usize, usize) {
    let all = out.all();
    let rsp: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("Received Store Response"))
        .collect();
    let ok = rsp.iter().filter(|l| l.contains("(Success)")).count();
    (rsp.len(), ok)
}

#[test]
fn archive_killed_mid_association_every_instance_succeeds_then_arrives_once_in_order() {
    let tmp = tmp_dir("hold-drop");
    let n = 300;
    let (files, uids) = make_series(&tmp.path().join("series"), n, "5");
    let archive_port = free_port();
    let orthanc = Archive::start(archive_port);
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", None));

    // One association of 300 C-STOREs, relayed to Orthanc ...
    let port = rg.port();
    let sender = std::thread::spawn(move || storescu(port, "MOD", "HOLD", &files));
    // ... which is killed (SIGKILL) once 60 of them have arrived there.
    let arrived = wait_until(Duration::from_secs(180), || orthanc.count() >= 60);
    assert!(arrived, "Orthanc never had 60:\n{}", tail(&rg.log()));
    let folder = orthanc.kill_9();

    // The modality's association ends normally, every C-STORE answered success.
    let out = sender.join().expect("storescu thread");
    out.assert_success("storescu -> hold route, archive killed mid-association");
    assert_eq!(store_responses(&out), (n, n), "{}", out.text());
    assert!(
        events_named(&rg, "association-aborted").is_empty(),
        "no association aborted:\n{}",
        tail(&rg.log())
    );
    let queued = events_named(&rg, "hold-queued").len();
    assert!(queued > 0 && queued < n, "{queued} held");
    let log = rg.log();
    let takeover = log
        .lines()
        .find(|l| l.contains("upstream lost mid-association"))
        .unwrap_or_else(|| panic!("no takeover in the log:\n{}", tail(&log)));
    eprintln!("takeover: {takeover}");

    // The archive comes back on its own storage: the held ones are forwarded.
    let orthanc = Archive::start_in(archive_port, folder);
    let before = orthanc.count() as usize;
    assert!(
        before + queued == n || before + queued == n + 1,
        "Orthanc had {before} at restart and {queued} were held: {} sent",
        n
    );
    wait_events(&rg, "hold-forwarded", queued, Duration::from_secs(240));
    let ok = wait_until(Duration::from_secs(60), || orthanc.count() >= n as u64);
    assert!(ok, "Orthanc has {} of {n}", orthanc.count());
    assert_eq!(orthanc.count(), n as u64, "each instance once");
    // In order: the relayed ones, then the held ones (the in-flight one at most twice, the
    // archive keeping its first copy).
    assert_order(&orthanc.arrival_order(), &uids);

    // Relayed or held, every copy verifies unchanged against the ledger.
    let got = tmp.path().join("from-orthanc");
    orthanc.download_all(&got);
    let (code, v, all) = verify(&rg.data_dir.join("ledger"), &got);
    assert_eq!(code, Some(0), "verify:\n{all}");
    let unchanged = v["results"]
        .as_array()
        .map(|a| a.iter().filter(|r| r["verdict"] == "unchanged").count())
        .unwrap_or(0);
    assert_eq!(unchanged, n, "verify:\n{all}");
}
