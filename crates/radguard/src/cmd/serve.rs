//! `radguard serve`: the inline gateway. All its wiring is here, in one place: config, data
//! folder, vault, integrity ledger, the audit trail's health gating admission, the block list
//! (detections' responses, SIGUSR1 re-reads it), the operator console (`[admin]`, radguard-web:
//! it subscribes to the bus and reads the parts through `console::ConsoleBackend`), the pid
//! file, the vault's scrub (`[scrub]`, `vault_scrub.rs`), SIGHUP reloads and the shutdown signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use radguard_audit::AuditWriter;
use radguard_events::{Event, EventBus};

use super::config::load_config;
use crate::logfmt::{self, LogFormat};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Policy and server settings (TOML). Unknown keys are errors.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where the gateway keeps its state (vault, index).
    #[arg(long, default_value = "./radguard-data")]
    pub data: PathBuf,
}

/// Runs `radguard serve` until SIGTERM or Ctrl-C; `log_format` is the global `--log-format`.
pub fn run(args: ServeArgs, log_format: Option<LogFormat>) -> ExitCode {
    use std::io::IsTerminal as _;
    init_logs(logfmt::choose(log_format, std::io::stderr().is_terminal()));
    match serve(args.config, args.data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radguard: {e:#}");
            match e.downcast_ref::<super::datadir::DataDirError>() {
                Some(super::datadir::DataDirError::Newer { .. }) => {
                    ExitCode::from(super::datadir::EXIT_NEWER)
                }
                _ => ExitCode::from(1),
            }
        }
    }
}

fn init_logs(format: LogFormat) {
    // tokio-postgres logs statement parameters (patient identifiers of audit records) at debug
    // level: never, whatever RADGUARD_LOG asks for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RADGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            "tokio_postgres::query=off"
                .parse()
                .expect("a static, valid directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.event_format(logfmt::JsonLines).init(),
        LogFormat::Text => builder.event_format(logfmt::TextLines).init(),
    }
}

