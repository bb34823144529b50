//! The data-set firewall's checks (`radguard_dicom::validate`, level `safe`): never panic, the
//! same verdict whole or in pieces, and whenever a data set is accepted, every consumer of the
//! grammar reads the same thing from it:
//! - the strict tree (`radguard_dicom::tree`, UN kept as read) parses it, and written back in
//!   the form it was read gives the input bytes again;
//! - de-identification's reader (`radguard_deid::codec::parse_dataset_with`, under the
//!   gateway's limits) parses it and finds the tree's Patient ID, Study Instance UID and SOP
//!   Instance UID (both read a UN value of a standard sequence's tag as that sequence, PS3.5
//!   §6.2.2);
//! - the audit trail's head sniffer finds the tree's Patient ID / Study / SOP Instance UID;
//! - the integrity ledger's fingerprint (`radguard_ledger::Fingerprinter`) either succeeds, and
//!   then the digest it keeps for every fingerprinted attribute (Patient ID, Study and SOP
//!   Instance UID among them) is the digest of the tree's value of that element, and it keeps
//!   one exactly for the fingerprinted elements the tree has at the top level; or it refuses
//!   for one of the reasons it documents (its parser's rules, restated from the tree in
//!   [`fingerprint_expectation`]).
//!
//! Input layout: byte 0 selects the encoding, byte 1 the piece size (1..=256), the rest is the
//! data set.
#![no_main]
use dicom_core::Tag;
use libfuzzer_sys::fuzz_target;
use radguard_dicom::head::HeadSniffer;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::is_pixel_tag;
use radguard_dicom::tree::{self, Element, Lengths, TreeOptions, UnSequences, Value};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use radguard_dicom::validate::{Level, Outcome, Validator};
use radguard_ledger::fingerprint::{Vr, ATTRIBUTES};
use radguard_ledger::{Fingerprint, FingerprintError, Fingerprinter};

const SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2",   // Implicit VR Little Endian
    "1.2.840.10008.1.2.1", // Explicit VR Little Endian
    "1.2.840.10008.1.2.2", // Explicit VR Big Endian (retired)
];

const PATIENT_ID: Tag = Tag(0x0010, 0x0020);
const STUDY_INSTANCE_UID: Tag = Tag(0x0020, 0x000D);
const SOP_INSTANCE_UID: Tag = Tag(0x0008, 0x0018);
/// Planar Configuration: not fingerprinted, but read by the fingerprint's parser (it lays out
/// the native samples), so bound by the same rules as the fingerprinted attributes.
const PLANAR_CONFIGURATION: u32 = 0x0028_0006;
/// The longest fingerprinted value the fingerprint's parser collects
/// (`MAX_ATTRIBUTE_VALUE` in radguard-ledger's fingerprint/parser.rs).
const MAX_ATTRIBUTE_VALUE: usize = 64 * 1024;

fn validate(ts: &TransferSyntax, chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> Outcome {
    let mut v = Validator::new(ts, Limits::GATEWAY, Level::Safe);
    for c in chunks {
        v.feed(c.as_ref());
    }
    v.finish()
}

fn text(ds: &tree::DataSet, tag: Tag) -> Option<String> {
    let e = ds.get(tag)?;
    let Value::Bytes(b) = &e.value else {
        return None;
    };
    let s = String::from_utf8_lossy(b);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.chars().take(256).collect())
}

fn tag_u32(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

fn fingerprinted(tag: u32) -> Option<&'static radguard_ledger::fingerprint::Attribute> {
    ATTRIBUTES.iter().find(|a| a.tag == tag)
}

fn fingerprint(uid: &str, data: &[u8]) -> Result<Fingerprint, FingerprintError> {
    let mut f = Fingerprinter::new(uid)?;
    f.feed(data);
    f.finish()
}

