//! The ledger on disk: keys, appends, conflicts, checkpoints and proofs, durability across
//! kill -9 and torn writes, tamper detection.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use radguard_ledger::fingerprint::{AttributeDigest, Digest, Fingerprint, PixelDigest};
use radguard_ledger::merkle::{self, verify_consistency, verify_inclusion};
use radguard_ledger::note::{Checkpoint, VerifierKey};
use radguard_ledger::{
    Ledger, LedgerEntry, LedgerError, LedgerView, OnConflict, Timestamp, DB_FILE, SIGNING_KEY_FILE,
    VERIFIER_KEY_FILE,
};

const ORIGIN: &str = "radguard.test/ledger/gw1";

fn fingerprint(n: u64, variant: u8) -> Fingerprint {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(&n.to_be_bytes());
    let attributes = Digest(a);
    let pixels = PixelDigest::Samples {
        digest: Digest([variant; 32]),
    };
    Fingerprint {
        digest: Fingerprint::compose(&attributes, &pixels),
        attributes,
        pixels,
        attribute_digests: vec![AttributeDigest {
            tag: 0x0010_0020,
            digest: [variant; 8],
        }],
    }
}

fn entry(n: u64, variant: u8) -> LedgerEntry {
    LedgerEntry {
        fingerprint: fingerprint(n, variant),
        sop_instance_uid: format!("1.2.826.0.1.3680043.10.1137.9.{n}"),
        time: Timestamp(1_715_940_000_000 + n),
        gateway_id: "gw1".into(),
        assoc_id: format!("assoc-{}", n / 10),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn first_open_creates_a_private_key_and_exports_the_public_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ld = dir.path().join("ledger");
    let ledger = Ledger::open(&ld, ORIGIN).expect("open");
    assert_eq!(mode(&ld.join(SIGNING_KEY_FILE)), 0o600);
    assert_eq!(mode(&ld), 0o700);
    let vkey_text = std::fs::read_to_string(ld.join(VERIFIER_KEY_FILE)).expect("vkey");
    let vkey = VerifierKey::parse(&vkey_text).expect("parses");
    assert_eq!(&vkey, ledger.verifier_key());
    assert!(vkey_text.starts_with(&format!("{ORIGIN}+")));
    // The empty log has a signed head too.
    let cp = ledger.checkpoint().expect("checkpoint");
    assert_eq!(cp.checkpoint.size, 0);
    assert_eq!(cp.checkpoint.root, merkle::empty_root());
    assert_eq!(
        Checkpoint::open(&cp.note, &vkey).expect("valid"),
        cp.checkpoint
    );
    drop(ledger);

    // Reopening keeps the key; another origin is refused; a readable key is refused.
    let again = Ledger::open(&ld, ORIGIN).expect("reopen");
    assert_eq!(again.verifier_key(), &vkey);
    drop(again);
    assert!(matches!(
        Ledger::open(&ld, "other.origin"),
        Err(LedgerError::OriginMismatch { .. })
    ));
    assert!(matches!(
        Ledger::open(&ld, "bad origin"),
        Err(LedgerError::InvalidOrigin(_))
    ));
    std::fs::set_permissions(
        ld.join(SIGNING_KEY_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    assert!(matches!(
        Ledger::open(&ld, ORIGIN),
        Err(LedgerError::KeyPermissions { .. })
    ));
}

#[test]
fn appends_duplicates_and_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path(), ORIGIN).expect("open");
    for n in 0..5 {
        let out = ledger.append(entry(n, 1)).expect("append");
        assert_eq!((out.index, out.appended, out.conflict), (n, true, None));
    }
    // The same instance again: nothing new.
    let out = ledger.append(entry(2, 1)).expect("append");
    assert_eq!((out.index, out.appended, out.conflict), (2, false, None));
    // Same UID, other content: a conflict, nothing appended.
    let out = ledger.append(entry(2, 9)).expect("append");
    assert_eq!(out.index, 2);
    assert!(!out.appended);
    assert_eq!(out.conflict, Some(fingerprint(2, 1)));
    assert_eq!(ledger.size(), 5);
    // The pre-check agrees with append.
    assert_eq!(
        ledger
            .conflict(&entry(2, 9).sop_instance_uid, &fingerprint(2, 9))
            .expect("check"),
        Some(fingerprint(2, 1))
    );
    assert_eq!(
        ledger
            .conflict(&entry(2, 1).sop_instance_uid, &fingerprint(2, 1))
            .expect("check"),
        None
    );
    assert_eq!(
        ledger
            .conflict("1.2.3.999", &fingerprint(2, 1))
            .expect("check"),
        None
    );
    // Recorded on request: appended, still reported as a conflict.
    let out = ledger
        .append_with(entry(2, 9), OnConflict::Record)
        .expect("append");
    assert_eq!((out.index, out.appended), (5, true));
    assert_eq!(out.conflict, Some(fingerprint(2, 1)));
    let logged = ledger
        .lookup(&entry(2, 1).sop_instance_uid)
        .expect("lookup");
    assert_eq!(logged.len(), 2);
    assert_eq!(logged[0].entry, entry(2, 1));
    assert_eq!(logged[1].entry, entry(2, 9));
    assert_eq!(
        ledger.entry(3).expect("entry").map(|e| e.entry),
        Some(entry(3, 1))
    );
    assert!(ledger.entry(99).expect("entry").is_none());
    assert!(ledger.lookup("1.2.3").expect("lookup").is_empty());
    // Invalid entries never reach the log.
    let mut bad = entry(7, 1);
    bad.sop_instance_uid = "../../etc/passwd".into();
    assert!(ledger.append(bad).is_err());
    assert_eq!(ledger.size(), 6);
    ledger.check_all().expect("consistent");
}

#[test]
fn proofs_verify_against_signed_checkpoints_with_the_public_key_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path(), ORIGIN).expect("open");
    let vkey = VerifierKey::parse(&ledger.verifier_key().to_string()).expect("key");
    let mut checkpoints = Vec::new();
    for n in 0..37 {
        ledger.append(entry(n, 1)).expect("append");
        if [1, 2, 7, 8, 16, 30, 37].contains(&(n + 1)) {
            checkpoints.push(ledger.checkpoint().expect("checkpoint"));
        }
    }
    let last = checkpoints.last().expect("some").clone();
    let head = Checkpoint::open(&last.note, &vkey).expect("signed");
    assert_eq!(head.size, 37);
    for n in 0..37 {
        let e = ledger.entry(n).expect("read").expect("present");
        let proof = ledger.inclusion_proof(n, head.size).expect("proof");
        verify_inclusion(&e.leaf_hash, n, head.size, &proof, &head.root).expect("included");
        // A tampered proof, entry or index is rejected.
        if let Some(first) = proof.first() {
            let mut bad = proof.clone();
            bad[0] = merkle::node_hash(first, first);
            assert!(verify_inclusion(&e.leaf_hash, n, head.size, &bad, &head.root).is_err());
        }
        let mut other = e.entry.clone();
        other.assoc_id.push('x');
        let forged = merkle::leaf_hash(&other.encode().expect("encode"));
        assert!(verify_inclusion(&forged, n, head.size, &proof, &head.root).is_err());
    }
    for old in &checkpoints {
        let old_cp = Checkpoint::open(&old.note, &vkey).expect("signed");
        let proof = ledger
            .consistency_proof(old_cp.size, head.size)
            .expect("proof");
        verify_consistency(old_cp.size, head.size, &proof, &old_cp.root, &head.root)
            .expect("consistent");
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let last = bad.len() - 1;
            bad[last][3] ^= 0x10;
            assert!(
                verify_consistency(old_cp.size, head.size, &bad, &old_cp.root, &head.root).is_err()
            );
        }
    }
    // The read-only view sees the same head and proves the same entries.
    let view = LedgerView::open(dir.path(), Some(vkey.clone())).expect("view");
    assert_eq!(view.head().checkpoint, head);
    let e = view
        .lookup(&entry(11, 1).sop_instance_uid)
        .expect("lookup")
        .remove(0);
    view.prove_included(&e).expect("included");
    // A view pinned to another key refuses the ledger.
    let stranger = radguard_ledger::note::SignerKey::from_seed(ORIGIN, [3; 32]).expect("key");
    assert!(LedgerView::open(dir.path(), Some(stranger.verifier())).is_err());
}

