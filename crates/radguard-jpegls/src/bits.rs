//! The entropy-coded segment of a scan as bits (T.87 §A.1, §9.1): after a 0xFF byte the most
//! significant bit of the next byte is a stuffed 0 and carries no data.

use crate::Error;

/// Index of the first marker (0xFF followed by a byte with its top bit set) at or after
/// `from`, or `data.len()` when there is none. In coded data a 0xFF byte is always followed
/// by a byte whose top bit is the stuffed 0, so the first such pair ends the segment.
pub fn segment_end(data: &[u8], from: usize) -> usize {
    let tail = data.get(from..).unwrap_or_default();
    tail.windows(2)
        .position(|w| matches!(w, [0xFF, b] if *b >= 0x80))
        .map_or(data.len(), |p| from + p)
}

/// Reads bits, most significant first, from one entropy-coded segment. Reading past its end
/// is an error: a conforming encoder pads the last byte, so a valid scan never needs more
/// bits than it has.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Valid bits left-aligned; the bits below them are zero.
    cache: u64,
    bits: u32,
    prev_ff: bool,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            cache: 0,
            bits: 0,
            prev_ff: false,
        }
    }

    fn fill(&mut self) {
        while self.bits <= 56 {
            let Some(&b) = self.data.get(self.pos) else {
                return;
            };
            self.pos += 1;
            if self.prev_ff {
                // The stuffed bit: 7 data bits.
                self.cache |= u64::from(b & 0x7F) << (64 - 7 - self.bits);
                self.bits += 7;
            } else {
                self.cache |= u64::from(b) << (56 - self.bits);
                self.bits += 8;
            }
            self.prev_ff = b == 0xFF;
        }
    }

    /// `n` bits (n ≤ 32) as an unsigned value.
    pub fn read(&mut self, n: u32) -> Result<u32, Error> {
        if n == 0 {
            return Ok(0);
        }
        if self.bits < n {
            self.fill();
            if self.bits < n {
                return Err(Error::TruncatedScan);
            }
        }
        let v = (self.cache >> (64 - n)) as u32;
        self.cache <<= n;
        self.bits -= n;
        Ok(v)
    }

    pub fn read_bit(&mut self) -> Result<bool, Error> {
        Ok(self.read(1)? == 1)
    }

    /// Counts 0 bits up to and including the next 1 bit (the unary part of a Golomb code,
    /// T.87 §A.5.3); more than `max` zeros is invalid data.
    pub fn read_unary(&mut self, max: u32) -> Result<u32, Error> {
        let mut zeros = 0u32;
        loop {
            if self.bits == 0 {
                self.fill();
                if self.bits == 0 {
                    return Err(Error::TruncatedScan);
                }
            }
            let lz = self.cache.leading_zeros();
            if lz < self.bits {
                zeros += lz;
                if zeros > max {
                    return Err(Error::InvalidCodedData("Golomb code longer than LIMIT"));
                }
                // lz < bits ≤ 64, so lz + 1 ≤ 64; shifting a u64 by 64 is checked below.
                self.cache = self.cache.checked_shl(lz + 1).unwrap_or(0);
                self.bits -= lz + 1;
                return Ok(zeros);
            }
            zeros += self.bits;
            self.cache = 0;
            self.bits = 0;
            if zeros > max {
                return Err(Error::InvalidCodedData("Golomb code longer than LIMIT"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffed_bit_after_ff_is_skipped() {
        // 0xFF then 0x7F: 8 ones, then 7 ones.
        let mut r = BitReader::new(&[0xFF, 0x7F, 0x80]);
        assert_eq!(r.read(15).expect("bits"), 0x7FFF);
        assert!(r.read_bit().expect("bit"));
        assert_eq!(r.read(7).expect("bits"), 0);
        assert!(matches!(r.read(1), Err(Error::TruncatedScan)));
    }

    #[test]
    fn unary_codes_across_bytes() {
        let mut r = BitReader::new(&[0x00, 0x01, 0x40]);
        assert_eq!(r.read_unary(100).expect("unary"), 15);
        assert_eq!(r.read_unary(100).expect("unary"), 1);
        assert!(r.read_unary(3).is_err());
    }

    #[test]
    fn segment_ends_at_the_first_marker() {
        assert_eq!(segment_end(&[1, 0xFF, 0x00, 0xFF, 0xD0, 5], 0), 3);
        assert_eq!(segment_end(&[1, 0xFF, 0x7F], 0), 3);
        assert_eq!(segment_end(&[0xFF, 0xD9], 1), 2);
    }
}
