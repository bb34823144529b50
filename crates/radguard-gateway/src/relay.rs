//! The cut-through relay to an upstream SCP: negotiation, then P-DATA both ways until release
//! or abort. The client's side runs the session loop (session.rs) with `ClientSide`: commands
//! are judged whole ([`crate::gate`]) before a byte of them goes upstream, each message's data
//! set has one `Fate`, the route's [`crate::inspect::Pipeline`] inspects it, and the requests
//! awaiting an answer are one `Outstanding` table. P-DATA PDUs whose PDVs are all forwarded
//! pass as the same bytes. The upstream's side (responses, C-GET sub-operations) is the
//! relay's own loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex as StdMutex;
use std::time::Instant;

use bytes::BytesMut;
use dicom_ul::pdu::{AssociationAC, Pdu};
use radguard_dicom::assembler::{Assembler, Step};
use radguard_dicom::dimse::{encode_cancel, encode_response, Command, Request};
use radguard_dicom::pdu::{
    abort_bytes, decode_control, encode_pdata, pdvs, AbortReason, PduType, Pdv, RELEASE_RP,
    RELEASE_RQ,
};
use radguard_dicom::validate::Violation;
use radguard_dicom::CommandField;
use radguard_events::{AlertKind, AssocId, Blame, Event, IntegrityStore, SubOperations, Subject};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// Pass-through PDUs are written upstream in batches of up to this many bytes.
const BATCH_LIMIT: usize = 256 * 1024;

use crate::called::{
    judge_called, plan_called_store, store_refusal, CalledRefusal, CalledStore, CalledVerdict,
    HeldStore,
};
use crate::conn::{ClientConn, MIN_PDU};
use crate::deid_relay::{restore_uid, DeidMessage, DeidStep};
use crate::establish::Admitted;
use crate::gate::{Contexts, Verdict};
use crate::guard::{detection, Answer, Reading, StorePlan, MAX_HELD};
use crate::inflight::{Buffered, Inflight, Pending, StoreId};
use crate::inspect::{firewall_comment, Checking, Fingerprinting, Inspections, Subjected};
use crate::io::{
    push_command, read_idle, split_tcp, write_timed, Activity, BoxRead, BoxWrite, IoError,
};
use crate::negotiate::{client_ac, effective_max, max_length, upstream_rq};
use crate::reader::{Frame, PduReader, ReadError};
use crate::session::{self, Gate, Session};
use crate::shared::Shared;
use crate::vault_scp::{Handover, VaultEnd, VaultSide};
use radguard_dicom::pdu::MAX_ASSOCIATION_PDU;
use radguard_ledger::{Fingerprint, LedgerEntry, OnConflict, Timestamp};
use radguard_policy::Permitted;

/// How the relay phase ended.
#[derive(Debug)]
enum End {
    Released,
    Aborted {
        blame: Blame,
        why: String,
    },
    /// A hold route's vault side ended the association after the upstream was lost (it
    /// recorded the release itself).
    Held,
}

/// Why the upstream side of an association could not be set up. The client gets a transient
/// A-ASSOCIATE-RJ 2/3/1 (temporary congestion): it may retry, nothing was relayed.
struct UpstreamRefusal {
    blame: Blame,
    why: String,
}

impl UpstreamRefusal {
    fn upstream(why: String) -> Self {
        UpstreamRefusal {
            blame: Blame::Upstream,
            why,
        }
    }
}

/// What the upstream answered to the association request.
enum UpstreamAnswer {
    /// Accepted, with the Maximum Length it accepts (capped by ours).
    Accepted(AssociationAC, u32),
    /// Its A-ASSOCIATE-RJ, to be passed back unchanged.
    Rejected(BytesMut),
}

/// TCP (and, for routes with `[route.tls]`, TLS) to the upstream, under `connect_timeout`.
async fn connect_upstream(
    shared: &Shared,
    assoc: AssocId,
    adm: &Admitted,
    addr: &str,
) -> Result<(BoxRead, BoxWrite), UpstreamRefusal> {
    let timeout = shared.settings.connect_timeout;
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(UpstreamRefusal::upstream(format!(
                "upstream {addr} unreachable: {e}"
            )))
        }
        Err(_) => {
            return Err(UpstreamRefusal::upstream(format!(
                "upstream {addr}: connect timed out"
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let upstream_tls = shared
        .tls
        .borrow()
        .upstream
        .get(adm.admission.called_ae())
        .cloned();
    let Some(cfg) = upstream_tls else {
        return Ok(split_tcp(stream));
    };
    let name = adm
        .policy
        .route_entry(adm.admission.called_ae())
        .and_then(|r| r.tls.as_ref())
        .map(|t| t.server_name.clone())
        .unwrap_or_default();
    let connected = match radguard_tls::server_name(&name) {
        Ok(sn) => {
            let connector = radguard_tls::tokio_rustls::TlsConnector::from(cfg);
            match tokio::time::timeout(timeout, connector.connect(sn, stream)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(format!("TLS handshake with {addr} failed: {e}")),
                Err(_) => Err(format!("TLS handshake with {addr} timed out")),
            }
        }
        Err(e) => Err(format!("upstream TLS server name {name:?}: {e}")),
    };
    match connected {
        Ok(s) => {
            let (r, w) = tokio::io::split(s);
            Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite))
        }
        Err(why) => {
            shared.bus.emit(Event::SecurityAlert {
                assoc: Some(assoc),
                kind: AlertKind::PeerNotRecognized,
                source: None,
                detail: why.clone(),
            });
            Err(UpstreamRefusal::upstream(why))
        }
    }
}

/// Sends the upstream its A-ASSOCIATE-RQ (only the permitted contexts) and reads the answer,
/// under `connect_timeout`. An odd answer is aborted upstream.
async fn ask_upstream(
    shared: &Shared,
    adm: &Admitted,
    addr: &str,
    (calling, upstream_ae): (&radguard_dicom::AeTitle, &radguard_dicom::AeTitle),
    ureader: &mut PduReader<BoxRead>,
    uwr: &mut BoxWrite,
) -> Result<UpstreamAnswer, UpstreamRefusal> {
    let timeout = shared.settings.connect_timeout;
    let rq_up = upstream_rq(
        &adm.rq,
        &adm.plan,
        calling.as_str(),
        upstream_ae.as_str(),
        adm.client_accepts,
    );
    let bytes =
        radguard_dicom::pdu::encode(&Pdu::AssociationRQ(rq_up)).map_err(|e| UpstreamRefusal {
            blame: Blame::Local,
            why: format!("cannot encode the upstream request: {e}"),
        })?;
    write_timed(uwr, &bytes, timeout)
        .await
        .map_err(|e| UpstreamRefusal::upstream(format!("upstream {addr}: {e}")))?;
    let reply = match tokio::time::timeout(timeout, ureader.next()).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            return Err(UpstreamRefusal::upstream(format!(
                "upstream {addr} during negotiation: {e}"
            )))
        }
        Err(_) => {
            return Err(UpstreamRefusal::upstream(format!(
                "upstream {addr} did not answer the association request"
            )))
        }
    };
    let abort_upstream = |reason| async move {
        let _ = write_timed(uwr, &abort_bytes(reason), timeout).await;
    };
    let ac = match (reply.ty, decode_control(&reply.bytes)) {
        (PduType::AssociateAc, Ok(Pdu::AssociationAC(ac))) => ac,
        (PduType::AssociateRj, _) => return Ok(UpstreamAnswer::Rejected(reply.bytes)),
        (ty, _) => {
            abort_upstream(AbortReason::UnexpectedPdu).await;
            return Err(UpstreamRefusal::upstream(format!(
                "upstream {addr} answered with {} during negotiation",
                ty.name()
            )));
        }
    };
    let accepts = effective_max(
        max_length(&ac.user_variables),
        shared.settings.max_pdu_length,
    );
    if accepts < MIN_PDU {
        abort_upstream(AbortReason::InvalidPduParameter).await;
        return Err(UpstreamRefusal::upstream(format!(
            "upstream Maximum Length {accepts} below {MIN_PDU}"
        )));
    }
    Ok(UpstreamAnswer::Accepted(ac, accepts))
}

pub async fn run(
    shared: &Shared,
    mut conn: ClientConn,
    adm: Admitted,
    addr: &str,
    calling: &radguard_dicom::AeTitle,
    upstream_ae: &radguard_dicom::AeTitle,
) {
    let timeout = shared.settings.connect_timeout;
    let calling_s = adm.rq.calling_ae_title.clone();
    let called_s = adm.rq.called_ae_title.clone();
    if let Some(why) = crate::hold::held_at_once(shared, &adm, addr, upstream_ae) {
        crate::hold::accept(shared, conn, adm, addr, calling, upstream_ae, why).await;
        return;
    }
    let answer = match connect_upstream(shared, conn.id, &adm, addr).await {
        Ok((urd, mut uwr)) => {
            let mut ureader = PduReader::new(urd, MAX_ASSOCIATION_PDU);
            let names = (calling, upstream_ae);
            ask_upstream(shared, &adm, addr, names, &mut ureader, &mut uwr)
                .await
                .map(|a| (a, ureader, uwr))
        }
        Err(r) => Err(r),
    };
    let (up_ac, upstream_accepts, mut ureader, mut uwr) = match answer {
        Ok((UpstreamAnswer::Accepted(ac, accepts), ureader, uwr)) => (ac, accepts, ureader, uwr),
        Ok((UpstreamAnswer::Rejected(rj), _, mut uwr)) => {
            // The upstream's own rejection goes back to the client as it is.
            let artim = shared.settings.artim_timeout;
            let _ = write_timed(&mut conn.writer, &rj, artim).await;
            shared.bus.emit(Event::AssociationRefused {
                assoc: conn.id,
                source: conn.source,
                calling_ae: Some(calling_s),
                called_ae: Some(called_s),
                result: rj.get(7).copied().unwrap_or(0),
                rj_source: rj.get(8).copied().unwrap_or(0),
                reason: rj.get(9).copied().unwrap_or(0),
                blame: Blame::Upstream,
                why: "rejected by the upstream".into(),
            });
            let _ = uwr.shutdown().await;
            conn.close(artim).await;
            return;
        }
        // A hold route takes the association itself: stored, queued, forwarded later.
        Err(UpstreamRefusal {
            blame: Blame::Upstream,
            why,
        }) if crate::hold::holds(shared, &adm) => {
            crate::hold::accept(shared, conn, adm, addr, calling, upstream_ae, why).await;
            return;
        }
        Err(UpstreamRefusal { blame, why }) => {
            let (calling, called) = (Some(calling_s.as_str()), Some(called_s.as_str()));
            conn.reject(shared, (2, 3, 1), (calling, called), blame, why)
                .await;
            return;
        }
    };
    let mut ac = client_ac(&adm.rq, &adm.plan, &up_ac, upstream_accepts);
    ac.user_variables.extend(adm.ac_items());
    let contexts = Contexts::from_ac(&adm.rq.presentation_contexts, &ac);
    let ac_bytes = match radguard_dicom::pdu::encode(&Pdu::AssociationAC(ac.clone())) {
        Ok(b) => b,
        Err(e) => {
            let _ = write_timed(&mut uwr, &abort_bytes(AbortReason::NotSpecified), timeout).await;
            conn.abort(
                shared,
                AbortReason::NotSpecified,
                Blame::Local,
                e.to_string(),
            )
            .await;
            return;
        }
    };
    if write_timed(&mut conn.writer, &ac_bytes, timeout)
        .await
        .is_err()
    {
        let _ = write_timed(&mut uwr, &abort_bytes(AbortReason::NotSpecified), timeout).await;
        return;
    }
    let rejected = ac.presentation_contexts.len() - contexts.len();
    shared.bus.emit(Event::AssociationAccepted {
        assoc: conn.id,
        peer: adm.admission.peer_name().to_string(),
        route: format!("{called_s} -> {upstream_ae}@{addr}"),
        accepted_contexts: contexts.len(),
        rejected_contexts: rejected,
        max_pdu_client: adm.client_accepts,
        authenticated_user: adm.admission.authenticated_user().map(str::to_string),
        max_pdu_upstream: upstream_accepts,
    });

    // Relay phase. The client may send PDUs up to what we announced to it (= what the upstream
    // accepts); the upstream up to what we announced upstream (= what the client accepts).
    conn.reader.set_max_pdata(upstream_accepts);
    ureader.set_max_pdata(adm.client_accepts);
    let (new_upstream, fresh) = mpsc::unbounded_channel();
    let st = RelayState {
        shared,
        adm: &adm,
        contexts,
        activity: Activity::new(),
        client_wr: Mutex::new(conn.writer),
        release_requested: AtomicBool::new(false),
        from_client: AtomicU64::new(0),
        progress_ms: AtomicU64::new(0),
        from_upstream: AtomicU64::new(0),
        outstanding: Outstanding::default(),
        upstream_requests: StdMutex::new(HashMap::new()),
        ended: Ended::default(),
        id: conn.id,
        to_client_max: adm.client_accepts,
        to_upstream_max: upstream_accepts,
        addr,
        names: (calling, upstream_ae),
        drops: AtomicU64::new(0),
        new_upstream,
        source: conn.source,
        // Hold routes keep each C-STORE's bytes until the upstream answers it.
        inflight: crate::hold::holds(shared, &adm).then(Default::default),
        spill_dir: shared
            .vault
            .as_ref()
            .map(|v| v.root().join(crate::inflight::SPILL_DIR))
            .unwrap_or_default(),
    };
    let uwr = Mutex::new(uwr);
    // A block of this association's subject cuts it whatever it is doing (idle, sending,
    // waiting for C-MOVE/C-GET responses): both directions are dropped, both sides aborted.
    let cut = tokio::select! {
        e = client_to_upstream(&st, &mut conn.reader, &uwr) => Ok(e),
        e = upstream_to_client(&st, ureader, fresh, &uwr) => Ok(e),
        why = adm.registration.cut() => Err(why),
    };
    let end = match cut {
        Ok(e) => e,
        Err(why) => {
            st.abort_both(
                &uwr,
                AbortReason::NotSpecified,
                Blame::Local,
                format!("cut: {why}"),
            )
            .await
        }
    };
    let mut cw = st.client_wr.lock().await;
    let mut uw = uwr.lock().await;
    match end {
        End::Held => {}
        End::Released => {
            shared.bus.emit(Event::AssociationReleased {
                assoc: conn.id,
                bytes_from_client: st.from_client.load(Ordering::Relaxed),
                bytes_from_upstream: st.from_upstream.load(Ordering::Relaxed),
            });
        }
        End::Aborted { blame, why } => {
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
        }
    }
    let _ = cw.shutdown().await;
    let _ = uw.shutdown().await;
}

