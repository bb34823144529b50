//! The audit trail end to end, through the `radguard` binary with real peers: a real rsyslogd
//! (gtls, mutual TLS) receiving the PS3.15 A.5 messages of DCMTK storescu/findscu/movescu
//! sessions relayed to dcmqrscp; `radguard audit verify` on SQLite and PostgreSQL after a
//! session, after one byte of one record was changed and after a record was deleted; kill -9
//! during a transfer and a restart on the same data folder; a syslog receiver down during 500
//! C-STOREs; a store that cannot be written (associations refused with a transient
//! A-ASSOCIATE-RJ, admitted again when it returns); and no patient identifier in the logs.
//!
//! Prerequisites: `scripts/setup-test-env.sh` and `scripts/setup-radguard-audit.sh` (rsyslog,
//! rsyslog-gnutls, libxml2-utils, the PostgreSQL test cluster on 127.0.0.1:55432).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::audit_e2e::*;
use common::raw::{self, Answer, Conn, Pc, Rq};
use common::*;
use serde_json::Value;

/// The gateway's chain name in every test.
const NODE: &str = "gw-e2e";
/// The calling AE of the DCMTK clients.
const SCU: &str = "RG_SCU";

/// The default `[audit]` (SQLite under the data folder) with a short checkpoint interval.
fn sqlite_audit() -> String {
    format!("\n[audit]\nnode = {NODE:?}\ncheckpoint_every = 20\n")
}

/// A loopback peer (calling AE `SCU`) allowed echo and store, routed to an archive AE
/// `ARCHIVE` on 127.0.0.1:`port`.
fn archive_route(port: u16) -> Config {
    Config::new()
        .peer(
            "lab",
            &[SCU],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .route("ARCHIVE", port, "ARCHIVE")
}

/// storescu with extra options (e.g. a user identity) before the peer address.
fn storescu_with(port: u16, called: &str, opts: &[&str], paths: &[PathBuf]) -> Output {
    let mut args: Vec<String> = vec!["-v".into(), "-aet".into(), SCU.into(), "-aec".into()];
    args.push(called.into());
    args.extend(
        ["-to", "15", "-ta", "15", "-td", "60"]
            .iter()
            .map(|s| s.to_string()),
    );
    args.extend(opts.iter().map(|s| s.to_string()));
    if paths.iter().any(|p| p.is_dir()) {
        args.push("+sd".into());
    }
    args.extend(["127.0.0.1".into(), port.to_string()]);
    args.extend(paths.iter().map(|p| p.display().to_string()));
    dcmtk("storescu", &args)
}

/// The A.5 fields of one message whose EventID is `event` (and, if given, whose first
/// EventTypeCode is `type_code`) and that `f` accepts; panics listing all messages otherwise.
fn find_msg<'a>(
    msgs: &'a [Value],
    event: &str,
    type_code: Option<&str>,
    mut f: impl FnMut(&Value) -> bool,
) -> &'a Value {
    msgs.iter()
        .find(|m| {
            m["event_id"]["code"] == event
                && type_code.is_none_or(|t| m["type_codes"][0]["code"] == t)
                && f(m)
        })
        .unwrap_or_else(|| panic!("no {event}/{type_code:?} message as expected among:\n{msgs:#?}"))
}

/// The participant object of a message with this ID type code (e.g. "2" patient number,
/// "110180" study UID, "110181" SOP class UID).
fn object<'a>(m: &'a Value, id_type: &str) -> Option<&'a Value> {
    m["objects"]
        .as_array()?
        .iter()
        .find(|o| o["id_type"]["code"] == id_type)
}

/// The active participant of a message with this role ID code (110153 source, 110152
/// destination, 110150 application).
fn participant<'a>(m: &'a Value, role: &str) -> Option<&'a Value> {
    m["participants"].as_array()?.iter().find(|p| {
        p["roles"]
            .as_array()
            .is_some_and(|r| r.iter().any(|c| c["code"] == role))
    })
}

/// Asserts the patient participant object (A.5.3: type 1 person, role 1 patient, ID type
/// RFC-3881 2 "Patient Number").
fn assert_patient(m: &Value, id: &str, name: &str) {
    let p = object(m, "2").unwrap_or_else(|| panic!("no patient object in {m:#}"));
    assert_eq!(p["id"], id, "{m:#}");
    assert_eq!(p["id_type"]["scheme"], "RFC-3881", "{m:#}");
    assert_eq!(
        (p["type"].as_str(), p["role"].as_str()),
        (Some("1"), Some("1")),
        "{m:#}"
    );
    assert_eq!(p["name"], name, "{m:#}");
}

/// Asserts the study participant object (type 2 system object, role 3 report, ID type DCM
/// 110180 "Study Instance UID").
fn assert_study<'a>(m: &'a Value, uid: &str) -> &'a Value {
    let s = object(m, "110180").unwrap_or_else(|| panic!("no study object in {m:#}"));
    assert_eq!(s["id"], uid, "{m:#}");
    assert_eq!(s["id_type"]["scheme"], "DCM", "{m:#}");
    assert_eq!(
        (s["type"].as_str(), s["role"].as_str()),
        (Some("2"), Some("3")),
        "{m:#}"
    );
    s
}

/// Asserts an active participant: user ID, requestor flag, loopback network access point
/// (type 2: IP address).
fn assert_participant(p: Option<&Value>, m: &Value, user: &str, requestor: bool) {
    let p = p.unwrap_or_else(|| panic!("participant {user} missing in {m:#}"));
    assert_eq!(p["user_id"], user, "{m:#}");
    assert_eq!(
        p["requestor"],
        if requestor { "true" } else { "false" },
        "{m:#}"
    );
    assert_eq!(p["nap_id"], "127.0.0.1", "{m:#}");
    assert_eq!(p["nap_type"], "2", "{m:#}");
}

