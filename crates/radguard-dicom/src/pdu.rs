//! PDU framing (PS3.8 §9.3) and P-DATA-TF PDV splitting.
//!
//! Framing is done in two phases: [`PduHeader::parse`] looks at the fixed 6-byte header and
//! [`PduHeader::check`] refuses unknown types and over-long PDUs *before* the caller allocates or
//! reads the body. The P-DATA fast path ([`pdvs`]) walks PDV items in place, without copies: the
//! gateway relays P-DATA PDUs as the same bytes it received. dicom-ul's `read_pdu` copies every
//! PDV into its own `Vec`, and re-encoding it would copy again, which costs more than the
//! ≤0.4 CPU-s/GB the relay has; association PDUs (rare, small) go through dicom-ul
//! ([`decode_control`] / [`encode`]).

use dicom_ul::pdu::{self, Pdu};

/// Length of the fixed PDU header: type, reserved, 32-bit big-endian length.
pub const HEADER_LEN: usize = 6;

/// Upper bound for association-phase PDUs (A-ASSOCIATE-RQ/AC can carry hundreds of contexts).
pub const MAX_ASSOCIATION_PDU: u32 = 256 * 1024;

/// PDU types of PS3.8 Table 9-11.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PduType {
    AssociateRq,
    AssociateAc,
    AssociateRj,
    PData,
    ReleaseRq,
    ReleaseRp,
    Abort,
}

impl PduType {
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0x01 => Self::AssociateRq,
            0x02 => Self::AssociateAc,
            0x03 => Self::AssociateRj,
            0x04 => Self::PData,
            0x05 => Self::ReleaseRq,
            0x06 => Self::ReleaseRp,
            0x07 => Self::Abort,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::AssociateRq => "A-ASSOCIATE-RQ",
            Self::AssociateAc => "A-ASSOCIATE-AC",
            Self::AssociateRj => "A-ASSOCIATE-RJ",
            Self::PData => "P-DATA-TF",
            Self::ReleaseRq => "A-RELEASE-RQ",
            Self::ReleaseRp => "A-RELEASE-RP",
            Self::Abort => "A-ABORT",
        }
    }
}

/// A-ABORT reasons of PS3.8 Table 9-26 (source 2, service provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbortReason {
    NotSpecified = 0,
    UnrecognizedPdu = 1,
    UnexpectedPdu = 2,
    UnrecognizedPduParameter = 4,
    UnexpectedPduParameter = 5,
    InvalidPduParameter = 6,
}

/// Why a PDU header or body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unrecognized PDU type 0x{0:02X}")]
    UnknownType(u8),
    #[error("PDU of {length} bytes exceeds the negotiated maximum of {max}")]
    TooLong { length: u32, max: u32 },
    #[error("malformed {pdu}: {detail}")]
    Malformed { pdu: &'static str, detail: String },
}

impl FrameError {
    /// The A-ABORT reason PS3.8 prescribes for this error.
    pub fn abort_reason(&self) -> AbortReason {
        match self {
            FrameError::UnknownType(_) => AbortReason::UnrecognizedPdu,
            FrameError::TooLong { .. } | FrameError::Malformed { .. } => {
                AbortReason::InvalidPduParameter
            }
        }
    }
}

/// The fixed 6-byte PDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduHeader {
    pub raw_type: u8,
    pub length: u32,
}

impl PduHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        PduHeader {
            raw_type: b[0],
            length: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
        }
    }

    /// Checks type and length before the body is read. `max_pdata` is the maximum P-DATA-TF
    /// length this side negotiated; other PDUs are bounded by [`MAX_ASSOCIATION_PDU`].
    pub fn check(&self, max_pdata: u32) -> Result<PduType, FrameError> {
        let ty = PduType::from_u8(self.raw_type).ok_or(FrameError::UnknownType(self.raw_type))?;
        let max = match ty {
            PduType::PData => max_pdata,
            PduType::ReleaseRq | PduType::ReleaseRp | PduType::Abort => 4,
            _ => MAX_ASSOCIATION_PDU,
        };
        if self.length > max {
            return Err(FrameError::TooLong {
                length: self.length,
                max,
            });
        }
        Ok(ty)
    }
}

/// One presentation data value inside a P-DATA-TF body, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv<'a> {
    pub context_id: u8,
    pub is_command: bool,
    pub is_last: bool,
    pub data: &'a [u8],
}

/// Splits a P-DATA-TF body into PDVs, checking every item length. At least one PDV is required.
pub fn pdvs(body: &[u8]) -> Result<Vec<Pdv<'_>>, FrameError> {
    let mut out = Vec::with_capacity(2);
    let mut rest = body;
    while !rest.is_empty() {
        let Some((len_bytes, after)) = rest.split_first_chunk::<4>() else {
            return Err(malformed_pdata("truncated PDV item length"));
        };
        let len = u32::from_be_bytes(*len_bytes) as usize;
        if len < 2 {
            return Err(malformed_pdata("PDV item shorter than its header"));
        }
        if len > after.len() {
            return Err(malformed_pdata("PDV item longer than the PDU"));
        }
        let (item, next) = after.split_at(len);
        let (&[context_id, control], data) = item.split_at(2) else {
            return Err(malformed_pdata("PDV item shorter than its header"));
        };
        if context_id % 2 == 0 {
            return Err(malformed_pdata("even presentation context ID"));
        }
        if control & 0xFC != 0 {
            return Err(malformed_pdata(
                "reserved bits set in the message control header",
            ));
        }
        out.push(Pdv {
            context_id,
            is_command: control & 1 != 0,
            is_last: control & 2 != 0,
            data,
        });
        rest = next;
    }
    if out.is_empty() {
        return Err(malformed_pdata("P-DATA-TF without a PDV"));
    }
    Ok(out)
}

