//! `radguard reload`: signal the running gateway (pid file in its data folder) to reload.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    /// The data folder of the running gateway (holds radguard.pid).
    #[arg(long, default_value = "./radguard-data")]
    pub data: PathBuf,
}

/// Runs `radguard reload`.
pub fn run(args: ReloadArgs) -> ExitCode {
    match reload(&args.data) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("radguard: {e:#}");
            ExitCode::from(1)
        }
    }
}

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
    signal(pid, ToGateway::Reload).with_context(|| format!("could not signal pid {pid}"))?;
    println!("radguard: asked pid {pid} to reload its config (see its log for the result)");
    Ok(())
}

/// What `radguard` asks its running gateway.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ToGateway {
    /// SIGHUP: reload the config file.
    Reload,
    /// SIGUSR1: re-read the block list (`radguard block`).
    Blocks,
}

/// Signals one process. Only a positive pid is accepted: kill(2) reads 0 as "my process group"
/// and -1 as "every process I may signal", which a tampered pid file must not reach.
#[cfg(unix)]
pub(crate) fn signal(pid: u32, what: ToGateway) -> anyhow::Result<()> {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .context("not a process id")?;
    let signal = match what {
        ToGateway::Reload => Signal::HUP,
        ToGateway::Blocks => Signal::USR1,
    };
    kill_process(pid, signal)?;
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn signal(_pid: u32, _what: ToGateway) -> anyhow::Result<()> {
    anyhow::bail!("signals are a Unix feature")
}