/// Waits until every record with an A.5 message reached rsyslog; returns (messages in arrival
/// order, the seqs the store says should have been sent).
fn wait_delivered(rs: &Rsyslog, store: &str, timeout: Duration) -> (Vec<Received>, Vec<u64>) {
    let deadline = Instant::now() + timeout;
    loop {
        let want = message_seqs(&read_trail(store, NODE), NODE);
        let got = rs.received();
        if got.len() >= want.len() || Instant::now() >= deadline {
            return (got, want);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts rsyslog received exactly the messages of `want`, each once, in chain order, as RFC
/// 5424 messages of facility authpriv from this node over TLS.
fn assert_each_once_in_order(got: &[Received], want: &[u64], rs: &Rsyslog) {
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "a message arrived twice: {seqs:?}\n{}",
        rs.log()
    );
    assert_eq!(
        seqs, want,
        "rsyslog must receive every message once, in chain order"
    );
    for r in got {
        assert_eq!(
            (
                r.hostname.as_str(),
                r.app.as_str(),
                r.msgid.as_str(),
                r.input.as_str()
            ),
            (NODE, "radguard", "IHE+RFC-3881", "imtcp"),
            "{r:?}"
        );
        let pri: u32 = r.pri.parse().unwrap_or(0);
        assert!((80..88).contains(&pri), "facility authpriv (10): PRI {pri}");
    }
}

// ---------------------------------------------------------------- syslog: a whole session

struct Session {
    _rs: Rsyslog,
    rg: Radguard,
    got: Vec<Received>,
    fields: Vec<Value>,
    _qr: DcmQrScp,
    _recv: StoreScp,
}

const USER: &str = "alice";
const PASSCODE: &str = "correct horse battery";

/// storescu (the CT series, with a User Identity), findscu (PatientID) and movescu (the study,
/// to RECV) through radguard to dcmqrscp, with the audit trail exported to a real rsyslogd over
/// mutual TLS. Returns once rsyslog has every message the store says it should have.
fn syslog_session() -> Session {
    let d = test_data();
    let rs = Rsyslog::start();
    let recv = StoreScp::start("RECV");
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port)]);
    let hash = radguard_tls::hash_passcode(PASSCODE).expect("argon2 hash");
    let cfg = Config::new()
        .open_peer("lab", &[SCU], &["RECV"])
        .route("QRSCP", qr.port, "QRSCP");
    let toml = format!(
        "{}\n[[user]]\nname = {USER:?}\npasscode_argon2 = {hash:?}\n{}{}",
        cfg.toml(),
        sqlite_audit(),
        rs.syslog_toml()
    );
    let rg = Radguard::start_fresh(&toml);

    storescu_with(
        rg.port(),
        "QRSCP",
        &["--user", USER, "--password", PASSCODE],
        &[d.ct_dir()],
    )
    .assert_success("storescu (user identity) -> radguard -> dcmqrscp");
    let f = findscu(
        rg.port(),
        SCU,
        "QRSCP",
        &[
            &format!("PatientID={}", d.ct_patient_id()),
            "StudyInstanceUID",
        ],
    );
    f.assert_success("findscu -> radguard -> dcmqrscp");
    assert_eq!(f.find_matches(), 1, "{}", f.text());
    movescu(
        rg.port(),
        SCU,
        "QRSCP",
        "RECV",
        &[&format!("StudyInstanceUID={}", d.ct_study_uid())],
    )
    .assert_success("movescu -> radguard -> dcmqrscp (to RECV)");
    assert_eq!(
        recv.files().len(),
        d.ct_files().len(),
        "the move delivered the series"
    );

    let store = sqlite_store(&rg.data_dir);
    let released = wait_trail(&store, NODE, Duration::from_secs(20), |rows| {
        rows.iter()
            .filter(|r| r.kind() == "association-released")
            .count()
            >= 3
    });
    assert!(
        released.is_some(),
        "the three associations were not all recorded"
    );
    let (got, want) = wait_delivered(&rs, &store, Duration::from_secs(30));
    assert_each_once_in_order(&got, &want, &rs);
    let xmls: Vec<&str> = got.iter().map(|r| r.msg.as_str()).collect();
    if let Err(e) = a5_validate(&xmls) {
        panic!("messages rsyslog received do not match the A.5.1 schema:\n{e}");
    }
    let fields = a5_fields(&xmls);
    Session {
        _rs: rs,
        rg,
        got,
        fields,
        _qr: qr,
        _recv: recv,
    }
}

