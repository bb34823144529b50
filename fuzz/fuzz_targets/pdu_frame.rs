//! PDU header check + P-DATA PDV split: never panics, never accepts a PDU over the limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::pdu::{pdvs, PduHeader, PduType, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Some(head) = data.first_chunk::<HEADER_LEN>() else { return };
    let h = PduHeader::parse(head);
    if let Ok(ty) = h.check(16384) {
        if ty == PduType::PData {
            assert!(h.length <= 16384);
            let body = &data[HEADER_LEN..];
            let body = &body[..body.len().min(h.length as usize)];
            if let Ok(items) = pdvs(body) {
                let total: usize = items.iter().map(|p| p.data.len() + 6).sum();
                assert_eq!(total, body.len());
            }
        }
    }
});
