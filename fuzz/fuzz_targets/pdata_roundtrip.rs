//! P-DATA round trip: parse → encode → parse gives the same PDVs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::pdu::{encode_pdata, pdvs, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(items) = pdvs(data) else { return };
    let mut out = Vec::new();
    encode_pdata(&mut out, &items);
    let again = pdvs(&out[HEADER_LEN..]).expect("re-encoded P-DATA parses");
    assert_eq!(items, again);
});
