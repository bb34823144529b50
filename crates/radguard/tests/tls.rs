//! DICOM TLS and real peer identity (issue 3), end to end with real peers.
//!
//! Certificates come from the binary itself (`radguard tls init|issue|fingerprint`), plus what
//! it does not make, from the `openssl` CLI (an expired client certificate signed by the right
//! CA, an RSA gateway certificate, Ed25519 JWT keys). Clients: DCMTK `echoscu`/`storescu`
//! with `+tls`, the pynetdicom probe (`tests/py/dicom_probe.py --tls-ca ... --user-identity-type
//! ...`, which reports the exact A-ASSOCIATE-RJ) and `openssl s_client`. Upstreams: DCMTK
//! `storescp` (plain and `+tls`) and Orthanc with DICOM TLS.
//!
//! Every refusal is checked for its exact answer, for the `security-alert` event naming the
//! failed condition (and not the expected value), and for nothing having reached the upstream.
//! Every refusal test also has a positive control, so a gateway that refuses everything fails.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::tls_peers::*;
use common::*;
use serde_json::{json, Value};

// ----------------------------------------------------------------------------- config

/// A radguard config for these tests: TLS listener and/or plain listener, peers, routes.
struct Cfg {
    server: Vec<String>,
    server_tls: Option<String>,
    sections: Vec<String>,
}

impl Cfg {
    /// Only a TLS listener on 127.0.0.1:0, with the PKI's gateway certificate; client
    /// certificates verified against the PKI's CA (optional at the TLS level: each peer's
    /// conditions decide).
    fn tls(pki: &Pki) -> Cfg {
        Cfg::base(Some(pki), false)
    }

    /// Only a plain listener on 127.0.0.1:0.
    fn plain() -> Cfg {
        Cfg::base(None, true)
    }

    /// Both: plain on 127.0.0.1:0, TLS on 127.0.0.1:`tls_port` (radguard refuses port 0 in
    /// both lists).
    fn both(pki: &Pki, tls_port: u16) -> Cfg {
        let mut c = Cfg::base(Some(pki), true);
        c.server[0] = format!("tls_listen = [\"127.0.0.1:{tls_port}\"]");
        c
    }

    fn base(pki: Option<&Pki>, plain: bool) -> Cfg {
        let mut server = Vec::new();
        if pki.is_some() {
            server.push("tls_listen = [\"127.0.0.1:0\"]".to_string());
        }
        if plain {
            server.push("listen = [\"127.0.0.1:0\"]".to_string());
        }
        server.extend(
            [
                "ae_title = \"RADGUARD\"",
                "connect_timeout_secs = 5",
                "artim_timeout_secs = 10",
                "idle_timeout_secs = 60",
                "shutdown_grace_secs = 2",
            ]
            .map(String::from),
        );
        Cfg {
            server,
            server_tls: pki.map(|p| {
                format!(
                    "cert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
                    p.gateway_cert(),
                    p.gateway_key(),
                    p.ca()
                )
            }),
            sections: Vec::new(),
        }
    }

    /// Replaces the gateway's certificate and key.
    fn gateway_cert(mut self, cert: &Path, key: &Path, ca: &Path) -> Cfg {
        self.server_tls = Some(format!(
            "cert = {cert:?}\nkey = {key:?}\nclient_ca = {ca:?}\n"
        ));
        self
    }

    /// A `[[peer]]` allowed echo and store of anything, with `extra` identity lines.
    fn peer(mut self, name: &str, ae: &str, address: &str, extra: &str) -> Cfg {
        self.sections.push(format!(
            "[[peer]]\nname = {name:?}\nae_titles = [{ae:?}]\naddresses = [{address:?}]\n\
             allow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\n{extra}\n"
        ));
        self
    }

    /// A peer bound to the certificate `cert` (by its SHA-256 fingerprint).
    fn cert_peer(self, name: &str, ae: &str, cert: &Path, extra: &str) -> Cfg {
        let fp = fingerprint(cert);
        self.peer(
            name,
            ae,
            "127.0.0.1",
            &format!("cert_sha256 = [{fp:?}]\n{extra}"),
        )
    }

    /// A plain route called AE -> 127.0.0.1:port.
    fn route(mut self, called: &str, port: u16, upstream_ae: &str) -> Cfg {
        self.sections.push(format!(
            "[[route]]\ncalled_ae = {called:?}\nupstream = \"127.0.0.1:{port}\"\n\
             upstream_ae = {upstream_ae:?}\n"
        ));
        self
    }

    /// A TLS route: the upstream's certificate must chain to `ca` and carry `server_name`;
    /// radguard presents `client` (cert, key).
    fn tls_route(
        mut self,
        called: &str,
        port: u16,
        upstream_ae: &str,
        ca: &Path,
        server_name: &str,
        client: (&Path, &Path),
    ) -> Cfg {
        self.sections.push(format!(
            "[[route]]\ncalled_ae = {called:?}\nupstream = \"127.0.0.1:{port}\"\n\
             upstream_ae = {upstream_ae:?}\ntls = {{ ca = {ca:?}, server_name = {server_name:?}, \
             client_cert = {:?}, client_key = {:?} }}\n",
            client.0, client.1
        ));
        self
    }

    /// Any other top-level section (`[[user]]`, `[jwt]`).
    fn raw(mut self, text: &str) -> Cfg {
        self.sections.push(text.to_string());
        self
    }

    fn toml(&self) -> String {
        let mut s = String::from("[server]\n");
        for l in &self.server {
            s.push_str(l);
            s.push('\n');
        }
        if let Some(t) = &self.server_tls {
            s.push_str("\n[server.tls]\n");
            s.push_str(t);
        }
        for sec in &self.sections {
            s.push('\n');
            s.push_str(sec);
        }
        s
    }
}

// ------------------------------------------------------------------------------ checks

/// Asserts `v` (a probe result) is A-ASSOCIATE-RJ 1/1/3, that radguard logged one more
/// security alert naming `condition`, and that the alert does not contain any of `secrets`
/// (expected fingerprints, passcodes, tokens).
fn assert_refused_for(
    rg: &Radguard,
    v: &Value,
    condition: &str,
    alerts_before: usize,
    secrets: &[&str],
) {
    assert_rejected(v, 1, 1, 3);
    let needle = format!("(condition: {condition}");
    let mut found = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let alerts = rg.security_alerts();
        found = alerts
            .get(alerts_before..)
            .and_then(|new| {
                new.iter()
                    .find(|a| a["detail"].as_str().is_some_and(|d| d.contains(&needle)))
            })
            .cloned();
        found.is_some()
    });
    assert!(
        ok,
        "no new security-alert naming the condition {condition:?}; alerts: {:#?}",
        rg.security_alerts()
    );
    let alert = found.unwrap();
    let text = alert.to_string();
    for s in secrets {
        assert!(
            !text.contains(s),
            "the security alert reveals {s:?}: {alert:#}"
        );
    }
}

/// Nothing reached the upstream storescp: no association, no file.
fn assert_untouched(scp: &StoreScp) {
    assert_eq!(
        scp.associations(),
        0,
        "the upstream saw an association:\n{}",
        scp.log()
    );
    assert!(scp.files().is_empty(), "the upstream received files");
}

/// The `association-requested` events, newest last.
fn requested_events(rg: &Radguard) -> Vec<Value> {
    rg.events()
        .into_iter()
        .filter(|e| e["event"] == "association-requested")
        .collect()
}

