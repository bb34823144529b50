//! De-identification's data-set codec: the [`DataSet`] tree built from the one data-set grammar
//! ([`radguard_dicom::tokens`]), and the writer that encodes it again with every sequence and
//! item length recomputed (defined lengths).
//!
//! Only what de-identification needs is modelled: values stay raw bytes in the data set's byte
//! order; sequences are trees; encapsulated pixel data are fragments. Every structural error the
//! grammar finds is an error here, never a guess, and so are the irregularities that would let a
//! value hide from the transform (see [`TreeBuilder`]).

use dicom_core::{Tag, VR};
use radguard_dicom::inflate::InflateError;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{
    implicit_vr, long_form, AnomalyKind, ElementKind, ErrorKind, GrammarError, Header, Token,
    Tokenizer, ITEM, SEQUENCE_DELIMITER, UNDEFINED,
};
pub use radguard_dicom::ts::{Encoding, TransferSyntax};

/// An element value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Raw value bytes, in the syntax's byte order.
    Bytes(Vec<u8>),
    /// Sequence items.
    Items(Vec<DataSet>),
    /// Encapsulated fragments (the first is the basic offset table).
    Fragments(Vec<Vec<u8>>),
}

/// One data element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub vr: VR,
    pub value: Value,
}

impl Element {
    pub fn bytes(tag: Tag, vr: VR, b: Vec<u8>) -> Element {
        Element {
            tag,
            vr,
            value: Value::Bytes(b),
        }
    }

    /// A text value, padded to even length as its VR requires.
    pub fn text(tag: Tag, vr: VR, s: &str) -> Element {
        Element::bytes(tag, vr, pad(vr, s.as_bytes().to_vec()))
    }

    /// The value as text with trailing padding (spaces, NULs) removed; `None` if not bytes.
    pub fn text_value(&self) -> Option<&[u8]> {
        match &self.value {
            Value::Bytes(b) => Some(trim_padding(b)),
            _ => None,
        }
    }

    /// Whether the value has zero length (or a sequence has no items).
    pub fn is_empty(&self) -> bool {
        match &self.value {
            Value::Bytes(b) => b.is_empty(),
            Value::Items(i) => i.is_empty(),
            Value::Fragments(f) => f.is_empty(),
        }
    }
}

/// Remove trailing spaces and NULs (and leading spaces for non-text use is left to callers).
pub fn trim_padding(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b.get(end - 1), Some(b' ' | 0)) {
        end -= 1;
    }
    b.get(..end).unwrap_or(b)
}

/// Pad a value to even length: UI with NUL, text with space, binary with NUL.
pub fn pad(vr: VR, mut b: Vec<u8>) -> Vec<u8> {
    if b.len() % 2 == 1 {
        b.push(if is_text_vr(vr) && vr != VR::UI {
            b' '
        } else {
            0
        });
    }
    b
}

/// VRs whose value is character data.
pub fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

/// A data set (or a sequence item): elements in stream order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSet {
    pub elements: Vec<Element>,
}

impl DataSet {
    pub fn get(&self, tag: Tag) -> Option<&Element> {
        self.elements.iter().find(|e| e.tag == tag)
    }

    pub fn get_mut(&mut self, tag: Tag) -> Option<&mut Element> {
        self.elements.iter_mut().find(|e| e.tag == tag)
    }

    /// Text value of an element (trailing padding removed).
    pub fn text(&self, tag: Tag) -> Option<&[u8]> {
        self.get(tag).and_then(|e| e.text_value())
    }

    /// Replace the element with the same tag, or insert it before the first larger tag.
    pub fn put(&mut self, e: Element) {
        if let Some(slot) = self.get_mut(e.tag) {
            *slot = e;
            return;
        }
        let at = self
            .elements
            .iter()
            .position(|x| x.tag > e.tag)
            .unwrap_or(self.elements.len());
        self.elements.insert(at, e);
    }

    pub fn remove(&mut self, tag: Tag) -> Option<Element> {
        let i = self.elements.iter().position(|e| e.tag == tag)?;
        Some(self.elements.remove(i))
    }
}

