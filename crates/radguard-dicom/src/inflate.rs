//! Deflated data sets (PS3.5 §A.5: the whole data set is an RFC 1951 deflate stream, no zlib
//! header) as an input adapter in front of the tokenizer, with decompression-bomb caps
//! ([`Limits::max_inflated`], [`Limits::max_inflate_ratio`]); and [`DataSetReader`], the one
//! entry point that reads a data set in any transfer syntax.

use flate2::{Decompress, FlushDecompress, Status};

use crate::limits::Limits;
use crate::tokens::{ErrorKind, GrammarError, Token, Tokenizer};
use crate::ts::TransferSyntax;

const OUT_CHUNK: usize = 64 * 1024;

/// Why a deflated data set cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the deflated data set is corrupt")]
    Corrupt,
    #[error("the deflated data set inflates past {limit} bytes (decompression bomb)")]
    TooLarge { limit: u64 },
    #[error(
        "the deflated data set inflates {ratio}:1 or more past {floor} bytes (decompression bomb)"
    )]
    Ratio { ratio: u64, floor: u64 },
    #[error("the deflate stream ends before the data")]
    Truncated,
}

/// A push inflater with bomb caps.
pub struct Inflater {
    d: Decompress,
    out: Vec<u8>,
    limits: Limits,
    done: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("in", &self.d.total_in())
            .field("out", &self.d.total_out())
            .field("done", &self.done)
            .finish()
    }
}

impl Inflater {
    pub fn new(limits: Limits) -> Inflater {
        Inflater {
            d: Decompress::new(false),
            out: vec![0; OUT_CHUNK],
            limits,
            done: false,
        }
    }

    /// Compressed bytes consumed and inflated bytes produced so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.d.total_in(), self.d.total_out())
    }

    /// True once the deflate stream has ended.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Inflates `input`, handing the output to `sink` in chunks. Returns how many input bytes
    /// belonged to the deflate stream: fewer than `input.len()` only once the stream has ended
    /// (the rest is data after the data set).
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, InflateError> {
        let start = input.len();
        // A call returns when the output buffer or the decompressor's 32 KiB window is full; if
        // the input is used up at that moment, what it has already read still holds output.
        // Once the input is used up, call again with none while calls still produce output,
        // so that what a chunk yields does not depend on where the stream was split.
        let mut more = false;
        while !self.done && (!input.is_empty() || more) {
            let (in0, out0) = self.totals();
            let status = self
                .d
                .decompress(input, &mut self.out, FlushDecompress::None);
            let (in1, out1) = self.totals();
            let used = (in1 - in0) as usize;
            let mut made = (out1 - out0) as usize;
            more = made > 0;
            input = input.get(used..).unwrap_or_default();
            // The absolute cap cuts the output exactly at the limit, whatever the input's
            // splits; the ratio cap is checked after each step (its offset depends on them).
            let over = out1.saturating_sub(self.limits.max_inflated);
            made = made.saturating_sub(over as usize);
            if made > 0 {
                sink(self.out.get(..made).unwrap_or_default());
            }
            // Output produced before a corrupt block is handed on first, so the tokens before
            // the error do not depend on where the input was split.
            let status = status.map_err(|_| InflateError::Corrupt)?;
            self.check()?;
            match status {
                Status::StreamEnd => self.done = true,
                Status::Ok => {}
                Status::BufError if used == 0 && made == 0 => break,
                Status::BufError => {}
            }
        }
        Ok(start - input.len())
    }

    fn check(&self) -> Result<(), InflateError> {
        let (i, o) = self.totals();
        if o > self.limits.max_inflated {
            return Err(InflateError::TooLarge {
                limit: self.limits.max_inflated,
            });
        }
        if o > self.limits.inflate_ratio_floor
            && o > i.saturating_mul(self.limits.max_inflate_ratio)
        {
            return Err(InflateError::Ratio {
                ratio: self.limits.max_inflate_ratio,
                floor: self.limits.inflate_ratio_floor,
            });
        }
        Ok(())
    }
}

