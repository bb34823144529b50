//! De-identification of a data set that arrives in chunks (the gateway's P-DATA fragments, or
//! a file read piece by piece). Each chunk is fed once to the one data-set grammar
//! ([`radguard_dicom::tokens::Tokenizer`]); nothing is parsed twice. The elements before Pixel
//! Data are built into a tree (up to a cap), transformed and re-encoded with lengths recomputed;
//! the pixel data bytes (its header, value or encapsulated fragments) then pass through
//! untouched as they come; elements after the pixel data (rare: padding, signatures) are held
//! and transformed at the end.
//!
//! ```text
//!   Head ──(top-level pixel data header)──▶ Pixels ──(value or fragments complete)──▶ Tail
//!     └────────────────────────(finish: no pixel data)────────────────────────▶ done
//! ```

use std::sync::Arc;

use radguard_dicom::limits::Limits;
use radguard_dicom::tokens::{is_pixel_tag, ElementKind, ErrorKind, Header, Token, Tokenizer};

use crate::codec::{
    encode_elements, tag_str, tree_builder, DataSet, Encoding, ParseError, TransferSyntax,
    TreeBuilder,
};
use crate::transform::{DeidError, Deidentifier, Report, Session};

/// Default cap on the bytes held before Pixel Data (and after it).
pub const DEFAULT_HEAD_CAP: usize = 16 * 1024 * 1024;

/// What a finished stream produced besides its bytes.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    /// Bytes of data set received.
    pub bytes_in: u64,
    /// Bytes of data set emitted.
    pub bytes_out: u64,
    /// Whether the data set had bulk pixel data that was passed through.
    pub had_pixel_data: bool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Building the tree of the elements before Pixel Data.
    Head,
    /// Passing the top-level pixel data element through: input bytes from offset `from` on
    /// are still to be emitted; it ends at `end` (known from the header for a defined length,
    /// from the sequence delimiter for encapsulated fragments).
    Pixels {
        from: u64,
        end: Option<u64>,
    },
    /// Building the tree of the elements after the pixel data, which began at `start`.
    Tail {
        start: u64,
    },
    Failed,
}

/// The streaming de-identifier for one data set.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use radguard_deid::{StreamDeid, Deidentifier};
/// # fn f(deid: Arc<Deidentifier>, chunks: Vec<Vec<u8>>) -> Result<(), radguard_deid::DeidError> {
/// let mut s = StreamDeid::new(deid, "1.2.840.10008.1.2.1")?;
/// let mut out = Vec::new();
/// for c in &chunks {
///     s.push(c, &mut out)?;   // send `out` on, then clear it
/// }
/// let outcome = s.finish(&mut out)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct StreamDeid {
    tz: Tokenizer,
    st: State,
}

/// Everything but the tokenizer (which is borrowed while a chunk's tokens are handled).
#[derive(Debug)]
struct State {
    deid: Arc<Deidentifier>,
    encoding: Encoding,
    phase: Phase,
    tree: TreeBuilder,
    cap: usize,
    session: Option<Session>,
    bytes_in: u64,
    bytes_out: u64,
    had_pixels: bool,
    /// The last (at most 12) input bytes before the current chunk: a pixel data header can
    /// begin in an earlier chunk than the one that completes it.
    recent: Vec<u8>,
}

/// Bytes of an element header at most (PS3.5 §7.1.2).
const MAX_HEADER: usize = 12;

impl StreamDeid {
    /// A stream for a data set in transfer syntax `ts_uid`. Transfer syntaxes that are not
    /// valid UIDs or that PS3.6 does not list are refused (their encoding would be a guess),
    /// and so are deflated ones (their pixel data cannot pass through untouched).
    pub fn new(deid: Arc<Deidentifier>, ts_uid: &str) -> Result<StreamDeid, DeidError> {
        let unsupported = || DeidError::UnsupportedTransferSyntax(ts_uid.to_string());
        let ts = TransferSyntax::from_uid(ts_uid).map_err(|_| unsupported())?;
        if !ts.known || ts.deflated {
            return Err(unsupported());
        }
        Ok(StreamDeid::with_encoding(deid, ts.encoding))
    }