struct RelayState<'a> {
    shared: &'a Shared,
    adm: &'a Admitted,
    contexts: Contexts,
    activity: Activity,
    client_wr: Mutex<BoxWrite>,
    release_requested: AtomicBool,
    from_client: AtomicU64,
    /// When the last `association-progress` event went out (activity clock, ms).
    progress_ms: AtomicU64,
    from_upstream: AtomicU64,
    /// The client's requests relayed upstream and not answered yet.
    outstanding: Outstanding,
    /// Queries the gateway ended after refusing one of the upstream's answers (it sent the
    /// upstream a C-CANCEL-RQ): the upstream's further answers to them are dropped until its
    /// final one, and the client's A-RELEASE-RQ waits for that.
    ended: Ended,
    /// Requests the upstream sent the client (C-GET's C-STORE sub-operations), by Message ID,
    /// until the client answers them.
    upstream_requests: StdMutex<HashMap<u16, InFlight>>,
    id: radguard_events::AssocId,
    to_client_max: u32,
    to_upstream_max: u32,
    /// Where the upstream is and the AE titles sent to it: a refused data set costs the
    /// upstream association, and the next request goes over a fresh one.
    addr: &'a str,
    names: (&'a radguard_dicom::AeTitle, &'a radguard_dicom::AeTitle),
    /// Upstream associations the firewall aborted so far.
    drops: AtomicU64,
    /// The reader of each fresh upstream association, for the upstream-to-client loop.
    new_upstream: mpsc::UnboundedSender<PduReader<BoxRead>>,
    source: std::net::SocketAddr,
    /// Hold routes: what is forwarded and not answered, and whether the upstream was lost.
    inflight: Option<Inflight>,
    /// Where a kept data set past the memory bound goes.
    spill_dir: std::path::PathBuf,
}

impl RelayState<'_> {
    async fn to_client(&self, bytes: &[u8]) -> Result<(), IoError> {
        let mut w = self.client_wr.lock().await;
        write_timed(&mut *w, bytes, self.shared.settings.idle_timeout).await?;
        self.activity.touch();
        Ok(())
    }

    /// Aborts both sides (provider abort with `reason` to the client, to the upstream too).
    async fn abort_both(
        &self,
        uwr: &Mutex<BoxWrite>,
        reason: AbortReason,
        blame: Blame,
        why: String,
    ) -> End {
        let t = self.shared.settings.artim_timeout;
        let _ = write_timed(&mut *uwr.lock().await, &abort_bytes(reason), t).await;
        let _ = write_timed(&mut *self.client_wr.lock().await, &abort_bytes(reason), t).await;
        End::Aborted { blame, why }
    }

    /// A data set already partly delivered to the side receiving it failed the firewall
    /// (docs/firewall.md): nothing can withdraw it, so an alert and both associations aborted.
    async fn abort_malformed(&self, uwr: &Mutex<BoxWrite>, blame: Blame, why: String) -> End {
        self.shared.bus.emit(Event::SecurityAlert {
            assoc: Some(self.id),
            kind: AlertKind::MalformedDataSet,
            source: None,
            detail: why.clone(),
        });
        self.abort_both(uwr, AbortReason::NotSpecified, blame, why)
            .await
    }
}

/// A fingerprint waiting for the upstream's C-STORE-RSP before it goes into the ledger.
struct PendingEntry {
    sop_instance: String,
    fingerprint: Fingerprint,
    on_conflict: OnConflict,
}

/// A request the upstream sent the client (a C-GET's C-STORE sub-operation), not answered yet.
struct InFlight {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    /// Bytes of its data set relayed to the client so far (bulk-retrieve counts them).
    bytes: u64,
}

/// What the gateway knows of one of the client's requests relayed upstream and not answered
/// yet.
#[derive(Default)]
struct Awaiting {
    sop_class: Option<String>,
    sop_instance: Option<String>,
    /// The patient and study its data set names (for the response's audit record).
    subject: Option<Subject>,
    /// De-identifying route: the client's own SOP Instance UID, put back into the upstream's
    /// C-STORE-RSP.
    original_uid: Option<String>,
    /// Origin route: the fingerprint appended to the ledger once the upstream confirms.
    entry: Option<PendingEntry>,
    /// C-FIND: the pending responses (matches) the upstream gave so far.
    matches: u32,
}

/// The client's requests outstanding upstream, by Message ID (bounded: 16-bit IDs). Both
/// directions of the relay use it: one lock.
#[derive(Default)]
struct Outstanding(StdMutex<HashMap<u16, Awaiting>>);

impl Outstanding {
    fn insert(&self, message_id: u16, request: Awaiting) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(message_id, request);
        }
    }

    /// Updates a request still outstanding (nothing if it was answered or forgotten).
    fn update(&self, message_id: u16, f: impl FnOnce(&mut Awaiting)) {
        if let Some(a) = self
            .0
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(&message_id))
        {
            f(a);
        }
    }

    /// Takes one piece of what is known about a request, leaving it outstanding.
    fn take<T>(&self, message_id: u16, f: impl FnOnce(&mut Awaiting) -> Option<T>) -> Option<T> {
        let mut m = self.0.lock().ok()?;
        m.get_mut(&message_id).and_then(f)
    }

    /// The request is answered (or the gateway answered it itself): forgotten. Returns what was
    /// known of it and whether other requests are still outstanding.
    fn remove(&self, message_id: u16) -> (Option<Awaiting>, bool) {
        match self.0.lock() {
            Ok(mut m) => (m.remove(&message_id), !m.is_empty()),
            Err(_) => (None, false),
        }
    }
}

/// What a PDV of the client's current PDU became, applied once every PDV was seen.
enum Action {
    /// The `n`-th PDV of the PDU goes upstream as it is.
    Forward(usize),
    Command {
        context_id: u8,
        raw: Vec<u8>,
    },
    /// Data set bytes the gateway produced (de-identified, or an identifier held until the
    /// firewall passed it), fragmented to the upstream's maximum.
    Data {
        context_id: u8,
        bytes: Vec<u8>,
        last: bool,
    },
    /// The firewall refused a data set part of which went upstream: abort the upstream
    /// association before anything else goes (its last fragment never does).
    DropUpstream,
}

/// A request the gateway answers itself.
struct Refusal {
    context_id: u8,
    field: CommandField,
    message_id: u16,
    sop_class: Option<String>,
    sop_instance: Option<String>,
    status: u16,
    comment: String,
    /// What kind of alert the refusal raises.
    kind: AlertKind,
    /// The alert's detail when it says more than the Error Comment (which is at most 64
    /// characters).
    detail: Option<String>,
}

/// Answers a refused request to the client (its data set, if any, is dropped by the caller).
async fn refuse(st: &RelayState<'_>, uwr: &Mutex<BoxWrite>, r: Refusal) -> Result<(), End> {
    st.shared.bus.emit(Event::DimseRefused {
        assoc: st.id,
        message_id: r.message_id,
        command: format!("{:?}", r.field),
        status: r.status,
        why: r.comment.clone(),
    });
    st.shared.bus.emit(Event::SecurityAlert {
        assoc: Some(st.id),
        kind: r.kind,
        source: None,
        detail: format!(
            "{:?} refused with 0x{:04X}: {}",
            r.field,
            r.status,
            r.detail.as_deref().unwrap_or(&r.comment)
        ),
    });
    if r.field == CommandField::CCancelRq {
        return Ok(());
    }
    let rsp = encode_response(
        r.field,
        r.message_id,
        r.sop_class.as_deref(),
        r.sop_instance.as_deref(),
        r.status,
        Some(&r.comment),
    );
    let mut buf = Vec::with_capacity(rsp.len() + 12);
    push_command(&mut buf, r.context_id, &rsp, st.to_client_max);
    if st.to_client(&buf).await.is_err() {
        let why = "client lost while answering a refusal".to_string();
        return Err(st
            .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
            .await);
    }
    Ok(())
}

/// Appends data set bytes as P-DATA PDUs no longer than `max`; the last PDV carries `last`.
fn push_data(out: &mut Vec<u8>, context_id: u8, bytes: &[u8], last: bool, max: u32) {
    let chunk = (max as usize).saturating_sub(6).max(1);
    if bytes.is_empty() {
        if last {
            encode_pdata(
                out,
                &[Pdv {
                    context_id,
                    is_command: false,
                    is_last: true,
                    data: &[],
                }],
            );
        }
        return;
    }
    let mut parts = bytes.chunks(chunk).peekable();
    while let Some(part) = parts.next() {
        encode_pdata(
            out,
            &[Pdv {
                context_id,
                is_command: false,
                is_last: last && parts.peek().is_none(),
                data: part,
            }],
        );
    }
}

/// What becomes of the data set of the client's current message.
enum Fate {
    /// It goes upstream as it is.
    Forward,
    /// An identifier, held whole with its command until the firewall passed it, so a refused
    /// one never reaches the upstream.
    Hold(Held),
    /// A C-STORE rewritten by the de-identifying route on its way upstream.
    Deidentify(Box<DeidMessage>),
    /// Dropped: the gateway answered the request itself (or ended its de-identification).
    Drop,
    /// The firewall refused it: the rest is dropped, and the client is answered once its last
    /// fragment came.
    Refused(Refusal),
}

