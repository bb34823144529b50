//! The forwarders of the hold queue ([`crate::hold`]): one tokio task per destination, so a
//! destination that is down or slow never delays another. Each sends its destination's
//! instances in order of arrival over one association per batch (PS3.7 C-STORE as SCU), checks
//! each against the SHA-256 and fingerprint taken at acceptance right before sending it (a
//! file changed in the vault is quarantined, never sent), and removes it from the queue only
//! once the destination answered success or warning. After a failure it waits with capped
//! exponential backoff and jitter (retrying immediately, or all gateways in step, would hammer
//! an archive that is coming back up). A supervisor task starts forwarders for every
//! destination with waiting instances, emits the queue depth and age, and raises an alert for
//! an instance waiting longer than its route's `hold_max_age_secs`.
//!
//! A destination queued over TLS (`AE@tls://host:port`: its route has `tls`) is reached with
//! that route's TLS client configuration (CA, server name, client certificate: the relay's
//! own, [`crate::tls::TlsState`]). If no route in force gives TLS settings for it, or the
//! handshake fails (an archive certificate the route's CA does not trust: a man in the
//! middle), nothing is sent: the attempt counts as failed, the instances stay queued and the
//! backoff applies. A held instance of a TLS route never leaves in clear text.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use dicom_ul::association::CloseSocket;
use dicom_ul::{ClientAssociation, ClientAssociationOptions};
use radguard_events::{AlertKind, Event, EventBus};
use radguard_policy::{HoldSettings, Route};
use radguard_tls::rustls::ClientConfig;
use radguard_vault::queue::{Held, HoldQueue};

use crate::hold::{dest_key, split_dest};
use crate::scu;
use crate::shared::{unix_ms, Shared};

/// Instances sent over one association at most.
const BATCH: usize = 64;
/// How often the supervisor looks at the queue (and emits depth events while any wait).
const TICK: Duration = Duration::from_secs(2);
/// The marker `radguard queue retry` touches: a forwarder in backoff retries at once.
pub const RETRY_MARKER: &str = "hold-retry";

/// Defaults for a destination no route names any more (its instances still leave).
const FALLBACK: HoldSettings = HoldSettings {
    quota: 10_000,
    high_water_percent: 90,
    backoff_base: Duration::from_secs(1),
    backoff_cap: Duration::from_secs(300),
    max_age: Duration::from_secs(3600),
    max_attempts: 5,
};

/// Starts the supervisor (it starts the forwarders). `data_dir` holds the retry marker. Called
/// before the first association.
pub fn spawn(shared: Arc<Shared>, data_dir: PathBuf) {
    // What a previous run kept of in-flight C-STOREs (a kill -9 mid-association): never
    // answered to its client, so nothing to deliver.
    if let Some(v) = shared.vault.as_ref() {
        crate::inflight::clean(&v.root().join(crate::inflight::SPILL_DIR));
    }
    let Some(queue) = shared.hold.get().cloned() else {
        return;
    };
    tokio::spawn(supervise(shared, queue, data_dir));
}

/// The hold settings of the route that names `dest`, in the policy in force.
fn settings_for(shared: &Shared, dest: &str) -> HoldSettings {
    let policy = shared.policy_now();
    policy
        .routes()
        .iter()
        .find_map(|r| match (&r.route, r.hold) {
            (
                Route::Upstream {
                    addr, upstream_ae, ..
                },
                Some(h),
            ) if dest_key(upstream_ae.as_str(), addr, r.tls.is_some()) == dest => Some(h),
            _ => None,
        })
        .unwrap_or(FALLBACK)
}

/// How a forwarder reaches its destination.
#[derive(Clone)]
enum Transport {
    Plain,
    /// TLS with a route's client configuration; the name the archive's certificate must carry.
    Tls(Arc<ClientConfig>, String),
}

