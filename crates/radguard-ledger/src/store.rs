//! SQLite storage of the log: entries, complete subtree hashes, the signed tree head, and
//! checkpoints issued to auditors. WAL journal with `synchronous=FULL`: a committed append is
//! on disk before `commit` returns, and a crash (kill -9, power loss) leaves the database at
//! the last committed append. Triggers refuse `UPDATE` and `DELETE` on the log tables.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::entry::LedgerEntry;
use crate::merkle::{self, Hash, NodeSource, ProofError};
use crate::LedgerError;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx              INTEGER PRIMARY KEY NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    fingerprint      BLOB NOT NULL,
    data             BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_sop ON entries(sop_instance_uid, idx);
CREATE INDEX IF NOT EXISTS entries_fingerprint ON entries(fingerprint);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size       INTEGER PRIMARY KEY NOT NULL,
    note       TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS nodes_no_update BEFORE UPDATE ON nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS nodes_no_delete BEFORE DELETE ON nodes
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_update BEFORE UPDATE ON meta
    BEGIN SELECT RAISE(ABORT, 'ledger metadata is write-once'); END;
CREATE TRIGGER IF NOT EXISTS meta_no_delete BEFORE DELETE ON meta
    BEGIN SELECT RAISE(ABORT, 'ledger metadata is write-once'); END;
";

/// A connection to a ledger database.
pub struct Store {
    conn: Connection,
}

/// A stored entry with its position and leaf hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEntry {
    pub index: u64,
    pub entry: LedgerEntry,
    pub leaf_hash: Hash,
}

fn to_i64(v: u64) -> Result<i64, LedgerError> {
    i64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("index {v} out of range")))
}

impl Store {
    /// Opens (creating if needed) the database for writing.
    pub fn open(path: &Path) -> Result<Store, LedgerError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Corrupt(format!(
                "could not use WAL mode (got {mode})"
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
                return Err(LedgerError::Corrupt(format!(
                    "ledger schema version {other} is newer than this build ({SCHEMA_VERSION})"
                )))
            }
        }
        Ok(Store { conn })
    }

    /// Opens an existing database read-only (for `verify`, alongside a running gateway).
    pub fn open_read_only(path: &Path) -> Result<Store, LedgerError> {
        if !path.exists() {
            return Err(LedgerError::NotALedger(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            return Err(LedgerError::NotALedger(path.to_path_buf()));
        }
        Ok(Store { conn })
    }

    /// Runs `f` inside one read transaction, so that every query sees the same snapshot even
    /// while another process appends.
    pub fn snapshot<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.conn.execute_batch("BEGIN DEFERRED")?;
        let out = f(self);
        let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let closed = self.conn.execute_batch(end);
        let value = out?;
        closed?;
        Ok(value)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), LedgerError> {
        self.conn.execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    /// Number of entries; checks there are no gaps.
    pub fn size(&self) -> Result<u64, LedgerError> {
        let (count, next): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(MAX(idx) + 1, 0) FROM entries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if count != next {
            return Err(LedgerError::Corrupt(format!(
                "{count} entries but the highest index is {}",
                next - 1
            )));
        }
        u64::try_from(count).map_err(|_| LedgerError::Corrupt("negative size".into()))
    }

    fn decode_row(index: i64, data: Vec<u8>) -> Result<LoggedEntry, LedgerError> {
        let entry = LedgerEntry::decode(&data)?;
        Ok(LoggedEntry {
            index: u64::try_from(index)
                .map_err(|_| LedgerError::Corrupt("negative index".into()))?,
            leaf_hash: merkle::leaf_hash(&data),
            entry,
        })
    }

    /// Entries for a SOP Instance UID, oldest first.
    pub fn lookup(&self, sop_instance_uid: &str) -> Result<Vec<LoggedEntry>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, data FROM entries WHERE sop_instance_uid = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([sop_instance_uid], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (i, data) = row?;
            out.push(Store::decode_row(i, data)?);
        }
        Ok(out)
    }

    pub fn entry(&self, index: u64) -> Result<Option<LoggedEntry>, LedgerError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .prepare_cached("SELECT idx, data FROM entries WHERE idx = ?1")?
            .query_row([to_i64(index)?], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        row.map(|(i, d)| Store::decode_row(i, d)).transpose()
    }

    /// The signed head note, if any.
    pub fn head(&self) -> Result<Option<(u64, String)>, LedgerError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row("SELECT size, note FROM head WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        Ok(row.map(|(s, n)| (u64::try_from(s).unwrap_or(0), n)))
    }

    /// Checkpoints issued to auditors, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, note FROM checkpoints ORDER BY size")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (s, n) = row?;
            out.push((u64::try_from(s).unwrap_or(0), n));
        }
        Ok(out)
    }

    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, LedgerError> {
        Ok(self
            .conn
            .query_row(
                "SELECT note FROM checkpoints WHERE size = ?1",
                [to_i64(size)?],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn record_checkpoint(
        &self,
        size: u64,
        note: &str,
        created_ms: u64,
    ) -> Result<(), LedgerError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO checkpoints(size, note, created_ms) VALUES (?1, ?2, ?3)",
            params![to_i64(size)?, note, to_i64(created_ms)?],
        )?;
        Ok(())
    }

    /// Appends one entry with the nodes it completes and the new signed head, atomically and
    /// durably.
    pub fn append(
        &mut self,
        index: u64,
        entry: &LedgerEntry,
        data: &[u8],
        nodes: &[(u32, u64, Hash)],
        head_note: &str,
    ) -> Result<(), LedgerError> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO entries(idx, sop_instance_uid, fingerprint, data) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            to_i64(index)?,
            entry.sop_instance_uid,
            &entry.fingerprint.digest.0[..],
            data
        ])?;
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO nodes(level, idx, hash) VALUES (?1, ?2, ?3)")?;
            for (level, idx, hash) in nodes {
                ins.execute(params![i64::from(*level), to_i64(*idx)?, &hash[..]])?;
            }
        }
        tx.prepare_cached("INSERT OR REPLACE INTO head(id, size, note) VALUES (1, ?1, ?2)")?
            .execute(params![to_i64(index + 1)?, head_note])?;
        tx.commit()?;
        Ok(())
    }

    /// Writes the head for an empty log (first open).
    pub fn set_head(&self, size: u64, note: &str) -> Result<(), LedgerError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO head(id, size, note) VALUES (1, ?1, ?2)",
            params![to_i64(size)?, note],
        )?;
        Ok(())
    }

    /// Every entry in order (for full checks).
    pub fn for_each_entry(
        &self,
        mut f: impl FnMut(LoggedEntry) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT idx, data FROM entries ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(Store::decode_row(row.get(0)?, row.get(1)?)?)?;
        }
        Ok(())
    }
}

impl NodeSource for Store {
    type Error = LedgerError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        let hash: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT hash FROM nodes WHERE level = ?1 AND idx = ?2")?
            .query_row(params![i64::from(level), to_i64(index)?], |r| r.get(0))
            .optional()?;
        let hash = hash.ok_or(ProofError::MissingNode { level, index })?;
        hash.try_into()
            .map_err(|_| LedgerError::Corrupt(format!("node ({level}, {index}) is not 32 bytes")))
    }
}
