//! Detection end to end against a real PACS: Orthanc holding a generated archive (4 patients ×
//! 2 studies × 3 CT instances, `tests/py/make_archive.py`, stored into Orthanc directly) behind
//! the `radguard` binary, attacked with real DCMTK tools through the gateway's route:
//! findscu with universal matching at PATIENT and STUDY level fires bulk-query (once per
//! level, never for narrowed queries or an allowed peer); movescu of whole studies to a
//! destination the peer never used fires new-move-destination once (after its learning
//! C-MOVEs) and bulk-retrieve with the instance count Orthanc's C-MOVE responses report;
//! getscu of whole studies fires bulk-retrieve with the instances getscu acknowledged. Each
//! alert is read back with `radguard alerts --json` from the audit trail: exact rule, evidence,
//! peer and source, exactly once, no patient ID, name, accession number or study UID. The
//! recon loops (AE-title enumeration, connect-and-idle, user-identity guessing) and a
//! pynetdicom client posing as the DCMTK workstation run in front of the same archive.
//!
//! A benign day with the embedded default rules (no `[[detect.rule]]`): three modalities
//! (distinct AE titles) echo and store a series each through the gateway, a workstation
//! queries each new study by accession number and retrieves what it found with movescu (to
//! its own storescp) and getscu, for a few rounds. Then nmap's dicom-ping, which a default
//! rule fires on, marks the end (the detectors see events in order): its alert must be the
//! trail's only one.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::audit_e2e::*;
use common::*;
use serde_json::Value;

const NODE: &str = "gw-orthanc";
/// Orthanc's AE title, and the called AE title of the gateway's route to it.
const PACS: &str = "ORTHANC";
/// The workstation (the attacker posing as it, in the attack tests).
const WS: &str = "WS";
/// UID root of the generated studies.
const ROOT: &str = "1.2.826.0.1.3680043.10.1234.14";

// ------------------------------------------------------------------------------- the archive

/// One generated study (one series) as make_archive.py's manifest lists it.
struct Study {
    patient_id: String,
    patient_name: String,
    study_uid: String,
    accession: String,
    dir: PathBuf,
    instances: usize,
}

/// `make_archive.py target/NAME --root ROOT --prefix PREFIX --patients P --studies S
/// --instances N` (written once; a later run reuses it), its manifest.
fn make_archive(name: &str, root: &str, prefix: &str, (p, s, n): (u32, u32, u32)) -> Vec<Study> {
    let dir = target_dir().join(name);
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("make_archive.py")).arg(&dir).args([
        "--root".to_string(),
        root.into(),
        "--prefix".into(),
        prefix.into(),
        "--patients".into(),
        p.to_string(),
        "--studies".into(),
        s.to_string(),
        "--instances".into(),
        n.to_string(),
    ]);
    let out = run(&mut cmd, Duration::from_secs(120));
    out.assert_success("make_archive.py");
    let manifest: Vec<Value> = serde_json::from_str(&out.stdout).expect("the manifest");
    let studies: Vec<Study> = manifest
        .iter()
        .map(|m| Study {
            patient_id: m["patient_id"].as_str().unwrap().into(),
            patient_name: m["patient_name"].as_str().unwrap().into(),
            study_uid: m["study_uid"].as_str().unwrap().into(),
            accession: m["accession"].as_str().unwrap().into(),
            dir: dir.join(m["dir"].as_str().unwrap()),
            instances: m["instances"].as_u64().unwrap() as usize,
        })
        .collect();
    assert_eq!(studies.len(), (p * s) as usize, "{}", out.stdout);
    for st in &studies {
        assert_eq!(files_under(&st.dir, ".dcm").len(), st.instances);
    }
    studies
}

/// The attacked archive: 4 patients × 2 studies × 3 instances.
fn archive() -> &'static [Study] {
    static A: OnceLock<Vec<Study>> = OnceLock::new();
    A.get_or_init(|| make_archive("orthanc-archive", ROOT, "ARC", (4, 2, 3)))
}

fn total_instances(studies: &[Study]) -> usize {
    studies.iter().map(|s| s.instances).sum()
}

