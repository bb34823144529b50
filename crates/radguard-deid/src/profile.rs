//! A profile: the Basic Application Level Confidentiality Profile plus a set of options,
//! resolved once into one effective operation per table row.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use dicom_core::Tag;

use crate::table::{Action, Column, Row, Table, TagPattern};

/// A profile option (PS3.15 E.3), with its code from CID 7050 "De-identification Method".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DeidOption {
    /// Retain Safe Private Option (113111): keep private attributes on the safe list.
    RetainSafePrivate,
    /// Retain UIDs Option (113110).
    RetainUids,
    /// Retain Device Identity Option (113109).
    RetainDeviceIdentity,
    /// Retain Institution Identity Option (113112).
    RetainInstitutionIdentity,
    /// Retain Patient Characteristics Option (113108).
    RetainPatientCharacteristics,
    /// Retain Longitudinal Temporal Information with Full Dates Option (113106).
    RetainLongFullDates,
    /// Retain Longitudinal Temporal Information with Modified Dates Option (113107).
    RetainLongModifiedDates,
    /// Clean Descriptors Option (113105).
    CleanDescriptors,
    /// Clean Structured Content Option (113104).
    CleanStructuredContent,
    /// Clean Graphics Option (113103).
    CleanGraphics,
    /// Clean Pixel Data Option (113101): not implemented; asking for it is an error.
    CleanPixelData,
    /// Clean Recognizable Visual Features Option (113102): not implemented; an error.
    CleanRecognizableVisualFeatures,
}

impl DeidOption {
    /// Every option, in code order of the standard's table.
    pub const ALL: [DeidOption; 12] = [
        DeidOption::RetainSafePrivate,
        DeidOption::RetainUids,
        DeidOption::RetainDeviceIdentity,
        DeidOption::RetainInstitutionIdentity,
        DeidOption::RetainPatientCharacteristics,
        DeidOption::RetainLongFullDates,
        DeidOption::RetainLongModifiedDates,
        DeidOption::CleanDescriptors,
        DeidOption::CleanStructuredContent,
        DeidOption::CleanGraphics,
        DeidOption::CleanPixelData,
        DeidOption::CleanRecognizableVisualFeatures,
    ];

    /// The DCM code and code meaning (CID 7050).
    pub fn code(self) -> (&'static str, &'static str) {
        match self {
            DeidOption::RetainSafePrivate => ("113111", "Retain Safe Private Option"),
            DeidOption::RetainUids => ("113110", "Retain UIDs Option"),
            DeidOption::RetainDeviceIdentity => ("113109", "Retain Device Identity Option"),
            DeidOption::RetainInstitutionIdentity => {
                ("113112", "Retain Institution Identity Option")
            }
            DeidOption::RetainPatientCharacteristics => {
                ("113108", "Retain Patient Characteristics Option")
            }
            DeidOption::RetainLongFullDates => (
                "113106",
                "Retain Longitudinal Temporal Information Full Dates Option",
            ),
            DeidOption::RetainLongModifiedDates => (
                "113107",
                "Retain Longitudinal Temporal Information Modified Dates Option",
            ),
            DeidOption::CleanDescriptors => ("113105", "Clean Descriptors Option"),
            DeidOption::CleanStructuredContent => ("113104", "Clean Structured Content Option"),
            DeidOption::CleanGraphics => ("113103", "Clean Graphics Option"),
            DeidOption::CleanPixelData => ("113101", "Clean Pixel Data Option"),
            DeidOption::CleanRecognizableVisualFeatures => {
                ("113102", "Clean Recognizable Visual Features Option")
            }
        }
    }

    /// The option with this DCM code.
    pub fn from_code(code: &str) -> Option<DeidOption> {
        DeidOption::ALL.into_iter().find(|o| o.code().0 == code)
    }

    /// The table column this option reads (none for the two pixel options).
    pub fn column(self) -> Option<Column> {
        Some(match self {
            DeidOption::RetainSafePrivate => Column::RetainSafePrivate,
            DeidOption::RetainUids => Column::RetainUids,
            DeidOption::RetainDeviceIdentity => Column::RetainDeviceIdentity,
            DeidOption::RetainInstitutionIdentity => Column::RetainInstitutionIdentity,
            DeidOption::RetainPatientCharacteristics => Column::RetainPatientCharacteristics,
            DeidOption::RetainLongFullDates => Column::RetainLongitudinalFullDates,
            DeidOption::RetainLongModifiedDates => Column::RetainLongitudinalModifiedDates,
            DeidOption::CleanDescriptors => Column::CleanDescriptors,
            DeidOption::CleanStructuredContent => Column::CleanStructuredContent,
            DeidOption::CleanGraphics => Column::CleanGraphics,
            DeidOption::CleanPixelData | DeidOption::CleanRecognizableVisualFeatures => {
                return None
            }
        })
    }

