//! Pure judgements for the scrub: does an object file look encrypted, and is a run of changed
//! objects the ransomware pattern.
//!
//! Encrypted-looking: ransomware replaces a file's bytes with ciphertext, whose byte entropy is
//! near 8 bits/byte. Compressed DICOM (JPEG, JPEG-LS, JPEG 2000, RLE, Deflate) is high-entropy
//! too, so entropy alone would flag every compressed image: a file is judged encrypted-looking
//! only when its entropy is high AND its DICOM structure is gone — no `DICM` magic at byte 128
//! (PS3.10 §7.1), a File Meta Information group that does not parse, or a data set whose first
//! elements are not well-formed element headers (PS3.5 §7.1). Ransomware that keeps the first
//! bytes and encrypts the rest ("intermittent"/partial encryption) fails the data set check.

use std::collections::VecDeque;

use radguard_dicom::limits::Limits;
use radguard_dicom::part10::read_head;
use radguard_dicom::tokens::{Token, Tokenizer};
use radguard_dicom::ts::TransferSyntax;

/// Entropy (bits per byte) at or above which a file without DICOM structure is judged
/// encrypted. Ciphertext of a few KiB measures ≥ 7.9; uncompressed DICOM measures well under
/// 7 and compressed DICOM keeps its structure.
pub const ENCRYPTED_ENTROPY: f64 = 7.5;

/// How many bytes of a file the judgement needs: the header, the first data set elements and
/// enough bytes for a stable entropy estimate.
pub const SAMPLE_LEN: usize = 1 << 20;

/// Data set elements checked after the File Meta Information.
const ELEMENTS_CHECKED: usize = 8;

/// The preamble (PS3.10 §7.1): 128 bytes, then `DICM`.
const PREAMBLE: usize = 128;

/// What [`judge`] saw in a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Shannon entropy of the sample, bits per byte (0..=8).
    pub entropy: f64,
    /// `DICM` at byte 128.
    pub dicm: bool,
    /// The File Meta Information and the first data set elements parse.
    pub structure_ok: bool,
}

impl Judgement {
    /// High entropy and no DICOM structure: what encrypting a DICOM file produces.
    pub fn encrypted_looking(&self) -> bool {
        self.entropy >= ENCRYPTED_ENTROPY && !self.structure_ok
    }
}