/// The transport of `dest` under the policy in force: that of the hold route whose upstream
/// and `tls` make this destination. A destination no hold route names any more (a reload
/// changed the routes while instances waited) leaves over TLS when any route to the same
/// upstream has `tls`; a destination queued over TLS without such a route is not sent at all
/// (the error says why): a held instance of a TLS route never leaves in clear text.
fn transport_for(shared: &Shared, dest: &str) -> Result<Transport, String> {
    let Some((ae, addr, tls)) = split_dest(dest) else {
        return Err(format!("bad destination {dest:?}"));
    };
    let policy = shared.policy_now();
    let state = shared.tls.borrow().clone();
    let mut other = None;
    for r in policy.routes() {
        let Route::Upstream {
            addr: a,
            upstream_ae,
            ..
        } = &r.route
        else {
            continue;
        };
        if a != addr || upstream_ae.as_str() != ae {
            continue;
        }
        let t = match &r.tls {
            None => None,
            Some(t) => match state.upstream.get(&r.called_ae) {
                Some(cfg) => Some(Transport::Tls(cfg.clone(), t.server_name.clone())),
                None => {
                    return Err(format!(
                        "{TLS_FAILED} {dest}: route {} has no TLS client configuration loaded",
                        r.called_ae
                    ))
                }
            },
        };
        if r.hold.is_some() && r.tls.is_some() == tls {
            // The route that queues for this destination decides.
            return Ok(t.unwrap_or(Transport::Plain));
        }
        if other.is_none() {
            other = t;
        }
    }
    match other {
        Some(t) => Ok(t),
        None if tls => Err(format!(
            "{TLS_FAILED} {dest}: no route in force gives TLS settings for it \
             (its instances stay queued: never sent in clear text)"
        )),
        None => Ok(Transport::Plain),
    }
}

async fn supervise(shared: Arc<Shared>, queue: Arc<HoldQueue>, data_dir: PathBuf) {
    let mut running: HashSet<String> = HashSet::new();
    let mut alerted: HashMap<String, u64> = HashMap::new();
    let mut shown: HashSet<String> = HashSet::new();
    loop {
        let q = queue.clone();
        let depths = match tokio::task::spawn_blocking(move || q.depths()).await {
            Ok(Ok(d)) => d,
            _ => Vec::new(),
        };
        // Operators' drops (`radguard queue drop`, gateway running or not) reported once each:
        // the audit trail records who removed which instance.
        let q = queue.clone();
        if let Ok(Ok(drops)) = tokio::task::spawn_blocking(move || q.take_unreported_drops()).await
        {
            for (h, by) in drops {
                shared.bus.emit(Event::HoldDropped {
                    by,
                    dest: h.item.dest,
                    sop_instance: h.item.sop_instance,
                });
            }
        }
        let now = unix_ms();
        let mut seen = HashSet::new();
        for d in &depths {
            seen.insert(d.dest.clone());
            if running.insert(d.dest.clone()) {
                tokio::spawn(forward(
                    shared.clone(),
                    queue.clone(),
                    d.dest.clone(),
                    data_dir.join(RETRY_MARKER),
                ));
            }
            let age_ms = d.oldest_ms.map_or(0, |o| now.saturating_sub(o));
            shared.bus.emit(Event::HoldDepth {
                dest: d.dest.clone(),
                waiting: d.waiting,
                oldest_age_secs: age_ms / 1000,
            });
            let max_age = settings_for(&shared, &d.dest).max_age;
            // One alert per oldest instance that is overdue (not one per tick).
            if let Some(oldest) = d.oldest_ms {
                if u128::from(age_ms) > max_age.as_millis() && alerted.get(&d.dest) != Some(&oldest)
                {
                    alerted.insert(d.dest.clone(), oldest);
                    shared.bus.emit(Event::SecurityAlert {
                        assoc: None,
                        kind: AlertKind::HoldOverdue,
                        source: None,
                        detail: format!(
                            "{} instance(s) held for {}: the oldest has waited {} s (hold_max_age_secs {})",
                            d.waiting,
                            d.dest,
                            age_ms / 1000,
                            max_age.as_secs()
                        ),
                    });
                }
            }
        }
        // A destination whose queue emptied: one last depth event saying so.
        for gone in shown.difference(&seen) {
            shared.bus.emit(Event::HoldDepth {
                dest: gone.clone(),
                waiting: 0,
                oldest_age_secs: 0,
            });
        }
        shown = seen;
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shared.hold_wake.notified() => {}
        }
    }
}

