//! What every connection task shares: settings, the live policy and TLS state, the audit
//! switch, the vault and ledger, the event bus, and the three connection budgets (see
//! [`crate::server`] for how they are taken).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use radguard_events::{AssocId, EventBus};
use radguard_ledger::Ledger;
use radguard_policy::{Policy, ServerSettings};
use radguard_vault::Vault;
use tokio::sync::{watch, Semaphore};

use crate::tls::TlsState;

/// Everything an association task needs, shared read-only (policy through a watch channel so
/// it can be swapped live).
pub struct Shared {
    pub settings: ServerSettings,
    pub policy: watch::Receiver<Policy>,
    /// TLS configurations in force (swapped with the policy on reload).
    pub tls: watch::Receiver<Arc<TlsState>>,
    /// `false` while the audit trail cannot be written: new associations are then refused
    /// with a transient A-ASSOCIATE-RJ (2/3/2) rather than relayed unaudited.
    pub admit: watch::Receiver<bool>,
    pub vault: Option<Arc<Vault>>,
    /// The integrity ledger (routes with `origin = true` record into it).
    pub ledger: Option<Arc<Ledger>>,
    /// This gateway's name in ledger entries.
    pub gateway_id: String,
    pub bus: EventBus,
    next_id: AtomicU64,
    /// `max_associations`: held by admitted associations.
    pub(crate) global: Arc<Semaphore>,
    /// `max_connections`: held by every open connection.
    pub(crate) connections: Arc<Semaphore>,
    /// Connections beyond the caps still get an RJ, but only this many at a time.
    pub(crate) rejecting: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
}

/// Holds one slot of the per-peer count; released on drop.
pub struct PeerSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.shared.per_peer.lock() {
            if let Some(n) = map.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

impl Shared {
    /// The policy in force now (a reload swaps it): every decision about a new request is
    /// taken under it, so revocation reaches running associations.
    pub fn policy_now(&self) -> Policy {
        self.policy.borrow().clone()
    }

    pub fn new(
        settings: ServerSettings,
        policy: watch::Receiver<Policy>,
        tls: watch::Receiver<Arc<TlsState>>,
        admit: watch::Receiver<bool>,
        vault: Option<Arc<Vault>>,
        ledger: Option<(Arc<Ledger>, String)>,
        bus: EventBus,
    ) -> Arc<Self> {
        let (ledger, gateway_id) = match ledger {
            Some((l, id)) => (Some(l), id),
            None => (None, String::new()),
        };
        let cap = settings.max_associations;
        Arc::new(Shared {
            connections: Arc::new(Semaphore::new(settings.max_connections.max(cap))),
            settings,
            policy,
            tls,
            admit,
            vault,
            ledger,
            gateway_id,
            bus,
            next_id: AtomicU64::new(1),
            global: Arc::new(Semaphore::new(cap)),
            rejecting: Arc::new(Semaphore::new(cap.clamp(16, 1024))),
            per_peer: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn next_id(&self) -> AssocId {
        AssocId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn take_peer_slot(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut map = self.per_peer.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.settings.max_associations_per_peer {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            shared: self.clone(),
            ip,
        })
    }

    /// Associations running now.
    pub fn running(&self) -> usize {
        self.settings
            .max_associations
            .saturating_sub(self.global.available_permits())
    }
}