/// The events named `name` (e.g. "association-accepted"), once at least `at_least` of them
/// are in the log (events are logged asynchronously: wait up to 10 s).
fn events_named(rg: &Radguard, name: &str, at_least: usize) -> Vec<Value> {
    let get = || -> Vec<Value> {
        rg.events()
            .into_iter()
            .filter(|e| e["event"] == name)
            .collect()
    };
    wait_until(Duration::from_secs(10), || get().len() >= at_least);
    get()
}

/// Probes with TLS as `client` (cert, key) and CA `ca`.
fn tls_probe(
    port: u16,
    calling: &str,
    ca: &Path,
    client: &(PathBuf, PathBuf),
    extra: &[&str],
    cmd: &[&str],
) -> Value {
    let mut opts = probe_tls(ca, &client.0, &client.1);
    opts.extend(extra.iter().map(|s| s.to_string()));
    probe_with(port, calling, "PACS", &opts, cmd)
}

// ======================================================================= helpers' own tests

#[test]
fn helpers_b64url_and_asn1_time_known_answers() {
    // RFC 4648 section 10 vectors, unpadded, URL alphabet.
    for (i, o) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(i.as_bytes()), o);
    }
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    assert_eq!(asn1_time(0), "19700101000000Z");
    assert_eq!(asn1_time(951_782_400), "20000229000000Z");
    assert_eq!(asn1_time(1_795_915_419), "20261129012339Z");
}

// ====================================================================== TLS in, plain out

/// DCMTK echoscu/storescu with `+tls` and a client certificate from `radguard tls init` →
/// radguard (TLS listener, peer bound to the certificate's fingerprint) → DCMTK storescp plain:
/// the series arrives identical, and the audit events carry the TLS session and certificate.
#[test]
fn dcmtk_tls_client_through_radguard_to_plain_storescp() {
    let data = test_data();
    let pki = Pki::init("in", &["modality"]);
    let client = pki.client("modality");
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::tls(&pki)
        .cert_peer("modality", "MODALITY", &client.0, "")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&cfg.toml());
    assert!(rg.ports.is_empty(), "no plain listener was configured");
    let port = rg.tls_port();
    let tls = dcmtk_tls(&client.1, &client.0, &pki.ca());

    echoscu_tls(port, "MODALITY", "PACS", &tls).assert_success("echoscu +tls through radguard");
    storescu_tls(port, "MODALITY", "PACS", &tls, &[data.ct_dir()])
        .assert_success("storescu +tls of the CT series through radguard");
    assert_same_dirs(&data.ct_dir(), &scp.dir);
    assert_eq!(scp.associations(), 2, "{}", scp.log());

    let fp = fingerprint(&client.0);
    let reqs = events_named(&rg, "association-requested", 2);
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    for r in &reqs {
        let t = &r["tls"];
        assert_eq!(t["peer_cert_sha256"], fp.as_str(), "{r:#}");
        assert!(
            t["protocol"]
                .as_str()
                .is_some_and(|p| p.contains("1_3") || p.contains("1.3")),
            "DCMTK 3.6.7 and rustls should agree on TLS 1.3: {r:#}"
        );
        assert!(
            t["cipher_suite"]
                .as_str()
                .is_some_and(|c| c.contains("GCM") || c.contains("CHACHA")),
            "{r:#}"
        );
    }
    let accepted = events_named(&rg, "association-accepted", 2);
    assert_eq!(accepted.len(), 2);
    assert!(
        accepted.iter().all(|e| e["peer"] == "modality"),
        "{accepted:#?}"
    );
}

/// The same client on a plain connection to a gateway whose peer requires TLS: RJ 1/1/3
/// (condition `certificate_required`), and nothing reaches the upstream.
#[test]
fn peer_bound_to_certificate_is_refused_on_plain_connection() {
    let pki = Pki::init("plainref", &["modality"]);
    let client = pki.client("modality");
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::both(&pki, free_port())
        .cert_peer("modality", "MODALITY", &client.0, "")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&cfg.toml());
    let (plain, tls) = (rg.port(), rg.tls_port());
    assert_ne!(plain, tls);

    let before = rg.security_alerts().len();
    let v = probe(plain, "MODALITY", "PACS", &["echo"]);
    assert_refused_for(&rg, &v, "certificate_required", before, &[]);
    assert_untouched(&scp);

    // Positive control: the same AE over TLS with its certificate.
    let v = tls_probe(tls, "MODALITY", &pki.ca(), &client, &[], &["echo"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)]);
    assert_eq!(v["tls"]["version"], "TLSv1.3", "{v:#}");
}

// ====================================================================== plain in, TLS out

/// Two PKIs: radguard's (its certificate doubles as its client certificate upstream) and the
/// archive's (`radguard tls init` again: its gateway certificate serves the archive).
struct TwoPkis {
    gw: Pki,
    archive: Pki,
}

fn two_pkis(label: &str) -> TwoPkis {
    TwoPkis {
        gw: Pki::init(&format!("{label}-gw"), &["modality"]),
        archive: Pki::init(&format!("{label}-ar"), &["unused"]),
    }
}

/// DCMTK storescp +tls that requires a client certificate from radguard's CA.
fn tls_storescp(p: &TwoPkis) -> StoreScp {
    let tls = dcmtk_tls(
        &p.archive.gateway_key(),
        &p.archive.gateway_cert(),
        &p.gw.ca(),
    );
    let args: Vec<String> = tls
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    StoreScp::start_with("TLSARCHIVE", &refs)
}

/// radguard (plain listener) → DCMTK `storescp +tls` (route `tls = { ca, server_name,
/// client_cert, client_key }`; storescp requires and verifies radguard's client certificate):
/// echo and the whole series arrive identical.
#[test]
fn plain_client_through_radguard_to_tls_storescp() {
    let data = test_data();
    let p = two_pkis("out");
    let scp = tls_storescp(&p);
    // Sanity: the archive really speaks TLS only (a plain echo fails).
    assert!(
        !echoscu(scp.port, "DIRECT", "TLSARCHIVE").success(),
        "storescp +tls answered a plain echo"
    );
    let cfg = Cfg::plain()
        .peer("modality", "MODALITY", "127.0.0.1", "")
        .tls_route(
            "PACS",
            scp.port,
            "TLSARCHIVE",
            &p.archive.ca(),
            "localhost",
            (&p.gw.gateway_cert(), &p.gw.gateway_key()),
        );
    let rg = Radguard::start_any(&cfg.toml());
    let port = rg.port();
    echoscu(port, "MODALITY", "PACS").assert_success("echoscu → radguard → storescp +tls");
    storescu(port, "MODALITY", "PACS", &[data.ct_dir()])
        .assert_success("storescu → radguard → storescp +tls");
    assert_same_dirs(&data.ct_dir(), &scp.dir);
    let log = scp.log();
    assert!(log.contains("Association Received"), "{log}");
}