/// The client-to-upstream loop's view of the message whose data set is arriving: what becomes
/// of the data set, and what the route's pipeline inspects in it on the way.
struct Message {
    fate: Fate,
    inspect: Inspections,
}

impl Message {
    fn new(fate: Fate) -> Self {
        Message {
            fate,
            inspect: Inspections::default(),
        }
    }
}

/// A query or retrieve held until its identifier passed the firewall.
struct Held {
    context_id: u8,
    command: Vec<u8>,
    identifier: Vec<u8>,
}

/// The answer to a data set the firewall refused.
fn firewall_refusal(of: Subjected, v: &Violation) -> Refusal {
    let detail = Some(format!("data set of {}: {v}", of.name()));
    Refusal {
        context_id: of.context_id,
        field: of.field,
        message_id: of.message_id,
        sop_class: of.sop_class,
        sop_instance: of.sop_instance,
        status: radguard_dicom::types::status::CANNOT_UNDERSTAND,
        comment: firewall_comment(v),
        kind: AlertKind::MalformedDataSet,
        detail,
    }
}

/// A request the gate passed: its request event, the bookkeeping for its response, and the
/// work its data set needs (identifier for the audit record, fingerprint on origin routes,
/// de-identification, head sniffing). Returns the command to forward now; `None` when a
/// de-identifying route holds it back (it goes with the rewritten head) or refuses it.
async fn start_request(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    msg: &mut Message,
    context_id: u8,
    raw: Vec<u8>,
    request: Request,
    permit: &Permitted,
) -> Result<Option<Action>, End> {
    let sop_class = request.sop_class.as_ref().map(|u| u.to_string());
    let sop_instance = request.sop_instance.as_ref().map(|u| u.to_string());
    let event = Event::DimseRequest {
        assoc: st.id,
        message_id: request.message_id,
        command: format!("{:?}", permit.command()),
        sop_class: sop_class.clone(),
        sop_instance: sop_instance.clone(),
        move_destination: request.move_destination.as_ref().map(|a| a.to_string()),
        subject: None,
        identifier: None,
    };
    let pipeline = &st.adm.pipeline;
    *msg = Message {
        fate: Fate::Forward,
        inspect: pipeline.inspect(&st.contexts, context_id, &request, event),
    };
    let is_store = request.field == CommandField::CStoreRq;
    if request.field != CommandField::CCancelRq {
        let awaiting = Awaiting {
            sop_class: sop_class.clone(),
            sop_instance: sop_instance.clone(),
            ..Awaiting::default()
        };
        st.outstanding.insert(request.message_id, awaiting);
    }
    let forget = || {
        st.outstanding.remove(request.message_id);
    };
    if let Some(route) = pipeline.deid() {
        match request.field {
            CommandField::CStoreRq => {
                msg.fate = Fate::Drop;
                let class = sop_class.unwrap_or_default();
                let inst = sop_instance.unwrap_or_default();
                let id = request.message_id;
                let ts = st
                    .contexts
                    .get(context_id)
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default();
                match DeidMessage::start(route, &ts, id, context_id, raw, &class, &inst) {
                    Ok(m) => {
                        st.outstanding.update(id, |a| a.original_uid = Some(inst));
                        msg.fate = Fate::Deidentify(Box::new(m));
                    }
                    Err((status, comment)) => {
                        forget();
                        let r = Refusal {
                            context_id,
                            field: request.field,
                            message_id: id,
                            sop_class: Some(class),
                            sop_instance: Some(inst),
                            status,
                            comment,
                            kind: AlertKind::NotAuthorized,
                            detail: None,
                        };
                        refuse(st, uwr, r).await?;
                    }
                }
                return Ok(None);
            }
            CommandField::CFindRq | CommandField::CMoveRq | CommandField::CGetRq => {
                // Queries and retrieves would carry identifiers out unchanged.
                msg.fate = Fate::Drop;
                forget();
                let r = Refusal {
                    context_id,
                    field: request.field,
                    message_id: request.message_id,
                    sop_class,
                    sop_instance: None,
                    status: radguard_dicom::types::status::REFUSED_NOT_AUTHORIZED,
                    comment: "Radguard: not on a de-identifying route".into(),
                    kind: AlertKind::NotAuthorized,
                    detail: None,
                };
                refuse(st, uwr, r).await?;
                return Ok(None);
            }
            _ => {}
        }
    }
    if is_store {
        // The scan-protocol and dose guard, by SOP class (guard.rs).
        // Built only for the few SOP classes the guard reads, never per ordinary image.
        let class = sop_class.as_deref().unwrap_or_default();
        let peer = st.adm.admission.peer_name();
        let reading = || {
            let ts = st.contexts.get(context_id).map(|(_, t)| t.to_string());
            Reading::new(
                context_id,
                class.to_owned(),
                sop_instance.clone(),
                request.message_id,
                ts.unwrap_or_default(),
            )
        };
        match st.shared.guard().store_plan(class, peer) {
            StorePlan::Pass => {}
            StorePlan::Watch => msg.inspect.guard = Some(reading()),
            StorePlan::Refuse { status, why } => {
                msg.fate = Fate::Drop;
                forget();
                let f = radguard_guard::Finding::new(
                    radguard_guard::FindingKind::NotProtocolManager,
                    why.clone(),
                );
                let d = detection(st.id, "guard-protocol", peer, "refuse", class, &[f]);
                st.shared.bus.emit(d);
                let r = Refusal {
                    context_id,
                    field: request.field,
                    message_id: request.message_id,
                    sop_class: Some(class.to_owned()),
                    sop_instance,
                    status,
                    comment: "Radguard guard: not a protocol manager".into(),
                    kind: AlertKind::NotAuthorized,
                    detail: Some(why),
                };
                refuse(st, uwr, r).await?;
                return Ok(None);
            }
            StorePlan::Hold => {
                // Nothing of a protocol reaches the modality before it is judged whole.
                msg.inspect.guard = Some(reading());
                msg.fate = Fate::Hold(Held {
                    context_id,
                    command: raw,
                    identifier: Vec::new(),
                });
                return Ok(None);
            }
        }
    }
    if request.has_data_set && !is_store {
        msg.fate = Fate::Hold(Held {
            context_id,
            command: raw,
            identifier: Vec::new(),
        });
        return Ok(None);
    }
    Ok(Some(Action::Command { context_id, raw }))
}

/// One fragment of the current message's data set: observed (identifier, fingerprint, head),
/// then de-identified, forwarded as it is, or dropped (after a refusal).
async fn on_data(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    msg: &mut Message,
    pdv: usize,
    data: &[u8],
    is_last: bool,
    actions: &mut Vec<Action>,
) -> Result<(), End> {
    let pipeline = &st.adm.pipeline;
    let inspect = &mut msg.inspect;
    if let Some(q) = inspect.identifier.as_mut() {
        q.feed(data);
        if is_last {
            if let Some(q) = inspect.identifier.take() {
                st.shared.bus.emit(q.finish());
            }
        }
    }
    if let Some((of, v)) = pipeline.check(&mut inspect.firewall, data, is_last) {
        if of.field.is_response() {
            // The client's answer to the upstream's request: nothing of it went upstream (it
            // was held) and no response can answer a response, so the association ends.
            let why = format!("client's {:?} {}: {v}", of.field, of.name());
            return Err(st.abort_malformed(uwr, Blame::Peer, why).await);
        }
        let r = firewall_refusal(of, &v);
        inspect.fingerprint = None;
        inspect.head = None;
        let others = forget_request(st, r.message_id);
        if !matches!(msg.fate, Fate::Hold(_)) {
            // Part of the data set is upstream already and DIMSE cannot withdraw a C-STORE:
            // the upstream association is aborted, so the destination never has the data set
            // whole; the client's next request opens a fresh one.
            if others {
                let why = format!(
                    "{}; other requests were outstanding upstream",
                    r.detail.as_deref().unwrap_or(&r.comment)
                );
                return Err(st
                    .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
                    .await);
            }
            actions.push(Action::DropUpstream);
        }
        msg.fate = Fate::Refused(r);
    }
    if let Fate::Refused(_) = msg.fate {
        // The rest of a refused data set is dropped; the answer follows its last fragment.
        if is_last {
            if let Fate::Refused(r) = std::mem::replace(&mut msg.fate, Fate::Drop) {
                refuse(st, uwr, r).await?;
            }
        }
        return Ok(());
    }
    if matches!(msg.fate, Fate::Forward) {
        if let Some(g) = inspect.guard.as_mut() {
            // A dose report, read as it streams and forwarded anyway: the alert is the answer.
            g.feed(data);
            if is_last {
                if let Some(g) = inspect.guard.take() {
                    let findings = st.shared.guard().watch_dose(g.bytes(), &g.transfer_syntax);
                    if !findings.is_empty() {
                        let peer = st.adm.admission.peer_name();
                        let d =
                            detection(st.id, "guard-dose", peer, "alert", &g.sop_class, &findings);
                        st.shared.bus.emit(d);
                    }
                }
            }
        }
    }
    if let Some(f) = inspect.fingerprint.as_mut() {
        f.fp.feed(data);
    }
    if is_last {
        if let Some(f) = inspect.fingerprint.take() {
            settle_fingerprint(st, uwr, f).await?;
        }
    }
    if !matches!(msg.fate, Fate::Drop) {
        let sniffed = inspect.head.as_mut().and_then(|h| h.feed(data, is_last));
        if let Some((message_id, subject)) = sniffed {
            inspect.head = None;
            st.outstanding.update(message_id, |a| a.subject = subject);
        }
    }
    match &mut msg.fate {
        Fate::Forward => actions.push(Action::Forward(pdv)),
        Fate::Hold(h) => {
            let guarded = inspect.guard.is_some();
            if guarded && h.identifier.len().saturating_add(data.len()) > MAX_HELD {
                h.identifier = Vec::new();
                let g = inspect.guard.take();
                let findings = [radguard_guard::Finding::new(
                    radguard_guard::FindingKind::Malformed,
                    format!("protocol object over {MAX_HELD} bytes"),
                )];
                let r = guard_refusal(st, g, radguard_guard::STATUS_PROTOCOL_REFUSED, &findings);
                forget_request(st, r.message_id);
                if is_last {
                    msg.fate = Fate::Drop;
                    refuse(st, uwr, r).await?;
                } else {
                    msg.fate = Fate::Refused(r);
                }
                return Ok(());
            }
            h.identifier.extend_from_slice(data);
            if is_last {
                if let Fate::Hold(h) = std::mem::replace(&mut msg.fate, Fate::Forward) {
                    if let Some(g) = inspect.guard.take() {
                        let judged = st.shared.guard().judge_held(
                            &g.sop_class,
                            &h.identifier,
                            &g.transfer_syntax,
                        );
                        if let Err((status, findings)) = judged {
                            msg.fate = Fate::Drop;
                            let r = guard_refusal(st, Some(g), status, &findings);
                            forget_request(st, r.message_id);
                            return refuse(st, uwr, r).await;
                        }
                    }
                    actions.push(Action::Command {
                        context_id: h.context_id,
                        raw: h.command,
                    });
                    actions.push(Action::Data {
                        context_id: h.context_id,
                        bytes: h.identifier,
                        last: true,
                    });
                }
            }
        }
        Fate::Deidentify(dm) => {
            let more = deidentify(st, uwr, dm, data, is_last, actions).await?;
            if !more || is_last {
                msg.fate = Fate::Drop;
            }
        }
        Fate::Drop | Fate::Refused(_) => {}
    }
    Ok(())
}

