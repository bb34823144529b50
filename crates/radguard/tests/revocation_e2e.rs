//! Live revocation end to end, with real peers on both sides: a 300-instance CT series sent by
//! DCMTK storescu through radguard to Orthanc, and held query/retrieve associations, cut by a
//! reload (`radguard reload --data DIR`) in the middle of their work.
//!
//! "In the middle" is a point the test chooses, never a sleep or a race with the client: the
//! test waits until the gateway has relayed a hundred successful C-STOREs, stops storescu
//! (SIGSTOP), rewrites the config, reloads, waits for the successful `config-reloaded` event
//! (sent once the new policy is in force), and only then lets storescu go on (SIGCONT). At most
//! the one request storescu had sent before it stopped is judged under either policy; every
//! later one is judged under the new policy.
//!
//! - a removed peer (`on_revoke = "abort"`, the default): the next C-STORE is refused 0x0124,
//!   then A-ABORT; Orthanc holds exactly the instances whose C-STORE succeeded before it;
//! - the same with `on_revoke = "refuse-requests"`: every remaining instance is refused 0x0124,
//!   then storescu releases;
//! - a DICOM TLS peer whose certificate fingerprint the reload removes from `cert_sha256`: as
//!   the removed peer, over TLS;
//! - a SOP class narrowed (CT Image Storage no longer allowed): every remaining CT instance is
//!   refused 0x0124 ("SOP class not allowed", docs/conformance.md §3.3 and §7) without a
//!   revocation alert and without an abort;
//! - a held C-MOVE association (DCMTK movescu, two C-MOVEs on one association; dcmqrscp sends
//!   the instances to storescp): the C-MOVE in flight at the reload completes whole, the next
//!   one is refused 0x0124 and the association aborted, nothing more reaches storescp;
//! - a held C-FIND association (tests/py/held_find.py, one association, a query before and one
//!   after the reload): the second query is refused 0x0124 and the association aborted.
//!
//! Each test also reads the audit trail (SQLite in the data folder, through the audit crate's
//! own store code): the reload (Security Alert `security-configuration`), the revocation
//! (`not-authorized`, "no longer admitted ..."), every refusal and the end of the association,
//! and `radguard audit verify` accepts the chain.
//!
//! The attack: a modality is stolen or retired (or its certificate compromised) while it sends
//! a long series; removing it from the policy must stop it at its next request, not when its
//! association ends.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::audit_e2e::*;
use common::tls_peers::{dcmtk_tls, fingerprint, Pki};
use common::*;
use radguard_audit::record::AuditEvent;
use serde_json::Value;
use tempfile::TempDir;

/// UID root of this file's instances (hostile.rs uses …1234.7, firewall.rs …1234.8,
/// revocation.rs …1234.9).
const ROOT: &str = "1.2.826.0.1.3680043.10.1234.10";
/// Instances in the series.
const SERIES: usize = 300;
/// Successful C-STOREs relayed before the test stops the sender and reloads.
const MIDWAY: usize = 100;
/// The audit chain's name.
const NODE: &str = "gw-revocation-e2e";
/// The sending modality and the peer that stays in the policy whatever the reload removes.
const SCANNER: &str = "CTSCANNER";
const BYSTANDER: &str = "BYSTANDER";
/// Refused: Not Authorized (PS3.7 C.4.2.1.4): the answer to a withdrawn admission and to a SOP
/// class the peer may no longer store (docs/conformance.md §3.3, §7).
const NOT_AUTHORIZED: u16 = 0x0124;
/// The alert detail a revocation adds.
const NO_LONGER_ADMITTED: &str = "no longer admitted by the policy in force";
/// The Error Comment of a store refused for its SOP class.
const CLASS_NOT_ALLOWED: &str = "Radguard: SOP class not allowed";
/// How long the sender may take to reach [`MIDWAY`], and a client to finish.
const TRANSFER: Duration = Duration::from_secs(180);
/// How long an event or an audit record may take.
const EVENT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------ the series

/// The series: its files in instance order (storescu sends them in this order, message ID n
/// carries file n) and their SOP Instance UIDs.
struct Series {
    files: Vec<PathBuf>,
    uids: Vec<String>,
}

