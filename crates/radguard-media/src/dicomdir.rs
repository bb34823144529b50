//! DICOMDIR checks: every Referenced File ID must be a relative path of valid components that
//! stays inside the media root and names a file that exists.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::report::{Finding, FindingCode as C, Severity as S};

/// Cap on "missing file" findings listed one by one.
const MAX_LISTED: usize = 20;

/// Checks the Referenced File IDs (offset, raw value) of the DICOMDIR at `dicomdir`.
pub(crate) fn check_references(dicomdir: &Path, ids: &[(u64, String)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let root = dicomdir.parent().unwrap_or(Path::new("."));
    let root_canon = fs::canonicalize(root).ok();
    let mut missing = 0usize;
    let mut bad_chars = 0usize;
    for (offset, raw) in ids {
        let comps: Vec<&str> = raw
            .trim_end_matches(['\0', ' '])
            .split('\\')
            .map(|c| c.trim_end_matches(['\0', ' ']))
            .collect();
        let shown = raw.trim_end_matches(['\0', ' ']).replace('\\', "/");
        // Hostile forms first: traversal and absolute paths.
        if comps
            .iter()
            .any(|c| *c == ".." || c.split(['/', '\\']).any(|p| p == ".."))
        {
            out.push(Finding::new(
                S::Critical,
                C::DicomdirPath,
                Some(*offset),
                format!("Referenced File ID {shown:?} climbs out of the media root with '..'"),
            ));
            continue;
        }
        let first = comps.first().copied().unwrap_or("");
        if first.starts_with('/')
            || first.starts_with('\\')
            || first.contains(':')
            || comps.iter().any(|c| c.contains('/'))
        {
            out.push(Finding::new(
                S::Critical,
                C::DicomdirPath,
                Some(*offset),
                format!("Referenced File ID {shown:?} is an absolute path or contains a separator"),
            ));
            continue;
        }
        // PS3.10 §8.2: 1..=8 characters of A-Z, 0-9 and _ per component, at most 8 components.
        let valid = !comps.is_empty()
            && comps.len() <= 8
            && comps.iter().all(|c| {
                !c.is_empty()
                    && c.len() <= 8
                    && c.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
            });
        if !valid {
            bad_chars += 1;
            if bad_chars <= MAX_LISTED {
                out.push(Finding::new(
                    S::Warning,
                    C::DicomdirPath,
                    Some(*offset),
                    format!("Referenced File ID {shown:?} does not follow PS3.10 file ID rules"),
                ));
            }
            if comps.iter().any(|c| c.is_empty() || *c == ".") {
                continue;
            }
        }
        match resolve(root, &comps) {
            None => {
                missing += 1;
                if missing <= MAX_LISTED {
                    out.push(Finding::new(
                        S::Warning,
                        C::DicomdirMissingFile,
                        Some(*offset),
                        format!("Referenced File ID {shown:?} names a file that does not exist"),
                    ));
                }
            }
            Some(path) => {
                let inside = match (&root_canon, fs::canonicalize(&path)) {
                    (Some(r), Ok(p)) => p.starts_with(r),
                    _ => false,
                };
                if !inside {
                    out.push(Finding::new(
                        S::Critical,
                        C::DicomdirOutsideRoot,
                        Some(*offset),
                        format!("Referenced File ID {shown:?} resolves outside the media root (symbolic link)"),
                    ));
                }
            }
        }
    }
    if missing > MAX_LISTED {
        out.push(Finding::new(
            S::Warning,
            C::DicomdirMissingFile,
            None,
            format!("{missing} referenced files are missing in all"),
        ));
    }
    out
}

/// Finds `root/comp/...`, matching each component case-insensitively when the exact name
/// does not exist (ISO 9660 media are often mounted lower-case).
fn resolve(root: &Path, comps: &[&str]) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in comps {
        // Components were validated not to be separators, `.` or `..`.
        if Path::new(c)
            .components()
            .any(|k| !matches!(k, Component::Normal(_)))
        {
            return None;
        }
        let exact = cur.join(c);
        if fs::symlink_metadata(&exact).is_ok() {
            cur = exact;
            continue;
        }
        let found = fs::read_dir(&cur).ok()?.flatten().find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(c))
        })?;
        cur = found.path();
    }
    if cur.is_file() {
        Some(cur)
    } else {
        None
    }
}
