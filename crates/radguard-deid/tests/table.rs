//! A route's `deidentify` table as read from a config file: each problem at the byte range of
//! the value it is about, so that the config loader can place it as `FILE:LINE:COL`.

use radguard_deid::{DeidTable, SpecError};
use toml::Spanned;

#[derive(serde::Deserialize)]
struct Route {
    deidentify: Spanned<DeidTable>,
}

#[test]
fn problems_are_placed_at_their_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = "deidentify = { key_file = \"missing.key\", max_head_mib = 2048 }\n";
    let route: Route = toml::from_str(src).expect("table");
    let errors = route
        .deidentify
        .get_ref()
        .check(route.deidentify.span(), dir.path())
        .expect_err("invalid");
    let places: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.key, src.get(e.span.clone()).expect("span in src")))
        .collect();
    assert_eq!(
        places,
        [("key_file", "\"missing.key\""), ("max_head_mib", "2048")]
    );
    assert!(matches!(errors[0].error, SpecError::Key(_)));
    assert!(matches!(errors[1].error, SpecError::HeadCap));
}

#[test]
fn a_valid_table_gives_the_spec_with_resolved_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("k"), "00112233445566778899aabbccddeeff\n").expect("write");
    let src = "deidentify = { key_file = \"k\", options = [\"retain-uids\"] }\n";
    let route: Route = toml::from_str(src).expect("table");
    let spec = route
        .deidentify
        .get_ref()
        .check(route.deidentify.span(), dir.path())
        .expect("valid");
    assert_eq!(spec.key_file, dir.path().join("k"));
    assert!(spec.build().is_ok());
}