/// Why bytes could not be parsed as a data set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown VR {vr:?} for {tag} at byte {offset}")]
    UnknownVr {
        tag: String,
        vr: String,
        offset: u64,
    },
    #[error("malformed data set at byte {offset}{}: {why}", tag.as_ref().map(|t| format!(" in {t}")).unwrap_or_default())]
    Malformed {
        offset: u64,
        tag: Option<String>,
        why: String,
    },
    #[error("the data set ends inside an element (byte {offset})")]
    Truncated { offset: u64 },
    #[error("sequences nested deeper than {limit} levels at byte {offset}")]
    TooDeep { offset: u64, limit: usize },
    /// Readable, but not unambiguously: refused (see [`TreeBuilder`]).
    #[error("refused at byte {offset}: {anomaly}; de-identification must see every element exactly once")]
    Ambiguous { offset: u64, anomaly: AnomalyKind },
    #[error("the deflated data set cannot be read at byte {offset}: {error}")]
    Inflate { offset: u64, error: InflateError },
}

impl From<GrammarError> for ParseError {
    fn from(e: GrammarError) -> ParseError {
        let offset = e.offset;
        match e.kind {
            ErrorKind::UnknownVr { tag, vr } => ParseError::UnknownVr {
                tag: tag_str(tag),
                vr: String::from_utf8_lossy(&vr).into_owned(),
                offset,
            },
            ErrorKind::Truncated(_) => ParseError::Truncated { offset },
            ErrorKind::TooDeep { limit } => ParseError::TooDeep { offset, limit },
            ErrorKind::Inflate(error) => ParseError::Inflate { offset, error },
            kind => ParseError::Malformed {
                offset,
                tag: None,
                why: kind.to_string(),
            },
        }
    }
}

impl ParseError {
    /// The same error with its byte offset moved by `base` (for a value re-read on its own).
    fn rebased(mut self, base: u64) -> ParseError {
        match &mut self {
            ParseError::UnknownVr { offset, .. }
            | ParseError::Malformed { offset, .. }
            | ParseError::Truncated { offset }
            | ParseError::TooDeep { offset, .. }
            | ParseError::Ambiguous { offset, .. }
            | ParseError::Inflate { offset, .. } => *offset = offset.saturating_add(base),
        }
        self
    }
}

/// Why a data set could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{tag} {vr:?}: {len} bytes do not fit the 16-bit length of this VR")]
    ValueTooLong { tag: String, vr: VR, len: usize },
    #[error("{tag}: encoded length {len} exceeds 32 bits")]
    TooLarge { tag: String, len: u64 },
}

pub fn tag_str(t: Tag) -> String {
    format!("({:04X},{:04X})", t.group(), t.element())
}

/// A container open in the tree being built.
#[derive(Debug)]
enum Open {
    Sequence {
        tag: Tag,
        items: Vec<DataSet>,
    },
    Item(DataSet),
    Fragments {
        tag: Tag,
        vr: VR,
        fragments: Vec<Vec<u8>>,
    },
}

/// A value being collected from its chunks.
#[derive(Debug)]
enum Collecting {
    Element(Header, Vec<u8>),
    Fragment(Vec<u8>),
}

/// Builds the [`DataSet`] tree from the tokens of one data set, in stream order.
///
/// Values are collected from their chunks; sequences and items nest on a stack whose depth the
/// tokenizer bounds ([`Limits::max_depth`]). Decisions beyond the grammar:
/// - An element that repeats a tag, or comes before a tag it should follow, is refused
///   ([`ParseError::Ambiguous`]). PS3.5 §7.1 requires the elements of a data set in ascending
///   tag order, each at most once; a reader that looks a tag up finds one of two copies, and
///   a second Patient ID that the transform does not see would leave with the output.
/// - A delimiter with a non-zero length is refused (PS3.5 §7.5: its length is 0).
/// - An odd value length is kept as read (the writer keeps it).
/// - A standard attribute that the dictionary knows as a sequence but that arrives as UN of
///   defined length (a sequence re-encoded by a node that did not know it) is read as the
///   sequence it is, in Implicit VR Little Endian (PS3.5 §6.2.2), with the same grammar: its
///   items are de-identified like any other, not passed on as opaque bytes.
#[derive(Debug)]
pub struct TreeBuilder {
    limits: Limits,
    root: DataSet,
    stack: Vec<Open>,
    value: Option<Collecting>,
    /// Position after the last token seen (for a truncation found here).
    pos: u64,
}

