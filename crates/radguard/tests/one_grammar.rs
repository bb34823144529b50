//! One grammar, one reading: every consumer of data-set bytes sees what the grammar's tokens say.
//!
//! A parser differential is a bypass: if the inspector reads one element sequence and the
//! archive or the de-identifier another, an attacker hides elements from the inspector. The
//! grammar (`radguard_dicom::tokens`, behind `inflate::DataSetReader`) is the reference; for
//! generated data sets (Explicit VR Little Endian, Implicit VR Little Endian, Explicit VR Big
//! Endian, Deflated Explicit VR Little Endian; sequences and items of defined and undefined
//! length nested two deep, a private UN sequence, a standard sequence re-encoded as UN of
//! defined length, native and encapsulated pixel data, Patient ID and the Study / Series / SOP
//! Instance UIDs at the top level and inside items), mutated at the model level (an element
//! duplicated, two swapped, an attribute re-typed as a sequence), at the byte level (flips,
//! 4-byte patterns, insertions, deletions, truncation, a delimiter's length) and, deflated, in
//! the compressed stream (cut, corrupt, followed by other bytes, flipped), each consumer is
//! checked against what the tokens say:
//!
//! - `tree::parse` (strict and lenient order; UN sequences kept or re-read): fails exactly
//!   where the tokens have the first error (or, strict, the first order anomaly), else its tree
//!   is the tokens' tree;
//! - the gateway's head sniffer: the first top-level values before its stopping point;
//! - the ledger's fingerprint: refused exactly where its parser's rules say;
//! - the media scanner (`scan_dataset`): a structural error finding iff the tokens have one;
//! - streaming de-identification: succeeds iff the strict tree does.
//!
//! Where a consumer deliberately reads differently, the rule is written out below with the
//! place that documents it. Every consumer is also fed the same bytes split in two at a random
//! place, and in pieces of a random size, and must answer exactly as when fed whole.
//!
//! `PROPTEST_CASES=N` runs N cases per property instead of 256.

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use dicom_core::{Tag, VR};
use proptest::prelude::*;
use proptest::sample::Index;
use radguard_deid::{
    BurnedInPolicy, DeidError, Deidentifier, Profile, ProfileName, SiteKey, StreamDeid,
};
use radguard_dicom::head::{HeadFacts, HeadSniffer, HEAD_LIMIT};
use radguard_dicom::inflate::{DataSetReader, InflateError};
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{
    implicit_vr, is_pixel_tag, long_form, AnomalyKind, ElementKind, ErrorKind, GrammarError,
    Header, Inside, Length, OwnedToken, Tokenizer, ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER,
    UNDEFINED,
};
use radguard_dicom::tree::{self, DataSet, ParseError, TreeBuilder, TreeOptions, UnSequences};
use radguard_dicom::ts::{Encoding, TransferSyntax};
use radguard_ledger::fingerprint::{FingerprintError, ATTRIBUTES};
use radguard_ledger::Fingerprinter;
use radguard_media::{scan_dataset, Finding, FindingCode, ScanOptions, Severity};

// ------------------------------------------------------------------------------- the model

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
/// JPEG Baseline: an encapsulated transfer syntax (for explicit VR LE data sets whose pixel
/// data is encapsulated).
const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const CT_IMAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

#[derive(Debug, Clone)]
enum V {
    Bytes(Vec<u8>),
    /// A sequence; `un`: VR UN of undefined length (explicit VR: items in Implicit VR Little
    /// Endian, PS3.5 §6.2.2; implicit VR: a private tag of undefined length).
    Seq {
        items: Vec<Item>,
        undefined: bool,
        un: bool,
    },
    /// A standard sequence re-encoded as UN of defined length (explicit VR; the items in
    /// Implicit VR Little Endian). In implicit VR it is written as the SQ it is.
    UnStd(Vec<Item>),
    Frags(Vec<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Item {
    els: Vec<El>,
    undefined: bool,
}

#[derive(Debug, Clone)]
struct El {
    tag: Tag,
    vr: [u8; 2],
    v: V,
}

fn text(tag: (u16, u16), vr: &[u8; 2], s: &str) -> El {
    let mut b = s.as_bytes().to_vec();
    if b.len() % 2 == 1 {
        b.push(if vr == b"UI" { 0 } else { b' ' });
    }
    El {
        tag: Tag(tag.0, tag.1),
        vr: *vr,
        v: V::Bytes(b),
    }
}

/// A US value, kept little endian here ([`encode`] turns it big endian for Explicit VR BE).
fn us(tag: (u16, u16), v: u16) -> El {
    El {
        tag: Tag(tag.0, tag.1),
        vr: *b"US",
        v: V::Bytes(v.to_le_bytes().to_vec()),
    }
}

fn uid(seed: u32, n: u32) -> String {
    format!("1.2.826.0.1.3680043.9.{seed}.{n}")
}

/// What a generated data set is made of; the bytes are [`Spec::bytes`].
#[derive(Debug, Clone)]
struct Spec {
    enc: Encoding,
    seed: u32,
    rows: u16,
    cols: u16,
    un_std: bool,
    ref_seq: Option<SeqSpec>,
    un_private: Option<SeqSpec>,
    pixels: Pixels,
    tail: bool,
    model: Vec<ModelMut>,
    bytes: Vec<ByteMut>,
    /// Deflated Explicit VR Little Endian (PS3.5 §A.5): the bytes above deflated.
    deflate: Option<Deflate>,
    /// Where the bytes are split in two, as a fraction of 2^32.
    split: u32,
    /// The size of the pieces the bytes are also fed in.
    chunk: usize,
}

#[derive(Debug, Clone)]
struct SeqSpec {
    undefined: bool,
    items: Vec<ItemSpec>,
}

#[derive(Debug, Clone)]
struct ItemSpec {
    undefined: bool,
    ids: bool,
    /// A nested sequence in the item: its length form and its items' length forms.
    nested: Option<(bool, Vec<bool>)>,
}

#[derive(Debug, Clone)]
enum Pixels {
    None,
    Native {
        ow: bool,
    },
    /// `bot`: no Basic Offset Table item at all, an empty one, or one of 4 bytes.
    Encapsulated {
        bot: Option<bool>,
        fragments: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
struct Deflate {
    ending: Ending,
    /// Mutations of the compressed stream.
    muts: Vec<ByteMut>,
}

/// How the deflate stream ends.
#[derive(Debug, Clone)]
enum Ending {
    Whole,
    /// Its last bytes cut off.
    Cut(usize),
    /// A sync flush, then a final block of the reserved type 11 (RFC 1951 §3.2.3): every byte
    /// inflates, then the stream is corrupt.
    Corrupt,
    /// Bytes after the end of the stream.
    Trailing(Vec<u8>),
}

/// An element to mutate: in the top-level data set or in the `ds`th item (depth first), an
/// identifying attribute when `ident` names one the data set has, else the `el`th element.
#[derive(Debug, Clone)]
struct Target {
    ds: Option<Index>,
    ident: Option<usize>,
    el: Index,
}

/// The identifying attributes the head sniffer, the fingerprint and de-identification care
/// about most: Patient ID and Name, SOP Instance, Study and Series Instance UIDs.
const IDENTS: [(u16, u16); 5] = [
    (0x0010, 0x0020),
    (0x0010, 0x0010),
    (0x0008, 0x0018),
    (0x0020, 0x000D),
    (0x0020, 0x000E),
];

#[derive(Debug, Clone)]
enum ModelMut {
    /// Clone the target to just after it, or to position `to`; the copy's value bytes rotated
    /// when `differ`.
    Duplicate {
        target: Target,
        adjacent: bool,
        to: Index,
        differ: bool,
    },
    /// Swap the target with another element of its data set.
    Swap { target: Target, with: Index },
    /// Re-type the target as a sequence of one item holding a Patient ID.
    Retype { target: Target, undefined: bool },
}

#[derive(Debug, Clone)]
enum ByteMut {
    Flip(Index, u8),
    Pattern(Index, usize),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Give one of the item and sequence delimiters a non-zero length (PS3.5 §7.5: it is 0).
    DelimiterLength(Index, u8),
}

/// 4-byte patterns that hit the grammar where it branches: undefined length, item and
/// delimiter tags (both byte orders), zero length, VRs SQ and UN, a Patient ID tag.
const PATTERNS: &[[u8; 4]] = &[
    [0xFF, 0xFF, 0xFF, 0xFF],
    [0xFE, 0xFF, 0x00, 0xE0],
    [0xFE, 0xFF, 0xDD, 0xE0],
    [0xFE, 0xFF, 0x0D, 0xE0],
    [0xFF, 0xFE, 0xE0, 0x00],
    [0xFF, 0xFE, 0xE0, 0xDD],
    [0, 0, 0, 0],
    [b'S', b'Q', 0, 0],
    [b'U', b'N', 0, 0],
    [0x10, 0x00, 0x20, 0x00],
];

fn item_spec() -> impl Strategy<Value = ItemSpec> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of((
            any::<bool>(),
            proptest::collection::vec(any::<bool>(), 0..3),
        )),
    )
        .prop_map(|(undefined, ids, nested)| ItemSpec {
            undefined,
            ids,
            nested,
        })
}

fn seq_spec() -> impl Strategy<Value = SeqSpec> {
    (any::<bool>(), proptest::collection::vec(item_spec(), 0..3))
        .prop_map(|(undefined, items)| SeqSpec { undefined, items })
}

fn pixels() -> impl Strategy<Value = Pixels> {
    prop_oneof![
        1 => Just(Pixels::None),
        2 => any::<bool>().prop_map(|ow| Pixels::Native { ow }),
        2 => (proptest::option::weighted(0.8, any::<bool>()), proptest::collection::vec(1u8..12, 0..3))
            .prop_map(|(bot, fragments)| Pixels::Encapsulated { bot, fragments }),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    (
        proptest::option::weighted(0.4, any::<Index>()),
        proptest::option::weighted(0.6, 0..IDENTS.len()),
        any::<Index>(),
    )
        .prop_map(|(ds, ident, el)| Target { ds, ident, el })
}

fn model_mut() -> impl Strategy<Value = ModelMut> {
    prop_oneof![
        (target(), any::<bool>(), any::<Index>(), any::<bool>()).prop_map(
            |(target, adjacent, to, differ)| ModelMut::Duplicate {
                target,
                adjacent,
                to,
                differ,
            }
        ),
        (target(), any::<Index>()).prop_map(|(target, with)| ModelMut::Swap { target, with }),
        (target(), any::<bool>())
            .prop_map(|(target, undefined)| ModelMut::Retype { target, undefined }),
    ]
}

fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| ByteMut::Flip(i, x)),
        2 => (any::<Index>(), 0..PATTERNS.len()).prop_map(|(i, p)| ByteMut::Pattern(i, p)),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, b)| ByteMut::Insert(i, b)),
        1 => (any::<Index>(), 1usize..9).prop_map(|(i, n)| ByteMut::Delete(i, n)),
        1 => any::<Index>().prop_map(ByteMut::Truncate),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| ByteMut::DelimiterLength(i, x)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let encoding = prop_oneof![
        Just(Encoding::ExplicitLittle),
        Just(Encoding::ImplicitLittle),
        Just(Encoding::ExplicitBig),
    ];
    let shape = (
        encoding,
        any::<u32>(),
        prop_oneof![Just(2u16), Just(4u16)],
        1u16..=4,
        any::<bool>(),
        proptest::option::of(seq_spec()),
        proptest::option::of(seq_spec()),
        pixels(),
        any::<bool>(),
    );
    // A quarter of the cases unmutated at each level, so that well-formed data sets are
    // checked too.
    let model = prop_oneof![
        1 => Just(Vec::new()),
        3 => proptest::collection::vec(model_mut(), 1..3),
    ];
    let bytes = prop_oneof![
        1 => Just(Vec::new()),
        3 => proptest::collection::vec(byte_mut(), 1..4),
    ];
    let ending = prop_oneof![
        3 => Just(Ending::Whole),
        1 => (1usize..4).prop_map(Ending::Cut),
        1 => Just(Ending::Corrupt),
        1 => proptest::collection::vec(any::<u8>(), 1..6).prop_map(Ending::Trailing),
    ];
    let deflate = proptest::option::weighted(
        0.25,
        (
            ending,
            prop_oneof![
                3 => Just(Vec::new()),
                1 => proptest::collection::vec(byte_mut(), 1..3),
            ],
        )
            .prop_map(|(ending, muts)| Deflate { ending, muts }),
    );
    (shape, model, bytes, deflate, any::<u32>(), 1usize..=32).prop_map(
        |(
            (enc, seed, rows, cols, un_std, ref_seq, un_private, pixels, tail),
            model,
            bytes,
            deflate,
            split,
            chunk,
        )| Spec {
            enc,
            seed,
            rows,
            cols,
            un_std,
            ref_seq,
            un_private,
            pixels,
            tail,
            model,
            bytes,
            deflate: deflate.filter(|_| enc == Encoding::ExplicitLittle),
            split,
            chunk,
        },
    )
}

