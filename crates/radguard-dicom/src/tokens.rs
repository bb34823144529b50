//! The one DICOM data-set grammar: a push tokenizer over the data-set encoding (PS3.5 §7).
//!
//! Every reader of data-set bytes in Radguard — the gateway's head sniffer, the ledger's
//! fingerprint, the media scanner, de-identification, the vault — consumes these tokens, so no
//! two of them can read the same bytes differently (a parser differential is a bypass: the
//! inspector sees one data set, the archive another).
//!
//! The tokenizer does no I/O and holds bounded state: at most one element header (12 bytes) and
//! one frame per open sequence, item or encapsulated pixel data element (capped by
//! [`Limits::max_depth`]). Values are never buffered: they come out as borrowed chunks of the
//! input, so a 4 GiB pixel data element costs nothing. Feeding the same bytes whole or split
//! anywhere yields the same tokens (value chunks aside, which follow the input's splits).
//!
//! Errors are tokens with the byte offset where they were found. Structural errors are fatal:
//! after [`Token::Error`] the rest of the input comes out as [`Token::Raw`] (the media scanner
//! keeps scanning it for payloads; the gateway stops). Irregularities that leave the structure
//! readable ([`Anomaly`]: elements out of order or repeated, odd lengths) are reported and the
//! walk goes on; what to do with them is the consumer's decision.
//!
//! Grammar (PS3.5 §7.1–7.5, §A.4):
//! - an element header is a tag, a VR (explicit VR; looked up in the dictionary for implicit
//!   VR), and a 16- or 32-bit length (PS3.5 §7.1.2: OB OD OF OL OV OW SQ SV UC UN UR UT UV use
//!   the 32-bit form);
//! - a sequence (VR SQ, or any implicit-VR element of undefined length, or an implicit-VR
//!   element the dictionary calls SQ) holds items; an item holds a data set; both may have a
//!   defined length (their content must end exactly there) or an undefined length (closed by
//!   an Item / Sequence Delimitation Item);
//! - UN of undefined length holds a sequence encoded in Implicit VR Little Endian (§6.2.2);
//! - Pixel Data (7FE0,0010) of undefined length is encapsulated: items of defined length
//!   (fragments, the first the Basic Offset Table) up to a Sequence Delimitation Item (§A.4).

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::limits::Limits;
use crate::ts::Encoding;

/// The undefined length (PS3.5 §7.1.1).
pub const UNDEFINED: u32 = 0xFFFF_FFFF;
pub const ITEM: Tag = Tag(0xFFFE, 0xE000);
pub const ITEM_DELIMITER: Tag = Tag(0xFFFE, 0xE00D);
pub const SEQUENCE_DELIMITER: Tag = Tag(0xFFFE, 0xE0DD);
/// (7FE0,0010) Pixel Data.
pub const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
/// (7FE0,0008) Float Pixel Data.
pub const FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0008);
/// (7FE0,0009) Double Float Pixel Data.
pub const DOUBLE_FLOAT_PIXEL_DATA: Tag = Tag(0x7FE0, 0x0009);

/// Whether a tag is one of the three pixel data elements.
pub fn is_pixel_tag(tag: Tag) -> bool {
    tag == PIXEL_DATA || tag == FLOAT_PIXEL_DATA || tag == DOUBLE_FLOAT_PIXEL_DATA
}

/// Explicit VR encodings whose element header has 2 reserved bytes and a 4-byte length
/// (PS3.5 §7.1.2); every other VR has a 2-byte length.
pub fn long_form(vr: VR) -> bool {
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

/// The VR of a tag in an implicit VR data set (PS3.5 §7.1.3): group lengths are UL, private
/// creators LO, standard elements as the dictionary says (US for the US/SS ones, OW for the
/// OB/OW ones), everything else UN.
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

/// A value length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Length {
    Defined(u32),
    Undefined,
}

impl Length {
    fn from_raw(v: u32) -> Length {
        if v == UNDEFINED {
            Length::Undefined
        } else {
            Length::Defined(v)
        }
    }
    pub fn defined(self) -> Option<u32> {
        match self {
            Length::Defined(n) => Some(n),
            Length::Undefined => None,
        }
    }
}

