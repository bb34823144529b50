//! One config error per section the policy owns, with its exact place (`FILE:LINE:COL`), field
//! and message: `[server]`, `[[peer]]`, `[[route]]`, `[[user]]`, `[server.tls]` and a route's
//! `deidentify` (radguard-deid's keys, placed in the file).

use std::path::Path;

use radguard_policy::{parse_config, parse_config_in};

const PEER: &str =
    "[[peer]]\nname = \"p\"\nae_titles = [\"A\"]\naddresses = [\"10.0.0.1\"]\nallow = [\"echo\"]\n";
const VAULT: &str = "[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n";

/// The rendered errors of `src` (named `test.toml`).
fn errors_in(src: &str, base: &Path) -> Vec<String> {
    match parse_config_in(src, "test.toml", base) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn errors(src: &str) -> Vec<String> {
    errors_in(src, Path::new(""))
}

#[test]
fn server_error_is_placed() {
    let src = format!("[server]\nmax_pdu_length = 10\n\n{PEER}\n{VAULT}");
    assert_eq!(
        errors(&src),
        ["test.toml:2:18: field `server.max_pdu_length`: 10 is out of range (4096..=4194304)"]
    );
}

#[test]
fn peer_error_is_placed() {
    let src = format!("{}\n{VAULT}", PEER.replace("10.0.0.1", "10.0.0.300/8"));
    assert_eq!(
        errors(&src),
        ["test.toml:4:14: field `peer[0].addresses[0]`: invalid CIDR \"10.0.0.300/8\""]
    );
}

#[test]
fn route_error_is_placed() {
    let src = format!(
        "{PEER}\n[[route]]\ncalled_ae = \"PACS\"\nupstream = \"pacs\"\nupstream_ae = \"ORTHANC\"\n"
    );
    let got = errors(&src);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(
            "test.toml:9:12: field `route[0].upstream`: invalid upstream \"pacs\": no port"
        ),
        "{got:#?}"
    );
}

#[test]
fn user_error_is_placed() {
    let src = format!("{PEER}\n{VAULT}\n[[user]]\nname = \"ann\"\npasscode_argon2 = \"plain\"\n");
    let got = errors(&src);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0]
            .starts_with("test.toml:13:19: field `user[0].passcode_argon2`: not a PHC hash string"),
        "{got:#?}"
    );
}

#[test]
fn tls_error_is_placed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("gw.pem"), "PEM").expect("write");
    let src = format!(
        "[server]\ntls_listen = [\"127.0.0.1:2762\"]\n\n[server.tls]\ncert = \"gw.pem\"\nkey = \"missing.key\"\n\n{PEER}\n{VAULT}"
    );
    let got = errors_in(&src, dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    let missing = dir.path().join("missing.key");
    assert!(
        got[0].starts_with(&format!(
            "test.toml:6:7: field `server.tls.key`: cannot read {}: ",
            missing.display()
        )),
        "{got:#?}"
    );
}

/// A de-identifying upstream route whose `deidentify` table is `table`.
fn deid_route(table: &str) -> String {
    format!(
        "{PEER}\n[[route]]\ncalled_ae = \"TELERAD\"\nupstream = \"127.0.0.1:104\"\nupstream_ae = \"PACS\"\ndeidentify = {table}\n"
    )
}

/// Hold is refused on a de-identifying route: held instances would leave unchanged.
#[test]
fn hold_is_refused_on_a_deidentifying_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("site.key"),
        "00112233445566778899aabbccddeeff\n",
    )
    .expect("write");
    let src = format!(
        "{}on_upstream_down = \"hold\"\n",
        deid_route("{ key_file = \"site.key\" }")
    );
    let got = errors_in(&src, dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("test.toml:12:")
            && got[0].contains("field `route[0].on_upstream_down`")
            && got[0].contains("not available with `deidentify`"),
        "{got:#?}"
    );
}

#[test]
fn deidentify_errors_are_placed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("site.key"),
        "00112233445566778899aabbccddeeff\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("short.key"), "0011\n").expect("write");
    // Line 11 is the `deidentify` line; its table starts at column 14.
    let ok = deid_route("{ key_file = \"site.key\" }");
    let config = parse_config_in(&ok, "test.toml", dir.path()).expect("valid");
    let spec = config
        .policy
        .routes()
        .iter()
        .find_map(|r| r.deidentify.clone())
        .expect("a de-identifying route");
    assert_eq!(
        spec.key_file,
        dir.path().join("site.key"),
        "resolved against the file's folder"
    );

    // A key file that cannot be read: at the value.
    let src = deid_route("{ key_file = \"nowhere.key\" }");
    let got = errors_in(&src, dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(&format!(
            "test.toml:11:27: field `route[0].deidentify.key_file`: cannot read the key file {}: ",
            dir.path().join("nowhere.key").display()
        )),
        "{got:#?}"
    );

    // Every problem of the table at once, each at its value; a missing key at the table.
    let src = deid_route(
        "{ options = [\"retain-long-full-dates\", \"retain-long-modified-dates\"], safe_private_file = \"x\", max_head_mib = 0 }",
    );
    assert_eq!(
        errors_in(&src, dir.path()),
        [
            "test.toml:11:14: field `route[0].deidentify.key_file`: missing required key `key_file` (the per-site secret: no key, no de-identification)",
            "test.toml:11:26: field `route[0].deidentify.options`: options retain-long-full-dates and retain-long-modified-dates are mutually exclusive",
            "test.toml:11:104: field `route[0].deidentify.safe_private_file`: safe_private_file is set but option retain-safe-private is not",
            "test.toml:11:124: field `route[0].deidentify.max_head_mib`: max_head_mib must be between 1 and 1024",
        ]
    );

    // A key too short to be a secret.
    let src = deid_route("{ key_file = \"short.key\" }");
    let got = errors_in(&src, dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("test.toml:11:27: field `route[0].deidentify.key_file`: the key is 4 bytes; at least 16 are needed"),
        "{got:#?}"
    );

    // Unknown keys and option names are the TOML parser's errors, placed the same way.
    let src = deid_route("{ key_file = \"site.key\", options = [\"retain-uid\"] }");
    let got = errors_in(&src, dir.path());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(
            "test.toml:11:50: field `route[0].deidentify.options[0]`: unknown variant `retain-uid`"
        ),
        "{got:#?}"
    );
    let src = deid_route("{ key_file = \"site.key\", colour = \"red\" }");
    let got = errors_in(&src, dir.path());
    assert!(
        got[0].starts_with(
            "test.toml:11:39: field `route[0].deidentify.colour`: unknown field `colour`"
        ),
        "{got:#?}"
    );
}

#[test]
fn vault_route_refuses_deidentify_at_its_table() {
    let src = format!("{PEER}\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\ndeidentify = {{ key_file = \"k\" }}\n");
    assert_eq!(
        errors(&src),
        ["test.toml:10:14: field `route[0].deidentify`: only for upstream routes (what leaves the gateway is de-identified)"]
    );
}

#[test]
fn audit_and_ledger_are_left_to_their_crates() {
    // Any content: radguard-audit and radguard-ledger read and check their own sections.
    let src = format!("{PEER}\n{VAULT}\n[audit]\nnod = 1\n\n[ledger]\nwhatever = true\n");
    assert!(parse_config(&src, "test.toml").is_ok());
}
