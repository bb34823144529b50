//! Immutability below the application: the Linux inode flag `FS_IMMUTABLE_FL` (`chattr +i`).
//!
//! The vault's write-once rule is otherwise enforced by the application alone; ransomware or an
//! intruder with root on the host could delete or encrypt object files. With the immutable flag
//! set, even root cannot unlink, rename, truncate, write or re-link the file until the flag is
//! cleared, and clearing it needs `CAP_LINUX_IMMUTABLE` (see ioctl_iflags(2)). That turns "a
//! compromised gateway process" into "a compromised gateway process that also holds that
//! capability, and is noticed clearing flags".
//!
//! Setting the flag is best effort: a file system without inode flags answers `EOPNOTSUPP` or
//! `ENOTTY` ([`LockOutcome::Unsupported`]), a process without the capability answers `EPERM`
//! ([`LockOutcome::NotPermitted`]). Neither may cost an image: the caller stores anyway and
//! reports the fallback once.
//!
//! The flag is read and written through `FS_IOC_GETFLAGS` / `FS_IOC_SETFLAGS` on a descriptor
//! opened read-only (an immutable file cannot be opened for writing, even by root).

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::fs::IFlags;
use rustix::io::Errno;

use crate::VaultError;

/// What setting (or probing for) the immutable flag did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// The flag is set: the file cannot be changed, renamed or removed, even by root.
    Locked,
    /// The file system has no such flag (`EOPNOTSUPP`/`ENOTTY`, e.g. some network or FUSE
    /// file systems, vfat). Fix: keep the vault on ext4, XFS, Btrfs or tmpfs (Linux 6.0+).
    Unsupported,
    /// The process lacks `CAP_LINUX_IMMUTABLE` (`EPERM`). Fix: grant that capability (the
    /// packaged systemd unit does: `AmbientCapabilities=CAP_LINUX_IMMUTABLE`).
    NotPermitted,
}

impl LockOutcome {
    /// True when the flag is in place.
    pub fn is_locked(self) -> bool {
        self == LockOutcome::Locked
    }

    /// One sentence naming the fallback and its fix, for the start-up log line and event.
    pub fn explain(self) -> &'static str {
        match self {
            LockOutcome::Locked => "vault objects are made immutable (FS_IMMUTABLE_FL)",
            LockOutcome::Unsupported => {
                "the vault's file system does not support the immutable attribute \
                 (FS_IMMUTABLE_FL): objects are protected by file mode only; keep the vault \
                 on ext4, XFS, Btrfs or tmpfs to make them immutable"
            }
            LockOutcome::NotPermitted => {
                "radguard lacks CAP_LINUX_IMMUTABLE: vault objects are protected by file mode \
                 only; grant the capability (AmbientCapabilities=CAP_LINUX_IMMUTABLE, as the \
                 packaged unit does) to make them immutable"
            }
        }
    }

    /// A short machine-readable name (`locked`, `unsupported`, `not_permitted`).
    pub fn as_str(self) -> &'static str {
        match self {
            LockOutcome::Locked => "locked",
            LockOutcome::Unsupported => "unsupported",
            LockOutcome::NotPermitted => "not_permitted",
        }
    }
}

/// Maps the errno of a failed `FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS` to a fallback outcome, or
/// `None` for an error that is a real I/O fault.
pub(crate) fn outcome_of(errno: Errno) -> Option<LockOutcome> {
    // EOPNOTSUPP and ENOTSUP are one value on Linux. ENOTTY: the file system has no ioctl
    // handler for inode flags at all. EINVAL: it has one but rejects this flag.
    if errno == Errno::OPNOTSUPP || errno == Errno::NOTTY || errno == Errno::INVAL {
        Some(LockOutcome::Unsupported)
    } else if errno == Errno::PERM || errno == Errno::ACCESS {
        Some(LockOutcome::NotPermitted)
    } else {
        None
    }
}

