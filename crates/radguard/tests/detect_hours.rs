//! off-hours and bulk-retrieve bytes end to end, through the `radguard` binary with real DCMTK
//! tools (the gateway runs with `TZ=UTC`; the test computes "now" from its own clock):
//!
//! 1. Configured hours that exclude today and tomorrow: echoscu from a known peer, twice,
//!    fires `off-hours` once, with the weekday, hour and hours in the alert and the audit trail.
//! 2. A learned profile from the audit trail: the trail of the data folder already holds two
//!    peers' admitted associations (written before the gateway starts, back-dated, through the
//!    audit crate's chain and store: the records a gateway would have written a week ago, which
//!    no test can wait for); the gateway started on it learns them: echoscu as the peer seen in
//!    this hour of the week a week ago is quiet, as the peer never seen in it fires, with "0
//!    associations in this hour over 9 days".
//! 3. getscu of a whole study through radguard from dcmqrscp fires `bulk-retrieve` on bytes
//!    (`max_bytes` = the study's data-set bytes, measured by a direct getscu in bit-preserving
//!    mode), with that exact byte count in the evidence; a `baseline = "learned"` rule saves
//!    the peer's peak window (instances and bytes) to `detect-baselines.json`, which the next
//!    run on the data folder reads back.

mod common;

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::audit_e2e::*;
use common::*;
use radguard_audit::chain::{seal_all, ChainHead};
use radguard_audit::record::{AuditEvent, AuditRecord, Peer};
use radguard_audit::store::{AuditStore, SqliteStore};
use serde_json::Value;

const NODE: &str = "gw-hours";
const SCU: &str = "RG_SCU";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const UTC: &[(&str, &str)] = &[("TZ", "UTC")];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// (weekday, 0 = Monday; hour) in UTC.
fn day_hour(ms: i64) -> (usize, i64) {
    let hours = ms.div_euclid(HOUR);
    // 1970-01-01 was a Thursday.
    (((hours.div_euclid(24) + 3) % 7) as usize, hours % 24)
}

/// The detections of rule `rule`.
fn of_rule<'a>(all: &'a [Value], rule: &str) -> Vec<&'a Value> {
    let needle = format!("rule {rule} (");
    all.iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.starts_with(&needle)))
        .collect()
}

/// Waits until the audit trail holds a detection Security Alert whose entry contains `text`.
fn wait_audited(rg: &Radguard, text: &str) {
    let store = sqlite_store(&rg.data_dir);
    wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        rows.iter().any(|r| {
            r.kind() == "security-alert"
                && r.entry.contains("\"detection\"")
                && r.entry.contains(text)
        })
    })
    .unwrap_or_else(|| panic!("audit trail lacks {text:?}; log:\n{}", rg.log()));
}

/// A `scanner-signature` rule whose one signature is the calling AE title `MARKER`: its
/// detection proves the detectors saw every event before it (they read the bus in order).
const MARKER_RULE: &str = "\n[[detect.rule]]\nname = \"marker\"\nkind = \"scanner-signature\"\n\
    signatures = [{ name = \"marker\", calling_ae = \"MARKER\" }]\n";

fn mark(rg: &Radguard) -> Vec<Value> {
    echoscu(rg.port(), "MARKER", "RADGUARD").assert_success("echoscu as the marker peer");
    rg.wait_detection("rule marker")
}

