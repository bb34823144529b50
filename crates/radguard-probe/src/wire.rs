//! The probe's DICOM upper-layer client (PS3.8): one blocking connection at a time, every read
//! and write bounded by a timeout. Association PDUs are encoded and decoded with dicom-ul (via
//! `radguard_dicom::pdu`), P-DATA is split with `radguard_dicom::pdu::pdvs` and reassembled with
//! `radguard_dicom::assembler`; command sets are read with `radguard_dicom::dimse`. Data sets
//! the peer sends (C-FIND identifiers) are counted and dropped fragment by fragment: nothing is
//! decoded, kept or printed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use radguard_dicom::assembler::{Assembler, Step};
use radguard_dicom::dimse::Command;
use radguard_dicom::pdu::{self, PduHeader, PduType, Pdv, HEADER_LEN};
use radguard_dicom::types::uids;
use radguard_tls::rustls;

use crate::ProbeError;

/// A byte stream to the peer: plain TCP or TLS over TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Timeouts of every step.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect (and TLS handshake).
    pub connect: Duration,
    /// Each read or write, and each wait for an answer.
    pub io: Duration,
}

/// The implementation class UID the probe announces (PS3.7 D.3.3.2): its own, so that the
/// probe's associations are recognisable in the peer's logs.
pub const PROBE_CLASS_UID: &str = "2.25.32655077439130172046830181326412538574";
pub const PROBE_VERSION_NAME: &str = "RADGUARD_PROBE";

/// Opens TCP to `host:port` within `t.connect`, read/write timeouts set.
pub fn connect_tcp(host: &str, port: u16, t: &Timeouts) -> Result<TcpStream, ProbeError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| ProbeError::Connect(format!("{host}:{port}: {e}")))?;
    let mut last = ProbeError::Connect(format!("{host}:{port}: no address"));
    for a in addrs {
        match TcpStream::connect_timeout(&a, t.connect) {
            Ok(s) => {
                s.set_read_timeout(Some(t.io)).map_err(io_err)?;
                s.set_write_timeout(Some(t.io)).map_err(io_err)?;
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = ProbeError::Connect(format!("{a}: {e}")),
        }
    }
    Err(last)
}

fn io_err(e: std::io::Error) -> ProbeError {
    ProbeError::Io(e.to_string())
}

/// Runs a TLS client handshake to completion over `tcp` (bounded by the socket's timeouts and
/// `deadline`).
pub fn tls_handshake(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
    deadline: Duration,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ProbeError> {
    let name = radguard_tls::server_name(host).map_err(|e| ProbeError::Tls(e.to_string()))?;
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| ProbeError::Tls(e.to_string()))?;
    let start = Instant::now();
    while conn.is_handshaking() {
        if start.elapsed() > deadline {
            return Err(ProbeError::Tls("handshake timed out".into()));
        }
        conn.complete_io(&mut tcp)
            .map_err(|e| ProbeError::Tls(e.to_string()))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// What the association request proposes.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub calling: String,
    /// Sent as is; an all-blank title is written as 16 spaces.
    pub called: String,
    /// Abstract syntaxes, one presentation context each (IDs 1, 3, 5, ...).
    pub abstract_syntaxes: Vec<String>,
    pub transfer_syntaxes: Vec<String>,
    /// Our Maximum Length Received (PS3.8 D.1).
    pub max_pdu: u32,
}

/// One presentation context's result (PS3.8 §9.3.3.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContextResult {
    pub id: u8,
    pub abstract_syntax: String,
    /// 0 acceptance, 1 user rejection, 2 no reason, 3 abstract syntax not supported,
    /// 4 transfer syntaxes not supported.
    pub result: u8,
    pub transfer_syntax: String,
}

impl ContextResult {
    pub fn accepted(&self) -> bool {
        self.result == 0
    }
}