/// Capped exponential backoff with jitter: base × 2^(failures−1), at most the cap, minus up to
/// a quarter at random.
pub fn backoff(s: &HoldSettings, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = s
        .backoff_base
        .saturating_mul(1u32 << exp)
        .min(s.backoff_cap);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // A quarter of the delay, scaled by a value in [0, 1) from the clock's low bits.
    let quarter = raw / 4;
    let jitter = quarter.mul_f64(f64::from(nanos % 1000) / 1000.0);
    raw.saturating_sub(jitter)
}

fn marker_time(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

async fn forward(shared: Arc<Shared>, queue: Arc<HoldQueue>, dest: String, marker: PathBuf) {
    let mut failures: u32 = 0;
    // The last TLS failure alerted (one alert per distinct failure, not one per retry).
    let mut tls_alerted: Option<String> = None;
    loop {
        let (q, d, bus) = (queue.clone(), dest.clone(), shared.bus.clone());
        let r = match transport_for(&shared, &dest) {
            Ok(transport) => {
                let link = Link {
                    timeout: shared.settings.connect_timeout,
                    max_pdu: shared.settings.max_pdu_length,
                    max_attempts: settings_for(&shared, &dest).max_attempts,
                    transport,
                };
                tokio::task::spawn_blocking(move || send_batch(&q, &d, &bus, &link))
                    .await
                    .unwrap_or_else(|e| Err(format!("forwarder task: {e}")))
            }
            Err(why) => Err(why),
        };
        match &r {
            Err(why) if why.starts_with(TLS_FAILED) && tls_alerted.as_ref() != Some(why) => {
                tls_alerted = Some(why.clone());
                tracing::warn!(dest = %dest, "held instances not sent: {why}");
                // As the relay's failed upstream handshake: the archive is not the one the
                // route trusts (or cannot be verified), so nothing leaves.
                shared.bus.emit(Event::SecurityAlert {
                    assoc: None,
                    kind: AlertKind::PeerNotRecognized,
                    source: None,
                    detail: format!("hold forwarder: {why}"),
                });
            }
            Ok(n) if *n > 0 => tls_alerted = None,
            _ => {}
        }
        // New associations of the route are held at once while the destination is known down
        // (its last connect failed); any delivery clears that.
        if let Ok(mut down) = shared.hold_down.lock() {
            match &r {
                Err(why) if why.starts_with(UNREACHABLE) => {
                    down.insert(dest.clone());
                }
                Ok(n) if *n > 0 => {
                    down.remove(&dest);
                }
                _ => {}
            }
        }
        match r {
            Ok(0) => {
                // Nothing waits: sleep until something is queued (or a periodic look).
                failures = 0;
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = shared.hold_wake.notified() => {}
                }
            }
            Ok(_) => failures = 0,
            Err(why) => {
                failures = failures.saturating_add(1);
                let delay = backoff(&settings_for(&shared, &dest), failures);
                shared.bus.emit(Event::HoldRetry {
                    dest: dest.clone(),
                    failures,
                    retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    why,
                });
                // Sleep out the backoff, unless an operator asks for a retry now.
                let before = marker_time(&marker);
                let end = Instant::now() + delay;
                while Instant::now() < end {
                    let step = end
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(500));
                    tokio::time::sleep(step).await;
                    if marker_time(&marker) != before {
                        failures = 0;
                        break;
                    }
                }
            }
        }
    }
}