/// What follows an element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementKind {
    /// Value chunks, then [`Token::ValueEnd`].
    Value,
    /// Items ([`Token::ItemStart`] … [`Token::ItemEnd`]), then [`Token::SequenceEnd`].
    Sequence,
    /// Encapsulated pixel data: fragments ([`Token::Fragment`], value chunks,
    /// [`Token::ValueEnd`]), then [`Token::SequenceEnd`].
    Encapsulated,
}

/// A data element header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub tag: Tag,
    /// As written (explicit VR) or as the dictionary says ([`implicit_vr`]); an implicit VR
    /// element read as a sequence is SQ.
    pub vr: VR,
    pub length: Length,
    pub kind: ElementKind,
    /// Offset of the header's first byte.
    pub offset: u64,
    /// 8 or 12.
    pub header_len: u8,
    /// Sequence nesting of the data set holding the element (0 at the top level).
    pub depth: usize,
    /// Encoding of the data set holding the element. For a sequence, its items are encoded in
    /// `item_encoding` (Implicit VR Little Endian inside UN of undefined length).
    pub encoding: Encoding,
    pub item_encoding: Encoding,
}

/// What the tokenizer reports, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A data element header.
    Element(Header),
    /// The next bytes of the current element's or fragment's value.
    Value(&'a [u8]),
    /// The current value (element or fragment) is complete.
    ValueEnd,
    /// An item of the current sequence begins at `offset`.
    ItemStart { offset: u64, length: Length },
    /// The current item ended (its defined length reached, or its delimiter at `offset`).
    ItemEnd { offset: u64 },
    /// The current sequence or encapsulated pixel data ended.
    SequenceEnd { offset: u64 },
    /// A fragment of encapsulated pixel data (value chunks and [`Token::ValueEnd`] follow).
    Fragment { offset: u64, length: u32 },
    /// A readable irregularity; the walk goes on.
    Anomaly(Anomaly),
    /// A structural error; everything after it is [`Token::Raw`].
    Error(GrammarError),
    /// Bytes after a structural error, not parsed.
    Raw(&'a [u8]),
}

/// Irregularities that leave the structure readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnomalyKind {
    #[error("element {} follows {}: tags out of order (PS3.5 §7.1)", TagStr(*tag), TagStr(*previous))]
    OutOfOrder { tag: Tag, previous: Tag },
    /// The same tag as the element before. A repetition that is not adjacent is necessarily
    /// reported as [`AnomalyKind::OutOfOrder`] (the tokenizer keeps no set of seen tags): a
    /// consumer that must not see an element twice refuses both.
    #[error("element {} appears twice in one data set (PS3.5 §7.1)", TagStr(*tag))]
    Duplicate { tag: Tag },
    #[error("element {} has odd length {length} (PS3.5 §7.1.1)", TagStr(*tag))]
    OddLength { tag: Tag, length: u32 },
    #[error("delimiter {} has length {length}, not 0 (PS3.5 §7.5)", TagStr(*tag))]
    DelimiterLength { tag: Tag, length: u32 },
    /// The two reserved bytes of a 32-bit-length explicit VR header are not zero: a reader
    /// that takes them for part of the length, or of a 16-bit length, reads another data set.
    #[error("element {} has reserved header bytes {value:#06x}, not 0000 (PS3.5 §7.1.2)", TagStr(*tag))]
    ReservedBytes { tag: Tag, value: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct Anomaly {
    pub offset: u64,
    pub kind: AnomalyKind,
}

/// Structural errors: the bytes after them cannot be read as this data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("element {} has no valid VR ({:?}) in an explicit VR data set", TagStr(*tag), Bytes2(*vr))]
    UnknownVr { tag: Tag, vr: [u8; 2] },
    #[error("element {} ({vr:?}) has undefined length; only SQ, UN and encapsulated Pixel Data may (PS3.5 §7.1.3)", TagStr(*tag))]
    UndefinedLength { tag: Tag, vr: VR },
    #[error("unexpected {} in a data set (PS3.5 §7.5)", TagStr(*tag))]
    DelimiterInDataSet { tag: Tag },
    #[error("{} where a sequence item or delimiter belongs (PS3.5 §7.5)", TagStr(*tag))]
    NotAnItem { tag: Tag },
    #[error("{} where a pixel data fragment or delimiter belongs (PS3.5 §A.4)", TagStr(*tag))]
    NotAFragment { tag: Tag },
    #[error("pixel data fragment of undefined length (PS3.5 §A.4)")]
    UndefinedFragment,
    #[error("{} ends at byte {end}, past the end of its container at byte {limit}", TagStr(*tag))]
    Overrun { tag: Tag, end: u64, limit: u64 },
    #[error("{} claims {length} bytes, more than the {available} left", TagStr(*tag))]
    PastEnd {
        tag: Tag,
        length: u32,
        available: u64,
    },
    #[error("sequences nested deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("{} has length {length}, over the limit of {limit}", TagStr(*tag))]
    ValueTooLong { tag: Tag, length: u32, limit: u32 },
    #[error("data set larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("data set with more than {limit} elements")]
    TooManyElements { limit: u64 },
    #[error("data ends inside {0}")]
    Truncated(Inside),
    #[error("{0}")]
    Inflate(crate::inflate::InflateError),
}

/// Where a truncated data set ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inside {
    Header,
    Value,
    Sequence,
    Item,
    Fragments,
}

