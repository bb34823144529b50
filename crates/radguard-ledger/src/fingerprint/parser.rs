//! A push parser for a DICOM data set that arrives in chunks of any size.
//!
//! It holds at most one element header (12 bytes), the value of an attribute the sink asked
//! for (capped), and a stack of open undefined-length sequences and items (capped). Everything
//! else is skipped by counting bytes, so memory does not depend on the data set's size, and no
//! declared length is ever used to allocate. Nested content (sequence items, icon images) is
//! walked only far enough to find where it ends. Top-level Pixel Data is handed to the sink as
//! native value bytes, or item by item when encapsulated; anything after it is ignored.

use super::ts::Encoding;
use super::{split_at_most, FingerprintError};
use radguard_dicom::head::long_form;

/// Longest value of a fingerprinted attribute the parser collects (their VRs allow far less).
pub const MAX_ATTRIBUTE_VALUE: u32 = 64 * 1024;
/// Deepest nesting of undefined-length sequences and items.
pub const MAX_DEPTH: usize = 64;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: u32 = 0xFFFE_E000;
const ITEM_DELIMITER: u32 = 0xFFFE_E00D;
const SEQUENCE_DELIMITER: u32 = 0xFFFE_E0DD;
pub const FLOAT_PIXEL_DATA: u32 = 0x7FE0_0008;
pub const DOUBLE_FLOAT_PIXEL_DATA: u32 = 0x7FE0_0009;
pub const PIXEL_DATA: u32 = 0x7FE0_0010;

/// What the parser reports.
pub trait Sink {
    /// Should the value of this top-level element be collected and passed to `attribute`?
    fn wants(&self, tag: u32) -> bool;
    fn attribute(&mut self, tag: u32, value: &[u8]) -> Result<(), FingerprintError>;
    /// Top-level pixel data begins: `length` is `None` when encapsulated.
    fn pixel_start(
        &mut self,
        tag: u32,
        vr: Option<[u8; 2]>,
        length: Option<u32>,
    ) -> Result<(), FingerprintError>;
    /// Native pixel value bytes, in order.
    fn pixel_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError>;
    /// An item of encapsulated pixel data begins (the first is the Basic Offset Table).
    fn item_start(&mut self, length: u32) -> Result<(), FingerprintError>;
    /// Bytes of the current item, in order.
    fn item_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError>;
    /// The pixel data element is complete.
    fn pixel_end(&mut self) -> Result<(), FingerprintError>;
}

#[derive(Debug, Clone, Copy)]
enum Context {
    /// Inside an undefined-length sequence: items and the sequence delimiter.
    Sequence(Encoding),
    /// Inside an undefined-length item: elements until the item delimiter.
    Item(Encoding),
}

#[derive(Debug)]
enum State {
    /// Reading an element or item header.
    Header,
    /// Skipping value bytes.
    Skip(u64),
    /// Collecting the value of a wanted attribute.
    Collect { tag: u32, length: usize },
    /// Native pixel data value bytes still to come.
    Pixels(u64),
    /// Expecting an item or the sequence delimiter inside encapsulated pixel data.
    EncapsulatedHeader,
    /// Bytes of the current encapsulated item still to come.
    EncapsulatedItem(u64),
    /// After the pixel data: the rest is ignored.
    Trailer,
}

/// The parser. Errors are final: once `feed` has failed, the parser must not be fed again.
#[derive(Debug)]
pub struct Parser {
    encoding: Encoding,
    stack: Vec<Context>,
    state: State,
    header: [u8; 12],
    header_len: usize,
    value: Vec<u8>,
    offset: u64,
    last_top_level_tag: Option<u32>,
}

fn is_pixel_tag(tag: u32) -> bool {
    matches!(tag, PIXEL_DATA | FLOAT_PIXEL_DATA | DOUBLE_FLOAT_PIXEL_DATA)
}