fn serve(config: Option<PathBuf>, data: PathBuf) -> anyhow::Result<()> {
    let (loaded, tls) = load_config(config.as_deref())?;
    let started = loaded.clone();
    let radguard_config::Loaded {
        config: cfg,
        audit: audit_cfg,
        ledger: ledger_cfg,
        detect: detect_cfg,
        admin: admin_cfg,
        guard: guard_cfg,
        vault: vault_cfg,
        scrub: scrub_cfg,
    } = loaded;
    // The text in force for the console: read right after the file was loaded.
    let (in_force_tx, in_force_rx) = tokio::sync::watch::channel((
        super::console::config_text(config.as_deref()),
        radguard_gateway::shared::unix_ms(),
    ));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    // Before any store is opened: a folder written by a newer radguard is refused untouched.
    super::datadir::check_and_stamp(&data)?;
    let audit = audit_cfg
        .resolve(&data, Some(cfg.server.ae_title.as_str()))
        .context("the audit trail settings")?;
    let vault_dir = data.join("vault");
    let vault = Arc::new(
        radguard_vault::Vault::open_with(&vault_dir, vault_cfg)
            .with_context(|| format!("opening the vault in {}", vault_dir.display()))?,
    );
    let ledger_dir = data.join("ledger");
    let origin = ledger_cfg.origin_for(cfg.server.ae_title.as_str());
    let ledger = Arc::new(
        radguard_ledger::Ledger::open(&ledger_dir, &origin)
            .with_context(|| format!("opening the integrity ledger in {}", ledger_dir.display()))?,
    );
    let gateway_id = ledger_cfg.gateway_id_for(cfg.server.ae_title.as_str());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listeners = radguard_gateway::bind(&cfg.server)
            .await
            .context("binding the listeners")?;
        // The audit writer subscribes before anything can happen. The bus is large enough for
        // bursts (10,000 associations ≈ 60,000 events) so the writer does not lose events.
        let bus = EventBus::new(1 << 17);
        // The block list: a corrupt file stops the start (fix or remove it).
        let keeper = super::block::Keeper::open(&data, bus.clone())?;
        let (block_tx, block_rx) = tokio::sync::mpsc::unbounded_channel();
        // The detectors subscribe before the listeners start too: they see every association.
        // With detection off, the `overwrite` rule still runs: the ledger and the vault report
        // conflicting content through it.
        let trail = audit_cfg.enabled.then_some(&audit.store);
        let detectors = super::learned::prepare(&detect_cfg, &data, trail).await;
        spawn_detection(detectors, data.clone(), &bus, block_tx);
        let mut audit_handle = None;
        let mut exporters = Vec::new();
        let (admit_tx, admit_rx) = tokio::sync::watch::channel(true);
        if audit_cfg.enabled {
            let store = audit
                .store
                .open_async()
                .await
                .context("opening the audit store")?;
            let handle = AuditWriter::spawn(store, bus.subscribe(), audit.writer.clone());
            for e in &audit.exporters {
                let st = audit
                    .store
                    .open_async()
                    .await
                    .context("opening the audit store")?;
                exporters.push(
                    radguard_audit::syslog::SyslogExporter::spawn(
                        st,
                        e.clone(),
                        Some(handle.health()),
                    )
                    .context("starting the syslog export")?,
                );
            }
            // Admit nothing before the writer has read the chain head (or given up on the store).
            {
                let mut h = handle.health();
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    h.wait_for(|x| x.store_ok || x.stopped),
                )
                .await;
            }
            let _ = admit_tx.send(handle.admit_associations());
            let mut health = handle.health();
            let refuse = audit.writer.on_store_failure == radguard_audit::FailurePolicy::Refuse;
            tokio::spawn(async move {
                while health.changed().await.is_ok() {
                    let h = health.borrow().clone();
                    let ok = !refuse || (h.store_ok && !h.stopped);
                    if admit_tx.send(ok).is_err() {
                        break;
                    }
                }
            });
            audit_handle = Some(handle);
        } else {
            eprintln!("radguard: WARNING: [audit] enabled = false: nothing is audited");
        }
        // The console: bound before the gateway listens (a taken port or a bad certificate
        // stops the start), served once the gateway's parts exist.
        // Without an `[admin]` section a taken default port (another gateway on this host)
        // leaves the gateway without its console, with a warning; a configured console that
        // cannot start stops the start.
        let admin = if admin_cfg.enabled {
            match radguard_web::AdminServer::bind(&admin_cfg).await {
                Ok(a) => Some(a),
                Err(e) if admin_cfg == radguard_config::AdminConfig::default() => {
                    eprintln!(
                        "radguard: WARNING: console not started: {e} (set [admin] listen, or \
                         enabled = false)"
                    );
                    None
                }
                Err(e) => return Err(anyhow::Error::new(e).context("starting the console")),
            }
        } else {
            None
        };
        // Before the start-up lines, which are printed together (the first one tells a
        // supervisor the gateway is up).
        vault_lock_report(&vault, vault_cfg, &bus);
        let mut signed_head = None;
        checkpoint_index_log(&vault, &ledger, &mut signed_head)
            .context("checkpointing the vault's index log")?;
        spawn_index_log_checkpoints(vault.clone(), ledger.clone(), signed_head.clone());
        for l in &listeners {
            let addr = l.tcp.local_addr()?;
            let scheme = if l.tls { "dicom-tls" } else { "dicom" };
            println!(
                "radguard: listening on {scheme}://{addr} as AE {}",
                cfg.server.ae_title
            );
        }
        let data_abs = std::fs::canonicalize(&data).unwrap_or(data.clone());
        println!("radguard: data in {}", data_abs.display());
        println!(
            "radguard: integrity ledger in {} (origin {origin})",
            ledger_dir.display()
        );
        match &audit.store {
            _ if !audit_cfg.enabled => {
                println!("radguard: audit trail OFF ([audit] enabled = false)")
            }
            radguard_audit::StoreSpec::Sqlite(p) => {
                println!("radguard: audit trail in {} (SQLite)", p.display())
            }
            radguard_audit::StoreSpec::Postgres { schema, .. } => {
                println!(
                    "radguard: audit trail in PostgreSQL (schema {})",
                    schema.as_deref().unwrap_or("default")
                )
            }
        }
        if detect_cfg.enabled {
            let names: Vec<String> = detect_cfg.rules().into_iter().map(|r| r.name).collect();
            println!("radguard: detection on: {}", names.join(", "));
        } else {
            println!(
                "radguard: detection OFF ([detect] enabled = false; overwrite alerts stay on)"
            );
        }
        match &admin {
            Some(a) => println!(
                "radguard: console on {}{}",
                a.url(),
                if admin_cfg.requires_tokens() {
                    ""
                } else {
                    " (no [[admin.token]]: loopback only, every client is the local operator)"
                }
            ),
            None if admin_cfg.enabled => println!("radguard: console OFF (not started)"),
            None => println!("radguard: console OFF ([admin] enabled = false)"),
        }
        match &config {
            Some(p) => println!("radguard: policy from {}", p.display()),
            None => println!("radguard: policy: embedded defaults (loopback only)"),
        }
        println!("{}", cfg.describe());
        let (policy_tx, policy_rx) = tokio::sync::watch::channel(cfg.policy.clone());
        let console_policy = policy_rx.clone();
        let (tls_tx, tls_rx) = tokio::sync::watch::channel(Arc::new(tls));
        let shared = radguard_gateway::Shared::new(
            cfg.server.clone(),
            policy_rx,
            tls_rx,
            admit_rx,
            Some(vault.clone()),
            Some((ledger.clone(), gateway_id)),
            bus.clone(),
        );
        // The scan-protocol and dose guard ([guard]), before the first association.
        shared.set_guard(radguard_gateway::guard::Guard::new(guard_cfg));
        // Hold routes: the queue of instances held for an unreachable upstream, and its
        // forwarders (instances queued before a restart leave as soon as their archive answers).
        let hold_path = data.join("hold-queue.sqlite");
        let hold = radguard_vault::queue::HoldQueue::open(&hold_path)
            .with_context(|| format!("opening the hold queue {}", hold_path.display()))?;
        let _ = shared.hold.set(Arc::new(hold));
        radguard_gateway::forward::spawn(shared.clone(), data.clone());
        // The vault's scrub ([scrub]): re-hashes stored objects at its rate, in the background.
        let scrub_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        super::vault_scrub::spawn(
            vault.clone(),
            &ledger_dir,
            scrub_cfg,
            bus.clone(),
            scrub_stop.clone(),
        );
        // Expired entries dropped and operators' changes reported before the first association.
        keeper.spawn(shared.clone(), block_rx)?;
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        if let Some(admin) = admin {
            let backend = super::console::ConsoleBackend {
                policy: console_policy,
                data: data.clone(),
                config_path: config.clone(),
                in_force: in_force_rx,
                audit: audit_cfg.enabled.then(|| audit.store.clone()),
                audit_health: audit_handle.as_ref().map(|h| h.health()),
                ledger: ledger.clone(),
                vault: vault.clone(),
                reload: reload_tx,
                verified: std::sync::Mutex::new(None),
            };
            admin.spawn(&bus, Arc::new(backend));
        }
        reload_on_sighup(
            config.clone(),
            started,
            policy_tx,
            tls_tx,
            bus.clone(),
            reload_rx,
            in_force_tx,
        );
        // Written once SIGUSR1 and SIGHUP are handled (their default action would end the
        // process: `radguard reload` or `radguard block` right after the start must not).
        let pid_file = data.join("radguard.pid");
        let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
        radguard_gateway::serve(shared, listeners, shutdown_signal()).await;
        if let Err(e) = checkpoint_index_log(&vault, &ledger, &mut signed_head) {
            eprintln!("radguard: checkpointing the vault's index log: {e:#}");
        }
        // Its blocking step ends within ~100 ms, the cursor saved (the runtime waits for it).
        scrub_stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for e in exporters {
            let _ = e.shutdown().await;
        }
        if let Some(h) = audit_handle {
            if let Err(e) = h.shutdown().await {
                eprintln!("radguard: audit trail shutdown: {e}");
            }
        }
        let _ = std::fs::remove_file(&pid_file);
        println!("radguard: stopped");
        anyhow::Ok(())
    })
}