fn mismatch(offset: u64, what: &str) -> ParseError {
    ParseError::Malformed {
        offset,
        tag: None,
        why: format!("{what} out of place"),
    }
}

impl TreeBuilder {
    pub fn new(limits: Limits) -> TreeBuilder {
        TreeBuilder {
            limits,
            root: DataSet::default(),
            stack: Vec::new(),
            value: None,
            pos: 0,
        }
    }

    /// Whether no element, sequence or item is open.
    pub fn at_top_level(&self) -> bool {
        self.stack.is_empty() && self.value.is_none()
    }

    /// The input offset reached by the tokens taken so far (value chunks included).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Takes the complete top-level elements built so far (call at a top-level boundary).
    pub fn take(&mut self) -> DataSet {
        std::mem::take(&mut self.root)
    }

    /// The data set once every token was given and the tokenizer finished cleanly.
    pub fn finish(self) -> Result<DataSet, ParseError> {
        if !self.at_top_level() {
            return Err(ParseError::Truncated { offset: self.pos });
        }
        Ok(self.root)
    }

    fn current(&mut self) -> Result<&mut DataSet, ParseError> {
        match self.stack.last_mut() {
            None => Ok(&mut self.root),
            Some(Open::Item(ds)) => Ok(ds),
            Some(_) => Err(mismatch(self.pos, "element")),
        }
    }

