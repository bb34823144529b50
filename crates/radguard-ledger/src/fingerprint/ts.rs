//! What the fingerprint does with a transfer syntax. How a transfer syntax encodes the data set
//! (VR, byte order, deflate, lossy) is `radguard_dicom::ts::TransferSyntax`'s to say; the one
//! decision made here is which encapsulated pixel data is decoded to samples.

use radguard_dicom::ts::{
    TransferSyntax, JPEG_LOSSLESS_P14, JPEG_LOSSLESS_SV1, JPEG_LS_LOSSLESS, RLE_LOSSLESS,
};

use super::FingerprintError;

/// The transfer syntax of a data set to fingerprint. A UID that is not a valid UID is refused;
/// a valid one PS3.6 does not list is read as Explicit VR Little Endian (PS3.5 §10) and its
/// encapsulated pixel data fingerprinted as a codestream.
pub fn transfer_syntax(uid: &str) -> Result<TransferSyntax, FingerprintError> {
    TransferSyntax::from_uid(uid).map_err(|_| {
        FingerprintError::UnsupportedTransferSyntax(
            uid.trim_end_matches(['\0', ' ']).chars().take(80).collect(),
        )
    })
}

/// Is the encapsulated pixel data of this transfer syntax decoded to samples? Only for the
/// lossless codecs Radguard decodes (RLE, JPEG Lossless Process 14 and SV1, JPEG-LS lossless):
/// then the instance fingerprints the same as its native form. Any other encapsulated pixel
/// data (lossy, or lossless without a decoder here) is fingerprinted as the codestream received.
pub fn decodes(ts: &TransferSyntax) -> bool {
    matches!(
        ts.uid(),
        RLE_LOSSLESS | JPEG_LOSSLESS_P14 | JPEG_LOSSLESS_SV1 | JPEG_LS_LOSSLESS
    )
}

/// Is this (encapsulated) transfer syntax lossy?
pub fn is_lossy(uid: &str) -> bool {
    TransferSyntax::from_uid(uid).is_ok_and(|t| t.lossy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_dicom::ts::{Encoding, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE};

    #[test]
    fn classification() {
        let t = transfer_syntax("1.2.840.10008.1.2\0").expect("ok");
        assert_eq!(t.encoding, Encoding::ImplicitLittle);
        assert_eq!(t.uid(), IMPLICIT_VR_LE);
        assert!(!decodes(&t));
        let t = transfer_syntax(EXPLICIT_VR_BE).expect("ok");
        assert!(t.encoding.big_endian() && t.encoding.explicit());
        for uid in [
            RLE_LOSSLESS,
            JPEG_LOSSLESS_P14,
            JPEG_LOSSLESS_SV1,
            JPEG_LS_LOSSLESS,
        ] {
            let t = transfer_syntax(uid).expect("ok");
            assert!(decodes(&t), "{uid}");
            assert_eq!(t.encoding, Encoding::ExplicitLittle);
        }
        let t = transfer_syntax("1.2.840.10008.1.2.4.50").expect("ok");
        assert!(!decodes(&t) && t.lossy && is_lossy(t.uid()));
        // JPEG 2000 lossless: a codestream, not lossy.
        let t = transfer_syntax("1.2.840.10008.1.2.4.90").expect("ok");
        assert!(!decodes(&t) && !t.lossy && !is_lossy(t.uid()));
        // Deflated is read (inflated by the grammar's reader), not refused.
        let t = transfer_syntax(DEFLATED_EXPLICIT_VR_LE).expect("ok");
        assert!(t.deflated && t.encoding == Encoding::ExplicitLittle && !decodes(&t));
        for bad in ["../etc", "", "1..2"] {
            assert!(
                matches!(
                    transfer_syntax(bad),
                    Err(FingerprintError::UnsupportedTransferSyntax(_))
                ),
                "{bad}"
            );
        }
        assert!(!is_lossy("not a uid"));
    }
}
