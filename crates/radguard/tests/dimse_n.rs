//! DIMSE-N through the gateway with real peers: pynetdicom as a modality's MPPS SCU (N-CREATE,
//! then N-SET) and as a Storage Commitment SCU (N-ACTION, then the N-EVENT-REPORT the SCP sends
//! on the same association), against tests/py/n_scp.py as the SCP. Allowed: the SCP gets every
//! request and the SCU every answer. Not allowed: the gateway answers 0x0124 itself and the
//! other side never sees the request. The report on a separate association (PS3.4 J.3.3) the
//! archive opens toward the modality through a route in the other direction: allowed by the
//! archive peer's `allow`, else refused. DCMTK has no MPPS or Storage Commitment tool (see
//! docs/conformance.md); its C-services through a peer with DIMSE-N rights are checked here,
//! and its Print Management tools (dcmprscu → dcmprscp, N-services on a Meta SOP class).

mod common;

use common::*;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
const WAIT: Duration = Duration::from_secs(60);

/// The n_scp.py upstream and radguard routing called AE "NSCP" to it; `peer` is the body of
/// the modality's `[[peer]]` (after name, AE titles and addresses).
fn setup(peer: &str) -> (ScriptedScp, Radguard) {
    let scp = ScriptedScp::start("n_scp.py", "NSCP", &[]);
    let mut toml = Config::new().route("NSCP", scp.port, "NSCP").toml();
    toml.push_str(&format!(
        "\n[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"127.0.0.1/32\"]\n{peer}\n"
    ));
    let rg = Radguard::start_fresh(&toml);
    (scp, rg)
}

fn n_scu(port: u16, mode: &str, extra: &[&str]) -> Command {
    n_scu_to(port, "NSCP", mode, extra)
}

fn n_scu_to(port: u16, called: &str, mode: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(venv_python());
    cmd.arg(py_script("n_scu.py"))
        .args([
            "--port",
            &port.to_string(),
            "--called",
            called,
            "--calling",
            "CT01",
        ])
        .args(extra)
        .arg(mode);
    cmd
}

fn json_of(out: &Output) -> Value {
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("n_scu.py printed no JSON ({e}):\n{}", out.all()))
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

