//! Transfer syntaxes: the one place that decides what a transfer syntax UID means for the bytes
//! of a data set (explicit or implicit VR, byte order, deflated, encapsulated pixel data).
//!
//! Every crate reads transfer syntaxes through [`TransferSyntax::from_uid`], so the gateway, the
//! fingerprint, the media scanner and de-identification cannot disagree about how a data set is
//! encoded (a parser differential an attacker could use). Names and the list of standard transfer
//! syntaxes come from dicom-rs's registry (PS3.6 Annex A); the encoding rules are PS3.5 §10 and
//! Annex A: every transfer syntax other than Implicit VR Little Endian and Explicit VR Big Endian
//! encodes its data set in Explicit VR Little Endian.

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use crate::types::Uid;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const ENCAPSULATED_UNCOMPRESSED_LE: &str = "1.2.840.10008.1.2.1.98";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub const JPEG_LOSSLESS_P14: &str = "1.2.840.10008.1.2.4.57";
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
pub const JPIP_REFERENCED: &str = "1.2.840.10008.1.2.4.94";
pub const JPIP_REFERENCED_DEFLATE: &str = "1.2.840.10008.1.2.4.95";
pub const JPIP_HTJ2K_REFERENCED: &str = "1.2.840.10008.1.2.4.204";
pub const JPIP_HTJ2K_REFERENCED_DEFLATE: &str = "1.2.840.10008.1.2.4.205";

/// How element headers are written: with or without the VR, in which byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Encoding {
    pub fn explicit(self) -> bool {
        self != Encoding::ImplicitLittle
    }
    pub fn big_endian(self) -> bool {
        self == Encoding::ExplicitBig
    }
    pub fn u16(self, b: [u8; 2]) -> u16 {
        if self.big_endian() {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }
    pub fn u32(self, b: [u8; 4]) -> u32 {
        if self.big_endian() {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }
    pub fn put_u16(self, out: &mut Vec<u8>, v: u16) {
        if self.big_endian() {
            out.extend_from_slice(&v.to_be_bytes())
        } else {
            out.extend_from_slice(&v.to_le_bytes())
        }
    }
    pub fn put_u32(self, out: &mut Vec<u8>, v: u32) {
        if self.big_endian() {
            out.extend_from_slice(&v.to_be_bytes())
        } else {
            out.extend_from_slice(&v.to_le_bytes())
        }
    }
}

/// Where the pixel data of a data set in this transfer syntax is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum PixelEncoding {
    /// Native (uncompressed) pixel data of defined length.
    Native,
    /// Encapsulated: a sequence of fragments of undefined length (PS3.5 §A.4).
    Encapsulated,
    /// JPIP referenced: no pixel data in the data set, a Pixel Data Provider URL instead.
    Referenced,
}

/// Why a transfer syntax UID cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("transfer syntax UID {0:?} is not a valid UID")]
    InvalidUid(String),
}

/// A transfer syntax, classified once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransferSyntax {
    uid: String,
    /// Element encoding of the data set (after inflating, when deflated).
    pub encoding: Encoding,
    /// The whole data set is deflated (RFC 1951, no zlib header: PS3.5 §A.5).
    pub deflated: bool,
    pub pixels: PixelEncoding,
    /// Listed in PS3.6 (dicom-rs's registry knows it); a private or future UID is read as
    /// Explicit VR Little Endian with encapsulated pixel data.
    pub known: bool,
    /// Lossy (or, for JPEG 2000 and video, usually lossy) compression of the pixel data.
    pub lossy: bool,
}

/// Encapsulated transfer syntaxes known to be lossy (or usually lossy: JPEG 2000 and HTJ2K
/// without the "lossless only" restriction, and video).
const LOSSY: &[&str] = &[
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  // JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Lossy (Near-Lossless)
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.93",  // JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.203", // High-Throughput JPEG 2000
    "1.2.840.10008.1.2.4.100", // MPEG2 Main Profile / Main Level
    "1.2.840.10008.1.2.4.100.1",
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.101.1",
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.102.1",
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.103.1",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.104.1",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.105.1",
    "1.2.840.10008.1.2.4.106",
    "1.2.840.10008.1.2.4.106.1",
    "1.2.840.10008.1.2.4.107",
    "1.2.840.10008.1.2.4.108",
    "1.2.840.10008.1.2.4.111", // JPEG XL JPEG Recompression
    "1.2.840.10008.1.2.4.112", // JPEG XL
];