    /// The command-line spelling (`retain-uids`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DeidOption::RetainSafePrivate => "retain-safe-private",
            DeidOption::RetainUids => "retain-uids",
            DeidOption::RetainDeviceIdentity => "retain-device-identity",
            DeidOption::RetainInstitutionIdentity => "retain-institution-identity",
            DeidOption::RetainPatientCharacteristics => "retain-patient-characteristics",
            DeidOption::RetainLongFullDates => "retain-long-full-dates",
            DeidOption::RetainLongModifiedDates => "retain-long-modified-dates",
            DeidOption::CleanDescriptors => "clean-descriptors",
            DeidOption::CleanStructuredContent => "clean-structured-content",
            DeidOption::CleanGraphics => "clean-graphics",
            DeidOption::CleanPixelData => "clean-pixel-data",
            DeidOption::CleanRecognizableVisualFeatures => "clean-recognizable-visual-features",
        }
    }
}

impl fmt::Display for DeidOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code of the Basic Application Level Confidentiality Profile.
pub const BASIC_PROFILE_CODE: (&str, &str) =
    ("113100", "Basic Application Confidentiality Profile");

/// The named profiles (only the Basic profile exists in PS3.15; options refine it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    /// Basic Application Level Confidentiality Profile (PS3.15 E.2).
    #[default]
    Basic,
}

/// What to do with burned-in annotation (Clean Pixel Data is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BurnedInPolicy {
    /// Refuse instances that have, or are likely to have, text burned into the pixels.
    #[default]
    Refuse,
    /// Let them through; the pixel data is NOT cleaned (an explicit, audited decision).
    Allow,
}

/// The operation finally applied to a row, once combined codes and options are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    Remove,
    Empty,
    Dummy,
    Keep,
    Clean,
    Uid,
}

/// The decision for one row under a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub op: Op,
    /// The code that produced it (the Basic column's, or the option's).
    pub action: Action,
    /// The option column that overrode the Basic column, if any.
    pub by: Option<Column>,
}

/// Why a profile cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("option {0} is not implemented (pixel data is never modified by radguard)")]
    NotImplemented(DeidOption),
    #[error(
        "options retain-long-full-dates and retain-long-modified-dates are mutually exclusive"
    )]
    DateOptionsConflict,
    #[error("safe private list, line {line}: {why}")]
    SafePrivate { line: usize, why: String },
}

/// Private attributes that are safe to keep under Retain Safe Private: (private creator,
/// group, element byte). Loaded from a text file of lines `GGGG,"CREATOR",EE` (`#` comments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SafePrivateList {
    entries: BTreeSet<(String, u16, u8)>,
}

