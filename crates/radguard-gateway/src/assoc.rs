//! One association, from the A-ASSOCIATE-RQ to release or abort.
//!
//! Establishment (PS3.8 states Sta2→Sta3): read the request under the ARTIM timer, identify the
//! peer, ask the policy, plan the presentation contexts, then either negotiate with the upstream
//! ([`crate::relay`]) or accept locally for the built-in vault ([`crate::vault_scp`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PresentationContextResultReason, UserIdentityType, UserVariableItem,
};
use radguard_dicom::pdu::{abort_bytes, decode_control, reject_bytes, AbortReason, PduType};
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::types::uids;
use radguard_dicom::AeTitle;
use radguard_events::{AlertKind, AssocId, Blame, Event, TlsFacts, UserIdentityInfo};
use radguard_policy::{
    Admission, AssociationFacts, AssociationRefusal, CertFacts, ContextDecision, IdentityFacts,
    Policy, RejectWhy, Route, UserIdentityClaim, UserIdentityKind,
};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::io::{linger, split_tcp, write_timed, BoxRead, BoxWrite};
use crate::negotiate::{effective_max, implementation, max_length, plan_contexts, ContextPlan};
use crate::reader::{PduReader, ReadError};
use crate::server::{PeerSlot, Shared};

/// The client side of an accepted TCP connection.
pub struct ClientConn {
    pub id: AssocId,
    pub source: SocketAddr,
    pub reader: PduReader<BoxRead>,
    pub writer: BoxWrite,
    /// The verified client certificate (TLS listeners).
    pub cert: Option<CertFacts>,
    /// The TLS session, for the events (TLS listeners).
    pub tls: Option<TlsFacts>,
    /// One of the `max_associations` slots, taken once the policy admitted the association and
    /// given back as soon as it ends (before the closing linger), so that connections still
    /// negotiating or being closed never crowd admitted peers out.
    pub assoc_permit: Option<OwnedSemaphorePermit>,
}

impl ClientConn {
    /// Gives the association slot back and closes: waits (at most `limit`) for the peer to
    /// close first, as PS3.8 asks after an A-ABORT or A-ASSOCIATE-RJ.
    pub async fn close(&mut self, limit: Duration) {
        self.assoc_permit = None;
        linger(&mut self.reader, &mut self.writer, limit).await;
    }
}

/// An association the policy admitted, with its planned contexts.
pub struct Admitted {
    pub rq: AssociationRQ,
    pub admission: Admission,
    pub policy: Policy,
    pub plan: Vec<ContextPlan>,
    /// What the client accepts (its Maximum Length, capped by ours).
    pub client_accepts: u32,
    /// The User Identity server response to put in the A-ASSOCIATE-AC (item 0x59), if any.
    pub user_identity_response: Option<Vec<u8>>,
}