/// Waits for a `dimse-refused` event of `command` with `status`.
fn wait_refused(rg: &Radguard, command: &str, status: u16) -> Value {
    let mut found = None;
    wait_until(WAIT, || {
        found = of_kind(&parse_events(&rg.log()), "dimse-refused")
            .into_iter()
            .find(|e| e["command"] == command && e["status"] == status)
            .cloned();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no dimse-refused {command} 0x{status:04X}:\n{}", rg.log()))
}

#[test]
fn mpps_allowed_reaches_the_scp() {
    let (scp, rg) = setup(
        "allow = [\"echo\", \"n-create\", \"n-set\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]",
    );
    let v = json_of(&run(&mut n_scu(rg.port(), "mpps", &[]), WAIT));
    assert_eq!(v["contexts"][MPPS], 0, "{v}");
    assert_eq!(
        v["statuses"],
        serde_json::json!([0, 0]),
        "{v}\n{}",
        rg.log()
    );
    let steps = scp.steps();
    assert!(
        steps.contains("received N-CREATE class=1.2.840.10008.3.1.2.3.3"),
        "{steps}"
    );
    assert!(
        steps.contains("received N-SET class=1.2.840.10008.3.1.2.3.3"),
        "{steps}"
    );
    // Both requests and both answers are on the bus (the audit trail's input).
    let ok = wait_until(WAIT, || {
        let events = parse_events(&rg.log());
        let has = |kind: &str, command: &str| {
            of_kind(&events, kind)
                .iter()
                .any(|e| e["command"] == command)
        };
        has("dimse-request", "NCreateRq")
            && has("dimse-request", "NSetRq")
            && has("dimse-response", "NCreateRsp")
            && has("dimse-response", "NSetRsp")
    });
    assert!(
        ok,
        "no N-CREATE/N-SET request and response events:\n{}",
        rg.log()
    );
}

#[test]
fn mpps_n_create_not_allowed_is_refused_and_never_reaches_the_scp() {
    // n-set but no n-create: the N-CREATE is refused by the gateway; the N-SET that follows on
    // the same association reaches the SCP, which proves the N-CREATE would have been seen
    // first had it been relayed.
    let (scp, rg) = setup(
        "allow = [\"echo\", \"n-set\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]",
    );
    let v = json_of(&run(&mut n_scu(rg.port(), "mpps", &[]), WAIT));
    assert_eq!(
        v["statuses"],
        serde_json::json!([0x0124, 0]),
        "{v}\n{}",
        rg.log()
    );
    assert!(
        scp.wait_step_since(0, "received N-SET", WAIT),
        "{}",
        scp.steps()
    );
    assert!(!scp.steps().contains("N-CREATE"), "{}", scp.steps());
    let e = wait_refused(&rg, "NCreateRq", 0x0124);
    assert!(
        e["why"].as_str().unwrap_or("").contains("not allowed"),
        "{e}"
    );
}

#[test]
fn mpps_sop_class_not_listed_is_rejected_at_negotiation() {
    // The peer may N-CREATE and N-SET, but only on Storage Commitment: the MPPS context is
    // rejected (abstract syntax not supported), no request is ever sent.
    let (scp, rg) = setup(
        "allow = [\"echo\", \"n-create\", \"n-set\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]",
    );
    let v = json_of(&run(&mut n_scu(rg.port(), "mpps", &[]), WAIT));
    assert_eq!(v["contexts"][MPPS], 3, "{v}\n{}", rg.log());
    assert_eq!(v["statuses"], serde_json::json!([]), "{v}");
    // The client had its answer: an upstream association, had there been one, was requested
    // before it (the client's A-ASSOCIATE-AC merges the upstream's).
    assert!(!scp.steps().contains("association from"), "{}", scp.steps());
}

#[test]
fn commitment_report_reaches_the_scu_when_received() {
    let (scp, rg) = setup(
        "allow = [\"n-action\"]\nreceive = [\"n-event-report\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]",
    );
    let v = json_of(&run(&mut n_scu(rg.port(), "commit", &[]), WAIT));
    assert_eq!(v["contexts"][COMMITMENT], 0, "{v}");
    assert_eq!(v["statuses"], serde_json::json!([0]), "{v}\n{}", rg.log());
    assert_eq!(v["reports"], serde_json::json!([1]), "{v}\n{}", rg.log());
    assert!(
        scp.wait_step_since(0, "event-report status=0x0000", WAIT),
        "{}\n{}",
        scp.steps(),
        rg.log()
    );
    // The client's answer to the report is recorded.
    let ok = wait_until(WAIT, || {
        of_kind(&parse_events(&rg.log()), "dimse-response")
            .iter()
            .any(|e| e["command"] == "NEventReportRsp" && e["status"] == 0)
    });
    assert!(ok, "no N-EVENT-REPORT-RSP event:\n{}", rg.log());
}

#[test]
fn commitment_report_not_received_is_answered_by_the_gateway() {
    // No `receive`: the SCP's N-EVENT-REPORT is refused by the gateway (0x0124 to the SCP)
    // and the SCU never gets it.
    let (scp, rg) =
        setup("allow = [\"n-action\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]");
    let tmp = tmp_dir("dimse-n-commit");
    let until = tmp.path().join("done");
    let mut cmd = n_scu(
        rg.port(),
        "commit",
        &["--until-file", until.to_str().unwrap()],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start n_scu.py");
    let answered = scp.wait_step_since(0, "event-report status=0x0124", WAIT);
    // The SCP has the gateway's answer: the report was not relayed, and nothing else will be.
    std::fs::write(&until, b"").unwrap();
    let out = child.wait_with_output().expect("n_scu.py output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        answered,
        "the SCP got no 0x0124:\n{}\n{}\n{text}",
        scp.steps(),
        rg.log()
    );
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["statuses"], serde_json::json!([0]), "{v}");
    assert_eq!(v["reports"], serde_json::json!([]), "{v}\n{}", rg.log());
    let e = wait_refused(&rg, "NEventReportRq", 0x0124);
    assert!(
        e["why"].as_str().unwrap_or("").contains("called side"),
        "{e}"
    );
    let ok = wait_until(WAIT, || {
        of_kind(&parse_events(&rg.log()), "security-alert")
            .iter()
            .any(|e| {
                e["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("NEventReportRq from the upstream")
            })
    });
    assert!(
        ok,
        "no security alert for the refused report:\n{}",
        rg.log()
    );
}

#[test]
fn vault_routes_reject_dimse_n_contexts() {
    // The built-in vault is no MPPS SCP: the context is rejected (abstract syntax not
    // supported) even for a peer allowed N-CREATE on MPPS.
    let mut toml = Config::new().vault_route("RADGUARD").toml();
    toml.push_str(
        "\n[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\", \"n-create\", \"n-set\"]\nn_sop_classes = [\"ModalityPerformedProcedureStep\"]\n",
    );
    let rg = Radguard::start_fresh(&toml);
    let v = json_of(&run(
        &mut n_scu_to(rg.port(), "RADGUARD", "mpps", &[]),
        WAIT,
    ));
    assert_eq!(v["contexts"][MPPS], 3, "{v}\n{}", rg.log());
    assert_eq!(v["statuses"], serde_json::json!([]), "{v}");
}

#[test]
fn dcmtk_c_services_unaffected_for_a_peer_with_n_services() {
    // A peer with MPPS rights still echoes and stores with DCMTK as before, and the Storage
    // contexts of others are not opened by n_sop_classes.
    let d = test_data();
    let scp = StoreScp::start("ARCHIVE");
    let mut toml = Config::new().route("ARCHIVE", scp.port, "ARCHIVE").toml();
    toml.push_str(
        "\n[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"echo\", \"store\", \"n-create\", \"n-set\"]\nstore_sop_classes = [\"CTImageStorage\"]\n\
         n_sop_classes = [\"ModalityPerformedProcedureStep\"]\n",
    );
    let rg = Radguard::start_fresh(&toml);
    echoscu(rg.port(), "CT01", "ARCHIVE").assert_success("echoscu");
    let ct = d.ct_files();
    storescu(rg.port(), "CT01", "ARCHIVE", &ct[..2]).assert_success("storescu");
    assert_received(&ct[..2], &scp.dir, false);
}

/// PS3.4 J.3.3: the SCP may send the report on a new association it opens toward the SCU.
/// Through the gateway that association is a route in the other direction (called AE the
/// modality's, upstream the modality's listener), and the archive is its calling peer: its
/// `allow` needs "n-event-report" (the request comes from the client side there; `receive` is
/// for requests of the called side on the client's own association). n_scp.py opens it with
/// SCP/SCU Role Selection (the requestor in the SCP role), n_scu.py accepts it on its listener.
fn separate_report(archive_allow: &str) -> (ScriptedScp, Radguard, tempfile::TempDir, u16) {
    let tmp = tmp_dir("dimse-n-separate");
    let target = tmp.path().join("report-target");
    let scp = ScriptedScp::start(
        "n_scp.py",
        "NSCP",
        &["--report-to-file", target.to_str().unwrap()],
    );
    let modality = free_port();
    let mut toml = Config::new()
        .route("NSCP", scp.port, "NSCP")
        .route("CT01", modality, "CT01")
        .toml();
    toml.push_str(
        "\n[[peer]]\nname = \"ct\"\nae_titles = [\"CT01\"]\naddresses = [\"127.0.0.1/32\"]\n\
         allow = [\"n-action\"]\nn_sop_classes = [\"StorageCommitmentPushModel\"]\n",
    );
    toml.push_str(&format!(
        "\n[[peer]]\nname = \"archive\"\nae_titles = [\"NSCP\"]\naddresses = [\"127.0.0.1/32\"]\n\
         {archive_allow}\nn_sop_classes = [\"StorageCommitmentPushModel\"]\n"
    ));
    let rg = Radguard::start_fresh(&toml);
    std::fs::write(&target, format!("127.0.0.1 {} CT01\n", rg.port())).unwrap();
    (scp, rg, tmp, modality)
}

#[test]
fn commitment_report_on_a_separate_association_passes_when_allowed() {
    let (scp, rg, _tmp, modality) = separate_report("allow = [\"n-event-report\"]");
    let listen = modality.to_string();
    let v = json_of(&run(
        &mut n_scu(rg.port(), "commit", &["--listen", &listen]),
        WAIT,
    ));
    assert_eq!(v["statuses"], serde_json::json!([0]), "{v}\n{}", rg.log());
    assert_eq!(v["reports"], serde_json::json!([1]), "{v}\n{}", rg.log());
    assert!(
        scp.wait_step_since(0, "event-report status=0x0000", WAIT),
        "{}\n{}",
        scp.steps(),
        rg.log()
    );
    assert!(scp.steps().contains("report association to CT01: accepted"));
}

#[test]
fn commitment_report_on_a_separate_association_not_allowed_is_refused() {
    // The archive may echo and *receive* reports (on associations it accepts), not send one on
    // an association it opens: refused with 0x0124, the modality never sees it.
    let (scp, rg, tmp, modality) =
        separate_report("allow = [\"echo\"]\nreceive = [\"n-event-report\"]");
    let until = tmp.path().join("done");
    let listen = modality.to_string();
    let mut cmd = n_scu(
        rg.port(),
        "commit",
        &["--listen", &listen, "--until-file", until.to_str().unwrap()],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("start n_scu.py");
    // The archive has the gateway's answer: nothing more will reach the modality.
    let refused = scp.wait_step_since(0, "event-report status=0x0124", WAIT);
    std::fs::write(&until, b"").unwrap();
    let out = child.wait_with_output().expect("n_scu.py output");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(refused, "{}\n{}\n{text}", scp.steps(), rg.log());
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(v["reports"], serde_json::json!([]), "{v}\n{}", rg.log());
    let e = wait_refused(&rg, "NEventReportRq", 0x0124);
    assert!(
        !e["why"].as_str().unwrap_or("").contains("called side"),
        "{e}"
    );
}

/// A DCMTK print configuration (dcmpstat.cfg format): the database and spool under `dir`, the
/// printer IHEFULL at 127.0.0.1:`port` (for dcmprscp where it listens, for dcmprscu where it
/// connects: the gateway).
fn print_cfg(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    for d in ["database", "spool", "log", "lut"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let d = |n: &str| dir.join(n).to_string_lossy().into_owned();
    let cfg = format!(
        "[[GENERAL]]\n[APPLICATION]\nLogDirectory = {log}\nLogFile = general.log\nLogLevel = INFO\n\
         [PRINT]\nSpooler = dcmprscu\nServer = dcmprscp\nDirectory = {spool}\nDetailedLog = true\n\
         BinaryLog = false\nSleep = 1\nMinPrintResolution = 64\\64\nMaxPrintResolution = 8192\\8192\n\
         DefaultIllumination = 2000\nDefaultReflection = 10\nDeletePrintJobs = false\n\
         AlwaysDeleteTerminateJobs = true\n[DATABASE]\nDirectory = {db}\n[LUT]\nDirectory = {lut}\n\
         [NETWORK]\naetitle = DCMPSTATE\n[[COMMUNICATION]]\n[IHEFULL]\nAetitle = IHEFULL\n\
         Description = IHE Full Print SCP\nHostname = 127.0.0.1\nPort = {port}\nType = LOCALPRINTER\n\
         BorderDensity = 150\\20\\BLACK\\WHITE\nDisableNewVRs = false\nDisplayFormat=1,1\\1,2\\2,2\n\
         EmptyImageDensity = 20\\BLACK\\WHITE\nFilmDestination = MAGAZINE\\PROCESSOR\n\
         FilmSizeID = 8INX10IN\\14INX17IN\nImplicitOnly = false\n\
         MagnificationType = REPLICATE\\BILINEAR\\CUBIC\\NONE\nMaxDensity = 320\nMaxPDU = 32768\n\
         MediumType = PAPER\\CLEAR FILM\\BLUE FILM\nMinDensity = 20\n\
         OmitSOPClassUIDFromCreateResponse = false\nPresentationLUTMatchRequired = false\n\
         PresentationLUTinFilmSession = false\nResolutionID = STANDARD\\HIGH\nSmoothingType = NONE\n\
         Supports12Bit = true\nSupportsDecimateCrop = true\nSupportsImageSize = true\n\
         SupportsPresentationLUT = true\nSupportsTrim = true\n",
        log = d("log"),
        spool = d("spool"),
        db = d("database"),
        lut = d("lut"),
    );
    let path = dir.join(format!("print-{port}.cfg"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// DCMTK's print tools through the gateway: dcmpsprt renders a CT image into a Stored Print
/// object, dcmprscu (Print SCU) prints it to dcmprscp (Print SCP) over a relay route. Print
/// Management negotiates a Meta SOP class (Basic Grayscale Print Management, PS3.4 H.3) while
/// each N-CREATE/N-SET/N-ACTION/N-DELETE/N-GET names its member class (Film Session, Film Box,
/// Image Box, Printer): the gateway judges them as the negotiated class. Without `n-action`
/// the print (the Film Box N-ACTION) is refused with 0x0124 and never reaches the printer.
fn dcmtk_print(allow: &str) -> (Output, Radguard, tempfile::TempDir) {
    let tmp = tmp_dir("dimse-n-print");
    let scp_port = free_port();
    let scp_cfg = print_cfg(tmp.path(), scp_port);
    let toml = Config::new().route("IHEFULL", scp_port, "IHEFULL").toml()
        + &format!(
            "\n[[peer]]\nname = \"viewer\"\nae_titles = [\"DCMPSTATE\"]\naddresses = [\"127.0.0.1/32\"]\n\
             allow = {allow}\nn_sop_classes = [\"1.2.840.10008.5.1.1.9\", \"PresentationLUT\"]\n"
        );
    let rg = Radguard::start_fresh(&toml);
    let scu_cfg = print_cfg(tmp.path(), rg.port());
    let scp_cfg_s = scp_cfg.to_string_lossy().into_owned();
    let _scp = dcmtk_spawn(
        "dcmprscp",
        &["-c", scp_cfg_s.as_str(), "-p", "IHEFULL", "-v"],
        tmp.path(),
    );
    assert!(wait_port(scp_port, WAIT), "dcmprscp is not listening");
    let ct = test_data().ct_files()[0].clone();
    let out = dcmtk(
        "dcmpsprt",
        &[
            "-c".into(),
            scp_cfg.clone().into_os_string(),
            "-p".into(),
            "IHEFULL".into(),
            ct.into_os_string(),
        ],
    );
    assert!(out.success(), "dcmpsprt: {}", out.all());
    let stored: Vec<_> = std::fs::read_dir(tmp.path().join("database"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("SP_"))
        })
        .collect();
    assert_eq!(stored.len(), 1, "no stored print: {}", out.all());
    let mut args: Vec<std::ffi::OsString> = vec!["-c".into(), scu_cfg.into_os_string()];
    args.extend(["-p".into(), "IHEFULL".into(), "-v".into()]);
    args.push(stored[0].clone().into_os_string());
    let out = dcmtk("dcmprscu", &args);
    (out, rg, tmp)
}

fn n_response(rg: &Radguard, command: &str, status: u16) -> bool {
    wait_until(WAIT, || {
        of_kind(&parse_events(&rg.log()), "dimse-response")
            .iter()
            .any(|e| e["command"] == command && e["status"] == status && e["from"] == "upstream")
    })
}

#[test]
fn dcmtk_print_session_passes_on_a_meta_sop_class() {
    let (out, rg, _tmp) = dcmtk_print(r#"["n-create", "n-set", "n-action", "n-delete", "n-get"]"#);
    assert!(
        out.success() && !out.all().contains("E: "),
        "{}\n{}",
        out.all(),
        rg.log()
    );
    for command in [
        "NGetRsp",
        "NCreateRsp",
        "NSetRsp",
        "NActionRsp",
        "NDeleteRsp",
    ] {
        assert!(
            n_response(&rg, command, 0),
            "no {command} 0x0000:\n{}",
            rg.log()
        );
    }
    assert!(
        of_kind(&parse_events(&rg.log()), "dimse-refused").is_empty(),
        "{}",
        rg.log()
    );
}

#[test]
fn dcmtk_print_without_n_action_is_refused() {
    let (out, rg, _tmp) = dcmtk_print(r#"["n-create", "n-set", "n-delete", "n-get"]"#);
    let e = wait_refused(&rg, "NActionRq", 0x0124);
    assert!(
        !e["why"].as_str().unwrap_or("").contains("called side"),
        "{e}"
    );
    let events = parse_events(&rg.log());
    assert!(
        !of_kind(&events, "dimse-response")
            .iter()
            .any(|e| e["command"] == "NActionRsp" && e["from"] == "upstream"),
        "the N-ACTION reached the printer:\n{}",
        rg.log()
    );
    assert!(
        out.all().contains("E: "),
        "dcmprscu saw no error:\n{}",
        out.all()
    );
}
