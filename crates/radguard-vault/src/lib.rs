//! Radguard's vault: a write-once, content-addressed store of DICOM Part 10 files with a SQLite
//! index, used as the gateway's built-in Storage SCP destination.
//!
//! The gateway streams a C-STORE data set into a [`PendingInstance`] chunk by chunk (never
//! holding a whole instance) and then [`commit`](PendingInstance::commit)s it. Each file is
//! 128 zero bytes, `DICM`, a File Meta Information group that depends only on the SOP Class,
//! SOP Instance and Transfer Syntax UIDs, and the data set bytes exactly as received; it is named
//! by the SHA-256 of all its bytes. Nothing is ever overwritten or deleted: there is no API for
//! it, object files are made read-only, and the index refuses `UPDATE` and `DELETE`. Below the
//! application, [`Vault::open_with`] and the `[vault]` settings ([`VaultConfig`]) make each
//! object file immutable once it is durable (the Linux inode flag, [`lock`]), so that not even
//! root can delete or rewrite it without first clearing the flag; where the file system or the
//! process's capabilities do not allow it the vault still stores and says so
//! ([`Vault::lock_status`], [`Vault::unlocked_objects`]). Each index row is also appended to
//! the index log (`index-log/`), a hash-chained, append-only copy: [`Vault::check`] reports rows
//! added, changed or removed behind the vault's back, and a signed checkpoint of its head
//! ([`Vault::index_log_head`], written by the gateway) pins it.
//!
//! The API is synchronous std I/O; call it from async code through `spawn_blocking`.
//!
//! Modules:
//! - `vault`: [`Vault`] and [`PendingInstance`], the commit protocol, recovery and checks.
//! - `layout`: the directory layout and the durable rename (fsync file, rename, fsync directory).
//! - `meta`: the preamble and File Meta Information header.
//! - `scan`: reads Patient ID, Study and Series Instance UID from a stored file without loading
//!   values it does not need and without trusting declared lengths.
//! - `index`: the SQLite schema and queries.
//! - `indexlog`: the index log, an append-only, hash-chained copy of the index rows in
//!   `index-log/` (sealed segments immutable), compared with the index by [`Vault::check`].
//! - [`queue`]: the hold queue (instances held for an unreachable destination, forwarded in
//!   order of arrival; its own SQLite file) and the disk-use check of hold routes.
//! - [`lock`]: the immutable inode flag (`chattr +i`) on object files, below the application.
//! - [`config`]: the `[vault]` section ([`VaultConfig`]: `immutable`, `retention_days`).
//! - [`scrub`]: the continuous re-check of stored objects at a bounded rate (resumable
//!   cursor, findings: missing, changed, unreadable, encrypted-looking, unindexed) and its
//!   `[scrub]` config section.
//! - [`integrity`]: pure judgements for the scrub: an encrypted-looking file (entropy and
//!   DICOM structure) and the ransomware pattern (many objects changed in a short window).
//! - `error`: [`VaultError`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod config;
mod error;
mod index;
mod indexlog;
pub mod integrity;
mod layout;
pub mod lock;
mod meta;
pub mod queue;
mod scan;
pub mod scrub;
mod time;
mod vault;

pub use config::{Immutable, VaultConfig};
pub use error::VaultError;
pub use indexlog::IndexLogHead;
pub use lock::LockOutcome;
pub use vault::{PendingInstance, Problem, StoreOutcome, StoredInstance, Vault};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn usable_from_blocking_tasks() {
        assert_send_sync::<Vault>();
        assert_send::<PendingInstance>();
        assert_send_sync::<VaultError>();
    }
}
