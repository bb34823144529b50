//! Hold routes (`on_upstream_down = "hold"`): with the archive (Orthanc) down, a 300-instance
//! series gets success (stored in the vault, queued) while another route to an archive that is
//! up is served meanwhile; once Orthanc is up, all 300 arrive once, in order, and verify
//! unchanged against the ledger; a kill -9 while forwarding loses nothing; the quota and the
//! disk high-water mark answer 0xA700 with an alert; an archive killed in the middle of an
//! association costs the modality nothing (the rest is held, then forwarded); an instance the
//! archive keeps refusing is parked after `hold_max_attempts` and the rest goes on; a long
//! outage with traffic arriving backs off to the cap with a bounded number of retries; an
//! archive address that drops SYNs holds the modality after `connect_timeout_secs`, and once
//! the forwarder knows it down, at once. A route with upstream TLS forwards over TLS only
//! (DCMTK `storescp +tls` requiring radguard's client certificate): an archive certificate the
//! route does not trust gets nothing, and instances held on a TLS route are not sent in clear
//! text after a reload drops its `tls`. Backoff is shortened (200 ms .. 1 s).

mod common;

use common::tls_peers::*;
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
    // What the queue still holds after the kill (its file is the truth: a log line emitted just
    // before the kill may never have been written): the instance in flight, if any, and the
    // ones not sent yet.
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["queue", "list", "--json", "--data"])
        .arg(data.path());
    let pending: HashSet<String> = run(&mut cmd, Duration::from_secs(60))
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["sop_instance"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        !pending.is_empty() && pending.len() <= n - before,
        "{} pending after the kill, {before} forwarded before it",
        pending.len()
    );

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
    // Only what the queue held is sent again (so at most the one in flight at the kill went
    // twice), each once.
    let after: Vec<String> = wait_events(
        &rg2,
        "hold-forwarded",
        pending.len(),
        Duration::from_secs(60),
    )
    .iter()
    .map(|e| e["sop_instance"].as_str().unwrap().to_string())
    .collect();
    let sent: HashSet<&String> = after.iter().collect();
    assert_eq!(
        after.len(),
        sent.len(),
        "an instance forwarded twice after the restart"
    );
    assert!(
        after.iter().all(|u| pending.contains(u)),
        "the restart sent an instance the queue no longer held"
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
    // Someone with CAP_LINUX_IMMUTABLE: the vault locked the object (`[vault] immutable`).
    radguard_vault::lock::clear_immutable(&path).expect("clear the immutable flag");
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

fn queue_cmd(data: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("queue").args(args).arg("--data").arg(data);
    run(&mut cmd, Duration::from_secs(60))
}

#[test]
fn an_instance_the_archive_keeps_refusing_is_parked_and_the_rest_goes_on() {
    let tmp = tmp_dir("hold-poison");
    let (files, uids) = make_series(&tmp.path().join("series"), 5, "6");
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_config(archive_port, "hold_max_attempts = 3", None));
    storescu(rg.port(), "MOD", "HOLD", &files).assert_success("storescu -> hold route");
    wait_events(&rg, "hold-queued", 5, Duration::from_secs(30));

    // The archive answers 0xA900 for the second instance, every time.
    let port = archive_port.to_string();
    let scp = PyScp::start("ORTHANC", &["--port", &port, "--refuse-uid", &uids[1]]);
    assert_eq!(scp.port, archive_port);
    let fwd = wait_events(&rg, "hold-forwarded", 4, Duration::from_secs(120));
    let fwd_uids: Vec<&str> = fwd
        .iter()
        .filter_map(|e| e["sop_instance"].as_str())
        .collect();
    assert_eq!(
        fwd_uids,
        [&uids[0], &uids[2], &uids[3], &uids[4]],
        "the rest went on, in order"
    );
    let parked: Vec<Value> = rg
        .events()
        .into_iter()
        .filter(|e| e["event"] == "security-alert" && e["kind"] == "hold-parked")
        .collect();
    assert_eq!(
        parked.len(),
        1,
        "one hold-parked alert:\n{}",
        tail(&rg.log())
    );
    assert!(parked[0]["detail"].as_str().unwrap().contains(&uids[1]));
    // Exactly hold_max_attempts refusals: two retried after a backoff, the third parked it.
    let refused_retries = events_named(&rg, "hold-retry")
        .iter()
        .filter(|e| e["why"].as_str().is_some_and(|w| w.contains("0xA900")))
        .count();
    assert_eq!(refused_retries, 2, "{}", tail(&rg.log()));
    assert_eq!(scp.files().len(), 4);

    // The operator sees it parked ...
    let out = queue_cmd(&rg.data_dir, &["list", "--json"]);
    assert_eq!(out.code, Some(0), "{}", out.all());
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{}", out.all());
    assert_eq!(rows[0]["sop_instance"], uids[1].as_str());
    assert_eq!(rows[0]["state"], "parked");

    // ... and once the archive accepts it, `queue retry` puts it back and it is delivered.
    drop(scp);
    let scp = PyScp::start("ORTHANC", &["--port", &port]);
    assert_eq!(queue_cmd(&rg.data_dir, &["retry"]).code, Some(0));
    let fwd = wait_events(&rg, "hold-forwarded", 5, Duration::from_secs(60));
    assert_eq!(fwd[4]["sop_instance"], uids[1].as_str());
    assert_eq!(scp.files().len(), 1);
}

