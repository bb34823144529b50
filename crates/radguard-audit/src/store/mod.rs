//! Where records live: one [`AuditStore`] trait, an embedded SQLite store (the default) and a
//! PostgreSQL store for several gateways sharing one trail.
//!
//! Every store keeps, per chain (`node`): the entries verbatim with their hash and indexed
//! columns (`audit_record`), the patients each record names (`audit_patient`), the head written
//! with the last append (`audit_head`), signed checkpoints (`audit_checkpoint`) and the delivery
//! cursor of each export sink (`audit_cursor`). An append is one transaction that first checks
//! the head is still the one the writer extended.

mod pg;
mod sql;
mod sqlite;

pub use pg::PgStore;

/// Checks a PostgreSQL schema name (letters, digits, `_`).
pub fn check_schema_name(s: &str) -> std::result::Result<(), String> {
    sql::check_identifier(s)
}
pub use sqlite::SqliteStore;

use crate::chain::{ChainHead, SealedRecord, StoredRow};
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::record::RecordKind;

/// What `search` selects. Empty filter: everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub node: Option<String>,
    /// Inclusive, milliseconds since the epoch.
    pub since_ms: Option<i64>,
    /// Exclusive.
    pub until_ms: Option<i64>,
    /// Matches the peer's IP address, calling AE title or policy name.
    pub peer: Option<String>,
    pub patient_id: Option<String>,
    /// Any of these kinds (none: all).
    pub kinds: Vec<RecordKind>,
    pub assoc: Option<u64>,
    /// Only records with `seq` greater than this (meaningful with `node`).
    pub after_seq: Option<u64>,
    /// At most this many rows (0: no limit).
    pub limit: usize,
    /// Newest first (by time, then node and seq) instead of oldest first.
    pub newest_first: bool,
}

/// A row `search` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRow {
    pub node: String,
    pub seq: u64,
    pub entry: String,
}

/// An audit store. Only one writer per node may append; readers may run concurrently.
pub trait AuditStore: Send {
    /// Where the store is, for messages and the audit-started record (no passwords).
    fn describe(&self) -> String;

    /// The head recorded with the node's last append (none: empty chain).
    fn head(&mut self, node: &str) -> Result<Option<ChainHead>>;

    /// Appends `records` (already sealed after `expected`) and, optionally, a checkpoint, in
    /// one transaction. Fails with [`crate::AuditError::HeadMoved`] if the stored head is not
    /// `expected`.
    fn append(
        &mut self,
        node: &str,
        expected: &ChainHead,
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()>;

    /// Up to `limit` rows of `node` with `seq > after_seq`, in order, with their patients.
    fn read_after(&mut self, node: &str, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>>;

    /// Rows matching `filter`.
    fn search(&mut self, filter: &Filter) -> Result<Vec<FoundRow>>;

    /// The nodes (chains) in the store.
    fn nodes(&mut self) -> Result<Vec<String>>;

    /// The node's checkpoints, oldest first.
    fn checkpoints(&mut self, node: &str) -> Result<Vec<Checkpoint>>;

    /// The last `seq` of `node` delivered to `sink` (0: none yet).
    fn cursor(&mut self, node: &str, sink: &str) -> Result<u64>;

    /// Records that everything up to `seq` of `node` was delivered to `sink`.
    fn set_cursor(&mut self, node: &str, sink: &str, seq: u64) -> Result<()>;
}

/// Which store a config or the CLI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL connection string (`host=... user=... dbname=...` or a `postgresql://` URL)
    /// and the schema to use (none: the connection's default search path).
    Postgres {
        conn: String,
        schema: Option<String>,
    },
}

impl StoreSpec {
    /// Parses `sqlite:PATH`, `postgresql:CONNSTR`, a `postgres://`/`postgresql://` URL, or a
    /// plain path (SQLite). A `#schema=NAME` suffix picks the PostgreSQL schema.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty store".into());
        }
        let pg = |conn: &str| {
            let (conn, schema) = match conn.rsplit_once("#schema=") {
                Some((c, sch)) => (c.trim(), Some(sch.trim().to_string())),
                None => (conn.trim(), None),
            };
            if let Some(sch) = &schema {
                sql::check_identifier(sch)?;
            }
            Ok(StoreSpec::Postgres {
                conn: conn.to_string(),
                schema,
            })
        };
        if let Some(rest) = s.strip_prefix("sqlite:") {
            Ok(StoreSpec::Sqlite(rest.into()))
        } else if let Some(rest) = s
            .strip_prefix("postgresql:")
            .filter(|r| !r.starts_with("//"))
            .or_else(|| s.strip_prefix("postgres:").filter(|r| !r.starts_with("//")))
        {
            pg(rest)
        } else if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            pg(s)
        } else {
            Ok(StoreSpec::Sqlite(s.into()))
        }
    }

    /// Opens the store from async code (on the blocking pool).
    pub async fn open_async(&self) -> Result<Box<dyn AuditStore>> {
        let spec = self.clone();
        tokio::task::spawn_blocking(move || spec.open())
            .await
            .map_err(|e| crate::AuditError::Task(e.to_string()))?
    }

    /// Opens the store (creating the schema if needed). Blocks: from async code use
    /// [`open_async`](Self::open_async).
    pub fn open(&self) -> Result<Box<dyn AuditStore>> {
        Ok(match self {
            StoreSpec::Sqlite(p) => Box::new(SqliteStore::open(p)?),
            StoreSpec::Postgres { conn, schema } => {
                Box::new(PgStore::connect(conn, schema.as_deref())?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            StoreSpec::parse("/var/lib/a.sqlite"),
            Ok(StoreSpec::Sqlite("/var/lib/a.sqlite".into()))
        );
        assert_eq!(
            StoreSpec::parse("sqlite:rel.db"),
            Ok(StoreSpec::Sqlite("rel.db".into()))
        );
        assert_eq!(
            StoreSpec::parse("postgresql:host=h user=u#schema=gw_a"),
            Ok(StoreSpec::Postgres {
                conn: "host=h user=u".into(),
                schema: Some("gw_a".into())
            })
        );
        assert_eq!(
            StoreSpec::parse("postgres://u@h/db"),
            Ok(StoreSpec::Postgres {
                conn: "postgres://u@h/db".into(),
                schema: None
            })
        );
        assert!(StoreSpec::parse("postgresql:host=h#schema=x;drop").is_err());
        assert!(StoreSpec::parse("").is_err());
    }
}
