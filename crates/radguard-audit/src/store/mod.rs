//! Where records live: one [`AuditStore`] trait, an embedded SQLite store (the default) and a
//! PostgreSQL store for several gateways sharing one trail.
//!
//! Every store keeps, per chain (`node`): the entries verbatim with their hash and indexed
//! columns (`audit_record`), the patients each record names (`audit_patient`), the head written
//! with the last append (`audit_head`), signed checkpoints (`audit_checkpoint`) and the delivery
//! cursor of each export sink (`audit_cursor`). An append is one transaction that first checks
//! the head is still the one the writer extended.
//!
//! Appends are idempotent: when the connection ends after COMMIT was sent, the writer cannot
//! know whether the records are in the store, and it sends them again (the same records, sealed
//! at the same positions, possibly followed by newer ones). The store then finds its head to be
//! one of those records — same `seq`, same hash, which covers every record before it through
//! the chain's links — and writes only the records after it, so each record is in the chain
//! once ([`AuditStore::append`]).

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
use crate::error::{AuditError, Result};
use crate::record::RecordKind;

/// Which of `records` (sealed after `expected`) an append must still write, given the head the
/// store holds (`stored`) and `stored_hash_at`, which reads the hash of the stored record at a
/// seq.
///
/// - `stored == expected`: all of them.
/// - `stored` is one of `records` (same seq and hash, and the record row at that seq holds that
///   hash): an earlier append of these same records committed although its answer was lost;
///   only the records after it.
/// - anything else: [`AuditError::HeadMoved`] (another writer extended the chain; nothing is
///   written).
pub(crate) fn still_to_write<'a>(
    node: &str,
    expected: &ChainHead,
    stored: &ChainHead,
    records: &'a [SealedRecord],
    stored_hash_at: impl FnOnce(u64) -> Result<Option<[u8; 32]>>,
) -> Result<&'a [SealedRecord]> {
    if stored == expected {
        return Ok(records);
    }
    let moved = || AuditError::HeadMoved {
        node: node.to_string(),
        expected: expected.seq,
        found: stored.seq,
    };
    let written = stored
        .seq
        .checked_sub(expected.seq)
        .and_then(|k| usize::try_from(k).ok())
        .filter(|k| *k > 0)
        .ok_or_else(moved)?;
    let ours = records
        .get(written - 1)
        .filter(|r| r.record.seq == stored.seq && r.hash == stored.hash)
        .ok_or_else(moved)?;
    if stored_hash_at(ours.record.seq)? != Some(ours.hash) {
        return Err(moved());
    }
    tracing::warn!(
        target: "radguard::audit",
        node,
        already_stored = written,
        "an earlier append committed although its answer was lost: its records are not written again"
    );
    Ok(records.get(written..).unwrap_or_default())
}

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

/// Follows a store as its chains grow (`radguard audit tail --follow`): each [`Follower::poll`]
/// returns the matching records appended since the previous one, per chain by `seq`, so a record
/// is returned once however the polls and the appends interleave (for a filter that stays the
/// same: the cursor moves past the records returned).
#[derive(Debug, Clone)]
pub struct Follower {
    /// Per chain, the last `seq` already returned (or the head when following began).
    last: std::collections::BTreeMap<String, u64>,
    /// Only this chain (none: every chain, including ones created while following).
    only: Option<String>,
}

impl Follower {
    /// Starts after the current head of every chain: records already written are not returned.
    pub fn new(store: &mut dyn AuditStore, only: Option<String>) -> Result<Self> {
        let mut last = std::collections::BTreeMap::new();
        for n in store.nodes()? {
            let head = store.head(&n)?;
            last.insert(n, head.map(|h| h.seq).unwrap_or(0));
        }
        Ok(Follower { last, only })
    }

    /// The records matching `filter` appended since the previous poll, chain by chain, each
    /// chain's in `seq` order. `filter.node` and `filter.after_seq` are set per chain.
    pub fn poll(&mut self, store: &mut dyn AuditStore, filter: &Filter) -> Result<Vec<FoundRow>> {
        let mut out = Vec::new();
        for n in store.nodes()? {
            if self.only.as_ref().is_some_and(|only| *only != n) {
                continue;
            }
            let mut f = filter.clone();
            f.node = Some(n.clone());
            f.after_seq = Some(self.last.get(&n).copied().unwrap_or(0));
            let mut rows = store.search(&f)?;
            rows.sort_by_key(|r| r.seq);
            if let Some(r) = rows.last() {
                self.last.insert(n, r.seq);
            }
            out.append(&mut rows);
        }
        Ok(out)
    }
}

/// An audit store. Only one writer per node may append; readers may run concurrently.
pub trait AuditStore: Send {
    /// Where the store is, for messages and the audit-started record (no passwords).
    fn describe(&self) -> String;

    /// The head recorded with the node's last append (none: empty chain).
    fn head(&mut self, node: &str) -> Result<Option<ChainHead>>;

    /// Appends `records` (already sealed after `expected`) and, optionally, a checkpoint, in
    /// one transaction. Idempotent: records the store already holds at their positions (an
    /// earlier append of them committed although its answer was lost) are not written again.
    /// Fails with [`crate::AuditError::HeadMoved`] if the stored head is neither `expected` nor
    /// one of `records`.
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

    /// Calls `each(peer name, time_ms)` for every admitted association (an
    /// `association-accepted` record with the peer's policy name) with
    /// `since_ms <= time_ms < until_ms`, oldest first, every chain of the store; returns how
    /// many. The detectors learn the peers' weekly profiles from it at start. This default
    /// reads the records through [`AuditStore::search`]; the SQL stores read the indexed
    /// columns only.
    fn admitted_associations(
        &mut self,
        since_ms: i64,
        until_ms: i64,
        each: &mut dyn FnMut(&str, i64),
    ) -> Result<u64> {
        let rows = self.search(&Filter {
            since_ms: Some(since_ms),
            until_ms: Some(until_ms),
            kinds: vec![crate::RecordKind::AssociationAccepted],
            ..Filter::default()
        })?;
        let mut n = 0;
        for row in rows {
            let Ok(r) = serde_json::from_str::<crate::AuditRecord>(&row.entry) else {
                continue;
            };
            if let Some(name) = r.peer.as_ref().and_then(|p| p.name.as_deref()) {
                each(name, r.time_ms);
                n += 1;
            }
        }
        Ok(n)
    }

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