/// tests/py/make_series.py, once per test binary, into target/test-data (written whole and
/// renamed, so concurrent test binaries share it safely).
fn series() -> &'static Series {
    static S: OnceLock<Series> = OnceLock::new();
    S.get_or_init(|| {
        let dir = target_dir()
            .join("test-data")
            .join(format!("revocation-e2e-ct-{SERIES}"));
        let mut cmd = Command::new(venv_python());
        cmd.arg(py_script("make_series.py")).arg(&dir).args([
            "--count",
            &SERIES.to_string(),
            "--root",
            ROOT,
        ]);
        let out = run(&mut cmd, Duration::from_secs(300));
        out.assert_success("make_series.py");
        let uids: Vec<String> = out.stdout.lines().map(|l| l.trim().to_string()).collect();
        let files = files_under(&dir, ".dcm");
        assert_eq!(
            (files.len(), uids.len()),
            (SERIES, SERIES),
            "{}",
            dir.display()
        );
        Series { files, uids }
    })
}

fn study_uid() -> String {
    format!("{ROOT}.1")
}

// ------------------------------------------------------------------------------ configs

fn audit_section() -> String {
    format!("\n[audit]\nnode = {NODE:?}\n")
}

/// The scanner (when `scanner_classes` is Some: echo and store of those classes) and the
/// bystander (echo only) on 127.0.0.1; `server` lines; route PACS to Orthanc.
fn store_config(server: &[&str], scanner_classes: Option<&[&str]>, orthanc: &Orthanc) -> String {
    let mut c = Config::new();
    for l in server {
        c = c.server(l);
    }
    if let Some(classes) = scanner_classes {
        c = c.peer(
            "ct-scanner",
            &[SCANNER],
            &["127.0.0.1/32"],
            &["echo", "store"],
            classes,
            &[],
        );
    }
    c = c.peer(
        "bystander",
        &[BYSTANDER],
        &["127.0.0.1/32"],
        &["echo"],
        &[],
        &[],
    );
    c = c.route("PACS", orthanc.dicom_port, "ORTHANC");
    format!("{}{}", c.toml(), audit_section())
}

/// Rewrites the config file, runs `radguard reload --data DIR` and waits for its successful
/// `config-reloaded` event (emitted once the new policy is in force).
fn reload(rg: &Radguard, toml: &str) {
    let before = rg.reload_events().len();
    rg.rewrite_config(toml);
    rg.reload_cli().assert_success("radguard reload --data");
    let ev = rg.wait_reload(before);
    assert_eq!(
        ev["ok"],
        true,
        "the reload was refused: {ev:#}\n{}",
        rg.log()
    );
}

// ------------------------------------------------------------------------------ clients

/// A DCMTK client running in the background, which the test pauses and resumes.
struct Client {
    proc: Proc,
    _logs: TempDir,
}

impl Client {
    fn start(tool: &str, args: &[OsString]) -> Client {
        let logs = tmp_dir(tool);
        let proc = dcmtk_spawn(tool, args, logs.path());
        Client { proc, _logs: logs }
    }

    /// `storescu -v -aet SCANNER -aec PACS ... OPTIONS... 127.0.0.1 PORT <the series>`.
    fn storescu(port: u16, options: &[OsString]) -> Client {
        let mut args = dcmtk_client_args(SCANNER, "PACS");
        args.extend(options.iter().cloned());
        args.extend(["127.0.0.1".into(), port.to_string().into()]);
        args.extend(series().files.iter().map(|p| p.as_os_str().to_owned()));
        Client::start("storescu", &args)
    }

    fn pause(&self) {
        self.proc.signal("STOP");
    }

    fn resume(&self) {
        self.proc.signal("CONT");
    }

    /// Waits for the client to end; returns its exit code and its output.
    fn finish(&mut self) -> (Option<i32>, String) {
        let ended = wait_until(TRANSFER, || self.proc.exited().is_some());
        assert!(
            ended,
            "{} did not end within {TRANSFER:?}:\n{}",
            self.proc.name,
            self.proc.log()
        );
        (self.proc.exited().and_then(|s| s.code()), self.proc.log())
    }
}

// ------------------------------------------------------------------------------- events

/// Waits for an event matching `pred`; panics with the events and the log.
fn wait_event(rg: &Radguard, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut got = None;
    wait_until(EVENT, || {
        got = rg.events().into_iter().find(|e| pred(e));
        got.is_some()
    });
    got.unwrap_or_else(|| panic!("no {what} event within {EVENT:?}\nradguard:\n{}", rg.log()))
}

/// The association id of the (one) accepted association of policy peer `peer`.
fn assoc_of(rg: &Radguard, peer: &str) -> u64 {
    wait_event(rg, &format!("association-accepted of {peer}"), |e| {
        e["event"] == "association-accepted" && e["peer"] == peer
    })["assoc"]
        .as_u64()
        .expect("assoc id")
}

fn on(e: &Value, event: &str, assoc: u64) -> bool {
    e["event"] == event && e["assoc"].as_u64() == Some(assoc)
}

