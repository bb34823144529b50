//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the audit trail. Store errors are always the gateway's own
/// (local) failures: no peer input reaches a store unparsed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The SQLite store failed (disk full, locked, corrupt file, ...).
    #[error("audit store (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The PostgreSQL store failed (server down, permission, ...).
    #[error("audit store (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    /// The chain head in the store is neither the one this writer extended nor one of the
    /// records it is appending: another writer uses the same node name.
    #[error(
        "audit store: chain head of node {node:?} moved (expected seq {expected}, found {found}); \
         is another gateway using the same node name?"
    )]
    HeadMoved {
        node: String,
        expected: u64,
        found: u64,
    },
    /// The store holds something this version cannot read.
    #[error("audit store: {0}")]
    Store(String),
    /// The signing key file is missing, unreadable, malformed or too widely readable.
    #[error("audit signing key {}: {why}", path.display())]
    Key { path: PathBuf, why: String },
    /// Local file I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A record could not be encoded or decoded.
    #[error("audit record encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// Invalid configuration.
    #[error("audit config: {0}")]
    Config(String),
    /// Syslog export failed (connection, TLS handshake, write).
    #[error("syslog: {0}")]
    Syslog(String),
    /// The writer or exporter task failed or was cancelled.
    #[error("audit task: {0}")]
    Task(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
