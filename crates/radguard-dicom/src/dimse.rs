//! DIMSE command sets (PS3.7 §9, §E): decode, validate, encode the responses the gateway gives.
//!
//! A command set is always Implicit VR Little Endian and small; it is read with the one
//! data-set grammar ([`crate::tokens`]). Validation turns a decoded [`Command`] into a [`Request`] whose UIDs and AE
//! titles are typed, or into a [`RequestProblem`] that says which status to answer with.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

use crate::limits::Limits;
use crate::tokens::{Anomaly, AnomalyKind, ElementKind, ErrorKind, Token, Tokenizer};
use crate::ts::Encoding;
use crate::types::{status, AeTitle, CommandField, Uid};

/// Upper bound on a reassembled command set. Real ones are < 300 bytes.
pub const MAX_COMMAND_SET: usize = 64 * 1024;

/// The command elements the gateway reads, as found on the wire (not yet validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub field: Option<u16>,
    pub message_id: Option<u16>,
    pub responded_to: Option<u16>,
    pub affected_sop_class: Option<String>,
    pub requested_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    pub requested_sop_instance: Option<String>,
    pub move_destination: Option<String>,
    /// (0000,0800): 0x0101 means no data set follows.
    pub data_set_type: Option<u16>,
    pub status: Option<u16>,
    pub priority: Option<u16>,
    pub error_comment: Option<String>,
    /// (0000,1020) Number of Remaining Sub-operations (C-MOVE/C-GET responses, PS3.7 §9.1.3,
    /// §9.1.4).
    pub remaining_sub_operations: Option<u16>,
    /// (0000,1021) Number of Completed Sub-operations.
    pub completed_sub_operations: Option<u16>,
    /// (0000,1022) Number of Failed Sub-operations.
    pub failed_sub_operations: Option<u16>,
    /// (0000,1023) Number of Warning Sub-operations.
    pub warning_sub_operations: Option<u16>,
    /// (0000,1002) Event Type ID (N-EVENT-REPORT, PS3.7 §10.3.1).
    pub event_type_id: Option<u16>,
    /// (0000,1008) Action Type ID (N-ACTION, PS3.7 §10.3.4).
    pub action_type_id: Option<u16>,
    /// (0000,1005) Attribute Identifier List (N-GET, PS3.7 §10.3.2): AT, the tags asked for.
    pub attribute_identifier_list: Option<Vec<Tag>>,
}

/// Why bytes could not be decoded as a command set at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command set larger than {MAX_COMMAND_SET} bytes")]
    TooLarge,
    #[error("command set cannot be decoded: {0}")]
    Undecodable(String),
    #[error("command set has element {0} outside group 0000")]
    WrongGroup(Tag),
}

