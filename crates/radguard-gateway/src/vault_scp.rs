//! The gateway as the SCP for routes whose destination is the built-in vault: it accepts the
//! allowed contexts itself, answers C-ECHO, and streams each C-STORE data set into the vault,
//! answering success only after the instance is on disk (fsynced and indexed). The client's
//! requests come through the session loop (session.rs) the relay runs too; `VaultSide` says
//! what each judged one becomes.

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::pdu::Pdu;
use radguard_dicom::dimse::{encode_response, Request};
use radguard_dicom::limits::Limits;
use radguard_dicom::pdu::{AbortReason, PduType, RELEASE_RP};
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::types::{status, uids};
use radguard_dicom::validate::{Level, Validator, Violation};
use radguard_dicom::{CommandField, Uid};
use radguard_events::{AlertKind, AssocId, Blame, Event, IntegrityStore, VaultOutcome};
use radguard_vault::{PendingInstance, StoreOutcome, StoredInstance};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::conn::ClientConn;
use crate::establish::Admitted;
use crate::gate::{Contexts, Verdict};
use crate::io::{push_command, write_timed, Activity, BoxWrite, IoError};
use crate::negotiate::local_ac;
use crate::reader::{Frame, ReadError};
use crate::session::{self, Gate, Session};
use crate::shared::Shared;

/// What a route that stores through this SCP on another's behalf (a hold route: the vault
/// keeps the instance for an upstream that cannot be reached) adds to each C-STORE. Blocking
/// methods: they are called from `spawn_blocking` or are cheap.
pub trait StoreHook: Send + Sync {
    /// How the association is shown (`AssociationAccepted.route`).
    fn describe(&self, called_ae: &str) -> String;
    /// Before a C-STORE's data set is received: `Err((status, comment))` refuses it (its data
    /// set is read and dropped, the client gets the status).
    fn admit(&self, assoc: AssocId) -> Result<(), (u16, String)>;
    /// After the vault committed the instance (new or identical), before the client's answer:
    /// `Err((status, comment))` turns the answer into that failure.
    fn stored(&self, assoc: AssocId, instance: &StoredInstance) -> Result<(), (u16, String)>;
    /// The answer to a request other than C-ECHO and C-STORE (status, comment); `None`: the
    /// vault's own (0x0122, the service is not offered here).
    fn other_request(&self) -> Option<(u16, String)> {
        None
    }
}

/// The instance being received.
struct Receiving {
    message_id: u16,
    sop_class: String,
    sop_instance: String,
    context_id: u8,
    pending: Option<PendingInstance>,
    error: Option<radguard_vault::VaultError>,
    bytes: u64,
    /// The data-set firewall on the data set; the vault keeps nothing it refuses.
    checking: Option<Validator>,
    refused: Option<Violation>,
    /// Refused by the route's [`StoreHook`] before it was received.
    held_back: Option<(u16, String)>,
}

impl Receiving {
    /// Feeds a fragment to the firewall; a refused data set's pending file is discarded (the
    /// vault keeps nothing the firewall refuses). At the end of an accepted data set, returns
    /// the deviations the level let through.
    fn check(&mut self, data: &[u8], is_last: bool) -> Vec<Violation> {
        let Some(c) = self.checking.as_mut() else {
            return Vec::new();
        };
        if let Some(v) = c.feed(data).cloned() {
            self.refuse(v);
            return Vec::new();
        }
        if !is_last {
            return Vec::new();
        }
        let Some(c) = self.checking.take() else {
            return Vec::new();
        };
        let outcome = c.finish();
        match outcome.refusal {
            Some(v) => {
                self.refuse(v);
                Vec::new()
            }
            None => outcome.found,
        }
    }

    fn refuse(&mut self, v: Violation) {
        self.checking = None;
        self.pending = None;
        self.refused = Some(v);
    }
}

pub async fn run(shared: &Shared, conn: ClientConn, adm: Admitted) {
    run_with(shared, conn, adm, None).await
}

