//! `init_quickstart` and `issue_client` on disk: files, modes, no overwrite, summary text and
//! JSON, and the certificates' contents.

use std::os::unix::fs::PermissionsExt;

use radguard_tls::{cert_file_facts, init_quickstart, issue_client, load_key, Role, TlsError};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn writes_a_ca_a_gateway_and_clients() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("pki");
    let s = init_quickstart(
        &dir,
        &["radguard.hospital.example".into(), "10.0.0.5".into()],
        &["ct01".into(), "WS_01".into()],
    )
    .expect("init");

    assert_eq!(mode(&dir), 0o700, "a directory it creates is private");
    for key in [
        "ca-key.pem",
        "gateway-key.pem",
        "client-ct01-key.pem",
        "client-WS_01-key.pem",
    ] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
        assert!(load_key(&dir.join(key)).is_ok(), "{key} parses");
    }
    for cert in [
        "ca.pem",
        "gateway.pem",
        "client-ct01.pem",
        "client-WS_01.pem",
        "README.txt",
    ] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }

    assert_eq!(s.ca.role, Role::Ca);
    assert_eq!(s.gateway.role, Role::Gateway);
    assert_eq!(s.clients.len(), 2);
    assert!(s
        .ca
        .facts
        .subject_cn
        .as_deref()
        .unwrap_or("")
        .starts_with("Radguard quick-start CA"));
    assert_eq!(
        s.gateway.facts.sans,
        [
            "localhost",
            "127.0.0.1",
            "::1",
            "radguard.hospital.example",
            "10.0.0.5"
        ]
    );
    assert_eq!(
        s.gateway.facts.subject_cn.as_deref(),
        Some("radguard.hospital.example")
    );
    assert_eq!(s.clients[0].facts.subject_cn.as_deref(), Some("ct01"));
    assert_eq!(s.clients[0].facts.sans, ["ct01"]);
    // "WS_01" is no DNS name: CN only.
    assert_eq!(s.clients[1].facts.subject_cn.as_deref(), Some("WS_01"));
    assert!(s.clients[1].facts.sans.is_empty());
    for i in [&s.ca, &s.gateway, &s.clients[0], &s.clients[1]] {
        assert_eq!(cert_file_facts(&i.cert_path).expect("facts")[0], i.facts);
        assert_eq!(i.facts.issuer, s.ca.facts.subject);
    }
    // Validity: the CA for 3650 days, the others for 730 (to the second, give or take).
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let days = |f: &radguard_tls::PeerCertFacts| (f.not_after_unix - now + 60) / 86_400;
    assert_eq!(days(&s.ca.facts), 3650);
    assert_eq!(days(&s.gateway.facts), 730);
    assert_eq!(days(&s.clients[0].facts), 730);
    assert!(s.gateway.facts.not_before_unix <= now);

    // The summary names every file and fingerprint, and is what README.txt holds.
    let text = s.render();
    for i in [&s.ca, &s.gateway, &s.clients[0], &s.clients[1]] {
        assert!(text.contains(&i.facts.sha256_hex));
        assert!(text.contains(&i.cert_path.display().to_string()));
    }
    assert!(text.contains("tls_listen = [\"127.0.0.1:2762\"]"), "{text}");
    assert!(text.contains("echoscu +tls"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.join("README.txt")).expect("readme"),
        text
    );
    let json = serde_json::to_value(&s).expect("json");
    assert_eq!(json["clients"][0]["name"], "ct01");
    assert_eq!(json["gateway"]["role"], "gateway");
    assert_eq!(json["ca"]["facts"]["sha256_hex"], s.ca.facts.sha256_hex);
}