#[test]
fn a_new_association_waits_behind_the_backlog_of_its_destination() {
    let tmp = tmp_dir("hold-backlog");
    let n = 100;
    let (first, first_uids) = make_series(&tmp.path().join("a"), n, "8");
    let (second, second_uids) = make_series(&tmp.path().join("b"), 5, "9");
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", None));
    storescu(rg.port(), "MOD", "HOLD", &first).assert_success("storescu -> hold route (down)");
    wait_events(&rg, "hold-queued", n, Duration::from_secs(60));

    // A slow archive comes back. The forwarder sends batches of 64; the first delivered batch
    // clears the destination's down state while 36 instances (~5 s) still wait.
    let port = archive_port.to_string();
    let scp = PyScp::start(
        "ORTHANC",
        &["--port", &port, "--store-delay-ms", "150", "--arrivals"],
    );
    wait_events(&rg, "hold-forwarded", 65, Duration::from_secs(120));
    // A second series now: held behind the backlog, not sent past it.
    storescu(rg.port(), "MOD", "HOLD", &second).assert_success("storescu -> hold route (backlog)");
    let queued = events_named(&rg, "hold-queued").len();
    assert_eq!(
        queued,
        n + 5,
        "the second series was not held:\n{}",
        tail(&rg.log())
    );
    let arrivals = scp.dir.join("arrivals.txt");
    let mut order: Vec<String> = Vec::new();
    let ok = wait_until(Duration::from_secs(120), || {
        order = fs::read_to_string(&arrivals)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        order.len() >= n + 5
    });
    assert!(
        ok,
        "{} of {} arrived:\n{}",
        order.len(),
        n + 5,
        tail(&rg.log())
    );
    let expected: Vec<String> = first_uids.into_iter().chain(second_uids).collect();
    assert_eq!(order, expected, "arrival order at the archive");
}

/// The backoff the forwarder may have chosen after `failures` failures (forward.rs: base ×
/// 2^(failures−1), at most the cap, minus up to a quarter): (lowest, highest) in ms.
fn backoff_range(base_ms: u64, cap_ms: u64, failures: u32) -> (u64, u64) {
    let nominal = base_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(30))
        .min(cap_ms);
    (nominal - nominal / 4, nominal)
}