/// [`run`] with a [`StoreHook`] called around every C-STORE.
pub async fn run_with(
    shared: &Shared,
    mut conn: ClientConn,
    adm: Admitted,
    hook: Option<Arc<dyn StoreHook>>,
) {
    let firewall = adm.pipeline.firewall();
    let max = shared.settings.max_pdu_length;
    let ac = local_ac(&adm.rq, &adm.plan, max, |abs, proposed| {
        // The vault stores any standard transfer syntax (radguard-dicom's one classification).
        let known = |ts: &str| TransferSyntax::from_uid(ts).is_ok_and(|t| t.known);
        if abs == uids::VERIFICATION {
            return proposed
                .iter()
                .find(|t| t.trim_end_matches('\0') == uids::IMPLICIT_VR_LE)
                .or_else(|| proposed.iter().find(|t| known(t)))
                .cloned();
        }
        proposed.iter().find(|t| known(t)).cloned()
    });
    let mut ac = ac;
    ac.user_variables.extend(adm.ac_items());
    let contexts = Contexts::from_ac(&adm.rq.presentation_contexts, &ac);
    let bytes = match radguard_dicom::pdu::encode(&Pdu::AssociationAC(ac.clone())) {
        Ok(b) => b,
        Err(e) => {
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
    let idle = shared.settings.idle_timeout;
    if conn.send(&bytes, idle).await.is_err() {
        return;
    }
    shared.bus.emit(Event::AssociationAccepted {
        assoc: conn.id,
        peer: adm.admission.peer_name().to_string(),
        route: if let Some(h) = &hook {
            h.describe(&adm.rq.called_ae_title)
        } else if contexts.is_empty() {
            format!(
                "{} -> (every context refused; answered locally)",
                adm.rq.called_ae_title
            )
        } else {
            format!("{} -> vault", adm.rq.called_ae_title)
        },
        accepted_contexts: contexts.len(),
        rejected_contexts: ac.presentation_contexts.len() - contexts.len(),
        max_pdu_client: adm.client_accepts,
        authenticated_user: adm.admission.authenticated_user().map(str::to_string),
        max_pdu_upstream: max,
    });
    conn.reader.set_max_pdata(max);
    let activity = Activity::new();
    // The writer is shared behind a lock only for the session's length (a relay that takes
    // over on its upstream's loss shares its own the same way).
    let writer = Mutex::new(std::mem::replace(
        &mut conn.writer,
        Box::new(tokio::io::sink()),
    ));
    let mut side = VaultSide {
        shared,
        id: conn.id,
        source: conn.source,
        writer: &writer,
        activity: &activity,
        contexts: &contexts,
        firewall,
        client_accepts: adm.client_accepts,
        calling_ae: adm.admission.calling_ae().to_string(),
        receiving: None,
        from_client: 0,
        hook,
    };
    let gate = Gate {
        shared,
        admission: &adm.admission,
        contexts: &contexts,
    };
    // A block of this association's subject cuts it (A-ABORT), whatever it is doing.
    let end = tokio::select! {
        e = session::run(gate, &mut conn.reader, &activity, &mut side) => e,
        why = adm.registration.cut() => VaultEnd::Abort {
            reason: AbortReason::NotSpecified,
            blame: Blame::Local,
            why: format!("cut: {why}"),
        },
    };
    drop(side);
    conn.writer = writer.into_inner();
    match end {
        VaultEnd::Released => {}
        VaultEnd::Abort { reason, blame, why } => conn.abort(shared, reason, blame, why).await,
        VaultEnd::Gone { why } => shared.bus.emit(Event::AssociationAborted {
            assoc: conn.id,
            blame: Blame::Peer,
            why,
        }),
    }
}

/// How a vault session ended.
pub(crate) enum VaultEnd {
    /// Released (answered and recorded).
    Released,
    /// The gateway aborts the association (A-ABORT, recorded, closing linger).
    Abort {
        reason: AbortReason,
        blame: Blame,
        why: String,
    },
    /// The client aborted or went away: recorded, nothing more is sent.
    Gone { why: String },
}

impl VaultEnd {
    fn peer(reason: AbortReason, why: String) -> Self {
        VaultEnd::Abort {
            reason,
            blame: Blame::Peer,
            why,
        }
    }
}

/// The vault's side of the session loop ([`crate::session`]): a judged C-ECHO is answered, a
/// C-STORE streamed into the vault and answered once it is stored.
pub(crate) struct VaultSide<'a> {
    shared: &'a Shared,
    id: AssocId,
    source: SocketAddr,
    writer: &'a Mutex<BoxWrite>,
    activity: &'a Activity,
    contexts: &'a Contexts,
    firewall: Level,
    client_accepts: u32,
    calling_ae: String,
    /// The instance being received.
    receiving: Option<Receiving>,
    from_client: u64,
    hook: Option<Arc<dyn StoreHook>>,
}

/// What a relay hands over when its upstream is lost mid-association and the route holds:
/// the association as the relay negotiated it.
pub(crate) struct Handover<'a> {
    pub shared: &'a Shared,
    pub id: AssocId,
    pub source: SocketAddr,
    pub writer: &'a Mutex<BoxWrite>,
    pub activity: &'a Activity,
    pub contexts: &'a Contexts,
    pub firewall: Level,
    pub client_accepts: u32,
    pub calling_ae: String,
    pub hook: Arc<dyn StoreHook>,
}

