//! The scan-protocol and dose guard: what may change how a device scans, and what a scan has
//! cost the patient. Pure: no I/O, no clock; data sets come as radguard-dicom trees
//! ([`radguard_dicom::tree::DataSet`], read by the one grammar) and every decision is a value.
//!
//! - [`config`]: the `[guard]` section (site limits per body part and age group, approvers,
//!   protocol managers, allowed worklist protocol codes).
//! - [`protocol`]: Defined Procedure Protocol objects (CT, XA) checked against the limits and
//!   against the Protocol Approval objects seen ([`protocol::Approvals`]); a decision with the
//!   DIMSE status to answer.
//! - [`dose`]: the CT Radiation Dose SR walker (TID 10011 / 10013 / 10015, bounded) and the
//!   dose watch: events over the notification or alert values without a recorded reason and
//!   authorizing person, and studies whose accumulated CTDIvol crosses the alert value
//!   ([`dose::DoseWatch`], a bounded LRU fed by the caller).
//! - [`worklist`]: Modality Worklist C-FIND answers checked (control characters, over-long
//!   values, values not of their VR, Scheduled Protocol codes not allowed), refused or cleaned.
//!
//! Everything returns typed [`Finding`]s; the caller (the gateway, `radguard guard check`)
//! answers, alerts and prints.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod config;
pub mod dose;
pub mod protocol;
mod values;
pub mod worklist;

pub use config::{GuardConfig, LimitConfig, Limits, Phantom, WorklistAction};

/// CT Defined Procedure Protocol Storage (PS3.4 B.5).
pub const CT_DEFINED_PROTOCOL: &str = "1.2.840.10008.5.1.4.1.1.200.1";
/// XA Defined Procedure Protocol Storage.
pub const XA_DEFINED_PROTOCOL: &str = "1.2.840.10008.5.1.4.1.1.200.7";
/// Protocol Approval Storage.
pub const PROTOCOL_APPROVAL: &str = "1.2.840.10008.5.1.4.1.1.200.3";
/// X-Ray Radiation Dose SR Storage: the SOP class of CT Radiation Dose reports (TID 10011).
pub const XRAY_DOSE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.67";
/// Enhanced X-Ray Radiation Dose SR Storage.
pub const ENHANCED_XRAY_DOSE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.76";
/// Modality Worklist Information Model – FIND (PS3.4 K.6.1).
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";

/// The status a protocol from a peer that may not manage protocols gets: Refused: Not
/// Authorized (PS3.7 C.5.5 general status 0x0124), as the policy's refusals.
pub const STATUS_NOT_AUTHORIZED: u16 = 0x0124;
/// The status a protocol out of the site's limits, or not covered by an approval, gets: in the
/// C-STORE "Error: Cannot understand" range Cxxx (PS3.4 B.2.3), its own code so that an operator
/// (and a test) tells it from the firewall's 0xC000.
pub const STATUS_PROTOCOL_REFUSED: u16 = 0xC510;
/// The status a modality gets for a worklist query whose answer was refused: C-FIND "Failed:
/// Unable to process" range Cxxx (PS3.4 C.4.1.1.4), its own code.
pub const STATUS_WORKLIST_REFUSED: u16 = 0xC511;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// The object cannot be read as the kind it claims (missing SOP class, bad value).
    Malformed,
    /// A protocol parameter outside the site's range.
    KvpOutOfRange,
    TubeCurrentOutOfRange,
    ExposureTimeOutOfRange,
    ScanLengthOverLimit,
    /// A protocol's CTDIvol or DLP over the notification or alert value.
    CtdivolOverLimit,
    DlpOverLimit,
    /// A CTDIvol (or DLP) in one CTDI phantom where the limits that apply are set for the
    /// other (PS3.16 CID 4052: 16 cm head, 32 cm body; about a factor 2 apart).
    PhantomMismatch,
    /// A protocol or approval from a peer not in `protocol_managers`.
    NotProtocolManager,
    /// No Protocol Approval seen for the protocol.
    Unapproved,
    /// Approved, but by no configured approver (or disapproved, or deprecated).
    WrongApprover,
    /// Approved by a configured approver, but every such approval has expired.
    ApprovalExpired,
    /// The protocol's own Expiration DateTime has passed.
    ProtocolExpired,
    /// An irradiation event over the notification value without a recorded reason and
    /// authorizing person (NEMA XR 25).
    DoseNotification,
    /// Over the alert value without a recorded reason and authorizing person.
    DoseAlert,
    /// A study's accumulated CTDIvol crossed the alert value.
    StudyAccumulatedAlert,
    /// An SR content tree that is not a well-formed dose report (or past the walker's bounds).
    MalformedSr,
    /// Worklist answers.
    ControlCharacter,
    OverLongValue,
    WrongVr,
    ProtocolCodeNotAllowed,
}

