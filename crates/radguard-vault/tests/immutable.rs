//! Immutability below the application: on a file system that supports it (a loop-mounted ext4
//! image made here), every object file is made immutable, so that root itself cannot delete,
//! rewrite or rename it; the retention pass releases old objects; `immutable = "required"`
//! refuses to open where the flag cannot be set. Needs root (CI runs as root): without the
//! capability or a usable file system the tests fail, saying why.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use radguard_dicom::types::uids;
use radguard_dicom::Uid;
use radguard_vault::lock::{clear_immutable, is_immutable, set_immutable};
use radguard_vault::{
    Immutable, LockOutcome, StoreOutcome, StoredInstance, Vault, VaultConfig, VaultError,
};

const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

/// Clears the immutable flag on everything under `dir` (best effort), so it can be removed.
fn unlock_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                unlock_tree(&p);
            }
            let _ = clear_immutable(&p);
        }
    }
    let _ = clear_immutable(dir);
}

/// A folder on a file system where the immutable flag can be set: a 64 MiB ext4 image made
/// here and loop-mounted; where mounting is refused, a temporary folder whose file system
/// takes the flag (probed). Dropping it (also on panic) clears every flag, unmounts and
/// removes everything.
struct LockableDir {
    tmp: Option<tempfile::TempDir>,
    mount: Option<PathBuf>,
    dir: PathBuf,
}

