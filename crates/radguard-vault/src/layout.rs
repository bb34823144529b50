//! Where things live under the vault's root directory, and the file-system steps that make a
//! stored object durable.
//!
//! ```text
//! <root>/index.sqlite          the index (WAL mode)
//! <root>/tmp/<unique>.part     instances being received
//! <root>/objects/ab/cd/<sha256>.dcm   committed objects, named by the SHA-256 of their bytes
//! ```

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::VaultError;

pub(crate) const OBJECTS: &str = "objects";
pub(crate) const TMP: &str = "tmp";
pub(crate) const INDEX: &str = "index.sqlite";
pub(crate) const OBJECT_EXT: &str = "dcm";

/// True for a lowercase hex SHA-256 (64 characters), the only thing allowed in an object name.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `objects/ab/cd/<sha256>.dcm` under `objects_dir`. The caller guarantees `sha256` passed
/// [`is_sha256_hex`], so the name cannot leave the objects directory.
pub(crate) fn object_path(objects_dir: &Path, sha256: &str) -> PathBuf {
    objects_dir
        .join(&sha256[0..2])
        .join(&sha256[2..4])
        .join(format!("{sha256}.{OBJECT_EXT}"))
}

/// Creates a new, uniquely named temp file in `tmp_dir` (never reusing an existing name).
pub(crate) fn create_tmp(tmp_dir: &Path) -> Result<(PathBuf, File), VaultError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = tmp_dir.join(format!("{}-{nanos}-{n}.part", std::process::id()));
        let mut options = File::options();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VaultError::io(path, e)),
        }
    }
}

/// Creates the vault root if missing, readable by its owner only (it holds patient data).
/// An existing directory keeps its permissions.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), VaultError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| VaultError::io(dir, e))
}

/// Makes a directory entry change (create, rename) durable. A no-op where directories cannot be
/// opened (Windows), which journals metadata itself.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), VaultError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| VaultError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates the shard directories of an object path, fsyncing each parent that gained an entry.
fn ensure_shard(objects_dir: &Path, dest: &Path) -> Result<(), VaultError> {
    let Some(shard) = dest.parent() else {
        return Ok(());
    };
    if shard.is_dir() {
        return Ok(());
    }
    let Some(outer) = shard.parent() else {
        return Ok(());
    };
    let outer_existed = outer.is_dir();
    fs::create_dir_all(shard).map_err(|e| VaultError::io(shard, e))?;
    fsync_dir(outer)?;
    if !outer_existed {
        fsync_dir(objects_dir)?;
    }
    Ok(())
}

/// What [`place_object`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// The temp file became the object.
    Renamed,
    /// An object with this name was already there (same bytes, by its name): the temp file was
    /// removed and the existing file kept.
    AlreadyPresent,
}

/// Moves a fully written, fsynced temp file to its object path: read-only, renamed, directory
/// fsynced. An existing object is never overwritten. The caller serialises placements.
pub(crate) fn place_object(
    objects_dir: &Path,
    tmp: &Path,
    dest: &Path,
) -> Result<Placed, VaultError> {
    ensure_shard(objects_dir, dest)?;
    if fs::symlink_metadata(dest).is_ok() {
        remove_quietly(tmp);
        return Ok(Placed::AlreadyPresent);
    }
    let mut perms = fs::metadata(tmp)
        .map_err(|e| VaultError::io(tmp, e))?
        .permissions();
    perms.set_readonly(true);
    fs::set_permissions(tmp, perms).map_err(|e| VaultError::io(tmp, e))?;
    fs::rename(tmp, dest).map_err(|e| VaultError::io(dest, e))?;
    if let Some(shard) = dest.parent() {
        fsync_dir(shard)?;
    }
    Ok(Placed::Renamed)
}

/// Removes a temp file, ignoring failure (it is in `tmp/`, which `open` empties).
pub(crate) fn remove_quietly(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Every regular file under `objects/` two levels down, as (path, file name).
pub(crate) fn object_files(objects_dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    let mut out = Vec::new();
    for a in read_dir_sorted(objects_dir)? {
        if !a.is_dir() {
            out.push(a);
            continue;
        }
        for b in read_dir_sorted(&a)? {
            if !b.is_dir() {
                out.push(b);
                continue;
            }
            out.extend(read_dir_sorted(&b)?);
        }
    }
    Ok(out)
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    let mut v = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| VaultError::io(dir, e))? {
        v.push(entry.map_err(|e| VaultError::io(dir, e))?.path());
    }
    v.sort();
    Ok(v)
}

/// The SHA-256 an object file's path claims, if the path follows the layout exactly.
pub(crate) fn sha_from_object_path(objects_dir: &Path, path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let sha = name.strip_suffix(&format!(".{OBJECT_EXT}"))?;
    (is_sha256_hex(sha) && object_path(objects_dir, sha) == path).then(|| sha.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_layout() {
        let sha = "ab".repeat(32);
        let p = object_path(Path::new("/v/objects"), &sha);
        assert_eq!(p, Path::new("/v/objects/ab/ab").join(format!("{sha}.dcm")));
        assert_eq!(
            sha_from_object_path(Path::new("/v/objects"), &p),
            Some(sha.clone())
        );
        let misplaced = Path::new("/v/objects/cd/ab").join(format!("{sha}.dcm"));
        assert_eq!(
            sha_from_object_path(Path::new("/v/objects"), &misplaced),
            None
        );
    }

    #[test]
    fn sha_names() {
        assert!(is_sha256_hex(&"0f".repeat(32)));
        assert!(!is_sha256_hex(&"0F".repeat(32)));
        assert!(!is_sha256_hex(&"0f".repeat(31)));
        assert!(!is_sha256_hex(&format!("../{}", "0".repeat(61))));
    }

    #[test]
    fn temp_names_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, _) = create_tmp(dir.path()).expect("tmp");
        let (b, _) = create_tmp(dir.path()).expect("tmp");
        assert_ne!(a, b);
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = dir.path().join("objects");
        fs::create_dir(&objects).expect("mkdir");
        let sha = "12".repeat(32);
        let dest = object_path(&objects, &sha);
        let t1 = dir.path().join("t1");
        fs::write(&t1, b"first").expect("write");
        assert_eq!(
            place_object(&objects, &t1, &dest).expect("place"),
            Placed::Renamed
        );
        let t2 = dir.path().join("t2");
        fs::write(&t2, b"second").expect("write");
        assert_eq!(
            place_object(&objects, &t2, &dest).expect("place"),
            Placed::AlreadyPresent
        );
        assert_eq!(fs::read(&dest).expect("read"), b"first");
        assert!(!t2.exists());
        assert!(fs::metadata(&dest).expect("stat").permissions().readonly());
        assert_eq!(object_files(&objects).expect("list"), vec![dest]);
    }
}