impl std::fmt::Display for Inside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Inside::Header => "an element header",
            Inside::Value => "an element value",
            Inside::Sequence => "a sequence",
            Inside::Item => "a sequence item",
            Inside::Fragments => "encapsulated pixel data",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (at byte {offset})")]
pub struct GrammarError {
    pub offset: u64,
    pub kind: ErrorKind,
}

/// `(GGGG,EEEE)`.
#[derive(Debug, Clone, Copy)]
pub struct TagStr(pub Tag);

impl std::fmt::Display for TagStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({:04X},{:04X})", self.0.group(), self.0.element())
    }
}

struct Bytes2([u8; 2]);

impl std::fmt::Debug for Bytes2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}",
            String::from_utf8_lossy(&self.0).escape_debug().to_string()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// The top-level data set, or the data set inside an item.
    DataSet {
        item: bool,
    },
    Sequence,
    Fragments,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: FrameKind,
    /// Encoding of what the frame holds.
    enc: Encoding,
    /// Where the frame ends, for defined lengths.
    end: Option<u64>,
    /// Where the innermost defined-length container around (or at) this frame ends.
    limit: Option<u64>,
    /// Last element tag of a data set frame (order checks).
    last_tag: Option<Tag>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    /// Value bytes of an element or fragment still to come.
    Value(u64),
    /// After a structural error.
    Raw,
}

/// The push tokenizer. Feed chunks with [`Tokenizer::tokens`] and drain each iterator; call
/// [`Tokenizer::finish`] at the end of the data set.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    limits: Limits,
    top: Frame,
    stack: Vec<Frame>,
    sequences: usize,
    state: State,
    hdr: [u8; 12],
    hdr_len: usize,
    offset: u64,
    total: Option<u64>,
    /// Elements read so far, at every level.
    elements: u64,
    /// Tokens decided with the one returned, to come next (a stack: last pushed, first out).
    pending: Vec<Token<'static>>,
    error: Option<GrammarError>,
}

impl Tokenizer {
    pub fn new(encoding: Encoding, limits: Limits) -> Tokenizer {
        Tokenizer {
            limits,
            top: Frame {
                kind: FrameKind::DataSet { item: false },
                enc: encoding,
                end: None,
                limit: None,
                last_tag: None,
            },
            stack: Vec::new(),
            sequences: 0,
            state: State::Header,
            hdr: [0; 12],
            hdr_len: 0,
            offset: 0,
            total: None,
            elements: 0,
            pending: Vec::new(),
            error: None,
        }
    }