impl Spec {
    /// Where to split `len` bytes in two (0..=len).
    fn split_at(&self, len: usize) -> usize {
        (((len as u64 + 1) * u64::from(self.split)) >> 32) as usize
    }

    fn ts_uid(&self) -> &'static str {
        if self.deflate.is_some() {
            return DEFLATED_LE;
        }
        match (self.enc, &self.pixels) {
            (Encoding::ExplicitLittle, Pixels::Encapsulated { .. }) => JPEG_BASELINE,
            (Encoding::ExplicitLittle, _) => EXPLICIT_LE,
            (Encoding::ImplicitLittle, _) => IMPLICIT_LE,
            (Encoding::ExplicitBig, _) => EXPLICIT_BE,
        }
    }

    fn item(&self, s: &ItemSpec, n: u32) -> Item {
        let mut els = vec![];
        if s.ids {
            els.push(text((0x0008, 0x0018), b"UI", &uid(self.seed, 100 + n)));
        }
        els.push(text((0x0008, 0x1150), b"UI", CT_IMAGE));
        els.push(text((0x0008, 0x1155), b"UI", &uid(self.seed, 200 + n)));
        if s.ids {
            els.push(text((0x0010, 0x0020), b"LO", "ITEM-PID"));
            els.push(text((0x0020, 0x000D), b"UI", &uid(self.seed, 300 + n)));
            els.push(text((0x0020, 0x000E), b"UI", &uid(self.seed, 400 + n)));
        }
        if let Some((undefined, items)) = &s.nested {
            let items = items
                .iter()
                .map(|u| Item {
                    els: vec![
                        text((0x0010, 0x0020), b"LO", "NESTED-PID"),
                        text((0x0020, 0x000D), b"UI", &uid(self.seed, 500 + n)),
                    ],
                    undefined: *u,
                })
                .collect();
            els.push(El {
                tag: Tag(0x0040, 0xA730),
                vr: *b"SQ",
                v: V::Seq {
                    items,
                    undefined: *undefined,
                    un: false,
                },
            });
        }
        Item {
            els,
            undefined: s.undefined,
        }
    }

    fn model(&self) -> Vec<El> {
        let mut els = vec![
            text((0x0008, 0x0016), b"UI", CT_IMAGE),
            text((0x0008, 0x0018), b"UI", &uid(self.seed, 1)),
            text((0x0008, 0x0060), b"CS", "CT"),
        ];
        if self.un_std {
            // (0008,1115) Referenced Series Sequence, as a node that did not know it wrote it.
            els.push(El {
                tag: Tag(0x0008, 0x1115),
                vr: *b"UN",
                v: V::UnStd(vec![Item {
                    els: vec![text((0x0020, 0x000E), b"UI", &uid(self.seed, 7))],
                    undefined: false,
                }]),
            });
        }
        if let Some(s) = &self.ref_seq {
            let items = (0u32..)
                .zip(&s.items)
                .map(|(n, i)| self.item(i, n))
                .collect();
            els.push(El {
                tag: Tag(0x0008, 0x1140),
                vr: *b"SQ",
                v: V::Seq {
                    items,
                    undefined: s.undefined,
                    un: false,
                },
            });
        }
        if let Some(s) = &self.un_private {
            els.push(text((0x0009, 0x0010), b"LO", "ACME"));
            let items = s
                .items
                .iter()
                .map(|i| Item {
                    els: vec![
                        text((0x0010, 0x0010), b"PN", "HIDDEN^NAME"),
                        text((0x0010, 0x0020), b"LO", "HIDDEN-PID"),
                    ],
                    undefined: i.undefined,
                })
                .collect();
            els.push(El {
                tag: Tag(0x0009, 0x1001),
                vr: *b"UN",
                v: V::Seq {
                    items,
                    undefined: true,
                    un: true,
                },
            });
        }
        els.extend([
            text((0x0010, 0x0010), b"PN", "DOE^JANE"),
            text((0x0010, 0x0020), b"LO", "PID-4711"),
            text((0x0020, 0x000D), b"UI", &uid(self.seed, 2)),
            text((0x0020, 0x000E), b"UI", &uid(self.seed, 3)),
            text((0x0020, 0x0013), b"IS", "1"),
            us((0x0028, 0x0002), 1),
            text((0x0028, 0x0004), b"CS", "MONOCHROME2"),
            us((0x0028, 0x0010), self.rows),
            us((0x0028, 0x0011), self.cols),
            us((0x0028, 0x0100), 8),
            us((0x0028, 0x0101), 8),
            us((0x0028, 0x0102), 7),
            us((0x0028, 0x0103), 0),
        ]);
        let n = usize::from(self.rows * self.cols);
        match &self.pixels {
            Pixels::None => {}
            Pixels::Native { ow } => els.push(El {
                tag: Tag(0x7FE0, 0x0010),
                vr: if *ow { *b"OW" } else { *b"OB" },
                v: V::Bytes((0..n).map(|i| (i * 37 % 251) as u8).collect()),
            }),
            Pixels::Encapsulated { bot, fragments } => {
                let mut f = match bot {
                    None => vec![],
                    Some(false) => vec![vec![]],
                    Some(true) => vec![vec![0, 0, 0, 0]],
                };
                f.extend(
                    fragments
                        .iter()
                        .map(|&l| (0..2 * l).map(|i| i ^ 0x5A).collect::<Vec<u8>>()),
                );
                els.push(El {
                    tag: Tag(0x7FE0, 0x0010),
                    vr: *b"OB",
                    v: V::Frags(f),
                })
            }
        }
        if self.tail {
            els.push(El {
                tag: Tag(0xFFFC, 0xFFFC),
                vr: *b"OB",
                v: V::Bytes(vec![0; 4]),
            });
        }
        els
    }

    /// The data set's bytes: the model, mutated, encoded, mutated.
    fn bytes(&self) -> Vec<u8> {
        let mut els = self.model();
        for m in &self.model {
            mutate_model(&mut els, m);
        }
        let mut out = Vec::new();
        encode(&els, self.enc, &mut out);
        for m in &self.bytes {
            mutate_bytes(&mut out, m);
        }
        if let Some(d) = &self.deflate {
            let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            z.write_all(&out).expect("deflate");
            out = match &d.ending {
                Ending::Corrupt => {
                    z.flush().expect("deflate");
                    let mut z = z.get_ref().clone();
                    z.push(0x07);
                    z
                }
                Ending::Whole => z.finish().expect("deflate"),
                Ending::Cut(n) => {
                    let mut z = z.finish().expect("deflate");
                    z.truncate(z.len().saturating_sub(*n));
                    z
                }
                Ending::Trailing(t) => {
                    let mut z = z.finish().expect("deflate");
                    z.extend_from_slice(t);
                    z
                }
            };
            for m in &d.muts {
                mutate_bytes(&mut out, m);
            }
        }
        out
    }

    /// The ways the bytes are fed besides whole: split in two, and in pieces of `chunk`.
    fn feeds<'b>(&self, bytes: &'b [u8]) -> [Vec<&'b [u8]>; 2] {
        let (a, b) = bytes.split_at(self.split_at(bytes.len()));
        [vec![a, b], bytes.chunks(self.chunk).collect()]
    }
}