impl Command {
    /// Decodes a command set. Implicit VR Little Endian, group 0000 only, every length defined
    /// and inside the buffer, each element once and in ascending order (PS3.5 §7.1); unknown
    /// command elements are skipped.
    ///
    /// Read with the one data-set grammar ([`crate::tokens`]) rather than dicom-object: fuzzing
    /// (`fuzz/fuzz_targets/dimse_command.rs`) showed dicom-object's reader allocating gigabytes
    /// on a 200-byte command set whose lengths were all in bounds. A repeated element is refused:
    /// the gateway and the upstream could each act on a different copy (PS3.5 §7.1: each tag at
    /// most once).
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        if bytes.len() > MAX_COMMAND_SET {
            return Err(CommandError::TooLarge);
        }
        let limits = Limits {
            max_depth: 0,
            max_total: MAX_COMMAND_SET as u64,
            ..Limits::GATEWAY
        };
        let mut tz =
            Tokenizer::new(Encoding::ImplicitLittle, limits).with_total(bytes.len() as u64);
        let mut c = Command::default();
        let mut current: Option<(Tag, Vec<u8>)> = None;
        for t in tz.tokens(bytes) {
            match t {
                Token::Element(h) => {
                    if h.tag.group() != 0 {
                        return Err(CommandError::WrongGroup(h.tag));
                    }
                    if h.kind != ElementKind::Value {
                        return Err(CommandError::Undecodable(format!(
                            "element {} has undefined length",
                            h.tag
                        )));
                    }
                    current = Some((h.tag, Vec::new()));
                }
                Token::Value(v) => {
                    if let Some((_, buf)) = current.as_mut() {
                        buf.extend_from_slice(v);
                    }
                }
                Token::ValueEnd => {
                    if let Some((tag, value)) = current.take() {
                        c.set(tag, &value)?;
                    }
                }
                Token::Anomaly(Anomaly {
                    kind: AnomalyKind::Duplicate { tag },
                    ..
                }) => {
                    return Err(CommandError::Undecodable(format!(
                        "element {tag} appears twice"
                    )))
                }
                // Out of order: a repetition of an earlier element could hide behind it.
                Token::Anomaly(Anomaly {
                    kind: AnomalyKind::OutOfOrder { tag, previous },
                    ..
                }) => {
                    return Err(CommandError::Undecodable(format!(
                        "element {tag} follows {previous}: elements out of order"
                    )))
                }
                Token::Error(e) => {
                    return Err(CommandError::Undecodable(match e.kind {
                        ErrorKind::PastEnd {
                            tag,
                            length,
                            available,
                        } => format!("element {tag} declares {length} bytes, {available} remain"),
                        ErrorKind::TooDeep { .. } => "a sequence in a command set".to_string(),
                        other => other.to_string(),
                    }))
                }
                _ => {}
            }
        }
        match tz.finish() {
            Ok(()) => Ok(c),
            Err(_) => Err(CommandError::Undecodable("truncated element header".into())),
        }
    }

    /// Records one command element's value.
    fn set(&mut self, tag: Tag, value: &[u8]) -> Result<(), CommandError> {
        let us = || -> Result<u16, CommandError> {
            match value {
                [a, b] => Ok(u16::from_le_bytes([*a, *b])),
                _ => Err(CommandError::Undecodable(format!(
                    "element {tag} (US) has length {}",
                    value.len()
                ))),
            }
        };
        // Text that is not UTF-8 is kept (lossily) so that validation can answer it with
        // the right status (an invalid UID is 0x0117), rather than dropping the message.
        let text = || -> String {
            String::from_utf8_lossy(value)
                .trim_end_matches(['\0', ' '])
                .trim_start()
                .to_string()
        };
        match tag {
            tags::COMMAND_FIELD => self.field = Some(us()?),
            tags::MESSAGE_ID => self.message_id = Some(us()?),
            tags::MESSAGE_ID_BEING_RESPONDED_TO => self.responded_to = Some(us()?),
            tags::AFFECTED_SOP_CLASS_UID => self.affected_sop_class = Some(text()),
            tags::REQUESTED_SOP_CLASS_UID => self.requested_sop_class = Some(text()),
            tags::AFFECTED_SOP_INSTANCE_UID => self.affected_sop_instance = Some(text()),
            tags::REQUESTED_SOP_INSTANCE_UID => self.requested_sop_instance = Some(text()),
            tags::MOVE_DESTINATION => self.move_destination = Some(text()),
            tags::COMMAND_DATA_SET_TYPE => self.data_set_type = Some(us()?),
            tags::STATUS => self.status = Some(us()?),
            tags::PRIORITY => self.priority = Some(us()?),
            tags::ERROR_COMMENT => self.error_comment = Some(text()),
            tags::NUMBER_OF_REMAINING_SUBOPERATIONS => self.remaining_sub_operations = Some(us()?),
            tags::NUMBER_OF_COMPLETED_SUBOPERATIONS => self.completed_sub_operations = Some(us()?),
            tags::NUMBER_OF_FAILED_SUBOPERATIONS => self.failed_sub_operations = Some(us()?),
            tags::NUMBER_OF_WARNING_SUBOPERATIONS => self.warning_sub_operations = Some(us()?),
            tags::EVENT_TYPE_ID => self.event_type_id = Some(us()?),
            tags::ACTION_TYPE_ID => self.action_type_id = Some(us()?),
            tags::ATTRIBUTE_IDENTIFIER_LIST => {
                // AT: pairs of little-endian US (group, element), PS3.5 §6.2.
                if !value.len().is_multiple_of(4) {
                    return Err(CommandError::Undecodable(format!(
                        "element {tag} (AT) has length {}",
                        value.len()
                    )));
                }
                let list = value
                    .chunks_exact(4)
                    .map(|c| match c {
                        [a, b, x, y] => {
                            Tag(u16::from_le_bytes([*a, *b]), u16::from_le_bytes([*x, *y]))
                        }
                        _ => Tag(0, 0),
                    })
                    .collect();
                self.attribute_identifier_list = Some(list);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a data set follows this command.
    pub fn has_data_set(&self) -> bool {
        matches!(self.data_set_type, Some(v) if v != 0x0101)
    }

    pub fn command_field(&self) -> Option<CommandField> {
        self.field.map(CommandField::from_u16)
    }
}

/// A validated DIMSE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub field: CommandField,
    pub message_id: u16,
    /// Affected SOP Class UID (C-services, N-EVENT-REPORT, N-CREATE) or Requested SOP Class
    /// UID (N-GET, N-SET, N-ACTION, N-DELETE).
    pub sop_class: Option<Uid>,
    /// Affected SOP Instance UID (C-STORE, N-EVENT-REPORT, N-CREATE when given) or Requested
    /// SOP Instance UID (N-GET, N-SET, N-ACTION, N-DELETE).
    pub sop_instance: Option<Uid>,
    pub move_destination: Option<AeTitle>,
    pub has_data_set: bool,
}

/// Why a request is refused before any policy is asked. `message_id` is `None` when the request
/// cannot even be answered (then the association is aborted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestProblem {
    pub message_id: Option<u16>,
    pub status: u16,
    pub detail: String,
}

