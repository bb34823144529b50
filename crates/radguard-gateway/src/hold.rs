//! Hold routes (`on_upstream_down = "hold"`): when the upstream cannot be reached at
//! association time, the association is accepted as the vault route accepts it
//! ([`crate::vault_scp`]); each C-STORE is stored in the vault (firewall, fsync, index),
//! fingerprinted (recorded in the integrity ledger on origin routes), queued durably for its
//! destination, and only then answered success. [`crate::forward`] delivers the queue.
//!
//! Bounds, checked before a C-STORE's data set is stored: the route's `hold_quota` (instances
//! waiting) and the data folder's disk high-water mark. Past either the client gets 0xA700
//! (Refused: Out of Resources, PS3.4 B.2.3) and an alert, so the disk never fills with held
//! images (a full disk would stop the vault, the ledger and the audit trail with it).
//!
//! When the upstream is lost mid-association (the relay saw the transport fail or an A-ABORT
//! from it), the relay hands the association over ([`resume_all`]): what it kept of the
//! C-STOREs not yet answered ([`crate::inflight`]) is stored and queued here, and the rest of
//! the association is served by the vault SCP's store path with this hook.

use std::path::PathBuf;
use std::sync::Arc;

use radguard_dicom::types::status;
use radguard_events::{AlertKind, AssocId, Event, EventBus};
use radguard_ledger::{Ledger, LedgerEntry, OnConflict, Timestamp};
use radguard_policy::HoldSettings;
use radguard_vault::queue::{disk_use_percent, HoldQueue, NewHeld};
use radguard_vault::StoredInstance;

use radguard_dicom::dimse::encode_response;

use crate::conn::ClientConn;
use crate::establish::Admitted;
use crate::inflight::{Buffered, Pending};
use crate::session::Session;
use crate::shared::{unix_ms, Shared};
use crate::vault_scp::{self, StoreHook, VaultEnd, VaultSide};

/// The queue key of a destination: `AE@host:port`, or `AE@tls://host:port` for a route whose
/// upstream speaks TLS. The scheme is kept with each queued instance, so an instance accepted
/// on a TLS route never leaves in clear text, whatever the config says later
/// ([`crate::forward`] refuses to send it without TLS settings).
pub fn dest_key(upstream_ae: &str, addr: &str, tls: bool) -> String {
    if tls {
        format!("{upstream_ae}@{TLS_SCHEME}{addr}")
    } else {
        format!("{upstream_ae}@{addr}")
    }
}

/// How a TLS destination's address begins in its queue key.
const TLS_SCHEME: &str = "tls://";

/// A queue key's parts: upstream AE title, `host:port`, and whether it is a TLS destination.
pub fn split_dest(dest: &str) -> Option<(&str, &str, bool)> {
    let (ae, rest) = dest.rsplit_once('@')?;
    Some(match rest.strip_prefix(TLS_SCHEME) {
        Some(addr) => (ae, addr, true),
        None => (ae, rest, false),
    })
}

/// The queue key of this association's route: its upstream, over TLS when the route has `tls`.
pub fn route_dest(adm: &Admitted, upstream_ae: &str, addr: &str) -> String {
    let tls = adm
        .policy
        .route_entry(adm.admission.called_ae())
        .is_some_and(|r| r.tls.is_some());
    dest_key(upstream_ae, addr, tls)
}

/// Whether this association's route holds when its upstream is down (and the gateway can).
pub fn holds(shared: &Shared, adm: &Admitted) -> bool {
    shared.hold.get().is_some()
        && shared.vault.is_some()
        && adm
            .policy
            .route_entry(adm.admission.called_ae())
            .is_some_and(|r| r.hold.is_some())
}

/// Why this hold route's association is held without trying its upstream, if it is: the
/// destination's forwarder could not connect at its last attempt (known down), or instances
/// still wait for the destination and the association only stores — sent straight to the
/// archive, it would overtake them (the order of arrival is kept per destination). An
/// association proposing anything else (a query, a retrieve, DIMSE-N) goes to the archive while
/// it is up: the vault cannot answer those.
pub fn held_at_once(
    shared: &Shared,
    adm: &Admitted,
    addr: &str,
    upstream_ae: &radguard_dicom::AeTitle,
) -> Option<String> {
    if !holds(shared, adm) {
        return None;
    }
    let dest = route_dest(adm, upstream_ae.as_str(), addr);
    if shared.hold_down.lock().is_ok_and(|d| d.contains(&dest)) {
        return Some(format!(
            "upstream {addr} known down (the forwarder's last connect failed)"
        ));
    }
    let only_stores = adm.rq.presentation_contexts.iter().all(|p| {
        let a = p.abstract_syntax.trim_end_matches('\0');
        a == VERIFICATION || radguard_policy::sop::is_storage_sop_class(a)
    });
    if !only_stores {
        return None;
    }
    let waiting = shared
        .hold
        .get()
        .and_then(|q| q.waiting_for_dest(&dest).ok())
        .unwrap_or(0);
    (waiting > 0)
        .then(|| format!("{waiting} instance(s) still wait for {dest}: held behind them, in order"))
}

