//! PS3.15 A.5 audit messages (the RFC 3881-derived DICOM audit message XML), built from records
//! (pure; no I/O).
//!
//! | record | message |
//! |---|---|
//! | `application-start` / `application-stop` | Application Activity (110100), type 110120 / 110121 |
//! | `transfer-begun`, `dimse-request` C-MOVE/C-GET | Begin Transferring DICOM Instances (110102) |
//! | `instances-transferred` | DICOM Instances Transferred (110104), one per patient and outcome |
//! | `dimse-request` C-FIND | Query (110112) with the query data set (base64) |
//! | `security-alert` | Security Alert (110113): 110126 Node Authentication (peer not recognized), 110132 Use of Restricted Function (not authorized), 110129 Security Configuration (block list changes: `block-added`, `block-removed`, `block-expired`; outcome 0); protocol violations and instance conflicts carry local codes (`99RADGUARD`) |
//! | `security-alert` from the console (`console-block-removed`, `console-config-reload`: 110129 Security Configuration; `console-alert-acknowledged`, `console-login-failed`: local codes) | Security Alert (110113) |
//! | `audit-log-used` (the console read the trail) | Audit Log Used (110101), the console user as requestor, the Security Audit Log as object |
//! | `audit-started` / `audit-stopped` / `events-lost` | Security Alert (110113), 110134 Audit Recording Started / 110133 Audit Recording Stopped |
//! | `association-accepted` / `-refused` / `-released` / `-aborted` with a user identity | User Authentication (110114), 110122 Login (success or failure) / 110123 Logout |
//!
//! Other records (requests, responses, context refusals, ...) have no A.5 message; they stay in
//! the store and in `export --format json`. The messages are one line of XML each, with the
//! elements in schema order (the schema is `schema/dicom-audit-message.rng` in this crate).

use std::fmt::Write as _;

use base64::Engine as _;

use crate::record::{AuditEvent, AuditRecord, Participant, Peer, Transfer, TransferAction};
use crate::time::rfc3339_ms;

/// A coded value (`csd-code`, `codeSystemName`, `originalText`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub code: String,
    pub system: String,
    pub text: String,
}

/// The `kind` of a record's user identity when the user is an operator console user (its
/// `[[admin.token]]` name), not a DICOM User Identity.
pub const CONSOLE_USER: &str = "console";

fn dcm(code: &str, text: &str) -> Code {
    Code {
        code: code.into(),
        system: "DCM".into(),
        text: text.into(),
    }
}

fn rfc3881(code: &str, text: &str) -> Code {
    Code {
        code: code.into(),
        system: "RFC-3881".into(),
        text: text.into(),
    }
}

fn local(code: &str, text: &str) -> Code {
    Code {
        code: code.into(),
        system: LOCAL_CODE_SYSTEM.into(),
        text: text.into(),
    }
}

/// The coding scheme of Radguard's own security alert types (extending the defined list).
pub const LOCAL_CODE_SYSTEM: &str = "99RADGUARD";

/// The reporting system (AuditSourceIdentification and the gateway's own participant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtnaSource {
    /// AuditSourceID: this gateway (defaults to the node name).
    pub source_id: String,
    /// AuditEnterpriseSiteID, if configured.
    pub enterprise_site_id: Option<String>,
    /// The gateway's process name, the UserID of its own active participant.
    pub process: String,
    /// The gateway's AE title (AlternativeUserID `AETITLES=`).
    pub ae_title: Option<String>,
}

impl AtnaSource {
    pub fn new(source_id: impl Into<String>) -> Self {
        AtnaSource {
            source_id: source_id.into(),
            enterprise_site_id: None,
            process: "radguard".into(),
            ae_title: None,
        }
    }
}

/// An ActiveParticipant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveParticipant {
    pub user_id: String,
    pub alternative_user_id: Option<String>,
    pub user_name: Option<String>,
    pub is_requestor: bool,
    pub roles: Vec<Code>,
    /// NetworkAccessPointID and its type (1 machine name, 2 IP address).
    pub access_point: Option<(String, u8)>,
}