    /// A stream for a data set in a known encoding (not deflated).
    pub fn with_encoding(deid: Arc<Deidentifier>, encoding: Encoding) -> StreamDeid {
        StreamDeid {
            tz: Tokenizer::new(encoding, Limits::GATEWAY),
            st: State {
                deid,
                encoding,
                phase: Phase::Head,
                tree: tree_builder(Limits::GATEWAY),
                cap: DEFAULT_HEAD_CAP,
                session: None,
                bytes_in: 0,
                bytes_out: 0,
                had_pixels: false,
                recent: Vec::with_capacity(MAX_HEADER),
            },
        }
    }

    /// Change the cap on held bytes (default 16 MiB): the elements before the pixel data, and
    /// those after it, may each take at most this many bytes of input.
    pub fn with_cap(mut self, cap: usize) -> StreamDeid {
        self.st.cap = cap;
        self
    }

    /// The report so far; complete for the head once pixel data started passing.
    pub fn report(&self) -> Option<&Report> {
        self.st.session.as_ref().map(|s| s.report())
    }

    /// Whether the head has been transformed and emitted.
    pub fn head_done(&self) -> bool {
        self.st.session.is_some()
    }

    /// Feed the next chunk; de-identified bytes ready to send are appended to `out`. After an
    /// error the stream is dead: nothing more is emitted.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DeidError> {
        let st = &mut self.st;
        st.bytes_in += chunk.len() as u64;
        let before = out.len();
        let r = st.chunk(&mut self.tz, chunk, out);
        st.bytes_out += (out.len() - before) as u64;
        if r.is_err() {
            st.phase = Phase::Failed;
        }
        r
    }

    /// The data set is complete: emit what is still held and return the report.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<Outcome, DeidError> {
        let StreamDeid { tz, mut st } = self;
        let before = out.len();
        let end = tz.finish();
        match st.phase {
            Phase::Failed => return Err(DeidError::StreamFailed),
            // The tokenizer stopped inside the pixel data (nothing else can leave it here).
            Phase::Pixels { .. } => return Err(DeidError::TruncatedPixelData),
            Phase::Head => {
                end.map_err(ParseError::from)?;
                // No pixel data: the whole data set was the head.
                st.check_cap(tz.offset())?;
                st.emit_head(out)?;
            }
            Phase::Tail { start } => {
                end.map_err(ParseError::from)?;
                st.check_cap(tz.offset().saturating_sub(start))?;
                let tree = std::mem::replace(&mut st.tree, tree_builder(Limits::GATEWAY));
                let mut ds = tree.finish()?;
                if let Some(s) = st.session.as_mut() {
                    st.deid.apply_tail(s, &mut ds);
                }
                encode_elements(&ds.elements, st.encoding, out)?;
            }
        }
        st.bytes_out += (out.len() - before) as u64;
        let report = match st.session.take() {
            Some(s) => s.into_report(),
            None => Report::default(),
        };
        Ok(Outcome {
            report,
            bytes_in: st.bytes_in,
            bytes_out: st.bytes_out,
            had_pixel_data: st.had_pixels,
        })
    }
}

