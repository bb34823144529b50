//! A strict, bounded DICOM data-set codec: parse elements (with sequences and items at any
//! depth) from a byte buffer that may still be growing, and encode them again with every
//! sequence and item length recomputed (defined lengths).
//!
//! Only what de-identification needs is modelled: values stay raw bytes in the transfer
//! syntax's byte order; sequences are trees; encapsulated pixel data are fragments. Unknown
//! VRs, items that overrun their container, stray delimiters and nesting deeper than
//! [`MAX_DEPTH`] are errors, never guesses.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// The undefined length.
pub const UNDEFINED: u32 = 0xFFFF_FFFF;
pub const ITEM: Tag = Tag(0xFFFE, 0xE000);
pub const ITEM_DELIMITER: Tag = Tag(0xFFFE, 0xE00D);
pub const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);
/// (7FE0,0010) Pixel Data.
pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
/// (7FE0,0008) Float Pixel Data and (7FE0,0009) Double Float Pixel Data.
pub const FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0008);
pub const DOUBLE_FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0009);

/// Whether a top-level tag starts the bulk pixel data that streams through untouched.
pub fn is_bulk_pixel_tag(tag: Tag) -> bool {
    tag == PIXEL_DATA || tag == FLOAT_PIXEL_DATA || tag == DOUBLE_FLOAT_PIXEL_DATA
}

/// Byte-level encoding of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Syntax {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Syntax {
    fn big(self) -> bool {
        self == Syntax::ExplicitBig
    }
    fn explicit(self) -> bool {
        self != Syntax::ImplicitLittle
    }
}

/// A transfer syntax as far as de-identification cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSyntax {
    pub uid: String,
    pub syntax: Syntax,
    /// Deflated Explicit VR Little Endian (the whole data set is deflated).
    pub deflated: bool,
}

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

impl TransferSyntax {
    /// Classify a transfer syntax UID. Every standard transfer syntax other than implicit
    /// VR little endian and explicit VR big endian encodes the data set in explicit VR little
    /// endian (PS3.5 Annex A); non-standard ones cannot be parsed and are refused.
    pub fn from_uid(uid: &str) -> Option<TransferSyntax> {
        let uid = uid.trim_end_matches(['\0', ' ']);
        let (syntax, deflated) = match uid {
            IMPLICIT_VR_LE => (Syntax::ImplicitLittle, false),
            EXPLICIT_VR_BE => (Syntax::ExplicitBig, false),
            DEFLATED_EXPLICIT_VR_LE => (Syntax::ExplicitLittle, true),
            u if u.starts_with("1.2.840.10008.1.2.") => (Syntax::ExplicitLittle, false),
            _ => return None,
        };
        Some(TransferSyntax {
            uid: uid.to_string(),
            syntax,
            deflated,
        })
    }
}

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

/// Explicit VRs with a 4-byte length (and 2 reserved bytes).
fn long_form(vr: VR) -> bool {
    matches!(
        vr,
        VR::OB
            | VR::OD
            | VR::OF
            | VR::OL
            | VR::OV
            | VR::OW
            | VR::SQ
            | VR::SV
            | VR::UC
            | VR::UN
            | VR::UR
            | VR::UT
            | VR::UV
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
    #[error("sequences nested deeper than {MAX_DEPTH} levels at byte {offset}")]
    TooDeep { offset: u64 },
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

/// Internal parse failure: need more bytes, or a real error.
#[derive(Debug)]
pub(crate) enum PErr {
    Incomplete,
    Bad(ParseError),
}

impl From<ParseError> for PErr {
    fn from(e: ParseError) -> Self {
        PErr::Bad(e)
    }
}

/// The VR of a tag in implicit VR (from the standard dictionary; private and unknown → UN).
pub fn implicit_vr(tag: Tag) -> VR {
    if tag.element() == 0 {
        return VR::UL;
    }
    if tag.group() % 2 == 1 {
        return if (0x0010..=0x00FF).contains(&tag.element()) {
            VR::LO
        } else {
            VR::UN
        };
    }
    match StandardDataDictionary.by_tag(tag).map(|e| e.vr()) {
        Some(VirtualVr::Exact(vr)) => vr,
        Some(VirtualVr::Xs) => VR::US,
        Some(_) => VR::OW,
        None => VR::UN,
    }
}

/// An element header as read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub tag: Tag,
    /// Explicit VR, if the syntax carries one (never for items and delimiters).
    pub vr: Option<VR>,
    pub len: u32,
    pub header_len: usize,
}

/// A cursor over a buffer that may still grow (`soft` end) or inside a container whose end is
/// known (`hard` end: running past it is an error, not a reason to wait).
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pub pos: usize,
    limit: usize,
    soft: bool,
    /// Absolute stream offset of `buf[0]`, for messages.
    base: u64,
}

