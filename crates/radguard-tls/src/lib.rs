//! Radguard's TLS: one profile for both sides of the gateway, the facts of a peer's
//! certificate, and a quick-start PKI.
//!
//! The gateway terminates TLS from clients and originates TLS to upstreams with the
//! configurations built here, and matches peers on the facts extracted here; it never builds a
//! rustls configuration itself, so the profile cannot drift between the two sides.
//!
//! Modules:
//! - [`profile`]: PS3.15 B.12 / BCP 195 — TLS 1.3 preferred, 1.2 minimum, ECDHE + AEAD only,
//!   extended master secret — as [`server_config`] (optional or required client certificates,
//!   verified against a CA set) and [`client_config`] (server certificate and name verified,
//!   optional client certificate). There is no switch to weaken it.
//! - [`facts`]: [`PeerCertFacts`] (SHA-256 fingerprint, subject CN, SANs, validity) of a verified
//!   leaf certificate, and [`SessionInfo`] for the audit trail.
//! - [`quickstart`]: the PKI behind `radguard tls init DIR` / `radguard tls issue DIR NAME`
//!   (rcgen, ECDSA P-256, keys written 0600, nothing overwritten).
//! - [`passwd`]: Argon2id PHC hashes of User Identity passcodes and the `[[user]]` table
//!   (`radguard passwd`).
//! - [`error`]: the crate's error type, [`TlsError`].
//!
//! The crate prints nothing and reads no terminal: the `radguard` binary owns the commands, their
//! flags, output and exit codes (`crates/radguard/src/cmd/tls.rs`).
//!
//! The crate re-exports the `rustls` and `tokio_rustls` it was built with, so the gateway uses
//! the same versions.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod error;
pub mod facts;
pub mod passwd;
pub mod profile;
pub mod quickstart;

pub use error::TlsError;
pub use facts::{
    cert_file_facts, peer_cert_facts, session_info, sha256_hex, PeerCertFacts, SessionInfo,
};
pub use passwd::hash_passcode;
pub use profile::{
    cipher_suite_names, client_config, load_certs, load_key, provider, server_config, server_name,
    ClientAuth, CIPHER_SUITES, KX_GROUPS, PROTOCOL_VERSIONS,
};
pub use quickstart::{init_quickstart, issue_client, issue_client_valid, Issued, Role, Summary};
pub use rustls;
pub use tokio_rustls;
