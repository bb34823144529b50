//! `radguard scan` and `radguard sanitize` (the real binary): exit status 0/1/2, the report
//! lines, `--json` (one object per file on stdout, the summary on stderr), usage errors.
//! What the scan and the rebuild find is tested in radguard-media.

#[path = "../../radguard-media/tests/common/mod.rs"]
mod media_files;

use std::path::Path;
use std::process::{Command, Output};

use media_files::{clean_ct, pedicom};

fn radguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_radguard"))
        .args(args)
        .output()
        .expect("run radguard")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn corpus(dir: &Path, with_polyglot: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("a.dcm"),
        clean_ct("1.2.826.0.1.3680043.9.7433.1.1", &[]),
    )
    .unwrap();
    if with_polyglot {
        std::fs::write(dir.join("b.dcm"), pedicom()).unwrap();
    }
}

#[test]
fn scan_exit_status_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, mixed) = (tmp.path().join("clean"), tmp.path().join("mixed"));
    corpus(&clean, false);
    corpus(&mixed, true);
    let (c, m) = (clean.to_str().unwrap(), mixed.to_str().unwrap());

    let r = radguard(&["scan", "--no-progress", c]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let out = text(&r.stdout);
    assert!(out.starts_with("clean "), "{out}");
    assert!(
        out.contains("scanned 1 files") && out.contains("1 clean"),
        "{out}"
    );

    let r = radguard(&["scan", "--no-progress", "-j", "2", m]);
    assert_eq!(r.status.code(), Some(1), "{}", text(&r.stderr));
    let out = text(&r.stdout);
    assert!(out.contains("malicious") && out.contains("b.dcm"), "{out}");
    // -q lists only what is not clean.
    let r = radguard(&["scan", "--no-progress", "-q", m]);
    let out = text(&r.stdout);
    assert!(!out.contains("a.dcm") && out.contains("b.dcm"), "{out}");

    // --json: one object per file on stdout, the summary on stderr.
    let r = radguard(&["scan", "--no-progress", "--json", m]);
    assert_eq!(r.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = text(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "clean");
    assert_eq!(lines[1]["verdict"], "malicious");
    assert!(text(&r.stderr).contains("scanned 2 files"));

    // Usage errors: a path that does not exist, --jobs 0.
    let r = radguard(&["scan", tmp.path().join("missing").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        text(&r.stderr).starts_with("radguard scan: "),
        "{}",
        text(&r.stderr)
    );
    let r = radguard(&["scan", "-j", "0", c]);
    assert_eq!(r.status.code(), Some(2));
    assert!(text(&r.stderr).contains("--jobs must be at least 1"));
}

#[test]
fn sanitize_exit_status_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    corpus(&inputs, true);
    std::fs::write(inputs.join("notes.txt"), b"not dicom").unwrap();
    let out = tmp.path().join("out");
    let (i, o) = (inputs.to_str().unwrap(), out.to_str().unwrap());

    let r = radguard(&["sanitize", "--no-progress", i, "-o", o]);
    let stdout = text(&r.stdout);
    // The text file cannot be rebuilt: quarantined, exit 1.
    assert_eq!(r.status.code(), Some(1), "{stdout}{}", text(&r.stderr));
    assert!(
        stdout.contains("quarantined") && stdout.contains("notes.txt"),
        "{stdout}"
    );
    assert!(stdout.contains("sanitized 3 files: 2 written"), "{stdout}");
    assert!(out.join("quarantine").is_dir());

    let r = radguard(&["sanitize", "--no-progress", "--json", i, "-o", o]);
    assert_eq!(r.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = text(&r.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(text(&r.stderr).contains("sanitized 3 files"));

    // Only clean inputs: exit 0.
    let clean = tmp.path().join("clean");
    corpus(&clean, false);
    let r = radguard(&[
        "sanitize",
        "--no-progress",
        clean.to_str().unwrap(),
        "-o",
        o,
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stdout));

    // An output folder that cannot be made: exit 2.
    let file = tmp.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let r = radguard(&["sanitize", i, "-o", file.join("out").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        text(&r.stderr).contains("cannot create"),
        "{}",
        text(&r.stderr)
    );
}
