//! `radguard queue list|retry|drop`: the hold queue of a data folder
//! (`<data>/hold-queue.sqlite`: instances a hold route accepted while its upstream was down).
//! `retry` restarts the attempt counts, puts quarantined and parked instances back and makes forwarders
//! in backoff try at once (the retry marker); `drop` needs `--yes` and marks the rows dropped
//! by the operator; the gateway reports each drop as an audited event (at once when running,
//! else at its next start).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use radguard_gateway::forward::RETRY_MARKER;
use radguard_gateway::shared::unix_ms;
use radguard_vault::queue::HoldQueue;

#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum QueueCommand {
    /// Show the held instances not yet delivered: sequence, state, destination, SOP Instance
    /// UID, age, attempts, last error. Exit status 0, 2 when the queue cannot be read.
    List {
        /// One JSON object per instance (one line each).
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
    /// Retry now: attempt counts restart, quarantined and parked instances go back to the queue
    /// (in their place of arrival), and
    /// forwarders waiting out a backoff try at once. Exit status 0, 2 on error.
    Retry {
        /// Only this destination (`AE@host:port`, `AE@tls://host:port` for a TLS route, as `list`
        /// shows it).
        #[arg(long)]
        dest: Option<String>,
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
    /// Remove held instances from the queue (they stay in the vault and are never forwarded).
    /// Audited. Exit status 0 dropped, 1 nothing matched, 2 without --yes or on error.
    Drop {
        /// Sequence numbers, as `list` shows them.
        #[arg(required = true)]
        seq: Vec<i64>,
        /// Confirm: the instances will not reach their destination.
        #[arg(long)]
        yes: bool,
        #[arg(long, default_value = "./radguard-data")]
        data: PathBuf,
    },
}

pub fn run(args: QueueArgs) -> ExitCode {
    let data = match &args.command {
        QueueCommand::List { data, .. }
        | QueueCommand::Retry { data, .. }
        | QueueCommand::Drop { data, .. } => data,
    };
    if let Some(code) = super::datadir::refuse_newer_exit(data) {
        return code;
    }
    let r = match args.command {
        QueueCommand::List { json, data } => list(&data, json),
        QueueCommand::Retry { dest, data } => retry(&data, dest.as_deref()),
        QueueCommand::Drop { seq, yes, data } => drop_rows(&data, &seq, yes),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("radguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn open(data: &Path) -> anyhow::Result<Option<HoldQueue>> {
    let path = data.join("hold-queue.sqlite");
    if !path.exists() {
        return Ok(None);
    }
    HoldQueue::open(&path)
        .map(Some)
        .with_context(|| format!("opening the hold queue {}", path.display()))
}

fn list(data: &Path, json: bool) -> anyhow::Result<u8> {
    let rows = match open(data)? {
        Some(q) => q.list()?,
        None => Vec::new(),
    };
    let now = unix_ms();
    for h in &rows {
        let age = now.saturating_sub(h.item.accepted_ms) / 1000;
        if json {
            let v = serde_json::json!({
                "seq": h.seq,
                "state": h.state.as_str(),
                "dest": h.item.dest,
                "route": h.item.route,
                "sop_instance": h.item.sop_instance,
                "sop_class": h.item.sop_class,
                "path": h.item.path,
                "age_secs": age,
                "attempts": h.attempts,
                "last_error": h.last_error,
            });
            println!("{v}");
        } else {
            println!(
                "{:>6}  {:<11} {}  {}  {}s  attempts {}{}",
                h.seq,
                h.state.as_str(),
                h.item.dest,
                h.item.sop_instance,
                age,
                h.attempts,
                h.last_error
                    .as_deref()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
    }
    if !json {
        println!("radguard: {} held instance(s)", rows.len());
    }
    Ok(0)
}

fn retry(data: &Path, dest: Option<&str>) -> anyhow::Result<u8> {
    let n = match open(data)? {
        Some(q) => q.retry(dest)?,
        None => 0,
    };
    let marker = data.join(RETRY_MARKER);
    std::fs::write(&marker, format!("{}\n", unix_ms()))
        .with_context(|| format!("writing {}", marker.display()))?;
    println!("radguard: {n} held instance(s) to retry now");
    Ok(0)
}

fn drop_rows(data: &Path, seqs: &[i64], yes: bool) -> anyhow::Result<u8> {
    if !yes {
        eprintln!(
            "radguard: dropping means these instances never reach their destination; \
             add --yes to confirm"
        );
        return Ok(2);
    }
    let Some(q) = open(data)? else {
        eprintln!("radguard: no hold queue in {}", data.display());
        return Ok(1);
    };
    let by = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .map_or_else(|| "operator".to_string(), |u| format!("operator {u}"));
    let dropped = q.drop_rows(seqs, &by)?;
    for h in &dropped {
        println!(
            "radguard: dropped {} {} (for {})",
            h.seq, h.item.sop_instance, h.item.dest
        );
    }
    if dropped.is_empty() {
        eprintln!("radguard: nothing matched");
        return Ok(1);
    }
    Ok(0)
}