/// Orthanc (AE [`PACS`], C-MOVE destinations `modalities`) loaded with `studies` by storescu
/// straight to it (not through the gateway).
fn loaded_orthanc(modalities: &[(&str, u16)], studies: &[Study]) -> Orthanc {
    let pacs = Orthanc::start(PACS, modalities);
    if !studies.is_empty() {
        let dirs: Vec<PathBuf> = studies.iter().map(|s| s.dir.clone()).collect();
        storescu(pacs.dicom_port, "LOADER", PACS, &dirs).assert_success("storescu -> Orthanc");
    }
    assert_eq!(pacs.instance_count(), total_instances(studies) as u64);
    pacs
}

/// Every patient ID, name, accession number and study UID of `studies`: none may be in an
/// alert.
fn phi(studies: &[Study]) -> Vec<String> {
    studies
        .iter()
        .flat_map(|s| {
            [
                s.patient_id.clone(),
                s.patient_name.clone(),
                s.accession.clone(),
                s.study_uid.clone(),
            ]
        })
        .collect()
}

// ------------------------------------------------------------------------------ the gateway

fn audit_toml() -> String {
    format!("\n[audit]\nnode = {NODE:?}\n")
}

/// A `scanner-signature` rule named `name` whose one signature is the calling AE title `name`
/// in upper case: its alert proves the detectors saw every event before it (they see the bus
/// in order).
fn marker_rule(name: &str) -> String {
    format!(
        "\n[[detect.rule]]\nname = {name:?}\nkind = \"scanner-signature\"\n\
         signatures = [{{ name = {name:?}, calling_ae = {:?} }}]\n",
        name.to_ascii_uppercase()
    )
}

const MARKERS: [&str; 3] = ["mark1", "mark2", "mark3"];

/// The markers' peer (echo only) and their rules.
fn with_markers(cfg: Config) -> (Config, String) {
    let aes: Vec<String> = MARKERS.iter().map(|m| m.to_ascii_uppercase()).collect();
    let aes: Vec<&str> = aes.iter().map(String::as_str).collect();
    let cfg = cfg.peer("markers", &aes, &["127.0.0.1/32"], &["echo"], &[], &[]);
    (cfg, MARKERS.iter().map(|m| marker_rule(m)).collect())
}

/// Waits until every association the gateway saw has ended (released, aborted or refused), so
/// that a marker started next is the last thing the detectors see.
fn wait_settled(rg: &Radguard) {
    let settled = || {
        let events = rg.events();
        let ended: Vec<&Value> = events
            .iter()
            .filter(|e| {
                [
                    "association-released",
                    "association-aborted",
                    "association-refused",
                ]
                .iter()
                .any(|n| e["event"] == *n)
            })
            .map(|e| &e["assoc"])
            .collect();
        events
            .iter()
            .filter(|e| e["event"] == "association-requested")
            .all(|e| ended.contains(&&e["assoc"]))
    };
    assert!(
        wait_until(Duration::from_secs(30), settled),
        "associations still open; log:\n{}",
        rg.log()
    );
}

/// `radguard alerts --json --data DATA`: every line a JSON object.
fn alerts_json(data: &Path) -> Vec<Value> {
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["alerts", "--json", "--data"]).arg(data);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    out.assert_success("radguard alerts --json");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits until the audit trail holds an alert whose detail starts with `rule RULE (`, then
/// returns `radguard alerts --json`.
fn wait_alert(rg: &Radguard, rule: &str) -> Vec<Value> {
    let store = sqlite_store(&rg.data_dir);
    let needle = format!("rule {rule} (");
    wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        rows.iter()
            .any(|r| r.kind() == "security-alert" && r.entry.contains(&needle))
    })
    .unwrap_or_else(|| panic!("no {rule} alert in the trail; log:\n{}", rg.log()));
    alerts_json(&rg.data_dir)
}

/// Once every association so far has ended: a C-ECHO as the marker `name`; returns the trail's
/// detection alerts once its alert is there, markers left out (refusals and aborts have
/// alerts of their own kinds).
fn mark(rg: &Radguard, name: &str) -> Vec<Value> {
    wait_settled(rg);
    echoscu(rg.port(), &name.to_ascii_uppercase(), PACS).assert_success("echoscu as a marker");
    let all = wait_alert(rg, name);
    all.into_iter()
        .filter(|a| a["kind"] == "detection" && !MARKERS.iter().any(|m| a["rule"] == *m))
        .collect()
}

/// The alerts of rule `rule`.
fn of_rule<'a>(all: &'a [Value], rule: &str) -> Vec<&'a Value> {
    all.iter().filter(|a| a["rule"] == rule).collect()
}

