//! Decoding one scan: LOCO-I context modelling, prediction, Golomb coding, run mode and bias
//! correction (T.87 Annex A), for the three interleave modes (T.87 §B.2 and §B.3).
//!
//! Where T.87 leaves a choice to the implementation (the run-interruption coding of
//! sample-interleaved pixels, a run that reaches the end of a line after its remainder bits)
//! this follows CharLS, which writes the DICOM JPEG-LS streams in the wild (DCMTK, GDCM).

use crate::bits::BitReader;
use crate::Error;

/// T.87 Table A.1: the run-length order for each RUNindex.
const J: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];

/// Regular-mode contexts: 365 (T.87 §A.3.4); index 0 is never used (run mode).
const CONTEXTS: usize = 365;
const MIN_C: i64 = -128;
const MAX_C: i64 = 127;

/// Coding parameters of one scan, after defaults are applied (T.87 §C.2.4.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanParams {
    pub maxval: i32,
    pub t1: i32,
    pub t2: i32,
    pub t3: i32,
    pub reset: i32,
    pub near: i32,
}

#[derive(Clone, Copy)]
struct Context {
    a: i64,
    b: i64,
    c: i64,
    n: i64,
}

#[derive(Clone, Copy)]
struct RunContext {
    a: i64,
    n: i64,
    nn: i64,
}

/// The state of a scan's entropy decoder (reset at each restart marker).
pub struct Coder {
    near: i64,
    maxval: i64,
    range: i64,
    qbpp: u32,
    limit: u32,
    t1: i64,
    t2: i64,
    t3: i64,
    reset: i64,
    a_init: i64,
    /// Quantised gradient for each difference -MAXVAL..=MAXVAL (index d + MAXVAL).
    q_table: Vec<i8>,
    contexts: Vec<Context>,
    run: [RunContext; 2],
}

fn ceil_log2(v: i64) -> u32 {
    let mut n = 0;
    while n < 40 && (1i64 << n) < v {
        n += 1;
    }
    n
}

impl Coder {
    pub fn new(p: &ScanParams) -> Coder {
        let near = i64::from(p.near);
        let maxval = i64::from(p.maxval);
        // T.87 §A.2.1.
        let range = (maxval + 2 * near) / (2 * near + 1) + 1;
        let qbpp = ceil_log2(range);
        let bpp = ceil_log2(maxval + 1).max(2);
        let limit = 2 * (bpp + bpp.max(8));
        let a_init = ((range + 32) / 64).max(2);
        let mut c = Coder {
            near,
            maxval,
            range,
            qbpp,
            limit,
            t1: i64::from(p.t1),
            t2: i64::from(p.t2),
            t3: i64::from(p.t3),
            reset: i64::from(p.reset),
            a_init,
            q_table: Vec::new(),
            contexts: Vec::new(),
            run: [RunContext { a: 0, n: 0, nn: 0 }; 2],
        };
        c.q_table = (-maxval..=maxval).map(|d| c.quantize(d) as i8).collect();
        c.restart();
        c
    }

    /// Initial context state (T.87 §A.2.1), also after each restart marker (§C.2.5).
    pub fn restart(&mut self) {
        let ctx = Context {
            a: self.a_init,
            b: 0,
            c: 0,
            n: 1,
        };
        self.contexts.clear();
        self.contexts.resize(CONTEXTS, ctx);
        self.run = [RunContext {
            a: self.a_init,
            n: 1,
            nn: 0,
        }; 2];
    }

    /// Gradient quantisation (T.87 §A.3.3).
    #[inline]
    fn quantize(&self, d: i64) -> i64 {
        if d <= -self.t3 {
            -4
        } else if d <= -self.t2 {
            -3
        } else if d <= -self.t1 {
            -2
        } else if d < -self.near {
            -1
        } else if d <= self.near {
            0
        } else if d < self.t1 {
            1
        } else if d < self.t2 {
            2
        } else if d < self.t3 {
            3
        } else {
            4
        }
    }

    /// The signed context number 81·Q1 + 9·Q2 + Q3 of a sample (0: run mode).
    #[inline]
    fn context_id(&self, ra: i64, rb: i64, rc: i64, rd: i64) -> i64 {
        81 * self.q(rd - rb) + 9 * self.q(rb - rc) + self.q(rc - ra)
    }

    /// `quantize` through the table (samples are in 0..=MAXVAL, so |d| ≤ MAXVAL).
    #[inline]
    fn q(&self, d: i64) -> i64 {
        usize::try_from(d + self.maxval)
            .ok()
            .and_then(|i| self.q_table.get(i))
            .map_or_else(|| self.quantize(d), |q| i64::from(*q))
    }