impl Command {
    /// Validates a request command: required elements present, UIDs valid (PS3.5 §9),
    /// move destination a valid AE title. A request must not be a response.
    pub fn validate_request(&self) -> Result<Request, RequestProblem> {
        let problem = |status: u16, detail: &str| RequestProblem {
            message_id: self.message_id,
            status,
            detail: detail.to_string(),
        };
        let Some(raw_field) = self.field else {
            return Err(problem(
                status::MISSING_ATTRIBUTE,
                "no Command Field (0000,0100)",
            ));
        };
        let field = CommandField::from_u16(raw_field);
        if field == CommandField::CCancelRq {
            let Some(id) = self.responded_to else {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    "C-CANCEL-RQ without Message ID Being Responded To",
                ));
            };
            return Ok(Request {
                field,
                message_id: id,
                sop_class: None,
                sop_instance: None,
                move_destination: None,
                has_data_set: false,
            });
        }
        let Some(message_id) = self.message_id else {
            return Err(problem(
                status::MISSING_ATTRIBUTE,
                "no Message ID (0000,0110)",
            ));
        };
        if field.is_response() {
            return Err(problem(
                status::UNRECOGNIZED_OPERATION,
                "a response where a request was expected",
            ));
        }
        if let CommandField::Other(v) = field {
            return Err(RequestProblem {
                message_id: Some(message_id),
                status: status::UNRECOGNIZED_OPERATION,
                detail: format!("command field 0x{v:04X} is not a supported operation"),
            });
        }
        if field.is_normalized() {
            return self.validate_normalized(field, message_id);
        }
        let Some(class) = self.affected_sop_class.as_deref() else {
            return Err(problem(
                status::MISSING_ATTRIBUTE,
                "no Affected SOP Class UID (0000,0002)",
            ));
        };
        let sop_class = Uid::new(class).map_err(|e| {
            problem(
                status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                &format!("Affected SOP Class UID invalid: {e}"),
            )
        })?;
        let mut req = Request {
            field,
            message_id,
            sop_class: Some(sop_class),
            sop_instance: None,
            move_destination: None,
            has_data_set: self.has_data_set(),
        };
        match field {
            CommandField::CStoreRq => {
                let Some(inst) = self.affected_sop_instance.as_deref() else {
                    return Err(problem(
                        status::MISSING_ATTRIBUTE,
                        "C-STORE-RQ without Affected SOP Instance UID (0000,1000)",
                    ));
                };
                req.sop_instance = Some(Uid::new(inst).map_err(|e| {
                    problem(
                        status::INVALID_OBJECT_INSTANCE,
                        &format!("Affected SOP Instance UID invalid: {e}"),
                    )
                })?);
                if !req.has_data_set {
                    return Err(problem(
                        status::MISSING_ATTRIBUTE,
                        "C-STORE-RQ without a data set",
                    ));
                }
            }
            CommandField::CMoveRq => {
                let Some(dest) = self.move_destination.as_deref() else {
                    return Err(problem(
                        status::MISSING_ATTRIBUTE,
                        "C-MOVE-RQ without Move Destination (0000,0600)",
                    ));
                };
                req.move_destination = Some(AeTitle::new(dest).map_err(|e| {
                    problem(
                        status::MOVE_DESTINATION_UNKNOWN,
                        &format!("Move Destination invalid: {e}"),
                    )
                })?);
                if !req.has_data_set {
                    return Err(problem(
                        status::MISSING_ATTRIBUTE,
                        "C-MOVE-RQ without an identifier",
                    ));
                }
            }
            CommandField::CFindRq | CommandField::CGetRq if !req.has_data_set => {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    "query without an identifier",
                ));
            }
            _ => {}
        }
        Ok(req)
    }
}

