//! The data-set tree through its public API: parse, encode, options, limits.

use std::io::Write as _;

use proptest::prelude::*;

use dicom_core::{Tag, VR};
use radguard_dicom::inflate::InflateError;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{implicit_vr, AnomalyKind, Tokenizer, ITEM_DELIMITER, UNDEFINED};
use radguard_dicom::tree::*;
use radguard_dicom::ts::{Encoding, TransferSyntax, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE};

/// The default options under the offline limits.
fn parse_dataset(buf: &[u8], enc: Encoding) -> Result<DataSet, ParseError> {
    parse_encoded(buf, enc, Limits::OFFLINE, TreeOptions::default())
}

const KEEP: TreeOptions = TreeOptions {
    strict_order: true,
    un_sequences: UnSequences::Keep,
};

fn encode(ds: &DataSet, enc: Encoding) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_elements(&ds.elements, enc, &mut out).map(|()| out)
}

fn encode_as_read(ds: &DataSet, enc: Encoding) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_elements_with(&ds.elements, enc, Lengths::AsRead, &mut out).map(|()| out)
}

fn el(tag: Tag, vr: VR, v: &[u8]) -> Element {
    Element::bytes(tag, vr, v.to_vec())
}

fn seq(tag: Tag, items: Vec<DataSet>) -> Element {
    Element::new(tag, VR::SQ, Value::Items(items))
}

fn sample() -> DataSet {
    let inner = DataSet::new(vec![
        el(Tag(0x0008, 0x1150), VR::UI, b"1.2.840.10008.5.1.4.1.1.2\0"),
        el(Tag(0x0008, 0x1155), VR::UI, b"1.2.3.4\0"),
    ]);
    let nested = DataSet::new(vec![seq(Tag(0x0040, 0xA730), vec![inner.clone()])]);
    DataSet::new(vec![
        el(Tag(0x0008, 0x0060), VR::CS, b"CT"),
        seq(Tag(0x0008, 0x1140), vec![inner, DataSet::default(), nested]),
        el(Tag(0x0010, 0x0010), VR::PN, b"DOE^JOHN"),
        el(Tag(0x0028, 0x0010), VR::US, &[0, 2]),
        Element::new(
            Tag(0x7FE0, 0x0010),
            VR::OB,
            Value::Fragments(vec![vec![], b"JPEG".to_vec()]),
        ),
    ])
}

const ENCODINGS: [Encoding; 3] = [
    Encoding::ImplicitLittle,
    Encoding::ExplicitLittle,
    Encoding::ExplicitBig,
];

#[test]
fn round_trip_all_encodings() {
    for enc in ENCODINGS {
        let mut ds = sample();
        if enc == Encoding::ImplicitLittle {
            // Implicit VR: pixel data reads as OW (PS3.5 §A.1).
            ds.elements[4].vr = VR::OW;
        }
        let out = encode(&ds, enc).unwrap();
        assert_eq!(out.len() as u64, dataset_len(&ds, enc, Lengths::Defined));
        let back = parse_dataset(&out, enc).unwrap();
        assert_eq!(back, ds, "{enc:?}");
    }
}

#[test]
fn any_split_builds_the_same_tree() {
    for enc in ENCODINGS {
        let out = encode(&sample(), enc).unwrap();
        let whole = parse_dataset(&out, enc).unwrap();
        for cut in 0..=out.len() {
            let mut tz = Tokenizer::new(enc, Limits::OFFLINE);
            let mut tree = TreeBuilder::new(Limits::OFFLINE);
            for part in [&out[..cut], &out[cut..]] {
                for t in tz.tokens(part) {
                    tree.token(t).unwrap();
                }
            }
            tz.finish().unwrap();
            assert_eq!(tree.finish().unwrap(), whole, "{enc:?} cut {cut}");
        }
    }
}

fn hdr_ex(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], len: u32) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"SQ" | b"OB" | b"UN" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        out.extend_from_slice(&(len as u16).to_le_bytes());
    }
}

