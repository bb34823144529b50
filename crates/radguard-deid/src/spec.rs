//! The configuration of a de-identifying route (`deidentify = { ... }` in the gateway's
//! TOML) and of the CLI, in two stages: [`DeidSpec`] is the typed form, [`DeidSpec::build`]
//! loads the key and the safe private list and resolves the profile into a ready
//! [`Deidentifier`].
//!
//! In a config file the table is read as a [`DeidTable`] (unknown keys are errors, every value
//! keeps its byte range in the file) and checked by [`DeidTable::check`], which reports every
//! problem as a [`TableError`] at the value it is about, so that the config loader can print
//! it as `FILE:LINE:COL`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use crate::keys::{KeyError, SiteKey};
use crate::profile::{
    BurnedInPolicy, DeidOption, Profile, ProfileError, ProfileName, SafePrivateList,
};
use crate::stream::DEFAULT_HEAD_CAP;
use crate::transform::Deidentifier;

/// `deidentify = { profile = "basic", options = ["retain-uids"], key_file = "/etc/radguard/deid.key" }`
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidSpec {
    /// Only `basic` exists.
    #[serde(default)]
    pub profile: ProfileName,
    /// Option names as on the command line: `retain-uids`, `retain-long-modified-dates`, ...
    #[serde(default)]
    pub options: Vec<DeidOption>,
    /// The per-site secret (at least 16 bytes). Required: no key, no de-identification.
    pub key_file: PathBuf,
    /// With `retain-safe-private`: lines `GGGG,"CREATOR",EE` naming safe private attributes.
    #[serde(default)]
    pub safe_private_file: Option<PathBuf>,
    /// `refuse` (default) or `allow` instances with burned-in annotation.
    #[serde(default)]
    pub burned_in: BurnedInPolicy,
    /// Cap on the bytes held before Pixel Data, in MiB (default 16).
    #[serde(default)]
    pub max_head_mib: Option<usize>,
}

/// Why a spec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot read the safe private list {path}: {source}")]
    SafePrivate {
        path: String,
        source: std::io::Error,
    },
    #[error("safe_private_file is set but option retain-safe-private is not")]
    SafePrivateWithoutOption,
    #[error("max_head_mib must be between 1 and 1024")]
    HeadCap,
    #[error("missing required key `key_file` (the per-site secret: no key, no de-identification)")]
    MissingKeyFile,
}

/// A route's `deidentify = { ... }` table as written in a config file: the keys of
/// [`DeidSpec`], each value with its byte range in the file. Unknown keys and values of the
/// wrong type (an unknown profile or option name) are deserialization errors, which the TOML
/// parser places itself.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeidTable {
    profile: Option<Spanned<ProfileName>>,
    options: Option<Spanned<Vec<DeidOption>>>,
    key_file: Option<Spanned<PathBuf>>,
    safe_private_file: Option<Spanned<PathBuf>>,
    burned_in: Option<Spanned<BurnedInPolicy>>,
    max_head_mib: Option<Spanned<usize>>,
}

/// A problem found by [`DeidTable::check`], at the value it is about.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct TableError {
    /// Byte range in the config file: the offending value, or the whole table for a missing
    /// key.
    pub span: Range<usize>,
    /// The key it is about (`key_file`, `options`, ...), relative to the table.
    pub key: &'static str,
    pub error: SpecError,
}