/// The answer to a protocol or approval the guard refused, and its detection (emitted here).
fn guard_refusal(
    st: &RelayState<'_>,
    g: Option<Reading>,
    status: u16,
    findings: &[radguard_guard::Finding],
) -> Refusal {
    let g = g.unwrap_or_else(|| Reading::new(0, String::new(), None, 0, String::new()));
    let peer = st.adm.admission.peer_name();
    st.shared.bus.emit(detection(
        st.id,
        "guard-protocol",
        peer,
        "refuse",
        &g.sop_class,
        findings,
    ));
    let first = findings.first().map_or("refused", |f| f.kind.name());
    Refusal {
        context_id: g.context_id,
        field: CommandField::CStoreRq,
        message_id: g.message_id,
        sop_class: Some(g.sop_class.clone()),
        sop_instance: g.sop_instance.clone(),
        status,
        comment: format!("Radguard guard: {first}"),
        kind: AlertKind::NotAuthorized,
        detail: Some(
            findings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

/// Forgets a request the gateway answers itself (its response bookkeeping, de-identified UID
/// and pending fingerprint). Returns whether other requests are still outstanding upstream.
fn forget_request(st: &RelayState<'_>, message_id: u16) -> bool {
    if let Some(f) = st.inflight.as_ref() {
        // The gateway answered it: nothing is owed for it if the upstream is lost.
        f.answered(message_id, true);
    }
    st.outstanding.remove(message_id).1
}

/// Pushes a fragment through the de-identification of the current C-STORE. `Ok(false)` when
/// the instance was refused (answered to the client; nothing more of it goes upstream).
async fn deidentify(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    dm: &mut DeidMessage,
    data: &[u8],
    is_last: bool,
    actions: &mut Vec<Action>,
) -> Result<bool, End> {
    let ctx = dm.context_id;
    match dm.push(data, is_last) {
        DeidStep::Hold => Ok(true),
        DeidStep::Emit {
            command,
            data,
            last,
            report,
        } => {
            if let Some(raw) = command {
                actions.push(Action::Command {
                    context_id: ctx,
                    raw,
                });
            }
            actions.push(Action::Data {
                context_id: ctx,
                bytes: data,
                last,
            });
            if let Some(r) = report {
                st.shared.bus.emit(Event::Deidentified {
                    assoc: st.id,
                    message_id: dm.message_id,
                    new_sop_instance: r.new_sop_instance_uid,
                    uids_replaced: r.uids_replaced,
                    private_removed: r.private_removed,
                    dates_shifted: r.dates_shifted,
                    burned_in_allowed: r.burned_in_allowed,
                });
            }
            Ok(true)
        }
        DeidStep::Refuse { status, comment } => {
            st.outstanding.remove(dm.message_id);
            let r = Refusal {
                context_id: ctx,
                field: CommandField::CStoreRq,
                message_id: dm.message_id,
                sop_class: Some(dm.sop_class.clone()),
                sop_instance: Some(dm.original_uid.clone()),
                status,
                comment,
                kind: AlertKind::NotAuthorized,
                detail: None,
            };
            refuse(st, uwr, r).await?;
            Ok(false)
        }
        DeidStep::Abort(why) => Err(st
            .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
            .await),
    }
}

/// The relay's side of the session loop ([`crate::session`]): what the client sends goes
/// upstream, judged, inspected and, where the route says so, rewritten.
struct ClientSide<'s, 'a> {
    st: &'s RelayState<'a>,
    uwr: &'s Mutex<BoxWrite>,
    msg: Message,
    /// What the current PDU's PDVs became, in order.
    actions: Vec<Action>,
    out: Vec<u8>,
    /// PDUs that go upstream unchanged, batched while more are already buffered (contiguous
    /// slices of the read buffer: `unsplit` joins them without copying).
    batch: Option<BytesMut>,
    /// The firewall aborted the upstream association; the next request opens a fresh one.
    upstream_gone: bool,
    /// A refused request whose peer was revoked (`on_revoke = "abort"`) and whose data set is
    /// still arriving: why the association is aborted once its last fragment is read, and
    /// since when (at most ARTIM).
    abort_after_data: Option<(String, Instant)>,
    /// Hold routes: the bytes of the C-STORE whose data set is arriving.
    current: Option<Buffered>,
    /// Hold routes, after the upstream was lost: the vault SCP's side serves the rest.
    held: Option<VaultSide<'s>>,
}

impl<'s> ClientSide<'s, '_> {
    async fn abort_both(&self, reason: AbortReason, blame: Blame, why: String) -> End {
        self.st.abort_both(self.uwr, reason, blame, why).await
    }

    /// The upstream failed (`why`): on a hold route the association is handed to the vault
    /// SCP's store path ([`crate::hold::resume_all`]); elsewhere both sides are aborted.
    async fn upstream_failed(&mut self, why: String) -> Result<(), End> {
        let st: &'s RelayState<'_> = self.st;
        let Some(inflight) = st.inflight.as_ref() else {
            return Err(self
                .abort_both(AbortReason::NotSpecified, Blame::Upstream, why)
                .await);
        };
        inflight.signal_lost(why);
        self.take_over().await
    }

    async fn take_over(&mut self) -> Result<(), End> {
        let st: &'s RelayState<'_> = self.st;
        let Some(inflight) = st.inflight.as_ref() else {
            return Ok(());
        };
        if self.held.is_some() {
            return Ok(());
        }
        let why = inflight.lost().unwrap_or_default();
        let hook = crate::hold::hook(st.shared, st.adm, st.addr, st.names, why.clone(), true);
        let Some(hook) = hook else {
            return Err(self
                .abort_both(AbortReason::NotSpecified, Blame::Upstream, why)
                .await);
        };
        tracing::warn!(assoc = %st.id, "upstream lost mid-association, held from here: {why}");
        // Nothing more goes upstream: what was batched is in the kept bytes.
        self.batch = None;
        self.msg = Message::new(Fate::Drop);
        {
            let t = st.shared.settings.artim_timeout;
            let mut w = self.uwr.lock().await;
            let _ = tokio::time::timeout(t, w.shutdown()).await;
        }
        let mut side = VaultSide::taking_over(Handover {
            shared: st.shared,
            id: st.id,
            source: st.source,
            writer: &st.client_wr,
            activity: &st.activity,
            contexts: &st.contexts,
            firewall: st.adm.pipeline.firewall(),
            client_accepts: st.to_client_max,
            calling_ae: st.adm.admission.calling_ae().to_string(),
            hook,
        });
        let (stores, pending) = inflight.take();
        let dest = crate::hold::route_dest(st.adm, st.names.1.as_str(), st.addr);
        let current = self.current.take();
        let r = crate::hold::resume_all(&mut side, stores, pending, current, &dest).await;
        self.held = Some(side);
        self.vault(r).await?;
        if st.release_requested.load(Ordering::Relaxed) {
            // The client asked to release and waits for the upstream's answer: the gateway
            // gives it (nothing is outstanding any more).
            let _ = st.to_client(&RELEASE_RP).await;
            return Err(End::Released);
        }
        Ok(())
    }

    /// The vault side's result as the relay's.
    async fn vault(&self, r: Result<(), VaultEnd>) -> Result<(), End> {
        match r {
            Ok(()) => Ok(()),
            Err(e) => Err(self.vault_end(e).await),
        }
    }

    async fn vault_end(&self, e: VaultEnd) -> End {
        match e {
            VaultEnd::Released => End::Held,
            VaultEnd::Abort { reason, blame, why } => {
                let t = self.st.shared.settings.artim_timeout;
                let _ = write_timed(
                    &mut *self.st.client_wr.lock().await,
                    &abort_bytes(reason),
                    t,
                )
                .await;
                End::Aborted { blame, why }
            }
            VaultEnd::Gone { why } => End::Aborted {
                blame: Blame::Peer,
                why,
            },
        }
    }

    async fn to_upstream(&self, bytes: &[u8]) -> Result<(), IoError> {
        let idle = self.st.shared.settings.idle_timeout;
        write_timed(&mut *self.uwr.lock().await, bytes, idle).await
    }
}

impl Session for ClientSide<'_, '_> {
    type End = End;

    async fn received(&mut self, frame: &Frame) -> Result<(), End> {
        let st = self.st;
        st.from_client
            .fetch_add(frame.bytes.len() as u64, Ordering::Relaxed);
        if self.held.is_none() && st.inflight.as_ref().is_some_and(|f| f.lost().is_some()) {
            self.take_over().await?;
        }
        if let Some(v) = self.held.as_mut() {
            let r = v.received(frame).await;
            return self.vault(r).await;
        }
        if st.release_requested.load(Ordering::Relaxed) && frame.ty != PduType::Abort {
            let why = format!("{} after A-RELEASE-RQ", frame.ty.name());
            return Err(self
                .abort_both(AbortReason::UnexpectedPdu, Blame::Peer, why)
                .await);
        }
        Ok(())
    }

    async fn before_wait(&mut self) -> Result<(), End> {
        if let Some(b) = self.batch.take() {
            if let Err(e) = self.to_upstream(&b).await {
                return self
                    .upstream_failed(format!("upstream write failed: {e}"))
                    .await;
            }
            self.st.activity.touch();
        }
        Ok(())
    }

    async fn interrupted(&self) {
        match (&self.held, &self.st.inflight) {
            (None, Some(f)) => f.wait_lost().await,
            _ => std::future::pending().await,
        }
    }

    async fn interrupt(&mut self) -> Result<(), End> {
        self.take_over().await
    }

    async fn read_failed(&mut self, e: IoError) -> End {
        if let Some(v) = self.held.as_mut() {
            let end = v.read_failed(e).await;
            return self.vault_end(end).await;
        }
        let (reason, blame, why) = read_failure(e, Blame::Peer, "client");
        self.abort_both(reason, blame, why).await
    }

    async fn control(&mut self, frame: Frame) -> Result<(), End> {
        let st = self.st;
        if let Some(v) = self.held.as_mut() {
            let r = v.control(frame).await;
            return self.vault(r).await;
        }
        match frame.ty {
            PduType::ReleaseRq => {
                st.release_requested.store(true, Ordering::Relaxed);
                if self.upstream_gone {
                    // No upstream association to release: the gateway answers itself.
                    let _ = st.to_client(&RELEASE_RP).await;
                    return Err(End::Released);
                }
                if !st.ended.settled(st.shared.settings.artim_timeout).await {
                    let why =
                        "the upstream did not end a cancelled query before the release".to_string();
                    return Err(self
                        .abort_both(AbortReason::NotSpecified, Blame::Upstream, why)
                        .await);
                }
                if self.to_upstream(&RELEASE_RQ).await.is_err() {
                    // Every request was answered (a release waits for that): on a hold route
                    // the gateway answers the release itself.
                    return self
                        .upstream_failed("upstream lost at release".into())
                        .await;
                }
                Ok(())
            }
            PduType::ReleaseRp => {
                // Answer to a release the upstream asked for.
                let _ = self.to_upstream(&RELEASE_RP).await;
                Err(End::Released)
            }
            PduType::Abort => {
                let _ = self.to_upstream(&frame.bytes).await;
                Err(End::Aborted {
                    blame: Blame::Peer,
                    why: "A-ABORT from the client".into(),
                })
            }
            other => {
                let why = format!("unexpected {} from the client", other.name());
                Err(self
                    .abort_both(AbortReason::UnexpectedPdu, Blame::Peer, why)
                    .await)
            }
        }
    }

    async fn malformed(&mut self, reason: AbortReason, error: String) -> End {
        if let Some(v) = self.held.as_mut() {
            let end = v.malformed(reason, error).await;
            return self.vault_end(end).await;
        }
        let why = format!("client: {error}");
        self.abort_both(reason, Blame::Peer, why).await
    }

    async fn data(&mut self, pdv: usize, data: &[u8], is_last: bool) -> Result<(), End> {
        if let Some(v) = self.held.as_mut() {
            let r = v.data(pdv, data, is_last).await;
            return self.vault(r).await;
        }
        let r = on_data(
            self.st,
            self.uwr,
            &mut self.msg,
            pdv,
            data,
            is_last,
            &mut self.actions,
        )
        .await;
        if matches!(self.msg.fate, Fate::Drop | Fate::Refused(_)) {
            // Refused or answered by the gateway: nothing of it is owed to the archive.
            self.current = None;
        } else if let Some(b) = self.current.as_mut() {
            b.push(data);
            if is_last {
                if let (Some(mut b), Some(f)) = (self.current.take(), self.st.inflight.as_ref()) {
                    b.complete = true;
                    f.forwarded(b);
                }
            }
        }
        let artim = self.st.shared.settings.artim_timeout;
        if let Some((why, since)) = self.abort_after_data.take() {
            if is_last || since.elapsed() >= artim {
                return Err(self
                    .abort_both(AbortReason::NotSpecified, Blame::Local, why)
                    .await);
            }
            self.abort_after_data = Some((why, since));
        }
        r
    }

    fn response(&mut self, context_id: u8, raw: Vec<u8>, command: &Command) -> Option<Vec<u8>> {
        if self.held.is_some() || !answers_upstream(self.st, command) {
            return Some(raw);
        }
        // The client answers a request the upstream sent on this association (the C-STORE
        // sub-operations of a C-GET, PS3.4 C.4.3): relayed. A response that answers nothing is
        // judged like any command (0x0211).
        if !command.has_data_set() {
            self.actions.push(Action::Command { context_id, raw });
            return None;
        }
        // A response with a data set (an N-EVENT-REPORT-RSP's Event Reply): held whole with
        // its command until the firewall passed it, like an identifier.
        let of = Subjected {
            context_id,
            field: command.command_field().unwrap_or(CommandField::Other(0)),
            message_id: command.responded_to.unwrap_or(0),
            sop_class: command.affected_sop_class.clone(),
            sop_instance: command.affected_sop_instance.clone(),
        };
        self.msg = Message {
            fate: Fate::Hold(Held {
                context_id,
                command: raw,
                identifier: Vec::new(),
            }),
            inspect: Inspections {
                firewall: Some(self.st.adm.pipeline.checking(&self.st.contexts, of)),
                ..Inspections::default()
            },
        };
        None
    }

    async fn judged(&mut self, context_id: u8, raw: Vec<u8>, verdict: Verdict) -> Result<(), End> {
        if let Some(v) = self.held.as_mut() {
            let r = v.judged(context_id, raw, verdict).await;
            return self.vault(r).await;
        }
        let (st, uwr) = (self.st, self.uwr);
        match verdict {
            Verdict::Pass { request, permit } => {
                let kept = st.inflight.as_ref().map(|_| {
                    let uid = |u: &Option<radguard_dicom::Uid>| {
                        u.as_ref().map(|u| u.to_string()).unwrap_or_default()
                    };
                    (
                        request.field,
                        StoreId {
                            context_id,
                            message_id: request.message_id,
                            sop_class: uid(&request.sop_class),
                            sop_instance: uid(&request.sop_instance),
                        },
                    )
                });
                let forward =
                    start_request(st, uwr, &mut self.msg, context_id, raw, request, &permit)
                        .await?;
                let passed = !matches!(self.msg.fate, Fate::Drop | Fate::Refused(_));
                if let (Some((field, id)), Some(f), true) = (kept, st.inflight.as_ref(), passed) {
                    match field {
                        CommandField::CStoreRq => {
                            self.current = Some(Buffered::new(
                                id,
                                crate::inflight::MEMORY_BOUND,
                                &st.spill_dir,
                            ));
                        }
                        CommandField::CFindRq | CommandField::CMoveRq | CommandField::CGetRq => {
                            f.pending(Pending {
                                context_id,
                                message_id: id.message_id,
                                field,
                                sop_class: Some(id.sop_class).filter(|c| !c.is_empty()),
                            });
                        }
                        _ => {}
                    }
                }
                self.actions.extend(forward);
                Ok(())
            }
            Verdict::Refuse(refused) => {
                self.msg = Message::new(Fate::Drop);
                let abort = refused.abort_after(st.shared.settings.on_revoke);
                let r = Refusal {
                    context_id,
                    kind: refused.alert_kind(),
                    detail: refused.detail(),
                    field: refused.field,
                    message_id: refused.message_id,
                    sop_class: refused.sop_class,
                    sop_instance: refused.sop_instance,
                    status: refused.status,
                    comment: refused.comment,
                };
                refuse(st, uwr, r).await?;
                if let Some(why) = abort {
                    // The client may still be sending the refused request's data set: it is
                    // read (and dropped) to its last fragment, at most ARTIM, before the
                    // A-ABORT. Closing with its bytes unread would reset the connection and the
                    // client would lose the 0x0124 and the A-ABORT (a broken pipe instead).
                    if Command::decode(&raw).is_ok_and(|c| c.has_data_set()) {
                        self.abort_after_data = Some((why, Instant::now()));
                        return Ok(());
                    }
                    return Err(self
                        .abort_both(AbortReason::NotSpecified, Blame::Local, why)
                        .await);
                }
                Ok(())
            }
            Verdict::Abort(why) => Err(self
                .abort_both(AbortReason::UnexpectedPduParameter, Blame::Peer, why)
                .await),
        }
    }

    async fn pdu_done(&mut self, frame: Frame, n_items: usize) -> Result<(), End> {
        let st = self.st;
        if self.held.is_some() {
            return Ok(());
        }
        let actions = std::mem::take(&mut self.actions);
        let all_forward = !self.upstream_gone
            && actions.len() == n_items
            && actions.iter().all(|a| matches!(a, Action::Forward(_)));
        self.out.clear();
        if !all_forward {
            // The PDVs again (they parsed once already), for the ones forwarded as they are.
            let items = pdvs(frame.body()).unwrap_or_default();
            let mut data: Vec<Pdv<'_>> = Vec::new();
            for a in &actions {
                if let Action::DropUpstream = a {
                    // What was batched or built for the upstream so far belongs to the refused
                    // data set (nothing else was outstanding): none of it goes.
                    self.batch = None;
                    self.out.clear();
                    data.clear();
                    drop_upstream(st, self.uwr).await;
                    self.upstream_gone = true;
                    continue;
                }
                if self.upstream_gone {
                    reopen_upstream(st, self.uwr).await?;
                    self.upstream_gone = false;
                }
                match a {
                    Action::DropUpstream => {}
                    Action::Forward(i) => data.extend(items.get(*i).copied()),
                    Action::Command { context_id, raw } => {
                        if !data.is_empty() {
                            encode_pdata(&mut self.out, &data);
                            data.clear();
                        }
                        push_command(&mut self.out, *context_id, raw, st.to_upstream_max);
                    }
                    Action::Data {
                        context_id,
                        bytes,
                        last,
                    } => {
                        if !data.is_empty() {
                            encode_pdata(&mut self.out, &data);
                            data.clear();
                        }
                        push_data(&mut self.out, *context_id, bytes, *last, st.to_upstream_max);
                    }
                }
            }
            if !data.is_empty() {
                encode_pdata(&mut self.out, &data);
            }
        }
        drop(actions);
        if all_forward {
            // Fast path: the PDU goes upstream as the same bytes, batched with its neighbours.
            match self.batch.as_mut() {
                Some(b) => b.unsplit(frame.bytes),
                None => self.batch = Some(frame.bytes),
            }
            if self.batch.as_ref().is_none_or(|b| b.len() < BATCH_LIMIT) {
                return Ok(());
            }
        }
        // Anything batched goes first, then what this PDU became.
        let mut result = Ok(());
        if let Some(b) = self.batch.take() {
            result = self.to_upstream(&b).await;
        }
        if result.is_ok() && !self.out.is_empty() {
            result = self.to_upstream(&self.out).await;
        }
        if let Err(e) = result {
            return self
                .upstream_failed(format!("upstream write failed: {e}"))
                .await;
        }
        st.activity.touch();
        Ok(())
    }
}

async fn client_to_upstream(
    st: &RelayState<'_>,
    reader: &mut PduReader<BoxRead>,
    uwr: &Mutex<BoxWrite>,
) -> End {
    let mut side = ClientSide {
        st,
        uwr,
        msg: Message::new(Fate::Forward),
        actions: Vec::new(),
        out: Vec::new(),
        batch: None,
        upstream_gone: false,
        abort_after_data: None,
        current: None,
        held: None,
    };
    let gate = Gate {
        shared: st.shared,
        admission: &st.adm.admission,
        contexts: &st.contexts,
    };
    session::run(gate, reader, &st.activity, &mut side).await
}

/// Whether a response from the client answers a request the upstream sent and the client has
/// not answered yet; if so it is recorded (the audit trail sees the sub-operation's outcome).
fn answers_upstream(st: &RelayState<'_>, command: &Command) -> bool {
    let Some(id) = command.responded_to else {
        return false;
    };
    let Some(request) = st
        .upstream_requests
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&id))
    else {
        return false;
    };
    st.shared.bus.emit(Event::DimseResponse {
        assoc: st.id,
        message_id: id,
        command: format!(
            "{:?}",
            command.command_field().unwrap_or(CommandField::Other(0))
        ),
        status: command.status.unwrap_or(0xFFFF),
        from: Blame::Peer,
        sop_class: request.sop_class,
        sop_instance: request.sop_instance,
        subject: None,
        sub_operations: None,
        bytes: Some(request.bytes),
    });
    true
}

