//! TLS checks (PS3.15 B.12, BCP 195 / RFC 9325): whether TLS is offered, which protocol
//! versions and cipher suites the server accepts, its certificate (validity, name, chain) and
//! whether it requires a client certificate.
//!
//! The probe is a rustls client, so it can only offer what rustls implements: TLS 1.2 and 1.3
//! with ECDHE + AEAD suites. Whether a server still accepts SSL 3.0, TLS 1.0/1.1, CBC, RSA key
//! transport, 3DES, RC4, NULL or export suites is *not tested*; the report says so
//! ([`UNTESTABLE`]) rather than implying the server refuses them.

use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use radguard_tls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme, SupportedCipherSuite};

use crate::pace::Pacer;
use crate::wire::{self, Timeouts};
use crate::ProbeError;

/// What a rustls client cannot test, said in every TLS report.
pub const UNTESTABLE: &[&str] = &[
    "SSL 3.0, TLS 1.0 and TLS 1.1: rustls cannot offer them, so whether the server still accepts them is not tested",
    "CBC, RSA key transport, static DH, 3DES, RC4, NULL and export cipher suites: rustls implements none of them, so they are not tested",
];

/// The certificate the server presented.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertReport {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub sha256: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// Subject and issuer are the same: nothing vouches for the key but itself.
    pub self_signed: bool,
    /// The name the probe connected with is among the subject alternative names (or the CN
    /// when there are none).
    pub name_matches: bool,
    /// `verified`, `failed: ...`, or `not checked (no --ca given)`.
    pub chain: String,
    /// Certificates presented (leaf + intermediates).
    pub chain_length: usize,
}

/// One protocol version or suite tried alone.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tried {
    pub name: String,
    pub accepted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything the TLS checks found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsReport {
    /// A TLS handshake with the probe's full offer succeeded.
    pub offered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated_suite: Option<String>,
    pub versions: Vec<Tried>,
    pub suites: Vec<Tried>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertReport>,
    /// `required`, `optional` (requested, the handshake went on without one), `not requested`
    /// or `unknown`.
    pub client_certificate: String,
    pub untestable: Vec<String>,
}

/// Records the server's chain and checks only the handshake signature: the chain is judged
/// afterwards, so that an untrusted or expired certificate is reported, not just refused.
#[derive(Debug)]
struct Recorder {
    provider: Arc<CryptoProvider>,
    chain: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut all = vec![end_entity.clone().into_owned()];
        all.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut g) = self.chain.lock() {
            *g = Some(all);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Notes whether the server asked for a client certificate, and offers none.
#[derive(Debug, Default)]
struct NoClientCert {
    asked: Mutex<bool>,
}

impl ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Ok(mut g) = self.asked.lock() {
            *g = true;
        }
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider_with(suites: Vec<SupportedCipherSuite>) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..ring::default_provider()
    })
}

struct Built {
    config: Arc<ClientConfig>,
    recorder: Arc<Recorder>,
    client: Arc<NoClientCert>,
}

fn build(
    suites: Vec<SupportedCipherSuite>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Built, ProbeError> {
    let provider = provider_with(suites);
    let recorder = Arc::new(Recorder {
        provider: provider.clone(),
        chain: Mutex::new(None),
    });
    let client = Arc::new(NoClientCert::default());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| ProbeError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_client_cert_resolver(client.clone());
    Ok(Built {
        config: Arc::new(config),
        recorder,
        client,
    })
}

/// The client configuration the DICOM checks of a `tls://` target use: any server
/// certificate (it is judged by [`check`], not here), no client certificate.
pub fn probe_client_config() -> Result<Arc<ClientConfig>, ProbeError> {
    Ok(build(ring::ALL_CIPHER_SUITES.to_vec(), rustls::ALL_VERSIONS)?.config)
}

fn alert_of(e: &std::io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|r| r.to_string())
}