impl<'a> VaultSide<'a> {
    /// The vault's side of an association a relay negotiated (its contexts, its client
    /// writer), from the next request on; [`VaultSide::resume`] takes in-flight C-STOREs.
    pub(crate) fn taking_over(h: Handover<'a>) -> Self {
        VaultSide {
            shared: h.shared,
            id: h.id,
            source: h.source,
            writer: h.writer,
            activity: h.activity,
            contexts: h.contexts,
            firewall: h.firewall,
            client_accepts: h.client_accepts,
            calling_ae: h.calling_ae,
            receiving: None,
            from_client: 0,
            hook: Some(h.hook),
        }
    }

    /// A C-STORE the relay was forwarding when its upstream was lost: begun like any other;
    /// what the client sent of its data set so far follows through [`Session::data`].
    pub(crate) fn begin_resumed(&mut self, store: (u8, u16, &str, &str)) {
        let (context_id, message_id, sop_class, sop_instance) = store;
        self.begin_store_parts(context_id, message_id, sop_class, sop_instance);
    }

    /// The C-STORE being received cannot be stored after all: the vault keeps nothing of it,
    /// the rest of its data set is dropped, the client gets `code` after its last fragment.
    pub(crate) fn refuse_current(&mut self, code: u16, comment: String) {
        if let Some(r) = self.receiving.as_mut() {
            r.pending = None;
            r.checking = None;
            r.held_back = Some((code, comment));
        }
    }

    /// Answers the client (a command set on `context_id`).
    pub(crate) async fn answer(&mut self, context_id: u8, rsp: &[u8]) -> Result<(), VaultEnd> {
        let mut buf = Vec::with_capacity(rsp.len() + 12);
        push_command(&mut buf, context_id, rsp, self.client_accepts);
        let idle = self.shared.settings.idle_timeout;
        if write_timed(&mut *self.writer.lock().await, &buf, idle)
            .await
            .is_err()
        {
            return Err(VaultEnd::Gone {
                why: "client lost while answering".into(),
            });
        }
        self.activity.touch();
        Ok(())
    }

    /// A C-STORE the gate passed: the instance is begun in the vault.
    fn begin_store(&mut self, context_id: u8, request: &Request) {
        let class = request
            .sop_class
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default();
        let instance = request
            .sop_instance
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default();
        self.begin_store_parts(context_id, request.message_id, &class, &instance);
    }

    fn begin_store_parts(
        &mut self,
        context_id: u8,
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
    ) {
        let ts = self
            .contexts
            .get(context_id)
            .map(|(_, t)| t.to_string())
            .unwrap_or_default();
        let mut r = Receiving {
            message_id,
            sop_class: sop_class.to_string(),
            sop_instance: sop_instance.to_string(),
            context_id,
            pending: None,
            error: None,
            bytes: 0,
            checking: TransferSyntax::from_uid(&ts)
                .ok()
                .map(|t| Validator::new(&t, Limits::GATEWAY, self.firewall)),
            refused: None,
            held_back: None,
        };
        if let Some(Err(e)) = self.hook.as_ref().map(|h| h.admit(self.id)) {
            // Refused before a byte is stored (quota, disk high-water mark).
            r.checking = None;
            r.held_back = Some(e);
            self.receiving = Some(r);
            return;
        }
        if let (Ok(c), Ok(i), Ok(t)) = (Uid::new(sop_class), Uid::new(sop_instance), Uid::new(&ts))
        {
            match self
                .shared
                .vault
                .as_ref()
                .map(|v| v.begin(&c, &i, &t, &self.calling_ae))
            {
                Some(Ok(p)) => r.pending = Some(p),
                Some(Err(e)) => r.error = Some(e),
                None => {}
            }
        }
        self.receiving = Some(r);
    }
}

