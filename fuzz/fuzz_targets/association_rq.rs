//! Association-phase PDUs through dicom-ul's decoder (as the gateway uses it).
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::pdu::{decode_control, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = decode_control(data) {
        // Whatever decodes must re-encode.
        let _ = encode(&pdu);
    }
});
