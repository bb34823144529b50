//! The identifiers the service checks send (PS3.4 Annex C), encoded with dicom-object; their
//! commands come from `radguard_dicom::dimse` like the gateway's own. Identifiers ask for
//! nothing but universal matching on keys the probe never reads: answers are counted, never
//! decoded.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// SOP classes by family (PS3.4 Annex B, C, K).
pub mod sop {
    pub const VERIFICATION: &str = "1.2.840.10008.1.1";
    pub const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    pub const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
    pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
    pub const ENCAPSULATED_PDF: &str = "1.2.840.10008.5.1.4.1.1.104.1";
    pub const PATIENT_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.1.1";
    pub const PATIENT_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.1.2";
    pub const PATIENT_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.1.3";
    pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
    pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
    pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
    pub const WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
    pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
    pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    /// (family, abstract syntax) proposed by the capability association.
    pub const PROPOSED: &[(&str, &str)] = &[
        ("verification", VERIFICATION),
        ("storage", CT),
        ("storage", MR),
        ("storage", SECONDARY_CAPTURE),
        ("storage", ENCAPSULATED_PDF),
        ("query", PATIENT_ROOT_FIND),
        ("query", STUDY_ROOT_FIND),
        ("retrieve-move", PATIENT_ROOT_MOVE),
        ("retrieve-move", STUDY_ROOT_MOVE),
        ("retrieve-get", PATIENT_ROOT_GET),
        ("retrieve-get", STUDY_ROOT_GET),
        ("worklist", WORKLIST_FIND),
    ];

    /// The family of an abstract syntax the probe proposes.
    pub fn family(abstract_syntax: &str) -> &'static str {
        PROPOSED
            .iter()
            .find(|(_, a)| *a == abstract_syntax)
            .map(|(f, _)| *f)
            .unwrap_or("other")
    }
}

fn write(elems: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::from_element_iter(elems);
    let mut out = Vec::with_capacity(160);
    // Writing a handful of primitive elements into a Vec cannot fail.
    if obj
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .is_err()
    {
        out.clear();
    }
    out
}

/// C-MOVE identifier: one study by a Study Instance UID that exists nowhere (a fresh 2.25
/// UID), so even a server that accepts the destination has nothing to send.
pub fn move_identifier(study_uid: &str) -> Vec<u8> {
    write(vec![
        DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from("STUDY"),
        ),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(study_uid),
        ),
    ])
}

/// C-FIND identifier at `level` (PATIENT or STUDY) with universal matching (PS3.4 C.2.2.2.3):
/// every key empty. Only the number of answers is looked at.
pub fn find_identifier(level: &str) -> Vec<u8> {
    let mut elems = vec![
        DataElement::new(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            PrimitiveValue::from(level),
        ),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::Empty),
    ];
    if level == "STUDY" {
        elems.push(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::Empty,
        ));
    }
    write(elems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_dicom::dimse::{encode_move_request, Command};
    use radguard_dicom::types::CommandField;

    #[test]
    fn move_command_decodes() {
        let c = Command::decode(&encode_move_request(5, sop::STUDY_ROOT_MOVE, "NOWHERE")).unwrap();
        assert_eq!(c.command_field(), Some(CommandField::CMoveRq));
        assert_eq!(c.move_destination.as_deref(), Some("NOWHERE"));
        assert!(c.has_data_set());
        let r = c.validate_request().unwrap();
        assert_eq!(r.message_id, 5);
    }

    #[test]
    fn identifiers_are_small() {
        assert!(!find_identifier("PATIENT").is_empty());
        assert!(find_identifier("STUDY").len() > find_identifier("PATIENT").len());
        assert!(!move_identifier("2.25.1").is_empty());
        assert_eq!(sop::family(sop::STUDY_ROOT_MOVE), "retrieve-move");
    }
}
