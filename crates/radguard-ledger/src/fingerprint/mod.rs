//! Instance fingerprints: SHA-256 over a canonical encoding of the identifying attributes and
//! the decoded pixel samples, computed while the data set streams past.
//!
//! ```text
//! A = SHA-256(listed attributes, canonical elements in tag order)
//! P = SHA-256(canonical pixel element)          (32 zero bytes when there is no pixel data)
//! fingerprint = SHA-256("radguard-fingerprint-v1\n" ‖ kind ‖ A ‖ P)
//!     kind = 0x00 no pixel data, 0x01 decoded samples, 0x02 codestream
//! ```
//!
//! `docs/fingerprint.md` specifies every byte; its test vectors are checked by this crate's
//! tests. The data set is read through the one data-set grammar (`radguard_dicom::inflate`,
//! `radguard_dicom::tokens`), deflated data sets included. Modules: `ts` (which encapsulated
//! pixel data is decoded), `parser` (the fingerprint's view of the grammar's tokens), `attrs` (the
//! attribute list and canonical elements), `pixels` (canonical samples), `codec` (lossless
//! decoders), `file` (Part 10 files).

mod attrs;
mod codec;
mod file;
mod parser;
mod pixels;
mod ts;

use std::collections::BTreeMap;
use std::fmt;

use dicom_core::VR;
use radguard_dicom::limits::Limits;
use radguard_dicom::ts::{Encoding, TransferSyntax};
use sha2::{Digest as _, Sha256};

pub use attrs::{name as attribute_name, tag_string, Attribute, Vr, ATTRIBUTES};
pub use file::{fingerprint_file, fingerprint_file_with_pixels, part10_data_set, FileFingerprint};
pub use pixels::Layout;
pub use ts::is_lossy;

use parser::{Parser, Sink};
use pixels::{ImageAttributes, Native, PixelSink};

/// Attributes that describe how pixel values are represented rather than what they show: a
/// lossy re-encoder may change them (DCMTK re-maps stored values and adjusts Rescale Intercept,
/// JPEG Baseline drops to 8 bits, colour moves to YBR). Any other listed attribute changing is
/// tampering whatever the transfer syntax.
pub const REPRESENTATION_ATTRIBUTES: &[u32] = &[
    0x0028_0004, // PhotometricInterpretation
    0x0028_0100, // BitsAllocated
    0x0028_0101, // BitsStored
    0x0028_0102, // HighBit
    0x0028_0103, // PixelRepresentation
    0x0028_1052, // RescaleIntercept
    0x0028_1053, // RescaleSlope
];

/// The domain-separation prefix of the fingerprint.
pub const DOMAIN: &[u8] = b"radguard-fingerprint-v1\n";

/// Default cap on encapsulated pixel data held for decoding (one instance).
pub const DEFAULT_MAX_ENCAPSULATED: u64 = 1024 * 1024 * 1024;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Option<Digest> {
        let v = hex::decode(s).ok()?;
        Some(Digest(v.try_into().ok()?))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// What the pixel part of a fingerprint covers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PixelDigest {
    /// The instance has no pixel data.
    None,
    /// Decoded, canonical samples: the same for every native or lossless encoding.
    Samples { digest: Digest },
    /// The compressed codestream as received (a lossy codec, or one Radguard cannot decode).
    Codestream {
        transfer_syntax: String,
        digest: Digest,
    },
}

impl PixelDigest {
    /// The kind byte in the fingerprint.
    pub fn kind(&self) -> u8 {
        match self {
            PixelDigest::None => 0,
            PixelDigest::Samples { .. } => 1,
            PixelDigest::Codestream { .. } => 2,
        }
    }

    /// P: the pixel digest, or zeros.
    pub fn digest(&self) -> Digest {
        match self {
            PixelDigest::None => Digest([0; 32]),
            PixelDigest::Samples { digest } | PixelDigest::Codestream { digest, .. } => *digest,
        }
    }

    /// Was the codestream produced by a lossy codec?
    pub fn is_lossy(&self) -> bool {
        matches!(self, PixelDigest::Codestream { transfer_syntax, .. } if is_lossy(transfer_syntax))
    }
}