impl TransferSyntax {
    /// Classifies a transfer syntax UID; trailing NUL or space padding is ignored. A valid UID
    /// that PS3.6 does not list is accepted (with `known == false`) as Explicit VR Little Endian
    /// with encapsulated pixel data (PS3.5 §10); callers that must refuse unknown syntaxes check
    /// [`TransferSyntax::known`].
    pub fn from_uid(raw: &str) -> Result<TransferSyntax, TsError> {
        let uid = raw.trim_end_matches(['\0', ' ']);
        if Uid::new(uid).is_err() {
            return Err(TsError::InvalidUid(uid.chars().take(80).collect()));
        }
        let registered = TransferSyntaxRegistry.get(uid);
        let (encoding, deflated, pixels) = match uid {
            IMPLICIT_VR_LE => (Encoding::ImplicitLittle, false, PixelEncoding::Native),
            EXPLICIT_VR_LE => (Encoding::ExplicitLittle, false, PixelEncoding::Native),
            EXPLICIT_VR_BE => (Encoding::ExplicitBig, false, PixelEncoding::Native),
            DEFLATED_EXPLICIT_VR_LE => (Encoding::ExplicitLittle, true, PixelEncoding::Native),
            JPIP_REFERENCED | JPIP_HTJ2K_REFERENCED => {
                (Encoding::ExplicitLittle, false, PixelEncoding::Referenced)
            }
            JPIP_REFERENCED_DEFLATE | JPIP_HTJ2K_REFERENCED_DEFLATE => {
                (Encoding::ExplicitLittle, true, PixelEncoding::Referenced)
            }
            _ => (Encoding::ExplicitLittle, false, PixelEncoding::Encapsulated),
        };
        Ok(TransferSyntax {
            uid: uid.to_string(),
            encoding,
            deflated,
            pixels,
            known: registered.is_some(),
            lossy: LOSSY.contains(&uid),
        })
    }

    pub fn implicit_vr_le() -> TransferSyntax {
        Self::from_uid(IMPLICIT_VR_LE).unwrap_or_else(|_| unreachable!("a valid UID"))
    }

    pub fn explicit_vr_le() -> TransferSyntax {
        Self::from_uid(EXPLICIT_VR_LE).unwrap_or_else(|_| unreachable!("a valid UID"))
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The PS3.6 name, when the UID is a standard transfer syntax.
    pub fn name(&self) -> Option<&'static str> {
        TransferSyntaxRegistry.get(&self.uid).map(|t| t.name())
    }

    pub fn encapsulated(&self) -> bool {
        self.pixels == PixelEncoding::Encapsulated
    }
}

impl std::fmt::Display for TransferSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.uid),
            None => f.write_str(&self.uid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2\0").unwrap();
        assert_eq!(t.encoding, Encoding::ImplicitLittle);
        assert_eq!(t.uid(), IMPLICIT_VR_LE);
        assert!(t.known && !t.deflated && t.pixels == PixelEncoding::Native);
        let t = TransferSyntax::from_uid(EXPLICIT_VR_BE).unwrap();
        assert!(t.encoding.big_endian() && t.encoding.explicit());
        let t = TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).unwrap();
        assert!(t.deflated && t.known && t.encoding == Encoding::ExplicitLittle);
        for uid in [RLE_LOSSLESS, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS] {
            let t = TransferSyntax::from_uid(uid).unwrap();
            assert!(t.encapsulated() && t.known && !t.lossy, "{uid}");
        }
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2.4.50").unwrap();
        assert!(t.lossy && t.encapsulated());
        assert_eq!(t.name(), Some("JPEG Baseline (Process 1)"));
        let t = TransferSyntax::from_uid("1.2.3.4.5").unwrap();
        assert!(!t.known && t.encapsulated() && t.encoding == Encoding::ExplicitLittle);
        let t = TransferSyntax::from_uid(JPIP_REFERENCED_DEFLATE).unwrap();
        assert!(t.deflated && t.pixels == PixelEncoding::Referenced);
        for bad in ["", "../etc", "1..2", "1.02"] {
            assert!(TransferSyntax::from_uid(bad).is_err(), "{bad}");
        }
    }
}