    /// Takes one token.
    pub fn token(&mut self, t: Token<'_>) -> Result<(), ParseError> {
        match t {
            Token::Element(h) => {
                self.pos = h.offset + u64::from(h.header_len);
                if self.value.is_some() {
                    return Err(mismatch(h.offset, "element"));
                }
                match h.kind {
                    ElementKind::Value => {
                        let first = h.length.defined().unwrap_or(0).min(64 * 1024) as usize;
                        self.value = Some(Collecting::Element(h, Vec::with_capacity(first)));
                    }
                    ElementKind::Sequence => self.stack.push(Open::Sequence {
                        tag: h.tag,
                        items: Vec::new(),
                    }),
                    ElementKind::Encapsulated => self.stack.push(Open::Fragments {
                        tag: h.tag,
                        vr: h.vr,
                        fragments: Vec::new(),
                    }),
                }
            }
            Token::Value(b) => {
                self.pos += b.len() as u64;
                match self.value.as_mut() {
                    Some(Collecting::Element(_, v) | Collecting::Fragment(v)) => {
                        v.extend_from_slice(b)
                    }
                    None => return Err(mismatch(self.pos, "value")),
                }
            }
            Token::ValueEnd => match self.value.take() {
                Some(Collecting::Element(h, v)) => {
                    let e = self.element(h, v)?;
                    self.current()?.elements.push(e);
                }
                Some(Collecting::Fragment(v)) => match self.stack.last_mut() {
                    Some(Open::Fragments { fragments, .. }) => fragments.push(v),
                    _ => return Err(mismatch(self.pos, "fragment")),
                },
                None => return Err(mismatch(self.pos, "value end")),
            },
            Token::ItemStart { offset, .. } => {
                self.pos = offset + 8;
                match self.stack.last() {
                    Some(Open::Sequence { .. }) => self.stack.push(Open::Item(DataSet::default())),
                    _ => return Err(mismatch(offset, "item")),
                }
            }
            Token::ItemEnd { offset } => {
                self.pos = self.pos.max(offset);
                let Some(Open::Item(ds)) = self.stack.pop() else {
                    return Err(mismatch(offset, "item end"));
                };
                match self.stack.last_mut() {
                    Some(Open::Sequence { items, .. }) => items.push(ds),
                    _ => return Err(mismatch(offset, "item end")),
                }
            }
            Token::SequenceEnd { offset } => {
                self.pos = self.pos.max(offset);
                let e = match self.stack.pop() {
                    Some(Open::Sequence { tag, items }) => Element {
                        tag,
                        vr: VR::SQ,
                        value: Value::Items(items),
                    },
                    Some(Open::Fragments { tag, vr, fragments }) => Element {
                        tag,
                        vr,
                        value: Value::Fragments(fragments),
                    },
                    _ => return Err(mismatch(offset, "sequence end")),
                };
                self.current()?.elements.push(e);
            }
            Token::Fragment { offset, length } => {
                self.pos = offset + 8;
                if self.value.is_some()
                    || !matches!(self.stack.last(), Some(Open::Fragments { .. }))
                {
                    return Err(mismatch(offset, "fragment"));
                }
                let first = length.min(64 * 1024) as usize;
                self.value = Some(Collecting::Fragment(Vec::with_capacity(first)));
            }
            Token::Anomaly(a) => match a.kind {
                AnomalyKind::OddLength { .. } => {}
                AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. } => {
                    return Err(ParseError::Ambiguous {
                        offset: a.offset,
                        anomaly: a.kind,
                    })
                }
                AnomalyKind::DelimiterLength { .. } => {
                    return Err(ParseError::Malformed {
                        offset: a.offset,
                        tag: None,
                        why: a.kind.to_string(),
                    })
                }
            },
            Token::Error(e) => return Err(e.into()),
            // Only after an error, which was returned already.
            Token::Raw(_) => {}
        }
        Ok(())
    }

    /// A complete value element (a UN holding a standard sequence read as that sequence).
    fn element(&self, h: Header, v: Vec<u8>) -> Result<Element, ParseError> {
        if h.vr == VR::UN && h.tag.group() & 1 == 0 && implicit_vr(h.tag) == VR::SQ {
            let items = self.un_sequence(&h, &v)?;
            return Ok(Element {
                tag: h.tag,
                vr: VR::SQ,
                value: Value::Items(items),
            });
        }
        Ok(Element {
            tag: h.tag,
            vr: h.vr,
            value: Value::Bytes(v),
        })
    }

    /// Reads the value of a UN element as the items of a sequence in Implicit VR Little
    /// Endian: the value behind an implicit VR header of the same tag (which the dictionary
    /// makes a sequence), through the same grammar, nested no deeper than the limit allows.
    fn un_sequence(&self, h: &Header, value: &[u8]) -> Result<Vec<DataSet>, ParseError> {
        let enc = Encoding::ImplicitLittle;
        let limits = Limits {
            max_depth: self.limits.max_depth.saturating_sub(h.depth),
            ..self.limits
        };
        let mut head = Vec::with_capacity(8);
        enc.put_u16(&mut head, h.tag.group());
        enc.put_u16(&mut head, h.tag.element());
        enc.put_u32(&mut head, value.len() as u32);
        // Offsets in the re-read are from the synthetic header 8 bytes before the value.
        let base = (h.offset + u64::from(h.header_len)).saturating_sub(8);
        let mut tz = Tokenizer::new(enc, limits).with_total(head.len() as u64 + value.len() as u64);
        let mut inner = TreeBuilder::new(limits);
        for chunk in [head.as_slice(), value] {
            for t in tz.tokens(chunk) {
                inner.token(t).map_err(|e| e.rebased(base))?;
            }
        }
        tz.finish().map_err(|e| ParseError::from(e).rebased(base))?;
        let ds = inner.finish().map_err(|e| e.rebased(base))?;
        match ds.elements.into_iter().next() {
            Some(Element {
                value: Value::Items(items),
                ..
            }) => Ok(items),
            _ => Err(ParseError::Malformed {
                offset: h.offset,
                tag: Some(tag_str(h.tag)),
                why: "UN value is not a sequence".into(),
            }),
        }
    }
}

