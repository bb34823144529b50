//! docs/config.md names every key the config accepts.
//!
//! The accepted keys are asked of the parsers themselves, not read from a list kept by hand:
//! every table of a config that holds every key is probed with one unknown key, and the error
//! of the section's owner (serde's `deny_unknown_fields`: "unknown field `_probe`, expected one
//! of `a`, `b`") names every key that table accepts. A key the parser accepts but [`FULLEST`]
//! lacks fails the test too (add it there), so a new key anywhere is found, tables included.

use std::collections::BTreeSet;
use std::path::Path;

use toml::{Table, Value};

/// Every key the config accepts, with a value of the right type (its meaning may be wrong:
/// only the keys are looked at). Keys that exclude each other are in different entries.
const FULLEST: &str = r#"
[server]
listen = ["127.0.0.1:11112"]
tls_listen = ["127.0.0.1:2762"]
ae_title = "RADGUARD"
max_associations = 64
max_associations_per_peer = 16
max_connections = 256
max_pdu_length = 65536
artim_timeout_secs = 10
idle_timeout_secs = 300
connect_timeout_secs = 10
shutdown_grace_secs = 30
on_revoke = "abort"

[server.tls]
cert = "gateway.pem"
key = "gateway.key"
client_ca = "ca.pem"
client_auth = "required"

[[peer]]
name = "ct"
ae_titles = ["CT01"]
addresses = ["127.0.0.1/32"]
allow = ["echo", "store", "move"]
store_sop_classes = ["*"]
move_destinations = ["WS01"]
tls = "required"
cert_sha256 = ["00"]
cert_subject_cn = ["ct01"]
cert_san = ["ct01.example.org"]
user_identity = "required"
users = ["tech"]
max_find_results = 500
n_sop_classes = ["ModalityPerformedProcedureStep"]
receive = ["n-event-report"]

[[route]]
called_ae = "PACS"
upstream = "127.0.0.1:4242"
upstream_ae = "ORTHANC"
upstream_calling_ae = "RADGUARD"
origin = true
on_fingerprint_conflict = "refuse"
firewall = "safe"
vault = false
on_upstream_down = "refuse"
hold_quota = 10000
hold_high_water_percent = 90
hold_backoff_base_ms = 1000
hold_backoff_cap_ms = 300000
hold_max_age_secs = 3600
hold_max_attempts = 5

[route.tls]
ca = "ca.pem"
server_name = "pacs.example.org"
client_cert = "client.pem"
client_key = "client.key"

[route.deidentify]
profile = "basic"
options = ["retain-safe-private"]
key_file = "deid.key"
safe_private_file = "safe.txt"
burned_in = "refuse"
max_head_mib = 16

[[user]]
name = "tech"
passcode_argon2 = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

[jwt]
issuer = "https://idp.example.org"
audience = "radguard"
leeway_secs = 60

[[jwt.keys]]
kid = "k1"
alg = "EdDSA"
public_key = "jwt.pem"

[audit]
enabled = true
node = "gw1"
store = "sqlite"
sqlite_path = "audit.db"
postgresql = "host=127.0.0.1"
postgresql_schema = "radguard"
signing_key = "audit.key"
checkpoint_every = 1000
checkpoint_interval_secs = 60
on_store_failure = "refuse"
enterprise_site_id = "site"

[[audit.syslog]]
name = "siem"
transport = "tls"
address = "127.0.0.1:6514"
server_name = "siem.example.org"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"

[ledger]
origin = "radiology.example.org/radguard/ct1"
gateway_id = "gw1"

[detect]
enabled = true
max_sources = 10000
max_associations = 10000

[vault]
immutable = "auto"
retention_days = 0

[guard]
approvers = ["Curie^Marie"]
protocol_managers = ["ct"]
protocol_upstreams = ["ARCHIVE"]
worklist_protocols = ["99RAD:CTHEAD"]
worklist_action = "refuse"
max_studies = 4096

[[guard.limit]]
name = "adult-head"
body_parts = ["HEAD"]
min_age_years = 18
max_age_years = 200
kvp = [70, 150]
tube_current_ma = [10, 500]
exposure_time_ms = [100, 2000]
ctdivol_notification = 80.0
ctdivol_alert = 1000.0
dlp_notification = 1500.0
dlp_alert = 5000.0
max_scan_length_mm = 400
phantom_cm = 16

[[detect.rule]]
name = "r"
kind = "bulk-retrieve"
threshold = 10
window_secs = 60
response = "block"
block_secs = 600
block_by = "address"
throttle_per_minute = 6
allow = ["ct"]
levels = ["PATIENT"]
learning = 20
attributes = ["address"]
hours = ["Mon-Fri 07:00-19:00"]
peers = ["ct"]
learning_days = 14
max_bytes = 1000000
baseline = "learned"
factor = 3

