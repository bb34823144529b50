//! The clap front ends as `radguard` wires them: argument names, exit codes, files written.
//! (`radguard passwd` reads the terminal or standard input; its parts are unit-tested in
//! `passwd.rs` and the hash round trip in tests/passwd.rs.)

use clap::Parser;
use radguard_tls::cli::{run_passwd, run_tls, PasswdArgs, TlsArgs, TlsCommand};

/// What crates/radguard/src/main.rs does with these structs.
#[derive(Debug, Parser)]
#[command(name = "radguard")]
enum Cli {
    Tls(TlsArgs),
    Passwd(PasswdArgs),
}

fn parse(args: &[&str]) -> Cli {
    match Cli::try_parse_from(std::iter::once("radguard").chain(args.iter().copied())) {
        Ok(c) => c,
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn tls(args: &[&str]) -> i32 {
    match parse(args) {
        Cli::Tls(a) => run_tls(a),
        Cli::Passwd(_) => panic!("not tls"),
    }
}

#[test]
fn init_issue_fingerprint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("pki");
    let d = dir.display().to_string();
    match parse(&[
        "tls",
        "init",
        &d,
        "--gateway-name",
        "gw.example",
        "--client",
        "ct01",
    ]) {
        Cli::Tls(TlsArgs {
            command: TlsCommand::Init(a),
        }) => {
            assert_eq!(a.gateway_names, ["gw.example"]);
            assert_eq!(a.clients, ["ct01"]);
            assert!(!a.json);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        tls(&[
            "tls",
            "init",
            &d,
            "--gateway-name",
            "gw.example",
            "--client",
            "ct01",
            "--client",
            "ws01"
        ]),
        0
    );
    for f in [
        "ca.pem",
        "gateway.pem",
        "client-ct01.pem",
        "client-ws01-key.pem",
        "README.txt",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // Never over existing files.
    assert_eq!(tls(&["tls", "init", &d]), 1);
    // Without --client: one client named "client".
    let other = tmp.path().join("other").display().to_string();
    assert_eq!(tls(&["tls", "init", &other, "--json"]), 0);
    assert!(tmp.path().join("other/client-client.pem").is_file());

    assert_eq!(tls(&["tls", "issue", &d, "mr02"]), 0);
    assert!(dir.join("client-mr02-key.pem").is_file());
    assert_eq!(tls(&["tls", "issue", &d, "mr02"]), 1, "exists");
    assert_eq!(tls(&["tls", "issue", &d, "bad/name"]), 1);

    let ca = dir.join("ca.pem").display().to_string();
    let gw = dir.join("gateway.pem").display().to_string();
    assert_eq!(tls(&["tls", "fingerprint", &ca, &gw]), 0);
    assert_eq!(tls(&["tls", "fingerprint", "--json", &gw]), 0);
    assert_eq!(tls(&["tls", "fingerprint", &gw, "/nonexistent.pem"]), 1);
    let key = dir.join("ca-key.pem").display().to_string();
    assert_eq!(
        tls(&["tls", "fingerprint", &key]),
        1,
        "a key is no certificate"
    );
    assert!(
        Cli::try_parse_from(["radguard", "tls", "fingerprint"]).is_err(),
        "a file is required"
    );
}

#[test]
fn passwd_arguments() {
    match parse(&["passwd", "--user", "alice"]) {
        Cli::Passwd(a) => assert_eq!(a.user.as_deref(), Some("alice")),
        other => panic!("{other:?}"),
    }
    // A bad --user is a usage error before anything is read.
    assert_eq!(
        run_passwd(PasswdArgs {
            user: Some(" alice".into())
        }),
        2
    );
}