    /// A reconstructed value brought back into [0, MAXVAL] (T.87 §A.4.5: modulo reduction,
    /// then clamping for near-lossless coding).
    #[inline]
    fn fix(&self, v: i64) -> i64 {
        let step = self.range * (2 * self.near + 1);
        let v = if v < -self.near {
            v + step
        } else if v > self.maxval + self.near {
            v - step
        } else {
            v
        };
        v.clamp(0, self.maxval)
    }

    /// A Golomb-coded mapped error value with parameter `k` and length limit `limit`
    /// (T.87 §A.5.3).
    fn golomb(&self, br: &mut BitReader<'_>, k: u32, limit: u32) -> Result<i64, Error> {
        let escape = limit
            .checked_sub(self.qbpp + 1)
            .ok_or(Error::InvalidCodedData("LIMIT smaller than qbpp"))?;
        let high = br.read_unary(escape)?;
        let m = if high == escape {
            i64::from(br.read(self.qbpp)?) + 1
        } else if k == 0 {
            i64::from(high)
        } else {
            (i64::from(high) << k) + i64::from(br.read(k)?)
        };
        // A conforming encoder reduces errors modulo RANGE (T.87 §A.4.5): a larger value is
        // corrupt data, refused before it can overflow the context sums.
        if m > 2 * self.range + 2 {
            return Err(Error::InvalidCodedData("mapped error value out of range"));
        }
        Ok(m)
    }

    /// One regular-mode sample (T.87 §A.4–§A.6); `qs` is the signed context number.
    fn regular(&mut self, br: &mut BitReader<'_>, qs: i64, predicted: i64) -> Result<i64, Error> {
        let sign = if qs < 0 { -1 } else { 1 };
        let index = usize::try_from(qs * sign).map_err(|_| Error::Internal)?;
        let (near, maxval, reset, limit) = (self.near, self.maxval, self.reset, self.limit);
        let ctx = *self.contexts.get(index).ok_or(Error::Internal)?;
        let mut k = 0u32;
        while k < 40 && (ctx.n << k) < ctx.a {
            k += 1;
        }
        if k > 32 {
            return Err(Error::InvalidCodedData("Golomb parameter out of range"));
        }
        let px = (predicted + sign * ctx.c).clamp(0, maxval);
        let m = self.golomb(br, k, limit)?;
        // Inverse error mapping (T.87 §A.5.2).
        let mut e = if m & 1 == 0 { m >> 1 } else { -((m + 1) >> 1) };
        if k == 0 && near == 0 && 2 * ctx.b + ctx.n - 1 < 0 {
            e = -e - 1;
        }
        let ctx = self.contexts.get_mut(index).ok_or(Error::Internal)?;
        update_regular(ctx, e, near, reset);
        Ok(self.fix(px + sign * e * (2 * near + 1)))
    }

    /// The error of a run-interruption sample (T.87 §A.7.2), coded with run context `ri_type`.
    fn interruption_error(
        &mut self,
        br: &mut BitReader<'_>,
        ri_type: usize,
        run_index: usize,
    ) -> Result<i64, Error> {
        let ctx = *self.run.get(ri_type).ok_or(Error::Internal)?;
        let t = ri_type as i64;
        let temp = ctx.a + (ctx.n >> 1) * t;
        let mut k = 0u32;
        while k < 40 && (ctx.n << k) < temp {
            k += 1;
        }
        if k > 32 {
            return Err(Error::InvalidCodedData("Golomb parameter out of range"));
        }
        let j = *J.get(run_index).ok_or(Error::Internal)?;
        let limit = self
            .limit
            .checked_sub(j + 1)
            .ok_or(Error::InvalidCodedData("LIMIT smaller than J"))?;
        let m = self.golomb(br, k, limit)?;
        let tm = m + t;
        let map = tm & 1 == 1;
        let abs = (tm + i64::from(map)) / 2;
        let e = if (k != 0 || 2 * ctx.nn >= ctx.n) == map {
            -abs
        } else {
            abs
        };
        let reset = self.reset;
        let ctx = self.run.get_mut(ri_type).ok_or(Error::Internal)?;
        if e < 0 {
            ctx.nn += 1;
        }
        ctx.a += (m + 1 - t) >> 1;
        if ctx.n == reset {
            ctx.a >>= 1;
            ctx.n >>= 1;
            ctx.nn >>= 1;
        }
        ctx.n += 1;
        Ok(e)
    }

    /// A run interruption sample of a single component (T.87 §A.7.2).
    fn interruption(
        &mut self,
        br: &mut BitReader<'_>,
        ra: i64,
        rb: i64,
        run_index: usize,
    ) -> Result<i64, Error> {
        let step = 2 * self.near + 1;
        if (ra - rb).abs() <= self.near {
            let e = self.interruption_error(br, 1, run_index)?;
            Ok(self.fix(ra + e * step))
        } else {
            let e = self.interruption_error(br, 0, run_index)?;
            let s = if rb - ra < 0 { -1 } else { 1 };
            Ok(self.fix(rb + e * s * step))
        }
    }