impl SafePrivateList {
    /// Parse the list format: one `GGGG,"PRIVATE CREATOR",EE` per line, e.g.
    /// `0019,"SIEMENS MR HEADER",0C`; blank lines and `#` comments are ignored.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let mut entries = BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| ProfileError::SafePrivate {
                line: i + 1,
                why: why.to_string(),
            };
            let (g, rest) = line
                .split_once(',')
                .ok_or_else(|| bad("expected GGGG,\"CREATOR\",EE"))?;
            let (creator, e) = rest
                .trim()
                .rsplit_once(',')
                .ok_or_else(|| bad("expected GGGG,\"CREATOR\",EE"))?;
            let group = u16::from_str_radix(g.trim(), 16).map_err(|_| bad("bad group"))?;
            if group % 2 == 0 || group < 0x0009 {
                return Err(bad(
                    "the group of a private attribute is odd and at least 0009",
                ));
            }
            let creator = creator.trim();
            let creator = creator
                .strip_prefix('"')
                .and_then(|c| c.strip_suffix('"'))
                .ok_or_else(|| bad("the creator must be in double quotes"))?;
            if creator.is_empty() || creator.len() > 64 {
                return Err(bad("the creator is 1 to 64 characters"));
            }
            let elem = u8::from_str_radix(e.trim(), 16).map_err(|_| bad("bad element byte"))?;
            entries.insert((creator.trim().to_string(), group, elem));
        }
        Ok(SafePrivateList { entries })
    }

    /// Whether the element `elem` (low byte) of `creator`'s block in `group` is safe.
    pub fn contains(&self, creator: &str, group: u16, elem: u8) -> bool {
        self.entries
            .contains(&(creator.trim().to_string(), group, elem))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A resolved profile: what happens to every row of Table E.1-1.
#[derive(Debug, Clone)]
pub struct Profile {
    options: BTreeSet<DeidOption>,
    by_tag: HashMap<Tag, Resolved>,
    masked: Vec<(TagPattern, Resolved)>,
    private: Resolved,
    safe_private: SafePrivateList,
    burned_in: BurnedInPolicy,
}

impl Profile {
    /// The Basic profile with `options`. Retain options win over Clean options where both
    /// name a row (`K` over `C`): the user asked for that information to be kept.
    pub fn new(
        name: ProfileName,
        options: impl IntoIterator<Item = DeidOption>,
    ) -> Result<Profile, ProfileError> {
        let ProfileName::Basic = name;
        let options: BTreeSet<DeidOption> = options.into_iter().collect();
        for o in &options {
            if matches!(
                o,
                DeidOption::CleanPixelData | DeidOption::CleanRecognizableVisualFeatures
            ) {
                return Err(ProfileError::NotImplemented(*o));
            }
        }
        if options.contains(&DeidOption::RetainLongFullDates)
            && options.contains(&DeidOption::RetainLongModifiedDates)
        {
            return Err(ProfileError::DateOptionsConflict);
        }
        let columns: Vec<Column> = options.iter().filter_map(|o| o.column()).collect();
        let table = Table::standard();
        let mut by_tag = HashMap::new();
        let mut masked = Vec::new();
        let mut private = Resolved {
            op: Op::Remove,
            action: Action::X,
            by: None,
        };
        for row in table.rows() {
            let r = resolve(row, &columns);
            match row.pattern {
                TagPattern::Tag(t) => {
                    by_tag.insert(t, r);
                }
                TagPattern::Masked { .. } => masked.push((row.pattern, r)),
                TagPattern::Private => private = r,
            }
        }
        Ok(Profile {
            options,
            by_tag,
            masked,
            private,
            safe_private: SafePrivateList::default(),
            burned_in: BurnedInPolicy::Refuse,
        })
    }

    /// Set the safe private list (used only with Retain Safe Private).
    pub fn with_safe_private(mut self, list: SafePrivateList) -> Self {
        self.safe_private = list;
        self
    }

    /// Set what happens to instances with burned-in annotation.
    pub fn with_burned_in(mut self, policy: BurnedInPolicy) -> Self {
        self.burned_in = policy;
        self
    }

    pub fn options(&self) -> &BTreeSet<DeidOption> {
        &self.options
    }

    pub fn has(&self, o: DeidOption) -> bool {
        self.options.contains(&o)
    }

    pub fn burned_in(&self) -> BurnedInPolicy {
        self.burned_in
    }

    pub fn safe_private(&self) -> &SafePrivateList {
        &self.safe_private
    }

    /// The decision for a public tag (or a repeating-group tag); `None` when the table does
    /// not list it (the attribute is kept; sequences are still walked).
    pub fn lookup(&self, tag: Tag) -> Option<Resolved> {
        if let Some(r) = self.by_tag.get(&tag) {
            return Some(*r);
        }
        self.masked
            .iter()
            .find(|(p, _)| p.matches(tag))
            .map(|(_, r)| *r)
    }

    /// The decision for private attributes that are not on the safe list.
    pub fn private(&self) -> Resolved {
        self.private
    }

    /// The DCM codes for (0012,0064): the profile, then each option, in code order.
    pub fn method_codes(&self) -> Vec<(&'static str, &'static str)> {
        let mut v = vec![BASIC_PROFILE_CODE];
        let mut opts: Vec<_> = self.options.iter().map(|o| o.code()).collect();
        opts.sort();
        v.extend(opts);
        v
    }

    /// The (0028,0303) Longitudinal Temporal Information Modified value.
    pub fn temporal_marker(&self) -> &'static str {
        if self.has(DeidOption::RetainLongFullDates) {
            "UNMODIFIED"
        } else if self.has(DeidOption::RetainLongModifiedDates) {
            "MODIFIED"
        } else {
            "REMOVED"
        }
    }
}