impl LockableDir {
    fn new() -> LockableDir {
        // On the disk, not in /dev/shm: the image is 64 MiB of sparse file.
        let tmp = tempfile::Builder::new()
            .prefix("rg-immutable-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let image = tmp.path().join("ext4.img");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).expect("mkdir mnt");
        fs::File::create(&image)
            .and_then(|f| f.set_len(64 << 20))
            .expect("create image");
        let mkfs = Command::new("/usr/sbin/mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .output();
        let mounted = match mkfs {
            Ok(o) if o.status.success() => {
                let m = Command::new("/usr/bin/mount")
                    .args(["-o", "loop"])
                    .arg(&image)
                    .arg(&mnt)
                    .output()
                    .expect("run mount");
                if m.status.success() {
                    true
                } else {
                    eprintln!(
                        "loop mount refused ({}); falling back to a folder on {}",
                        String::from_utf8_lossy(&m.stderr).trim(),
                        tmp.path().display()
                    );
                    false
                }
            }
            other => {
                eprintln!("mkfs.ext4 unavailable ({other:?}); falling back to a plain folder");
                false
            }
        };
        let (dir, mount) = if mounted {
            (mnt.join("data"), Some(mnt))
        } else {
            (tmp.path().join("data"), None)
        };
        let me = LockableDir {
            tmp: Some(tmp),
            mount,
            dir,
        };
        fs::create_dir_all(&me.dir).expect("mkdir data");
        let probe = me.dir.join("probe");
        fs::write(&probe, b"p").expect("write probe");
        let outcome = set_immutable(&probe).expect("probe the immutable flag");
        assert_eq!(
            outcome,
            LockOutcome::Locked,
            "cannot set the immutable flag in {} (neither a loop-mounted ext4 image nor this \
             folder allows it: run as root with CAP_LINUX_IMMUTABLE on ext4/XFS/Btrfs/tmpfs)",
            me.dir.display()
        );
        clear_immutable(&probe).expect("clear probe");
        fs::remove_file(&probe).expect("remove probe");
        me
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for LockableDir {
    fn drop(&mut self) {
        unlock_tree(&self.dir);
        if let Some(m) = &self.mount {
            for _ in 0..50 {
                let ok = Command::new("/usr/bin/umount")
                    .arg(m)
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        drop(self.tmp.take());
    }
}

fn uid(s: &str) -> Uid {
    Uid::new(s).expect("valid UID")
}

fn store(vault: &Vault, sop_instance: &str, payload: &[u8]) -> StoredInstance {
    let mut p = vault
        .begin(
            &uid(SC_IMAGE),
            &uid(sop_instance),
            &uid(uids::EXPLICIT_VR_LE),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(payload).expect("write");
    match p.commit().expect("commit") {
        StoreOutcome::Stored(i) => i,
        other => panic!("expected Stored, got {other:?}"),
    }
}

fn config(immutable: Immutable, retention_days: u32) -> VaultConfig {
    VaultConfig {
        immutable,
        retention_days,
    }
}

/// `op` failed with EPERM ("Operation not permitted"), as the kernel answers for an immutable
/// inode even to root.
fn assert_eperm<T: std::fmt::Debug>(what: &str, r: io::Result<T>) {
    match r {
        Err(e) if e.raw_os_error() == Some(1) => {}
        other => panic!("{what}: expected EPERM, got {other:?}"),
    }
}

#[test]
fn objects_cannot_be_deleted_rewritten_or_renamed_by_root() {
    let dir = LockableDir::new();
    let root = dir.path().join("vault");
    let vault = Vault::open_with(&root, config(Immutable::Auto, 0)).expect("open");
    assert_eq!(vault.lock_status(), Some(LockOutcome::Locked));
    let stored: Vec<StoredInstance> = (1..=3)
        .map(|i| store(&vault, &format!("1.2.3.{i}"), &[i as u8; 1000]))
        .collect();
    assert_eq!(vault.unlocked_objects(), 0);
    for s in &stored {
        assert!(
            is_immutable(&s.path).expect("flags"),
            "{}",
            s.path.display()
        );
        let lsattr = Command::new("/usr/bin/lsattr")
            .arg(&s.path)
            .output()
            .expect("lsattr");
        let attrs = String::from_utf8_lossy(&lsattr.stdout);
        let flags = attrs.split_whitespace().next().unwrap_or("");
        assert!(flags.contains('i'), "lsattr: {attrs}");
        assert_eperm("unlink", fs::remove_file(&s.path));
        assert_eperm(
            "open for writing",
            OpenOptions::new().write(true).open(&s.path),
        );
        assert_eperm("rename", fs::rename(&s.path, s.path.with_extension("enc")));
        assert_eperm("hard link", fs::hard_link(&s.path, root.join("copy")));
        // rm(1) as root, no chattr first.
        let rm = Command::new("/usr/bin/rm")
            .arg("-f")
            .arg(&s.path)
            .output()
            .expect("rm");
        assert!(!rm.status.success(), "rm -f removed {}", s.path.display());
        assert!(s.path.exists());
    }
    assert_eq!(vault.check().expect("check"), vec![]);
}

#[test]
fn retention_releases_old_objects_and_nothing_else() {
    let dir = LockableDir::new();
    let root = dir.path().join("vault");
    let vault = Vault::open_with(&root, config(Immutable::Auto, 30)).expect("open");
    let a = store(&vault, "1.2.3.1", b"first");
    let b = store(&vault, "1.2.3.2", b"second");
    let now = SystemTime::now();
    assert_eq!(vault.release_expired(now).expect("pass"), 0);
    assert!(is_immutable(&a.path).unwrap() && is_immutable(&b.path).unwrap());
    // 31 days on: both are past retention and released; nothing is deleted.
    let later = now + Duration::from_secs(31 * 86_400);
    assert_eq!(vault.release_expired(later).expect("pass"), 2);
    assert!(!is_immutable(&a.path).unwrap() && !is_immutable(&b.path).unwrap());
    assert!(a.path.exists() && b.path.exists());
    assert_eq!(vault.release_expired(later).expect("again"), 0);
    // For ever: retention 0 releases nothing, however late.
    drop(vault);
    let vault = Vault::open_with(&root, config(Immutable::Auto, 0)).expect("reopen");
    let c = store(&vault, "1.2.3.3", b"third");
    let far = now + Duration::from_secs(100 * 365 * 86_400);
    assert_eq!(vault.release_expired(far).expect("pass"), 0);
    assert!(is_immutable(&c.path).unwrap());
}

#[test]
fn off_locks_nothing() {
    let dir = LockableDir::new();
    let vault =
        Vault::open_with(&dir.path().join("vault"), config(Immutable::Off, 0)).expect("open");
    assert_eq!(vault.lock_status(), None);
    let a = store(&vault, "1.2.3.1", b"x");
    assert!(!is_immutable(&a.path).unwrap());
}

/// Runs `f` on a thread without CAP_LINUX_IMMUTABLE in its effective set (capabilities are
/// per thread): the flag then cannot be set (EPERM), as for an unprivileged service.
fn without_cap_immutable<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    use rustix::thread::{capabilities, set_capabilities, CapabilitySet};
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut caps = capabilities(None).expect("capget");
            assert!(
                caps.effective.contains(CapabilitySet::LINUX_IMMUTABLE),
                "the test runs without CAP_LINUX_IMMUTABLE: run it as root"
            );
            caps.effective.remove(CapabilitySet::LINUX_IMMUTABLE);
            set_capabilities(None, caps).expect("capset");
            f()
        })
        .join()
        .expect("thread")
    })
}

#[test]
fn required_refuses_and_auto_stores_without_the_capability() {
    let dir = LockableDir::new();
    let root = dir.path().join("vault");
    let (refused, auto) = without_cap_immutable(|| {
        let refused = Vault::open_with(&root, config(Immutable::Required, 0));
        let vault = Vault::open_with(&root, config(Immutable::Auto, 0)).expect("auto opens");
        let status = vault.lock_status();
        let a = store(&vault, "1.2.3.1", b"kept anyway");
        let b = store(&vault, "1.2.3.2", b"kept too");
        (
            refused.map(|_| ()),
            (status, vault.unlocked_objects(), a, b),
        )
    });
    match refused {
        Err(e @ VaultError::NotImmutable { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("[vault] immutable = \"required\"")
                    && msg.contains("CAP_LINUX_IMMUTABLE"),
                "{msg}"
            );
        }
        other => panic!("expected NotImmutable, got {other:?}"),
    }
    let (status, unlocked, a, b) = auto;
    assert_eq!(status, Some(LockOutcome::NotPermitted));
    assert_eq!(unlocked, 2, "each unlocked object is counted");
    for s in [&a, &b] {
        assert!(s.path.exists());
        assert!(!is_immutable(&s.path).unwrap());
    }
    // With the capability (this thread), "required" opens.
    let vault = Vault::open_with(&root, config(Immutable::Required, 0)).expect("required");
    assert_eq!(vault.lock_status(), Some(LockOutcome::Locked));
}
