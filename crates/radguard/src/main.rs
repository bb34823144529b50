//! `radguard`: the inline DICOM security gateway and the tools around it.
//!
//! The composition root: this binary owns every flag, output format, progress bar and exit
//! code (`cmd/`, one module per command family); the library crates return typed results and
//! print nothing. `cmd/serve.rs` wires the gateway together in one place: the config
//! (radguard-config, every section), the audit writer and its health gating admission, the
//! vault, the ledger, the block list, the pid file and the signals (SIGHUP reloads, SIGUSR1
//! re-reads the block list, SIGTERM/Ctrl-C stop).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

mod cmd;
mod logfmt;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Radguard: a security gateway for medical imaging devices (DICOM).
///
/// Put it directly in front of a modality or an archive: it relays DICOM associations under a
/// default-deny policy per peer and per operation, checks the protocol strictly, answers refused
/// requests itself, and records every decision as a structured event.
/// `radguard --version`: the version and the commit built (build.rs; "unknown" outside a
/// checkout without RADGUARD_COMMIT).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RADGUARD_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(name = "radguard", version = VERSION, about, long_about)]
struct Cli {
    /// Log format on stderr: `text` (one readable line per event) or `json` (one object per
    /// line). Default: text on a terminal, JSON otherwise (a journal, a file, a pipe).
    #[arg(long, value_enum, global = true)]
    log_format: Option<logfmt::LogFormat>,
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
    /// host needs an explicit config (see docs/config.md). Events are written to stderr, one
    /// line each (--log-format); SIGTERM or Ctrl-C stops accepting and lets running
    /// associations finish.
    Serve(cmd::serve::ServeArgs),
    /// Scan DICOM files, folders and media (DICOMDIR) for malware and malformed content.
    ///
    /// Each file gets a verdict (clean, suspicious, malicious, not-dicom, malformed) with
    /// findings; exit status 0 when everything is clean, 1 when anything is not, 2 on usage error.
    Scan(cmd::media::ScanArgs),
    /// Rebuild DICOM files from their parsed content (content disarm and reconstruction).
    ///
    /// Writes new Part 10 files under --out (zeroed preamble, rebuilt meta header, no trailing
    /// data); files that cannot be made safe go to OUT/quarantine/ with a reason file. Inputs are
    /// never modified.
    Sanitize(cmd::media::SanitizeArgs),
    /// Verify DICOM files against the integrity ledger: unchanged, altered, lossy-reencoded or
    /// unknown; exit 1 if anything was altered.
    Verify(cmd::ledger::VerifyArgs),
    /// The integrity ledger for auditors: checkpoints, inclusion and consistency proofs, the
    /// public key (enough to check a proof offline).
    Ledger(cmd::ledger::LedgerArgs),
    /// De-identify DICOM files (PS3.15 Annex E profiles), or check files for residual PHI.
    Deid(cmd::deid::DeidArgs),
    /// Read, search, verify and export the tamper-evident audit trail.
    Audit(cmd::audit::AuditArgs),
    /// List the security alerts of the audit trail (detections and every other alert kind),
    /// oldest first; with --follow, new ones as they are recorded.
    ///
    /// Reads the store `radguard serve --config CONFIG --data DIR` writes to. Exit status 0, 2 on
    /// usage or store error.
    Alerts(cmd::alerts::AlertsArgs),
    /// The block list: subjects (address, calling AE, certificate) refused or throttled for a
    /// while, by detection rules' `block`/`throttle` responses or by an operator.
    ///
    /// `list` shows them, `add` blocks a subject, `remove` ends an entry early. Edits the data
    /// folder's blocks.json under a lock and tells a running gateway (SIGUSR1), which applies,
    /// audits and logs the change; a stopped gateway does so when it starts.
    Block(cmd::block::BlockArgs),
    /// The hold queue: instances held for an unreachable archive (list, retry, drop).
    Queue(cmd::queue::QueueArgs),
    /// The built-in vault: check or verify the stored objects; recovery (`replay` to a
    /// rebuilt archive over DICOM, `export` as Part 10 files).
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// TLS quick start: a local CA, gateway and client certificates; certificate fingerprints.
    Tls(cmd::tls::TlsArgs),
    /// Make an Argon2id hash of a passcode for a `[[user]]` entry (User Identity type 2).
    Passwd(cmd::tls::PasswdArgs),
    /// The operator console: `hash-token` prints the SHA-256 of a token read from stdin for
    /// `[[admin.token]] sha256`.
    Admin(cmd::console::AdminArgs),
    /// Ask a running `radguard serve` to reload its config and certificates (SIGHUP).
    ///
    /// A new config that fails anywhere is refused whole; the old one stays in force and running
    /// associations are never dropped.
    Reload(cmd::reload::ReloadArgs),
    /// Measure DICOM endpoints' security posture without touching patient data.
    ///
    /// Checks, one connection at a time and at most --rate per second: called AE titles
    /// (random, blank, common defaults), a random calling AE title, the presentation contexts
    /// accepted, the maximum PDU length, the implementation identity and its known
    /// vulnerabilities (crates/radguard-probe/data/vulns.toml), TLS (tls://: versions, suites,
    /// certificate, client certificate), C-ECHO, whether storage is accepted from an unknown
    /// AE (nothing is sent), C-MOVE to an unknown destination and, only with --query, C-FIND
    /// (first answer counted and cancelled; nothing kept or printed). See docs/probe.md.
    /// Exit status 0 nothing found, 1 findings, 2 usage error.
    Probe(cmd::probe::ProbeArgs),
    /// The scan-protocol and dose guard offline: `check` judges protocol, approval, dose report
    /// and worklist answer files against the [guard] limits the gateway uses.
    Guard {
        #[command(subcommand)]
        command: cmd::guard::GuardCommand,
    },
    /// Check configuration files.
    Config {
        #[command(subcommand)]
        command: cmd::config::ConfigCommand,
    },
    /// Print a shell completion script for SHELL (bash, zsh, fish, elvish, powershell) on stdout.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (radguard.1 and one per command) into DIR.
    #[command(hide = true)]
    Man { dir: std::path::PathBuf },
}