/// Says once, at start, whether vault objects are made immutable (`[vault] immutable`); when
/// they cannot be, a warning naming the fix and a `security-alert` (kind
/// `vault-not-immutable`, audited), then the retention pass daily (`retention_days`).
fn vault_lock_report(
    vault: &Arc<radguard_vault::Vault>,
    cfg: radguard_config::VaultConfig,
    bus: &EventBus,
) {
    use radguard_vault::LockOutcome;
    match vault.lock_status() {
        None => println!("radguard: vault objects NOT immutable ([vault] immutable = \"off\")"),
        Some(LockOutcome::Locked) => {
            let retention = match cfg.retention_days {
                0 => "for ever".to_string(),
                d => format!("for {d} days"),
            };
            println!("radguard: vault objects immutable (FS_IMMUTABLE_FL), {retention}");
        }
        Some(outcome) => {
            let detail = format!(
                "vault objects NOT immutable ({}): {}",
                outcome.as_str(),
                outcome.explain()
            );
            eprintln!("radguard: WARNING: {detail}");
            tracing::warn!(target: "radguard::vault", "{detail}");
            bus.emit(Event::SecurityAlert {
                assoc: None,
                kind: radguard_events::AlertKind::VaultNotImmutable,
                source: None,
                detail,
            });
        }
    }
    if cfg.retention_days > 0 && vault.lock_status().is_some() {
        let vault = vault.clone();
        tokio::spawn(async move {
            // The first pass ran in `Vault::open`.
            let day = std::time::Duration::from_secs(86_400);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + day, day);
            loop {
                tick.tick().await;
                let v = vault.clone();
                match tokio::task::spawn_blocking(move || {
                    v.release_expired(std::time::SystemTime::now())
                })
                .await
                {
                    Ok(Ok(n)) if n > 0 => tracing::info!(
                        target: "radguard::vault",
                        "retention: {n} objects past retention_days released (immutable flag cleared)"
                    ),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(target: "radguard::vault", "retention pass: {e}"),
                    Err(e) => tracing::warn!(target: "radguard::vault", "retention pass: {e}"),
                }
            }
        });
    }
}