    /// The run length of a run starting with `remaining` samples left in the line (T.87
    /// §A.7.1); updates RUNindex. Returns (length, interrupted).
    fn run_length(
        &mut self,
        br: &mut BitReader<'_>,
        remaining: usize,
        run_index: &mut usize,
    ) -> Result<usize, Error> {
        let mut count = 0usize;
        while br.read_bit()? {
            let seg = 1usize << J.get(*run_index).ok_or(Error::Internal)?;
            let n = seg.min(remaining - count);
            count += n;
            if n == seg {
                *run_index = (*run_index + 1).min(31);
            }
            if count == remaining {
                return Ok(count);
            }
        }
        let j = *J.get(*run_index).ok_or(Error::Internal)?;
        count += br.read(j)? as usize;
        if count > remaining {
            return Err(Error::InvalidCodedData("run longer than the line"));
        }
        Ok(count)
    }

    /// Decodes one line of one component. `prev` and `cur` hold the line with one extra sample
    /// on each side (index 1 is the first sample); the edges are set here (T.87 §A.2.1).
    pub fn line(
        &mut self,
        br: &mut BitReader<'_>,
        prev: &mut [i32],
        cur: &mut [i32],
        run_index: &mut usize,
    ) -> Result<(), Error> {
        let width = cur.len().checked_sub(2).ok_or(Error::Internal)?;
        let edge = *prev.get(width).ok_or(Error::Internal)?;
        *prev.get_mut(width + 1).ok_or(Error::Internal)? = edge;
        *cur.first_mut().ok_or(Error::Internal)? = *prev.get(1).ok_or(Error::Internal)?;
        let at = |s: &[i32], j: usize| s.get(j).map(|v| i64::from(*v)).ok_or(Error::Internal);
        // The neighbours slide along the line: Ra (left), Rc (above left), Rb (above).
        let mut ra = at(cur, 0)?;
        let mut rc = at(prev, 0)?;
        let mut rb = at(prev, 1)?;
        let mut i = 1usize;
        while i <= width {
            let rd = at(prev, i + 1)?;
            let qs = self.context_id(ra, rb, rc, rd);
            if qs != 0 {
                let x = self.regular(br, qs, predict(ra, rb, rc))?;
                *cur.get_mut(i).ok_or(Error::Internal)? = x as i32;
                ra = x;
                rc = rb;
                rb = rd;
                i += 1;
                continue;
            }
            let remaining = width + 1 - i;
            let n = self.run_length(br, remaining, run_index)?;
            cur.get_mut(i..i + n)
                .ok_or(Error::Internal)?
                .fill(ra as i32);
            i += n;
            if n == remaining {
                break;
            }
            let rb_here = at(prev, i)?;
            let x = self.interruption(br, ra, rb_here, *run_index)?;
            *cur.get_mut(i).ok_or(Error::Internal)? = x as i32;
            *run_index = run_index.saturating_sub(1);
            ra = x;
            rc = rb_here;
            rb = at(prev, i + 1)?;
            i += 1;
        }
        Ok(())
    }

