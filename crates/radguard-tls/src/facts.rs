//! What a certificate says, as plain data: [`PeerCertFacts`] (SHA-256 fingerprint, subject CN,
//! subject alternative names, validity) from DER, from a PEM file, or from the leaf a TLS peer
//! presented; and [`SessionInfo`] (negotiated version and suite) for the audit trail.
//!
//! These facts are what the policy matches a peer on (`cert_sha256`, `cert_subject_cn`,
//! `cert_san`). They are taken only from a certificate that rustls has already verified: the
//! extraction itself verifies nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rustls::CommonState;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TlsError;
use crate::profile::load_certs;

/// The facts of one X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerCertFacts {
    /// SHA-256 over the certificate's DER encoding, 64 lowercase hex digits (what
    /// `openssl x509 -noout -fingerprint -sha256` prints, without colons, lowercased).
    pub sha256_hex: String,
    /// The first Common Name of the subject, when present and a UTF-8 compatible string.
    pub subject_cn: Option<String>,
    /// The whole subject, RFC 4514 style (for logs).
    pub subject: String,
    /// The whole issuer, RFC 4514 style (for logs).
    pub issuer: String,
    /// Subject alternative names: DNS names (lowercased), IP addresses (canonical text, e.g.
    /// `10.0.0.5`, `fd00::5`), URIs and e-mail addresses (as written). Other kinds are left out.
    pub sans: Vec<String>,
    /// The serial number, lowercase hex.
    pub serial_hex: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before_unix: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl PeerCertFacts {
    /// Parses one DER certificate. Trailing bytes after the certificate are refused.
    pub fn from_der(der: &[u8]) -> Result<Self, TlsError> {
        let (rest, cert) =
            X509Certificate::from_der(der).map_err(|e| TlsError::CertificateDer(e.to_string()))?;
        if !rest.is_empty() {
            return Err(TlsError::CertificateDer(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut sans = Vec::new();
        let san_ext = cert
            .subject_alternative_name()
            .map_err(|e| TlsError::CertificateDer(format!("subjectAltName: {e}")))?;
        if let Some(ext) = san_ext {
            for name in &ext.value.general_names {
                let text = match name {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
                    GeneralName::URI(u) => Some((*u).to_string()),
                    GeneralName::RFC822Name(m) => Some((*m).to_string()),
                    _ => None,
                };
                if let Some(text) = text {
                    sans.push(text);
                }
            }
        }
        let validity = cert.validity();
        Ok(PeerCertFacts {
            sha256_hex: sha256_hex(der),
            subject_cn,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            serial_hex: hex::encode(cert.raw_serial()),
            not_before_unix: validity.not_before.timestamp(),
            not_after_unix: validity.not_after.timestamp(),
        })
    }

    /// The fingerprint as OpenSSL prints it: uppercase hex pairs joined by colons.
    pub fn sha256_colons(&self) -> String {
        let upper = self.sha256_hex.to_ascii_uppercase();
        let pairs: Vec<&str> = upper
            .as_bytes()
            .chunks(2)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        pairs.join(":")
    }

    /// notAfter as RFC 3339 (UTC), e.g. `2027-05-01T12:00:00Z`.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after_unix)
    }

    /// notBefore as RFC 3339 (UTC).
    pub fn not_before_rfc3339(&self) -> String {
        rfc3339(self.not_before_unix)
    }

    /// Whether `unix_now` lies outside the validity period.
    pub fn is_outside_validity(&self, unix_now: i64) -> bool {
        unix_now < self.not_before_unix || unix_now > self.not_after_unix
    }
}

fn rfc3339(unix: i64) -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("@{unix}"))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Some(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    None
}

/// SHA-256 of `der`, 64 lowercase hex digits.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The facts of every certificate in a PEM file, in file order.
pub fn cert_file_facts(path: &Path) -> Result<Vec<PeerCertFacts>, TlsError> {
    load_certs(path)?
        .iter()
        .map(|der| {
            PeerCertFacts::from_der(der).map_err(|e| TlsError::Certificate {
                path: path.to_path_buf(),
                what: match e {
                    TlsError::CertificateDer(what) => what,
                    other => other.to_string(),
                },
            })
        })
        .collect()
}

/// The facts of the peer's leaf certificate after a completed handshake: `None` when the peer
/// presented no certificate (a client under [`crate::ClientAuth::Optional`]).
///
/// Works on a server or client connection (`&ServerConnection` and `&ClientConnection` coerce to
/// `&CommonState`), e.g. `peer_cert_facts(tls_stream.get_ref().1)` with tokio-rustls.
pub fn peer_cert_facts(conn: &CommonState) -> Result<Option<PeerCertFacts>, TlsError> {
    match conn.peer_certificates().and_then(|chain| chain.first()) {
        None => Ok(None),
        Some(leaf) => PeerCertFacts::from_der(leaf).map(Some),
    }
}

/// The negotiated protocol version and cipher suite, by their IANA names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub protocol: &'static str,
    /// e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher_suite: &'static str,
}

