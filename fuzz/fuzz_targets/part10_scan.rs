//! The Part 10 scan walker: never panics, and the streamed and in-memory scans agree that a
//! file is malicious whenever the preamble alone makes it so.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_media::{scan_bytes, scan_reader, FindingCode, ScanOptions, Severity};

fuzz_target!(|data: &[u8]| {
    let opts = ScanOptions {
        // Keep deflate work small per input.
        max_inflated_bytes: 8 << 20,
        inflate_ratio_floor: 1 << 20,
        ..ScanOptions::default()
    };
    let a = scan_bytes(data, &opts);
    let b = scan_reader(data, &opts);
    for f in a.findings.iter().chain(&b.findings) {
        if let Some(off) = f.offset {
            // Offsets point into the file (or, for a PE probe past the end, nowhere else).
            assert!(off <= data.len() as u64, "{f:?}");
        }
    }
    let pre = |r: &radguard_media::FileReport| {
        r.findings
            .iter()
            .any(|f| f.code == FindingCode::PreambleExecutable && f.severity == Severity::Critical)
    };
    assert_eq!(pre(&a), pre(&b));
});
