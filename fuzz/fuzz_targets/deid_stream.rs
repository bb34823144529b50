//! The de-identification path of the gateway (`radguard_deid::StreamDeid`: the data-set tree
//! built from the one grammar's tokens, the transform, the writer, pixel data passed through):
//! never panics, and gives the same output bytes (or the same error) whether the data set
//! arrives whole, split in two at a point taken from the input, or in small pieces (a sender
//! chooses its PDV sizes).
//!
//! Input layout: byte 0 selects the transfer syntax (bits 0–1) and whether burned-in
//! annotation is let through (bit 2, so that secondary captures reach the pixel path too);
//! byte 1 the piece size (1..=61); bytes 2–3 the split point (little endian, modulo the data
//! length + 1); byte 4 the cap on held bytes (0: the default 16 MiB, else n × 256 bytes); the
//! rest is the data set.
#![no_main]
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use radguard_deid::{
    BurnedInPolicy, DeidError, Deidentifier, Outcome, Profile, ProfileName, SiteKey, StreamDeid,
};

const SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2",      // Implicit VR Little Endian
    "1.2.840.10008.1.2.1",    // Explicit VR Little Endian
    "1.2.840.10008.1.2.2",    // Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50", // JPEG Baseline (encapsulated pixel data)
];

/// The profile the crate's tests use (Basic, no options), refusing or allowing burned-in
/// annotation.
fn deidentifier(allow_burned_in: bool) -> Arc<Deidentifier> {
    static D: OnceLock<[Arc<Deidentifier>; 2]> = OnceLock::new();
    let d = D.get_or_init(|| {
        let make = |policy| {
            let key = SiteKey::from_bytes(b"radguard-test-key-0123456789abcdef").unwrap();
            let p = Profile::new(ProfileName::Basic, [])
                .unwrap()
                .with_burned_in(policy);
            Arc::new(Deidentifier::new(p, key))
        };
        [make(BurnedInPolicy::Refuse), make(BurnedInPolicy::Allow)]
    });
    Arc::clone(&d[usize::from(allow_burned_in)])
}

type Run = Result<(Vec<u8>, Outcome), DeidError>;

fn run<'a>(
    deid: &Arc<Deidentifier>,
    ts: &str,
    cap: usize,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> Run {
    let mut s = StreamDeid::new(Arc::clone(deid), ts)?.with_cap(cap);
    let mut out = Vec::new();
    for p in pieces {
        s.push(p, &mut out)?;
    }
    let o = s.finish(&mut out)?;
    Ok((out, o))
}

/// What must agree between two feedings: the bytes and the report, or the error.
fn same(a: &Run, b: &Run, what: &str) {
    match (a, b) {
        (Ok((oa, xa)), Ok((ob, xb))) => {
            assert!(oa == ob, "{what}: output bytes differ");
            assert_eq!(xa.report, xb.report, "{what}: reports differ");
            assert_eq!(
                (xa.bytes_in, xa.bytes_out, xa.had_pixel_data),
                (xb.bytes_in, xb.bytes_out, xb.had_pixel_data),
                "{what}: outcomes differ"
            );
        }
        (Err(ea), Err(eb)) => {
            assert_eq!(
                std::mem::discriminant(ea),
                std::mem::discriminant(eb),
                "{what}: {ea} vs {eb}"
            );
            assert_eq!(ea.to_string(), eb.to_string(), "{what}");
        }
        (a, b) => panic!(
            "{what}: {:?} vs {:?}",
            a.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
            b.as_ref().map(|_| "ok").map_err(|e| e.to_string())
        ),
    }
}

fuzz_target!(|input: &[u8]| {
    let [sel, step, s0, s1, cap, data @ ..] = input else {
        return;
    };
    let ts = SYNTAXES[usize::from(*sel & 3)];
    let deid = deidentifier(*sel & 4 != 0);
    let cap = match *cap {
        0 => radguard_deid::DEFAULT_HEAD_CAP,
        n => usize::from(n) * 256,
    };
    let whole = run(&deid, ts, cap, [data]);
    if let Ok((out, o)) = &whole {
        assert_eq!(o.bytes_in, data.len() as u64);
        assert_eq!(o.bytes_out, out.len() as u64);
    }
    let at = usize::from(u16::from_le_bytes([*s0, *s1])) % (data.len() + 1);
    let (a, b) = data.split_at(at);
    same(&whole, &run(&deid, ts, cap, [a, b]), "split in two");
    let step = usize::from(*step % 61) + 1;
    same(&whole, &run(&deid, ts, cap, data.chunks(step)), "in pieces");
});