#[test]
fn rsyslog_receives_a_store_find_move_session_as_a5_messages() {
    let d = test_data();
    let s = syslog_session();
    let m = &s.fields;
    let pid = d.ct_patient_id();
    let study = d.ct_study_uid();
    let name = dicom_attr(&d.ct_files()[0], "PatientName");
    assert_eq!(name, "TEST^CT^PATIENT");
    for x in m {
        assert_eq!(x["source_id"], NODE, "AuditSourceID: {x:#}");
    }

    // Application Activity (start) and Audit Recording Started.
    let start = find_msg(m, "110100", Some("110120"), |_| true);
    let app = participant(start, "110150").expect("application participant");
    assert_eq!(app["alt_user_id"], "AETITLES=RADGUARD", "{start:#}");
    find_msg(m, "110113", Some("110134"), |_| true);

    // The association with a verified User Identity: Login, then Logout at release.
    let login = find_msg(m, "110114", Some("110122"), |_| true);
    assert_eq!(login["outcome"], "0", "{login:#}");
    let user = login["participants"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["user_id"] == USER))
        .unwrap_or_else(|| panic!("user {USER} not named: {login:#}"));
    assert_eq!(user["requestor"], "true");
    assert_eq!(user["alt_user_id"], format!("AETITLES={SCU}"));
    assert_eq!(user["nap_id"], "127.0.0.1");
    find_msg(m, "110114", Some("110123"), |x| {
        x["participants"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["user_id"] == USER))
    });

    // The C-STOREs: Begin Transferring, then DICOM Instances Transferred with all 24 instances.
    let begin = find_msg(m, "110102", None, |x| object(x, "2").is_some());
    assert_patient(begin, &pid, &name);
    assert_study(begin, &study);
    assert_participant(participant(begin, "110153"), begin, SCU, true);
    assert_participant(participant(begin, "110152"), begin, "QRSCP", false);
    let done = find_msg(m, "110104", None, |_| true);
    assert_eq!(
        (done["action"].as_str(), done["outcome"].as_str()),
        (Some("C"), Some("0"))
    );
    assert_patient(done, &pid, &name);
    let st = assert_study(done, &study);
    assert_participant(participant(done, "110153"), done, SCU, true);
    assert_participant(participant(done, "110152"), done, "QRSCP", false);
    let classes = st["sop_classes"].as_array().expect("SOPClass");
    assert_eq!(classes.len(), 1, "{done:#}");
    assert_eq!(classes[0]["uid"], uid::CT_IMAGE_STORAGE);
    assert_eq!(classes[0]["n"], d.ct_files().len().to_string());
    let sent: BTreeSet<String> = d
        .ct_files()
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&d.dir).unwrap().display().to_string();
            d.sop_instance_uid(&rel)
        })
        .collect();
    let listed: BTreeSet<String> = classes[0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed, sent,
        "the message lists exactly the instances stored"
    );

    // The C-FIND: Query, requestor = the client, SOP class = Study Root FIND.
    let q = find_msg(m, "110112", None, |_| true);
    assert_eq!(q["action"], "E");
    assert_participant(participant(q, "110153"), q, SCU, true);
    assert_participant(participant(q, "110152"), q, "QRSCP", false);
    let sop = object(q, "110181").unwrap_or_else(|| panic!("no SOP class object: {q:#}"));
    assert_eq!(sop["id"], uid::STUDY_ROOT_FIND);
    assert_eq!(
        (sop["type"].as_str(), sop["role"].as_str()),
        (Some("2"), Some("3"))
    );

    // The C-MOVE: Begin Transferring to RECV, requested by the client.
    let mv = find_msg(m, "110102", None, |x| {
        x["participants"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["user_id"] == "RECV"))
    });
    let requestor = mv["participants"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["requestor"] == "true"))
        .unwrap_or_else(|| panic!("no requestor: {mv:#}"));
    assert_eq!(requestor["user_id"], SCU, "{mv:#}");

    // The XML travelled intact: what rsyslog wrote is what the store exports.
    let export = audit_cli(&[
        "export",
        "--store",
        &sqlite_store(&s.rg.data_dir),
        "--format",
        "atna",
        "--ae-title",
        "RADGUARD",
    ]);
    export.assert_success("radguard audit export --format atna");
    let exported: Vec<&str> = export.stdout.lines().filter(|l| !l.is_empty()).collect();
    for r in &s.got {
        assert!(
            exported.contains(&r.msg.as_str()),
            "message {} differs from the export:\n{}",
            r.seq,
            r.msg
        );
    }
}

/// PS3.15 A.5.3.2/A.5.3.10: a Query message names the patient when known and carries the query
/// data set; a Begin Transferring message for a C-MOVE names the study (M) and the patient (M).
/// The gateway reports each query/retrieve request with the identifier's bytes and the patient
/// and study it names.
#[test]
fn query_and_move_messages_name_the_patient_and_study() {
    let d = test_data();
    let s = syslog_session();
    let pid = d.ct_patient_id();
    let q = find_msg(&s.fields, "110112", None, |_| true);
    let sop = object(q, "110181").expect("SOP class object");
    let query = sop["query"].as_str().unwrap_or_default();
    assert!(!query.is_empty(), "ParticipantObjectQuery is empty: {q:#}");
    assert!(
        object(q, "2").is_some_and(|p| p["id"] == pid.as_str()),
        "{q:#}"
    );
    let mv = find_msg(&s.fields, "110102", None, |x| {
        x["participants"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["user_id"] == "RECV"))
    });
    assert_study(mv, &d.ct_study_uid());
    // The move's identifier names only the study (Study Root, STUDY level): the gateway cannot
    // name the patient without a lookup it does not do, so no patient object is claimed here.
}

// ------------------------------------------------------------------- verify and tampering

/// Quotes a string as an SQL literal (SQLite and PostgreSQL with standard strings).
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `entry` with one byte changed: the first character of `needle` inside it.
fn one_byte_changed(entry: &str, needle: &str) -> String {
    let at = entry
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in {entry}"));
    let mut b = entry.as_bytes().to_vec();
    b[at] = if b[at] == b'X' { b'Y' } else { b'X' };
    let changed = String::from_utf8(b).unwrap();
    let differing = entry
        .bytes()
        .zip(changed.bytes())
        .filter(|(a, c)| a != c)
        .count();
    assert_eq!((differing, changed.len()), (1, entry.len()));
    changed
}

/// A session whose records name the patient: one association storing three CT slices, then
/// an echo association.
fn store_session(rg: &Radguard, called: &str) {
    let d = test_data();
    storescu(rg.port(), SCU, called, &d.ct_files()[..3])
        .assert_success("storescu -> radguard -> storescp");
    echoscu(rg.port(), SCU, called).assert_success("echoscu -> radguard -> storescp");
}

/// verify passes; one changed byte in one record → exit 1 naming that record; the byte put
/// back → passes again; a deleted record → exit 1 naming that record. `exec` runs SQL against
/// the store's tables.
fn tamper_suite(store: &str, key: &Path, exec: &dyn Fn(&str)) {
    let d = test_data();
    let key = key.display().to_string();
    let (code, v, out) = audit_verify(store, &["--key", &key]);
    assert_eq!(code, Some(0), "verify after the session:\n{}", out.text());
    let chain = &v["chains"][0];
    let rows = read_trail(store, NODE);
    assert_eq!(chain["records"], rows.len() as u64, "{v:#}");
    assert_eq!(chain["signatures_checked"], true, "{v:#}");
    assert!(
        chain["checkpoints_matched"].as_u64().unwrap_or(0) >= 1,
        "{v:#}"
    );

    // One byte of the record that names the patient.
    let target = rows
        .iter()
        .find(|r| r.kind() == "transfer-begun")
        .expect("a transfer-begun record");
    let changed = one_byte_changed(&target.entry, &d.ct_patient_id());
    let set = |entry: &str| {
        exec(&format!(
            "UPDATE audit_record SET entry = {} WHERE node = {} AND seq = {}",
            sql_str(entry),
            sql_str(NODE),
            target.seq
        ))
    };
    set(&changed);
    let (code, v, out) = audit_verify(store, &["--key", &key]);
    assert_eq!(code, Some(1), "verify must fail:\n{}", out.text());
    let fault = &v["chains"][0]["fault"];
    assert_eq!(fault["fault"], "altered", "{v:#}");
    assert_eq!(
        fault["seq"], target.seq,
        "names exactly the changed record: {v:#}"
    );
    let text = audit_cli(&["verify", "--store", store, "--key", &key]);
    assert_eq!(text.code, Some(1));
    assert!(
        text.stdout
            .contains(&format!("FAIL {NODE}: record {} was altered", target.seq)),
        "{}",
        text.text()
    );
    set(&target.entry);
    let (code, _, out) = audit_verify(store, &["--key", &key]);
    assert_eq!(code, Some(0), "byte restored:\n{}", out.text());

    // A record deleted from the middle.
    let gone = rows[rows.len() / 2].seq;
    exec(&format!(
        "DELETE FROM audit_record WHERE node = {} AND seq = {gone}",
        sql_str(NODE)
    ));
    let (code, v, out) = audit_verify(store, &["--key", &key]);
    assert_eq!(code, Some(1), "verify must fail:\n{}", out.text());
    let fault = &v["chains"][0]["fault"];
    assert_eq!(fault["fault"], "removed", "{v:#}");
    assert_eq!(
        fault["seq"], gone,
        "names exactly the deleted record: {v:#}"
    );
    let text = audit_cli(&["verify", "--store", store, "--key", &key]);
    assert!(
        text.stdout
            .contains(&format!("FAIL {NODE}: record {gone} was removed")),
        "{}",
        text.text()
    );
}

