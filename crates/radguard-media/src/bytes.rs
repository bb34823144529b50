//! Bounds-checked reads from byte slices.
//!
//! Everything the scanner reads comes from an untrusted file, so no read here can panic: a
//! read past the end gives `None` (or a shorter slice), and the caller decides what a missing
//! byte means (truncated, no match, more needed).

/// The `N` bytes at `off`, or `None` when `buf` ends before `off + N`.
fn array_at<const N: usize>(buf: &[u8], off: usize) -> Option<[u8; N]> {
    buf.get(off..)?.first_chunk::<N>().copied()
}

/// A `u16` from two bytes in the given byte order.
fn u16_from(b: [u8; 2], big: bool) -> u16 {
    if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

/// A `u32` from four bytes in the given byte order.
fn u32_from(b: [u8; 4], big: bool) -> u32 {
    if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// The `u16` at `off`, or `None` when `buf` is too short.
pub(crate) fn u16_at(buf: &[u8], off: usize, big: bool) -> Option<u16> {
    array_at(buf, off).map(|b| u16_from(b, big))
}

/// The `u32` at `off`, or `None` when `buf` is too short.
pub(crate) fn u32_at(buf: &[u8], off: usize, big: bool) -> Option<u32> {
    array_at(buf, off).map(|b| u32_from(b, big))
}

/// The first `n` bytes of `buf`, or all of it when it is shorter.
pub(crate) fn prefix(buf: &[u8], n: usize) -> &[u8] {
    buf.get(..n).unwrap_or(buf)
}

/// Copies as many bytes as both slices hold from the start of `src` to the start of `dst`;
/// returns how many.
pub(crate) fn copy_prefix(dst: &mut [u8], src: &[u8]) -> usize {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stop_at_the_end() {
        let b = [1u8, 2, 3, 4, 5];
        assert_eq!(u16_at(&b, 0, false), Some(0x0201));
        assert_eq!(u16_at(&b, 3, true), Some(0x0405));
        assert_eq!(u16_at(&b, 4, false), None);
        assert_eq!(u32_at(&b, 1, false), Some(0x0504_0302));
        assert_eq!(u32_at(&b, 2, false), None);
        assert_eq!(u32_at(&b, usize::MAX, false), None);
        assert_eq!(prefix(&b, 2), &[1, 2]);
        assert_eq!(prefix(&b, 9), &b);
        let mut d = [0u8; 3];
        assert_eq!(copy_prefix(&mut d, &b), 3);
        assert_eq!(d, [1, 2, 3]);
        assert_eq!(copy_prefix(&mut d, &[9]), 1);
        assert_eq!(d, [9, 2, 3]);
    }
}