/// The route verifies the upstream: a certificate from a CA the route does not trust, or one
/// without the route's `server_name`, fails the TLS handshake; the client gets A-ASSOCIATE-RJ
/// 2/3/1, a security alert is logged, and the archive gets no association.
#[test]
fn upstream_certificate_wrong_ca_or_wrong_name_is_refused() {
    let p = two_pkis("upver");
    let scp = tls_storescp(&p);
    let client = (p.gw.gateway_cert(), p.gw.gateway_key());
    let cfg = Cfg::plain()
        .peer("modality", "MODALITY", "127.0.0.1", "")
        .tls_route(
            "WRONGCA",
            scp.port,
            "TLSARCHIVE",
            &p.gw.ca(),
            "localhost",
            (&client.0, &client.1),
        )
        .tls_route(
            "WRONGNAME",
            scp.port,
            "TLSARCHIVE",
            &p.archive.ca(),
            "pacs.radiology.example",
            (&client.0, &client.1),
        )
        .tls_route(
            "WRONGCLIENT",
            scp.port,
            "TLSARCHIVE",
            &p.archive.ca(),
            "localhost",
            (&p.archive.gateway_cert(), &p.archive.gateway_key()),
        )
        .tls_route(
            "PACS",
            scp.port,
            "TLSARCHIVE",
            &p.archive.ca(),
            "127.0.0.1",
            (&client.0, &client.1),
        );
    let rg = Radguard::start_any(&cfg.toml());
    for called in ["WRONGCA", "WRONGNAME"] {
        let before = rg.security_alerts().len();
        let v = probe(rg.port(), "MODALITY", called, &["echo"]);
        assert_rejected(&v, 2, 3, 1);
        let ok = wait_until(Duration::from_secs(10), || {
            rg.security_alerts().get(before..).is_some_and(|a| {
                a.iter().any(|e| {
                    e["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("TLS handshake"))
                })
            })
        });
        assert!(
            ok,
            "{called}: no security alert about the upstream handshake: {:#?}",
            rg.security_alerts()
        );
    }
    // The archive refuses radguard's client certificate (another CA): with TLS 1.3 radguard
    // learns it only when reading the A-ASSOCIATE-AC; the client still gets 2/3/1, blamed on
    // the upstream.
    let v = probe(rg.port(), "MODALITY", "WRONGCLIENT", &["echo"]);
    assert_rejected(&v, 2, 3, 1);
    let refused: Vec<Value> = events_named(&rg, "association-refused", 3)
        .into_iter()
        .filter(|e| e["called_ae"] == "WRONGCLIENT")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["blame"], "upstream", "{refused:#?}");
    assert_eq!(scp.associations(), 0, "{}", scp.log());
    assert!(scp.files().is_empty());
    // Positive control: the right CA, and the IP address SAN as server name.
    let v = probe(rg.port(), "MODALITY", "PACS", &["echo"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)]);
    assert_eq!(scp.associations(), 1, "{}", scp.log());
}

// ====================================================================== TLS both, Orthanc

/// DCMTK `storescu +tls` → radguard (TLS) → Orthanc with DICOM TLS enabled (Orthanc requires
/// radguard's client certificate): every instance arrives, one downloaded is identical. Orthanc
/// refuses a plain echo (so the link really is TLS).
#[test]
fn dcmtk_tls_through_radguard_to_orthanc_dicom_tls() {
    let data = test_data();
    let p = two_pkis("orthanc");
    let orthanc = Orthanc::start_extra(
        "ORTHANC",
        &json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": p.archive.gateway_cert(),
            "DicomTlsPrivateKey": p.archive.gateway_key(),
            "DicomTlsTrustedCertificates": p.gw.ca(),
            "DicomTlsRemoteCertificateRequired": true,
        }),
    );
    assert!(
        !echoscu(orthanc.dicom_port, "DIRECT", "ORTHANC").success(),
        "Orthanc with DicomTlsEnabled answered a plain echo"
    );
    let client = p.gw.client("modality");
    let cfg = Cfg::tls(&p.gw)
        .cert_peer("modality", "MODALITY", &client.0, "")
        .tls_route(
            "PACS",
            orthanc.dicom_port,
            "ORTHANC",
            &p.archive.ca(),
            "localhost",
            (&p.gw.gateway_cert(), &p.gw.gateway_key()),
        );
    let rg = Radguard::start_any(&cfg.toml());
    let tls = dcmtk_tls(&client.1, &client.0, &p.gw.ca());
    echoscu_tls(rg.tls_port(), "MODALITY", "PACS", &tls)
        .assert_success("echoscu +tls → radguard → Orthanc TLS");
    let files = data.ct_files();
    storescu_tls(rg.tls_port(), "MODALITY", "PACS", &tls, &files)
        .assert_success("storescu +tls → radguard → Orthanc TLS");
    assert_eq!(orthanc.instance_count(), files.len() as u64);
    let uid = data.sop_instance_uid("ct/CT_0001.dcm");
    let id = orthanc
        .find_instance(&uid)
        .unwrap_or_else(|| panic!("Orthanc has no instance {uid}"));
    let tmp = tmp_dir("orthanc-dl");
    let got = tmp.path().join("got.dcm");
    orthanc.download(&id, &got);
    assert_same_dataset(&data.path("ct/CT_0001.dcm"), &got);
}

// ===================================================================== handshake refusals

/// A client certificate from another CA: the TLS handshake fails (echoscu fails), a
/// security alert says so, the upstream sees nothing. The peer accepts any verified
/// certificate, so only the CA check can stop it. Positive control: a certificate from the
/// right CA is accepted.
#[test]
fn client_certificate_from_another_ca_fails_the_handshake() {
    let pki = Pki::init("wrongca", &["modality"]);
    let other = Pki::init("wrongca-other", &["intruder"]);
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::tls(&pki)
        .peer("any-cert", "INTRUDER", "127.0.0.1", "tls = \"required\"\n")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&cfg.toml());
    let (cert, key) = other.client("intruder");
    let before = rg.security_alerts().len();
    // The intruder trusts the gateway (right CA for the server), but its own certificate chains
    // to the other CA.
    let out = echoscu_tls(
        rg.tls_port(),
        "INTRUDER",
        "PACS",
        &dcmtk_tls(&key, &cert, &pki.ca()),
    );
    assert!(
        !out.success(),
        "a certificate from another CA was accepted:\n{}",
        out.text()
    );
    let alert = rg.wait_alert("TLS handshake failed");
    assert!(rg.security_alerts().len() > before, "{alert:#}");
    assert_untouched(&scp);
    assert!(
        requested_events(&rg).is_empty(),
        "an A-ASSOCIATE-RQ was processed after a failed handshake"
    );
    // Positive control.
    let (cert, key) = pki.client("modality");
    echoscu_tls(
        rg.tls_port(),
        "INTRUDER",
        "PACS",
        &dcmtk_tls(&key, &cert, &pki.ca()),
    )
    .assert_success("echoscu +tls with a certificate of the right CA");
}

/// An expired client certificate signed by the right CA (made with `openssl ca`): the handshake
/// fails, the alert says the certificate expired, the upstream sees nothing.
#[test]
fn expired_client_certificate_fails_the_handshake() {
    let pki = Pki::init("expired", &["modality"]);
    let (cert, key) = pki.expired_client("oldmod");
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::tls(&pki)
        .peer("old", "OLDMOD", "127.0.0.1", "tls = \"required\"\n")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&cfg.toml());
    let out = echoscu_tls(
        rg.tls_port(),
        "OLDMOD",
        "PACS",
        &dcmtk_tls(&key, &cert, &pki.ca()),
    );
    assert!(
        !out.success(),
        "an expired certificate was accepted:\n{}",
        out.text()
    );
    let alert = rg.wait_alert("TLS handshake failed");
    let detail = alert["detail"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        detail.contains("expired"),
        "the alert does not say the certificate expired: {alert:#}"
    );
    assert_untouched(&scp);
    // Positive control: a valid certificate from the same CA, same AE.
    let (cert, key) = pki.client("modality");
    echoscu_tls(
        rg.tls_port(),
        "OLDMOD",
        "PACS",
        &dcmtk_tls(&key, &cert, &pki.ca()),
    )
    .assert_success("echoscu +tls with a valid certificate");
}