impl<'a> Cursor<'a> {
    /// A cursor whose end is soft (`more` = more bytes may follow) or hard.
    pub fn new(buf: &'a [u8], base: u64, more: bool) -> Self {
        Cursor {
            buf,
            pos: 0,
            limit: buf.len(),
            soft: more,
            base,
        }
    }

    fn off(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn malformed(&self, tag: Option<Tag>, why: impl Into<String>) -> PErr {
        PErr::Bad(ParseError::Malformed {
            offset: self.off(),
            tag: tag.map(tag_str),
            why: why.into(),
        })
    }

    fn need(&self, n: usize) -> Result<(), PErr> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.limit => Ok(()),
            _ if self.soft => Err(PErr::Incomplete),
            _ => Err(self.malformed(None, "element runs past the end of its container")),
        }
    }

    fn u16_at(&self, at: usize, big: bool) -> u16 {
        let b = [
            self.buf.get(at).copied().unwrap_or(0),
            self.buf.get(at + 1).copied().unwrap_or(0),
        ];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize, big: bool) -> u32 {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.buf.get(at + i).copied().unwrap_or(0);
        }
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Peek the next tag (needs 4 bytes).
    pub fn peek_tag(&self, syntax: Syntax) -> Result<Tag, PErr> {
        self.need(4)?;
        let big = syntax.big();
        Ok(Tag(
            self.u16_at(self.pos, big),
            self.u16_at(self.pos + 2, big),
        ))
    }

    /// Whether the cursor is at the end of its container (or of the bytes seen so far).
    pub fn at_end(&self) -> bool {
        self.pos >= self.limit
    }

    /// Read an element, item or delimiter header.
    pub fn header(&mut self, syntax: Syntax) -> Result<Header, PErr> {
        self.need(8)?;
        let big = syntax.big();
        let p = self.pos;
        let tag = Tag(self.u16_at(p, big), self.u16_at(p + 2, big));
        if tag.group() == 0xFFFE {
            let len = self.u32_at(p + 4, big);
            self.pos += 8;
            return Ok(Header {
                tag,
                vr: None,
                len,
                header_len: 8,
            });
        }
        if !syntax.explicit() {
            let len = self.u32_at(p + 4, false);
            self.pos += 8;
            return Ok(Header {
                tag,
                vr: None,
                len,
                header_len: 8,
            });
        }
        let code = [
            self.buf.get(p + 4).copied().unwrap_or(0),
            self.buf.get(p + 5).copied().unwrap_or(0),
        ];
        let Some(vr) = VR::from_binary(code) else {
            return Err(PErr::Bad(ParseError::UnknownVr {
                tag: tag_str(tag),
                vr: String::from_utf8_lossy(&code).into_owned(),
                offset: self.off(),
            }));
        };
        if long_form(vr) {
            self.need(12)?;
            let len = self.u32_at(p + 8, big);
            self.pos += 12;
            Ok(Header {
                tag,
                vr: Some(vr),
                len,
                header_len: 12,
            })
        } else {
            let len = u32::from(self.u16_at(p + 6, big));
            self.pos += 8;
            Ok(Header {
                tag,
                vr: Some(vr),
                len,
                header_len: 8,
            })
        }
    }

    fn take(&mut self, len: u32) -> Result<&'a [u8], PErr> {
        let n = len as usize;
        self.need(n)?;
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.malformed(None, "value out of range"))?;
        self.pos += n;
        Ok(s)
    }

    /// Enter a container of `len` bytes: returns the saved (limit, soft) to restore.
    fn enter(&mut self, len: u32, tag: Tag) -> Result<(usize, bool), PErr> {
        let end = self
            .pos
            .checked_add(len as usize)
            .ok_or_else(|| self.malformed(Some(tag), "length overflow"))?;
        if end > self.limit {
            if self.soft {
                return Err(PErr::Incomplete);
            }
            return Err(self.malformed(Some(tag), "length runs past the end of its container"));
        }
        let saved = (self.limit, self.soft);
        self.limit = end;
        self.soft = false;
        Ok(saved)
    }

    fn leave(&mut self, saved: (usize, bool)) {
        self.limit = saved.0;
        self.soft = saved.1;
    }

    /// Parse one whole element (with any nested sequences).
    pub fn element(&mut self, syntax: Syntax, depth: usize) -> Result<Element, PErr> {
        let start = self.pos;
        let h = self.header(syntax)?;
        if h.tag.group() == 0xFFFE {
            self.pos = start;
            return Err(self.malformed(
                Some(h.tag),
                "item or delimiter where an element was expected",
            ));
        }
        let dict_vr = || implicit_vr(h.tag);
        let vr = h.vr.unwrap_or_else(dict_vr);
        let undefined = h.len == UNDEFINED;
        // Sequences: SQ; UN of undefined length (PS3.5 6.2.2: implicit VR LE inside); an
        // undefined length in implicit VR (other than pixel data); and a public UN of defined
        // length that the dictionary knows as SQ (a re-encoded sequence, implicit VR LE).
        let public_un_sq = vr == VR::UN && h.tag.group() % 2 == 0 && dict_vr() == VR::SQ;
        let is_seq = vr == VR::SQ
            || (vr == VR::UN && undefined)
            || (!syntax.explicit() && undefined && !is_bulk_pixel_tag(h.tag))
            || public_un_sq;
        if is_seq {
            let inner = if vr == VR::UN {
                Syntax::ImplicitLittle
            } else {
                syntax
            };
            if depth + 1 > MAX_DEPTH {
                return Err(PErr::Bad(ParseError::TooDeep { offset: self.off() }));
            }
            let items = self.items(h.len, h.tag, inner, depth + 1)?;
            return Ok(Element {
                tag: h.tag,
                vr: VR::SQ,
                value: Value::Items(items),
            });
        }
        if undefined {
            if matches!(vr, VR::OB | VR::OW) {
                let frags = self.fragments(syntax, h.tag)?;
                return Ok(Element {
                    tag: h.tag,
                    vr,
                    value: Value::Fragments(frags),
                });
            }
            return Err(self.malformed(Some(h.tag), format!("undefined length on VR {vr:?}")));
        }
        let v = self.take(h.len)?;
        Ok(Element {
            tag: h.tag,
            vr,
            value: Value::Bytes(v.to_vec()),
        })
    }

    fn items(
        &mut self,
        len: u32,
        tag: Tag,
        syntax: Syntax,
        depth: usize,
    ) -> Result<Vec<DataSet>, PErr> {
        let mut items = Vec::new();
        if len == UNDEFINED {
            loop {
                let h = self.header(syntax)?;
                match h.tag {
                    ITEM => items.push(self.item(h.len, syntax, depth)?),
                    SEQUENCE_DELIMITER => {
                        if h.len != 0 {
                            return Err(self.malformed(
                                Some(tag),
                                "sequence delimiter with a non-zero length",
                            ));
                        }
                        return Ok(items);
                    }
                    other => {
                        return Err(self.malformed(
                            Some(tag),
                            format!(
                                "{} inside a sequence where an item was expected",
                                tag_str(other)
                            ),
                        ))
                    }
                }
            }
        }
        let saved = self.enter(len, tag)?;
        while !self.at_end() {
            let h = self.header(syntax)?;
            if h.tag != ITEM {
                return Err(self.malformed(
                    Some(tag),
                    format!(
                        "{} inside a sequence where an item was expected",
                        tag_str(h.tag)
                    ),
                ));
            }
            items.push(self.item(h.len, syntax, depth)?);
        }
        self.leave(saved);
        Ok(items)
    }

    fn item(&mut self, len: u32, syntax: Syntax, depth: usize) -> Result<DataSet, PErr> {
        let mut ds = DataSet::default();
        if len == UNDEFINED {
            loop {
                let tag = self.peek_tag(syntax)?;
                if tag == ITEM_DELIMITER {
                    let h = self.header(syntax)?;
                    if h.len != 0 {
                        return Err(
                            self.malformed(Some(tag), "item delimiter with a non-zero length")
                        );
                    }
                    return Ok(ds);
                }
                if tag == SEQUENCE_DELIMITER || tag == ITEM {
                    return Err(self.malformed(Some(tag), "item not closed by an item delimiter"));
                }
                ds.elements.push(self.element(syntax, depth)?);
            }
        }
        let saved = self.enter(len, ITEM)?;
        while !self.at_end() {
            ds.elements.push(self.element(syntax, depth)?);
        }
        self.leave(saved);
        Ok(ds)
    }

    fn fragments(&mut self, syntax: Syntax, tag: Tag) -> Result<Vec<Vec<u8>>, PErr> {
        let mut out = Vec::new();
        loop {
            let h = self.header(syntax)?;
            match h.tag {
                ITEM if h.len != UNDEFINED => out.push(self.take(h.len)?.to_vec()),
                SEQUENCE_DELIMITER => return Ok(out),
                _ => return Err(self.malformed(Some(tag), "bad item in encapsulated fragments")),
            }
        }
    }
}

