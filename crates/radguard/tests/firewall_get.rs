//! The data-set firewall on C-GET: a C-STORE sub-operation from the upstream whose data set the
//! route refuses (docs/firewall.md, "Where it applies": the client is the receiver, so the data
//! set streams until the violation, its last fragment is withheld and both associations are
//! aborted).
//!
//! The upstream is `tests/py/bad_get_scp.py`: a pynetdicom Study Root C-GET SCP that answers
//! every C-GET with two C-STORE sub-operations over CT Image Storage (SCP/SCU role selection):
//! a valid instance, then one whose data set holds Patient ID (0010,0020) twice on the wire,
//! after a private filler of [`FILLER`] bytes (so that fragments of it stream to the client
//! before the repeated element arrives); `--malformed-first` swaps the two. The client is DCMTK
//! getscu in bit-preserving mode (`+B`: each incoming data set is written to disk as its
//! fragments arrive, the mode in which a partly received data set could be left behind), at log
//! level trace (it then logs every P-DATA fragment it reads and the A-ABORT PDU).
//!
//! 1. Direct (no gateway): the script really sends the repeated element, getscu takes both
//!    instances whole, and the firewall's own checks find the duplicate where the script says.
//! 2. Through a relay route at the default level (`safe`), valid instance first (the case the
//!    table describes): the valid instance arrives unchanged and its C-STORE-RSP reaches the
//!    upstream; fragments of the malformed one stream, its last never; nothing of it is stored;
//!    a malformed-data-set alert names the instance, the duplicate check and the byte offset;
//!    both associations end with an A-ABORT; the gateway keeps serving.
//! 3. The same with the malformed instance as the first sub-operation (no C-STORE-RSP from the
//!    client has to pass the gateway before the firewall acts).

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use radguard_dicom::limits::Limits;
use radguard_dicom::part10;
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::validate::{Level, Validator};
use serde_json::Value;

/// The calling AE title of getscu and echoscu here.
const CLIENT: &str = "FW_GETSCU";
/// The script's AE title (and the route's called AE).
const UPSTREAM: &str = "BADGET";
/// The instances bad_get_scp.py sends (its STUDY_UID, VALID_UID, BAD_UID).
const STUDY_UID: &str = "1.2.826.0.1.3680043.8.498.2.1";
const VALID_UID: &str = "1.2.826.0.1.3680043.8.498.2.1.1.1";
const BAD_UID: &str = "1.2.826.0.1.3680043.8.498.2.1.1.2";
/// Private bytes before the repeated Patient ID: six PDUs at getscu's 16 KiB maximum.
const FILLER: usize = 100_000;

// -------------------------------------------------------------------------- the upstream

/// tests/py/bad_get_scp.py on 127.0.0.1 (port chosen by the OS and printed), its filler
/// element before the repeated Patient ID.
fn bad_get_scp(extra: &[&str]) -> ScriptedScp {
    let filler = FILLER.to_string();
    let mut args = vec!["--filler", filler.as_str()];
    args.extend_from_slice(extra);
    ScriptedScp::start("bad_get_scp.py", UPSTREAM, &args)
}

/// (where the repeated Patient ID starts, the data set's length) in the malformed
/// sub-operation, as the script logged them when it sent it ("... the repeated element at byte
/// N, UID, L bytes): sending").
fn malformed(scp: &ScriptedScp) -> Option<(usize, usize)> {
    scp.steps().lines().find_map(|l| {
        let rest = l.split("the repeated element at byte ").nth(1)?;
        let mut parts = rest.split(", ");
        let at = parts.next()?.parse().ok()?;
        let _uid = parts.next()?;
        let len = parts.next()?.split(" bytes)").next()?.parse().ok()?;
        Some((at, len))
    })
}

// ---------------------------------------------------------------------------- the client

