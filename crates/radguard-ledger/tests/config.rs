//! The `[ledger]` section read from a whole config file: every error with its exact place
//! (`FILE:LINE:COL`), field and message; the rest of the file is not this crate's business.

use radguard_ledger::config::Problem;
use radguard_ledger::LedgerConfig;

const OTHERS: &str = "[server]\nae_title = \"CT_GW\"\n\n[audit]\nnode = \"gw\"\n\n";

fn errors(src: &str) -> Vec<String> {
    match LedgerConfig::from_document(src, "gw.toml") {
        Ok(c) => panic!("expected errors, got {c:?}"),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_and_values() {
    let none = LedgerConfig::from_document(OTHERS, "gw.toml").expect("valid");
    assert_eq!(none, LedgerConfig::default());
    assert_eq!(none.origin_for("CT_GW"), "radguard.local/CT_GW");
    assert_eq!(none.gateway_id_for("CT_GW"), "CT_GW");
    let set = LedgerConfig::from_document(
        &format!("{OTHERS}[ledger]\norigin = \"radiology.example.org/radguard/ct1\"\ngateway_id = \"ct1-gw\"\n"),
        "gw.toml",
    )
    .expect("valid");
    assert_eq!(
        set.origin_for("CT_GW"),
        "radiology.example.org/radguard/ct1"
    );
    assert_eq!(set.gateway_id_for("CT_GW"), "ct1-gw");
}

#[test]
fn unknown_key_is_placed() {
    assert_eq!(
        errors(&format!("{OTHERS}[ledger]\norigine = \"x\"\n")),
        ["gw.toml:8:1: field `ledger.origine`: unknown field `origine`, expected `origin` or `gateway_id`"]
    );
}

#[test]
fn bad_values_are_placed() {
    let long = "g".repeat(300);
    assert_eq!(
        errors(&format!("{OTHERS}[ledger]\ngateway_id = \"{long}\"\norigin = \"radiology example\"\n")),
        [
            "gw.toml:8:14: field `ledger.gateway_id`: gateway_id must be 1 to 255 bytes (it is 300)".to_string(),
            "gw.toml:9:10: field `ledger.origin`: invalid origin \"radiology example\": 1 to 255 bytes, no spaces, control characters or '+' (it names the log in its signed checkpoints, e.g. \"radiology.example.org/radguard/ct1\")".to_string(),
        ]
    );
    let e = LedgerConfig::from_document("[ledger]\norigin = \"\"\n", "gw.toml").expect_err("empty");
    assert_eq!(e.errors[0].problem, Problem::Origin(String::new()));
    assert_eq!((e.errors[0].line, e.errors[0].col), (Some(2), Some(10)));
}

#[test]
fn default_origin_is_valid_for_every_ae_title() {
    // AE titles may hold spaces inside (PS3.5 §6.2); an origin may not. The default origin of a
    // gateway called "CT GW+1" must still open a ledger.
    let none = LedgerConfig::from_document(OTHERS, "gw.toml").expect("valid");
    let origin = none.origin_for("CT GW+1");
    assert_eq!(origin, "radguard.local/CT_GW_1");
    let dir = tempfile::tempdir().expect("tmp");
    radguard_ledger::Ledger::open(dir.path(), &origin).expect("the default origin opens a ledger");
    assert!(
        radguard_ledger::Ledger::open(dir.path().join("b").as_path(), "radguard.local/CT GW")
            .is_err(),
        "an origin with a space is refused (what the default must avoid)"
    );
}