/// Reads a data set in a transfer syntax: inflating when deflated, tokenizing always.
///
/// Offsets in tokens are offsets in the data set as tokenized (inflated bytes for a deflated
/// transfer syntax).
#[derive(Debug)]
pub struct DataSetReader {
    tokenizer: Tokenizer,
    inflater: Option<Inflater>,
    /// Compressed bytes after the end of the deflate stream.
    after_stream: u64,
    failed: bool,
}

impl DataSetReader {
    pub fn new(ts: &TransferSyntax, limits: Limits) -> DataSetReader {
        DataSetReader {
            tokenizer: Tokenizer::new(ts.encoding, limits),
            inflater: ts.deflated.then(|| Inflater::new(limits)),
            after_stream: 0,
            failed: false,
        }
    }

    /// Tells the tokenizer the data set's size on disk (see [`Tokenizer::with_total`]); ignored
    /// for deflated data sets, whose inflated size is not known in advance.
    pub fn with_total(mut self, total: u64) -> DataSetReader {
        if self.inflater.is_none() {
            self.tokenizer = self.tokenizer.with_total(total);
        }
        self
    }

    /// Feeds the next chunk of the data set as it is on the wire or on disk.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(Token<'_>)) {
        if self.failed {
            return;
        }
        let tz = &mut self.tokenizer;
        match self.inflater.as_mut() {
            None => tz.feed(chunk, f),
            Some(inf) => {
                let r = inf.feed(chunk, |out| {
                    for t in tz.tokens(out) {
                        f(t);
                    }
                });
                match r {
                    Ok(used) => self.after_stream += (chunk.len() - used) as u64,
                    Err(e) => {
                        self.failed = true;
                        f(Token::Error(GrammarError {
                            offset: tz.offset(),
                            kind: ErrorKind::Inflate(e),
                        }))
                    }
                }
            }
        }
    }

    /// Checks that the data set ended cleanly (see [`Tokenizer::finish`]); a deflate stream
    /// must have ended too.
    pub fn finish(&self) -> Result<(), GrammarError> {
        if let Some(inf) = &self.inflater {
            if self.failed {
                return Err(GrammarError {
                    offset: self.tokenizer.offset(),
                    kind: ErrorKind::Inflate(InflateError::Corrupt),
                });
            }
            if !inf.done() {
                return Err(GrammarError {
                    offset: self.tokenizer.offset(),
                    kind: ErrorKind::Inflate(InflateError::Truncated),
                });
            }
        }
        self.tokenizer.finish()
    }

    /// The tokenizer (offset, depth, boundary).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Compressed bytes found after the end of the deflate stream.
    pub fn bytes_after_stream(&self) -> u64 {
        self.after_stream
    }

    pub fn inflater(&self) -> Option<&Inflater> {
        self.inflater.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::{tokenize_chunks, OwnedToken};
    use crate::ts::{Encoding, DEFLATED_EXPLICIT_VR_LE};
    use std::io::Write;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn data_set() -> Vec<u8> {
        let mut d = Vec::new();
        for i in 0..200u16 {
            d.extend_from_slice(&0x0009u16.to_le_bytes());
            d.extend_from_slice(&(0x1000 + i).to_le_bytes());
            d.extend_from_slice(b"LO");
            d.extend_from_slice(&4u16.to_le_bytes());
            d.extend_from_slice(b"ABCD");
        }
        d
    }

    fn read(
        ts: &TransferSyntax,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<OwnedToken>, Result<(), GrammarError>) {
        let mut r = DataSetReader::new(ts, Limits::GATEWAY);
        let mut buf = Vec::new();
        for c in input.chunks(chunk) {
            r.feed(c, |t| buf.push(t.into()));
        }
        let v = merge(buf);
        (v, r.finish())
    }

    fn merge(v: Vec<OwnedToken>) -> Vec<OwnedToken> {
        let mut out: Vec<OwnedToken> = Vec::new();
        for t in v {
            match (t, out.last_mut()) {
                (OwnedToken::Value(b), Some(OwnedToken::Value(a))) => a.extend_from_slice(&b),
                (t, _) => out.push(t),
            }
        }
        out
    }

    #[test]
    fn deflated_reads_as_its_inflated_form() {
        let d = data_set();
        let plain = tokenize_chunks(
            Tokenizer::new(Encoding::ExplicitLittle, Limits::GATEWAY),
            [d.as_slice()],
        );
        let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        let z = deflate(&d);
        for chunk in [1, 7, 100, z.len()] {
            assert_eq!(read(&ts, &z, chunk), plain, "chunk {chunk}");
        }
        // Cut short: the stream did not end.
        let (_, end) = read(&ts, &z[..z.len() / 2], 50);
        assert!(end.is_err());
    }

    /// A deflate stream that inflates `data` and then turns corrupt: a sync flush (byte
    /// aligned, not final), then a final block of the reserved type 11 (RFC 1951 §3.2.3).
    fn corrupt_after(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.flush().unwrap();
        let mut z = e.get_ref().clone();
        z.push(0x07);
        z
    }

    #[test]
    fn a_corrupt_stream_reads_the_same_whole_and_split() {
        let d = data_set();
        let z = corrupt_after(&d);
        let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        let whole = read(&ts, &z, z.len());
        // Every byte inflated before the corruption was read, then the error.
        let plain = tokenize_chunks(
            Tokenizer::new(Encoding::ExplicitLittle, Limits::GATEWAY),
            [d.as_slice()],
        );
        assert_eq!(whole.0.len(), plain.0.len() + 1);
        assert_eq!(whole.0[..plain.0.len()], plain.0[..]);
        assert!(matches!(
            whole.0.last(),
            Some(OwnedToken::Error(GrammarError {
                kind: ErrorKind::Inflate(InflateError::Corrupt),
                offset,
            })) if *offset == d.len() as u64
        ));
        for chunk in [1, 7, 100] {
            assert_eq!(read(&ts, &z, chunk), whole, "chunk {chunk}");
        }
    }

    /// Pixel-like data: runs of random length of a random byte (long matches, so a few
    /// compressed bytes can inflate to more than one output buffer).
    fn runs(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 4000) as usize + 1;
            out.resize((out.len() + len).min(n), (x >> 32) as u8);
        }
        out
    }

    #[test]
    fn inflated_bytes_still_held_when_the_input_runs_out_are_handed_on() {
        // A deflated data set whose output per compressed byte is large: when a chunk's last
        // bytes fill the output buffer, the decompressor still holds inflated bytes; they must
        // come out with that chunk, not with the next one (or never, when it is the last).
        let mut d = data_set();
        d.extend_from_slice(&[0x09, 0x00, 0x00, 0x20, b'O', b'B', 0, 0]);
        d.extend_from_slice(&(400u32 << 10).to_le_bytes());
        d.extend_from_slice(&runs(400 << 10));
        let plain = tokenize_chunks(
            Tokenizer::new(Encoding::ExplicitLittle, Limits::GATEWAY),
            [d.as_slice()],
        );
        assert_eq!(plain.1, Ok(()));
        let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        let z = deflate(&d);
        for chunk in [z.len(), 1, 7, 100, 4096] {
            assert_eq!(read(&ts, &z, chunk), plain, "chunk {chunk}");
        }
        // Split once anywhere, whole or cut short: the same tokens as read in one piece.
        let split = |data: &[u8], at: usize| {
            let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
            let mut buf = Vec::new();
            for c in [&data[..at], &data[at..]] {
                r.feed(c, |t| buf.push(OwnedToken::from(t)));
            }
            (merge(buf), r.finish())
        };
        for cut in [z.len(), z.len() / 2, z.len() / 3, z.len() - 3] {
            let whole = read(&ts, &z[..cut], cut);
            for at in (0..cut).step_by(cut / 200 + 1) {
                assert_eq!(split(&z[..cut], at), whole, "cut {cut}, split at {at}");
            }
            for chunk in 1..=16 {
                assert_eq!(
                    read(&ts, &z[..cut], chunk),
                    whole,
                    "cut {cut}, chunk {chunk}"
                );
            }
        }
    }

    #[test]
    fn a_stream_cut_anywhere_inflates_to_the_same_bytes_whole_and_in_pieces() {
        // The decompressor returns when its 32 KiB window is full; if the input is used up
        // at that moment, bits already read still hold output. Without asking for it the
        // last piece's output depended on where the pieces ended (a cut at a window end).
        let z = deflate(&runs(70_000));
        let inflate = |data: &[u8], step: usize| {
            let mut inf = Inflater::new(Limits::GATEWAY);
            let mut out = Vec::new();
            for piece in data.chunks(step) {
                inf.feed(piece, |b| out.extend_from_slice(b)).unwrap();
            }
            out
        };
        for cut in 1..z.len() {
            let whole = inflate(&z[..cut], cut);
            for step in [1, 2, 3] {
                let pieces = inflate(&z[..cut], step);
                assert!(
                    pieces == whole,
                    "cut {cut}, step {step}: {} bytes, whole {}",
                    pieces.len(),
                    whole.len()
                );
            }
        }
    }

    #[test]
    fn the_size_cap_stops_at_the_same_byte_whole_and_split() {
        let d = data_set();
        let limits = Limits {
            max_inflated: 1000,
            ..Limits::GATEWAY
        };
        let z = deflate(&d);
        let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        let run = |chunk: usize| {
            let mut r = DataSetReader::new(&ts, limits);
            let mut buf = Vec::new();
            for c in z.chunks(chunk) {
                r.feed(c, |t| buf.push(OwnedToken::from(t)));
            }
            (merge(buf), r.finish())
        };
        let whole = run(z.len());
        assert!(
            matches!(
                whole.0.last(),
                Some(OwnedToken::Error(GrammarError {
                    kind: ErrorKind::Inflate(InflateError::TooLarge { limit: 1000 }),
                    offset: 1000,
                }))
            ),
            "{:?}",
            whole.0.last()
        );
        for chunk in [1, 7, 100] {
            assert_eq!(run(chunk), whole, "chunk {chunk}");
        }
    }

    /// A match that reaches back before the start of the output (RFC 1951 §3.2.3) is corrupt,
    /// as zlib (and so pydicom and DCMTK) reads it; a backend that fills it with zeros would
    /// read a data set the others refuse.
    #[test]
    fn a_distance_before_the_start_is_corrupt() {
        // Fixed-Huffman final block: length 3 at distance 1 with no output yet, end of block.
        let z = [0x03, 0x02, 0x00];
        let mut inf = Inflater::new(Limits::GATEWAY);
        let mut out = Vec::new();
        assert_eq!(
            inf.feed(&z, |b| out.extend_from_slice(b)),
            Err(InflateError::Corrupt),
            "inflated {out:?}"
        );
    }

    #[test]
    fn bombs_are_refused() {
        let mut zeros = vec![0x09, 0x00, 0x00, 0x10, b'O', b'B', 0, 0];
        zeros.extend_from_slice(&(40u32 << 20).to_le_bytes());
        zeros.resize(12 + (40 << 20), 0);
        let z = deflate(&zeros);
        let ts = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
        let mut errors = Vec::new();
        for c in z.chunks(4096) {
            r.feed(c, |t| {
                if let Token::Error(e) = t {
                    errors.push(e)
                }
            });
        }
        assert!(
            matches!(
                errors.as_slice(),
                [GrammarError {
                    kind: ErrorKind::Inflate(InflateError::Ratio { .. }),
                    ..
                }]
            ),
            "{errors:?}"
        );
        // Garbage is corrupt.
        let mut r = DataSetReader::new(&ts, Limits::GATEWAY);
        let mut seen = None;
        r.feed(&[0xFF; 64], |t| {
            if let Token::Error(e) = t {
                seen = Some(e.kind)
            }
        });
        assert_eq!(seen, Some(ErrorKind::Inflate(InflateError::Corrupt)));
    }
}
