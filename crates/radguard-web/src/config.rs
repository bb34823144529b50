//! The `[admin]` section of the gateway's config file: the operator console's listener and who
//! may use it. Read from the whole file so that every problem is reported as
//! `FILE:LINE:COL: field `admin.key`: message`.
//!
//! ```toml
//! [admin]
//! enabled = true                 # default true
//! listen = "127.0.0.1:11180"     # default; another address needs TLS and tokens
//! tls_cert = "admin-cert.pem"    # PEM; relative to the config file's folder
//! tls_key = "admin-key.pem"
//!
//! [[admin.token]]
//! name = "alice"
//! role = "operator"              # or "viewer"
//! sha256 = "…64 hex digits…"     # `radguard admin hash-token` prints it
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use radguard_toml::{render, span_of, Placed, PlacedErrors, Seg};

/// The default admin listener: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11180";

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything the console shows.
    Viewer,
    /// Reads, and acknowledges alerts, removes blocks, reloads the config.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One `[[admin.token]]`: a bearer token known by its SHA-256 only (the token itself is never
/// in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// The token's SHA-256, 64 hex digits.
    pub sha256: String,
}

impl TokenEntry {
    /// The digest as bytes (`None` when `sha256` is not 64 hex digits; `problems` says so).
    pub fn digest(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.sha256.trim(), &mut out).ok()?;
        Some(out)
    }
}

/// The `[admin]` table as written; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: Option<bool>,
    listen: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// The `[admin]` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Start the admin listener (default true).
    pub enabled: bool,
    /// Where it listens (default [`DEFAULT_LISTEN`]).
    pub listen: SocketAddr,
    /// PEM certificate chain and key: the console over HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The bearer tokens; none: every client is the built-in `local` operator (loopback only).
    pub tokens: Vec<TokenEntry>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 11180)),
            tls_cert: None,
            tls_key: None,
            tokens: Vec::new(),
        }
    }
}

/// What is wrong with the `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    #[error("{0:?} is not an address and port (e.g. \"127.0.0.1:11180\")")]
    Listen(String),
    /// Anyone who can reach a non-loopback listener could read the console (patients' traffic,
    /// the audit trail) and change the gateway's security configuration, in clear text.
    #[error(
        "{0} is not a loopback address: the console there needs tls_cert, tls_key and at least \
         one [[admin.token]] (an open console would let anyone on the network read the audit \
         trail and remove blocks)"
    )]
    Exposed(SocketAddr),
    #[error("tls_cert and tls_key go together")]
    TlsPair,
    #[error("sha256 must be 64 hex digits (`radguard admin hash-token` prints it)")]
    Digest,
    #[error("the name must be 1 to 64 printable characters")]
    Name,
    #[error("token name {0:?} is used twice")]
    DuplicateName(String),
    #[error("the same token (sha256) is listed twice")]
    DuplicateToken,
}

/// One problem in the `[admin]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;

/// Every problem found in the `[admin]` section (never empty when returned as an error).
pub type ConfigErrors = PlacedErrors<ConfigError>;

/// Only the section this crate owns.
#[derive(Deserialize)]
struct Document {
    admin: Option<RawAdmin>,
}

