//! The console's picture of the gateway, built from the event bus only (the relay is not asked
//! anything): running associations, peers seen, alerts, refusals, totals, a time series and the
//! Prometheus counters. Every table is bounded: a flood of associations or alerts costs at
//! most the caps below, never the gateway's memory.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use radguard_events::{Blame, Event, EventRecord};
use serde::Serialize;
use tokio::sync::broadcast;

/// Running associations tracked at once (the oldest is forgotten beyond it).
pub const MAX_RUNNING: usize = 4096;
/// Sources remembered for `/peers`.
pub const MAX_SEEN: usize = 1024;
/// Alerts and refusals kept (newest).
pub const MAX_ALERTS: usize = 1000;
pub const MAX_REFUSALS: usize = 1000;
/// Time series: one point per [`SERIES_STEP_MS`], the last [`SERIES_POINTS`].
pub const SERIES_STEP_MS: u64 = 5000;
pub const SERIES_POINTS: usize = 120;
/// Distinct label sets per metric family: a config with thousands of peers or routes still
/// gives a bounded scrape.
pub const MAX_SERIES_PER_METRIC: usize = 4096;
/// AE titles and addresses remembered per seen source.
const MAX_NAMES: usize = 16;
/// Association duration histogram buckets (seconds).
pub const DURATION_BUCKETS: [f64; 10] =
    [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// A running association (the contract's `Assoc`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Assoc {
    pub id: u64,
    pub peer: Option<String>,
    pub calling_ae: String,
    pub called_ae: String,
    pub source: String,
    pub route: Option<String>,
    pub operation: Option<String>,
    pub requests: u64,
    pub bytes_from_client: u64,
    pub bytes_from_upstream: u64,
    pub rate_bps: u64,
    pub started: u64,
}

/// An alert (a detection or another security alert).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub id: u64,
    pub time: u64,
    pub rule: String,
    pub rule_kind: String,
    pub response: String,
    pub source: Option<String>,
    pub peer: Option<String>,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    pub detail: String,
    pub evidence: serde_json::Value,
    pub acknowledged: Option<Ack>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Ack {
    pub by: String,
    pub time: u64,
}

/// A refused association or request (no patient data: codes and the gateway's reason).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Refusal {
    pub time: u64,
    pub kind: &'static str,
    pub source: Option<String>,
    pub calling_ae: Option<String>,
    pub called_ae: Option<String>,
    pub peer: Option<String>,
    pub code: String,
    pub why: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub associations: u64,
    pub refused_associations: u64,
    pub refused_requests: u64,
    pub bytes_from_clients: u64,
    pub bytes_from_upstreams: u64,
    pub alerts: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Point {
    pub t: u64,
    pub bytes: u64,
    pub refusals: u64,
}

/// A source the gateway has seen (for `/peers`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Seen {
    /// The policy peer it was accepted as, if ever.
    pub peer: Option<String>,
    pub addresses: BTreeSet<String>,
    pub ae_titles: BTreeSet<String>,
    pub certificate: Option<String>,
    pub implementation_class_uid: Option<String>,
    pub implementation_version: Option<String>,
    pub last_seen: u64,
}

/// What the SSE stream carries.
#[derive(Debug, Clone)]
pub enum Update {
    Association(Assoc),
    AssociationEnded(u64),
    Refusal(Refusal),
    Alert(Alert),
    Totals(Totals),
    /// A closed point of the series (the page appends it instead of fetching the series).
    Point(Point),
}

#[derive(Debug)]
struct Running {
    view: Assoc,
    /// (time ms, bytes both ways) samples for the rate, oldest first.
    samples: VecDeque<(u64, u64)>,
    last_sent: u64,
    dirty: bool,
    /// Final responses counted since the last flush into [`Counters::requests`]: (operation,
    /// status class, count). Counted here without allocating (a relay answers thousands of
    /// C-STOREs a second), folded into the shared counters once per batch of events.
    pending_requests: Vec<(Cow<'static, str>, &'static str, u64)>,
}

