//! The integrity ledger's fingerprint parser (`radguard_ledger::Fingerprinter`, run on every
//! data set an origin route relays and on every file `radguard verify` reads): never panics,
//! and gives the same fingerprint (or fails) whether the data set arrives whole or in pieces
//! (a TCP stream delivers arbitrary splits). Selector 255 treats the input as a Part 10 file
//! (`part10_data_set`), whose data-set start must lie inside the file.
//!
//! Input layout: byte 0 selects the transfer syntax, byte 1 the piece size, the rest is the
//! data set (or the file).
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_ledger::fingerprint::part10_data_set;
use radguard_ledger::{Fingerprint, FingerprintError, Fingerprinter};

const SYNTAXES: [&str; 7] = [
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.5",    // RLE Lossless (decoded for the pixel digest)
    "1.2.840.10008.1.2.4.50", // JPEG Baseline (lossy: encapsulated bytes are hashed)
    "1.2.840.10008.1.2.4.80", // JPEG-LS Lossless
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian (inflated, with bomb caps)
];

fn fingerprint(ts: &str, data: &[u8], step: usize) -> Result<Fingerprint, FingerprintError> {
    let mut f = Fingerprinter::new(ts)?;
    for piece in data.chunks(step) {
        f.feed(piece);
    }
    f.finish()
}

fuzz_target!(|input: &[u8]| {
    let [sel, step, data @ ..] = input else { return };
    let (ts, body) = if *sel == 255 {
        let Ok((ts, start)) = part10_data_set(data) else {
            return;
        };
        let body = data.get(start..);
        assert!(body.is_some(), "data set start {start} past the file ({} bytes)", data.len());
        (ts, body.unwrap_or_default())
    } else {
        (SYNTAXES[usize::from(*sel) % SYNTAXES.len()].to_string(), data)
    };
    let whole = fingerprint(&ts, body, body.len().max(1));
    let step = usize::from(*step % 61) + 1;
    let pieces = fingerprint(&ts, body, step);
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "fingerprint depends on piece sizes"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole {whole:?} but in pieces of {step}: {pieces:?}"),
    }
});
