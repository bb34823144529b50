//! The one task that owns the store: events in, sealed records out.
//!
//! [`AuditWriter::spawn`] subscribes nothing itself: give it a receiver from
//! `EventBus::subscribe()` taken *before* the gateway starts emitting. The task maps events to
//! records ([`crate::mapper::Mapper`]), seals them onto the chain and appends them in batches
//! (one transaction each, on the blocking pool; events wait on the bus meanwhile and are read
//! when it ends). Batches start at least `batch_delay` apart while records keep coming, so
//! while the store answers a record reaches it at most `max(batch_delay, T) + T` after it was
//! emitted (`T`: one append; 50 ms and a few ms by default), as before batches were spaced: a
//! crash loses at most what was emitted in that window. It signs a checkpoint every
//! `checkpoint_every` records or `checkpoint_interval`, whichever comes first.
//!
//! The gateway never waits on it: emitting is a broadcast send. If the store cannot be written,
//! the records stay queued (up to `max_pending`), the task retries with backoff (sealing the
//! same records at the same positions, so a retry after a commit whose answer was lost writes
//! none of them twice: see [`crate::store`]), and
//! [`AuditHandle::healthy`] turns false so the gateway can refuse new associations
//! ([`FailurePolicy`]). If the task falls behind the bus by more than the bus capacity, the
//! lost events are counted and recorded (`events-lost`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use radguard_events::EventRecord;
use tokio::sync::{broadcast, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::chain::{seal_all, ChainHead, SealedRecord};
use crate::checkpoint::AuditKey;
use crate::error::{AuditError, Result};
use crate::mapper::Mapper;
use crate::record::{AuditEvent, AuditRecord};
use crate::store::AuditStore;
use crate::time::now_ms;

/// What the gateway should do while the audit store cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Refuse new associations (A-ASSOCIATE-RJ, transient) rather than relay unaudited.
    #[default]
    Refuse,
    /// Keep relaying; records queue in memory up to `max_pending` and are written when the
    /// store returns (beyond that they are lost and counted).
    Continue,
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// This gateway's chain name (unique among gateways sharing a store).
    pub node: String,
    /// Signs checkpoints when set.
    pub key: Option<Arc<AuditKey>>,
    /// Checkpoint after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the last checkpoint, if records were added.
    pub checkpoint_interval: Duration,
    /// Most records per transaction.
    pub max_batch: usize,
    /// How long the first record of a batch waits for others before the batch is written:
    /// a relay emits a few records per instance, and one transaction (with its fsync) per
    /// instance cost more CPU than the relaying itself. Batches start at least this long
    /// apart (unless `max_batch` records are waiting): records arriving while a write is in
    /// flight wait for it and until `batch_delay` after it started, whichever is later. So a
    /// record reaches the store at most `max(batch_delay, T) + T` after it arrived (`T`: one
    /// append), whether the writer was idle or writing when it came, and a steady stream is
    /// written once per `batch_delay`, not once per append's round trip.
    pub batch_delay: Duration,
    /// Most records held in memory while the store is slow or down.
    pub max_pending: usize,
    /// Backoff between failed appends (doubling from `retry_min` to `retry_max`).
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub on_store_failure: FailurePolicy,
}

impl WriterOptions {
    pub fn new(node: impl Into<String>) -> Self {
        WriterOptions {
            node: node.into(),
            key: None,
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_batch: 4096,
            batch_delay: Duration::from_millis(50),
            max_pending: 200_000,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            on_store_failure: FailurePolicy::Refuse,
        }
    }
}

/// The writer's state, published on a watch channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The last append (or the initial head read) succeeded.
    pub store_ok: bool,
    /// The last store error, if the store is failing.
    pub last_error: Option<String>,
    /// The chain head's seq after the last successful append.
    pub head_seq: u64,
    /// Records waiting to be written.
    pub pending: usize,
    /// Events lost (bus overrun or queue overflow).
    pub lost_events: u64,
    /// The writer has stopped (shutdown or failure).
    pub stopped: bool,
}

/// What the writer did, returned by [`AuditHandle::shutdown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub records: u64,
    pub transactions: u64,
    pub checkpoints: u64,
    pub lost_events: u64,
    pub head_seq: u64,
}

/// The gateway's handle on the writer.
pub struct AuditHandle {
    health: watch::Receiver<Health>,
    policy: FailurePolicy,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<WriterStats>>,
}

