//! The `[vault]` section of the gateway's config file, read from the whole file so that every
//! problem is reported as `FILE:LINE:COL: field `vault.key`: message`.
//!
//! ```toml
//! [vault]
//! immutable = "auto"     # "auto" | "required" | "off": the immutable flag on object files
//! retention_days = 0     # how long objects stay immutable; 0 = for ever
//! ```

use serde::Deserialize;

use radguard_toml::{Placed, PlacedErrors, Seg};

/// Whether object files get the immutable inode flag ([`crate::lock`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Immutable {
    /// Lock where possible; where the file system or the capability does not allow it, store
    /// anyway and say so once at start.
    #[default]
    Auto,
    /// Refuse to start when the flag cannot be set (probed at open with a scratch file).
    Required,
    /// Never set the flag (objects are protected by file mode and the application only).
    Off,
}

impl Immutable {
    pub fn as_str(self) -> &'static str {
        match self {
            Immutable::Auto => "auto",
            Immutable::Required => "required",
            Immutable::Off => "off",
        }
    }
}

/// The longest retention the section accepts (100 years); `0` means for ever.
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// The `[vault]` table; every key is optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// `auto` (default), `required` or `off`.
    #[serde(default)]
    pub immutable: Immutable,
    /// Days an object stays immutable after it was stored; afterwards the maintenance pass
    /// (at start, then daily) clears its flag so that an operator may delete it. Radguard never
    /// deletes anything. `0` (default): for ever.
    #[serde(default)]
    pub retention_days: u32,
}

/// What is wrong with the `[vault]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    /// Longer than [`MAX_RETENTION_DAYS`].
    #[error("retention_days must be 0 (for ever) to {MAX_RETENTION_DAYS} (it is {0})")]
    RetentionDays(u32),
}

/// One problem in the `[vault]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;

/// Every problem found in the `[vault]` section (never empty when returned as an error), in
/// file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

/// Only the section this crate owns; the other keys of the file are other crates' business.
#[derive(Deserialize)]
struct Document {
    vault: Option<VaultConfig>,
}

impl VaultConfig {
    /// The settings `Vault::open` uses: no immutable flag (library users and tools that read
    /// a vault; the gateway opens with its `[vault]` section).
    pub const PLAIN: VaultConfig = VaultConfig {
        immutable: Immutable::Off,
        retention_days: 0,
    };

    /// Reads and checks the `[vault]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults.
    pub fn from_document(src: &str, file: &str) -> Result<VaultConfig, ConfigErrors> {
        radguard_toml::read_section(
            src,
            file,
            Problem::Toml,
            |doc: Document| doc.vault.unwrap_or_default(),
            |c: &VaultConfig| {
                let at = |key| vec![Seg::Key("vault"), Seg::Key(key)];
                c.problems()
                    .into_iter()
                    .map(|(key, p)| (at(key), p))
                    .collect()
            },
        )
    }

    /// What is wrong with the values (each with its key), whatever their origin.
    pub fn problems(&self) -> Vec<(&'static str, Problem)> {
        let mut out = Vec::new();
        if self.retention_days > MAX_RETENTION_DAYS {
            out.push((
                "retention_days",
                Problem::RetentionDays(self.retention_days),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = VaultConfig::from_document("", "f.toml").unwrap();
        assert_eq!(c.immutable, Immutable::Auto);
        assert_eq!(c.retention_days, 0);
        let c = VaultConfig::from_document(
            "[vault]\nimmutable = \"required\"\nretention_days = 3650\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(c.immutable, Immutable::Required);
        assert_eq!(c.retention_days, 3650);
        let c = VaultConfig::from_document("[vault]\nimmutable = \"off\"\n", "f.toml").unwrap();
        assert_eq!(c.immutable, Immutable::Off);
    }

    #[test]
    fn errors_are_placed() {
        let e =
            VaultConfig::from_document("[vault]\nimmutable = \"always\"\n", "f.toml").unwrap_err();
        let line = e.to_string();
        assert!(line.starts_with("f.toml:2:"), "{line}");
        assert!(line.contains("always"), "{line}");
        let e = VaultConfig::from_document("[vault]\n\nretention_days = 99999\n", "f.toml")
            .unwrap_err();
        let line = e.to_string();
        assert!(
            line.starts_with("f.toml:3:18: field `vault.retention_days`: retention_days must be"),
            "{line}"
        );
        let e = VaultConfig::from_document("[vault]\nlock = true\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = VaultConfig::from_document("[vault]\nretention_days = -1\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:2:"), "{e}");
    }
}