/// Aborts the upstream association after the firewall refused a data set part of which went
/// upstream: the destination discards the incomplete message (PS3.8 §7.3: A-ABORT).
async fn drop_upstream(st: &RelayState<'_>, uwr: &Mutex<BoxWrite>) {
    st.drops.fetch_add(1, Ordering::SeqCst);
    st.ended.clear();
    if let Ok(mut m) = st.upstream_requests.lock() {
        m.clear();
    }
    let t = st.shared.settings.artim_timeout;
    let mut w = uwr.lock().await;
    let _ = write_timed(&mut *w, &abort_bytes(AbortReason::NotSpecified), t).await;
    let _ = w.shutdown().await;
}

/// Opens a fresh upstream association with the same request as the first, for the requests
/// after a refused data set. It must accept the same presentation contexts with the same
/// transfer syntaxes and at least the same Maximum Length (the client was told both);
/// otherwise the client's association is aborted.
async fn reopen_upstream(st: &RelayState<'_>, uwr: &Mutex<BoxWrite>) -> Result<(), End> {
    let opened = async {
        let (urd, mut w) = connect_upstream(st.shared, st.id, st.adm, st.addr)
            .await
            .map_err(|r| r.why)?;
        let mut reader = PduReader::new(urd, MAX_ASSOCIATION_PDU);
        match ask_upstream(st.shared, st.adm, st.addr, st.names, &mut reader, &mut w).await {
            Ok(UpstreamAnswer::Accepted(ac, accepts)) => {
                let again = client_ac(&st.adm.rq, &st.adm.plan, &ac, accepts);
                let contexts = Contexts::from_ac(&st.adm.rq.presentation_contexts, &again);
                if contexts != st.contexts || accepts < st.to_upstream_max {
                    let t = st.shared.settings.artim_timeout;
                    let _ = write_timed(&mut w, &abort_bytes(AbortReason::NotSpecified), t).await;
                    return Err(
                        "the fresh upstream association accepted other presentation contexts \
                         or a smaller Maximum Length"
                            .to_string(),
                    );
                }
                reader.set_max_pdata(st.adm.client_accepts);
                Ok((reader, w))
            }
            Ok(UpstreamAnswer::Rejected(_)) => {
                Err("the upstream rejected a fresh association".to_string())
            }
            Err(r) => Err(r.why),
        }
    };
    match opened.await {
        Ok((reader, w)) => {
            *uwr.lock().await = w;
            let _ = st.new_upstream.send(reader);
            tracing::info!(assoc = %st.id, "fresh upstream association after a refused data set");
            Ok(())
        }
        Err(why) => {
            let why = format!("after a refused data set: {why}");
            Err(st
                .abort_both(uwr, AbortReason::NotSpecified, Blame::Upstream, why)
                .await)
        }
    }
}

