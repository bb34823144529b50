//! `radguard --version`: the package version and the commit it was built from.
//!
//! The commit comes from `RADGUARD_COMMIT` when set (a package build from a source tarball sets
//! it), else from git when building in a checkout, else "unknown".

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RADGUARD_COMMIT");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let from_env = std::env::var("RADGUARD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = match from_env {
        Some(c) => c.trim().to_string(),
        None => {
            // Rebuilt when HEAD moves: HEAD itself (a checkout), the branch it names (a commit)
            // and packed-refs.
            if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
                let git_dir = PathBuf::from(git_dir);
                println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
                if let Some(common) = git(&dir, &["rev-parse", "--git-common-dir"]) {
                    let common = dir.join(common);
                    println!(
                        "cargo:rerun-if-changed={}",
                        common.join("packed-refs").display()
                    );
                    if let Some(head_ref) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
                        println!("cargo:rerun-if-changed={}", common.join(head_ref).display());
                    }
                }
            }
            git(&dir, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=RADGUARD_COMMIT={commit}");
}
