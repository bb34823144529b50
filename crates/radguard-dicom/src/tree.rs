//! The data-set tree built from the one grammar's tokens ([`crate::tokens`]), and the writer
//! that encodes it again with every sequence and item length recomputed: defined lengths
//! ([`Lengths::Defined`]), or the length form each sequence and item was read with
//! ([`Lengths::AsRead`]).
//!
//! Values stay raw bytes in the data set's byte order; sequences are trees of items;
//! encapsulated pixel data are fragments. Every structural error the grammar finds is an error
//! here, never a guess, and so are the irregularities that would let a consumer see an element
//! twice or not at all (see [`TreeBuilder`]). For the consumers that rewrite a data set:
//! de-identification (the transform runs on the tree) and the media sanitizer (a clean copy is
//! written from the tree).
//!
//! ```text
//!   bytes ──(DataSetReader: inflate, tokens)──▶ TreeBuilder ──▶ DataSet ──encode_elements──▶ bytes
//! ```
//!
//! No I/O: [`parse`] and [`parse_encoded`] take a complete data set in memory; a stream feeds
//! [`TreeBuilder::token`] (or [`TreeBuilder::read`]) chunk by chunk.

use dicom_core::{Tag, VR};

use crate::inflate::{DataSetReader, InflateError};
use crate::limits::Limits;
use crate::tokens::{
    implicit_vr, long_form, AnomalyKind, ElementKind, ErrorKind, GrammarError, Header, Length,
    TagStr, Token, Tokenizer, ITEM, ITEM_DELIMITER, SEQUENCE_DELIMITER, UNDEFINED,
};
use crate::ts::{Encoding, TransferSyntax};

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
///
/// `vr` is the VR as read (explicit VR) or as the dictionary says ([`implicit_vr`]). An element
/// with [`Value::Items`] has VR SQ, or UN when it was read as UN of undefined length and kept
/// so ([`UnSequences::Keep`]): its items are then in Implicit VR Little Endian (PS3.5 §6.2.2)
/// and it is written back that way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub vr: VR,
    pub value: Value,
    /// A sequence ([`Value::Items`]) was read with an undefined length (PS3.5 §7.5.2); written
    /// so again under [`Lengths::AsRead`]. False for other values (encapsulated fragments
    /// always have an undefined length).
    pub undefined_length: bool,
}

impl Element {
    /// An element with a defined length.
    pub fn new(tag: Tag, vr: VR, value: Value) -> Element {
        Element {
            tag,
            vr,
            value,
            undefined_length: false,
        }
    }

    pub fn bytes(tag: Tag, vr: VR, b: Vec<u8>) -> Element {
        Element::new(tag, vr, Value::Bytes(b))
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

/// Remove trailing spaces and NULs (leading spaces are left to callers).
pub fn trim_padding(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b.get(end - 1), Some(b' ' | 0)) {
        end -= 1;
    }
    b.get(..end).unwrap_or(b)
}

/// Pad a value to even length (PS3.5 §7.1.1, §6.2): UI with NUL, text with space, binary with
/// NUL.
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

/// `(GGGG,EEEE)`.
pub fn tag_str(t: Tag) -> String {
    TagStr(t).to_string()
}

/// A data set (or a sequence item): elements in stream order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSet {
    pub elements: Vec<Element>,
    /// As a sequence item: it was read with an undefined length (PS3.5 §7.5.1); written so
    /// again under [`Lengths::AsRead`]. Not used for a top-level data set.
    pub undefined_length: bool,
}