impl Session for VaultSide<'_> {
    type End = VaultEnd;

    async fn received(&mut self, frame: &Frame) -> Result<(), VaultEnd> {
        self.from_client += frame.bytes.len() as u64;
        Ok(())
    }

    async fn read_failed(&mut self, e: IoError) -> VaultEnd {
        match e {
            IoError::Read(ReadError::Frame(e)) => VaultEnd::peer(e.abort_reason(), e.to_string()),
            IoError::Idle(d) => VaultEnd::Abort {
                reason: AbortReason::NotSpecified,
                blame: Blame::Local,
                why: format!("idle for {d:?}"),
            },
            e => VaultEnd::Gone {
                why: format!("client connection lost: {e}"),
            },
        }
    }

    async fn control(&mut self, frame: Frame) -> Result<(), VaultEnd> {
        match frame.ty {
            PduType::ReleaseRq => {
                let idle = self.shared.settings.idle_timeout;
                let mut w = self.writer.lock().await;
                let _ = write_timed(&mut *w, &RELEASE_RP, idle).await;
                self.shared.bus.emit(Event::AssociationReleased {
                    assoc: self.id,
                    bytes_from_client: self.from_client,
                    bytes_from_upstream: 0,
                });
                let _ = w.shutdown().await;
                Err(VaultEnd::Released)
            }
            PduType::Abort => Err(VaultEnd::Gone {
                why: "A-ABORT from the client".into(),
            }),
            other => {
                let why = format!("unexpected {} from the client", other.name());
                Err(VaultEnd::peer(AbortReason::UnexpectedPdu, why))
            }
        }
    }

    async fn malformed(&mut self, reason: AbortReason, error: String) -> VaultEnd {
        VaultEnd::peer(reason, error)
    }

    async fn data(&mut self, _pdv: usize, data: &[u8], is_last: bool) -> Result<(), VaultEnd> {
        if let Some(r) = self.receiving.as_mut() {
            r.bytes += data.len() as u64;
            let found = r.check(data, is_last);
            if let (Some(first), Level::Log) = (found.first(), self.firewall) {
                self.shared.bus.emit(Event::SecurityAlert {
                    assoc: Some(self.id),
                    kind: AlertKind::MalformedDataSet,
                    source: None,
                    detail: format!(
                        "CStoreRq {} stored (firewall = log): {first} ({} deviation(s))",
                        r.sop_instance,
                        found.len()
                    ),
                });
            }
            if let Some(p) = r.pending.as_mut() {
                if let Err(e) = p.write_chunk(data) {
                    r.error = Some(e);
                    r.pending = None;
                }
            }
        }
        if is_last {
            if let Some(r) = self.receiving.take() {
                let (ctx, rsp) = finish_store(self.shared, self.id, r, self.hook.clone()).await;
                self.answer(ctx, &rsp).await?;
            }
        }
        Ok(())
    }

    async fn judged(
        &mut self,
        context_id: u8,
        _raw: Vec<u8>,
        verdict: Verdict,
    ) -> Result<(), VaultEnd> {
        let shared = self.shared;
        match verdict {
            Verdict::Pass { request, permit } => {
                shared.bus.emit(Event::DimseRequest {
                    assoc: self.id,
                    message_id: request.message_id,
                    command: format!("{:?}", permit.command()),
                    sop_class: request.sop_class.as_ref().map(|u| u.to_string()),
                    sop_instance: request.sop_instance.as_ref().map(|u| u.to_string()),
                    move_destination: None,
                    subject: None,
                    identifier: None,
                });
                let class = request.sop_class.as_ref().map(|u| u.to_string());
                match request.field {
                    CommandField::CEchoRq => {
                        let rsp = encode_response(
                            CommandField::CEchoRq,
                            request.message_id,
                            class.as_deref(),
                            None,
                            status::SUCCESS,
                            None,
                        );
                        self.answer(context_id, &rsp).await
                    }
                    CommandField::CStoreRq => {
                        self.begin_store(context_id, &request);
                        Ok(())
                    }
                    other => {
                        // Contexts for other services are never accepted on a vault route.
                        let (code, comment) = self
                            .hook
                            .as_ref()
                            .and_then(|h| h.other_request())
                            .unwrap_or((
                                status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                                "Radguard vault: operation not supported".into(),
                            ));
                        let rsp = encode_response(
                            other,
                            request.message_id,
                            class.as_deref(),
                            None,
                            code,
                            Some(&comment),
                        );
                        self.answer(context_id, &rsp).await
                    }
                }
            }
            Verdict::Refuse(r) => {
                shared.bus.emit(Event::DimseRefused {
                    assoc: self.id,
                    message_id: r.message_id,
                    command: format!("{:?}", r.field),
                    status: r.status,
                    why: r.comment.clone(),
                });
                shared.bus.emit(Event::SecurityAlert {
                    assoc: Some(self.id),
                    kind: r.alert_kind(),
                    source: Some(self.source),
                    detail: format!(
                        "{:?} refused with 0x{:04X}: {}",
                        r.field,
                        r.status,
                        r.detail().as_deref().unwrap_or(&r.comment)
                    ),
                });
                if r.field != CommandField::CCancelRq {
                    let rsp = encode_response(
                        r.field,
                        r.message_id,
                        r.sop_class.as_deref(),
                        r.sop_instance.as_deref(),
                        r.status,
                        Some(&r.comment),
                    );
                    self.answer(context_id, &rsp).await?;
                }
                if let Some(why) = r.abort_after(shared.settings.on_revoke) {
                    return Err(VaultEnd::Abort {
                        reason: AbortReason::NotSpecified,
                        blame: Blame::Local,
                        why,
                    });
                }
                Ok(())
            }
            Verdict::Abort(why) => Err(VaultEnd::peer(AbortReason::UnexpectedPduParameter, why)),
        }
    }
}