// ========================================================================= identity refusals

/// Peers ALICE and BOB, each bound to its own certificate, and a route to storescp.
struct TwoPeers {
    pki: Pki,
    scp: StoreScp,
    rg: Radguard,
    alice: (PathBuf, PathBuf),
    bob: (PathBuf, PathBuf),
}

fn two_peers(label: &str, alice_address: &str) -> TwoPeers {
    let pki = Pki::init(label, &["alice", "bob"]);
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let scp = StoreScp::start("ARCHIVE");
    let fa = fingerprint(&alice.0);
    let cfg = Cfg::tls(&pki)
        .peer(
            "alice",
            "ALICE",
            alice_address,
            &format!("cert_sha256 = [{fa:?}]\n"),
        )
        .cert_peer("bob", "BOB", &bob.0, "")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&cfg.toml());
    TwoPeers {
        pki,
        scp,
        rg,
        alice,
        bob,
    }
}

/// Bob's (valid, same CA) certificate presented with Alice's AE title: RJ 1/1/3, condition
/// `cert_sha256`, the alert does not reveal Alice's fingerprint, nothing upstream.
#[test]
fn certificate_of_another_peer_is_refused() {
    let t = two_peers("otherpeer", "127.0.0.1");
    let port = t.rg.tls_port();
    let expected = fingerprint(&t.alice.0);
    let before = t.rg.security_alerts().len();
    let v = tls_probe(port, "ALICE", &t.pki.ca(), &t.bob, &[], &["echo"]);
    assert_refused_for(&t.rg, &v, "cert_sha256", before, &[&expected]);
    assert_untouched(&t.scp);
    // Positive controls: each with its own certificate.
    for (ae, c) in [("ALICE", &t.alice), ("BOB", &t.bob)] {
        let v = tls_probe(port, ae, &t.pki.ca(), c, &[], &["echo"]);
        assert_accepted(&v);
        assert_eq!(statuses(&v), vec![Some(0)], "{ae}");
    }
}

/// The right certificate with the wrong AE title: an AE no peer uses → RJ 1/1/3 (`calling_ae`);
/// the AE of another peer → RJ 1/1/3 (`cert_sha256`). Nothing upstream.
#[test]
fn right_certificate_with_wrong_ae_title_is_refused() {
    let t = two_peers("wrongae", "127.0.0.1");
    let port = t.rg.tls_port();
    let before = t.rg.security_alerts().len();
    let v = tls_probe(port, "MALLORY", &t.pki.ca(), &t.alice, &[], &["echo"]);
    assert_refused_for(&t.rg, &v, "calling_ae", before, &[]);
    let before = t.rg.security_alerts().len();
    let v = tls_probe(port, "BOB", &t.pki.ca(), &t.alice, &[], &["echo"]);
    assert_refused_for(&t.rg, &v, "cert_sha256", before, &[&fingerprint(&t.bob.0)]);
    assert_untouched(&t.scp);
    let v = tls_probe(port, "ALICE", &t.pki.ca(), &t.alice, &[], &["echo"]);
    assert_accepted(&v);
}

/// The right certificate and AE title from an address the peer does not list: RJ 1/1/3
/// (`address`), nothing upstream. (Alice may only connect from 127.0.0.9; the probe connects
/// from 127.0.0.1.)
#[test]
fn right_ae_and_certificate_from_wrong_address_is_refused() {
    let t = two_peers("wrongaddr", "127.0.0.9");
    let port = t.rg.tls_port();
    let before = t.rg.security_alerts().len();
    let v = tls_probe(port, "ALICE", &t.pki.ca(), &t.alice, &[], &["echo"]);
    assert_refused_for(&t.rg, &v, "address", before, &["127.0.0.9"]);
    assert_untouched(&t.scp);
    let v = tls_probe(port, "BOB", &t.pki.ca(), &t.bob, &[], &["echo"]);
    assert_accepted(&v);
}

// =========================================================================== user identity

/// Peer ALICE (certificate-bound) requires an authenticated user among `users = ["alice"]`;
/// `[[user]]` alice and bob from `radguard passwd`.
struct UserSetup {
    pki: Pki,
    scp: StoreScp,
    rg: Radguard,
    alice: (PathBuf, PathBuf),
}

const ALICE_PASS: &str = "correct horse battery staple";
const BOB_PASS: &str = "bob's own passcode";

fn user_setup(label: &str) -> UserSetup {
    let pki = Pki::init(label, &["alice"]);
    let alice = pki.client("alice");
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::tls(&pki)
        .cert_peer(
            "alice",
            "ALICE",
            &alice.0,
            "user_identity = \"required\"\nusers = [\"alice\"]\n",
        )
        .route("PACS", scp.port, "ARCHIVE")
        .raw(&passwd_user("alice", ALICE_PASS))
        .raw(&passwd_user("bob", BOB_PASS));
    let rg = Radguard::start_any(&cfg.toml());
    UserSetup {
        pki,
        scp,
        rg,
        alice,
    }
}

fn user_args<'a>(kind: &'a str, user: &'a str, pass: Option<&'a str>) -> Vec<&'a str> {
    let mut v = vec!["--user-identity-type", kind, "--user", user];
    if let Some(p) = pass {
        v.extend(["--passcode", p]);
    }
    v
}

/// No User Identity at all, and a type 1 (username only, a claim): RJ 1/1/3
/// (`user_identity_required`), nothing upstream.
#[test]
fn missing_required_user_identity_is_refused() {
    let u = user_setup("nouser");
    let port = u.rg.tls_port();
    let before = u.rg.security_alerts().len();
    let v = tls_probe(port, "ALICE", &u.pki.ca(), &u.alice, &[], &["echo"]);
    assert_refused_for(&u.rg, &v, "user_identity_required", before, &[]);
    let before = u.rg.security_alerts().len();
    let v = tls_probe(
        port,
        "ALICE",
        &u.pki.ca(),
        &u.alice,
        &user_args("1", "alice", None),
        &["echo"],
    );
    assert_refused_for(&u.rg, &v, "user_identity_required", before, &[]);
    assert_untouched(&u.scp);
    let v = tls_probe(
        port,
        "ALICE",
        &u.pki.ca(),
        &u.alice,
        &user_args("2", "alice", Some(ALICE_PASS)),
        &["echo"],
    );
    assert_accepted(&v);
}

/// Type 2 with a wrong passcode: RJ 1/1/3 (`user_identity_rejected`, "wrong passcode"); the
/// alert shows neither passcode. A user with the right passcode who is not in the peer's
/// `users`: RJ 1/1/3 (`users`). Nothing upstream.
#[test]
fn wrong_passcode_is_refused() {
    let u = user_setup("badpass");
    let port = u.rg.tls_port();
    let before = u.rg.security_alerts().len();
    let v = tls_probe(
        port,
        "ALICE",
        &u.pki.ca(),
        &u.alice,
        &user_args("2", "alice", Some("guess")),
        &["echo"],
    );
    assert_refused_for(
        &u.rg,
        &v,
        "user_identity_rejected",
        before,
        &["guess", ALICE_PASS],
    );
    assert!(
        u.rg.security_alerts()
            .last()
            .and_then(|a| a["detail"].as_str())
            .is_some_and(|d| d.contains("wrong passcode")),
        "{:#?}",
        u.rg.security_alerts()
    );
    let before = u.rg.security_alerts().len();
    let v = tls_probe(
        port,
        "ALICE",
        &u.pki.ca(),
        &u.alice,
        &user_args("2", "bob", Some(BOB_PASS)),
        &["echo"],
    );
    assert_refused_for(&u.rg, &v, "users", before, &[BOB_PASS]);
    assert_untouched(&u.scp);
    // The passcode never appears in radguard's log at all.
    let log = u.rg.log();
    assert!(!log.contains(ALICE_PASS) && !log.contains(BOB_PASS) && !log.contains("guess"));
}

