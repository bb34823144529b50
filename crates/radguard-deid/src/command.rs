//! Rewriting the UID in a DIMSE command set, so that a C-STORE request names the
//! de-identified instance (and its response names the client's original one again).
//! Command sets are implicit VR little endian (PS3.7 6.3.1) with a group length first.

use dicom_core::{Tag, VR};

use crate::codec::{encode_elements, pad, parse_dataset, Element, Encoding, ParseError};

/// (0000,1000) Affected SOP Instance UID.
pub const AFFECTED_SOP_INSTANCE_UID: Tag = Tag(0x0000, 0x1000);
const GROUP_LENGTH: Tag = Tag(0x0000, 0x0000);

/// The command set with (0000,1000) Affected SOP Instance UID set to `uid` and (0000,0000)
/// Command Group Length recomputed; every other element is kept as it was.
pub fn set_affected_sop_instance_uid(raw: &[u8], uid: &str) -> Result<Vec<u8>, ParseError> {
    let mut ds = parse_dataset(raw, Encoding::ImplicitLittle)?;
    ds.put(Element::bytes(
        AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        pad(VR::UI, uid.as_bytes().to_vec()),
    ));
    ds.remove(GROUP_LENGTH);
    let mut body = Vec::with_capacity(raw.len() + 64);
    // Values come from a parsed command set plus one UID: they always encode.
    let _ = encode_elements(&ds.elements, Encoding::ImplicitLittle, &mut body);
    let mut out = Vec::with_capacity(body.len() + 12);
    let gl = Element::bytes(
        GROUP_LENGTH,
        VR::UL,
        (body.len() as u32).to_le_bytes().to_vec(),
    );
    let _ = encode_elements(
        std::slice::from_ref(&gl),
        Encoding::ImplicitLittle,
        &mut out,
    );
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Value;

    fn el(tag: Tag, vr: VR, v: &[u8]) -> Element {
        Element::bytes(tag, vr, pad(vr, v.to_vec()))
    }

    #[test]
    fn rewrites_uid_and_group_length_keeps_the_rest() {
        let elements = vec![
            el(Tag(0x0000, 0x0002), VR::UI, b"1.2.840.10008.5.1.4.1.1.2"),
            el(Tag(0x0000, 0x0100), VR::US, &[0x01, 0x00]),
            el(Tag(0x0000, 0x0110), VR::US, &[0x07, 0x00]),
            el(Tag(0x0000, 0x0700), VR::US, &[0x00, 0x00]),
            el(Tag(0x0000, 0x0800), VR::US, &[0x01, 0x01]),
            el(AFFECTED_SOP_INSTANCE_UID, VR::UI, b"1.2.3.4"),
            el(Tag(0x0000, 0x1030), VR::AE, b"MOVER"),
        ];
        let mut body = Vec::new();
        encode_elements(&elements, Encoding::ImplicitLittle, &mut body).unwrap();
        let mut raw = Vec::new();
        let gl = el(GROUP_LENGTH, VR::UL, &(body.len() as u32).to_le_bytes());
        encode_elements(&[gl], Encoding::ImplicitLittle, &mut raw).unwrap();
        raw.extend_from_slice(&body);

        let uid = "2.25.329800735698586629295641978511506172918";
        let out = set_affected_sop_instance_uid(&raw, uid).unwrap();
        let ds = parse_dataset(&out, Encoding::ImplicitLittle).unwrap();
        assert_eq!(ds.text(AFFECTED_SOP_INSTANCE_UID), Some(uid.as_bytes()));
        assert_eq!(ds.text(Tag(0x0000, 0x1030)), Some(&b"MOVER"[..]));
        assert_eq!(ds.text(Tag(0x0000, 0x0110)), Some(&[0x07u8][..]));
        let Value::Bytes(gl) = &ds.get(GROUP_LENGTH).unwrap().value else {
            panic!("group length")
        };
        let gl = u32::from_le_bytes([gl[0], gl[1], gl[2], gl[3]]);
        assert_eq!(gl as usize, out.len() - 12);
        // And back: the original UID restored gives the original bytes.
        assert_eq!(set_affected_sop_instance_uid(&out, "1.2.3.4").unwrap(), raw);
        assert!(set_affected_sop_instance_uid(&raw[..raw.len() - 3], uid).is_err());
    }
}
