//! `radguard probe` against real servers over loopback: DCMTK storescp (default), DCMTK
//! dcmqrscp with a small database, Orthanc with the harness's permissive configuration and
//! hardened (DICOM TLS with a required client certificate, called AE check), a pynetdicom SCP
//! that checks the called AE title, radguard on its embedded defaults and with a strict TLS
//! listener. Each report is compared, check by check, with what that server does (its own log,
//! its configuration, or an independent client: openssl s_client, the DCMTK version string).
//! A TCP counter in front of a server shows the probe never exceeds the configured rate.

mod common;

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::tls_peers::*;
use common::*;
use serde_json::{json, Value};

/// `radguard probe ARGS... --json` (fast rate and short timeouts for loopback peers unless the
/// test gives its own); returns (exit code, the report's only target).
fn probe_json(args: &[&str]) -> (Option<i32>, Value, Output) {
    let mut cmd = Command::new(Radguard::exe());
    cmd.arg("probe").arg("--json").args(args);
    if !args.contains(&"--rate") {
        cmd.args(["--rate", "20"]);
    }
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "5"]);
    }
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("probe --json did not print JSON: {e}\n{}", out.text()));
    let t = v["targets"][0].clone();
    (out.code, t, out)
}

fn finding_ids(t: &Value) -> Vec<String> {
    t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

fn severities(t: &Value) -> Vec<String> {
    t["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["severity"].as_str().unwrap().to_string())
        .collect()
}

fn context_accepted(t: &Value, abstract_syntax: &str) -> Option<bool> {
    t["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["abstract_syntax"] == abstract_syntax)
        .map(|c| c["accepted"].as_bool().unwrap())
}

/// The outcomes of the association attempts made for `purpose`.
fn attempts(t: &Value, purpose: &str) -> Vec<String> {
    t["associations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["purpose"] == purpose)
        .map(|a| a["outcome"].as_str().unwrap().to_string())
        .collect()
}

/// "3.6.7" from `storescp --version` ("$dcmtk: storescp v3.6.7 2022-04-22 $").
fn dcmtk_version() -> String {
    let out = dcmtk("storescp", &["--version"]);
    let all = out.all();
    let v = all
        .split_whitespace()
        .find_map(|w| {
            w.strip_prefix('v')
                .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .unwrap_or_else(|| panic!("no version in storescp --version:\n{all}"));
    v.to_string()
}

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const VERIFICATION: &str = "1.2.840.10008.1.1";
const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";

// ----------------------------------------------------------------------------- DCMTK

/// storescp as shipped: any called and calling AE title, storage and verification only. The
/// probe must say so and must store nothing.
#[test]
fn storescp_default() {
    let scp = StoreScp::start("STORESCP");
    let port = scp.port.to_string();
    let (code, t, out) = probe_json(&[&format!("127.0.0.1:{port}"), "--timeout", "3"]);
    assert_eq!(code, Some(1), "findings mean exit 1:\n{}", out.text());
    assert_eq!(t["called_ae"]["random"], "accepted", "{t:#}");
    // DCMTK refuses a blank called AE title (it logs the illegal parameter and sends nothing).
    assert_ne!(t["called_ae"]["blank"], "accepted", "{t:#}");
    assert!(
        wait_until(Duration::from_secs(10), || scp
            .log()
            .contains("Called AP Title")),
        "storescp did not log the blank called AE title:\n{}",
        scp.log()
    );
    assert_eq!(t["random_calling_ae"], "accepted", "{t:#}");
    assert_eq!(context_accepted(&t, VERIFICATION), Some(true));
    assert_eq!(context_accepted(&t, CT), Some(true));
    assert_eq!(context_accepted(&t, STUDY_FIND), Some(false));
    assert_eq!(context_accepted(&t, STUDY_MOVE), Some(false));
    assert_eq!(t["services"]["echo"], "success");
    assert_eq!(t["services"]["store_context"], "accepted");
    assert_eq!(t["services"]["move_unknown_destination"], "not-offered");
    assert_eq!(t["services"]["find"], "skipped (--query not given)");
    assert_eq!(t["max_pdu"], 16384, "storescp's default maximum PDU");
    assert_eq!(t["implementation"]["toolkit"], "DCMTK", "{t:#}");
    assert_eq!(t["implementation"]["version"], dcmtk_version().as_str());
    let ids = finding_ids(&t);
    for id in [
        "any-calling-ae",
        "store-unknown-ae",
        "any-called-ae",
        "no-tls",
        "echo-unknown-ae",
        "known-vulnerability",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing: {ids:?}");
    }
    assert!(!ids.contains(&"blank-called-ae".to_string()), "{ids:?}");
    // Associations seen by storescp = associations the probe reports (the blank one is
    // refused before storescp counts it as received).
    let accepted = t["associations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["outcome"] == "accepted")
        .count();
    assert!(
        wait_until(Duration::from_secs(10), || scp.associations() >= accepted),
        "storescp saw {} associations, the probe reports {accepted} accepted",
        scp.associations()
    );
    assert!(
        scp.files().is_empty(),
        "the probe stored something: {:?}",
        scp.files()
    );
}

/// dcmqrscp with a small database, probed with --query: the called AE is checked (a default
/// title gets in), any calling AE may query, C-FIND answers are counted and cancelled, and the
/// C-MOVE to an unknown destination is refused with 0xA801. No identifier reaches the report.
#[test]
fn dcmqrscp_with_database_and_query() {
    let d = test_data();
    let qr = DcmQrScp::start("DCMQRSCP", &[]);
    qr.load(&d.ct_files());
    let target = format!("127.0.0.1:{}", qr.port);
    let (code, t, out) = probe_json(&[&target, "--query"]);
    assert_eq!(code, Some(1), "{}", out.text());
    assert!(
        attempts(&t, "random called AE title")[0].starts_with("rejected 1/1/7"),
        "dcmqrscp refuses unknown called AE titles: {t:#}"
    );
    assert_eq!(t["called_ae"]["random"], "rejected");
    assert_eq!(t["called_ae"]["accepted"], json!(["DCMQRSCP"]), "{t:#}");
    assert_eq!(
        t["random_calling_ae"], "accepted",
        "the AETable allows ANY peer: {t:#}"
    );
    assert_eq!(context_accepted(&t, STUDY_FIND), Some(true));
    assert_eq!(context_accepted(&t, STUDY_MOVE), Some(true));
    assert_eq!(context_accepted(&t, CT), Some(true), "RW storage area");
    let finds = t["services"]["find_results"].as_array().unwrap();
    assert_eq!(finds.len(), 2, "{t:#}");
    for f in finds {
        assert_eq!(f["outcome"], "answered", "{t:#}");
        assert!(f["answers_counted"].as_u64().unwrap() >= 1);
    }
    // dcmqrscp searches first and answers Success when nothing matches, whatever the
    // destination: its log shows the probe's destination and that answer.
    assert_eq!(
        t["services"]["move_unknown_destination"], "not-refused",
        "{t:#}"
    );
    assert_eq!(t["services"]["move_status"], 0, "{t:#}");
    assert!(
        wait_until(Duration::from_secs(10), || qr
            .log()
            .contains("Move SCP Response 1 [status: Success]")),
        "{}",
        qr.log()
    );
    assert!(
        qr.log()
            .contains("Move Destination              : RGNOWHERE"),
        "{}",
        qr.log()
    );
    let ids = finding_ids(&t);
    for id in [
        "query-unknown-ae",
        "default-called-ae",
        "any-calling-ae",
        "move-unknown-destination",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing: {ids:?}");
    }
    assert!(!ids.contains(&"any-called-ae".to_string()));
    // Nothing of the data reached the output.
    let pid = d.ct_patient_id();
    assert!(
        !out.stdout.contains(&pid) && !out.stderr.contains(&pid),
        "{}",
        out.text()
    );
    let study = d.ct_study_uid();
    assert!(!out.stdout.contains(&study), "{}", out.text());
    // The cancel reached dcmqrscp (its -v log names every C-CANCEL it receives).
    assert!(
        wait_until(Duration::from_secs(10), || qr.log().contains("Cancel")),
        "dcmqrscp never saw a C-CANCEL:\n{}",
        qr.log()
    );
}

// ---------------------------------------------------------------------------- Orthanc

/// Orthanc as the harness starts it (no called AE check, everyone may echo, store, find and
/// move; no data): everything is open, the query is accepted with nothing to return.
#[test]
fn orthanc_default() {
    let orthanc = Orthanc::start("ORTHANC", &[]);
    let target = format!("127.0.0.1:{}", orthanc.dicom_port);
    let version = orthanc.get_json("/system")["Version"]
        .as_str()
        .unwrap()
        .to_string();
    let product = format!("Orthanc={version}");
    let (code, t, out) = probe_json(&[&target, "--query", "--product", &product]);
    assert_eq!(code, Some(1), "{}", out.text());
    assert_eq!(
        t["called_ae"]["random"], "accepted",
        "DicomCheckCalledAet false: {t:#}"
    );
    assert_eq!(t["random_calling_ae"], "accepted", "{t:#}");
    assert_eq!(t["services"]["echo"], "success");
    assert_eq!(t["services"]["store_context"], "accepted");
    assert_eq!(context_accepted(&t, STUDY_FIND), Some(true));
    for f in t["services"]["find_results"].as_array().unwrap() {
        assert_eq!(f["outcome"], "no-match", "an empty Orthanc: {t:#}");
    }
    assert_eq!(
        t["services"]["move_unknown_destination"], "refused",
        "Orthanc knows no modality of that name: {t:#}"
    );
    let ids = finding_ids(&t);
    for id in [
        "any-calling-ae",
        "store-unknown-ae",
        "any-called-ae",
        "query-accepted-unknown-ae",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing: {ids:?}");
    }
    assert_eq!(orthanc.instance_count(), 0, "the probe stored something");
    // Orthanc answers associations through DCMTK: the identity is DCMTK's; the version the
    // operator states is matched against the table's Orthanc entries (all up to 1.12.10).
    assert_eq!(
        t["implementation"]["toolkit"], "DCMTK",
        "{:#}",
        t["implementation"]
    );
    let stated: Vec<&Value> = t["vulnerabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["from"] == "--product")
        .collect();
    assert!(
        stated
            .iter()
            .any(|h| h["id"] == "CVE-2026-5437" && h["version"] == version.as_str()),
        "Orthanc {version}: {stated:#?}"
    );
}

/// Orthanc hardened: DICOM TLS only, a client certificate required, called AE checked. The
/// probe (no client certificate) reports the TLS facts and gets no further; the versions and
/// suites it reports match what `openssl s_client` (with a client certificate) negotiates.
#[test]
fn orthanc_hardened_tls() {
    let pki = Pki::init("probe-orthanc", &["probe"]);
    let orthanc = Orthanc::start_extra(
        "ORTHANC",
        &json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": pki.gateway_cert(),
            "DicomTlsPrivateKey": pki.gateway_key(),
            "DicomTlsTrustedCertificates": pki.ca(),
            "DicomTlsRemoteCertificateRequired": true,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowEcho": false,
            "DicomAlwaysAllowStore": false,
        }),
    );
    let port = orthanc.dicom_port;
    let ca = pki.ca();
    let target = format!("tls://localhost:{port}");
    let (code, t, out) = probe_json(&[&target, "--ca", ca.to_str().unwrap()]);
    let tls = &t["tls"];
    assert_eq!(tls["offered"], true, "{}", out.text());
    assert_eq!(tls["client_certificate"], "required", "{t:#}");
    let cert = &tls["certificate"];
    assert_eq!(cert["chain"], "verified", "{t:#}");
    assert_eq!(cert["name_matches"], true);
    assert_eq!(cert["expired"], false);
    assert_eq!(
        t["called_ae"]["random"], "not-reached",
        "no client certificate: {t:#}"
    );
    assert!(!tls["untestable"].as_array().unwrap().is_empty());
    // Versions: each one the probe calls accepted is one openssl negotiates with a client
    // certificate, and the other way round.
    let (cc, ck) = pki.client("probe");
    for v in tls["versions"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let flag = match name {
            "TLSv1.3" => "-tls1_3",
            "TLSv1.2" => "-tls1_2",
            other => panic!("unexpected version {other}"),
        };
        let s = s_client(
            port,
            &[
                flag,
                "-cert",
                cc.to_str().unwrap(),
                "-key",
                ck.to_str().unwrap(),
                "-CAfile",
                ca.to_str().unwrap(),
            ],
        );
        let negotiated = s_client_session(&s).is_some();
        assert_eq!(
            v["accepted"].as_bool().unwrap(),
            negotiated,
            "{name}: probe says {}, openssl {negotiated}\n{}",
            v["accepted"],
            s.text()
        );
    }
    assert!(
        !severities(&t).contains(&"high".to_string()),
        "a hardened Orthanc has no high finding: {t:#}"
    );
    assert_eq!(t["findings"], json!([]), "{t:#}");
    assert_eq!(code, Some(0), "nothing found means exit 0: {t:#}");
}

// -------------------------------------------------------------------------- pynetdicom

/// pynetdicom checking the called AE title: random, blank and the defaults are refused with
/// 1/1/7, the operator's --called title gets in, any calling AE title is accepted.
#[test]
fn pynetdicom_scp_called_ae_checked() {
    let scp = PyScp::start("PYSCP", &["--require-called-aet"]);
    let target = format!("127.0.0.1:{}", scp.port);
    let (code, t, out) = probe_json(&[&target, "--called", "PYSCP"]);
    assert_eq!(code, Some(1), "{}", out.text());
    for o in attempts(&t, "random called AE title")
        .into_iter()
        .chain(attempts(&t, "default called AE title").into_iter().take(7))
    {
        assert!(o.starts_with("rejected 1/1/7"), "{o}: {t:#}");
    }
    // pynetdicom answers a blank called AE title with A-ABORT.
    assert_eq!(
        attempts(&t, "blank called AE title"),
        vec!["aborted"],
        "{t:#}"
    );
    assert_eq!(t["called_ae"]["blank"], "rejected");
    assert_eq!(t["called_ae"]["accepted"], json!(["PYSCP"]), "{t:#}");
    assert_eq!(t["random_calling_ae"], "accepted");
    assert_eq!(t["services"]["store_context"], "accepted");
    assert_eq!(t["implementation"]["toolkit"], "pynetdicom", "{t:#}");
    let py = Command::new(venv_python())
        .args(["-c", "import pynetdicom; print(pynetdicom.__version__)"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&py.stdout).trim().to_string();
    assert_eq!(t["implementation"]["version"], version.as_str());
    let ids = finding_ids(&t);
    assert!(!ids.contains(&"any-called-ae".to_string()), "{ids:?}");
    assert!(
        !ids.contains(&"default-called-ae".to_string()),
        "PYSCP is no default: {ids:?}"
    );
    assert!(ids.contains(&"any-calling-ae".to_string()), "{ids:?}");
    assert!(scp.files().is_empty());
}

// ---------------------------------------------------------------------------- radguard

/// radguard on its embedded default (listen address moved to a free port): only RADGUARD is
/// answered, any calling AE from loopback may echo and store, nothing else.
#[test]
fn radguard_embedded_defaults() {
    let src = std::fs::read_to_string(project_root().join("crates/radguard-policy/src/config.rs"))
        .unwrap();
    let start = src.find("# Radguard embedded default").unwrap();
    let end = start + src[start..].find("\"#;").unwrap();
    let toml = src[start..end].replace("127.0.0.1:11112", "127.0.0.1:0");
    assert!(toml.contains("called_ae = \"RADGUARD\""), "{toml}");
    let rg = Radguard::start_fresh(&toml);
    let target = format!("127.0.0.1:{}", rg.port());
    let (code, t, out) = probe_json(&[&target]);
    assert_eq!(code, Some(1), "{}", out.text());
    assert_eq!(t["called_ae"]["random"], "rejected", "{t:#}");
    assert_eq!(t["called_ae"]["blank"], "rejected", "{t:#}");
    assert_eq!(t["called_ae"]["accepted"], json!(["RADGUARD"]), "{t:#}");
    assert_eq!(
        t["random_calling_ae"], "accepted",
        "ae_titles = [\"*\"] from loopback"
    );
    assert_eq!(context_accepted(&t, VERIFICATION), Some(true));
    assert_eq!(context_accepted(&t, CT), Some(true));
    assert_eq!(
        context_accepted(&t, STUDY_FIND),
        Some(false),
        "find is not allowed"
    );
    assert_eq!(
        context_accepted(&t, STUDY_MOVE),
        Some(false),
        "move is not allowed"
    );
    assert_eq!(t["services"]["echo"], "success");
    assert_eq!(t["services"]["move_unknown_destination"], "not-offered");
    assert_eq!(t["implementation"]["toolkit"], "radguard", "{t:#}");
    let ids = finding_ids(&t);
    for id in [
        "any-calling-ae",
        "store-unknown-ae",
        "default-called-ae",
        "no-tls",
    ] {
        assert!(ids.contains(&id.to_string()), "{id} missing: {ids:?}");
    }
    assert!(
        vault_index(&rg.data_dir).is_empty(),
        "the probe stored something"
    );
}

/// radguard with a strict TLS listener (client certificate required at the handshake, TLS 1.2
/// and 1.3 with modern suites only): no high-severity finding; the suites it accepts are the
/// profile's.
#[test]
fn radguard_strict_tls_has_no_high_finding() {
    let pki = Pki::init("probe-strict", &["modality"]);
    let (mcert, _) = pki.client("modality");
    let fp = fingerprint(&mcert);
    let toml = format!(
        "[server]\ntls_listen = [\"127.0.0.1:0\"]\nae_title = \"RADGUARD\"\n\n[server.tls]\n\
         cert = {:?}\nkey = {:?}\nclient_ca = {:?}\nclient_auth = \"required\"\n\n\
         [[peer]]\nname = \"modality\"\nae_titles = [\"MODALITY\"]\naddresses = [\"127.0.0.1\"]\n\
         allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\ntls = \"required\"\n\
         cert_sha256 = [{fp:?}]\n\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n",
        pki.gateway_cert(),
        pki.gateway_key(),
        pki.ca()
    );
    let rg = Radguard::start_any(&toml);
    let port = rg.tls_port();
    let ca = pki.ca();
    let (_, t, out) = probe_json(&[
        &format!("tls://localhost:{port}"),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    let tls = &t["tls"];
    assert_eq!(tls["offered"], true, "{}", out.text());
    assert_eq!(tls["client_certificate"], "required", "{t:#}");
    assert_eq!(tls["certificate"]["chain"], "verified", "{t:#}");
    let accepted: Vec<&str> = tls["suites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["accepted"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    // radguard-tls's profile: ECDHE + AEAD, ECDSA certificate (radguard tls init) → the three
    // TLS 1.3 suites and the ECDSA TLS 1.2 ones.
    assert!(
        accepted.contains(&"TLS13_AES_256_GCM_SHA384"),
        "{accepted:?}"
    );
    assert!(
        accepted.contains(&"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{accepted:?}"
    );
    assert!(
        !accepted.iter().any(|s| s.contains("RSA_WITH")),
        "an ECDSA certificate cannot do ECDHE_RSA: {accepted:?}"
    );
    for v in tls["versions"].as_array().unwrap() {
        assert_eq!(v["accepted"], true, "TLS 1.2 and 1.3 both: {t:#}");
    }
    assert!(
        !severities(&t).contains(&"high".to_string()),
        "radguard strict has a high finding: {t:#}"
    );
    assert!(
        !finding_ids(&t).contains(&"tls-client-cert-not-required".to_string()),
        "{t:#}"
    );
}

/// radguard with a TLS listener whose client certificate is optional at the handshake (the
/// peer's `tls = "required"` decides): the probe gets through TLS, reports the certificate as
/// optional, and every association it tries over TLS is refused by the policy (1/1/3: no
/// certificate for the peer; a blank called AE title 1/1/7) — the DICOM checks run over TLS.
#[test]
fn radguard_tls_optional_client_cert() {
    let pki = Pki::init("probe-optional", &["modality"]);
    let (mcert, _) = pki.client("modality");
    let fp = fingerprint(&mcert);
    let toml = format!(
        "[server]\ntls_listen = [\"127.0.0.1:0\"]\nae_title = \"RADGUARD\"\n\n[server.tls]\n\
         cert = {:?}\nkey = {:?}\nclient_ca = {:?}\n\n\
         [[peer]]\nname = \"modality\"\nae_titles = [\"*\"]\naddresses = [\"127.0.0.1\"]\n\
         allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\ntls = \"required\"\n\
         cert_sha256 = [{fp:?}]\n\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n",
        pki.gateway_cert(),
        pki.gateway_key(),
        pki.ca()
    );
    let rg = Radguard::start_any(&toml);
    let port = rg.tls_port();
    let (code, t, out) = probe_json(&[&format!("tls://localhost:{port}")]);
    assert_eq!(code, Some(1), "{}", out.text());
    assert_eq!(t["tls"]["client_certificate"], "optional", "{t:#}");
    assert_eq!(
        t["tls"]["certificate"]["chain"],
        "not checked (no --ca given)"
    );
    let all = t["associations"].as_array().unwrap();
    assert!(all.len() >= 9, "random, blank and the defaults: {t:#}");
    for a in all {
        // A blank called AE title is refused before the peer is looked at (1/1/7).
        let expected = if a["called"] == "(blank)" {
            "rejected 1/1/7"
        } else {
            "rejected 1/1/3"
        };
        assert!(
            a["outcome"].as_str().unwrap().starts_with(expected),
            "{expected} expected (no certificate for the peer): {t:#}"
        );
    }
    assert_eq!(t["random_calling_ae"], "not-determined");
    let ids = finding_ids(&t);
    assert!(
        ids.contains(&"tls-client-cert-not-required".to_string()),
        "{ids:?}"
    );
    assert!(!severities(&t).contains(&"high".to_string()), "{t:#}");
}

// ------------------------------------------------------------------------------ the rate

/// A TCP relay in front of `upstream` recording when each connection arrived.
struct Counter {
    port: u16,
    accepts: Arc<Mutex<Vec<Instant>>>,
}

fn counter(upstream: u16) -> Counter {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&accepts);
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(client) = s else { return };
            seen.lock().unwrap().push(Instant::now());
            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let pipe = |mut a: TcpStream, mut b: TcpStream| {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.flush();
                    let _ = b.shutdown(std::net::Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), up.try_clone().unwrap());
            pipe(up, client);
        }
    });
    Counter { port, accepts }
}

/// At the default rate (2 per second) the probe never opens connections faster: n connections
/// take at least (n - 1) intervals from the probe's start to its end, measured from outside the
/// probe (a busy machine only makes the run longer, so no slack is needed), and the server sees
/// as many connections as the report counts. Without the pacer, pynetdicom's refusals come
/// back-to-back ~130 ms apart, so the test fails. That slots are never taken early (no burst
/// after a slow step) is checked on explicit instants in radguard-probe's `pace` unit tests.
#[test]
fn never_exceeds_the_rate() {
    let scp = PyScp::start("PYSCP", &["--require-called-aet"]);
    let c = counter(scp.port);
    let target = format!("127.0.0.1:{}", c.port);
    let mut cmd = Command::new(Radguard::exe());
    cmd.args([
        "probe",
        "--json",
        "--timeout",
        "5",
        "--called",
        "PYSCP",
        &target,
    ]);
    let started = Instant::now();
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    let took = started.elapsed();
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", out.text()));
    assert_eq!(v["rate_per_second"], 2.0, "the default rate");
    let reported = v["connections"].as_u64().unwrap() as usize;
    let mut seen = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = c.accepts.lock().unwrap().clone();
            seen.len() >= reported
        }),
        "the server saw {} connections, the probe reports {reported}",
        seen.len()
    );
    assert_eq!(seen.len(), reported, "{}", out.text());
    assert!(
        reported >= 10,
        "too few connections to judge a rate: {reported}"
    );
    let interval = Duration::from_millis(500);
    assert!(
        took >= interval * (reported as u32 - 1),
        "{reported} connections in {took:?} at 2 per second"
    );
    // The accept times are the server's view: printed for a failure's reader, not judged (the
    // accept thread's own scheduling delays would move them).
    let gaps: Vec<_> = seen.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between accepted connections: {gaps:?}");
}

// ------------------------------------------------------------------------------- usage

#[test]
fn usage_errors_exit_2() {
    for args in [
        vec!["probe"],
        vec!["probe", "nohost"],
        vec!["probe", "127.0.0.1:0"],
        vec!["probe", "127.0.0.1:104", "--rate", "0"],
        vec!["probe", "127.0.0.1:104", "--rate", "500"],
        vec!["probe", "127.0.0.1:104", "--query", "--safe"],
        vec![
            "probe",
            "127.0.0.1:104",
            "--called",
            "MUCH-TOO-LONG-AE-TITLE",
        ],
        vec!["probe", "127.0.0.1:104", "--product", "Orthanc"],
    ] {
        let mut cmd = Command::new(Radguard::exe());
        cmd.args(&args);
        let out = run(&mut cmd, CLIENT_TIMEOUT);
        assert_eq!(out.code, Some(2), "{args:?}:\n{}", out.text());
    }
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["probe", "--help"]);
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert!(
        out.success() && out.stdout.contains("--query"),
        "{}",
        out.text()
    );
}

/// --html writes a page with the findings (escaped), next to the text report.
#[test]
fn html_report() {
    let scp = StoreScp::start("STORESCP");
    let dir = tmp_dir("probe-html");
    let html = dir.path().join("report.html");
    let mut cmd = Command::new(Radguard::exe());
    cmd.args(["probe", "--rate", "20", "--timeout", "3", "--html"])
        .arg(&html)
        .arg(format!("127.0.0.1:{}", scp.port));
    let out = run(&mut cmd, CLIENT_TIMEOUT);
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stdout.contains("accepts any calling AE title"),
        "{}",
        out.text()
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.starts_with("<!doctype html>") && page.contains("accepts storage from an unknown AE")
    );
    let _ = Path::new(&html);
}