#[derive(Subcommand)]
enum VaultCommand {
    /// Compare the vault's index with the files present and their sizes (fast), and list files
    /// no index row names. Read-only; safe next to a running gateway. Exit status 0 all good,
    /// 1 problems found, 2 usage or store error.
    Check(cmd::vault_check::CheckArgs),
    /// Re-hash every object (missing, changed, encrypted-looking, unreadable, unindexed) and
    /// compare instances the integrity ledger logged with its fingerprints. Read-only. Exit
    /// status 0 all good, 1 problems found, 2 usage or store error.
    Verify(cmd::vault_check::CheckArgs),
    /// Send the vault's instances to an archive over DICOM C-STORE, in order of acceptance,
    /// each checked against its hash and ledger fingerprint first; resumable (state file).
    ///
    /// Exit status 0 all sent or already present, 1 any failed or not attempted, 2 usage.
    Replay(Box<cmd::vault_replay::ReplayArgs>),
    /// Copy the vault's Part 10 files into DIR, re-hashing each on the way.
    ///
    /// Exit status 0 all written, 1 any failed (changed object), 2 usage.
    Export(cmd::vault_replay::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args, cli.log_format),
        Command::Reload(args) => cmd::reload::run(args),
        Command::Verify(args) => exit(cmd::ledger::run_verify(args)),
        Command::Ledger(args) => exit(cmd::ledger::run_ledger(args)),
        Command::Deid(args) => cmd::deid::run(args),
        Command::Audit(args) => exit(cmd::audit::run_audit(args)),
        Command::Alerts(args) => exit(cmd::alerts::run(args)),
        Command::Block(args) => cmd::block::run(args),
        Command::Queue(args) => cmd::queue::run(args),
        Command::Vault { command } => match command {
            VaultCommand::Check(args) => cmd::vault_check::run_check(args),
            VaultCommand::Verify(args) => cmd::vault_check::run_verify(args),
            VaultCommand::Replay(args) => cmd::vault_replay::run_replay(*args),
            VaultCommand::Export(args) => cmd::vault_replay::run_export(args),
        },
        Command::Tls(args) => exit(cmd::tls::run_tls(args)),
        Command::Passwd(args) => exit(cmd::tls::run_passwd(args)),
        Command::Admin(args) => cmd::console::run(args),
        Command::Scan(args) => cmd::media::run_scan(args),
        Command::Sanitize(args) => cmd::media::run_sanitize(args),
        Command::Probe(args) => cmd::probe::run(args),
        Command::Config { command } => cmd::config::run(command),
        Command::Guard { command } => cmd::guard::run(command),
        Command::Completions { shell } => {
            // Into a buffer first: clap_complete panics on a write error (a closed pipe).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "radguard", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            }
        }
        Command::Man { dir } => match write_man_pages(&dir) {
            Ok(n) => {
                println!("{n} man pages written to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("radguard: writing man pages to {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
    }
}

/// radguard.1, and radguard-COMMAND.1 for each visible command (and their own commands).
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut todo = vec![("radguard".to_string(), Cli::command())];
    let mut n = 0;
    while let Some((name, cmd)) = todo.pop() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            todo.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let cmd = cmd
            .display_name(name.clone())
            .bin_name(name.replace('-', " "));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.clone())
            .render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)?;
        n += 1;
    }
    Ok(n)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