impl State {
    /// Handles one chunk: every token once, then the raw pixel bytes of the chunk.
    fn chunk(
        &mut self,
        tz: &mut Tokenizer,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeidError> {
        if matches!(self.phase, Phase::Failed) {
            return Err(DeidError::StreamFailed);
        }
        // Absolute offset of chunk[0]: every earlier byte was consumed by the tokenizer.
        let base = tz.offset();
        for t in tz.tokens(chunk) {
            self.token(t, base, chunk, out)?;
        }
        if let Phase::Pixels { from, end } = self.phase {
            let until = end.unwrap_or(u64::MAX).min(base + chunk.len() as u64);
            self.pass(base, chunk, from, until, out);
            self.phase = Phase::Pixels { from: until, end };
        }
        self.remember(chunk);
        Ok(())
    }

    fn token(
        &mut self,
        t: Token<'_>,
        base: u64,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeidError> {
        match self.phase {
            Phase::Failed => Err(DeidError::StreamFailed),
            Phase::Head => match t {
                Token::Element(h) if h.depth == 0 && is_pixel_tag(h.tag) => {
                    self.start_pixels(h, base, chunk, out)
                }
                t => {
                    self.tree.token(t)?;
                    self.check_cap(self.tree.position())
                }
            },
            Phase::Pixels { from, end } => match t {
                // The end of a defined-length value, or of the fragments: the tail begins.
                Token::ValueEnd if end.is_some() => self.end_pixels(from, end, base, chunk, out),
                Token::SequenceEnd { offset } => {
                    self.end_pixels(from, Some(offset + 8), base, chunk, out)
                }
                Token::Error(e) => Err(match e.kind {
                    ErrorKind::NotAFragment { .. } | ErrorKind::UndefinedFragment => {
                        DeidError::BadFragments(e.to_string())
                    }
                    _ => ParseError::from(e).into(),
                }),
                // Fragment headers, values, a delimiter's length: passed as they are.
                _ => Ok(()),
            },
            Phase::Tail { start } => {
                self.tree.token(t)?;
                self.check_cap(self.tree.position().saturating_sub(start))
            }
        }
    }

    /// The top-level pixel data header: the head is complete. Transform and emit it, then the
    /// header as it was read.
    fn start_pixels(
        &mut self,
        h: Header,
        base: u64,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeidError> {
        self.check_cap(h.offset)?;
        let value = h.offset + u64::from(h.header_len);
        let end = match h.kind {
            ElementKind::Value => Some(value + u64::from(h.length.defined().unwrap_or(0))),
            ElementKind::Encapsulated => None,
            ElementKind::Sequence => {
                return Err(ParseError::Malformed {
                    offset: h.offset,
                    tag: Some(tag_str(h.tag)),
                    why: "pixel data encoded as a sequence".into(),
                }
                .into())
            }
        };
        self.emit_head(out)?;
        self.had_pixels = true;
        // The header may begin in the bytes kept from earlier chunks.
        let start = base.saturating_sub(self.recent.len() as u64);
        let from = usize::try_from(h.offset.saturating_sub(start)).unwrap_or(usize::MAX);
        let header = self
            .recent
            .iter()
            .chain(chunk)
            .skip(from)
            .take(usize::from(h.header_len));
        out.extend(header);
        self.phase = Phase::Pixels { from: value, end };
        Ok(())
    }

    /// The pixel data ends at `end`: emit its last bytes; what follows is the tail.
    fn end_pixels(
        &mut self,
        from: u64,
        end: Option<u64>,
        base: u64,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DeidError> {
        let end = end.unwrap_or(from);
        self.pass(base, chunk, from, end, out);
        self.phase = Phase::Tail { start: end };
        Ok(())
    }

    /// Emits the input bytes from `from` to `until` (absolute offsets) found in this chunk.
    fn pass(&self, base: u64, chunk: &[u8], from: u64, until: u64, out: &mut Vec<u8>) {
        let at = |o: u64| usize::try_from(o.saturating_sub(base)).unwrap_or(usize::MAX);
        let (a, b) = (at(from).min(chunk.len()), at(until).min(chunk.len()));
        out.extend_from_slice(chunk.get(a..b.max(a)).unwrap_or_default());
    }

    /// Keeps the last bytes of the input for a header that spans chunks.
    fn remember(&mut self, chunk: &[u8]) {
        let keep = MAX_HEADER
            .saturating_sub(chunk.len())
            .min(self.recent.len());
        self.recent.drain(..self.recent.len() - keep);
        let tail = chunk.len().saturating_sub(MAX_HEADER - keep);
        self.recent
            .extend_from_slice(chunk.get(tail..).unwrap_or_default());
    }

    /// The head (or the tail) must fit the cap: `held` is how many bytes of it were read.
    fn check_cap(&self, held: u64) -> Result<(), DeidError> {
        if held <= self.cap as u64 {
            return Ok(());
        }
        Err(match self.phase {
            Phase::Tail { .. } => DeidError::TailTooLarge { cap: self.cap },
            _ => DeidError::HeadTooLarge { cap: self.cap },
        })
    }

    fn emit_head(&mut self, out: &mut Vec<u8>) -> Result<(), DeidError> {
        let mut ds: DataSet = self.tree.take();
        let mut session = self.deid.begin(&ds)?;
        self.deid.apply_head(&mut session, &mut ds);
        encode_elements(&ds.elements, self.encoding, out)?;
        self.session = Some(session);
        Ok(())
    }
}
