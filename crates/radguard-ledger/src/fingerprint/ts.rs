//! Transfer syntaxes: how the data set is encoded and what the fingerprint does with its pixels.

use super::FingerprintError;

/// How data set elements are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    ImplicitLittle,
    ExplicitLittle,
    ExplicitBig,
}

impl Encoding {
    pub fn explicit(self) -> bool {
        !matches!(self, Encoding::ImplicitLittle)
    }
    pub fn big_endian(self) -> bool {
        matches!(self, Encoding::ExplicitBig)
    }
}

/// What happens to encapsulated pixel data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// A lossless codec Radguard decodes: the fingerprint covers the decoded samples, so the
    /// instance fingerprints the same as its native form.
    Decode,
    /// A codec Radguard does not decode (lossy, or lossless without a decoder here): the
    /// fingerprint covers the compressed codestream as received.
    Codestream { lossy: bool },
}

/// A transfer syntax as the fingerprint sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSyntax {
    pub uid: String,
    pub encoding: Encoding,
    pub encapsulated: Encapsulated,
}

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub const JPEG_LOSSLESS_P14: &str = "1.2.840.10008.1.2.4.57";
pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";

/// Encapsulated transfer syntaxes known to be lossy (or usually lossy: JPEG 2000 and HTJ2K
/// without the "lossless" restriction, and video).
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

/// Is this encapsulated transfer syntax lossy?
pub fn is_lossy(uid: &str) -> bool {
    LOSSY.contains(&uid)
}

fn valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !uid.starts_with('.')
        && !uid.ends_with('.')
        && !uid.contains("..")
}

impl TransferSyntax {
    /// Classifies a transfer syntax UID (trailing NUL or space padding is ignored). Every
    /// transfer syntax other than the two native ones with implicit VR or big endian encodes its
    /// data set in explicit VR little endian (PS3.5 §10), so an unknown but well-formed UID is
    /// read that way and its pixel data fingerprinted as a codestream.
    pub fn from_uid(raw: &str) -> Result<TransferSyntax, FingerprintError> {
        let uid = raw.trim_end_matches(['\0', ' ']);
        if !valid_uid(uid) {
            return Err(FingerprintError::UnsupportedTransferSyntax(uid.to_string()));
        }
        let (encoding, encapsulated) = match uid {
            IMPLICIT_VR_LE => (
                Encoding::ImplicitLittle,
                Encapsulated::Codestream { lossy: false },
            ),
            EXPLICIT_VR_LE => (
                Encoding::ExplicitLittle,
                Encapsulated::Codestream { lossy: false },
            ),
            EXPLICIT_VR_BE => (
                Encoding::ExplicitBig,
                Encapsulated::Codestream { lossy: false },
            ),
            // A deflated data set needs inflating before it can be parsed; Radguard does not.
            DEFLATED_EXPLICIT_VR_LE => {
                return Err(FingerprintError::UnsupportedTransferSyntax(uid.to_string()))
            }
            RLE_LOSSLESS | JPEG_LOSSLESS_P14 | JPEG_LOSSLESS_SV1 | JPEG_LS_LOSSLESS => {
                (Encoding::ExplicitLittle, Encapsulated::Decode)
            }
            other => (
                Encoding::ExplicitLittle,
                Encapsulated::Codestream {
                    lossy: is_lossy(other),
                },
            ),
        };
        Ok(TransferSyntax {
            uid: uid.to_string(),
            encoding,
            encapsulated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2\0").expect("ok");
        assert_eq!(t.encoding, Encoding::ImplicitLittle);
        assert_eq!(t.uid, IMPLICIT_VR_LE);
        let t = TransferSyntax::from_uid(EXPLICIT_VR_BE).expect("ok");
        assert!(t.encoding.big_endian() && t.encoding.explicit());
        for uid in [
            RLE_LOSSLESS,
            JPEG_LOSSLESS_P14,
            JPEG_LOSSLESS_SV1,
            JPEG_LS_LOSSLESS,
        ] {
            let t = TransferSyntax::from_uid(uid).expect("ok");
            assert_eq!(t.encapsulated, Encapsulated::Decode, "{uid}");
            assert_eq!(t.encoding, Encoding::ExplicitLittle);
        }
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2.4.50").expect("ok");
        assert_eq!(t.encapsulated, Encapsulated::Codestream { lossy: true });
        let t = TransferSyntax::from_uid("1.2.840.10008.1.2.4.90").expect("ok");
        assert_eq!(t.encapsulated, Encapsulated::Codestream { lossy: false });
        assert!(TransferSyntax::from_uid(DEFLATED_EXPLICIT_VR_LE).is_err());
        assert!(TransferSyntax::from_uid("../etc").is_err());
        assert!(TransferSyntax::from_uid("").is_err());
        assert!(TransferSyntax::from_uid("1..2").is_err());
    }
}