/// The right passcode: accepted; with a positive response requested the A-ASSOCIATE-AC
/// carries a User Identity sub-item with an empty server response (PS3.7 D.3.3.7.2), without
/// the request it carries none. The accepted event names the authenticated user.
#[test]
fn right_passcode_is_accepted_with_positive_response_when_asked() {
    let u = user_setup("goodpass");
    let port = u.rg.tls_port();
    let mut args = user_args("2", "alice", Some(ALICE_PASS));
    args.push("--positive-response");
    let v = tls_probe(port, "ALICE", &u.pki.ca(), &u.alice, &args, &["echo"]);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)]);
    assert_eq!(v["user_identity_response"]["present"], true, "{v:#}");
    assert_eq!(
        v["user_identity_response"]["server_response_hex"], "",
        "{v:#}"
    );
    let v = tls_probe(
        port,
        "ALICE",
        &u.pki.ca(),
        &u.alice,
        &user_args("2", "alice", Some(ALICE_PASS)),
        &["echo"],
    );
    assert_accepted(&v);
    assert_eq!(v["user_identity_response"]["present"], false, "{v:#}");
    let accepted = events_named(&u.rg, "association-accepted", 2);
    assert_eq!(accepted.len(), 2);
    assert!(
        accepted.iter().all(|e| e["authenticated_user"] == "alice"),
        "{accepted:#?}"
    );
    assert_eq!(u.scp.associations(), 2);
    assert!(!u.rg.log().contains(ALICE_PASS), "the passcode was logged");
}

/// DCMTK itself as the User Identity client: `storescu +tls ... --user alice --password P
/// --pos-response`. The right passcode stores (the file arrives identical); a wrong one is
/// refused with "Calling AE Title Not Recognized" and nothing reaches the archive.
#[test]
fn dcmtk_storescu_user_identity_passcode() {
    let data = test_data();
    let u = user_setup("dcmtkuser");
    let port = u.rg.tls_port();
    let file = data.path("ct/CT_0001.dcm");
    let with_user = |pass: &str| {
        let mut args = dcmtk_tls(&u.alice.1, &u.alice.0, &u.pki.ca());
        args.extend(["--user", "alice", "--password", pass, "--pos-response"].map(Into::into));
        args
    };
    let before = u.rg.security_alerts().len();
    let out = storescu_tls(
        port,
        "ALICE",
        "PACS",
        &with_user("not the passcode"),
        std::slice::from_ref(&file),
    );
    assert!(!out.success(), "a wrong passcode stored:\n{}", out.text());
    assert!(
        out.all().contains("Calling AE Title Not Recognized"),
        "storescu should report A-ASSOCIATE-RJ 1/1/3:\n{}",
        out.text()
    );
    let alerts = u.rg.security_alerts();
    assert!(alerts
        .get(before..)
        .is_some_and(|a| a.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("(condition: user_identity_rejected")))));
    assert_untouched(&u.scp);
    storescu_tls(
        port,
        "ALICE",
        "PACS",
        &with_user(ALICE_PASS),
        std::slice::from_ref(&file),
    )
    .assert_success("storescu +tls --user alice --password (right) --pos-response");
    let got = u.scp.files();
    assert_eq!(got.len(), 1);
    assert_same_dataset(&file, &got[0]);
}

// ===================================================================================== JWT

struct JwtSetup {
    pki: Pki,
    scp: StoreScp,
    rg: Radguard,
    alice: (PathBuf, PathBuf),
    key: PathBuf,
    other_key: PathBuf,
    _keys: tempfile::TempDir,
}

const ISSUER: &str = "https://idp.radiology.test";
const AUDIENCE: &str = "radguard";

fn jwt_setup(label: &str) -> JwtSetup {
    let pki = Pki::init(label, &["alice"]);
    let alice = pki.client("alice");
    let keys = tmp_dir("jwt-keys");
    let (key, public) = ed25519_keypair(keys.path(), "idp");
    let (other_key, _) = ed25519_keypair(keys.path(), "other");
    let scp = StoreScp::start("ARCHIVE");
    let cfg = Cfg::tls(&pki)
        .cert_peer(
            "alice",
            "ALICE",
            &alice.0,
            "user_identity = \"required\"\nusers = [\"alice\"]\n",
        )
        .route("PACS", scp.port, "ARCHIVE")
        .raw(&format!(
            "[jwt]\nissuer = {ISSUER:?}\naudience = {AUDIENCE:?}\nleeway_secs = 30\n\
             keys = [ {{ kid = \"idp-1\", alg = \"EdDSA\", public_key = {public:?} }} ]\n"
        ));
    let rg = Radguard::start_any(&cfg.toml());
    JwtSetup {
        pki,
        scp,
        rg,
        alice,
        key,
        other_key,
        _keys: keys,
    }
}

fn claims(sub: &str, aud: &str, exp_offset: i64) -> Value {
    let now = unix_now();
    json!({"iss": ISSUER, "aud": aud, "sub": sub, "iat": now - 7200, "nbf": now - 7200, "exp": now + exp_offset})
}

fn jwt_probe(j: &JwtSetup, token: &str) -> Value {
    tls_probe(
        j.rg.tls_port(),
        "ALICE",
        &j.pki.ca(),
        &j.alice,
        &[
            "--user-identity-type",
            "5",
            "--jwt",
            token,
            "--positive-response",
        ],
        &["echo"],
    )
}

/// A valid EdDSA JWT (openssl-signed) is accepted; the same token expired an hour ago (beyond
/// the 30 s leeway) is refused with RJ 1/1/3 (`user_identity_rejected`, "token expired");
/// nothing upstream for the refusal; the token never appears in the log.
#[test]
fn expired_jwt_is_refused_and_valid_jwt_accepted() {
    let j = jwt_setup("jwtexp");
    let expired = jwt_eddsa(&j.key, "idp-1", &claims("alice", AUDIENCE, -3600));
    let before = j.rg.security_alerts().len();
    let v = jwt_probe(&j, &expired);
    assert_refused_for(&j.rg, &v, "user_identity_rejected", before, &[&expired]);
    let last = j.rg.security_alerts().last().cloned().unwrap_or_default();
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{last:#}"
    );
    assert_untouched(&j.scp);

    let valid = jwt_eddsa(&j.key, "idp-1", &claims("alice", AUDIENCE, 600));
    let v = jwt_probe(&j, &valid);
    assert_accepted(&v);
    assert_eq!(statuses(&v), vec![Some(0)]);
    let accepted = events_named(&j.rg, "association-accepted", 1);
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["authenticated_user"], "alice", "{accepted:#?}");
    let log = j.rg.log();
    assert!(
        !log.contains(&valid) && !log.contains(&expired),
        "a token was logged"
    );
}