/// The most failed attempts that fit in `window_ms` when every wait is the shortest the
/// backoff allows (a busy machine only makes waits longer, so fewer attempts): attempt k+1
/// comes at least the sum of the first k lowest delays after the first one.
fn most_attempts(base_ms: u64, cap_ms: u64, window_ms: u64) -> usize {
    let mut t = 0u64;
    let mut n = 1usize;
    loop {
        let (low, _) = backoff_range(base_ms, cap_ms, n as u32);
        if t + low > window_ms {
            return n;
        }
        t += low;
        n += 1;
    }
}

#[test]
fn long_outage_backs_off_to_the_cap_with_bounded_retries_then_delivers_in_order() {
    let (base, cap) = (200u64, 5_000u64);
    let tmp = tmp_dir("hold-outage");
    let (files, uids) = make_series(&tmp.path().join("series"), 30, "7");
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", None).replace(
        "hold_backoff_cap_ms = 1000",
        &format!("hold_backoff_cap_ms = {cap}"),
    ));
    let retries = |rg: &Radguard| events_named(rg, "hold-retry");
    let start = std::time::Instant::now();

    // Traffic keeps arriving while the archive is down: three associations, the second once
    // the forwarder has failed three times, the third once its backoff is at the cap.
    storescu(rg.port(), "MOD", "HOLD", &files[..10]).assert_success("first batch");
    wait_events(&rg, "hold-retry", 3, Duration::from_secs(60));
    storescu(rg.port(), "MOD", "HOLD", &files[10..20]).assert_success("second batch");
    let at_cap = |e: &Value| e["retry_in_ms"].as_u64().unwrap_or(0) >= cap - cap / 4;
    let ok = wait_until(Duration::from_secs(90), || retries(&rg).iter().any(at_cap));
    assert!(
        ok,
        "the backoff never reached the cap:\n{}",
        tail(&rg.log())
    );
    storescu(rg.port(), "MOD", "HOLD", &files[20..]).assert_success("third batch");
    // Two more attempts at the cap, then the archive comes back.
    let n = retries(&rg).len();
    wait_events(&rg, "hold-retry", n + 2, Duration::from_secs(60));
    wait_events(&rg, "hold-queued", 30, Duration::from_secs(30));
    assert!(events_named(&rg, "hold-forwarded").is_empty());
    let orthanc = Archive::start(archive_port);
    let window_ms = start.elapsed().as_millis() as u64;

    // Everything arrives, once, in the order sent.
    wait_events(&rg, "hold-forwarded", 30, Duration::from_secs(120));
    assert_eq!(orthanc.count(), 30);
    assert_order(&orthanc.arrival_order(), &uids);

    // Every retry's delay is the backoff of its failure count (never past the cap) ...
    let all = retries(&rg);
    for (i, e) in all.iter().enumerate() {
        let failures = e["failures"].as_u64().unwrap() as u32;
        assert_eq!(
            failures as usize,
            i + 1,
            "failures count up without a reset: {e}"
        );
        let (low, high) = backoff_range(base, cap, failures);
        let d = e["retry_in_ms"].as_u64().unwrap();
        assert!(
            low <= d && d <= high,
            "retry {failures}: {d} ms not in {low}..={high}"
        );
    }
    // ... and their number is bounded by what the backoff allows in the outage (measured here;
    // a slower machine gives fewer), plus one attempt while Orthanc was starting.
    let most = most_attempts(base, cap, window_ms) + 1;
    assert!(
        all.len() <= most,
        "{} retries in {window_ms} ms; the backoff allows at most {most}",
        all.len()
    );
    assert!(
        all.len() >= 8,
        "at least 6 to reach the cap and 2 at it: {}",
        all.len()
    );
    assert!(
        window_ms < 180_000,
        "the outage took {window_ms} ms (bounded test: under 3 minutes)"
    );
}

/// A loopback port that answers no SYN: a listener with a backlog of 0 whose accept queue is
/// full (never accepted), so the kernel drops further SYNs (Linux: listen overflow) and a
/// connect hangs until its own timeout, as towards an address whose firewall drops packets.
struct Blackhole {
    port: u16,
    _proc: Proc,
    _tmp: tempfile::TempDir,
}

