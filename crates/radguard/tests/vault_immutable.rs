//! Immutability below the application (`[vault] immutable`): the gateway makes every object it
//! stores immutable, so that root itself cannot delete, rewrite or rename it; where the flag
//! cannot be set (here: the process lacks CAP_LINUX_IMMUTABLE, dropped with setpriv) it refuses
//! to start with `immutable = "required"`, and with "auto" it serves and says so once.
//! Needs root (CI runs as root): without a loop device or the capability these tests fail,
//! saying why.

mod common;

use common::*;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use radguard_vault::lock::{clear_immutable, is_immutable, set_immutable};
use radguard_vault::LockOutcome;

const SETPRIV: &str = "/usr/bin/setpriv";
/// Runs the rest without CAP_LINUX_IMMUTABLE: root's capabilities after exec are its bounding
/// set, so the gateway cannot set the flag (EPERM), as an unprivileged service.
const NO_CAP: [&str; 3] = [SETPRIV, "--bounding-set", "-linux_immutable"];

/// A folder on a file system where the immutable flag can be set: a 64 MiB ext4 image made
/// here and loop-mounted; where mounting is refused, a temporary folder whose file system
/// takes the flag (probed). Dropped (also on panic): every flag cleared, unmounted, removed.
struct LockableDir {
    tmp: Option<tempfile::TempDir>,
    mount: Option<PathBuf>,
    dir: PathBuf,
}