impl Parser {
    pub fn new(encoding: Encoding) -> Self {
        Parser {
            encoding,
            stack: Vec::new(),
            state: State::Header,
            header: [0; 12],
            header_len: 0,
            value: Vec::new(),
            offset: 0,
            last_top_level_tag: None,
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn malformed(&self, reason: impl Into<String>) -> FingerprintError {
        FingerprintError::Malformed {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    /// The encoding in force at the current nesting level.
    fn current_encoding(&self) -> Encoding {
        match self.stack.last() {
            Some(Context::Sequence(e)) | Some(Context::Item(e)) => *e,
            None => self.encoding,
        }
    }

    /// Consumes a chunk.
    pub fn feed<S: Sink>(
        &mut self,
        mut input: &[u8],
        sink: &mut S,
    ) -> Result<(), FingerprintError> {
        while !input.is_empty() {
            match self.state {
                State::Header | State::EncapsulatedHeader => {
                    let encapsulated = matches!(self.state, State::EncapsulatedHeader);
                    let enc = if encapsulated {
                        Encoding::ExplicitLittle
                    } else {
                        self.current_encoding()
                    };
                    let need = self.header_needed(enc, encapsulated);
                    // `header_len < need <= 12` holds between calls: a complete header is
                    // consumed at once below.
                    let Some(free) = self.header.get_mut(self.header_len..need) else {
                        return Err(self.malformed("element header overrun"));
                    };
                    let (head, rest) = split_at_most(input, free.len() as u64);
                    for (dst, src) in free.iter_mut().zip(head) {
                        *dst = *src;
                    }
                    self.header_len += head.len();
                    self.offset += head.len() as u64;
                    input = rest;
                    // The needed size can grow once the VR is visible.
                    if self.header_len == self.header_needed(enc, encapsulated) {
                        self.header_len_done(enc, encapsulated, sink)?;
                    }
                }
                State::Skip(n) => {
                    let (skipped, rest) = split_at_most(input, n);
                    input = rest;
                    self.offset += skipped.len() as u64;
                    let left = n - skipped.len() as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Skip(left)
                    };
                }
                State::Collect { tag, length } => {
                    let (value, rest) = split_at_most(input, (length - self.value.len()) as u64);
                    self.value.extend_from_slice(value);
                    input = rest;
                    self.offset += value.len() as u64;
                    if self.value.len() == length {
                        sink.attribute(tag, &self.value)?;
                        self.value.clear();
                        self.state = State::Header;
                    }
                }
                State::Pixels(n) => {
                    let (pixels, rest) = split_at_most(input, n);
                    sink.pixel_bytes(pixels)?;
                    input = rest;
                    self.offset += pixels.len() as u64;
                    let left = n - pixels.len() as u64;
                    if left == 0 {
                        sink.pixel_end()?;
                        self.state = State::Trailer;
                    } else {
                        self.state = State::Pixels(left);
                    }
                }
                State::EncapsulatedItem(n) => {
                    let (item, rest) = split_at_most(input, n);
                    sink.item_bytes(item)?;
                    input = rest;
                    self.offset += item.len() as u64;
                    let left = n - item.len() as u64;
                    self.state = if left == 0 {
                        State::EncapsulatedHeader
                    } else {
                        State::EncapsulatedItem(left)
                    };
                }
                State::Trailer => {
                    self.offset += input.len() as u64;
                    input = &[];
                }
            }
        }
        Ok(())
    }

    /// How many header bytes are needed, given what has been read so far.
    fn header_needed(&self, enc: Encoding, encapsulated: bool) -> usize {
        if self.header_len < 4 {
            return 4;
        }
        let tag = self.tag(enc);
        if encapsulated || tag >> 16 == 0xFFFE || !enc.explicit() {
            return 8;
        }
        if self.header_len < 6 {
            return 6;
        }
        let [_, _, _, _, v0, v1, ..] = self.header;
        if long_form([v0, v1]) {
            12
        } else {
            8
        }
    }

    fn tag(&self, enc: Encoding) -> u32 {
        let [g0, g1, e0, e1, ..] = self.header;
        (u32::from(u16_from(enc, [g0, g1])) << 16) | u32::from(u16_from(enc, [e0, e1]))
    }

    /// A complete header is in `self.header`: decide what follows.
    fn header_len_done<S: Sink>(
        &mut self,
        enc: Encoding,
        encapsulated: bool,
        sink: &mut S,
    ) -> Result<(), FingerprintError> {
        let tag = self.tag(enc);
        let n = self.header_len;
        self.header_len = 0;
        // Bytes 4..12: VR, [reserved,] length; or, without a VR, the 4-byte length at 4.
        let [_, _, _, _, b4, b5, b6, b7, b8, b9, b10, b11] = self.header;
        let (vr, length) = if n == 12 {
            (Some([b4, b5]), u32_from(enc, [b8, b9, b10, b11]))
        } else if n == 8 && enc.explicit() && !encapsulated && tag >> 16 != 0xFFFE {
            (Some([b4, b5]), u32::from(u16_from(enc, [b6, b7])))
        } else {
            (None, u32_from(enc, [b4, b5, b6, b7]))
        };

        if encapsulated {
            return match tag {
                ITEM if length == UNDEFINED => {
                    Err(self.malformed("undefined-length item in encapsulated pixel data"))
                }
                ITEM => {
                    sink.item_start(length)?;
                    self.state = if length == 0 {
                        State::EncapsulatedHeader
                    } else {
                        State::EncapsulatedItem(u64::from(length))
                    };
                    Ok(())
                }
                SEQUENCE_DELIMITER => {
                    sink.pixel_end()?;
                    self.state = State::Trailer;
                    Ok(())
                }
                other => Err(self.malformed(format!(
                    "unexpected tag {} in encapsulated pixel data",
                    super::attrs::tag_string(other)
                ))),
            };
        }

        match self.stack.last().copied() {
            None => self.top_level(tag, vr, length, enc, sink),
            Some(Context::Sequence(inner)) => match tag {
                ITEM if length == UNDEFINED => self.push(Context::Item(inner)),
                ITEM => {
                    self.skip(length);
                    Ok(())
                }
                SEQUENCE_DELIMITER => {
                    self.stack.pop();
                    Ok(())
                }
                other => Err(self.malformed(format!(
                    "unexpected tag {} inside a sequence",
                    super::attrs::tag_string(other)
                ))),
            },
            Some(Context::Item(inner)) => match tag {
                ITEM_DELIMITER => {
                    self.stack.pop();
                    Ok(())
                }
                other if other >> 16 == 0xFFFE => Err(self.malformed(format!(
                    "unexpected delimiter {} inside an item",
                    super::attrs::tag_string(other)
                ))),
                _ if length == UNDEFINED => {
                    self.push(Context::Sequence(nested_encoding(inner, vr)))
                }
                _ => {
                    self.skip(length);
                    Ok(())
                }
            },
        }
    }

    fn top_level<S: Sink>(
        &mut self,
        tag: u32,
        vr: Option<[u8; 2]>,
        length: u32,
        enc: Encoding,
        sink: &mut S,
    ) -> Result<(), FingerprintError> {
        if tag >> 16 == 0xFFFE {
            return Err(self.malformed(format!(
                "item or delimiter {} outside a sequence",
                super::attrs::tag_string(tag)
            )));
        }
        if let Some(last) = self.last_top_level_tag {
            if tag <= last {
                return Err(self.malformed(format!(
                    "element {} out of order (after {})",
                    super::attrs::tag_string(tag),
                    super::attrs::tag_string(last)
                )));
            }
        }
        self.last_top_level_tag = Some(tag);
        if is_pixel_tag(tag) {
            if length == UNDEFINED {
                if tag != PIXEL_DATA {
                    return Err(self.malformed("float pixel data cannot be encapsulated"));
                }
                sink.pixel_start(tag, vr, None)?;
                self.state = State::EncapsulatedHeader;
            } else {
                sink.pixel_start(tag, vr, Some(length))?;
                if length == 0 {
                    sink.pixel_end()?;
                    self.state = State::Trailer;
                } else {
                    self.state = State::Pixels(u64::from(length));
                }
            }
            return Ok(());
        }
        if length == UNDEFINED {
            // Only sequences (or UN holding one) may have an undefined length here.
            return self.push(Context::Sequence(nested_encoding(enc, vr)));
        }
        if sink.wants(tag) {
            if length > MAX_ATTRIBUTE_VALUE {
                return Err(FingerprintError::AttributeTooLong { tag, length });
            }
            if length == 0 {
                sink.attribute(tag, &[])?;
            } else {
                self.value.clear();
                self.state = State::Collect {
                    tag,
                    length: length as usize,
                };
            }
            return Ok(());
        }
        self.skip(length);
        Ok(())
    }

    fn skip(&mut self, length: u32) {
        if length > 0 {
            self.state = State::Skip(u64::from(length));
        }
    }

    fn push(&mut self, ctx: Context) -> Result<(), FingerprintError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.malformed(format!("sequences nested deeper than {MAX_DEPTH}")));
        }
        self.stack.push(ctx);
        Ok(())
    }