impl AuditHandle {
    /// Whether the store is being written (false while appends fail, or before the first
    /// successful contact with the store).
    pub fn healthy(&self) -> bool {
        let h = self.health.borrow();
        h.store_ok && !h.stopped
    }

    /// Whether the gateway should admit new associations: always under
    /// [`FailurePolicy::Continue`], only while [`healthy`](Self::healthy) under `Refuse`.
    pub fn admit_associations(&self) -> bool {
        self.policy == FailurePolicy::Continue || self.healthy()
    }

    /// A watch on the writer's state (for the dashboard, and to wake exporters).
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    /// Writes everything received so far, signs a final checkpoint, and stops.
    pub async fn shutdown(mut self) -> Result<WriterStats> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AuditError::Task(e.to_string())),
        }
    }

    /// Stops the task at once, mid-stream, without writing what is queued (tests use it to
    /// simulate a crash; a store call already running on the blocking pool still completes or
    /// rolls back as a whole).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Spawns the writer task (needs a Tokio runtime).
pub struct AuditWriter;

/// The store call: the store back, the sealed records back (to queue again if the append
/// failed), and the append's outcome.
type Job = JoinHandle<(Box<dyn AuditStore>, (Vec<SealedRecord>, Result<()>))>;

impl AuditWriter {
    pub fn spawn(
        store: Box<dyn AuditStore>,
        rx: broadcast::Receiver<Arc<EventRecord>>,
        options: WriterOptions,
    ) -> AuditHandle {
        let (health_tx, health_rx) = watch::channel(Health::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let policy = options.on_store_failure;
        let task = tokio::spawn(run(store, rx, options, health_tx, stop_rx));
        AuditHandle {
            health: health_rx,
            policy,
            shutdown: Some(stop_tx),
            task,
        }
    }
}

/// A write in flight: its records are out of the queue (the store call holds them and gives them
/// back), the head it makes, and when it started.
struct Batch {
    records: usize,
    head: ChainHead,
    checkpoint: bool,
    started: Instant,
    /// Records were already queued behind this batch when it started (it was cut at
    /// `max_batch` or at a checkpoint): they are written as soon as it ends.
    more_queued: bool,
}

async fn blocking<T: Send + 'static>(
    store: Box<dyn AuditStore>,
    f: impl FnOnce(&mut dyn AuditStore) -> T + Send + 'static,
) -> (Box<dyn AuditStore>, T) {
    let h = tokio::task::spawn_blocking(move || {
        let mut store = store;
        let r = f(store.as_mut());
        (store, r)
    });
    match h.await {
        Ok(x) => x,
        // The closure panicked: the store is gone with it.
        Err(e) => panic!("audit store call panicked: {e}"),
    }
}

