//! The JPEG-LS decoder (`radguard_jpegls`, run by the ledger's fingerprint on JPEG-LS Lossless
//! pixel data received from any peer): never panics, stays within its output limit, and an image
//! it returns is consistent with its header (one sample per pixel and component, each within
//! the sample precision), the header `read_header` reports.
//!
//! Input: the codestream. Seeds: small `dcmcjpls` streams (fuzz/seeds/make_jpegls_seeds.sh).
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_jpegls::{decode, read_header, Error, Limits};

/// 4 MiB of 16-bit samples: larger declared images are refused before any allocation.
const LIMITS: Limits = Limits {
    max_output_bytes: 4 << 20,
};

fuzz_target!(|data: &[u8]| {
    match decode(data, &LIMITS) {
        Ok(img) => {
            let h = &img.header;
            let n = h.width as usize * h.height as usize * h.components.len();
            assert_eq!(img.samples.len(), n, "sample count");
            assert!((n as u64) * 2 <= LIMITS.max_output_bytes);
            let max = (1u32 << h.precision) - 1;
            assert!(
                img.samples.iter().all(|s| u32::from(*s) <= max),
                "sample above 2^P - 1"
            );
            assert_eq!(read_header(data).as_ref(), Ok(h), "read_header disagrees");
        }
        Err(Error::TooLarge { bytes, limit }) => assert!(bytes > limit),
        Err(_) => {}
    }
});
