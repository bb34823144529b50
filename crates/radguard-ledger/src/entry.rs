//! Ledger entries and their byte encoding (the Merkle leaf data). Pure.
//!
//! ```text
//! u8   version = 1
//! [32] fingerprint                      (checked against A, kind and P on decode)
//! [32] A, attribute digest
//! u8   kind (0 none, 1 samples, 2 codestream)
//! [32] P, pixel digest                  (kinds 1 and 2)
//! u8 n ‖ n bytes  transfer syntax UID   (kind 2)
//! u8 n ‖ n × (u32 tag ‖ [8] digest)     per-attribute digests, ascending tags
//! u8 n ‖ n bytes  SOP Instance UID
//! u64  time, milliseconds since the Unix epoch
//! u8 n ‖ n bytes  gateway id (UTF-8)
//! u8 n ‖ n bytes  association id (UTF-8)
//! ```
//! All integers big endian. Nothing may follow.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::fingerprint::{AttributeDigest, Digest, Fingerprint, PixelDigest};

const VERSION: u8 = 1;

/// Milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn now() -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// RFC 3339 in UTC with milliseconds.
    pub fn to_rfc3339(self) -> String {
        let secs = self.0 / 1000;
        let ms = self.0 % 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days as i64);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a (year, month, day) date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// What the gateway records for each instance received on an origin route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub fingerprint: Fingerprint,
    pub sop_instance_uid: String,
    pub time: Timestamp,
    pub gateway_id: String,
    pub assoc_id: String,
}

/// Why an entry could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("invalid SOP Instance UID {0:?}")]
    InvalidUid(String),
    #[error("{0} is longer than 255 bytes")]
    TooLong(&'static str),
    #[error("malformed entry: {0}")]
    Malformed(&'static str),
    #[error("the entry's fingerprint does not follow from its parts")]
    Inconsistent,
}

/// A DICOM UID: 1–64 characters of digits and dots, no empty components.
pub fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && uid.split('.').all(|c| !c.is_empty())
}

fn short(out: &mut Vec<u8>, what: &'static str, bytes: &[u8]) -> Result<(), EntryError> {
    let n = u8::try_from(bytes.len()).map_err(|_| EntryError::TooLong(what))?;
    out.push(n);
    out.extend_from_slice(bytes);
    Ok(())
}

impl LedgerEntry {
    /// The canonical bytes (the Merkle leaf data).
    pub fn encode(&self) -> Result<Vec<u8>, EntryError> {
        if !valid_uid(&self.sop_instance_uid) {
            return Err(EntryError::InvalidUid(self.sop_instance_uid.clone()));
        }
        if !self.fingerprint.is_consistent() {
            return Err(EntryError::Inconsistent);
        }
        let fp = &self.fingerprint;
        let mut out = Vec::with_capacity(256 + fp.attribute_digests.len() * 12);
        out.push(VERSION);
        out.extend_from_slice(&fp.digest.0);
        out.extend_from_slice(&fp.attributes.0);
        out.push(fp.pixels.kind());
        match &fp.pixels {
            PixelDigest::None => {}
            PixelDigest::Samples { digest } => out.extend_from_slice(&digest.0),
            PixelDigest::Codestream {
                transfer_syntax,
                digest,
            } => {
                out.extend_from_slice(&digest.0);
                short(&mut out, "transfer syntax", transfer_syntax.as_bytes())?;
            }
        }
        let n = u8::try_from(fp.attribute_digests.len())
            .map_err(|_| EntryError::TooLong("attribute list"))?;
        out.push(n);
        if !fp.attribute_digests.is_sorted_by(|a, b| a.tag < b.tag) {
            return Err(EntryError::Malformed(
                "attribute digests must be in ascending tag order",
            ));
        }
        for a in &fp.attribute_digests {
            out.extend_from_slice(&a.tag.to_be_bytes());
            out.extend_from_slice(&a.digest);
        }
        short(
            &mut out,
            "SOP Instance UID",
            self.sop_instance_uid.as_bytes(),
        )?;
        out.extend_from_slice(&self.time.0.to_be_bytes());
        short(&mut out, "gateway id", self.gateway_id.as_bytes())?;
        short(&mut out, "association id", self.assoc_id.as_bytes())?;
        Ok(out)
    }

