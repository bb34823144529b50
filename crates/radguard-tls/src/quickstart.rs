//! `radguard tls init DIR`: a local PKI for a quick start — a CA, a gateway certificate and
//! client certificates, all PEM, with the private keys written `0600` — and
//! `radguard tls issue DIR NAME` for one more client certificate from that CA later.
//!
//! Keys are ECDSA P-256 (every TLS 1.2/1.3 peer of interest, OpenSSL-based DCMTK and Orthanc
//! included, supports them). Nothing is ever overwritten: an existing target file is an error
//! before anything is written.
//!
//! Files in `DIR`: `ca.pem`, `ca-key.pem`, `gateway.pem`, `gateway-key.pem`,
//! `client-NAME.pem`, `client-NAME-key.pem` and `README.txt` (the [`Summary`] as text).

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::error::TlsError;
use crate::facts::PeerCertFacts;

/// How long the quick-start CA is valid.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long gateway and client certificates are valid.
pub const LEAF_VALIDITY_DAYS: i64 = 730;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ca,
    Gateway,
    Client,
}

/// One certificate written by the quick start, with its key file and facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issued {
    pub role: Role,
    /// The client name, `"gateway"` or `"ca"`.
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub facts: PeerCertFacts,
}

/// Everything `init_quickstart` wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub dir: PathBuf,
    pub ca: Issued,
    pub gateway: Issued,
    pub clients: Vec<Issued>,
}

/// Creates `dir` (if needed) and writes a CA, a gateway certificate valid for `localhost`,
/// `127.0.0.1`, `::1` and each of `gateway_names` (DNS names or IP addresses), and one client
/// certificate per name in `clients` (`[A-Za-z0-9_.-]{1,64}`; CN = the name, plus a DNS SAN when
/// the name is a valid DNS name). The gateway certificate may also be used as a client
/// certificate towards a TLS upstream.
pub fn init_quickstart(
    dir: &Path,
    gateway_names: &[String],
    clients: &[String],
) -> Result<Summary, TlsError> {
    let gateway_sans = gateway_sans(gateway_names)?;
    let mut seen: Vec<&str> = Vec::new();
    for c in clients {
        check_client_name(c)?;
        if seen.contains(&c.as_str()) {
            return Err(TlsError::InvalidName {
                name: c.clone(),
                why: "listed twice".into(),
            });
        }
        seen.push(c);
    }

    let mut targets = vec![
        dir.join("ca.pem"),
        dir.join("ca-key.pem"),
        dir.join("gateway.pem"),
        dir.join("gateway-key.pem"),
        dir.join("README.txt"),
    ];
    for c in clients {
        targets.push(dir.join(format!("client-{c}.pem")));
        targets.push(dir.join(format!("client-{c}-key.pem")));
    }
    for t in &targets {
        if t.exists() {
            return Err(TlsError::Exists(t.clone()));
        }
    }
    create_private_dir(dir)?;

    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let key_tag = crate::facts::sha256_hex(ca_key.public_key_raw());
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "Radguard quick start");
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "Radguard quick-start CA {} {}",
            now.date(),
            key_tag.get(..8).unwrap_or("")
        ),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = now - Duration::hours(1);
    ca_params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    ca_params.serial_number = Some(random_serial()?);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let (gw_cert_pem, gw_key_pem) = leaf(
        &issuer,
        gateway_names
            .first()
            .map(String::as_str)
            .unwrap_or("localhost"),
        gateway_sans.clone(),
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        now,
        now + Duration::days(LEAF_VALIDITY_DAYS),
    )?;

    write_public(&dir.join("ca.pem"), &ca_pem)?;
    write_private(&dir.join("ca-key.pem"), &issuer.key().serialize_pem())?;
    let ca = issued(Role::Ca, "ca", dir, "ca", &ca_pem)?;
    write_public(&dir.join("gateway.pem"), &gw_cert_pem)?;
    write_private(&dir.join("gateway-key.pem"), &gw_key_pem)?;
    let gateway = issued(Role::Gateway, "gateway", dir, "gateway", &gw_cert_pem)?;

    let mut issued_clients = Vec::new();
    for c in clients {
        issued_clients.push(write_client(
            &issuer,
            dir,
            c,
            now,
            now + Duration::days(LEAF_VALIDITY_DAYS),
        )?);
    }
    let summary = Summary {
        dir: dir.to_path_buf(),
        ca,
        gateway,
        clients: issued_clients,
    };
    write_public(&dir.join("README.txt"), &summary.render())?;
    Ok(summary)
}

