//! The one data-set grammar (`radguard_dicom::tokens`, through `inflate::DataSetReader` for
//! Deflated Explicit VR Little Endian): never panics, and gives the same tokens (value chunks
//! merged) and the same `finish()` whether the data set arrives whole, split at one point, or
//! in small pieces (a TCP stream or a P-DATA PDU boundary can fall anywhere; a grammar whose
//! reading depends on the split is a parser differential an attacker chooses).
//!
//! Input layout: byte 0 selects the encoding (bits 0-1: implicit LE, explicit LE, explicit BE,
//! deflated explicit LE) and whether the tokenizer is told the total size (bit 2); bytes 1-2
//! the split point (big endian, modulo the data length + 1); byte 3 the piece size (1..=64);
//! the rest is the data set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use radguard_dicom::inflate::DataSetReader;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{tokenize_chunks, GrammarError, OwnedToken, Token, Tokenizer};
use radguard_dicom::ts::{Encoding, TransferSyntax, DEFLATED_EXPLICIT_VR_LE};

type Reading = (Vec<OwnedToken>, Result<(), GrammarError>);

/// The gateway's limits, with the inflated size capped lower for fuzzing speed. The ratio cap
/// is out of reach (its floor is the size cap): where it stops a stream depends on how much
/// compressed input each step saw, so it is split-dependent by design (inflate.rs); the size
/// cap stops at the same byte whatever the splits, and is checked here.
const LIMITS: Limits = Limits {
    max_depth: 32,
    max_value_length: u32::MAX - 1,
    max_total: u64::MAX,
    max_inflated: 8 << 20,
    max_inflate_ratio: 200,
    inflate_ratio_floor: 8 << 20,
    // Low enough for the fuzzer to reach: the cap must stop at the same element whatever the
    // splits.
    max_elements: 4096,
};

fn plain<'c>(
    enc: Encoding,
    total: Option<u64>,
    chunks: impl IntoIterator<Item = &'c [u8]>,
) -> Reading {
    let mut tz = Tokenizer::new(enc, LIMITS);
    if let Some(t) = total {
        tz = tz.with_total(t);
    }
    tokenize_chunks(tz, chunks)
}

fn deflated<'c>(chunks: impl IntoIterator<Item = &'c [u8]>) -> Reading {
    let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).expect("standard UID");
    let mut r = DataSetReader::new(&ts, LIMITS);
    let mut out: Vec<OwnedToken> = Vec::new();
    for chunk in chunks {
        r.feed(chunk, |t| match (t, out.last_mut()) {
            (Token::Value(b), Some(OwnedToken::Value(v))) => v.extend_from_slice(b),
            (Token::Raw(b), Some(OwnedToken::Raw(v))) => v.extend_from_slice(b),
            (t, _) => out.push(t.into()),
        });
    }
    let end = r.finish();
    (out, end)
}

fuzz_target!(|input: &[u8]| {
    let [sel, s0, s1, step, data @ ..] = input else {
        return;
    };
    let split = usize::from(u16::from_be_bytes([*s0, *s1])) % (data.len() + 1);
    let step = usize::from(*step % 64) + 1;
    let (head, tail) = data.split_at(split);
    let total = (sel & 4 != 0).then_some(data.len() as u64);
    let read = |chunks: Vec<&[u8]>| match sel & 3 {
        0 => plain(Encoding::ImplicitLittle, total, chunks),
        1 => plain(Encoding::ExplicitLittle, total, chunks),
        2 => plain(Encoding::ExplicitBig, total, chunks),
        _ => deflated(chunks),
    };
    let whole = read(vec![data]);
    let split_read = read(vec![head, tail]);
    assert_eq!(whole, split_read, "tokens depend on a split at {split}");
    let pieces = read(data.chunks(step).collect());
    assert_eq!(whole, pieces, "tokens depend on {step}-byte pieces");
});
