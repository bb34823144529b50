//! The fingerprint's view of a data set, read through the one data-set grammar
//! (`radguard_dicom::inflate::DataSetReader` and its tokens), so that the ledger cannot read the
//! bytes differently from the gateway, the vault or the media scanner.
//!
//! It keeps the value of a top-level attribute the sink asked for (capped), hands top-level
//! Pixel Data to the sink as native value bytes or fragment by fragment when encapsulated, and
//! ignores nested content (sequence items, icon images) and everything after the top-level pixel
//! data (only the rest of a deflate stream is still inflated, to find it corrupt or cut short).
//! Memory does not depend on the data set's size, and no declared length is used to allocate.

use dicom_core::VR;
use radguard_dicom::inflate::DataSetReader;
use radguard_dicom::inflate::InflateError;
use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{
    is_pixel_tag, Anomaly, AnomalyKind, ElementKind, ErrorKind, GrammarError, Header, Length, Token,
};
use radguard_dicom::ts::TransferSyntax;

use super::FingerprintError;

/// Longest value of a fingerprinted attribute collected (their VRs allow far less).
pub const MAX_ATTRIBUTE_VALUE: u32 = 64 * 1024;

/// What the parser reports. Tags are `gggg_eeee`.
pub trait Sink {
    /// Should the value of this top-level element be collected and passed to `attribute`?
    fn wants(&self, tag: u32) -> bool;
    /// The value of a wanted top-level element whose header is at `offset`.
    fn attribute(&mut self, tag: u32, value: &[u8], offset: u64) -> Result<(), FingerprintError>;
    /// Top-level pixel data begins (header at `offset`): `length` is `None` when encapsulated.
    fn pixel_start(
        &mut self,
        tag: u32,
        vr: VR,
        length: Option<u32>,
        offset: u64,
    ) -> Result<(), FingerprintError>;
    /// Native pixel value bytes, in order.
    fn pixel_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError>;
    /// A fragment of encapsulated pixel data begins (the first is the Basic Offset Table).
    fn item_start(&mut self, length: u32) -> Result<(), FingerprintError>;
    /// Bytes of the current fragment, in order.
    fn item_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError>;
    /// The pixel data element is complete.
    fn pixel_end(&mut self) -> Result<(), FingerprintError>;
}

/// Where the walk is, as far as the fingerprint cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Top-level elements before the pixel data.
    Elements,
    /// Value bytes of top-level native pixel data.
    Native,
    /// Fragments of top-level encapsulated pixel data.
    Encapsulated,
    /// After the top-level pixel data: the rest is ignored.
    Done,
}

/// The token consumer, apart from the reader so that both can be borrowed at once.
#[derive(Debug)]
struct Walk {
    phase: Phase,
    /// The wanted attribute whose value is being collected: tag and header offset.
    collecting: Option<(u32, u64)>,
    value: Vec<u8>,
    /// An out-of-order or repeated element reported just before its header.
    order: Option<Anomaly>,
    error: Option<FingerprintError>,
}

/// The parser. Errors are final: `feed` reports the first one, then ignores further bytes.
#[derive(Debug)]
pub struct Parser {
    reader: DataSetReader,
    walk: Walk,
    fed: u64,
    failed: bool,
}

fn tag_u32(h: &Header) -> u32 {
    (u32::from(h.tag.group()) << 16) | u32::from(h.tag.element())
}

fn malformed(e: &GrammarError) -> FingerprintError {
    match e.kind {
        ErrorKind::Truncated(_) | ErrorKind::Inflate(InflateError::Truncated) => {
            FingerprintError::Truncated { offset: e.offset }
        }
        kind => FingerprintError::Malformed {
            offset: e.offset,
            reason: kind.to_string(),
        },
    }
}

impl Parser {
    pub fn new(ts: &TransferSyntax, limits: Limits) -> Self {
        Parser {
            reader: DataSetReader::new(ts, limits),
            walk: Walk {
                phase: Phase::Elements,
                collecting: None,
                value: Vec::new(),
                order: None,
                error: None,
            },
            fed: 0,
            failed: false,
        }
    }

    /// Bytes fed so far (as received: compressed bytes for a deflated data set).
    pub fn offset(&self) -> u64 {
        self.fed
    }

    /// Offset reached in the data set as tokenized (inflated, for a deflated data set).
    pub fn data_offset(&self) -> u64 {
        self.reader.tokenizer().offset()
    }