impl LockableDir {
    fn new() -> LockableDir {
        let tmp = tmp_dir("immutable");
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
                if !m.status.success() {
                    eprintln!(
                        "loop mount refused ({}); falling back to a folder on {}",
                        String::from_utf8_lossy(&m.stderr).trim(),
                        tmp.path().display()
                    );
                }
                m.status.success()
            }
            other => {
                eprintln!("mkfs.ext4 failed ({other:?}); falling back to a plain folder");
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
        assert_eq!(
            set_immutable(&probe).expect("probe the immutable flag"),
            LockOutcome::Locked,
            "cannot set the immutable flag in {} (neither a loop-mounted ext4 image nor this \
             folder allows it): run as root with CAP_LINUX_IMMUTABLE",
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
            let ok = wait_until(Duration::from_secs(10), || {
                Command::new("/usr/bin/umount")
                    .arg(m)
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok {
                eprintln!("could not unmount {}", m.display());
            }
        }
        drop(self.tmp.take());
    }
}

fn config(extra: &str) -> String {
    let mut c = Config::new()
        .peer(
            "lab",
            &["RG_SCU"],
            &["127.0.0.1/32"],
            &["echo", "store"],
            &["*"],
            &[],
        )
        .vault_route("VAULT")
        .toml();
    c.push_str(extra);
    c
}

fn objects(data: &Path) -> Vec<PathBuf> {
    files_under(&data.join("vault").join("objects"), ".dcm")
}

/// The first field of `lsattr FILE`: the attribute letters.
fn lsattr(path: &Path) -> String {
    let o = Command::new("/usr/bin/lsattr")
        .arg(path)
        .output()
        .expect("lsattr");
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn assert_eperm<T: std::fmt::Debug>(what: &str, path: &Path, r: std::io::Result<T>) {
    match r {
        Err(e) if e.raw_os_error() == Some(1) => {}
        other => panic!("{what} {}: expected EPERM, got {other:?}", path.display()),
    }
}

#[test]
fn stored_objects_cannot_be_deleted_rewritten_or_renamed_by_root() {
    let dir = LockableDir::new();
    let data = dir.path();
    let d = test_data();
    // No [vault] section: the default, "auto".
    let rg = Radguard::start(&config(""), data);
    assert!(
        rg.stdout_lines()
            .iter()
            .any(|l| l == "radguard: vault objects immutable (FS_IMMUTABLE_FL), for ever"),
        "{}",
        rg.log()
    );
    let files = d.mr_files();
    storescu(rg.port(), "RG_SCU", "VAULT", &files).assert_success("storescu -> vault");
    let stored = objects(data);
    assert_eq!(stored.len(), files.len(), "{}", rg.log());
    for obj in &stored {
        assert!(
            lsattr(obj).contains('i'),
            "lsattr {}: {}",
            obj.display(),
            lsattr(obj)
        );
        assert!(is_immutable(obj).unwrap());
        // As root, without chattr first.
        let rm = Command::new("/usr/bin/rm")
            .arg("-f")
            .arg(obj)
            .output()
            .unwrap();
        assert!(
            !rm.status.success() && obj.exists(),
            "rm removed {}",
            obj.display()
        );
        assert_eperm("unlink", obj, fs::remove_file(obj));
        assert_eperm(
            "open(O_WRONLY)",
            obj,
            OpenOptions::new().write(true).open(obj),
        );
        assert_eperm("rename", obj, fs::rename(obj, obj.with_extension("locked")));
    }
    // The sealed index log segments aside, the active one grows: it is not locked.
    assert!(!lsattr(&data.join("vault/index-log/current.log")).contains('i'));
    assert_eq!(rg.stop().code(), Some(0));
    assert_received(&files, data, false);

    // The index log's head, signed with the ledger's key at stop: it verifies with the
    // ledger's verifier key and matches the log; a line changed afterwards does not.
    let note = fs::read_to_string(data.join("vault/index-log/checkpoint")).expect("checkpoint");
    let key = radguard_ledger::note::VerifierKey::parse(
        &fs::read_to_string(data.join("ledger").join(radguard_ledger::VERIFIER_KEY_FILE))
            .expect("verifier key"),
    )
    .expect("parse key");
    // Its origin is not the key's name (it is not a ledger checkpoint): open the note, then
    // parse its text.
    let text = radguard_ledger::note::open_note(&note, &key).expect("signature");
    let cp = radguard_ledger::note::Checkpoint::parse(text).expect("checkpoint");
    assert!(cp.origin.ends_with("/vault-index-log"), "{}", cp.origin);
    assert_eq!(cp.size, files.len() as u64);
    let head = radguard_vault::IndexLogHead {
        count: cp.size,
        hash: hex::encode(cp.root),
    };
    let vault = radguard_vault::Vault::open(&data.join("vault")).expect("open");
    assert!(vault.index_log_matches(&head).unwrap());
    assert_eq!(vault.check().unwrap(), vec![]);
    drop(vault);
    let log = data.join("vault/index-log/current.log");
    let text = fs::read_to_string(&log).unwrap();
    fs::write(&log, text.replacen("RG_SCU", "RG_SCX", 1)).unwrap();
    let vault = radguard_vault::Vault::open(&data.join("vault")).expect("open");
    assert!(!vault.index_log_matches(&head).unwrap());
    assert!(!vault.check().unwrap().is_empty());
    drop(vault);

    // `radguard vault check` checks the signed head too: the edited log no longer leads to it.
    let vault_check = || {
        let mut cmd = Command::new(Radguard::exe());
        cmd.args(["vault", "check", "--json", "--data"]).arg(data);
        let out = run(&mut cmd, Duration::from_secs(60));
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
        let findings: Vec<String> = v["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .map(|p| p["finding"].as_str().unwrap_or_default().to_string())
            .collect();
        (out.code, findings)
    };
    let (code, findings) = vault_check();
    assert_eq!(code, Some(1), "{findings:?}");
    assert!(
        findings.iter().any(|f| f == "index-log-rewritten")
            && findings.iter().any(|f| f == "index-log-broken"),
        "{findings:?}"
    );
    // Restored, it leads there again; a forged signature is caught on its own.
    fs::write(&log, &text).unwrap();
    let (code, findings) = vault_check();
    assert_eq!((code, findings.clone()), (Some(0), vec![]), "{findings:?}");
    let cp_path = data.join("vault/index-log/checkpoint");
    let signed = fs::read_to_string(&cp_path).unwrap();
    let at = signed.trim_end().len() - 3;
    let mut forged = signed.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    fs::write(&cp_path, forged).unwrap();
    let (code, findings) = vault_check();
    assert_eq!(code, Some(1), "{findings:?}");
    assert_eq!(findings, ["index-log-checkpoint"]);
}

#[test]
fn required_without_the_capability_refuses_to_start() {
    let tmp = tmp_dir("immutable-required");
    let cfg = tmp.path().join("radguard.toml");
    fs::write(&cfg, config("\n[vault]\nimmutable = \"required\"\n")).unwrap();
    let data = tmp.path().join("data");
    let out = run(
        Command::new(SETPRIV)
            .args(&NO_CAP[1..])
            .arg(Radguard::exe())
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--data")
            .arg(&data),
        Duration::from_secs(60),
    );
    assert_eq!(out.code, Some(1), "{}", out.all());
    let text = out.all();
    assert!(
        text.contains("radguard: opening the vault in ")
            && text.contains(
                "[vault] immutable = \"required\" but the immutable flag cannot be set in "
            )
            && text.contains("radguard lacks CAP_LINUX_IMMUTABLE"),
        "{text}"
    );
    assert!(!text.contains("listening on"), "{text}");
    // Nothing was stored or left locked.
    assert!(objects(&data).is_empty());
}

#[test]
fn auto_without_the_capability_serves_and_says_so_once() {
    let dir = LockableDir::new();
    let data = dir.path();
    let d = test_data();
    let rg = Radguard::start_via(&NO_CAP, &config("\n[vault]\nimmutable = \"auto\"\n"), data);
    let files = d.mr_files();
    storescu(rg.port(), "RG_SCU", "VAULT", &files).assert_success("storescu -> vault");
    let stored = objects(data);
    assert_eq!(stored.len(), files.len(), "{}", rg.log());
    for obj in &stored {
        assert!(!is_immutable(obj).unwrap(), "{}", obj.display());
    }
    // Once, at start: the warning naming the fix and the alert event; nothing per image.
    let alerts = |rg: &Radguard| -> Vec<serde_json::Value> {
        rg.events()
            .into_iter()
            .filter(|e| e["event"] == "security-alert" && e["kind"] == "vault-not-immutable")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || !alerts(&rg).is_empty()),
        "no vault-not-immutable alert:\n{}",
        rg.log()
    );
    let log = rg.log();
    let warning = "radguard: WARNING: vault objects NOT immutable (not_permitted): radguard \
                   lacks CAP_LINUX_IMMUTABLE";
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert_eq!(alerts(&rg).len(), 1, "{log}");
    assert_eq!(rg.stop().code(), Some(0));
    assert_received(&files, data, false);
}