fn count_datasets(els: &[El]) -> usize {
    1 + els
        .iter()
        .map(|e| match &e.v {
            V::Seq { items, .. } | V::UnStd(items) => {
                items.iter().map(|i| count_datasets(&i.els)).sum()
            }
            _ => 0,
        })
        .sum::<usize>()
}

/// The `n`th data set, depth first (0 is `els` itself).
fn nth_dataset<'a>(els: &'a mut Vec<El>, n: &mut usize) -> Option<&'a mut Vec<El>> {
    if *n == 0 {
        return Some(els);
    }
    *n -= 1;
    for e in els.iter_mut() {
        if let V::Seq { items, .. } | V::UnStd(items) = &mut e.v {
            for i in items.iter_mut() {
                if let Some(d) = nth_dataset(&mut i.els, n) {
                    return Some(d);
                }
            }
        }
    }
    None
}

/// The data set and the element index a target names (None: an empty data set).
fn resolve<'a>(els: &'a mut Vec<El>, t: &Target) -> Option<(&'a mut Vec<El>, usize)> {
    let total = count_datasets(els);
    let mut n = t.ds.map_or(0, |ds| ds.index(total));
    let d = nth_dataset(els, &mut n)?;
    if d.is_empty() {
        return None;
    }
    let by_tag = t.ident.and_then(|k| {
        let (g, e) = IDENTS[k];
        d.iter().position(|x| x.tag == Tag(g, e))
    });
    let i = by_tag.unwrap_or_else(|| t.el.index(d.len()));
    Some((d, i))
}

fn mutate_model(els: &mut Vec<El>, m: &ModelMut) {
    match m {
        ModelMut::Duplicate {
            target,
            adjacent,
            to,
            differ,
        } => {
            let Some((d, i)) = resolve(els, target) else {
                return;
            };
            let mut copy = d[i].clone();
            if let (true, V::Bytes(b)) = (*differ, &mut copy.v) {
                if !b.is_empty() {
                    b.rotate_left(1);
                }
            }
            let at = if *adjacent {
                i + 1
            } else {
                to.index(d.len() + 1)
            };
            d.insert(at, copy);
        }
        ModelMut::Swap { target, with } => {
            let Some((d, i)) = resolve(els, target) else {
                return;
            };
            let j = with.index(d.len());
            d.swap(i, j);
        }
        ModelMut::Retype { target, undefined } => {
            let Some((d, i)) = resolve(els, target) else {
                return;
            };
            let e = &mut d[i];
            e.vr = *b"SQ";
            e.v = V::Seq {
                items: vec![Item {
                    els: vec![text((0x0010, 0x0020), b"LO", "IN-A-SEQUENCE")],
                    undefined: true,
                }],
                undefined: *undefined,
                un: false,
            };
        }
    }
}