    /// Consumes a chunk.
    pub fn feed<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<(), FingerprintError> {
        self.fed += input.len() as u64;
        if self.failed {
            return Ok(());
        }
        if self.walk.phase == Phase::Done {
            // What follows the pixel data is not read, except that the rest of a deflate stream
            // is still inflated: the inflater finds corruption only when it gets there, so
            // stopping early would make a corrupt stream fingerprint or fail depending on how
            // its bytes were split.
            if self.reader.inflater().is_none() {
                return Ok(());
            }
        }
        let walk = &mut self.walk;
        self.reader.feed(input, |t| {
            if walk.error.is_some() {
                return;
            }
            let r = match (walk.phase, t) {
                (
                    Phase::Done,
                    Token::Error(
                        e @ GrammarError {
                            kind: ErrorKind::Inflate(_),
                            ..
                        },
                    ),
                ) => Err(malformed(&e)),
                (Phase::Done, _) => Ok(()),
                (_, t) => walk.token(t, sink),
            };
            if let Err(e) = r {
                walk.error = Some(e);
            }
        });
        match self.walk.error.take() {
            Some(e) => {
                self.failed = true;
                Err(e)
            }
            None => Ok(()),
        }
    }

    /// Checks that the data set ended cleanly: between top-level elements, or after the pixel
    /// data (and, for a deflated data set, at the end of the deflate stream).
    pub fn finish(&self) -> Result<(), FingerprintError> {
        if self.failed {
            return Err(FingerprintError::Malformed {
                offset: self.data_offset(),
                reason: "the data set was refused earlier".into(),
            });
        }
        match self.walk.phase {
            Phase::Done => match self.reader.inflater() {
                Some(inflater) if !inflater.done() => Err(FingerprintError::Truncated {
                    offset: self.data_offset(),
                }),
                _ => Ok(()),
            },
            Phase::Elements => self.reader.finish().map_err(|e| malformed(&e)),
            Phase::Native | Phase::Encapsulated => Err(FingerprintError::Truncated {
                offset: self.data_offset(),
            }),
        }
    }
}

impl Walk {
    fn token<S: Sink>(&mut self, t: Token<'_>, sink: &mut S) -> Result<(), FingerprintError> {
        if let Token::Error(e) = t {
            return Err(malformed(&e));
        }
        match self.phase {
            Phase::Elements => self.element_token(t, sink),
            Phase::Native => match t {
                Token::Value(v) => sink.pixel_bytes(v),
                Token::ValueEnd => {
                    self.phase = Phase::Done;
                    sink.pixel_end()
                }
                _ => Ok(()),
            },
            Phase::Encapsulated => match t {
                Token::Fragment { length, .. } => sink.item_start(length),
                Token::Value(v) => sink.item_bytes(v),
                // Nothing nests inside encapsulated pixel data (PS3.5 §A.4): this sequence end
                // is the pixel data's own.
                Token::SequenceEnd { .. } => {
                    self.phase = Phase::Done;
                    sink.pixel_end()
                }
                _ => Ok(()),
            },
            Phase::Done => Ok(()),
        }
    }

    fn element_token<S: Sink>(
        &mut self,
        t: Token<'_>,
        sink: &mut S,
    ) -> Result<(), FingerprintError> {
        match t {
            Token::Anomaly(a) => {
                // The grammar reports an element out of order or repeated just before its
                // header; whether it matters depends on the header's depth.
                if matches!(
                    a.kind,
                    AnomalyKind::OutOfOrder { .. } | AnomalyKind::Duplicate { .. }
                ) {
                    self.order = Some(a);
                }
                Ok(())
            }
            Token::Element(h) => {
                let order = self.order.take();
                self.collecting = None;
                if h.depth > 0 {
                    return Ok(());
                }
                // PS3.5 §7.1: ascending order, each tag once. Two readers of a data set with
                // a repeated (or out-of-order, possibly repeated) attribute may each take a
                // different value: the fingerprint refuses to pick one.
                if let Some(a) = order {
                    return Err(FingerprintError::Malformed {
                        offset: a.offset,
                        reason: a.kind.to_string(),
                    });
                }
                self.top_level(&h, sink)
            }
            Token::Value(v) => {
                if self.collecting.is_some() {
                    self.value.extend_from_slice(v);
                }
                Ok(())
            }
            Token::ValueEnd => match self.collecting.take() {
                Some((tag, offset)) => sink.attribute(tag, &self.value, offset),
                None => Ok(()),
            },
            // Items, sequence ends and fragments here belong to nested content.
            _ => Ok(()),
        }
    }

