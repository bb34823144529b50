//! What every connection task shares: settings, the live policy and TLS state, the audit
//! switch, the vault and ledger, the event bus, the three connection budgets (see
//! [`crate::server`] for how they are taken), the block list in force and the registry of
//! running associations it can cut.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use radguard_block::{Action, BlockList, Entry, Facts, Subject};

use radguard_events::{AssocId, EventBus};
use radguard_ledger::Ledger;
use radguard_policy::{Policy, ServerSettings};
use radguard_vault::Vault;
use tokio::sync::{watch, Semaphore};

use crate::guard::Guard;
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
    /// The hold queue (`radguard serve` opens it in the data folder); routes with
    /// `on_upstream_down = "hold"` refuse as usual while it is not set.
    pub hold: std::sync::OnceLock<Arc<radguard_vault::queue::HoldQueue>>,
    /// Wakes the forwarders (an instance was queued, an operator asked for a retry).
    pub hold_wake: Arc<tokio::sync::Notify>,
    /// Hold destinations (`AE@host:port`) whose forwarder could not connect at its last
    /// attempt: new associations of their routes are held at once, without waiting out
    /// `connect_timeout` again. Cleared by the forwarder's next delivery.
    pub hold_down: Mutex<std::collections::HashSet<String>>,
    next_id: AtomicU64,
    /// `max_associations`: held by admitted associations.
    pub(crate) global: Arc<Semaphore>,
    /// `max_connections`: held by every open connection.
    pub(crate) connections: Arc<Semaphore>,
    /// Connections beyond the caps still get an RJ, but only this many at a time.
    pub(crate) rejecting: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    /// The block list in force (`radguard serve` publishes each new one): read once per
    /// association request, nothing per PDU.
    blocks: RwLock<Arc<BlockList>>,
    /// Associations admitted and running, with what a block can name and how to cut them.
    running_assocs: Arc<Mutex<HashMap<AssocId, RunningAssoc>>>,
    /// Admissions per throttle entry (by id) in the last minute.
    throttled: Mutex<HashMap<u64, VecDeque<Instant>>>,
    /// The scan-protocol and dose guard (`[guard]`; its defaults until `set_guard`).
    guard: RwLock<Arc<Guard>>,
}

/// A running association as the block list sees it.
struct RunningAssoc {
    ip: IpAddr,
    calling_ae: String,
    cert_sha256: Option<String>,
    cut: watch::Sender<Option<String>>,
}

/// An admitted association's place in the registry: removed on drop; [`Registration::cut`]
/// resolves when a block cuts the association.
pub struct Registration {
    id: AssocId,
    registry: Arc<Mutex<HashMap<AssocId, RunningAssoc>>>,
    cut: watch::Receiver<Option<String>>,
}

impl Registration {
    /// Waits until a block cuts this association; returns why. Pending forever otherwise.
    pub async fn cut(&self) -> String {
        let mut rx = self.cut.clone();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(w) => w,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.registry.lock() {
            m.remove(&self.id);
        }
    }
}

/// What the block list says of an association request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockVerdict {
    Pass,
    /// Refused: a block in force.
    Blocked(Entry),
    /// Refused: past its throttle's rate.
    Throttled(Entry),
}

/// Milliseconds since the Unix epoch (the block list's clock).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A certificate fingerprint as the block list keeps it: hex, lowercase, without colons.
pub fn cert_key(sha256_hex: &str) -> String {
    sha256_hex.replace(':', "").to_ascii_lowercase()
}

fn subject_matches(s: &Subject, a: &RunningAssoc) -> bool {
    match s {
        Subject::Address(ip) => *ip == a.ip,
        Subject::CallingAe(ae) => ae.as_str() == a.calling_ae.trim_matches(' '),
        Subject::Certificate(c) => a.cert_sha256.as_deref() == Some(c.as_str()),
    }
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
            hold: std::sync::OnceLock::new(),
            hold_wake: Arc::new(tokio::sync::Notify::new()),
            hold_down: Mutex::new(std::collections::HashSet::new()),
            next_id: AtomicU64::new(1),
            global: Arc::new(Semaphore::new(cap)),
            rejecting: Arc::new(Semaphore::new(cap.clamp(16, 1024))),
            per_peer: Mutex::new(HashMap::new()),
            blocks: RwLock::new(Arc::new(BlockList::new())),
            running_assocs: Arc::new(Mutex::new(HashMap::new())),
            throttled: Mutex::new(HashMap::new()),
            guard: RwLock::new(Arc::new(Guard::new(Default::default()))),
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

    /// Puts a new block list in force for the association requests from now on (running
    /// associations are cut with [`Shared::cut`]).
    /// The guard in force (set at start from `[guard]`).
    pub fn set_guard(&self, guard: Guard) {
        if let Ok(mut g) = self.guard.write() {
            *g = Arc::new(guard);
        }
    }

    /// The guard in force now.
    pub fn guard(&self) -> Arc<Guard> {
        match self.guard.read() {
            Ok(g) => g.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    pub fn set_blocks(&self, list: Arc<BlockList>) {
        if let Ok(mut t) = self.throttled.lock() {
            t.retain(|id, _| list.get(*id).is_some());
        }
        if let Ok(mut b) = self.blocks.write() {
            *b = list;
        }
    }

    /// The block list in force.
    pub fn blocks(&self) -> Arc<BlockList> {
        self.blocks
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|_| Arc::new(BlockList::new()))
    }

    /// Cuts every running association of `subject` (A-ABORT to the client and the upstream);
    /// returns how many.
    pub fn cut(&self, subject: &Subject, why: &str) -> usize {
        let Ok(m) = self.running_assocs.lock() else {
            return 0;
        };
        let mut n = 0;
        for a in m.values().filter(|a| subject_matches(subject, a)) {
            let _ = a.cut.send(Some(why.to_string()));
            n += 1;
        }
        n
    }

    /// Registers an association about to be judged against the block list (registered first,
    /// checked second: a block published in between cuts it instead of missing it).
    pub(crate) fn register(
        &self,
        id: AssocId,
        ip: IpAddr,
        calling_ae: &str,
        cert_sha256: Option<String>,
    ) -> Registration {
        let (tx, rx) = watch::channel(None);
        if let Ok(mut m) = self.running_assocs.lock() {
            m.insert(
                id,
                RunningAssoc {
                    ip,
                    calling_ae: calling_ae.to_string(),
                    cert_sha256,
                    cut: tx,
                },
            );
        }
        Registration {
            id,
            registry: self.running_assocs.clone(),
            cut: rx,
        }
    }

    /// The block list's verdict on an association request (one lookup per subject kind; a
    /// throttle counts the admissions it lets through in a sliding minute).
    pub fn check_blocks(&self, facts: &Facts<'_>) -> BlockVerdict {
        let list = self.blocks();
        let Some(e) = list.matching(facts, unix_ms()) else {
            return BlockVerdict::Pass;
        };
        match e.action {
            Action::Block => BlockVerdict::Blocked(e.clone()),
            Action::Throttle { per_minute } => {
                let Ok(mut t) = self.throttled.lock() else {
                    return BlockVerdict::Pass;
                };
                let now = Instant::now();
                let q = t.entry(e.id).or_default();
                while q
                    .front()
                    .is_some_and(|t0| now.duration_since(*t0) >= Duration::from_secs(60))
                {
                    q.pop_front();
                }
                if q.len() >= per_minute as usize {
                    BlockVerdict::Throttled(e.clone())
                } else {
                    q.push_back(now);
                    BlockVerdict::Pass
                }
            }
        }
    }
}