fn mutate_bytes(b: &mut Vec<u8>, m: &ByteMut) {
    match m {
        ByteMut::Flip(i, x) => {
            if !b.is_empty() {
                let i = i.index(b.len());
                b[i] ^= x;
            }
        }
        ByteMut::Pattern(i, p) => {
            let at = i.index(b.len() + 1);
            for (k, v) in PATTERNS[*p].iter().enumerate() {
                if let Some(slot) = b.get_mut(at + k) {
                    *slot = *v;
                }
            }
        }
        ByteMut::Insert(i, bytes) => {
            let at = i.index(b.len() + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        ByteMut::Delete(i, n) => {
            let at = i.index(b.len() + 1);
            let end = (at + n).min(b.len());
            b.drain(at..end);
        }
        ByteMut::Truncate(i) => {
            let at = i.index(b.len() + 1);
            b.truncate(at);
        }
        ByteMut::DelimiterLength(i, x) => {
            let delimiters: Vec<usize> = (0..b.len().saturating_sub(7))
                .filter(|&k| {
                    matches!(
                        b[k..k + 8],
                        [0xFE, 0xFF, 0x0D | 0xDD, 0xE0, 0, 0, 0, 0]
                            | [0xFF, 0xFE, 0xE0, 0x0D | 0xDD, 0, 0, 0, 0]
                    )
                })
                .collect();
            if !delimiters.is_empty() {
                let k = delimiters[i.index(delimiters.len())];
                b[k + 4] = *x;
            }
        }
    }
}

fn header(out: &mut Vec<u8>, enc: Encoding, tag: Tag, vr: [u8; 2], len: u32) {
    enc.put_u16(out, tag.group());
    enc.put_u16(out, tag.element());
    if enc.explicit() {
        out.extend_from_slice(&vr);
        if VR::from_binary(vr).is_some_and(long_form) {
            out.extend_from_slice(&[0, 0]);
            enc.put_u32(out, len);
        } else {
            enc.put_u16(out, len as u16);
        }
    } else {
        enc.put_u32(out, len);
    }
}

fn item_header(out: &mut Vec<u8>, enc: Encoding, tag: Tag, len: u32) {
    enc.put_u16(out, tag.group());
    enc.put_u16(out, tag.element());
    enc.put_u32(out, len);
}

fn encode_items(items: &[Item], enc: Encoding, out: &mut Vec<u8>) {
    for i in items {
        let mut body = Vec::new();
        encode(&i.els, enc, &mut body);
        if i.undefined {
            item_header(out, enc, ITEM, UNDEFINED);
            out.extend_from_slice(&body);
            item_header(out, enc, ITEM_DELIMITER, 0);
        } else {
            item_header(out, enc, ITEM, body.len() as u32);
            out.extend_from_slice(&body);
        }
    }
}

fn encode(els: &[El], enc: Encoding, out: &mut Vec<u8>) {
    for e in els {
        match &e.v {
            V::Bytes(b) => {
                let mut b = b.clone();
                if enc.big_endian() && &e.vr == b"US" {
                    for pair in b.chunks_exact_mut(2) {
                        pair.swap(0, 1);
                    }
                }
                header(out, enc, e.tag, e.vr, b.len() as u32);
                out.extend_from_slice(&b);
            }
            V::Seq {
                items,
                undefined,
                un,
            } => {
                let item_enc = if *un && enc.explicit() {
                    Encoding::ImplicitLittle
                } else {
                    enc
                };
                let undefined = *undefined || *un;
                let mut body = Vec::new();
                encode_items(items, item_enc, &mut body);
                let vr = if *un { *b"UN" } else { *b"SQ" };
                let len = if undefined {
                    UNDEFINED
                } else {
                    body.len() as u32
                };
                header(out, enc, e.tag, vr, len);
                out.extend_from_slice(&body);
                if undefined {
                    item_header(out, item_enc, SEQUENCE_DELIMITER, 0);
                }
            }
            V::UnStd(items) => {
                let (vr, item_enc) = if enc.explicit() {
                    (*b"UN", Encoding::ImplicitLittle)
                } else {
                    (*b"SQ", enc)
                };
                let mut body = Vec::new();
                encode_items(items, item_enc, &mut body);
                header(out, enc, e.tag, vr, body.len() as u32);
                out.extend_from_slice(&body);
            }
            V::Frags(frags) => {
                header(out, enc, e.tag, e.vr, UNDEFINED);
                for f in frags {
                    item_header(out, enc, ITEM, f.len() as u32);
                    out.extend_from_slice(f);
                }
                item_header(out, enc, SEQUENCE_DELIMITER, 0);
            }
        }
    }
}

// --------------------------------------------------------------------------- the reference

/// What the grammar says about some bytes: every token (value chunks merged) and how the data
/// set ended.
#[derive(Debug)]
struct Reference {
    tokens: Vec<OwnedToken>,
    end: Result<(), GrammarError>,
    /// Bytes tokenized.
    len: u64,
}

/// The tokens of a data set in transfer syntax `uid` (inflated first when deflated).
fn reference(bytes: &[u8], uid: &str, limits: Limits) -> Reference {
    let mut reader = DataSetReader::new(&ts(uid), limits);
    let mut tokens: Vec<OwnedToken> = Vec::new();
    reader.feed(bytes, |t| match (OwnedToken::from(t), tokens.last_mut()) {
        (OwnedToken::Value(b), Some(OwnedToken::Value(v))) => v.extend_from_slice(&b),
        (OwnedToken::Raw(b), Some(OwnedToken::Raw(v))) => v.extend_from_slice(&b),
        (t, _) => tokens.push(t),
    });
    Reference {
        tokens,
        end: reader.finish(),
        len: reader.tokenizer().offset(),
    }
}

impl Reference {
    /// The top-level elements: tag and value length (None: undefined).
    fn top_level(&self) -> Vec<(Tag, Option<u32>)> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                OwnedToken::Element(h) if h.depth == 0 => Some((h.tag, h.length.defined())),
                _ => None,
            })
            .collect()
    }

    fn first_error(&self) -> Option<GrammarError> {
        self.tokens
            .iter()
            .find_map(|t| match t {
                OwnedToken::Error(e) => Some(*e),
                _ => None,
            })
            .or(self.end.err())
    }

    /// Token index range of the first top-level pixel data element (header to its end
    /// token, or to the end of the tokens when it does not end), if there is one.
    fn pixel_span(&self) -> Option<(usize, Option<usize>, Header)> {
        let (start, h) = self.tokens.iter().enumerate().find_map(|(i, t)| match t {
            OwnedToken::Element(h) if h.depth == 0 && is_pixel_tag(h.tag) => Some((i, *h)),
            _ => None,
        })?;
        let end = match h.kind {
            ElementKind::Value => self.tokens[start..]
                .iter()
                .position(|t| matches!(t, OwnedToken::ValueEnd)),
            // The pixel data's own sequence end: nothing is nested inside fragments, and a
            // sequence nests its own ends in pairs.
            ElementKind::Encapsulated | ElementKind::Sequence => {
                let mut open = 0usize;
                self.tokens[start..].iter().position(|t| match t {
                    OwnedToken::Element(e) if e.kind != ElementKind::Value => {
                        open += 1;
                        false
                    }
                    OwnedToken::SequenceEnd { .. } => {
                        open -= 1;
                        open == 0
                    }
                    _ => false,
                })
            }
        };
        Some((start, end.map(|e| start + e), h))
    }

    fn summary(&self) -> String {
        let top: Vec<String> = self
            .top_level()
            .iter()
            .map(|(t, l)| format!("({:04X},{:04X}):{l:?}", t.group(), t.element()))
            .collect();
        let anomalies: Vec<String> = self
            .tokens
            .iter()
            .filter_map(|t| match t {
                OwnedToken::Anomaly(a) => Some(a.to_string()),
                _ => None,
            })
            .collect();
        format!(
            "top level {top:?}\nanomalies {anomalies:?}\nfirst error {:?}",
            self.first_error().map(|e| e.to_string())
        )
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn ts(uid: &str) -> TransferSyntax {
    TransferSyntax::from_uid(uid).expect("a transfer syntax")
}

// ------------------------------------------------------------------------ tree::parse

/// A data-set tree as the tokens describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Value {
        tag: Tag,
        vr: VR,
        bytes: Vec<u8>,
    },
    Seq {
        tag: Tag,
        vr: VR,
        undefined: bool,
        items: Vec<(bool, Vec<Node>)>,
    },
    Frags {
        tag: Tag,
        vr: VR,
        frags: Vec<Vec<u8>>,
    },
}

fn from_tree(ds: &DataSet) -> Vec<Node> {
    ds.elements
        .iter()
        .map(|e| match &e.value {
            tree::Value::Bytes(b) => Node::Value {
                tag: e.tag,
                vr: e.vr,
                bytes: b.clone(),
            },
            tree::Value::Items(items) => Node::Seq {
                tag: e.tag,
                vr: e.vr,
                undefined: e.undefined_length,
                items: items
                    .iter()
                    .map(|i| (i.undefined_length, from_tree(i)))
                    .collect(),
            },
            tree::Value::Fragments(f) => Node::Frags {
                tag: e.tag,
                vr: e.vr,
                frags: f.clone(),
            },
        })
        .collect()
}

enum Open {
    Seq {
        tag: Tag,
        vr: VR,
        undefined: bool,
        items: Vec<(bool, Vec<Node>)>,
    },
    Item(bool, Vec<Node>),
    Frags {
        tag: Tag,
        vr: VR,
        frags: Vec<Vec<u8>>,
    },
}

fn place(stack: &mut [Open], root: &mut Vec<Node>, n: Node) {
    match stack.last_mut() {
        Some(Open::Item(_, nodes)) => nodes.push(n),
        _ => root.push(n),
    }
}

/// The tree the tokens describe, read with `options`; `Err(offset)` where the tree must be
/// refused. The refusals beyond the grammar's errors are the tree's documented decisions
/// (`radguard_dicom::tree::TreeBuilder`): an order anomaly under `strict_order`; a delimiter
/// with a non-zero length (PS3.5 §7.5); under `UnSequences::AsSequence`, a UN of defined
/// length whose standard tag is a sequence re-read as Implicit VR Little Endian by the same
/// grammar, which must read cleanly too.
fn reference_tree(r: &Reference, options: TreeOptions, limits: Limits) -> Result<Vec<Node>, u64> {
    tree_of(&r.tokens, r.end, options, limits)
}

fn tree_of(
    tokens: &[OwnedToken],
    end: Result<(), GrammarError>,
    options: TreeOptions,
    limits: Limits,
) -> Result<Vec<Node>, u64> {
    let mut root = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut value: Option<(Option<Header>, Vec<u8>)> = None;
    for t in tokens {
        match t {
            OwnedToken::Element(h) => match h.kind {
                ElementKind::Value => value = Some((Some(*h), Vec::new())),
                ElementKind::Sequence => stack.push(Open::Seq {
                    tag: h.tag,
                    vr: match options.un_sequences {
                        UnSequences::Keep if h.vr == VR::UN => VR::UN,
                        _ => VR::SQ,
                    },
                    undefined: h.length == Length::Undefined,
                    items: Vec::new(),
                }),
                ElementKind::Encapsulated => stack.push(Open::Frags {
                    tag: h.tag,
                    vr: h.vr,
                    frags: Vec::new(),
                }),
            },
            OwnedToken::Value(b) => {
                if let Some((_, v)) = value.as_mut() {
                    v.extend_from_slice(b);
                }
            }
            OwnedToken::ValueEnd => match value.take() {
                Some((Some(h), bytes)) => {
                    let n = if options.un_sequences == UnSequences::AsSequence
                        && h.vr == VR::UN
                        && h.tag.group() % 2 == 0
                        && implicit_vr(h.tag) == VR::SQ
                    {
                        un_sequence(&h, &bytes, options, limits)?
                    } else {
                        Node::Value {
                            tag: h.tag,
                            vr: h.vr,
                            bytes,
                        }
                    };
                    place(&mut stack, &mut root, n);
                }
                Some((None, bytes)) => {
                    if let Some(Open::Frags { frags, .. }) = stack.last_mut() {
                        frags.push(bytes);
                    }
                }
                None => panic!("the grammar ended a value it did not start"),
            },
            OwnedToken::ItemStart { length, .. } => {
                stack.push(Open::Item(*length == Length::Undefined, Vec::new()))
            }
            OwnedToken::ItemEnd { .. } => {
                let Some(Open::Item(u, nodes)) = stack.pop() else {
                    panic!("the grammar ended an item it did not start")
                };
                if let Some(Open::Seq { items, .. }) = stack.last_mut() {
                    items.push((u, nodes));
                }
            }
            OwnedToken::SequenceEnd { .. } => {
                let n = match stack.pop() {
                    Some(Open::Seq {
                        tag,
                        vr,
                        undefined,
                        items,
                    }) => Node::Seq {
                        tag,
                        vr,
                        undefined,
                        items,
                    },
                    Some(Open::Frags { tag, vr, frags }) => Node::Frags { tag, vr, frags },
                    _ => panic!("the grammar ended a sequence it did not start"),
                };
                place(&mut stack, &mut root, n);
            }
            OwnedToken::Fragment { .. } => value = Some((None, Vec::new())),
            OwnedToken::Anomaly(a) => match a.kind {
                AnomalyKind::OddLength { .. } | AnomalyKind::ReservedBytes { .. } => {}
                AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. } => {
                    if options.strict_order {
                        return Err(a.offset);
                    }
                }
                AnomalyKind::DelimiterLength { .. } => return Err(a.offset),
            },
            OwnedToken::Error(e) => return Err(e.offset),
            OwnedToken::Raw(_) => {}
        }
    }
    end.map_err(|e| e.offset)?;
    Ok(root)
}