/// The instances of one SOP Class in a ParticipantObjectDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopClassDescription {
    pub uid: String,
    pub instances: Vec<String>,
}

/// A ParticipantObjectIdentification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantObject {
    pub id_type: Code,
    pub id: String,
    pub type_code: Option<u8>,
    pub role: Option<u8>,
    /// ParticipantObjectName (exactly one of name and query is written).
    pub name: Option<String>,
    /// ParticipantObjectQuery bytes.
    pub query: Option<Vec<u8>>,
    /// ParticipantObjectDetail type/value pairs (values are written base64).
    pub details: Vec<(String, Vec<u8>)>,
    /// SOPClass elements of one ParticipantObjectDescription (none: no description).
    pub sop_classes: Vec<SopClassDescription>,
}

impl ParticipantObject {
    fn new(id_type: Code, id: impl Into<String>) -> Self {
        ParticipantObject {
            id_type,
            id: id.into(),
            type_code: None,
            role: None,
            name: None,
            query: None,
            details: Vec::new(),
            sop_classes: Vec::new(),
        }
    }
}

/// One audit message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtnaMessage {
    pub event_id: Code,
    pub action: char,
    pub time_ms: i64,
    /// 0, 4, 8 or 12.
    pub outcome: u8,
    pub outcome_description: Option<String>,
    pub type_codes: Vec<Code>,
    pub participants: Vec<ActiveParticipant>,
    pub source: AtnaSource,
    pub objects: Vec<ParticipantObject>,
}

/// Splits `ip:port` (or a bare IP or host name) into a NetworkAccessPointID and its type.
pub fn access_point(address: &str) -> (String, u8) {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return (sa.ip().to_string(), 2);
    }
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return (ip.to_string(), 2);
    }
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    (host.to_string(), 1)
}

fn aetitles(ae: &str) -> String {
    format!("AETITLES={ae}")
}

/// A DICOM node as a participant: UserID is its AE title (its address if none is known).
fn node_participant(
    ae: Option<&str>,
    address: Option<&str>,
    requestor: bool,
    role: Option<Code>,
) -> ActiveParticipant {
    let ap = address.map(access_point);
    let user_id = ae
        .map(str::to_string)
        .or_else(|| ap.as_ref().map(|a| a.0.clone()))
        .unwrap_or_else(|| "unknown".into());
    ActiveParticipant {
        user_id,
        alternative_user_id: ae.map(aetitles),
        user_name: None,
        is_requestor: requestor,
        roles: role.into_iter().collect(),
        access_point: ap,
    }
}

fn source_role() -> Code {
    dcm("110153", "Source Role ID")
}

fn destination_role() -> Code {
    dcm("110152", "Destination Role ID")
}

impl AtnaSource {
    fn me(&self, role: Option<Code>, access: Option<&str>) -> ActiveParticipant {
        ActiveParticipant {
            user_id: self.process.clone(),
            alternative_user_id: self.ae_title.as_deref().map(aetitles),
            user_name: Some(self.process.clone()),
            is_requestor: false,
            roles: role.into_iter().collect(),
            access_point: access.map(access_point),
        }
    }
}

fn peer_participant(peer: Option<&Peer>, requestor: bool, role: Option<Code>) -> ActiveParticipant {
    node_participant(
        peer.and_then(|p| p.calling_ae.as_deref()),
        peer.and_then(|p| p.address.as_deref()),
        requestor,
        role,
    )
}

fn called_participant(peer: Option<&Peer>, role: Option<Code>) -> ActiveParticipant {
    node_participant(
        peer.and_then(|p| p.called_ae.as_deref()),
        peer.and_then(|p| p.upstream.as_deref().or(p.local.as_deref())),
        false,
        role,
    )
}

fn study_objects(t: &Transfer) -> Vec<ParticipantObject> {
    let mut out = Vec::new();
    for s in &t.studies {
        let mut o = ParticipantObject::new(
            dcm("110180", "Study Instance UID"),
            s.uid.clone().unwrap_or_default(),
        );
        o.type_code = Some(2);
        o.role = Some(3);
        o.name = Some(String::new());
        o.sop_classes = s
            .sop_classes
            .iter()
            .map(|c| SopClassDescription {
                uid: c.uid.clone(),
                instances: c.instances.clone(),
            })
            .collect();
        out.push(o);
    }
    if let Some(p) = &t.patient {
        out.push(patient_object(&p.id, p.name.as_deref()));
    }
    out
}

