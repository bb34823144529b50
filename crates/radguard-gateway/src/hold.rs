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

use std::path::PathBuf;
use std::sync::Arc;

use radguard_dicom::types::status;
use radguard_events::{AlertKind, AssocId, Event, EventBus};
use radguard_ledger::{Ledger, LedgerEntry, OnConflict, Timestamp};
use radguard_policy::HoldSettings;
use radguard_vault::queue::{disk_use_percent, HoldQueue, NewHeld};
use radguard_vault::StoredInstance;

use crate::conn::ClientConn;
use crate::establish::Admitted;
use crate::shared::{unix_ms, Shared};
use crate::vault_scp::{self, StoreHook};

/// The queue key of a destination: `AE@host:port`.
pub fn dest_key(upstream_ae: &str, addr: &str) -> String {
    format!("{upstream_ae}@{addr}")
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
    let entry = adm.policy.route_entry(adm.admission.called_ae());
    let (Some(queue), Some(vault), Some(settings)) = (
        shared.hold.get(),
        shared.vault.as_ref(),
        entry.and_then(|r| r.hold),
    ) else {
        return;
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
        dest: dest_key(upstream_ae.as_str(), addr),
        calling_ae: calling.as_str().to_string(),
        data_dir: vault.root().to_path_buf(),
        why_down,
    };
    vault_scp::run_with(shared, conn, adm, Some(Arc::new(hook))).await
}