/// Why a held file may not be sent: it no longer is what was accepted.
fn integrity(h: &Held, bytes: &[u8]) -> Result<(), String> {
    scu::check_object(
        &h.item.path,
        bytes,
        &h.item.sha256,
        h.item.fingerprint.as_slice(),
    )
}

/// How a failure to connect to the destination begins (the destination is then known down).
const UNREACHABLE: &str = "cannot connect to";
/// How a failure to set up TLS with the destination begins (nothing was sent).
const TLS_FAILED: &str = "no TLS with";

/// How a forwarder talks to its destination.
struct Link {
    timeout: Duration,
    max_pdu: u32,
    /// Failure statuses for one instance before it is parked.
    max_attempts: u32,
    transport: Transport,
}

/// An error and its causes, outermost first (dicom-ul's TLS errors name the certificate
/// problem only in their source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    for _ in 0..8 {
        let Some(c) = cur else { break };
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Sends up to [`BATCH`] waiting instances of `dest` over one association. `Ok(n)`: `n` were
/// delivered or parked and the queue has no more for now (or the batch ended); `Err`: the
/// attempt failed (the instances not delivered stay at the head of the queue).
fn send_batch(q: &HoldQueue, dest: &str, bus: &EventBus, link: &Link) -> Result<usize, String> {
    let (timeout, max_pdu) = (link.timeout, link.max_pdu);
    let batch = q.next_batch(dest, BATCH).map_err(|e| e.to_string())?;
    let Some(first) = batch.first() else {
        return Ok(0);
    };
    let Some((ae, addr, _)) = split_dest(dest) else {
        return Err(format!("bad destination {dest:?}"));
    };
    // One association per calling AE title: the batch is the run of rows sharing the first's.
    let calling = first.item.calling_ae.clone();
    let batch: Vec<Held> = batch
        .into_iter()
        .take_while(|h| h.item.calling_ae == calling)
        .collect();
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(calling.clone())
        .called_ae_title(ae.to_string())
        .max_pdu_length(max_pdu)
        .connection_timeout(timeout)
        .read_timeout(Duration::from_secs(60))
        .write_timeout(Duration::from_secs(60));
    let mut proposed = HashSet::new();
    for h in &batch {
        let key = (h.item.sop_class.clone(), h.item.transfer_syntax.clone());
        if proposed.insert(key.clone()) {
            opts = opts.with_presentation_context(key.0, vec![key.1]);
        }
    }
    use dicom_ul::association::Error as E;
    let failed = |e: E| match e {
        E::Connect { .. } => format!("{UNREACHABLE} {dest}: {}", chain(&e)),
        E::TlsHandshake { .. } | E::TlsConnection { .. } | E::InvalidServerName { .. } => {
            format!("{TLS_FAILED} {dest}: {}", chain(&e))
        }
        e => format!("association with {dest}: {}", chain(&e)),
    };
    // Command set and data set leave as separate writes: without TCP_NODELAY, Nagle and the
    // archive's delayed ACK stall every C-STORE (17x slower on loopback).
    match &link.transport {
        Transport::Plain => {
            let mut a = opts.establish(addr).map_err(failed)?;
            let _ = a.inner_stream().set_nodelay(true);
            send_over(a, q, dest, bus, link, batch)
        }
        Transport::Tls(cfg, name) => {
            let mut a = opts
                .tls_config(cfg.clone())
                .server_name(name)
                .establish_tls(addr)
                .map_err(failed)?;
            let _ = a.inner_stream().sock.set_nodelay(true);
            send_over(a, q, dest, bus, link, batch)
        }
    }
}

