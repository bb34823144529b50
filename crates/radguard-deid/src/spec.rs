//! The configuration of a de-identifying route (`deidentify = { ... }` in the gateway's
//! TOML) and of the CLI, in two stages: [`DeidSpec`] is the raw serde form (unknown keys are
//! errors), [`DeidSpec::build`] loads the key and the safe private list and resolves the
//! profile into a ready [`Deidentifier`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
