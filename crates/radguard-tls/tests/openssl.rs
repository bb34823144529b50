//! The profile as another implementation sees it: OpenSSL's `s_client` against a listener built
//! by `server_config`, and `openssl verify` / `openssl x509` on the quick-start files.
//!
//! Needs the `openssl` command (Debian package `openssl`); the tests fail, not skip, without it.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{next, server, Pki};
use radguard_tls::{cert_file_facts, server_config, ClientAuth};

fn openssl(args: &[&str]) -> Output {
    // `timeout` keeps a hung s_client from hanging the suite.
    let mut cmd = Command::new("timeout");
    cmd.arg("20").arg("openssl").args(args);
    cmd.stdin(std::process::Stdio::null());
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `openssl` (install the Debian package `openssl`; scripts/setup-radguard-tls.sh does): {e}"
        ),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn require_openssl() {
    let out = openssl(&["version"]);
    assert!(
        out.status.success() && text(&out).starts_with("OpenSSL 3"),
        "OpenSSL 3 is required for these tests (install the Debian package `openssl`): {}",
        text(&out)
    );
}

/// Runs s_client against `port` with the client certificate of `pki`, plus `extra` options.
async fn s_client(pki: &Pki, port: u16, extra: &[&str]) -> (bool, String) {
    let connect = format!("127.0.0.1:{port}");
    let ca = pki.ca().display().to_string();
    let cert = pki.client_cert("ct01").display().to_string();
    let key = pki.client_key("ct01").display().to_string();
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &connect,
        "-servername",
        "localhost",
        "-verify_return_error",
        "-CAfile",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        "-brief",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(&refs)
    })
    .await
    .expect("s_client task");
    (out.status.success(), text(&out))
}

#[tokio::test]
async fn s_client_sees_the_profile() {
    require_openssl();
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let config = server_config(
        &pki.gw_cert(),
        &pki.gw_key(),
        Some(&pki.ca()),
        ClientAuth::Required,
    )
    .expect("server config");
    let (addr, mut seen) = server(config).await;
    let port = addr.port();

    // TLS 1.3 with a client certificate: accepted, and the server certificate verifies.
    let (ok, out) = s_client(&pki, port, &["-tls1_3"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    assert!(next(&mut seen).await.result.is_ok());

    // TLS 1.2 with an ECDHE + AEAD suite: accepted.
    let (ok, out) = s_client(
        &pki,
        port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("Protocol version: TLSv1.2"), "{out}");
    assert!(out.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{out}");
    assert!(next(&mut seen).await.result.is_ok());

    // TLS 1.1 (the client is allowed to offer it: security level 0): refused by the server
    // with a protocol_version alert.
    let (ok, out) = s_client(&pki, port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
    assert!(!ok, "{out}");
    // A received alert (not a local failure): rustls answers handshake_failure.
    assert!(
        out.contains("alert protocol version") || out.contains("alert handshake failure"),
        "{out}"
    );
    let e = next(&mut seen).await.result.expect_err("server refused");
    // rustls: "peer is incompatible" (a TLS 1.1 hello lacks what TLS 1.2+ requires).
    assert!(e.contains("peer is incompatible"), "{e}");

    // TLS 1.2 offering only CBC suites (with and without ECDHE) or only RSA key transport:
    // refused with a handshake_failure alert (no suite in common).
    for suites in [
        "AES128-SHA",
        "AES256-SHA256",
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-RSA-AES256-SHA384",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    ] {
        let (ok, out) = s_client(&pki, port, &["-tls1_2", "-cipher", suites]).await;
        assert!(!ok, "{suites}: {out}");
        assert!(out.contains("alert handshake failure"), "{suites}: {out}");
        let e = next(&mut seen).await.result.expect_err("server refused");
        // "no cipher suites in common", or for a hello without ECDHE "no kx groups in common".
        assert!(
            e.contains("NoCipherSuitesInCommon") || e.contains("NoKxGroupsInCommon"),
            "{suites}: {e}"
        );
    }
}

#[test]
fn quick_start_files_verify_with_openssl() {
    require_openssl();
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01", "ws01"]);
    let ca = pki.ca().display().to_string();
    let check = |cert: &Path, purpose: &str| {
        let out = openssl(&[
            "verify",
            "-CAfile",
            &ca,
            "-purpose",
            purpose,
            &cert.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(": OK"), "{}", text(&out));
    };
    check(&pki.gw_cert(), "sslserver");
    check(&pki.gw_cert(), "sslclient");
    check(&pki.client_cert("ct01"), "sslclient");
    check(&pki.client_cert("ws01"), "sslclient");
    // A client certificate is not a server certificate.
    let out = openssl(&[
        "verify",
        "-CAfile",
        &ca,
        "-purpose",
        "sslserver",
        &pki.client_cert("ct01").display().to_string(),
    ]);
    assert!(!out.status.success(), "{}", text(&out));

    // Our fingerprints are OpenSSL's.
    for cert in [pki.ca(), pki.gw_cert(), pki.client_cert("ct01")] {
        let out = openssl(&[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-in",
            &cert.display().to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        let ours = cert_file_facts(&cert).expect("facts");
        let theirs = text(&out);
        assert!(
            theirs.contains(&ours[0].sha256_colons()),
            "{theirs} vs {}",
            ours[0].sha256_colons()
        );
    }

    // The gateway certificate's SANs, as OpenSSL reads them.
    let out = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        &pki.gw_cert().display().to_string(),
    ]);
    let t = text(&out);
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(t.contains(want), "{want} missing: {t}");
    }
}