    /// Parses canonical bytes, refusing anything [`encode`](LedgerEntry::encode) would not
    /// produce.
    pub fn decode(bytes: &[u8]) -> Result<LedgerEntry, EntryError> {
        let mut r = Reader { b: bytes };
        if r.u8()? != VERSION {
            return Err(EntryError::Malformed("unknown entry version"));
        }
        let digest = Digest(r.array()?);
        let attributes = Digest(r.array()?);
        let pixels = match r.u8()? {
            0 => PixelDigest::None,
            1 => PixelDigest::Samples {
                digest: Digest(r.array()?),
            },
            2 => {
                let digest = Digest(r.array()?);
                let ts = r.string()?;
                PixelDigest::Codestream {
                    transfer_syntax: ts,
                    digest,
                }
            }
            _ => return Err(EntryError::Malformed("unknown pixel kind")),
        };
        let n = r.u8()?;
        let mut attribute_digests = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let tag = u32::from_be_bytes(r.array()?);
            let digest: [u8; 8] = r.array()?;
            if attribute_digests
                .last()
                .is_some_and(|l: &AttributeDigest| l.tag >= tag)
            {
                return Err(EntryError::Malformed("attribute digests out of order"));
            }
            attribute_digests.push(AttributeDigest { tag, digest });
        }
        let sop_instance_uid = r.string()?;
        let time = Timestamp(u64::from_be_bytes(r.array()?));
        let gateway_id = r.string()?;
        let assoc_id = r.string()?;
        if !r.b.is_empty() {
            return Err(EntryError::Malformed("trailing bytes"));
        }
        if !valid_uid(&sop_instance_uid) {
            return Err(EntryError::InvalidUid(sop_instance_uid));
        }
        let fingerprint = Fingerprint {
            digest,
            attributes,
            pixels,
            attribute_digests,
        };
        if !fingerprint.is_consistent() {
            return Err(EntryError::Inconsistent);
        }
        Ok(LedgerEntry {
            fingerprint,
            sop_instance_uid,
            time,
            gateway_id,
            assoc_id,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        let (h, t) = self
            .b
            .split_at_checked(n)
            .ok_or(EntryError::Malformed("truncated"))?;
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, EntryError> {
        let [b] = self.array()?;
        Ok(b)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        let (h, t) = self
            .b
            .split_first_chunk::<N>()
            .ok_or(EntryError::Malformed("truncated"))?;
        self.b = t;
        Ok(*h)
    }
    fn string(&mut self) -> Result<String, EntryError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| EntryError::Malformed("not UTF-8"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fingerprint(seed: u8, kind: u8) -> Fingerprint {
        let attributes = Digest([seed; 32]);
        let pixels = match kind {
            0 => PixelDigest::None,
            1 => PixelDigest::Samples {
                digest: Digest([seed.wrapping_add(1); 32]),
            },
            _ => PixelDigest::Codestream {
                transfer_syntax: "1.2.840.10008.1.2.4.50".into(),
                digest: Digest([seed.wrapping_add(2); 32]),
            },
        };
        Fingerprint {
            digest: Fingerprint::compose(&attributes, &pixels),
            attributes,
            pixels,
            attribute_digests: vec![
                AttributeDigest {
                    tag: 0x0008_0018,
                    digest: [seed; 8],
                },
                AttributeDigest {
                    tag: 0x0010_0020,
                    digest: [2; 8],
                },
            ],
        }
    }

    pub(crate) fn entry(seed: u8, uid: &str) -> LedgerEntry {
        LedgerEntry {
            fingerprint: fingerprint(seed, 1),
            sop_instance_uid: uid.into(),
            time: Timestamp(1_715_940_000_123),
            gateway_id: "gw1".into(),
            assoc_id: "assoc-7".into(),
        }
    }

    #[test]
    fn round_trip_every_kind() {
        for kind in 0..3 {
            let mut e = entry(5, "1.2.3.4");
            e.fingerprint = fingerprint(5, kind);
            let b = e.encode().expect("encode");
            assert_eq!(LedgerEntry::decode(&b).expect("decode"), e);
            // Every truncation and any trailing byte is refused.
            for cut in 0..b.len() {
                assert!(LedgerEntry::decode(&b[..cut]).is_err(), "cut {cut}");
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(LedgerEntry::decode(&longer).is_err());
        }
    }

    #[test]
    fn inconsistent_or_invalid_entries_are_refused() {
        let mut e = entry(5, "1.2.3.4");
        let mut b = e.encode().expect("encode");
        b[40] ^= 1; // inside A: the fingerprint no longer follows
        assert_eq!(LedgerEntry::decode(&b), Err(EntryError::Inconsistent));
        e.sop_instance_uid = "1.2.../x".into();
        assert!(matches!(e.encode(), Err(EntryError::InvalidUid(_))));
        let mut e = entry(5, "1.2.3.4");
        e.gateway_id = "g".repeat(300);
        assert_eq!(e.encode(), Err(EntryError::TooLong("gateway id")));
    }

    #[test]
    fn time_format() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_715_940_000_123).to_rfc3339(),
            "2024-05-17T10:00:00.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