/// Signs the vault's index log head (line count, hash of the last line) with the integrity
/// ledger's key into `vault/index-log/checkpoint`, a C2SP checkpoint of origin
/// `<ledger origin>/vault-index-log` that the ledger's verifier key checks; `last` is the head
/// signed before (nothing is written when it has not moved). A later check can then tell that
/// the log was rewritten before that head, even by someone who rebuilt a consistent chain.
fn checkpoint_index_log(
    vault: &radguard_vault::Vault,
    ledger: &radguard_ledger::Ledger,
    last: &mut Option<radguard_vault::IndexLogHead>,
) -> anyhow::Result<()> {
    let head = vault.index_log_head()?;
    if last.as_ref() == Some(&head) {
        return Ok(());
    }
    let mut root = [0u8; 32];
    hex::decode_to_slice(&head.hash, &mut root).context("the index log head")?;
    let checkpoint = radguard_ledger::note::Checkpoint {
        origin: format!("{}/vault-index-log", ledger.origin()),
        size: head.count,
        root,
    };
    let note = ledger.sign_foreign_checkpoint(&checkpoint)?;
    vault.write_index_log_checkpoint(&note)?;
    *last = Some(head);
    Ok(())
}

/// [`checkpoint_index_log`] every minute while the gateway runs.
fn spawn_index_log_checkpoints(
    vault: Arc<radguard_vault::Vault>,
    ledger: Arc<radguard_ledger::Ledger>,
    mut last: Option<radguard_vault::IndexLogHead>,
) {
    tokio::spawn(async move {
        let period = std::time::Duration::from_secs(60);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (v, l) = (vault.clone(), ledger.clone());
            let mut prev = last.clone();
            match tokio::task::spawn_blocking(move || {
                checkpoint_index_log(&v, &l, &mut prev).map(|()| prev)
            })
            .await
            {
                Ok(Ok(now)) => last = now,
                Ok(Err(e)) => {
                    tracing::warn!(target: "radguard::vault", "index log checkpoint: {e:#}")
                }
                Err(e) => tracing::warn!(target: "radguard::vault", "index log checkpoint: {e}"),
            }
        }
    });
}

/// Feeds every event of the bus to the detectors (radguard-detect) and emits one `detection`
/// event per rule that fires; the audit trail records it as a PS3.15 A.5 Security Alert
/// (110113) with the rule. The detectors' clocks are this task's monotonic clock and the local
/// wall clock (`learned::now`); learned bulk-retrieve baselines are saved to the data folder
/// when they change (at most every few seconds). A rule's `throttle` or `block` response goes
/// to the block list's keeper (cmd/block.rs), which adds the entry, publishes it to the gateway
/// and cuts the subject's associations.
fn spawn_detection(
    mut detectors: radguard_detect::Detectors,
    data: PathBuf,
    bus: &EventBus,
    blocks: tokio::sync::mpsc::UnboundedSender<super::block::BlockRequest>,
) {
    let mut rx = bus.subscribe();
    let bus = bus.clone();
    let start = tokio::time::Instant::now();
    let mut saver = super::learned::Saver::new(data);
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::TryRecvError;
        // The bus is read in batches every 100 ms, not woken per event: a task woken for each
        // of the relay's events costs the relay ~5 % on 2 cores (bench/RESULTS.md §16); a
        // detection (and its block) comes at most 100 ms later.
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(100));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'feed: loop {
            poll.tick().await;
            loop {
                let record = match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(n)) => {
                        tracing::warn!(target: "radguard::detect", "detection fell behind: {n} events not seen");
                        continue;
                    }
                    Err(TryRecvError::Closed) => break 'feed,
                };
                let now = super::learned::now(start, record.time_ms);
                for d in detectors.observe_at(now, &record.event) {
                    bus.emit(d.event());
                    if let Some(r) = super::block::request_for(&d) {
                        let _ = blocks.send(r);
                    }
                }
            }
            saver.save(&mut detectors, false);
        }
        saver.save(&mut detectors, true);
    });
}

