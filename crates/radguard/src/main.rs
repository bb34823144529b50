//! `radguard`: the inline DICOM security gateway and the tools around it.
//!
//! This file is the binary's edge: argument parsing, logging set-up, exit codes. Everything it
//! runs lives in the library crates (see ARCHITECTURE.md).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

mod logfmt;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use radguard_audit::config::AuditConfig;
use radguard_audit::AuditWriter;
use radguard_events::{Event, EventBus};
use radguard_policy::Config;

/// Radguard: a security gateway for medical imaging devices (DICOM).
///
/// Put it directly in front of a modality or an archive: it relays DICOM associations under a
/// default-deny policy per peer and per operation, checks the protocol strictly, answers refused
/// requests itself, and records every decision as a structured event.
#[derive(Parser)]
#[command(name = "radguard", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the inline DICOM gateway.
    ///
    /// Without --config it runs on its embedded defaults: listens on 127.0.0.1:11112 as AE
    /// RADGUARD, routes called AE RADGUARD to the built-in vault under --data, and admits any
    /// calling AE from loopback for C-ECHO and C-STORE only. Anything reachable from another
    /// host needs an explicit config (see docs/config.md). Events are written to stderr as
    /// JSON lines; SIGTERM or Ctrl-C stops accepting and lets running associations finish.
    Serve {
        /// Policy and server settings (TOML). Unknown keys are errors.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the gateway keeps its state (vault, index).
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Json)]
        log_format: LogFormat,
    },
    /// Scan DICOM files, folders and media (DICOMDIR) for malware and malformed content.
    ///
    /// Each file gets a verdict (clean, suspicious, malicious, not-dicom, malformed) with
    /// findings; exit status 0 when everything is clean, 1 when anything is not, 2 on usage error.
    Scan(radguard_media::cli::ScanArgs),
    /// Rebuild DICOM files from their parsed content (content disarm and reconstruction).
    ///
    /// Writes new Part 10 files under --out (zeroed preamble, rebuilt meta header, no trailing
    /// data); files that cannot be made safe go to OUT/quarantine/ with a reason file. Inputs are
    /// never modified.
    Sanitize(radguard_media::cli::SanitizeArgs),
    /// Verify DICOM files against the integrity ledger: unchanged, altered, lossy-reencoded or
    /// unknown; exit 1 if anything was altered.
    Verify(radguard_ledger::cli::VerifyArgs),
    /// The integrity ledger for auditors: checkpoints, inclusion and consistency proofs, the
    /// public key (enough to check a proof offline).
    Ledger(radguard_ledger::cli::LedgerArgs),
    /// De-identify DICOM files (PS3.15 Annex E profiles), or check files for residual PHI.
    Deid(radguard_deid::cli::DeidArgs),
    /// Read, search, verify and export the tamper-evident audit trail.
    Audit(radguard_audit::cli::AuditArgs),
    /// TLS quick start: a local CA, gateway and client certificates; certificate fingerprints.
    Tls(radguard_tls::cli::TlsArgs),
    /// Make an Argon2id hash of a passcode for a `[[user]]` entry (User Identity type 2).
    Passwd(radguard_tls::cli::PasswdArgs),
    /// Ask a running `radguard serve` to reload its config and certificates (SIGHUP).
    ///
    /// A new config that fails anywhere is refused whole; the old one stays in force and running
    /// associations are never dropped.
    Reload {
        /// The data folder of the running gateway (holds radguard.pid).
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file: prints every error as FILE:LINE:COL with the field, exit 1 if
    /// any, 0 when valid (and then prints the policy it describes).
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration as TOML.
    Default,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            data,
            log_format,
        } => {
            init_logs(log_format);
            match serve(config, data) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("radguard: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Reload { data } => match reload(&data) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("radguard: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Verify(args) => exit(radguard_ledger::cli::run_verify(args)),
        Command::Ledger(args) => exit(radguard_ledger::cli::run_ledger(args)),
        Command::Deid(args) => exit(radguard_deid::cli::run_deid(args)),
        Command::Audit(args) => exit(radguard_audit::cli::run_audit(args)),
        Command::Tls(args) => exit(radguard_tls::cli::run_tls(args)),
        Command::Passwd(args) => exit(radguard_tls::cli::run_passwd(args)),
        Command::Scan(args) => exit(radguard_media::cli::run_scan(args)),
        Command::Sanitize(args) => exit(radguard_media::cli::run_sanitize(args)),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match radguard_policy::load_file(&file) {
            Ok(_) => match load_config(Some(&file)) {
                Ok((cfg, ..)) => {
                    println!("{}: OK", file.display());
                    println!("{}", cfg.describe());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e:#}", file.display());
                    ExitCode::from(1)
                }
            },
            Err(errs) => {
                eprintln!("{errs}");
                eprintln!("{}: {} error(s)", file.display(), errs.len());
                ExitCode::from(1)
            }
        },
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", radguard_policy::EMBEDDED_DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(2))
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
        LogFormat::Text => builder.init(),
    }
}

/// The `[ledger]` table.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerSettings {
    /// The log's origin line in its signed checkpoints (C2SP tlog-checkpoint), e.g.
    /// `radiology.example.org/radguard/ct1`; default `radguard.local/<AE title>`.
    origin: Option<String>,
    /// This gateway's name in ledger entries; default its AE title.
    gateway_id: Option<String>,
}

