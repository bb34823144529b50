//! De-identification of a data set that arrives in chunks (the gateway's P-DATA fragments, or
//! a file read piece by piece): the elements before Pixel Data are held (up to a cap),
//! transformed and re-encoded with lengths recomputed; the pixel data bytes then pass through
//! untouched as they come; elements after the pixel data (rare: padding, signatures) are held
//! and transformed at the end.
//!
//! ```text
//!   Head ──(pixel data header seen)──▶ Pixels ──(value or fragments complete)──▶ Tail
//!     └────────────────────────(finish: no pixel data)────────────────────────▶ done
//! ```

use std::sync::Arc;

use crate::codec::{
    encode_elements, is_bulk_pixel_tag, tag_str, Cursor, DataSet, Element, PErr, ParseError,
    Syntax, TransferSyntax, ITEM, SEQUENCE_DELIMITER, UNDEFINED,
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

#[derive(Debug)]
enum Pixels {
    /// A defined-length value: this many bytes still to pass.
    Defined { remaining: u64 },
    /// Encapsulated fragments: reading an item header (bytes so far), or inside an item.
    Fragments {
        hdr: [u8; 8],
        have: usize,
        in_item: u64,
    },
}

#[derive(Debug)]
enum State {
    Head,
    Pixels(Pixels),
    Tail,
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
    deid: Arc<Deidentifier>,
    syntax: Syntax,
    state: State,
    /// Held bytes not yet parsed (head or tail).
    buf: Vec<u8>,
    /// Head (or tail) elements parsed so far.
    parsed: Vec<Element>,
    /// Bytes of head (or tail) consumed into `parsed`.
    parsed_bytes: usize,
    /// Absolute stream offset of `buf[0]`.
    base: u64,
    /// Do not retry a partial element before `buf` holds this many bytes.
    retry_at: usize,
    cap: usize,
    session: Option<Session>,
    bytes_in: u64,
    bytes_out: u64,
    had_pixels: bool,
}

impl StreamDeid {
    /// A stream for a data set in transfer syntax `ts_uid`. Deflated and non-standard
    /// transfer syntaxes are refused (their pixel data cannot pass through untouched).
    pub fn new(deid: Arc<Deidentifier>, ts_uid: &str) -> Result<StreamDeid, DeidError> {
        let ts = TransferSyntax::from_uid(ts_uid)
            .ok_or_else(|| DeidError::UnsupportedTransferSyntax(ts_uid.to_string()))?;
        if ts.deflated {
            return Err(DeidError::UnsupportedTransferSyntax(ts.uid));
        }
        Ok(StreamDeid::with_syntax(deid, ts.syntax))
    }

    /// A stream for a data set in a known byte encoding.
    pub fn with_syntax(deid: Arc<Deidentifier>, syntax: Syntax) -> StreamDeid {
        StreamDeid {
            deid,
            syntax,
            state: State::Head,
            buf: Vec::new(),
            parsed: Vec::new(),
            parsed_bytes: 0,
            base: 0,
            retry_at: 0,
            cap: DEFAULT_HEAD_CAP,
            session: None,
            bytes_in: 0,
            bytes_out: 0,
            had_pixels: false,
        }
    }

    /// Change the cap on held bytes (default 16 MiB).
    pub fn with_cap(mut self, cap: usize) -> StreamDeid {
        self.cap = cap;
        self
    }

    /// The report so far; complete for the head once pixel data started passing.
    pub fn report(&self) -> Option<&Report> {
        self.session.as_ref().map(|s| s.report())
    }

    /// Whether the head has been transformed and emitted.
    pub fn head_done(&self) -> bool {
        self.session.is_some()
    }

    /// Feed the next chunk; de-identified bytes ready to send are appended to `out`. After an
    /// error the stream is dead: nothing more is emitted.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DeidError> {
        self.bytes_in += chunk.len() as u64;
        let before = out.len();
        let r = self.push_inner(chunk, out, false);
        self.bytes_out += (out.len() - before) as u64;
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    /// The data set is complete: emit what is still held and return the report.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Outcome, DeidError> {
        let before = out.len();
        self.push_inner(&[], out, true)?;
        match self.state {
            State::Head => {
                // No pixel data: the whole data set was the head.
                self.emit_head(out)?;
            }
            State::Pixels(_) => return Err(DeidError::TruncatedPixelData),
            State::Tail => {
                let mut ds = DataSet {
                    elements: std::mem::take(&mut self.parsed),
                };
                if let Some(s) = self.session.as_mut() {
                    self.deid.apply_tail(s, &mut ds);
                }
                encode_elements(&ds.elements, self.syntax, out)?;
            }
            State::Failed => return Err(DeidError::StreamFailed),
        }
        self.bytes_out += (out.len() - before) as u64;
        let report = match self.session.take() {
            Some(s) => s.into_report(),
            None => Report::default(),
        };
        Ok(Outcome {
            report,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            had_pixel_data: self.had_pixels,
        })
    }

    fn push_inner(&mut self, chunk: &[u8], out: &mut Vec<u8>, last: bool) -> Result<(), DeidError> {
        match &mut self.state {
            State::Failed => Err(DeidError::StreamFailed),
            State::Pixels(_) => {
                let rest = self.pass_pixels(chunk, out)?;
                if matches!(self.state, State::Tail) {
                    self.buf.extend_from_slice(rest);
                    self.parse_held(last, false, out)?;
                }
                Ok(())
            }
            State::Head => {
                self.buf.extend_from_slice(chunk);
                self.parse_held(last, true, out)
            }
            State::Tail => {
                self.buf.extend_from_slice(chunk);
                self.parse_held(last, false, out)
            }
        }
    }

    /// Parse held bytes into elements (head: until the pixel data header).
    fn parse_held(&mut self, last: bool, head: bool, out: &mut Vec<u8>) -> Result<(), DeidError> {
        if !last && self.buf.len() < self.retry_at {
            return self.check_cap(head);
        }
        let mut pos = 0usize;
        let mut pixel: Option<(usize, u32)> = None; // (header length, value length)
        {
            // A soft end: running out means "wait" (or, at the end, "truncated").
            let mut c = Cursor::new(&self.buf, self.base, true);
            while !c.at_end() {
                let start = c.pos;
                if head {
                    match c.peek_tag(self.syntax) {
                        Ok(tag) if is_bulk_pixel_tag(tag) => match c.header(self.syntax) {
                            Ok(h) => {
                                pixel = Some((h.header_len, h.len));
                                pos = start;
                                break;
                            }
                            Err(PErr::Incomplete) => break,
                            Err(PErr::Bad(e)) => return Err(e.into()),
                        },
                        Ok(_) => {}
                        Err(PErr::Incomplete) => break,
                        Err(PErr::Bad(e)) => return Err(e.into()),
                    }
                }
                match c.element(self.syntax, 0) {
                    Ok(e) => {
                        self.parsed.push(e);
                        pos = c.pos;
                    }
                    Err(PErr::Incomplete) => break,
                    Err(PErr::Bad(e)) => return Err(e.into()),
                }
            }
        }
        self.parsed_bytes += pos;
        self.base += pos as u64;
        self.buf.drain(..pos);
        if let Some((hlen, vlen)) = pixel {
            self.emit_head(out)?;
            let header: Vec<u8> = self.buf.drain(..hlen).collect();
            self.base += hlen as u64;
            out.extend_from_slice(&header);
            self.had_pixels = true;
            self.state = State::Pixels(if vlen == UNDEFINED {
                Pixels::Fragments {
                    hdr: [0; 8],
                    have: 0,
                    in_item: 0,
                }
            } else {
                Pixels::Defined {
                    remaining: u64::from(vlen),
                }
            });
            let rest = std::mem::take(&mut self.buf);
            let tail = self.pass_pixels(&rest, out)?.to_vec();
            if matches!(self.state, State::Tail) {
                self.buf = tail;
                return self.parse_held(last, false, out);
            }
            return Ok(());
        }
        if last && !self.buf.is_empty() {
            return Err(ParseError::Truncated { offset: self.base }.into());
        }
        // Retry a partial element only once the held bytes have doubled.
        self.retry_at = if self.buf.is_empty() {
            0
        } else {
            self.buf.len().saturating_mul(2).max(self.buf.len() + 1)
        };
        self.check_cap(head)
    }

    fn check_cap(&self, head: bool) -> Result<(), DeidError> {
        if self.parsed_bytes + self.buf.len() > self.cap {
            return Err(if head {
                DeidError::HeadTooLarge { cap: self.cap }
            } else {
                DeidError::TailTooLarge { cap: self.cap }
            });
        }
        Ok(())
    }

    fn emit_head(&mut self, out: &mut Vec<u8>) -> Result<(), DeidError> {
        let mut ds = DataSet {
            elements: std::mem::take(&mut self.parsed),
        };
        let mut session = self.deid.begin(&ds)?;
        self.deid.apply_head(&mut session, &mut ds);
        encode_elements(&ds.elements, self.syntax, out)?;
        self.session = Some(session);
        self.parsed_bytes = 0;
        self.retry_at = 0;
        Ok(())
    }

    /// Pass pixel bytes through; returns what follows the pixel data in this chunk.
    fn pass_pixels<'c>(
        &mut self,
        chunk: &'c [u8],
        out: &mut Vec<u8>,
    ) -> Result<&'c [u8], DeidError> {
        let big = self.syntax == Syntax::ExplicitBig;
        let mut rest = chunk;
        loop {
            let State::Pixels(p) = &mut self.state else {
                return Ok(rest);
            };
            match p {
                Pixels::Defined { remaining } => {
                    let n = (*remaining).min(rest.len() as u64) as usize;
                    let (now, after) = rest.split_at(n);
                    out.extend_from_slice(now);
                    self.base += n as u64;
                    *remaining -= n as u64;
                    rest = after;
                    if *remaining == 0 {
                        self.state = State::Tail;
                        continue;
                    }
                    return Ok(rest);
                }
                Pixels::Fragments { hdr, have, in_item } => {
                    if *in_item > 0 {
                        let n = (*in_item).min(rest.len() as u64) as usize;
                        let (now, after) = rest.split_at(n);
                        out.extend_from_slice(now);
                        self.base += n as u64;
                        *in_item -= n as u64;
                        rest = after;
                        if rest.is_empty() {
                            return Ok(rest);
                        }
                        continue;
                    }
                    let want = 8 - *have;
                    let n = want.min(rest.len());
                    if let (Some(dst), Some(src)) = (hdr.get_mut(*have..*have + n), rest.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *have += n;
                    rest = rest.get(n..).unwrap_or_default();
                    if *have < 8 {
                        return Ok(rest);
                    }
                    let rd16 = |a: u8, b: u8| {
                        if big {
                            u16::from_be_bytes([a, b])
                        } else {
                            u16::from_le_bytes([a, b])
                        }
                    };
                    let tag = dicom_core::Tag(rd16(hdr[0], hdr[1]), rd16(hdr[2], hdr[3]));
                    let lb = [hdr[4], hdr[5], hdr[6], hdr[7]];
                    let len = if big {
                        u32::from_be_bytes(lb)
                    } else {
                        u32::from_le_bytes(lb)
                    };
                    out.extend_from_slice(hdr);
                    self.base += 8;
                    *have = 0;
                    if tag == ITEM && len != UNDEFINED {
                        *in_item = u64::from(len);
                    } else if tag == SEQUENCE_DELIMITER {
                        self.state = State::Tail;
                    } else {
                        return Err(DeidError::BadFragments(format!(
                            "{} with length {len:#x} where a fragment item was expected",
                            tag_str(tag)
                        )));
                    }
                }
            }
        }
    }
}