impl DeidTable {
    /// Checks everything [`DeidSpec::build`] would (the profile options together, the key file
    /// readable and long enough, the safe private list readable and well formed, the head cap),
    /// collecting every problem. `table` is the byte range of the whole table (where a missing
    /// `key_file` is reported); relative paths are resolved against `base_dir` (the config
    /// file's folder). The spec returned holds the resolved paths.
    pub fn check(&self, table: Range<usize>, base_dir: &Path) -> Result<DeidSpec, Vec<TableError>> {
        let mut errors = Vec::new();
        let profile = self
            .profile
            .as_ref()
            .map(|p| *p.get_ref())
            .unwrap_or_default();
        let options = self
            .options
            .as_ref()
            .map(|o| o.get_ref().clone())
            .unwrap_or_default();
        if let Err(e) = Profile::new(profile, options.iter().copied()) {
            let span = self.options.as_ref().map_or(table.clone(), Spanned::span);
            errors.push(TableError {
                span,
                key: "options",
                error: e.into(),
            });
        }
        let safe_private_file = self.safe_private_file.as_ref().map(|v| {
            let path = base_dir.join(v.get_ref());
            let problem = if !options.contains(&DeidOption::RetainSafePrivate) {
                Some(SpecError::SafePrivateWithoutOption)
            } else {
                read_safe_private(&path).err()
            };
            if let Some(error) = problem {
                errors.push(TableError {
                    span: v.span(),
                    key: "safe_private_file",
                    error,
                });
            }
            path
        });
        let key_file = match &self.key_file {
            None => {
                errors.push(TableError {
                    span: table,
                    key: "key_file",
                    error: SpecError::MissingKeyFile,
                });
                None
            }
            Some(v) => {
                let path = base_dir.join(v.get_ref());
                if let Err(e) = SiteKey::from_file(&path) {
                    errors.push(TableError {
                        span: v.span(),
                        key: "key_file",
                        error: e.into(),
                    });
                }
                Some(path)
            }
        };
        let spec = DeidSpec {
            profile,
            options,
            key_file: key_file.unwrap_or_default(),
            safe_private_file,
            burned_in: self
                .burned_in
                .as_ref()
                .map(|b| *b.get_ref())
                .unwrap_or_default(),
            max_head_mib: self.max_head_mib.as_ref().map(|m| *m.get_ref()),
        };
        if let (Err(error), Some(m)) = (spec.head_cap(), &self.max_head_mib) {
            errors.push(TableError {
                span: m.span(),
                key: "max_head_mib",
                error,
            });
        }
        if errors.is_empty() {
            Ok(spec)
        } else {
            errors.sort_by_key(|e| e.span.start);
            Err(errors)
        }
    }
}

impl DeidSpec {
    /// Resolve the profile, read the key and the safe private list.
    pub fn build(&self) -> Result<Arc<Deidentifier>, SpecError> {
        let mut profile = Profile::new(self.profile, self.options.iter().copied())?
            .with_burned_in(self.burned_in);
        if let Some(path) = &self.safe_private_file {
            if !profile.has(DeidOption::RetainSafePrivate) {
                return Err(SpecError::SafePrivateWithoutOption);
            }
            profile = profile.with_safe_private(read_safe_private(path)?);
        }
        let key = SiteKey::from_file(&self.key_file)?;
        self.head_cap()?;
        Ok(Arc::new(Deidentifier::new(profile, key)))
    }

    /// The head cap in bytes.
    pub fn head_cap(&self) -> Result<usize, SpecError> {
        match self.max_head_mib {
            None => Ok(DEFAULT_HEAD_CAP),
            Some(m) if (1..=1024).contains(&m) => Ok(m * 1024 * 1024),
            Some(_) => Err(SpecError::HeadCap),
        }
    }
}

fn read_safe_private(path: &Path) -> Result<SafePrivateList, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::SafePrivate {
        path: path.display().to_string(),
        source,
    })?;
    Ok(SafePrivateList::parse(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Route {
        deidentify: DeidSpec,
    }

    #[test]
    fn parses_route_toml_and_builds() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "00112233445566778899aabbccddeeff\n").unwrap();
        let text = format!(
            "deidentify = {{ profile = \"basic\", options = [\"retain-uids\", \"retain-long-modified-dates\"], key_file = {:?} }}",
            key.display().to_string()
        );
        let r: Route = toml_parse(&text);
        assert_eq!(
            r.deidentify.options,
            vec![DeidOption::RetainUids, DeidOption::RetainLongModifiedDates]
        );
        let d = r.deidentify.build().unwrap();
        assert!(d.profile().has(DeidOption::RetainUids));
        assert_eq!(d.map_uid("1.2.3"), "1.2.3");
    }

    fn toml_parse(s: &str) -> Route {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn unknown_keys_and_missing_key_are_errors() {
        let r: Result<DeidSpec, _> =
            serde_json::from_str(r#"{"profile":"basic","key_file":"/k","colour":"red"}"#);
        assert!(r.is_err());
        let r: Result<DeidSpec, _> = serde_json::from_str(r#"{"profile":"basic"}"#);
        assert!(r.is_err(), "key_file is required");
        let s: DeidSpec =
            serde_json::from_str(r#"{"key_file":"/nonexistent/radguard.key"}"#).unwrap();
        assert!(matches!(s.build(), Err(SpecError::Key(_))));
    }
}