#[test]
fn verify_names_the_altered_or_deleted_record_sqlite() {
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-sqlite");
    let cfg = archive_route(scp.port);
    let rg = Radguard::start(&format!("{}{}", cfg.toml(), sqlite_audit()), data.path());
    store_session(&rg, "ARCHIVE");
    let store = sqlite_store(data.path());
    // While it runs, the chain verifies too.
    let (code, _, out) = audit_verify(&store, &[]);
    assert_eq!(
        code,
        Some(0),
        "verify while the gateway runs:\n{}",
        out.text()
    );
    assert!(rg.stop().success());
    let db = data.path().join("audit.sqlite");
    tamper_suite(&store, &data.path().join("audit-signing.key.pub"), &|sql| {
        sqlite_exec(&db, sql).assert_success("SQL on the SQLite store");
    });
}

#[test]
fn verify_names_the_altered_or_deleted_record_postgresql() {
    let pg = PgSchema::new("verify");
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-pg");
    let cfg = archive_route(scp.port);
    let rg = Radguard::start(
        &format!(
            "{}{}",
            cfg.toml(),
            pg.audit_toml(NODE, "checkpoint_every = 20\n")
        ),
        data.path(),
    );
    // Printed before "listening", but read from the child's stdout by another thread: wait for
    // it rather than assume it has been read.
    assert!(
        wait_until(Duration::from_secs(30), || rg
            .stdout_lines()
            .iter()
            .any(|l| l.contains("audit trail in PostgreSQL"))),
        "{:?}",
        rg.stdout_lines()
    );
    store_session(&rg, "ARCHIVE");
    assert!(rg.stop().success());
    assert!(
        !data.path().join("audit.sqlite").exists(),
        "no SQLite store when PostgreSQL is configured"
    );
    tamper_suite(
        &pg.spec(),
        &data.path().join("audit-signing.key.pub"),
        &|sql| {
            pg.exec(sql);
        },
    );
}

// ---------------------------------------------------------------------- crash and restart

#[test]
fn kill_9_during_a_transfer_then_restart_verifies_and_appends() {
    let d = test_data();
    // storescp answers each C-STORE after a second: the series takes ~24 s.
    let scp = StoreScp::start_with("ARCHIVE", &["--sleep-after", "1"]);
    let data = tmp_dir("rg-audit-crash");
    let cfg = archive_route(scp.port);
    let toml = format!("{}{}", cfg.toml(), sqlite_audit());
    let mut rg = Radguard::start(&toml, data.path());
    let store = sqlite_store(data.path());

    let logs = tmp_dir("storescu-bg");
    let mut cmd = Command::new(require_tool("/usr/bin/storescu"));
    cmd.env("TCP_NODELAY", "1")
        .args([
            "-v", "-aet", SCU, "-aec", "ARCHIVE", "-to", "15", "-ta", "15",
        ])
        .args(["-td", "60", "+sd", "127.0.0.1", &rg.port().to_string()])
        .arg(d.ct_dir());
    let mut client = Proc::spawn("storescu", &mut cmd, logs.path(), false);
    // Mid-transfer: a few responses recorded, the series far from done.
    let mid = wait_trail(&store, NODE, Duration::from_secs(60), |rows| {
        rows.iter().filter(|r| r.kind() == "dimse-response").count() >= 3
    });
    assert!(
        mid.is_some(),
        "the transfer did not start:\n{}",
        client.log()
    );
    rg.signal("KILL");
    assert!(
        rg.wait_exit(Duration::from_secs(10)).is_some(),
        "radguard survived kill -9"
    );
    assert!(
        wait_until(Duration::from_secs(60), || client.exited().is_some()),
        "storescu did not end after the gateway died"
    );
    assert!(
        scp.files().len() < d.ct_files().len(),
        "the kill did not interrupt the transfer"
    );

    // The chain the crash left behind verifies.
    let before = read_trail(&store, NODE);
    let (code, _, out) = audit_verify(&store, &[]);
    assert_eq!(code, Some(0), "verify after kill -9:\n{}", out.text());
    assert!(
        !before.iter().any(|r| r.kind() == "association-released"),
        "the transfer was cut"
    );

    // Restart on the same data folder: new records extend the same chain.
    let rg2 = Radguard::start(&toml, data.path());
    store_session(&rg2, "ARCHIVE");
    let after = wait_trail(&store, NODE, Duration::from_secs(20), |rows| {
        rows.iter()
            .filter(|r| r.kind() == "association-released")
            .count()
            >= 2
    })
    .expect("the new associations were recorded");
    let seqs: Vec<u64> = after.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=after.len() as u64).collect::<Vec<_>>(),
        "one gapless chain"
    );
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            a.entry, b.entry,
            "record {} changed across the restart",
            a.seq
        );
    }
    let restarted = &after[before.len()];
    assert_eq!(
        restarted.kind(),
        "audit-started",
        "the restart appends after the last record the crash left"
    );
    assert!(after.len() > before.len() + 10, "new records appended");
    let (code, v, out) = audit_verify(&store, &[]);
    assert_eq!(code, Some(0), "verify after the restart:\n{}", out.text());
    assert_eq!(v["chains"][0]["records"], after.len() as u64);
    assert!(rg2.stop().success());
    let (code, v, out) = audit_verify(
        &store,
        &[
            "--key",
            &data
                .path()
                .join("audit-signing.key.pub")
                .display()
                .to_string(),
        ],
    );
    assert_eq!(code, Some(0), "verify after a clean stop:\n{}", out.text());
    assert_eq!(v["chains"][0]["signatures_checked"], true);
    drop(client);
}