/// What the A-ASSOCIATE-AC said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    pub contexts: Vec<ContextResult>,
    /// The peer's Maximum Length Received (0 = unlimited), when sent.
    pub max_pdu: Option<u32>,
    pub implementation_class_uid: Option<String>,
    pub implementation_version_name: Option<String>,
}

/// How an association request ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    Accepted(Accepted),
    /// A-ASSOCIATE-RJ result/source/reason (PS3.8 Table 9-21).
    Rejected {
        result: u8,
        source: u8,
        reason: u8,
    },
    /// A-ABORT instead of an answer.
    Aborted,
    /// The connection closed, failed or timed out before an answer.
    NoAnswer {
        detail: String,
    },
}

/// An established association.
pub struct Association {
    stream: Box<dyn Stream>,
    asm: Assembler,
    /// Largest P-DATA we accept (what we proposed).
    max_in: u32,
    /// Largest P-DATA the peer accepts (0 = unlimited).
    peer_max: u32,
    pub accepted: Accepted,
    next_message_id: u16,
}

/// One DIMSE message the peer sent: its command, and how many data set bytes followed (read
/// and dropped).
#[derive(Debug, Clone)]
pub struct Message {
    pub command: Command,
    pub data_bytes: usize,
}

/// Encodes the A-ASSOCIATE-RQ. A blank called AE title cannot be encoded by dicom-ul (it
/// refuses titles of spaces only), so it is written with a placeholder and the 16-byte field
/// (PS3.8 §9.3.2, bytes 11-26 of the PDU) is overwritten with spaces.
pub fn encode_rq(p: &Proposal) -> Result<Vec<u8>, ProbeError> {
    let blank = p.called.trim().is_empty();
    let rq = AssociationRQ {
        protocol_version: 1,
        calling_ae_title: p.calling.clone(),
        called_ae_title: if blank {
            "BLANK".into()
        } else {
            p.called.clone()
        },
        application_context_name: uids::APPLICATION_CONTEXT.into(),
        presentation_contexts: p
            .abstract_syntaxes
            .iter()
            .enumerate()
            .map(|(i, a)| PresentationContextProposed {
                id: (i * 2 + 1) as u8,
                abstract_syntax: a.clone(),
                transfer_syntaxes: p.transfer_syntaxes.clone(),
            })
            .collect(),
        user_variables: vec![
            UserVariableItem::MaxLength(p.max_pdu),
            UserVariableItem::ImplementationClassUID(PROBE_CLASS_UID.into()),
            UserVariableItem::ImplementationVersionName(PROBE_VERSION_NAME.into()),
        ],
    };
    let mut bytes =
        pdu::encode(&Pdu::AssociationRQ(rq)).map_err(|e| ProbeError::Encode(e.to_string()))?;
    if blank {
        if let Some(field) = bytes.get_mut(10..26) {
            field.fill(b' ');
        }
    }
    Ok(bytes)
}

/// Reads one whole PDU (header checked before the body is read).
fn read_pdu(stream: &mut dyn Stream, max_pdata: u32) -> Result<(PduType, Vec<u8>), ProbeError> {
    let mut head = [0u8; HEADER_LEN];
    stream.read_exact(&mut head).map_err(io_err)?;
    let h = PduHeader::parse(&head);
    let ty = h
        .check(max_pdata)
        .map_err(|e| ProbeError::Protocol(e.to_string()))?;
    let mut full = Vec::with_capacity(HEADER_LEN + h.length as usize);
    full.extend_from_slice(&head);
    full.resize(HEADER_LEN + h.length as usize, 0);
    if let Some(body) = full.get_mut(HEADER_LEN..) {
        stream.read_exact(body).map_err(io_err)?;
    }
    Ok((ty, full))
}

