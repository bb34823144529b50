//! `radguard block list|add|remove`: the block list of a data folder (`<data>/blocks.json`,
//! radguard-block), and the part of `radguard serve` that keeps it: detections' `block` and
//! `throttle` responses become entries, entries expire on a timer, and operators' changes
//! (made with the gateway running or stopped) are picked up on SIGUSR1 and at start. Every
//! change is an event on the bus (audited as a Security Alert, 110129 Security Configuration).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use radguard_block::{Action, Entry, Origin, Selector, Store, Subject};
use radguard_events::{Event, EventBus};
use radguard_gateway::shared::unix_ms;
use radguard_gateway::Shared;

#[derive(Debug, Clone, clap::Args)]
pub struct BlockArgs {
    #[command(subcommand)]
    pub command: BlockCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BlockCommand {
    /// Show the entries: id, subject, action, rule, since, until, time remaining, reason.
    ///
    /// Entries removed but not yet reported by the gateway are shown as such. Exit status 0, 2
    /// when the file cannot be read.
    List {
        /// One JSON object per entry (one line each).
        #[arg(long)]
        json: bool,
        /// The gateway's data folder (holds blocks.json).
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
    /// Block a subject for a while (refuse its new associations, cut its running ones).
    ///
    /// Exactly one of --address, --calling-ae, --certificate. A running gateway (pid file in
    /// --data) is told at once (SIGUSR1); a stopped one applies and audits the block when it
    /// starts. Exit status 0, 2 on usage or file error.
    Add {
        /// A source IP address.
        #[arg(long, group = "subject", required = true)]
        address: Option<String>,
        /// A calling AE title.
        #[arg(long, group = "subject")]
        calling_ae: Option<String>,
        /// A client certificate's SHA-256 (64 hex digits, as `radguard tls fingerprint` prints).
        #[arg(long, group = "subject")]
        certificate: Option<String>,
        /// How long: seconds, or a number with s, m, h or d (e.g. 90s, 30m, 12h, 7d).
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
        /// Why (kept in the list and the audit trail: no patient data).
        #[arg(long, default_value = "blocked by an operator")]
        reason: String,
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
    /// Remove entries before their end: by id (`radguard block list`) or by subject
    /// (`address=IP` or a bare IP, `calling-ae=AE`, `certificate=SHA256`).
    ///
    /// The running gateway reports the removal (event, audit) when told (SIGUSR1), a stopped one
    /// when it starts. Exit status 0 removed, 1 nothing matched, 2 on usage or file error.
    Remove {
        /// An entry id or a subject.
        target: String,
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
}

/// Runs `radguard block`.
pub fn run(args: BlockArgs) -> ExitCode {
    let data = match &args.command {
        BlockCommand::List { data, .. }
        | BlockCommand::Add { data, .. }
        | BlockCommand::Remove { data, .. } => data,
    };
    if let Some(code) = super::datadir::refuse_newer_exit(data) {
        return code;
    }
    let r = match args.command {
        BlockCommand::List { json, data } => list(&data, json).map(|()| 0),
        BlockCommand::Add {
            address,
            calling_ae,
            certificate,
            duration,
            reason,
            data,
        } => add(&data, address, calling_ae, certificate, duration, &reason).map(|()| 0),
        BlockCommand::Remove { target, data } => remove(&data, &target),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("radguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a duration is a number with s, m, h or d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err("a duration of 0 blocks nothing".into()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("{s:?} is too long")),
    }
}

fn rfc3339(ms: u64) -> String {
    radguard_audit::time::rfc3339_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// One entry as `radguard block list --json` prints it (and the console's `/blocks` serves).
fn entry_json(e: &Entry, now: u64) -> anyhow::Result<serde_json::Value> {
    let remaining = e.until_unix_ms.saturating_sub(now) / 1000;
    let mut v = serde_json::to_value(e)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("subject".into(), e.subject.to_string().into());
        o.insert("action".into(), e.action.describe().into());
        o.insert("since".into(), rfc3339(e.since_unix_ms).into());
        o.insert("until".into(), rfc3339(e.until_unix_ms).into());
        o.insert("remaining_secs".into(), remaining.into());
    }
    Ok(v)
}

/// The entries of `<data>/blocks.json` as `block list --json` gives them (none: no file).
pub fn entries_json(data: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let store = Store::in_dir(data);
    if !store.path().exists() {
        return Ok(Vec::new());
    }
    let l = store.load()?;
    let now = unix_ms();
    l.entries().map(|e| entry_json(e, now)).collect()
}

/// The console's unblock: marks entry `id` removed by `by`, as `block remove ID` does, and
/// tells this process's keeper (SIGUSR1), which reports and audits the removal. `Ok(false)`:
/// no such entry.
pub fn remove_id(data: &Path, id: u64, by: &str) -> anyhow::Result<bool> {
    let store = Store::in_dir(data);
    if !store.path().exists() {
        return Ok(false);
    }
    let (removed, _) = store.update(|l| {
        let r = l.mark_removed(&Selector::Id(id), by, unix_ms());
        let changed = !r.is_empty();
        (r, changed)
    })?;
    if removed.is_empty() {
        return Ok(false);
    }
    super::reload::signal(std::process::id(), super::reload::ToGateway::Blocks)?;
    Ok(true)
}

fn list(data: &Path, json: bool) -> anyhow::Result<()> {
    let l = Store::in_dir(data).load()?;
    let now = unix_ms();
    for e in l.entries() {
        let remaining = e.until_unix_ms.saturating_sub(now) / 1000;
        if json {
            println!("{}", entry_json(e, now)?);
        } else {
            let state = match &e.removed {
                Some(r) => format!(" (removed by {}, not yet reported)", r.by),
                None => String::new(),
            };
            println!(
                "{:>4}  {}  {}  rule {}  since {}  until {} ({} s left){state}  {}",
                e.id,
                e.subject,
                e.action.describe(),
                e.rule,
                rfc3339(e.since_unix_ms),
                rfc3339(e.until_unix_ms),
                remaining,
                e.reason
            );
        }
    }
    if !json && l.is_empty() {
        println!("radguard: the block list of {} is empty", data.display());
    }
    Ok(())
}

fn add(
    data: &Path,
    address: Option<String>,
    calling_ae: Option<String>,
    certificate: Option<String>,
    duration: Duration,
    reason: &str,
) -> anyhow::Result<()> {
    let subject = match (address, calling_ae, certificate) {
        (Some(a), None, None) => format!("address={a}").parse::<Subject>()?,
        (None, Some(ae), None) => Subject::calling_ae(&ae)?,
        (None, None, Some(c)) => Subject::certificate(&c)?,
        _ => anyhow::bail!("give exactly one of --address, --calling-ae, --certificate"),
    };
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let now = unix_ms();
    let until = now.saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
    let (added, _) = Store::in_dir(data).update(|l| {
        let a = l.add(
            subject,
            Action::Block,
            "operator",
            reason,
            Origin::Operator,
            now,
            until,
            false,
        );
        (a, true)
    })?;
    println!(
        "radguard: block {} {} until {}{}",
        added.entry.id,
        added.entry.subject,
        rfc3339(added.entry.until_unix_ms),
        if added.extended { " (extended)" } else { "" }
    );
    tell_gateway(data);
    Ok(())
}

fn remove(data: &Path, target: &str) -> anyhow::Result<u8> {
    let sel: Selector = target.parse()?;
    let by = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map_or_else(|| "operator".to_string(), |u| format!("operator {u}"));
    let store = Store::in_dir(data);
    if !store.path().exists() {
        eprintln!(
            "radguard: no block list in {} ({} not found): nothing removed",
            data.display(),
            store.path().display()
        );
        return Ok(1);
    }
    let (removed, _) = store.update(|l| {
        let r = l.mark_removed(&sel, &by, unix_ms());
        let changed = !r.is_empty();
        (r, changed)
    })?;
    if removed.is_empty() {
        eprintln!("radguard: no block matches {target:?} (see radguard block list)");
        return Ok(1);
    }
    for e in &removed {
        println!(
            "radguard: removed block {} {} ({})",
            e.id,
            e.subject,
            e.action.describe()
        );
    }
    tell_gateway(data);
    Ok(0)
}

/// SIGUSR1 to the gateway whose pid file is in `data`, if it runs.
fn tell_gateway(data: &Path) {
    let pid_file = data.join("radguard.pid");
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        println!("radguard: no gateway running on this data folder: it applies the change when it starts");
        return;
    };
    match super::reload::signal(pid, super::reload::ToGateway::Blocks) {
        Ok(()) => println!("radguard: told the gateway (pid {pid}) to re-read its block list"),
        Err(e) => println!(
            "radguard: could not tell pid {pid} ({e:#}): the gateway applies the change when it starts"
        ),
    }
}

/// What a detection asks the block list for.
#[derive(Debug, Clone)]
pub struct BlockRequest {
    pub subject: Subject,
    pub action: Action,
    pub for_secs: u64,
    pub rule: String,
    pub reason: String,
}

/// The request a detection's response makes, if any (an `alert`, or a subject the detection
/// does not know — e.g. `block_by = "certificate"` without TLS — makes none).
pub fn request_for(d: &radguard_detect::Detection) -> Option<BlockRequest> {
    use radguard_detect::{BlockBy, Response};
    let (action, for_secs) = match d.response {
        Response::Alert => return None,
        Response::Block { for_secs } => (Action::Block, for_secs),
        Response::Throttle {
            per_minute,
            for_secs,
        } => (Action::Throttle { per_minute }, for_secs),
    };
    let subject = match d.block_by {
        BlockBy::Address => Subject::Address(d.source?.ip()),
        BlockBy::CallingAe => Subject::calling_ae(d.calling_ae.as_deref()?).ok()?,
        BlockBy::Certificate => Subject::certificate(d.certificate.as_deref()?).ok()?,
    };
    Some(BlockRequest {
        subject,
        action,
        for_secs,
        rule: d.rule.clone(),
        reason: d.summary(),
    })
}

fn added_event(e: &Entry, cut: usize) -> Event {
    Event::BlockAdded {
        id: e.id,
        subject: e.subject.to_string(),
        action: e.action.describe(),
        rule: e.rule.clone(),
        reason: e.reason.clone(),
        until_unix_ms: e.until_unix_ms,
        origin: match e.origin {
            Origin::Detection => "detection",
            Origin::Operator => "operator",
        }
        .into(),
        cut,
    }
}

fn removed_event(e: &Entry, by: &str) -> Event {
    Event::BlockRemoved {
        id: e.id,
        subject: e.subject.to_string(),
        action: e.action.describe(),
        rule: e.rule.clone(),
        by: by.to_string(),
    }
}

fn expired_event(e: &Entry) -> Event {
    Event::BlockExpired {
        id: e.id,
        subject: e.subject.to_string(),
        action: e.action.describe(),
        rule: e.rule.clone(),
    }
}

/// The gateway's side of the block list.
pub struct Keeper {
    store: Store,
    bus: EventBus,
}

/// Changes read from the file that the gateway has to report.
struct Synced {
    removed: Vec<Entry>,
    added: Vec<Entry>,
    expired: Vec<Entry>,
}

impl Keeper {
    /// Reads `<data>/blocks.json` (a corrupt file stops the start: the gateway does not run
    /// without the blocks it was told to keep).
    pub fn open(data: &Path, bus: EventBus) -> anyhow::Result<Keeper> {
        let store = Store::in_dir(data);
        store
            .load()
            .with_context(|| "reading the block list".to_string())?;
        Ok(Keeper { store, bus })
    }

    /// Picks up what changed in the file (operator additions and removals, expiry), reports
    /// it, publishes the list to the gateway and cuts what operators blocked.
    fn sync(&self, shared: &Shared) -> anyhow::Result<()> {
        let now = unix_ms();
        let (s, list) = self.store.update(|l| {
            let s = Synced {
                removed: l.take_removed(),
                added: l.take_unannounced(),
                expired: l.expire(now),
            };
            let changed = !(s.removed.is_empty() && s.added.is_empty() && s.expired.is_empty());
            (s, changed)
        })?;
        shared.set_blocks(Arc::new(list));
        for e in &s.removed {
            let by = e.removed.as_ref().map_or("operator", |r| r.by.as_str());
            self.bus.emit(removed_event(e, by));
        }
        for e in &s.expired {
            self.bus.emit(expired_event(e));
        }
        for e in &s.added {
            let cut = cut_for(shared, e);
            self.bus.emit(added_event(e, cut));
        }
        Ok(())
    }

    /// Adds (or extends) the entry a detection asked for, publishes it and cuts the subject's
    /// running associations (block only).
    fn add(&self, shared: &Shared, r: BlockRequest) -> anyhow::Result<()> {
        let now = unix_ms();
        let until = now.saturating_add(r.for_secs.saturating_mul(1000));
        let (added, list) = self.store.update(|l| {
            let a = l.add(
                r.subject.clone(),
                r.action,
                &r.rule,
                &r.reason,
                Origin::Detection,
                now,
                until,
                true,
            );
            (a, true)
        })?;
        shared.set_blocks(Arc::new(list));
        if let Some(ev) = &added.evicted {
            self.bus
                .emit(removed_event(ev, "eviction: the block list is full"));
        }
        let cut = cut_for(shared, &added.entry);
        self.bus.emit(added_event(&added.entry, cut));
        Ok(())
    }

    /// Runs the keeper: detections' requests, SIGUSR1 (operator changes), the expiry timer.
    pub fn spawn(
        self,
        shared: Arc<Shared>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<BlockRequest>,
    ) -> anyhow::Result<()> {
        // At start: expired entries dropped, operator changes made while stopped reported.
        self.sync(&shared)?;
        #[cfg(unix)]
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .context("listening for SIGUSR1")?;
        let keeper = Arc::new(self);
        tokio::spawn(async move {
            loop {
                let next = shared.blocks().next_expiry();
                let wait = next.map_or(Duration::from_secs(3600), |t| {
                    Duration::from_millis(t.saturating_sub(unix_ms()))
                        .min(Duration::from_secs(3600))
                });
                #[cfg(unix)]
                let usr = usr1.recv();
                #[cfg(not(unix))]
                let usr = std::future::pending::<Option<()>>();
                let job: Option<BlockRequest> = tokio::select! {
                    r = requests.recv() => match r {
                        Some(r) => Some(r),
                        None => break,
                    },
                    _ = usr => None,
                    _ = tokio::time::sleep(wait) => None,
                };
                let (k, sh) = (keeper.clone(), shared.clone());
                let done = tokio::task::spawn_blocking(move || match job {
                    Some(r) => k.add(&sh, r).and_then(|()| k.sync(&sh)),
                    None => k.sync(&sh),
                })
                .await;
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!(target: "radguard::block", "block list: {e:#}");
                        // A broken file is not re-read in a tight loop.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => tracing::error!(target: "radguard::block", "block list task: {e}"),
                }
            }
        });
        Ok(())
    }
}

/// Cuts the subject's running associations for a block entry; a throttle cuts nothing.
fn cut_for(shared: &Shared, e: &Entry) -> usize {
    match e.action {
        Action::Block => shared.cut(
            &e.subject,
            &format!("blocked by rule {} (block {})", e.rule, e.id),
        ),
        Action::Throttle { .. } => 0,
    }
}