/// A UN of defined length holding a standard sequence, re-read as the Implicit VR Little
/// Endian sequence it is (the same grammar behind a synthetic 8-byte header).
fn un_sequence(
    h: &Header,
    value: &[u8],
    options: TreeOptions,
    limits: Limits,
) -> Result<Node, u64> {
    let limits = Limits {
        max_depth: limits.max_depth.saturating_sub(h.depth),
        ..limits
    };
    let enc = Encoding::ImplicitLittle;
    let mut head = Vec::new();
    item_header(&mut head, enc, h.tag, value.len() as u32);
    let base = (h.offset + u64::from(h.header_len)).saturating_sub(8);
    let tz = Tokenizer::new(enc, limits).with_total(8 + value.len() as u64);
    let (tokens, end) = radguard_dicom::tokens::tokenize_chunks(tz, [head.as_slice(), value]);
    let inner = tree_of(&tokens, end, options, limits).map_err(|o| o + base)?;
    match inner.into_iter().next() {
        Some(Node::Seq { items, .. }) => Ok(Node::Seq {
            tag: h.tag,
            vr: VR::SQ,
            undefined: false,
            items,
        }),
        _ => Err(h.offset),
    }
}

fn parse_error_offset(e: &ParseError) -> u64 {
    match e {
        ParseError::UnknownVr { offset, .. }
        | ParseError::Malformed { offset, .. }
        | ParseError::Truncated { offset }
        | ParseError::TooDeep { offset, .. }
        | ParseError::Ambiguous { offset, .. }
        | ParseError::Inflate { offset, .. } => *offset,
    }
}

/// `tree::parse`'s way, fed in pieces.
fn tree_parts(
    parts: &[&[u8]],
    ts: &TransferSyntax,
    options: TreeOptions,
) -> Result<DataSet, ParseError> {
    let mut reader = DataSetReader::new(ts, Limits::GATEWAY);
    let mut tree = TreeBuilder::with_options(Limits::GATEWAY, options);
    for p in parts {
        tree.read(&mut reader, p)?;
    }
    reader.finish()?;
    tree.finish()
}

const TREE_OPTIONS: [TreeOptions; 3] = [
    TreeOptions {
        strict_order: true,
        un_sequences: UnSequences::Keep,
    },
    TreeOptions {
        strict_order: false,
        un_sequences: UnSequences::Keep,
    },
    // De-identification's reading (radguard_deid::codec::DEID_TREE).
    TreeOptions {
        strict_order: true,
        un_sequences: UnSequences::AsSequence,
    },
];