fn open_ro(path: &Path) -> Result<File, VaultError> {
    File::open(path).map_err(|e| VaultError::io(path, e))
}

fn errno_error(path: &Path, errno: Errno) -> VaultError {
    VaultError::io(path, io::Error::from_raw_os_error(errno.raw_os_error()))
}

/// Sets the immutable flag on `path` (a file or directory), keeping its other flags.
/// Unsupported file systems and a missing capability are outcomes, not errors.
pub fn set_immutable(path: &Path) -> Result<LockOutcome, VaultError> {
    let file = open_ro(path)?;
    let flags = match rustix::fs::ioctl_getflags(&file) {
        Ok(f) => f,
        Err(e) => return outcome_of(e).ok_or_else(|| errno_error(path, e)),
    };
    if flags.contains(IFlags::IMMUTABLE) {
        return Ok(LockOutcome::Locked);
    }
    match rustix::fs::ioctl_setflags(&file, flags | IFlags::IMMUTABLE) {
        Ok(()) => Ok(LockOutcome::Locked),
        Err(e) => outcome_of(e).ok_or_else(|| errno_error(path, e)),
    }
}

/// Clears the immutable flag on `path`. Returns whether it was set. A file system without inode
/// flags has nothing to clear (`Ok(false)`); a missing capability is an error (the file stays
/// locked).
pub fn clear_immutable(path: &Path) -> Result<bool, VaultError> {
    let file = open_ro(path)?;
    let flags = match rustix::fs::ioctl_getflags(&file) {
        Ok(f) => f,
        Err(e) if outcome_of(e) == Some(LockOutcome::Unsupported) => return Ok(false),
        Err(e) => return Err(errno_error(path, e)),
    };
    if !flags.contains(IFlags::IMMUTABLE) {
        return Ok(false);
    }
    rustix::fs::ioctl_setflags(&file, flags - IFlags::IMMUTABLE)
        .map_err(|e| errno_error(path, e))?;
    Ok(true)
}

/// Whether the immutable flag is set on `path` (`false` on a file system without inode flags).
pub fn is_immutable(path: &Path) -> Result<bool, VaultError> {
    let file = open_ro(path)?;
    match rustix::fs::ioctl_getflags(&file) {
        Ok(f) => Ok(f.contains(IFlags::IMMUTABLE)),
        Err(e) if outcome_of(e) == Some(LockOutcome::Unsupported) => Ok(false),
        Err(e) => Err(errno_error(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(outcome_of(Errno::OPNOTSUPP), Some(LockOutcome::Unsupported));
        assert_eq!(outcome_of(Errno::NOTSUP), Some(LockOutcome::Unsupported));
        assert_eq!(outcome_of(Errno::NOTTY), Some(LockOutcome::Unsupported));
        assert_eq!(outcome_of(Errno::INVAL), Some(LockOutcome::Unsupported));
        assert_eq!(outcome_of(Errno::PERM), Some(LockOutcome::NotPermitted));
        assert_eq!(outcome_of(Errno::ACCESS), Some(LockOutcome::NotPermitted));
        // Real faults stay errors.
        assert_eq!(outcome_of(Errno::IO), None);
        assert_eq!(outcome_of(Errno::NOSPC), None);
        assert_eq!(outcome_of(Errno::NOENT), None);
    }

    #[test]
    fn outcome_names_and_fixes() {
        assert!(LockOutcome::Locked.is_locked());
        assert!(!LockOutcome::Unsupported.is_locked());
        assert!(LockOutcome::NotPermitted
            .explain()
            .contains("CAP_LINUX_IMMUTABLE"));
        assert!(LockOutcome::Unsupported.explain().contains("ext4"));
        assert_eq!(LockOutcome::NotPermitted.as_str(), "not_permitted");
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(set_immutable(&dir.path().join("absent")).is_err());
        assert!(is_immutable(&dir.path().join("absent")).is_err());
    }
}