/// Parses a complete data set (no more bytes will come), under `limits`.
pub fn parse_dataset_with(
    buf: &[u8],
    encoding: Encoding,
    limits: Limits,
) -> Result<DataSet, ParseError> {
    let mut tz = Tokenizer::new(encoding, limits);
    let mut tree = TreeBuilder::new(limits);
    for t in tz.tokens(buf) {
        tree.token(t)?;
    }
    tz.finish()?;
    tree.finish()
}

/// Parses a complete data set under the offline limits ([`Limits::OFFLINE`]).
pub fn parse_dataset(buf: &[u8], encoding: Encoding) -> Result<DataSet, ParseError> {
    parse_dataset_with(buf, encoding, Limits::OFFLINE)
}

fn header_len(vr: VR, encoding: Encoding) -> u64 {
    if encoding.explicit() && long_form(vr) {
        12
    } else {
        8
    }
}

/// Encoded length of an element's value (items included).
fn value_len(e: &Element, encoding: Encoding) -> u64 {
    match &e.value {
        Value::Bytes(b) => b.len() as u64,
        Value::Items(items) => items.iter().map(|i| 8 + dataset_len(i, encoding)).sum(),
        Value::Fragments(f) => f.iter().map(|x| 8 + x.len() as u64).sum::<u64>() + 8,
    }
}

fn dataset_len(ds: &DataSet, encoding: Encoding) -> u64 {
    ds.elements
        .iter()
        .map(|e| header_len(e.vr, encoding) + value_len(e, encoding))
        .sum()
}

/// An element header (PS3.5 §7.1.2 explicit VR, §7.1.3 implicit VR).
fn write_header(out: &mut Vec<u8>, tag: Tag, vr: VR, len: u32, encoding: Encoding) {
    encoding.put_u16(out, tag.group());
    encoding.put_u16(out, tag.element());
    if encoding.explicit() {
        out.extend_from_slice(&vr.to_bytes());
        if long_form(vr) {
            out.extend_from_slice(&[0, 0]);
            encoding.put_u32(out, len);
        } else {
            encoding.put_u16(out, len as u16);
        }
    } else {
        encoding.put_u32(out, len);
    }
}

/// An item or delimiter header (PS3.5 §7.5).
fn write_item_header(out: &mut Vec<u8>, tag: Tag, len: u32, encoding: Encoding) {
    encoding.put_u16(out, tag.group());
    encoding.put_u16(out, tag.element());
    encoding.put_u32(out, len);
}

fn checked_len(tag: Tag, len: u64) -> Result<u32, EncodeError> {
    if len >= u64::from(UNDEFINED) {
        return Err(EncodeError::TooLarge {
            tag: tag_str(tag),
            len,
        });
    }
    Ok(len as u32)
}

/// Encodes elements (defined lengths everywhere except encapsulated fragments).
pub fn encode_elements(
    elements: &[Element],
    encoding: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for e in elements {
        encode_element(e, encoding, out)?;
    }
    Ok(())
}

