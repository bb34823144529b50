//! The data-set firewall's checks (`radguard_dicom::validate`, level `safe`): never panic, the
//! same verdict whole or in pieces, and whenever a data set is accepted, every consumer of the
//! grammar reads the same thing from it: de-identification's tree parses it (strict order), the
//! tree written back in the form it was read gives the input bytes again, and the audit trail's
//! head sniffer finds the same identifying attributes as the tree.
//!
//! Input layout: byte 0 selects the encoding, byte 1 the piece size (1..=256), the rest is the
//! data set.
#![no_main]
use dicom_core::Tag;
use libfuzzer_sys::fuzz_target;
use radguard_dicom::head::HeadSniffer;
use radguard_dicom::limits::Limits;
use radguard_dicom::tree::{self, Lengths, TreeOptions, UnSequences, Value};
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::validate::{Level, Outcome, Validator};

const SYNTAXES: [&str; 3] = [
    "1.2.840.10008.1.2",   // Implicit VR Little Endian
    "1.2.840.10008.1.2.1", // Explicit VR Little Endian
    "1.2.840.10008.1.2.2", // Explicit VR Big Endian (retired)
];

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
    // Accepted: de-identification's reader (strict order) must read it...
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
    // ...and the audit trail's sniffer names the same patient and study.
    let mut s = HeadSniffer::new(&ts);
    s.feed(data);
    let facts = s.finish();
    if !facts.incomplete {
        assert_eq!(facts.patient_id, text(&ds, Tag(0x0010, 0x0020)));
        assert_eq!(facts.study_uid, text(&ds, Tag(0x0020, 0x000D)));
        assert_eq!(facts.sop_instance_uid, text(&ds, Tag(0x0008, 0x0018)));
    }
});