    /// Tells the tokenizer how many bytes the data set has in all (a file's size): a length
    /// that claims more than is left is an error at once, not a truncation at the end.
    pub fn with_total(mut self, total: u64) -> Tokenizer {
        self.total = Some(total);
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Sequence nesting at the current position.
    pub fn depth(&self) -> usize {
        self.sequences
    }

    /// The structural error, once one was found.
    pub fn error(&self) -> Option<&GrammarError> {
        self.error.as_ref()
    }

    /// True between two top-level elements (a clean place for the data set to end).
    pub fn at_top_level_boundary(&self) -> bool {
        self.stack.is_empty() && self.state == State::Header && self.hdr_len == 0
    }

    /// The tokens of the next chunk. Drain the iterator before feeding the next chunk: bytes
    /// it has not reached are not consumed.
    pub fn tokens<'t, 'a>(&'t mut self, input: &'a [u8]) -> Tokens<'t, 'a> {
        Tokens { tz: self, input }
    }

    /// Feeds a chunk and hands every token to `f`.
    pub fn feed(&mut self, input: &[u8], mut f: impl FnMut(Token<'_>)) {
        for t in self.tokens(input) {
            f(t);
        }
    }

    /// Checks that the data set ended cleanly. The structural error, if one was found, or
    /// [`ErrorKind::Truncated`] when the input stopped inside a header, a value or an open
    /// sequence or item.
    pub fn finish(&self) -> Result<(), GrammarError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let inside = match (self.state, self.stack.last()) {
            (State::Value(n), _) if n > 0 => Some(Inside::Value),
            (State::Value(_), _) => None,
            (_, _) if self.hdr_len > 0 => Some(Inside::Header),
            (_, Some(f)) => Some(match f.kind {
                FrameKind::DataSet { .. } => Inside::Item,
                FrameKind::Sequence => Inside::Sequence,
                FrameKind::Fragments => Inside::Fragments,
            }),
            (_, None) => None,
        };
        match inside {
            Some(i) => Err(GrammarError {
                offset: self.offset,
                kind: ErrorKind::Truncated(i),
            }),
            None => Ok(()),
        }
    }

    fn frame(&self) -> &Frame {
        self.stack.last().unwrap_or(&self.top)
    }

    fn frame_mut(&mut self) -> &mut Frame {
        match self.stack.last_mut() {
            Some(f) => f,
            None => &mut self.top,
        }
    }

    fn fail(&mut self, offset: u64, kind: ErrorKind) -> Token<'static> {
        let e = GrammarError { offset, kind };
        self.error = Some(e);
        self.state = State::Raw;
        self.hdr_len = 0;
        Token::Error(e)
    }

    /// How many header bytes are needed, given what has been read so far.
    fn header_needed(&self) -> usize {
        if self.hdr_len < 4 {
            return 4;
        }
        let f = self.frame();
        let [g0, g1, ..] = self.hdr;
        let group = f.enc.u16([g0, g1]);
        if !matches!(f.kind, FrameKind::DataSet { .. }) || group == 0xFFFE || !f.enc.explicit() {
            return 8;
        }
        if self.hdr_len < 6 {
            return 6;
        }
        let [_, _, _, _, v0, v1, ..] = self.hdr;
        match VR::from_binary([v0, v1]) {
            Some(vr) if long_form(vr) => 12,
            Some(_) => 8,
            None => 6,
        }
    }

