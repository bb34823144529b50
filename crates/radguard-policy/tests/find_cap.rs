//! `[[peer]] max_find_results`: parsed and checked with its position, read from the policy in
//! force for an admitted association (a reload changes it for running associations).

mod common;

use radguard_policy::*;

use common::*;

const BASE: &str = "ae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"find\"]\n";

fn peer_with(rest: &str) -> String {
    with_peer(&format!("{BASE}{rest}"))
}

#[test]
fn absent_means_no_cap() {
    let policy = parse_ok(&peer_with("")).policy;
    let peer = policy.peers().next().expect("one peer");
    assert_eq!(peer.max_find_results(), None);
    let adm = admit(&policy, "10.0.0.1", "A", "RADGUARD");
    assert_eq!(policy.max_find_results(&adm), None);
}

#[test]
fn parsed_and_read_from_the_policy_in_force() {
    let policy = parse_ok(&peer_with("max_find_results = 25")).policy;
    let peer = policy.peers().next().expect("one peer");
    assert_eq!(peer.max_find_results(), Some(25));
    let adm = admit(&policy, "10.0.0.1", "A", "RADGUARD");
    assert_eq!(policy.max_find_results(&adm), Some(25));
    assert_eq!(adm.peer().max_find_results(), Some(25));

    // A reload: the association admitted under the old policy gets the new cap, or none.
    let reloaded = parse_ok(&peer_with("max_find_results = 3")).policy;
    assert_eq!(reloaded.max_find_results(&adm), Some(3));
    let uncapped = parse_ok(&peer_with("")).policy;
    assert_eq!(uncapped.max_find_results(&adm), None);
    // A policy that no longer admits the association: no cap (its next request is refused).
    let other = parse_ok(&with_peer(
        "ae_titles = [\"B\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"find\"]\nmax_find_results = 1",
    ))
    .policy;
    assert_eq!(other.max_find_results(&adm), None);

    // The largest value.
    let policy = parse_ok(&peer_with("max_find_results = 4294967295")).policy;
    let peer = policy.peers().next().expect("one peer");
    assert_eq!(peer.max_find_results(), Some(u32::MAX));
}

#[test]
fn zero_negative_too_large_and_wrong_types_are_errors_with_their_position() {
    for bad in ["0", "-5", "4294967296"] {
        let src = peer_with(&format!("max_find_results = {bad}"));
        let e = one_err(
            &src,
            "max_find_results",
            "peer[0].max_find_results",
            "out of range (1..=4294967295)",
        );
        let col = e.col.expect("a column");
        assert_eq!(col, "max_find_results = ".len() + 1, "{e}");
    }
    for bad in ["\"10\"", "2.5", "true", "[2]"] {
        let src = peer_with(&format!("max_find_results = {bad}"));
        one_err(
            &src,
            "max_find_results",
            "peer[0].max_find_results",
            "invalid type",
        );
    }
    // The display form: FILE:LINE:COL.
    let src = peer_with("max_find_results = 0");
    let e = parse_config(&src, "/etc/radguard.toml").expect_err("0 is refused");
    let line = line_of(&src, "max_find_results");
    assert_eq!(
        e.to_string(),
        format!(
            "/etc/radguard.toml:{line}:20: field `peer[0].max_find_results`: 0 is out of range \
             (1..=4294967295)"
        )
    );
}