/// The digest of one fingerprinted attribute: the first 8 bytes of SHA-256 over its canonical
/// element. Enough to say which attribute changed, not to recover its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AttributeDigest {
    pub tag: u32,
    pub digest: [u8; 8],
}

/// An instance fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// The fingerprint proper: what "unchanged" compares.
    pub digest: Digest,
    /// A: SHA-256 over the canonical attribute elements.
    pub attributes: Digest,
    /// P and what it covers.
    pub pixels: PixelDigest,
    /// Per-attribute digests, in tag order (only attributes present in the instance).
    pub attribute_digests: Vec<AttributeDigest>,
}

impl Fingerprint {
    /// `SHA-256(DOMAIN ‖ kind ‖ A ‖ P)`.
    pub fn compose(attributes: &Digest, pixels: &PixelDigest) -> Digest {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update([pixels.kind()]);
        h.update(attributes.0);
        h.update(pixels.digest().0);
        Digest(h.finalize().into())
    }

    /// Does `digest` follow from the parts? (Checked when an entry is read back.)
    pub fn is_consistent(&self) -> bool {
        Fingerprint::compose(&self.attributes, &self.pixels) == self.digest
    }

    /// Tags whose canonical value differs between the two fingerprints (including attributes
    /// present in only one of them), in tag order.
    pub fn changed_attributes(&self, other: &Fingerprint) -> Vec<u32> {
        let a: BTreeMap<u32, [u8; 8]> = self
            .attribute_digests
            .iter()
            .map(|d| (d.tag, d.digest))
            .collect();
        let b: BTreeMap<u32, [u8; 8]> = other
            .attribute_digests
            .iter()
            .map(|d| (d.tag, d.digest))
            .collect();
        let mut tags: Vec<u32> = a.keys().chain(b.keys()).copied().collect();
        tags.sort_unstable();
        tags.dedup();
        tags.into_iter().filter(|t| a.get(t) != b.get(t)).collect()
    }
}

/// Why an instance could not be fingerprinted. All but `Io` blame the data.
#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("transfer syntax {0:?} is not supported for fingerprinting")]
    UnsupportedTransferSyntax(String),
    #[error("malformed data set at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("the data set ends in the middle of an element (byte {offset})")]
    Truncated { offset: u64 },
    #[error("attribute {} is {length} bytes long, more than a fingerprinted attribute may be", attrs::tag_string(*tag))]
    AttributeTooLong { tag: u32, length: u32 },
    #[error("pixel data needs {0}, which is missing")]
    MissingImageAttribute(&'static str),
    #[error("unsupported pixel layout: {0}")]
    UnsupportedPixelLayout(String),
    #[error("pixel data is {actual} bytes, the image needs {expected}")]
    PixelDataTooShort { expected: u64, actual: u64 },
    #[error("encapsulated pixel data is larger than the {limit}-byte limit")]
    EncapsulatedTooLarge { limit: u64 },
    #[error("frame {frame} could not be decoded: {reason}")]
    Decode { frame: u32, reason: String },
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Limits and options of a [`Fingerprinter`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Cap on encapsulated pixel data held for decoding.
    pub max_encapsulated: u64,
    /// Keep a copy of the canonical samples (for `verify`'s changed-region report).
    pub keep_pixels: bool,
    /// Bounds of the data-set grammar (nesting, sizes, deflate bombs).
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_encapsulated: DEFAULT_MAX_ENCAPSULATED,
            keep_pixels: false,
            limits: Limits::GATEWAY,
        }
    }
}

/// Streaming fingerprint of one data set.
///
/// Feed it the data set bytes (no File Meta Information) in the transfer syntax they were
/// negotiated in (a deflated data set as it is: it is inflated here), in chunks of any size,
/// then call [`finish`](Fingerprinter::finish). Memory stays bounded for native transfer
/// syntaxes; encapsulated pixel data of the lossless codecs it decodes is held (up to
/// [`Options::max_encapsulated`]) and decoded at `finish`.
pub struct Fingerprinter {
    parser: Parser,
    state: State,
    error: Option<FingerprintError>,
}