/// One handshake with `b`; `Ok(conn)` when it completed.
fn handshake(
    pacer: &mut Pacer,
    host: &str,
    port: u16,
    t: &Timeouts,
    b: &Built,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ProbeError> {
    pacer.wait();
    let tcp = wire::connect_tcp(host, port, t)?;
    wire::tls_handshake(b.config.clone(), host, tcp, t.connect.max(t.io))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn judge_cert(
    chain: &[CertificateDer<'static>],
    host: &str,
    ca: Option<&[CertificateDer<'static>]>,
) -> Option<CertReport> {
    let leaf = chain.first()?;
    let facts = radguard_tls::PeerCertFacts::from_der(leaf).ok()?;
    let now = unix_now();
    let host_l = host.to_ascii_lowercase();
    let name_matches = if facts.sans.is_empty() {
        facts
            .subject_cn
            .as_deref()
            .is_some_and(|cn| cn.eq_ignore_ascii_case(host))
    } else {
        facts.sans.iter().any(|s| {
            s == &host_l
                || s.strip_prefix("*.")
                    .is_some_and(|d| host_l.split_once('.').is_some_and(|(_, rest)| rest == d))
        })
    };
    let chain_text = match ca {
        None => "not checked (no --ca given)".to_string(),
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for r in roots {
                let _ = store.add(r.clone());
            }
            match WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                Arc::new(ring::default_provider()),
            )
            .build()
            {
                Err(e) => format!("failed: {e}"),
                Ok(v) => match radguard_tls::server_name(host) {
                    Err(e) => format!("failed: {e}"),
                    Ok(name) => match v.verify_server_cert(
                        leaf,
                        chain.get(1..).unwrap_or_default(),
                        &name,
                        &[],
                        UnixTime::now(),
                    ) {
                        Ok(_) => "verified".to_string(),
                        Err(e) => format!("failed: {e}"),
                    },
                },
            }
        }
    };
    Some(CertReport {
        self_signed: facts.subject == facts.issuer,
        subject: facts.subject,
        issuer: facts.issuer,
        sans: facts.sans,
        sha256: facts.sha256_hex,
        not_before_unix: facts.not_before_unix,
        not_after_unix: facts.not_after_unix,
        expired: now > facts.not_after_unix,
        not_yet_valid: now < facts.not_before_unix,
        name_matches,
        chain: chain_text,
        chain_length: chain.len(),
    })
}

/// Runs the TLS checks against `host:port`. `ca`: trust anchors to verify the chain against.
pub fn check(
    pacer: &mut Pacer,
    host: &str,
    port: u16,
    t: &Timeouts,
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<TlsReport, ProbeError> {
    let mut report = TlsReport {
        offered: false,
        handshake_error: None,
        negotiated_version: None,
        negotiated_suite: None,
        versions: Vec::new(),
        suites: Vec::new(),
        certificate: None,
        client_certificate: "unknown".into(),
        untestable: UNTESTABLE.iter().map(|s| s.to_string()).collect(),
    };
    // 1. Everything rustls can offer: certificate and client-certificate request.
    let full = build(ring::ALL_CIPHER_SUITES.to_vec(), rustls::ALL_VERSIONS)?;
    match handshake(pacer, host, port, t, &full) {
        Err(e) => {
            report.handshake_error = Some(e.to_string());
            let asked = full.client.asked.lock().map(|g| *g).unwrap_or(false);
            if asked {
                // TLS 1.2: the server refuses the empty certificate inside the handshake.
                report.client_certificate = "required".into();
            }
        }
        Ok(mut s) => {
            report.offered = true;
            report.negotiated_version = s
                .conn
                .protocol_version()
                .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."));
            report.negotiated_suite = s
                .conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()));
            let asked = full.client.asked.lock().map(|g| *g).unwrap_or(false);
            report.client_certificate = if !asked {
                "not requested".into()
            } else {
                // TLS 1.3: the server judges the (empty) client certificate after the client's
                // Finished; a refusal arrives as an alert on the first read. A DICOM server
                // that accepts waits for the A-ASSOCIATE-RQ, so the read times out instead.
                let _ = s
                    .sock
                    .set_read_timeout(Some(t.io.min(Duration::from_secs(5))));
                let mut b = [0u8; 1];
                match std::io::Read::read(&mut s, &mut b) {
                    Err(e) if alert_of(&e).is_some() => "required".into(),
                    Ok(0) => "required".into(),
                    _ => "optional".into(),
                }
            };
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
        }
    }
    let chain = full.recorder.chain.lock().ok().and_then(|g| g.clone());
    if let Some(chain) = chain {
        report.offered = true;
        report.certificate = judge_cert(&chain, host, ca);
    }
    if !report.offered {
        return Ok(report);
    }
    // 2. Each protocol version alone.
    for v in rustls::ALL_VERSIONS {
        let name = format!("{:?}", v.version).replace("TLSv1_", "TLSv1.");
        let b = build(ring::ALL_CIPHER_SUITES.to_vec(), &[*v])?;
        report
            .versions
            .push(tried(name, handshake(pacer, host, port, t, &b), &b));
    }
    // 3. Each suite alone, with its own version.
    for s in ring::ALL_CIPHER_SUITES {
        let name = format!("{:?}", s.suite());
        let b = build(vec![*s], &[s.version()])?;
        report
            .suites
            .push(tried(name, handshake(pacer, host, port, t, &b), &b));
    }
    Ok(report)
}

/// A handshake "accepted" the offer when it completed, or when it failed only because the
/// server wanted a client certificate (the version and suite were agreed by then).
fn tried(
    name: String,
    r: Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ProbeError>,
    b: &Built,
) -> Tried {
    match r {
        Ok(s) => {
            let _ = s.sock.shutdown(std::net::Shutdown::Both);
            Tried {
                name,
                accepted: true,
                detail: None,
            }
        }
        Err(e) => {
            let asked = b.client.asked.lock().map(|g| *g).unwrap_or(false);
            Tried {
                name,
                accepted: asked,
                detail: Some(if asked {
                    format!("agreed, then refused without a client certificate: {e}")
                } else {
                    e.to_string()
                }),
            }
        }
    }
}