    /// Checks that the data set ended cleanly: between top-level elements, or after the pixel
    /// data.
    pub fn finish(&self) -> Result<(), FingerprintError> {
        let clean = match self.state {
            State::Trailer => true,
            State::Header => self.header_len == 0 && self.stack.is_empty(),
            _ => false,
        };
        if clean {
            Ok(())
        } else {
            Err(FingerprintError::Truncated {
                offset: self.offset,
            })
        }
    }
}

fn u16_from(enc: Encoding, b: [u8; 2]) -> u16 {
    if enc.big_endian() {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn u32_from(enc: Encoding, b: [u8; 4]) -> u32 {
    if enc.big_endian() {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// The encoding inside a sequence: UN with undefined length holds implicit VR little endian
/// (PS3.5 §6.2.2); anything else keeps the enclosing encoding.
fn nested_encoding(outer: Encoding, vr: Option<[u8; 2]>) -> Encoding {
    match vr {
        Some(v) if &v == b"UN" => Encoding::ImplicitLittle,
        _ => outer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug, PartialEq)]
    struct Rec {
        attrs: Vec<(u32, Vec<u8>)>,
        pixel_start: Option<(u32, Option<u32>)>,
        pixels: Vec<u8>,
        items: Vec<Vec<u8>>,
        ended: bool,
    }

    impl Sink for Rec {
        fn wants(&self, tag: u32) -> bool {
            tag == 0x0010_0020 || tag == 0x0028_0010
        }
        fn attribute(&mut self, tag: u32, value: &[u8]) -> Result<(), FingerprintError> {
            self.attrs.push((tag, value.to_vec()));
            Ok(())
        }
        fn pixel_start(
            &mut self,
            tag: u32,
            _vr: Option<[u8; 2]>,
            length: Option<u32>,
        ) -> Result<(), FingerprintError> {
            self.pixel_start = Some((tag, length));
            Ok(())
        }
        fn pixel_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError> {
            self.pixels.extend_from_slice(bytes);
            Ok(())
        }
        fn item_start(&mut self, _length: u32) -> Result<(), FingerprintError> {
            self.items.push(Vec::new());
            Ok(())
        }
        fn item_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError> {
            if let Some(last) = self.items.last_mut() {
                last.extend_from_slice(bytes);
            }
            Ok(())
        }
        fn pixel_end(&mut self) -> Result<(), FingerprintError> {
            self.ended = true;
            Ok(())
        }
    }

    fn el_explicit(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        v.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        v.extend_from_slice(vr);
        if long_form(*vr) {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    fn raw_header(tag: u32, length: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        v.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        v.extend_from_slice(&length.to_le_bytes());
        v
    }

    /// A data set with a nested undefined-length sequence holding a wanted tag (which must not
    /// be reported), a UN sequence in implicit VR, then encapsulated pixel data.
    fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend(el_explicit(0x0008_0016, b"UI", b"1.2\0"));
        // (0008,1140) SQ undefined length, one undefined-length item holding PatientID.
        d.extend_from_slice(&[
            0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(raw_header(ITEM, UNDEFINED));
        d.extend(el_explicit(0x0010_0020, b"LO", b"NESTED"));
        d.extend(raw_header(ITEM_DELIMITER, 0));
        d.extend(raw_header(SEQUENCE_DELIMITER, 0));
        d.extend(el_explicit(0x0010_0020, b"LO", b"PID1"));
        // (0011,1010) UN undefined length: implicit VR LE inside.
        d.extend_from_slice(&[
            0x11, 0x00, 0x10, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(raw_header(ITEM, UNDEFINED));
        d.extend(raw_header(0x0011_1011, 2));
        d.extend_from_slice(b"AB");
        d.extend(raw_header(ITEM_DELIMITER, 0));
        d.extend(raw_header(SEQUENCE_DELIMITER, 0));
        d.extend(el_explicit(0x0028_0010, b"US", &[4, 0]));
        d.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(raw_header(ITEM, 0));
        d.extend(raw_header(ITEM, 4));
        d.extend_from_slice(&[1, 2, 3, 4]);
        d.extend(raw_header(ITEM, 2));
        d.extend_from_slice(&[5, 6]);
        d.extend(raw_header(SEQUENCE_DELIMITER, 0));
        d.extend(el_explicit(0xFFFC_FFFC, b"OB", &[0, 0]));
        d
    }

    fn run(data: &[u8], chunk: usize) -> Result<Rec, FingerprintError> {
        let mut p = Parser::new(Encoding::ExplicitLittle);
        let mut rec = Rec::default();
        for c in data.chunks(chunk.max(1)) {
            p.feed(c, &mut rec)?;
        }
        p.finish()?;
        Ok(rec)
    }

    #[test]
    fn every_chunking_gives_the_same_events() {
        let data = sample();
        let whole = run(&data, data.len()).expect("parses");
        assert_eq!(
            whole.attrs,
            vec![(0x0010_0020, b"PID1".to_vec()), (0x0028_0010, vec![4, 0])]
        );
        assert_eq!(whole.pixel_start, Some((PIXEL_DATA, None)));
        assert_eq!(whole.items, vec![vec![], vec![1, 2, 3, 4], vec![5, 6]]);
        assert!(whole.ended);
        for chunk in 1..=17 {
            assert_eq!(run(&data, chunk).expect("parses"), whole, "chunk {chunk}");
        }
    }

    #[test]
    fn every_truncation_is_reported() {
        let data = sample();
        // Cutting anywhere before the end of the pixel data is truncation; the padding after
        // it is ignored.
        let pixel_end = data.len() - 14;
        // A cut between two top-level elements before the pixel data looks like a data set
        // without pixel data (the caller knows from the transport whether it was complete).
        for cut in 1..pixel_end {
            match run(&data[..cut], 7) {
                Err(FingerprintError::Truncated { .. }) => {}
                Ok(rec) => assert!(rec.pixel_start.is_none(), "cut at {cut}"),
                Err(e) => panic!("cut at {cut}: {e:?}"),
            }
        }
    }

    #[test]
    fn hostile_input_is_refused_without_allocation() {
        // A wanted attribute claiming 4 GiB.
        let mut d = Vec::new();
        d.extend_from_slice(&[
            0x10, 0x00, 0x20, 0x00, b'U', b'N', 0, 0, 0xFE, 0xFF, 0xFF, 0xFF,
        ]);
        assert!(matches!(
            run(&d, 3),
            Err(FingerprintError::AttributeTooLong { .. })
        ));
        // An item outside a sequence.
        assert!(matches!(
            run(&raw_header(ITEM, 0), 3),
            Err(FingerprintError::Malformed { .. })
        ));
        // Elements out of order.
        let mut d = el_explicit(0x0010_0020, b"LO", b"AB");
        d.extend(el_explicit(0x0008_0016, b"UI", b"1\0"));
        assert!(matches!(
            run(&d, 5),
            Err(FingerprintError::Malformed { .. })
        ));
        // Nesting bomb.
        let mut d = Vec::new();
        d.extend_from_slice(&[
            0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        for _ in 0..100 {
            d.extend(raw_header(ITEM, UNDEFINED));
            d.extend_from_slice(&[
                0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
        }
        assert!(matches!(
            run(&d, 64),
            Err(FingerprintError::Malformed { .. })
        ));
    }

    #[test]
    fn implicit_and_big_endian_headers() {
        // Implicit VR: tag + 4-byte length.
        let mut d = raw_header(0x0010_0020, 4);
        d.extend_from_slice(b"PID ");
        let mut p = Parser::new(Encoding::ImplicitLittle);
        let mut rec = Rec::default();
        p.feed(&d, &mut rec).expect("ok");
        p.finish().expect("clean");
        assert_eq!(rec.attrs, vec![(0x0010_0020, b"PID ".to_vec())]);
        // Explicit big endian.
        let d = [0x00, 0x28, 0x00, 0x10, b'U', b'S', 0x00, 0x02, 0x02, 0x00];
        let mut p = Parser::new(Encoding::ExplicitBig);
        let mut rec = Rec::default();
        p.feed(&d, &mut rec).expect("ok");
        p.finish().expect("clean");
        assert_eq!(rec.attrs, vec![(0x0028_0010, vec![0x02, 0x00])]);
    }

    #[test]
    fn native_pixel_data_is_streamed() {
        let mut d = el_explicit(0x0028_0010, b"US", &[2, 0]);
        d.extend(el_explicit(PIXEL_DATA, b"OW", &[1, 0, 2, 0, 3, 0, 4, 0]));
        let rec = run(&d, 3).expect("ok");
        assert_eq!(rec.pixel_start, Some((PIXEL_DATA, Some(8))));
        assert_eq!(rec.pixels, vec![1, 0, 2, 0, 3, 0, 4, 0]);
        assert!(rec.ended);
    }
}