#[test]
fn configured_hours_that_exclude_now_fire_once_per_hour() {
    let before = now_ms();
    let (today, _) = day_hour(before);
    // Every day but today and tomorrow: "now" is outside even if the test crosses midnight.
    let hours = format!(
        "{}-{} 00:00-24:00",
        DAYS[(today + 2) % 7],
        DAYS[(today + 6) % 7]
    );
    let cfg = Config::new()
        .peer("lab", &[SCU], &["127.0.0.1/32"], &["echo"], &[], &[])
        .peer(
            "markers",
            &["MARKER"],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
        .vault_route("RADGUARD");
    let toml = format!(
        "{}\n[audit]\nnode = {NODE:?}\n\n[[detect.rule]]\nname = \"night\"\nkind = \"off-hours\"\n\
         hours = [{hours:?}]\npeers = [\"lab\"]\n{MARKER_RULE}",
        cfg.toml()
    );
    let data = tmp_dir("rg-hours");
    let rg = Radguard::start_with_env(&toml, data.path(), UTC);
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu as lab");
    echoscu(rg.port(), SCU, "RADGUARD").assert_success("echoscu as lab, again");
    let all = mark(&rg);
    let after = now_ms();
    let night = of_rule(&all, "night");
    if before.div_euclid(HOUR) == after.div_euclid(HOUR) {
        // Both associations in the same hour: one alert.
        assert_eq!(night.len(), 1, "{all:#?}");
    } else {
        assert!(!night.is_empty(), "{all:#?}");
    }
    let expected = |ms: i64| {
        let (day, hour) = day_hour(ms);
        format!(
            "rule night (off-hours) peer lab from 127.0.0.1 \"{SCU}\" -> \"RADGUARD\": off-hours \
             association {} {hour:02}:00-{:02}:00 local, outside {hours}; response alert",
            DAYS[day],
            hour + 1
        )
    };
    let detail = night[0]["detail"].as_str().unwrap();
    assert!(
        detail == expected(before) || detail == expected(after),
        "{detail}\nwanted\n{}",
        expected(before)
    );
    // The marker peer is not in `peers`: never judged.
    assert!(all
        .iter()
        .all(|e| !e["detail"].as_str().unwrap().contains("peer markers")));
    wait_audited(&rg, &format!("outside {hours}"));
}

/// An association-accepted record of `peer` at `time_ms`, as the gateway writes one.
fn admitted(peer: &str, time_ms: i64, assoc: u64) -> AuditRecord {
    AuditRecord::draft(
        time_ms,
        Some(assoc),
        Some(Peer {
            address: Some("127.0.0.1:40000".into()),
            calling_ae: Some(SCU.into()),
            called_ae: Some("RADGUARD".into()),
            name: Some(peer.into()),
            ..Peer::default()
        }),
        AuditEvent::AssociationAccepted {
            accepted_contexts: 1,
            rejected_contexts: 0,
            max_pdu_client: 16384,
            max_pdu_upstream: 16384,
        },
    )
}

#[test]
fn learned_profile_from_the_trail_fires_on_an_unseen_hour_only() {
    let now = now_ms();
    // A week and a day of history (learning_days = 8, the trail read over 16 days):
    // - lab worked in this hour of the week a week ago (and the next hour, should the test
    //   cross into it), first seen 9 days ago;
    // - night worked 6 hours earlier in the day only, first seen 9 days and 6 hours ago.
    let history = vec![
        admitted("night", now - 9 * DAY - 6 * HOUR, 1),
        admitted("lab", now - 9 * DAY, 2),
        admitted("night", now - 7 * DAY - 6 * HOUR, 3),
        admitted("lab", now - 7 * DAY, 4),
        admitted("lab", now - 7 * DAY + HOUR, 5),
    ];
    let data = tmp_dir("rg-learned");
    {
        let mut store = SqliteStore::open(&data.path().join("audit.sqlite")).unwrap();
        let (sealed, _) = seal_all(NODE, &ChainHead::GENESIS, history).unwrap();
        store
            .append(NODE, &ChainHead::GENESIS, &sealed, None)
            .unwrap();
    }
    let cfg = Config::new()
        .peer("lab", &["LAB"], &["127.0.0.1/32"], &["echo"], &[], &[])
        .peer("night", &["NIGHT"], &["127.0.0.1/32"], &["echo"], &[], &[])
        .peer(
            "markers",
            &["MARKER"],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
        .vault_route("RADGUARD");
    let toml = format!(
        "{}\n[audit]\nnode = {NODE:?}\n\n[[detect.rule]]\nname = \"profile\"\nkind = \"off-hours\"\n\
         learning_days = 8\npeers = [\"lab\", \"night\"]\n{MARKER_RULE}",
        cfg.toml()
    );
    let rg = Radguard::start_with_env(&toml, data.path(), UTC);
    let out = rg.stdout_lines().join("\n");
    assert!(
        out.contains(
            "radguard: detection: off-hours profiles learned 5 admitted associations from the audit trail (last 16 days)"
        ),
        "{out}"
    );
    let before = now_ms();
    echoscu(rg.port(), "LAB", "RADGUARD").assert_success("echoscu as lab");
    echoscu(rg.port(), "NIGHT", "RADGUARD").assert_success("echoscu as night");
    let all = mark(&rg);
    let after = now_ms();
    let fired = of_rule(&all, "profile");
    assert_eq!(fired.len(), 1, "lab's hour was seen, night's not: {all:#?}");
    let expected = |ms: i64| {
        let (day, hour) = day_hour(ms);
        format!(
            "rule profile (off-hours) peer night from 127.0.0.1 \"NIGHT\" -> \"RADGUARD\": \
             off-hours association {} {hour:02}:00-{:02}:00 local, 0 associations in this hour \
             over 9 days (threshold 1); response alert",
            DAYS[day],
            hour + 1
        )
    };
    let detail = fired[0]["detail"].as_str().unwrap();
    assert!(
        detail == expected(before) || detail == expected(after),
        "{detail}\nwanted\n{}",
        expected(before)
    );
    wait_audited(&rg, "0 associations in this hour over 9 days");
}

/// The bytes of a Part 10 file's data set: the file less its preamble, prefix and File Meta
/// Information (whose length (0002,0000) gives).
fn data_set_bytes(file: &Path) -> u64 {
    let b = std::fs::read(file).unwrap();
    assert_eq!(&b[128..132], b"DICM", "{}", file.display());
    assert_eq!(&b[132..136], &[2, 0, 0, 0], "(0002,0000) first");
    let group = u32::from_le_bytes(b[140..144].try_into().unwrap()) as u64;
    b.len() as u64 - 144 - group
}

/// `getscu +B` (bit preserving: each data set written as it arrived) of the study, Study Root,
/// into `out`; returns the data-set bytes of each file.
fn getscu_study(port: u16, called: &str, study: &str, out: &Path) -> Vec<u64> {
    std::fs::create_dir_all(out).unwrap();
    let mut args: Vec<OsString> = [
        "-aet",
        SCU,
        "-aec",
        called,
        "-to",
        "15",
        "-ta",
        "15",
        "-td",
        "60",
        "-S",
        "-k",
        "0008,0052=STUDY",
        "-k",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(format!("StudyInstanceUID={study}").into());
    args.extend(["+B".into(), "-od".into(), out.as_os_str().to_owned()]);
    args.extend(["127.0.0.1".into(), port.to_string().into()]);
    dcmtk("getscu", &args).assert_success("getscu of the study");
    let mut files: Vec<_> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| data_set_bytes(f)).collect()
}

#[test]
fn study_get_is_a_bulk_retrieve_on_bytes() {
    let d = test_data();
    let ct = d.ct_files();
    let qr = DcmQrScp::start("QRSCP", &[]);
    qr.load(&ct);
    let tmp = tmp_dir("rg-get-bytes");
    // What the study weighs on the wire: getscu straight from dcmqrscp.
    let direct = getscu_study(
        qr.port,
        "QRSCP",
        &d.ct_study_uid(),
        &tmp.path().join("direct"),
    );
    assert_eq!(direct.len(), ct.len());
    let total: u64 = direct.iter().sum();
    let cfg = Config::new()
        .peer("lab", &[SCU], &["127.0.0.1/32"], &["get"], &["*"], &[])
        .route("QRSCP", qr.port, "QRSCP");
    let toml = format!(
        "{}\n[audit]\nnode = {NODE:?}\n\n[[detect.rule]]\nname = \"pull\"\nkind = \"bulk-retrieve\"\n\
         threshold = 100000\nmax_bytes = {total}\nwindow_secs = 600\n\n\
         [[detect.rule]]\nname = \"learn\"\nkind = \"bulk-retrieve\"\nthreshold = 100000\n\
         window_secs = 600\nbaseline = \"learned\"\n",
        cfg.toml()
    );
    let data = tmp_dir("rg-get-data");
    let rg = Radguard::start(&toml, data.path());
    let relayed = getscu_study(
        rg.port(),
        "QRSCP",
        &d.ct_study_uid(),
        &tmp.path().join("via"),
    );
    assert_eq!(
        relayed, direct,
        "the gateway relays the data sets unchanged"
    );
    let all = rg.wait_detection("rule pull");
    assert_eq!(all.len(), 1, "{all:#?}");
    let detail = all[0]["detail"].as_str().unwrap();
    assert!(detail.contains("(bulk-retrieve) peer lab"), "{detail}");
    // The study's exact bytes, reached with its last instance.
    assert!(
        detail.contains(&format!(
            ": {total} bytes retrieved in 600 s (threshold {total})"
        )),
        "{detail}"
    );
    let text = serde_json::to_string(&all[0]).unwrap();
    assert!(!text.contains(&d.ct_patient_id()), "{text}");
    wait_audited(&rg, &format!("{total} bytes retrieved"));
    // The learned rule saved the peer's peak window (within 2 s of the change) ...
    let saved = data.path().join("detect-baselines.json");
    let want = |v: &Value| {
        v["peaks"].as_array().is_some_and(|p| {
            p.len() == 1
                && p[0]["rule"] == "learn"
                && p[0]["peer"] == "lab"
                && p[0]["instances"] == ct.len() as u64
                && p[0]["bytes"] == total
        })
    };
    let read = || {
        std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    assert!(
        wait_until(Duration::from_secs(30), || read().is_some_and(|v| want(&v))),
        "{saved:?}: {:?}",
        read()
    );
    // ... which the next run on the data folder takes back.
    rg.stop();
    let rg = Radguard::start(&toml, data.path());
    let out = rg.stdout_lines().join("\n");
    assert!(
        out.contains(
            "radguard: detection: 1 learned bulk-retrieve baselines from detect-baselines.json"
        ),
        "{out}"
    );
}