/// (message ID, SOP Instance UID) of every successful C-STORE response the upstream sent on
/// `assoc`, by message ID.
fn stored(events: &[Value], assoc: u64) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = events
        .iter()
        .filter(|e| {
            on(e, "dimse-response", assoc)
                && e["command"] == "CStoreRsp"
                && e["status"] == 0
                && e["from"] == "upstream"
        })
        .map(|e| {
            (
                e["message_id"].as_u64().unwrap_or(0),
                e["sop_instance"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// (message ID, command, status, why) of every `dimse-refused` on `assoc`, by message ID.
fn refused(events: &[Value], assoc: u64) -> Vec<(u64, String, u64, String)> {
    let mut v: Vec<_> = events
        .iter()
        .filter(|e| on(e, "dimse-refused", assoc))
        .map(|e| {
            (
                e["message_id"].as_u64().unwrap_or(0),
                e["command"].as_str().unwrap_or_default().to_string(),
                e["status"].as_u64().unwrap_or(0),
                e["why"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

/// The `not-authorized` alerts on `assoc`: (revocations, others).
fn not_authorized(events: &[Value], assoc: u64) -> (usize, usize) {
    let alerts: Vec<&Value> = events
        .iter()
        .filter(|e| on(e, "security-alert", assoc) && e["kind"] == "not-authorized")
        .collect();
    let revocations = alerts
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.contains(NO_LONGER_ADMITTED))
        })
        .count();
    (revocations, alerts.len() - revocations)
}

/// How an association ends after the reload.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// A-ABORT by the gateway (`on_revoke = "abort"`): one refusal, then the abort.
    Aborted,
    /// Every further request refused, then the client's A-RELEASE-RQ answered.
    Released,
}

/// Waits for the end of `assoc` and checks it is `end`: an abort says "admission withdrawn"
/// and no release is recorded, or a release and no abort.
fn wait_end(rg: &Radguard, assoc: u64, end: End) {
    let ev = wait_event(rg, "end of the association", |e| {
        on(e, "association-aborted", assoc) || on(e, "association-released", assoc)
    });
    let events = rg.events();
    let aborted = events.iter().any(|e| on(e, "association-aborted", assoc));
    let released = events.iter().any(|e| on(e, "association-released", assoc));
    match end {
        End::Aborted => assert!(
            aborted
                && !released
                && ev["blame"] == "local"
                && ev["why"]
                    .as_str()
                    .is_some_and(|w| w.contains("admission withdrawn")),
            "expected the gateway's A-ABORT (admission withdrawn), got {ev:#}\nradguard:\n{}",
            rg.log()
        ),
        End::Released => assert!(
            released && !aborted,
            "expected a release without an abort, got {ev:#}\nradguard:\n{}",
            rg.log()
        ),
    }
}

// --------------------------------------------------------------------------- audit trail

/// What the trail must show for association `assoc` after the reload.
struct TrailWant {
    assoc: u64,
    /// Successful responses from the upstream (C-STORE or C-MOVE/C-FIND finals and pendings
    /// are not told apart: only C-STORE tests set it).
    stored: Option<usize>,
    /// Message IDs refused 0x0124.
    refused: Vec<u16>,
    /// Revocation alerts (`not-authorized`, "no longer admitted ...").
    revocations: usize,
    /// Other `not-authorized` alerts (a narrowed SOP class).
    other_alerts: usize,
    end: End,
}

/// Reads the SQLite trail until the association's end is recorded, then checks it holds the
/// reload (`security-configuration`) before the first refusal, every refusal, the alerts, the
/// successful stores and the end; and that `radguard audit verify` accepts the chain.
fn assert_trail(rg: &Radguard, want: &TrailWant) {
    let store = sqlite_store(&rg.data_dir);
    let mine = |r: &TrailRow| r.record.assoc == Some(want.assoc);
    let end_kind = match want.end {
        End::Aborted => "association-aborted",
        End::Released => "association-released",
    };
    let rows = wait_trail(&store, NODE, EVENT, |rows| {
        rows.iter().any(|r| mine(r) && r.kind() == end_kind)
    })
    .unwrap_or_else(|| {
        panic!(
            "the trail never recorded the {end_kind} of association {}:\n{:#?}",
            want.assoc,
            read_trail(&store, NODE)
                .iter()
                .map(|r| r.entry.clone())
                .collect::<Vec<_>>()
        )
    });
    let reload_seq = rows
        .iter()
        .find(|r| {
            matches!(&r.record.event, AuditEvent::SecurityAlert { alert, .. }
                if alert == "security-configuration")
        })
        .map(|r| r.seq)
        .unwrap_or_else(|| panic!("no security-configuration record (the reload) in the trail"));
    let refusals: Vec<(u64, u16)> = rows
        .iter()
        .filter(|r| mine(r))
        .filter_map(|r| match &r.record.event {
            AuditEvent::DimseRefused {
                message_id, status, ..
            } => Some((r.seq, *message_id)).filter(|_| *status == NOT_AUTHORIZED),
            _ => None,
        })
        .collect();
    let ids: Vec<u16> = refusals.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, want.refused, "refusals (0x0124) in the trail");
    assert!(
        refusals.iter().all(|(seq, _)| *seq > reload_seq),
        "a refusal recorded before the reload: reload #{reload_seq}, refusals {refusals:?}"
    );
    let alerts: Vec<&str> = rows
        .iter()
        .filter(|r| mine(r))
        .filter_map(|r| match &r.record.event {
            AuditEvent::SecurityAlert { alert, detail, .. } if alert == "not-authorized" => {
                Some(detail.as_str())
            }
            _ => None,
        })
        .collect();
    let revocations = alerts
        .iter()
        .filter(|d| d.contains(NO_LONGER_ADMITTED))
        .count();
    assert_eq!(
        (revocations, alerts.len() - revocations),
        (want.revocations, want.other_alerts),
        "not-authorized alerts in the trail (revocations, others): {alerts:?}"
    );
    if let Some(n) = want.stored {
        let ok = rows
            .iter()
            .filter(|r| mine(r))
            .filter(|r| {
                matches!(&r.record.event, AuditEvent::DimseResponse { status: 0, command, .. }
                    if command == "CStoreRsp")
            })
            .count();
        assert_eq!(ok, n, "successful C-STORE responses in the trail");
    }
    let (code, _, out) = audit_verify(&store, &[]);
    assert_eq!(code, Some(0), "radguard audit verify:\n{}", out.text());
}

// ------------------------------------------------------------------------------ Orthanc

/// The SOP Instance UIDs Orthanc holds (one `GET /instances?expand`).
fn orthanc_uids(orthanc: &Orthanc) -> BTreeSet<String> {
    orthanc
        .get_json("/instances?expand")
        .as_array()
        .expect("/instances?expand: an array")
        .iter()
        .map(|i| {
            i["MainDicomTags"]["SOPInstanceUID"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

// ------------------------------------------------------------------- the series scenario

/// What the reload does to the sending peer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    /// The peer (or its certificate) is no longer admitted at all.
    Revoked,
    /// CT Image Storage removed from its `store_sop_classes`.
    Narrowed,
}

/// storescu (`client`, already started) sends the series as `peer`; once [`MIDWAY`] C-STOREs
/// have succeeded it is stopped, the gateway reloaded with `new_config`, and storescu resumed.
/// Then: the C-STOREs that succeeded are exactly messages 1..=k carrying the first k instances
/// (MIDWAY ≤ k < SERIES); message k+1 is refused 0x0124 and the association aborted (`end`
/// Aborted), or every message from k+1 to SERIES is refused 0x0124 and the client releases;
/// the alerts say revocation (or, narrowed, only "SOP class not allowed"); storescu reports k
/// successes; Orthanc holds exactly those k instances; the audit trail shows it all. Returns k.
fn series_cut_midway(
    rg: &Radguard,
    orthanc: &Orthanc,
    mut client: Client,
    peer: &str,
    new_config: &str,
    change: Change,
    end: End,
) -> usize {
    let s = series();
    let assoc = assoc_of(rg, peer);
    let midway = wait_until(TRANSFER, || stored(&rg.events(), assoc).len() >= MIDWAY);
    assert!(
        midway,
        "{MIDWAY} C-STOREs did not succeed within {TRANSFER:?}:\n{}\nradguard:\n{}",
        client.proc.log(),
        rg.log()
    );
    client.pause();
    reload(rg, new_config);
    client.resume();
    let (code, out) = client.finish();
    wait_end(rg, assoc, end);

    let events = rg.events();
    let ok = stored(&events, assoc);
    let k = ok.len();
    let context = || {
        format!(
            "{k} stored\n--- storescu (exit {code:?}) ---\n{out}\nradguard:\n{}",
            rg.log()
        )
    };
    assert!(
        (MIDWAY..SERIES).contains(&k),
        "the cut is not midway: {}",
        context()
    );
    let want_ok: Vec<(u64, String)> = (1..=k as u64).zip(s.uids[..k].iter().cloned()).collect();
    assert_eq!(
        ok, want_ok,
        "successes are not messages 1..={k} with the first {k} instances"
    );

    let want_refused: Vec<u16> = match end {
        End::Aborted => vec![k as u16 + 1],
        End::Released => (k as u16 + 1..=SERIES as u16).collect(),
    };
    let got = refused(&events, assoc);
    let ids: Vec<u16> = got.iter().map(|r| r.0 as u16).collect();
    assert_eq!(ids, want_refused, "refused message IDs: {got:?}");
    for (id, command, status, why) in &got {
        assert!(
            command == "CStoreRq" && *status == u64::from(NOT_AUTHORIZED),
            "message {id}: {command} refused {status:#06x} ({why}), expected CStoreRq 0x0124"
        );
        if change == Change::Narrowed {
            assert_eq!(why, CLASS_NOT_ALLOWED, "message {id}");
        }
    }
    let alerts = not_authorized(&events, assoc);
    let want_alerts = match change {
        Change::Revoked => (want_refused.len(), 0),
        Change::Narrowed => (0, want_refused.len()),
    };
    assert_eq!(
        alerts, want_alerts,
        "not-authorized alerts (revocations, others)"
    );

    // storescu's own account: k successes, then the refusal(s) (DCMTK 3.6.7 prints 0x0124 as
    // "Unknown Status: 0x124").
    let successes = out.matches("Received Store Response (Success)").count();
    assert_eq!(successes, k, "storescu's successes: {}", context());
    let refusals = out
        .lines()
        .filter(|l| {
            l.contains("Received Store Response")
                && (l.contains("Status: 0x124)") || l.contains("Refused: NotAuthorized"))
        })
        .count();
    match end {
        End::Aborted => {
            // storescu reads the 0x0124 and then finds the association aborted: the gateway
            // reads and discards the rest of the refused request's data set until storescu
            // closes (PS3.8 Sta13), so storescu never gets a broken pipe instead.
            assert!(
                refusals == 1 && out.contains("Peer aborted Association"),
                "storescu: expected message {} answered 0x0124, then the abort: {}",
                k + 1,
                context()
            );
            assert!(!out.contains("Broken pipe"), "storescu: {}", context());
            assert_ne!(code, Some(0), "storescu: {}", context());
        }
        End::Released => {
            assert_eq!(
                refusals,
                want_refused.len(),
                "storescu's 0x0124 responses: {}",
                context()
            );
            assert!(
                !out.contains("Peer aborted Association")
                    && code == Some(0)
                    && out.contains("Releasing Association"),
                "storescu: {}",
                context()
            );
        }
    }

    // Every success reached Orthanc, nothing after it did.
    let held = orthanc_uids(orthanc);
    let want_held: BTreeSet<String> = s.uids[..k].iter().cloned().collect();
    assert_eq!(
        orthanc.instance_count(),
        k as u64,
        "Orthanc's instance count"
    );
    assert!(
        held == want_held,
        "Orthanc holds {} instances, not the first {k}; extra: {:?}; missing: {:?}",
        held.len(),
        held.difference(&want_held).collect::<Vec<_>>(),
        want_held.difference(&held).collect::<Vec<_>>()
    );

    assert_trail(
        rg,
        &TrailWant {
            assoc,
            stored: Some(k),
            refused: want_refused,
            revocations: want_alerts.0,
            other_alerts: want_alerts.1,
            end,
        },
    );
    k
}

// -------------------------------------------------------------------------------- tests

/// The scanner is removed from the policy while it sends the series: its next C-STORE is
/// refused 0x0124, the association aborted; Orthanc holds exactly what succeeded before.
#[test]
fn removed_peer_midway_through_a_series_is_refused_and_aborted() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let all = ["*"];
    let rg = Radguard::start_fresh(&store_config(&[], Some(&all), &orthanc));
    let client = Client::storescu(rg.port(), &[]);
    let without = store_config(&[], None, &orthanc);
    let k = series_cut_midway(
        &rg,
        &orthanc,
        client,
        "ct-scanner",
        &without,
        Change::Revoked,
        End::Aborted,
    );
    eprintln!("removed peer: {k} of {SERIES} stored before the cut");
    // Still admitted: the bystander; no longer: the scanner.
    echoscu(rg.port(), BYSTANDER, "PACS").assert_success("C-ECHO by the bystander");
    assert!(
        !echoscu(rg.port(), SCANNER, "PACS").success(),
        "the removed scanner associated again:\n{}",
        rg.log()
    );
}

/// As above with `on_revoke = "refuse-requests"` and storescu `--no-halt`: each of the
/// remaining instances is refused 0x0124 (one revocation alert each), then storescu releases
/// and the release is answered.
#[test]
fn removed_peer_with_refuse_requests_gets_every_remaining_instance_refused() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let server = ["on_revoke = \"refuse-requests\""];
    let all = ["*"];
    let rg = Radguard::start_fresh(&store_config(&server, Some(&all), &orthanc));
    let client = Client::storescu(rg.port(), &["--no-halt".into()]);
    let without = store_config(&server, None, &orthanc);
    let k = series_cut_midway(
        &rg,
        &orthanc,
        client,
        "ct-scanner",
        &without,
        Change::Revoked,
        End::Released,
    );
    eprintln!("refuse-requests: {k} stored, {} refused", SERIES - k);
}

/// The reload narrows the scanner's `store_sop_classes` from CT + MR to MR: every remaining CT
/// instance is refused 0x0124 "SOP class not allowed" (no revocation alert), the association
/// is not aborted and storescu (`--no-halt`) releases it.
#[test]
fn narrowed_sop_class_midway_refuses_the_rest_without_abort() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let both = ["CTImageStorage", "MRImageStorage"];
    let mr = ["MRImageStorage"];
    let rg = Radguard::start_fresh(&store_config(&[], Some(&both), &orthanc));
    let client = Client::storescu(rg.port(), &["--no-halt".into()]);
    let narrowed = store_config(&[], Some(&mr), &orthanc);
    let k = series_cut_midway(
        &rg,
        &orthanc,
        client,
        "ct-scanner",
        &narrowed,
        Change::Narrowed,
        End::Released,
    );
    eprintln!("narrowed: {k} stored, {} refused", SERIES - k);
    // The scanner is still admitted (a new association, C-ECHO).
    echoscu(rg.port(), SCANNER, "PACS").assert_success("C-ECHO by the narrowed scanner");
}

/// A TLS listener; the scanner pinned by `cert_sha256` to the fingerprints of `pinned`; the
/// bystander; route PACS to Orthanc.
fn tls_config(pki: &Pki, pinned: &[&PathBuf], orthanc: &Orthanc) -> String {
    let fps: Vec<String> = pinned
        .iter()
        .map(|c| format!("{:?}", fingerprint(c)))
        .collect();
    format!(
        "[server]\ntls_listen = [\"127.0.0.1:0\"]\nae_title = \"RADGUARD\"\n\
         connect_timeout_secs = 5\nartim_timeout_secs = 10\nidle_timeout_secs = 60\n\
         shutdown_grace_secs = 2\n\n[server.tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\n\
         [[peer]]\nname = \"ct-scanner\"\nae_titles = [{SCANNER:?}]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\ncert_sha256 = [{}]\n\n\
         [[peer]]\nname = \"bystander\"\nae_titles = [{BYSTANDER:?}]\n\
         addresses = [\"127.0.0.1/32\"]\nallow = [\"echo\"]\n\n\
         [[route]]\ncalled_ae = \"PACS\"\nupstream = \"127.0.0.1:{}\"\nupstream_ae = \"ORTHANC\"\n{}",
        pki.gateway_cert(),
        pki.gateway_key(),
        pki.ca(),
        fps.join(", "),
        orthanc.dicom_port,
        audit_section()
    )
}

/// The scanner sends over DICOM TLS with its client certificate, pinned together with a
/// second certificate; the reload removes its certificate's fingerprint (the second stays):
/// the next C-STORE on the running TLS association is refused 0x0124 and aborted; Orthanc
/// holds exactly what succeeded before; a new association with the old certificate is
/// rejected.
#[test]
fn certificate_fingerprint_removed_midway_cuts_the_tls_series() {
    let pki = Pki::init("revoke-e2e", &["ct-scanner"]);
    let old = pki.client("ct-scanner");
    let other = pki.issue("ct-scanner-2");
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let rg = Radguard::start_any(&tls_config(&pki, &[&old.0, &other.0], &orthanc));
    let tls = dcmtk_tls(&old.1, &old.0, &pki.ca());
    let client = Client::storescu(rg.tls_port(), &tls);
    let k = series_cut_midway(
        &rg,
        &orthanc,
        client,
        "ct-scanner",
        &tls_config(&pki, &[&other.0], &orthanc),
        Change::Revoked,
        End::Aborted,
    );
    eprintln!("certificate removed: {k} of {SERIES} stored before the cut");
    let again = tls_peers::echoscu_tls(rg.tls_port(), SCANNER, "PACS", &tls);
    assert!(
        !again.success(),
        "the removed certificate associated again:\n{}",
        again.text()
    );
    let with_other = dcmtk_tls(&other.1, &other.0, &pki.ca());
    tls_peers::echoscu_tls(rg.tls_port(), SCANNER, "PACS", &with_other)
        .assert_success("C-ECHO with the certificate still pinned");
}

/// A viewer allowed echo, find and move (to STORESCP) when `with_viewer`; the bystander;
/// route ARCHIVE to dcmqrscp.
fn qr_config(with_viewer: bool, archive_port: u16) -> String {
    let mut c = Config::new();
    if with_viewer {
        c = c.peer(
            "viewer",
            &["VIEWER"],
            &["127.0.0.1/32"],
            &["echo", "find", "move"],
            &[],
            &["STORESCP"],
        );
    }
    c = c
        .peer(
            "bystander",
            &[BYSTANDER],
            &["127.0.0.1/32"],
            &["echo"],
            &[],
            &[],
        )
        .route("ARCHIVE", archive_port, "ARCHIVE");
    format!("{}{}", c.toml(), audit_section())
}

/// movescu holds one association for two C-MOVEs of the series (dcmqrscp → storescp). While
/// the first is under way, storescp is stopped (so dcmqrscp waits for its C-STORE response and
/// the C-MOVE cannot finish), the viewer removed and the gateway reloaded, then storescp
/// resumed: the C-MOVE already forwarded completes whole (all instances, final status
/// success), the second C-MOVE is refused 0x0124 and the association aborted; storescp got the
/// series once, over one association.
#[test]
fn held_c_move_association_is_cut_after_the_move_in_flight_completes() {
    let s = series();
    let scp = StoreScp::start("STORESCP");
    let qr = DcmQrScp::start("ARCHIVE", &[("STORESCP", scp.port)]);
    qr.load(&s.files);
    let rg = Radguard::start_fresh(&qr_config(true, qr.port));

    let mut args = dcmtk_client_args("VIEWER", "ARCHIVE");
    for a in ["-S", "-aem", "STORESCP", "--repeat", "2"] {
        args.push(a.into());
    }
    for k in [
        "0008,0052=STUDY".to_string(),
        format!("0020,000D={}", study_uid()),
    ] {
        args.extend(["-k".into(), k.into()]);
    }
    args.extend(["127.0.0.1".into(), rg.port().to_string().into()]);
    let mut client = Client::start("movescu", &args);
    let assoc = assoc_of(&rg, "viewer");

    // Under way: storescp has some of the series; stopped there, the C-MOVE cannot complete.
    let under_way = wait_until(TRANSFER, || scp.files().len() >= 20);
    assert!(
        under_way,
        "the C-MOVE did not start:\n{}\n{}",
        client.proc.log(),
        rg.log()
    );
    scp.signal("STOP");
    let at_stop = scp.files().len();
    reload(&rg, &qr_config(false, qr.port));
    scp.signal("CONT");
    let (code, out) = client.finish();
    wait_end(&rg, assoc, End::Aborted);
    let context = || {
        format!(
            "storescp held {at_stop} at the stop\n--- movescu (exit {code:?}) ---\n{out}\n\
             radguard:\n{}\nstorescp:\n{}",
            rg.log(),
            scp.log()
        )
    };
    assert!(
        at_stop < SERIES,
        "the C-MOVE had finished before the stop; inconclusive: {}",
        context()
    );

    // The C-MOVE in flight completed: final success with every sub-operation completed.
    let events = rg.events();
    let finals: Vec<&Value> = events
        .iter()
        .filter(|e| on(e, "dimse-response", assoc) && e["command"] == "CMoveRsp")
        .filter(|e| e["status"] != 0xFF00)
        .collect();
    assert!(
        finals.len() == 1 && finals[0]["message_id"] == 1 && finals[0]["status"] == 0,
        "expected one final C-MOVE response (message 1, success): {finals:#?}\n{}",
        context()
    );
    // movescu's account: the first C-MOVE ended in success after a pending response per
    // instance, the second got 0x0124 (DCMTK 3.6.7: "Unknown Status: 0x124") and the release
    // found the association aborted.
    let first = out
        .find("Sending Move Request (MsgID 2)")
        .map_or(out.as_str(), |at| &out[..at]);
    assert!(
        first.contains(&format!("Received Move Response {SERIES} (Pending)"))
            && !first.contains(&format!("Received Move Response {} (Pending)", SERIES + 1))
            && first.contains("Received Final Move Response (Success)"),
        "movescu's first C-MOVE: {}",
        context()
    );
    // The second: 0x0124, then the abort (never a broken pipe: the gateway waits for movescu
    // to close after its A-ABORT, PS3.8 Sta13).
    let second = out
        .find("Sending Move Request (MsgID 2)")
        .map_or("", |at| &out[at..]);
    assert!(
        second.contains("Received Final Move Response (Unknown Status: 0x124)")
            && second.contains("Peer aborted Association")
            && !second.contains("Broken pipe"),
        "movescu's second C-MOVE: {}",
        context()
    );
    // The next C-MOVE: refused 0x0124 with a revocation alert, then the abort.
    let got = refused(&events, assoc);
    assert_eq!(
        got.iter()
            .map(|r| (r.0, r.1.as_str(), r.2))
            .collect::<Vec<_>>(),
        vec![(2, "CMoveRq", u64::from(NOT_AUTHORIZED))],
        "refusals: {}",
        context()
    );
    assert_eq!(not_authorized(&events, assoc), (1, 0), "alerts");
    // Nothing more reached storescp: the series once, over one association.
    let files = scp.files();
    assert_eq!(files.len(), SERIES, "storescp's files: {}", context());
    assert_eq!(
        scp.associations(),
        1,
        "storescp's associations: {}",
        context()
    );
    assert_trail(
        &rg,
        &TrailWant {
            assoc,
            stored: None,
            refused: vec![2],
            revocations: 1,
            other_alerts: 0,
            end: End::Aborted,
        },
    );
}

/// tests/py/held_find.py holds one association: a C-FIND before the reload that removes the
/// viewer finds the study; the C-FIND after it is refused 0x0124 (a revocation alert) and the
/// gateway aborts the association (A-ABORT source 2, reason 0).
#[test]
fn held_c_find_association_is_cut_at_its_next_query() {
    let s = series();
    let qr = DcmQrScp::start("ARCHIVE", &[]);
    qr.load(&s.files[..3]);
    let rg = Radguard::start_fresh(&qr_config(true, qr.port));

    let dir = tmp_dir("held-find");
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("held_find.py"))
        .args(["--port", &rg.port().to_string()])
        .args(["--calling-ae", "VIEWER", "--called-ae", "ARCHIVE"])
        .args(["--queries", "2", "--go-dir"])
        .arg(dir.path())
        .args(["--key", &format!("StudyInstanceUID={}", study_uid())])
        .args(["--timeout", "60"]);
    let mut finder = Proc::spawn("held_find.py", &mut cmd, dir.path(), false);
    let steps = dir.path().join("held_find.py.out");
    let first = wait_until(TRANSFER, || {
        std::fs::read_to_string(&steps).is_ok_and(|t| t.contains("query 1 done"))
            || finder.exited().is_some()
    });
    assert!(
        first && finder.exited().is_none(),
        "the first query did not finish:\n{}\nradguard:\n{}",
        finder.log(),
        rg.log()
    );
    let assoc = assoc_of(&rg, "viewer");
    reload(&rg, &qr_config(false, qr.port));
    std::fs::write(dir.path().join("go-2"), "").expect("write go-2");
    assert!(
        wait_until(TRANSFER, || finder.exited().is_some()),
        "held_find.py did not end:\n{}",
        finder.log()
    );
    let text = std::fs::read_to_string(&steps).unwrap_or_default();
    let v: Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("held_find.py printed no JSON:\n{}", finder.log()));
    eprintln!("held_find.py:\n{text}");
    let context = || format!("{v:#}\nradguard:\n{}", rg.log());
    assert_eq!(v["association"], "accepted", "{}", context());
    let q = v["queries"].as_array().cloned().unwrap_or_default();
    assert!(
        q.len() == 2
            && q[0]["matches"] == 1
            && q[0]["statuses"].as_array().and_then(|s| s.last()) == Some(&Value::from(0)),
        "query 1 should find the study: {}",
        context()
    );
    // Query 2: 0x0124 alone, then the gateway's A-ABORT (source 2, reason 0).
    assert!(
        q[1]["statuses"] == serde_json::json!([NOT_AUTHORIZED])
            && v["abort"] == serde_json::json!({"source": 2, "reason": 0}),
        "query 2 should be refused 0x0124 alone, then aborted: {}",
        context()
    );
    wait_end(&rg, assoc, End::Aborted);
    let events = rg.events();
    let got = refused(&events, assoc);
    assert_eq!(
        got.iter()
            .map(|r| (r.0, r.1.as_str(), r.2))
            .collect::<Vec<_>>(),
        vec![(2, "CFindRq", u64::from(NOT_AUTHORIZED))],
        "refusals: {}",
        context()
    );
    assert_eq!(not_authorized(&events, assoc), (1, 0), "alerts");
    assert_trail(
        &rg,
        &TrailWant {
            assoc,
            stored: None,
            refused: vec![2],
            revocations: 1,
            other_alerts: 0,
            end: End::Aborted,
        },
    );
}