#[test]
fn never_overwrites() {
    let tmp = tempfile::tempdir().expect("tmp");
    init_quickstart(tmp.path(), &[], &["ct01".into()]).expect("init");
    let before = std::fs::read(tmp.path().join("ca-key.pem")).expect("key");
    let e = init_quickstart(tmp.path(), &[], &["other".into()]).expect_err("exists");
    assert!(matches!(e, TlsError::Exists(_)), "{e}");
    assert_eq!(
        std::fs::read(tmp.path().join("ca-key.pem")).expect("key"),
        before
    );
    assert!(
        !tmp.path().join("client-other.pem").exists(),
        "nothing written"
    );

    let e = issue_client(tmp.path(), "ct01").expect_err("exists");
    assert!(matches!(e, TlsError::Exists(_)), "{e}");
}

#[test]
fn issue_more_clients_from_the_ca() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = init_quickstart(tmp.path(), &[], &[]).expect("init");
    assert!(s.clients.is_empty());
    let i = issue_client(tmp.path(), "mr02").expect("issue");
    assert_eq!(i.role, Role::Client);
    assert_eq!(i.facts.issuer, s.ca.facts.subject);
    assert_eq!(mode(&i.key_path), 0o600);

    // Without a CA there is nothing to issue from.
    let empty = tempfile::tempdir().expect("tmp");
    let e = issue_client(empty.path(), "x").expect_err("no CA");
    assert!(e.to_string().contains("ca.pem"), "{e}");
}

#[test]
fn bad_names_are_refused_before_writing() {
    let tmp = tempfile::tempdir().expect("tmp");
    for (gw, clients) in [
        (vec!["bad name".to_string()], vec![]),
        (vec![], vec!["../escape".to_string()]),
        (vec![], vec!["a".to_string(), "a".to_string()]),
        (vec![], vec![String::new()]),
    ] {
        let e = init_quickstart(tmp.path(), &gw, &clients).expect_err("bad name");
        assert!(matches!(e, TlsError::InvalidName { .. }), "{e}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).expect("dir").count(), 0);
}

#[test]
fn the_printed_config_is_valid_and_binds_each_client_certificate() {
    use radguard_dicom::AeTitle;
    use radguard_policy::{
        parse_config, AssociationFacts, AssociationRefusal, CertFacts, IdentityFacts, PeerMismatch,
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let s = init_quickstart(tmp.path(), &[], &["ct01".into(), "ws01".into()]).expect("init");
    let snippet = s.config_snippet();
    assert!(s.render().contains(&snippet));
    let toml: String = snippet
        .lines()
        .skip_while(|l| !l.starts_with("  ["))
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect();
    let config = match parse_config(&toml, "README.txt") {
        Ok(c) => c,
        Err(e) => panic!("{e}\n---\n{toml}"),
    };
    let tls = config.server.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, s.gateway.cert_path);
    assert_eq!(tls.client_ca.as_ref(), Some(&s.ca.cert_path));
    assert_eq!(config.server.tls_listen.len(), 1);
    assert!(config.server.listen.is_empty());

    let facts = |ae: &str| AssociationFacts {
        source: "127.0.0.1".parse().expect("ip"),
        calling_ae: AeTitle::new(ae).expect("ae"),
        called_ae: AeTitle::new("RADGUARD").expect("ae"),
    };
    let cert_of = |i: &radguard_tls::Issued| IdentityFacts {
        client_cert: Some(CertFacts {
            sha256_hex: i.facts.sha256_hex.clone(),
            subject_cn: i.facts.subject_cn.clone(),
            sans: i.facts.sans.clone(),
        }),
        user: None,
    };
    let adm = config
        .policy
        .admit_with(&facts("CT01"), &cert_of(&s.clients[0]))
        .expect("ct01 with its certificate");
    assert_eq!(adm.peer_name(), "ct01");
    assert_eq!(
        config
            .policy
            .admit_with(&facts("CT01"), &cert_of(&s.clients[1])),
        Err(AssociationRefusal::CallingAeNotRecognized {
            why: PeerMismatch::CertificateFingerprintMismatch
        }),
        "another client's certificate"
    );
    assert_eq!(
        config.policy.admit(&facts("WS01")),
        Err(AssociationRefusal::CallingAeNotRecognized {
            why: PeerMismatch::CertificateRequired
        }),
        "no certificate"
    );
}