[[detect.rule.signatures]]
name = "nmap dicom-ping"
calling_ae = "ECHOSCU"
called_ae = "ANY-SCP"
implementation_version = "OFFIS_DCMTK_360"

[admin]
enabled = true
listen = "127.0.0.1:11180"
tls_cert = "console.pem"
tls_key = "console.key"

[[admin.token]]
name = "ops"
role = "operator"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[scrub]
enabled = true
rate_bytes_per_sec = 8388608
interval_secs = 86400
ransomware_threshold = 5
ransomware_window_secs = 600
"#;

const PROBE: &str = "_probe";

/// The errors of the config `doc` as text.
fn errors_of(doc: &Table) -> String {
    let src = toml::to_string(doc).expect("serialise");
    match radguard_config::parse_config_in(&src, "fullest.toml", Path::new("/nonexistent")) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

/// The table at `path` (array elements: the first).
fn table_at<'a>(doc: &'a mut Table, path: &[String]) -> &'a mut Table {
    let mut t = doc;
    for seg in path {
        t = match t.get_mut(seg) {
            Some(Value::Table(inner)) => inner,
            Some(Value::Array(a)) => match a.first_mut() {
                Some(Value::Table(inner)) => inner,
                other => panic!("{seg}: not an array of tables: {other:?}"),
            },
            other => panic!("{seg}: not a table: {other:?}"),
        };
    }
    t
}

/// The keys the parser accepts in the table at `path`, from the unknown-key error.
fn accepted_at(fullest: &Table, path: &[String]) -> Vec<String> {
    let mut doc = fullest.clone();
    table_at(&mut doc, path).insert(PROBE.into(), Value::Boolean(true));
    let errors = errors_of(&doc);
    let line = errors
        .lines()
        .find(|l| l.contains(&format!("unknown field `{PROBE}`")))
        .unwrap_or_else(|| {
            panic!(
                "no unknown-key error for {PROBE} in [{}]:\n{errors}",
                path.join(".")
            )
        });
    let names = line
        .split_once("expected")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no expected keys named: {line}"));
    names
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// Every accepted key path (`route.deidentify.key_file`; array elements without an index).
fn accepted_keys(fullest: &Table) -> (BTreeSet<String>, Vec<String>) {
    let mut keys = BTreeSet::new();
    let mut missing = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        assert!(path.len() < 8, "too deep: {path:?}");
        let mut doc = fullest.clone();
        let here = table_at(&mut doc, &path).clone();
        let accepted = accepted_at(fullest, &path);
        assert!(
            !accepted.is_empty(),
            "[{}] accepts nothing?",
            path.join(".")
        );
        for k in accepted {
            let mut p = path.clone();
            p.push(k.clone());
            match here.get(&k) {
                None => missing.push(p.join(".")),
                Some(Value::Table(_)) => todo.push(p.clone()),
                Some(Value::Array(a)) if a.first().is_some_and(Value::is_table) => {
                    todo.push(p.clone())
                }
                Some(_) => {}
            }
            keys.insert(p.join("."));
        }
    }
    (keys, missing)
}

fn fullest() -> Table {
    FULLEST.parse().expect("FULLEST is TOML")
}

#[test]
fn the_fullest_config_has_only_keys_the_parsers_accept() {
    let errors = errors_of(&fullest());
    assert!(
        !errors.contains("unknown field") && !errors.contains("invalid type"),
        "{errors}"
    );
}

#[test]
fn every_accepted_key_is_in_docs_config_md() {
    let (keys, missing) = accepted_keys(&fullest());
    assert!(
        missing.is_empty(),
        "keys the parsers accept that FULLEST lacks (add them): {missing:?}"
    );
    // Spot checks that the probing reaches every section and nested table.
    for k in [
        "server.tls.client_auth",
        "route.deidentify.key_file",
        "jwt.keys.kid",
        "audit.syslog.ca_file",
        "detect.rule.signatures.calling_ae",
        "admin.token.sha256",
        "ledger.origin",
    ] {
        assert!(keys.contains(k), "{k} not found by probing: {keys:?}");
    }
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md"))
            .expect("docs/config.md");
    let undocumented: Vec<&String> = keys
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys the config accepts that docs/config.md does not name as `section.key` \
         (its key reference table): {undocumented:?}"
    );
    // And the table names no key the config does not accept (a stale row).
    let table = doc
        .split_once("## Every key")
        .map(|(_, rest)| rest)
        .expect("docs/config.md has an `## Every key` section");
    let table = table.split("\n## ").next().unwrap_or(table);
    let stale: Vec<&str> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|k| !keys.contains(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/config.md's key table names keys the config does not accept: {stale:?}"
    );
}