/// Resolve one row: the options' cells override the Basic cell (K before C); then combined
/// codes are narrowed to one operation, keeping the attribute present where the code allows
/// it without carrying information (Z over X), and removing it where only a made-up value
/// would keep it (X over D): X/Z → Z, Z/D → Z, X/Z/D → Z, X/D → X, X/Z/U* → U.
pub fn resolve(row: &Row, columns: &[Column]) -> Resolved {
    let mut chosen: Option<(Action, Column)> = None;
    for &c in columns {
        if let Some(a) = row.option(c) {
            let better = match chosen {
                None => true,
                Some((prev, _)) => prev != Action::K && a == Action::K,
            };
            if better {
                chosen = Some((a, c));
            }
        }
    }
    let (action, by) = match chosen {
        Some((a, c)) => (a, Some(c)),
        None => (row.basic, None),
    };
    let op = match action {
        Action::D => Op::Dummy,
        Action::Z | Action::XZ | Action::ZD | Action::XZD => Op::Empty,
        Action::X | Action::XD => Op::Remove,
        Action::K => Op::Keep,
        Action::C => Op::Clean,
        Action::U | Action::XZU => Op::Uid,
    };
    Resolved { op, action, by }
}

pub(crate) fn is_private(tag: Tag) -> bool {
    tag.group() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(g: u16, e: u16) -> Tag {
        Tag(g, e)
    }

    #[test]
    fn basic_resolutions() {
        let p = Profile::new(ProfileName::Basic, []).unwrap();
        assert_eq!(p.lookup(t(0x0010, 0x0010)).unwrap().op, Op::Empty);
        assert_eq!(p.lookup(t(0x0008, 0x0018)).unwrap().op, Op::Uid);
        assert_eq!(p.lookup(t(0x0008, 0x0021)).unwrap().op, Op::Remove); // X/D
        assert_eq!(p.lookup(t(0x0008, 0x0022)).unwrap().op, Op::Empty); // X/Z
        assert_eq!(p.lookup(t(0x0008, 0x1140)).unwrap().op, Op::Uid); // X/Z/U*
        assert_eq!(p.lookup(t(0x6002, 0x3000)).unwrap().op, Op::Remove);
        assert_eq!(p.lookup(t(0x5010, 0x0005)).unwrap().op, Op::Remove);
        assert_eq!(p.lookup(t(0x0028, 0x0010)), None);
        assert_eq!(p.private().op, Op::Remove);
        assert_eq!(p.temporal_marker(), "REMOVED");
    }

    #[test]
    fn options_override_and_retain_wins() {
        let p = Profile::new(
            ProfileName::Basic,
            [
                DeidOption::RetainPatientCharacteristics,
                DeidOption::CleanDescriptors,
            ],
        )
        .unwrap();
        // Allergies: Basic X, Rtn. Pat. Chars. C, Clean Desc. C.
        let r = p.lookup(t(0x0010, 0x2110)).unwrap();
        assert_eq!(r.op, Op::Clean);
        // Patient's Sex: Basic Z, Rtn. Pat. Chars. K.
        let r = p.lookup(t(0x0010, 0x0040)).unwrap();
        assert_eq!(
            (r.op, r.by),
            (Op::Keep, Some(Column::RetainPatientCharacteristics))
        );
        assert_eq!(
            p.method_codes(),
            vec![
                ("113100", "Basic Application Confidentiality Profile"),
                ("113105", "Clean Descriptors Option"),
                ("113108", "Retain Patient Characteristics Option"),
            ]
        );
    }

    #[test]
    fn refused_option_sets() {
        assert_eq!(
            Profile::new(ProfileName::Basic, [DeidOption::CleanPixelData]).unwrap_err(),
            ProfileError::NotImplemented(DeidOption::CleanPixelData)
        );
        assert_eq!(
            Profile::new(
                ProfileName::Basic,
                [
                    DeidOption::RetainLongFullDates,
                    DeidOption::RetainLongModifiedDates
                ]
            )
            .unwrap_err(),
            ProfileError::DateOptionsConflict
        );
    }

    #[test]
    fn codes_round_trip() {
        for o in DeidOption::ALL {
            assert_eq!(DeidOption::from_code(o.code().0), Some(o));
        }
    }

    #[test]
    fn safe_private_list() {
        let l = SafePrivateList::parse(
            "# comment\n0019,\"SIEMENS MR HEADER\",0C\n\n7FD1,\"GEIIS\",10 # trailing\n",
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.contains("SIEMENS MR HEADER", 0x0019, 0x0C));
        assert!(!l.contains("SIEMENS MR HEADER", 0x0019, 0x0D));
        assert!(SafePrivateList::parse("0018,\"X\",01").is_err());
        assert!(SafePrivateList::parse("0019,X,01").is_err());
        assert!(SafePrivateList::parse("0019,\"X\",1FF").is_err());
    }
}
