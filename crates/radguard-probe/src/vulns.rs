//! The implementation identity of a peer (PS3.7 D.3.3.2) mapped to a toolkit and version, and
//! the version to known vulnerabilities, from `data/vulns.toml` (kept as data, each entry with
//! the page its facts were checked against).

use serde::Deserialize;

use crate::ProbeError;

/// The table shipped with the binary.
pub const TABLE_TOML: &str = include_str!("../data/vulns.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toolkit {
    pub name: String,
    pub class_uid_prefix: String,
    pub version_name_prefix: String,
    /// `class-uid` (the suffix after the prefix), `version-name` (after its prefix) or
    /// `version-name-digits` (each digit after the prefix one component: 367 = 3.6.7).
    pub version_from: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Vuln {
    pub id: String,
    pub toolkit: String,
    pub component: String,
    pub affected: String,
    pub severity: String,
    pub summary: String,
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub toolkit: Vec<Toolkit>,
    pub vuln: Vec<Vuln>,
}

/// A vulnerability that applies, with the version it was matched on and where that version
/// came from (`association`: the peer's A-ASSOCIATE-AC; `--product`: the operator).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub vuln: Vuln,
    pub version: String,
    pub from: String,
}

/// What the peer's identity says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub toolkit: String,
    pub version: Option<String>,
}

impl Table {
    /// The shipped table; its consistency is a unit test.
    pub fn shipped() -> Result<Table, ProbeError> {
        let t: Table = toml::from_str(TABLE_TOML).map_err(|e| ProbeError::Table(e.to_string()))?;
        for v in &t.vuln {
            if parse_range(&v.affected).is_none() {
                return Err(ProbeError::Table(format!(
                    "{}: bad affected range {:?}",
                    v.id, v.affected
                )));
            }
        }
        Ok(t)
    }

    /// Maps an implementation class UID / version name to a toolkit and version.
    pub fn identify(
        &self,
        class_uid: Option<&str>,
        version_name: Option<&str>,
    ) -> Option<Identity> {
        let class_uid = class_uid.unwrap_or("");
        let version_name = version_name.unwrap_or("");
        let tk = self.toolkit.iter().find(|t| {
            class_uid.starts_with(&t.class_uid_prefix)
                || (!version_name.is_empty() && version_name.starts_with(&t.version_name_prefix))
        })?;
        let version = match tk.version_from.as_str() {
            "class-uid" => class_uid
                .strip_prefix(&tk.class_uid_prefix)
                .filter(|v| !v.is_empty())
                .map(str::to_string),
            "version-name" => version_name
                .strip_prefix(&tk.version_name_prefix)
                .map(|v| v.trim().to_string()),
            _ => version_name.strip_prefix(&tk.version_name_prefix).map(|d| {
                d.chars()
                    .filter(char::is_ascii_digit)
                    .map(String::from)
                    .collect::<Vec<_>>()
                    .join(".")
            }),
        }
        .filter(|v| parse_version(v).is_some());
        Some(Identity {
            toolkit: tk.name.clone(),
            version,
        })
    }

    /// [`Table::matching`] as [`Hit`]s.
    pub fn hits(&self, id: &Identity, from: &str) -> Vec<Hit> {
        self.matching(id)
            .into_iter()
            .map(|vuln| Hit {
                vuln,
                version: id.version.clone().unwrap_or_default(),
                from: from.into(),
            })
            .collect()
    }

    /// The vulnerabilities recorded for `id`'s toolkit whose range holds its version.
    pub fn matching(&self, id: &Identity) -> Vec<Vuln> {
        let Some(v) = id.version.as_deref().and_then(parse_version) else {
            return Vec::new();
        };
        self.vuln
            .iter()
            .filter(|x| x.toolkit.eq_ignore_ascii_case(&id.toolkit))
            .filter(|x| parse_range(&x.affected).is_some_and(|r| r.contains(&v)))
            .cloned()
            .collect()
    }
}