    fn top_level<S: Sink>(&mut self, h: &Header, sink: &mut S) -> Result<(), FingerprintError> {
        let tag = tag_u32(h);
        let vr = h.vr;
        if is_pixel_tag(h.tag) {
            match (h.kind, h.length) {
                (ElementKind::Value, Length::Defined(n)) => {
                    self.phase = Phase::Native;
                    sink.pixel_start(tag, vr, Some(n), h.offset)
                }
                (ElementKind::Encapsulated, _) => {
                    self.phase = Phase::Encapsulated;
                    sink.pixel_start(tag, vr, None, h.offset)
                }
                _ => Err(FingerprintError::Malformed {
                    offset: h.offset,
                    reason: format!(
                        "pixel data {} is encoded as a sequence",
                        super::attrs::tag_string(tag)
                    ),
                }),
            }
        } else if sink.wants(tag) {
            match (h.kind, h.length) {
                (ElementKind::Value, Length::Defined(n)) => {
                    if n > MAX_ATTRIBUTE_VALUE {
                        return Err(FingerprintError::AttributeTooLong { tag, length: n });
                    }
                    self.value.clear();
                    self.collecting = Some((tag, h.offset));
                    Ok(())
                }
                // A fingerprinted attribute read as a sequence (VR SQ, or UN of undefined
                // length) has no value the fingerprint could cover; leaving it out would let
                // its real value change unseen.
                _ => Err(FingerprintError::Malformed {
                    offset: h.offset,
                    reason: format!(
                        "fingerprinted attribute {} is encoded as a sequence",
                        super::attrs::tag_string(tag)
                    ),
                }),
            }
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_dicom::tokens::long_form;
    use radguard_dicom::ts::{
        DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE,
    };

    const ITEM: u32 = 0xFFFE_E000;
    const ITEM_DELIMITER: u32 = 0xFFFE_E00D;
    const SEQUENCE_DELIMITER: u32 = 0xFFFE_E0DD;
    const UNDEFINED: u32 = 0xFFFF_FFFF;
    const PIXEL_DATA: u32 = 0x7FE0_0010;

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
        fn attribute(
            &mut self,
            tag: u32,
            value: &[u8],
            _offset: u64,
        ) -> Result<(), FingerprintError> {
            self.attrs.push((tag, value.to_vec()));
            Ok(())
        }
        fn pixel_start(
            &mut self,
            tag: u32,
            _vr: VR,
            length: Option<u32>,
            _offset: u64,
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
        if VR::from_binary(*vr).is_some_and(long_form) {
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

    fn run_in(uid: &str, data: &[u8], chunk: usize) -> Result<Rec, FingerprintError> {
        let ts = TransferSyntax::from_uid(uid).expect("ts");
        let mut p = Parser::new(&ts, Limits::GATEWAY);
        let mut rec = Rec::default();
        for c in data.chunks(chunk.max(1)) {
            p.feed(c, &mut rec)?;
        }
        p.finish()?;
        Ok(rec)
    }

    fn run(data: &[u8], chunk: usize) -> Result<Rec, FingerprintError> {
        run_in(EXPLICIT_VR_LE, data, chunk)
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
        for cut in pixel_end..=data.len() {
            assert!(
                run(&data[..cut], 7).expect("complete").ended,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn whatever_follows_the_pixel_data_is_ignored() {
        let mut data = sample();
        let clean = run(&data, 5).expect("parses");
        // Garbage that the grammar would refuse (an item outside a sequence, then a header cut
        // short) after the top-level pixel data.
        data.extend(raw_header(ITEM, 0));
        data.extend_from_slice(&[1, 2, 3]);
        for chunk in [1, 5, data.len()] {
            assert_eq!(run(&data, chunk).expect("ignored"), clean, "chunk {chunk}");
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
            Err(FingerprintError::AttributeTooLong {
                tag: 0x0010_0020,
                length: 0xFFFF_FFFE
            })
        ));
        // An item outside a sequence.
        assert!(matches!(
            run(&raw_header(ITEM, 0), 3),
            Err(FingerprintError::Malformed { offset: 0, .. })
        ));
        // Nesting bomb: refused at the grammar's depth limit.
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
        match run(&d, 64) {
            Err(FingerprintError::Malformed { reason, .. }) => {
                assert!(reason.contains("nested deeper than 32"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // A fingerprinted attribute written as a sequence.
        let mut d = Vec::new();
        d.extend_from_slice(&[
            0x10, 0x00, 0x20, 0x00, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(raw_header(SEQUENCE_DELIMITER, 0));
        assert!(matches!(
            run(&d, 4),
            Err(FingerprintError::Malformed { offset: 0, .. })
        ));
    }

    #[test]
    fn elements_out_of_order_or_repeated_at_the_top_level_are_refused() {
        let pid = |v: &[u8]| el_explicit(0x0010_0020, b"LO", v);
        // Out of order.
        let mut d = pid(b"AB");
        d.extend(el_explicit(0x0008_0016, b"UI", b"1\0"));
        assert!(matches!(
            run(&d, 5),
            Err(FingerprintError::Malformed { offset: 10, .. })
        ));
        // Repeated: which Patient ID would the archive show?
        let mut d = pid(b"AB");
        d.extend(pid(b"CD"));
        assert!(matches!(
            run(&d, 5),
            Err(FingerprintError::Malformed { offset: 10, .. })
        ));
        // Repeated with another element in between (the grammar calls it out of order).
        let mut d = pid(b"AB");
        d.extend(el_explicit(0x0010_0030, b"DA", b"20000101"));
        d.extend(pid(b"CD"));
        assert!(matches!(
            run(&d, 5),
            Err(FingerprintError::Malformed { .. })
        ));
        // Inside a sequence item, order is not the fingerprint's business (the item is not
        // fingerprinted).
        let mut d = Vec::new();
        d.extend_from_slice(&[
            0x08, 0x00, 0x40, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend(raw_header(ITEM, UNDEFINED));
        d.extend(pid(b"AB"));
        d.extend(pid(b"CD"));
        d.extend(raw_header(ITEM_DELIMITER, 0));
        d.extend(raw_header(SEQUENCE_DELIMITER, 0));
        d.extend(pid(b"EF"));
        assert_eq!(
            run(&d, 3).expect("parses").attrs,
            vec![(0x0010_0020, b"EF".to_vec())]
        );
    }

    #[test]
    fn implicit_and_big_endian_headers() {
        // Implicit VR: tag + 4-byte length.
        let mut d = raw_header(0x0010_0020, 4);
        d.extend_from_slice(b"PID ");
        let rec = run_in(IMPLICIT_VR_LE, &d, 3).expect("ok");
        assert_eq!(rec.attrs, vec![(0x0010_0020, b"PID ".to_vec())]);
        // Explicit big endian.
        let d = [0x00, 0x28, 0x00, 0x10, b'U', b'S', 0x00, 0x02, 0x02, 0x00];
        let rec = run_in(EXPLICIT_VR_BE, &d, 3).expect("ok");
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

    #[test]
    fn deflated_reads_as_its_inflated_form() {
        use std::io::Write as _;
        let data = sample();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&data).expect("deflate");
        let z = e.finish().expect("deflate");
        let plain = run(&data, data.len()).expect("parses");
        for chunk in [1, 7, z.len()] {
            assert_eq!(
                run_in(DEFLATED_EXPLICIT_VR_LE, &z, chunk).expect("parses"),
                plain,
                "chunk {chunk}"
            );
        }
        // A deflate stream cut short is truncated, also when it stops between elements.
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&el_explicit(0x0010_0020, b"LO", b"AB"))
            .expect("deflate");
        let z = e.finish().expect("deflate");
        assert!(matches!(
            run_in(DEFLATED_EXPLICIT_VR_LE, &z[..z.len() - 1], 1),
            Err(FingerprintError::Truncated { .. })
        ));
        // Garbage is malformed.
        assert!(matches!(
            run_in(DEFLATED_EXPLICIT_VR_LE, &[0xFF; 32], 32),
            Err(FingerprintError::Malformed { .. })
        ));
    }

    /// The deflate stream must be whole even past the pixel data, whatever the splits: inflating
    /// in one piece reaches the corruption before the pixel data is seen to end, inflating byte
    /// by byte after it.
    #[test]
    fn a_deflate_stream_corrupt_or_cut_after_the_pixel_data_is_refused() {
        use std::io::Write as _;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&sample()).expect("deflate");
        e.flush().expect("sync flush");
        let prefix = e.get_ref().clone();
        // BFINAL = 1, BTYPE = 11: a reserved block type (RFC 1951 §3.2.3).
        let mut corrupt = prefix.clone();
        corrupt.push(0x07);
        for chunk in [1, 3, corrupt.len()] {
            assert!(
                matches!(
                    run_in(DEFLATED_EXPLICIT_VR_LE, &corrupt, chunk),
                    Err(FingerprintError::Malformed { .. })
                ),
                "chunk {chunk}"
            );
            assert!(
                matches!(
                    run_in(DEFLATED_EXPLICIT_VR_LE, &prefix, chunk),
                    Err(FingerprintError::Truncated { .. })
                ),
                "chunk {chunk}"
            );
        }
        let whole = e.finish().expect("deflate");
        assert!(run_in(DEFLATED_EXPLICIT_VR_LE, &whole, 1).is_ok());
    }
}