impl Command {
    /// The required elements of a DIMSE-N request (PS3.7 §10.3, the "M" rows of Tables
    /// 10.3-1, -3, -5, -7, -9, -11):
    /// - N-EVENT-REPORT-RQ: Affected SOP Class UID, Affected SOP Instance UID, Event Type ID;
    /// - N-GET-RQ, N-DELETE-RQ: Requested SOP Class UID, Requested SOP Instance UID, and no
    ///   data set (the services define none);
    /// - N-SET-RQ: Requested SOP Class and Instance UIDs and a data set (Modification List);
    /// - N-ACTION-RQ: Requested SOP Class and Instance UIDs, Action Type ID;
    /// - N-CREATE-RQ: Affected SOP Class UID (the instance UID is optional: the SCP may assign
    ///   it).
    ///
    /// Missing elements are 0x0120; an invalid class UID 0x0122, an invalid instance UID 0x0117.
    fn validate_normalized(
        &self,
        field: CommandField,
        message_id: u16,
    ) -> Result<Request, RequestProblem> {
        let problem = |status: u16, detail: String| RequestProblem {
            message_id: Some(message_id),
            status,
            detail,
        };
        let name = format!("{field:?}");
        let (requested, instance_required) = match field {
            CommandField::NEventReportRq => (false, true),
            CommandField::NCreateRq => (false, false),
            _ => (true, true),
        };
        let (class, instance, which) = if requested {
            (
                self.requested_sop_class.as_deref(),
                self.requested_sop_instance.as_deref(),
                (
                    "Requested SOP Class UID (0000,0003)",
                    "Requested SOP Instance UID (0000,1001)",
                ),
            )
        } else {
            (
                self.affected_sop_class.as_deref(),
                self.affected_sop_instance.as_deref(),
                (
                    "Affected SOP Class UID (0000,0002)",
                    "Affected SOP Instance UID (0000,1000)",
                ),
            )
        };
        let Some(class) = class else {
            return Err(problem(
                status::MISSING_ATTRIBUTE,
                format!("{name} without {}", which.0),
            ));
        };
        let sop_class = Uid::new(class).map_err(|e| {
            problem(
                status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                format!("{} invalid: {e}", which.0),
            )
        })?;
        let sop_instance = match instance {
            Some(i) => Some(Uid::new(i).map_err(|e| {
                problem(
                    status::INVALID_OBJECT_INSTANCE,
                    format!("{} invalid: {e}", which.1),
                )
            })?),
            None if instance_required => {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    format!("{name} without {}", which.1),
                ))
            }
            None => None,
        };
        let has_data_set = self.has_data_set();
        match field {
            CommandField::NEventReportRq if self.event_type_id.is_none() => {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    format!("{name} without Event Type ID (0000,1002)"),
                ))
            }
            CommandField::NActionRq if self.action_type_id.is_none() => {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    format!("{name} without Action Type ID (0000,1008)"),
                ))
            }
            CommandField::NSetRq if !has_data_set => {
                return Err(problem(
                    status::MISSING_ATTRIBUTE,
                    format!("{name} without a Modification List (data set)"),
                ))
            }
            // A data set after a command that defines none: the gateway and the upstream could
            // each read it differently (or the upstream not at all).
            CommandField::NGetRq | CommandField::NDeleteRq if has_data_set => {
                return Err(problem(
                    status::UNRECOGNIZED_OPERATION,
                    format!("{name} with a data set (the service defines none)"),
                ))
            }
            _ => {}
        }
        Ok(Request {
            field,
            message_id,
            sop_class: Some(sop_class),
            sop_instance,
            move_destination: None,
            has_data_set,
        })
    }
}

/// Encodes the response the gateway gives itself (refusals, the vault's answers, C-ECHO).
pub fn encode_response(
    field: CommandField,
    responded_to: u16,
    sop_class: Option<&str>,
    sop_instance: Option<&str>,
    status_code: u16,
    comment: Option<&str>,
) -> Vec<u8> {
    let mut elems = vec![];
    // A peer's malformed UID is not echoed back (it may not even be ASCII): the element is
    // optional in a failure response.
    let echoable = |u: &&str| u.len() <= 64 && u.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let sop_class = sop_class.filter(echoable);
    let sop_instance = sop_instance.filter(echoable);
    if let Some(c) = sop_class {
        elems.push(DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(c),
        ));
    }
    elems.push(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        PrimitiveValue::from(field.response().to_u16()),
    ));
    elems.push(DataElement::new(
        tags::MESSAGE_ID_BEING_RESPONDED_TO,
        VR::US,
        PrimitiveValue::from(responded_to),
    ));
    elems.push(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(0x0101_u16),
    ));
    elems.push(DataElement::new(
        tags::STATUS,
        VR::US,
        PrimitiveValue::from(status_code),
    ));
    if let Some(i) = sop_instance {
        elems.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(i),
        ));
    }
    if let Some(text) = comment {
        // Error Comment is LO: at most 64 characters.
        let t: String = text
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(64)
            .collect();
        elems.push(DataElement::new(
            tags::ERROR_COMMENT,
            VR::LO,
            PrimitiveValue::from(t),
        ));
    }
    let obj = InMemDicomObject::command_from_element_iter(elems);
    let mut out = Vec::with_capacity(160);
    // Writing a handful of primitive elements into a Vec cannot fail.
    if obj
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .is_err()
    {
        out.clear();
    }
    out
}

