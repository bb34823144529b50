//! Searches a value, fed in chunks, for executables (and, in PDFs, active content).
//!
//! Chunks come straight from the read buffer. A candidate whose structural check needs bytes
//! beyond the chunk is carried (at most [`WINDOW`] plus a pattern's length) into the next
//! one, so nothing is missed at chunk boundaries and nothing is buffered beyond that.

use aho_corasick::AhoCorasick;

use crate::bytes::{copy_prefix, prefix};
use crate::signature::{
    check_at, exe_automaton, exe_pdf_automaton, Check, Exe, Hit, MAX_PATTERN, WINDOW,
};

/// A structurally valid executable, or an active PDF name, at an absolute offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentHit {
    Exe { at: u64, exe: Exe },
    Pdf { at: u64, name: &'static [u8] },
}

pub(crate) struct ContentScanner {
    ac: &'static AhoCorasick,
    carry: Vec<u8>,
    carry_abs: u64,
    pub(crate) hits: Vec<ContentHit>,
    head: [u8; 8],
    head_len: usize,
    /// DOS headers (at `.0`) whose `PE\0\0` should be at `.1`, beyond the local window:
    /// checked when those bytes pass.
    far: Vec<(u64, u64)>,
    /// The last bytes of the previous chunk, for a `PE\0\0` that straddles two chunks.
    tail: [u8; 8],
    tail_len: usize,
    tail_abs: u64,
}

/// Cap on recorded hits per value: one is enough to condemn a file.
const MAX_HITS: usize = 16;
/// Cap on distant `PE\0\0` checks pending per value.
const MAX_FAR: usize = 64;

impl ContentScanner {
    /// A scanner for executables; with `pdf`, also for active PDF names.
    pub(crate) fn new(pdf: bool) -> Self {
        ContentScanner {
            ac: if pdf {
                exe_pdf_automaton()
            } else {
                exe_automaton()
            },
            carry: Vec::new(),
            carry_abs: 0,
            hits: Vec::new(),
            head: [0; 8],
            head_len: 0,
            far: Vec::new(),
            tail: [0; 8],
            tail_len: 0,
            tail_abs: 0,
        }
    }

    /// The first (up to 8) bytes fed.
    pub(crate) fn head(&self) -> &[u8] {
        prefix(&self.head, self.head_len)
    }

    fn record(&mut self, at: u64, hit: Hit) {
        if self.hits.len() >= MAX_HITS {
            return;
        }
        match hit {
            Hit::Exe(Check::Found(exe)) => self.hits.push(ContentHit::Exe { at, exe }),
            Hit::Exe(Check::FarPe { e_lfanew }) => {
                if self.far.len() < MAX_FAR {
                    self.far.push((at, at + u64::from(e_lfanew)));
                }
            }
            Hit::Pdf(name) => self.hits.push(ContentHit::Pdf { at, name }),
            Hit::Exe(Check::No | Check::NeedMore) => {}
        }
    }

    /// Scans candidates starting in `data[..limit]`; returns the first candidate that needs
    /// more bytes (when `complete` is false).
    fn scan(&mut self, data_is_carry: bool, chunk: &[u8], abs: u64, limit: usize) -> Option<usize> {
        let ac = self.ac;
        let data: &[u8] = if data_is_carry { &self.carry } else { chunk };
        let mut results: Vec<(u64, Hit)> = Vec::new();
        let mut need_more = None;
        for m in ac.find_iter(data) {
            let p = m.start();
            if p >= limit {
                break;
            }
            // A match starts inside `data`, so this is always there.
            let Some(at) = data.get(p..) else {
                break;
            };
            match check_at(m.pattern().as_usize(), at, false) {
                Hit::Exe(Check::NeedMore) => {
                    need_more = Some(p);
                    break;
                }
                Hit::Exe(Check::No) => {}
                h => results.push((abs + p as u64, h)),
            }
        }
        for (at, h) in results {
            self.record(at, h);
        }
        need_more
    }

