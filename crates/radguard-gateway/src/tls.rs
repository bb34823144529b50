//! TLS on either side: the listener's server configuration and each route's client
//! configuration, built from a validated config. A snapshot is built whole at start and at
//! every reload; if any file fails to load, the new snapshot is refused and the old one stays.

use std::collections::HashMap;
use std::sync::Arc;

use radguard_dicom::AeTitle;
use radguard_policy::{ClientCertMode, Config};
use radguard_tls::rustls::{ClientConfig, ServerConfig};
use radguard_tls::{ClientAuth, TlsError};

/// The TLS configurations in force.
#[derive(Default)]
pub struct TlsState {
    /// For the `tls_listen` listeners.
    pub server: Option<Arc<ServerConfig>>,
    /// Per route (called AE) whose upstream speaks TLS.
    pub upstream: HashMap<AeTitle, Arc<ClientConfig>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("server", &self.server.is_some())
            .field("upstream_routes", &self.upstream.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds every TLS configuration a config names (certificates and keys read and checked now).
pub fn build(cfg: &Config) -> Result<TlsState, TlsError> {
    let server = match &cfg.server.tls {
        Some(t) => {
            let auth = match t.client_auth {
                ClientCertMode::None => ClientAuth::None,
                ClientCertMode::Optional => ClientAuth::Optional,
                ClientCertMode::Required => ClientAuth::Required,
            };
            Some(radguard_tls::server_config(
                &t.cert,
                &t.key,
                t.client_ca.as_deref(),
                auth,
            )?)
        }
        None => None,
    };
    let mut upstream = HashMap::new();
    for r in cfg.policy.routes() {
        if let Some(t) = &r.tls {
            upstream.insert(
                r.called_ae.clone(),
                radguard_tls::client_config(&t.ca, t.client_cert_and_key())?,
            );
        }
    }
    Ok(TlsState { server, upstream })
}
