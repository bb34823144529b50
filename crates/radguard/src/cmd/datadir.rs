//! The data folder's format version: `<data>/radguard-data.toml`, `format = N`.
//!
//! The data folder holds stores whose formats a later radguard may change (the vault's index
//! and objects, the integrity ledger, the audit store, the block list, learned baselines). A
//! radguard opens a folder of its own format or an older one (upgrading it when a format
//! changes), and refuses one written by a newer radguard before opening anything: an older
//! binary writing into stores it does not understand could break the audit chain or the
//! ledger, evidence that must stay verifiable.

use std::path::{Path, PathBuf};

/// The file, in the data folder.
pub const FILE: &str = "radguard-data.toml";

/// The format this radguard writes. 1: `vault/` (index.sqlite, objects/), `ledger/`
/// (ledger.sqlite, keys), `audit.sqlite` and its signing key, `blocks.json`, learned baselines
/// -- as written since before the version file existed (a folder without it is format 1).
/// 2: format 1 and the vault's index log (`vault/index-log/`, a hash-chained line per index
/// row): a radguard of format 1 would store rows without their lines, which the vault's check
/// then reports as rows added behind its back, so it must refuse such a folder. A format 1
/// folder is upgraded by opening its vault (each existing row gets its line, in index order).
pub const FORMAT: u32 = 2;

/// `radguard serve`'s exit status for a data folder of a newer format (docs/config.md).
pub const EXIT_NEWER: u8 = 3;

/// Why the data folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "the data folder {} was written by a newer radguard (data format {found}; this radguard \
         {version} reads formats up to {FORMAT}): refusing to use it so as not to damage its \
         stores. Run the newer radguard, or point --data at a folder made for this version.",
        dir.display(),
        version = env!("CARGO_PKG_VERSION")
    )]
    Newer { dir: PathBuf, found: u32 },
    #[error("{}: {why} (expected `format = N`)", file.display())]
    Unreadable { file: PathBuf, why: String },
    #[error("writing {}: {source}", file.display())]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// The format of the folder `data` (1 when it has no version file: a new folder, or one from
/// before the file existed).
pub fn format_of(data: &Path) -> Result<u32, DataDirError> {
    let file = data.join(FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(1),
        Err(e) => {
            return Err(DataDirError::Unreadable {
                file,
                why: e.to_string(),
            })
        }
    };
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| DataDirError::Unreadable {
                file: file.clone(),
                why: e.message().to_string(),
            })?;
    match table.get("format").and_then(toml::Value::as_integer) {
        Some(n) if n >= 1 => u32::try_from(n).map_err(|_| DataDirError::Unreadable {
            file,
            why: format!("format {n} is out of range"),
        }),
        _ => Err(DataDirError::Unreadable {
            file,
            why: "no positive integer `format`".into(),
        }),
    }
}

/// For the commands that write into a folder `serve` runs on (`block`, `queue`) or read its
/// vault (`vault check|verify|replay|export`, which must not misread it): refuses a newer format (exit status [`EXIT_NEWER`]), never stamps (the folder stays as `serve` left
/// it; a missing folder is left for the command to report).
pub fn refuse_newer(data: &Path) -> Result<(), DataDirError> {
    let found = format_of(data)?;
    if found > FORMAT {
        return Err(DataDirError::Newer {
            dir: data.to_path_buf(),
            found,
        });
    }
    Ok(())
}

/// [`refuse_newer`] for a command's entry: `Some(exit status)` after printing why, when the
/// folder cannot be used.
pub fn refuse_newer_exit(data: &Path) -> Option<std::process::ExitCode> {
    let e = refuse_newer(data).err()?;
    eprintln!("radguard: {e}");
    Some(std::process::ExitCode::from(exit_status(&e)))
}

/// The exit status for an error from [`refuse_newer`] or [`check_and_stamp`]: [`EXIT_NEWER`]
/// for a newer folder, 2 otherwise.
pub fn exit_status(e: &DataDirError) -> u8 {
    match e {
        DataDirError::Newer { .. } => EXIT_NEWER,
        _ => 2,
    }
}

/// Checks the folder before anything is opened in it: refuses a newer format, brings an older
/// one to [`FORMAT`] (no format change exists yet) and stamps the version file.
pub fn check_and_stamp(data: &Path) -> Result<(), DataDirError> {
    let found = format_of(data)?;
    if found > FORMAT {
        return Err(DataDirError::Newer {
            dir: data.to_path_buf(),
            found,
        });
    }
    let file = data.join(FILE);
    if found == FORMAT && file.exists() {
        return Ok(());
    }
    let text = format!(
        "# Written by radguard: the format of this data folder's stores. A radguard that reads \
         only older formats refuses the folder.\nformat = {FORMAT}\n"
    );
    // Written whole, then renamed: a crash leaves the old file or the new one.
    let tmp = data.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|source| DataDirError::Write { file, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_old_folders_are_stamped_newer_ones_refused_and_garbage_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(format_of(dir.path()).expect("no file"), 1);
        check_and_stamp(dir.path()).expect("stamp");
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("stamped");
        assert!(text.contains(&format!("format = {FORMAT}")), "{text}");
        check_and_stamp(dir.path()).expect("again");

        std::fs::write(dir.path().join(FILE), format!("format = {}\n", FORMAT + 1)).expect("w");
        let e = check_and_stamp(dir.path()).expect_err("newer");
        assert!(matches!(e, DataDirError::Newer { found, .. } if found == FORMAT + 1));
        assert!(e.to_string().contains("newer radguard"), "{e}");
        // Refused, not rewritten.
        assert_eq!(format_of(dir.path()).expect("still"), FORMAT + 1);
        let e = refuse_newer(dir.path()).expect_err("newer, for the offline commands too");
        assert_eq!(exit_status(&e), EXIT_NEWER);

        std::fs::write(dir.path().join(FILE), "format = \"one\"\n").expect("w");
        assert!(matches!(
            check_and_stamp(dir.path()),
            Err(DataDirError::Unreadable { .. })
        ));
    }
}
