//! Association PDUs round trip: decode → encode → decode gives the same PDU, and the second
//! encoding is the same bytes as the first (the gateway re-encodes every A-ASSOCIATE-RQ it
//! sends upstream and every A-ASSOCIATE-AC it answers, so what it forwards must mean what the
//! peer said).
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::pdu::{decode_control, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(first) = decode_control(data) else { return };
    // Refusing to encode is allowed (the gateway then refuses the association).
    let Ok(bytes) = encode(&first) else { return };
    let second = decode_control(&bytes).expect("an encoded PDU decodes");
    assert_eq!(first, second, "decode(encode(p)) != p");
    let again = encode(&second).expect("a decoded PDU encodes twice");
    assert_eq!(bytes, again, "encoding is not deterministic");
});