fn patient_object(id: &str, name: Option<&str>) -> ParticipantObject {
    let mut o = ParticipantObject::new(rfc3881("2", "Patient Number"), id);
    o.type_code = Some(1);
    o.role = Some(1);
    o.name = Some(name.unwrap_or_default().to_string());
    o
}

fn alert_subject_node(peer: Option<&Peer>, detail: &str) -> ParticipantObject {
    let ip = peer
        .and_then(|p| p.ip())
        .unwrap_or_else(|| "unknown".into());
    let name = peer
        .and_then(|p| p.calling_ae.clone())
        .unwrap_or_else(|| ip.clone());
    let mut o = ParticipantObject::new(dcm("110182", "Node ID"), ip);
    o.type_code = Some(2);
    o.name = Some(name);
    o.details
        .push(("Alert Description".into(), detail.as_bytes().to_vec()));
    o
}

fn alert_subject_log(uri: &str, detail: &str) -> ParticipantObject {
    let mut o = ParticipantObject::new(rfc3881("12", "URI"), uri);
    o.type_code = Some(2);
    o.role = Some(13);
    o.name = Some("Security Audit Log".into());
    o.details
        .push(("Alert Description".into(), detail.as_bytes().to_vec()));
    o
}

/// The second Event Type Code of a detection, by its rule's kind, and its outcome: an
/// overwrite attempt (same SOP Instance UID, other content) keeps the code and the serious
/// failure outcome (8) the integrity stores gave it before detection reported it.
pub fn rule_type(kind: &str) -> (Code, u8) {
    match kind {
        "overwrite" => (
            local("instance-conflict", "Conflicting Instance Content"),
            8,
        ),
        other => (local(other, other), 4),
    }
}

/// The Security Alert type code and outcome for an alert name (see the module table).
pub fn alert_type(alert: &str) -> (Code, u8) {
    match alert {
        "peer-not-recognized" => (dcm("110126", "Node Authentication"), 4),
        "not-authorized" => (dcm("110132", "Use of Restricted Function"), 4),
        "protocol-violation" => (local("protocol-violation", "DICOM Protocol Violation"), 4),
        "instance-conflict" => (
            local("instance-conflict", "Conflicting Instance Content"),
            8,
        ),
        // A detection rule fired (reconnaissance, bulk query or retrieve, identity drift):
        // the Event Type Code says so; the rule and its evidence are in the object's detail.
        "detection" => (local("detection", "Detected Attack Pattern"), 4),
        // The block list changed (a rule's block or throttle response, an operator, expiry):
        // a change of the gateway's security configuration, not a failure.
        "block-added" | "block-removed" | "block-expired" => {
            (dcm("110129", "Security Configuration"), 0)
        }
        // The operator console: removing a block or reloading the config changes the
        // gateway's security configuration; acknowledging an alert is a local code; a refused
        // login is a failed attempt to use the console (minor failure).
        "console-block-removed" | "console-config-reload" => {
            (dcm("110129", "Security Configuration"), 0)
        }
        "console-alert-acknowledged" => (local("alert-acknowledged", "Alert Acknowledged"), 0),
        "console-login-failed" => (local("console-login-failed", "Console Login Failed"), 4),
        other => (local(other, other), 4),
    }
}

fn transfer_participants(t: &Transfer) -> Vec<ActiveParticipant> {
    let req_is_source = t.action == TransferAction::Store;
    let req_is_dest = t.action == TransferAction::Get;
    let p = |x: &Participant, requestor: bool, role| {
        node_participant(
            x.ae_title.as_deref(),
            x.address.as_deref(),
            requestor,
            Some(role),
        )
    };
    let mut v = vec![
        p(&t.source, req_is_source, source_role()),
        p(&t.destination, req_is_dest, destination_role()),
    ];
    if let Some(r) = &t.requestor {
        v.push(node_participant(
            r.ae_title.as_deref(),
            r.address.as_deref(),
            true,
            None,
        ));
    }
    v
}

