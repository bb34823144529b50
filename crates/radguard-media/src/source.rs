//! A bounded read buffer that knows its absolute offset and resolves "probes".
//!
//! A probe asks for a few bytes at an absolute offset that lies ahead in the stream (for
//! example the `PE\0\0` that the `e_lfanew` field of a DOS header points at). The bytes are
//! captured as the stream passes by, so checks that need data far ahead never seek and never
//! buffer more than one block.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read};

use crate::bytes::{copy_prefix, prefix};

/// Size of the read buffer. Peak memory per scan is about this plus small bookkeeping.
pub(crate) const BLOCK: usize = 256 * 1024;
/// Bytes kept before the read position after a refill, so that a probe straddling two blocks
/// can still be resolved.
const HISTORY: usize = 8;
/// Largest probe, in bytes.
pub(crate) const MAX_PROBE: usize = 8;

/// A request for `len` bytes at absolute offset `at`. `id` is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Probe {
    pub at: u64,
    pub len: usize,
    pub id: usize,
}

/// A probe's answer: the bytes, or `None` when the stream ended (or had passed) before them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProbeResult {
    pub probe: Probe,
    pub bytes: Option<[u8; MAX_PROBE]>,
}

pub(crate) struct Source<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
    /// End of valid data in `buf`.
    end: usize,
    /// Index in `buf` of the oldest byte still valid (history before `start`).
    first: usize,
    /// Absolute offset of `buf[start]`.
    pos: u64,
    eof: bool,
    pending: BinaryHeap<Reverse<Probe>>,
    results: Vec<ProbeResult>,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self::with_offset(inner, 0)
    }

    /// A source whose first byte has absolute offset `pos`.
    pub(crate) fn with_offset(inner: R, pos: u64) -> Self {
        Source {
            inner,
            buf: vec![0; BLOCK],
            start: 0,
            end: 0,
            first: 0,
            pos,
            eof: false,
            pending: BinaryHeap::new(),
            results: Vec::new(),
        }
    }

    /// Absolute offset of the next unread byte.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// The unread bytes, `buf[start..end]`.
    fn unread(&self) -> io::Result<&[u8]> {
        self.buf.get(self.start..self.end).ok_or_else(out_of_step)
    }

    /// Absolute offset of `buf[idx]` (before `start` for history, after it for unread data).
    fn abs_of(&self, idx: usize) -> u64 {
        if idx >= self.start {
            self.pos + (idx - self.start) as u64
        } else {
            self.pos - (self.start - idx) as u64
        }
    }

    /// Reads more data, keeping up to `HISTORY` bytes before `start` and any unread bytes.
    /// Returns the number of new bytes (0 at end of stream).
    fn refill(&mut self) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.end == self.buf.len() {
            // Compact: keep history + unread.
            let keep_from = self.start.saturating_sub(HISTORY).max(self.first);
            self.buf.copy_within(keep_from..self.end, 0);
            self.start -= keep_from;
            self.end -= keep_from;
            self.first = 0;
        }
        let Some(space) = self.buf.get_mut(self.end..) else {
            return Err(out_of_step());
        };
        let n = loop {
            match self.inner.read(space) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.eof = true;
            self.resolve_all_pending();
            return Ok(0);
        }
        self.end += n;
        self.resolve_ready();
        Ok(n)
    }

    fn resolve_ready(&mut self) {
        let buf_first_abs = self.abs_of(self.first);
        let buf_end_abs = self.abs_of(self.end);
        while let Some(Reverse(p)) = self.pending.peek().copied() {
            if p.at + p.len as u64 > buf_end_abs {
                break;
            }
            self.pending.pop();
            // `None` when the bytes were dropped from the buffer before the probe came.
            let bytes = p.at.checked_sub(buf_first_abs).and_then(|d| {
                let i = self.first.checked_add(usize::try_from(d).ok()?)?;
                let found = self.buf.get(i..)?.get(..p.len)?;
                let mut out = [0u8; MAX_PROBE];
                copy_prefix(&mut out, found);
                Some(out)
            });
            self.results.push(ProbeResult { probe: p, bytes });
        }
    }

    fn resolve_all_pending(&mut self) {
        while let Some(Reverse(p)) = self.pending.pop() {
            self.results.push(ProbeResult {
                probe: p,
                bytes: None,
            });
        }
    }

    /// Registers a probe. Probes at offsets already passed resolve to `None`.
    pub(crate) fn add_probe(&mut self, at: u64, len: usize, id: usize) {
        let len = len.min(MAX_PROBE);
        self.pending.push(Reverse(Probe { at, len, id }));
        if self.eof {
            self.resolve_ready();
            self.resolve_all_pending();
        } else {
            self.resolve_ready();
        }
    }

    /// Whether probes are still waiting for their bytes.
    pub(crate) fn has_pending_probes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the probe results gathered so far.
    pub(crate) fn take_probe_results(&mut self) -> Vec<ProbeResult> {
        std::mem::take(&mut self.results)
    }

    /// Makes at least `n` (≤ BLOCK / 2) unread bytes contiguous in the buffer if the stream
    /// has them; returns the unread bytes (possibly fewer than `n` at end of stream).
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        debug_assert!(n <= BLOCK / 2);
        while self.end - self.start < n && !self.eof {
            if self.buf.len() - self.start < n {
                // Not enough room after start: compact now.
                let keep_from = self.start.saturating_sub(HISTORY).max(self.first);
                self.buf.copy_within(keep_from..self.end, 0);
                self.start -= keep_from;
                self.end -= keep_from;
                self.first = 0;
            }
            self.refill()?;
        }
        self.unread()
    }

    fn advance(&mut self, n: usize) {
        self.start += n;
        self.pos += n as u64;
    }

    /// Consumes up to `n` bytes, handing each contiguous piece to `f` with its absolute
    /// offset. Returns the number of bytes consumed (less than `n` at end of stream).
    pub(crate) fn skip_with(&mut self, n: u64, mut f: impl FnMut(&[u8], u64)) -> io::Result<u64> {
        let mut left = n;
        while left > 0 {
            if self.start == self.end && self.refill()? == 0 {
                break;
            }
            let piece = prefix(self.unread()?, usize::try_from(left).unwrap_or(usize::MAX));
            f(piece, self.pos);
            let take = piece.len();
            self.advance(take);
            left -= take as u64;
        }
        Ok(n - left)
    }
}