/// The Verification SOP Class (PS3.4 A.4).
const VERIFICATION: &str = "1.2.840.10008.1.1";

/// What a hold route adds to each C-STORE the vault SCP receives.
struct HoldHook {
    queue: Arc<HoldQueue>,
    bus: EventBus,
    wake: Arc<tokio::sync::Notify>,
    /// The ledger, on origin routes: the fingerprint taken at acceptance is recorded there.
    ledger: Option<(Arc<Ledger>, String, OnConflict)>,
    settings: HoldSettings,
    route: String,
    dest: String,
    calling_ae: String,
    data_dir: PathBuf,
    why_down: String,
    /// The upstream was lost mid-association (the relay handed over): requests other than
    /// C-ECHO and C-STORE cannot be served.
    taken_over: bool,
}

impl HoldHook {
    fn refuse(&self, assoc: AssocId, comment: String) -> Result<(), (u16, String)> {
        self.bus.emit(Event::SecurityAlert {
            assoc: Some(assoc),
            kind: AlertKind::ResourceExhausted,
            source: None,
            detail: format!(
                "C-STORE refused with 0xA700 on hold route {}: {comment}",
                self.route
            ),
        });
        Err((status::OUT_OF_RESOURCES, comment))
    }
}

impl StoreHook for HoldHook {
    fn describe(&self, called_ae: &str) -> String {
        format!("{called_ae} -> held for {} ({})", self.dest, self.why_down)
    }

