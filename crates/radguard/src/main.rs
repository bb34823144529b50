//! `radguard`: the inline DICOM security gateway and the tools around it.
//!
//! This file is the binary's edge: argument parsing, logging set-up, exit codes. Everything it
//! runs lives in the library crates (see ARCHITECTURE.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use radguard_events::EventBus;
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
        Command::Scan(args) => exit(radguard_media::cli::run_scan(args)),
        Command::Sanitize(args) => exit(radguard_media::cli::run_sanitize(args)),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match radguard_policy::load_file(&file) {
            Ok(cfg) => {
                println!("{}: OK", file.display());
                println!("{}", cfg.describe());
                ExitCode::SUCCESS
            }
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
    let filter = tracing_subscriber::EnvFilter::try_from_env("RADGUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: Option<PathBuf>, data: PathBuf) -> anyhow::Result<()> {
    let cfg = match &config {
        Some(path) => radguard_policy::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => Config::embedded_default(),
    };
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let vault_dir = data.join("vault");
    let vault = radguard_vault::Vault::open(&vault_dir)
        .with_context(|| format!("opening the vault in {}", vault_dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listeners = radguard_gateway::bind(&cfg.server)
            .await
            .context("binding the listeners")?;
        for l in &listeners {
            let addr = l.local_addr()?;
            println!(
                "radguard: listening on dicom://{addr} as AE {}",
                cfg.server.ae_title
            );
        }
        let data_abs = std::fs::canonicalize(&data).unwrap_or(data.clone());
        println!("radguard: data in {}", data_abs.display());
        match &config {
            Some(p) => println!("radguard: policy from {}", p.display()),
            None => println!("radguard: policy: embedded defaults (loopback only)"),
        }
        println!("{}", cfg.describe());
        let (_policy_tx, policy_rx) = tokio::sync::watch::channel(cfg.policy.clone());
        let shared = radguard_gateway::Shared::new(
            cfg.server.clone(),
            policy_rx,
            Some(Arc::new(vault)),
            EventBus::default(),
        );
        radguard_gateway::serve(shared, listeners, shutdown_signal()).await;
        println!("radguard: stopped");
        anyhow::Ok(())
    })
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
