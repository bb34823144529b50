//! The gateway's head sniffer (`radguard_dicom::head::HeadSniffer`, run on every C-STORE data
//! set to find the patient and study for the audit trail): never panics, and finds the same
//! facts whether the data set arrives whole or in pieces (PDV sizes are the sender's choice).
//!
//! Input layout: byte 0 selects the transfer syntax, byte 1 the piece size (1..=256), the rest
//! is the data set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::head::{HeadFacts, HeadSniffer};

const SYNTAXES: [&str; 6] = [
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99", // Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50", // JPEG Baseline (encapsulated pixel data)
    "1.2.3.4.5.6.7",          // not in PS3.6: read as explicit VR little endian
];

fn sniff(ts: &str, chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> HeadFacts {
    let mut s = HeadSniffer::for_uid(ts).expect("valid UID");
    for c in chunks {
        if s.feed(c.as_ref()) {
            break;
        }
    }
    s.finish()
}

fuzz_target!(|input: &[u8]| {
    let [sel, step, data @ ..] = input else {
        return;
    };
    let ts = SYNTAXES[usize::from(*sel) % SYNTAXES.len()];
    let step = usize::from(*step) + 1;
    let whole = sniff(ts, [data]);
    let pieces = sniff(ts, data.chunks(step));
    assert_eq!(whole, pieces, "head facts depend on {step}-byte pieces");
});
