//! The SQLite index: one row per SOP Instance UID, write-once (triggers refuse UPDATE and
//! DELETE, so even a bug elsewhere in the process cannot rewrite history).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::layout::{is_sha256_hex, object_path};
use crate::{StoredInstance, VaultError};

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    transfer_syntax  TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    size             INTEGER NOT NULL,
    patient_id       TEXT,
    study_uid        TEXT,
    series_uid       TEXT,
    source_ae        TEXT,
    stored_at        TEXT NOT NULL,
    parse_warning    TEXT
);
CREATE INDEX IF NOT EXISTS instances_sha256 ON instances(sha256);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE INDEX IF NOT EXISTS instances_patient ON instances(patient_id);
CREATE TRIGGER IF NOT EXISTS instances_no_update BEFORE UPDATE ON instances
    BEGIN SELECT RAISE(ABORT, 'the vault index is write-once'); END;
CREATE TRIGGER IF NOT EXISTS instances_no_delete BEFORE DELETE ON instances
    BEGIN SELECT RAISE(ABORT, 'the vault index is write-once'); END;
";

const COLUMNS: &str = "sop_instance_uid, sop_class_uid, transfer_syntax, sha256, size, \
     patient_id, study_uid, series_uid, source_ae, stored_at, parse_warning";

/// Opens (creating if needed) the index with WAL journaling and `synchronous=FULL`.
pub(crate) fn open(path: &Path) -> Result<Connection, VaultError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(VaultError::CorruptIndex(format!(
            "could not switch the index to WAL mode (got {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    match version {
        0 => {
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => conn.execute_batch(SCHEMA)?,
        other => {
            return Err(VaultError::CorruptIndex(format!(
                "index schema version {other} is newer than this build ({SCHEMA_VERSION})"
            )))
        }
    }
    Ok(conn)
}

/// Opens an existing index read-only (no schema change, no journal-mode switch): for readers
/// beside a running gateway (`radguard vault check|verify|replay|export`).
pub(crate) fn open_read_only(path: &Path) -> Result<Connection, VaultError> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version != SCHEMA_VERSION {
        return Err(VaultError::CorruptIndex(format!(
            "index schema version {version}, this build reads {SCHEMA_VERSION}"
        )));
    }
    Ok(conn)
}

/// A row as stored (the object path is derived, not stored). Also the row of an index log
/// line (JSON, these field names).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub sha256: String,
    pub size: u64,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub source_ae: Option<String>,
    pub stored_at: String,
    pub parse_warning: Option<String>,
}

impl Record {
    pub(crate) fn into_stored(self, objects_dir: &Path) -> StoredInstance {
        StoredInstance {
            path: object_path(objects_dir, &self.sha256),
            sop_instance_uid: self.sop_instance_uid,
            sop_class_uid: self.sop_class_uid,
            transfer_syntax: self.transfer_syntax,
            sha256: self.sha256,
            size: self.size,
            patient_id: self.patient_id,
            study_uid: self.study_uid,
            series_uid: self.series_uid,
            source_ae: self.source_ae,
            stored_at: self.stored_at,
            parse_warning: self.parse_warning,
        }
    }
}

/// Reads a row, refusing values the vault never writes (a bad hash would become a bad path).
fn record(row: &Row<'_>) -> rusqlite::Result<Result<Record, VaultError>> {
    let sha256: String = row.get(3)?;
    let size: i64 = row.get(4)?;
    let sop_instance_uid: String = row.get(0)?;
    if !is_sha256_hex(&sha256) {
        return Ok(Err(VaultError::CorruptIndex(format!(
            "row {sop_instance_uid:?} has an invalid sha256 {sha256:?}"
        ))));
    }
    let Ok(size) = u64::try_from(size) else {
        return Ok(Err(VaultError::CorruptIndex(format!(
            "row {sop_instance_uid:?} has a negative size"
        ))));
    };
    Ok(Ok(Record {
        sop_instance_uid,
        sop_class_uid: row.get(1)?,
        transfer_syntax: row.get(2)?,
        sha256,
        size,
        patient_id: row.get(5)?,
        study_uid: row.get(6)?,
        series_uid: row.get(7)?,
        source_ae: row.get(8)?,
        stored_at: row.get(9)?,
        parse_warning: row.get(10)?,
    }))
}

