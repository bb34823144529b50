//! The index log: a hash-chained, append-only copy of the index rows. Edits to the database
//! behind the vault's back (rows inserted, deleted, rewritten) and edits to the log itself are
//! reported by `check`; a crash's torn or missing last line is repaired on open.

use std::fs;
use std::path::{Path, PathBuf};

use radguard_dicom::types::uids;
use radguard_dicom::Uid;
use radguard_vault::{Problem, StoreOutcome, Vault};

const SC_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.7";

fn store(vault: &Vault, sop_instance: &str, payload: &[u8]) {
    let mut p = vault
        .begin(
            &Uid::new(SC_IMAGE).unwrap(),
            &Uid::new(sop_instance).unwrap(),
            &Uid::new(uids::EXPLICIT_VR_LE).unwrap(),
            "CT01",
        )
        .expect("begin");
    p.write_chunk(payload).expect("write");
    assert!(matches!(
        p.commit().expect("commit"),
        StoreOutcome::Stored(_)
    ));
}

/// A vault with three instances, closed; returns its folder.
fn three(dir: &Path) -> PathBuf {
    let root = dir.join("vault");
    let vault = Vault::open(&root).expect("open");
    for i in 1..=3 {
        store(
            &vault,
            &format!("1.2.3.{i}"),
            format!("payload {i}").as_bytes(),
        );
    }
    let head = vault.index_log_head().unwrap();
    assert_eq!(head.count, 3);
    assert_eq!(head.hash.len(), 64);
    assert_eq!(vault.check().expect("check"), vec![]);
    root
}

fn log_path(root: &Path) -> PathBuf {
    root.join("index-log").join("current.log")
}

/// The index database with its write-once triggers dropped, as an intruder would.
fn db_without_triggers(root: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(root.join("index.sqlite")).expect("db");
    c.execute_batch("DROP TRIGGER instances_no_update; DROP TRIGGER instances_no_delete;")
        .expect("drop triggers");
    c
}

fn check(root: &Path) -> Vec<Problem> {
    Vault::open(root).expect("open").check().expect("check")
}

#[test]
fn a_log_line_edited_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    let text = fs::read_to_string(log_path(&root)).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("2 "), "{}", lines[1]);
    lines[1] = lines[1].replace("CT01", "XX01");
    fs::write(log_path(&root), lines.join("\n") + "\n").unwrap();
    let problems = check(&root);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::IndexLogBroken { line: 3, .. })),
        "{problems:?}"
    );
    assert!(
        problems.contains(&Problem::RowDiffersFromLog {
            sop_instance_uid: "1.2.3.2".into()
        }),
        "{problems:?}"
    );
}

#[test]
fn a_log_line_removed_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    let text = fs::read_to_string(log_path(&root)).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 0)
        .map(|(_, l)| l)
        .collect();
    fs::write(log_path(&root), kept.join("\n") + "\n").unwrap();
    let problems = check(&root);
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::IndexLogBroken { line: 1, .. })),
        "{problems:?}"
    );
    assert!(
        problems.contains(&Problem::RowNotLogged {
            sop_instance_uid: "1.2.3.1".into()
        }),
        "{problems:?}"
    );
}

#[test]
fn rows_inserted_deleted_or_rewritten_in_the_database_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    // Edited while the gateway runs.
    let vault = Vault::open(&root).expect("open");
    {
        let db = db_without_triggers(&root);
        db.execute(
            "INSERT INTO instances SELECT '1.2.3.99', sop_class_uid, transfer_syntax, sha256, \
             size, patient_id, study_uid, series_uid, source_ae, stored_at, parse_warning \
             FROM instances WHERE sop_instance_uid = '1.2.3.3'",
            [],
        )
        .unwrap();
        db.execute(
            "DELETE FROM instances WHERE sop_instance_uid = '1.2.3.1'",
            [],
        )
        .unwrap();
        db.execute(
            "UPDATE instances SET source_ae = 'EVIL' WHERE sop_instance_uid = '1.2.3.2'",
            [],
        )
        .unwrap();
    }
    let problems = vault.check().expect("check");
    for want in [
        Problem::RowNotLogged {
            sop_instance_uid: "1.2.3.99".into(),
        },
        Problem::LoggedRowMissing {
            sop_instance_uid: "1.2.3.1".into(),
        },
        Problem::RowDiffersFromLog {
            sop_instance_uid: "1.2.3.2".into(),
        },
    ] {
        assert!(problems.contains(&want), "{want:?} not in {problems:?}");
    }
    assert!(
        !problems
            .iter()
            .any(|p| matches!(p, Problem::IndexLogBroken { .. })),
        "{problems:?}"
    );
    drop(vault);
    // Reopened: the deleted row is restored from its log line (its object is an orphan);
    // the inserted and the rewritten rows are still reported.
    let vault = Vault::open(&root).expect("reopen");
    let problems = vault.check().expect("check");
    assert_eq!(
        problems,
        vec![
            Problem::RowDiffersFromLog {
                sop_instance_uid: "1.2.3.2".into()
            },
            Problem::RowNotLogged {
                sop_instance_uid: "1.2.3.99".into()
            },
        ]
    );
    assert_eq!(
        vault
            .lookup(&Uid::new("1.2.3.1").unwrap())
            .unwrap()
            .expect("restored")
            .source_ae
            .as_deref(),
        Some("CT01")
    );
}