#[test]
fn concurrent_appends_from_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = std::sync::Arc::new(Ledger::open(dir.path(), ORIGIN).expect("open"));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    l.append(entry(t * 1000 + i, 1)).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert_eq!(ledger.size(), 100);
    ledger.check_all().expect("consistent");
    let root = ledger.root();
    drop(ledger);
    assert_eq!(
        Ledger::open(dir.path(), ORIGIN).expect("reopen").root(),
        root
    );
}

/// Run by the kill -9 tests in a child process: appends (forever, or `STOP_AFTER` entries and
/// then waits), printing `<size> <root hex>` after each append returns.
#[test]
#[ignore = "helper process for the kill -9 tests, which run it"]
fn kill9_child() {
    let Some(dir) = std::env::var_os("RADGUARD_LEDGER_KILL9_DIR") else {
        return;
    };
    let stop: Option<u64> = std::env::var("RADGUARD_LEDGER_STOP_AFTER")
        .ok()
        .and_then(|s| s.parse().ok());
    let ledger = Ledger::open(Path::new(&dir), ORIGIN).expect("open");
    let mut n = ledger.size();
    loop {
        if stop.is_some_and(|s| n >= s) {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        ledger.append(entry(n, 1)).expect("append");
        n += 1;
        println!("{} {}", ledger.size(), hex::encode(ledger.root()));
    }
}

/// Runs the child on `dir`, reads `want` acknowledged appends, then kill -9s it.
fn run_and_kill(dir: &Path, stop_after: Option<u64>, want: usize) -> Vec<(u64, [u8; 32])> {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "kill9_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RADGUARD_LEDGER_KILL9_DIR", dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(n) = stop_after {
        cmd.env("RADGUARD_LEDGER_STOP_AFTER", n.to_string());
    }
    let mut child = cmd.spawn().expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    // Lines are read on a thread so that a stuck child cannot hang the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness may print "test kill9_child ... " in front of the first line.
            let mut parts = line.split_whitespace().rev();
            if let (Some(root), Some(size)) = (parts.next(), parts.next()) {
                if let (Ok(size), Ok(root)) = (size.parse::<u64>(), hex::decode(root)) {
                    if let Ok(root) = <[u8; 32]>::try_from(root) {
                        if tx.send((size, root)).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut acknowledged = Vec::new();
    while acknowledged.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => acknowledged.push(v),
            Err(_) => break,
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_eq!(
        acknowledged.len(),
        want,
        "the child acknowledged its appends"
    );
    acknowledged
}

#[test]
fn survives_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acknowledged = run_and_kill(dir.path(), None, 60);
    let (size, _) = *acknowledged.last().expect("some");
    let ledger = Ledger::open(dir.path(), ORIGIN).expect("reopen after kill -9");
    assert!(ledger.size() >= size, "acknowledged appends are durable");
    ledger.check_all().expect("consistent");
    let now = ledger.checkpoint().expect("checkpoint").checkpoint;
    // Every acknowledged tree head is a prefix of the recovered log.
    for (s, r) in &acknowledged {
        let proof = ledger.consistency_proof(*s, now.size).expect("proof");
        verify_consistency(*s, now.size, &proof, r, &now.root).expect("prefix");
    }
    // And the log goes on.
    let next = ledger.size();
    assert!(ledger.append(entry(next, 1)).expect("append").appended);
}

/// Copies a ledger directory as a crash left it (database, WAL, keys; not the shared-memory
/// index, which SQLite rebuilds).
fn copy_ledger(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in [
        DB_FILE.to_string(),
        format!("{DB_FILE}-wal"),
        SIGNING_KEY_FILE.into(),
        VERIFIER_KEY_FILE.into(),
    ] {
        let src = from.join(&name);
        if src.exists() {
            std::fs::copy(&src, to.join(&name)).expect("copy");
        }
    }
    std::fs::set_permissions(
        to.join(SIGNING_KEY_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
}

/// A crash in the middle of writing (torn WAL tail): the log comes back at the last complete
/// append, with that append's root, and goes on.
#[test]
fn torn_tail_rolls_back_to_the_last_complete_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crashed = dir.path().join("crashed");
    let acknowledged = run_and_kill(&crashed, Some(12), 12);
    let wal_name = format!("{DB_FILE}-wal");
    let wal_len = std::fs::metadata(crashed.join(&wal_name))
        .expect("the crash left a WAL")
        .len();
    assert!(wal_len > 0);

    // 1. Garbage after the last commit (a write that never completed) is ignored.
    let a = dir.path().join("garbage");
    copy_ledger(&crashed, &a);
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(a.join(&wal_name))
            .expect("open wal");
        f.write_all(&[0xA5; 3000]).expect("write");
    }
    let l = Ledger::open(&a, ORIGIN).expect("reopen");
    assert_eq!(l.size(), 12);
    assert_eq!(l.root(), acknowledged[11].1);

    // 2. The last commit cut short: the log is back at 11 entries with the root it had then.
    let b = dir.path().join("torn");
    copy_ledger(&crashed, &b);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(b.join(&wal_name))
        .expect("open wal");
    f.set_len(wal_len - 100).expect("truncate");
    drop(f);
    let l = Ledger::open(&b, ORIGIN).expect("reopen");
    assert_eq!(l.size(), 11);
    assert_eq!(l.root(), acknowledged[10].1);
    l.check_all().expect("consistent");
    assert!(l.append(entry(11, 1)).expect("append").appended);
    assert_eq!(
        l.root(),
        acknowledged[11].1,
        "the same append gives the same root"
    );
}
#[test]
fn edited_entries_are_detected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(dir.path(), ORIGIN).expect("open");
    for n in 0..9 {
        ledger.append(entry(n, 1)).expect("append");
    }
    drop(ledger);
    // Someone with write access drops the trigger and swaps entry 4 for another fingerprint.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).expect("sqlite");
    let forged = entry(4, 7).encode().expect("encode");
    assert!(
        conn.execute("UPDATE entries SET data = ?1 WHERE idx = 4", [&forged])
            .is_err(),
        "the trigger refuses edits"
    );
    conn.execute_batch("DROP TRIGGER entries_no_update")
        .expect("drop trigger");
    conn.execute("UPDATE entries SET data = ?1 WHERE idx = 4", [&forged])
        .expect("edit");
    drop(conn);
    let view = LedgerView::open(dir.path(), None).expect("head still checks (nodes untouched)");
    let e = view.entry(4).expect("read").expect("present");
    assert!(
        view.prove_included(&e).is_err(),
        "the edited leaf is not in the signed tree"
    );
    assert!(view.check_all().is_err());
    let other = view.entry(5).expect("read").expect("present");
    view.prove_included(&other)
        .expect("untouched entries still prove");
}