/// A response from the upstream whose data set (an identifier: C-FIND matches, a C-MOVE/C-GET
/// failed-instance list) is held whole until the firewall passed it.
struct HeldResponse {
    context_id: u8,
    raw: Vec<u8>,
    command: Command,
    data: Vec<u8>,
    checking: Option<Checking>,
}

/// The upstream-to-client loop's view of the message being received.
#[derive(Default)]
struct Incoming {
    held: Option<HeldResponse>,
    /// A request from the upstream (C-GET's C-STORE sub-operations) whose data set streams to
    /// the client under the firewall.
    streaming: Option<Checking>,
    /// The current message's data set is dropped (answers to a query the gateway ended).
    skipping: bool,
    /// The upstream request whose data set is streaming (Message ID) and its bytes so far:
    /// recorded with the client's answer (bulk-retrieve counts the bytes a peer retrieves).
    counting: Option<(u16, u64)>,
    /// A C-GET sub-operation carrying a protocol or approval, held whole for the guard.
    guarded: Option<HeldStore>,
}

/// Message IDs of queries the gateway ended while the upstream still answers them.
#[derive(Default)]
struct Ended {
    ids: StdMutex<std::collections::HashSet<u16>>,
    /// Woken when the last one is gone.
    done: tokio::sync::Notify,
}

impl Ended {
    fn contains(&self, id: u16) -> bool {
        self.ids.lock().is_ok_and(|s| s.contains(&id))
    }

    fn insert(&self, id: u16) {
        if let Ok(mut s) = self.ids.lock() {
            s.insert(id);
        }
    }

    fn remove(&self, id: u16) {
        let empty = self.ids.lock().is_ok_and(|mut s| {
            s.remove(&id);
            s.is_empty()
        });
        if empty {
            self.done.notify_waiters();
        }
    }

    fn clear(&self) {
        if let Ok(mut s) = self.ids.lock() {
            s.clear();
        }
        self.done.notify_waiters();
    }