impl Blackhole {
    fn start() -> Blackhole {
        let tmp = tmp_dir("blackhole");
        let script = r#"
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen(0)
held = []
for _ in range(4):
    c = socket.socket()
    c.setblocking(False)
    try:
        c.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(c)
print("blackhole ready", flush=True)
time.sleep(3600)
"#;
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new(venv_python());
            cmd.arg("-c").arg(script).arg(port.to_string());
            let mut proc = Proc::spawn("blackhole", &mut cmd, tmp.path(), false);
            let out = tmp.path().join("blackhole.out");
            let ready = wait_until(Duration::from_secs(30), || {
                proc.exited().is_some()
                    || fs::read_to_string(&out).is_ok_and(|s| s.contains("blackhole ready"))
            });
            if !ready || proc.exited().is_some() {
                continue;
            }
            // The facility must work here: a connect must time out, not be refused or accepted.
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) {
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Blackhole {
                        port,
                        _proc: proc,
                        _tmp: tmp,
                    }
                }
                other => panic!(
                    "a full accept queue did not drop SYNs on this machine ({other:?}); \
                     this test needs Linux's listen-overflow behaviour on loopback"
                ),
            }
        }
        panic!("the blackhole listener did not start");
    }
}

#[test]
fn an_archive_address_that_drops_syns_holds_after_connect_timeout() {
    let tmp = tmp_dir("hold-syn");
    let (files, _) = make_series(&tmp.path().join("series"), 3, "8");
    let hole = Blackhole::start();
    let cfg = hold_config(hole.port, "", None)
        .replace("connect_timeout_secs = 5", "connect_timeout_secs = 2");
    assert!(cfg.contains("connect_timeout_secs = 2"));
    let rg = Radguard::start_fresh(&cfg);
    let t0 = std::time::Instant::now();
    storescu(rg.port(), "MOD", "HOLD", &files).assert_success("storescu -> hold route");
    let waited = t0.elapsed();
    // The modality waited for the connect timeout, then the association was held.
    assert!(
        waited >= Duration::from_millis(1900),
        "held after {waited:?}, before connect_timeout_secs = 2"
    );
    wait_events(&rg, "hold-queued", 3, Duration::from_secs(30));
    let accepted = events_named(&rg, "association-accepted");
    assert!(
        accepted.iter().any(|e| e["route"]
            .as_str()
            .is_some_and(|r| r.contains("held for") && r.contains("connect timed out"))),
        "{accepted:?}"
    );

    // The forwarder cannot connect either: the destination is known down, and the next
    // association is held at once, without a connect attempt.
    let ok = wait_until(Duration::from_secs(60), || {
        events_named(&rg, "hold-retry").iter().any(|e| {
            e["why"]
                .as_str()
                .is_some_and(|w| w.starts_with("cannot connect to"))
        })
    });
    assert!(
        ok,
        "no failed connect by the forwarder:\n{}",
        tail(&rg.log())
    );
    storescu(rg.port(), "MOD", "HOLD", &files[..1]).assert_success("second association");
    let accepted = events_named(&rg, "association-accepted");
    assert_eq!(accepted.len(), 2);
    assert!(
        accepted[1]["route"]
            .as_str()
            .is_some_and(|r| r.contains("known down")),
        "{accepted:?}"
    );
}

