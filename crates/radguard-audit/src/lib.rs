//! Radguard's tamper-evident audit trail.
//!
//! The gateway emits typed events on its `EventBus`; this crate records them:
//!
//! ```text
//! EventBus ──▶ writer (one task owns the store)
//!                mapper.rs   events → records, with the association's peer; transfer summaries
//!                chain.rs    seal: seq, prev = SHA-256 of the previous entry; verify
//!                checkpoint.rs  Ed25519-signed chain heads (key file 0600)
//!                store/      SQLite (WAL, synchronous=FULL) | PostgreSQL, one trait
//!          store ──▶ syslog.rs  RFC 5424 + PS3.15 A.5 XML (atna.rs) over TLS (RFC 5425) or
//!                               UDP (RFC 5426), in order, from a cursor kept in the store
//!          store ──▶ verify.rs  chains checked from the first record (`radguard audit verify`)
//! ```
//!
//! | module | job |
//! |---|---|
//! | [`record`] | the record model (facts the events do not carry yet are `Option`s) |
//! | [`mapper`] | events to records (pure) |
//! | [`chain`] | canonical encoding, sealing, verification (pure) |
//! | [`checkpoint`] | signing key file, signed checkpoints |
//! | [`store`] | [`store::AuditStore`]: SQLite and PostgreSQL |
//! | [`writer`] | [`AuditWriter::spawn`] → [`AuditHandle`] (health for the gateway's admission) |
//! | [`atna`] | PS3.15 A.5 audit messages (pure) |
//! | [`syslog`] | RFC 5424/5425/5426 export with a delivery cursor |
//! | [`config`] | the `[audit]` configuration, its errors placed as `FILE:LINE:COL` |
//! | [`time`] | RFC 3339 formatting and time filters (`2024-05-01`, `90m`, ...) |
//! | [`verify`] | [`verify_chain`] / [`verify::verify_store`]: chains checked from a store |
//!
//! The crate prints nothing: `radguard audit tail|search|verify|export` (flags, text and JSON
//! output, exit codes) is the binary's (`crates/radguard/src/cmd/audit.rs`); it reads stores
//! with [`store::Filter`], [`store::Follower`], [`verify::verify_store`] and [`atna`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod atna;
pub mod chain;
pub mod checkpoint;
pub mod config;
mod error;
pub mod mapper;
pub mod record;
pub mod store;
pub mod syslog;
pub mod time;
pub mod verify;
pub mod writer;

pub use error::{AuditError, Result};
pub use record::{AuditEvent, AuditRecord, RecordKind};
pub use store::{AuditStore, Follower, PgStore, SqliteStore, StoreSpec};
pub use verify::{verify_chain, verify_store};
pub use writer::{AuditHandle, AuditWriter, FailurePolicy, Health, WriterOptions};