    /// Decodes one line of `nc` sample-interleaved components (T.87 §B.3, ILV = 2): `prev`
    /// and `cur` hold `nc` samples per pixel with one extra pixel on each side. A pixel is
    /// run-coded when every component's gradients quantise to 0; a run interruption codes
    /// each component against Rb with run context 0.
    pub fn line_interleaved(
        &mut self,
        br: &mut BitReader<'_>,
        nc: usize,
        prev: &mut [i32],
        cur: &mut [i32],
        run_index: &mut usize,
    ) -> Result<(), Error> {
        let width = (cur.len() / nc).checked_sub(2).ok_or(Error::Internal)?;
        for c in 0..nc {
            let edge = *prev.get(width * nc + c).ok_or(Error::Internal)?;
            *prev.get_mut((width + 1) * nc + c).ok_or(Error::Internal)? = edge;
            *cur.get_mut(c).ok_or(Error::Internal)? = *prev.get(nc + c).ok_or(Error::Internal)?;
        }
        let at = |s: &[i32], j: usize| s.get(j).map(|v| i64::from(*v)).ok_or(Error::Internal);
        let mut qs = [0i64; crate::MAX_COMPONENTS];
        let mut i = 1usize;
        while i <= width {
            let mut all_zero = true;
            for (c, q) in qs.iter_mut().enumerate().take(nc) {
                let ra = at(cur, (i - 1) * nc + c)?;
                let rb = at(prev, i * nc + c)?;
                let rc = at(prev, (i - 1) * nc + c)?;
                let rd = at(prev, (i + 1) * nc + c)?;
                *q = self.context_id(ra, rb, rc, rd);
                all_zero &= *q == 0;
            }
            if !all_zero {
                for (c, q) in qs.iter().enumerate().take(nc) {
                    let ra = at(cur, (i - 1) * nc + c)?;
                    let rb = at(prev, i * nc + c)?;
                    let rc = at(prev, (i - 1) * nc + c)?;
                    let x = self.regular(br, *q, predict(ra, rb, rc))?;
                    *cur.get_mut(i * nc + c).ok_or(Error::Internal)? = x as i32;
                }
                i += 1;
                continue;
            }
            let remaining = width + 1 - i;
            let n = self.run_length(br, remaining, run_index)?;
            for p in i..i + n {
                for c in 0..nc {
                    let ra = *cur.get((i - 1) * nc + c).ok_or(Error::Internal)?;
                    *cur.get_mut(p * nc + c).ok_or(Error::Internal)? = ra;
                }
            }
            i += n;
            if n == remaining {
                break;
            }
            for c in 0..nc {
                let ra = at(cur, (i - 1) * nc + c)?;
                let rb = at(prev, i * nc + c)?;
                let e = self.interruption_error(br, 0, *run_index)?;
                let s = if rb - ra < 0 { -1 } else { 1 };
                let x = self.fix(rb + e * s * (2 * self.near + 1));
                *cur.get_mut(i * nc + c).ok_or(Error::Internal)? = x as i32;
            }
            *run_index = run_index.saturating_sub(1);
            i += 1;
        }
        Ok(())
    }
}

/// Context update and bias correction (T.87 §A.6.1, §A.6.2).
#[inline]
fn update_regular(ctx: &mut Context, e: i64, near: i64, reset: i64) {
    ctx.b += e * (2 * near + 1);
    ctx.a += e.abs();
    if ctx.n == reset {
        ctx.a >>= 1;
        ctx.b >>= 1;
        ctx.n >>= 1;
    }
    ctx.n += 1;
    if ctx.b + ctx.n <= 0 {
        ctx.b += ctx.n;
        if ctx.b <= -ctx.n {
            ctx.b = -ctx.n + 1;
        }
        if ctx.c > MIN_C {
            ctx.c -= 1;
        }
    } else if ctx.b > 0 {
        ctx.b -= ctx.n;
        if ctx.b > 0 {
            ctx.b = 0;
        }
        if ctx.c < MAX_C {
            ctx.c += 1;
        }
    }
}

/// The median edge detector (T.87 §A.4.1).
#[inline]
fn predict(ra: i64, rb: i64, rc: i64) -> i64 {
    if rc >= ra.max(rb) {
        ra.min(rb)
    } else if rc <= ra.min(rb) {
        ra.max(rb)
    } else {
        ra + rb - rc
    }
}

/// Default thresholds (T.87 §C.2.4.1.1.1) for MAXVAL and NEAR.
pub fn default_thresholds(maxval: i32, near: i32) -> (i32, i32, i32) {
    let clamp = |i: i32, j: i32| if i > maxval || i < j { j } else { i };
    if maxval >= 128 {
        let factor = (maxval.min(4095) + 128) / 256;
        // BASIC_T1 - 2 = 1.
        let t1 = clamp(factor + 2 + 3 * near, near + 1);
        let t2 = clamp(factor * (7 - 3) + 3 + 5 * near, t1);
        let t3 = clamp(factor * (21 - 4) + 4 + 7 * near, t2);
        (t1, t2, t3)
    } else {
        let factor = 256 / (maxval + 1);
        let t1 = clamp((3 / factor + 3 * near).max(2), near + 1);
        let t2 = clamp((7 / factor + 5 * near).max(3), t1);
        let t3 = clamp((21 / factor + 7 * near).max(4), t2);
        (t1, t2, t3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_thresholds_match_t87() {
        // T.87 Table C.3 values for 8 bits lossless, and 16-bit / near-lossless cases.
        assert_eq!(default_thresholds(255, 0), (3, 7, 21));
        assert_eq!(default_thresholds(4095, 0), (18, 67, 276));
        assert_eq!(default_thresholds(65535, 0), (18, 67, 276));
        assert_eq!(default_thresholds(255, 2), (9, 17, 35));
    }

    #[test]
    fn median_predictor() {
        assert_eq!(predict(10, 20, 25), 10);
        assert_eq!(predict(10, 20, 5), 20);
        assert_eq!(predict(10, 20, 15), 15);
    }
}