fn item(out: &mut Vec<u8>, e: u16, len: u32) {
    out.extend_from_slice(&0xFFFEu16.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
}

fn implicit(out: &mut Vec<u8>, g: u16, e: u16, v: &[u8]) {
    out.extend_from_slice(&g.to_le_bytes());
    out.extend_from_slice(&e.to_le_bytes());
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

/// A UN of undefined length holding one undefined-length item with a patient name.
fn un_undefined(b: &mut Vec<u8>, g: u16, e: u16) {
    hdr_ex(b, g, e, b"UN", UNDEFINED);
    item(b, 0xE000, UNDEFINED);
    implicit(b, 0x0010, 0x0010, b"X^Y ");
    item(b, 0xE00D, 0);
    item(b, 0xE0DD, 0);
}

#[test]
fn undefined_lengths_and_un_sequences() {
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
    item(&mut b, 0xE000, UNDEFINED);
    hdr_ex(&mut b, 0x0008, 0x1155, b"UI", 4);
    b.extend_from_slice(b"1.2\0");
    item(&mut b, 0xE00D, 0);
    item(&mut b, 0xE0DD, 0);
    // A private sequence as UN with undefined length: implicit VR LE inside.
    un_undefined(&mut b, 0x0009, 0x1001);
    let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
    assert_eq!(ds.elements.len(), 2);
    let Value::Items(items) = &ds.elements[1].value else {
        panic!()
    };
    assert_eq!(ds.elements[1].vr, VR::SQ);
    assert_eq!(items[0].elements[0].vr, VR::PN);
    assert_eq!(items[0].text(Tag(0x0010, 0x0010)), Some(&b"X^Y"[..]));
    // Kept as UN: the same items, and written back as UN of undefined length with implicit
    // VR LE inside, whatever the outer byte order.
    let kept = parse_encoded(&b, Encoding::ExplicitLittle, Limits::OFFLINE, KEEP).unwrap();
    assert_eq!(kept.elements[1].vr, VR::UN);
    assert_eq!(kept.elements[1].value, ds.elements[1].value);
    let out = encode(&kept, Encoding::ExplicitLittle).unwrap();
    let back = parse_encoded(&out, Encoding::ExplicitLittle, Limits::OFFLINE, KEEP).unwrap();
    assert_eq!(back.elements[1].vr, VR::UN);
    assert_eq!(encode(&back, Encoding::ExplicitLittle).unwrap(), out);
    let mut expected = Vec::new();
    hdr_ex(&mut expected, 0x0009, 0x1001, b"UN", UNDEFINED);
    item(&mut expected, 0xE000, 12);
    implicit(&mut expected, 0x0010, 0x0010, b"X^Y ");
    item(&mut expected, 0xE0DD, 0);
    assert!(out.ends_with(&expected), "{out:02X?}");
    // As read: the same bytes.
    assert_eq!(encode_as_read(&kept, Encoding::ExplicitLittle).unwrap(), b);
    let be = encode(&kept, Encoding::ExplicitBig).unwrap();
    assert!(be.ends_with(&expected[12..]), "{be:02X?}");
    let back = parse_encoded(&be, Encoding::ExplicitBig, Limits::OFFLINE, KEEP).unwrap();
    assert_eq!(back.elements[1], out_of(&kept.elements[1]));
    assert_eq!(encode(&back, Encoding::ExplicitBig).unwrap(), be);
}

/// An element as the grammar reads it after [`Lengths::Defined`]: items of defined length.
fn out_of(e: &Element) -> Element {
    let mut e = e.clone();
    if let Value::Items(items) = &mut e.value {
        for i in items {
            i.undefined_length = false;
        }
    }
    e
}

#[test]
fn a_standard_sequence_sent_as_un_is_read_as_its_items() {
    // (0008,1140) Referenced Image Sequence written as UN of defined length by a node
    // that did not know it: one item holding a patient name, implicit VR LE inside.
    let mut inner = Vec::new();
    implicit(&mut inner, 0x0010, 0x0010, b"DOE^JOHN");
    let mut value = Vec::new();
    item(&mut value, 0xE000, inner.len() as u32);
    value.extend_from_slice(&inner);
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x0060, b"CS", 2);
    b.extend_from_slice(b"CT");
    hdr_ex(&mut b, 0x0008, 0x1140, b"UN", value.len() as u32);
    b.extend_from_slice(&value);
    let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
    let e = ds.get(Tag(0x0008, 0x1140)).unwrap();
    assert_eq!(e.vr, VR::SQ);
    let Value::Items(items) = &e.value else {
        panic!("{e:?}")
    };
    assert_eq!(items[0].text(Tag(0x0010, 0x0010)), Some(&b"DOE^JOHN"[..]));
    // Kept as UN, it stays bytes and is written back as it came.
    let kept = parse_encoded(&b, Encoding::ExplicitLittle, Limits::OFFLINE, KEEP).unwrap();
    let e = kept.get(Tag(0x0008, 0x1140)).unwrap();
    assert_eq!((e.vr, &e.value), (VR::UN, &Value::Bytes(value.clone())));
    assert_eq!(encode(&kept, Encoding::ExplicitLittle).unwrap(), b);
    // A private UN stays bytes; a broken one is an error at its own offset.
    let mut p = Vec::new();
    hdr_ex(&mut p, 0x0009, 0x1001, b"UN", value.len() as u32);
    p.extend_from_slice(&value);
    let ds = parse_dataset(&p, Encoding::ExplicitLittle).unwrap();
    assert_eq!(ds.elements[0].value, Value::Bytes(value.clone()));
    let mut bad = b.clone();
    let n = bad.len();
    bad[n - inner.len() - 4] = 0xFF; // the item's length overruns the value
    match parse_dataset(&bad, Encoding::ExplicitLittle) {
        Err(ParseError::Malformed { offset, .. }) => assert_eq!(offset, 10 + 12),
        other => panic!("{other:?}"),
    }
    // Kept as bytes, the broken one is not read as items at all.
    assert!(parse_encoded(&bad, Encoding::ExplicitLittle, Limits::OFFLINE, KEEP).is_ok());
}

#[test]
fn repeated_and_unordered_elements_are_refused_when_strict() {
    let pid = |b: &mut Vec<u8>, v: &[u8]| {
        hdr_ex(b, 0x0010, 0x0020, b"LO", v.len() as u32);
        b.extend_from_slice(v);
    };
    let mut dup = Vec::new();
    pid(&mut dup, b"PID1");
    pid(&mut dup, b"PID2");
    assert!(matches!(
        parse_dataset(&dup, Encoding::ExplicitLittle),
        Err(ParseError::Ambiguous {
            offset: 12,
            anomaly: AnomalyKind::Duplicate { .. }
        })
    ));
    let mut order = Vec::new();
    pid(&mut order, b"PID1");
    hdr_ex(&mut order, 0x0010, 0x0010, b"PN", 4);
    order.extend_from_slice(b"DOE ");
    assert!(matches!(
        parse_dataset(&order, Encoding::ExplicitLittle),
        Err(ParseError::Ambiguous {
            anomaly: AnomalyKind::OutOfOrder { .. },
            ..
        })
    ));
    // Inside an item too.
    let mut seq = Vec::new();
    hdr_ex(&mut seq, 0x0008, 0x1140, b"SQ", UNDEFINED);
    item(&mut seq, 0xE000, UNDEFINED);
    seq.extend_from_slice(&dup);
    item(&mut seq, 0xE00D, 0);
    item(&mut seq, 0xE0DD, 0);
    assert!(matches!(
        parse_dataset(&seq, Encoding::ExplicitLittle),
        Err(ParseError::Ambiguous { .. })
    ));
    // Not strict: both kept, in stream order.
    let lax = TreeOptions {
        strict_order: false,
        ..TreeOptions::default()
    };
    for (b, n) in [(&dup, 2), (&order, 2)] {
        let ds = parse_encoded(b, Encoding::ExplicitLittle, Limits::OFFLINE, lax).unwrap();
        assert_eq!(ds.elements.len(), n);
        assert_eq!(&encode(&ds, Encoding::ExplicitLittle).unwrap(), b);
    }
    // The same tag in two items is fine; an odd length is kept as read.
    let mut two = Vec::new();
    hdr_ex(&mut two, 0x0008, 0x1140, b"SQ", UNDEFINED);
    for v in [&b"PID1"[..], b"PID"] {
        item(&mut two, 0xE000, UNDEFINED);
        pid(&mut two, v);
        item(&mut two, 0xE00D, 0);
    }
    item(&mut two, 0xE0DD, 0);
    let ds = parse_dataset(&two, Encoding::ExplicitLittle).unwrap();
    let Value::Items(items) = &ds.elements[0].value else {
        panic!()
    };
    assert_eq!(
        items[1].get(Tag(0x0010, 0x0020)).unwrap().value,
        Value::Bytes(b"PID".to_vec())
    );
}

#[test]
fn malformed_inputs_are_errors() {
    // Unknown VR.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0010, 0x0010, b"ZZ", 2);
    b.extend_from_slice(b"AB");
    assert!(matches!(
        parse_dataset(&b, Encoding::ExplicitLittle),
        Err(ParseError::UnknownVr { offset: 0, .. })
    ));
    // An item that overruns its sequence.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", 16);
    item(&mut b, 0xE000, 100);
    b.extend_from_slice(&[0u8; 8]);
    assert!(matches!(
        parse_dataset(&b, Encoding::ExplicitLittle),
        Err(ParseError::Malformed { offset: 12, .. })
    ));
    // A sequence never closed.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
    item(&mut b, 0xE000, UNDEFINED);
    assert!(matches!(
        parse_dataset(&b, Encoding::ExplicitLittle),
        Err(ParseError::Truncated { offset: 20 })
    ));
    // An element where an item must be.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
    hdr_ex(&mut b, 0x0008, 0x1155, b"UI", 2);
    b.extend_from_slice(b"1\0");
    assert!(matches!(
        parse_dataset(&b, Encoding::ExplicitLittle),
        Err(ParseError::Malformed { .. })
    ));
    // A stray item delimiter at top level.
    let mut b = Vec::new();
    item(&mut b, 0xE00D, 0);
    assert!(parse_dataset(&b, Encoding::ExplicitLittle).is_err());
    // Undefined length on a text VR.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0010, 0x4000, b"UT", UNDEFINED);
    assert!(parse_dataset(&b, Encoding::ExplicitLittle).is_err());
    // A sequence delimiter with a length, whatever the options.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
    item(&mut b, 0xE0DD, 4);
    for options in [TreeOptions::default(), KEEP] {
        assert!(matches!(
            parse_encoded(&b, Encoding::ExplicitLittle, Limits::OFFLINE, options),
            Err(ParseError::Malformed { offset: 12, .. })
        ));
    }
}

#[test]
fn nesting_limit() {
    let nest = |n: usize| {
        let mut ds = DataSet::default();
        for _ in 0..n {
            ds = DataSet::new(vec![seq(Tag(0x0040, 0xA730), vec![ds])]);
        }
        encode(&ds, Encoding::ExplicitLittle).unwrap()
    };
    let limit = Limits::OFFLINE.max_depth;
    assert!(parse_dataset(&nest(limit), Encoding::ExplicitLittle).is_ok());
    assert!(matches!(
        parse_dataset(&nest(limit + 1), Encoding::ExplicitLittle),
        Err(ParseError::TooDeep { limit: l, .. }) if l == limit
    ));
}

#[test]
fn a_cut_is_truncation_not_malformation() {
    let out = encode(&sample(), Encoding::ExplicitLittle).unwrap();
    for cut in 1..out.len() {
        match parse_dataset(&out[..cut], Encoding::ExplicitLittle) {
            Err(ParseError::Truncated { .. }) => {}
            // Cut between two top-level elements: a shorter data set.
            Ok(ds) => assert!(ds.elements.len() < 5, "cut {cut}"),
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn implicit_vr_comes_from_the_dictionary() {
    let mut b = Vec::new();
    implicit(&mut b, 0x0009, 0x0010, b"ACME");
    implicit(&mut b, 0x0009, 0x1010, b"ab");
    implicit(&mut b, 0x0010, 0x0010, b"DOE^");
    implicit(&mut b, 0x0028, 0x0000, &[4, 0, 0, 0]);
    implicit(&mut b, 0x0028, 0x0010, &[4, 0]);
    implicit(&mut b, 0x6002, 0x3000, &[0, 0]);
    let ds = parse_dataset(&b, Encoding::ImplicitLittle).unwrap();
    let vrs: Vec<VR> = ds.elements.iter().map(|e| e.vr).collect();
    assert_eq!(vrs, [VR::LO, VR::UN, VR::PN, VR::UL, VR::US, VR::OW]);
}

#[test]
fn a_private_sequence_in_implicit_vr_is_written_so_it_reads_as_one() {
    // Only its undefined length says (0009,1002) is a sequence in implicit VR (PS3.5 §7.1.3).
    let ds = DataSet::new(vec![
        el(Tag(0x0009, 0x0010), VR::LO, b"ACME"),
        seq(
            Tag(0x0009, 0x1002),
            vec![DataSet::new(vec![el(Tag(0x0010, 0x0010), VR::PN, b"DOE^")])],
        ),
    ]);
    let out = encode(&ds, Encoding::ImplicitLittle).unwrap();
    assert_eq!(&out[12 + 4..12 + 8], &UNDEFINED.to_le_bytes());
    assert!(out.ends_with(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]));
    let back = parse_dataset(&out, Encoding::ImplicitLittle).unwrap();
    assert!(back.elements[1].undefined_length);
    assert_eq!(back.elements[1].value, ds.elements[1].value);
    // A standard one keeps its defined length.
    let std = DataSet::new(vec![Element {
        tag: Tag(0x0008, 0x1140),
        ..ds.elements[1].clone()
    }]);
    let out = encode(&std, Encoding::ImplicitLittle).unwrap();
    assert_eq!(&out[4..8], &(out.len() as u32 - 8).to_le_bytes());
    assert_eq!(parse_dataset(&out, Encoding::ImplicitLittle).unwrap(), std);
}

#[test]
fn group_sizes_are_what_the_writer_writes() {
    let mut b = Vec::new();
    // (0008,0000) claims 99; the group holds a CS and an undefined-length SQ whose item has
    // a group length of its own.
    hdr_ex(&mut b, 0x0008, 0x0000, b"UL", 4);
    b.extend_from_slice(&99u32.to_le_bytes());
    hdr_ex(&mut b, 0x0008, 0x0060, b"CS", 2);
    b.extend_from_slice(b"CT");
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
    item(&mut b, 0xE000, UNDEFINED);
    hdr_ex(&mut b, 0x0008, 0x0000, b"UL", 4);
    b.extend_from_slice(&0u32.to_le_bytes());
    hdr_ex(&mut b, 0x0008, 0x1155, b"UI", 4);
    b.extend_from_slice(b"1.2\0");
    item(&mut b, 0xE00D, 0);
    item(&mut b, 0xE0DD, 0);
    hdr_ex(&mut b, 0x0010, 0x0010, b"PN", 4);
    b.extend_from_slice(b"DOE^");
    let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
    let sizes = |lengths| {
        group_sizes(&ds.elements, Encoding::ExplicitLittle, lengths)
            .into_iter()
            .collect::<Vec<_>>()
    };
    // CS (8 + 2) + SQ (12 + item 8 + group length 12 + UI 12); as read, the item and
    // sequence delimiters (8 + 8) too.
    assert_eq!(sizes(Lengths::Defined), [(0x0008, 54), (0x0010, 12)]);
    assert_eq!(sizes(Lengths::AsRead), [(0x0008, 70), (0x0010, 12)]);
    assert_eq!(
        encode_as_read(&ds, Encoding::ExplicitLittle).unwrap().len(),
        12 + 70 + 12
    );
    let Value::Items(items) = &ds.elements[2].value else {
        panic!()
    };
    let inner = item_encoding(&ds.elements[2], Encoding::ExplicitLittle);
    assert_eq!(inner, Encoding::ExplicitLittle);
    assert_eq!(
        group_sizes(&items[0].elements, inner, Lengths::AsRead)
            .into_iter()
            .collect::<Vec<_>>(),
        [(0x0008, 12)]
    );
    // Items inside UN are implicit VR LE.
    let un = Element::new(Tag(0x0009, 0x1001), VR::UN, Value::Items(vec![]));
    assert_eq!(
        item_encoding(&un, Encoding::ExplicitBig),
        Encoding::ImplicitLittle
    );
}

#[test]
fn deflated_data_sets_are_inflated_first() {
    let plain = encode(&sample(), Encoding::ExplicitLittle).unwrap();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&plain).unwrap();
    let z = z.finish().unwrap();
    let deflated = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
    let explicit = TransferSyntax::from_uid(EXPLICIT_VR_LE).unwrap();
    let ds = parse(&z, &deflated, Limits::SCANNER, KEEP).unwrap();
    assert_eq!(ds, parse(&plain, &explicit, Limits::SCANNER, KEEP).unwrap());
    assert_eq!(ds, sample());
    // Cut short: the deflate stream did not end.
    assert!(matches!(
        parse(&z[..z.len() / 2], &deflated, Limits::SCANNER, KEEP),
        Err(ParseError::Inflate { .. } | ParseError::Truncated { .. })
    ));
    // Over the inflate cap.
    let small = Limits {
        max_inflated: 16,
        ..Limits::SCANNER
    };
    assert!(matches!(
        parse(&z, &deflated, small, KEEP),
        Err(ParseError::Inflate {
            error: InflateError::TooLarge { limit: 16 },
            ..
        })
    ));
}

#[test]
fn item_delimiters_and_defined_lengths_are_rewritten_not_kept() {
    // An undefined-length item in a defined-length sequence comes back with a defined length.
    let mut b = Vec::new();
    hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", 8 + 12 + 8);
    item(&mut b, 0xE000, UNDEFINED);
    hdr_ex(&mut b, 0x0008, 0x1155, b"UI", 4);
    b.extend_from_slice(b"1.2\0");
    b.extend_from_slice(&[0xFE, 0xFF]);
    b.extend_from_slice(&ITEM_DELIMITER.element().to_le_bytes());
    b.extend_from_slice(&[0, 0, 0, 0]);
    let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
    let out = encode(&ds, Encoding::ExplicitLittle).unwrap();
    assert_eq!(encode_as_read(&ds, Encoding::ExplicitLittle).unwrap(), b);
    assert_eq!(out.len(), b.len() - 8);
    assert_eq!(&out[8..12], &(8u32 + 12).to_le_bytes());
    let mut defined = ds.clone();
    let Value::Items(items) = &mut defined.elements[0].value else {
        panic!()
    };
    items[0].undefined_length = false;
    assert_eq!(
        parse_dataset(&out, Encoding::ExplicitLittle).unwrap(),
        defined
    );
}

/// Elements for generated trees: (tag, VR in explicit VR, kind).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bytes,
    Items,
    /// A sequence kept as UN (explicit VR only).
    UnItems,
    Fragments,
}

const TAGS: [(Tag, VR, Kind); 9] = [
    (Tag(0x0008, 0x0060), VR::CS, Kind::Bytes),
    (Tag(0x0008, 0x1140), VR::SQ, Kind::Items),
    (Tag(0x0009, 0x0010), VR::LO, Kind::Bytes),
    (Tag(0x0009, 0x1001), VR::OB, Kind::Bytes),
    (Tag(0x0009, 0x1002), VR::SQ, Kind::Items),
    (Tag(0x0009, 0x1003), VR::UN, Kind::UnItems),
    (Tag(0x0010, 0x0010), VR::PN, Kind::Bytes),
    (Tag(0x0028, 0x0010), VR::US, Kind::Bytes),
    (Tag(0x7FE0, 0x0010), VR::OB, Kind::Fragments),
];

fn tree(depth: u32) -> BoxedStrategy<DataSet> {
    let picks = proptest::collection::btree_set(0..TAGS.len(), 0..5);
    let values = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..9), 5);
    let flags = proptest::collection::vec(any::<bool>(), 6);
    if depth == 0 {
        return (picks, values, flags)
            .prop_map(|(p, v, f)| build(&p, &v, &f, &[]))
            .boxed();
    }
    let items = proptest::collection::vec(tree(depth - 1), 0..3);
    (picks, values, flags, items)
        .prop_map(|(p, v, f, i)| build(&p, &v, &f, &i))
        .boxed()
}