fn failure_text(t: &Transfer) -> Option<String> {
    if t.failures.is_empty() {
        return None;
    }
    const MAX: usize = 50;
    let mut s = t
        .failures
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if t.failures.len() > MAX {
        let _ = write!(s, "; and {} more", t.failures.len() - MAX);
    }
    Some(s)
}

/// The A.5 message for a record, if it has one.
pub fn message_for(rec: &AuditRecord, src: &AtnaSource) -> Option<AtnaMessage> {
    let peer = rec.peer.as_ref();
    let msg = |event_id: Code, action: char, outcome: u8| AtnaMessage {
        event_id,
        action,
        time_ms: rec.time_ms,
        outcome,
        outcome_description: None,
        type_codes: Vec::new(),
        participants: Vec::new(),
        source: src.clone(),
        objects: Vec::new(),
    };
    let m = match &rec.event {
        AuditEvent::ApplicationStart { listen, ae_title } => {
            let mut m = msg(dcm("110100", "Application Activity"), 'E', 0);
            m.type_codes.push(dcm("110120", "Application Start"));
            let mut me = src.me(Some(dcm("110150", "Application")), Some(listen));
            me.alternative_user_id = Some(aetitles(ae_title));
            m.participants.push(me);
            m
        }
        AuditEvent::ApplicationStop { aborted } => {
            let mut m = msg(dcm("110100", "Application Activity"), 'E', 0);
            m.type_codes.push(dcm("110121", "Application Stop"));
            if *aborted > 0 {
                m.outcome_description = Some(format!("{aborted} associations aborted at shutdown"));
            }
            m.participants
                .push(src.me(Some(dcm("110150", "Application")), None));
            m
        }
        AuditEvent::TransferBegun { transfer } => {
            let mut m = msg(dcm("110102", "Begin Transferring DICOM Instances"), 'E', 0);
            m.participants = transfer_participants(transfer);
            m.objects = study_objects(transfer);
            m
        }
        AuditEvent::InstancesTransferred { transfer } => {
            let action = if transfer.action == TransferAction::Store {
                'C'
            } else {
                'R'
            };
            let outcome = if transfer.succeeded { 0 } else { 4 };
            let mut m = msg(
                dcm("110104", "DICOM Instances Transferred"),
                action,
                outcome,
            );
            m.outcome_description = failure_text(transfer);
            m.participants = transfer_participants(transfer);
            m.objects = study_objects(transfer);
            m
        }
        AuditEvent::DimseRequest {
            command,
            sop_class,
            move_destination,
            study_uid,
            patient,
            query,
            ..
        } => match command.as_str() {
            "CFindRq" => {
                let mut m = msg(dcm("110112", "Query"), 'E', 0);
                m.participants
                    .push(peer_participant(peer, true, Some(source_role())));
                m.participants
                    .push(called_participant(peer, Some(destination_role())));
                let mut o = ParticipantObject::new(
                    dcm("110181", "SOP Class UID"),
                    sop_class.clone().unwrap_or_default(),
                );
                o.type_code = Some(2);
                o.role = Some(3);
                match query {
                    Some(q) => {
                        o.query = Some(
                            base64::engine::general_purpose::STANDARD
                                .decode(&q.dataset_base64)
                                .unwrap_or_default(),
                        );
                        o.details.push((
                            "TransferSyntax".into(),
                            q.transfer_syntax.as_bytes().to_vec(),
                        ));
                    }
                    None => o.query = Some(Vec::new()),
                }
                m.objects.push(o);
                // PS3.15 A.5.3.10: the patient, when the query names one.
                if let Some(p) = patient {
                    m.objects.push(patient_object(&p.id, p.name.as_deref()));
                }
                let _ = study_uid;
                m
            }
            "CMoveRq" | "CGetRq" => {
                let is_move = command == "CMoveRq";
                let t = Transfer {
                    action: if is_move {
                        TransferAction::Move
                    } else {
                        TransferAction::Get
                    },
                    source: Participant {
                        ae_title: peer.and_then(|p| p.called_ae.clone()),
                        address: peer.and_then(|p| p.upstream.clone().or_else(|| p.local.clone())),
                    },
                    destination: if is_move {
                        Participant {
                            ae_title: move_destination.clone(),
                            address: None,
                        }
                    } else {
                        Participant {
                            ae_title: peer.and_then(|p| p.calling_ae.clone()),
                            address: peer.and_then(|p| p.address.clone()),
                        }
                    },
                    requestor: if is_move {
                        Some(Participant {
                            ae_title: peer.and_then(|p| p.calling_ae.clone()),
                            address: peer.and_then(|p| p.address.clone()),
                        })
                    } else {
                        None
                    },
                    patient: patient.clone(),
                    studies: vec![crate::record::StudyRef {
                        uid: study_uid.clone(),
                        sop_classes: Vec::new(),
                    }],
                    succeeded: true,
                    failures: Vec::new(),
                };
                let mut m = msg(dcm("110102", "Begin Transferring DICOM Instances"), 'E', 0);
                m.participants = transfer_participants(&t);
                m.objects = study_objects(&t);
                m
            }
            _ => return None,
        },
        AuditEvent::SecurityAlert {
            alert,
            detail,
            rule,
        } => {
            let (code, mut outcome) = alert_type(alert);
            let rule_code = rule.as_ref().map(|r| rule_type(&r.kind));
            if let Some((_, o)) = &rule_code {
                outcome = outcome.max(*o);
            }
            let mut m = msg(dcm("110113", "Security Alert"), 'E', outcome);
            m.type_codes.push(code);
            // A detection's second Event Type Code says what the rule saw.
            m.type_codes.extend(rule_code.map(|(c, _)| c));
            m.participants
                .push(src.me(None, peer.and_then(|p| p.local.as_deref())));
            if peer.is_some() {
                let mut p = peer_participant(peer, false, None);
                // An operator's action through the console: the console user made the change.
                if let Some(u) = peer
                    .and_then(|p| p.user.as_ref())
                    .filter(|u| u.kind == CONSOLE_USER)
                {
                    p.user_id = u.user.clone();
                    p.is_requestor = true;
                }
                m.participants.push(p);
            }
            m.objects.push(alert_subject_node(peer, detail));
            m
        }
        AuditEvent::AuditStarted { store } => {
            let mut m = msg(dcm("110113", "Security Alert"), 'E', 0);
            m.type_codes.push(dcm("110134", "Audit Recording Started"));
            m.participants.push(src.me(None, None));
            m.objects
                .push(alert_subject_log(store, "audit recording started"));
            m
        }
        AuditEvent::AuditStopped { records } => {
            let mut m = msg(dcm("110113", "Security Alert"), 'E', 0);
            m.type_codes.push(dcm("110133", "Audit Recording Stopped"));
            m.participants.push(src.me(None, None));
            m.objects.push(alert_subject_log(
                &format!("radguard-audit:{}", rec.node),
                &format!("audit recording stopped after {records} records"),
            ));
            m
        }
        // PS3.15 A.5.3.2 Audit Log Used: the console user (requestor, from the client's
        // address) read the Security Audit Log.
        AuditEvent::AuditLogUsed { user, query } => {
            let mut m = msg(dcm("110101", "Audit Log Used"), 'R', 0);
            let mut who =
                node_participant(None, peer.and_then(|p| p.address.as_deref()), true, None);
            who.user_id = user.clone();
            m.participants.push(who);
            m.participants.push(src.me(None, None));
            m.objects.push(alert_subject_log(
                &format!("radguard-audit:{}", rec.node),
                &format!("read through the console: {query}"),
            ));
            m
        }
        AuditEvent::EventsLost { count } => {
            let mut m = msg(dcm("110113", "Security Alert"), 'E', 8);
            m.type_codes.push(dcm("110133", "Audit Recording Stopped"));
            m.outcome_description = Some(format!(
                "{count} events were lost before they were recorded"
            ));
            m.participants.push(src.me(None, None));
            m.objects.push(alert_subject_log(
                &format!("radguard-audit:{}", rec.node),
                &format!("{count} events lost: the audit writer fell behind"),
            ));
            m
        }
        AuditEvent::AssociationAccepted { .. }
        | AuditEvent::AssociationRefused { .. }
        | AuditEvent::AssociationReleased { .. }
        | AuditEvent::AssociationAborted { .. } => {
            let user = peer.and_then(|p| p.user.as_ref())?;
            let (type_code, outcome, why) = match &rec.event {
                AuditEvent::AssociationAccepted { .. } => (dcm("110122", "Login"), 0, None),
                AuditEvent::AssociationRefused { why, .. } => {
                    (dcm("110122", "Login"), 4, Some(why.clone()))
                }
                _ => (dcm("110123", "Logout"), 0, None),
            };
            let mut m = msg(dcm("110114", "User Authentication"), 'E', outcome);
            m.outcome_description = why;
            m.type_codes.push(type_code);
            let ap = peer
                .and_then(|p| p.address.as_deref())
                .map(access_point)
                .unwrap_or_else(|| ("unknown".into(), 1));
            m.participants.push(ActiveParticipant {
                user_id: user.user.clone(),
                alternative_user_id: peer.and_then(|p| p.calling_ae.as_deref()).map(aetitles),
                user_name: None,
                is_requestor: true,
                roles: Vec::new(),
                access_point: Some(ap),
            });
            m.participants
                .push(src.me(None, peer.and_then(|p| p.local.as_deref())));
            m
        }
        _ => return None,
    };
    Some(m)
}

