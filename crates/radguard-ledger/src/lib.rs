//! Radguard's integrity ledger: a fingerprint of every instance received at the point of
//! origin, kept in an append-only Merkle log with signed checkpoints, so that anyone can later
//! prove that a copy is unchanged, or see what changed.
//!
//! Modules:
//! - [`fingerprint`]: the canonical instance fingerprint, computed while a data set streams
//!   ([`Fingerprinter`]) or from a file ([`fingerprint_file`]); lossless codecs are decoded.
//! - [`merkle`]: RFC 9162 tree hashing, inclusion and consistency proofs (pure).
//! - [`note`]: C2SP signed notes, Ed25519 keys, tlog checkpoints (pure).
//! - [`entry`]: the ledger entry and its canonical bytes (pure).
//! - [`config`]: the `[ledger]` section of the gateway's config file ([`LedgerConfig`]), its
//!   errors placed as `FILE:LINE:COL`.
//! - `store`: the SQLite log (durable, append-only).
//! - [`Ledger`] / [`LedgerView`]: the writable ledger for the gateway, and a read-only view.
//! - [`verify`]: verdicts for files (`unchanged`, `altered`, `lossy-reencoded`, `unknown`).
//! - [`auditor`]: proof bundles, their offline check, recording trusted originals.
//!
//! The crate prints nothing: `radguard verify` and `radguard ledger …` (flags, text and JSON
//! output, progress bar, exit codes) are the binary's (`crates/radguard/src/cmd/ledger.rs`).
//!
//! All APIs are synchronous std I/O; call them from async code through `spawn_blocking`.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod auditor;
pub mod config;
pub mod entry;
pub mod fingerprint;
mod ledger;
pub mod merkle;
pub mod note;
mod store;
pub mod verify;

pub use config::LedgerConfig;
pub use entry::{LedgerEntry, Timestamp};
pub use fingerprint::{fingerprint_file, Fingerprint, FingerprintError, Fingerprinter};
pub use ledger::{
    AppendOutcome, Ledger, LedgerError, LedgerView, OnConflict, SignedCheckpoint, DB_FILE,
    SIGNING_KEY_FILE, VERIFIER_KEY_FILE,
};
pub use store::LoggedEntry;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}
    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn usable_from_blocking_tasks() {
        assert_send_sync::<Ledger>();
        assert_send_sync::<LedgerView>();
        assert_send::<Fingerprinter>();
        assert_send_sync::<LedgerError>();
        assert_send_sync::<FingerprintError>();
        assert_send_sync::<auditor::AuditorError>();
        assert_send_sync::<auditor::CheckFailure>();
        assert_send_sync::<verify::VerifyError>();
        assert_send_sync::<verify::VaultError>();
    }
}
