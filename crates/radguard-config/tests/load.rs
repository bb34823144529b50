//! The whole file: every section's errors together, in file order, each `FILE:LINE:COL`.

use std::path::Path;

use radguard_config::{load_file, parse_config_in, ConfigError, Loaded};

const PEER: &str =
    "[[peer]]\nname = \"p\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n";
const VAULT: &str = "[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n";

fn load(src: &str) -> Result<Loaded, radguard_config::ConfigErrors> {
    parse_config_in(src, "gw.toml", Path::new(""))
}

#[test]
fn a_valid_file_gives_every_section() {
    let src =
        format!("{PEER}\n{VAULT}\n[audit]\nnode = \"gw1\"\n\n[ledger]\ngateway_id = \"gw-1\"\n");
    let loaded = load(&src).expect("valid");
    assert_eq!(loaded.audit.node.as_deref(), Some("gw1"));
    assert_eq!(loaded.ledger.gateway_id.as_deref(), Some("gw-1"));
    assert_eq!(loaded.config.policy.peers().count(), 1);
}

#[test]
fn errors_of_every_section_come_together_in_file_order() {
    let src = format!(
        "[ledger]\norigin = \"a b\"\n\n{}\n{VAULT}\n[audit]\ncheckpoint_every = 0\n",
        PEER.replace("10.0.0.1", "10.0.0.300")
    );
    let errors = load(&src).expect_err("invalid");
    let rendered: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 3, "{rendered:#?}");
    assert!(matches!(errors.errors()[0], ConfigError::Ledger(_)));
    assert!(rendered[0].starts_with("gw.toml:2:10: field `ledger.origin`: invalid origin \"a b\""));
    assert!(matches!(errors.errors()[1], ConfigError::Policy(_)));
    assert_eq!(
        rendered[1],
        "gw.toml:7:14: field `peer[0].addresses[0]`: invalid address \"10.0.0.300\" (expected a CIDR or an IP address)"
    );
    assert!(matches!(errors.errors()[2], ConfigError::Audit(_)));
    assert_eq!(
        rendered[2],
        "gw.toml:15:20: field `audit.checkpoint_every`: must be at least 1"
    );
    assert_eq!(errors.to_string().lines().count(), 3);
    assert_eq!(
        (errors.errors()[2].line(), errors.errors()[2].col()),
        (Some(15), Some(20))
    );
    assert_eq!(errors.errors()[2].field(), "audit.checkpoint_every");
}

#[test]
fn unknown_keys_in_two_sections_are_both_reported() {
    // The policy's reading stops at its first unknown key; the audit and ledger readings are
    // their own, so their first unknown keys are reported too.
    let src = format!(
        "[server]\nlistn = 1\n\n{PEER}\n{VAULT}\n[audit]\nnod = 1\n\n[ledger]\norign = \"x\"\n"
    );
    let errors = load(&src).expect_err("invalid");
    let places: Vec<(Option<usize>, Option<usize>, &str)> = errors
        .errors()
        .iter()
        .map(|e| (e.line(), e.col(), e.field()))
        .collect();
    assert_eq!(
        places,
        [
            (Some(2), Some(1), "server.listn"),
            (Some(15), Some(1), "audit.nod"),
            (Some(18), Some(1), "ledger.orign"),
        ]
    );
}

#[test]
fn a_syntax_error_is_reported_once() {
    let errors = load("[server\nlisten = 1\n").expect_err("invalid");
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(
        (errors.errors()[0].line(), errors.errors()[0].col()),
        (Some(1), Some(8))
    );
}

#[test]
fn an_unreadable_file_is_one_error_without_a_place() {
    let errors = load_file(Path::new("/nonexistent/radguard.toml")).expect_err("missing");
    assert_eq!(errors.len(), 1);
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/radguard.toml: cannot read config file: "),
        "{errors}"
    );
}

#[test]
fn files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("site.key"),
        "00112233445566778899aabbccddeeff\n",
    )
    .expect("write");
    let path = dir.path().join("gw.toml");
    std::fs::write(
        &path,
        format!("{PEER}\n[[route]]\ncalled_ae = \"TELERAD\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"PACS\"\ndeidentify = {{ key_file = \"site.key\" }}\n"),
    )
    .expect("write");
    let loaded = load_file(&path).expect("valid");
    let spec = loaded.config.policy.routes()[0]
        .deidentify
        .clone()
        .expect("de-identifying");
    assert_eq!(spec.key_file, dir.path().join("site.key"));
}

#[test]
fn restart_needed_names_audit_and_ledger_changes() {
    let old = load(&format!("{PEER}\n{VAULT}")).expect("valid");
    assert_eq!(old, Loaded { ..old.clone() });
    // Policy changes are what a reload applies.
    let policy_only = load(&format!(
        "{}\n{VAULT}",
        PEER.replace("10.0.0.1", "10.0.0.2")
    ))
    .expect("valid");
    assert_eq!(old.restart_needed(&policy_only), Vec::<&str>::new());
    // Writing a default explicitly is no change.
    let same = load(&format!("{PEER}\n{VAULT}\n[audit]\nenabled = true\n")).expect("valid");
    assert_eq!(old.restart_needed(&same), Vec::<&str>::new());
    let src = format!(
        "[server]\nlisten = [\"127.0.0.1:104\"]\non_revoke = \"refuse-requests\"\n\n[audit]\nenabled = false\n\n[ledger]\ngateway_id = \"x\"\n\n{PEER}\n{VAULT}"
    );
    assert_eq!(
        old.restart_needed(&load(&src).expect("valid")),
        ["server.listen", "server.on_revoke", "[audit]", "[ledger]"]
    );
}