fn check_tree(spec: &Spec, bytes: &[u8]) -> Result<(), TestCaseError> {
    let uid = spec.ts_uid();
    let r = reference(bytes, uid, Limits::GATEWAY);
    for options in TREE_OPTIONS {
        let want = reference_tree(&r, options, Limits::GATEWAY);
        let got = tree::parse(bytes, &ts(uid), Limits::GATEWAY, options);
        let same = match (&want, &got) {
            (Ok(nodes), Ok(ds)) => *nodes == from_tree(ds),
            (Err(off), Err(e)) => *off == parse_error_offset(e),
            _ => false,
        };
        prop_assert!(
            same,
            "tree::parse {options:?} disagrees with the tokens\ninput ({uid}) {}\n{}\ntokens say {:?}\ntree says {:?}",
            hex(bytes),
            r.summary(),
            want.map(|n| n.len()),
            got.map(|d| d.elements.len())
        );
        for parts in spec.feeds(bytes) {
            prop_assert_eq!(
                &tree_parts(&parts, &ts(uid), options),
                &got,
                "tree::parse {:?}: fed in {} pieces differs from whole\ninput ({}) {}",
                options,
                parts.len(),
                uid,
                hex(bytes)
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------- the head sniffer

/// What the gateway's head sniffer must report (radguard_dicom::head): the first non-empty
/// value of each identifying attribute among the top-level elements before its stopping
/// point — the first top-level element whose tag is above (0020,000E) — and `incomplete` when
/// the tokens have an error or the data ends before that point. Its documented bound is part
/// of the reading: it tokenizes under `max_total = HEAD_LIMIT`, so an element that would
/// reach past 64 KiB is an error for it.
fn expected_facts(r: &Reference) -> HeadFacts {
    let mut facts = HeadFacts::default();
    let mut current: Option<(Tag, Vec<u8>)> = None;
    for t in &r.tokens {
        match t {
            OwnedToken::Element(h) => {
                if h.depth == 0 && h.tag > Tag(0x0020, 0x000E) {
                    return facts;
                }
                // Only a top-level element's own value is its value: a sequence has none,
                // and the values of the elements in its items are theirs.
                current = (h.depth == 0
                    && h.kind == ElementKind::Value
                    && slot(&mut facts, h.tag).is_some())
                .then(|| (h.tag, Vec::new()));
            }
            OwnedToken::Fragment { .. } => current = None,
            OwnedToken::Value(v) => {
                if let Some((_, buf)) = current.as_mut() {
                    let room = 1024usize.saturating_sub(buf.len());
                    buf.extend_from_slice(&v[..v.len().min(room)]);
                }
            }
            OwnedToken::ValueEnd => {
                if let Some((tag, buf)) = current.take() {
                    if let Some(s) = slot(&mut facts, tag) {
                        if s.is_none() {
                            *s = fact_text(&buf);
                        }
                    }
                }
            }
            OwnedToken::Error(_) => {
                facts.incomplete = true;
                return facts;
            }
            _ => {}
        }
    }
    facts.incomplete = r.end.is_err();
    facts
}

fn slot(f: &mut HeadFacts, tag: Tag) -> Option<&mut Option<String>> {
    Some(match (tag.group(), tag.element()) {
        (0x0008, 0x0018) => &mut f.sop_instance_uid,
        (0x0008, 0x0050) => &mut f.accession_number,
        (0x0008, 0x0052) => &mut f.query_level,
        (0x0010, 0x0010) => &mut f.patient_name,
        (0x0010, 0x0020) => &mut f.patient_id,
        (0x0020, 0x000D) => &mut f.study_uid,
        (0x0020, 0x000E) => &mut f.series_uid,
        _ => return None,
    })
}

fn fact_text(v: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(v);
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.chars().take(256).collect())
}

fn sniff(uid: &str, parts: &[&[u8]]) -> HeadFacts {
    let mut s = HeadSniffer::new(&ts(uid));
    for p in parts {
        s.feed(p);
    }
    s.finish()
}

fn check_sniffer(spec: &Spec, bytes: &[u8]) -> Result<(), TestCaseError> {
    let uid = spec.ts_uid();
    let limits = Limits {
        max_total: HEAD_LIMIT as u64,
        ..Limits::GATEWAY
    };
    let r = reference(bytes, uid, limits);
    let want = expected_facts(&r);
    let got = sniff(uid, &[bytes]);
    prop_assert_eq!(
        &got,
        &want,
        "the head sniffer disagrees with the tokens\ninput ({}) {}\n{}",
        uid,
        hex(bytes),
        r.summary()
    );
    for parts in spec.feeds(bytes) {
        prop_assert_eq!(
            &sniff(uid, &parts),
            &got,
            "the head sniffer: fed in {} pieces differs from whole\ninput ({}) {}",
            parts.len(),
            uid,
            hex(bytes)
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------ the fingerprint

/// The verdict the ledger's fingerprint parser (radguard-ledger fingerprint/parser.rs) must
/// give, from the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FpFail {
    Truncated(u64),
    Malformed(u64),
    TooLong { tag: u32, length: u32 },
}

#[derive(Debug)]
struct FpExpect {
    /// The first refusal, and its token index.
    fail: Option<(FpFail, usize)>,
    /// Token index of the top-level pixel data header, when the walk reached it: the
    /// fingerprint's own checks of the image (layout, pixel count, decoding) apply from there.
    pixels_at: Option<usize>,
}

fn tag_u32(t: Tag) -> u32 {
    (u32::from(t.group()) << 16) | u32::from(t.element())
}

/// The parser's rules, one by one:
/// - the grammar's errors (a truncation is `Truncated`, the rest `Malformed`), at their offset;
/// - a top-level element out of order or repeated (PS3.5 §7.1): `Malformed` at the anomaly;
///   order inside items is not the fingerprint's business;
/// - a fingerprinted attribute (its list, and Planar Configuration) or a pixel data element
///   encoded as a sequence: `Malformed` at its header; a fingerprinted value longer than
///   `MAX_ATTRIBUTE_VALUE` (64 KiB): `AttributeTooLong`;
/// - a fingerprinted US attribute of odd length (its canonical form needs whole values):
///   `Malformed` at its header;
/// - encapsulated pixel data outside Explicit VR Little Endian (PS3.5 §A.4): `Malformed` at
///   its header;
/// - everything after the end of the top-level pixel data is ignored, but for the rest of a
///   deflate stream, which must still inflate to its end; a data set that ends inside the
///   pixel data, or a deflate stream that does not end, is `Truncated` at the end.
fn expected_fingerprint(r: &Reference, enc: Encoding) -> FpExpect {
    #[derive(PartialEq)]
    enum Phase {
        Elements,
        Native,
        Encapsulated,
        Done,
    }
    let wanted = |tag: u32| tag == 0x0028_0006 || ATTRIBUTES.iter().any(|a| a.tag == tag);
    let us = |tag: u32| {
        ATTRIBUTES
            .iter()
            .any(|a| a.tag == tag && a.vr == radguard_ledger::fingerprint::Vr::US)
    };
    let grammar = |e: &GrammarError| match e.kind {
        ErrorKind::Truncated(_) | ErrorKind::Inflate(InflateError::Truncated) => {
            FpFail::Truncated(e.offset)
        }
        _ => FpFail::Malformed(e.offset),
    };
    let mut phase = Phase::Elements;
    let mut order = None;
    let mut collecting: Option<(u32, u64, u64)> = None;
    let mut pixels_at = None;
    let fail = |f: FpFail, i: usize, pixels_at: Option<usize>| FpExpect {
        fail: Some((f, i)),
        pixels_at,
    };
    for (i, t) in r.tokens.iter().enumerate() {
        match phase {
            Phase::Elements => match t {
                OwnedToken::Error(e) => return fail(grammar(e), i, pixels_at),
                OwnedToken::Anomaly(a) => {
                    if matches!(
                        a.kind,
                        AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. }
                    ) {
                        order = Some(a.offset);
                    }
                }
                OwnedToken::Element(h) => {
                    let o = order.take();
                    collecting = None;
                    if h.depth > 0 {
                        continue;
                    }
                    if let Some(at) = o {
                        return fail(FpFail::Malformed(at), i, pixels_at);
                    }
                    let tag = tag_u32(h.tag);
                    if is_pixel_tag(h.tag) {
                        match (h.kind, h.length) {
                            (ElementKind::Value, Length::Defined(_)) => {
                                pixels_at = Some(i);
                                phase = Phase::Native;
                            }
                            (ElementKind::Encapsulated, _) => {
                                pixels_at = Some(i);
                                if enc != Encoding::ExplicitLittle {
                                    return fail(FpFail::Malformed(h.offset), i, pixels_at);
                                }
                                phase = Phase::Encapsulated;
                            }
                            _ => return fail(FpFail::Malformed(h.offset), i, pixels_at),
                        }
                    } else if wanted(tag) {
                        match (h.kind, h.length) {
                            (ElementKind::Value, Length::Defined(n)) => {
                                if n > 64 * 1024 {
                                    return fail(FpFail::TooLong { tag, length: n }, i, pixels_at);
                                }
                                collecting = Some((tag, h.offset, u64::from(n)));
                            }
                            _ => return fail(FpFail::Malformed(h.offset), i, pixels_at),
                        }
                    }
                }
                OwnedToken::ValueEnd => {
                    if let Some((tag, offset, n)) = collecting.take() {
                        if us(tag) && n % 2 == 1 {
                            return fail(FpFail::Malformed(offset), i, pixels_at);
                        }
                    }
                }
                _ => {}
            },
            Phase::Native => match t {
                OwnedToken::Error(e) => return fail(grammar(e), i, pixels_at),
                OwnedToken::ValueEnd => phase = Phase::Done,
                _ => {}
            },
            Phase::Encapsulated => match t {
                OwnedToken::Error(e) => return fail(grammar(e), i, pixels_at),
                OwnedToken::SequenceEnd { .. } => phase = Phase::Done,
                _ => {}
            },
            Phase::Done => {
                if let OwnedToken::Error(
                    e @ GrammarError {
                        kind: ErrorKind::Inflate(_),
                        ..
                    },
                ) = t
                {
                    return fail(grammar(e), i, pixels_at);
                }
            }
        }
    }
    let n = r.tokens.len();
    match phase {
        Phase::Elements => match r.end {
            Err(e) => fail(grammar(&e), n, pixels_at),
            Ok(()) => FpExpect {
                fail: None,
                pixels_at,
            },
        },
        Phase::Native | Phase::Encapsulated => fail(FpFail::Truncated(r.len), n, pixels_at),
        Phase::Done => match r.end {
            Err(GrammarError {
                kind: ErrorKind::Inflate(_),
                ..
            }) => fail(FpFail::Truncated(r.len), n, pixels_at),
            _ => FpExpect {
                fail: None,
                pixels_at,
            },
        },
    }
}

fn fingerprint(
    uid: &str,
    parts: &[&[u8]],
) -> Result<radguard_ledger::Fingerprint, FingerprintError> {
    let mut f = Fingerprinter::new(uid)?;
    for p in parts {
        f.feed(p);
    }
    f.finish()
}

fn check_fingerprint(spec: &Spec, bytes: &[u8]) -> Result<(), TestCaseError> {
    let uid = spec.ts_uid();
    let r = reference(bytes, uid, Limits::GATEWAY);
    let want = expected_fingerprint(&r, spec.enc);
    let got = fingerprint(uid, &[bytes]);
    let ok = match &got {
        Ok(_) => want.fail.is_none(),
        Err(FingerprintError::Truncated { offset }) => {
            matches!(&want.fail, Some((FpFail::Truncated(o), _)) if o == offset)
        }
        Err(FingerprintError::Malformed { offset, .. }) => {
            matches!(&want.fail, Some((FpFail::Malformed(o), _)) if o == offset)
        }
        Err(FingerprintError::AttributeTooLong { tag, length }) => matches!(
            &want.fail,
            Some((FpFail::TooLong { tag: t, length: l }, _)) if t == tag && l == length
        ),
        // The fingerprint's own checks of the image, from the pixel data header on: they may
        // refuse a data set the grammar reads, but only once the walk got there cleanly.
        Err(
            FingerprintError::MissingImageAttribute(_)
            | FingerprintError::UnsupportedPixelLayout(_)
            | FingerprintError::PixelDataTooShort { .. }
            | FingerprintError::EncapsulatedTooLarge { .. }
            | FingerprintError::Decode { .. },
        ) => match (want.pixels_at, &want.fail) {
            (Some(p), Some((_, i))) => *i > p,
            (Some(_), None) => true,
            (None, _) => false,
        },
        Err(_) => false,
    };
    prop_assert!(
        ok,
        "the fingerprint disagrees with the tokens\ninput ({uid}) {}\n{}\nexpected {want:?}\ngot {got:?}",
        hex(bytes),
        r.summary()
    );
    for parts in spec.feeds(bytes) {
        prop_assert_eq!(
            format!("{:?}", fingerprint(uid, &parts)),
            format!("{got:?}"),
            "the fingerprint: fed in {} pieces differs from whole\ninput ({}) {}",
            parts.len(),
            uid,
            hex(bytes)
        );
    }
    Ok(())
}

// ----------------------------------------------------------------------- the media scanner

/// Finding codes that say the data set's structure is broken (severity error). The scanner's
/// other errors judge content against the image attributes (`pixel_data_length`), and its
/// warnings (order anomalies, odd lengths, a delimiter's length) leave the structure readable.
fn structural(f: &Finding) -> bool {
    f.severity == Severity::Error
        && matches!(
            f.code,
            FindingCode::Structure
                | FindingCode::UndefinedLengthMisuse
                | FindingCode::ImpossibleLength
                | FindingCode::NestingTooDeep
                | FindingCode::EncapsulationInvalid
                | FindingCode::Truncated
                | FindingCode::DeflateInvalid
                | FindingCode::DeflateBomb
        )
}

/// Whether the scanner must report a structural error, from the tokens (read under its own
/// bounds, `ScanOptions::default()`: `Limits::SCANNER` with a 2 GiB value cap). Its documented
/// decisions (radguard-media walker.rs, "At the top level, a header that cannot be an element
/// after at least one element is where the data set ended: the rest is trailing data"):
/// - a top-level header whose tag is not above the previous top-level tag, and whose group is
///   0 or whose length is undefined for a VR other than SQ and UN, ends the data set;
/// - at the top level, a header without a VR or a delimiter (after at least one element), or
///   an undefined length or a length past the end on a tag not above the previous one, ends
///   the data set;
/// - data ending inside a top-level header ends the data set there;
/// - encapsulated pixel data without even a Basic Offset Table item is an error (PS3.5 §A.4);
/// - bytes after the end of a deflate stream are trailing data.
fn expected_media_error(r: &Reference) -> bool {
    // A deflate stream that is corrupt, a bomb or cut short is an error wherever the walk of
    // the inflated data set stopped.
    let inflate = |e: &GrammarError| matches!(e.kind, ErrorKind::Inflate(_));
    if r.tokens
        .iter()
        .any(|t| matches!(t, OwnedToken::Error(e) if inflate(e)))
        || r.end.as_ref().is_err_and(inflate)
    {
        return true;
    }
    #[derive(Debug)]
    enum Frame {
        Other,
        Fragments(u32),
    }
    let mut frames: Vec<Frame> = Vec::new();
    let mut top_prev: Option<Tag> = None;
    let mut value_open = false;
    let mut fragment_open = false;
    for t in &r.tokens {
        match t {
            OwnedToken::Element(h) => {
                if frames.is_empty() && top_prev.is_some_and(|p| h.tag <= p) {
                    let written = if h.encoding.explicit() {
                        h.vr
                    } else {
                        implicit_vr(h.tag)
                    };
                    if h.tag.group() == 0
                        || (h.length == Length::Undefined && written != VR::SQ && written != VR::UN)
                    {
                        return false;
                    }
                }
                if frames.is_empty() {
                    top_prev = Some(h.tag);
                }
                match h.kind {
                    ElementKind::Value => value_open = true,
                    ElementKind::Sequence => frames.push(Frame::Other),
                    ElementKind::Encapsulated => frames.push(Frame::Fragments(0)),
                }
            }
            OwnedToken::Fragment { .. } => fragment_open = true,
            OwnedToken::ValueEnd => {
                if fragment_open {
                    if let Some(Frame::Fragments(n)) = frames.last_mut() {
                        *n += 1;
                    }
                }
                value_open = false;
                fragment_open = false;
            }
            OwnedToken::ItemStart { .. } => frames.push(Frame::Other),
            OwnedToken::ItemEnd { .. } => {
                frames.pop();
            }
            OwnedToken::SequenceEnd { .. } => {
                if let Some(Frame::Fragments(0)) = frames.pop() {
                    return true;
                }
            }
            OwnedToken::Error(e) => {
                let not_above = |tag: Tag| top_prev.is_some_and(|p| tag <= p);
                let trailing = frames.is_empty()
                    && match e.kind {
                        ErrorKind::UnknownVr { .. } | ErrorKind::DelimiterInDataSet { .. } => {
                            top_prev.is_some()
                        }
                        ErrorKind::UndefinedLength { tag, .. } | ErrorKind::PastEnd { tag, .. } => {
                            not_above(tag)
                        }
                        _ => false,
                    };
                return !trailing;
            }
            _ => {}
        }
    }
    match r.end {
        Ok(()) => false,
        Err(e) => {
            let top_header = frames.is_empty()
                && !value_open
                && !fragment_open
                && e.kind == ErrorKind::Truncated(Inside::Header);
            !top_header
        }
    }
}

/// A reader that hands out its parts one `read` at a time.
struct Parts<'a> {
    parts: Vec<&'a [u8]>,
}

impl Read for Parts<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(p) = self.parts.first_mut() {
            if p.is_empty() {
                self.parts.remove(0);
                continue;
            }
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            *p = &p[n..];
            return Ok(n);
        }
        Ok(0)
    }
}

fn scan(uid: &str, parts: &[&[u8]]) -> Vec<Finding> {
    let r = Parts {
        parts: parts.to_vec(),
    };
    scan_dataset(r, uid, &ScanOptions::default()).findings
}

fn check_media(spec: &Spec, bytes: &[u8]) -> Result<(), TestCaseError> {
    let uid = spec.ts_uid();
    let limits = Limits {
        max_value_length: 2 << 30,
        ..Limits::SCANNER
    };
    let r = reference(bytes, uid, limits);
    let want = expected_media_error(&r);
    let findings = scan(uid, &[bytes]);
    let got = findings.iter().any(structural);
    prop_assert_eq!(
        got,
        want,
        "the media scanner disagrees with the tokens\ninput ({}) {}\n{}\nfindings {:#?}",
        uid,
        hex(bytes),
        r.summary(),
        findings
    );
    for parts in spec.feeds(bytes) {
        prop_assert_eq!(
            &scan(uid, &parts),
            &findings,
            "the media scanner: fed in {} pieces differs from whole\ninput ({}) {}",
            parts.len(),
            uid,
            hex(bytes)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------- de-identification

fn deidentifier() -> Arc<Deidentifier> {
    static D: OnceLock<Arc<Deidentifier>> = OnceLock::new();
    Arc::clone(D.get_or_init(|| {
        let profile = Profile::new(ProfileName::Basic, [])
            .expect("the Basic profile")
            .with_burned_in(BurnedInPolicy::Allow);
        let key = SiteKey::from_bytes(b"radguard-test-key-0123456789abcdef").expect("a key");
        Arc::new(Deidentifier::new(profile, key))
    }))
}

fn deidentify(uid: &str, parts: &[&[u8]]) -> Result<Vec<u8>, DeidError> {
    let mut s = StreamDeid::new(deidentifier(), uid)?;
    let mut out = Vec::new();
    for p in parts {
        s.push(p, &mut out)?;
    }
    s.finish(&mut out)?;
    Ok(out)
}

/// Whether streaming de-identification must succeed: when the strict tree (its reading,
/// `DEID_TREE`) does, but for its documented handling of the top-level pixel data
/// (radguard-deid stream.rs), which it passes through rather than reads into the tree:
/// - pixel data encoded as a sequence is refused ("pixel data encoded as a sequence");
/// - inside it, a delimiter's non-zero length is passed as it is ("Fragment headers, values,
///   a delimiter's length: passed as they are"), where the tree refuses it;
/// - a deflated transfer syntax is refused (`StreamDeid::new`: its pixel data could not pass
///   through untouched).
fn expected_deid_ok(r: &Reference, uid: &str) -> bool {
    if ts(uid).deflated {
        return false;
    }
    let mut tokens = r.tokens.clone();
    if let Some((start, end, h)) = r.pixel_span() {
        if h.kind == ElementKind::Sequence {
            return false;
        }
        let end = end.unwrap_or(tokens.len());
        let mut i = 0;
        tokens.retain(|t| {
            let inside = (start..=end).contains(&i);
            i += 1;
            !(inside
                && matches!(
                    t,
                    OwnedToken::Anomaly(a) if matches!(a.kind, AnomalyKind::DelimiterLength { .. })
                ))
        });
    }
    tree_of(&tokens, r.end, TREE_OPTIONS[2], Limits::GATEWAY).is_ok()
}

fn check_deid(spec: &Spec, bytes: &[u8]) -> Result<(), TestCaseError> {
    let uid = spec.ts_uid();
    let r = reference(bytes, uid, Limits::GATEWAY);
    let got = deidentify(uid, &[bytes]);
    {
        let want = expected_deid_ok(&r, uid);
        prop_assert_eq!(
            got.is_ok(),
            want,
            "de-identification disagrees with the tokens\ninput ({}) {}\n{}\ngot {:?}",
            uid,
            hex(bytes),
            r.summary(),
            got.as_ref().map(|o| o.len())
        );
    }
    for parts in spec.feeds(bytes) {
        prop_assert_eq!(
            format!("{:?}", deidentify(uid, &parts)),
            format!("{got:?}"),
            "de-identification: fed in {} pieces differs from whole\ninput ({}) {}",
            parts.len(),
            uid,
            hex(bytes)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------- properties

/// 256 cases per property; `PROPTEST_CASES=N` runs N (a longer search).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    // Failures found are kept below as tests with their bytes, not in a seed file.
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_tree_is_the_tokens_tree(spec in spec()) {
        check_tree(&spec, &spec.bytes())?;
    }

    #[test]
    fn the_head_sniffer_reads_the_tokens(spec in spec()) {
        check_sniffer(&spec, &spec.bytes())?;
    }

    #[test]
    fn the_fingerprint_refuses_where_the_tokens_say(spec in spec()) {
        check_fingerprint(&spec, &spec.bytes())?;
    }

    #[test]
    fn the_media_scanner_reports_the_tokens_errors(spec in spec()) {
        check_media(&spec, &spec.bytes())?;
    }

    #[test]
    fn deidentification_succeeds_iff_the_strict_tree_does(spec in spec()) {
        check_deid(&spec, &spec.bytes())?;
    }
}

/// The generator must reach what the properties are about: unmutated data sets in every
/// syntax that every consumer accepts, and inputs that each consumer refuses.
#[test]
fn unmutated_data_sets_are_read_by_every_consumer() {
    for (enc, deflated) in [
        (Encoding::ExplicitLittle, false),
        (Encoding::ImplicitLittle, false),
        (Encoding::ExplicitBig, false),
        (Encoding::ExplicitLittle, true),
    ] {
        for pixels in [
            Pixels::None,
            Pixels::Native { ow: true },
            Pixels::Encapsulated {
                bot: Some(true),
                fragments: vec![3, 5],
            },
        ] {
            let nested = ItemSpec {
                undefined: true,
                ids: true,
                nested: Some((true, vec![true, false])),
            };
            let spec = Spec {
                enc,
                seed: 42,
                rows: 2,
                cols: 3,
                un_std: true,
                ref_seq: Some(SeqSpec {
                    undefined: false,
                    items: vec![
                        nested.clone(),
                        ItemSpec {
                            undefined: false,
                            ..nested
                        },
                    ],
                }),
                un_private: Some(SeqSpec {
                    undefined: true,
                    items: vec![ItemSpec {
                        undefined: false,
                        ids: false,
                        nested: None,
                    }],
                }),
                pixels: pixels.clone(),
                tail: false,
                model: vec![],
                bytes: vec![],
                deflate: deflated.then(|| Deflate {
                    ending: Ending::Whole,
                    muts: vec![],
                }),
                split: 1 << 31,
                chunk: 7,
            };
            let bytes = spec.bytes();
            let uid = spec.ts_uid();
            let r = reference(&bytes, uid, Limits::GATEWAY);
            assert_eq!(r.first_error(), None, "{enc:?} {pixels:?}: {}", r.summary());
            for o in TREE_OPTIONS {
                tree::parse(&bytes, &ts(uid), Limits::GATEWAY, o)
                    .unwrap_or_else(|e| panic!("{enc:?} {pixels:?} {o:?}: {e}"));
            }
            let facts = sniff(uid, &[&bytes]);
            assert_eq!(facts.patient_id.as_deref(), Some("PID-4711"));
            assert!(!facts.incomplete);
            let fp = fingerprint(uid, &[&bytes]);
            // Encapsulated pixel data outside Explicit VR LE is the fingerprint's refusal.
            let encapsulated = matches!(pixels, Pixels::Encapsulated { .. });
            assert_eq!(
                fp.is_ok(),
                enc == Encoding::ExplicitLittle || !encapsulated,
                "{enc:?} {pixels:?}: {fp:?}"
            );
            let findings = scan(uid, &[&bytes]);
            assert!(!findings.iter().any(structural), "{findings:#?}");
            // De-identification refuses deflated streams.
            assert_eq!(
                deidentify(uid, &[&bytes]).is_ok(),
                !deflated,
                "{enc:?} {pixels:?}"
            );
            for check in [
                check_tree,
                check_sniffer,
                check_fingerprint,
                check_media,
                check_deid,
            ] {
                check(&spec, &bytes).unwrap_or_else(|e| panic!("{enc:?} {pixels:?}: {e}"));
            }
        }
    }
}

/// The generator reaches every verdict the properties distinguish (else a property could hold
/// for want of inputs): a fixed sample of 1024 cases.
#[test]
fn the_generator_reaches_every_verdict() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeMap;
    let mut runner = TestRunner::deterministic();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut see = |what: String| *seen.entry(what).or_default() += 1;
    for _ in 0..1024 {
        let spec = spec().new_tree(&mut runner).expect("a case").current();
        let bytes = spec.bytes();
        let uid = spec.ts_uid();
        let r = reference(&bytes, uid, Limits::GATEWAY);
        see(format!("syntax {uid}"));
        match r.first_error() {
            None => see("no error".into()),
            Some(e) => see(format!("error {}", error_name(&e.kind))),
        }
        for t in &r.tokens {
            if let OwnedToken::Anomaly(a) = t {
                see(format!("anomaly {}", anomaly_name(&a.kind)));
            }
        }
        for (n, o) in TREE_OPTIONS.iter().enumerate() {
            see(format!(
                "tree {n} ok {}",
                reference_tree(&r, *o, Limits::GATEWAY).is_ok()
            ));
        }
        let fp = expected_fingerprint(&r, spec.enc);
        see(format!(
            "fingerprint {}",
            match &fp.fail {
                None => "ok",
                Some((FpFail::Truncated(_), _)) => "truncated",
                Some((FpFail::Malformed(_), _)) => "malformed",
                Some((FpFail::TooLong { .. }, _)) => "too long",
            }
        ));
        let media = Limits {
            max_value_length: 2 << 30,
            ..Limits::SCANNER
        };
        see(format!(
            "media error {}",
            expected_media_error(&reference(&bytes, uid, media))
        ));
        see(format!("deid ok {}", expected_deid_ok(&r, uid)));
        let head = Limits {
            max_total: HEAD_LIMIT as u64,
            ..Limits::GATEWAY
        };
        let facts = expected_facts(&reference(&bytes, uid, head));
        see(format!(
            "sniffer patient id {} incomplete {}",
            facts.patient_id.is_some(),
            facts.incomplete
        ));
    }
    let mut want: Vec<String> = [
        "no error",
        "error UnknownVr",
        "error Truncated",
        "error NotAnItem",
        "error Overrun",
        "error DelimiterInDataSet",
        "error NotAFragment",
        "error Inflate",
        "anomaly OutOfOrder",
        "anomaly Duplicate",
        "anomaly OddLength",
        "anomaly DelimiterLength",
        "fingerprint ok",
        "fingerprint truncated",
        "fingerprint malformed",
        "fingerprint too long",
        "media error true",
        "media error false",
        "deid ok true",
        "deid ok false",
        "sniffer patient id true incomplete false",
        "sniffer patient id false incomplete false",
        "sniffer patient id true incomplete true",
        "sniffer patient id false incomplete true",
    ]
    .map(String::from)
    .to_vec();
    for uid in [
        EXPLICIT_LE,
        IMPLICIT_LE,
        EXPLICIT_BE,
        JPEG_BASELINE,
        DEFLATED_LE,
    ] {
        want.push(format!("syntax {uid}"));
    }
    for n in 0..3 {
        want.push(format!("tree {n} ok true"));
        want.push(format!("tree {n} ok false"));
    }
    for w in &want {
        assert!(
            seen.get(w).is_some_and(|&n| n >= 5),
            "the generator reached {w:?} {} times in 1024 cases: {seen:#?}",
            seen.get(w).copied().unwrap_or(0)
        );
    }
    // The orders and UN readings make a difference somewhere.
    assert!(seen["tree 0 ok true"] < seen["tree 1 ok true"], "{seen:#?}");
    assert!(seen["tree 2 ok true"] < seen["tree 0 ok true"], "{seen:#?}");
}

fn error_name(k: &ErrorKind) -> String {
    format!("{k:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn anomaly_name(k: &AnomalyKind) -> String {
    format!("{k:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------------------- findings

/// Explicit VR Little Endian element header (short or long form as the VR says).
fn el(out: &mut Vec<u8>, tag: (u16, u16), vr: &[u8; 2], value: &[u8]) {
    header(
        out,
        Encoding::ExplicitLittle,
        Tag(tag.0, tag.1),
        *vr,
        value.len() as u32,
    );
    out.extend_from_slice(value);
}

/// The head sniffer took a value for an identifying attribute encoded as a sequence: the value
/// of the first element inside its items, or, when it has none, the value of the next
/// top-level element, whatever its tag. The grammar says the attribute has no value (it is a
/// sequence); the fingerprint refuses such a data set, de-identification and the media
/// scanner read it as a sequence; the audit trail recorded another patient's ID.
#[test]
fn a_sequence_where_an_identifier_belongs_gives_the_sniffer_no_value() {
    // (0010,0020) SQ of undefined length, one item holding a Patient ID "EVIL".
    let mut nested = Vec::new();
    nested.extend_from_slice(&[
        0x10, 0x00, 0x20, 0x00, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    nested.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    el(&mut nested, (0x0010, 0x0020), b"LO", b"EVIL");
    nested.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    nested.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    el(&mut nested, (0x0020, 0x000D), b"UI", b"1.2\0");
    el(&mut nested, (0x0028, 0x0010), b"US", &[2, 0]);
    // (0010,0020) SQ of length 0, then a private element "FAKE-PID".
    let mut empty = Vec::new();
    empty.extend_from_slice(&[0x10, 0x00, 0x20, 0x00, b'S', b'Q', 0, 0, 0, 0, 0, 0]);
    el(&mut empty, (0x0011, 0x0010), b"LO", b"FAKE-PID");
    el(&mut empty, (0x0028, 0x0010), b"US", &[2, 0]);
    let mut failures = Vec::new();
    for (what, bytes) in [("nested", nested), ("empty", empty)] {
        let r = reference(&bytes, EXPLICIT_LE, Limits::GATEWAY);
        assert_eq!(r.first_error(), None);
        let want = expected_facts(&r);
        assert_eq!(want.patient_id, None);
        let got = sniff(EXPLICIT_LE, &[&bytes]);
        if got != want {
            failures.push(format!(
                "{what}: input {}\n  tokens: Patient ID is a sequence, no value\n  sniffer: patient_id {:?}",
                hex(&bytes),
                got.patient_id
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