struct State {
    ts: TransferSyntax,
    options: Options,
    attrs: BTreeMap<u32, Vec<u8>>,
    image: ImageAttributes,
    pixels: Pixels,
}

enum Pixels {
    Absent,
    Native {
        native: Option<Native>,
        layout: Layout,
        sink: PixelSink,
    },
    Held {
        layout: Layout,
        header: Vec<u8>,
        items: Vec<Vec<u8>>,
        held: u64,
        done: bool,
    },
    Codestream {
        sink: PixelSink,
        items: u64,
        done: bool,
    },
}

/// A fingerprint with what `verify` needs besides.
pub struct Detailed {
    pub fingerprint: Fingerprint,
    pub sop_instance_uid: Option<String>,
    pub transfer_syntax: String,
    /// The canonical samples and their layout, when asked for and available.
    pub pixels: Option<(Layout, Vec<u8>)>,
}

impl Fingerprinter {
    /// A fingerprinter for a data set in the given transfer syntax.
    pub fn new(transfer_syntax_uid: &str) -> Result<Fingerprinter, FingerprintError> {
        Fingerprinter::with_options(transfer_syntax_uid, Options::default())
    }

    pub fn with_options(
        transfer_syntax_uid: &str,
        options: Options,
    ) -> Result<Fingerprinter, FingerprintError> {
        let ts = ts::transfer_syntax(transfer_syntax_uid)?;
        Ok(Fingerprinter {
            parser: Parser::new(&ts, options.limits),
            state: State {
                ts,
                options,
                attrs: BTreeMap::new(),
                image: ImageAttributes::default(),
                pixels: Pixels::Absent,
            },
            error: None,
        })
    }

    /// Feeds the next bytes of the data set. After an error, further bytes are ignored and the
    /// error is returned by `finish` (and visible through [`error`](Fingerprinter::error)).
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.parser.feed(chunk, &mut self.state) {
            self.error = Some(e);
        }
    }

    /// The error that stopped the fingerprint, if any.
    pub fn error(&self) -> Option<&FingerprintError> {
        self.error.as_ref()
    }

    /// Bytes fed so far (as received: compressed bytes for a deflated data set).
    pub fn bytes_fed(&self) -> u64 {
        self.parser.offset()
    }

    /// The fingerprint of the complete data set.
    pub fn finish(self) -> Result<Fingerprint, FingerprintError> {
        self.finish_detailed().map(|d| d.fingerprint)
    }

    /// The fingerprint and the details `verify` uses.
    pub fn finish_detailed(self) -> Result<Detailed, FingerprintError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.parser.finish()?;
        let State {
            ts,
            options,
            attrs,
            image,
            pixels,
        } = self.state;

        let mut a = Sha256::new();
        let mut attribute_digests = Vec::with_capacity(attrs.len());
        for (tag, value) in &attrs {
            let Some(attr) = attrs::lookup(*tag) else {
                continue;
            };
            let element = attrs::canonical_element(attr, value);
            a.update(&element);
            attribute_digests.push(AttributeDigest {
                tag: *tag,
                digest: attrs::element_digest(&element),
            });
        }
        let attributes = Digest(a.finalize().into());

        let mut kept = None;
        let pixel_digest = match pixels {
            Pixels::Absent => PixelDigest::None,
            Pixels::Native {
                sink,
                native,
                layout,
            } => {
                if native.is_some() {
                    return Err(FingerprintError::Truncated {
                        offset: self.parser.data_offset(),
                    });
                }
                let digest = Digest(sink.hasher.finalize().into());
                kept = sink.copy.map(|c| (layout, c));
                PixelDigest::Samples { digest }
            }
            Pixels::Held {
                layout,
                header,
                items,
                done,
                ..
            } => {
                if !done {
                    return Err(FingerprintError::Truncated {
                        offset: self.parser.data_offset(),
                    });
                }
                let mut sink = PixelSink::new(options.keep_pixels);
                sink.header(&header);
                let (bot, fragments) = match items.split_first() {
                    Some((bot, rest)) => (codec::offset_table(bot), rest),
                    None => (Vec::new(), &items[..]),
                };
                let photometric = image.photometric.clone().unwrap_or_default();
                codec::decode_into(
                    &codec::Encapsulated {
                        transfer_syntax: ts.uid(),
                        layout: &layout,
                        photometric: photometric.trim(),
                        offset_table: &bot,
                        fragments,
                    },
                    &mut sink,
                )?;
                let digest = Digest(sink.hasher.finalize().into());
                kept = sink.copy.map(|c| (layout, c));
                PixelDigest::Samples { digest }
            }
            Pixels::Codestream { sink, done, .. } => {
                if !done {
                    return Err(FingerprintError::Truncated {
                        offset: self.parser.data_offset(),
                    });
                }
                PixelDigest::Codestream {
                    transfer_syntax: ts.uid().to_string(),
                    digest: Digest(sink.hasher.finalize().into()),
                }
            }
        };
        let digest = Fingerprint::compose(&attributes, &pixel_digest);
        let sop_instance_uid = attrs
            .get(&attrs::SOP_INSTANCE_UID)
            .and_then(|v| attrs::text_value(v))
            .filter(|s| !s.is_empty());
        Ok(Detailed {
            fingerprint: Fingerprint {
                digest,
                attributes,
                pixels: pixel_digest,
                attribute_digests,
            },
            sop_instance_uid,
            transfer_syntax: ts.uid().to_string(),
            pixels: kept,
        })
    }
}

