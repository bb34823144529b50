//! The embedded store: one SQLite file, WAL, `synchronous=FULL` (a commit is on disk before the
//! writer moves on).
//!
//! SQLite keeps writing through its open file handles when the file is renamed, replaced or
//! deleted: the records would go to a file nobody will open again. Every write therefore first
//! checks that the path still names the file that was opened, and fails otherwise (the writer
//! then reports the store unhealthy and the gateway refuses new associations).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::sql::{self, to_i64, to_u64, Param};
use super::{AuditStore, Filter, FoundRow};
use crate::chain::{ChainHead, IndexColumns, SealedRecord, StoredRow};
use crate::checkpoint::Checkpoint;
use crate::error::{AuditError, Result};

/// A SQLite audit store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// (device, inode) of the file when it was opened.
    file_id: Option<(u64, u64)>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

pub(crate) fn hash_from_hex(s: &str) -> Result<[u8; 32]> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| AuditError::Store(format!("malformed hash {s:?}")))
}

pub(crate) fn sig_from_hex(s: &str) -> Result<[u8; 64]> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| AuditError::Store(format!("malformed signature {s:?}")))
}

/// (device, inode) of the file at `path`, if there is one.
#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|_| (0, 0))
}

impl SqliteStore {
    /// Fails if the path no longer names the file opened (moved, replaced or deleted): writes
    /// would land in a file nobody reads.
    fn check_in_place(&self) -> Result<()> {
        if file_id(&self.path) == self.file_id {
            Ok(())
        } else {
            Err(AuditError::Store(format!(
                "{}: the store file was moved, replaced or deleted while open",
                self.path.display()
            )))
        }
    }

    /// Opens (creating if needed) the store at `path`; creates its folder too.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(AuditError::Store(format!(
                "{}: could not switch to WAL (journal_mode={mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        for stmt in sql::SCHEMA {
            conn.execute(stmt, [])?;
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            file_id: file_id(path),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn to_value(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

impl AuditStore for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn head(&mut self, node: &str) -> Result<Option<ChainHead>> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT seq, hash FROM audit_head WHERE node = ?1",
                [node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(seq, h)| {
            Ok(ChainHead {
                seq: to_u64(seq),
                hash: hash_from_hex(&h)?,
            })
        })
        .transpose()
    }