    /// Pops defined-length frames that end here.
    fn close_defined(&mut self) -> Option<Token<'static>> {
        let f = self.stack.last()?;
        if f.end != Some(self.offset) {
            return None;
        }
        let kind = f.kind;
        self.stack.pop();
        Some(match kind {
            FrameKind::Sequence => {
                self.sequences = self.sequences.saturating_sub(1);
                Token::SequenceEnd {
                    offset: self.offset,
                }
            }
            _ => Token::ItemEnd {
                offset: self.offset,
            },
        })
    }

    fn push(&mut self, kind: FrameKind, enc: Encoding, end: Option<u64>) {
        let limit = match (end, self.frame().limit) {
            (Some(e), Some(l)) => Some(e.min(l)),
            (Some(e), None) => Some(e),
            (None, l) => l,
        };
        if kind == FrameKind::Sequence {
            self.sequences += 1;
        }
        self.stack.push(Frame {
            kind,
            enc,
            end,
            limit,
            last_tag: None,
        });
    }

    /// Checks that `len` bytes from `from` fit the container, the total and the limits.
    fn fits(&self, tag: Tag, from: u64, len: u32) -> Result<(), ErrorKind> {
        if len > self.limits.max_value_length {
            return Err(ErrorKind::ValueTooLong {
                tag,
                length: len,
                limit: self.limits.max_value_length,
            });
        }
        let end = from.saturating_add(u64::from(len));
        if let Some(limit) = self.frame().limit {
            if end > limit {
                return Err(ErrorKind::Overrun { tag, end, limit });
            }
        }
        if let Some(total) = self.total {
            if end > total {
                return Err(ErrorKind::PastEnd {
                    tag,
                    length: len,
                    available: total.saturating_sub(from),
                });
            }
        }
        if end > self.limits.max_total {
            return Err(ErrorKind::TooLarge {
                limit: self.limits.max_total,
            });
        }
        Ok(())
    }

    /// A complete header is in `self.hdr`: decide what it is.
    fn on_header(&mut self) -> Token<'static> {
        let n = self.hdr_len;
        self.hdr_len = 0;
        let start = self.offset.saturating_sub(n as u64);
        let f = *self.frame();
        let enc = f.enc;
        let [g0, g1, e0, e1, b4, b5, b6, b7, b8, b9, b10, b11] = self.hdr;
        let tag = Tag(enc.u16([g0, g1]), enc.u16([e0, e1]));
        let len4 = enc.u32([b4, b5, b6, b7]);
        if let Some(limit) = f.limit {
            if self.offset > limit {
                return self.fail(
                    start,
                    ErrorKind::Overrun {
                        tag,
                        end: self.offset,
                        limit,
                    },
                );
            }
        }
        match f.kind {
            FrameKind::Sequence => self.in_sequence(f, tag, len4, start),
            FrameKind::Fragments => self.in_fragments(tag, len4, start),
            FrameKind::DataSet { item } => {
                if tag.group() == 0xFFFE {
                    if item && f.end.is_none() && tag == ITEM_DELIMITER {
                        self.stack.pop();
                        let end = Token::ItemEnd { offset: start };
                        if len4 != 0 {
                            self.pending.push(end);
                            return Token::Anomaly(Anomaly {
                                offset: start,
                                kind: AnomalyKind::DelimiterLength { tag, length: len4 },
                            });
                        }
                        return end;
                    }
                    return self.fail(start, ErrorKind::DelimiterInDataSet { tag });
                }
                let (vr, raw_len) = if enc.explicit() {
                    let Some(vr) = VR::from_binary([b4, b5]) else {
                        return self.fail(start, ErrorKind::UnknownVr { tag, vr: [b4, b5] });
                    };
                    if n == 12 {
                        (vr, enc.u32([b8, b9, b10, b11]))
                    } else {
                        (vr, u32::from(enc.u16([b6, b7])))
                    }
                } else {
                    (implicit_vr(tag), len4)
                };
                self.element(f, tag, vr, Length::from_raw(raw_len), start, n)
            }
        }
    }

    fn element(
        &mut self,
        f: Frame,
        tag: Tag,
        vr: VR,
        length: Length,
        start: u64,
        n: usize,
    ) -> Token<'static> {
        let enc = f.enc;
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            let limit = self.limits.max_elements;
            return self.fail(start, ErrorKind::TooManyElements { limit });
        }
        // The header is still in `self.hdr`: bytes 6..8 are reserved in the long form.
        let [_, _, _, _, _, _, r0, r1, ..] = self.hdr;
        let reserved = (n == 12 && [r0, r1] != [0, 0]).then(|| enc.u16([r0, r1]));
        let anomaly = match f.last_tag {
            Some(prev) if tag == prev => Some(AnomalyKind::Duplicate { tag }),
            Some(prev) if tag < prev => Some(AnomalyKind::OutOfOrder {
                tag,
                previous: prev,
            }),
            _ => None,
        };
        self.frame_mut().last_tag = Some(tag.max(f.last_tag.unwrap_or(tag)));
        let mut header = Header {
            tag,
            vr,
            length,
            kind: ElementKind::Value,
            offset: start,
            header_len: n as u8,
            depth: self.sequences,
            encoding: enc,
            item_encoding: enc,
        };
        match length {
            Length::Undefined => {
                if tag == PIXEL_DATA && vr != VR::SQ {
                    header.kind = ElementKind::Encapsulated;
                    self.push(FrameKind::Fragments, enc, None);
                } else if vr == VR::SQ || vr == VR::UN || !enc.explicit() {
                    if self.sequences >= self.limits.max_depth {
                        return self.fail(
                            start,
                            ErrorKind::TooDeep {
                                limit: self.limits.max_depth,
                            },
                        );
                    }
                    header.kind = ElementKind::Sequence;
                    if vr == VR::UN && enc.explicit() {
                        // PS3.5 §6.2.2: UN of undefined length holds Implicit VR LE.
                        header.item_encoding = Encoding::ImplicitLittle;
                    } else {
                        header.vr = VR::SQ;
                    }
                    self.push(FrameKind::Sequence, header.item_encoding, None);
                } else {
                    return self.fail(start, ErrorKind::UndefinedLength { tag, vr });
                }
            }
            Length::Defined(len) => {
                if let Err(kind) = self.fits(tag, self.offset, len) {
                    return self.fail(start, kind);
                }
                if vr == VR::SQ {
                    if self.sequences >= self.limits.max_depth {
                        return self.fail(
                            start,
                            ErrorKind::TooDeep {
                                limit: self.limits.max_depth,
                            },
                        );
                    }
                    header.kind = ElementKind::Sequence;
                    self.push(FrameKind::Sequence, enc, Some(self.offset + u64::from(len)));
                } else {
                    self.state = State::Value(u64::from(len));
                }
            }
        }
        let odd = match length {
            Length::Defined(l) if l % 2 == 1 && header.kind == ElementKind::Value => {
                Some(AnomalyKind::OddLength { tag, length: l })
            }
            _ => None,
        };
        // The odd length of an out-of-order element is reported with it only once.
        let first = anomaly.or(odd);
        let reserved = reserved.map(|value| AnomalyKind::ReservedBytes { tag, value });
        self.pending.push(Token::Element(header));
        match (first, reserved) {
            (None, None) => self.pending.pop().unwrap_or(Token::Element(header)),
            (Some(a), None) | (None, Some(a)) => Token::Anomaly(Anomaly {
                offset: start,
                kind: a,
            }),
            (Some(a), Some(r)) => {
                self.pending.push(Token::Anomaly(Anomaly {
                    offset: start,
                    kind: r,
                }));
                Token::Anomaly(Anomaly {
                    offset: start,
                    kind: a,
                })
            }
        }
    }

    fn in_sequence(&mut self, f: Frame, tag: Tag, len: u32, start: u64) -> Token<'static> {
        match tag {
            ITEM if len == UNDEFINED => {
                self.push(FrameKind::DataSet { item: true }, f.enc, None);
                Token::ItemStart {
                    offset: start,
                    length: Length::Undefined,
                }
            }
            ITEM => {
                if let Err(kind) = self.fits(tag, self.offset, len) {
                    return self.fail(start, kind);
                }
                self.push(
                    FrameKind::DataSet { item: true },
                    f.enc,
                    Some(self.offset + u64::from(len)),
                );
                Token::ItemStart {
                    offset: start,
                    length: Length::Defined(len),
                }
            }
            SEQUENCE_DELIMITER if f.end.is_none() => {
                self.stack.pop();
                self.sequences = self.sequences.saturating_sub(1);
                let end = Token::SequenceEnd { offset: start };
                if len != 0 {
                    self.pending.push(end);
                    return Token::Anomaly(Anomaly {
                        offset: start,
                        kind: AnomalyKind::DelimiterLength { tag, length: len },
                    });
                }
                end
            }
            _ => self.fail(start, ErrorKind::NotAnItem { tag }),
        }
    }

    fn in_fragments(&mut self, tag: Tag, len: u32, start: u64) -> Token<'static> {
        match tag {
            ITEM if len == UNDEFINED => self.fail(start, ErrorKind::UndefinedFragment),
            ITEM => {
                if let Err(kind) = self.fits(tag, self.offset, len) {
                    return self.fail(start, kind);
                }
                self.state = State::Value(u64::from(len));
                Token::Fragment {
                    offset: start,
                    length: len,
                }
            }
            SEQUENCE_DELIMITER => {
                self.stack.pop();
                let end = Token::SequenceEnd { offset: start };
                if len != 0 {
                    self.pending.push(end);
                    return Token::Anomaly(Anomaly {
                        offset: start,
                        kind: AnomalyKind::DelimiterLength { tag, length: len },
                    });
                }
                end
            }
            _ => self.fail(start, ErrorKind::NotAFragment { tag }),
        }
    }
}