pub(crate) fn get(conn: &Connection, sop_instance_uid: &str) -> Result<Option<Record>, VaultError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM instances WHERE sop_instance_uid = ?1"
    ))?;
    stmt.query_row([sop_instance_uid], record)
        .optional()?
        .transpose()
}

pub(crate) fn all(conn: &Connection) -> Result<Vec<Record>, VaultError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM instances ORDER BY rowid"))?;
    let rows = stmt.query_map([], record)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

/// Up to `limit` rows after `rowid`, in rowid (commit) order, with their rowids: the scrub's
/// stable walk, resumable from a rowid.
pub(crate) fn page_after(
    conn: &Connection,
    rowid: i64,
    limit: u32,
) -> Result<Vec<(i64, Record)>, VaultError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, rowid FROM instances WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![rowid, limit], |row| {
        let id: i64 = row.get(11)?;
        Ok(record(row)?.map(|r| (id, r)))
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

pub(crate) fn count(conn: &Connection) -> Result<u64, VaultError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM instances", [], |r| r.get(0))?;
    u64::try_from(n).map_err(|_| VaultError::CorruptIndex("negative row count".into()))
}

pub(crate) fn has_sha(conn: &Connection, sha256: &str) -> Result<bool, VaultError> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM instances WHERE sha256 = ?1 LIMIT 1")?;
    Ok(stmt.exists([sha256])?)
}

pub(crate) fn insert(conn: &Connection, r: &Record) -> Result<(), VaultError> {
    let size = i64::try_from(r.size)
        .map_err(|_| VaultError::CorruptIndex(format!("size {} too large", r.size)))?;
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO instances ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?;
    stmt.execute(params![
        r.sop_instance_uid,
        r.sop_class_uid,
        r.transfer_syntax,
        r.sha256,
        size,
        r.patient_id,
        r.study_uid,
        r.series_uid,
        r.source_ae,
        r.stored_at,
        r.parse_warning,
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(uid: &str) -> Record {
        Record {
            sop_instance_uid: uid.into(),
            sop_class_uid: "1.2".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            sha256: "ab".repeat(32),
            size: 10,
            patient_id: Some("P".into()),
            study_uid: None,
            series_uid: None,
            source_ae: Some("CT01".into()),
            stored_at: "1970-01-01T00:00:00.000Z".into(),
            parse_warning: None,
        }
    }

    #[test]
    fn write_once_and_pk_arbiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("i.sqlite")).expect("open");
        insert(&conn, &rec("1.2.3")).expect("insert");
        assert!(
            insert(&conn, &rec("1.2.3")).is_err(),
            "primary key must refuse"
        );
        assert!(conn
            .execute("UPDATE instances SET sha256 = 'x'", [])
            .is_err());
        assert!(conn.execute("DELETE FROM instances", []).is_err());
        assert_eq!(count(&conn).expect("count"), 1);
        assert!(has_sha(&conn, &"ab".repeat(32)).expect("has"));
        let r = get(&conn, "1.2.3").expect("get").expect("row");
        assert_eq!(r.source_ae.as_deref(), Some("CT01"));
        assert!(get(&conn, "9").expect("get").is_none());
    }

    #[test]
    fn reopen_keeps_schema_and_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.sqlite");
        drop(open(&path).expect("open"));
        let conn = open(&path).expect("reopen");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("sync");
        assert_eq!(sync, 2, "FULL");
    }

    #[test]
    fn tampered_hash_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open(&dir.path().join("i.sqlite")).expect("open");
        let mut r = rec("1.2.3");
        r.sha256 = "../../etc/passwd".into();
        insert(&conn, &r).expect("insert");
        assert!(matches!(
            get(&conn, "1.2.3"),
            Err(VaultError::CorruptIndex(_))
        ));
    }
}
