//! Radguard's inline DICOM gateway.
//!
//! Data flow (see ARCHITECTURE.md at the project root). Modules form layers, each naming only
//! the ones below it (tests/layers.rs fails on a cycle):
//! - [`server`]: TCP listeners, global and per-peer caps, graceful shutdown.
//! - [`assoc`]: one task per association: connection, establishment, then relay or vault.
//! - [`establish`]: establishment as phases (ARTIM and A-ASSOCIATE-RQ decoding, peer
//!   identification, policy admission, presentation context planning), each returning
//!   `Result<Next, Refusal>`; the refusal is sent in one place.
//! - [`relay`]: cut-through relay to an upstream SCP; P-DATA passes as the same bytes.
//! - [`vault_scp`]: the gateway as Storage SCP in front of the built-in vault.
//! - [`hold`]: hold routes: the upstream unreachable, C-STOREs are stored in the vault and
//!   queued before success; [`forward`]: a forwarder per destination delivers the queue;
//!   [`inflight`]: what a hold route's relay keeps of C-STOREs until the upstream answers
//!   (held instead if the upstream is lost mid-association).
//! - `session` (crate-private): the client-side loop both run: read, assemble, judge, then the
//!   relay forwards and the vault stores or answers.
//! - [`inspect`]: the per-route inspection pipeline built at admission (firewall level,
//!   integrity ledger, de-identification) and the inspections it sets up per data set.
//! - [`conn`]: the client connection (both socket halves; send, abort, reject, close).
//! - [`shared`]: what every connection task shares (settings, live policy, budgets).
//! - [`negotiate`]: pure functions building the upstream request and the client's answer,
//!   rewriting Maximum Length in both directions.
//! - [`gate`]: the per-request check (command set, context, policy) shared by both.
//! - [`called`]: the same check for DIMSE-N requests the upstream sends the client on its
//!   association (Storage Commitment's N-EVENT-REPORT), under the peer's `receive`.
//! - [`reader`], [`io`]: cancel-safe PDU reader, timers, writes.
//! - [`guard`]: the scan-protocol and dose guard as the relay applies it (protocols held and
//!   judged, dose reports watched, worklist answers checked).
//! - [`tls`], [`deid_relay`]: the TLS configurations and de-identifiers in force; a C-STORE
//!   de-identified in the stream.
//! - [`scu`]: the blocking C-STORE SCU the forwarders and `radguard vault replay` send stored
//!   files with (each checked against its acceptance hash and ledger fingerprint first).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod assoc;
pub mod called;
pub mod conn;
pub mod deid_relay;
pub mod establish;
pub mod forward;
pub mod gate;
pub mod guard;
pub mod hold;
pub mod inflight;
pub mod inspect;
pub mod io;
pub mod negotiate;
pub mod reader;
pub mod relay;
pub mod scu;
pub mod server;
mod session;
pub mod shared;
pub mod tls;
pub mod vault_scp;

pub use server::{bind, serve, Listener};
pub use shared::Shared;
pub use tls::TlsState;
