//! The tokenizer through its public API: every grammar rule, split at every byte.

use dicom_core::{Tag, VR};
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::*;
use radguard_dicom::ts::Encoding;

/// A little data-set writer for the tests.
struct W {
    enc: Encoding,
    out: Vec<u8>,
}

impl W {
    fn new(enc: Encoding) -> W {
        W {
            enc,
            out: Vec::new(),
        }
    }
    fn tag(&mut self, t: Tag) {
        self.enc.put_u16(&mut self.out, t.0);
        self.enc.put_u16(&mut self.out, t.1);
    }
    fn hdr(&mut self, t: Tag, vr: VR, len: u32) {
        self.tag(t);
        if self.enc.explicit() {
            self.out.extend_from_slice(&vr.to_bytes());
            if long_form(vr) {
                self.out.extend_from_slice(&[0, 0]);
                self.enc.put_u32(&mut self.out, len);
            } else {
                self.enc.put_u16(&mut self.out, len as u16);
            }
        } else {
            self.enc.put_u32(&mut self.out, len);
        }
    }
    fn el(&mut self, t: Tag, vr: VR, v: &[u8]) -> &mut Self {
        self.hdr(t, vr, v.len() as u32);
        self.out.extend_from_slice(v);
        self
    }
    fn item(&mut self, t: Tag, len: u32) -> &mut Self {
        self.tag(t);
        self.enc.put_u32(&mut self.out, len);
        self
    }
}

fn toks(enc: Encoding, data: &[u8], chunk: usize) -> (Vec<OwnedToken>, Result<(), GrammarError>) {
    tokenize_chunks(
        Tokenizer::new(enc, Limits::GATEWAY),
        data.chunks(chunk.max(1)),
    )
}

/// Nested sequences of both kinds, a UN sequence, an icon image in a defined-length item,
/// encapsulated pixel data, trailing padding.
fn sample(enc: Encoding) -> Vec<u8> {
    let mut w = W::new(enc);
    w.el(Tag(0x0008, 0x0016), VR::UI, b"1.2\0");
    // (0008,1140) SQ undefined, undefined item with a defined-length SQ inside.
    w.hdr(Tag(0x0008, 0x1140), VR::SQ, UNDEFINED);
    w.item(ITEM, UNDEFINED);
    w.el(Tag(0x0008, 0x1150), VR::UI, b"1.9\0");
    let mut inner = W::new(enc);
    inner.el(Tag(0x0008, 0x0100), VR::SH, b"CODE");
    let item_len = inner.out.len() as u32;
    w.hdr(Tag(0x0008, 0x1199), VR::SQ, item_len + 8);
    w.item(ITEM, item_len);
    w.out.extend_from_slice(&inner.out);
    w.item(ITEM_DELIMITER, 0);
    w.item(SEQUENCE_DELIMITER, 0);
    w.el(Tag(0x0010, 0x0020), VR::LO, b"PID1");
    if enc == Encoding::ExplicitLittle {
        // UN of undefined length: implicit VR LE inside.
        w.hdr(Tag(0x0011, 0x1010), VR::UN, UNDEFINED);
        let mut i = W::new(Encoding::ImplicitLittle);
        i.item(ITEM, UNDEFINED);
        i.el(Tag(0x0011, 0x1011), VR::UN, b"AB");
        i.item(ITEM_DELIMITER, 0);
        i.item(SEQUENCE_DELIMITER, 0);
        w.out.extend_from_slice(&i.out);
    }
    w.el(Tag(0x0028, 0x0010), VR::US, &[4, 0]);
    if enc == Encoding::ExplicitLittle {
        w.hdr(PIXEL_DATA, VR::OB, UNDEFINED);
        w.item(ITEM, 0);
        w.item(ITEM, 4);
        w.out.extend_from_slice(&[1, 2, 3, 4]);
        w.item(SEQUENCE_DELIMITER, 0);
    } else {
        w.el(PIXEL_DATA, VR::OW, &[1, 2, 3, 4]);
    }
    w.el(Tag(0xFFFC, 0xFFFC), VR::OB, &[0, 0]);
    w.out
}

