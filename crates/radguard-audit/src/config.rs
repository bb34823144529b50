//! The `[audit]` configuration: raw serde structs (unknown keys are errors), resolved into the
//! store, writer and exporter settings.
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
#[derive(Debug, Clone, Deserialize)]
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

/// The raw `[audit]` table.
#[derive(Debug, Clone, Deserialize)]
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

impl AuditConfig {
    /// Checks the table and resolves paths against `data_dir`; loads (or creates) the signing
    /// key. `ae_title` is the gateway's AE title, for the messages' `AETITLES=`.
    pub fn resolve(&self, data_dir: &Path, ae_title: Option<&str>) -> Result<ResolvedAudit> {
        let node = self.node.clone().unwrap_or_else(default_node);
        if node.is_empty() || node.len() > 255 || !node.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AuditError::Config(format!(
                "node {node:?}: printable ASCII without spaces, 1 to 255 characters"
            )));
        }
        let store = match self.store {
            StoreKind::Sqlite => {
                if self.postgresql.is_some() {
                    return Err(AuditError::Config(
                        "postgresql is set but store = \"sqlite\"".into(),
                    ));
                }
                StoreSpec::Sqlite(rel(
                    data_dir,
                    self.sqlite_path
                        .as_deref()
                        .unwrap_or(Path::new("audit.sqlite")),
                ))
            }
            StoreKind::Postgresql => {
                let conn = self.postgresql.clone().ok_or_else(|| {
                    AuditError::Config("store = \"postgresql\" needs postgresql = \"...\"".into())
                })?;
                if let Some(s) = &self.postgresql_schema {
                    crate::store::check_schema_name(s).map_err(AuditError::Config)?;
                }
                StoreSpec::Postgres {
                    conn,
                    schema: self.postgresql_schema.clone(),
                }
            }
        };
        if self.checkpoint_every == 0 || self.checkpoint_interval_secs == 0 {
            return Err(AuditError::Config(
                "checkpoint_every and checkpoint_interval_secs must be at least 1".into(),
            ));
        }
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
                        AuditError::Config(format!("syslog {}: TLS needs ca_file", s.address))
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