/// Sends the request on `stream` and reads the answer.
pub fn associate(
    mut stream: Box<dyn Stream>,
    p: &Proposal,
) -> Result<(Outcome, Option<Association>), ProbeError> {
    let rq = encode_rq(p)?;
    if let Err(e) = stream.write_all(&rq).and_then(|()| stream.flush()) {
        return Ok((
            Outcome::NoAnswer {
                detail: format!("sending A-ASSOCIATE-RQ: {e}"),
            },
            None,
        ));
    }
    let (ty, full) = match read_pdu(stream.as_mut(), p.max_pdu) {
        Ok(x) => x,
        Err(e) => {
            return Ok((
                Outcome::NoAnswer {
                    detail: e.to_string(),
                },
                None,
            ))
        }
    };
    match ty {
        PduType::AssociateRj => {
            let b = |i: usize| full.get(i).copied().unwrap_or(0);
            Ok((
                Outcome::Rejected {
                    result: b(7),
                    source: b(8),
                    reason: b(9),
                },
                None,
            ))
        }
        PduType::Abort => Ok((Outcome::Aborted, None)),
        PduType::AssociateAc => {
            let ac = match pdu::decode_control(&full) {
                Ok(Pdu::AssociationAC(ac)) => ac,
                Ok(_) | Err(_) => {
                    return Err(ProbeError::Protocol("undecodable A-ASSOCIATE-AC".into()))
                }
            };
            let mut accepted = Accepted {
                contexts: Vec::new(),
                max_pdu: None,
                implementation_class_uid: None,
                implementation_version_name: None,
            };
            for pc in &ac.presentation_contexts {
                let idx = usize::from(pc.id.saturating_sub(1) / 2);
                accepted.contexts.push(ContextResult {
                    id: pc.id,
                    abstract_syntax: p.abstract_syntaxes.get(idx).cloned().unwrap_or_default(),
                    result: result_code(&pc.reason),
                    transfer_syntax: pc.transfer_syntax.trim_end_matches('\0').to_string(),
                });
            }
            for u in &ac.user_variables {
                match u {
                    UserVariableItem::MaxLength(m) => accepted.max_pdu = Some(*m),
                    UserVariableItem::ImplementationClassUID(s) => {
                        accepted.implementation_class_uid =
                            Some(s.trim_end_matches(['\0', ' ']).to_string())
                    }
                    UserVariableItem::ImplementationVersionName(s) => {
                        accepted.implementation_version_name =
                            Some(s.trim_end_matches(['\0', ' ']).to_string())
                    }
                    _ => {}
                }
            }
            let peer_max = accepted.max_pdu.unwrap_or(0);
            let assoc = Association {
                stream,
                asm: Assembler::new(),
                max_in: p.max_pdu,
                peer_max,
                accepted: accepted.clone(),
                next_message_id: 1,
            };
            Ok((Outcome::Accepted(accepted), Some(assoc)))
        }
        other => Err(ProbeError::Protocol(format!(
            "{} instead of an answer to A-ASSOCIATE-RQ",
            other.name()
        ))),
    }
}

fn result_code(r: &PresentationContextResultReason) -> u8 {
    match r {
        PresentationContextResultReason::Acceptance => 0,
        PresentationContextResultReason::UserRejection => 1,
        PresentationContextResultReason::NoReason => 2,
        PresentationContextResultReason::AbstractSyntaxNotSupported => 3,
        PresentationContextResultReason::TransferSyntaxesNotSupported => 4,
    }
}

impl Association {
    /// The accepted context for `abstract_syntax`, if any.
    pub fn context_for(&self, abstract_syntax: &str) -> Option<&ContextResult> {
        self.accepted
            .contexts
            .iter()
            .find(|c| c.accepted() && c.abstract_syntax == abstract_syntax)
    }