/// [`SessionInfo`] of a connection whose handshake is complete (`None` before).
pub fn session_info(conn: &CommonState) -> Option<SessionInfo> {
    let version = conn.protocol_version()?;
    let suite = conn.negotiated_cipher_suite()?;
    Some(SessionInfo {
        protocol: match version {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "other",
        },
        cipher_suite: suite.suite().as_str().unwrap_or("unknown"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn cert_with(params: &CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn facts_of_a_certificate() {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Radiology");
        params.distinguished_name.push(DnType::CommonName, "CT01");
        params.subject_alt_names = vec![
            SanType::DnsName("CT01.Hospital.Example".try_into().expect("dns")),
            SanType::IpAddress("10.1.2.3".parse().expect("ip")),
            SanType::IpAddress("fd00::5".parse().expect("ip")),
            SanType::URI("urn:oid:1.2.3".try_into().expect("uri")),
            SanType::Rfc822Name("pacs@hospital.example".try_into().expect("mail")),
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 12, 31);
        let der = cert_with(&params);
        let f = PeerCertFacts::from_der(&der).expect("facts");
        assert_eq!(f.sha256_hex, hex::encode(Sha256::digest(&der)));
        assert_eq!(f.sha256_hex.len(), 64);
        assert_eq!(f.subject_cn.as_deref(), Some("CT01"));
        assert!(f.subject.contains("CN=CT01"), "{}", f.subject);
        assert!(f.subject.contains("O=Radiology"), "{}", f.subject);
        assert_eq!(
            f.sans,
            [
                "ct01.hospital.example",
                "10.1.2.3",
                "fd00::5",
                "urn:oid:1.2.3",
                "pacs@hospital.example"
            ]
        );
        assert_eq!(f.not_before_rfc3339(), "2024-01-02T00:00:00Z");
        assert_eq!(f.not_after_rfc3339(), "2030-12-31T00:00:00Z");
        assert!(!f.is_outside_validity(1_800_000_000));
        assert!(f.is_outside_validity(1_600_000_000));
        assert!(f.is_outside_validity(2_000_000_000));
        let colons = f.sha256_colons();
        assert_eq!(colons.len(), 64 + 31);
        assert_eq!(colons.replace(':', "").to_ascii_lowercase(), f.sha256_hex);
    }

    #[test]
    fn no_cn_no_sans() {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Nobody");
        let f = PeerCertFacts::from_der(&cert_with(&params)).expect("facts");
        assert_eq!(f.subject_cn, None);
        assert!(f.sans.is_empty());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            PeerCertFacts::from_der(b""),
            Err(TlsError::CertificateDer(_))
        ));
        assert!(PeerCertFacts::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        let mut der = cert_with(&CertificateParams::default());
        der.push(0);
        let e = PeerCertFacts::from_der(&der).expect_err("trailing");
        assert!(e.to_string().contains("trailing"), "{e}");
        // Truncations never panic.
        let der = cert_with(&CertificateParams::default());
        for n in 0..der.len() {
            assert!(PeerCertFacts::from_der(&der[..n]).is_err());
        }
    }
}