/// Tokens that are not to be trusted: wrong audience, signed by an unknown key (same kid),
/// a sub not in the peer's users: each RJ 1/1/3 with its condition, nothing upstream.
#[test]
fn jwt_with_wrong_audience_or_signature_is_refused() {
    let j = jwt_setup("jwtbad");
    let cases = [
        (
            jwt_eddsa(&j.key, "idp-1", &claims("alice", "someone-else", 600)),
            "user_identity_rejected",
            "audience",
        ),
        (
            jwt_eddsa(&j.other_key, "idp-1", &claims("alice", AUDIENCE, 600)),
            "user_identity_rejected",
            "signature",
        ),
        (
            jwt_eddsa(&j.key, "idp-1", &claims("bob", AUDIENCE, 600)),
            "users",
            "",
        ),
    ];
    for (token, condition, reason) in &cases {
        let before = j.rg.security_alerts().len();
        let v = jwt_probe(&j, token);
        assert_refused_for(&j.rg, &v, condition, before, &[token]);
        let last = j.rg.security_alerts().last().cloned().unwrap_or_default();
        assert!(
            last["detail"].as_str().is_some_and(|d| d.contains(reason)),
            "{last:#}"
        );
    }
    assert_untouched(&j.scp);
}

/// DCMTK `storescu +tls --jwt FILE`: a valid token stores, an expired one is refused (RJ
/// "Calling AE Title Not Recognized") and nothing reaches the archive.
#[test]
fn dcmtk_storescu_jwt() {
    let data = test_data();
    let j = jwt_setup("dcmtkjwt");
    let port = j.rg.tls_port();
    let file = data.path("ct/CT_0002.dcm");
    let dir = tmp_dir("jwt-files");
    let with_token = |name: &str, token: &str| {
        let f = dir.path().join(name);
        std::fs::write(&f, token).unwrap();
        let mut args = dcmtk_tls(&j.alice.1, &j.alice.0, &j.pki.ca());
        args.extend(["--jwt".into(), f.into_os_string()]);
        args
    };
    let expired = jwt_eddsa(&j.key, "idp-1", &claims("alice", AUDIENCE, -3600));
    let out = storescu_tls(
        port,
        "ALICE",
        "PACS",
        &with_token("expired.jwt", &expired),
        std::slice::from_ref(&file),
    );
    assert!(!out.success(), "an expired token stored:\n{}", out.text());
    assert!(
        out.all().contains("Calling AE Title Not Recognized"),
        "{}",
        out.text()
    );
    assert_untouched(&j.scp);
    let valid = jwt_eddsa(&j.key, "idp-1", &claims("alice", AUDIENCE, 600));
    storescu_tls(
        port,
        "ALICE",
        "PACS",
        &with_token("valid.jwt", &valid),
        std::slice::from_ref(&file),
    )
    .assert_success("storescu +tls --jwt (valid)");
    let got = j.scp.files();
    assert_eq!(got.len(), 1);
    assert_same_dataset(&file, &got[0]);
}

// ============================================================================ TLS profile

/// Runs `openssl s_client` offers against radguard's TLS port and checks each is refused (no
/// session, and the refusal came from the server: an alert, not a local OpenSSL limit) or
/// accepted (a session with the expected protocol).
fn check_offers(port: u16, ca: &Path, refused: &[&[&str]], accepted: &[(&[&str], &str)]) {
    for args in refused {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-CAfile", ca.to_str().unwrap()]);
        let out = s_client(port, &a);
        assert!(
            s_client_session(&out).is_none(),
            "radguard accepted `openssl s_client {}`:\n{}",
            args.join(" "),
            out.text()
        );
        assert!(
            out.stderr.contains("alert")
                && !out.stderr.contains("no protocols available")
                && !out.stderr.contains("no cipher match"),
            "`openssl s_client {}` did not reach the server's refusal:\n{}",
            args.join(" "),
            out.text()
        );
    }
    for (args, proto) in accepted {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["-CAfile", ca.to_str().unwrap(), "-verify_return_error"]);
        let out = s_client(port, &a);
        let session = s_client_session(&out);
        assert!(
            session.as_ref().is_some_and(|(p, _)| p == proto),
            "`openssl s_client {}` should give a {proto} session, got {session:?}:\n{}",
            args.join(" "),
            out.text()
        );
    }
}

/// With the ECDSA gateway certificate of `radguard tls init`: TLS 1.1, TLS 1.2 CBC suites
/// (ECDHE-ECDSA-AES*-SHA*) are refused; TLS 1.2 ECDHE-ECDSA AES-GCM and ChaCha20 and TLS 1.3
/// are accepted. Each refusal is logged as a failed handshake.
#[test]
fn tls_profile_refuses_tls11_and_cbc_with_ecdsa_certificate() {
    let pki = Pki::init("profile-ec", &[]);
    let cfg = Cfg::tls(&pki);
    let cfg = cfg.peer("x", "X", "127.0.0.1", "").route("PACS", 9, "X");
    let rg = Radguard::start_any(&cfg.toml());
    let port = rg.tls_port();
    check_offers(
        port,
        &pki.ca(),
        &[
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            &["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"],
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-SHA384"],
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"],
        ],
        &[
            (
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                "TLSv1.2",
            ),
            (
                &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
                "TLSv1.2",
            ),
            (&["-tls1_3"], "TLSv1.3"),
        ],
    );
    let failed = rg
        .security_alerts()
        .iter()
        .filter(|a| {
            a["detail"]
                .as_str()
                .is_some_and(|d| d.contains("TLS handshake failed"))
        })
        .count();
    assert!(failed >= 5, "{:#?}", rg.security_alerts());
}

/// With an RSA gateway certificate (so RSA key transport would be possible at all): TLS 1.1,
/// RSA key exchange (AES128-SHA: CBC; AES256-GCM-SHA384: AEAD), finite-field DHE and
/// ECDHE-RSA CBC are refused; ECDHE-RSA AES-GCM and TLS 1.3 are accepted.
#[test]
fn tls_profile_refuses_rsa_key_exchange_cbc_and_dhe_with_rsa_certificate() {
    let pki = Pki::init("profile-rsa", &[]);
    let (cert, key) = pki.rsa_gateway();
    let cfg = Cfg::tls(&pki)
        .gateway_cert(&cert, &key, &pki.ca())
        .peer("x", "X", "127.0.0.1", "")
        .route("PACS", 9, "X");
    let rg = Radguard::start_any(&cfg.toml());
    check_offers(
        rg.tls_port(),
        &pki.ca(),
        &[
            &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
            &["-tls1_2", "-cipher", "AES128-SHA"],
            &["-tls1_2", "-cipher", "AES256-GCM-SHA384"],
            &["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"],
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"],
        ],
        &[
            (
                &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
                "TLSv1.2",
            ),
            (&["-tls1_3"], "TLSv1.3"),
        ],
    );
}

// ================================================================================= reload