    pub fn next_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Sends one message fragment stream (command or data set), split to the peer's maximum.
    fn send_fragments(
        &mut self,
        context_id: u8,
        is_command: bool,
        data: &[u8],
    ) -> Result<(), ProbeError> {
        // PS3.8 §9.3.5: a PDV item is its 4-byte length, context ID and control header; the
        // peer's Maximum Length bounds the whole P-DATA-TF body.
        let max = match self.peer_max {
            0 => 16 * 1024,
            m => m.saturating_sub(6).clamp(1, 1 << 20) as usize,
        };
        let mut chunks = data.chunks(max).peekable();
        let mut out = Vec::new();
        if data.is_empty() {
            pdu::encode_pdata(
                &mut out,
                &[Pdv {
                    context_id,
                    is_command,
                    is_last: true,
                    data,
                }],
            );
        }
        while let Some(c) = chunks.next() {
            pdu::encode_pdata(
                &mut out,
                &[Pdv {
                    context_id,
                    is_command,
                    is_last: chunks.peek().is_none(),
                    data: c,
                }],
            );
        }
        self.stream.write_all(&out).map_err(io_err)?;
        self.stream.flush().map_err(io_err)
    }

    /// Sends a command set and, when given, its data set.
    pub fn send(
        &mut self,
        context_id: u8,
        command: &[u8],
        data: Option<&[u8]>,
    ) -> Result<(), ProbeError> {
        self.send_fragments(context_id, true, command)?;
        if let Some(d) = data {
            self.send_fragments(context_id, false, d)?;
        }
        Ok(())
    }

    /// Reads the next whole message; its data set (if any) is counted and dropped.
    pub fn read_message(&mut self) -> Result<Message, ProbeError> {
        let mut command: Option<Command> = None;
        let mut data_bytes = 0usize;
        loop {
            let (ty, full) = read_pdu(self.stream.as_mut(), self.max_in)?;
            match ty {
                PduType::PData => {}
                PduType::Abort => return Err(ProbeError::Protocol("peer sent A-ABORT".into())),
                PduType::ReleaseRq => {
                    return Err(ProbeError::Protocol("peer asked to release".into()))
                }
                other => {
                    return Err(ProbeError::Protocol(format!(
                        "unexpected {} during the association",
                        other.name()
                    )))
                }
            }
            let body = full.get(HEADER_LEN..).unwrap_or_default();
            let items = pdu::pdvs(body).map_err(|e| ProbeError::Protocol(e.to_string()))?;
            let mut done = false;
            for item in items {
                match self
                    .asm
                    .push(item)
                    .map_err(|e| ProbeError::Protocol(e.to_string()))?
                {
                    Step::CommandPartial => {}
                    Step::Command { command: c, .. } => {
                        let has_data = c.has_data_set();
                        command = Some(*c);
                        if !has_data {
                            done = true;
                        }
                    }
                    Step::Data { data, is_last, .. } => {
                        data_bytes += data.len();
                        if is_last {
                            done = true;
                        }
                    }
                }
            }
            if done {
                if let Some(c) = command {
                    return Ok(Message {
                        command: c,
                        data_bytes,
                    });
                }
            }
        }
    }

    /// A-RELEASE-RQ, then waits (bounded by the read timeout) for A-RELEASE-RP or the close.
    pub fn release(mut self) {
        if self.stream.write_all(&pdu::RELEASE_RQ).is_err() {
            return;
        }
        let _ = self.stream.flush();
        for _ in 0..64 {
            match read_pdu(self.stream.as_mut(), self.max_in) {
                Ok((PduType::ReleaseRp, _)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// A-ABORT (service user).
    pub fn abort(mut self) {
        let _ = self.stream.write_all(&pdu::user_abort_bytes());
        let _ = self.stream.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_called_ae_is_sixteen_spaces() {
        let p = Proposal {
            calling: "PROBE".into(),
            called: "   ".into(),
            abstract_syntaxes: vec![uids::VERIFICATION.into()],
            transfer_syntaxes: vec![uids::IMPLICIT_VR_LE.into()],
            max_pdu: 16384,
        };
        let b = encode_rq(&p).unwrap();
        assert_eq!(&b[10..26], &[b' '; 16]);
        assert_eq!(&b[26..31], b"PROBE");
        let p = Proposal {
            called: "ANY-SCP".into(),
            ..p
        };
        assert_eq!(&encode_rq(&p).unwrap()[10..17], b"ANY-SCP");
    }
}