/// The tokens of one chunk (see [`Tokenizer::tokens`]).
pub struct Tokens<'t, 'a> {
    tz: &'t mut Tokenizer,
    input: &'a [u8],
}

impl<'a> Iterator for Tokens<'_, 'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if let Some(t) = self.tz.pending.pop() {
            return Some(t);
        }
        let tz = &mut *self.tz;
        loop {
            match tz.state {
                State::Raw => {
                    if self.input.is_empty() {
                        return None;
                    }
                    let raw = std::mem::take(&mut self.input);
                    tz.offset += raw.len() as u64;
                    return Some(Token::Raw(raw));
                }
                State::Value(0) => {
                    tz.state = State::Header;
                    return Some(Token::ValueEnd);
                }
                State::Value(left) => {
                    if self.input.is_empty() {
                        return None;
                    }
                    let n = (self.input.len() as u64).min(left) as usize;
                    let (chunk, rest) = self.input.split_at(n);
                    self.input = rest;
                    tz.offset += n as u64;
                    tz.state = State::Value(left - n as u64);
                    return Some(Token::Value(chunk));
                }
                State::Header => {
                    if tz.hdr_len == 0 {
                        if let Some(t) = tz.close_defined() {
                            return Some(t);
                        }
                    }
                    if self.input.is_empty() {
                        return None;
                    }
                    let need = tz.header_needed();
                    let want = need.saturating_sub(tz.hdr_len).min(self.input.len());
                    let (head, rest) = self.input.split_at(want);
                    if let Some(dst) = tz.hdr.get_mut(tz.hdr_len..tz.hdr_len + want) {
                        dst.copy_from_slice(head);
                    }
                    tz.hdr_len += want;
                    tz.offset += want as u64;
                    self.input = rest;
                    if tz.hdr_len < need {
                        continue;
                    }
                    // The needed size can grow once the tag or VR is visible.
                    if tz.header_needed() > tz.hdr_len {
                        continue;
                    }
                    return Some(tz.on_header());
                }
            }
        }
    }
}

