//! Shared helpers: the project's Python (pydicom) for generating and tampering test series,
//! DCMTK for benign re-encodings. Missing tools fail the tests with a clear message.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn python() -> PathBuf {
    let p = workspace_root().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-test-env.sh (pydicom and numpy in the project venv)",
        p.display()
    );
    p
}

/// (From the workspace root: crates/radguard/tests/cli_ledger.rs includes this module too.)
pub fn script() -> PathBuf {
    workspace_root().join("crates/radguard-ledger/tests/support/ctdata.py")
}

/// Runs `ctdata.py ARGS…` and returns its stdout.
pub fn ctdata(args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(script())
        .args(args)
        .output()
        .expect("run ctdata.py");
    assert!(
        out.status.success(),
        "ctdata.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ctdata_paths(args: &[&str], paths: &[&Path]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(paths.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    ctdata(&refs)
}

/// Runs a DCMTK tool from /usr/bin (never the venv's pynetdicom scripts).
pub fn dcmtk(tool: &str, args: &[&str], input: &Path, output: &Path) {
    let bin = Path::new("/usr/bin").join(tool);
    assert!(
        bin.exists(),
        "{} is missing: install DCMTK (scripts/setup-test-env.sh)",
        bin.display()
    );
    let out = Command::new(&bin)
        .args(args)
        .arg(input)
        .arg(output)
        .output()
        .expect("run DCMTK");
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The sorted `.dcm` files of a folder.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    v.sort();
    v
}

/// Generates a series into `dir` with ctdata.py.
pub fn series(dir: &Path, extra: &[&str]) -> Vec<PathBuf> {
    let mut args = vec!["series", dir.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    ctdata(&args);
    files(dir)
}