#[test]
fn after_the_archive_is_lost_stores_are_held_and_a_query_gets_a700_not_a_hang() {
    let tmp = tmp_dir("hold-drop-find");
    let (files, uids) = make_series(&tmp.path().join("series"), 2, "9");
    let archive_port = free_port();
    let orthanc = Archive::start(archive_port);
    let cfg = hold_config(archive_port, "", None).replace(
        "allow = [\"echo\", \"store\"]",
        "allow = [\"echo\", \"store\", \"find\"]",
    );
    assert!(cfg.contains("\"find\""), "{cfg}");
    let rg = Radguard::start_fresh(&cfg);

    // One association: a C-STORE relayed to Orthanc; Orthanc is killed; a second C-STORE and
    // a C-FIND on the same association.
    let go = tmp.path().join("go");
    let script = r#"
import json, os, sys, time
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind as FIND
port, f1, f2, go = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ae = AE(ae_title="MOD")
ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
ae.add_requested_context(CTImageStorage)
ae.add_requested_context(FIND)
a = ae.associate("127.0.0.1", port, ae_title="HOLD")
assert a.is_established, "not associated"
out = {"first": a.send_c_store(dcmread(f1)).Status}
print("stored", flush=True)
for _ in range(1200):
    if os.path.exists(go):
        break
    time.sleep(0.05)
st = a.send_c_store(dcmread(f2))
out["second"] = st.Status if "Status" in st else None
q = Dataset()
q.QueryRetrieveLevel = "STUDY"
q.StudyInstanceUID = ""
out["find"] = [s.Status for s, _ in a.send_c_find(q, FIND) if "Status" in s]
a.release()
out["released"] = not a.is_established
print(json.dumps(out), flush=True)
"#;
    let mut cmd = Command::new(venv_python());
    cmd.arg("-c")
        .arg(script)
        .arg(rg.port().to_string())
        .arg(&files[0])
        .arg(&files[1])
        .arg(&go);
    let mut client = Proc::spawn("client", &mut cmd, tmp.path(), false);
    let out = tmp.path().join("client.out");
    let stored = wait_until(Duration::from_secs(60), || {
        fs::read_to_string(&out).is_ok_and(|s| s.contains("stored"))
    });
    assert!(stored, "first C-STORE:\n{}", client.log());
    assert_eq!(orthanc.count(), 1);
    let _folder = orthanc.kill_9();
    // The gateway sees the upstream go (the kill resets its connection), then the client goes on.
    let lost = wait_until(Duration::from_secs(30), || {
        rg.log().contains("upstream lost mid-association")
    });
    assert!(lost, "the loss was not seen:\n{}", tail(&rg.log()));
    fs::write(&go, b"go").unwrap();
    let done = wait_until(Duration::from_secs(60), || client.exited().is_some());
    assert!(done, "the client hangs:\n{}", client.log());
    let line = fs::read_to_string(&out).unwrap();
    let v: Value = serde_json::from_str(line.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}:\n{}", client.log()));
    assert_eq!(v["first"], 0, "{v}");
    assert_eq!(v["second"], 0, "held: {v}");
    assert_eq!(v["find"], serde_json::json!([0xA700]), "{v}");
    assert_eq!(v["released"], true, "{v}");
    let queued = wait_events(&rg, "hold-queued", 1, Duration::from_secs(30));
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0]["sop_instance"], uids[1].as_str());
    assert!(events_named(&rg, "association-aborted").is_empty());
}

