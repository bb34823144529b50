//! The `[audit]` configuration: serde structs (unknown keys are errors) read from the whole config
//! file by [`AuditConfig::from_document`], which reports every problem as
//! `FILE:LINE:COL: field `audit.key`: message` ([`ConfigError`]); then resolved into the store,
//! writer and exporter settings ([`AuditConfig::resolve`], at start).
//!
//! ```toml
//! [audit]
//! node = "gw-ct-1"                  # chain name; default: the host name
//! store = "sqlite"                  # or "postgresql"
//! sqlite_path = "audit.sqlite"      # relative to the data folder
//! # postgresql = "host=db.example.org user=radguard dbname=audit"   (password: PGPASSWORD-style
//! # postgresql_schema = "radguard"                                    connection string)
//! signing_key = "audit-signing.key" # created 0600 on first use
//! checkpoint_every = 1000
//! checkpoint_interval_secs = 60
//! on_store_failure = "refuse"       # or "continue"
//!
//! [[audit.syslog]]
//! transport = "tls"                 # RFC 5425; or "udp" (RFC 5426)
//! address = "siem.example.org:6514"
//! server_name = "siem.example.org"
//! ca_file = "/etc/radguard/siem-ca.pem"
//! client_cert = "/etc/radguard/gw.pem"
//! client_key = "/etc/radguard/gw.key"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::atna::AtnaSource;
use crate::checkpoint::AuditKey;
use crate::error::{AuditError, Result};
use crate::store::StoreSpec;
use crate::syslog::{ExporterOptions, SyslogFormat, SyslogTransport, TlsTarget};
use crate::writer::{FailurePolicy, WriterOptions};
use radguard_toml::{render, span_of, Placed, PlacedErrors, Seg};

/// Which store kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Postgresql,
}

/// Transport of one syslog receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Tls,
    Udp,
}

/// One `[[audit.syslog]]` receiver.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Name of this receiver's delivery cursor (default `syslog`, `syslog-2`, ...).
    pub name: Option<String>,
    pub transport: TransportKind,
    pub address: String,
    /// Default: the host part of `address`.
    pub server_name: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The `[audit]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `false` turns the audit trail off (no store, no syslog): for benchmarks and labs only;
    /// `radguard serve` says so loudly at start. Default `true`.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    pub node: Option<String>,
    #[serde(default)]
    pub store: StoreKind,
    pub sqlite_path: Option<PathBuf>,
    pub postgresql: Option<String>,
    pub postgresql_schema: Option<String>,
    pub signing_key: Option<PathBuf>,
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    #[serde(default = "default_interval")]
    pub checkpoint_interval_secs: u64,
    #[serde(default)]
    pub on_store_failure: FailurePolicy,
    pub enterprise_site_id: Option<String>,
    #[serde(default)]
    pub syslog: Vec<SyslogConfig>,
}

fn default_enabled() -> bool {
    true
}

fn default_every() -> u64 {
    1000
}

fn default_interval() -> u64 {
    60
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            node: None,
            store: StoreKind::Sqlite,
            sqlite_path: None,
            postgresql: None,
            postgresql_schema: None,
            signing_key: None,
            checkpoint_every: default_every(),
            checkpoint_interval_secs: default_interval(),
            on_store_failure: FailurePolicy::Refuse,
            enterprise_site_id: None,
            syslog: Vec::new(),
        }
    }
}

/// Settings ready to use.
#[derive(Debug, Clone)]
pub struct ResolvedAudit {
    pub store: StoreSpec,
    pub writer: WriterOptions,
    pub exporters: Vec<ExporterOptions>,
}

/// This machine's host name (the default node name), or `radguard`.
pub fn default_node() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "radguard".into())
}

fn rel(data: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        data.join(p)
    }
}

/// What is wrong with the `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    #[error("node {0:?}: printable ASCII without spaces, 1 to 255 characters")]
    Node(String),
    #[error("postgresql is set but store = \"sqlite\"")]
    PostgresqlWithSqlite,
    #[error("store = \"postgresql\" needs postgresql = \"...\"")]
    PostgresqlMissing,
    #[error("{0}")]
    Schema(String),
    #[error("must be at least 1")]
    Zero,
    #[error(
        "transport = \"tls\" needs ca_file (the CAs the receiver's certificate must chain to)"
    )]
    SyslogCaMissing,
    #[error(
        "invalid address {0:?} (expected host:port, e.g. siem.example.org:6514 or [fd00::5]:514)"
    )]
    SyslogAddress(String),
    #[error("give both client_cert and client_key, or neither")]
    SyslogClientPair,
    #[error("only for transport = \"tls\"")]
    SyslogTlsOnly,
    #[error("cannot read {}: {why}", path.display())]
    Unreadable { path: PathBuf, why: String },
}