/// Issues one more client certificate from the quick-start CA in `dir` (`ca.pem` +
/// `ca-key.pem`), valid from now for [`LEAF_VALIDITY_DAYS`].
pub fn issue_client(dir: &Path, name: &str) -> Result<Issued, TlsError> {
    let now = OffsetDateTime::now_utc();
    issue_client_valid(dir, name, now, now + Duration::days(LEAF_VALIDITY_DAYS))
}

/// [`issue_client`] with an explicit validity period (tests use it to make expired or
/// not-yet-valid certificates signed by the right CA).
pub fn issue_client_valid(
    dir: &Path,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, TlsError> {
    check_client_name(name)?;
    for t in [
        dir.join(format!("client-{name}.pem")),
        dir.join(format!("client-{name}-key.pem")),
    ] {
        if t.exists() {
            return Err(TlsError::Exists(t));
        }
    }
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| TlsError::io(&ca_path, e))?;
    let key_pem =
        std::fs::read_to_string(&ca_key_path).map_err(|e| TlsError::io(&ca_key_path, e))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| TlsError::pem(&ca_key_path, format!("not a usable CA key: {e}")))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| TlsError::Certificate {
        path: ca_path.clone(),
        what: e.to_string(),
    })?;
    write_client(&issuer, dir, name, not_before, not_after)
}

fn write_client(
    issuer: &Issuer<'_, KeyPair>,
    dir: &Path,
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Issued, TlsError> {
    let sans = if is_dns_name(name) {
        vec![SanType::DnsName(name.to_ascii_lowercase().try_into()?)]
    } else {
        Vec::new()
    };
    let (cert_pem, key_pem) = leaf(
        issuer,
        name,
        sans,
        &[ExtendedKeyUsagePurpose::ClientAuth],
        not_before,
        not_after,
    )?;
    let stem = format!("client-{name}");
    write_public(&dir.join(format!("{stem}.pem")), &cert_pem)?;
    write_private(&dir.join(format!("{stem}-key.pem")), &key_pem)?;
    issued(Role::Client, name, dir, &stem, &cert_pem)
}

/// A leaf certificate signed by `issuer`: (certificate PEM, private key PEM).
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    sans: Vec<SanType>,
    ekus: &[ExtendedKeyUsagePurpose],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Radguard quick start");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = ekus.to_vec();
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn issued(
    role: Role,
    name: &str,
    dir: &Path,
    stem: &str,
    cert_pem: &str,
) -> Result<Issued, TlsError> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| TlsError::pem(&cert_path, e.to_string()))?;
    Ok(Issued {
        role,
        name: name.to_string(),
        key_path: dir.join(format!("{stem}-key.pem")),
        facts: PeerCertFacts::from_der(&der)?,
        cert_path,
    })
}

/// `s` as a TOML basic string: quotes and backslashes escaped, control characters as `\uXXXX`.
pub(crate) fn toml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The AE title suggested for a client: its name in upper case, cut to 16 characters.
fn ae_title_for(name: &str) -> String {
    name.to_ascii_uppercase().chars().take(16).collect()
}

/// A positive 127-bit random serial number (RFC 5280 §4.1.2.2: at most 20 octets, positive).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Config("the system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn gateway_sans(names: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut out: Vec<SanType> = vec![SanType::DnsName("localhost".try_into()?)];
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(ip) = ip.parse::<IpAddr>() {
            out.push(SanType::IpAddress(ip));
        }
    }
    for name in names {
        let san = if let Ok(ip) = name.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(name) {
            SanType::DnsName(name.to_ascii_lowercase().try_into()?)
        } else {
            return Err(TlsError::InvalidName {
                name: name.clone(),
                why: "a gateway name must be a DNS name (e.g. radguard.hospital.example) or an IP address".into(),
            });
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

/// A DNS host name: labels of letters, digits and hyphens (not at either end), 1..=63 each,
/// 253 at most in all.
pub(crate) fn is_dns_name(s: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(label_ok)
}

fn check_client_name(name: &str) -> Result<(), TlsError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidName {
            name: name.to_string(),
            why: "a client name must match [A-Za-z0-9_.-]{1,64} and not start with '.'".into(),
        })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|e| TlsError::io(dir, e))
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => TlsError::Exists(path.to_path_buf()),
        _ => TlsError::io(path, e),
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| TlsError::io(path, e))
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    write_new(path, text, 0o600)
}

fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    write_new(path, text, 0o644)
}