    /// Feeds the next chunk of the value; `abs` is the chunk's absolute offset.
    pub(crate) fn feed(&mut self, chunk: &[u8], abs: u64) {
        self.feed_inner(chunk, abs);
        self.resolve_far(chunk, abs);
    }

    /// Checks distant `PE\0\0` positions that this chunk completes.
    fn resolve_far(&mut self, chunk: &[u8], abs: u64) {
        let end = abs + chunk.len() as u64;
        if !self.far.is_empty() {
            let (tail, tail_abs) = (self.tail, self.tail_abs);
            let tail = prefix(&tail, self.tail_len);
            // The byte at absolute offset `a`, from this chunk or the previous one's tail.
            let byte_at = |a: u64| -> Option<u8> {
                let (from, at) = match a.checked_sub(abs) {
                    Some(i) => (chunk, i),
                    None => (tail, a.checked_sub(tail_abs)?),
                };
                from.get(usize::try_from(at).ok()?).copied()
            };
            let mut found = Vec::new();
            self.far.retain(|&(mz, pe)| {
                if pe + 6 > end {
                    return true;
                }
                let mut b = [0u8; 6];
                for (k, slot) in b.iter_mut().enumerate() {
                    match byte_at(pe + k as u64) {
                        Some(v) => *slot = v,
                        None => return false, // already gone (cannot happen for pe > mz + WINDOW)
                    }
                }
                if let Some(machine) = crate::signature::is_pe_header(&b) {
                    found.push((mz, machine));
                }
                false
            });
            for (mz, machine) in found {
                if self.hits.len() < MAX_HITS {
                    self.hits.push(ContentHit::Exe {
                        at: mz,
                        exe: Exe::Pe { machine },
                    });
                }
            }
        }
        // Keep the last 8 bytes seen (joining with the old tail for tiny chunks).
        let old = prefix(&self.tail, self.tail_len);
        let recent = chunk.rchunks(8).next().unwrap_or_default();
        let total = old.len() + recent.len();
        let joined = old.iter().chain(recent).skip(total.saturating_sub(8));
        let mut t = [0u8; 8];
        let mut keep = 0;
        for (slot, &b) in t.iter_mut().zip(joined) {
            *slot = b;
            keep += 1;
        }
        self.tail = t;
        self.tail_len = keep;
        self.tail_abs = end - keep as u64;
    }

    fn feed_inner(&mut self, chunk: &[u8], abs: u64) {
        if let Some(free) = self.head.get_mut(self.head_len..) {
            self.head_len += copy_prefix(free, chunk);
        }
        if !self.carry.is_empty() {
            let old = self.carry.len();
            let taken = prefix(chunk, WINDOW + MAX_PATTERN);
            self.carry.extend_from_slice(taken);
            let take = taken.len();
            let carry_abs = self.carry_abs;
            let whole = take == chunk.len();
            // When the whole chunk lives in the carry (small reads), candidates may start
            // anywhere that is followed by a full pattern's worth of bytes; the rest waits for
            // the next chunk. (Scanning only the old carry lost every pattern longer than two
            // bytes when a stream arrived one byte at a time: fuzz target dataset_scan.)
            let limit = if whole {
                self.carry.len().saturating_sub(MAX_PATTERN)
            } else {
                old
            };
            match self.scan(true, &[], carry_abs, limit) {
                Some(k) if whole => {
                    // Keep going from the candidate that needs more bytes.
                    self.carry.drain(..k);
                    self.carry_abs += k as u64;
                    return;
                }
                None if whole => {
                    self.carry.drain(..limit);
                    self.carry_abs += limit as u64;
                    return;
                }
                // Cannot need more here: a check needs at most WINDOW bytes past its start.
                _ => {}
            }
            self.carry.clear();
        }
        let cutoff = chunk.len().saturating_sub(MAX_PATTERN);
        let keep_from = self.scan(false, chunk, abs, cutoff).unwrap_or(cutoff);
        self.carry.clear();
        self.carry
            .extend_from_slice(chunk.get(keep_from..).unwrap_or_default());
        self.carry_abs = abs + keep_from as u64;
    }

