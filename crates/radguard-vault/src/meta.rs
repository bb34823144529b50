//! The bytes that precede the data set in every vault file: preamble, magic, File Meta group.

use radguard_dicom::Uid;

/// Length of the all-zero preamble.
pub(crate) const PREAMBLE_LEN: usize = radguard_dicom::part10::PREAMBLE_LEN;

/// Builds preamble + `DICM` + File Meta Information for an instance (radguard-dicom's one
/// File Meta writer, with the product's one Implementation Class UID).
///
/// The header is a pure function of the three UIDs (no AE titles, no time), so the same data set
/// always gives the same file bytes and therefore the same content address.
pub(crate) fn file_header(sop_class: &Uid, sop_instance: &Uid, transfer_syntax: &Uid) -> Vec<u8> {
    radguard_dicom::part10::write_head(
        sop_class.as_str(),
        sop_instance.as_str(),
        transfer_syntax.as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_dicom::types::uids;

    fn uid(s: &str) -> Uid {
        Uid::new(s).expect("valid test UID")
    }

    #[test]
    fn header_is_deterministic_and_parseable() {
        let class = uid("1.2.840.10008.5.1.4.1.1.7");
        let inst = uid("1.2.3.4.5");
        let ts = uid(uids::EXPLICIT_VR_LE);
        let a = file_header(&class, &inst, &ts);
        let b = file_header(&class, &inst, &ts);
        assert_eq!(a, b);
        assert!(a[..PREAMBLE_LEN].iter().all(|&x| x == 0));
        assert_eq!(&a[PREAMBLE_LEN..PREAMBLE_LEN + 4], b"DICM");

        let meta = dicom_object::FileMetaTable::from_reader(&a[PREAMBLE_LEN..]).expect("meta");
        assert_eq!(meta.media_storage_sop_class_uid(), class.as_str());
        assert_eq!(meta.media_storage_sop_instance_uid(), inst.as_str());
        assert_eq!(meta.transfer_syntax(), ts.as_str());
        assert_eq!(
            meta.implementation_class_uid(),
            uids::IMPLEMENTATION_CLASS_UID
        );
        assert_eq!(
            meta.implementation_version_name(),
            Some(uids::IMPLEMENTATION_VERSION_NAME)
        );
        assert_eq!(meta.source_application_entity_title(), None);
        // group length covers exactly the rest of the header
        let group_len = u64::from(meta.information_group_length);
        assert_eq!(a.len() as u64, PREAMBLE_LEN as u64 + 4 + 12 + group_len);
    }

    #[test]
    fn different_uids_give_different_headers() {
        let class = uid("1.2.840.10008.5.1.4.1.1.7");
        let ts = uid(uids::EXPLICIT_VR_LE);
        let a = file_header(&class, &uid("1.2.3.4.5"), &ts);
        let b = file_header(&class, &uid("1.2.3.4.6"), &ts);
        assert_ne!(a, b);
    }
}