/// The Prometheus counters (label values bounded: peer names, route names, rule names).
#[derive(Debug, Default)]
pub struct Counters {
    /// (peer, route, result)
    pub associations: BTreeMap<(String, String, &'static str), u64>,
    /// (peer, operation, status)
    pub requests: BTreeMap<(String, String, &'static str), u64>,
    /// (route, direction)
    pub bytes: BTreeMap<(String, &'static str), u64>,
    pub alerts: BTreeMap<String, u64>,
    /// Cumulative bucket counts, then +Inf count, sum.
    pub duration_buckets: [u64; DURATION_BUCKETS.len()],
    pub duration_count: u64,
    pub duration_sum: f64,
    /// Hold queue per destination (`AE@host:port`): (instances waiting, oldest one's age in
    /// seconds), from the last `hold-depth` event; a destination whose queue emptied is removed.
    pub hold: BTreeMap<String, (u64, u64)>,
}

fn bump<K: Ord>(m: &mut BTreeMap<K, u64>, k: K, by: u64) {
    if let Some(v) = m.get_mut(&k) {
        *v += by;
    } else if m.len() < MAX_SERIES_PER_METRIC {
        m.insert(k, by);
    }
}

#[derive(Debug, Default)]
struct Model {
    running: BTreeMap<u64, Running>,
    /// Requested but not (yet) accepted: their names, for refusals and the running view.
    requested: BTreeMap<u64, Assoc>,
    seen: BTreeMap<String, Seen>,
    alerts: VecDeque<Alert>,
    next_alert: u64,
    refusals: VecDeque<Refusal>,
    totals: Totals,
    /// The totals as last sent to the pages (sent again by [`Console::tick`] when they differ).
    totals_sent: Totals,
    series: VecDeque<Point>,
    bucket: Point,
    counters: Counters,
}

/// The console model: feed it every bus event ([`Console::observe`], or a batch under one lock:
/// [`Console::observe_all`]), tick it every second
/// ([`Console::tick`]); read views; subscribe to its updates for SSE.
pub struct Console {
    model: Mutex<Model>,
    updates: broadcast::Sender<Update>,
    pub started: u64,
    pub version: &'static str,
}

/// "CStoreRq" → "C-STORE" (the bus names commands by their Rust variant).
pub fn operation_name(command: &str) -> String {
    operation(command).into_owned()
}

/// [`operation_name`] without an allocation for the DIMSE commands of PS3.7 §9 and §10.
fn operation(command: &str) -> Cow<'static, str> {
    let base = command
        .strip_suffix("Rsp")
        .or_else(|| command.strip_suffix("Rq"))
        .unwrap_or(command);
    Cow::Borrowed(match base {
        "CStore" => "C-STORE",
        "CEcho" => "C-ECHO",
        "CFind" => "C-FIND",
        "CMove" => "C-MOVE",
        "CGet" => "C-GET",
        "CCancel" => "C-CANCEL",
        "NEventReport" => "N-EVENT-REPORT",
        "NGet" => "N-GET",
        "NSet" => "N-SET",
        "NAction" => "N-ACTION",
        "NCreate" => "N-CREATE",
        "NDelete" => "N-DELETE",
        _ => return Cow::Owned(spelled(command)),
    })
}

/// The general case of [`operation_name`]: a capital inside the name starts a word.
fn spelled(command: &str) -> String {
    let base = command
        .strip_suffix("Rsp")
        .or_else(|| command.strip_suffix("Rq"))
        .unwrap_or(command);
    let mut chars = base.chars();
    match chars.next() {
        Some(c @ ('C' | 'N')) if base.len() > 1 => {
            // "NEventReport" → "N-EVENT-REPORT": a capital inside the name starts a word.
            let mut out = format!("{c}-");
            for (i, ch) in chars.enumerate() {
                if i > 0 && ch.is_ascii_uppercase() {
                    out.push('-');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
        _ => base.to_string(),
    }
}

/// Success, warning, failure, pending: PS3.7 C.1 status classes.
fn status_class(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0x0001 | 0x0107 | 0x0116 => "warning",
        s if s & 0xF000 == 0xB000 => "warning",
        0xFF00 | 0xFF01 => "pending",
        0xFE00 => "cancel",
        _ => "failure",
    }
}

fn ms(t: u128) -> u64 {
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| ms(d.as_millis()))
}

fn ip_of(a: &SocketAddr) -> String {
    a.ip().to_string()
}

impl Default for Console {
    fn default() -> Self {
        Console::new()
    }
}

impl Console {
    pub fn new() -> Console {
        let (updates, _) = broadcast::channel(1024);
        Console {
            model: Mutex::new(Model::default()),
            updates,
            started: now_ms(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic while holding the lock leaves counters, not invariants: go on with them.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.updates.subscribe()
    }

    fn send(&self, u: Update) {
        let _ = self.updates.send(u);
    }

    /// Takes in one bus event.
    pub fn observe(&self, rec: &EventRecord) {
        self.observe_all(std::iter::once(rec));
    }

    /// Takes in a batch of bus events under one lock; the counters are whole again when it
    /// returns.
    pub fn observe_all<'a>(&self, recs: impl IntoIterator<Item = &'a EventRecord>) {
        let mut out = Vec::new();
        {
            let mut m = self.lock();
            for rec in recs {
                m.observe(ms(rec.time_ms), &rec.event, &mut out);
            }
            m.flush_requests();
        }
        for u in out {
            self.send(u);
        }
    }

    /// Once a second: associations changed since their last update, the totals when they
    /// changed, and every [`SERIES_STEP_MS`] the closed series point and the totals. The pages
    /// live on these updates alone (no polling): a watched gateway sends a few hundred bytes a
    /// second per page.
    pub fn tick(&self, now: u64) {
        let mut out = Vec::new();
        {
            let mut m = self.lock();
            let mut closed = false;
            for r in m.running.values_mut() {
                let rate = rate(&r.samples, now);
                if rate != r.view.rate_bps {
                    r.view.rate_bps = rate;
                    r.dirty = true;
                }
                if r.dirty && now.saturating_sub(r.last_sent) >= 1000 {
                    r.dirty = false;
                    r.last_sent = now;
                    out.push(Update::Association(r.view.clone()));
                }
            }
            if m.bucket.t == 0 {
                m.bucket.t = now - now % SERIES_STEP_MS;
            }
            if now >= m.bucket.t + SERIES_STEP_MS {
                let done = std::mem::take(&mut m.bucket);
                m.series.push_back(done.clone());
                while m.series.len() > SERIES_POINTS {
                    m.series.pop_front();
                }
                m.bucket.t = now - now % SERIES_STEP_MS;
                out.push(Update::Point(done));
                closed = true;
            }
            if closed || m.totals != m.totals_sent {
                m.totals_sent = m.totals.clone();
                out.push(Update::Totals(m.totals.clone()));
            }
        }
        for u in out {
            self.send(u);
        }
    }

    pub fn associations(&self) -> Vec<Assoc> {
        let now = now_ms();
        let m = self.lock();
        m.running
            .values()
            .map(|r| Assoc {
                rate_bps: rate(&r.samples, now),
                ..r.view.clone()
            })
            .collect()
    }

    pub fn totals(&self) -> Totals {
        self.lock().totals.clone()
    }

    pub fn series(&self) -> Vec<Point> {
        self.lock().series.iter().cloned().collect()
    }

    /// Newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.lock().alerts.iter().rev().cloned().collect()
    }

    /// Newest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.lock().refusals.iter().rev().cloned().collect()
    }

    pub fn seen(&self) -> Vec<(String, Seen)> {
        self.lock()
            .seen
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Marks an alert acknowledged; `None` when no such alert is kept, `Some(false)` when it
    /// was acknowledged already.
    pub fn acknowledge(&self, id: u64, by: &str) -> Option<bool> {
        let (first, alert) = {
            let mut m = self.lock();
            let a = m.alerts.iter_mut().find(|a| a.id == id)?;
            let first = a.acknowledged.is_none();
            if first {
                a.acknowledged = Some(Ack {
                    by: by.to_string(),
                    time: now_ms(),
                });
            }
            (first, a.clone())
        };
        if first {
            self.send(Update::Alert(alert));
        }
        Some(first)
    }

    pub fn alert(&self, id: u64) -> Option<Alert> {
        self.lock().alerts.iter().find(|a| a.id == id).cloned()
    }

    /// Reads the counters (for `/metrics`).
    pub fn with_counters<R>(&self, f: impl FnOnce(&Counters, usize) -> R) -> R {
        let m = self.lock();
        f(&m.counters, m.running.len())
    }
}

/// Bytes per second over the last 5 s.
fn rate(samples: &VecDeque<(u64, u64)>, now: u64) -> u64 {
    let Some(&(_, last)) = samples.back() else {
        return 0;
    };
    let since = now.saturating_sub(5000);
    // The newest sample at or before the window start is the baseline.
    let base = samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= since)
        .or_else(|| samples.front())
        .map_or(0, |&(_, b)| b);
    last.saturating_sub(base) / 5
}

impl Model {
    /// Folds the running associations' request counts into [`Counters::requests`].
    fn flush_requests(&mut self) {
        for r in self.running.values_mut() {
            Self::flush_running(&mut self.counters, r);
        }
    }

    fn flush_running(counters: &mut Counters, r: &mut Running) {
        if r.pending_requests.is_empty() {
            return;
        }
        let peer = r.view.peer.as_deref().unwrap_or("unknown");
        for (op, class, n) in r.pending_requests.drain(..) {
            bump(
                &mut counters.requests,
                (peer.to_string(), op.into_owned(), class),
                n,
            );
        }
    }

    fn running_mut(&mut self, id: u64) -> Option<&mut Running> {
        self.running.get_mut(&id)
    }

    fn add_bytes(&mut self, t: u64, id: u64, from_client: u64, from_upstream: u64) {
        let route = self
            .running
            .get(&id)
            .and_then(|r| r.view.route.clone())
            .unwrap_or_else(|| "none".into());
        if from_client > 0 {
            bump(
                &mut self.counters.bytes,
                (route.clone(), "from_client"),
                from_client,
            );
        }
        if from_upstream > 0 {
            bump(
                &mut self.counters.bytes,
                (route, "from_upstream"),
                from_upstream,
            );
        }
        self.totals.bytes_from_clients += from_client;
        self.totals.bytes_from_upstreams += from_upstream;
        self.bucket.bytes += from_client + from_upstream;
        if let Some(r) = self.running_mut(id) {
            r.view.bytes_from_client += from_client;
            r.view.bytes_from_upstream += from_upstream;
            let total = r.view.bytes_from_client + r.view.bytes_from_upstream;
            r.samples.push_back((t, total));
            // Keep one sample older than the 5 s window as the baseline.
            while r.samples.len() > 2 && r.samples.get(1).is_some_and(|(s, _)| *s + 5000 <= t) {
                r.samples.pop_front();
            }
            while r.samples.len() > 64 {
                r.samples.pop_front();
            }
            r.dirty = true;
        }
    }

    /// The relay's totals of an association so far (progress, release): counts what the
    /// running view has not counted yet.
    fn bytes_so_far(&mut self, t: u64, id: u64, from_client: u64, from_upstream: u64) {
        let (c, u) = self.running.get(&id).map_or((0, 0), |r| {
            (r.view.bytes_from_client, r.view.bytes_from_upstream)
        });
        self.add_bytes(
            t,
            id,
            from_client.saturating_sub(c),
            from_upstream.saturating_sub(u),
        );
    }

    /// The source (address and calling AE title: a refused caller on a peer's machine is not
    /// that peer) seen at `t`.
    fn touch_seen(
        &mut self,
        source: &SocketAddr,
        calling_ae: Option<&str>,
        t: u64,
        f: impl FnOnce(&mut Seen),
    ) {
        let ip = ip_of(source);
        let key = format!("{ip} {}", calling_ae.unwrap_or_default().trim());
        if !self.seen.contains_key(&key) && self.seen.len() >= MAX_SEEN {
            // Forget the source seen longest ago.
            if let Some(old) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
            {
                self.seen.remove(&old);
            }
        }
        let s = self.seen.entry(key).or_default();
        if s.addresses.len() < MAX_NAMES {
            s.addresses.insert(ip);
        }
        s.last_seen = t;
        f(s);
    }

    fn refusal(&mut self, r: Refusal, out: &mut Vec<Update>) {
        self.bucket.refusals += 1;
        if self.refusals.len() >= MAX_REFUSALS {
            self.refusals.pop_front();
        }
        self.refusals.push_back(r.clone());
        out.push(Update::Refusal(r));
    }

    fn alert(&mut self, mut a: Alert, out: &mut Vec<Update>) {
        self.next_alert += 1;
        a.id = self.next_alert;
        self.totals.alerts += 1;
        bump(&mut self.counters.alerts, a.rule.clone(), 1);
        if self.alerts.len() >= MAX_ALERTS {
            self.alerts.pop_front();
        }
        self.alerts.push_back(a.clone());
        out.push(Update::Alert(a));
    }

    fn ended(&mut self, t: u64, id: u64, result: &'static str, out: &mut Vec<Update>) {
        self.requested.remove(&id);
        if let Some(mut r) = self.running.remove(&id) {
            Self::flush_running(&mut self.counters, &mut r);
            let peer = r.view.peer.clone().unwrap_or_else(|| "unknown".into());
            let route = r.view.route.clone().unwrap_or_else(|| "none".into());
            bump(&mut self.counters.associations, (peer, route, result), 1);
            let secs = t.saturating_sub(r.view.started) as f64 / 1000.0;
            let c = &mut self.counters;
            for (i, b) in DURATION_BUCKETS.iter().enumerate() {
                if secs <= *b {
                    if let Some(n) = c.duration_buckets.get_mut(i) {
                        *n += 1;
                    }
                }
            }
            c.duration_count += 1;
            c.duration_sum += secs;
            out.push(Update::AssociationEnded(id));
        }
    }

    fn names(
        &self,
        id: u64,
    ) -> (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ) {
        let v = self
            .running
            .get(&id)
            .map(|r| &r.view)
            .or_else(|| self.requested.get(&id));
        match v {
            Some(v) => (
                Some(v.source.clone()),
                Some(v.calling_ae.clone()),
                Some(v.called_ae.clone()),
                v.peer.clone(),
            ),
            None => (None, None, None, None),
        }
    }

    fn observe(&mut self, t: u64, e: &Event, out: &mut Vec<Update>) {
        match e {
            Event::AssociationRequested {
                assoc,
                source,
                calling_ae,
                called_ae,
                implementation_class_uid,
                implementation_version,
                tls,
                ..
            } => {
                while self.requested.len() >= MAX_RUNNING {
                    self.requested.pop_first();
                }
                self.requested.insert(
                    assoc.0,
                    Assoc {
                        id: assoc.0,
                        peer: None,
                        calling_ae: calling_ae.clone(),
                        called_ae: called_ae.clone(),
                        source: source.to_string(),
                        route: None,
                        operation: None,
                        requests: 0,
                        bytes_from_client: 0,
                        bytes_from_upstream: 0,
                        rate_bps: 0,
                        started: t,
                    },
                );
                self.touch_seen(source, Some(calling_ae), t, |s| {
                    if s.ae_titles.len() < MAX_NAMES {
                        s.ae_titles.insert(calling_ae.clone());
                    }
                    s.implementation_class_uid = Some(implementation_class_uid.clone());
                    s.implementation_version = implementation_version.clone();
                    if let Some(c) = tls.as_ref().and_then(|t| t.peer_cert_sha256.clone()) {
                        s.certificate = Some(c);
                    }
                });
            }
            Event::AssociationAccepted {
                assoc, peer, route, ..
            } => {
                let Some(mut view) = self.requested.remove(&assoc.0) else {
                    return;
                };
                view.peer = Some(peer.clone());
                view.route = Some(route.clone());
                if let Ok(src) = view.source.parse::<SocketAddr>() {
                    let p = peer.clone();
                    let ae = view.calling_ae.clone();
                    self.touch_seen(&src, Some(&ae), t, |s| s.peer = Some(p));
                }
                self.totals.associations += 1;
                while self.running.len() >= MAX_RUNNING {
                    if let Some((_, mut r)) = self.running.pop_first() {
                        Self::flush_running(&mut self.counters, &mut r);
                    }
                }
                out.push(Update::Association(view.clone()));
                self.running.insert(
                    assoc.0,
                    Running {
                        view,
                        samples: VecDeque::new(),
                        last_sent: t,
                        dirty: false,
                        pending_requests: Vec::new(),
                    },
                );
            }
            Event::AssociationRefused {
                assoc,
                source,
                calling_ae,
                called_ae,
                result,
                rj_source,
                reason,
                why,
                ..
            } => {
                self.requested.remove(&assoc.0);
                self.totals.refused_associations += 1;
                bump(
                    &mut self.counters.associations,
                    ("unknown".into(), "none".into(), "refused"),
                    1,
                );
                self.touch_seen(source, calling_ae.as_deref(), t, |s| {
                    if let Some(ae) = calling_ae {
                        if s.ae_titles.len() < MAX_NAMES {
                            s.ae_titles.insert(ae.clone());
                        }
                    }
                });
                self.refusal(
                    Refusal {
                        time: t,
                        kind: "association",
                        source: Some(source.to_string()),
                        calling_ae: calling_ae.clone(),
                        called_ae: called_ae.clone(),
                        peer: None,
                        code: format!("A-ASSOCIATE-RJ {result}/{rj_source}/{reason}"),
                        why: why.clone(),
                    },
                    out,
                );
            }
            Event::DimseRequest { assoc, command, .. } => {
                if let Some(r) = self.running_mut(assoc.0) {
                    r.view.requests += 1;
                    let op = operation(command);
                    if r.view.operation.as_deref() != Some(&*op) {
                        r.view.operation = Some(op.into_owned());
                    }
                    r.dirty = true;
                }
            }
            Event::DimseResponse {
                assoc,
                command,
                status,
                from,
                bytes,
                ..
            } => {
                // A C-GET's C-STORE sub-operation answered by the client: bytes the gateway
                // relayed to the client, not a request of the client's.
                if *from == Blame::Peer {
                    if let Some(b) = bytes {
                        self.add_bytes(t, assoc.0, 0, *b);
                    }
                    return;
                }
                let class = status_class(*status);
                if class == "pending" {
                    return;
                }
                let op = operation(command);
                if let Some(r) = self.running_mut(assoc.0) {
                    let p = &mut r.pending_requests;
                    match p.iter_mut().find(|(o, c, _)| *o == op && *c == class) {
                        Some((_, _, n)) => *n += 1,
                        None => p.push((op, class, 1)),
                    }
                } else {
                    bump(
                        &mut self.counters.requests,
                        ("unknown".into(), op.into_owned(), class),
                        1,
                    );
                }
            }
            Event::DimseRefused {
                assoc,
                command,
                status,
                why,
                ..
            } => {
                self.totals.refused_requests += 1;
                let (source, calling_ae, called_ae, peer) = self.names(assoc.0);
                bump(
                    &mut self.counters.requests,
                    (
                        peer.clone().unwrap_or_else(|| "unknown".into()),
                        operation_name(command),
                        "refused",
                    ),
                    1,
                );
                self.refusal(
                    Refusal {
                        time: t,
                        kind: "request",
                        source,
                        calling_ae,
                        called_ae,
                        peer,
                        code: format!("0x{status:04X}"),
                        why: why.clone(),
                    },
                    out,
                );
            }
            Event::InstanceStored { assoc, bytes, .. } => {
                // The built-in vault (no upstream): the association's bytes so far.
                self.add_bytes(t, assoc.0, *bytes, 0);
            }
            Event::AssociationProgress {
                assoc,
                bytes_from_client,
                bytes_from_upstream,
            } => self.bytes_so_far(t, assoc.0, *bytes_from_client, *bytes_from_upstream),
            Event::AssociationReleased {
                assoc,
                bytes_from_client,
                bytes_from_upstream,
            } => {
                self.bytes_so_far(t, assoc.0, *bytes_from_client, *bytes_from_upstream);
                self.ended(t, assoc.0, "released", out);
            }
            Event::AssociationAborted { assoc, .. } => {
                self.ended(t, assoc.0, "aborted", out);
            }
            Event::Detection {
                source,
                peer,
                calling_ae,
                called_ae,
                rule,
                rule_kind,
                response,
                evidence,
                detail,
                ..
            } => self.alert(
                Alert {
                    id: 0,
                    time: t,
                    rule: rule.clone(),
                    rule_kind: rule_kind.clone(),
                    response: response.clone(),
                    source: source.map(|s| s.to_string()),
                    peer: peer.clone(),
                    calling_ae: calling_ae.clone(),
                    called_ae: called_ae.clone(),
                    detail: detail.clone(),
                    evidence: evidence.clone(),
                    acknowledged: None,
                },
                out,
            ),
            Event::SecurityAlert {
                assoc,
                kind,
                source,
                detail,
            } => {
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| "security-alert".into());
                let (src, calling_ae, called_ae, peer) =
                    assoc.map_or((None, None, None, None), |a| self.names(a.0));
                self.alert(
                    Alert {
                        id: 0,
                        time: t,
                        rule: kind.clone(),
                        rule_kind: kind,
                        response: "alert".into(),
                        source: source.map(|s| s.to_string()).or(src),
                        peer,
                        calling_ae,
                        called_ae,
                        detail: detail.clone(),
                        evidence: serde_json::Value::Null,
                        acknowledged: None,
                    },
                    out,
                )
            }
            Event::HoldDepth {
                dest,
                waiting,
                oldest_age_secs,
            } => {
                let h = &mut self.counters.hold;
                if *waiting == 0 {
                    h.remove(dest);
                } else if h.contains_key(dest) || h.len() < MAX_SERIES_PER_METRIC {
                    h.insert(dest.clone(), (*waiting, *oldest_age_secs));
                }
            }
            _ => {}
        }
    }
}

/// Feeds the console from the bus until the bus closes, ticking every second. The bus is read
/// in batches every 100 ms, not woken per event: a subscriber task woken for each of the
/// relay's events cost the relay ~5 % of its throughput on 2 cores (bench/RESULTS.md §16),
/// and the console shows nothing faster than once a second anyway.
pub fn spawn_feed(console: Arc<Console>, bus: &radguard_events::EventBus) {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls: u64 = 0;
        // The model is locked once per chunk of events, not per event (a plain relay emits
        // thousands a second), and for at most 1024 of them: `/metrics` and the pages wait for
        // one chunk at most.
        let mut batch = Vec::new();
        loop {
            poll.tick().await;
            let mut closed = false;
            loop {
                match rx.try_recv() {
                    Ok(rec) => batch.push(rec),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(n)) => {
                        tracing::warn!(target: "radguard::web", "console fell behind: {n} events not seen");
                    }
                    Err(TryRecvError::Closed) => {
                        closed = true;
                        break;
                    }
                }
            }
            for chunk in batch.chunks(1024) {
                console.observe_all(chunk.iter().map(|r| &**r));
            }
            batch.clear();
            if closed {
                return;
            }
            polls += 1;
            if polls.is_multiple_of(10) {
                console.tick(now_ms());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use radguard_events::AssocId;

    fn rec(t: u128, event: Event) -> EventRecord {
        EventRecord {
            seq: 0,
            time_ms: t,
            event,
        }
    }

    #[test]
    fn hold_queue_depth_is_a_gauge_per_destination() {
        let c = Console::new();
        let depth = |waiting, age| {
            rec(
                1,
                Event::HoldDepth {
                    dest: "PACS@10.0.0.5:104".into(),
                    waiting,
                    oldest_age_secs: age,
                },
            )
        };
        c.observe(&depth(300, 42));
        let text = crate::metrics::render(&c, crate::metrics::Gauges::default());
        assert!(text.contains("radguard_hold_queue_instances{dest=\"PACS@10.0.0.5:104\"} 300"));
        assert!(text.contains("radguard_hold_queue_oldest_seconds{dest=\"PACS@10.0.0.5:104\"} 42"));
        c.observe(&depth(0, 0));
        let text = crate::metrics::render(&c, crate::metrics::Gauges::default());
        assert!(!text.contains("radguard_hold_queue_instances{"));
    }

    #[test]
    fn names() {
        assert_eq!(operation_name("CStoreRq"), "C-STORE");
        assert_eq!(operation_name("NEventReportRsp"), "N-EVENT-REPORT");
        assert_eq!(operation_name("NCreateRq"), "N-CREATE");
        assert_eq!(operation_name("CFindRsp"), "C-FIND");
        assert_eq!(operation_name("Other(1)"), "Other(1)");
    }

    #[test]
    fn a_refused_caller_on_a_peers_address_is_not_that_peer() {
        let c = Console::new();
        let src: SocketAddr = "10.0.0.5:5000".parse().unwrap();
        let requested = |id, ae: &str| Event::AssociationRequested {
            assoc: AssocId(id),
            source: src,
            calling_ae: ae.into(),
            called_ae: "GW".into(),
            implementation_class_uid: "1.2".into(),
            implementation_version: None,
            contexts: 1,
            tls: None,
            user_identity: None,
        };
        c.observe(&rec(1, requested(1, "CT")));
        c.observe(&rec(
            2,
            Event::AssociationAccepted {
                assoc: AssocId(1),
                peer: "ct".into(),
                route: "main".into(),
                accepted_contexts: 1,
                rejected_contexts: 0,
                max_pdu_client: 0,
                max_pdu_upstream: 0,
                authenticated_user: None,
            },
        ));
        c.observe(&rec(3, requested(2, "EVIL")));
        c.observe(&rec(
            4,
            Event::AssociationRefused {
                assoc: AssocId(2),
                source: src,
                calling_ae: Some("EVIL".into()),
                called_ae: Some("GW".into()),
                result: 1,
                rj_source: 1,
                reason: 3,
                blame: radguard_events::Blame::Peer,
                why: "calling AE title not recognized".into(),
            },
        ));
        let seen = c.seen();
        assert_eq!(seen.len(), 2, "{seen:#?}");
        let ct = seen
            .iter()
            .find(|(_, s)| s.peer.as_deref() == Some("ct"))
            .unwrap();
        assert_eq!(ct.1.ae_titles.iter().collect::<Vec<_>>(), ["CT"]);
        let evil = seen
            .iter()
            .find(|(_, s)| s.ae_titles.contains("EVIL"))
            .unwrap();
        assert_eq!(evil.1.peer, None);
        assert!(evil.1.addresses.contains("10.0.0.5"), "{evil:?}");
    }

    #[test]
    fn association_lifecycle_and_counters() {
        let c = Console::new();
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        c.observe(&rec(
            1000,
            Event::AssociationRequested {
                assoc: AssocId(7),
                source: src,
                calling_ae: "MOD".into(),
                called_ae: "GW".into(),
                implementation_class_uid: "1.2".into(),
                implementation_version: None,
                contexts: 1,
                tls: None,
                user_identity: None,
            },
        ));
        assert!(c.associations().is_empty());
        c.observe(&rec(
            1001,
            Event::AssociationAccepted {
                assoc: AssocId(7),
                peer: "ct".into(),
                route: "main".into(),
                accepted_contexts: 1,
                rejected_contexts: 0,
                max_pdu_client: 0,
                max_pdu_upstream: 0,
                authenticated_user: None,
            },
        ));
        c.observe(&rec(
            1002,
            Event::DimseRequest {
                assoc: AssocId(7),
                message_id: 1,
                command: "CStoreRq".into(),
                sop_class: None,
                sop_instance: None,
                move_destination: None,
                subject: None,
                identifier: None,
            },
        ));
        let a = c.associations();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].operation.as_deref(), Some("C-STORE"));
        assert_eq!(a[0].requests, 1);
        c.observe(&rec(
            3001,
            Event::AssociationReleased {
                assoc: AssocId(7),
                bytes_from_client: 500,
                bytes_from_upstream: 20,
            },
        ));
        assert!(c.associations().is_empty());
        let t = c.totals();
        assert_eq!(
            (t.associations, t.bytes_from_clients, t.bytes_from_upstreams),
            (1, 500, 20)
        );
        c.with_counters(|k, running| {
            assert_eq!(running, 0);
            assert_eq!(k.associations[&("ct".into(), "main".into(), "released")], 1);
            assert_eq!(k.bytes[&("main".into(), "from_client")], 500);
            assert_eq!(k.duration_count, 1);
            // 2 s: not in the 1 s bucket, in the 5 s one.
            assert_eq!(k.duration_buckets[2], 0);
            assert_eq!(k.duration_buckets[3], 1);
        });
    }