/// Sends `batch` over an established association (plain or TLS), then releases it.
fn send_over<S>(
    mut a: ClientAssociation<S>,
    q: &HoldQueue,
    dest: &str,
    bus: &EventBus,
    link: &Link,
    batch: Vec<Held>,
) -> Result<usize, String>
where
    S: CloseSocket + Read + Write,
{
    let mut sent = 0;
    let mut message_id: u16 = 0;
    for h in batch {
        let bytes = match std::fs::read(&h.item.path) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("vault file {}: {e}", h.item.path.display());
                quarantine(q, bus, &h, &why);
                continue;
            }
        };
        if let Err(why) = integrity(&h, &bytes) {
            quarantine(q, bus, &h, &why);
            continue;
        }
        let data = match scu::data_set(&bytes) {
            Ok(d) => d,
            Err(why) => {
                quarantine(q, bus, &h, &why);
                continue;
            }
        };
        let Some(pc_id) = scu::accepted_context(&a, &h.item.sop_class, &h.item.transfer_syntax)
        else {
            let why = format!(
                "{dest} accepts no context for {} in {}",
                h.item.sop_class, h.item.transfer_syntax
            );
            let _ = q.note_failure(h.seq, &why);
            let _ = a.abort();
            return Err(why);
        };
        message_id = message_id.wrapping_add(1);
        q.mark_in_flight(h.seq).map_err(|e| e.to_string())?;
        let fail = |q: &HoldQueue, why: String| {
            let _ = q.note_failure(h.seq, &why);
            Err::<usize, String>(why)
        };
        let status = match scu::c_store(
            &mut a,
            pc_id,
            message_id,
            &h.item.sop_class,
            &h.item.sop_instance,
            data,
        ) {
            Ok(s) => s,
            Err(scu::ScuError::Send(e)) => return fail(q, format!("sending to {dest}: {e}")),
            Err(scu::ScuError::Answer(e)) => return fail(q, format!("answer from {dest}: {e}")),
        };
        // Success, or a warning (0001, Bxxx): the archive has the instance (PS3.4 B.2.3).
        if scu::stored(status) {
            q.mark_done(h.seq, unix_ms()).map_err(|e| e.to_string())?;
            bus.emit(Event::HoldForwarded {
                dest: dest.to_string(),
                sop_instance: h.item.sop_instance.clone(),
                status,
                waited_ms: unix_ms().saturating_sub(h.item.accepted_ms),
            });
            sent += 1;
        } else {
            // A failure status: the archive refuses this instance (PS3.4 B.2.3: 0xA7xx out of
            // resources, 0xA9xx data set does not match the SOP class, 0xCxxx cannot
            // understand). Retried after the backoff; after `hold_max_attempts` of them it is
            // parked so one poison instance never blocks the destination's queue.
            let why = format!("{dest} answered 0x{status:04X} for {}", h.item.sop_instance);
            match q.note_refusal(h.seq, &why, link.max_attempts) {
                Ok(true) => {
                    bus.emit(Event::SecurityAlert {
                        assoc: None,
                        kind: AlertKind::HoldParked,
                        source: None,
                        detail: format!(
                            "held instance {} parked after {} failure status(es) from {dest} \
                             (last 0x{status:04X}); the rest of the queue goes on \
                             (`radguard queue retry` puts it back)",
                            h.item.sop_instance, link.max_attempts
                        ),
                    });
                    sent += 1;
                    continue;
                }
                Ok(false) => {}
                Err(e) => return Err(e.to_string()),
            }
            let _ = a.release();
            return Err(why);
        }
    }
    let _ = a.release();
    Ok(sent.max(1))
}

fn quarantine(q: &HoldQueue, bus: &EventBus, h: &Held, why: &str) {
    let _ = q.quarantine(h.seq, why);
    bus.emit(Event::SecurityAlert {
        assoc: None,
        kind: AlertKind::InstanceConflict,
        source: None,
        detail: format!(
            "held instance {} for {} not forwarded: {why}",
            h.item.sop_instance, h.item.dest
        ),
    });
}