/// Encodes a C-CANCEL-RQ for the request `responded_to` (PS3.7 §9.3.2.3: Command Field,
/// Message ID Being Responded To, Command Data Set Type; nothing else).
pub fn encode_cancel(responded_to: u16) -> Vec<u8> {
    let elems = [
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(CommandField::CCancelRq.to_u16()),
        ),
        DataElement::new(
            tags::MESSAGE_ID_BEING_RESPONDED_TO,
            VR::US,
            PrimitiveValue::from(responded_to),
        ),
        DataElement::new(
            tags::COMMAND_DATA_SET_TYPE,
            VR::US,
            PrimitiveValue::from(0x0101_u16),
        ),
    ];
    let obj = InMemDicomObject::command_from_element_iter(elems);
    let mut out = Vec::with_capacity(64);
    if obj
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .is_err()
    {
        out.clear();
    }
    out
}

/// Encodes a request command (used by tests and by `radguard probe`-style clients).
pub fn encode_request(
    field: CommandField,
    message_id: u16,
    sop_class: &str,
    sop_instance: Option<&str>,
    has_data_set: bool,
) -> Vec<u8> {
    encode_request_with(
        field,
        message_id,
        sop_class,
        sop_instance,
        has_data_set,
        None,
    )
}

/// Encodes a C-MOVE-RQ (PS3.7 §9.3.4.1): the request elements and its Move Destination; an
/// identifier follows it.
pub fn encode_move_request(message_id: u16, sop_class: &str, destination: &str) -> Vec<u8> {
    let dest = DataElement::new(
        tags::MOVE_DESTINATION,
        VR::AE,
        PrimitiveValue::from(destination),
    );
    encode_request_with(
        CommandField::CMoveRq,
        message_id,
        sop_class,
        None,
        true,
        Some(dest),
    )
}