async fn run(
    store: Box<dyn AuditStore>,
    mut rx: broadcast::Receiver<Arc<EventRecord>>,
    opt: WriterOptions,
    health: watch::Sender<Health>,
    mut stop: oneshot::Receiver<()>,
) -> Result<WriterStats> {
    let node = opt.node.clone();
    let mut stats = WriterStats::default();
    let mut mapper = Mapper::default();
    let mut queue: VecDeque<AuditRecord> = VecDeque::new();
    let described = store.describe();

    // The head: retried until the store answers (health stays false meanwhile).
    let mut store = Some(store);
    let mut backoff = opt.retry_min;
    let mut head = loop {
        let Some(s) = store.take() else {
            return Err(AuditError::Task("store lost".into()));
        };
        let n = node.clone();
        let (s, r) = blocking(s, move |s| s.head(&n)).await;
        store = Some(s);
        match r {
            Ok(h) => break h.unwrap_or(ChainHead::GENESIS),
            Err(e) => {
                tracing::error!(target: "radguard::audit", error = %e, "audit store unavailable");
                health.send_modify(|h| {
                    h.store_ok = false;
                    h.last_error = Some(e.to_string());
                });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => {
                        health.send_modify(|h| h.stopped = true);
                        return Err(e);
                    }
                }
                backoff = (backoff * 2).min(opt.retry_max);
            }
        }
    };
    health.send_modify(|h| {
        h.store_ok = true;
        h.last_error = None;
        h.head_seq = head.seq;
    });
    queue.push_back(AuditRecord::draft(
        now_ms(),
        None,
        None,
        AuditEvent::AuditStarted { store: described },
    ));

    let mut last_cp_seq = head.seq;
    let mut last_cp_at = Instant::now();
    let mut inflight: Option<(Job, Batch)> = None;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = opt.retry_min;
    let mut stopping = false;
    let mut rx_open = true;
    // While set, the queue's first records wait for more (see `batch_delay`); the bus is read
    // when it passes, not at every event.
    let mut gather_until: Option<Instant> = None;

    loop {
        let writing = inflight.as_ref().map_or(0, |(_, b)| b.records);
        // Take what is already on the bus (without a wake-up per event).
        if rx_open && !stopping {
            while queue.len() + writing < opt.max_pending {
                match rx.try_recv() {
                    Ok(ev) => queue.extend(mapper.map(&ev)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        queue.push_back(lost(n, &mut stats));
                    }
                    Err(_) => break,
                }
            }
        }
        let gathered = stopping
            || queue.len() >= opt.max_batch
            || gather_until.is_none_or(|t| Instant::now() >= t);
        // Start a write when idle and there is something to write.
        if inflight.is_none() && gathered && retry_at.is_none_or(|t| Instant::now() >= t) {
            gather_until = None;
            let cp_due = opt.key.is_some()
                && (head.seq + queue.len() as u64 > last_cp_seq)
                && (last_cp_at.elapsed() >= opt.checkpoint_interval || stopping);
            if !queue.is_empty() || (cp_due && head.seq > last_cp_seq) {
                let mut n = queue.len().min(opt.max_batch.max(1));
                if opt.key.is_some() {
                    // End the batch where the next checkpoint is due, so checkpoints fall
                    // exactly every `checkpoint_every` records.
                    let until_cp =
                        (last_cp_seq + opt.checkpoint_every.max(1)).saturating_sub(head.seq);
                    if until_cp > 0 {
                        n = n.min(usize::try_from(until_cp).unwrap_or(usize::MAX));
                    }
                }
                let more_queued = n < queue.len();
                // The drafts move into the store call and come back with its answer: a failed
                // append puts them back at the queue's front, to be sealed again.
                let drafts: Vec<AuditRecord> = queue.drain(..n).collect();
                let (sealed, new_head) = seal_all(&node, &head, drafts)?;
                let want_cp = opt.key.is_some()
                    && new_head.seq > last_cp_seq
                    && (new_head.seq - last_cp_seq >= opt.checkpoint_every
                        || last_cp_at.elapsed() >= opt.checkpoint_interval
                        || (stopping && !more_queued));
                let checkpoint = if want_cp {
                    opt.key.as_ref().map(|k| k.sign(&node, &new_head, now_ms()))
                } else {
                    None
                };
                let batch = Batch {
                    records: n,
                    head: new_head,
                    checkpoint: checkpoint.is_some(),
                    started: Instant::now(),
                    more_queued,
                };
                let Some(s) = store.take() else {
                    return Err(AuditError::Task("store lost".into()));
                };
                let expected = head;
                let n_node = node.clone();
                let job = tokio::spawn(blocking(s, move |s| {
                    let r = s.append(&n_node, &expected, &sealed, checkpoint.as_ref());
                    (sealed, r)
                }));
                inflight = Some((job, batch));
            }
        }
        if stopping && !rx_open && inflight.is_none() && queue.is_empty() {
            break;
        }
        if stopping && !rx_open && inflight.is_none() && retry_at.is_some() {
            // Shutting down while the store fails: give up on what is queued.
            let e = health.borrow().last_error.clone().unwrap_or_default();
            health.send_modify(|h| h.stopped = true);
            return Err(AuditError::Store(format!(
                "shutdown with {} records unwritten: {e}",
                queue.len()
            )));
        }

        // Wait on the bus only when there is nothing else to wait for (or the store is failing
        // and events must not pile up on the bus meanwhile).
        let idle = inflight.is_none() && gather_until.is_none();
        let can_receive =
            rx_open && !stopping && queue.len() < opt.max_pending && (idle || retry_at.is_some());
        let mut sleep_until = retry_at.unwrap_or_else(|| {
            if opt.key.is_some() && head.seq > last_cp_seq {
                last_cp_at + opt.checkpoint_interval
            } else {
                Instant::now() + Duration::from_secs(3600)
            }
        });
        if let Some(t) = gather_until {
            sleep_until = sleep_until.min(t);
        }
        tokio::select! {
            biased;
            res = async {
                match inflight.as_mut() {
                    Some((job, _)) => job.await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((_, batch)) = inflight.take() else { continue };
                let (s, (sealed, r)) = match res {
                    Ok(x) => x,
                    Err(e) => return Err(AuditError::Task(e.to_string())),
                };
                store = Some(s);
                match r {
                    Ok(()) => {
                        drop(sealed);
                        head = batch.head;
                        stats.records += batch.records as u64;
                        stats.transactions += 1;
                        stats.head_seq = head.seq;
                        // The next batch starts `batch_delay` after this one did (unless
                        // records were already waiting behind this one): records that arrived
                        // during this write have waited since at most its start, so none
                        // waits longer than before, and a steady stream is written in
                        // transactions `batch_delay` apart rather than back to back, one
                        // commit (and fsync) per store round trip.
                        if !batch.more_queued && !stopping {
                            gather_until = Some(batch.started + opt.batch_delay);
                        }
                        if batch.checkpoint {
                            stats.checkpoints += 1;
                            last_cp_seq = head.seq;
                            last_cp_at = Instant::now();
                        }
                        retry_at = None;
                        backoff = opt.retry_min;
                        let pending = queue.len();
                        health.send_modify(|h| {
                            h.store_ok = true;
                            h.last_error = None;
                            h.head_seq = head.seq;
                            h.pending = pending;
                        });
                    }
                    Err(e) => {
                        // Back at the queue's front, in order, to be sealed again.
                        for r in sealed.into_iter().rev() {
                            queue.push_front(r.record);
                        }
                        tracing::error!(target: "radguard::audit", error = %e, pending = queue.len(), "audit append failed");
                        if let AuditError::HeadMoved { .. } = e {
                            // Another writer extended this chain (a second gateway with the
                            // same node name): go on after its records. (A retry of our own
                            // batch whose commit answer was lost does not get here: the store
                            // recognises its records and writes only the rest, so the queue
                            // keeps the same records at the same positions until one append
                            // succeeds.)
                            if let Some(s) = store.take() {
                                let n2 = node.clone();
                                let (s, h2) = blocking(s, move |s| s.head(&n2)).await;
                                store = Some(s);
                                if let Ok(h2) = h2 {
                                    head = h2.unwrap_or(ChainHead::GENESIS);
                                }
                            }
                        }
                        let pending = queue.len();
                        health.send_modify(|h| {
                            h.store_ok = false;
                            h.last_error = Some(e.to_string());
                            h.pending = pending;
                        });
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(opt.retry_max);
                    }
                }
            }
            _ = &mut stop, if !stopping => {
                stopping = true;
                // Take what is already on the bus, then close.
                loop {
                    match rx.try_recv() {
                        Ok(ev) => queue.extend(mapper.map(&ev)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            queue.push_back(lost(n, &mut stats));
                        }
                        Err(_) => break,
                    }
                }
                rx_open = false;
                queue.push_back(AuditRecord::draft(
                    now_ms(),
                    None,
                    None,
                    AuditEvent::AuditStopped { records: stats.records + queue.len() as u64 + 1 },
                ));
            }
            r = rx.recv(), if can_receive => {
                match r {
                    Ok(ev) => {
                        if queue.is_empty() && inflight.is_none() && retry_at.is_none() {
                            gather_until = Some(Instant::now() + opt.batch_delay);
                        }
                        queue.extend(mapper.map(&ev));
                        // Drain what else is ready, up to a batch.
                        for _ in 0..opt.max_batch {
                            match rx.try_recv() {
                                Ok(ev) => queue.extend(mapper.map(&ev)),
                                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                    queue.push_back(lost(n, &mut stats));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::error!(target: "radguard::audit", lost = n, "audit writer fell behind the event bus");
                        queue.push_back(lost(n, &mut stats));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        rx_open = false;
                        stopping = true;
                    }
                }
                let (pending, lost_events) = (queue.len(), stats.lost_events);
                health.send_if_modified(|h| {
                    let changed = h.pending != pending || h.lost_events != lost_events;
                    h.pending = pending;
                    h.lost_events = lost_events;
                    changed
                });
            }
            _ = tokio::time::sleep_until(sleep_until) => {
                retry_at = retry_at.filter(|t| Instant::now() < *t);
            }
        }
    }
    health.send_modify(|h| {
        h.stopped = true;
        h.pending = 0;
    });
    if let Some(s) = store.take() {
        // Closing a store may block (PostgreSQL): not on this runtime thread.
        let _ = tokio::task::spawn_blocking(move || drop(s)).await;
    }
    Ok(stats)
}

fn lost(n: u64, stats: &mut WriterStats) -> AuditRecord {
    stats.lost_events += n;
    AuditRecord::draft(now_ms(), None, None, AuditEvent::EventsLost { count: n })
}
