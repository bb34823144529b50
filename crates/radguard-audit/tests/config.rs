//! The `[audit]` section read from a whole config file: every error with its exact place
//! (`FILE:LINE:COL`), field and message; the rest of the file is not this crate's business.

use radguard_audit::config::{AuditConfig, Problem, StoreKind};

/// Other sections around `[audit]`, which the audit loader leaves alone.
const OTHERS: &str = "[server]\nlisten = [\"127.0.0.1:11112\"]\n\n[[peer]]\nname = \"p\"\n\n";

fn errors(src: &str) -> Vec<String> {
    match AuditConfig::from_document(src, "gw.toml") {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn no_section_gives_the_defaults_and_other_sections_are_ignored() {
    let c = AuditConfig::from_document(OTHERS, "gw.toml").expect("valid");
    assert_eq!(c, AuditConfig::default());
    let c = AuditConfig::from_document(
        &format!("{OTHERS}[audit]\nstore = \"postgresql\"\npostgresql = \"host=db\"\n"),
        "gw.toml",
    )
    .expect("valid");
    assert_eq!(c.store, StoreKind::Postgresql);
}

#[test]
fn unknown_key_is_placed() {
    // Line 8, column 1: the key itself.
    assert_eq!(
        errors(&format!("{OTHERS}[audit]\nnod = \"gw1\"\n")),
        ["gw.toml:8:1: field `audit.nod`: unknown field `nod`, expected one of `enabled`, `node`, `store`, `sqlite_path`, `postgresql`, `postgresql_schema`, `signing_key`, `checkpoint_every`, `checkpoint_interval_secs`, `on_store_failure`, `enterprise_site_id`, `syslog`"]
    );
}

#[test]
fn wrong_value_is_placed() {
    assert_eq!(
        errors(&format!("{OTHERS}[audit]\non_store_failure = \"ignore\"\n")),
        ["gw.toml:8:20: field `audit.on_store_failure`: unknown variant `ignore`, expected `refuse` or `continue`"]
    );
}

#[test]
fn every_semantic_error_is_placed_in_file_order() {
    let src = format!(
        "{OTHERS}[audit]\nnode = \"has space\"\nstore = \"postgresql\"\ncheckpoint_every = 0\n\n[[audit.syslog]]\ntransport = \"tls\"\naddress = \"siem.example.org\"\n\n[[audit.syslog]]\ntransport = \"tls\"\naddress = \"10.0.0.5:6514\"\nca_file = \"/nonexistent/radguard-ca.pem\"\nclient_cert = \"/nonexistent/gw.pem\"\n"
    );
    let got = errors(&src);
    assert_eq!(got.len(), 8, "{got:#?}");
    assert_eq!(
        got[..5],
        [
            "gw.toml:8:8: field `audit.node`: node \"has space\": printable ASCII without spaces, 1 to 255 characters",
            "gw.toml:9:9: field `audit.postgresql`: store = \"postgresql\" needs postgresql = \"...\"",
            "gw.toml:10:20: field `audit.checkpoint_every`: must be at least 1",
            "gw.toml:13:13: field `audit.syslog[0].ca_file`: transport = \"tls\" needs ca_file (the CAs the receiver's certificate must chain to)",
            "gw.toml:14:11: field `audit.syslog[0].address`: invalid address \"siem.example.org\" (expected host:port, e.g. siem.example.org:6514 or [fd00::5]:514)",
        ]
    );
    assert!(
        got[5].starts_with("gw.toml:19:11: field `audit.syslog[1].ca_file`: cannot read /nonexistent/radguard-ca.pem: "),
        "{got:#?}"
    );
    assert!(
        got[6].starts_with(
            "gw.toml:20:15: field `audit.syslog[1].client_cert`: cannot read /nonexistent/gw.pem: "
        ),
        "{got:#?}"
    );
    assert_eq!(
        got[7],
        "gw.toml:20:15: field `audit.syslog[1].client_cert`: give both client_cert and client_key, or neither"
    );
}

#[test]
fn errors_are_typed() {
    let e = AuditConfig::from_document("[audit]\ncheckpoint_interval_secs = 0\n", "gw.toml")
        .expect_err("invalid");
    let [e] = &e.errors[..] else { panic!("{e}") };
    assert_eq!(e.problem, Problem::Zero);
    assert_eq!((e.line, e.col), (Some(2), Some(28)));
    assert_eq!(e.field, "audit.checkpoint_interval_secs");
}