    /// Ends the value: checks what is still carried with the bytes there are.
    pub(crate) fn finish(&mut self) {
        let carry = std::mem::take(&mut self.carry);
        let ac = self.ac;
        for m in ac.find_iter(&carry[..]) {
            let p = m.start();
            // A match starts inside `carry`, so this is always there.
            let Some(at) = carry.get(p..) else {
                break;
            };
            let h = check_at(m.pattern().as_usize(), at, true);
            self.record(self.carry_abs + p as u64, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pe_at(buf: &mut [u8], at: usize, e_lfanew: u32) {
        buf[at..at + 2].copy_from_slice(b"MZ");
        buf[at + 0x3c..at + 0x40].copy_from_slice(&e_lfanew.to_le_bytes());
        let i = at + e_lfanew as usize;
        buf[i..i + 4].copy_from_slice(b"PE\0\0");
        buf[i + 4..i + 6].copy_from_slice(&0x14cu16.to_le_bytes());
    }

    fn scan_in_chunks(data: &[u8], chunk: usize) -> Vec<ContentHit> {
        let mut s = ContentScanner::new(false);
        for (i, c) in data.chunks(chunk).enumerate() {
            s.feed(c, 1000 + (i * chunk) as u64);
        }
        s.finish();
        s.hits
    }

    #[test]
    fn finds_pe_at_every_chunk_boundary() {
        for at in [0usize, 1, 5, 63, 64, 65, 100, 127, 128, 129, 300] {
            let mut data = vec![0u8; 2000];
            pe_at(&mut data, at, 0x80);
            for chunk in [1usize, 2, 3, 7, 64, 128, 129, 4096] {
                let hits = scan_in_chunks(&data, chunk);
                assert_eq!(
                    hits,
                    vec![ContentHit::Exe {
                        at: 1000 + at as u64,
                        exe: Exe::Pe { machine: 0x14c }
                    }],
                    "at {at} chunk {chunk}"
                );
            }
        }
    }

    /// Regression (fuzz target dataset_scan): active PDF names are found whatever the read size.
    #[test]
    fn finds_long_patterns_in_one_byte_chunks() {
        let mut data = b"%PDF-1.7 << /OpenAction 7 0 R /JavaScript (app.alert(1)) >>".to_vec();
        data.extend_from_slice(&[0u8; 100]);
        let whole = scan_pdf_in_chunks(&data, data.len());
        assert!(!whole.is_empty());
        for chunk in [1usize, 2, 3, 5, 13, 14, 64] {
            assert_eq!(scan_pdf_in_chunks(&data, chunk), whole, "chunk {chunk}");
        }
    }

    fn scan_pdf_in_chunks(data: &[u8], chunk: usize) -> Vec<ContentHit> {
        let mut s = ContentScanner::new(true);
        for (i, c) in data.chunks(chunk).enumerate() {
            s.feed(c, (i * chunk) as u64);
        }
        s.finish();
        s.hits
    }

    #[test]
    fn random_mz_is_not_a_hit() {
        let mut data = vec![0u8; 10_000];
        for i in (0..data.len() - 2).step_by(97) {
            data[i] = b'M';
            data[i + 1] = b'Z';
        }
        assert!(scan_in_chunks(&data, 333).is_empty());
    }

    #[test]
    fn far_pe_is_checked_when_its_bytes_pass() {
        for chunk in [3usize, 10, 4096, 70_000] {
            let mut data = vec![0u8; 0x10100];
            pe_at(&mut data, 5, 0x10000);
            let hits = scan_in_chunks(&data, chunk);
            assert_eq!(
                hits,
                vec![ContentHit::Exe {
                    at: 1005,
                    exe: Exe::Pe { machine: 0x14c }
                }],
                "chunk {chunk}"
            );
            // Pointing past the end: nothing.
            let hits = scan_in_chunks(&data[..0x10000], chunk);
            assert!(hits.is_empty());
        }
    }
}
