//! The TOML config parser and validator.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(cfg) = radguard_policy::parse_config(s, "fuzz.toml") {
            let _ = cfg.describe();
        }
    }
});