    /// Waits until the upstream has given its final answer to every ended query (PS3.7: an
    /// association is released only with no operation outstanding), at most `limit`.
    async fn settled(&self, limit: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.done.notified();
                if self.ids.lock().map_or(true, |s| s.is_empty()) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

/// What the upstream-to-client loop waits for.
enum FromUpstream {
    Frame(Result<crate::reader::Frame, IoError>),
    /// The reader of a fresh upstream association (after the firewall aborted one).
    Fresh(PduReader<BoxRead>),
}

async fn upstream_to_client(
    st: &RelayState<'_>,
    mut reader: PduReader<BoxRead>,
    mut fresh: mpsc::UnboundedReceiver<PduReader<BoxRead>>,
    uwr: &Mutex<BoxWrite>,
) -> End {
    let idle = st.shared.settings.idle_timeout;
    let mut asm = Assembler::new();
    let mut inc = Incoming::default();
    // Fresh upstream associations this loop has read from; while the firewall has aborted
    // more than that, the current reader belongs to an aborted association.
    let mut generation = 0u64;
    let mut dead = false;
    loop {
        let next = if dead {
            match fresh.recv().await {
                Some(r) => FromUpstream::Fresh(r),
                None => std::future::pending().await,
            }
        } else {
            tokio::select! {
                Some(r) = fresh.recv() => FromUpstream::Fresh(r),
                f = read_idle(&mut reader, &st.activity, idle) => FromUpstream::Frame(f),
            }
        };
        let next = match next {
            FromUpstream::Fresh(r) => {
                reader = r;
                generation += 1;
                dead = false;
                asm = Assembler::new();
                inc = Incoming::default();
                continue;
            }
            FromUpstream::Frame(f) => f,
        };
        // What the aborted association still sends (or its closing) is not the client's.
        let aborted = st.drops.load(Ordering::SeqCst) > generation;
        let frame = match next {
            Ok(f) if !aborted => f,
            Ok(f) => {
                dead = f.ty == PduType::Abort;
                continue;
            }
            Err(_) if aborted => {
                dead = true;
                continue;
            }
            Err(e) => {
                if let (
                    Some(f),
                    IoError::Read(ReadError::Closed | ReadError::Truncated | ReadError::Io(_)),
                ) = (st.inflight.as_ref(), &e)
                {
                    // The transport to the upstream is gone (PS3.8 §9.1.7: an A-P-ABORT): on a
                    // hold route the client's side takes over, this direction ends here.
                    f.signal_lost(format!("upstream connection lost: {e}"));
                    return std::future::pending().await;
                }
                let (reason, blame, why) = read_failure(e, Blame::Upstream, "upstream");
                return st.abort_both(uwr, reason, blame, why).await;
            }
        };
        if st.inflight.as_ref().is_some_and(|f| f.lost().is_some()) {
            // Taken over: nothing more of the upstream's reaches the client.
            return std::future::pending().await;
        }
        st.from_upstream
            .fetch_add(frame.bytes.len() as u64, Ordering::Relaxed);
        match frame.ty {
            PduType::PData => {
                let items = match pdvs(frame.body()) {
                    Ok(v) => v,
                    Err(e) => {
                        let why = format!("upstream: {e}");
                        return st
                            .abort_both(uwr, e.abort_reason(), Blame::Upstream, why)
                            .await;
                    }
                };
                // Commands are held until whole: a de-identifying route's C-STORE-RSP carries
                // the client's own SOP Instance UID again, an origin route's success passes
                // only once the fingerprint is in the ledger, and every data set passes the
                // firewall first.
                let mut out = Vec::new();
                for pdv in items {
                    let step = match asm.push(pdv) {
                        Ok(step) => step,
                        Err(e) => {
                            let why = format!("upstream: {e}");
                            return st
                                .abort_both(
                                    uwr,
                                    AbortReason::UnexpectedPduParameter,
                                    Blame::Upstream,
                                    why,
                                )
                                .await;
                        }
                    };
                    let done = match step {
                        Step::Command {
                            context_id,
                            raw,
                            command,
                        } => {
                            upstream_command(st, uwr, &mut inc, &mut out, context_id, raw, *command)
                                .await
                        }
                        Step::Data { data, is_last, .. } => {
                            upstream_data(st, uwr, &mut inc, &mut out, pdv, data, is_last).await
                        }
                        Step::CommandPartial => Ok(()),
                    };
                    if let Err(end) = done {
                        return end;
                    }
                }
                if !out.is_empty() {
                    if let Err(e) = st.to_client(&out).await {
                        let why = format!("client write failed: {e}");
                        return st
                            .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
                            .await;
                    }
                }
            }
            PduType::ReleaseRp => {
                let _ = st.to_client(&frame.bytes).await;
                if st.release_requested.load(Ordering::Relaxed) {
                    return End::Released;
                }
                let why = "A-RELEASE-RP from the upstream without a request".to_string();
                return st
                    .abort_both(uwr, AbortReason::UnexpectedPdu, Blame::Upstream, why)
                    .await;
            }
            PduType::ReleaseRq => {
                // The acceptor asks to release (rare but legal): pass it on.
                if st.to_client(&frame.bytes).await.is_err() {
                    let why = "client lost at release".to_string();
                    return st
                        .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
                        .await;
                }
            }
            PduType::Abort => {
                if let Some(f) = st.inflight.as_ref() {
                    // PS3.8 §7.3: the upstream gave up the association; what it did not answer
                    // is held (the client never sees this A-ABORT).
                    f.signal_lost("A-ABORT from the upstream".into());
                    return std::future::pending().await;
                }
                let _ = st.to_client(&frame.bytes).await;
                return End::Aborted {
                    blame: Blame::Upstream,
                    why: "A-ABORT from the upstream".into(),
                };
            }
            other => {
                let why = format!("unexpected {} from the upstream", other.name());
                return st
                    .abort_both(uwr, AbortReason::UnexpectedPdu, Blame::Upstream, why)
                    .await;
            }
        }
    }
}

/// A whole command from the upstream: a response is recorded and passed on (after the
/// de-identifying and origin routes' work), or held with its data set for the firewall; a
/// request (C-GET sub-operation) passes on and its data set streams under the firewall.
async fn upstream_command(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    inc: &mut Incoming,
    out: &mut Vec<u8>,
    context_id: u8,
    raw: Vec<u8>,
    command: Command,
) -> Result<(), End> {
    let field = command.command_field();
    let is_response = field.is_some_and(CommandField::is_response);
    inc.skipping = false;
    if let (Some(f), Some(id), true) = (st.inflight.as_ref(), command.responded_to, is_response) {
        let last = !matches!(command.status, Some(0xFF00 | 0xFF01));
        if !f.answered(id, last) {
            // The client's side took over and answers this request itself.
            return std::future::pending().await;
        }
    }
    if let Some(id) = command.responded_to.filter(|id| st.ended.contains(*id)) {
        // An answer to a query the gateway ended after refusing one of its answers.
        if !matches!(command.status, Some(0xFF00 | 0xFF01)) {
            st.ended.remove(id);
        }
        inc.skipping = command.has_data_set();
        return Ok(());
    }
    if !is_response && field.is_some_and(CommandField::is_normalized) {
        // A DIMSE-N request of the called side (Storage Commitment's N-EVENT-REPORT): the
        // peer's `receive` decides, default deny.
        if refuse_called(st, uwr, context_id, &command).await? {
            inc.skipping = command.has_data_set();
            return Ok(());
        }
    }
    if field == Some(CommandField::CStoreRq)
        && guard_called_store(st, uwr, inc, context_id, &raw, &command).await?
    {
        // A C-GET sub-operation carrying a protocol or approval (called.rs): held or refused.
        return Ok(());
    }
    if command.has_data_set() {
        let field = field.unwrap_or(CommandField::Other(0));
        let of = Subjected {
            context_id,
            field,
            message_id: command.responded_to.or(command.message_id).unwrap_or(0),
            sop_class: command.affected_sop_class.clone(),
            sop_instance: command.affected_sop_instance.clone(),
        };
        let checking = st.adm.pipeline.checking(&st.contexts, of);
        if is_response {
            inc.held = Some(HeldResponse {
                context_id,
                raw,
                command,
                data: Vec::new(),
                checking: Some(checking),
            });
            return Ok(());
        }
        inc.streaming = Some(checking);
        inc.counting = command.message_id.map(|id| (id, 0));
    }
    if !is_response {
        if let (Some(id), Ok(mut m)) = (command.message_id, st.upstream_requests.lock()) {
            // Bounded: keyed by 16-bit Message IDs.
            m.insert(
                id,
                InFlight {
                    sop_class: command.affected_sop_class.clone(),
                    sop_instance: command.affected_sop_instance.clone(),
                    bytes: 0,
                },
            );
        }
    }
    pass_command(st, out, context_id, raw, &command).await;
    Ok(())
}

/// Judges a DIMSE-N request of the upstream ([`crate::called`]); a refused one is answered to
/// the upstream here (`Ok(true)`: drop it and its data set), audited and alerted like the
/// client's refused requests.
async fn refuse_called(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    context_id: u8,
    command: &Command,
) -> Result<bool, End> {
    let policy = st.shared.policy_now();
    let admission = &st.adm.admission;
    let r = match judge_called(&policy, admission, &st.contexts, context_id, command) {
        CalledVerdict::Pass => return Ok(false),
        CalledVerdict::Refuse(r) => r,
        CalledVerdict::Abort(why) => {
            return Err(st
                .abort_both(
                    uwr,
                    AbortReason::UnexpectedPduParameter,
                    Blame::Upstream,
                    why,
                )
                .await)
        }
    };
    st.shared.bus.emit(Event::DimseRefused {
        assoc: st.id,
        message_id: r.message_id,
        command: format!("{:?}", r.field),
        status: r.status,
        why: format!("from the called side: {}", r.comment),
    });
    st.shared.bus.emit(Event::SecurityAlert {
        assoc: Some(st.id),
        kind: AlertKind::NotAuthorized,
        source: None,
        detail: format!(
            "{:?} from the upstream refused with 0x{:04X}: {}",
            r.field, r.status, r.comment
        ),
    });
    answer_upstream(st, uwr, context_id, &r.response).await?;
    Ok(true)
}

/// The gateway's own answer to a request of the upstream (a response command set on
/// `context_id`); a failed write ends both associations.
async fn answer_upstream(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    context_id: u8,
    response: &[u8],
) -> Result<(), End> {
    let mut buf = Vec::with_capacity(response.len() + 12);
    push_command(&mut buf, context_id, response, st.to_upstream_max);
    let idle = st.shared.settings.idle_timeout;
    if let Err(e) = write_timed(&mut *uwr.lock().await, &buf, idle).await {
        let why = format!("upstream write failed: {e}");
        return Err(st
            .abort_both(uwr, AbortReason::NotSpecified, Blame::Upstream, why)
            .await);
    }
    Ok(())
}

/// A C-STORE request of the upstream (a C-GET sub-operation) under the scan-protocol guard
/// ([`crate::called`]): `Ok(true)` when the guard took it (held whole, or refused and answered
/// to the upstream with its data set dropped).
async fn guard_called_store(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    inc: &mut Incoming,
    context_id: u8,
    raw: &[u8],
    command: &Command,
) -> Result<bool, End> {
    match plan_called_store(&st.shared.guard(), st.names.1.as_str(), command) {
        CalledStore::Pass => Ok(false),
        CalledStore::Hold => {
            let of = Subjected {
                context_id,
                field: CommandField::CStoreRq,
                message_id: command.message_id.unwrap_or(0),
                sop_class: command.affected_sop_class.clone(),
                sop_instance: command.affected_sop_instance.clone(),
            };
            inc.guarded = Some(HeldStore {
                context_id,
                raw: raw.to_vec(),
                command: command.clone(),
                data: Vec::new(),
                checking: Some(st.adm.pipeline.checking(&st.contexts, of)),
            });
            Ok(true)
        }
        CalledStore::Refuse(r, findings) => {
            inc.skipping = command.has_data_set();
            let class = command.affected_sop_class.clone().unwrap_or_default();
            refuse_called_store(st, uwr, context_id, &class, r, &findings).await?;
            Ok(true)
        }
        CalledStore::Abort(why) => Err(st
            .abort_both(
                uwr,
                AbortReason::UnexpectedPduParameter,
                Blame::Upstream,
                why,
            )
            .await),
    }
}

/// A fragment of a held C-GET sub-operation: kept (under the firewall) until whole, then
/// judged: relayed to the client, or answered to the upstream (nothing of it reached the
/// client, so neither association is aborted).
async fn guarded_data(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    inc: &mut Incoming,
    out: &mut Vec<u8>,
    data: &[u8],
    is_last: bool,
) -> Result<(), End> {
    let Some(g) = inc.guarded.as_mut() else {
        return Ok(());
    };
    let class = g.command.affected_sop_class.clone().unwrap_or_default();
    let refused = match g.feed(data) {
        Err(f) => Some(g.too_large(f)),
        Ok(()) => st
            .adm
            .pipeline
            .check(&mut g.checking, data, is_last)
            .map(|(of, v)| {
                st.shared.bus.emit(Event::SecurityAlert {
                    assoc: Some(st.id),
                    kind: AlertKind::MalformedDataSet,
                    source: None,
                    detail: format!("upstream C-STORE {}: {v}", of.name()),
                });
                let status = radguard_dicom::types::status::CANNOT_UNDERSTAND;
                let f = radguard_guard::Finding::new(
                    radguard_guard::FindingKind::Malformed,
                    v.to_string(),
                );
                let r = store_refusal(&g.command, status, firewall_comment(&v));
                (
                    r.unwrap_or_else(|| g.refusal(status, Vec::new()).0),
                    vec![f],
                )
            }),
    };
    if let Some((r, findings)) = refused {
        let context_id = g.context_id;
        inc.guarded = None;
        inc.skipping = !is_last;
        return refuse_called_store(st, uwr, context_id, &class, r, &findings).await;
    }
    if !is_last {
        return Ok(());
    }
    let Some(g) = inc.guarded.take() else {
        return Ok(());
    };
    let ts = st
        .contexts
        .get(g.context_id)
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    match g.judge(&st.shared.guard(), &ts) {
        Ok(()) => {
            if let (Some(id), Ok(mut m)) = (g.command.message_id, st.upstream_requests.lock()) {
                m.insert(
                    id,
                    InFlight {
                        sop_class: g.command.affected_sop_class.clone(),
                        sop_instance: g.command.affected_sop_instance.clone(),
                        bytes: g.data.len() as u64,
                    },
                );
            }
            pass_command(st, out, g.context_id, g.raw, &g.command).await;
            push_data(out, g.context_id, &g.data, true, st.to_client_max);
            Ok(())
        }
        Err((r, findings)) => {
            refuse_called_store(st, uwr, g.context_id, &class, r, &findings).await
        }
    }
}

/// Answers a C-GET sub-operation the guard refused to the upstream, with its `detection`
/// (rule guard-protocol, peer `upstream <AE>`), `dimse-refused` event and security alert.
async fn refuse_called_store(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    context_id: u8,
    sop_class: &str,
    r: CalledRefusal,
    findings: &[radguard_guard::Finding],
) -> Result<(), End> {
    let peer = format!("upstream {}", st.names.1.as_str().trim());
    st.shared.bus.emit(detection(
        st.id,
        "guard-protocol",
        &peer,
        "refuse",
        sop_class,
        findings,
    ));
    st.shared.bus.emit(Event::DimseRefused {
        assoc: st.id,
        message_id: r.message_id,
        command: format!("{:?}", r.field),
        status: r.status,
        why: format!("from the called side: {}", r.comment),
    });
    let detail: Vec<String> = findings.iter().map(ToString::to_string).collect();
    st.shared.bus.emit(Event::SecurityAlert {
        assoc: Some(st.id),
        kind: AlertKind::NotAuthorized,
        source: None,
        detail: format!(
            "C-STORE sub-operation from the upstream refused with 0x{:04X}: {}",
            r.status,
            detail.join("; ")
        ),
    });
    answer_upstream(st, uwr, context_id, &r.response).await?;
    Ok(())
}

/// Why the gateway ends a query or retrieve the upstream is still answering.
struct QueryEnd {
    /// The final status the client gets.
    status: u16,
    /// Its Error Comment (at most 64 characters).
    comment: String,
    /// The refusal's reason (dimse-refused event).
    why: String,
    /// The alert raised (a security alert, or the detection of the C-FIND cap).
    alert: Event,
}

/// The firewall refused an answer of the upstream: a failure (0xC000) naming the violation.
fn refused_answer(of: &Subjected, v: &Violation) -> QueryEnd {
    let request = CommandField::from_u16(of.field.to_u16() & 0x7FFF);
    let why = format!(
        "upstream's answer to {request:?} message {}: {v}",
        of.message_id
    );
    QueryEnd {
        status: radguard_dicom::types::status::CANNOT_UNDERSTAND,
        comment: firewall_comment(v),
        why: why.clone(),
        alert: Event::SecurityAlert {
            assoc: None,
            kind: AlertKind::MalformedDataSet,
            source: None,
            detail: why,
        },
    }
}

/// The request a held response answers.
fn of_request(h: &HeldResponse) -> Subjected {
    Subjected {
        context_id: h.context_id,
        field: h.command.command_field().unwrap_or(CommandField::Other(0)),
        message_id: h.command.responded_to.unwrap_or(0),
        sop_class: h.command.affected_sop_class.clone(),
        sop_instance: None,
    }
}

/// Counts a match (pending C-FIND-RSP) of the upstream; the peer's `max_find_results` under
/// the policy in force when it exceeds it (bulk query: harvesting the archive with an allowed
/// identity).
fn over_find_cap(st: &RelayState<'_>, command: &Command) -> Option<u32> {
    if command.command_field() != Some(CommandField::CFindRsp)
        || !matches!(command.status, Some(0xFF00 | 0xFF01))
    {
        return None;
    }
    let id = command.responded_to?;
    let n = st.outstanding.take(id, |a| {
        a.matches = a.matches.saturating_add(1);
        Some(a.matches)
    })?;
    let cap = st.shared.policy_now().max_find_results(&st.adm.admission)?;
    (n > cap).then_some(cap)
}

/// The guard on a Modality Worklist answer (guard.rs): `Ok(None)` relays it as it is,
/// `Ok(Some(bytes))` the cleaned answer; `Err` ends the query with the guard's status.
fn guard_answer(st: &RelayState<'_>, h: &HeldResponse) -> Result<Option<Vec<u8>>, Box<QueryEnd>> {
    if h.command.command_field() != Some(CommandField::CFindRsp) {
        return Ok(None);
    }
    let Some((abstract_syntax, ts)) = st.contexts.get(h.context_id) else {
        return Ok(None);
    };
    let peer = st.adm.admission.peer_name();
    match st
        .shared
        .guard()
        .worklist_answer(abstract_syntax, &h.data, ts)
    {
        Answer::Pass => Ok(None),
        Answer::Cleaned(bytes, findings) => {
            let d = detection(
                st.id,
                "guard-worklist",
                peer,
                "clean",
                abstract_syntax,
                &findings,
            );
            st.shared.bus.emit(d);
            Ok(Some(bytes))
        }
        Answer::Refuse(status, findings) => {
            let first = findings.first().map_or("refused", |f| f.kind.name());
            let why: Vec<String> = findings.iter().map(ToString::to_string).collect();
            Err(Box::new(QueryEnd {
                status,
                comment: format!("Radguard guard: worklist {first}"),
                why: format!("worklist answer refused: {}", why.join("; ")),
                alert: detection(
                    st.id,
                    "guard-worklist",
                    peer,
                    "refuse",
                    abstract_syntax,
                    &findings,
                ),
            }))
        }
    }
}

/// The peer's C-FIND got more matches than its cap: Refused, Out of Resources (0xA700, PS3.4
/// C.4.1.1.4), no more matches relayed.
fn find_cap_reached(st: &RelayState<'_>, cap: u32) -> QueryEnd {
    let peer = st.adm.admission.peer_name();
    QueryEnd {
        status: radguard_dicom::types::status::OUT_OF_RESOURCES,
        comment: format!("Radguard: more than {cap} matches (max_find_results)"),
        why: format!("more than {cap} matches (max_find_results of peer {peer})"),
        alert: Event::Detection {
            assoc: Some(st.id),
            source: None,
            peer: Some(peer.to_string()),
            calling_ae: None,
            called_ae: None,
            rule: "max-find-results".into(),
            rule_kind: "bulk-query".into(),
            response: "refuse".into(),
            evidence: serde_json::json!({
                "type": "count",
                "counted": "matches",
                "count": cap.saturating_add(1),
                "threshold": cap,
            }),
            detail: format!(
                "rule max-find-results (bulk-query) peer {peer}: more than {cap} matches, query ended"
            ),
        },
    }
}

/// The gateway ends a query or retrieve the upstream is answering (`end` says why): the client
/// gets a final response with `end.status` instead of the held answer, and the upstream a
/// C-CANCEL-RQ when it had more answers to give (PS3.4 C.4.1.2.3), whose further answers are
/// dropped.
async fn end_query(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    out: &mut Vec<u8>,
    h: &HeldResponse,
    of: Subjected,
    end: QueryEnd,
) -> Result<(), End> {
    let id = of.message_id;
    let request = CommandField::from_u16(of.field.to_u16() & 0x7FFF);
    st.shared.bus.emit(Event::DimseRefused {
        assoc: st.id,
        message_id: id,
        command: format!("{:?}", of.field),
        status: end.status,
        why: end.why,
    });
    let mut alert = end.alert;
    if let Event::SecurityAlert { assoc, .. } | Event::Detection { assoc, .. } = &mut alert {
        *assoc = Some(st.id);
    }
    st.shared.bus.emit(alert);
    forget_request(st, id);
    let rsp = encode_response(
        request,
        id,
        of.sop_class.as_deref(),
        None,
        end.status,
        Some(&end.comment),
    );
    push_command(out, h.context_id, &rsp, st.to_client_max);
    if matches!(h.command.status, Some(0xFF00 | 0xFF01)) {
        st.ended.insert(id);
        let mut cancel = Vec::new();
        push_command(
            &mut cancel,
            h.context_id,
            &encode_cancel(id),
            st.to_upstream_max,
        );
        let idle = st.shared.settings.idle_timeout;
        if let Err(e) = write_timed(&mut *uwr.lock().await, &cancel, idle).await {
            let why = format!("upstream write failed: {e}");
            return Err(st
                .abort_both(uwr, AbortReason::NotSpecified, Blame::Upstream, why)
                .await);
        }
    }
    Ok(())
}

/// Records a command from the upstream and appends it for the client.
async fn pass_command(
    st: &RelayState<'_>,
    out: &mut Vec<u8>,
    context_id: u8,
    raw: Vec<u8>,
    command: &Command,
) {
    // A C-STORE-RSP: the client's own SOP Instance UID goes back in (de-identifying routes),
    // the fingerprint into the ledger (origin routes).
    let store_rsp = command
        .responded_to
        .filter(|_| command.field == Some(0x8001));
    let original = store_rsp.and_then(|id| st.outstanding.take(id, |a| a.original_uid.take()));
    let entry = store_rsp.and_then(|id| st.outstanding.take(id, |a| a.entry.take()));
    note_response(st, command);
    let bytes = original
        .and_then(|uid| restore_uid(&raw, &uid))
        .unwrap_or(raw);
    let bytes = record_on_success(st, command, bytes, entry).await;
    push_command(out, context_id, &bytes, st.to_client_max);
}

/// A data fragment from the upstream, under the firewall.
async fn upstream_data<'a>(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    inc: &mut Incoming,
    out: &mut Vec<u8>,
    pdv: Pdv<'a>,
    data: &[u8],
    is_last: bool,
) -> Result<(), End> {
    if inc.skipping {
        inc.skipping = !is_last;
        return Ok(());
    }
    if inc.guarded.is_some() {
        return guarded_data(st, uwr, inc, out, data, is_last).await;
    }
    if let Some(h) = inc.held.as_mut() {
        // Bounded: the firewall reads identifiers under Limits::QUERY and refuses past it.
        h.data.extend_from_slice(data);
        let refused = st.adm.pipeline.check(&mut h.checking, data, is_last);
        let whole = refused.is_some() || is_last;
        let Some(h) = inc.held.take_if(|_| whole) else {
            return Ok(());
        };
        match refused {
            Some((of, v)) => {
                inc.skipping = !is_last;
                let end = refused_answer(&of, &v);
                end_query(st, uwr, out, &h, of, end).await?;
            }
            None => match over_find_cap(st, &h.command) {
                Some(cap) => {
                    let end = find_cap_reached(st, cap);
                    end_query(st, uwr, out, &h, of_request(&h), end).await?;
                }
                None => match guard_answer(st, &h) {
                    Ok(cleaned) => {
                        let data = cleaned.as_deref().unwrap_or(&h.data);
                        pass_command(st, out, h.context_id, h.raw, &h.command).await;
                        push_data(out, h.context_id, data, true, st.to_client_max);
                    }
                    Err(end) => end_query(st, uwr, out, &h, of_request(&h), *end).await?,
                },
            },
        }
        return Ok(());
    }
    if let Some((of, v)) = st.adm.pipeline.check(&mut inc.streaming, data, is_last) {
        // The client is receiving this data set: withholding its last fragment means ending
        // both associations.
        let why = format!("upstream {:?} {}: {v}", of.field, of.name());
        return Err(st.abort_malformed(uwr, Blame::Upstream, why).await);
    }
    if let Some((id, n)) = inc.counting.as_mut() {
        *n = n.saturating_add(data.len() as u64);
        if is_last {
            let (id, n) = (*id, *n);
            inc.counting = None;
            if let Ok(mut m) = st.upstream_requests.lock() {
                if let Some(f) = m.get_mut(&id) {
                    f.bytes = n;
                }
            }
        }
    }
    encode_pdata(out, &[pdv]);
    Ok(())
}

/// At the end of a fingerprinted data set: finish the fingerprint and, on a route that refuses
/// conflicts, check the ledger *before* the last fragment goes upstream (so a conflicting copy
/// never arrives whole). The entry waits for the upstream's success.
async fn settle_fingerprint(
    st: &RelayState<'_>,
    uwr: &Mutex<BoxWrite>,
    f: Fingerprinting,
) -> Result<(), End> {
    let Some(origin) = st.adm.pipeline.origin() else {
        return Ok(());
    };
    let (ledger, origin) = (origin.ledger.clone(), origin.route);
    let uid = f.sop_instance.clone();
    let fp = f.fp;
    let checked = tokio::task::spawn_blocking(move || {
        let fingerprint = fp.finish().map_err(|e| e.to_string())?;
        let conflict = ledger
            .conflict(&uid, &fingerprint)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((fingerprint, conflict))
    })
    .await;
    let (fingerprint, conflict) = match checked {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            st.shared.bus.emit(Event::SecurityAlert {
                assoc: Some(st.id),
                kind: AlertKind::InstanceConflict,
                source: None,
                detail: format!("{} relayed without a fingerprint: {e}", f.sop_instance),
            });
            return Ok(());
        }
        Err(e) => {
            let why = format!("fingerprinting failed: {e}");
            return Err(st
                .abort_both(uwr, AbortReason::NotSpecified, Blame::Local, why)
                .await);
        }
    };
    if let Some(old) = conflict {
        st.shared.bus.emit(Event::OverwriteAttempt {
            assoc: st.id,
            store: IntegrityStore::Ledger,
            sop_instance: f.sop_instance.clone(),
            kept: old.digest.to_hex(),
            arrived: fingerprint.digest.to_hex(),
            refused: origin.refuse_conflicts,
        });
        if origin.refuse_conflicts {
            let why = format!(
                "C-STORE of {} refused: different content than the logged original",
                f.sop_instance
            );
            return Err(st
                .abort_both(uwr, AbortReason::NotSpecified, Blame::Peer, why)
                .await);
        }
    }
    let entry = PendingEntry {
        sop_instance: f.sop_instance,
        fingerprint,
        on_conflict: if origin.refuse_conflicts {
            OnConflict::Refuse
        } else {
            OnConflict::Record
        },
    };
    st.outstanding
        .update(f.message_id, |a| a.entry = Some(entry));
    Ok(())
}