/// Commits a received instance and builds its C-STORE-RSP.
async fn finish_store(
    shared: &Shared,
    assoc: radguard_events::AssocId,
    r: Receiving,
    hook: Option<Arc<dyn StoreHook>>,
) -> (u8, Vec<u8>) {
    if let Some((code, comment)) = &r.held_back {
        shared.bus.emit(Event::DimseRefused {
            assoc,
            message_id: r.message_id,
            command: "CStoreRq".into(),
            status: *code,
            why: comment.clone(),
        });
        let rsp = encode_response(
            CommandField::CStoreRq,
            r.message_id,
            Some(&r.sop_class),
            Some(&r.sop_instance),
            *code,
            Some(comment),
        );
        return (r.context_id, rsp);
    }
    if let Some(v) = &r.refused {
        let comment = format!("Radguard firewall: {}", v.summary());
        let why = format!("data set of {}: {v}", r.sop_instance);
        shared.bus.emit(Event::DimseRefused {
            assoc,
            message_id: r.message_id,
            command: "CStoreRq".into(),
            status: status::CANNOT_UNDERSTAND,
            why: why.clone(),
        });
        shared.bus.emit(Event::SecurityAlert {
            assoc: Some(assoc),
            kind: AlertKind::MalformedDataSet,
            source: None,
            detail: format!(
                "CStoreRq refused with 0x{:04X}: {why}",
                status::CANNOT_UNDERSTAND
            ),
        });
        let rsp = encode_response(
            CommandField::CStoreRq,
            r.message_id,
            Some(&r.sop_class),
            Some(&r.sop_instance),
            status::CANNOT_UNDERSTAND,
            Some(&comment),
        );
        return (r.context_id, rsp);
    }
    let outcome: Result<StoreOutcome, (u16, String)> = match (r.pending, r.error) {
        (Some(p), None) => match tokio::task::spawn_blocking(move || {
            let o = p.commit()?;
            // The hook runs after the instance is durable and before the client's answer
            // (a hold route queues it here: success means stored and queued).
            let after = match (&o, &hook) {
                (StoreOutcome::Stored(i) | StoreOutcome::DuplicateIdentical(i), Some(h)) => {
                    h.stored(assoc, i)
                }
                _ => Ok(()),
            };
            Ok::<_, radguard_vault::VaultError>((o, after))
        })
        .await
        {
            Ok(Ok((o, Ok(())))) => Ok(o),
            Ok(Ok((_, Err(e)))) => Err(e),
            Ok(Err(e)) => Err((e.dimse_status(), e.to_string())),
            Err(e) => Err((status::PROCESSING_FAILURE, e.to_string())),
        },
        (_, Some(e)) => Err((e.dimse_status(), e.to_string())),
        (None, None) => Err((
            status::PROCESSING_FAILURE,
            "the instance could not be started".to_string(),
        )),
    };
    // Every newly stored instance is scanned (radguard-media) as the vault holds it: hidden
    // executables, malformed structure. Findings raise a SecurityAlert; the instance stays in the
    // write-once vault (its preamble is already zeroed) and the sender's success stands, since
    // the image itself was stored as sent.
    if let Ok(StoreOutcome::Stored(i)) = &outcome {
        let path = i.path.clone();
        let report = tokio::task::spawn_blocking(move || {
            radguard_media::scan_path(&path, &radguard_media::ScanOptions::default())
        })
        .await;
        if let Ok(report) = report {
            if report.verdict != radguard_media::Verdict::Clean {
                let detail: Vec<String> = report
                    .findings
                    .iter()
                    .take(5)
                    .map(|f| f.message.clone())
                    .collect();
                shared.bus.emit(Event::SecurityAlert {
                    assoc: Some(assoc),
                    kind: AlertKind::ProtocolViolation,
                    source: None,
                    detail: format!(
                        "vault instance {} scanned {:?}: {}",
                        r.sop_instance,
                        report.verdict,
                        detail.join("; ")
                    ),
                });
            }
        }
    }
    let subject = match &outcome {
        Ok(o) => {
            let i = o.instance();
            Some(radguard_events::Subject {
                patient_id: i.patient_id.clone(),
                patient_name: None,
                study_uid: i.study_uid.clone(),
                series_uid: i.series_uid.clone(),
                accession_number: None,
            })
        }
        Err(_) => None,
    };
    let (status_code, comment, sha, vo) = match &outcome {
        Ok(o @ StoreOutcome::Stored(i)) => (
            o.dimse_status(),
            None,
            Some(i.sha256.clone()),
            VaultOutcome::Stored,
        ),
        Ok(o @ StoreOutcome::DuplicateIdentical(i)) => (
            o.dimse_status(),
            None,
            Some(i.sha256.clone()),
            VaultOutcome::DuplicateIdentical,
        ),
        Ok(
            o @ StoreOutcome::Conflict {
                existing,
                new_sha256,
            },
        ) => {
            // Refused: the vault answers Duplicate SOP Instance (0x0111) and keeps the first.
            shared.bus.emit(Event::OverwriteAttempt {
                assoc,
                store: IntegrityStore::Vault,
                sop_instance: r.sop_instance.clone(),
                kept: existing.sha256.clone(),
                arrived: new_sha256.clone(),
                refused: true,
            });
            (
                o.dimse_status(),
                Some("Radguard vault: instance exists with different content".to_string()),
                Some(new_sha256.clone()),
                VaultOutcome::Conflict,
            )
        }
        Err((code, e)) => (
            *code,
            Some(format!("Radguard vault: {e}")),
            None,
            VaultOutcome::Failed,
        ),
    };
    shared.bus.emit(Event::InstanceStored {
        assoc,
        sop_instance: r.sop_instance.clone(),
        subject: subject.clone(),
        sha256: sha,
        bytes: r.bytes,
        outcome: vo,
    });
    shared.bus.emit(Event::DimseResponse {
        assoc,
        message_id: r.message_id,
        command: "CStoreRsp".into(),
        status: status_code,
        from: Blame::Local,
        sop_class: Some(r.sop_class.clone()),
        sop_instance: Some(r.sop_instance.clone()),
        subject,
        sub_operations: None,
        bytes: None,
    });
    let rsp = encode_response(
        CommandField::CStoreRq,
        r.message_id,
        Some(&r.sop_class),
        Some(&r.sop_instance),
        status_code,
        comment.as_deref(),
    );
    (r.context_id, rsp)
}
