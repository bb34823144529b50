//! The example files: the valid one (also docs/radguard.example.toml) loads, the invalid one
//! reports every problem with its line and field.

use std::path::{Path, PathBuf};

use radguard_dicom::AeTitle;
use radguard_policy::{load_file, AssociationFacts, ContextDecision, Route};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn ae(s: &str) -> AeTitle {
    AeTitle::new(s).expect("test AE title")
}

#[test]
fn valid_example_loads() {
    let config = match load_file(&fixture("valid.toml")) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let names: Vec<&str> = config.policy.peers().map(|p| p.name()).collect();
    assert_eq!(
        names,
        ["ct-scanner", "reading-ws", "web-viewer", "loopback"]
    );
    assert!(matches!(
        config.policy.route_for(&ae("PACS")),
        Some(Route::Upstream { .. })
    ));
    let adm = config
        .policy
        .admit(&AssociationFacts {
            source: "::ffff:10.10.1.20".parse().expect("ip"),
            calling_ae: ae("CT01"),
            called_ae: ae("PACS"),
        })
        .expect("CT scanner admitted");
    assert_eq!(adm.peer_name(), "ct-scanner");
    assert_eq!(
        config.policy.context(&adm, "1.2.840.10008.5.1.4.1.1.2.1"),
        ContextDecision::Accept
    );
}

#[test]
fn docs_example_is_the_valid_fixture() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/radguard.example.toml");
    let (Ok(docs_text), Ok(fixture_text)) = (
        std::fs::read_to_string(&docs),
        std::fs::read_to_string(fixture("valid.toml")),
    ) else {
        panic!("cannot read {} or the fixture", docs.display());
    };
    assert_eq!(
        docs_text, fixture_text,
        "docs/radguard.example.toml drifted from the fixture"
    );
}

#[test]
fn invalid_example_reports_every_error() {
    let path = fixture("invalid.toml");
    let errors = load_file(&path).expect_err("invalid");
    let got: Vec<(Option<usize>, &str)> = errors
        .errors()
        .iter()
        .map(|e| (e.line, e.field.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(3), "server.listen[0]"),
            (Some(4), "server.max_associations"),
            (Some(6), "peer[0].store_sop_classes"),
            (Some(8), "peer[0].ae_titles[1]"),
            (Some(9), "peer[0].addresses[0]"),
            (Some(12), "peer[1].move_destinations"),
            (Some(13), "peer[1].name"),
            (Some(17), "peer[1].store_sop_classes"),
            (Some(21), "route[0].upstream"),
            (Some(25), "route[1].called_ae"),
            (Some(27), "route[1]"),
        ],
        "{errors}"
    );
    let text = errors.to_string();
    let origin = path.display().to_string();
    assert_eq!(text.lines().count(), 11);
    assert!(text.lines().all(|l| l.starts_with(&format!("{origin}:"))));
    assert!(text.contains(":9:14: field `peer[0].addresses[0]`: invalid CIDR \"10.0.0.300/8\""));
}