/// Loads and checks everything a config names (policy, TLS files, audit and ledger settings):
/// a config is taken whole or not at all, and `config check` checks exactly what `serve` takes.
fn load_config(config: Option<&Path>) -> anyhow::Result<Loaded> {
    let cfg = match config {
        Some(path) => radguard_policy::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::embedded_default(),
    };
    let tls = radguard_gateway::tls::build(&cfg).context("loading certificates and keys")?;
    let audit: AuditConfig = match &cfg.audit {
        Some(t) => t
            .clone()
            .try_into()
            .map_err(|e| anyhow::anyhow!("[audit]: {e}"))?,
        None => AuditConfig::default(),
    };
    let ledger: LedgerSettings = match &cfg.ledger {
        Some(t) => t
            .clone()
            .try_into()
            .map_err(|e| anyhow::anyhow!("[ledger]: {e}"))?,
        None => LedgerSettings::default(),
    };
    Ok((cfg, tls, audit, ledger))
}

/// A config with everything it names loaded: policy and server settings, certificates and
/// keys, the `[audit]` and `[ledger]` settings.
type Loaded = (
    Config,
    radguard_gateway::TlsState,
    AuditConfig,
    LedgerSettings,
);

fn serve(config: Option<PathBuf>, data: PathBuf) -> anyhow::Result<()> {
    let (cfg, tls, audit_cfg, ledger_cfg) = load_config(config.as_deref())?;
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let audit = audit_cfg
        .resolve(&data, Some(cfg.server.ae_title.as_str()))
        .context("the audit trail settings")?;
    let vault_dir = data.join("vault");
    let vault = radguard_vault::Vault::open(&vault_dir)
        .with_context(|| format!("opening the vault in {}", vault_dir.display()))?;
    let ledger_dir = data.join("ledger");
    let origin = ledger_cfg
        .origin
        .clone()
        .unwrap_or_else(|| format!("radguard.local/{}", cfg.server.ae_title));
    let ledger = radguard_ledger::Ledger::open(&ledger_dir, &origin)
        .with_context(|| format!("opening the integrity ledger in {}", ledger_dir.display()))?;
    let gateway_id = ledger_cfg
        .gateway_id
        .clone()
        .unwrap_or_else(|| cfg.server.ae_title.to_string());
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
        match &config {
            Some(p) => println!("radguard: policy from {}", p.display()),
            None => println!("radguard: policy: embedded defaults (loopback only)"),
        }
        println!("{}", cfg.describe());
        let pid_file = data.join("radguard.pid");
        let _ = std::fs::write(&pid_file, format!("{}\n", std::process::id()));
        let (policy_tx, policy_rx) = tokio::sync::watch::channel(cfg.policy.clone());
        let (tls_tx, tls_rx) = tokio::sync::watch::channel(Arc::new(tls));
        let shared = radguard_gateway::Shared::new(
            cfg.server.clone(),
            policy_rx,
            tls_rx,
            admit_rx,
            Some(Arc::new(vault)),
            Some((Arc::new(ledger), gateway_id)),
            bus.clone(),
        );
        reload_on_sighup(config.clone(), cfg.clone(), policy_tx, tls_tx, bus.clone());
        radguard_gateway::serve(shared, listeners, shutdown_signal()).await;
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

/// SIGHUP (or `radguard reload`): reload the config file; a config that fails anywhere (syntax,
/// policy, certificates) is refused whole and the one in force stays, and so is one that changes
/// what only a restart applies (`Config::restart_needed`: listeners, caps, timeouts, `[audit]`,
/// `[ledger]`), naming the keys. Every request after a reload, on running associations too, is
/// judged under the new policy.
fn reload_on_sighup(
    config: Option<PathBuf>,
    started: Config,
    policy_tx: tokio::sync::watch::Sender<radguard_policy::Policy>,
    tls_tx: tokio::sync::watch::Sender<Arc<radguard_gateway::TlsState>>,
    bus: EventBus,
) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hup.recv().await.is_some() {
            let Some(path) = config.as_deref() else {
                bus.emit(Event::ConfigReloaded {
                    ok: false,
                    detail: "running on embedded defaults: nothing to reload".into(),
                });
                continue;
            };
            let p = path.to_path_buf();
            let loaded = tokio::task::spawn_blocking(move || load_config(Some(&p))).await;
            match loaded {
                Ok(Ok((cfg, ..))) if !started.restart_needed(&cfg).is_empty() => {
                    let keys = started.restart_needed(&cfg).join(", ");
                    bus.emit(Event::ConfigReloaded {
                        ok: false,
                        detail: format!(
                            "new config refused, the old one stays in force: {keys} changed, \
                             which only a restart applies"
                        ),
                    });
                }
                Ok(Ok((cfg, tls, ..))) => {
                    let _ = tls_tx.send(Arc::new(tls));
                    let _ = policy_tx.send(cfg.policy);
                    bus.emit(Event::ConfigReloaded {
                        ok: true,
                        detail: format!("policy and certificates reloaded from {}", path.display()),
                    });
                }
                Ok(Err(e)) => bus.emit(Event::ConfigReloaded {
                    ok: false,
                    detail: format!("new config refused, the old one stays in force: {e:#}"),
                }),
                Err(e) => bus.emit(Event::ConfigReloaded {
                    ok: false,
                    detail: format!("reload failed: {e}"),
                }),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (config, started, policy_tx, tls_tx, bus);
}

/// `radguard reload`: signal the running gateway (pid file in its data folder) to reload.
fn reload(data: &Path) -> anyhow::Result<()> {
    let pid_file = data.join("radguard.pid");
    let pid = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "reading {} (is radguard serve running with --data {}?)",
            pid_file.display(),
            data.display()
        )
    })?;
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("{} holds no pid", pid_file.display()))?;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "could not signal pid {pid}");
    println!("radguard: asked pid {pid} to reload its config (see its log for the result)");
    Ok(())
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