fn malformed_pdata(detail: &str) -> FrameError {
    FrameError::Malformed {
        pdu: "P-DATA-TF",
        detail: detail.to_string(),
    }
}

/// Appends one P-DATA-TF PDU holding the given PDVs to `out`.
pub fn encode_pdata(out: &mut Vec<u8>, pdvs: &[Pdv<'_>]) {
    let body: usize = pdvs.iter().map(|p| 6 + p.data.len()).sum();
    out.reserve(HEADER_LEN + body);
    out.extend_from_slice(&[0x04, 0]);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    for p in pdvs {
        out.extend_from_slice(&((p.data.len() + 2) as u32).to_be_bytes());
        out.push(p.context_id);
        out.push(u8::from(p.is_command) | (u8::from(p.is_last) << 1));
        out.extend_from_slice(p.data);
    }
}

/// Decodes an association-phase PDU (anything but P-DATA) from its full bytes (header + body).
pub fn decode_control(full: &[u8]) -> Result<Pdu, FrameError> {
    let name = full
        .first()
        .and_then(|t| PduType::from_u8(*t))
        .map(PduType::name)
        .unwrap_or("PDU");
    match pdu::read_pdu(full, pdu::MAXIMUM_PDU_SIZE, false) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(FrameError::Malformed {
            pdu: name,
            detail: "truncated".into(),
        }),
        Err(e) => Err(FrameError::Malformed {
            pdu: name,
            detail: e.to_string(),
        }),
    }
}

/// Encodes a PDU with dicom-ul.
pub fn encode(p: &Pdu) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(256);
    pdu::write_pdu(&mut out, p).map_err(|e| FrameError::Malformed {
        pdu: "outgoing PDU",
        detail: e.to_string(),
    })?;
    Ok(out)
}

/// The bytes of an A-ABORT-RQ from the service provider (source 2) with the given reason.
pub fn abort_bytes(reason: AbortReason) -> [u8; 10] {
    [0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason as u8]
}

/// The bytes of an A-ABORT-RQ from the service user (source 0).
pub fn user_abort_bytes() -> [u8; 10] {
    [0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]
}

/// A-RELEASE-RQ / RP bytes.
pub const RELEASE_RQ: [u8; 10] = [0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
pub const RELEASE_RP: [u8; 10] = [0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0];

/// The bytes of an A-ASSOCIATE-RJ with the given result/source/reason.
pub fn reject_bytes(result: u8, source: u8, reason: u8) -> [u8; 10] {
    [0x03, 0, 0, 0, 0, 4, 0, result, source, reason]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let h = PduHeader::parse(&[4, 0, 0, 1, 0, 0]);
        assert_eq!(h.length, 65536);
        assert_eq!(h.check(65536), Ok(PduType::PData));
        assert_eq!(
            h.check(16384),
            Err(FrameError::TooLong {
                length: 65536,
                max: 16384
            })
        );
        let h = PduHeader::parse(&[9, 0, 0, 0, 0, 4]);
        assert_eq!(h.check(16384), Err(FrameError::UnknownType(9)));
        assert_eq!(
            FrameError::UnknownType(9).abort_reason(),
            AbortReason::UnrecognizedPdu
        );
        let h = PduHeader::parse(&[1, 0, 0xFF, 0xFF, 0xFF, 0xF0]);
        assert!(matches!(h.check(16384), Err(FrameError::TooLong { .. })));
        let h = PduHeader::parse(&[5, 0, 0, 0, 0, 5]);
        assert!(h.check(16384).is_err());
    }

    #[test]
    fn pdv_roundtrip() {
        let a = Pdv {
            context_id: 1,
            is_command: true,
            is_last: true,
            data: b"abc",
        };
        let b = Pdv {
            context_id: 3,
            is_command: false,
            is_last: false,
            data: b"",
        };
        let mut out = Vec::new();
        encode_pdata(&mut out, &[a, b]);
        let h = PduHeader::parse(out[..6].try_into().unwrap());
        assert_eq!(h.length as usize, out.len() - 6);
        assert_eq!(pdvs(&out[6..]).unwrap(), vec![a, b]);
    }

    #[test]
    fn pdv_errors() {
        assert!(pdvs(&[]).is_err());
        assert!(pdvs(&[0, 0, 0]).is_err());
        assert!(pdvs(&[0, 0, 0, 1, 1]).is_err());
        assert!(pdvs(&[0, 0, 0, 9, 1, 3]).is_err());
        assert!(pdvs(&[0, 0, 0, 2, 2, 3]).is_err());
        assert!(pdvs(&[0, 0, 0, 2, 1, 7]).is_err());
        assert!(pdvs(&[0, 0, 0, 2, 1, 3]).is_ok());
    }
}