// -------------------------------------------------------------- syslog receiver down for a while

/// One association storing one small CT (Implicit VR LE) with `sop_instance`; Ok when the
/// upstream answered success and the association was released.
fn raw_store(port: u16, called: &str, sop_instance: &str) -> Result<(), String> {
    let mut c = Conn::connect(port);
    let rq = Rq::new(SCU, called).contexts(vec![Pc::new(3, raw::CT_STORAGE, &[raw::IMPLICIT_LE])]);
    let ac = c.associate(&rq).map_err(|a| format!("association: {a}"))?;
    if ac.result(3) != Some(0) {
        return Err(format!("context refused: {ac:?}"));
    }
    let cmd = raw::store_rq(1, raw::CT_STORAGE, sop_instance);
    let data = raw::ct_dataset(sop_instance);
    c.send(&raw::pdata(&[
        (3, raw::CMD_LAST, &cmd),
        (3, raw::DATA_LAST, &data),
    ]))
    .map_err(|e| format!("send: {e}"))?;
    let rsp = c.read_pdu(Duration::from_secs(30));
    let status = match &rsp {
        Answer::Pdu(b) => raw::response_of(b).and_then(|c| c.status),
        _ => None,
    };
    if status != Some(0) {
        return Err(format!("C-STORE answered {rsp}"));
    }
    c.send(&raw::RELEASE_RQ)
        .map_err(|e| format!("release: {e}"))?;
    match c.read_pdu(Duration::from_secs(15)).pdu_type() {
        Some(0x06) => Ok(()),
        other => Err(format!("no A-RELEASE-RP: {other:?}")),
    }
}

#[test]
fn syslog_receiver_down_during_500_stores_gets_every_message_once_in_order() {
    let mut rs = Rsyslog::start();
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-down");
    let cfg = archive_route(scp.port);
    let toml = format!("{}{}{}", cfg.toml(), sqlite_audit(), rs.syslog_toml());
    let rg = Radguard::start(&toml, data.path());
    let store = sqlite_store(data.path());
    wait_trail(&store, NODE, Duration::from_secs(20), |rows| {
        rows.iter().any(|r| r.kind() == "application-start")
    })
    .expect("the start was recorded");
    let (got, want) = wait_delivered(&rs, &store, Duration::from_secs(30));
    assert!(want.len() >= 2, "audit started, application started");
    assert_each_once_in_order(&got, &want, &rs);

    rs.stop();
    const N: usize = 500;
    for i in 0..N {
        raw_store(
            rg.port(),
            "ARCHIVE",
            &format!("1.2.826.0.1.3680043.10.1234.7.9.{i}"),
        )
        .unwrap_or_else(|e| panic!("store {i}: {e}"));
    }
    assert_eq!(scp.files().len(), N);
    let rows = wait_trail(&store, NODE, Duration::from_secs(30), |rows| {
        rows.iter()
            .filter(|r| r.kind() == "association-released")
            .count()
            == N
    })
    .expect("all 500 associations recorded");
    let pending = message_seqs(&rows, NODE);
    assert!(
        pending.len() >= want.len() + 2 * N,
        "each association has Begin Transferring and Instances Transferred: {}",
        pending.len()
    );
    assert_eq!(
        rs.received().len(),
        got.len(),
        "nothing arrives while rsyslog is down"
    );

    // The receiver returns: everything that waited arrives, once, in order.
    rs.resume();
    let (got, want) = wait_delivered(&rs, &store, Duration::from_secs(90));
    assert!(want.len() >= pending.len());
    assert_each_once_in_order(&got, &want, &rs);

    // A graceful restart of the gateway resends nothing: its cursor is in the store.
    assert!(rg.stop().success());
    let rg = Radguard::start(&toml, data.path());
    wait_trail(&store, NODE, Duration::from_secs(20), |rows| {
        rows.iter()
            .filter(|r| r.kind() == "application-start")
            .count()
            == 2
    })
    .expect("the restart was recorded");
    let (got, want) = wait_delivered(&rs, &store, Duration::from_secs(30));
    // The first run's last records (written after its exporter stopped) arrive now.
    let tail = read_trail(&store, NODE);
    let stopped = tail
        .iter()
        .find(|r| r.kind() == "audit-stopped")
        .expect("the first run's audit-stopped record");
    assert!(got.iter().any(|r| r.seq == stopped.seq));
    assert_each_once_in_order(&got, &want, &rs);
    let xmls: Vec<&str> = got.iter().step_by(50).map(|r| r.msg.as_str()).collect();
    a5_validate(&xmls).unwrap_or_else(|e| panic!("A.5.1 schema:\n{e}"));
    drop(rg);
}

// ------------------------------------------------------------- the store cannot be written

/// One C-ECHO association: Ok(()) when accepted, answered and released; Err(the answer) when
/// the association was not accepted.
fn raw_echo(port: u16) -> Result<(), Answer> {
    let mut c = Conn::connect(port);
    let rq =
        Rq::new(SCU, "ARCHIVE").contexts(vec![Pc::new(1, raw::VERIFICATION, &[raw::IMPLICIT_LE])]);
    c.associate(&rq)?;
    c.send(&raw::pdata(&[(1, raw::CMD_LAST, &raw::echo_rq(1))]))
        .map_err(|e| Answer::Error(e.to_string()))?;
    let rsp = c.read_pdu(Duration::from_secs(15));
    let ok =
        matches!(&rsp, Answer::Pdu(b) if raw::response_of(b).and_then(|c| c.status) == Some(0));
    if !ok {
        return Err(rsp);
    }
    let _ = c.send(&raw::RELEASE_RQ);
    let _ = c.read_pdu(Duration::from_secs(15));
    Ok(())
}