#[test]
fn every_split_gives_the_same_tokens() {
    for enc in [
        Encoding::ExplicitLittle,
        Encoding::ImplicitLittle,
        Encoding::ExplicitBig,
    ] {
        let d = sample(enc);
        let whole = toks(enc, &d, d.len());
        assert_eq!(whole.1, Ok(()), "{enc:?}: {:#?}", whole.0);
        assert!(!whole
            .0
            .iter()
            .any(|t| matches!(t, OwnedToken::Error(_) | OwnedToken::Anomaly(_))));
        for chunk in 1..=23 {
            assert_eq!(toks(enc, &d, chunk), whole, "{enc:?} chunk {chunk}");
        }
        // Every split point of two chunks.
        for cut in 0..d.len() {
            let (a, b) = d.split_at(cut);
            let r = tokenize_chunks(Tokenizer::new(enc, Limits::GATEWAY), [a, b]);
            assert_eq!(r, whole, "{enc:?} cut {cut}");
        }
    }
}

#[test]
fn structure_of_the_sample() {
    let d = sample(Encoding::ExplicitLittle);
    let (t, end) = toks(Encoding::ExplicitLittle, &d, 5);
    end.unwrap();
    let shape: Vec<String> = t
        .iter()
        .map(|t| match t {
            OwnedToken::Element(h) => format!(
                "E{:04X}{:04X}{:?}{:?}{}",
                h.tag.0, h.tag.1, h.vr, h.kind, h.depth
            ),
            OwnedToken::Value(v) => format!("V{}", v.len()),
            OwnedToken::ValueEnd => "/V".into(),
            OwnedToken::ItemStart { .. } => "I".into(),
            OwnedToken::ItemEnd { .. } => "/I".into(),
            OwnedToken::SequenceEnd { .. } => "/S".into(),
            OwnedToken::Fragment { length, .. } => format!("F{length}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        shape.join(" "),
        "E00080016UIValue0 V4 /V E00081140SQSequence0 I E00081150UIValue1 V4 /V \
         E00081199SQSequence1 I E00080100SHValue2 V4 /V /I /S /I /S E00100020LOValue0 V4 /V \
         E00111010UNSequence0 I E00111011UNValue1 V2 /V /I /S E00280010USValue0 V2 /V \
         E7FE00010OBEncapsulated0 F0 /V F4 V4 /V /S EFFFCFFFCOBValue0 V2 /V"
    );
    // The UN sequence's items are implicit VR.
    let un = t
        .iter()
        .find_map(|t| match t {
            OwnedToken::Element(h) if h.tag == Tag(0x0011, 0x1010) => Some(*h),
            _ => None,
        })
        .unwrap();
    assert_eq!(un.item_encoding, Encoding::ImplicitLittle);
}

#[test]
fn implicit_vr_sequences_by_dictionary_and_by_undefined_length() {
    let mut w = W::new(Encoding::ImplicitLittle);
    // (0008,1115) Referenced Series Sequence, defined length, read as SQ from the dictionary.
    let mut i = W::new(Encoding::ImplicitLittle);
    i.el(Tag(0x0020, 0x000E), VR::UI, b"1.2\0");
    let il = i.out.len() as u32;
    w.hdr(Tag(0x0008, 0x1115), VR::SQ, il + 8);
    w.item(ITEM, il);
    w.out.extend_from_slice(&i.out);
    // A private element of undefined length: a sequence.
    w.hdr(Tag(0x0009, 0x1001), VR::UN, UNDEFINED);
    w.item(ITEM, 0);
    w.item(SEQUENCE_DELIMITER, 0);
    let (t, end) = toks(Encoding::ImplicitLittle, &w.out, 3);
    end.unwrap();
    let seqs: Vec<_> = t
        .iter()
        .filter_map(|t| match t {
            OwnedToken::Element(h) if h.kind == ElementKind::Sequence => Some((h.tag, h.vr)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seqs,
        vec![(Tag(0x0008, 0x1115), VR::SQ), (Tag(0x0009, 0x1001), VR::SQ)]
    );
}

fn first_error(enc: Encoding, d: &[u8]) -> GrammarError {
    let (t, end) = toks(enc, d, 7);
    let e = t
        .iter()
        .find_map(|t| match t {
            OwnedToken::Error(e) => Some(*e),
            _ => None,
        })
        .expect("an error token");
    assert_eq!(end, Err(e));
    // Everything after the error is raw.
    let after: Vec<_> = t
        .iter()
        .skip_while(|t| !matches!(t, OwnedToken::Error(_)))
        .skip(1)
        .collect();
    assert!(after.iter().all(|t| matches!(t, OwnedToken::Raw(_))));
    e
}

#[test]
fn structural_errors_with_offsets() {
    let el = Encoding::ExplicitLittle;
    // Unknown VR at offset 12.
    let mut w = W::new(el);
    w.el(Tag(0x0008, 0x0016), VR::UI, b"1.2\0");
    w.out
        .extend_from_slice(&[0x10, 0, 0x10, 0, b'p', b'n', 2, 0, b'A', b'B']);
    let e = first_error(el, &w.out);
    assert_eq!(e.offset, 12);
    assert!(matches!(e.kind, ErrorKind::UnknownVr { vr, .. } if vr == *b"pn"));

    // A sequence delimiter where the item delimiter belongs (the item is never closed).
    let mut w = W::new(el);
    w.hdr(Tag(0x0009, 0x1010), VR::SQ, UNDEFINED);
    w.item(ITEM, UNDEFINED);
    w.el(Tag(0x0009, 0x1011), VR::LO, b"XY");
    w.item(SEQUENCE_DELIMITER, 0);
    let e = first_error(el, &w.out);
    assert!(matches!(e.kind, ErrorKind::DelimiterInDataSet { tag } if tag == SEQUENCE_DELIMITER));
    assert_eq!(e.offset, 12 + 8 + 10);

    // An element overrunning its defined-length item.
    let mut w = W::new(el);
    w.hdr(Tag(0x0008, 0x1140), VR::SQ, 8 + 6);
    w.item(ITEM, 6);
    w.el(Tag(0x0008, 0x1150), VR::UI, b"1.2\0");
    let e = first_error(el, &w.out);
    assert!(matches!(e.kind, ErrorKind::Overrun { .. }), "{e}");

    // Undefined length on a non-sequence VR.
    let mut w = W::new(el);
    w.hdr(Tag(0x0010, 0x0010), VR::UT, UNDEFINED);
    assert!(matches!(
        first_error(el, &w.out).kind,
        ErrorKind::UndefinedLength { .. }
    ));

    // An item at the top level.
    let mut w = W::new(el);
    w.item(ITEM, 0);
    assert!(matches!(
        first_error(el, &w.out).kind,
        ErrorKind::DelimiterInDataSet { .. }
    ));

    // An element where a sequence item belongs.
    let mut w = W::new(el);
    w.hdr(Tag(0x0008, 0x1140), VR::SQ, UNDEFINED);
    w.el(Tag(0x0008, 0x1150), VR::UI, b"1.2\0");
    assert!(matches!(
        first_error(el, &w.out).kind,
        ErrorKind::NotAnItem { .. }
    ));

    // An undefined-length fragment.
    let mut w = W::new(el);
    w.hdr(PIXEL_DATA, VR::OB, UNDEFINED);
    w.item(ITEM, UNDEFINED);
    assert_eq!(first_error(el, &w.out).kind, ErrorKind::UndefinedFragment);
}

#[test]
fn limits_are_errors() {
    let el = Encoding::ExplicitLittle;
    // Nesting bomb.
    let mut w = W::new(el);
    for _ in 0..100 {
        w.hdr(Tag(0x0008, 0x1140), VR::SQ, UNDEFINED);
        w.item(ITEM, UNDEFINED);
    }
    let e = first_error(el, &w.out);
    assert_eq!(e.kind, ErrorKind::TooDeep { limit: 32 });
    // A length longer than what is known to be there.
    let mut w = W::new(el);
    w.hdr(Tag(0x0042, 0x0011), VR::OB, 0x7FFF_FFF0);
    let (t, _) = tokenize_chunks(
        Tokenizer::new(el, Limits::GATEWAY).with_total(100),
        [w.out.as_slice()],
    );
    assert!(matches!(
        t.first(),
        Some(OwnedToken::Error(GrammarError {
            kind: ErrorKind::PastEnd { .. },
            ..
        }))
    ));
    // The total cap.
    let limits = Limits {
        max_total: 10,
        ..Limits::GATEWAY
    };
    let (t, _) = tokenize_chunks(Tokenizer::new(el, limits), [w.out.as_slice()]);
    assert!(matches!(
        t.first(),
        Some(OwnedToken::Error(GrammarError {
            kind: ErrorKind::TooLarge { .. },
            ..
        }))
    ));
}

#[test]
fn anomalies_do_not_stop_the_walk() {
    let el = Encoding::ExplicitLittle;
    let mut w = W::new(el);
    w.el(Tag(0x0010, 0x0020), VR::LO, b"P-FIRST ");
    w.el(Tag(0x0010, 0x0020), VR::LO, b"P-SECOND");
    w.el(Tag(0x0008, 0x0016), VR::UI, b"1.2\0");
    w.el(Tag(0x0020, 0x0010), VR::SH, b"ODD");
    let (t, end) = toks(el, &w.out, 4);
    end.unwrap();
    let kinds: Vec<_> = t
        .iter()
        .filter_map(|t| match t {
            OwnedToken::Anomaly(a) => Some(a.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            AnomalyKind::Duplicate {
                tag: Tag(0x0010, 0x0020)
            },
            AnomalyKind::OutOfOrder {
                tag: Tag(0x0008, 0x0016),
                previous: Tag(0x0010, 0x0020)
            },
            AnomalyKind::OddLength {
                tag: Tag(0x0020, 0x0010),
                length: 3
            },
        ]
    );
    let elements = t
        .iter()
        .filter(|t| matches!(t, OwnedToken::Element(_)))
        .count();
    assert_eq!(elements, 4);
}

#[test]
fn every_truncation_is_reported() {
    let enc = Encoding::ExplicitLittle;
    let d = sample(enc);
    let mut clean_cuts = 0;
    for cut in 1..d.len() {
        let (_, end) = toks(enc, &d[..cut], 3);
        match end {
            Err(GrammarError {
                kind: ErrorKind::Truncated(_),
                offset,
            }) => assert_eq!(offset, cut as u64),
            Ok(()) => clean_cuts += 1,
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
    // Only cuts between top-level elements are clean: after each of the first six.
    assert_eq!(clean_cuts, 6);
}

#[test]
fn defined_length_containers_ending_at_the_end_of_input_are_closed() {
    let el = Encoding::ExplicitLittle;
    let mut w = W::new(el);
    w.hdr(Tag(0x0008, 0x1140), VR::SQ, 8);
    w.item(ITEM, 0);
    let (t, end) = toks(el, &w.out, 100);
    end.unwrap();
    assert!(matches!(
        t.last(),
        Some(OwnedToken::SequenceEnd { offset: 20 })
    ));
}

#[test]
fn reserved_header_bytes_are_reported_with_an_order_anomaly_too() {
    let el = Encoding::ExplicitLittle;
    let mut d = Vec::new();
    // (0010,0020) LO, then (0008,0016) OB with reserved bytes 0x0800: out of order and reserved.
    d.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, b'L', b'O', 2, 0, b'A', b'B']);
    d.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'O', b'B', 0, 8, 2, 0, 0, 0, 1, 2]);
    let whole = toks(el, &d, d.len());
    for chunk in 1..8 {
        assert_eq!(toks(el, &d, chunk), whole, "chunk {chunk}");
    }
    let kinds: Vec<_> = whole
        .0
        .iter()
        .filter_map(|t| match t {
            OwnedToken::Anomaly(a) => Some(a.kind),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            AnomalyKind::OutOfOrder {
                tag: Tag(0x0008, 0x0016),
                previous: Tag(0x0010, 0x0020)
            },
            AnomalyKind::ReservedBytes {
                tag: Tag(0x0008, 0x0016),
                value: 0x0800
            },
        ]
    );
    assert!(matches!(whole.0.get(4), Some(OwnedToken::Anomaly(_))));
    assert!(matches!(whole.0.get(5), Some(OwnedToken::Element(h)) if h.tag == Tag(0x0008, 0x0016)));
}