/// One problem in the `[audit]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;

/// Every problem found in the `[audit]` section (never empty when returned as an error), in
/// file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

/// Only the section this crate owns; the other keys of the file are other crates' business.
#[derive(Deserialize)]
struct Document {
    audit: Option<AuditConfig>,
}

/// A problem found by [`AuditConfig::problems`]: the key it is about, where to point in the
/// file (the key itself, or a sibling when the key is missing), and what is wrong.
struct Found {
    field: Vec<Seg<'static>>,
    at: Vec<Seg<'static>>,
    problem: Problem,
}

impl Found {
    fn at(field: Vec<Seg<'static>>, problem: Problem) -> Found {
        Found {
            at: field.clone(),
            field,
            problem,
        }
    }
}

fn valid_node(node: &str) -> bool {
    !node.is_empty() && node.len() <= 255 && node.chars().all(|c| c.is_ascii_graphic())
}

/// `host:port` with a port in 1..=65535 and a non-empty host (IPv6 in brackets).
fn valid_address(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')))
                && port.parse::<u16>().is_ok_and(|p| p != 0)
        }
        None => false,
    }
}

/// Why `path` cannot be read as a file, if it cannot.
fn unreadable(path: &Path) -> Option<Problem> {
    let why = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Some("is a directory".to_string()),
        Ok(_) => std::fs::File::open(path).err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    why.map(|why| Problem::Unreadable {
        path: path.to_path_buf(),
        why,
    })
}

