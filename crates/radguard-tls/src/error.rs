//! [`TlsError`]: what went wrong building a TLS configuration, reading a certificate or making
//! the quick-start PKI. Every variant that concerns a file names it, so an operator can act on
//! the message alone.

use std::path::PathBuf;

/// An error of this crate. All of them are local (configuration, files, key generation): the
/// errors of a live handshake are rustls' own and reach the gateway through tokio-rustls.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (or, for the quick start, written).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable item of the expected kind, or is malformed.
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    /// A certificate is not a well-formed X.509 certificate.
    #[error("{path}: not a valid X.509 certificate: {what}")]
    Certificate { path: PathBuf, what: String },
    /// DER bytes (e.g. a peer's leaf certificate) are not a well-formed X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    CertificateDer(String),
    /// The certificate/key pair or the CA set was refused by rustls.
    #[error("{what}: {source}")]
    Rustls {
        what: String,
        #[source]
        source: rustls::Error,
    },
    /// The client CA set could not be turned into a verifier.
    #[error("client CA {path}: {what}")]
    ClientVerifier { path: PathBuf, what: String },
    /// Inconsistent arguments (e.g. client authentication without a client CA).
    #[error("{0}")]
    Config(String),
    /// A host name or address is not valid as a TLS server name.
    #[error("invalid TLS server name {0:?}: expected a DNS name or an IP address")]
    ServerName(String),
    /// A name given to the quick start is unusable (file names, DNS names).
    #[error("invalid name {name:?}: {why}")]
    InvalidName { name: String, why: String },
    /// The quick start refuses to overwrite an existing file.
    #[error("{0} already exists: refusing to overwrite keys or certificates (choose an empty or new directory)")]
    Exists(PathBuf),
    /// Key or certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// Password hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
}

impl TlsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn pem(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        TlsError::Pem {
            path: path.into(),
            what: what.into(),
        }
    }
}
