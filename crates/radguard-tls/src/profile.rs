//! The one TLS profile Radguard speaks, on both sides: PS3.15 B.12 ("BCP 195 TLS Secure Transport
//! Connection Profile"; RFC 9325, RFC 8996).
//!
//! - TLS 1.3 preferred, TLS 1.2 minimum ([`PROTOCOL_VERSIONS`]); SSL 3, TLS 1.0 and 1.1 do not
//!   exist in rustls at all.
//! - Ephemeral (EC)DH key exchange and AEAD ciphers only ([`CIPHER_SUITES`], [`KX_GROUPS`]): no
//!   CBC, no RSA key transport, no static DH, no NULL or export suites. The list is spelled out
//!   here rather than inherited, so a rustls upgrade cannot widen it silently.
//! - TLS 1.2 requires the extended master secret (RFC 7627), as RFC 9325 §3.6 asks.
//! - Certificates are verified with webpki (chain to the configured CA set, validity period,
//!   key usage; server names on the client side).
//!
//! There is deliberately no switch to weaken any of this: no "insecure", no legacy suites, no
//! verification bypass.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls::{SupportedProtocolVersion, ALL_VERSIONS};

use crate::error::TlsError;

/// TLS 1.3 first (preferred), then TLS 1.2 (the minimum).
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The cipher suites offered and accepted, in preference order: the three TLS 1.3 AEAD suites,
/// then TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 (ECDSA and RSA certificates).
pub static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    cipher_suite::TLS13_AES_256_GCM_SHA384,
    cipher_suite::TLS13_AES_128_GCM_SHA256,
    cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Key exchange groups: X25519, P-256, P-384.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] =
    &[kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];

/// Whether client certificates are asked for on a TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No certificate is requested (and no client CA may be given).
    #[default]
    None,
    /// A certificate is requested; one that is presented must verify against the client CA set,
    /// but a client may present none (the policy then decides per peer).
    Optional,
    /// Every client must present a certificate that verifies, or the handshake fails.
    Required,
}

/// The *ring* crypto provider restricted to [`CIPHER_SUITES`] and [`KX_GROUPS`].
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: CIPHER_SUITES.to_vec(),
        kx_groups: KX_GROUPS.to_vec(),
        ..rustls::crypto::ring::default_provider()
    })
}

/// IANA names of [`CIPHER_SUITES`], in order (for logs, `--help` and tests).
pub fn cipher_suite_names() -> Vec<&'static str> {
    CIPHER_SUITES
        .iter()
        .map(|s| s.suite().as_str().unwrap_or("unknown"))
        .collect()
}

/// A listener's configuration: `cert_pem` (leaf first, then any intermediates) and its private
/// key `key_pem` (PKCS#8, PKCS#1 or SEC1), checked to belong together; with
/// [`ClientAuth::Optional`] or [`ClientAuth::Required`], the CA certificates in `client_ca` that
/// client certificates must chain to (validity period included).
///
/// `client_ca` must be given exactly when `client_auth` is not [`ClientAuth::None`].
pub fn server_config(
    cert_pem: &Path,
    key_pem: &Path,
    client_ca: Option<&Path>,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls {
            what: "TLS profile".into(),
            source,
        })?;
    let builder = match (client_ca, client_auth) {
        (None, ClientAuth::None) => builder.with_no_client_auth(),
        (Some(ca), ClientAuth::Optional | ClientAuth::Required) => {
            let roots = Arc::new(load_roots(ca)?);
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
            if client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsError::ClientVerifier {
                path: ca.to_path_buf(),
                what: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        (Some(ca), ClientAuth::None) => {
            return Err(TlsError::Config(format!(
                "a client CA ({}) was given but client authentication is off",
                ca.display()
            )))
        }
        (None, ClientAuth::Optional | ClientAuth::Required) => {
            return Err(TlsError::Config(
                "client authentication needs a client CA file".into(),
            ))
        }
    };
    let chain = load_certs(cert_pem)?;
    let key = load_key(key_pem)?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Rustls {
            what: format!(
                "certificate {} with key {}",
                cert_pem.display(),
                key_pem.display()
            ),
            source,
        })?;
    config.ignore_client_order = true;
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// A configuration for connections to an upstream: its certificate must chain to the CA
/// certificates in `ca` and name the host the gateway connects to (see [`server_name`]);
/// `client_cert_and_key` (certificate chain PEM, private key PEM) is presented when the upstream
/// asks for a client certificate.
pub fn client_config(
    ca: &Path,
    client_cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(load_roots(ca)?);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Config(format!("CA {}: {e}", ca.display())))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls {
            what: "TLS profile".into(),
            source,
        })?
        .with_webpki_verifier(verifier);
    let mut config = match client_cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = load_certs(cert)?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| TlsError::Rustls {
                    what: format!(
                        "client certificate {} with key {}",
                        cert.display(),
                        key.display()
                    ),
                    source,
                })?
        }
    };
    config.require_ems = true;
    Ok(Arc::new(config))
}