fn encode_request_with(
    field: CommandField,
    message_id: u16,
    sop_class: &str,
    sop_instance: Option<&str>,
    has_data_set: bool,
    extra: Option<DataElement<InMemDicomObject>>,
) -> Vec<u8> {
    let mut elems = vec![
        DataElement::new(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(sop_class),
        ),
        DataElement::new(
            tags::COMMAND_FIELD,
            VR::US,
            PrimitiveValue::from(field.to_u16()),
        ),
        DataElement::new(tags::MESSAGE_ID, VR::US, PrimitiveValue::from(message_id)),
    ];
    if field != CommandField::CEchoRq {
        elems.push(DataElement::new(
            tags::PRIORITY,
            VR::US,
            PrimitiveValue::from(0u16),
        ));
    }
    elems.push(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        PrimitiveValue::from(if has_data_set { 0x0000_u16 } else { 0x0101 }),
    ));
    if let Some(i) = sop_instance {
        elems.push(DataElement::new(
            tags::AFFECTED_SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(i),
        ));
    }
    elems.extend(extra);
    let obj = InMemDicomObject::command_from_element_iter(elems);
    let mut out = Vec::with_capacity(160);
    if obj
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .is_err()
    {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";

    #[test]
    fn cancel_request_decodes() {
        let c = Command::decode(&encode_cancel(9)).unwrap();
        assert_eq!(c.command_field(), Some(CommandField::CCancelRq));
        assert_eq!(c.responded_to, Some(9));
        assert!(!c.has_data_set());
        assert_eq!(c.message_id, None);
    }

    #[test]
    fn store_request_roundtrip() {
        let b = encode_request(CommandField::CStoreRq, 7, CT, Some("1.2.3.4"), true);
        let c = Command::decode(&b).unwrap();
        let r = c.validate_request().unwrap();
        assert_eq!(r.field, CommandField::CStoreRq);
        assert_eq!(r.message_id, 7);
        assert_eq!(r.sop_class.unwrap().as_str(), CT);
        assert_eq!(r.sop_instance.unwrap().as_str(), "1.2.3.4");
        assert!(r.has_data_set);
    }

    #[test]
    fn response_roundtrip() {
        let b = encode_response(
            CommandField::CStoreRq,
            9,
            Some(CT),
            Some("1.2.3.4.5"),
            status::REFUSED_NOT_AUTHORIZED,
            Some("refused by policy"),
        );
        assert_eq!(b.len() % 2, 0);
        let c = Command::decode(&b).unwrap();
        assert_eq!(c.field, Some(0x8001));
        assert_eq!(c.responded_to, Some(9));
        assert_eq!(c.status, Some(0x0124));
        assert_eq!(c.affected_sop_instance.as_deref(), Some("1.2.3.4.5"));
        assert_eq!(c.error_comment.as_deref(), Some("refused by policy"));
        assert!(!c.has_data_set());
    }

    #[test]
    fn sub_operation_counts_decode() {
        // A C-MOVE-RSP (Pending) as PS3.7 §9.3.4.2 lays it out: the four sub-operation counts
        // (0000,1020)-(0000,1023), US, after Status.
        let el = |d: &mut Vec<u8>, elem: u16, v: u16| {
            d.extend_from_slice(&0u16.to_le_bytes());
            d.extend_from_slice(&elem.to_le_bytes());
            d.extend_from_slice(&2u32.to_le_bytes());
            d.extend_from_slice(&v.to_le_bytes());
        };
        let mut d = Vec::new();
        el(&mut d, 0x0100, 0x8021);
        el(&mut d, 0x0120, 4);
        el(&mut d, 0x0800, 0x0101);
        el(&mut d, 0x0900, 0xFF00);
        el(&mut d, 0x1020, 3);
        el(&mut d, 0x1021, 5);
        el(&mut d, 0x1022, 1);
        el(&mut d, 0x1023, 2);
        let c = Command::decode(&d).unwrap();
        assert_eq!(c.command_field(), Some(CommandField::CMoveRsp));
        assert_eq!(c.status, Some(0xFF00));
        assert_eq!(c.remaining_sub_operations, Some(3));
        assert_eq!(c.completed_sub_operations, Some(5));
        assert_eq!(c.failed_sub_operations, Some(1));
        assert_eq!(c.warning_sub_operations, Some(2));
        // Absent counts stay absent (a final response may omit Remaining).
        let c = Command::decode(&encode_response(
            CommandField::CMoveRq,
            4,
            None,
            None,
            0,
            None,
        ))
        .unwrap();
        assert_eq!(c.remaining_sub_operations, None);
        assert_eq!(c.completed_sub_operations, None);
        // A count of the wrong length is refused like any other US element.
        let mut bad = Vec::new();
        el(&mut bad, 0x0100, 0x8021);
        bad.extend_from_slice(&[0, 0, 0x21, 0x10, 4, 0, 0, 0, 1, 0, 0, 0]);
        assert!(matches!(
            Command::decode(&bad),
            Err(CommandError::Undecodable(_))
        ));
    }

    #[test]
    fn bad_requests() {
        let b = encode_request(CommandField::CStoreRq, 7, CT, Some("1.2.03"), true);
        let p = Command::decode(&b).unwrap().validate_request().unwrap_err();
        assert_eq!(p.status, status::INVALID_OBJECT_INSTANCE);
        assert_eq!(p.message_id, Some(7));
        let b = encode_request(CommandField::CStoreRq, 7, CT, None, true);
        let p = Command::decode(&b).unwrap().validate_request().unwrap_err();
        assert_eq!(p.status, status::MISSING_ATTRIBUTE);
        let b = encode_request(CommandField::Other(0x0160), 3, CT, None, false);
        let p = Command::decode(&b).unwrap().validate_request().unwrap_err();
        assert_eq!(p.status, status::UNRECOGNIZED_OPERATION);
        let b = encode_request(CommandField::CStoreRq, 7, "1.2/../3", Some("1.2"), true);
        let p = Command::decode(&b).unwrap().validate_request().unwrap_err();
        assert_eq!(p.status, status::REFUSED_SOP_CLASS_NOT_SUPPORTED);
        assert!(Command::decode(&[1, 2, 3]).is_err());
        // A declared length far beyond the bytes present is refused before any allocation.
        let huge = [0, 0, 0, 1, 0xF0, 0xFF, 0xFF, 0xFF, 1, 0];
        assert!(matches!(
            Command::decode(&huge),
            Err(CommandError::Undecodable(_))
        ));
        let other_group = [8, 0, 0x16, 0, 2, 0, 0, 0, b'1', 0];
        assert!(matches!(
            Command::decode(&other_group),
            Err(CommandError::WrongGroup(_))
        ));
        // The same element twice: the gateway and the upstream could act on different copies.
        let mut twice = encode_request(CommandField::CEchoRq, 5, CT, None, false);
        twice.extend_from_slice(&[0, 0, 0x10, 0x01, 2, 0, 0, 0, 9, 0]);
        assert!(matches!(
            Command::decode(&twice),
            Err(CommandError::Undecodable(m)) if m.contains("out of order")
        ));
        let mut adjacent = encode_request(CommandField::CEchoRq, 5, CT, None, false);
        adjacent.extend_from_slice(&[0, 0, 0x00, 0x08, 2, 0, 0, 0, 1, 1]);
        assert!(matches!(
            Command::decode(&adjacent),
            Err(CommandError::Undecodable(m)) if m.contains("twice")
        ));
        // A sequence (undefined length) in a command set.
        let sq = [0, 0, 0x00, 0x09, 0xFF, 0xFF, 0xFF, 0xFF];
        assert!(Command::decode(&sq).is_err());
    }

    /// A command set with exactly these elements (Implicit VR Little Endian).
    fn command_set(elems: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
        let obj = InMemDicomObject::command_from_element_iter(elems);
        let mut out = Vec::new();
        obj.write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        out
    }

    const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
    const COMMITMENT: &str = "1.2.840.10008.1.20.1";

    /// One N-request: which elements it carries (by the names of PS3.7 §10.3).
    #[derive(Clone, Copy)]
    struct N {
        field: CommandField,
        affected: bool,
        requested: bool,
        class: &'static str,
        instance: Option<&'static str>,
        event: bool,
        action: bool,
        data: bool,
    }

    fn encode_n(n: N) -> Vec<u8> {
        let ui = |t, v: &str| DataElement::new(t, VR::UI, PrimitiveValue::from(v));
        let us = |t, v: u16| DataElement::new(t, VR::US, PrimitiveValue::from(v));
        let mut e = vec![];
        if n.affected {
            e.push(ui(tags::AFFECTED_SOP_CLASS_UID, n.class));
        }
        if n.requested {
            e.push(ui(tags::REQUESTED_SOP_CLASS_UID, n.class));
        }
        e.push(us(tags::COMMAND_FIELD, n.field.to_u16()));
        e.push(us(tags::MESSAGE_ID, 11));
        e.push(us(
            tags::COMMAND_DATA_SET_TYPE,
            if n.data { 0x0001 } else { 0x0101 },
        ));
        if let (true, Some(i)) = (n.affected, n.instance) {
            e.push(ui(tags::AFFECTED_SOP_INSTANCE_UID, i));
        }
        if let (true, Some(i)) = (n.requested, n.instance) {
            e.push(ui(tags::REQUESTED_SOP_INSTANCE_UID, i));
        }
        if n.event {
            e.push(us(tags::EVENT_TYPE_ID, 1));
        }
        if n.action {
            e.push(us(tags::ACTION_TYPE_ID, 1));
        }
        command_set(e)
    }

    /// Each N-request as PS3.7 §10.3 requires it (all "M" elements present).
    fn complete(field: CommandField) -> N {
        let base = N {
            field,
            affected: false,
            requested: true,
            class: MPPS,
            instance: Some("1.2.3.4"),
            event: false,
            action: false,
            data: false,
        };
        match field {
            CommandField::NEventReportRq => N {
                affected: true,
                requested: false,
                class: COMMITMENT,
                event: true,
                data: true,
                ..base
            },
            CommandField::NCreateRq => N {
                affected: true,
                requested: false,
                data: true,
                ..base
            },
            CommandField::NSetRq => N { data: true, ..base },
            CommandField::NActionRq => N {
                class: COMMITMENT,
                instance: Some("1.2.840.10008.1.20.1.1"),
                action: true,
                data: true,
                ..base
            },
            _ => base,
        }
    }

    const N_REQUESTS: [CommandField; 6] = [
        CommandField::NEventReportRq,
        CommandField::NGetRq,
        CommandField::NSetRq,
        CommandField::NActionRq,
        CommandField::NCreateRq,
        CommandField::NDeleteRq,
    ];

    #[test]
    fn n_requests_validate() {
        for field in N_REQUESTS {
            let n = complete(field);
            let r = Command::decode(&encode_n(n))
                .unwrap()
                .validate_request()
                .unwrap_or_else(|p| panic!("{field:?}: {p:?}"));
            assert_eq!(r.field, field);
            assert_eq!(r.message_id, 11);
            assert_eq!(r.sop_class.unwrap().as_str(), n.class, "{field:?}");
            assert_eq!(r.sop_instance.as_ref().map(Uid::as_str), n.instance);
            assert_eq!(r.has_data_set, n.data);
            assert!(field.is_normalized() && !field.is_response());
            assert!(field.response().is_normalized() && field.response().is_response());
        }
        // N-CREATE may leave the instance UID to the SCP, and carry no attribute list.
        let n = N {
            instance: None,
            data: false,
            ..complete(CommandField::NCreateRq)
        };
        let r = Command::decode(&encode_n(n))
            .unwrap()
            .validate_request()
            .unwrap();
        assert_eq!(r.sop_instance, None);
    }

    #[test]
    fn n_requests_missing_elements() {
        let status_of = |n: N| {
            Command::decode(&encode_n(n))
                .unwrap()
                .validate_request()
                .map(|_| ())
                .map_err(|p| (p.status, p.message_id))
        };
        for field in N_REQUESTS {
            let n = complete(field);
            // The class in the wrong element (Affected where Requested is required, or back).
            let swapped = N {
                affected: n.requested,
                requested: n.affected,
                ..n
            };
            assert_eq!(
                status_of(swapped),
                Err((status::MISSING_ATTRIBUTE, Some(11))),
                "{field:?} class in the wrong element"
            );
            let no_instance = N {
                instance: None,
                ..n
            };
            let expected = if field == CommandField::NCreateRq {
                Ok(())
            } else {
                Err((status::MISSING_ATTRIBUTE, Some(11)))
            };
            assert_eq!(
                status_of(no_instance),
                expected,
                "{field:?} without instance"
            );
            let bad_instance = N {
                instance: Some("1.02"),
                ..n
            };
            assert_eq!(
                status_of(bad_instance),
                Err((status::INVALID_OBJECT_INSTANCE, Some(11))),
                "{field:?}"
            );
            let bad_class = N {
                class: "1.2.x",
                ..n
            };
            assert_eq!(
                status_of(bad_class),
                Err((status::REFUSED_SOP_CLASS_NOT_SUPPORTED, Some(11))),
                "{field:?}"
            );
        }
        let missing = Err((status::MISSING_ATTRIBUTE, Some(11)));
        let n = complete(CommandField::NEventReportRq);
        assert_eq!(status_of(N { event: false, ..n }), missing);
        let n = complete(CommandField::NActionRq);
        assert_eq!(status_of(N { action: false, ..n }), missing);
        let n = complete(CommandField::NSetRq);
        assert_eq!(status_of(N { data: false, ..n }), missing);
        for field in [CommandField::NGetRq, CommandField::NDeleteRq] {
            let n = complete(field);
            assert_eq!(
                status_of(N { data: true, ..n }),
                Err((status::UNRECOGNIZED_OPERATION, Some(11))),
                "{field:?} with a data set"
            );
        }
        // N-EVENT-REPORT and N-ACTION may carry no data set.
        let n = complete(CommandField::NActionRq);
        assert_eq!(status_of(N { data: false, ..n }), Ok(()));
    }

    #[test]
    fn n_command_elements_decode() {
        let mut e = vec![
            DataElement::new(
                tags::COMMAND_FIELD,
                VR::US,
                PrimitiveValue::from(0x0110_u16),
            ),
            DataElement::new(tags::EVENT_TYPE_ID, VR::US, PrimitiveValue::from(2_u16)),
            DataElement::new(
                tags::ATTRIBUTE_IDENTIFIER_LIST,
                VR::AT,
                PrimitiveValue::Tags(vec![Tag(0x0010, 0x0010), Tag(0x0040, 0x0252)].into()),
            ),
            DataElement::new(tags::ACTION_TYPE_ID, VR::US, PrimitiveValue::from(1_u16)),
        ];
        let c = Command::decode(&command_set(e.clone())).unwrap();
        assert_eq!(c.command_field(), Some(CommandField::NGetRq));
        assert_eq!(c.event_type_id, Some(2));
        assert_eq!(c.action_type_id, Some(1));
        assert_eq!(
            c.attribute_identifier_list,
            Some(vec![Tag(0x0010, 0x0010), Tag(0x0040, 0x0252)])
        );
        // An AT value that is not whole tags is refused like any malformed US.
        e[2] = DataElement::new(
            tags::ATTRIBUTE_IDENTIFIER_LIST,
            VR::AT,
            PrimitiveValue::from(vec![1u8, 0, 2, 0, 3, 0]),
        );
        assert!(matches!(
            Command::decode(&command_set(e)),
            Err(CommandError::Undecodable(_))
        ));
    }
}