fn encode_element(e: &Element, encoding: Encoding, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match &e.value {
        Value::Bytes(b) => {
            if encoding.explicit() && !long_form(e.vr) && b.len() > 0xFFFF {
                return Err(EncodeError::ValueTooLong {
                    tag: tag_str(e.tag),
                    vr: e.vr,
                    len: b.len(),
                });
            }
            let len = checked_len(e.tag, b.len() as u64)?;
            write_header(out, e.tag, e.vr, len, encoding);
            out.extend_from_slice(b);
        }
        Value::Items(items) => {
            let len = checked_len(e.tag, value_len(e, encoding))?;
            write_header(out, e.tag, VR::SQ, len, encoding);
            for item in items {
                let ilen = checked_len(ITEM, dataset_len(item, encoding))?;
                write_item_header(out, ITEM, ilen, encoding);
                encode_elements(&item.elements, encoding, out)?;
            }
        }
        Value::Fragments(frags) => {
            write_header(out, e.tag, e.vr, UNDEFINED, encoding);
            for f in frags {
                let flen = checked_len(ITEM, f.len() as u64)?;
                write_item_header(out, ITEM, flen, encoding);
                out.extend_from_slice(f);
            }
            write_item_header(out, SEQUENCE_DELIMITER, 0, encoding);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: Tag, vr: VR, v: &[u8]) -> Element {
        Element::bytes(tag, vr, v.to_vec())
    }

    fn sample() -> DataSet {
        let inner = DataSet {
            elements: vec![
                el(Tag(0x0008, 0x1150), VR::UI, b"1.2.840.10008.5.1.4.1.1.2\0"),
                el(Tag(0x0008, 0x1155), VR::UI, b"1.2.3.4\0"),
            ],
        };
        let nested = DataSet {
            elements: vec![Element {
                tag: Tag(0x0040, 0xA730),
                vr: VR::SQ,
                value: Value::Items(vec![inner.clone()]),
            }],
        };
        DataSet {
            elements: vec![
                el(Tag(0x0008, 0x0060), VR::CS, b"CT"),
                Element {
                    tag: Tag(0x0008, 0x1140),
                    vr: VR::SQ,
                    value: Value::Items(vec![inner, DataSet::default(), nested]),
                },
                el(Tag(0x0010, 0x0010), VR::PN, b"DOE^JOHN"),
                el(Tag(0x0028, 0x0010), VR::US, &[0, 2]),
                Element {
                    tag: Tag(0x7FE0, 0x0010),
                    vr: VR::OB,
                    value: Value::Fragments(vec![vec![], b"JPEG".to_vec()]),
                },
            ],
        }
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
            let mut out = Vec::new();
            encode_elements(&ds.elements, enc, &mut out).unwrap();
            let back = parse_dataset(&out, enc).unwrap();
            assert_eq!(back, ds, "{enc:?}");
        }
    }

    #[test]
    fn any_split_builds_the_same_tree() {
        for enc in ENCODINGS {
            let mut out = Vec::new();
            encode_elements(&sample().elements, enc, &mut out).unwrap();
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
        hdr_ex(&mut b, 0x0009, 0x1001, b"UN", UNDEFINED);
        item(&mut b, 0xE000, UNDEFINED);
        implicit(&mut b, 0x0010, 0x0010, b"X^Y ");
        item(&mut b, 0xE00D, 0);
        item(&mut b, 0xE0DD, 0);
        let ds = parse_dataset(&b, Encoding::ExplicitLittle).unwrap();
        assert_eq!(ds.elements.len(), 2);
        let Value::Items(items) = &ds.elements[1].value else {
            panic!()
        };
        assert_eq!(ds.elements[1].vr, VR::SQ);
        assert_eq!(items[0].elements[0].vr, VR::PN);
        assert_eq!(items[0].text(Tag(0x0010, 0x0010)), Some(&b"X^Y"[..]));
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
    }

    #[test]
    fn repeated_and_unordered_elements_are_refused() {
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
        // A sequence delimiter with a length.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
        item(&mut b, 0xE0DD, 4);
        assert!(matches!(
            parse_dataset(&b, Encoding::ExplicitLittle),
            Err(ParseError::Malformed { offset: 12, .. })
        ));
    }

    #[test]
    fn nesting_limit() {
        let nest = |n: usize| {
            let mut ds = DataSet::default();
            for _ in 0..n {
                ds = DataSet {
                    elements: vec![Element {
                        tag: Tag(0x0040, 0xA730),
                        vr: VR::SQ,
                        value: Value::Items(vec![ds]),
                    }],
                };
            }
            let mut out = Vec::new();
            encode_elements(&ds.elements, Encoding::ExplicitLittle, &mut out).unwrap();
            out
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
        let mut out = Vec::new();
        encode_elements(&sample().elements, Encoding::ExplicitLittle, &mut out).unwrap();
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
}