impl DataSet {
    /// A data set (or an item of defined length) of these elements.
    pub fn new(elements: Vec<Element>) -> DataSet {
        DataSet {
            elements,
            undefined_length: false,
        }
    }

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
    /// Readable, but not unambiguously: refused (see [`TreeOptions::strict_order`]).
    #[error("refused at byte {offset}: {anomaly}; every element must be read exactly once")]
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

/// What to do with a UN element that holds a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnSequences {
    /// Read it as the sequence it is, VR SQ: UN of undefined length (its items in Implicit VR
    /// Little Endian, PS3.5 §6.2.2), and UN of defined length whose tag is a standard
    /// attribute the dictionary knows as a sequence (a sequence re-encoded by a node that did
    /// not know it), re-read as Implicit VR Little Endian with the same grammar. Written back
    /// as SQ in the output's encoding. For consumers that must see inside every item.
    AsSequence,
    /// Keep it as read: UN of undefined length stays UN with its items (written back as UN of
    /// undefined length, items in Implicit VR Little Endian); UN of defined length stays
    /// bytes. For consumers that write the data set back as it came.
    Keep,
}

/// Decisions beyond the grammar, per consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeOptions {
    /// Refuse an element that repeats a tag, or comes before a tag it should follow
    /// ([`ParseError::Ambiguous`]). PS3.5 §7.1 requires the elements of a data set in
    /// ascending tag order, each at most once; a reader that looks a tag up finds one of two
    /// copies, and another reader the other (a second Patient ID that a transform does not see
    /// leaves with its output). Off: both are kept in stream order.
    pub strict_order: bool,
    pub un_sequences: UnSequences,
}

impl Default for TreeOptions {
    /// Strict order; UN sequences read as sequences.
    fn default() -> TreeOptions {
        TreeOptions {
            strict_order: true,
            un_sequences: UnSequences::AsSequence,
        }
    }
}

