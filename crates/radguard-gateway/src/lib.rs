//! Radguard's inline DICOM gateway.
//!
//! Data flow (see ARCHITECTURE.md at the project root):
//! - [`server`]: TCP listeners, global and per-peer caps, graceful shutdown.
//! - [`assoc`]: one task per association: ARTIM, A-ASSOCIATE-RQ decoding, peer identification,
//!   policy admission, presentation context planning.
//! - [`negotiate`]: pure functions building the upstream request and the client's answer,
//!   rewriting Maximum Length in both directions.
//! - [`relay`]: cut-through relay to an upstream SCP; P-DATA passes as the same bytes.
//! - [`vault_scp`]: the gateway as Storage SCP in front of the built-in vault.
//! - [`gate`]: the per-request check (command set, context, policy) shared by both.
//! - [`reader`], [`io`]: cancel-safe PDU reader, timers, writes.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod assoc;
pub mod deid_relay;
pub mod gate;
pub mod io;
pub mod negotiate;
pub mod reader;
pub mod relay;
pub mod server;
pub mod tls;
pub mod vault_scp;

pub use server::{bind, serve, Listener, Shared};
pub use tls::TlsState;
