//! The gateway as the SCP for routes whose destination is the built-in vault: it accepts the
//! allowed contexts itself, answers C-ECHO, and streams each C-STORE data set into the vault,
//! answering success only after the instance is on disk (fsynced and indexed).

use dicom_ul::pdu::Pdu;
use radguard_dicom::assembler::{Assembler, Step};
use radguard_dicom::dimse::encode_response;
use radguard_dicom::limits::Limits;
use radguard_dicom::pdu::{pdvs, AbortReason, PduType, RELEASE_RP};
use radguard_dicom::ts::TransferSyntax;
use radguard_dicom::types::{status, uids};
use radguard_dicom::validate::{Level, Validator, Violation};
use radguard_dicom::{CommandField, Uid};
use radguard_events::{AlertKind, Blame, Event, VaultOutcome};
use radguard_policy::OnRevoke;
use radguard_vault::{PendingInstance, StoreOutcome};
use tokio::io::AsyncWriteExt;

use crate::conn::ClientConn;
use crate::establish::Admitted;
use crate::gate::{judge, Contexts, Verdict};
use crate::io::{push_command, read_idle, write_timed, Activity, IoError};
use crate::negotiate::local_ac;
use crate::reader::ReadError;
use crate::shared::Shared;

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

pub async fn run(shared: &Shared, mut conn: ClientConn, adm: Admitted) {
    let vault = shared.vault.clone();
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
    if write_timed(&mut conn.writer, &bytes, idle).await.is_err() {
        return;
    }
    shared.bus.emit(Event::AssociationAccepted {
        assoc: conn.id,
        peer: adm.admission.peer_name().to_string(),
        route: if contexts.is_empty() {
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
    let mut asm = Assembler::new();
    let mut receiving: Option<Receiving> = None;
    let mut from_client = 0u64;
    let calling_ae = adm.admission.calling_ae().to_string();
    loop {
        let frame = match read_idle(&mut conn.reader, &activity, idle).await {
            Ok(f) => f,
            Err(IoError::Read(ReadError::Frame(e))) => {
                conn.abort(shared, e.abort_reason(), Blame::Peer, e.to_string())
                    .await;
                return;
            }
            Err(IoError::Idle(d)) => {
                let why = format!("idle for {d:?}");
                conn.abort(shared, AbortReason::NotSpecified, Blame::Local, why)
                    .await;
                return;
            }
            Err(e) => {
                shared.bus.emit(Event::AssociationAborted {
                    assoc: conn.id,
                    blame: Blame::Peer,
                    why: format!("client connection lost: {e}"),
                });
                return;
            }
        };
        from_client += frame.bytes.len() as u64;
        match frame.ty {
            PduType::PData => {}
            PduType::ReleaseRq => {
                let _ = write_timed(&mut conn.writer, &RELEASE_RP, idle).await;
                shared.bus.emit(Event::AssociationReleased {
                    assoc: conn.id,
                    bytes_from_client: from_client,
                    bytes_from_upstream: 0,
                });
                let _ = conn.writer.shutdown().await;
                return;
            }
            PduType::Abort => {
                shared.bus.emit(Event::AssociationAborted {
                    assoc: conn.id,
                    blame: Blame::Peer,
                    why: "A-ABORT from the client".into(),
                });
                return;
            }
            other => {
                let why = format!("unexpected {} from the client", other.name());
                conn.abort(shared, AbortReason::UnexpectedPdu, Blame::Peer, why)
                    .await;
                return;
            }
        }
        let items = match pdvs(frame.body()) {
            Ok(v) => v,
            Err(e) => {
                conn.abort(shared, e.abort_reason(), Blame::Peer, e.to_string())
                    .await;
                return;
            }
        };
        for pdv in items {
            let step = match asm.push(pdv) {
                Ok(s) => s,
                Err(e) => {
                    let why = e.to_string();
                    conn.abort(
                        shared,
                        AbortReason::UnexpectedPduParameter,
                        Blame::Peer,
                        why,
                    )
                    .await;
                    return;
                }
            };
            let mut answer: Option<(u8, Vec<u8>)> = None;
            let mut revoke = false;
            match step {
                Step::CommandPartial => {}
                Step::Data { data, is_last, .. } => {
                    if let Some(r) = receiving.as_mut() {
                        r.bytes += data.len() as u64;
                        let found = r.check(data, is_last);
                        if let (Some(first), Level::Log) = (found.first(), firewall) {
                            shared.bus.emit(Event::SecurityAlert {
                                assoc: Some(conn.id),
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
                        if let Some(r) = receiving.take() {
                            let rsp = finish_store(shared, conn.id, r).await;
                            answer = Some(rsp);
                        }
                    }
                }
                Step::Command {
                    context_id,
                    command,
                    ..
                } => match judge(
                    // The policy in force now: revocation reaches running associations.
                    &shared.policy_now(),
                    &adm.admission,
                    &contexts,
                    context_id,
                    &command,
                ) {
                    Verdict::Pass { request, permit } => {
                        shared.bus.emit(Event::DimseRequest {
                            assoc: conn.id,
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
                                answer = Some((context_id, rsp));
                            }
                            CommandField::CStoreRq => {
                                let ts = contexts
                                    .get(context_id)
                                    .map(|(_, t)| t.to_string())
                                    .unwrap_or_default();
                                let mut r = Receiving {
                                    message_id: request.message_id,
                                    sop_class: class.clone().unwrap_or_default(),
                                    sop_instance: request
                                        .sop_instance
                                        .as_ref()
                                        .map(|u| u.to_string())
                                        .unwrap_or_default(),
                                    context_id,
                                    pending: None,
                                    error: None,
                                    bytes: 0,
                                    checking: TransferSyntax::from_uid(&ts)
                                        .ok()
                                        .map(|t| Validator::new(&t, Limits::GATEWAY, firewall)),
                                    refused: None,
                                };
                                if let (Some(c), Some(i), Ok(t)) = (
                                    request.sop_class.as_ref(),
                                    request.sop_instance.as_ref(),
                                    Uid::new(&ts),
                                ) {
                                    match vault.as_ref().map(|v| v.begin(c, i, &t, &calling_ae)) {
                                        Some(Ok(p)) => r.pending = Some(p),
                                        Some(Err(e)) => r.error = Some(e),
                                        None => {}
                                    }
                                }
                                receiving = Some(r);
                            }
                            other => {
                                // Contexts for other services are never accepted on a vault route.
                                let rsp = encode_response(
                                    other,
                                    request.message_id,
                                    class.as_deref(),
                                    None,
                                    status::REFUSED_SOP_CLASS_NOT_SUPPORTED,
                                    Some("Radguard vault: operation not supported"),
                                );
                                answer = Some((context_id, rsp));
                            }
                        }
                    }
                    Verdict::Refuse {
                        field,
                        message_id,
                        sop_class,
                        sop_instance,
                        status,
                        comment,
                        revoked,
                    } => {
                        revoke |= revoked && shared.settings.on_revoke == OnRevoke::Abort;
                        let comment_alert = if revoked {
                            format!(
                                "{comment} (the peer is no longer admitted by the policy in force)"
                            )
                        } else {
                            comment.clone()
                        };
                        shared.bus.emit(Event::DimseRefused {
                            assoc: conn.id,
                            message_id,
                            command: format!("{field:?}"),
                            status,
                            why: comment.clone(),
                        });
                        shared.bus.emit(Event::SecurityAlert {
                            assoc: Some(conn.id),
                            kind: AlertKind::NotAuthorized,
                            source: Some(conn.source),
                            detail: format!(
                                "{field:?} refused with 0x{status:04X}: {comment_alert}"
                            ),
                        });
                        if field != CommandField::CCancelRq {
                            let rsp = encode_response(
                                field,
                                message_id,
                                sop_class.as_deref(),
                                sop_instance.as_deref(),
                                status,
                                Some(&comment),
                            );
                            answer = Some((context_id, rsp));
                        }
                    }
                    Verdict::Abort(why) => {
                        conn.abort(
                            shared,
                            AbortReason::UnexpectedPduParameter,
                            Blame::Peer,
                            why,
                        )
                        .await;
                        return;
                    }
                },
            }
            if let Some((ctx, rsp)) = answer {
                let mut buf = Vec::with_capacity(rsp.len() + 12);
                push_command(&mut buf, ctx, &rsp, adm.client_accepts);
                if write_timed(&mut conn.writer, &buf, idle).await.is_err() {
                    shared.bus.emit(Event::AssociationAborted {
                        assoc: conn.id,
                        blame: Blame::Peer,
                        why: "client lost while answering".into(),
                    });
                    return;
                }
                activity.touch();
            }
            if revoke {
                let why = "admission withdrawn by the policy in force (on_revoke = \"abort\")";
                conn.abort(
                    shared,
                    AbortReason::NotSpecified,
                    Blame::Local,
                    why.to_string(),
                )
                .await;
                return;
            }
        }
    }
}

/// Commits a received instance and builds its C-STORE-RSP.
async fn finish_store(
    shared: &Shared,
    assoc: radguard_events::AssocId,
    r: Receiving,
) -> (u8, Vec<u8>) {
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
        (Some(p), None) => match tokio::task::spawn_blocking(move || p.commit()).await {
            Ok(Ok(o)) => Ok(o),
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
        Ok(o @ StoreOutcome::Conflict { new_sha256, .. }) => {
            shared.bus.emit(Event::SecurityAlert {
                assoc: Some(assoc),
                kind: AlertKind::InstanceConflict,
                source: None,
                detail: format!(
                    "SOP Instance {} already in the vault with different content",
                    r.sop_instance
                ),
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