#[test]
fn an_instance_past_the_memory_bound_in_flight_when_the_archive_dies_is_held_whole() {
    let tmp = tmp_dir("hold-spill");
    // One 20 MiB multi-frame instance: past the relay's 4 MiB memory bound, so most of what it
    // keeps of it is in the spill file when the archive dies in its middle.
    let data = tmp.path().join("data");
    let mut cmd = Command::new(venv_python());
    cmd.arg(project_root().join("bench/gen_relay_data.py"))
        .arg(&data)
        .args(["--slices", "1", "--frames", "40"]);
    run(&mut cmd, Duration::from_secs(300)).assert_success("making the instance");
    let big = files_under(&data.join("large"), ".dcm");
    assert_eq!(big.len(), 1);
    let archive_port = free_port();
    let port = archive_port.to_string();
    // The archive exits abruptly (no A-ABORT: the connection is reset) after 10 MB.
    let mut dying = PyScp::start(
        "ORTHANC",
        &["--port", &port, "--die-after-bytes", "10000000"],
    );
    let rg = Radguard::start_fresh(&hold_config(archive_port, "", None));
    storescu(rg.port(), "MOD", "HOLD", &big).assert_success("storescu -> hold route");
    assert!(dying.exited().is_some(), "the archive did not die");
    let queued = wait_events(&rg, "hold-queued", 1, Duration::from_secs(30));
    assert_eq!(queued.len(), 1);
    assert!(
        rg.log().contains("upstream lost mid-association"),
        "{}",
        tail(&rg.log())
    );
    // Nothing is left of the kept bytes once held.
    let inflight = rg.data_dir.join("vault").join("inflight");
    assert!(
        files_under(&inflight, "").is_empty(),
        "spill files left in {}",
        inflight.display()
    );

    // A working archive on the same address gets the instance whole.
    drop(dying);
    let scp = PyScp::start("ORTHANC", &["--port", &port]);
    wait_events(&rg, "hold-forwarded", 1, Duration::from_secs(120));
    let got = scp.files();
    assert_eq!(got.len(), 1);
    let mut cmp = Command::new(venv_python());
    cmp.arg(py_script("compare.py")).arg(&big[0]).arg(&got[0]);
    run(&mut cmp, Duration::from_secs(120)).assert_success("the forwarded data set = the sent one");
}

// ------------------------------------------------------------------ hold with upstream TLS

/// DCMTK `storescp` on a given port (the archive, started late). With `tls = (server,
/// client_ca)` (`+tls`) it speaks TLS only, presents `server`'s gateway certificate and requires
/// a client certificate of `client_ca`; without, plain TCP only.
struct TlsArchive {
    dir: PathBuf,
    proc: Proc,
    _tmp: tempfile::TempDir,
}

impl TlsArchive {
    fn start(port: u16, server: &Pki, client_ca: &Path) -> TlsArchive {
        TlsArchive::start_with(port, Some((server, client_ca)))
    }

