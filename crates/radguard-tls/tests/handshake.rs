//! Real handshakes over loopback (tokio-rustls on both ends) with certificates from the quick
//! start: mutual TLS, wrong CA, expired and not-yet-valid client certificates, missing client
//! certificates, wrong server name, and a TLS 1.2-only client.

mod common;

use std::sync::Arc;

use common::{client, next, server, Pki};
use radguard_tls::rustls::{self, ClientConfig, RootCertStore};
use radguard_tls::{
    cert_file_facts, client_config, issue_client_valid, load_certs, load_key, server_config,
    ClientAuth, TlsError,
};
use time::{Duration, OffsetDateTime};

fn server_required(pki: &Pki) -> Arc<rustls::ServerConfig> {
    server_config(
        &pki.gw_cert(),
        &pki.gw_key(),
        Some(&pki.ca()),
        ClientAuth::Required,
    )
    .expect("server config")
}

fn client_of(pki_trust: &Pki, cert_from: &Pki, name: &str) -> Arc<ClientConfig> {
    client_config(
        &pki_trust.ca(),
        Some((&cert_from.client_cert(name), &cert_from.client_key(name))),
    )
    .expect("client config")
}

#[tokio::test]
async fn mutual_tls_ok_and_server_sees_the_client_certificate() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let (addr, mut seen) = server(server_required(&pki)).await;

    for name in ["localhost", "127.0.0.1"] {
        let info = client(client_of(&pki, &pki, "ct01"), addr, name)
            .await
            .expect("handshake");
        assert_eq!(info.protocol, "TLSv1.3", "TLS 1.3 is preferred");
        assert_eq!(info.cipher_suite, "TLS13_AES_256_GCM_SHA384");
        let (facts, server_info) = next(&mut seen).await.result.expect("server side ok");
        assert_eq!(server_info, info);
        let facts = facts.expect("client certificate");
        let on_disk = cert_file_facts(&pki.client_cert("ct01")).expect("facts");
        assert_eq!(facts, on_disk[0]);
        assert_eq!(facts.subject_cn.as_deref(), Some("ct01"));
        assert_eq!(facts.sans, ["ct01"]);
    }
}

#[tokio::test]
async fn wrong_server_name_is_refused_by_the_client() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let (addr, mut seen) = server(server_required(&pki)).await;
    let err = client(client_of(&pki, &pki, "ct01"), addr, "pacs.example.org")
        .await
        .expect_err("name mismatch");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(next(&mut seen).await.result.is_err());
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(&tmp.path().join("a"), &["ct01"]);
    let other = Pki::new(&tmp.path().join("b"), &["ct01"]);
    let (addr, mut seen) = server(server_required(&pki)).await;

    // The client trusts the right CA but presents a certificate from another one.
    let err = client(client_of(&pki, &other, "ct01"), addr, "localhost")
        .await
        .expect_err("refused");
    let server_err = next(&mut seen).await.result.expect_err("server refused");
    assert!(server_err.contains("UnknownIssuer"), "{server_err}");
    assert!(!err.is_empty());

    // A client that trusts only the other CA refuses the gateway.
    let err = client(client_of(&other, &other, "ct01"), addr, "localhost")
        .await
        .expect_err("refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(next(&mut seen).await.result.is_err());
}

#[tokio::test]
async fn expired_and_future_client_certificates_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let now = OffsetDateTime::now_utc();
    issue_client_valid(
        tmp.path(),
        "old",
        now - Duration::days(30),
        now - Duration::days(1),
    )
    .expect("expired cert");
    issue_client_valid(
        tmp.path(),
        "future",
        now + Duration::days(1),
        now + Duration::days(30),
    )
    .expect("future cert");
    let (addr, mut seen) = server(server_required(&pki)).await;

    let _ = client(client_of(&pki, &pki, "old"), addr, "localhost")
        .await
        .expect_err("expired refused");
    let e = next(&mut seen).await.result.expect_err("server refused");
    assert!(e.contains("expired"), "{e}");

    let _ = client(client_of(&pki, &pki, "future"), addr, "localhost")
        .await
        .expect_err("not yet valid refused");
    let e = next(&mut seen).await.result.expect_err("server refused");
    assert!(
        e.contains("not valid yet") || e.contains("NotValidYet"),
        "{e}"
    );

    // The valid one still works on the same listener.
    client(client_of(&pki, &pki, "ct01"), addr, "localhost")
        .await
        .expect("valid certificate");
    assert!(next(&mut seen).await.result.is_ok());
}