/// Checks one detection alert: kind, rule, a loopback source, its exact detail, no patient
/// data.
fn assert_detection(a: &Value, rule: &str, detail: &str) {
    assert_eq!(a["kind"], "detection", "{a:#}");
    assert_eq!(a["rule"], rule, "{a:#}");
    assert_eq!(a["node"], NODE, "{a:#}");
    assert!(
        a["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{a:#}"
    );
    assert_eq!(a["detail"], detail, "{a:#}");
    let text = a.to_string();
    for p in phi(archive()) {
        assert!(!text.contains(&p), "patient data {p:?} in {a:#}");
    }
}

/// [`assert_detection`] of an admitted association to [`PACS`]: the peer and its calling AE
/// title too.
fn assert_alert(a: &Value, rule: &str, peer: &str, calling: &str, detail: &str) {
    assert_detection(a, rule, detail);
    assert_eq!(a["peer"], peer, "{a:#}");
    assert_eq!(a["calling_ae"], calling, "{a:#}");
    assert_eq!(a["called_ae"], PACS, "{a:#}");
}

// ---------------------------------------------------------------------------------- clients

/// `findscu -P -k 0008,0052=PATIENT -k KEY...` (Patient Root).
fn findscu_patient(port: u16, calling: &str, keys: &[&str]) -> Output {
    let mut args = dcmtk_client_args(calling, PACS);
    args.extend(["-P".into(), "-k".into(), "0008,0052=PATIENT".into()]);
    for k in keys {
        args.extend(["-k".into(), OsString::from(k)]);
    }
    args.extend(["127.0.0.1".into(), port.to_string().into()]);
    dcmtk("findscu", &args)
}

/// The values of `(gggg,eeee) XX [value]` lines of a DCMTK `-v` dump for `tag`.
fn dumped(out: &Output, tag: &str) -> Vec<String> {
    out.text()
        .lines()
        .filter_map(|l| l.split_once(tag).map(|(_, rest)| rest))
        .filter_map(|rest| {
            let open = rest.find('[')?;
            let close = rest[open..].find(']')?;
            Some(rest[open + 1..open + close].trim().to_string())
        })
        .collect()
}

/// `movescu -d` of one study to `dest` (Study Root); returns the Number of Completed
/// Sub-operations of Orthanc's final C-MOVE response (PS3.4 C.4.2.1.5), from movescu's dump.
fn move_study(port: u16, calling: &str, dest: &str, study: &Study) -> u64 {
    let mut args = dcmtk_client_args(calling, PACS);
    args.extend(["-d".into(), "-S".into(), "-aem".into(), dest.into()]);
    args.extend(["-k".into(), "0008,0052=STUDY".into(), "-k".into()]);
    args.push(format!("StudyInstanceUID={}", study.study_uid).into());
    args.extend(["127.0.0.1".into(), port.to_string().into()]);
    let out = dcmtk("movescu", &args);
    out.assert_success("movescu -> radguard -> Orthanc");
    let text = out.text();
    let after = text
        .split("Received Final Move Response")
        .nth(1)
        .unwrap_or_else(|| panic!("no final C-MOVE response:\n{text}"));
    let completed = suboperations(after, "Completed Suboperations");
    let failed = suboperations(after, "Failed Suboperations");
    assert_eq!(failed, 0, "{text}");
    completed
}

/// `getscu -S -od OUT` of one study (Study Root); returns the Number of Completed
/// Sub-operations of the final C-GET response getscu reports.
fn get_study(port: u16, calling: &str, study: &Study, out_dir: &Path) -> u64 {
    let mut args = dcmtk_client_args(calling, PACS);
    args.extend(["-S".into(), "-od".into(), out_dir.as_os_str().to_owned()]);
    args.extend(["-k".into(), "0008,0052=STUDY".into(), "-k".into()]);
    args.push(format!("StudyInstanceUID={}", study.study_uid).into());
    args.extend(["127.0.0.1".into(), port.to_string().into()]);
    let out = dcmtk("getscu", &args);
    out.assert_success("getscu -> radguard -> Orthanc");
    let text = out.text();
    let after = text
        .split("Final status report")
        .nth(1)
        .unwrap_or_else(|| panic!("no final C-GET status:\n{text}"));
    assert_eq!(suboperations(after, "Failed Suboperations"), 0, "{text}");
    suboperations(after, "Completed Suboperations")
}

/// The number after `label` and a colon in a DCMTK dump (`none` is 0).
fn suboperations(text: &str, label: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    let value = line.rsplit(':').next().unwrap_or("").trim();
    if value == "none" {
        return 0;
    }
    value
        .parse()
        .unwrap_or_else(|e| panic!("{label}: {value:?}: {e}"))
}

// ---------------------------------------------------------------------------------- attacks

#[test]
fn universal_queries_at_patient_and_study_level_are_bulk_queries() {
    let arc = archive();
    let pacs = loaded_orthanc(&[], arc);
    let base = Config::new()
        .peer("ws", &[WS], &["127.0.0.1/32"], &["echo", "find"], &[], &[])
        .peer("admin", &["ADMIN"], &["127.0.0.1/32"], &["find"], &[], &[])
        .route(PACS, pacs.dicom_port, PACS);
    let (cfg, markers) = with_markers(base);
    // One rule per level, so each level's universal query fires its own (a rule fires once
    // per window and peer); the admin peer may list everything.
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"bulk-patient\"\nkind = \"bulk-query\"\n\
         levels = [\"PATIENT\"]\nallow = [\"admin\"]\n\n\
         [[detect.rule]]\nname = \"bulk-study\"\nkind = \"bulk-query\"\n\
         levels = [\"STUDY\"]\nallow = [\"admin\"]\n{markers}",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();
    let patients = arc.len() / 2;

    // Narrowed queries: one patient (both levels), one accession number.
    let p1 = &arc[0];
    let f = findscu_patient(
        port,
        WS,
        &[&format!("PatientID={}", p1.patient_id), "PatientName"],
    );
    f.assert_success("findscu PATIENT level, one patient");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    let f = findscu(
        port,
        WS,
        PACS,
        &[&format!("PatientID={}", p1.patient_id), "StudyInstanceUID"],
    );
    f.assert_success("findscu STUDY level, one patient");
    assert_eq!(f.find_matches(), 2, "{}", f.text());
    let f = findscu(
        port,
        WS,
        PACS,
        &[
            &format!("AccessionNumber={}", arc[3].accession),
            "PatientID",
        ],
    );
    f.assert_success("findscu STUDY level by accession number");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    // The allowed peer lists every patient and every study.
    let f = findscu_patient(port, "ADMIN", &["PatientID=*", "PatientName"]);
    f.assert_success("findscu PATIENT level as admin");
    assert_eq!(f.find_matches(), patients, "{}", f.text());
    let f = findscu(
        port,
        "ADMIN",
        PACS,
        &["PatientID", "PatientName", "StudyInstanceUID"],
    );
    f.assert_success("findscu STUDY level as admin");
    assert_eq!(f.find_matches(), arc.len(), "{}", f.text());
    let none = mark(&rg, "mark1");
    assert!(none.is_empty(), "fired on ordinary queries: {none:#?}");

    // The attack: the whole patient list, then every study, twice each (universal matching on
    // Patient ID and Patient's Name, PS3.4 C.2.2.2.3).
    for _ in 0..2 {
        let f = findscu_patient(
            port,
            WS,
            &["PatientID=*", "PatientName", "PatientBirthDate"],
        );
        f.assert_success("findscu PATIENT level, every patient");
        assert_eq!(f.find_matches(), patients, "{}", f.text());
        let f = findscu(
            port,
            WS,
            PACS,
            &["PatientID=*", "PatientName=", "StudyInstanceUID"],
        );
        f.assert_success("findscu STUDY level, every study");
        assert_eq!(f.find_matches(), arc.len(), "{}", f.text());
    }
    let all = mark(&rg, "mark2");
    assert_eq!(all.len(), 2, "{all:#?}");
    for (rule, level) in [("bulk-patient", "PATIENT"), ("bulk-study", "STUDY")] {
        let fired = of_rule(&all, rule);
        assert_eq!(fired.len(), 1, "{all:#?}");
        assert_alert(
            fired[0],
            rule,
            "ws",
            WS,
            &format!(
                "rule {rule} (bulk-query) peer ws from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
                 1 universal queries in 300 s (threshold 1), level {level}; response alert"
            ),
        );
    }
}

#[test]
fn whole_study_moves_to_a_new_destination_are_new_move_destination_and_bulk_retrieve() {
    let arc = archive();
    let own = StoreScp::start("WS_STORE");
    let exfil = StoreScp::start("EXFIL");
    let pacs = loaded_orthanc(&[("WS_STORE", own.port), ("EXFIL", exfil.port)], arc);
    let base = Config::new()
        .peer(
            "ws",
            &[WS],
            &["127.0.0.1/32"],
            &["echo", "find", "move"],
            &[],
            &["WS_STORE", "EXFIL"],
        )
        .route(PACS, pacs.dicom_port, PACS);
    let (cfg, markers) = with_markers(base);
    // Learning: two C-MOVEs. bulk-retrieve: the whole archive plus the two studies moved while
    // learning, so it fires on the last study's C-MOVE responses and no earlier.
    let learning_studies = &arc[..2];
    let threshold = total_instances(learning_studies) + total_instances(arc);
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"newdest\"\nkind = \"new-move-destination\"\n\
         learning = 2\n\n\
         [[detect.rule]]\nname = \"pull\"\nkind = \"bulk-retrieve\"\nthreshold = {threshold}\n\
         window_secs = 600\n{markers}",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();

    // The peer's habit: its own destination, two studies.
    let mut reported = 0;
    for st in learning_studies {
        let n = move_study(port, WS, "WS_STORE", st);
        assert_eq!(
            n,
            st.instances as u64,
            "Orthanc's count for {}",
            st.dir.display()
        );
        reported += n;
    }
    assert_eq!(own.files().len(), total_instances(learning_studies));
    let none = mark(&rg, "mark1");
    assert!(none.is_empty(), "fired while learning: {none:#?}");

    // The attack: every study to a destination the peer never used; all but the last first.
    let (last, first) = arc.split_last().unwrap();
    for st in first {
        reported += move_study(port, WS, "EXFIL", st);
    }
    let all = mark(&rg, "mark2");
    assert_eq!(all.len(), 1, "only new-move-destination so far: {all:#?}");
    let newdest = of_rule(&all, "newdest");
    assert_eq!(newdest.len(), 1, "{all:#?}");
    assert_alert(
        newdest[0],
        "newdest",
        "ws",
        WS,
        "rule newdest (new-move-destination) peer ws from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
         C-MOVE to new destination \"EXFIL\" (1 known, 2 C-MOVEs seen); response alert",
    );
    reported += move_study(port, WS, "EXFIL", last);
    assert_eq!(
        exfil.files().len(),
        total_instances(arc),
        "EXFIL got the archive"
    );
    // What Orthanc reported moving is what the gateway counted.
    assert_eq!(reported, threshold as u64);
    let all = mark(&rg, "mark3");
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(of_rule(&all, "newdest").len(), 1, "{all:#?}");
    let pull = of_rule(&all, "pull");
    assert_eq!(pull.len(), 1, "{all:#?}");
    assert_alert(
        pull[0],
        "pull",
        "ws",
        WS,
        &format!(
            "rule pull (bulk-retrieve) peer ws from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
             {reported} instances retrieved in 600 s (threshold {threshold}); response alert"
        ),
    );
}

#[test]
fn whole_study_gets_are_a_bulk_retrieve() {
    let arc = archive();
    let pacs = loaded_orthanc(&[], arc);
    let base = Config::new()
        .peer(
            "ws",
            &[WS],
            &["127.0.0.1/32"],
            &["echo", "find", "get"],
            &[uid::CT_IMAGE_STORAGE],
            &[],
        )
        .route(PACS, pacs.dicom_port, PACS);
    let (cfg, markers) = with_markers(base);
    // The whole archive: fires on the last study's C-STOREs and no earlier.
    let threshold = total_instances(arc);
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"pull\"\nkind = \"bulk-retrieve\"\n\
         threshold = {threshold}\nwindow_secs = 600\n{markers}",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();
    let out = tmp_dir("getscu");

    let (last, first) = arc.split_last().unwrap();
    let mut reported = 0;
    for st in first {
        let n = get_study(port, WS, st, out.path());
        assert_eq!(
            n,
            st.instances as u64,
            "Orthanc's count for {}",
            st.dir.display()
        );
        reported += n;
    }
    let none = mark(&rg, "mark1");
    assert!(none.is_empty(), "fired before the threshold: {none:#?}");
    reported += get_study(port, WS, last, out.path());
    assert_eq!(reported, threshold as u64);
    assert_eq!(
        files_under(out.path(), "").len(),
        threshold,
        "getscu got the archive"
    );
    let all = mark(&rg, "mark2");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_alert(
        all.first().unwrap(),
        "pull",
        "ws",
        WS,
        &format!(
            "rule pull (bulk-retrieve) peer ws from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
             {threshold} instances retrieved in 600 s (threshold {threshold}); response alert"
        ),
    );
}

// ------------------------------------------------------------------------ recon and drift

/// pynetdicom's own Implementation Class UID and Version Name, from the venv's package.
fn pynetdicom_implementation() -> (String, String) {
    let out = run(
        Command::new(venv_python()).args([
            "-c",
            "import pynetdicom as p; print(p.PYNETDICOM_IMPLEMENTATION_UID); \
             print(p.PYNETDICOM_IMPLEMENTATION_VERSION)",
        ]),
        Duration::from_secs(60),
    );
    out.assert_success("python -c 'import pynetdicom'");
    let mut lines = out.stdout.lines().map(|l| l.trim().to_string());
    (
        lines.next().expect("the UID"),
        lines.next().expect("the version"),
    )
}

/// The recon loops do not depend on the upstream, but here they run in front of the archive:
/// an AE-title enumeration loop (recon-refused), a connect-and-idle loop (recon-idle) and a
/// pynetdicom client posing as the DCMTK workstation (identity-drift) on one gateway; a
/// user-identity guessing loop (recon-refused, counted per source like the enumeration, so on
/// a second gateway) — each fires once with its exact evidence.
#[test]
fn recon_loops_and_identity_drift_in_front_of_orthanc() {
    let arc = archive();
    let pacs = loaded_orthanc(&[], arc);
    let base = Config::new()
        .peer("ws", &[WS], &["127.0.0.1/32"], &["echo", "find"], &[], &[])
        .peer("idler", &["IDLER"], &["127.0.0.1/32"], &["echo"], &[], &[])
        .route(PACS, pacs.dicom_port, PACS);
    let (cfg, markers) = with_markers(base);
    let toml = format!(
        "{}{}\n[[detect.rule]]\nname = \"enum\"\nkind = \"recon-refused\"\nthreshold = 5\n\
         window_secs = 600\n\n\
         [[detect.rule]]\nname = \"idle\"\nkind = \"recon-idle\"\nthreshold = 5\n\
         window_secs = 600\n\n\
         [[detect.rule]]\nname = \"drift\"\nkind = \"identity-drift\"\n{markers}",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();
    // The workstation as first seen: DCMTK.
    let f = findscu(
        port,
        WS,
        PACS,
        &[
            &format!("PatientID={}", arc[0].patient_id),
            "StudyInstanceUID",
        ],
    );
    f.assert_success("findscu as the workstation");
    assert_eq!(f.find_matches(), 2, "{}", f.text());
    // Under every threshold: 4 wrong called AE titles, 4 idle associations.
    for i in 0..4 {
        assert!(
            !echoscu(port, WS, &format!("GUESS{i}")).success(),
            "GUESS{i} accepted"
        );
        idle_association(port, "IDLER", PACS, i % 2 == 1);
    }
    let none = mark(&rg, "mark1");
    assert!(none.is_empty(), "fired early: {none:#?}");
    // The fifth of each, then more in the same window; pynetdicom as the workstation, twice.
    for i in 4..7 {
        assert!(
            !echoscu(port, WS, &format!("GUESS{i}")).success(),
            "GUESS{i} accepted"
        );
        idle_association(port, "IDLER", PACS, i % 2 == 1);
    }
    for _ in 0..2 {
        let v = probe(
            port,
            WS,
            PACS,
            &[
                "find",
                "--key",
                &format!("PatientID={}", arc[2].patient_id),
                "--return-key",
                "StudyInstanceUID",
            ],
        );
        assert_accepted(&v);
        assert_eq!(v["matches"], 2, "{v:#}");
    }
    let all = mark(&rg, "mark2");
    assert_eq!(all.len(), 3, "{all:#?}");
    let fired = of_rule(&all, "enum");
    assert_eq!(fired.len(), 1, "{all:#?}");
    assert_detection(
        fired[0],
        "enum",
        "rule enum (recon-refused) from 127.0.0.1 \"WS\" -> \"GUESS4\": \
         5 refused associations in 600 s (threshold 5); response alert",
    );
    let fired = of_rule(&all, "idle");
    assert_eq!(fired.len(), 1, "{all:#?}");
    // It fires on the release, after the association is gone: the trail's record still names
    // the peer and its AE titles (from what the detectors knew).
    assert_detection(
        fired[0],
        "idle",
        "rule idle (recon-idle) peer idler from 127.0.0.1 \"IDLER\" -> \"ORTHANC\": \
         5 associations without a request in 600 s (threshold 5); response alert",
    );
    assert_eq!(fired[0]["peer"], "idler", "{:#}", fired[0]);
    assert_eq!(fired[0]["calling_ae"], "IDLER", "{:#}", fired[0]);
    assert_eq!(fired[0]["called_ae"], PACS, "{:#}", fired[0]);
    // What each client announced, as the gateway saw it: DCMTK first, pynetdicom then.
    let requested: Vec<Value> = rg
        .events()
        .into_iter()
        .filter(|e| e["event"] == "association-requested" && e["calling_ae"] == WS)
        .filter(|e| e["called_ae"] == PACS)
        .collect();
    let imp = |e: &Value, k: &str| e[k].as_str().unwrap_or("none").trim().to_string();
    let dcmtk_uid = imp(&requested[0], "implementation_class_uid");
    let dcmtk_ver = imp(&requested[0], "implementation_version");
    assert!(dcmtk_ver.starts_with("OFFIS_DCMTK_"), "{dcmtk_ver}");
    let (py_uid, py_ver) = pynetdicom_implementation();
    let fired = of_rule(&all, "drift");
    assert_eq!(fired.len(), 1, "{all:#?}");
    assert_alert(
        fired[0],
        "drift",
        "ws",
        WS,
        &format!(
            "rule drift (identity-drift) peer ws from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
             identity drift: implementation-class-uid {dcmtk_uid:?} -> {py_uid:?}, \
             implementation-version {dcmtk_ver:?} -> {py_ver:?}; response alert"
        ),
    );

    // User-identity guessing: wrong passcodes, each refused (PS3.7 D.3.3.7).
    const USER: &str = "alice";
    const PASS: &str = "correct horse battery staple";
    let hash = radguard_tls::hash_passcode(PASS).expect("argon2id hash");
    let (cfg, markers) = with_markers(Config::new().route(PACS, pacs.dicom_port, PACS));
    let toml = format!(
        "{}\n[[peer]]\nname = \"ws\"\nae_titles = [{WS:?}]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\", \"find\"]\nuser_identity = \"required\"\nusers = [{USER:?}]\n\n\
         [[user]]\nname = {USER:?}\npasscode_argon2 = {hash:?}\n{}\n\
         [[detect.rule]]\nname = \"guess\"\nkind = \"recon-refused\"\nthreshold = 4\n\
         window_secs = 600\n{markers}",
        cfg.toml(),
        audit_toml()
    );
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();
    let with = |pass: &str| {
        let id = [
            "--user-identity-type",
            "2",
            "--user",
            USER,
            "--passcode",
            pass,
        ];
        let mut args: Vec<&str> = id.to_vec();
        args.extend([
            "find",
            "--key",
            "PatientID=*",
            "--return-key",
            "PatientName",
        ]);
        probe(port, WS, PACS, &args)
    };
    let v = with(PASS);
    assert_accepted(&v);
    assert_eq!(v["matches"], arc.len(), "{v:#}");
    for i in 0..3 {
        assert_rejected(&with(&format!("guess-{i}")), 1, 1, 3);
    }
    let none = mark(&rg, "mark1");
    // The one query with the right passcode was universal, but bulk-query is not armed here.
    assert!(none.is_empty(), "fired early: {none:#?}");
    for i in 3..6 {
        assert_rejected(&with(&format!("guess-{i}")), 1, 1, 3);
    }
    let all = mark(&rg, "mark2");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_detection(
        &all[0],
        "guess",
        "rule guess (recon-refused) from 127.0.0.1 \"WS\" -> \"ORTHANC\": \
         4 refused associations in 600 s (threshold 4); response alert",
    );
    let log = rg.log();
    assert!(!log.contains(PASS), "the passcode was logged");
}

// ------------------------------------------------------------------------------- benign day

/// Rounds of the benign day: each modality stores one study a round.
const ROUNDS: u32 = 3;

#[test]
fn benign_day_raises_no_alert() {
    // Three modalities, each with its own studies (one a round, 4 instances, one series).
    let modalities = [
        ("ct", "CT_SCANNER"),
        ("mr", "MR_SCANNER"),
        ("us", "US_SCANNER"),
    ];
    let day: Vec<Vec<Study>> = modalities
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let prefix = format!("DAY{}", name.to_ascii_uppercase());
            make_archive(
                &format!("orthanc-day-{name}"),
                &format!("{ROOT}.{}", 101 + i),
                &prefix,
                (ROUNDS, 1, 4),
            )
        })
        .collect();
    let recv = StoreScp::start("WS_STORE");
    let pacs = loaded_orthanc(&[("WS_STORE", recv.port)], &[]);
    let mut cfg = Config::new();
    for (name, ae) in modalities {
        cfg = cfg.peer(
            name,
            &[ae],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &[uid::CT_IMAGE_STORAGE],
            &[],
        );
    }
    let cfg = cfg
        .peer(
            "reading",
            &[WS],
            &["127.0.0.1/32"],
            &["echo", "find", "move", "get"],
            &[uid::CT_IMAGE_STORAGE],
            &["WS_STORE"],
        )
        .route(PACS, pacs.dicom_port, PACS);
    // The embedded default rules: no [detect] section at all.
    let toml = format!("{}{}", cfg.toml(), audit_toml());
    assert!(!toml.contains("detect"), "{toml}");
    let rg = Radguard::start_fresh(&toml);
    let port = rg.port();
    let got = tmp_dir("getscu-day");

    for (_, ae) in modalities {
        echoscu(port, ae, PACS).assert_success("echoscu from a modality");
    }
    let mut stored = 0;
    for round in 0..ROUNDS as usize {
        for ((_, ae), studies) in modalities.iter().zip(&day) {
            let st = &studies[round];
            storescu(port, ae, PACS, std::slice::from_ref(&st.dir))
                .assert_success("storescu from a modality");
            stored += st.instances;
        }
        for studies in &day {
            let st = &studies[round];
            // The worklist lookup: by accession number, the usual return keys.
            let f = findscu(
                port,
                WS,
                PACS,
                &[
                    &format!("AccessionNumber={}", st.accession),
                    "PatientID",
                    "PatientName",
                    "StudyDate",
                    "StudyInstanceUID",
                    "ModalitiesInStudy",
                ],
            );
            f.assert_success("findscu by accession number");
            assert_eq!(f.find_matches(), 1, "{}", f.text());
            // Retrieve what the query found, both ways.
            let uids = dumped(&f, "(0020,000d)");
            let found: Vec<&String> = uids.iter().filter(|u| **u == st.study_uid).collect();
            assert_eq!(found.len(), 1, "{}", f.text());
            let n = move_study(port, WS, "WS_STORE", st);
            assert_eq!(n, st.instances as u64);
            let n = get_study(port, WS, st, got.path());
            assert_eq!(n, st.instances as u64);
        }
    }
    assert_eq!(
        pacs.instance_count(),
        stored as u64,
        "Orthanc got every series"
    );
    assert_eq!(recv.files().len(), stored, "storescp got every C-MOVE");
    assert_eq!(
        files_under(got.path(), "").len(),
        stored,
        "getscu got every study"
    );

    // End of day: nmap's dicom-ping, which the default scanner-signature rule fires on. The
    // detectors see events in order, so once its alert is in the trail they have seen the day.
    wait_settled(&rg);
    assert!(
        !echoscu(port, "ECHOSCU", "ANY-SCP").success(),
        "nmap's dicom-ping was accepted"
    );
    let all = wait_alert(&rg, "scanner-signature");
    let marker: Vec<&Value> = of_rule(&all, "scanner-signature");
    assert_eq!(marker.len(), 1, "{all:#?}");
    let m = marker[0];
    assert_eq!(m["kind"], "detection", "{m:#}");
    assert_eq!(m["calling_ae"], "ECHOSCU", "{m:#}");
    assert!(
        m["detail"]
            .as_str()
            .is_some_and(|d| d.contains("scanner signature \"nmap dicom-ping\"")),
        "{m:#}"
    );
    // Besides it, only its own refusal's alert (an unknown calling AE title): the day raised
    // none.
    let day: Vec<&Value> = all.iter().filter(|a| a["assoc"] != m["assoc"]).collect();
    assert!(day.is_empty(), "the benign day raised alerts: {day:#?}");
}