#[test]
fn a_crash_leaves_a_torn_or_missing_last_line_that_open_repairs() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    let full = fs::read_to_string(log_path(&root)).unwrap();
    // Torn: half a line after the last one.
    fs::write(log_path(&root), format!("{full}4 0000")).unwrap();
    assert_eq!(check(&root), vec![]);
    assert_eq!(fs::read_to_string(log_path(&root)).unwrap(), full);
    // A line written but its row not committed (crash in between): the object is an orphan,
    // re-indexed with the logged row (its source AE and time kept), not logged again.
    let vault = Vault::open(&root).expect("open");
    let obj = vault
        .lookup(&Uid::new("1.2.3.3").unwrap())
        .unwrap()
        .unwrap();
    drop(vault);
    let db = db_without_triggers(&root);
    db.execute(
        "DELETE FROM instances WHERE sop_instance_uid = '1.2.3.3'",
        [],
    )
    .unwrap();
    drop(db);
    let vault = Vault::open(&root).expect("open");
    assert_eq!(vault.check().expect("check"), vec![]);
    assert_eq!(vault.index_log_head().unwrap().count, 3);
    assert_eq!(fs::read_to_string(log_path(&root)).unwrap(), full);
    let again = vault
        .lookup(&Uid::new("1.2.3.3").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(again, obj);
}

#[test]
fn a_vault_from_before_the_log_gets_every_row_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    let full = fs::read_to_string(log_path(&root)).unwrap();
    fs::remove_dir_all(root.join("index-log")).unwrap();
    let vault = Vault::open(&root).expect("open");
    assert_eq!(vault.check().expect("check"), vec![]);
    assert_eq!(vault.index_log_head().unwrap().count, 3);
    assert_eq!(fs::read_to_string(log_path(&root)).unwrap(), full);
    drop(vault);
    // Reopening writes nothing more.
    let vault = Vault::open(&root).expect("reopen");
    assert_eq!(vault.index_log_head().unwrap().count, 3);
}

#[test]
fn an_earlier_head_keeps_matching_while_the_log_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    let root = three(dir.path());
    let vault = Vault::open(&root).expect("open");
    let head = vault.index_log_head().unwrap();
    store(&vault, "1.2.3.4", b"payload 4");
    assert!(vault.index_log_matches(&head).unwrap());
    assert!(vault
        .index_log_matches(&vault.index_log_head().unwrap())
        .unwrap());
    // A head the log never had.
    let mut forged = head.clone();
    forged.hash = "ab".repeat(32);
    assert!(!vault.index_log_matches(&forged).unwrap());
    // The checkpoint file round-trips.
    assert_eq!(vault.index_log_checkpoint().unwrap(), None);
    vault.write_index_log_checkpoint("note\n").unwrap();
    assert_eq!(
        vault.index_log_checkpoint().unwrap().as_deref(),
        Some("note\n")
    );
    drop(vault);
    // Lines rewritten: the earlier head no longer matches.
    let text = fs::read_to_string(log_path(&root)).unwrap();
    fs::write(
        log_path(&root),
        text.replace("payload", "PAYLOAD")
            .replacen("CT01", "XX01", 2),
    )
    .unwrap();
    let vault = Vault::open(&root).expect("open");
    assert!(!vault.index_log_matches(&head).unwrap());
}