/// Reload under load (SIGHUP): a C-STORE association (storescu +tls, the series many times)
/// and an echo association held open are running when the policy changes; both complete
/// (every C-STORE and the echo after the reload succeed). The next associations see the new
/// policy: BOB, removed, gets RJ 1/1/3; CAROL, added, is accepted.
#[test]
fn reload_under_load_keeps_running_associations_and_applies_new_policy() {
    let data = test_data();
    let pki = Pki::init("reload", &["alice", "bob", "carol"]);
    let (alice, bob, carol) = (pki.client("alice"), pki.client("bob"), pki.client("carol"));
    // storescp serves one association at a time: one for the store load, one for the echo.
    let scp = StoreScp::start_with("ARCHIVE", &["--ignore"]);
    let echo_scp = StoreScp::start("ECHOSCP");
    let base = |with_bob: bool, with_carol: bool| {
        let mut c = Cfg::tls(&pki).cert_peer("alice", "ALICE", &alice.0, "");
        if with_bob {
            c = c.cert_peer("bob", "BOB", &bob.0, "");
        }
        if with_carol {
            c = c.cert_peer("carol", "CAROL", &carol.0, "");
        }
        c.route("PACS", scp.port, "ARCHIVE")
            .route("HOLD", echo_scp.port, "ECHOSCP")
            .toml()
    };
    let rg = Radguard::start_any(&base(true, false));
    let port = rg.tls_port();
    let v = tls_probe(port, "CAROL", &pki.ca(), &carol, &[], &["echo"]);
    assert_rejected(&v, 1, 1, 3);

    // Load: an echo association held open across the reload ...
    let mut opts = probe_tls(&pki.ca(), &alice.0, &alice.1);
    opts.extend(["echo", "--count", "1", "--hold", "4", "--then-count", "3"].map(String::from));
    let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
    let mut held = probe_spawn(port, "ALICE", "HOLD", &refs);
    assert!(
        held.wait_ready(Duration::from_secs(20)),
        "the held association was not established"
    );
    // ... and a long C-STORE association (the series 40 times in one association).
    const REPEAT: usize = 40;
    let files = data.ct_files();
    let n_files = files.len();
    let tls = dcmtk_tls(&alice.1, &alice.0, &pki.ca());
    let store = thread::spawn(move || {
        let mut rest = tls.clone();
        rest.extend(["--repeat".into(), REPEAT.to_string().into()]);
        storescu_tls(port, "ALICE", "PACS", &rest, &files)
    });
    let started = wait_until(Duration::from_secs(20), || scp.associations() >= 1);
    assert!(
        started,
        "the store association did not start:\n{}",
        scp.log()
    );

    let reloads = rg.reload_events().len();
    rg.rewrite_config(&base(false, true));
    rg.signal("HUP");
    let ev = rg.wait_reload(reloads);
    assert_eq!(ev["ok"], true, "{ev:#}");
    let reload_seq = ev["seq"].as_u64().expect("seq");

    let out = store.join().expect("storescu thread");
    out.assert_success("storescu +tls running across the reload");
    let ok = out
        .all()
        .matches("Received Store Response (Success)")
        .count();
    assert_eq!(
        ok,
        n_files * REPEAT,
        "every C-STORE succeeds:\n{}",
        out.all()
    );
    let v = held.wait_json(Duration::from_secs(30));
    assert_accepted(&v);
    assert_eq!(
        statuses(&v),
        vec![Some(0); 4],
        "echoes before and after the reload: {v:#}"
    );
    assert_eq!(v["released"], true, "{v:#}");

    // Both associations were accepted before the reload and released after it.
    events_named(&rg, "association-released", 2);
    let events = rg.events();
    let accepted: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "association-accepted" && e["peer"] == "alice")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    let released: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "association-released")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(accepted.len(), 2, "{events:#?}");
    assert!(
        accepted.iter().all(|s| *s < reload_seq),
        "accepted after the reload? {accepted:?} vs {reload_seq}"
    );
    assert_eq!(released.len(), 2, "{events:#?}");
    assert!(
        released.iter().all(|s| *s > reload_seq),
        "an association ended before the reload (load too short?): {released:?} vs {reload_seq}"
    );

    // The next associations see the new policy.
    let before = rg.security_alerts().len();
    let v = tls_probe(port, "BOB", &pki.ca(), &bob, &[], &["echo"]);
    assert_refused_for(&rg, &v, "calling_ae", before, &[]);
    let v = tls_probe(port, "CAROL", &pki.ca(), &carol, &[], &["echo"]);
    assert_accepted(&v);
    let v = tls_probe(port, "ALICE", &pki.ca(), &alice, &[], &["echo"]);
    assert_accepted(&v);
}

/// `radguard reload --data DIR` with a broken config (a certificate path that does not exist;
/// then a key that does not belong to the certificate): refused whole (event ok=false), the
/// old policy and certificates stay (DAVE, added by the broken config, is still refused; ALICE
/// still works). Then a good config: DAVE is admitted and the gateway serves its new (RSA)
/// certificate.
#[test]
fn broken_config_reload_is_refused_whole_and_old_policy_stays() {
    let pki = Pki::init("badreload", &["alice", "dave"]);
    let (alice, dave) = (pki.client("alice"), pki.client("dave"));
    let scp = StoreScp::start("ARCHIVE");
    let good_old = Cfg::tls(&pki)
        .cert_peer("alice", "ALICE", &alice.0, "")
        .route("PACS", scp.port, "ARCHIVE");
    let rg = Radguard::start_any(&good_old.toml());
    let port = rg.tls_port();
    let with_dave = |c: Cfg| {
        c.cert_peer("alice", "ALICE", &alice.0, "")
            .cert_peer("dave", "DAVE", &dave.0, "")
            .route("PACS", scp.port, "ARCHIVE")
    };

    let missing = pki.dir.join("does-not-exist.pem");
    let (rsa_cert, rsa_key) = pki.rsa_gateway();
    let broken = [
        with_dave(Cfg::tls(&pki).gateway_cert(&missing, &pki.gateway_key(), &pki.ca())).toml(),
        with_dave(Cfg::tls(&pki).gateway_cert(&pki.gateway_cert(), &rsa_key, &pki.ca())).toml(),
    ];
    for (i, text) in broken.iter().enumerate() {
        let reloads = rg.reload_events().len();
        rg.rewrite_config(text);
        let out = rg.reload_cli();
        out.assert_success("radguard reload --data");
        let ev = rg.wait_reload(reloads);
        assert_eq!(ev["ok"], false, "broken config {i} was taken: {ev:#}");
        let before = rg.security_alerts().len();
        let v = tls_probe(port, "DAVE", &pki.ca(), &dave, &[], &["echo"]);
        assert_refused_for(&rg, &v, "calling_ae", before, &[]);
        let v = tls_probe(port, "ALICE", &pki.ca(), &alice, &[], &["echo"]);
        assert_accepted(&v);
        assert_eq!(statuses(&v), vec![Some(0)]);
    }
    let before_cert = s_client(port, &["-tls1_3", "-CAfile", pki.ca().to_str().unwrap()]);
    assert!(
        before_cert.stdout.contains("Peer signature type: ECDSA")
            || before_cert.stdout.contains("ecdsa"),
        "{}",
        before_cert.text()
    );

    let reloads = rg.reload_events().len();
    rg.rewrite_config(
        &with_dave(Cfg::tls(&pki).gateway_cert(&rsa_cert, &rsa_key, &pki.ca())).toml(),
    );
    rg.reload_cli().assert_success("radguard reload --data");
    let ev = rg.wait_reload(reloads);
    assert_eq!(ev["ok"], true, "{ev:#}");
    let v = tls_probe(port, "DAVE", &pki.ca(), &dave, &[], &["echo"]);
    assert_accepted(&v);
    let after_cert = s_client(port, &["-tls1_3", "-CAfile", pki.ca().to_str().unwrap()]);
    assert!(
        after_cert.stdout.contains("Server public key is 2048 bit"),
        "the reloaded (RSA) gateway certificate is not served:\n{}",
        after_cert.text()
    );
}

// ============================================================ slow TLS upstream (regression)

/// A minimal DICOM Storage SCP over TLS (tokio-rustls with radguard-tls's server profile) that
/// reads slowly through a small receive buffer, so radguard's writes to it keep hitting a full
/// socket. It accepts every proposed context (first transfer syntax), answers each C-STORE with
/// 0x0000 once the last data fragment arrived, and the release. `stored` counts the data set
/// bytes of completed C-STOREs.
struct SlowTlsScp {
    port: u16,
    stored: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    _thread: thread::JoinHandle<()>,
}