/// `getscu -ll trace +B` (bit preserving: each received data set is written to `out_dir` as
/// its fragments arrive, named by its SOP Instance UID), Study Root, STUDY level, for the
/// script's study.
fn getscu(port: u16, called: &str, out_dir: &Path) -> Output {
    let mut args: Vec<OsString> = [
        "-ll",
        "trace",
        "-aet",
        CLIENT,
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
    args.push(format!("StudyInstanceUID={STUDY_UID}").into());
    args.extend(["+B".into(), "-od".into(), out_dir.as_os_str().to_owned()]);
    args.extend(["127.0.0.1".into(), port.to_string().into()]);
    dcmtk("getscu", &args)
}

/// A C-STORE sub-operation's data set as getscu read it (from its trace log).
#[derive(Debug, Default)]
struct Reception {
    sop_instance: String,
    /// Fragments read: (bytes, last?).
    fragments: Vec<(usize, bool)>,
}

impl Reception {
    fn bytes(&self) -> usize {
        self.fragments.iter().map(|(n, _)| n).sum()
    }
    fn complete(&self) -> bool {
        self.fragments.iter().any(|(_, last)| *last)
    }
}

/// The C-STORE requests getscu received, in order, with the data set fragments it read for
/// each ("DIMSE receiveDataSetInFile: N bytes read (last: YES|NO)").
fn receptions(out: &Output) -> Vec<Reception> {
    let mut got: Vec<Reception> = Vec::new();
    let mut in_store_rq = false;
    for line in out.all().lines() {
        if line.contains("Message Type") {
            in_store_rq = line.trim_end().ends_with(": C-STORE RQ");
        } else if in_store_rq && line.contains("Affected SOP Instance UID") {
            in_store_rq = false;
            let uid = line.rsplit(": ").next().unwrap_or_default().trim();
            got.push(Reception {
                sop_instance: uid.to_string(),
                fragments: Vec::new(),
            });
        } else if let Some(rest) = line.split("DIMSE receiveDataSetInFile: ").nth(1) {
            let n = rest
                .split(" bytes read")
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if let Some(r) = got.last_mut() {
                r.fragments.push((n, rest.contains("(last: YES)")));
            }
        }
    }
    got
}

/// getscu's account of a run (its messages, the fragments it read, the A-ABORT), for failure
/// messages: the whole trace log is long.
fn getscu_summary(out: &Output) -> String {
    let keep = |l: &str| {
        ["I:", "W:", "E:", "F:"].iter().any(|p| l.starts_with(p))
            || [
                "receiveDataSetInFile",
                "A-ABORT",
                "Aborted",
                "Affected SOP Instance UID",
                "DIMSE Status",
                "found twice",
            ]
            .iter()
            .any(|k| l.contains(k))
    };
    let all = out.all();
    let lines: Vec<&str> = all.lines().filter(|l| keep(l)).collect();
    format!(
        "$ {} -> exit {:?}{} after {:?}\n{}",
        out.program,
        out.code,
        if out.timed_out { " (TIMED OUT)" } else { "" },
        out.elapsed,
        lines.join("\n")
    )
}

/// Every entry of `dir` by name, hidden and temporary files included, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The transfer syntax and data set bytes of a Part 10 file.
fn dataset_of(file: &Path) -> (TransferSyntax, Vec<u8>) {
    let bytes = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let head = part10::read_head(&bytes).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ts_uid = head
        .meta
        .transfer_syntax_uid
        .unwrap_or_else(|| panic!("{}: no transfer syntax in the meta", file.display()));
    let ts = TransferSyntax::from_uid(&ts_uid)
        .unwrap_or_else(|e| panic!("{}: transfer syntax {ts_uid}: {e}", file.display()));
    (
        ts,
        bytes.get(head.data_start..).unwrap_or_default().to_vec(),
    )
}

/// The firewall's verdict at `safe` on a received file ("passes" or the refusal).
fn safe_verdict(file: &Path) -> String {
    let (ts, data) = dataset_of(file);
    let mut v = Validator::new(&ts, Limits::GATEWAY, Level::Safe);
    v.feed(&data);
    match v.finish().refusal {
        Some(r) => r.to_string(),
        None => "passes".into(),
    }
}

/// The first event of `rg` that `pred` accepts, waiting up to 10 s.
fn wait_event(rg: &Radguard, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let mut got = None;
    wait_until(Duration::from_secs(10), || {
        got = rg.events().into_iter().find(&pred);
        got.is_some()
    });
    got
}

// ------------------------------------------------------------------------------- tests

/// The script really puts the repeated element on the wire: getscu straight to it takes both
/// instances whole (two completed sub-operations), the malformed one as it came (bit
/// preserving), DCMTK's parser finds (0010,0020) twice in it, and the firewall's checks refuse
/// it with the duplicate check at the byte the script names.
#[test]
fn bad_get_scp_sends_a_repeated_element() {
    let scp = bad_get_scp(&[]);
    let recv = tmp_dir("getscu-direct");
    let out = getscu(scp.port, UPSTREAM, recv.path());
    let steps = scp.steps();
    let context = || format!("{}\n--- bad_get_scp.py ---\n{steps}", getscu_summary(&out));
    assert!(
        out.success(),
        "getscu straight to the script failed:\n{}",
        context()
    );
    assert!(
        out.all().contains("Number of Completed Suboperations : 2"),
        "two completed C-STORE sub-operations expected:\n{}",
        context()
    );
    assert_eq!(
        entries(recv.path()),
        [VALID_UID, BAD_UID],
        "getscu should have stored both instances:\n{}",
        context()
    );
    for n in [1, 2] {
        assert!(
            steps.contains(&format!("sub-operation {n}: C-STORE-RSP 0x0000")),
            "sub-operation {n} not answered with success:\n{}",
            context()
        );
    }
    let (at, len) = malformed(&scp)
        .unwrap_or_else(|| panic!("the script did not log the malformed data set:\n{steps}"));
    assert!(
        at > FILLER,
        "the repeated element at byte {at}, before the filler"
    );
    let got = receptions(&out);
    let bad = got
        .iter()
        .find(|r| r.sop_instance == BAD_UID)
        .unwrap_or_else(|| panic!("no C-STORE-RQ for {BAD_UID}:\n{}", context()));
    assert!(
        bad.complete() && bad.bytes() == len,
        "getscu should have read all {len} bytes of the malformed data set, got {bad:?}"
    );

    let file = recv.path().join(BAD_UID);
    let dump = dcmtk("dcmdump", &[file.as_os_str()]);
    assert!(
        dump.all()
            .contains("Element (0010,0020) found twice in one data set"),
        "DCMTK did not see the repeated Patient ID in what getscu received:\n{}",
        dump.text()
    );
    let verdict = safe_verdict(&file);
    assert!(
        verdict.starts_with(&format!("duplicate check failed at byte {at}:")),
        "the firewall's checks on the received data set: {verdict}"
    );
    assert_eq!(safe_verdict(&recv.path().join(VALID_UID)), "passes");
}

/// The C-GET case of docs/firewall.md as it happens: a valid instance, then the malformed one.
#[test]
fn malformed_get_sub_operation_is_withheld_and_both_associations_aborted() {
    get_through_relay(false);
}

/// The same with the malformed instance as the first sub-operation.
#[test]
fn malformed_first_get_sub_operation_is_withheld_and_both_associations_aborted() {
    get_through_relay(true);
}

fn get_through_relay(malformed_first: bool) {
    let mut extra = vec!["--verbose"];
    if malformed_first {
        extra.push("--malformed-first");
    }
    let scp = bad_get_scp(&extra);
    let (valid_n, bad_n) = if malformed_first { (2, 1) } else { (1, 2) };

    // Baseline: what getscu stores straight from the script.
    let direct = tmp_dir("getscu-direct");
    let base = getscu(scp.port, UPSTREAM, direct.path());
    assert!(
        base.success(),
        "getscu straight to the script failed:\n{}",
        getscu_summary(&base)
    );
    let (at, len) = malformed(&scp).expect("the script logged the malformed data set");

    // A relay route at the default firewall level; the peer may only echo and get CT.
    let cfg = Config::new()
        .peer(
            "viewer",
            &[CLIENT],
            &["127.0.0.1/32"],
            &["echo", "get"],
            &["CTImageStorage"],
            &[],
        )
        .route(UPSTREAM, scp.port, UPSTREAM);
    let toml = cfg.toml();
    assert!(
        !toml.contains("firewall"),
        "the route must use the default:\n{toml}"
    );
    let mut rg = Radguard::start_fresh(&toml);

    let recv = tmp_dir("getscu-relay");
    let before = scp.steps().len();
    let out = getscu(rg.port(), UPSTREAM, recv.path());
    // What the script logged for this C-GET (the baseline's steps come first).
    let steps = || scp.steps_since(before);
    let events = |rg: &Radguard| -> String {
        let mut lines = Vec::new();
        for e in rg.events() {
            if !matches!(
                e["event"].as_str(),
                Some("context-rejected" | "context-accepted")
            ) {
                lines.push(e.to_string());
            }
        }
        lines.join("\n")
    };
    let context = |rg: &Radguard| {
        format!(
            "{}\n--- bad_get_scp.py (this C-GET) ---\n{}\n--- radguard events ---\n{}",
            getscu_summary(&out),
            steps(),
            events(rg)
        )
    };
    assert!(!out.timed_out, "getscu timed out:\n{}", context(&rg));
    let got = receptions(&out);

    if !malformed_first {
        // The valid instance arrived whole and unchanged ...
        assert!(
            got.first()
                .is_some_and(|r| r.sop_instance == VALID_UID && r.complete()),
            "the valid instance did not arrive first and whole: {got:?}\n{}",
            context(&rg)
        );
        assert!(
            recv.path().join(VALID_UID).is_file(),
            "the valid instance was not stored:\n{}",
            context(&rg)
        );
        assert_eq!(
            dataset_of(&recv.path().join(VALID_UID)).1,
            dataset_of(&direct.path().join(VALID_UID)).1,
            "the valid instance was changed on its way through the gateway"
        );
        // ... and getscu's C-STORE-RSP for it reached the upstream, which only then sends the
        // malformed one (pynetdicom waits for each sub-operation's response). The script logs
        // the sub-operation's outcome: that response, or none (the association ended).
        let outcome = format!("sub-operation {valid_n}: ");
        scp.wait_step_since(before, &outcome, Duration::from_secs(15));
        assert!(
            steps().contains(&format!("{outcome}C-STORE-RSP 0x0000")),
            "getscu's C-STORE-RSP (success) for the valid sub-operation did not reach the \
             upstream:\n{}",
            context(&rg)
        );
    }

    // The upstream sent the malformed sub-operation.
    assert!(
        scp.wait_step_since(
            before,
            &format!("sub-operation {bad_n} (Patient ID (0010,0020) twice"),
            Duration::from_secs(15)
        ),
        "the upstream never sent the malformed sub-operation:\n{}",
        context(&rg)
    );

    // The gateway's alert: malformed-data-set, naming the instance, the check and the offset.
    let needle = format!("duplicate check failed at byte {at}");
    let alert = wait_event(&rg, |e| {
        e["event"] == "security-alert" && e["detail"].as_str().is_some_and(|d| d.contains(&needle))
    })
    .unwrap_or_else(|| panic!("no security-alert with {needle:?}:\n{}", context(&rg)));
    assert_eq!(alert["kind"], "malformed-data-set", "{alert:#}");
    let detail = alert["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(BAD_UID),
        "the alert does not name the instance: {detail}"
    );
    // ... and the association it ended.
    assert!(
        wait_event(&rg, |e| {
            e["event"] == "association-aborted"
                && e["why"].as_str().is_some_and(|w| w.contains(&needle))
        })
        .is_some(),
        "no association-aborted event naming the check:\n{}",
        context(&rg)
    );

    // The malformed data set streamed to getscu, but never its last fragment: getscu read some
    // of it, then the A-ABORT.
    let bad = got
        .iter()
        .find(|r| r.sop_instance == BAD_UID)
        .unwrap_or_else(|| panic!("getscu got no C-STORE-RQ for {BAD_UID}:\n{}", context(&rg)));
    assert!(
        !bad.complete() && bad.bytes() < len,
        "the malformed data set ({len} bytes) reached getscu whole: {bad:?}\n{}",
        context(&rg)
    );
    assert!(
        bad.bytes() > 0,
        "no fragment of the malformed data set streamed (the repeated element is at byte \
         {at}): {bad:?}\n{}",
        context(&rg)
    );
    // Nothing of it is stored, not even partly; the valid instance is.
    let expected: Vec<&str> = if malformed_first {
        vec![]
    } else {
        vec![VALID_UID]
    };
    assert_eq!(
        entries(recv.path()),
        expected,
        "getscu's output directory should hold the valid instance only:\n{}",
        context(&rg)
    );

    // The client's association ended with an A-ABORT: getscu read one and fails.
    let all = out.all();
    assert!(
        all.contains("A-ABORT PDU (on transport)"),
        "getscu read no A-ABORT:\n{}",
        context(&rg)
    );
    assert_ne!(out.code, Some(0), "getscu succeeded:\n{}", context(&rg));
    assert!(
        !all.contains("found twice"),
        "the repeated element reached the client:\n{}",
        context(&rg)
    );
    // So did the upstream's: the malformed sub-operation was never answered.
    assert!(
        scp.wait_step_since(before, "association aborted", Duration::from_secs(15)),
        "the upstream association was not aborted:\n{}",
        context(&rg)
    );
    assert!(
        !steps().contains(&format!("sub-operation {bad_n}: C-STORE-RSP")),
        "the malformed sub-operation was answered:\n{}",
        context(&rg)
    );

    // The gateway keeps serving: an echo through the same route, right after.
    assert!(rg.is_running(), "radguard exited:\n{}", rg.log());
    let echo = echoscu(rg.port(), CLIENT, UPSTREAM);
    assert!(
        echo.success(),
        "echoscu after the abort failed:\n{}\n{}",
        echo.text(),
        context(&rg)
    );
}