/// The name an upstream's certificate must carry: a DNS name or an IP address (IPv6 with or
/// without brackets).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// Every certificate in a PEM file, in file order (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::pem(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::pem(path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The (first) private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::pem(
            path,
            "no private key in the file (expected a PKCS#8, PKCS#1 or SEC1 PEM block)",
        ),
        other => TlsError::pem(path, format!("malformed PEM: {other}")),
    })
}

/// A CA set: every certificate of a PEM file, each a trust anchor.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: format!(
                "{}: certificate #{} as a trust anchor",
                path.display(),
                i + 1
            ),
            source,
        })?;
    }
    Ok(roots)
}

/// The versions rustls knows of that this profile leaves out (none today: rustls implements
/// only TLS 1.2 and 1.3). Kept so a test fails if rustls ever adds an older version.
pub fn versions_left_out() -> Vec<rustls::ProtocolVersion> {
    ALL_VERSIONS
        .iter()
        .filter(|v| !PROTOCOL_VERSIONS.iter().any(|p| p.version == v.version))
        .map(|v| v.version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ProtocolVersion;

    #[test]
    fn suites_are_exactly_the_profile() {
        assert_eq!(
            cipher_suite_names(),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
        // Every TLS 1.2 suite is ECDHE + AEAD; no CBC, no RSA key transport.
        for name in cipher_suite_names() {
            assert!(!name.contains("CBC"), "{name}");
            if !name.starts_with("TLS13_") {
                assert!(name.starts_with("TLS_ECDHE_"), "{name}");
                assert!(name.contains("_GCM_") || name.contains("CHACHA20_POLY1305"));
            }
        }
        // The provider carries exactly these.
        let p = provider();
        assert_eq!(p.cipher_suites.len(), CIPHER_SUITES.len());
        for (a, b) in p.cipher_suites.iter().zip(CIPHER_SUITES) {
            assert_eq!(a.suite(), b.suite());
        }
        let groups: Vec<_> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                rustls::NamedGroup::X25519,
                rustls::NamedGroup::secp256r1,
                rustls::NamedGroup::secp384r1
            ]
        );
    }

    #[test]
    fn versions_are_13_then_12() {
        let v: Vec<ProtocolVersion> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
        assert_eq!(v, [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]);
        assert!(versions_left_out().is_empty());
    }

    #[test]
    fn server_names() {
        for ok in [
            "pacs.example.org",
            "localhost",
            "10.0.0.5",
            "::1",
            "[fd00::5]",
        ] {
            assert!(server_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "bad name", "a..b", "-x-"] {
            assert!(
                matches!(server_name(bad), Err(TlsError::ServerName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn inconsistent_client_auth_is_refused_before_any_file_is_read() {
        let nowhere = Path::new("/nonexistent/x.pem");
        let e = server_config(nowhere, nowhere, None, ClientAuth::Required).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        let e = server_config(nowhere, nowhere, None, ClientAuth::Optional).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        let e = server_config(nowhere, nowhere, Some(nowhere), ClientAuth::None).unwrap_err();
        assert!(matches!(e, TlsError::Config(_)), "{e}");
        // Now a file is read: the error names it.
        let e = server_config(nowhere, nowhere, None, ClientAuth::None).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.pem"), "{e}");
    }
}