impl AuditConfig {
    /// Reads and checks the `[audit]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults. Every problem is reported, with its place: unknown
    /// keys and wrong types (the first one stops the reading), then every value that
    /// [`AuditConfig::resolve`] would refuse and every `[[audit.syslog]]` file that cannot be
    /// read. What needs the data folder (the store, the signing key) is opened at start.
    pub fn from_document(src: &str, file: &str) -> std::result::Result<AuditConfig, ConfigErrors> {
        let doc: Document = toml::from_str(src).map_err(|e| ConfigErrors {
            errors: vec![ConfigError::from_toml(src, file, &e, Problem::Toml)],
        })?;
        let config = doc.audit.unwrap_or_default();
        let mut errors: Vec<ConfigError> = config
            .problems(true)
            .into_iter()
            .map(|f| {
                let in_file = |path: &[Seg<'static>]| {
                    let mut full = vec![Seg::Key("audit")];
                    full.extend_from_slice(path);
                    full
                };
                let field = in_file(&f.field);
                let span =
                    span_of(src, &in_file(&f.at)).or_else(|| span_of(src, &[Seg::Key("audit")]));
                ConfigError::new(src, file, span, render(&field), f.problem)
            })
            .collect();
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| e.span.as_ref().map(|s| s.start));
            Err(ConfigErrors { errors })
        }
    }

    /// Every problem of the values (`files`: also whether the syslog TLS files can be read).
    fn problems(&self, files: bool) -> Vec<Found> {
        let key = |k: &'static str| vec![Seg::Key(k)];
        let mut out = Vec::new();
        if let Some(node) = &self.node {
            if !valid_node(node) {
                out.push(Found::at(key("node"), Problem::Node(node.clone())));
            }
        }
        match self.store {
            StoreKind::Sqlite if self.postgresql.is_some() => {
                out.push(Found::at(key("postgresql"), Problem::PostgresqlWithSqlite));
            }
            StoreKind::Postgresql if self.postgresql.is_none() => out.push(Found {
                field: key("postgresql"),
                at: key("store"),
                problem: Problem::PostgresqlMissing,
            }),
            _ => {}
        }
        if let Some(schema) = &self.postgresql_schema {
            if let Err(why) = crate::store::check_schema_name(schema) {
                out.push(Found::at(key("postgresql_schema"), Problem::Schema(why)));
            }
        }
        if self.checkpoint_every == 0 {
            out.push(Found::at(key("checkpoint_every"), Problem::Zero));
        }
        if self.checkpoint_interval_secs == 0 {
            out.push(Found::at(key("checkpoint_interval_secs"), Problem::Zero));
        }
        for (i, s) in self.syslog.iter().enumerate() {
            let at = |k: &'static str| vec![Seg::Key("syslog"), Seg::Index(i), Seg::Key(k)];
            if !valid_address(&s.address) {
                out.push(Found::at(
                    at("address"),
                    Problem::SyslogAddress(s.address.clone()),
                ));
            }
            if s.transport == TransportKind::Tls && s.ca_file.is_none() {
                out.push(Found {
                    field: at("ca_file"),
                    at: at("transport"),
                    problem: Problem::SyslogCaMissing,
                });
            }
            let files_of = [
                ("ca_file", &s.ca_file),
                ("client_cert", &s.client_cert),
                ("client_key", &s.client_key),
            ];
            for (k, path) in files_of {
                let Some(path) = path else { continue };
                if s.transport == TransportKind::Udp {
                    out.push(Found::at(at(k), Problem::SyslogTlsOnly));
                } else if let Some(problem) = files.then(|| unreadable(path)).flatten() {
                    out.push(Found::at(at(k), problem));
                }
            }
            match (&s.client_cert, &s.client_key) {
                (Some(_), None) => {
                    out.push(Found::at(at("client_cert"), Problem::SyslogClientPair))
                }
                (None, Some(_)) => out.push(Found::at(at("client_key"), Problem::SyslogClientPair)),
                _ => {}
            }
        }
        out
    }

    /// The store these settings name for a gateway whose data folder is `data_dir`, without
    /// touching the folder (readers such as `radguard alerts` must not create the signing key
    /// that [`AuditConfig::resolve`] creates).
    pub fn store_spec(&self, data_dir: &Path) -> Result<StoreSpec> {
        Ok(match self.store {
            StoreKind::Sqlite => StoreSpec::Sqlite(rel(
                data_dir,
                self.sqlite_path
                    .as_deref()
                    .unwrap_or(Path::new("audit.sqlite")),
            )),
            StoreKind::Postgresql => {
                let conn = self
                    .postgresql
                    .clone()
                    .ok_or_else(|| AuditError::Config(Problem::PostgresqlMissing.to_string()))?;
                StoreSpec::Postgres {
                    conn,
                    schema: self.postgresql_schema.clone(),
                }
            }
        })
    }

    /// Checks the table and resolves paths against `data_dir`; loads (or creates) the signing
    /// key. `ae_title` is the gateway's AE title, for the messages' `AETITLES=`.
    pub fn resolve(&self, data_dir: &Path, ae_title: Option<&str>) -> Result<ResolvedAudit> {
        // The same checks as `from_document` (a table built in code gets them too), the files
        // aside: the exporters open them and say so.
        if let Some(f) = self.problems(false).into_iter().next() {
            return Err(AuditError::Config(format!(
                "{}: {}",
                render(&f.field),
                f.problem
            )));
        }
        let node = self.node.clone().unwrap_or_else(default_node);
        if !valid_node(&node) {
            return Err(AuditError::Config(Problem::Node(node).to_string()));
        }
        let store = self.store_spec(data_dir)?;
        let key_path = rel(
            data_dir,
            self.signing_key
                .as_deref()
                .unwrap_or(Path::new("audit-signing.key")),
        );
        let key = AuditKey::load_or_create(&key_path)?;
        let mut writer = WriterOptions::new(node.clone());
        writer.key = Some(Arc::new(key));
        writer.checkpoint_every = self.checkpoint_every;
        writer.checkpoint_interval = Duration::from_secs(self.checkpoint_interval_secs);
        writer.on_store_failure = self.on_store_failure;
        let mut source = AtnaSource::new(node.clone());
        source.enterprise_site_id = self.enterprise_site_id.clone();
        source.ae_title = ae_title.map(str::to_string);
        let mut exporters = Vec::new();
        for (i, s) in self.syslog.iter().enumerate() {
            let transport = match s.transport {
                TransportKind::Udp => SyslogTransport::Udp {
                    address: s.address.clone(),
                },
                TransportKind::Tls => {
                    let ca_file = s.ca_file.clone().ok_or_else(|| {
                        AuditError::Config(format!(
                            "syslog {}: {}",
                            s.address,
                            Problem::SyslogCaMissing
                        ))
                    })?;
                    let host = s
                        .address
                        .rsplit_once(':')
                        .map_or(s.address.as_str(), |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string();
                    SyslogTransport::Tls(TlsTarget {
                        address: s.address.clone(),
                        server_name: s.server_name.clone().unwrap_or(host),
                        ca_file,
                        client_cert: s.client_cert.clone(),
                        client_key: s.client_key.clone(),
                    })
                }
            };
            let mut e = ExporterOptions::new(node.clone(), transport);
            e.sink = s.name.clone().unwrap_or_else(|| {
                if i == 0 {
                    "syslog".into()
                } else {
                    format!("syslog-{}", i + 1)
                }
            });
            e.format = SyslogFormat::new(node.clone());
            e.source = source.clone();
            exporters.push(e);
        }
        Ok(ResolvedAudit {
            store,
            writer,
            exporters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<AuditConfig, toml_like::Error> {
        toml_like::from_str(s)
    }

    // serde_json stands in for TOML here (the binary parses TOML; the shape is the same).
    mod toml_like {
        pub type Error = serde_json::Error;
        pub fn from_str(s: &str) -> Result<super::AuditConfig, Error> {
            serde_json::from_str(s)
        }
    }

    #[test]
    fn defaults_resolve_to_sqlite_in_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = parse(r#"{"node": "gw1"}"#).unwrap();
        let r = cfg.resolve(dir.path(), Some("RADGUARD")).unwrap();
        assert_eq!(r.store, StoreSpec::Sqlite(dir.path().join("audit.sqlite")));
        assert!(dir.path().join("audit-signing.key").exists());
        assert_eq!(r.writer.node, "gw1");
        assert_eq!(r.writer.on_store_failure, FailurePolicy::Refuse);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(parse(r#"{"nod": "x"}"#).is_err());
        assert!(parse(r#"{"on_store_failure": "ignore"}"#).is_err());
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            r#"{"node": "has space"}"#,
            r#"{"store": "postgresql"}"#,
            r#"{"postgresql": "host=x"}"#,
            r#"{"store": "postgresql", "postgresql": "host=x", "postgresql_schema": "a;b"}"#,
            r#"{"checkpoint_every": 0}"#,
            r#"{"syslog": [{"transport": "tls", "address": "h:6514"}]}"#,
        ] {
            let cfg = parse(bad).unwrap();
            assert!(cfg.resolve(dir.path(), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn syslog_receivers_get_their_own_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = parse(
            r#"{"node": "gw", "on_store_failure": "continue", "syslog": [
                {"transport": "tls", "address": "siem.example.org:6514", "ca_file": "/ca.pem"},
                {"transport": "udp", "address": "127.0.0.1:514"}]}"#,
        )
        .unwrap();
        let r = cfg.resolve(dir.path(), None).unwrap();
        assert_eq!(r.writer.on_store_failure, FailurePolicy::Continue);
        assert_eq!(r.exporters.len(), 2);
        assert_eq!(r.exporters[0].sink, "syslog");
        assert_eq!(r.exporters[1].sink, "syslog-2");
        match &r.exporters[0].transport {
            SyslogTransport::Tls(t) => assert_eq!(t.server_name, "siem.example.org"),
            other => panic!("{other:?}"),
        }
    }
}