impl Admitted {
    /// The extra A-ASSOCIATE-AC user information items the gateway adds itself.
    pub fn ac_items(&self) -> Vec<UserVariableItem> {
        match &self.user_identity_response {
            Some(r) => {
                let mut v = (r.len() as u16).to_be_bytes().to_vec();
                v.extend_from_slice(r);
                vec![UserVariableItem::Unknown(0x59, v)]
            }
            None => vec![],
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    shared: Arc<Shared>,
    id: AssocId,
    stream: TcpStream,
    source: SocketAddr,
    tls: bool,
    _connection: OwnedSemaphorePermit,
    _slot: PeerSlot,
) {
    let (rd, wr, cert, session) = if tls {
        match tls_accept(&shared, id, stream, source).await {
            Some(x) => x,
            None => return,
        }
    } else {
        let (rd, wr) = split_tcp(stream);
        (rd, wr, None, None)
    };
    let mut conn = ClientConn {
        id,
        source,
        reader: PduReader::new(rd, shared.settings.max_pdu_length),
        writer: wr,
        cert,
        tls: session,
        assoc_permit: None,
    };
    let Some(admitted) = establish(&shared, &mut conn).await else {
        return;
    };
    let nothing_to_forward = admitted.plan.iter().all(|p| p.rejected.is_some());
    match admitted.admission.route().clone() {
        // Every context refused: answer the A-ASSOCIATE-AC ourselves, never bother the upstream.
        Route::Vault | Route::Upstream { .. } if nothing_to_forward => {
            crate::vault_scp::run(&shared, conn, admitted).await
        }
        Route::Vault => crate::vault_scp::run(&shared, conn, admitted).await,
        Route::Upstream {
            addr,
            upstream_ae,
            upstream_calling_ae,
        } => {
            let calling =
                upstream_calling_ae.unwrap_or_else(|| admitted.admission.calling_ae().clone());
            crate::relay::run(&shared, conn, admitted, &addr, &calling, &upstream_ae).await
        }
    }
}

type Accepted = (BoxRead, BoxWrite, Option<CertFacts>, Option<TlsFacts>);

/// The TLS handshake on a `tls_listen` connection, under the ARTIM timer. A failed handshake has
/// no DICOM answer: it is recorded (blame: peer) and the connection closed.
async fn tls_accept(
    shared: &Shared,
    id: AssocId,
    stream: TcpStream,
    source: SocketAddr,
) -> Option<Accepted> {
    let Some(cfg) = shared.tls.borrow().server.clone() else {
        shared.bus.emit(Event::AssociationAborted {
            assoc: id,
            blame: Blame::Local,
            why: "TLS listener without a server TLS configuration".into(),
        });
        return None;
    };
    let acceptor = radguard_tls::tokio_rustls::TlsAcceptor::from(cfg);
    let fail = |why: String| {
        shared.bus.emit(Event::SecurityAlert {
            assoc: Some(id),
            kind: AlertKind::PeerNotRecognized,
            source: Some(source),
            detail: why.clone(),
        });
        shared.bus.emit(Event::AssociationAborted {
            assoc: id,
            blame: Blame::Peer,
            why,
        });
    };
    let stream =
        match tokio::time::timeout(shared.settings.artim_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(format!("TLS handshake failed: {e}"));
                return None;
            }
            Err(_) => {
                fail("TLS handshake not finished within ARTIM".into());
                return None;
            }
        };
    let common = stream.get_ref().1;
    let facts = match radguard_tls::peer_cert_facts(common) {
        Ok(f) => f,
        Err(e) => {
            fail(format!("client certificate unreadable: {e}"));
            return None;
        }
    };
    let session = radguard_tls::session_info(common);
    let tls_facts = TlsFacts {
        protocol: session
            .as_ref()
            .map(|s| s.protocol.to_string())
            .unwrap_or_default(),
        cipher_suite: session
            .as_ref()
            .map(|s| s.cipher_suite.to_string())
            .unwrap_or_default(),
        peer_subject: facts.as_ref().map(|f| f.subject.clone()),
        peer_cert_sha256: facts.as_ref().map(|f| f.sha256_hex.clone()),
    };
    let cert = facts.map(|f| CertFacts {
        sha256_hex: f.sha256_hex,
        subject_cn: f.subject_cn,
        sans: f.sans,
    });
    let (r, w) = tokio::io::split(stream);
    Some((Box::new(r), Box::new(w), cert, Some(tls_facts)))
}

/// Sends an A-ABORT (provider, `reason`), records why, and closes.
pub async fn abort_client(
    shared: &Shared,
    conn: &mut ClientConn,
    reason: AbortReason,
    blame: Blame,
    why: String,
) {
    let artim = shared.settings.artim_timeout;
    let _ = write_timed(&mut conn.writer, &abort_bytes(reason), artim).await;
    if blame == Blame::Peer {
        shared.bus.emit(Event::SecurityAlert {
            assoc: Some(conn.id),
            kind: AlertKind::ProtocolViolation,
            source: Some(conn.source),
            detail: why.clone(),
        });
    }
    shared.bus.emit(Event::AssociationAborted {
        assoc: conn.id,
        blame,
        why,
    });
    conn.close(artim).await;
}

/// Sends an A-ASSOCIATE-RJ, records it, and closes.
#[allow(clippy::too_many_arguments)]
pub async fn reject_client(
    shared: &Shared,
    conn: &mut ClientConn,
    triple: (u8, u8, u8),
    calling: Option<&str>,
    called: Option<&str>,
    blame: Blame,
    why: String,
) {
    let artim = shared.settings.artim_timeout;
    let _ = write_timed(
        &mut conn.writer,
        &reject_bytes(triple.0, triple.1, triple.2),
        artim,
    )
    .await;
    shared.bus.emit(Event::AssociationRefused {
        assoc: conn.id,
        source: conn.source,
        calling_ae: calling.map(str::to_string),
        called_ae: called.map(str::to_string),
        result: triple.0,
        rj_source: triple.1,
        reason: triple.2,
        blame,
        why,
    });
    conn.close(artim).await;
}

async fn establish(shared: &Shared, conn: &mut ClientConn) -> Option<Admitted> {
    let artim = shared.settings.artim_timeout;
    let frame = match tokio::time::timeout(artim, conn.reader.next()).await {
        Err(_) => {
            shared.bus.emit(Event::AssociationAborted {
                assoc: conn.id,
                blame: Blame::Peer,
                why: "ARTIM expired before an A-ASSOCIATE-RQ arrived".into(),
            });
            return None;
        }
        Ok(Err(ReadError::Frame(e))) => {
            let reason = e.abort_reason();
            abort_client(shared, conn, reason, Blame::Peer, e.to_string()).await;
            return None;
        }
        Ok(Err(e)) => {
            shared.bus.emit(Event::AssociationAborted {
                assoc: conn.id,
                blame: Blame::Peer,
                why: format!("before association: {e}"),
            });
            return None;
        }
        Ok(Ok(f)) => f,
    };
    if frame.ty == PduType::Abort {
        // Sta2 + Evt16 (AA-2): close the transport, answer nothing.
        shared.bus.emit(Event::AssociationAborted {
            assoc: conn.id,
            blame: Blame::Peer,
            why: "A-ABORT before any A-ASSOCIATE-RQ".into(),
        });
        return None;
    }
    if frame.ty != PduType::AssociateRq {
        let why = format!("{} where an A-ASSOCIATE-RQ was expected", frame.ty.name());
        abort_client(shared, conn, AbortReason::UnexpectedPdu, Blame::Peer, why).await;
        return None;
    }
    let rq = match decode_control(&frame.bytes) {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(_) => {
            let why = "A-ASSOCIATE-RQ could not be decoded".to_string();
            abort_client(
                shared,
                conn,
                AbortReason::InvalidPduParameter,
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
        Err(e) => {
            abort_client(
                shared,
                conn,
                AbortReason::InvalidPduParameter,
                Blame::Peer,
                e.to_string(),
            )
            .await;
            return None;
        }
    };
    drop(frame);
    let (impl_class, impl_version) = implementation(&rq.user_variables);
    shared.bus.emit(Event::AssociationRequested {
        assoc: conn.id,
        source: conn.source,
        calling_ae: rq.calling_ae_title.clone(),
        called_ae: rq.called_ae_title.clone(),
        implementation_class_uid: impl_class.clone().unwrap_or_default(),
        implementation_version: impl_version,
        contexts: rq.presentation_contexts.len(),
        tls: conn.tls.clone(),
        user_identity: user_identity_claim(&rq.user_variables).map(|c| UserIdentityInfo {
            kind: c.kind.code(),
            user: match c.kind {
                UserIdentityKind::Username | UserIdentityKind::UsernamePasscode => Some(
                    String::from_utf8_lossy(&c.primary)
                        .chars()
                        .take(64)
                        .collect(),
                ),
                _ => None,
            },
        }),
    });
    if rq.protocol_version & 1 == 0 {
        let why = format!(
            "protocol version 0x{:04X} not supported",
            rq.protocol_version
        );
        reject_client(shared, conn, (1, 2, 2), None, None, Blame::Peer, why).await;
        return None;
    }
    let calling_raw = rq.calling_ae_title.clone();
    let called_raw = rq.called_ae_title.clone();
    if rq.application_context_name.trim_end_matches('\0') != uids::APPLICATION_CONTEXT {
        let why = "application context name not supported".to_string();
        reject_client(
            shared,
            conn,
            (1, 1, 2),
            Some(&calling_raw),
            Some(&called_raw),
            Blame::Peer,
            why,
        )
        .await;
        return None;
    }
    let calling = match AeTitle::new(&calling_raw) {
        Ok(a) => a,
        Err(e) => {
            let why = format!("calling AE title invalid: {e}");
            alert(shared, conn, AlertKind::PeerNotRecognized, &why);
            reject_client(
                shared,
                conn,
                (1, 1, 3),
                Some(&calling_raw),
                Some(&called_raw),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    let called = match AeTitle::new(&called_raw) {
        Ok(a) => a,
        Err(e) => {
            let why = format!("called AE title invalid: {e}");
            reject_client(
                shared,
                conn,
                (1, 1, 7),
                Some(&calling_raw),
                Some(&called_raw),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    if impl_class.is_none() {
        let why = "A-ASSOCIATE-RQ without Implementation Class UID".to_string();
        abort_client(
            shared,
            conn,
            AbortReason::InvalidPduParameter,
            Blame::Peer,
            why,
        )
        .await;
        return None;
    }
    if !*shared.admit.borrow() {
        let why = "the audit trail cannot be written: refusing rather than relaying unaudited"
            .to_string();
        reject_client(
            shared,
            conn,
            (2, 3, 2),
            Some(&calling_raw),
            Some(&called_raw),
            Blame::Local,
            why,
        )
        .await;
        return None;
    }
    let policy = shared.policy.borrow().clone();
    let facts = AssociationFacts {
        source: conn.source.ip(),
        calling_ae: calling.clone(),
        called_ae: called.clone(),
    };
    let identity = IdentityFacts {
        client_cert: conn.cert.clone(),
        user: user_identity_claim(&rq.user_variables),
    };
    // Passcode checks (Argon2) are slow on purpose: off the async threads.
    let p = policy.clone();
    let verdict = tokio::task::spawn_blocking(move || p.admit_with(&facts, &identity)).await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            let why = format!("admission check failed: {e}");
            abort_client(shared, conn, AbortReason::NotSpecified, Blame::Local, why).await;
            return None;
        }
    };
    let admission = match verdict {
        Ok(a) => a,
        Err(refusal) => {
            let why = match &refusal {
                AssociationRefusal::CallingAeNotRecognized { why } => {
                    format!("{refusal} (condition: {})", why.condition())
                }
                AssociationRefusal::CalledAeNotRecognized => refusal.to_string(),
            };
            alert(shared, conn, AlertKind::PeerNotRecognized, &why);
            reject_client(
                shared,
                conn,
                refusal.rj_triple(),
                Some(calling.as_str()),
                Some(called.as_str()),
                Blame::Peer,
                why,
            )
            .await;
            return None;
        }
    };
    // Only now does the association count against `max_associations`: a connection that is
    // still negotiating (or never will) holds a connection slot, not an association slot.
    let Ok(permit) = shared.global.clone().try_acquire_owned() else {
        reject_client(
            shared,
            conn,
            (2, 3, 2),
            Some(calling.as_str()),
            Some(called.as_str()),
            Blame::Local,
            "global association limit reached".into(),
        )
        .await;
        return None;
    };
    conn.assoc_permit = Some(permit);
    let is_vault = matches!(admission.route(), Route::Vault);
    let plan = plan_contexts(&rq, |abs| match policy.context(&admission, abs) {
        ContextDecision::Accept => {
            if is_vault && !vault_serves(abs) {
                Some(PresentationContextResultReason::AbstractSyntaxNotSupported)
            } else {
                None
            }
        }
        ContextDecision::Reject(why) => Some(match why {
            RejectWhy::AbstractSyntaxNotSupported => {
                PresentationContextResultReason::AbstractSyntaxNotSupported
            }
            _ => PresentationContextResultReason::UserRejection,
        }),
    });
    let plan = match plan {
        // De-identifying routes cannot transform Deflated data sets in the stream: that
        // transfer syntax is not offered upstream.
        Ok(mut p) if shared.tls.borrow().deid.contains_key(&called) => {
            for c in p.iter_mut().filter(|c| c.rejected.is_none()) {
                // Queries and retrieves would carry identifiers out unchanged.
                let abs = c.proposed.abstract_syntax.trim_end_matches('\0');
                if radguard_policy::sop::FIND_MODELS.contains(&abs)
                    || radguard_policy::sop::MOVE_MODELS.contains(&abs)
                    || radguard_policy::sop::GET_MODELS.contains(&abs)
                {
                    c.rejected = Some(PresentationContextResultReason::UserRejection);
                    continue;
                }
                c.proposed
                    .transfer_syntaxes
                    .retain(|t| TransferSyntax::from_uid(t).is_ok_and(|t| !t.deflated));
                if c.proposed.transfer_syntaxes.is_empty() {
                    c.rejected =
                        Some(PresentationContextResultReason::TransferSyntaxesNotSupported);
                }
            }
            p
        }
        Ok(p) => p,
        Err(e) => {
            abort_client(
                shared,
                conn,
                AbortReason::InvalidPduParameter,
                Blame::Peer,
                e.to_string(),
            )
            .await;
            return None;
        }
    };
    for p in plan.iter().filter(|p| p.rejected.is_some()) {
        shared.bus.emit(Event::ContextRejected {
            assoc: conn.id,
            context_id: p.proposed.id,
            abstract_syntax: p.proposed.abstract_syntax.clone(),
            why: match &p.rejected {
                Some(PresentationContextResultReason::UserRejection) => "not allowed by policy",
                _ => "abstract syntax not supported",
            }
            .to_string(),
        });
    }
    let client_accepts = effective_max(
        max_length(&rq.user_variables),
        shared.settings.max_pdu_length,
    );
    if client_accepts < MIN_PDU {
        let why = format!("Maximum Length {client_accepts} is below {MIN_PDU}");
        abort_client(
            shared,
            conn,
            AbortReason::InvalidPduParameter,
            Blame::Peer,
            why,
        )
        .await;
        return None;
    }
    let user_identity_response = admission.user_identity_response().map(<[u8]>::to_vec);
    Some(Admitted {
        rq,
        admission,
        policy,
        plan,
        client_accepts,
        user_identity_response,
    })
}

/// The User Identity sub-item of an A-ASSOCIATE-RQ, as the policy sees it.
fn user_identity_claim(vars: &[UserVariableItem]) -> Option<UserIdentityClaim> {
    vars.iter().find_map(|v| match v {
        UserVariableItem::UserIdentityItem(u) => {
            let code = match u.identity_type() {
                UserIdentityType::Username => 1,
                UserIdentityType::UsernamePassword => 2,
                UserIdentityType::KerberosServiceTicket => 3,
                UserIdentityType::SamlAssertion => 4,
                UserIdentityType::Jwt => 5,
                _ => 0,
            };
            Some(UserIdentityClaim {
                kind: UserIdentityKind::from_code(code),
                primary: u.primary_field(),
                secondary: u.secondary_field(),
                positive_response_requested: u.positive_response_requested(),
            })
        }
        _ => None,
    })
}

/// The smallest Maximum Length the gateway works with (PS3.8 sets no floor; dicom-ul and DCMTK
/// use 1 KiB-ish minima too).
pub const MIN_PDU: u32 = 1024;

/// The vault stores instances and answers C-ECHO; it does not serve queries or retrieves.
fn vault_serves(abstract_syntax: &str) -> bool {
    abstract_syntax == uids::VERIFICATION
        || radguard_policy::sop::is_storage_sop_class(abstract_syntax)
}

fn alert(shared: &Shared, conn: &ClientConn, kind: AlertKind, detail: &str) {
    shared.bus.emit(Event::SecurityAlert {
        assoc: Some(conn.id),
        kind,
        source: Some(conn.source),
        detail: detail.to_string(),
    });
}