    fn start_with(port: u16, tls: Option<(&Pki, &Path)>) -> TlsArchive {
        let exe = require_tool(&format!("{DCMTK_BIN}/storescp"));
        let tmp = tmp_dir("tls-archive");
        let dir = tmp.path().join("recv");
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.env("TCP_NODELAY", "1")
            .args(["-v", "-aet", "ORTHANC", "-od"])
            .arg(&dir)
            .args(["+B", "-fe", ".dcm", "-ta", "30", "-td", "60"])
            .args(
                tls.map(|(server, client_ca)| {
                    dcmtk_tls(&server.gateway_key(), &server.gateway_cert(), client_ca)
                })
                .unwrap_or_default(),
            )
            .arg(port.to_string());
        let mut proc = Proc::spawn("storescp-tls", &mut cmd, tmp.path(), false);
        let up = wait_until(Duration::from_secs(30), || {
            proc.exited().is_some() || is_listening(port)
        });
        assert!(
            up && proc.exited().is_none(),
            "storescp did not start on {port}:\n{}",
            proc.log()
        );
        TlsArchive {
            dir,
            proc,
            _tmp: tmp,
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        files_under(&self.dir, "")
    }

    fn associations(&self) -> usize {
        self.proc.log().matches("Association Received").count()
    }

    fn stop(mut self, port: u16) {
        self.proc.kill();
        let gone = wait_until(Duration::from_secs(30), || !is_listening(port));
        assert!(
            gone,
            "port {port} still listening after the archive was killed"
        );
    }
}

/// Radguard's PKI (its gateway certificate is its client certificate to the archive) and the
/// archive's (the route's `tls.ca` is the archive's CA).
fn hold_tls_config(archive_port: u16, gw: &Pki, archive: &Pki) -> String {
    let tls = format!(
        "tls = {{ ca = {:?}, server_name = \"localhost\", client_cert = {:?}, client_key = {:?} }}",
        archive.ca(),
        gw.gateway_cert(),
        gw.gateway_key()
    );
    hold_config(archive_port, &tls, None)
}

/// A TLS hold route with its archive down and `n` instances sent to it: the series, the PKIs,
/// the gateway, and the `hold-queued` events of the series (each checked to name the TLS
/// destination `ORTHANC@tls://127.0.0.1:PORT`).
struct HeldOverTls {
    _tmp: tempfile::TempDir,
    series: PathBuf,
    uids: Vec<String>,
    gw: Pki,
    archive: Pki,
    archive_port: u16,
    dest: String,
    rg: Radguard,
}

fn held_over_tls(name: &str, n: usize, uid_root: &str) -> HeldOverTls {
    let tmp = tmp_dir(name);
    let series = tmp.path().join("series");
    let (files, uids) = make_series(&series, n, uid_root);
    let gw = Pki::init(&format!("{name}-gw"), &["modality"]);
    let archive = Pki::init(&format!("{name}-ar"), &["unused"]);
    let archive_port = free_port();
    let rg = Radguard::start_fresh(&hold_tls_config(archive_port, &gw, &archive));
    storescu(rg.port(), "MOD", "HOLD", &files)
        .assert_success("storescu -> TLS hold route, archive down");
    let queued = wait_events(&rg, "hold-queued", n, Duration::from_secs(30));
    let dest = format!("ORTHANC@tls://127.0.0.1:{archive_port}");
    assert!(
        queued.iter().all(|e| e["dest"] == dest.as_str()),
        "queued for {dest}: {queued:#?}"
    );
    HeldOverTls {
        _tmp: tmp,
        series,
        uids,
        gw,
        archive,
        archive_port,
        dest,
        rg,
    }
}

/// Every held instance of `h` forwarded once (by the gateway's events) and arrived unchanged
/// at `ar`.
fn assert_forwarded_once(h: &HeldOverTls, ar: &TlsArchive) {
    let n = h.uids.len();
    let fwd = wait_events(&h.rg, "hold-forwarded", n, Duration::from_secs(120));
    assert_eq!(fwd.len(), n, "each instance forwarded once: {fwd:#?}");
    let got: HashSet<&str> = fwd
        .iter()
        .filter_map(|e| e["sop_instance"].as_str())
        .collect();
    assert_eq!(
        got,
        h.uids.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    assert!(fwd.iter().all(|e| e["dest"] == h.dest.as_str()), "{fwd:#?}");
    let ok = wait_until(Duration::from_secs(30), || ar.files().len() == n);
    assert!(
        ok,
        "{} files at the archive:\n{}",
        ar.files().len(),
        ar.proc.log()
    );
    assert_same_dirs(&h.series, &ar.dir);
}

/// A hold route whose upstream speaks TLS: with the archive down, a series succeeds (stored,
/// queued for `ORTHANC@tls://...`); once the archive is up — TLS only, requiring radguard's
/// client certificate, so a plain connection cannot deliver — every instance arrives once,
/// unchanged.
#[test]
fn tls_archive_down_series_held_then_forwarded_over_tls_once() {
    let h = held_over_tls("hold-tls", 20, "21");
    // The forwarder is failing against the closed port.
    wait_events(&h.rg, "hold-retry", 1, Duration::from_secs(30));

    let ar = TlsArchive::start(h.archive_port, &h.archive, &h.gw.ca());
    // The archive speaks TLS only: a plain association cannot reach it.
    assert!(
        !echoscu(h.archive_port, "DIRECT", "ORTHANC").success(),
        "storescp +tls answered a plain echo"
    );
    assert_forwarded_once(&h, &ar);
    assert!(ar.associations() >= 1, "{}", ar.proc.log());
}

/// The archive presents a certificate the route's CA does not trust (a man in the middle on
/// the archive's address): the forwarder's handshake fails, a security alert and the retry
/// say why, nothing reaches it and the instances stay queued; then the trusted archive on the
/// same address gets every one, once.
#[test]
fn tls_hold_forwarder_refuses_an_untrusted_archive_then_delivers_to_the_trusted_one() {
    let h = held_over_tls("hold-tls-mitm", 5, "22");
    let rogue = Pki::init("hold-mitm-rogue", &["unused"]);
    let (rg, archive_port, gw) = (&h.rg, h.archive_port, &h.gw);

    // The rogue archive: its own CA, and it would take radguard's client certificate.
    let fake = TlsArchive::start(archive_port, &rogue, &gw.ca());
    let mut why = String::new();
    let ok = wait_until(Duration::from_secs(60), || {
        why = events_named(rg, "hold-retry")
            .iter()
            .filter_map(|e| e["why"].as_str())
            .find(|w| w.starts_with("no TLS with"))
            .unwrap_or_default()
            .to_string();
        !why.is_empty()
    });
    assert!(
        ok,
        "no hold-retry for a failed handshake:\n{}",
        tail(&rg.log())
    );
    assert!(
        why.contains("certificate") || why.contains("UnknownIssuer"),
        "the retry names the certificate problem: {why}"
    );
    let alert = rg.wait_alert("hold forwarder: no TLS with");
    assert_eq!(alert["kind"], "peer-not-recognized", "{alert:#?}");
    assert!(
        events_named(rg, "hold-forwarded").is_empty(),
        "nothing may be forwarded to an untrusted archive"
    );
    assert!(fake.files().is_empty(), "the rogue archive got files");
    assert_eq!(fake.associations(), 0, "{}", fake.proc.log());
    fake.stop(archive_port);

    // The trusted archive on the same address: every held instance arrives, once.
    let ar = TlsArchive::start(archive_port, &h.archive, &gw.ca());
    assert_forwarded_once(&h, &ar);
}

/// Held on a TLS route, an instance keeps needing TLS: after a reload drops the route's `tls`,
/// its waiting instances are not sent to the (now plain) archive on the same address — the
/// forwarder says no route gives TLS settings for their destination — while a new association
/// of the now plain route reaches that archive directly.
#[test]
fn instances_held_on_a_tls_route_never_leave_in_clear_text_after_a_reload() {
    let h = held_over_tls("hold-tls-reload", 3, "23");
    let (rg, archive_port, dest) = (&h.rg, h.archive_port, &h.dest);

    // The route loses its `tls`; a plain archive listens on the same address.
    let before = rg.reload_events().len();
    rg.rewrite_config(&hold_config(archive_port, "", None));
    rg.reload_cli().assert_success("radguard reload");
    rg.wait_reload(before);
    let plain = TlsArchive::start_with(archive_port, None);
    let one = test_data().ct_files()[..1].to_vec();
    storescu(rg.port(), "MOD", "HOLD", &one).assert_success("storescu -> the now plain route");
    let ok = wait_until(Duration::from_secs(30), || plain.files().len() == 1);
    assert!(
        ok,
        "the plain route's new association did not reach the archive:\n{}",
        plain.proc.log()
    );

    // A forwarder attempt made while the plain archive is up refuses to send without TLS.
    let refusals = |rg: &Radguard| {
        events_named(rg, "hold-retry")
            .iter()
            .filter(|e| {
                e["dest"] == dest.as_str()
                    && e["why"]
                        .as_str()
                        .is_some_and(|w| w.contains("no route in force gives TLS settings"))
            })
            .count()
    };
    let seen = refusals(rg);
    let ok = wait_until(Duration::from_secs(30), || refusals(rg) > seen);
    assert!(
        ok,
        "no hold-retry refusing clear text:\n{}",
        tail(&rg.log())
    );
    rg.wait_alert(&format!("hold forwarder: no TLS with {dest}"));
    assert!(
        events_named(rg, "hold-forwarded").is_empty(),
        "a held instance of the TLS route left in clear text"
    );
    assert_eq!(plain.files().len(), 1, "{}", plain.proc.log());
    assert_eq!(plain.associations(), 1, "{}", plain.proc.log());
}
