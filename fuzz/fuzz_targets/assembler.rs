//! The message assembler fed with arbitrary P-DATA bodies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::assembler::Assembler;
use radguard_dicom::pdu::pdvs;

fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::new();
    // Split the input into several P-DATA bodies at 0xFF 0xFF markers.
    for body in data.split(|b| *b == 0xFF) {
        let Ok(items) = pdvs(body) else { continue };
        for pdv in items {
            if asm.push(pdv).is_err() {
                return;
            }
        }
    }
});
