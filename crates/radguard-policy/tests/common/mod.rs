//! Helpers shared by the black-box tests of the config and the decisions.
#![allow(dead_code)] // each test file uses a part

use std::net::IpAddr;

use radguard_dicom::AeTitle;
use radguard_policy::*;

// ------------------------------------------------------------------------------------------
// Helpers.

pub fn ae(s: &str) -> AeTitle {
    AeTitle::new(s).expect("test AE title")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

pub fn parse_ok(src: &str) -> Config {
    match parse_config(src, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

pub fn parse_err(src: &str) -> Vec<ConfigError> {
    match parse_config(src, "test.toml") {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => {
            assert!(!e.is_empty());
            e.errors
        }
    }
}

/// 1-based line of the first occurrence of `needle`.
pub fn line_of(src: &str, needle: &str) -> usize {
    let at = src
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in source"));
    src[..at].matches('\n').count() + 1
}

/// Asserts that the config has exactly one error, on the line of `needle`, about `field`, whose
/// message contains `msg`.
pub fn one_err(src: &str, needle: &str, field: &str, msg: &str) -> ConfigError {
    let errs = parse_err(src);
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    let e = errs.into_iter().next().expect("one error");
    assert_eq!(e.line, Some(line_of(src, needle)), "line of {e}");
    assert!(e.col.is_some(), "{e}");
    assert_eq!(e.field, field, "field of {e}");
    assert!(
        e.problem.contains(msg),
        "message of {e} should contain {msg:?}"
    );
    assert_eq!(e.file, "test.toml");
    e
}

pub const VAULT_ROUTE: &str = "\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n";

/// A one-peer config (with the vault route) whose peer body is `body`.
pub fn with_peer(body: &str) -> String {
    format!("[[peer]]\nname = \"p\"\n{body}\n{VAULT_ROUTE}")
}

pub const ECHO_PEER: &str =
    "[[peer]]\nname = \"p\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n";

pub fn with_routes(routes: &str) -> String {
    format!("{ECHO_PEER}\n{routes}")
}

// ------------------------------------------------------------------------------------------
// The full example policy and its SOP classes (config and decision tests both use them).

pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
pub const US: &str = "1.2.840.10008.5.1.4.1.1.6.1";
pub const PRIVATE: &str = "1.2.3.4.5.6";
pub const VERIFY: &str = "1.2.840.10008.1.1";
pub const PATIENT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
pub const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const PS_FIND: &str = "1.2.840.10008.5.1.4.1.2.3.1";
pub const MWL_FIND: &str = "1.2.840.10008.5.1.4.31";
pub const PATIENT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
pub const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const PS_MOVE: &str = "1.2.840.10008.5.1.4.1.2.3.2";
pub const PATIENT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
pub const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
pub const PS_GET: &str = "1.2.840.10008.5.1.4.1.2.3.3";
pub const STORAGE_COMMITMENT: &str = "1.2.840.10008.1.20.1";
pub const HANGING_PROTOCOL_FIND: &str = "1.2.840.10008.5.1.4.38.2";

pub const FULL: &str = r#"[server]
listen = ["127.0.0.1:0", "[::1]:0"]
ae_title = "RADGUARD"

[[peer]]
name = "ct-scanner"
ae_titles = ["CT01", "CT01B"]
addresses = ["10.1.0.0/16", "fd00:1::/64"]
allow = ["echo", "store"]
store_sop_classes = ["CTImageStorage", "1.2.840.10008.5.1.4.1.1.4"]

[[peer]]
name = "workstation"
ae_titles = ["WS01"]
addresses = ["10.2.0.5", "::1"]
allow = ["echo", "find", "move"]
move_destinations = ["WS01", "WS02"]

[[peer]]
name = "viewer"
ae_titles = ["VIEWER"]
addresses = ["10.3.0.0/24"]
allow = ["find", "get"]
store_sop_classes = ["*"]

[[peer]]
name = "loopback"
ae_titles = ["*"]
addresses = ["127.0.0.0/8"]
allow = ["echo", "store"]
store_sop_classes = ["*", "1.2.3.4.5.6"]

[[route]]
called_ae = "PACS"
upstream = "127.0.0.1:4242"
upstream_ae = "ORTHANC"

[[route]]
called_ae = "ARCHIVE"
upstream = "archive.example.org:104"
upstream_ae = "ARCH"
upstream_calling_ae = "RADGUARD"

[[route]]
called_ae = "RADGUARD"
vault = true
"#;

pub fn full() -> Policy {
    parse_ok(FULL).policy
}

pub fn facts(source: &str, calling: &str, called: &str) -> AssociationFacts {
    AssociationFacts {
        source: ip(source),
        calling_ae: ae(calling),
        called_ae: ae(called),
    }
}

pub fn admit(p: &Policy, source: &str, calling: &str, called: &str) -> Admission {
    match p.admit(&facts(source, calling, called)) {
        Ok(a) => a,
        Err(e) => panic!("{calling}@{source} -> {called} refused: {e}"),
    }
}