/// Escapes text for XML content and attribute values, replacing characters XML 1.0 forbids.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn code_attrs(out: &mut String, c: &Code) {
    let _ = write!(
        out,
        " csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"",
        escape(&c.code),
        escape(&c.system),
        escape(&c.text)
    );
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl AtnaMessage {
    /// The message as one line of XML (with the XML declaration).
    pub fn to_xml(&self) -> String {
        let mut x = String::with_capacity(1024);
        x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
        let _ = write!(
            x,
            "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
            self.action,
            rfc3339_ms(self.time_ms),
            self.outcome
        );
        x.push_str("<EventID");
        code_attrs(&mut x, &self.event_id);
        x.push_str("/>");
        for t in &self.type_codes {
            x.push_str("<EventTypeCode");
            code_attrs(&mut x, t);
            x.push_str("/>");
        }
        if let Some(d) = &self.outcome_description {
            let _ = write!(
                x,
                "<EventOutcomeDescription>{}</EventOutcomeDescription>",
                escape(d)
            );
        }
        x.push_str("</EventIdentification>");
        for p in &self.participants {
            let _ = write!(x, "<ActiveParticipant UserID=\"{}\"", escape(&p.user_id));
            if let Some(a) = &p.alternative_user_id {
                let _ = write!(x, " AlternativeUserID=\"{}\"", escape(a));
            }
            if let Some(n) = &p.user_name {
                let _ = write!(x, " UserName=\"{}\"", escape(n));
            }
            let _ = write!(x, " UserIsRequestor=\"{}\"", p.is_requestor);
            if let Some((id, ty)) = &p.access_point {
                let _ = write!(
                    x,
                    " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"{ty}\"",
                    escape(id)
                );
            }
            if p.roles.is_empty() {
                x.push_str("/>");
            } else {
                x.push('>');
                for r in &p.roles {
                    x.push_str("<RoleIDCode");
                    code_attrs(&mut x, r);
                    x.push_str("/>");
                }
                x.push_str("</ActiveParticipant>");
            }
        }
        x.push_str("<AuditSourceIdentification");
        if let Some(site) = &self.source.enterprise_site_id {
            let _ = write!(x, " AuditEnterpriseSiteID=\"{}\"", escape(site));
        }
        let _ = write!(
            x,
            " AuditSourceID=\"{}\"><AuditSourceTypeCode csd-code=\"4\" codeSystemName=\"DCM\" originalText=\"Application Server process tier in a multi-tier system\"/></AuditSourceIdentification>",
            escape(&self.source.source_id)
        );
        for o in &self.objects {
            let _ = write!(
                x,
                "<ParticipantObjectIdentification ParticipantObjectID=\"{}\"",
                escape(&o.id)
            );
            if let Some(t) = o.type_code {
                let _ = write!(x, " ParticipantObjectTypeCode=\"{t}\"");
            }
            if let Some(r) = o.role {
                let _ = write!(x, " ParticipantObjectTypeCodeRole=\"{r}\"");
            }
            x.push_str("><ParticipantObjectIDTypeCode");
            code_attrs(&mut x, &o.id_type);
            x.push_str("/>");
            match (&o.query, &o.name) {
                (Some(q), _) => {
                    let _ = write!(
                        x,
                        "<ParticipantObjectQuery>{}</ParticipantObjectQuery>",
                        b64(q)
                    );
                }
                (None, name) => {
                    let _ = write!(
                        x,
                        "<ParticipantObjectName>{}</ParticipantObjectName>",
                        escape(name.as_deref().unwrap_or_default())
                    );
                }
            }
            for (ty, v) in &o.details {
                let _ = write!(
                    x,
                    "<ParticipantObjectDetail type=\"{}\" value=\"{}\"/>",
                    escape(ty),
                    b64(v)
                );
            }
            if !o.sop_classes.is_empty() {
                x.push_str("<ParticipantObjectDescription>");
                for c in &o.sop_classes {
                    let _ = write!(
                        x,
                        "<SOPClass UID=\"{}\" NumberOfInstances=\"{}\">",
                        escape(&c.uid),
                        c.instances.len()
                    );
                    for i in &c.instances {
                        let _ = write!(x, "<Instance UID=\"{}\"/>", escape(i));
                    }
                    x.push_str("</SOPClass>");
                }
                x.push_str("</ParticipantObjectDescription>");
            }
            x.push_str("</ParticipantObjectIdentification>");
        }
        x.push_str("</AuditMessage>");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_forbidden_characters() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(escape("x\u{1}y\nz"), "x\u{FFFD}y&#10;z");
    }

    #[test]
    fn access_points() {
        assert_eq!(access_point("192.0.2.1:104"), ("192.0.2.1".into(), 2));
        assert_eq!(access_point("[::1]:104"), ("::1".into(), 2));
        assert_eq!(access_point("10.1.1.1"), ("10.1.1.1".into(), 2));
        assert_eq!(
            access_point("pacs.example.org:104"),
            ("pacs.example.org".into(), 1)
        );
    }

    #[test]
    fn records_without_messages() {
        let r = AuditRecord::draft(
            0,
            Some(1),
            None,
            AuditEvent::DimseResponse {
                message_id: 1,
                command: "CStoreRsp".into(),
                status: 0,
                from: "upstream".into(),
                sop_class: None,
                sop_instance: None,
                study_uid: None,
                patient: None,
            },
        );
        assert!(message_for(&r, &AtnaSource::new("gw")).is_none());
        let r = AuditRecord::draft(
            0,
            Some(1),
            Some(Peer::default()),
            AuditEvent::AssociationReleased {
                bytes_from_client: 0,
                bytes_from_upstream: 0,
            },
        );
        assert!(
            message_for(&r, &AtnaSource::new("gw")).is_none(),
            "no user identity, no 110114"
        );
    }

    #[test]
    fn hostile_peer_text_stays_inside_its_attribute() {
        let r = AuditRecord::draft(
            0,
            Some(1),
            Some(Peer {
                calling_ae: Some("\"/><Evil x=\"".into()),
                address: Some("192.0.2.1:1".into()),
                ..Peer::default()
            }),
            AuditEvent::SecurityAlert {
                alert: "not-authorized".into(),
                detail: "</AuditMessage>".into(),
                rule: None,
            },
        );
        let xml = message_for(&r, &AtnaSource::new("gw")).unwrap().to_xml();
        assert!(!xml.contains("<Evil"), "{xml}");
        assert_eq!(xml.matches("</AuditMessage>").count(), 1);
    }
}