/// Parse a complete data set (no more bytes will come).
pub fn parse_dataset(buf: &[u8], syntax: Syntax) -> Result<DataSet, ParseError> {
    // A soft end: running out of bytes at the top level means the data set is truncated.
    let mut c = Cursor::new(buf, 0, true);
    let mut ds = DataSet::default();
    while !c.at_end() {
        match c.element(syntax, 0) {
            Ok(e) => ds.elements.push(e),
            Err(PErr::Bad(e)) => return Err(e),
            Err(PErr::Incomplete) => {
                return Err(ParseError::Truncated {
                    offset: c.pos as u64,
                })
            }
        }
    }
    Ok(ds)
}

fn put_u16(out: &mut Vec<u8>, v: u16, big: bool) {
    out.extend_from_slice(&if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

fn put_u32(out: &mut Vec<u8>, v: u32, big: bool) {
    out.extend_from_slice(&if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    });
}

fn header_len(vr: VR, syntax: Syntax) -> u64 {
    if syntax.explicit() && !long_form(vr) {
        8
    } else if syntax.explicit() {
        12
    } else {
        8
    }
}

/// Encoded length of an element's value (items included), or of the whole element.
fn value_len(e: &Element, syntax: Syntax) -> u64 {
    match &e.value {
        Value::Bytes(b) => b.len() as u64,
        Value::Items(items) => items.iter().map(|i| 8 + dataset_len(i, syntax)).sum(),
        Value::Fragments(f) => f.iter().map(|x| 8 + x.len() as u64).sum::<u64>() + 8,
    }
}

fn dataset_len(ds: &DataSet, syntax: Syntax) -> u64 {
    ds.elements
        .iter()
        .map(|e| header_len(e.vr, syntax) + value_len(e, syntax))
        .sum()
}

fn write_header(out: &mut Vec<u8>, tag: Tag, vr: VR, len: u32, syntax: Syntax) {
    let big = syntax.big();
    put_u16(out, tag.group(), big);
    put_u16(out, tag.element(), big);
    if syntax.explicit() {
        out.extend_from_slice(vr.to_string().as_bytes());
        if long_form(vr) {
            out.extend_from_slice(&[0, 0]);
            put_u32(out, len, big);
        } else {
            put_u16(out, len as u16, big);
        }
    } else {
        put_u32(out, len, big);
    }
}

fn write_item_header(out: &mut Vec<u8>, tag: Tag, len: u32, syntax: Syntax) {
    let big = syntax.big();
    put_u16(out, tag.group(), big);
    put_u16(out, tag.element(), big);
    put_u32(out, len, big);
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

/// Encode elements (defined lengths everywhere except encapsulated fragments).
pub fn encode_elements(
    elements: &[Element],
    syntax: Syntax,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for e in elements {
        encode_element(e, syntax, out)?;
    }
    Ok(())
}

fn encode_element(e: &Element, syntax: Syntax, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match &e.value {
        Value::Bytes(b) => {
            if syntax.explicit() && !long_form(e.vr) && b.len() > 0xFFFF {
                return Err(EncodeError::ValueTooLong {
                    tag: tag_str(e.tag),
                    vr: e.vr,
                    len: b.len(),
                });
            }
            let len = checked_len(e.tag, b.len() as u64)?;
            write_header(out, e.tag, e.vr, len, syntax);
            out.extend_from_slice(b);
        }
        Value::Items(items) => {
            let len = checked_len(e.tag, value_len(e, syntax))?;
            write_header(out, e.tag, VR::SQ, len, syntax);
            for item in items {
                let ilen = checked_len(ITEM, dataset_len(item, syntax))?;
                write_item_header(out, ITEM, ilen, syntax);
                encode_elements(&item.elements, syntax, out)?;
            }
        }
        Value::Fragments(frags) => {
            write_header(out, e.tag, e.vr, UNDEFINED, syntax);
            for f in frags {
                let flen = checked_len(ITEM, f.len() as u64)?;
                write_item_header(out, ITEM, flen, syntax);
                out.extend_from_slice(f);
            }
            write_item_header(out, SEQUENCE_DELIMITER, 0, syntax);
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
            ],
        }
    }

    #[test]
    fn round_trip_all_syntaxes() {
        for syntax in [
            Syntax::ImplicitLittle,
            Syntax::ExplicitLittle,
            Syntax::ExplicitBig,
        ] {
            let ds = sample();
            let mut out = Vec::new();
            encode_elements(&ds.elements, syntax, &mut out).unwrap();
            let back = parse_dataset(&out, syntax).unwrap();
            assert_eq!(back, ds, "{syntax:?}");
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
        b.extend_from_slice(&0x0010u16.to_le_bytes());
        b.extend_from_slice(&0x0010u16.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(b"X^Y ");
        item(&mut b, 0xE00D, 0);
        item(&mut b, 0xE0DD, 0);
        let ds = parse_dataset(&b, Syntax::ExplicitLittle).unwrap();
        assert_eq!(ds.elements.len(), 2);
        let Value::Items(items) = &ds.elements[1].value else {
            panic!()
        };
        assert_eq!(ds.elements[1].vr, VR::SQ);
        assert_eq!(items[0].elements[0].vr, VR::PN);
        assert_eq!(items[0].text(Tag(0x0010, 0x0010)), Some(&b"X^Y"[..]));
    }

    #[test]
    fn malformed_inputs_are_errors() {
        // Unknown VR.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0010, 0x0010, b"ZZ", 2);
        b.extend_from_slice(b"AB");
        assert!(matches!(
            parse_dataset(&b, Syntax::ExplicitLittle),
            Err(ParseError::UnknownVr { .. })
        ));
        // An item that overruns its sequence.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", 16);
        item(&mut b, 0xE000, 100);
        b.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            parse_dataset(&b, Syntax::ExplicitLittle),
            Err(ParseError::Malformed { .. })
        ));
        // A sequence never closed.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
        item(&mut b, 0xE000, UNDEFINED);
        assert!(matches!(
            parse_dataset(&b, Syntax::ExplicitLittle),
            Err(ParseError::Truncated { .. })
        ));
        // An element where an item must be.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0008, 0x1140, b"SQ", UNDEFINED);
        hdr_ex(&mut b, 0x0008, 0x1155, b"UI", 2);
        b.extend_from_slice(b"1\0");
        assert!(matches!(
            parse_dataset(&b, Syntax::ExplicitLittle),
            Err(ParseError::Malformed { .. })
        ));
        // A stray item delimiter at top level.
        let mut b = Vec::new();
        item(&mut b, 0xE00D, 0);
        assert!(parse_dataset(&b, Syntax::ExplicitLittle).is_err());
        // Undefined length on a text VR.
        let mut b = Vec::new();
        hdr_ex(&mut b, 0x0010, 0x4000, b"UT", UNDEFINED);
        assert!(parse_dataset(&b, Syntax::ExplicitLittle).is_err());
    }

    #[test]
    fn nesting_limit() {
        let mut ds = DataSet::default();
        for _ in 0..(MAX_DEPTH + 2) {
            ds = DataSet {
                elements: vec![Element {
                    tag: Tag(0x0040, 0xA730),
                    vr: VR::SQ,
                    value: Value::Items(vec![ds]),
                }],
            };
        }
        let mut out = Vec::new();
        encode_elements(&ds.elements, Syntax::ExplicitLittle, &mut out).unwrap();
        assert!(matches!(
            parse_dataset(&out, Syntax::ExplicitLittle),
            Err(ParseError::TooDeep { .. })
        ));
    }

    #[test]
    fn incomplete_is_distinguished_from_bad() {
        let mut out = Vec::new();
        encode_elements(&sample().elements, Syntax::ExplicitLittle, &mut out).unwrap();
        for cut in 1..out.len() {
            let mut c = Cursor::new(&out[..cut], 0, true);
            let mut n = 0;
            loop {
                match c.element(Syntax::ExplicitLittle, 0) {
                    Ok(_) => n += 1,
                    Err(PErr::Incomplete) => break,
                    Err(PErr::Bad(e)) => panic!("cut {cut}: {e}"),
                }
                if c.at_end() {
                    break;
                }
            }
            assert!(n <= 4);
        }
    }

    #[test]
    fn transfer_syntaxes() {
        assert_eq!(
            TransferSyntax::from_uid("1.2.840.10008.1.2\0")
                .unwrap()
                .syntax,
            Syntax::ImplicitLittle
        );
        assert!(
            TransferSyntax::from_uid("1.2.840.10008.1.2.1.99")
                .unwrap()
                .deflated
        );
        assert_eq!(
            TransferSyntax::from_uid("1.2.840.10008.1.2.4.50")
                .unwrap()
                .syntax,
            Syntax::ExplicitLittle
        );
        assert!(TransferSyntax::from_uid("1.3.6.1.4.1.5962.300.1").is_none());
    }

    #[test]
    fn implicit_vr_lookup() {
        assert_eq!(implicit_vr(Tag(0x0010, 0x0010)), VR::PN);
        assert_eq!(implicit_vr(Tag(0x0008, 0x1140)), VR::SQ);
        assert_eq!(implicit_vr(Tag(0x0009, 0x0010)), VR::LO);
        assert_eq!(implicit_vr(Tag(0x0009, 0x1010)), VR::UN);
        assert_eq!(implicit_vr(Tag(0x6002, 0x3000)), VR::OW);
        assert_eq!(implicit_vr(Tag(0x0028, 0x0000)), VR::UL);
    }
}
