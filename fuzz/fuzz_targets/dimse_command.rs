//! DIMSE command set decoding and request validation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::dimse::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::decode(data) {
        let _ = cmd.validate_request();
    }
});