/// SIGHUP (or `radguard reload`, or the console's reload): reload the config file; a config
/// that fails anywhere (syntax, policy, certificates) is refused whole and the one in force
/// stays, and so is one that changes what only a restart applies
/// (`radguard_config::Loaded::restart_needed`: listeners, caps, timeouts, `[audit]`,
/// `[ledger]`, `[detect]`, `[admin]`), naming the keys. Every request after a reload, on
/// running associations too, is judged under the new policy. A console request gets the
/// outcome back on its oneshot.
fn reload_on_sighup(
    config: Option<PathBuf>,
    started: radguard_config::Loaded,
    policy_tx: tokio::sync::watch::Sender<radguard_policy::Policy>,
    tls_tx: tokio::sync::watch::Sender<Arc<radguard_gateway::TlsState>>,
    bus: EventBus,
    mut console: tokio::sync::mpsc::Receiver<super::console::ReloadRequest>,
    in_force: tokio::sync::watch::Sender<(String, u64)>,
) {
    // SIGHUP is handled from here on (not from inside the task): the pid file is written next.
    #[cfg(unix)]
    let mut hup = {
        use tokio::signal::unix::{signal, SignalKind};
        let h = signal(SignalKind::hangup()).ok();
        if h.is_none() {
            eprintln!("radguard: WARNING: cannot handle SIGHUP: reload by signal unavailable");
        }
        h
    };
    tokio::spawn(async move {
        let mut console_open = true;
        loop {
            #[cfg(unix)]
            let sig = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let sig = std::future::pending::<Option<()>>();
            let from_console = async {
                if console_open {
                    console.recv().await
                } else {
                    std::future::pending().await
                }
            };
            let reply = tokio::select! {
                s = sig => match s {
                    Some(_) => None,
                    None => break,
                },
                r = from_console => match r {
                    Some(r) => Some(r),
                    None => {
                        // No console (or it stopped): SIGHUP only from now on.
                        console_open = false;
                        continue;
                    }
                },
            };
            let (ok, detail) = reload_once(config.as_deref(), &started, &policy_tx, &tls_tx).await;
            if ok {
                let text = super::console::config_text(config.as_deref());
                let _ = in_force.send((text, radguard_gateway::shared::unix_ms()));
            }
            bus.emit(Event::ConfigReloaded {
                ok,
                detail: detail.clone(),
            });
            if let Some(r) = reply {
                let _ = r.send((ok, detail));
            }
        }
    });
}

/// One reload: `(ok, detail)` as the `config-reloaded` event words it.
async fn reload_once(
    config: Option<&std::path::Path>,
    started: &radguard_config::Loaded,
    policy_tx: &tokio::sync::watch::Sender<radguard_policy::Policy>,
    tls_tx: &tokio::sync::watch::Sender<Arc<radguard_gateway::TlsState>>,
) -> (bool, String) {
    let Some(path) = config else {
        return (
            false,
            "running on embedded defaults: nothing to reload".into(),
        );
    };
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load_config(Some(&p))).await;
    match loaded {
        Ok(Ok((new, _))) if !started.restart_needed(&new).is_empty() => {
            let keys = started.restart_needed(&new).join(", ");
            (
                false,
                format!(
                    "new config refused, the old one stays in force: {keys} changed, \
                     which only a restart applies"
                ),
            )
        }
        Ok(Ok((new, tls))) => {
            let _ = tls_tx.send(Arc::new(tls));
            let _ = policy_tx.send(new.config.policy);
            (
                true,
                format!("policy and certificates reloaded from {}", path.display()),
            )
        }
        Ok(Err(e)) => (
            false,
            format!("new config refused, the old one stays in force: {e:#}"),
        ),
        Err(e) => (false, format!("reload failed: {e}")),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
