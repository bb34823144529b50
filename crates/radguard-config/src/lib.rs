//! Radguard's config file, read whole: each section is validated by the crate that owns it, and
//! every problem of every section comes back at once, in file order, as
//! `FILE:LINE:COL: field `path`: message` (docs/config.md).
//!
//! | section | owner | type |
//! |---|---|---|
//! | `[server]` (and `[server.tls]`), `[[peer]]`, `[[route]]`, `[[user]]`, `[jwt]` | radguard-policy | [`Config`] |
//! | a route's `deidentify = { ... }` | radguard-deid, through radguard-policy | `radguard_deid::DeidSpec` in each `RouteEntry` |
//! | `[audit]` | radguard-audit | [`AuditConfig`] |
//! | `[ledger]` | radguard-ledger | [`LedgerConfig`] |
//! | `[detect]`, `[[detect.rule]]` | radguard-detect | [`DetectConfig`] |
//! | `[admin]`, `[[admin.token]]` | radguard-web | [`AdminConfig`] |
//! | `[guard]`, `[[guard.limit]]` | radguard-guard | [`GuardConfig`] |
//! | `[vault]` | radguard-vault | [`VaultConfig`] |
//! | `[scrub]` | radguard-vault | [`ScrubConfig`] |
//!
//! This crate only composes: it reads the file once, hands the text to each section's loader
//! and merges their errors ([`ConfigErrors`]). A syntax error is reported once (by the policy's
//! loader), not by every section. What needs the gateway's data folder (the audit store and
//! signing key, the ledger) or builds TLS configurations is done at start by the binary.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

use std::path::Path;

pub use radguard_audit::config::AuditConfig;
pub use radguard_detect::DetectConfig;
pub use radguard_guard::GuardConfig;
pub use radguard_ledger::LedgerConfig;
pub use radguard_policy::Config;
pub use radguard_vault::scrub::ScrubConfig;
pub use radguard_vault::VaultConfig;
pub use radguard_web::AdminConfig;

/// A config file, every section validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// `[server]`, the peers, routes (with their `deidentify`), users and `[jwt]`.
    pub config: Config,
    /// `[audit]` (its defaults when the file has none).
    pub audit: AuditConfig,
    /// `[ledger]` (its defaults when the file has none).
    pub ledger: LedgerConfig,
    /// `[detect]` and its rules (detection on with the default rules when the file has none).
    pub detect: DetectConfig,
    /// `[admin]`: the operator console (on, loopback, no tokens when the file has none).
    pub admin: AdminConfig,
    /// `[guard]`: protocol limits, approvers, worklist checks (its defaults when the file has
    /// none).
    pub guard: GuardConfig,
    /// `[vault]`: the immutable flag on vault objects and its retention (its defaults when the
    /// file has none).
    pub vault: VaultConfig,
    /// `[scrub]`: the vault's continuous re-check (on, 8 MiB/s, when the file has none).
    pub scrub: ScrubConfig,
}

impl Loaded {
    /// The embedded default ([`radguard_policy::EMBEDDED_DEFAULT_TOML`]): no `[audit]`,
    /// `[ledger]`, `[detect]` or `[admin]`, so all take their defaults (detection on, default
    /// rules, the console on loopback).
    pub fn embedded_default() -> Loaded {
        Loaded {
            config: Config::embedded_default(),
            audit: AuditConfig::default(),
            ledger: LedgerConfig::default(),
            detect: DetectConfig::default(),
            admin: AdminConfig::default(),
            guard: GuardConfig::default(),
            vault: VaultConfig::default(),
            scrub: ScrubConfig::default(),
        }
    }

    /// The keys of `new` whose change a reload cannot apply to a running gateway
    /// ([`Config::restart_needed`]: listeners, AE title, caps, timeouts, `on_revoke`), and
    /// `[audit]`, `[ledger]`, `[detect]`, `[admin]`, `[guard]` and `[scrub]` when their settings differ (the detectors are built
    /// at start with their tables). A reload that changes any of them is refused whole, naming
    /// them.
    pub fn restart_needed(&self, new: &Loaded) -> Vec<&'static str> {
        let mut keys = self.config.restart_needed(&new.config);
        if self.audit != new.audit {
            keys.push("[audit]");
        }
        if self.ledger != new.ledger {
            keys.push("[ledger]");
        }
        if self.detect != new.detect {
            keys.push("[detect]");
        }
        // The admin listener is bound at start with its certificate and tokens.
        if self.admin != new.admin {
            keys.push("[admin]");
        }
        // The guard is built at start with its approvals and dose accumulator.
        if self.guard != new.guard {
            keys.push("[guard]");
        }
        // The vault is opened (and probed) at start.
        if self.vault != new.vault {
            keys.push("[vault]");
        }
        // The scrub task is started with its rate and thresholds.
        if self.scrub != new.scrub {
            keys.push("[scrub]");
        }
        keys
    }
}

