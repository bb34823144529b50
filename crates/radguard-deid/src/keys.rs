//! The per-site secret key and everything derived from it: replacement UIDs, Patient ID
//! pseudonyms, per-patient date offsets. All are HMAC-SHA256 under the key with a distinct
//! domain label per use, so the same input gives the same output across runs and across
//! gateways that share the key, and nobody without the key can recompute (or reverse by
//! guessing) the mapping — unlike an unkeyed hash of the UID.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the key is {0} bytes; at least {MIN_KEY_BYTES} are needed (e.g. `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > site.key`)")]
    TooShort(usize),
}

/// A site's de-identification secret. `Debug` never prints it.
#[derive(Clone)]
pub struct SiteKey {
    key: Vec<u8>,
}

impl fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteKey({})", self.id())
    }
}

impl SiteKey {
    /// A key from its bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(key: &[u8]) -> Result<SiteKey, KeyError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(key.len()));
        }
        Ok(SiteKey { key: key.to_vec() })
    }

    /// Read a key file: its bytes with surrounding ASCII whitespace trimmed are the key
    /// (so a hex or base64 line works as well as raw random bytes).
    pub fn from_file(path: &Path) -> Result<SiteKey, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        SiteKey::from_bytes(raw.trim_ascii())
    }

    fn mac(&self, domain: &str, data: &[&[u8]]) -> [u8; 32] {
        // new_from_slice accepts any key length for HMAC.
        let mut m = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        };
        m.update(b"radguard-deid/v1/");
        m.update(domain.as_bytes());
        for d in data {
            m.update(&[0]);
            m.update(&(d.len() as u64).to_be_bytes());
            m.update(d);
        }
        m.finalize().into_bytes().into()
    }

    /// A short public identifier of the key (not secret: an HMAC of a constant), to record
    /// which key produced an output.
    pub fn id(&self) -> String {
        hex::encode(&self.mac("key-id", &[])[..8])
    }

    /// The replacement for a UID: `2.25.<n>`, where `n` is the integer value of a UUID
    /// (RFC 9562 version 8, i.e. custom) whose 122 free bits come from the HMAC of the UID.
    /// At most 44 characters.
    pub fn uid(&self, uid: &str) -> String {
        let h = self.mac("uid", &[uid.as_bytes()]);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        b[6] = (b[6] & 0x0F) | 0x80; // version 8
        b[8] = (b[8] & 0x3F) | 0x80; // variant 10xx
        format!("2.25.{}", u128::from_be_bytes(b))
    }

    /// The pseudonym for a Patient ID (24 upper-case hex digits, 96 bits).
    pub fn patient_id(&self, id: &[u8]) -> String {
        hex::encode_upper(&self.mac("patient-id", &[id])[..12])
    }

    /// A consistent replacement for an AE title (16 characters, `RG` + 14 hex digits).
    pub fn ae_title(&self, ae: &[u8]) -> String {
        format!("RG{}", &hex::encode_upper(&self.mac("ae", &[ae])[..7]))
    }

    /// The per-patient date offset in days, in `-3650..=-1` (always into the past).
    pub fn date_offset_days(&self, patient: &[u8]) -> i32 {
        let h = self.mac("date-offset", &[patient]);
        let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        -((n % 3650) as i32) - 1
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC is defined for keys of any length; the constructor cannot fail.
    panic!("HMAC-SHA256 rejected a key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_vector() {
        // The HMAC primitive itself, against RFC 4231 test case 2.
        let mut m = HmacSha256::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn uids_are_consistent_keyed_and_valid() {
        let k1 = SiteKey::from_bytes(&[1u8; 32]).unwrap();
        let k1b = SiteKey::from_bytes(&[1u8; 32]).unwrap();
        let k2 = SiteKey::from_bytes(&[2u8; 32]).unwrap();
        let a = k1.uid("1.2.3.4");
        assert_eq!(a, k1b.uid("1.2.3.4"));
        assert_ne!(a, k2.uid("1.2.3.4"));
        assert_ne!(a, k1.uid("1.2.3.5"));
        assert!(a.starts_with("2.25."));
        assert!(a.len() <= 64 && a.len() <= 44);
        let n: u128 = a[5..].parse().unwrap();
        let b = n.to_be_bytes();
        assert_eq!(b[6] >> 4, 8, "UUID version 8");
        assert_eq!(b[8] >> 6, 0b10, "RFC variant");
        assert!(!a[5..].starts_with('0'));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            SiteKey::from_bytes(b"short"),
            Err(KeyError::TooShort(5))
        ));
    }

    #[test]
    fn pseudonyms_and_offsets() {
        let k = SiteKey::from_bytes(b"0123456789abcdef0123").unwrap();
        let p = k.patient_id(b"12345");
        assert_eq!(p.len(), 24);
        assert_eq!(p, k.patient_id(b"12345"));
        assert_ne!(p, k.patient_id(b"12346"));
        assert_eq!(k.ae_title(b"CT01").len(), 16);
        for id in [&b"a"[..], b"b", b"c", b"12345", b""] {
            let d = k.date_offset_days(id);
            assert!((-3650..=-1).contains(&d), "{d}");
        }
        assert!(!format!("{k:?}").contains("0123456789"));
    }
}
