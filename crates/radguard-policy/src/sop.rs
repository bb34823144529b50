//! SOP classes the policy talks about: Verification, the Query/Retrieve information models, and
//! the Storage SOP classes (looked up in the dicom-dictionary-std SOP class registry).
//!
//! **What counts as a Storage SOP class.** dicom-dictionary-std has no "is storage" flag, so the
//! rule is by registry name (PS3.6 Table A-1), after dropping a trailing ` (Retired)`:
//! the name ends with ` Storage` (e.g. "CT Image Storage") or contains ` Storage - `
//! (e.g. "Digital X-Ray Image Storage - For Presentation", "Text SR Storage - Trial"). Names that
//! end in "SOP Class" ("Storage Commitment Push Model SOP Class", "Hardcopy Color Image Storage
//! SOP Class") are not storage classes, and neither is "Media Storage Directory Storage" (the
//! DICOMDIR, which is media-only). Retired storage classes count: old modalities still send them.
//! A UID the registry does not know (a private SOP class) is never a Storage SOP class for `"*"`;
//! it is allowed only when `store_sop_classes` lists its UID explicitly.

use dicom_core::dictionary::UidDictionary;
use dicom_dictionary_std::StandardSopClassDictionary;

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = radguard_dicom::types::uids::VERIFICATION;

/// Media Storage Directory Storage (DICOMDIR): named "Storage" but never sent over the network.
const MEDIA_STORAGE_DIRECTORY_STORAGE: &str = "1.2.840.10008.1.3.10";

/// C-FIND information models a `find` permission opens: Patient Root, Study Root,
/// Patient/Study Only (retired) and Modality Worklist.
pub const FIND_MODELS: [&str; 4] = [
    "1.2.840.10008.5.1.4.1.2.1.1",
    "1.2.840.10008.5.1.4.1.2.2.1",
    "1.2.840.10008.5.1.4.1.2.3.1",
    "1.2.840.10008.5.1.4.31",
];

/// C-MOVE information models a `move` permission opens: Patient Root, Study Root,
/// Patient/Study Only (retired).
pub const MOVE_MODELS: [&str; 3] = [
    "1.2.840.10008.5.1.4.1.2.1.2",
    "1.2.840.10008.5.1.4.1.2.2.2",
    "1.2.840.10008.5.1.4.1.2.3.2",
];

/// C-GET information models a `get` permission opens: Patient Root, Study Root,
/// Patient/Study Only (retired).
pub const GET_MODELS: [&str; 3] = [
    "1.2.840.10008.5.1.4.1.2.1.3",
    "1.2.840.10008.5.1.4.1.2.2.3",
    "1.2.840.10008.5.1.4.1.2.3.3",
];

/// Modality Performed Procedure Step (PS3.4 F.7): N-CREATE, N-SET.
pub const MPPS: &str = "1.2.840.10008.3.1.2.3.3";

/// Storage Commitment Push Model (PS3.4 J.3): N-ACTION, N-EVENT-REPORT.
pub const STORAGE_COMMITMENT_PUSH: &str = "1.2.840.10008.1.20.1";

/// Whether `uid` may be named in `n_sop_classes`: not Verification, not a Query/Retrieve
/// model, not a Storage SOP class (those are the C-services'), not the DICOMDIR class. A UID
/// the registry does not know (a private normalized class) is accepted: the peer's entry names
/// it on purpose.
pub fn is_normalized_candidate(uid: &str) -> bool {
    uid != VERIFICATION
        && uid != MEDIA_STORAGE_DIRECTORY_STORAGE
        && !FIND_MODELS.contains(&uid)
        && !MOVE_MODELS.contains(&uid)
        && !GET_MODELS.contains(&uid)
        && !is_storage_sop_class(uid)
}

/// Whether `uid` is a Storage SOP class by the rule in the module docs.
pub fn is_storage_sop_class(uid: &str) -> bool {
    if uid == MEDIA_STORAGE_DIRECTORY_STORAGE {
        return false;
    }
    match StandardSopClassDictionary.by_uid(uid) {
        Some(entry) => is_storage_name(entry.name),
        None => false,
    }
}

fn is_storage_name(name: &str) -> bool {
    let name = name.strip_suffix(" (Retired)").unwrap_or(name);
    name.ends_with(" Storage") || name.contains(" Storage - ")
}

/// Whether the registry knows `uid` as a SOP class (of any kind).
pub fn is_known_sop_class(uid: &str) -> bool {
    StandardSopClassDictionary.by_uid(uid).is_some()
}

/// The UID of a SOP class keyword such as `CTImageStorage`, if the registry knows it.
pub fn uid_for_keyword(keyword: &str) -> Option<&'static str> {
    StandardSopClassDictionary
        .by_keyword(keyword)
        .map(|entry| entry.uid)
}

/// The keyword of a SOP class UID, if the registry knows it (for human-readable output).
pub fn keyword_for_uid(uid: &str) -> Option<&'static str> {
    StandardSopClassDictionary
        .by_uid(uid)
        .map(|entry| entry.alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(uid: &str) -> &'static str {
        StandardSopClassDictionary
            .by_uid(uid)
            .map(|e| e.name)
            .unwrap_or("")
    }

    #[test]
    fn registry_is_populated() {
        assert_eq!(
            uid_for_keyword("CTImageStorage"),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(uid_for_keyword("Verification"), Some(VERIFICATION));
        assert_eq!(
            keyword_for_uid("1.2.840.10008.5.1.4.1.1.4"),
            Some("MRImageStorage")
        );
        assert_eq!(uid_for_keyword("NoSuchThingStorage"), None);
    }

    #[test]
    fn storage_rule() {
        for uid in [
            "1.2.840.10008.5.1.4.1.1.2",     // CT Image Storage
            "1.2.840.10008.5.1.4.1.1.4",     // MR Image Storage
            "1.2.840.10008.5.1.4.1.1.1.1",   // DX For Presentation
            "1.2.840.10008.5.1.4.1.1.3",     // US Multi-frame (Retired)
            "1.2.840.10008.5.1.4.1.1.88.1",  // Text SR Storage - Trial (Retired)
            "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture
            "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
        ] {
            assert!(is_storage_sop_class(uid), "{uid} {}", name(uid));
        }
        for uid in [
            VERIFICATION,
            "1.2.840.10008.1.20.1", // Storage Commitment Push Model SOP Class
            "1.2.840.10008.1.3.10", // Media Storage Directory Storage
            "1.2.840.10008.5.1.1.30", // Hardcopy Color Image Storage SOP Class (Retired)
            "1.2.840.10008.5.1.1.27", // Stored Print Storage SOP Class (Retired)
            "1.2.840.10008.5.1.4.1.2.2.1",
            "1.2.840.10008.5.1.4.31",
            "1.2.840.10008.1.2.1", // a transfer syntax
            "1.2.3.4.5",           // unknown / private
        ] {
            assert!(!is_storage_sop_class(uid), "{uid} {}", name(uid));
        }
    }

    #[test]
    fn qr_model_constants_match_registry() {
        for uid in FIND_MODELS {
            assert!(name(uid).contains("- FIND"), "{uid}: {}", name(uid));
        }
        for uid in MOVE_MODELS {
            assert!(name(uid).contains("- MOVE"), "{uid}: {}", name(uid));
        }
        for uid in GET_MODELS {
            assert!(name(uid).contains("- GET"), "{uid}: {}", name(uid));
        }
        assert!(name(VERIFICATION).starts_with("Verification"));
    }
}