#[tokio::test]
async fn missing_client_certificate_required_vs_optional() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let no_cert = client_config(&pki.ca(), None).expect("client config");

    let (addr, mut seen) = server(server_required(&pki)).await;
    let _ = client(Arc::clone(&no_cert), addr, "localhost")
        .await
        .expect_err("required");
    let e = next(&mut seen).await.result.expect_err("server refused");
    assert!(
        e.contains("NoCertificatesPresented") || e.contains("certificate"),
        "{e}"
    );

    let optional = server_config(
        &pki.gw_cert(),
        &pki.gw_key(),
        Some(&pki.ca()),
        ClientAuth::Optional,
    )
    .expect("server config");
    let (addr, mut seen) = server(optional).await;
    client(Arc::clone(&no_cert), addr, "localhost")
        .await
        .expect("optional: no certificate is fine");
    let (facts, _) = next(&mut seen).await.result.expect("ok");
    assert_eq!(facts, None);
    // ... but a presented certificate must still verify.
    let other = Pki::new(&tmp.path().join("other"), &["x"]);
    let _ = client(client_of(&pki, &other, "x"), addr, "localhost")
        .await
        .expect_err("bad certificate refused even when optional");
    assert!(next(&mut seen).await.result.is_err());

    // No client authentication at all.
    let none = server_config(&pki.gw_cert(), &pki.gw_key(), None, ClientAuth::None)
        .expect("server config");
    let (addr, mut seen) = server(none).await;
    client(client_of(&pki, &pki, "ct01"), addr, "localhost")
        .await
        .expect("a client certificate is simply not asked for");
    let (facts, _) = next(&mut seen).await.result.expect("ok");
    assert_eq!(facts, None);
}

#[tokio::test]
async fn tls12_only_client_works_with_an_aead_suite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);
    let (addr, mut seen) = server(server_required(&pki)).await;

    // A client built independently of this crate's profile: rustls' own ring defaults, TLS 1.2
    // only.
    let mut roots = RootCertStore::empty();
    for c in load_certs(&pki.ca()).expect("ca") {
        roots.add(c).expect("root");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_certs(&pki.client_cert("ct01")).expect("cert"),
                load_key(&pki.client_key("ct01")).expect("key"),
            )
            .expect("client auth");
    let info = client(Arc::new(config), addr, "localhost")
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(info.protocol, "TLSv1.2");
    assert_eq!(info.cipher_suite, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384");
    let (facts, _) = next(&mut seen).await.result.expect("server ok");
    assert!(facts.is_some());
}

#[test]
fn configuration_errors_name_the_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path(), &["ct01"]);

    // Key of another certificate.
    let e = server_config(
        &pki.gw_cert(),
        &pki.client_key("ct01"),
        None,
        ClientAuth::None,
    )
    .expect_err("mismatched key");
    assert!(matches!(e, TlsError::Rustls { .. }), "{e}");
    assert!(e.to_string().contains("gateway.pem"), "{e}");

    // A key where a certificate is expected, and the other way round.
    let e = server_config(&pki.gw_key(), &pki.gw_key(), None, ClientAuth::None)
        .expect_err("no certificate");
    assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
    let e =
        server_config(&pki.gw_cert(), &pki.gw_cert(), None, ClientAuth::None).expect_err("no key");
    assert!(e.to_string().contains("no private key"), "{e}");

    // Garbage CA file.
    let junk = tmp.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let e = client_config(&junk, None).expect_err("junk CA");
    assert!(e.to_string().contains("junk.pem"), "{e}");
    let e = server_config(
        &pki.gw_cert(),
        &pki.gw_key(),
        Some(&junk),
        ClientAuth::Required,
    )
    .expect_err("junk CA");
    assert!(e.to_string().contains("junk.pem"), "{e}");

    // Missing files.
    let e = client_config(&tmp.path().join("nope.pem"), None).expect_err("missing");
    assert!(matches!(e, TlsError::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");
}