impl SlowTlsScp {
    fn start(cert: &Path, key: &Path) -> SlowTlsScp {
        use radguard_tls::tokio_rustls::TlsAcceptor;
        let cfg = radguard_tls::server_config(cert, key, None, radguard_tls::ClientAuth::None)
            .expect("server config for the slow SCP");
        let stored = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = std::sync::Arc::clone(&stored);
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().expect("socket");
                sock.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
                sock.bind(([127, 0, 0, 1], 0).into()).expect("bind");
                let listener = sock.listen(4).expect("listen");
                tx.send(listener.local_addr().expect("addr").port()).ok();
                let acceptor = TlsAcceptor::from(cfg);
                while let Ok((tcp, _)) = listener.accept().await {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    let _ = slow_scp_session(tls, &out).await;
                }
            });
        });
        let port = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("slow SCP port");
        SlowTlsScp {
            port,
            stored,
            _thread: thread,
        }
    }
}

/// Reads `n` bytes slowly: at most 16 KiB per read, 2 ms pause after each (about 8 MB/s).
async fn slow_read<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let end = (got + 16 * 1024).min(n);
        let k = r.read(&mut buf[got..end]).await?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += k;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(buf)
}

async fn slow_scp_session<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    stored: &std::sync::Mutex<Vec<usize>>,
) -> std::io::Result<()> {
    use dicom_ul::pdu::{Pdu, PresentationContextResult, PresentationContextResultReason};
    use radguard_dicom::pdu::{decode_control, encode, pdvs, RELEASE_RP};
    use tokio::io::AsyncWriteExt;
    let bad = |m: &str| std::io::Error::other(m.to_string());
    let mut command = Vec::new();
    let mut data_bytes = 0usize;
    let mut pending: Option<radguard_dicom::dimse::Command> = None;
    loop {
        let head = slow_read(&mut s, 6).await?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        if len > 1 << 22 {
            return Err(bad("PDU too long"));
        }
        let body = slow_read(&mut s, len).await?;
        match head[0] {
            0x01 => {
                let mut full = head.clone();
                full.extend_from_slice(&body);
                let Ok(Pdu::AssociationRQ(rq)) = decode_control(&full) else {
                    return Err(bad("bad A-ASSOCIATE-RQ"));
                };
                let ac = dicom_ul::pdu::AssociationAC {
                    protocol_version: 1,
                    calling_ae_title: rq.calling_ae_title.clone(),
                    called_ae_title: rq.called_ae_title.clone(),
                    application_context_name: rq.application_context_name.clone(),
                    presentation_contexts: rq
                        .presentation_contexts
                        .iter()
                        .map(|pc| PresentationContextResult {
                            id: pc.id,
                            reason: PresentationContextResultReason::Acceptance,
                            transfer_syntax: pc.transfer_syntaxes[0].clone(),
                        })
                        .collect(),
                    user_variables: vec![
                        dicom_ul::pdu::UserVariableItem::MaxLength(16384),
                        dicom_ul::pdu::UserVariableItem::ImplementationClassUID(
                            "1.2.826.0.1.3680043.9.9999.1".into(),
                        ),
                    ],
                };
                let bytes = encode(&Pdu::AssociationAC(ac)).map_err(|e| bad(&e.to_string()))?;
                s.write_all(&bytes).await?;
                s.flush().await?;
            }
            0x04 => {
                for p in pdvs(&body).map_err(|e| bad(&e.to_string()))? {
                    if p.is_command {
                        command.extend_from_slice(p.data);
                        if p.is_last {
                            let c = radguard_dicom::dimse::Command::decode(&command)
                                .map_err(|e| bad(&e.to_string()))?;
                            command.clear();
                            data_bytes = 0;
                            pending = Some(c);
                        }
                        continue;
                    }
                    data_bytes += p.data.len();
                    if !p.is_last {
                        continue;
                    }
                    let Some(c) = pending.take() else {
                        return Err(bad("data without a command"));
                    };
                    let rsp = radguard_dicom::dimse::encode_response(
                        radguard_dicom::CommandField::CStoreRq,
                        c.message_id.unwrap_or(0),
                        c.affected_sop_class.as_deref(),
                        c.affected_sop_instance.as_deref(),
                        0x0000,
                        None,
                    );
                    let mut out = Vec::new();
                    radguard_dicom::pdu::encode_pdata(
                        &mut out,
                        &[radguard_dicom::pdu::Pdv {
                            context_id: p.context_id,
                            is_command: true,
                            is_last: true,
                            data: &rsp,
                        }],
                    );
                    stored.lock().unwrap().push(data_bytes);
                    s.write_all(&out).await?;
                    s.flush().await?;
                }
            }
            0x05 => {
                s.write_all(&RELEASE_RP).await?;
                s.flush().await?;
                let _ = s.shutdown().await;
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
}

/// Makes `out`: the test data's CT slice 1 with 8 MiB of pixel data (2048 x 2048 x 16 bit)
/// and a new SOP Instance UID.
fn big_instance(out: &Path) {
    let data = test_data();
    let script = "import sys\nfrom pydicom import dcmread\nds = dcmread(sys.argv[1])\n\
                  ds.Rows, ds.Columns = 2048, 2048\n\
                  ds.PixelData = bytes(range(256)) * (2048 * 2048 * 2 // 256)\n\
                  ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = '2.25.3141592653589793'\n\
                  ds.save_as(sys.argv[2])\n";
    let mut cmd = std::process::Command::new(venv_python());
    cmd.arg("-c")
        .arg(script)
        .arg(data.path("ct/CT_0001.dcm"))
        .arg(out);
    run(&mut cmd, CLIENT_TIMEOUT).assert_success("make the 8 MiB instance");
}

/// Back-pressure through TLS: an 8 MiB C-STORE to a TLS upstream that reads slowly (a 16 KiB
/// receive buffer, ~16 KiB per 2 ms) is relayed whole and answered: radguard's writes to the
/// upstream keep meeting a full socket, and the last TLS records must still go out.
#[test]
fn large_store_to_slow_tls_upstream_completes() {
    let p = two_pkis("slowup");
    let scp = SlowTlsScp::start(&p.archive.gateway_cert(), &p.archive.gateway_key());
    let cfg = Cfg::plain()
        .peer("modality", "MODALITY", "127.0.0.1", "")
        .raw(&format!(
            "[[route]]\ncalled_ae = \"PACS\"\nupstream = \"127.0.0.1:{}\"\nupstream_ae = \"SLOW\"\n\
             tls = {{ ca = {:?}, server_name = \"localhost\" }}\n",
            scp.port,
            p.archive.ca()
        ));
    let rg = Radguard::start_any(&cfg.toml());
    let tmp = tmp_dir("big");
    let big = tmp.path().join("big.dcm");
    big_instance(&big);
    let v = probe(
        rg.port(),
        "MODALITY",
        "PACS",
        &["--timeout", "30", "store", big.to_str().unwrap()],
    );
    assert_accepted(&v);
    assert_eq!(
        statuses(&v),
        vec![Some(0)],
        "the C-STORE through radguard to the slow TLS upstream was not answered: {v:#}\n\
         upstream got data sets of {:?} bytes",
        scp.stored.lock().unwrap()
    );
    let got = scp.stored.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0] > 8 * 1024 * 1024, "{got:?}");
    assert!(
        v["elapsed_secs"].as_f64().is_some_and(|s| s < 20.0),
        "{v:#}"
    );
}