/// A token with its value bytes owned, chunks merged: what the tokenizer says about a data set
/// whatever the input's splits. For differential tests and fuzzing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedToken {
    Element(Header),
    Value(Vec<u8>),
    ValueEnd,
    ItemStart { offset: u64, length: Length },
    ItemEnd { offset: u64 },
    SequenceEnd { offset: u64 },
    Fragment { offset: u64, length: u32 },
    Anomaly(Anomaly),
    Error(GrammarError),
    Raw(Vec<u8>),
}

impl From<Token<'_>> for OwnedToken {
    fn from(t: Token<'_>) -> OwnedToken {
        match t {
            Token::Element(h) => OwnedToken::Element(h),
            Token::Value(b) => OwnedToken::Value(b.to_vec()),
            Token::ValueEnd => OwnedToken::ValueEnd,
            Token::ItemStart { offset, length } => OwnedToken::ItemStart { offset, length },
            Token::ItemEnd { offset } => OwnedToken::ItemEnd { offset },
            Token::SequenceEnd { offset } => OwnedToken::SequenceEnd { offset },
            Token::Fragment { offset, length } => OwnedToken::Fragment { offset, length },
            Token::Anomaly(a) => OwnedToken::Anomaly(a),
            Token::Error(e) => OwnedToken::Error(e),
            Token::Raw(b) => OwnedToken::Raw(b.to_vec()),
        }
    }
}

/// Tokenizes `chunks` in order and returns the tokens with value and raw chunks merged, and
/// the result of [`Tokenizer::finish`].
pub fn tokenize_chunks<'c>(
    mut tz: Tokenizer,
    chunks: impl IntoIterator<Item = &'c [u8]>,
) -> (Vec<OwnedToken>, Result<(), GrammarError>) {
    let mut out: Vec<OwnedToken> = Vec::new();
    for chunk in chunks {
        for t in tz.tokens(chunk) {
            match (t, out.last_mut()) {
                (Token::Value(b), Some(OwnedToken::Value(v))) => v.extend_from_slice(b),
                (Token::Raw(b), Some(OwnedToken::Raw(v))) => v.extend_from_slice(b),
                (t, _) => out.push(t.into()),
            }
        }
    }
    let end = tz.finish();
    (out, end)
}
