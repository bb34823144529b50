//! Typed wire fields: AE titles, UIDs, DIMSE operations.
//!
//! Every value that comes from a peer is validated once, here, and then carried as a type that
//! can only hold a valid value.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text field from the wire or from the config is not a valid AE title or UID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("AE title is empty (or only spaces)")]
    AeEmpty,
    #[error("AE title is longer than 16 characters")]
    AeTooLong,
    #[error("AE title contains a character that is not printable ASCII or contains a backslash")]
    AeBadChar,
    #[error("UID is empty")]
    UidEmpty,
    #[error("UID is longer than 64 characters")]
    UidTooLong,
    #[error("UID contains a character other than digits and dots")]
    UidBadChar,
    #[error("UID has an empty component (leading, trailing or double dot)")]
    UidEmptyComponent,
    #[error("UID has a component with a leading zero")]
    UidLeadingZero,
}

/// An Application Entity title (PS3.5 VR AE): 1..=16 printable ASCII characters, no backslash,
/// leading and trailing spaces not significant (they are stripped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AeTitle(String);

impl AeTitle {
    /// Validates an AE title as it appears on the wire or in a config (padding spaces allowed).
    pub fn new(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim_matches(|c| c == ' ' || c == '\0');
        if trimmed.is_empty() {
            return Err(FieldError::AeEmpty);
        }
        if trimmed.len() > 16 {
            return Err(FieldError::AeTooLong);
        }
        if !trimmed
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
        {
            return Err(FieldError::AeBadChar);
        }
        Ok(AeTitle(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AeTitle {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AeTitle::new(s)
    }
}

impl Serialize for AeTitle {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AeTitle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AeTitle::new(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid AE title {s:?}: {e}")))
    }
}

/// A DICOM UID (PS3.5 §9): digits and dots, at most 64 characters, no empty component, no
/// component with a leading zero (a single `0` is allowed). A trailing NUL pad is stripped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

impl Uid {
    pub fn new(raw: &str) -> Result<Self, FieldError> {
        let s = raw.trim_end_matches(['\0', ' ']);
        if s.is_empty() {
            return Err(FieldError::UidEmpty);
        }
        if s.len() > 64 {
            return Err(FieldError::UidTooLong);
        }
        if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(FieldError::UidBadChar);
        }
        for comp in s.split('.') {
            if comp.is_empty() {
                return Err(FieldError::UidEmptyComponent);
            }
            if comp.len() > 1 && comp.starts_with('0') {
                return Err(FieldError::UidLeadingZero);
            }
        }
        Ok(Uid(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Uid {
    type Err = FieldError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::new(s)
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The DIMSE operations a policy talks about: the five C-services and the six N-services
/// (PS3.7 §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Echo,
    Store,
    Find,
    Move,
    Get,
    #[serde(rename = "n-event-report")]
    NEventReport,
    #[serde(rename = "n-get")]
    NGet,
    #[serde(rename = "n-set")]
    NSet,
    #[serde(rename = "n-action")]
    NAction,
    #[serde(rename = "n-create")]
    NCreate,
    #[serde(rename = "n-delete")]
    NDelete,
}

impl Operation {
    /// The six DIMSE-N operations (PS3.7 §10.1), in command-field order.
    pub const NORMALIZED: [Operation; 6] = [
        Operation::NEventReport,
        Operation::NGet,
        Operation::NSet,
        Operation::NAction,
        Operation::NCreate,
        Operation::NDelete,
    ];

    /// Whether this is a DIMSE-N operation (on a normalized SOP instance, PS3.7 §10).
    pub fn is_normalized(self) -> bool {
        Self::NORMALIZED.contains(&self)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Echo => "echo",
            Operation::Store => "store",
            Operation::Find => "find",
            Operation::Move => "move",
            Operation::Get => "get",
            Operation::NEventReport => "n-event-report",
            Operation::NGet => "n-get",
            Operation::NSet => "n-set",
            Operation::NAction => "n-action",
            Operation::NCreate => "n-create",
            Operation::NDelete => "n-delete",
        })
    }
}

/// DIMSE Command Field (0000,0100) values (PS3.7 E.1). Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandField {
    CStoreRq,
    CStoreRsp,
    CGetRq,
    CGetRsp,
    CFindRq,
    CFindRsp,
    CMoveRq,
    CMoveRsp,
    CEchoRq,
    CEchoRsp,
    CCancelRq,
    NEventReportRq,
    NEventReportRsp,
    NGetRq,
    NGetRsp,
    NSetRq,
    NSetRsp,
    NActionRq,
    NActionRsp,
    NCreateRq,
    NCreateRsp,
    NDeleteRq,
    NDeleteRsp,
    /// Anything else: never relayed (0x0211).
    Other(u16),
}

impl CommandField {
    pub fn from_u16(v: u16) -> Self {
        match v {
            0x0001 => Self::CStoreRq,
            0x8001 => Self::CStoreRsp,
            0x0010 => Self::CGetRq,
            0x8010 => Self::CGetRsp,
            0x0020 => Self::CFindRq,
            0x8020 => Self::CFindRsp,
            0x0021 => Self::CMoveRq,
            0x8021 => Self::CMoveRsp,
            0x0030 => Self::CEchoRq,
            0x8030 => Self::CEchoRsp,
            0x0FFF => Self::CCancelRq,
            0x0100 => Self::NEventReportRq,
            0x8100 => Self::NEventReportRsp,
            0x0110 => Self::NGetRq,
            0x8110 => Self::NGetRsp,
            0x0120 => Self::NSetRq,
            0x8120 => Self::NSetRsp,
            0x0130 => Self::NActionRq,
            0x8130 => Self::NActionRsp,
            0x0140 => Self::NCreateRq,
            0x8140 => Self::NCreateRsp,
            0x0150 => Self::NDeleteRq,
            0x8150 => Self::NDeleteRsp,
            other => Self::Other(other),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            Self::CStoreRq => 0x0001,
            Self::CStoreRsp => 0x8001,
            Self::CGetRq => 0x0010,
            Self::CGetRsp => 0x8010,
            Self::CFindRq => 0x0020,
            Self::CFindRsp => 0x8020,
            Self::CMoveRq => 0x0021,
            Self::CMoveRsp => 0x8021,
            Self::CEchoRq => 0x0030,
            Self::CEchoRsp => 0x8030,
            Self::CCancelRq => 0x0FFF,
            Self::NEventReportRq => 0x0100,
            Self::NEventReportRsp => 0x8100,
            Self::NGetRq => 0x0110,
            Self::NGetRsp => 0x8110,
            Self::NSetRq => 0x0120,
            Self::NSetRsp => 0x8120,
            Self::NActionRq => 0x0130,
            Self::NActionRsp => 0x8130,
            Self::NCreateRq => 0x0140,
            Self::NCreateRsp => 0x8140,
            Self::NDeleteRq => 0x0150,
            Self::NDeleteRsp => 0x8150,
            Self::Other(v) => v,
        }
    }

    /// The operation a request or response belongs to (`None` for C-CANCEL and unknown
    /// command fields).
    pub fn operation(self) -> Option<Operation> {
        match self {
            Self::CStoreRq | Self::CStoreRsp => Some(Operation::Store),
            Self::CGetRq | Self::CGetRsp => Some(Operation::Get),
            Self::CFindRq | Self::CFindRsp => Some(Operation::Find),
            Self::CMoveRq | Self::CMoveRsp => Some(Operation::Move),
            Self::CEchoRq | Self::CEchoRsp => Some(Operation::Echo),
            Self::NEventReportRq | Self::NEventReportRsp => Some(Operation::NEventReport),
            Self::NGetRq | Self::NGetRsp => Some(Operation::NGet),
            Self::NSetRq | Self::NSetRsp => Some(Operation::NSet),
            Self::NActionRq | Self::NActionRsp => Some(Operation::NAction),
            Self::NCreateRq | Self::NCreateRsp => Some(Operation::NCreate),
            Self::NDeleteRq | Self::NDeleteRsp => Some(Operation::NDelete),
            Self::CCancelRq | Self::Other(_) => None,
        }
    }

    /// Whether this is a DIMSE-N request or response (PS3.7 §10).
    pub fn is_normalized(self) -> bool {
        self.operation().is_some_and(Operation::is_normalized)
    }

    pub fn is_response(self) -> bool {
        self.to_u16() & 0x8000 != 0
    }

    /// The response command field for a request.
    pub fn response(self) -> CommandField {
        CommandField::from_u16(self.to_u16() | 0x8000)
    }
}

/// DIMSE status codes the gateway itself produces (PS3.7 Annex C).
pub mod status {
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: Not Authorized (PS3.7 C.5.x, general).
    pub const REFUSED_NOT_AUTHORIZED: u16 = 0x0124;
    /// Refused: SOP Class Not Supported.
    pub const REFUSED_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Invalid Object Instance (the SOP Instance UID is not valid).
    pub const INVALID_OBJECT_INSTANCE: u16 = 0x0117;
    /// Duplicate SOP Instance: used by the vault for an existing UID with different content.
    pub const DUPLICATE_SOP_INSTANCE: u16 = 0x0111;
    /// Unrecognized Operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Missing Attribute (a required command element is absent).
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// Refused: Move Destination unknown (C-MOVE).
    pub const MOVE_DESTINATION_UNKNOWN: u16 = 0xA801;
    /// Refused: Out of Resources (C-STORE, A7xx).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: Cannot understand (C-STORE Cxxx).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
}

/// Well-known UIDs the gateway needs by name.
pub mod uids {
    pub const VERIFICATION: &str = "1.2.840.10008.1.1";
    pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
    pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
    pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
    /// Radguard's implementation class UID (under a UUID-derived 2.25 root).
    pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.178964223650839203451735082137427198113";
    pub const IMPLEMENTATION_VERSION_NAME: &str = "RADGUARD_010";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ae_titles() {
        assert_eq!(AeTitle::new("  CT01 ").unwrap().as_str(), "CT01");
        assert_eq!(AeTitle::new("   "), Err(FieldError::AeEmpty));
        assert_eq!(AeTitle::new(""), Err(FieldError::AeEmpty));
        assert_eq!(
            AeTitle::new("ABCDEFGHIJKLMNOPQ"),
            Err(FieldError::AeTooLong)
        );
        assert_eq!(AeTitle::new("AB\\C"), Err(FieldError::AeBadChar));
        assert_eq!(AeTitle::new("ÄBC"), Err(FieldError::AeBadChar));
        assert_eq!(AeTitle::new("A\tB"), Err(FieldError::AeBadChar));
        assert!(AeTitle::new("ABCDEFGHIJKLMNOP").is_ok());
    }

    #[test]
    fn uids() {
        assert!(Uid::new("1.2.840.10008.1.1").is_ok());
        assert_eq!(
            Uid::new("1.2.840.10008.1.1\0").unwrap().as_str(),
            "1.2.840.10008.1.1"
        );
        assert!(Uid::new("1.0.3").is_ok());
        assert_eq!(Uid::new("1.02.3"), Err(FieldError::UidLeadingZero));
        assert_eq!(Uid::new("1..3"), Err(FieldError::UidEmptyComponent));
        assert_eq!(Uid::new(".1"), Err(FieldError::UidEmptyComponent));
        assert_eq!(Uid::new("1.2."), Err(FieldError::UidEmptyComponent));
        assert_eq!(Uid::new("1.2/../3"), Err(FieldError::UidBadChar));
        assert_eq!(Uid::new(""), Err(FieldError::UidEmpty));
        assert_eq!(Uid::new(&"1".repeat(65)), Err(FieldError::UidTooLong));
        assert!(Uid::new(&"1".repeat(64)).is_ok());
    }

    #[test]
    fn command_fields() {
        for v in [
            1u16, 0x8001, 0x10, 0x8010, 0x20, 0x8020, 0x21, 0x8021, 0x30, 0x8030, 0xfff, 0x140,
            0x8140, 0x100, 0x8100, 0x110, 0x8110, 0x120, 0x8120, 0x130, 0x8130, 0x150, 0x8150,
            0x160,
        ] {
            assert_eq!(CommandField::from_u16(v).to_u16(), v);
        }
        assert_eq!(CommandField::CStoreRq.response(), CommandField::CStoreRsp);
        assert!(CommandField::CEchoRsp.is_response());
        assert!(!CommandField::CEchoRq.is_response());
    }
}
