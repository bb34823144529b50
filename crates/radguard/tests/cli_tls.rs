//! `radguard tls init|issue|fingerprint` and `radguard passwd` as the binary runs them: argument
//! names, exit codes, files written, output. (The passcode prompt needs a terminal; its parts are
//! unit-tested in radguard-tls `passwd.rs` and the hash round trip in its tests/passwd.rs.)

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs the real binary with `args`; `stdin` is piped in when given, else standard input is
/// empty (`/dev/null`).
fn radguard(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_radguard"));
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn radguard");
    if let Some(text) = stdin {
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("radguard output")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

fn tls(args: &[&str]) -> i32 {
    let mut all = vec!["tls"];
    all.extend_from_slice(args);
    code(&radguard(&all, None))
}

#[test]
fn init_issue_fingerprint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("pki");
    let d = dir.display().to_string();
    let out = radguard(
        &[
            "tls",
            "init",
            &d,
            "--gateway-name",
            "gw.example",
            "--client",
            "ct01",
            "--client",
            "ws01",
        ],
        None,
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    // Without --json: the text summary, not JSON.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );
    assert!(text.contains("client-ct01.pem"), "{text}");
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
    assert_eq!(tls(&["init", &d]), 1);
    // Without --client: one client named "client".
    let other = tmp.path().join("other").display().to_string();
    let out = radguard(&["tls", "init", &other, "--json"], None);
    assert_eq!(code(&out), 0);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("--json prints JSON");
    assert!(tmp.path().join("other/client-client.pem").is_file());

    assert_eq!(tls(&["issue", &d, "mr02"]), 0);
    assert!(dir.join("client-mr02-key.pem").is_file());
    assert_eq!(tls(&["issue", &d, "mr02"]), 1, "exists");
    assert_eq!(tls(&["issue", &d, "bad/name"]), 1);

    let ca = dir.join("ca.pem").display().to_string();
    let gw = dir.join("gateway.pem").display().to_string();
    assert_eq!(tls(&["fingerprint", &ca, &gw]), 0);
    let out = radguard(&["tls", "fingerprint", "--json", &gw], None);
    assert_eq!(code(&out), 0);
    // --gateway-name reached the gateway certificate.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let sans = json
        .get(0)
        .and_then(|c| c.get("sans"))
        .expect("sans")
        .to_string();
    assert!(sans.contains("gw.example"), "{sans}");
    assert_eq!(tls(&["fingerprint", &gw, "/nonexistent.pem"]), 1);
    let key = dir.join("ca-key.pem").display().to_string();
    assert_eq!(tls(&["fingerprint", &key]), 1, "a key is no certificate");
    assert_eq!(tls(&["fingerprint"]), 2, "a file is required");
}

#[test]
fn passwd_arguments() {
    let out = radguard(&["passwd", "--user", "alice"], Some("s3cret pass\n"));
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("[[user]]\nname = \"alice\"\npasscode_argon2 = \"$argon2id$"),
        "{text}"
    );
    // A bad --user is a usage error before anything is read (standard input is empty: reading
    // it would fail with 1).
    assert_eq!(code(&radguard(&["passwd", "--user", " alice"], None)), 2);
}