/// Shannon entropy of `bytes` in bits per byte (0 for an empty slice).
pub fn entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u64; 256];
    for &b in bytes {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Judges a file from its first bytes (up to [`SAMPLE_LEN`]; a shorter file whole).
pub fn judge(sample: &[u8]) -> Judgement {
    let dicm = sample.get(PREAMBLE..PREAMBLE + 4) == Some(b"DICM");
    let structure_ok = dicm && structure(sample).is_some();
    Judgement {
        entropy: entropy(sample),
        dicm,
        structure_ok,
    }
}

/// The File Meta Information and the first data set elements, read by radguard-dicom's one
/// grammar (`part10::read_head`, the [`Tokenizer`]); `None` at a structural error or an
/// irregularity ciphertext produces and an encoder does not (tags out of order or repeated, an
/// odd length, non-zero reserved bytes: PS3.5 §7.1).
fn structure(b: &[u8]) -> Option<()> {
    let head = read_head(b).ok()?;
    let ts = TransferSyntax::from_uid(head.meta.transfer_syntax_uid.as_deref()?).ok()?;
    if ts.deflated {
        // The data set is a deflate stream (high entropy by nature); the meta parsed.
        return Some(());
    }
    let data = b.get(head.data_start..)?;
    let mut tz = Tokenizer::new(ts.encoding, Limits::GATEWAY);
    let whole = b.len() < SAMPLE_LEN;
    if whole {
        // The whole (short) file: a length past its end is an error, not the sample's end.
        tz = tz.with_total(data.len() as u64);
    }
    let mut elements = 0;
    for t in tz.tokens(data) {
        match t {
            Token::Element(_) => {
                elements += 1;
                if elements >= ELEMENTS_CHECKED {
                    return Some(());
                }
            }
            Token::Error(_) | Token::Anomaly(_) => return None,
            _ => {}
        }
    }
    if whole {
        tz.finish().ok()?;
    }
    Some(())
}

/// The ransomware pattern: `threshold` or more objects found changed or encrypted-looking
/// within `window_ms`. Fed one finding at a time (with its time); says when to raise the alert,
/// once per burst: after an alert it stays quiet until the window has emptied.
#[derive(Debug, Clone)]
pub struct RansomwareDetector {
    threshold: usize,
    window_ms: u64,
    times: VecDeque<u64>,
    /// Set when the alert was raised for the current burst.
    alerted: bool,
}

impl RansomwareDetector {
    /// `threshold` of 0 is taken as 1.
    pub fn new(threshold: u32, window_ms: u64) -> Self {
        RansomwareDetector {
            threshold: usize::try_from(threshold.max(1)).unwrap_or(usize::MAX),
            window_ms,
            times: VecDeque::new(),
            alerted: false,
        }
    }

    /// Records a changed or encrypted-looking object found at `now_ms`; returns the number of
    /// such objects in the window when this one completes the pattern (once per burst).
    pub fn record(&mut self, now_ms: u64) -> Option<usize> {
        self.expire(now_ms);
        if self.times.is_empty() {
            self.alerted = false;
        }
        self.times.push_back(now_ms);
        if !self.alerted && self.times.len() >= self.threshold {
            self.alerted = true;
            return Some(self.times.len());
        }
        None
    }

    /// Forgets findings older than the window.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&t) = self.times.front() {
            if now_ms.saturating_sub(t) > self.window_ms {
                self.times.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// pydicom's bundled test files (the project's venv, `scripts/` installs it): real DICOM in
    /// uncompressed and compressed transfer syntaxes.
    fn pydicom_files() -> PathBuf {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        std::fs::read_dir(&venv)
            .unwrap_or_else(|e| {
                panic!(
                    "{} missing ({e}): run the project's setup script",
                    venv.display()
                )
            })
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/pydicom/data/test_files"))
            .find(|p| p.is_dir())
            .expect("pydicom test files in the venv")
    }

    fn read(name: &str) -> Vec<u8> {
        let p = pydicom_files().join(name);
        let mut b = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        b.truncate(SAMPLE_LEN);
        b
    }

    /// Deterministic pseudo-random bytes (xorshift), standing in for ciphertext.
    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn entropy_bounds() {
        assert_eq!(entropy(&[]), 0.0);
        assert_eq!(entropy(&[7; 1000]), 0.0);
        let all: Vec<u8> = (0..=255).collect();
        assert!((entropy(&all) - 8.0).abs() < 1e-9);
        assert!(entropy(&noise(64 * 1024, 3)) > 7.99);
    }

    #[test]
    fn real_dicom_is_not_encrypted_looking() {
        // Uncompressed, and the high-entropy compressed syntaxes: JPEG baseline, JPEG-LS,
        // JPEG 2000, RLE, Deflate.
        for name in [
            "CT_small.dcm",
            "MR_small.dcm",
            "JPEG2000.dcm",
            "MR_small_jp2klossless.dcm",
            "693_J2KI.dcm",
            "examples_jpeg2k.dcm",
            "SC_rgb_jpeg_dcmtk.dcm",
            "JPEG-lossy.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_RLE.dcm",
            "image_dfl.dcm",
        ] {
            let b = read(name);
            let j = judge(&b);
            assert!(j.dicm, "{name}: {j:?}");
            assert!(j.structure_ok, "{name}: {j:?}");
            assert!(!j.encrypted_looking(), "{name} flagged: {j:?}");
        }
        // A JPEG 2000 image of 150 KB is as high-entropy as ciphertext (7.997 bits/byte):
        // its structure is what clears it.
        let j2k = judge(&read("examples_jpeg2k.dcm"));
        assert!(j2k.entropy > 7.9, "{j2k:?}");
    }

    #[test]
    fn ciphertext_is_encrypted_looking() {
        let j = judge(&noise(200 * 1024, 9));
        assert!(!j.dicm);
        assert!(j.encrypted_looking(), "{j:?}");
    }

    #[test]
    fn partial_encryption_keeping_the_header_is_caught() {
        // Header and meta kept, the data set after them encrypted.
        let mut b = read("CT_small.dcm");
        let meta_end = 132 + 200;
        let tail = noise(b.len() - meta_end, 5);
        b.truncate(meta_end);
        b.extend_from_slice(&tail);
        let j = judge(&b);
        assert!(j.dicm);
        assert!(j.entropy > ENCRYPTED_ENTROPY, "{j:?}");
        assert!(j.encrypted_looking(), "{j:?}");
    }

    #[test]
    fn bytes_flipped_in_pixel_data_are_not_encrypted_looking() {
        // A changed file (hash mismatch) whose structure is intact: `changed`, not encrypted.
        let mut b = read("CT_small.dcm");
        let n = b.len();
        for x in b.iter_mut().skip(n - 100) {
            *x ^= 0xFF;
        }
        assert!(!judge(&b).encrypted_looking());
    }

    #[test]
    fn low_entropy_garbage_is_not_encrypted_looking() {
        let j = judge(&[b'A'; 4096]);
        assert!(!j.structure_ok);
        assert!(!j.encrypted_looking());
    }

    #[test]
    fn ransomware_pattern() {
        let mut d = RansomwareDetector::new(5, 10_000);
        // Four spread out over more than the window: nothing.
        for t in [0, 4_000, 8_000, 12_000] {
            assert_eq!(d.record(t), None);
        }
        // At 13 000 the window (10 s) holds 4 000, 8 000, 12 000 and 13 000; one more makes five.
        assert_eq!(d.record(13_000), None);
        assert_eq!(d.record(13_100), Some(5));
        // The same burst: no second alert.
        assert_eq!(d.record(13_200), None);
        assert_eq!(d.record(20_000), None);
        // After the window emptied, a new burst alerts again.
        let mut t = 40_000;
        let mut got = None;
        for _ in 0..5 {
            got = d.record(t);
            t += 10;
        }
        assert_eq!(got, Some(5));
    }

    #[test]
    fn threshold_one_alerts_at_once() {
        let mut d = RansomwareDetector::new(0, 1000);
        assert_eq!(d.record(5), Some(1));
    }
}