/// A container open in the tree being built.
#[derive(Debug)]
enum Open {
    Sequence {
        tag: Tag,
        vr: VR,
        undefined: bool,
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
/// - Repeated or out-of-order elements: see [`TreeOptions::strict_order`].
/// - A delimiter with a non-zero length is refused (PS3.5 §7.5: its length is 0; a reader that
///   skips the length it claims reads other elements than one that does not).
/// - An odd value length is kept as read (the writer keeps it).
/// - UN holding a sequence: see [`UnSequences`].
#[derive(Debug)]
pub struct TreeBuilder {
    limits: Limits,
    options: TreeOptions,
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
    /// A builder with the default [`TreeOptions`].
    pub fn new(limits: Limits) -> TreeBuilder {
        TreeBuilder::with_options(limits, TreeOptions::default())
    }

    pub fn with_options(limits: Limits, options: TreeOptions) -> TreeBuilder {
        TreeBuilder {
            limits,
            options,
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

    /// Feeds `chunk` to `reader` and takes its tokens; the first error stops the taking (the
    /// reader still consumes the chunk).
    pub fn read(&mut self, reader: &mut DataSetReader, chunk: &[u8]) -> Result<(), ParseError> {
        let mut failed = None;
        reader.feed(chunk, |t| {
            if failed.is_none() {
                failed = self.token(t).err();
            }
        });
        failed.map_or(Ok(()), Err)
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
                        vr: h.vr,
                        undefined: h.length == Length::Undefined,
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
            Token::ItemStart { offset, length } => {
                self.pos = offset + 8;
                match self.stack.last() {
                    Some(Open::Sequence { .. }) => self.stack.push(Open::Item(DataSet {
                        elements: Vec::new(),
                        undefined_length: length == Length::Undefined,
                    })),
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
                    Some(Open::Sequence {
                        tag,
                        vr,
                        undefined,
                        items,
                    }) => Element {
                        tag,
                        // The tokenizer calls every sequence SQ but UN of undefined length
                        // in explicit VR.
                        vr: match self.options.un_sequences {
                            UnSequences::Keep if vr == VR::UN => VR::UN,
                            _ => VR::SQ,
                        },
                        value: Value::Items(items),
                        undefined_length: undefined,
                    },
                    Some(Open::Fragments { tag, vr, fragments }) => {
                        Element::new(tag, vr, Value::Fragments(fragments))
                    }
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
                // Written back as zeros (PS3.5 §7.1.2); the header is read the same either way.
                AnomalyKind::OddLength { .. } | AnomalyKind::ReservedBytes { .. } => {}
                AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. } => {
                    if self.options.strict_order {
                        return Err(ParseError::Ambiguous {
                            offset: a.offset,
                            anomaly: a.kind,
                        });
                    }
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

    /// A complete value element (a UN holding a standard sequence read as that sequence when
    /// the options say so).
    fn element(&self, h: Header, v: Vec<u8>) -> Result<Element, ParseError> {
        if self.options.un_sequences == UnSequences::AsSequence
            && h.vr == VR::UN
            && h.tag.group() & 1 == 0
            && implicit_vr(h.tag) == VR::SQ
        {
            let items = self.un_sequence(&h, &v)?;
            return Ok(Element::new(h.tag, VR::SQ, Value::Items(items)));
        }
        Ok(Element::bytes(h.tag, h.vr, v))
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
        let mut inner = TreeBuilder::with_options(limits, self.options);
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

/// Parses a complete data set (no more bytes will come) in `encoding`, not deflated.
pub fn parse_encoded(
    buf: &[u8],
    encoding: Encoding,
    limits: Limits,
    options: TreeOptions,
) -> Result<DataSet, ParseError> {
    let mut tz = Tokenizer::new(encoding, limits);
    let mut tree = TreeBuilder::with_options(limits, options);
    for t in tz.tokens(buf) {
        tree.token(t)?;
    }
    tz.finish()?;
    tree.finish()
}

/// Parses a complete data set as stored in transfer syntax `ts` (inflated first when the
/// syntax is deflated, under the inflate caps of `limits`).
pub fn parse(
    buf: &[u8],
    ts: &TransferSyntax,
    limits: Limits,
    options: TreeOptions,
) -> Result<DataSet, ParseError> {
    let mut reader = DataSetReader::new(ts, limits);
    let mut tree = TreeBuilder::with_options(limits, options);
    tree.read(&mut reader, buf)?;
    reader.finish()?;
    tree.finish()
}

/// Which length form the writer gives sequences and items (PS3.5 §7.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lengths {
    /// Defined lengths, recomputed (but where only an undefined length lets the grammar read
    /// the value as items: see [`encode_elements`]).
    #[default]
    Defined,
    /// The form each sequence and item was read with ([`Element::undefined_length`],
    /// [`DataSet::undefined_length`]): undefined ones with their delimiters, defined ones
    /// recomputed. A data set rewritten this way keeps the input's bytes but for what was
    /// changed in the tree.
    AsRead,
}

/// How a sequence element is written: the VR of its header, the encoding of its items, and
/// whether its length is undefined.
///
/// Only an undefined length lets the grammar read the value as items again for:
/// - UN in explicit VR: PS3.5 §6.2.2, items in Implicit VR Little Endian;
/// - in implicit VR, a tag the dictionary does not call SQ (a private sequence): PS3.5
///   §7.1.3, only the undefined length tells a reader it is a sequence.
fn sequence_form(e: &Element, encoding: Encoding, lengths: Lengths) -> (VR, Encoding, bool) {
    let as_read = lengths == Lengths::AsRead && e.undefined_length;
    if encoding.explicit() {
        if e.vr == VR::UN {
            (VR::UN, Encoding::ImplicitLittle, true)
        } else {
            (VR::SQ, encoding, as_read)
        }
    } else {
        (VR::SQ, encoding, as_read || implicit_vr(e.tag) != VR::SQ)
    }
}

fn item_undefined(item: &DataSet, lengths: Lengths) -> bool {
    lengths == Lengths::AsRead && item.undefined_length
}

fn header_len(vr: VR, encoding: Encoding) -> u64 {
    if encoding.explicit() && long_form(vr) {
        12
    } else {
        8
    }
}

/// Encoded length of an element's value (items and delimiters included).
fn value_len(e: &Element, encoding: Encoding, lengths: Lengths) -> u64 {
    match &e.value {
        Value::Bytes(b) => b.len() as u64,
        Value::Items(items) => {
            let (_, enc, undefined) = sequence_form(e, encoding, lengths);
            let items: u64 = items
                .iter()
                .map(|i| {
                    let delimiter = if item_undefined(i, lengths) { 8 } else { 0 };
                    8 + dataset_len(i, enc, lengths) + delimiter
                })
                .sum();
            items + if undefined { 8 } else { 0 }
        }
        Value::Fragments(f) => f.iter().map(|x| 8 + x.len() as u64).sum::<u64>() + 8,
    }
}

/// Bytes the element takes as [`encode_elements_with`] writes it, header included.
pub fn encoded_len(e: &Element, encoding: Encoding, lengths: Lengths) -> u64 {
    let vr = match e.value {
        Value::Items(_) => sequence_form(e, encoding, lengths).0,
        _ => e.vr,
    };
    header_len(vr, encoding) + value_len(e, encoding, lengths)
}

/// The encoded length of a data set's elements (what [`encode_elements_with`] writes).
pub fn dataset_len(ds: &DataSet, encoding: Encoding, lengths: Lengths) -> u64 {
    ds.elements
        .iter()
        .map(|e| encoded_len(e, encoding, lengths))
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

/// Encodes elements in stream order with [`Lengths::Defined`]: every sequence and item length
/// recomputed and defined, except encapsulated fragments (PS3.5 §A.4) and the sequences only
/// an undefined length identifies (UN in explicit VR, private sequences in implicit VR).
/// Values are written as they are (an odd length stays odd; see [`pad`]); group length
/// elements too (see [`group_sizes`]).
pub fn encode_elements(
    elements: &[Element],
    encoding: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    encode_elements_with(elements, encoding, Lengths::Defined, out)
}

/// Encodes elements in stream order, sequences and items in the length form `lengths` says.
pub fn encode_elements_with(
    elements: &[Element],
    encoding: Encoding,
    lengths: Lengths,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for e in elements {
        encode_element(e, encoding, lengths, out)?;
    }
    Ok(())
}

fn encode_element(
    e: &Element,
    encoding: Encoding,
    lengths: Lengths,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
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
            let (vr, enc, undefined) = sequence_form(e, encoding, lengths);
            let len = if undefined {
                UNDEFINED
            } else {
                checked_len(e.tag, value_len(e, encoding, lengths))?
            };
            write_header(out, e.tag, vr, len, encoding);
            for item in items {
                if item_undefined(item, lengths) {
                    write_item_header(out, ITEM, UNDEFINED, enc);
                    encode_elements_with(&item.elements, enc, lengths, out)?;
                    write_item_header(out, ITEM_DELIMITER, 0, enc);
                } else {
                    let ilen = checked_len(ITEM, dataset_len(item, enc, lengths))?;
                    write_item_header(out, ITEM, ilen, enc);
                    encode_elements_with(&item.elements, enc, lengths, out)?;
                }
            }
            if undefined {
                write_item_header(out, SEQUENCE_DELIMITER, 0, enc);
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

/// The encoding the items of a sequence element are written in: Implicit VR Little Endian
/// inside UN in explicit VR (PS3.5 §6.2.2), else the data set's own.
pub fn item_encoding(e: &Element, encoding: Encoding) -> Encoding {
    sequence_form(e, encoding, Lengths::Defined).1
}

/// The bytes each group of `elements` takes as [`encode_elements_with`] writes it, group
/// length elements (gggg,0000) left out: the value a group length element should have
/// (PS3.5 §7.2).
pub fn group_sizes(
    elements: &[Element],
    encoding: Encoding,
    lengths: Lengths,
) -> std::collections::BTreeMap<u16, u64> {
    let mut sizes = std::collections::BTreeMap::new();
    for e in elements.iter().filter(|e| e.tag.element() != 0) {
        *sizes.entry(e.tag.group()).or_insert(0) += encoded_len(e, encoding, lengths);
    }
    sizes
}