/// The error for buffer indices that disagree (a bug here, not bad input): the scan stops with
/// an I/O error rather than reading the wrong bytes.
fn out_of_step() -> io::Error {
    io::Error::other("internal error: read buffer indices out of step")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns at most 3 bytes per call, to exercise block boundaries.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(3).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn probe_resolves_across_small_reads() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut s = Source::new(Trickle(&data));
        s.add_probe(5000, 4, 1);
        s.add_probe(9998, 4, 2); // past the end
        let mut n = 0u64;
        s.skip_with(u64::MAX, |c, _| n += c.len() as u64).unwrap();
        assert_eq!(n, 10_000);
        let r = s.take_probe_results();
        let one = r.iter().find(|r| r.probe.id == 1).unwrap();
        assert_eq!(&one.bytes.unwrap()[..4], &data[5000..5004]);
        let two = r.iter().find(|r| r.probe.id == 2).unwrap();
        assert!(two.bytes.is_none());
    }

    #[test]
    fn peek_and_read() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut s = Source::new(Trickle(&data));
        assert_eq!(&s.peek(10).unwrap()[..10], &data[..10]);
        let mut b = Vec::new();
        assert_eq!(s.skip_with(20, |c, _| b.extend_from_slice(c)).unwrap(), 20);
        assert_eq!(&b[..], &data[..20]);
        assert_eq!(s.pos(), 20);
        // A probe already in the buffer resolves immediately.
        s.peek(10).unwrap();
        s.add_probe(22, 2, 7);
        assert_eq!(s.take_probe_results().len(), 1);
    }
}
