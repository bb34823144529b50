//! The streaming data-set reader (`radguard_media::scan_dataset`, the walker the gateway runs on
//! a C-STORE data set): never panics, never reports an offset past the bytes it was given, and
//! gives the same verdict and findings whether the reader hands it everything at once or in
//! small pieces (a TCP stream delivers arbitrary splits).
//!
//! Input layout: byte 0 selects the transfer syntax, byte 1 the read size of the chunked
//! reader, the rest is the data set.
#![no_main]
use std::io::Read;

use libfuzzer_sys::fuzz_target;
use radguard_media::{scan_dataset, ScanOptions};

const SYNTAXES: [&str; 8] = [
    "1.2.840.10008.1.2",       // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",     // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",     // Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99",  // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline (encapsulated pixel data)
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.4.201", // HTJ2K
    "1.2.3.4.5.6.7",           // unknown: the walker has to guess
];

/// Hands out at most `step` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        buf[..n].copy_from_slice(head);
        self.data = tail;
        Ok(n)
    }
}

/// Smallest read size of the chunked reader: 1 unless `DATASET_SCAN_MIN_STEP` says otherwise
/// (used to keep fuzzing past a known, reported read-size bug without hiding the property).
fn min_step() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("DATASET_SCAN_MIN_STEP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1)
            .max(1)
    })
}

fuzz_target!(|input: &[u8]| {
    let [sel, step, data @ ..] = input else { return };
    let ts = SYNTAXES[usize::from(*sel) % SYNTAXES.len()];
    let opts = ScanOptions {
        // Keep deflate work small per input.
        max_inflated_bytes: 8 << 20,
        inflate_ratio_floor: 1 << 20,
        ..ScanOptions::default()
    };
    let whole = scan_dataset(data, ts, &opts);
    // Inside a Deflated data set offsets count inflated bytes (documented), so only the
    // plain syntaxes are held to the input size.
    let deflated = ts == "1.2.840.10008.1.2.1.99";
    for f in whole.findings.iter().filter(|_| !deflated) {
        if let Some(off) = f.offset {
            assert!(off <= data.len() as u64, "offset past the input: {f:?}");
        }
    }
    let step = (usize::from(*step % 61) + 1).max(min_step());
    let pieces = scan_dataset(Chunked { data, step }, ts, &opts);
    assert_eq!(whole.verdict, pieces.verdict, "verdict depends on read sizes");
    // A corrupt Deflate stream is the one place where read sizes legitimately change what is
    // seen: flate2 drops the output of the call that hits the corruption, so a reader handing
    // out small pieces lets the walker see a longer prefix. The verdict must still agree.
    let corrupt = |r: &radguard_media::FileReport| {
        r.findings
            .iter()
            .any(|f| f.code == radguard_media::FindingCode::DeflateInvalid)
    };
    if corrupt(&whole) || corrupt(&pieces) {
        return;
    }
    let codes = |r: &radguard_media::FileReport| {
        r.findings
            .iter()
            .map(|f| (f.code, f.offset))
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(&whole), codes(&pieces), "findings depend on read sizes");
});
