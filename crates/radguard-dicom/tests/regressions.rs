//! Inputs that once broke a parser (found by cargo-fuzz); each must now be refused or decoded
//! quickly without a large allocation.

use radguard_dicom::dimse::Command;

#[test]
fn dimse_command_oom_inputs_are_handled() {
    // dicom-object's reader allocated ~2.6 GB on these 200-byte command sets.
    for input in [
        &include_bytes!("regressions/dimse_command_oom_1.bin")[..],
        &include_bytes!("regressions/dimse_command_oom_2.bin")[..],
        &include_bytes!("regressions/dimse_command_oom_3.bin")[..],
    ] {
        if let Ok(c) = Command::decode(input) {
            let _ = c.validate_request();
        }
    }
}