    fn append(
        &mut self,
        node: &str,
        expected: &ChainHead,
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()> {
        self.check_in_place()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Statements prepared once per connection: an append is one of many small batches.
        let current: Option<(i64, String)> = tx
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE node = ?1")?
            .query_row([node], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let stored = match current {
            Some((s, h)) => ChainHead {
                seq: to_u64(s),
                hash: hash_from_hex(&h)?,
            },
            None => ChainHead::GENESIS,
        };
        let records = super::still_to_write(node, expected, &stored, records, |seq| {
            let h: Option<String> = tx
                .query_row(
                    "SELECT hash FROM audit_record WHERE node = ?1 AND seq = ?2",
                    params![node, to_i64(seq)],
                    |r| r.get(0),
                )
                .optional()?;
            h.as_deref().map(hash_from_hex).transpose()
        })?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO audit_record (node, seq, time_ms, kind, assoc, peer_ip, calling_ae, \
                 peer_name, entry, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut pat = tx.prepare_cached(
                "INSERT OR IGNORE INTO audit_patient (node, seq, patient_id) VALUES (?1, ?2, ?3)",
            )?;
            for r in records {
                let seq = to_i64(r.record.seq);
                ins.execute(params![
                    node,
                    seq,
                    r.index.time_ms,
                    r.index.kind,
                    r.index.assoc,
                    r.index.peer_ip,
                    r.index.calling_ae,
                    r.index.peer_name,
                    r.entry,
                    hex::encode(r.hash),
                ])?;
                for p in &r.index.patients {
                    pat.execute(params![node, seq, p])?;
                }
            }
        }
        if let Some(last) = records.last() {
            tx.prepare_cached(
                "INSERT INTO audit_head (node, seq, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )?
            .execute(params![
                node,
                to_i64(last.record.seq),
                hex::encode(last.hash)
            ])?;
        }
        if let Some(cp) = checkpoint {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO audit_checkpoint (node, seq, time_ms, hash, key_id, signature) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                    cp.node,
                    to_i64(cp.seq),
                    cp.time_ms,
                    hex::encode(cp.hash),
                    cp.key_id,
                    hex::encode(cp.signature)
                ])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn read_after(&mut self, node: &str, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, time_ms, kind, assoc, peer_ip, calling_ae, peer_name, entry, hash \
             FROM audit_record WHERE node = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let mut rows: Vec<StoredRow> = stmt
            .query_map(
                params![node, to_i64(after_seq), to_i64(limit as u64)],
                |r| {
                    Ok(StoredRow {
                        node: node.to_string(),
                        seq: to_u64(r.get(0)?),
                        entry: r.get(7)?,
                        hash: r.get(8)?,
                        index: IndexColumns {
                            time_ms: r.get(1)?,
                            kind: r.get(2)?,
                            assoc: r.get(3)?,
                            peer_ip: r.get(4)?,
                            calling_ae: r.get(5)?,
                            peer_name: r.get(6)?,
                            patients: Vec::new(),
                        },
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
            let (lo, hi) = (to_i64(first.seq), to_i64(last.seq));
            let mut ps = self.conn.prepare_cached(
                "SELECT seq, patient_id FROM audit_patient WHERE node = ?1 AND seq >= ?2 \
                 AND seq <= ?3 ORDER BY seq, patient_id",
            )?;
            let pats: Vec<(i64, String)> = ps
                .query_map(params![node, lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            attach_patients(&mut rows, pats);
        }
        Ok(rows)
    }

    fn search(&mut self, filter: &Filter) -> Result<Vec<FoundRow>> {
        let (sql, params) = sql::search_sql(filter, |n| format!("?{n}"));
        let values: Vec<rusqlite::types::Value> = params.iter().map(to_value).collect();
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values), |r| {
                Ok(FoundRow {
                    node: r.get(0)?,
                    seq: to_u64(r.get(1)?),
                    entry: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn admitted_associations(
        &mut self,
        since_ms: i64,
        until_ms: i64,
        each: &mut dyn FnMut(&str, i64),
    ) -> Result<u64> {
        let kind = crate::RecordKind::AssociationAccepted.as_str();
        let mut stmt = self.conn.prepare(&sql::admitted_sql(|n| format!("?{n}")))?;
        let mut rows = stmt.query(params![kind, since_ms, until_ms])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let peer: String = r.get(0)?;
            each(&peer, r.get(1)?);
            n += 1;
        }
        Ok(n)
    }

    fn nodes(&mut self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT node FROM audit_head UNION SELECT DISTINCT node FROM audit_record ORDER BY 1",
        )?;
        let nodes = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(nodes)
    }

    fn checkpoints(&mut self, node: &str) -> Result<Vec<Checkpoint>> {
        let mut stmt = self.conn.prepare(
            "SELECT node, seq, time_ms, hash, key_id, signature FROM audit_checkpoint \
             WHERE node = ?1 ORDER BY seq",
        )?;
        let raw: Vec<(String, i64, i64, String, String, String)> = stmt
            .query_map([node], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        raw.into_iter()
            .map(|(node, seq, time_ms, hash, key_id, sig)| {
                Ok(Checkpoint {
                    node,
                    seq: to_u64(seq),
                    hash: hash_from_hex(&hash)?,
                    time_ms,
                    key_id,
                    signature: sig_from_hex(&sig)?,
                })
            })
            .collect()
    }

    fn cursor(&mut self, node: &str, sink: &str) -> Result<u64> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM audit_cursor WHERE node = ?1 AND sink = ?2",
                [node, sink],
                |r| r.get(0),
            )
            .optional()?;
        Ok(seq.map(to_u64).unwrap_or(0))
    }

    fn set_cursor(&mut self, node: &str, sink: &str, seq: u64) -> Result<()> {
        self.check_in_place()?;
        self.conn.execute(
            "INSERT INTO audit_cursor (node, sink, seq) VALUES (?1, ?2, ?3) \
             ON CONFLICT (node, sink) DO UPDATE SET seq = excluded.seq",
            params![node, sink, to_i64(seq)],
        )?;
        Ok(())
    }
}

/// Distributes (seq, patient) pairs, sorted by seq, onto rows sorted by seq.
pub(crate) fn attach_patients(rows: &mut [StoredRow], pats: Vec<(i64, String)>) {
    let mut i = 0;
    for (seq, pid) in pats {
        let seq = to_u64(seq);
        while rows.get(i).is_some_and(|r| r.seq < seq) {
            i += 1;
        }
        match rows.get_mut(i) {
            Some(row) if row.seq == seq => row.index.patients.push(pid),
            Some(_) => {}
            None => break,
        }
    }
}