    fn admit(&self, assoc: AssocId) -> Result<(), (u16, String)> {
        match self.queue.waiting_for_route(&self.route) {
            Ok(n) if n >= self.settings.quota => {
                return self.refuse(
                    assoc,
                    format!(
                        "Radguard hold: {n} instances already wait for {} (hold_quota {})",
                        self.dest, self.settings.quota
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => return self.refuse(assoc, format!("Radguard hold: queue unreadable: {e}")),
        }
        match disk_use_percent(&self.data_dir) {
            Ok(p) if p >= self.settings.high_water_percent => self.refuse(
                assoc,
                format!(
                    "Radguard hold: disk {p}% full (hold_high_water_percent {})",
                    self.settings.high_water_percent
                ),
            ),
            Ok(_) => Ok(()),
            Err(e) => self.refuse(assoc, format!("Radguard hold: disk use unknown: {e}")),
        }
    }

    fn other_request(&self) -> Option<(u16, String)> {
        // PS3.4 C.4.1.1.4 / C.4.2.1.5 / C.4.3.1.4: 0xA700-class Refused: Out of Resources;
        // nothing of a query or retrieve can be answered while the archive is unreachable.
        self.taken_over.then(|| {
            (
                status::OUT_OF_RESOURCES,
                format!("Radguard hold: {} unreachable", self.dest),
            )
        })
    }

    fn stored(&self, assoc: AssocId, i: &StoredInstance) -> Result<(), (u16, String)> {
        let failed = |why: String| (status::PROCESSING_FAILURE, format!("Radguard hold: {why}"));
        // The fingerprint the forwarder checks each instance against before sending it.
        let fingerprint = match radguard_ledger::fingerprint_file(&i.path) {
            Ok(f) => Some(f.fingerprint),
            Err(_) => None,
        };
        if let (Some((ledger, gateway_id, on_conflict)), Some(fp)) = (&self.ledger, &fingerprint) {
            let entry = LedgerEntry {
                fingerprint: fp.clone(),
                sop_instance_uid: i.sop_instance_uid.clone(),
                time: Timestamp::now(),
                gateway_id: gateway_id.clone(),
                assoc_id: assoc.to_string(),
            };
            let outcome = ledger
                .append_with(entry, *on_conflict)
                .map_err(|e| failed(format!("ledger: {e}")))?;
            if outcome.conflict.is_some() && matches!(on_conflict, OnConflict::Refuse) {
                return Err((
                    status::DUPLICATE_SOP_INSTANCE,
                    "Radguard ledger: instance logged with a different fingerprint".into(),
                ));
            }
        }
        let held = NewHeld {
            dest: self.dest.clone(),
            route: self.route.clone(),
            calling_ae: self.calling_ae.clone(),
            sop_class: i.sop_class_uid.clone(),
            sop_instance: i.sop_instance_uid.clone(),
            transfer_syntax: i.transfer_syntax.clone(),
            path: i.path.clone(),
            sha256: i.sha256.clone(),
            fingerprint: fingerprint.map(|f| f.digest.to_hex()),
            accepted_ms: unix_ms(),
        };
        self.queue
            .enqueue(&held)
            .map_err(|e| failed(format!("queue: {e}")))?;
        let waiting = self.queue.waiting_for_route(&self.route).unwrap_or(0);
        self.bus.emit(Event::HoldQueued {
            assoc,
            route: self.route.clone(),
            dest: self.dest.clone(),
            sop_instance: i.sop_instance_uid.clone(),
            waiting,
        });
        self.wake.notify_waiters();
        Ok(())
    }
}

/// The upstream of a hold route could not be reached: the association is served by the vault
/// SCP, each C-STORE stored and queued for `upstream_ae@addr` before its success.
pub async fn accept(
    shared: &Shared,
    conn: ClientConn,
    adm: Admitted,
    addr: &str,
    calling: &radguard_dicom::AeTitle,
    upstream_ae: &radguard_dicom::AeTitle,
    why_down: String,
) {
    let Some(hook) = hook(shared, &adm, addr, (calling, upstream_ae), why_down, false) else {
        return;
    };
    vault_scp::run_with(shared, conn, adm, Some(hook)).await
}

/// The store hook of a hold route (`None` when the gateway cannot hold: no vault or queue).
pub(crate) fn hook(
    shared: &Shared,
    adm: &Admitted,
    addr: &str,
    (calling, upstream_ae): (&radguard_dicom::AeTitle, &radguard_dicom::AeTitle),
    why_down: String,
    taken_over: bool,
) -> Option<Arc<dyn StoreHook>> {
    let entry = adm.policy.route_entry(adm.admission.called_ae());
    let (Some(queue), Some(vault), Some(settings)) = (
        shared.hold.get(),
        shared.vault.as_ref(),
        entry.and_then(|r| r.hold),
    ) else {
        return None;
    };
    let ledger = match (entry.and_then(|r| r.origin), &shared.ledger) {
        (Some(o), Some(l)) => Some((
            l.clone(),
            shared.gateway_id.clone(),
            if o.refuse_conflicts {
                OnConflict::Refuse
            } else {
                OnConflict::Record
            },
        )),
        _ => None,
    };
    let hook = HoldHook {
        queue: queue.clone(),
        bus: shared.bus.clone(),
        wake: shared.hold_wake.clone(),
        ledger,
        settings,
        route: adm.admission.called_ae().as_str().to_string(),
        dest: route_dest(adm, upstream_ae.as_str(), addr),
        calling_ae: calling.as_str().to_string(),
        data_dir: vault.root().to_path_buf(),
        why_down,
        taken_over,
    };
    Some(Arc::new(hook))
}

/// The relay of a hold route lost its upstream mid-association (`side` is the vault SCP's
/// side of the same association, its hook built with `taken_over`): the C-STOREs forwarded
/// and not answered are stored and queued from the bytes the relay kept, in order, each
/// answered once held; the queries and retrieves not finally answered get 0xA700; then the
/// C-STORE still arriving (`current`) continues into the vault with its next fragment.
pub(crate) async fn resume_all(
    side: &mut VaultSide<'_>,
    stores: Vec<Buffered>,
    pending: Vec<Pending>,
    current: Option<Buffered>,
    dest: &str,
) -> Result<(), VaultEnd> {
    for b in stores {
        resume(side, b).await?;
    }
    for p in pending {
        let rsp = encode_response(
            p.field,
            p.message_id,
            p.sop_class.as_deref(),
            None,
            status::OUT_OF_RESOURCES,
            Some(&format!("Radguard hold: {dest} lost")),
        );
        side.answer(p.context_id, &rsp).await?;
    }
    if let Some(b) = current {
        resume(side, b).await?;
    }
    Ok(())
}

/// One kept C-STORE into the vault side: begun, its bytes so far fed, ended if whole.
async fn resume(side: &mut VaultSide<'_>, b: Buffered) -> Result<(), VaultEnd> {
    let id = b.id.clone();
    let complete = b.complete;
    side.begin_resumed((
        id.context_id,
        id.message_id,
        &id.sop_class,
        &id.sop_instance,
    ));
    let refuse = |side: &mut VaultSide<'_>, why: String| {
        tracing::warn!(sop_instance = %id.sop_instance, "in-flight instance not held: {why}");
        side.refuse_current(status::OUT_OF_RESOURCES, format!("Radguard hold: {why}"));
    };
    match b.failed.clone() {
        Some(why) => refuse(side, why),
        None => match b.read_back() {
            Ok(mut pieces) => loop {
                match pieces.next_piece() {
                    Ok(Some(p)) => side.data(0, &p, false).await?,
                    Ok(None) => break,
                    Err(e) => {
                        refuse(side, format!("reading the kept data set back: {e}"));
                        break;
                    }
                }
            },
            Err(e) => refuse(side, format!("reading the kept data set back: {e}")),
        },
    }
    if complete {
        side.data(0, &[], true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_keys_keep_the_tls_scheme() {
        let plain = dest_key("PACS", "10.0.0.5:104", false);
        let tls = dest_key("PACS", "10.0.0.5:2762", true);
        assert_eq!(plain, "PACS@10.0.0.5:104");
        assert_eq!(tls, "PACS@tls://10.0.0.5:2762");
        assert_eq!(split_dest(&plain), Some(("PACS", "10.0.0.5:104", false)));
        assert_eq!(split_dest(&tls), Some(("PACS", "10.0.0.5:2762", true)));
        // An AE title may hold `@`: the address is after the last one.
        assert_eq!(
            split_dest("A@B@tls://[fd00::5]:2762"),
            Some(("A@B", "[fd00::5]:2762", true))
        );
        assert_eq!(split_dest("no-at-sign"), None);
    }
}