impl Summary {
    /// A complete radguard.toml for a first TLS association: a TLS listener on
    /// 127.0.0.1:2762 with this PKI, one peer per client (AE title = the client name in upper
    /// case, from 127.0.0.1, echo and store, bound to its certificate's fingerprint), and the
    /// vault as the destination of called AE `RADGUARD`. Indented by two spaces.
    pub fn config_snippet(&self) -> String {
        let mut cfg = String::new();
        cfg.push_str(&format!(
            "[server]\ntls_listen = [\"127.0.0.1:2762\"]\n\n[server.tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
            toml_quote(&self.gateway.cert_path.display().to_string()),
            toml_quote(&self.gateway.key_path.display().to_string()),
            toml_quote(&self.ca.cert_path.display().to_string()),
        ));
        for c in &self.clients {
            cfg.push_str(&format!(
                "\n[[peer]]\nname = {}\nae_titles = [{}]\naddresses = [\"127.0.0.1\"]\nallow = [\"echo\", \"store\"]\nstore_sop_classes = [\"*\"]\ncert_sha256 = [\"{}\"]\n",
                toml_quote(&c.name),
                toml_quote(&ae_title_for(&c.name)),
                c.facts.sha256_hex
            ));
        }
        cfg.push_str("\n[[route]]\ncalled_ae = \"RADGUARD\"\nvault = true\n");
        let mut out = String::from(
            "A radguard.toml for a first TLS association (paths may also be relative to the\nconfig file; each client's AE title is its name in upper case):\n\n",
        );
        for line in cfg.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }

    /// The README text: every file, its SHA-256 fingerprint, and config and DCMTK snippets.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "Radguard quick-start PKI in {}\n\
             Private keys (*-key.pem) are mode 0600: keep them so. Keep ca-key.pem offline once\n\
             you have issued what you need (`radguard tls issue DIR NAME` issues more clients).\n\n",
            self.dir.display()
        ));
        let block = |out: &mut String, title: String, i: &Issued| {
            out.push_str(&format!("{title}\n"));
            out.push_str(&format!("  certificate: {}\n", i.cert_path.display()));
            out.push_str(&format!("  private key: {}\n", i.key_path.display()));
            if let Some(cn) = &i.facts.subject_cn {
                out.push_str(&format!("  subject CN:  {cn}\n"));
            }
            if !i.facts.sans.is_empty() {
                out.push_str(&format!("  SANs:        {}\n", i.facts.sans.join(", ")));
            }
            out.push_str(&format!("  SHA-256:     {}\n", i.facts.sha256_hex));
            out.push_str(&format!(
                "  valid until: {}\n\n",
                i.facts.not_after_rfc3339()
            ));
        };
        block(
            &mut out,
            "CA (clients and upstreams trust the gateway through it; the gateway trusts clients through it):".into(),
            &self.ca,
        );
        block(&mut out, "Gateway certificate:".into(), &self.gateway);
        for c in &self.clients {
            block(&mut out, format!("Client {:?}:", c.name), c);
        }
        out.push_str(&self.config_snippet());
        if let Some(c) = self.clients.first() {
            out.push_str(&format!(
                "\nA first TLS echo and store with DCMTK:\n\n  echoscu +tls {key} {cert} +cf {ca} -aet {ae} -aec RADGUARD localhost 2762\n  storescu +tls {key} {cert} +cf {ca} -aet {ae} -aec RADGUARD localhost 2762 image.dcm\n",
                key = c.key_path.display(),
                cert = c.cert_path.display(),
                ca = self.ca.cert_path.display(),
                ae = ae_title_for(&c.name),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["localhost", "radguard.hospital.example", "a-b.c1", "x"] {
            assert!(is_dns_name(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a_b", "é", &"a".repeat(64), "a b"] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn client_names() {
        for ok in ["ct01", "CT_01", "ws.2", "a-b"] {
            assert!(check_client_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(check_client_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gateway_san_list() {
        let sans =
            gateway_sans(&["GW.Example".into(), "10.0.0.5".into(), "::1".into()]).expect("sans");
        let text: Vec<String> = sans
            .iter()
            .map(|s| match s {
                SanType::DnsName(d) => d.to_string(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            text,
            ["localhost", "127.0.0.1", "::1", "gw.example", "10.0.0.5"]
        );
        assert!(gateway_sans(&["bad name".into()]).is_err());
    }

    #[test]
    fn toml_quoting() {
        assert_eq!(toml_quote("a"), "\"a\"");
        assert_eq!(toml_quote("C:\\x \"y\""), "\"C:\\\\x \\\"y\\\"\"");
        assert_eq!(toml_quote("a\tb\u{7f}"), "\"a\\u0009b\\u007F\"");
        assert_eq!(toml_quote("Müller e\u{301}"), "\"Müller e\u{301}\"");
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().expect("serial").to_bytes();
        let b = random_serial().expect("serial").to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] != 0);
        assert_ne!(a, b);
    }
}