    /// The pages live on the updates alone: the totals each second they changed (not when they
    /// did not), the closed series point and the totals every step.
    #[test]
    fn tick_sends_changed_totals_and_closed_points() {
        let c = Console::new();
        let mut rx = c.subscribe();
        let mut drain = || {
            let mut got = Vec::new();
            while let Ok(u) = rx.try_recv() {
                got.push(u);
            }
            got
        };
        let totals = |got: &[Update]| {
            got.iter()
                .filter_map(|u| match u {
                    Update::Totals(t) => Some(t.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let points = |got: &[Update]| {
            got.iter()
                .filter_map(|u| match u {
                    Update::Point(p) => Some(p.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let step = SERIES_STEP_MS;
        c.tick(10 * step); // opens the first bucket
        drain();
        c.tick(10 * step + 1000);
        assert!(totals(&drain()).is_empty(), "nothing changed, nothing sent");
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        c.observe(&rec(
            u128::from(10 * step + 1100),
            Event::AssociationRefused {
                assoc: AssocId(1),
                source: src,
                calling_ae: Some("X".into()),
                called_ae: Some("GW".into()),
                result: 1,
                rj_source: 1,
                reason: 7,
                blame: radguard_events::Blame::Peer,
                why: "called AE title not recognized".into(),
            },
        ));
        c.tick(10 * step + 2000);
        let got = drain();
        let t = totals(&got);
        assert_eq!(t.len(), 1, "{got:?}");
        assert_eq!(t[0].refused_associations, 1);
        c.tick(10 * step + 3000);
        assert!(totals(&drain()).is_empty(), "unchanged totals sent again");
        c.tick(11 * step);
        let got = drain();
        let p = points(&got);
        assert_eq!(p.len(), 1, "{got:?}");
        assert_eq!((p[0].t, p[0].refusals), (10 * step, 1));
        assert_eq!(totals(&got).len(), 1, "totals with each closed point");
    }

    /// The DIMSE commands' names come from a table (no allocation per request); it spells
    /// them as the general rule does.
    #[test]
    fn operation_table_matches_the_general_rule() {
        for c in [
            "CStoreRq",
            "CEchoRsp",
            "CFindRq",
            "CMoveRsp",
            "CGetRq",
            "CCancelRq",
            "NEventReportRsp",
            "NGetRq",
            "NSetRsp",
            "NActionRq",
            "NCreateRsp",
            "NDeleteRq",
        ] {
            assert!(matches!(operation(c), Cow::Borrowed(_)), "{c}");
            assert_eq!(operation(c), spelled(c), "{c}");
        }
        assert_eq!(operation("Other(1)"), "Other(1)");
    }

    /// Final responses are counted per peer, operation and status class, in one batch of
    /// events as one by one: an association ending in the batch and a response
    /// for an association the console never saw accepted are all counted.
    #[test]
    fn responses_counted_in_a_batch() {
        let accepted = |id: u64, peer: &str| Event::AssociationAccepted {
            assoc: AssocId(id),
            peer: peer.into(),
            route: "main".into(),
            accepted_contexts: 1,
            rejected_contexts: 0,
            max_pdu_client: 0,
            max_pdu_upstream: 0,
            authenticated_user: None,
        };
        let requested = |id: u64| Event::AssociationRequested {
            assoc: AssocId(id),
            source: "127.0.0.1:5000".parse().unwrap(),
            calling_ae: "MOD".into(),
            called_ae: "GW".into(),
            implementation_class_uid: "1.2".into(),
            implementation_version: None,
            contexts: 1,
            tls: None,
            user_identity: None,
        };
        let rsp = |id: u64, command: &str, status: u16| Event::DimseResponse {
            assoc: AssocId(id),
            message_id: 1,
            command: command.into(),
            status,
            from: Blame::Upstream,
            sop_class: None,
            sop_instance: None,
            subject: None,
            sub_operations: None,
            bytes: None,
        };
        let events = vec![
            requested(1),
            accepted(1, "ct"),
            requested(2),
            accepted(2, "mr"),
            rsp(1, "CStoreRsp", 0),
            rsp(1, "CStoreRsp", 0),
            rsp(1, "CStoreRsp", 0xA700),
            rsp(1, "CEchoRsp", 0),
            rsp(1, "CFindRsp", 0xFF00),
            rsp(2, "CStoreRsp", 0),
            Event::AssociationReleased {
                assoc: AssocId(2),
                bytes_from_client: 0,
                bytes_from_upstream: 0,
            },
            rsp(9, "CStoreRsp", 0),
        ];
        let recs: Vec<EventRecord> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| rec(i as u128, e))
            .collect();
        let key = |p: &str, o: &str, c: &'static str| (p.to_string(), o.to_string(), c);
        let expected = [
            (key("ct", "C-STORE", "success"), 2),
            (key("ct", "C-STORE", "failure"), 1),
            (key("ct", "C-ECHO", "success"), 1),
            (key("mr", "C-STORE", "success"), 1),
            (key("unknown", "C-STORE", "success"), 1),
        ];
        let batched = Console::new();
        batched.observe_all(recs.iter());
        let single = Console::new();
        for r in &recs {
            single.observe(r);
        }
        for c in [&batched, &single] {
            c.with_counters(|k, running| {
                assert_eq!(running, 1);
                assert_eq!(k.requests.len(), expected.len(), "{:?}", k.requests);
                for (key, n) in &expected {
                    assert_eq!(k.requests.get(key), Some(n), "{key:?}: {:?}", k.requests);
                }
            });
        }
    }

    #[test]
    fn alerts_are_bounded_and_acknowledged() {
        let c = Console::new();
        for i in 0..(MAX_ALERTS + 5) {
            c.observe(&rec(
                i as u128,
                Event::SecurityAlert {
                    assoc: None,
                    kind: radguard_events::AlertKind::NotAuthorized,
                    source: None,
                    detail: "x".into(),
                },
            ));
        }
        let a = c.alerts();
        assert_eq!(a.len(), MAX_ALERTS);
        assert_eq!(a[0].rule, "not-authorized");
        let id = a[0].id;
        assert_eq!(c.acknowledge(id, "alice"), Some(true));
        assert_eq!(c.acknowledge(id, "bob"), Some(false));
        assert_eq!(c.alert(id).unwrap().acknowledged.unwrap().by, "alice");
        assert_eq!(c.acknowledge(1, "alice"), None);
    }
}