/// Echo associations every 100 ms until one is refused with A-ASSOCIATE-RJ 2/3/2 (rejected
/// transient, service provider (presentation), local limit exceeded); returns the count of
/// (accepted, refused) associations it made. Panics after `timeout`.
fn until_refused(port: u16, timeout: Duration) -> (usize, usize) {
    let deadline = Instant::now() + timeout;
    let mut accepted = 0;
    loop {
        match raw_echo(port) {
            Ok(()) => accepted += 1,
            Err(a) if a.reject() == Some((2, 3, 2)) => return (accepted, 1),
            Err(a) => panic!("expected accepted or RJ 2/3/2, got {a}"),
        }
        assert!(
            Instant::now() < deadline,
            "associations still admitted after {timeout:?} with an unwritable store"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Echo associations every 200 ms until one is accepted; returns the RJ 2/3/2 count on the way.
fn until_admitted(port: u16, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut refused = 0;
    loop {
        match raw_echo(port) {
            Ok(()) => return refused,
            Err(a) if a.reject() == Some((2, 3, 2)) => refused += 1,
            Err(a) => panic!("expected RJ 2/3/2 or an accepted association, got {a}"),
        }
        assert!(
            Instant::now() < deadline,
            "associations still refused {timeout:?} after the store came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Nothing was lost while the store could not be written: every association, admitted or
/// refused (with the audit reason), is in the trail.
fn assert_all_recorded(store: &str, accepted: usize, refused: usize) {
    let count = |rows: &[TrailRow], kind: &str| rows.iter().filter(|r| r.kind() == kind).count();
    let rows = wait_trail(store, NODE, Duration::from_secs(20), |rows| {
        count(rows, "association-released") >= accepted
            && count(rows, "association-refused") >= refused
    });
    let rows = rows.unwrap_or_else(|| {
        let rows = read_trail(store, NODE);
        panic!(
            "expected {accepted} released and {refused} refused associations, the trail has \
             {} and {}",
            count(&rows, "association-released"),
            count(&rows, "association-refused")
        )
    });
    assert_eq!(count(&rows, "association-refused"), refused);
    assert_eq!(count(&rows, "association-released"), accepted);
    for r in rows.iter().filter(|r| r.kind() == "association-refused") {
        assert!(
            r.entry.contains("the audit trail cannot be written"),
            "{}",
            r.entry
        );
    }
}

#[test]
fn sqlite_store_moved_away_refuses_associations_then_admits_them_again() {
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-moved");
    let cfg = archive_route(scp.port);
    let rg = Radguard::start(&format!("{}{}", cfg.toml(), sqlite_audit()), data.path());
    let port = rg.port();
    let mut refused = until_admitted(port, Duration::from_secs(20));
    let mut accepted = 1;
    // The store file is renamed (an operator's mistake, or someone removing the trail): SQLite
    // would go on writing to the renamed file; the store refuses instead.
    let db = data.path().join("audit.sqlite");
    let moved = data.path().join("audit.sqlite.moved");
    std::fs::rename(&db, &moved).unwrap();
    let (a, r) = until_refused(port, Duration::from_secs(20));
    accepted += a;
    refused += r;
    let v = probe(port, SCU, "ARCHIVE", &["echo"]);
    assert_rejected(&v, 2, 3, 2);
    refused += 1;
    let out = storescu(port, SCU, "ARCHIVE", &test_data().ct_files()[..1]);
    assert!(
        !out.success() && out.all().contains("Association Rejected"),
        "storescu must see the rejection:\n{}",
        out.text()
    );
    refused += 1;
    assert!(scp.files().is_empty(), "nothing relayed unaudited");
    std::fs::rename(&moved, &db).unwrap();
    refused += until_admitted(port, Duration::from_secs(30));
    accepted += 1;
    assert_all_recorded(&sqlite_store(data.path()), accepted, refused);
    assert!(rg.stop().success());
    let (code, _, out) = audit_verify(&sqlite_store(data.path()), &[]);
    assert_eq!(code, Some(0), "{}", out.text());
}

#[test]
fn postgresql_store_failing_refuses_associations_then_admits_them_again() {
    let pg = PgSchema::new("down");
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-unwritable");
    let cfg = archive_route(scp.port);
    let rg = Radguard::start(
        &format!("{}{}", cfg.toml(), pg.audit_toml(NODE, "")),
        data.path(),
    );
    let port = rg.port();
    // Right after start the writer may not have reached the store yet (see
    // `associations_right_after_start_are_admitted`): wait for the first admission.
    let mut refused = until_admitted(port, Duration::from_secs(20));
    let mut accepted = 1;

    // 1. The store refuses writes (as with a full disk or revoked rights).
    pg.exec(
        "CREATE FUNCTION rg_refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'audit store read-only (test)'; END$$; \
         CREATE TRIGGER rg_refuse BEFORE INSERT ON audit_record \
         FOR EACH ROW EXECUTE FUNCTION rg_refuse();",
    );
    let (a, r) = until_refused(port, Duration::from_secs(20));
    accepted += a;
    refused += r;
    // A third-party client sees the same transient rejection.
    let v = probe(port, SCU, "ARCHIVE", &["echo"]);
    assert_rejected(&v, 2, 3, 2);
    refused += 1;
    pg.exec("DROP TRIGGER rg_refuse ON audit_record; DROP FUNCTION rg_refuse();");
    refused += until_admitted(port, Duration::from_secs(30));
    accepted += 1;

    // 2. The database ends the gateway's sessions (restart, failover).
    assert!(
        pg.terminate_gateway_sessions() >= 1,
        "the gateway's sessions"
    );
    let (a, r) = until_refused(port, Duration::from_secs(20));
    accepted += a;
    refused += r;
    refused += until_admitted(port, Duration::from_secs(30));
    accepted += 1;

    assert_all_recorded(&pg.spec(), accepted, refused);
    assert!(rg.stop().success());
    let (code, _, out) = audit_verify(
        &pg.spec(),
        &[
            "--key",
            &data
                .path()
                .join("audit-signing.key.pub")
                .display()
                .to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{}", out.text());
}

/// A TCP relay in front of the PostgreSQL test server that, once armed, forwards the client's
/// next COMMIT, waits for the server's CommandComplete (so the commit is done), drops it and
/// closes both connections: the gateway sees its session end with the outcome unknown (as
/// when the database ends the session, fails over or the network drops, right after COMMIT).
struct CutAfterCommit {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set once a COMMIT was answered by the server and the answer dropped.
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CutAfterCommit {
    /// Relays to the server that the key=value connection string `conn` names.
    fn start(conn: &str) -> Self {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let kv = |k: &str| {
            conn.split_whitespace()
                .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        let host = kv("host").unwrap_or_else(|| "127.0.0.1".into());
        let port: u16 = kv("port").map_or(5432, |p| p.parse().unwrap());
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay_port = l.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let (a2, c2) = (armed.clone(), cut.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = TcpStream::connect((host.as_str(), port)) else {
                    return;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let cutting = Arc::new(AtomicBool::new(false));
                let (mut c_rd, mut s_wr) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (armed, flag) = (a2.clone(), cutting.clone());
                // Client to server, message by message (the startup message has no type byte).
                std::thread::spawn(move || {
                    let mut first = true;
                    loop {
                        let head_len = if first { 4 } else { 5 };
                        let mut head = vec![0u8; head_len];
                        if c_rd.read_exact(&mut head).is_err() {
                            break;
                        }
                        let n = u32::from_be_bytes(head[head_len - 4..].try_into().unwrap());
                        let mut body = vec![0u8; (n as usize).saturating_sub(4)];
                        if c_rd.read_exact(&mut body).is_err() {
                            break;
                        }
                        if !first
                            && head[0] == b'Q'
                            && body.starts_with(b"COMMIT")
                            && armed.swap(false, Ordering::SeqCst)
                        {
                            flag.store(true, Ordering::SeqCst);
                        }
                        first = false;
                        head.extend_from_slice(&body);
                        if s_wr.write_all(&head).is_err() {
                            break;
                        }
                    }
                    let _ = s_wr.shutdown(Shutdown::Write);
                });
                let cut = c2.clone();
                // Server to client, message by message; the CommandComplete of an armed
                // COMMIT is dropped and both connections closed.
                std::thread::spawn(move || {
                    loop {
                        let mut head = [0u8; 5];
                        if server.read_exact(&mut head).is_err() {
                            break;
                        }
                        let n = u32::from_be_bytes(head[1..].try_into().unwrap());
                        let mut body = vec![0u8; (n as usize).saturating_sub(4)];
                        if server.read_exact(&mut body).is_err() {
                            break;
                        }
                        if cutting.load(Ordering::SeqCst)
                            && head[0] == b'C'
                            && body.starts_with(b"COMMIT")
                        {
                            cut.store(true, Ordering::SeqCst);
                            let _ = client.shutdown(Shutdown::Both);
                            let _ = server.shutdown(Shutdown::Both);
                            return;
                        }
                        if client.write_all(&[&head[..], &body[..]].concat()).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(Shutdown::Write);
                });
            }
        });
        CutAfterCommit {
            port: relay_port,
            armed,
            cut,
        }
    }

    /// `conn` (key=value) with its host and port replaced by the relay's.
    fn conn(&self, conn: &str) -> String {
        let mut s = format!("host=127.0.0.1 port={}", self.port);
        for p in conn.split_whitespace() {
            if !p.starts_with("host=") && !p.starts_with("port=") {
                s.push(' ');
                s.push_str(p);
            }
        }
        s
    }
}

/// The append that brings the store back holds the associations refused while it failed; the
/// session ends after the server committed it and before its answer reached the gateway. The
/// gateway retries that append on a new session: each refusal is in the trail once. (Written
/// again, the trail held more refused associations than the client saw — a clean-clone CI run
/// on a busy machine saw 9 for 8 in the test above, where the database ends the gateway's
/// sessions.)
#[test]
fn postgresql_commit_answer_lost_keeps_each_refusal_once() {
    use std::sync::atomic::Ordering;
    let pg = PgSchema::new("lostans");
    let relay = CutAfterCommit::start(&pg.conn);
    let scp = StoreScp::start("ARCHIVE");
    let data = tmp_dir("rg-audit-lostans");
    let cfg = archive_route(scp.port);
    let audit = pg.audit_toml(NODE, "").replace(
        &format!("{:?}", pg.gateway_conn()),
        &format!("{:?}", relay.conn(&pg.gateway_conn())),
    );
    assert!(audit.contains(&format!("port={}", relay.port)), "{audit}");
    let rg = Radguard::start(&format!("{}{audit}", cfg.toml()), data.path());
    let port = rg.port();
    let mut refused = until_admitted(port, Duration::from_secs(20));
    let mut accepted = 1;

    // The store refuses writes; a few associations are refused meanwhile.
    pg.exec(
        "CREATE FUNCTION rg_refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN RAISE EXCEPTION 'audit store read-only (test)'; END$$; \
         CREATE TRIGGER rg_refuse BEFORE INSERT ON audit_record \
         FOR EACH ROW EXECUTE FUNCTION rg_refuse();",
    );
    let (a, r) = until_refused(port, Duration::from_secs(20));
    accepted += a;
    refused += r;
    for _ in 0..3 {
        match raw_echo(port) {
            Err(a) if a.reject() == Some((2, 3, 2)) => refused += 1,
            Err(a) => panic!("expected RJ 2/3/2 while the store fails, got {a}"),
            Ok(()) => panic!("admitted while the store fails"),
        }
    }
    // The store comes back; the answer to the next COMMIT (the queued records) is lost.
    relay.armed.store(true, Ordering::SeqCst);
    pg.exec("DROP TRIGGER rg_refuse ON audit_record; DROP FUNCTION rg_refuse();");
    refused += until_admitted(port, Duration::from_secs(30));
    accepted += 1;
    assert!(
        relay.cut.load(Ordering::SeqCst),
        "no COMMIT was answered by the server and the answer dropped"
    );

    assert_all_recorded(&pg.spec(), accepted, refused);
    assert!(rg.stop().success());
    let (code, _, out) = audit_verify(
        &pg.spec(),
        &[
            "--key",
            &data
                .path()
                .join("audit-signing.key.pub")
                .display()
                .to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{}", out.text());
}

/// `radguard serve` prints its listening line and accepts before the audit writer has read
/// the chain head from the store; until then the admission watch says "store not ok" and new
/// associations get A-ASSOCIATE-RJ 2/3/2. Made deterministic here: the store's head table is
/// locked for a few seconds while the gateway starts (its connection and schema check pass, the
/// head read waits). serve should wait (bounded) for the writer's first contact with the store
/// before it prints the listening line and accepts.
#[test]
fn associations_right_after_start_are_admitted() {
    let scp = StoreScp::start("ARCHIVE");
    let cfg = archive_route(scp.port);
    let pg = PgSchema::new("start");
    // The tables exist (as after any earlier run).
    let spec = radguard_audit::StoreSpec::parse(&pg.spec()).unwrap();
    drop(spec.open().expect("create the store's tables"));
    let logs = tmp_dir("pg-lock");
    let mut cmd = Command::new(require_audit_tool(PSQL));
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &pg.conn, "-c"])
        .arg(format!(
            "BEGIN; LOCK TABLE {}.audit_head IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;",
            pg.name
        ));
    let mut lock = Proc::spawn("psql-lock", &mut cmd, logs.path(), false);
    let locked = wait_until(Duration::from_secs(10), || {
        pg.exec(&format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = '{}' AND c.relname = 'audit_head' AND l.granted \
             AND l.mode = 'AccessExclusiveLock'",
            pg.name
        ))
        .trim()
            == "1"
    });
    assert!(locked, "the lock was not taken:\n{}", lock.log());
    let rg = Radguard::start_fresh(&format!("{}{}", cfg.toml(), pg.audit_toml(NODE, "")));
    let first = raw_echo(rg.port());
    assert!(wait_until(Duration::from_secs(20), || lock
        .exited()
        .is_some()));
    if let Err(a) = first {
        panic!("the first association after the listening line got {a}");
    }
}

// --------------------------------------------------------------------------- clean logs

#[test]
fn logs_carry_no_patient_identifiers_while_the_audit_store_does_sqlite() {
    logs_stay_clean(&sqlite_audit(), None);
}

/// At DEBUG, tokio-postgres logs every statement with its parameters: the audit entries, with
/// patient IDs and names. Passes once serve's log filter always adds
/// `tokio_postgres::query=off` (checked by hand with
/// `RADGUARD_LOG=trace,tokio_postgres::query=off`).
#[test]
fn logs_carry_no_patient_identifiers_while_the_audit_store_does_postgresql() {
    let pg = PgSchema::new("logs");
    logs_stay_clean(&pg.audit_toml(NODE, ""), Some(&pg.spec()));
}

/// A store, find and move session with the most verbose logs an operator can turn on (every
/// crate at trace level): no patient ID, patient name, study UID or accession number of the
/// test data in radguard's stdout or stderr, while the audit store (`store`; default: the
/// SQLite file) names them.
fn logs_stay_clean(audit_toml: &str, store: Option<&str>) {
    let d = test_data();
    let recv = StoreScp::start("RECV");
    let qr = DcmQrScp::start("QRSCP", &[("RECV", recv.port)]);
    let cfg = Config::new()
        .open_peer("lab", &[SCU], &["RECV"])
        .route("QRSCP", qr.port, "QRSCP");
    let toml = format!("{}{audit_toml}", cfg.toml());
    let data = tmp_dir("rg-audit-logs");
    let mut rg = RadguardEnv::start(&toml, data.path(), &[("RADGUARD_LOG", "trace")]);
    let pid = d.ct_patient_id();
    let study = d.ct_study_uid();
    let name = dicom_attr(&d.ct_files()[0], "PatientName");
    let accession = dicom_attr(&d.ct_files()[0], "AccessionNumber");
    assert!(!name.is_empty() && !accession.is_empty());

    storescu(rg.port, SCU, "QRSCP", &[d.ct_dir()]).assert_success("storescu");
    let f = findscu(
        rg.port,
        SCU,
        "QRSCP",
        &[
            &format!("PatientID={pid}"),
            "PatientName",
            "StudyInstanceUID",
        ],
    );
    f.assert_success("findscu");
    assert_eq!(f.find_matches(), 1);
    movescu(
        rg.port,
        SCU,
        "QRSCP",
        "RECV",
        &[&format!("StudyInstanceUID={study}")],
    )
    .assert_success("movescu");
    let store = store.map_or_else(|| sqlite_store(data.path()), str::to_string);
    wait_trail(&store, NODE, Duration::from_secs(20), |rows| {
        rows.iter()
            .filter(|r| r.kind() == "association-released")
            .count()
            >= 3
    })
    .expect("the session was recorded");
    assert!(rg.stop().success());
    let rg_log = rg.log();
    assert!(
        rg_log.contains("association-accepted") && rg_log.contains("dimse-response"),
        "the events were logged at trace level too"
    );
    for (what, value) in [
        ("patient ID", pid.as_str()),
        ("patient name", name.as_str()),
        ("study UID", study.as_str()),
        ("accession number", accession.as_str()),
    ] {
        assert!(
            !rg_log.contains(value),
            "the gateway's log names the {what} {value:?}"
        );
    }

    // The audit store has them, for whoever may read it.
    let found = audit_cli(&[
        "search",
        "--store",
        &store,
        "--patient",
        &pid,
        "--limit",
        "0",
        "--json",
    ]);
    found.assert_success("radguard audit search --patient");
    let entries: Vec<&str> = found.stdout.lines().filter(|l| !l.is_empty()).collect();
    // 24 C-STORE responses, Begin Transferring, Instances Transferred, the C-FIND response.
    assert!(
        entries.len() >= 27,
        "{} records name the patient",
        entries.len()
    );
    assert!(entries.iter().all(|e| e.contains(&pid)));
    assert!(
        entries.iter().any(|e| e.contains(&name)),
        "patient name recorded"
    );
    assert!(
        entries.iter().any(|e| e.contains(&study)),
        "study UID recorded"
    );
    assert!(
        entries.iter().any(|e| e.contains("CFindRsp")),
        "the query's patient is recorded"
    );
}