impl FindingKind {
    /// Its name in output and alert evidence.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Malformed => "malformed",
            FindingKind::KvpOutOfRange => "kvp-out-of-range",
            FindingKind::TubeCurrentOutOfRange => "tube-current-out-of-range",
            FindingKind::ExposureTimeOutOfRange => "exposure-time-out-of-range",
            FindingKind::ScanLengthOverLimit => "scan-length-over-limit",
            FindingKind::CtdivolOverLimit => "ctdivol-over-limit",
            FindingKind::DlpOverLimit => "dlp-over-limit",
            FindingKind::PhantomMismatch => "phantom-mismatch",
            FindingKind::NotProtocolManager => "not-protocol-manager",
            FindingKind::Unapproved => "unapproved",
            FindingKind::WrongApprover => "wrong-approver",
            FindingKind::ApprovalExpired => "approval-expired",
            FindingKind::ProtocolExpired => "protocol-expired",
            FindingKind::DoseNotification => "dose-notification-without-reason",
            FindingKind::DoseAlert => "dose-alert-without-reason",
            FindingKind::StudyAccumulatedAlert => "study-accumulated-ctdivol-alert",
            FindingKind::MalformedSr => "malformed-sr",
            FindingKind::ControlCharacter => "control-character",
            FindingKind::OverLongValue => "over-long-value",
            FindingKind::WrongVr => "wrong-vr",
            FindingKind::ProtocolCodeNotAllowed => "protocol-code-not-allowed",
        }
    }
}

/// One thing the guard found, with what and where (no patient data: tags, values of the
/// parameters, limits).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub detail: String,
}

impl Finding {
    pub fn new(kind: FindingKind, detail: impl Into<String>) -> Finding {
        Finding {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

/// What the guard decides for an object on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Pass,
    /// Answer with this DIMSE status; nothing is forwarded.
    Refuse {
        status: u16,
    },
}

/// Which guarded kind an object is, from its SOP Class UID (and, without one, whether it looks
/// like a worklist answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    DefinedProtocol,
    ProtocolApproval,
    DoseReport,
    WorklistAnswer,
    /// Not something the guard looks at.
    Other,
}

/// The kind of a data set by its SOP Class UID (0008,0016); a data set without one holding a
/// Scheduled Procedure Step Sequence (0040,0100) is a worklist answer.
pub fn classify(ds: &radguard_dicom::tree::DataSet) -> ObjectKind {
    match values::text(ds, values::SOP_CLASS_UID).as_deref() {
        Some(CT_DEFINED_PROTOCOL | XA_DEFINED_PROTOCOL) => ObjectKind::DefinedProtocol,
        Some(PROTOCOL_APPROVAL) => ObjectKind::ProtocolApproval,
        Some(XRAY_DOSE_SR | ENHANCED_XRAY_DOSE_SR) => ObjectKind::DoseReport,
        None if ds.get(values::SPS_SEQUENCE).is_some() => ObjectKind::WorklistAnswer,
        _ => ObjectKind::Other,
    }
}