/// One problem, from the section that found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `[server]`, `[[peer]]`, `[[route]]` (`deidentify` included), `[[user]]`, `[jwt]`; also
    /// a file that cannot be read and a syntax error.
    #[error(transparent)]
    Policy(radguard_policy::ConfigError),
    /// `[audit]`.
    #[error(transparent)]
    Audit(radguard_audit::config::ConfigError),
    /// `[ledger]`.
    #[error(transparent)]
    Ledger(radguard_ledger::config::ConfigError),
    /// `[detect]` and `[[detect.rule]]`.
    #[error(transparent)]
    Detect(radguard_detect::config::ConfigError),
    /// `[admin]` and `[[admin.token]]`.
    #[error(transparent)]
    Admin(radguard_web::config::ConfigError),
    /// `[guard]` and `[[guard.limit]]`.
    #[error(transparent)]
    Guard(radguard_guard::config::ConfigError),
    /// `[vault]`.
    #[error(transparent)]
    Vault(radguard_vault::config::ConfigError),
    /// `[scrub]`.
    #[error(transparent)]
    Scrub(radguard_vault::scrub::ConfigError),
}

impl ConfigError {
    /// 1-based line, when the problem has a place in the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Policy(e) => e.line,
            ConfigError::Audit(e) => e.line,
            ConfigError::Ledger(e) => e.line,
            ConfigError::Detect(e) => e.line,
            ConfigError::Admin(e) => e.line,
            ConfigError::Guard(e) => e.line,
            ConfigError::Vault(e) => e.line,
            ConfigError::Scrub(e) => e.line,
        }
    }

    /// 1-based column (in characters), when the problem has a place in the file.
    pub fn col(&self) -> Option<usize> {
        match self {
            ConfigError::Policy(e) => e.col,
            ConfigError::Audit(e) => e.col,
            ConfigError::Ledger(e) => e.col,
            ConfigError::Detect(e) => e.col,
            ConfigError::Admin(e) => e.col,
            ConfigError::Guard(e) => e.col,
            ConfigError::Vault(e) => e.col,
            ConfigError::Scrub(e) => e.col,
        }
    }

    /// The key path (`route[1].deidentify.key_file`, `audit.node`); empty when none applies.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Policy(e) => &e.field,
            ConfigError::Audit(e) => &e.field,
            ConfigError::Ledger(e) => &e.field,
            ConfigError::Detect(e) => &e.field,
            ConfigError::Admin(e) => &e.field,
            ConfigError::Guard(e) => &e.field,
            ConfigError::Vault(e) => &e.field,
            ConfigError::Scrub(e) => &e.field,
        }
    }
}

/// Every problem of every section (never empty when returned as an error), in file order;
/// problems without a place (no `[[peer]]` at all, an unreadable file) last. One line per
/// error, `FILE:LINE:COL: field `path`: message`.
pub type ConfigErrors = radguard_toml::PlacedErrors<ConfigError>;

/// Reads a config file and validates every section. Relative paths in the policy's sections
/// (certificates, keys, `deidentify` files) are resolved against the file's folder. A file
/// that cannot be read is one error without a line.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    let origin = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new(""));
    match std::fs::read_to_string(path) {
        Ok(src) => parse_config_in(&src, &origin, base),
        // Worded as the policy's own loader words it.
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError::Policy(radguard_policy::ConfigError::unplaced(
                &origin,
                format!("cannot read config file: {e}"),
            ))],
        }),
    }
}

/// Validates the config text `src` (named `origin` in errors; relative paths resolved against
/// `base_dir`): every section, every error.
pub fn parse_config_in(src: &str, origin: &str, base_dir: &Path) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let config = radguard_policy::parse_config_in(src, origin, base_dir)
        .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Policy)))
        .ok();
    // A file that is not TOML at all: the policy's loader has said where; the other sections
    // would only say it again.
    let syntax_ok = src.parse::<toml::Table>().is_ok();
    let audit = if syntax_ok {
        AuditConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Audit)))
            .ok()
    } else {
        None
    };
    let ledger = if syntax_ok {
        LedgerConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Ledger)))
            .ok()
    } else {
        None
    };
    let detect = if syntax_ok {
        DetectConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Detect)))
            .ok()
    } else {
        None
    };
    let admin = if syntax_ok {
        AdminConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Admin)))
            .ok()
            .map(|mut a| {
                a.resolve_paths(base_dir);
                a
            })
    } else {
        None
    };
    let guard = if syntax_ok {
        GuardConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Guard)))
            .ok()
    } else {
        None
    };
    let vault = if syntax_ok {
        VaultConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Vault)))
            .ok()
    } else {
        None
    };
    let scrub = if syntax_ok {
        ScrubConfig::from_document(src, origin)
            .map_err(|e| errors.extend(e.errors.into_iter().map(ConfigError::Scrub)))
            .ok()
    } else {
        None
    };
    match (config, audit, ledger, detect, admin, guard, vault, scrub) {
        (
            Some(config),
            Some(audit),
            Some(ledger),
            Some(detect),
            Some(admin),
            Some(guard),
            Some(vault),
            Some(scrub),
        ) if errors.is_empty() => Ok(Loaded {
            config,
            audit,
            ledger,
            detect,
            admin,
            guard,
            vault,
            scrub,
        }),
        _ => {
            // Stable: errors at the same place keep their section order.
            errors.sort_by_key(|e| (e.line().is_none(), e.line(), e.col()));
            Err(ConfigErrors { errors })
        }
    }
}