/// A dotted numeric version ("3.6.7"); trailing text after the digits of a component is
/// ignored ("5.29.2-rc1" = 5.29.2).
pub fn parse_version(s: &str) -> Option<Vec<u64>> {
    let parts: Option<Vec<u64>> = s
        .trim()
        .split('.')
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    parts.filter(|p| !p.is_empty())
}

fn cmp(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    let n = a.len().max(b.len());
    for i in 0..n {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            std::cmp::Ordering::Equal => {}
            o => return o,
        }
    }
    std::cmp::Ordering::Equal
}

#[derive(Debug)]
enum Range {
    Below(Vec<u64>),
    AtMost(Vec<u64>),
    Between(Vec<u64>, Vec<u64>),
}

impl Range {
    fn contains(&self, v: &[u64]) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Range::Below(x) => cmp(v, x) == Less,
            Range::AtMost(x) => cmp(v, x) != Greater,
            Range::Between(a, b) => cmp(v, a) != Less && cmp(v, b) != Greater,
        }
    }
}

fn parse_range(s: &str) -> Option<Range> {
    let s = s.trim();
    if let Some(x) = s.strip_prefix("<=") {
        return parse_version(x).map(Range::AtMost);
    }
    if let Some(x) = s.strip_prefix('<') {
        return parse_version(x).map(Range::Below);
    }
    let (a, b) = s.split_once("..=")?;
    Some(Range::Between(parse_version(a)?, parse_version(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_is_consistent() {
        let t = Table::shipped().unwrap();
        let names: Vec<&str> = t.toolkit.iter().map(|k| k.name.as_str()).collect();
        for v in &t.vuln {
            assert!(v.source.starts_with("http"), "{} has no source", v.id);
            assert!(
                ["low", "medium", "high"].contains(&v.severity.as_str()),
                "{}",
                v.id
            );
            assert!(
                names.contains(&v.toolkit.as_str()) || v.toolkit == "Orthanc",
                "{}",
                v.id
            );
        }
    }

    #[test]
    fn identifies_and_matches() {
        let t = Table::shipped().unwrap();
        let id = t
            .identify(Some("1.2.276.0.7230010.3.0.3.6.7"), Some("OFFIS_DCMTK_367"))
            .unwrap();
        assert_eq!(id.toolkit, "DCMTK");
        assert_eq!(id.version.as_deref(), Some("3.6.7"));
        let ids: Vec<String> = t.matching(&id).into_iter().map(|v| v.id).collect();
        assert!(ids.contains(&"CVE-2024-34509".to_string()), "{ids:?}");
        assert!(!ids.contains(&"CVE-2022-2119".to_string()), "{ids:?}");
        assert!(!ids.contains(&"CVE-2024-27628".to_string()), "{ids:?}");
        let old = Identity {
            toolkit: "DCMTK".into(),
            version: Some("3.6.6".into()),
        };
        let ids: Vec<String> = t.matching(&old).into_iter().map(|v| v.id).collect();
        assert!(ids.contains(&"CVE-2022-2119".to_string()));
        assert!(ids.contains(&"CVE-2021-41689".to_string()));
        let py = t
            .identify(
                Some("1.2.826.0.1.3680043.9.3811.3.0.4"),
                Some("PYNETDICOM_304"),
            )
            .unwrap();
        assert_eq!(py.version.as_deref(), Some("3.0.4"));
        let orthanc = Identity {
            toolkit: "orthanc".into(),
            version: Some("1.10.1".into()),
        };
        let ids: Vec<String> = t
            .hits(&orthanc, "--product")
            .into_iter()
            .map(|h| h.vuln.id)
            .collect();
        assert!(ids.contains(&"CVE-2026-5437".to_string()), "{ids:?}");
        assert!(!ids.contains(&"CVE-2025-0896".to_string()), "{ids:?}");
        let rg = t
            .identify(
                Some("2.25.178964223650839203451735082137427198113"),
                Some("RADGUARD_010"),
            )
            .unwrap();
        assert_eq!(
            (rg.toolkit.as_str(), rg.version.as_deref()),
            ("radguard", Some("0.1.0"))
        );
        assert!(t.identify(Some("1.2.3"), Some("OTHER")).is_none());
    }
}