impl AdminConfig {
    /// Reads and checks the `[admin]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults. Relative certificate paths are kept as written
    /// ([`AdminConfig::resolve_paths`]).
    pub fn from_document(src: &str, file: &str) -> Result<AdminConfig, ConfigErrors> {
        let doc: Document = toml::from_str(src).map_err(|e| ConfigErrors {
            errors: vec![ConfigError::from_toml(src, file, &e, Problem::Toml)],
        })?;
        let raw = doc.admin.unwrap_or_default();
        let mut errors = Vec::new();
        let mut place = |path: &[Seg<'_>], p: Problem| {
            errors.push(ConfigError::new(
                src,
                file,
                span_of(src, path),
                render(path),
                p,
            ))
        };
        let listen = match raw.listen.as_deref() {
            None => AdminConfig::default().listen,
            Some(s) => match s.trim().parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    place(
                        &[Seg::Key("admin"), Seg::Key("listen")],
                        Problem::Listen(s.into()),
                    );
                    AdminConfig::default().listen
                }
            },
        };
        if raw.tls_cert.is_some() != raw.tls_key.is_some() {
            let key = if raw.tls_cert.is_some() {
                "tls_cert"
            } else {
                "tls_key"
            };
            place(&[Seg::Key("admin"), Seg::Key(key)], Problem::TlsPair);
        }
        let mut names = std::collections::BTreeSet::new();
        let mut digests = std::collections::BTreeSet::new();
        for (i, t) in raw.token.iter().enumerate() {
            let at = |k| {
                [
                    Seg::Key("admin"),
                    Seg::Key("token"),
                    Seg::Index(i),
                    Seg::Key(k),
                ]
            };
            let name_ok = !t.name.is_empty()
                && t.name.chars().count() <= 64
                && !t.name.chars().any(char::is_control);
            if !name_ok {
                place(&at("name"), Problem::Name);
            } else if !names.insert(t.name.clone()) {
                place(&at("name"), Problem::DuplicateName(t.name.clone()));
            }
            match t.digest() {
                None => place(&at("sha256"), Problem::Digest),
                Some(d) => {
                    if !digests.insert(d) {
                        place(&at("sha256"), Problem::DuplicateToken);
                    }
                }
            }
        }
        let enabled = raw.enabled.unwrap_or(true);
        let secured = raw.tls_cert.is_some() && raw.tls_key.is_some() && !raw.token.is_empty();
        if enabled && !listen.ip().is_loopback() && !secured {
            place(
                &[Seg::Key("admin"), Seg::Key("listen")],
                Problem::Exposed(listen),
            );
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
            return Err(ConfigErrors { errors });
        }
        Ok(AdminConfig {
            enabled,
            listen,
            tls_cert: raw.tls_cert,
            tls_key: raw.tls_key,
            tokens: raw.token,
        })
    }

    /// Relative `tls_cert`/`tls_key` against the config file's folder.
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        for p in [&mut self.tls_cert, &mut self.tls_key]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
    }

    /// True when clients must present a token.
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// The hex SHA-256 of a token, as `[[admin.token]] sha256` wants it (surrounding whitespace,
/// e.g. the newline of `echo`, is not part of the token).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_section() {
        let c = AdminConfig::from_document("[server]\n", "f.toml").unwrap();
        assert_eq!(c, AdminConfig::default());
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn exposed_listener_is_refused_with_its_place() {
        let src = "[admin]\nlisten = \"0.0.0.0:11180\"\n";
        let e = AdminConfig::from_document(src, "f.toml").unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("f.toml:2:10: field `admin.listen`: 0.0.0.0:11180 is not a loopback"),
            "{line}"
        );
        // TLS and a token make it acceptable.
        let ok = format!(
            "[admin]\nlisten = \"0.0.0.0:11180\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             [[admin.token]]\nname = \"a\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            hash_token("secret")
        );
        let c = AdminConfig::from_document(&ok, "f.toml").unwrap();
        assert_eq!(c.tokens[0].role, Role::Viewer);
        assert!(c.requires_tokens());
    }

    #[test]
    fn bad_tokens_are_placed() {
        let src = "[admin]\n[[admin.token]]\nname = \"a\"\nrole = \"operator\"\nsha256 = \"zz\"\n";
        let e = AdminConfig::from_document(src, "f.toml").unwrap_err();
        assert!(
            e.to_string()
                .contains("f.toml:5:10: field `admin.token[0].sha256`"),
            "{e}"
        );
        let src = "[admin]\n[[admin.token]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"zz\"\n";
        let e = AdminConfig::from_document(src, "f.toml").unwrap_err();
        assert!(e.to_string().contains("f.toml:4:"), "{e}");
        let src = "[admin]\nport = 1\n";
        let e = AdminConfig::from_document(src, "f.toml").unwrap_err();
        assert!(e.to_string().contains("admin.port"), "{e}");
    }

    #[test]
    fn hash_is_sha256_hex_of_trimmed_token() {
        assert_eq!(
            hash_token("abc\n"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