/// What the fingerprint must do with an accepted data set, from the strict tree's top level.
#[derive(Debug, PartialEq, Eq)]
enum FpExpect {
    /// No rule of its parser applies and there is no pixel data: it must succeed.
    Succeeds,
    /// Its parser reached the top-level pixel data cleanly: from there its own checks of the
    /// image (layout from the image attributes, pixel count, decoding) may refuse it.
    ImageChecks,
    /// One of its parser's structural rules refuses it.
    Malformed(&'static str),
    /// A fingerprinted value longer than it collects.
    TooLong { tag: u32, length: u32 },
}

/// The fingerprint parser's documented rules (radguard-ledger fingerprint/parser.rs; the same
/// rules as `expected_fingerprint` in crates/radguard/tests/one_grammar.rs), for a data set
/// the firewall accepted, so free of grammar errors and of top-level order anomalies: walking
/// the top-level elements in order up to the first pixel data element,
/// - a fingerprinted attribute or Planar Configuration read as a sequence (SQ, or UN of
///   undefined length, which the firewall leaves to be read as a sequence) is `Malformed`;
///   one longer than 64 KiB is `AttributeTooLong`; a fingerprinted US attribute of odd length
///   is `Malformed` (the firewall checks lengths against the VR on the wire, and UN has none);
/// - pixel data read as a sequence, or encapsulated outside Explicit VR Little Endian
///   (PS3.5 §A.4), is `Malformed`;
/// - past the pixel data header, the image checks apply; nothing after the pixel data is read.
fn fingerprint_expectation(ds: &tree::DataSet, enc: Encoding) -> FpExpect {
    for e in &ds.elements {
        let tag = tag_u32(e.tag);
        if is_pixel_tag(e.tag) {
            return match &e.value {
                Value::Items(_) => FpExpect::Malformed("pixel data encoded as a sequence"),
                Value::Fragments(_) if enc != Encoding::ExplicitLittle => {
                    FpExpect::Malformed("encapsulated pixel data in a native transfer syntax")
                }
                _ => FpExpect::ImageChecks,
            };
        }
        let attr = fingerprinted(tag);
        if attr.is_none() && tag != PLANAR_CONFIGURATION {
            continue;
        }
        match &e.value {
            Value::Bytes(b) if b.len() > MAX_ATTRIBUTE_VALUE => {
                return FpExpect::TooLong {
                    tag,
                    length: b.len() as u32,
                }
            }
            Value::Bytes(b) if attr.is_some_and(|a| a.vr == Vr::US) && b.len() % 2 == 1 => {
                return FpExpect::Malformed("a US attribute of odd length")
            }
            Value::Bytes(_) => {}
            _ => return FpExpect::Malformed("a fingerprinted attribute encoded as a sequence"),
        }
    }
    FpExpect::Succeeds
}

/// Whether the fingerprint's verdict is one its rules allow for this data set.
fn fingerprint_verdict_allowed(
    got: &Result<Fingerprint, FingerprintError>,
    want: &FpExpect,
) -> bool {
    match got {
        Ok(_) => matches!(want, FpExpect::Succeeds | FpExpect::ImageChecks),
        Err(FingerprintError::Malformed { .. }) => matches!(want, FpExpect::Malformed(_)),
        Err(FingerprintError::AttributeTooLong { tag, length }) => {
            *want == FpExpect::TooLong {
                tag: *tag,
                length: *length,
            }
        }
        Err(
            FingerprintError::MissingImageAttribute(_)
            | FingerprintError::UnsupportedPixelLayout(_)
            | FingerprintError::PixelDataTooShort { .. }
            | FingerprintError::EncapsulatedTooLarge { .. }
            | FingerprintError::Decode { .. },
        ) => *want == FpExpect::ImageChecks,
        Err(_) => false,
    }
}

/// The per-attribute digests the fingerprint must keep: those of a data set holding only the
/// tree's top-level fingerprinted elements, written in the same transfer syntax by the tree's
/// writer. (The ledger's canonical form, `attrs::canonical_element`/`element_digest`, is private
/// to it; fingerprinting this minimal data set applies exactly that form to the tree's values.)
fn reference_digests(ds: &tree::DataSet, ts: &TransferSyntax) -> Fingerprint {
    let elements: Vec<Element> = ds
        .elements
        .iter()
        .filter(|e| fingerprinted(tag_u32(e.tag)).is_some())
        .cloned()
        .collect();
    let mut bytes = Vec::new();
    tree::encode_elements_with(&elements, ts.encoding, Lengths::AsRead, &mut bytes)
        .expect("the tree's fingerprinted elements encode");
    match fingerprint(ts.uid(), &bytes) {
        Ok(f) => f,
        Err(e) => panic!("the tree's fingerprinted elements alone cannot be fingerprinted: {e}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let [sel, step, data @ ..] = input else {
        return;
    };
    let ts = TransferSyntax::from_uid(SYNTAXES[usize::from(*sel) % SYNTAXES.len()]).unwrap();
    let step = usize::from(*step) + 1;
    let whole = validate(&ts, [data]);
    let pieces = validate(&ts, data.chunks(step));
    assert_eq!(whole.refusal, pieces.refusal, "verdict depends on {step}-byte pieces");
    if whole.refusal.is_some() {
        return;
    }
    // Accepted: the strict tree (UN kept as read, as the relay forwards it) must read it...
    let options = TreeOptions {
        strict_order: true,
        un_sequences: UnSequences::Keep,
    };
    let ds = match tree::parse(data, &ts, Limits::GATEWAY, options) {
        Ok(ds) => ds,
        Err(e) => panic!("accepted by the firewall, refused by the tree: {e}"),
    };
    // ...the bytes it read write back to themselves...
    let mut out = Vec::new();
    tree::encode_elements_with(&ds.elements, ts.encoding, Lengths::AsRead, &mut out)
        .expect("an accepted data set re-encodes");
    assert_eq!(out, data, "an accepted data set does not re-encode to itself");
    // ...the audit trail's sniffer names the same patient and study...
    let mut s = HeadSniffer::new(&ts);
    s.feed(data);
    let facts = s.finish();
    if !facts.incomplete {
        assert_eq!(facts.patient_id, text(&ds, PATIENT_ID));
        assert_eq!(facts.study_uid, text(&ds, STUDY_INSTANCE_UID));
        assert_eq!(facts.sop_instance_uid, text(&ds, SOP_INSTANCE_UID));
    }
    // ...de-identification's reader reads the same identifying values...
    match radguard_deid::codec::parse_dataset_with(data, ts.encoding, Limits::GATEWAY) {
        Ok(deid) => {
            for tag in [PATIENT_ID, STUDY_INSTANCE_UID, SOP_INSTANCE_UID] {
                assert_eq!(
                    deid.get(tag).map(|e| &e.value),
                    ds.get(tag).map(|e| &e.value),
                    "de-identification reads another {tag} than the tree"
                );
            }
        }
        Err(e) => panic!("accepted by the firewall, refused by de-identification's reader: {e}"),
    }
    // ...and the ledger fingerprints the same attribute values, or refuses as it documents.
    let want = fingerprint_expectation(&ds, ts.encoding);
    let got = fingerprint(ts.uid(), data);
    assert!(
        fingerprint_verdict_allowed(&got, &want),
        "the fingerprint's verdict {got:?} is not one its rules allow ({want:?})"
    );
    if let Ok(fp) = got {
        let reference = reference_digests(&ds, &ts);
        assert_eq!(
            fp.attribute_digests, reference.attribute_digests,
            "the fingerprint keeps other attribute digests than the tree's values give"
        );
        for tag in [PATIENT_ID, STUDY_INSTANCE_UID, SOP_INSTANCE_UID] {
            let kept = fp.attribute_digests.iter().any(|d| d.tag == tag_u32(tag));
            assert_eq!(
                kept,
                ds.get(tag).is_some(),
                "the fingerprint and the tree disagree on whether {tag} is present"
            );
        }
    }
});
