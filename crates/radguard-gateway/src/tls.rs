//! The certificates and keys in force, built from a validated config: TLS on either side (the
//! listener's server configuration, each route's client configuration) and each de-identifying
//! route's keyed de-identifier. A snapshot is built whole at start and at every reload; if any
//! file fails to load, the new snapshot is refused and the old one stays.

use std::collections::HashMap;
use std::sync::Arc;

use radguard_deid::Deidentifier;
use radguard_dicom::AeTitle;
use radguard_policy::{ClientCertMode, Config};
use radguard_tls::rustls::{ClientConfig, ServerConfig};
use radguard_tls::{ClientAuth, TlsError};

/// The certificates and keys in force.
#[derive(Default)]
pub struct TlsState {
    /// For the `tls_listen` listeners.
    pub server: Option<Arc<ServerConfig>>,
    /// Per route (called AE) whose upstream speaks TLS.
    pub upstream: HashMap<AeTitle, Arc<ClientConfig>>,
    /// Per route (called AE) that de-identifies what it forwards.
    pub deid: HashMap<AeTitle, DeidRoute>,
}

/// A de-identifying route: the keyed transform and the cap on the data set head it holds.
#[derive(Clone)]
pub struct DeidRoute {
    pub deid: Arc<Deidentifier>,
    pub head_cap: usize,
}

/// Why the certificates and keys of a config cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("route {route}: deidentify: {message}")]
    Deid { route: String, message: String },
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("server", &self.server.is_some())
            .field("upstream_routes", &self.upstream.keys().collect::<Vec<_>>())
            .field("deid_routes", &self.deid.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds every TLS configuration and de-identifier a config names (certificates and keys read
/// and checked now).
pub fn build(cfg: &Config) -> Result<TlsState, LoadError> {
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
    let mut deid = HashMap::new();
    for r in cfg.policy.routes() {
        if let Some(spec) = &r.deidentify {
            let err = |message: String| LoadError::Deid {
                route: r.called_ae.to_string(),
                message,
            };
            let built = spec.build().map_err(|e| err(e.to_string()))?;
            let head_cap = spec.head_cap().map_err(|e| err(e.to_string()))?;
            deid.insert(
                r.called_ae.clone(),
                DeidRoute {
                    deid: built,
                    head_cap,
                },
            );
        }
    }
    Ok(TlsState {
        server,
        upstream,
        deid,
    })
}