/// Splits off the first `n` bytes of `input`, or all of it if it is shorter.
fn split_at_most(input: &[u8], n: u64) -> (&[u8], &[u8]) {
    usize::try_from(n)
        .ok()
        .and_then(|n| input.split_at_checked(n))
        .unwrap_or((input, &[]))
}

/// The canonical Transfer Syntax UID element that starts a codestream's P.
fn transfer_syntax_element(uid: &str) -> Vec<u8> {
    let mut value = uid.as_bytes().to_vec();
    if value.len() % 2 == 1 {
        value.push(0);
    }
    let mut e = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I'];
    e.extend_from_slice(&(value.len() as u16).to_le_bytes());
    e.extend_from_slice(&value);
    e
}

const ITEM_TAG: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];
const SEQ_DELIM: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];

impl State {
    fn layout(&self, tag: u32) -> Result<Layout, FingerprintError> {
        Layout::new(tag, &self.image)
    }
}

impl Sink for State {
    fn wants(&self, tag: u32) -> bool {
        attrs::lookup(tag).is_some() || attrs::is_layout_only(tag)
    }

    fn attribute(&mut self, tag: u32, value: &[u8], offset: u64) -> Result<(), FingerprintError> {
        let big = self.ts.encoding.big_endian();
        if attrs::is_layout_only(tag) {
            // Planar Configuration (US).
            if let Some(&c) = value.first_chunk::<2>() {
                self.image.planar_configuration = Some(self.ts.encoding.u16(c));
            }
            return Ok(());
        }
        let Some(attr) = attrs::lookup(tag) else {
            return Ok(());
        };
        let canonical = attrs::canonical_value(attr, value, big).ok_or_else(|| {
            FingerprintError::Malformed {
                offset,
                reason: format!("{} has a length that does not fit its VR", attr.keyword),
            }
        })?;
        let us = || attrs::us_value(&canonical);
        match tag {
            attrs::ROWS => self.image.rows = us(),
            attrs::COLUMNS => self.image.columns = us(),
            attrs::SAMPLES_PER_PIXEL => self.image.samples_per_pixel = us(),
            attrs::BITS_ALLOCATED => self.image.bits_allocated = us(),
            attrs::BITS_STORED => self.image.bits_stored = us(),
            attrs::HIGH_BIT => self.image.high_bit = us(),
            attrs::PIXEL_REPRESENTATION => self.image.pixel_representation = us(),
            attrs::NUMBER_OF_FRAMES => self.image.number_of_frames = attrs::text_value(&canonical),
            attrs::PHOTOMETRIC_INTERPRETATION => {
                self.image.photometric = attrs::text_value(&canonical)
            }
            _ => {}
        }
        self.attrs.insert(tag, canonical);
        Ok(())
    }