/// On an origin route, a C-STORE-RSP with success or warning passes only after the instance's
/// fingerprint is appended to the ledger; if that fails, the client gets a failure instead.
async fn record_on_success(
    st: &RelayState<'_>,
    command: &Command,
    raw: Vec<u8>,
    pending: Option<PendingEntry>,
) -> Vec<u8> {
    let (Some(id), Some(pending)) = (command.responded_to, pending) else {
        return raw;
    };
    let Some(ledger) = st.adm.pipeline.origin().map(|o| o.ledger.clone()) else {
        return raw;
    };
    let status = command.status.unwrap_or(0xFFFF);
    let success = status == 0 || (0xB000..=0xBFFF).contains(&status) || status == 0x0107;
    if !success {
        return raw;
    }
    let entry = LedgerEntry {
        fingerprint: pending.fingerprint.clone(),
        sop_instance_uid: pending.sop_instance.clone(),
        time: Timestamp::now(),
        gateway_id: st.shared.gateway_id.clone(),
        assoc_id: st.id.to_string(),
    };
    let on_conflict = pending.on_conflict;
    let appended =
        tokio::task::spawn_blocking(move || ledger.append_with(entry, on_conflict)).await;
    match appended {
        Ok(Ok(out)) => {
            st.shared.bus.emit(Event::InstanceFingerprinted {
                assoc: st.id,
                sop_instance: pending.sop_instance,
                fingerprint: pending.fingerprint.digest.to_hex(),
                ledger_index: out.index,
                conflict: out.conflict.is_some(),
            });
            raw
        }
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
                Ok(Ok(_)) => String::new(),
            };
            st.shared.bus.emit(Event::SecurityAlert {
                assoc: Some(st.id),
                kind: AlertKind::InstanceConflict,
                source: None,
                detail: format!("{}: ledger append failed: {why}", pending.sop_instance),
            });
            encode_response(
                CommandField::CStoreRq,
                id,
                command.affected_sop_class.as_deref(),
                command.affected_sop_instance.as_deref(),
                radguard_dicom::types::status::PROCESSING_FAILURE,
                Some("Radguard: integrity ledger append failed"),
            )
        }
    }
}

/// What a failed read on one side means for the association: the A-ABORT reason to send, who
/// is to blame, and why.
fn read_failure(e: IoError, blame: Blame, side: &str) -> (AbortReason, Blame, String) {
    match e {
        IoError::Read(ReadError::Frame(f)) => (f.abort_reason(), blame, format!("{side}: {f}")),
        IoError::Idle(d) => (
            AbortReason::NotSpecified,
            Blame::Local,
            format!("idle for {d:?}"),
        ),
        other => (
            AbortReason::NotSpecified,
            blame,
            format!("{side} connection lost: {other}"),
        ),
    }
}

fn note_response(st: &RelayState<'_>, command: &Command) {
    let Some(field) = command.command_field() else {
        return;
    };
    if !field.is_response() {
        return; // C-GET sub-operations: C-STORE requests from the upstream.
    }
    let status = command.status.unwrap_or(0xFFFF);
    let pending = status == 0xFF00 || status == 0xFF01;
    let Some(id) = command.responded_to else {
        return;
    };
    let sub_operations = sub_operations(field, command);
    let (sop_class, sop_instance, subject) = if pending {
        // A pending C-MOVE/C-GET response's sub-operation counts (PS3.7 §9.1.3, §9.1.4) reach
        // the detectors as they grow: a retrieve the client aborts before its final response
        // still counts toward bulk-retrieve. (The audit trail records final responses only.)
        if sub_operations.is_none() {
            return;
        }
        (None, None, None)
    } else {
        match st.outstanding.remove(id).0 {
            Some(f) => (f.sop_class, f.sop_instance, f.subject),
            None => (None, None, None),
        }
    };
    st.shared.bus.emit(Event::DimseResponse {
        assoc: st.id,
        message_id: id,
        command: format!("{field:?}"),
        status,
        from: Blame::Upstream,
        sop_class: sop_class.or_else(|| command.affected_sop_class.clone()),
        sop_instance: sop_instance.or_else(|| command.affected_sop_instance.clone()),
        subject,
        sub_operations,
        bytes: None,
    });
    if !pending {
        progress(st);
    }
}

/// The association's bytes so far, at most every 500 ms (the console's live bytes and rate).
fn progress(st: &RelayState<'_>) {
    let now = st.activity.elapsed_ms();
    let last = st.progress_ms.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 500
        || st
            .progress_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    st.shared.bus.emit(Event::AssociationProgress {
        assoc: st.id,
        bytes_from_client: st.from_client.load(Ordering::Relaxed),
        bytes_from_upstream: st.from_upstream.load(Ordering::Relaxed),
    });
}

/// The sub-operation counts of a C-MOVE-RSP or C-GET-RSP (PS3.7 §9.1.3, §9.1.4), when it
/// carries any: the detectors count a peer's retrieved instances from them.
fn sub_operations(field: CommandField, command: &Command) -> Option<SubOperations> {
    if !matches!(field, CommandField::CMoveRsp | CommandField::CGetRsp) {
        return None;
    }
    let s = SubOperations {
        remaining: command.remaining_sub_operations,
        completed: command.completed_sub_operations,
        failed: command.failed_sub_operations,
        warning: command.warning_sub_operations,
    };
    (s != SubOperations::default()).then_some(s)
}
