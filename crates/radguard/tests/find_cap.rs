//! The per-peer C-FIND result cap (`[[peer]] max_find_results`), end to end through the
//! `radguard` binary: findscu with universal matching at STUDY level through radguard to a
//! dcmqrscp holding six studies. A capped peer gets exactly its cap of matches, then a final
//! Refused: Out of Resources (0xA700, PS3.4 C.4.1.1.4); dcmqrscp gets a C-CANCEL-RQ; the
//! gateway logs dimse-refused and a detection security alert (no patient data); the
//! association is released normally and the next query on the route works. A peer without a
//! cap gets every match; a reload sets and lifts a peer's cap.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

const CAPPED: &str = "RG_CAPPED";
const OPEN: &str = "RG_OPEN";
const STUDIES: usize = 6;

/// `STUDIES` copies of one CT instance, each with new Study, Series and SOP Instance UIDs.
fn studies(dir: &std::path::Path) -> Vec<PathBuf> {
    let d = test_data();
    let src = d.ct_files().into_iter().next().expect("a CT file");
    (0..STUDIES)
        .map(|i| {
            let p = dir.join(format!("study{i}.dcm"));
            std::fs::copy(&src, &p).expect("copy CT file");
            dcmtk(
                "dcmodify",
                &["-nb", "-gst", "-gse", "-gin", p.to_str().unwrap()],
            )
            .assert_success("dcmodify -gst");
            p
        })
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn find_results_past_the_cap_end_the_query_with_a700() {
    let tmp = tmp_dir("find-cap");
    let files = studies(tmp.path());
    let qr = DcmQrScp::start("QRSCP", &[]);
    qr.load(&files);
    let toml = Config::new()
        .peer("capped", &[CAPPED], &["127.0.0.1/32"], &["find"], &[], &[])
        .peer("open", &[OPEN], &["127.0.0.1/32"], &["find"], &[], &[])
        .route("QRSCP", qr.port, "QRSCP")
        .toml()
        .replace(
            "name = \"capped\"\n",
            "name = \"capped\"\nmax_find_results = 2\n",
        );
    assert!(toml.contains("max_find_results = 2"), "{toml}");
    let rg = Radguard::start_fresh(&toml);
    let universal = ["PatientID=*", "PatientName=", "StudyInstanceUID"];

    // Without a cap: every study.
    let f = findscu(rg.port(), OPEN, "QRSCP", &universal);
    f.assert_success("findscu without a cap");
    assert_eq!(f.find_matches(), STUDIES, "{}", f.text());

    // With a cap of 2: two matches, then the final 0xA700.
    let f = findscu(rg.port(), CAPPED, "QRSCP", &universal);
    let out = f.all();
    assert_eq!(f.find_matches(), 2, "{}", f.text());
    assert!(
        out.contains("Received Final Find Response (Refused: OutOfResources)"),
        "no final 0xA700:\n{}",
        f.text()
    );
    assert!(
        out.contains("Releasing Association"),
        "findscu did not release:\n{}",
        f.text()
    );

    // The gateway's events: dimse-refused with 0xA700, the detection alert, a normal release.
    let mut refused = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        let events = rg.events();
        refused = of_kind(&events, "dimse-refused")
            .into_iter()
            .filter(|e| e["status"] == 0xA700)
            .cloned()
            .collect();
        let released = refused.first().is_some_and(|r| {
            of_kind(&events, "association-released")
                .iter()
                .any(|e| e["assoc"] == r["assoc"])
        });
        released
            && of_kind(&events, "detection")
                .iter()
                .any(|e| e["rule"] == "max-find-results")
    });
    assert!(
        ok,
        "no dimse-refused 0xA700 + released association + detection; log:\n{}",
        rg.log()
    );
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let events = rg.events();
    let alerts: Vec<&Value> = of_kind(&events, "detection")
        .into_iter()
        .filter(|e| {
            e["rule"] == "max-find-results"
                && e["rule_kind"] == "bulk-query"
                && e["response"] == "refuse"
                && e["evidence"]["threshold"] == 2
        })
        .collect();
    // (The bulk-query detector fires on both universal queries too: not this rule.)
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        alerts[0]["detail"],
        "rule max-find-results (bulk-query) peer capped: more than 2 matches, query ended"
    );
    assert!(
        of_kind(&events, "association-aborted").is_empty(),
        "an association was aborted; log:\n{}",
        rg.log()
    );
    // No patient data in the alert or the refusal.
    let pid = test_data().ct_patient_id();
    for e in [alerts[0], &refused[0]] {
        let text = serde_json::to_string(e).unwrap();
        assert!(!text.contains(&pid), "{text}");
    }

    // dcmqrscp got the C-CANCEL-RQ: it logs "late C-CANCEL-RQ" when it had sent every match
    // already, a Cancel status (0xFE00) otherwise; the uncapped query before logged neither.
    let ok = wait_until(Duration::from_secs(30), || {
        qr.log().to_lowercase().contains("cancel")
    });
    assert!(ok, "dcmqrscp saw no C-CANCEL:\n{}", qr.log());

    // The route still works for the capped peer: a query under its cap.
    let study = dcmtk("dcmdump", &["+P", "0020,000D", files[0].to_str().unwrap()]);
    let uid = study
        .stdout
        .split('[')
        .nth(1)
        .and_then(|r| r.split(']').next())
        .expect("Study Instance UID")
        .to_string();
    let f = findscu(
        rg.port(),
        CAPPED,
        "QRSCP",
        &[&format!("StudyInstanceUID={uid}")],
    );
    f.assert_success("findscu under the cap");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    assert!(
        f.all().contains("Received Final Find Response (Success)"),
        "{}",
        f.text()
    );
}

#[test]
fn a_reload_sets_and_lifts_the_cap() {
    let tmp = tmp_dir("find-cap-reload");
    let files = studies(tmp.path());
    let qr = DcmQrScp::start("QRSCP", &[]);
    qr.load(&files);
    let config = |cap: Option<u32>| {
        let toml = Config::new()
            .peer("open", &[OPEN], &["127.0.0.1/32"], &["find"], &[], &[])
            .route("QRSCP", qr.port, "QRSCP")
            .toml();
        match cap {
            Some(n) => toml.replace(
                "name = \"open\"\n",
                &format!("name = \"open\"\nmax_find_results = {n}\n"),
            ),
            None => toml,
        }
    };
    let rg = Radguard::start_fresh(&config(None));
    let universal = ["PatientID=*", "PatientName=", "StudyInstanceUID"];
    let query = || findscu(rg.port(), OPEN, "QRSCP", &universal);
    let reload = |cap: Option<u32>| {
        rg.rewrite_config(&config(cap));
        let before = rg.reload_events().len();
        rg.reload_cli().assert_success("radguard reload");
        let ev = rg.wait_reload(before);
        assert_eq!(ev["ok"], true, "{ev:#}");
    };

    let f = query();
    assert_eq!(f.find_matches(), STUDIES, "{}", f.text());
    reload(Some(3));
    let f = query();
    assert_eq!(f.find_matches(), 3, "{}", f.text());
    assert!(
        f.all()
            .contains("Received Final Find Response (Refused: OutOfResources)"),
        "{}",
        f.text()
    );
    reload(None);
    let f = query();
    assert_eq!(f.find_matches(), STUDIES, "{}", f.text());
    assert!(
        f.all().contains("Received Final Find Response (Success)"),
        "{}",
        f.text()
    );
}
