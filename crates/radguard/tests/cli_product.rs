//! `--log-format`: the one-line text format when asked for (the default on a terminal, which
//! `logfmt::choose` decides and its unit test covers), JSON when stderr is a file (as here) or
//! when asked for, before or after the subcommand (a global flag).

mod common;

use common::*;
use std::ffi::OsString;
use std::time::Duration;

fn start(flags: &[&str], after_serve: &[&str]) -> (Radguard, tempfile::TempDir) {
    let dir = tmp_dir("logfmt");
    let cfg = dir.path().join("radguard.toml");
    std::fs::write(
        &cfg,
        Config::new()
            .peer("lab", &["RG_SCU"], &["127.0.0.1/32"], &["echo"], &[], &[])
            .vault_route("RADGUARD")
            .toml(),
    )
    .expect("write config");
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.push("serve".into());
    args.extend(after_serve.iter().map(OsString::from));
    args.extend(["--config".into(), cfg.into_os_string()]);
    args.extend(["--data".into(), dir.path().join("data").into_os_string()]);
    let rg = Radguard::start_args(&args, &dir.path().join("data"));
    (rg, dir)
}

/// Waits for the `listening` event's log line and returns it.
fn listening_line(rg: &Radguard) -> String {
    let find = || {
        rg.log()
            .lines()
            // Not stdout's `radguard: listening on dicom://...`.
            .find(|l| {
                !l.starts_with("radguard:") && l.contains("listening") && l.contains("127.0.0.1:")
            })
            .map(str::to_string)
    };
    assert!(
        wait_until(Duration::from_secs(20), || find().is_some()),
        "no listening log line:\n{}",
        rg.log()
    );
    find().unwrap_or_default()
}

#[test]
fn text_format_is_one_readable_line_per_event() {
    let (rg, _dir) = start(&["--log-format", "text"], &[]);
    let line = listening_line(&rg);
    let port = rg.port();
    // TIME LEVEL EVENT key=value ...
    let (time, rest) = line.split_once(' ').expect("time first");
    assert!(time.contains('T') && time.ends_with('Z'), "{line}");
    let fields = rest
        .strip_prefix("INFO  listening ")
        .unwrap_or_else(|| panic!("{line}"));
    let mut fields: Vec<&str> = fields.split(' ').collect();
    fields.sort_unstable();
    let addr = format!("addr=127.0.0.1:{port}");
    assert_eq!(fields, [addr.as_str(), "ae_title=RADGUARD"], "{line}");
    assert!(parse_events(&rg.log()).is_empty(), "no JSON event lines");
    rg.stop();
}

#[test]
fn json_when_stderr_is_not_a_terminal_and_when_asked_after_the_subcommand() {
    for after in [&[][..], &["--log-format", "json"][..]] {
        let (rg, _dir) = start(&[], after);
        let line = listening_line(&rg);
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(v["fields"]["event"]["event"], "listening", "{line}");
        assert_eq!(v["fields"]["event"]["ae_title"], "RADGUARD", "{line}");
        rg.stop();
    }
}

fn radguard(args: &[&str]) -> std::process::Output {
    std::process::Command::new(Radguard::exe())
        .args(args)
        .output()
        .expect("run radguard")
}

#[test]
fn version_names_the_version_and_the_commit_built() {
    let out = radguard(&["--version"]);
    assert!(out.status.success());
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        got,
        format!("radguard {} (commit {head})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn man_pages_and_completions_come_from_the_cli_definition() {
    let dir = tmp_dir("man");
    let out = radguard(&["man", dir.path().to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "{out:?}");
    for page in ["radguard.1", "radguard-serve.1", "radguard-config-check.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let serve = std::fs::read_to_string(dir.path().join("radguard-serve.1")).expect("serve");
    assert!(
        serve.contains("\\-\\-data"),
        "serve's flags are in its page"
    );
    // Hidden commands get no page.
    assert!(!dir.path().join("radguard-man.1").exists());
    let out = radguard(&["completions", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_radguard()") && script.contains("serve"),
        "{script}"
    );
}