    fn pixel_start(
        &mut self,
        tag: u32,
        vr: VR,
        length: Option<u32>,
        offset: u64,
    ) -> Result<(), FingerprintError> {
        match length {
            Some(_) => {
                let layout = self.layout(tag)?;
                let native = Native::new(layout, self.ts.encoding.big_endian(), vr)?;
                let padded = native.total() + native.total() % 2;
                let layout = native.layout().clone();
                let mut sink = PixelSink::new(self.options.keep_pixels);
                sink.header(&pixels::element_header(tag, &layout, padded));
                self.pixels = Pixels::Native {
                    native: Some(native),
                    layout,
                    sink,
                };
            }
            None if ts::decodes(&self.ts) => {
                let layout = self.layout(tag)?;
                let total = layout.total_bytes();
                let header = pixels::element_header(tag, &layout, total + total % 2);
                self.pixels = Pixels::Held {
                    layout,
                    header,
                    items: Vec::new(),
                    held: 0,
                    done: false,
                };
            }
            None => {
                // Encapsulated pixel data is defined only for transfer syntaxes encoded in
                // explicit VR little endian (PS3.5 §A.4); in implicit VR or big endian it is
                // malformed.
                if self.ts.encoding != Encoding::ExplicitLittle {
                    return Err(FingerprintError::Malformed {
                        offset,
                        reason: "encapsulated pixel data in a native transfer syntax".into(),
                    });
                }
                let mut sink = PixelSink::new(false);
                sink.header(&transfer_syntax_element(self.ts.uid()));
                sink.header(&[
                    0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
                ]);
                self.pixels = Pixels::Codestream {
                    sink,
                    items: 0,
                    done: false,
                };
            }
        }
        Ok(())
    }

    fn pixel_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError> {
        if let Pixels::Native {
            native: Some(native),
            sink,
            ..
        } = &mut self.pixels
        {
            native.push(bytes, sink);
        }
        Ok(())
    }

    fn item_start(&mut self, length: u32) -> Result<(), FingerprintError> {
        match &mut self.pixels {
            Pixels::Held { items, held, .. } => {
                *held += u64::from(length);
                if *held > self.options.max_encapsulated {
                    return Err(FingerprintError::EncapsulatedTooLarge {
                        limit: self.options.max_encapsulated,
                    });
                }
                items.push(Vec::new());
            }
            Pixels::Codestream { sink, items, .. } => {
                sink.header(&ITEM_TAG);
                if *items == 0 {
                    // The Basic Offset Table is left out: its canonical form is empty.
                    sink.header(&0u32.to_le_bytes());
                } else {
                    sink.header(&length.to_le_bytes());
                }
                *items += 1;
            }
            _ => {}
        }
        Ok(())
    }

    fn item_bytes(&mut self, bytes: &[u8]) -> Result<(), FingerprintError> {
        match &mut self.pixels {
            Pixels::Held { items, .. } => {
                if let Some(last) = items.last_mut() {
                    last.extend_from_slice(bytes);
                }
            }
            Pixels::Codestream { sink, items, .. } if *items > 1 => sink.value(bytes),
            _ => {}
        }
        Ok(())
    }

    fn pixel_end(&mut self) -> Result<(), FingerprintError> {
        match std::mem::replace(&mut self.pixels, Pixels::Absent) {
            Pixels::Native {
                native,
                layout,
                mut sink,
            } => {
                if let Some(native) = native {
                    native.finish(&mut sink)?;
                }
                self.pixels = Pixels::Native {
                    native: None,
                    layout,
                    sink,
                };
            }
            Pixels::Held {
                layout,
                header,
                items,
                held,
                ..
            } => {
                self.pixels = Pixels::Held {
                    layout,
                    header,
                    items,
                    held,
                    done: true,
                };
            }
            Pixels::Codestream { mut sink, .. } => {
                sink.header(&SEQ_DELIM);
                self.pixels = Pixels::Codestream {
                    sink,
                    items: 0,
                    done: true,
                };
            }
            Pixels::Absent => {}
        }
        Ok(())
    }
}
