//! Radguard's operator console: the `[admin]` section ([`config`]), the admin listener
//! ([`server`]: an HTTP API, Server-Sent Events, Prometheus `/metrics`, an OpenAPI document and
//! the pages embedded from `assets/`) and the model it shows ([`model`]).
//!
//! The console only subscribes to the event bus (radguard-events): it never sits on the relay's
//! path. What the bus does not carry (the policy's peers, the block list, the audit trail, the
//! ledger and vault, reloads) comes from the composition root through [`server::Backend`].
//! Admin actions (acknowledging an alert, removing a block, a reload, a refused login) and
//! reads of the audit trail are emitted as events (`admin-action`, `audit-log-read`) so the
//! audit trail records them (PS3.15 A.5 Security Alert 110113, Audit Log Used 110101).
//!
//! Access: without `[[admin.token]]` the listener must be loopback and every client is the
//! built-in `local` operator; with tokens, a bearer token or a session cookie from
//! `POST /api/v1/login` (token digests compared in constant time). State changes need the
//! operator role, a matching `Origin` when one is sent, and the session's CSRF token.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod assets;
pub mod config;
pub mod metrics;
pub mod model;
pub mod server;

pub use config::{hash_token, AdminConfig, Role, TokenEntry};
pub use metrics::Gauges;
pub use model::Console;
pub use server::{AdminServer, AuditQuery, Backend, BoxFuture, PolicyPeer, CSP};

/// The OpenAPI 3.0 document of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "[admin] listen = {0} is not a loopback address: the console there needs tls_cert, \
         tls_key and at least one [[admin.token]]"
    )]
    Exposed(std::net::SocketAddr),
    #[error("[admin] TLS: {0}")]
    Tls(String),
    #[error("[admin] cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document is JSON and describes every route the server has.
    #[test]
    fn openapi_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        for p in crate::server::API_ROUTES {
            assert!(
                doc["paths"].get(*p).is_some(),
                "{p} missing from openapi.json"
            );
        }
        assert_eq!(
            doc["paths"].as_object().unwrap().len(),
            crate::server::API_ROUTES.len()
        );
    }
}