fn build(
    picks: &std::collections::BTreeSet<usize>,
    values: &[Vec<u8>],
    flags: &[bool],
    items: &[DataSet],
) -> DataSet {
    let mut ds = DataSet {
        elements: Vec::new(),
        undefined_length: flags[5],
    };
    for (n, &i) in picks.iter().enumerate() {
        let (tag, vr, kind) = TAGS[i];
        let v = values[n % values.len()].clone();
        let value = match kind {
            Kind::Bytes => Value::Bytes(v),
            Kind::Items | Kind::UnItems => Value::Items(items.to_vec()),
            Kind::Fragments => Value::Fragments(vec![vec![], v]),
        };
        ds.elements.push(Element {
            tag,
            vr,
            value,
            undefined_length: flags[n % 5],
        });
    }
    ds
}

/// The tree as the grammar reads it after it was written with `lengths` in `enc`: implicit
/// VR from the dictionary (inside a UN sequence too), a sequence kept as UN only at an
/// explicit VR level, undefined lengths where they were written.
fn as_read(ds: &DataSet, enc: Encoding, inside_un: bool, lengths: Lengths) -> DataSet {
    let implicit = !enc.explicit() || inside_un;
    let keep_form = lengths == Lengths::AsRead;
    DataSet {
        elements: ds
            .elements
            .iter()
            .map(|e| match &e.value {
                Value::Items(items) => {
                    let un = e.vr == VR::UN && !implicit;
                    let forced = un || (implicit && implicit_vr(e.tag) != VR::SQ);
                    Element {
                        tag: e.tag,
                        vr: if un { VR::UN } else { VR::SQ },
                        value: Value::Items(
                            items
                                .iter()
                                .map(|i| as_read(i, enc, inside_un || un, lengths))
                                .collect(),
                        ),
                        undefined_length: forced || (keep_form && e.undefined_length),
                    }
                }
                _ => Element {
                    vr: if implicit { implicit_vr(e.tag) } else { e.vr },
                    undefined_length: false,
                    ..e.clone()
                },
            })
            .collect(),
        undefined_length: keep_form && ds.undefined_length,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What the encoder writes, the grammar reads back as the same tree, in every encoding and
    /// both length forms; and a tree read, written as read, gives the same bytes.
    #[test]
    fn encode_then_parse_is_the_identity(ds in tree(3)) {
        for enc in ENCODINGS {
            for lengths in [Lengths::Defined, Lengths::AsRead] {
                let mut want = as_read(&ds, enc, false, lengths);
                want.undefined_length = false;
                let mut out = Vec::new();
                encode_elements_with(&want.elements, enc, lengths, &mut out).unwrap();
                prop_assert_eq!(out.len() as u64, dataset_len(&want, enc, lengths));
                let back = parse_encoded(&out, enc, Limits::OFFLINE, KEEP);
                prop_assert_eq!(back.as_ref(), Ok(&want), "{:?} {:?}", enc, lengths);
                prop_assert_eq!(&encode_as_read(&want, enc).unwrap(), &out);
            }
        }
    }
}