#[test]
fn embedded_default_takes_the_sections_defaults() {
    let d = Loaded::embedded_default();
    assert_eq!(d.audit, radguard_config::AuditConfig::default());
    assert_eq!(d.ledger, radguard_config::LedgerConfig::default());
    assert_eq!(d.detect, radguard_config::DetectConfig::default());
    assert_eq!(
        d,
        load(radguard_policy::EMBEDDED_DEFAULT_TOML).expect("the embedded default is valid")
    );
}

#[test]
fn detect_section_is_read_and_its_errors_merged() {
    let loaded = load(&format!(
        "{PEER}\n{VAULT}\n[detect]\nmax_sources = 10\n\n[[detect.rule]]\nname = \"enum\"\nkind = \"recon-refused\"\nthreshold = 3\n"
    ))
    .expect("valid");
    assert_eq!(loaded.detect.max_sources, 10);
    // The configured rule, and the `overwrite` rule the integrity stores report through.
    let names: Vec<String> = loaded.detect.rules().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["enum", "overwrite"]);
    // Absent: on, with the default rules.
    let plain = load(&format!("{PEER}\n{VAULT}")).expect("valid");
    assert!(plain.detect.enabled);
    assert_eq!(plain.detect, radguard_config::DetectConfig::default());
    // Errors of [detect] come with the others, in file order.
    let src = format!(
        "[[detect.rule]]\nname = \"x\"\nkind = \"bulk-query\"\nthreshold = 0\n\n{}\n{VAULT}",
        PEER.replace("10.0.0.1", "10.0.0.300")
    );
    let errors = load(&src).expect_err("invalid");
    let rendered: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 2, "{rendered:#?}");
    assert!(matches!(errors.errors()[0], ConfigError::Detect(_)));
    assert_eq!(
        rendered[0],
        "gw.toml:4:13: field `detect.rule[0].threshold`: must be at least 1 (it is 0)"
    );
    assert_eq!(errors.errors()[0].field(), "detect.rule[0].threshold");
    assert!(matches!(errors.errors()[1], ConfigError::Policy(_)));
    // A change of [detect] needs a restart.
    let changed = load(&format!("{PEER}\n{VAULT}\n[detect]\nenabled = false\n")).expect("valid");
    assert_eq!(plain.restart_needed(&changed), ["[detect]"]);
}

#[test]
fn admin_section_is_read_and_its_errors_merged() {
    let loaded = load(&format!(
        "{PEER}\n{VAULT}\n[admin]\nlisten = \"127.0.0.1:18080\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
    ))
    .expect("valid");
    assert_eq!(loaded.admin.listen.to_string(), "127.0.0.1:18080");
    // Relative certificate paths against the config file's folder.
    let in_dir = parse_config_in(
        &format!("{PEER}\n{VAULT}\n[admin]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"),
        "gw.toml",
        Path::new("/etc/radguard"),
    )
    .expect("valid");
    assert_eq!(
        in_dir.admin.tls_cert.as_deref(),
        Some(Path::new("/etc/radguard/c.pem"))
    );
    // Absent: on, loopback, no tokens.
    let plain = load(&format!("{PEER}\n{VAULT}")).expect("valid");
    assert_eq!(plain.admin, radguard_config::AdminConfig::default());
    assert_eq!(plain.admin.listen.to_string(), "127.0.0.1:11180");
    // An exposed console comes with the other errors, in file order.
    let src = format!(
        "[admin]\nlisten = \"0.0.0.0:11180\"\n\n{}\n{VAULT}",
        PEER.replace("10.0.0.1", "10.0.0.300")
    );
    let errors = load(&src).expect_err("invalid");
    let rendered: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 2, "{rendered:#?}");
    assert!(matches!(errors.errors()[0], ConfigError::Admin(_)));
    assert!(
        rendered[0].starts_with(
            "gw.toml:2:10: field `admin.listen`: 0.0.0.0:11180 is not a loopback address"
        ),
        "{rendered:#?}"
    );
    assert!(matches!(errors.errors()[1], ConfigError::Policy(_)));
    // A change of [admin] needs a restart.
    let changed = load(&format!("{PEER}\n{VAULT}\n[admin]\nenabled = false\n")).expect("valid");
    assert_eq!(plain.restart_needed(&changed), ["[admin]"]);
}

#[test]
fn guard_section_is_read_and_its_errors_merged_in_file_order() {
    let plain = load(&format!("{PEER}\n{VAULT}")).expect("valid");
    assert_eq!(plain.guard, radguard_config::GuardConfig::default());
    let ok = load(&format!(
        "{PEER}\n{VAULT}\n[guard]\napprovers = [\"Curie^Marie\"]\n[[guard.limit]]\nname = \"h\"\nbody_parts = [\"HEAD\"]\nkvp = [80, 140]\n"
    ))
    .expect("valid");
    assert_eq!(ok.guard.approvers, vec!["Curie^Marie".to_string()]);
    assert_eq!(ok.guard.limit[0].kvp, Some([80.0, 140.0]));
    let src = format!(
        "[guard]\nmax_studies = 0\n\n{}\n{VAULT}",
        PEER.replace("10.0.0.1", "10.0.0.300")
    );
    let errors = load(&src).expect_err("invalid");
    let rendered: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(rendered.len(), 2, "{rendered:#?}");
    assert!(matches!(errors.errors()[0], ConfigError::Guard(_)));
    assert!(
        rendered[0].starts_with("gw.toml:2:15: field `guard.max_studies`"),
        "{rendered:#?}"
    );
    assert!(matches!(errors.errors()[1], ConfigError::Policy(_)));
    // The guard is built at start: a change of [guard] needs a restart.
    assert_eq!(plain.restart_needed(&ok), ["[guard]"]);
    assert!(plain.restart_needed(&plain.clone()).is_empty());
}
