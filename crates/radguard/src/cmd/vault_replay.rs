//! `radguard vault replay` and `radguard vault export`: recovery from the vault.
//!
//! `replay` sends the vault's instances to a (rebuilt) archive over DICOM C-STORE (PS3.4
//! Annex B as SCU), in order of acceptance (the index's row order), one association per batch,
//! each object checked first (its SHA-256, which is its name, and its ledger fingerprint when
//! the ledger has the SOP Instance UID: radguard-gateway's `scu`, the hold forwarders' sender).
//! Progress is kept in a state file (`<data>/replay-<AE>@<host>_<port>.sqlite` or `--state`),
//! one row per instance the archive confirmed, written right after its C-STORE-RSP: a rerun
//! after an interruption (kill -9, power loss, archive down) sends only what is not confirmed.
//! At most the instance in flight when the run stopped is sent again (its SOP Instance UID is
//! the same; an archive keeps one). "Already present" means exactly this: confirmed by the
//! archive in an earlier run of the same state file; no C-FIND is made.
//!
//! `export` copies the stored Part 10 files to a folder, re-hashing on the way (a changed
//! object is reported and not written). The vault is opened read-only by both: no recovery, no
//! write, so they can run beside a gateway.

use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dicom_ul::association::CloseSocket;
use dicom_ul::{ClientAssociation, ClientAssociationOptions};
use radguard_gateway::scu;
use radguard_ledger::LedgerView;
use radguard_vault::{StoredInstance, Vault};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Presentation contexts per association at most (PS3.8 9.3.2.2: odd IDs 1..=255).
const MAX_CONTEXTS: usize = 128;
/// The Maximum Length radguard proposes to receive (the gateway's default `max_pdu_length`).
const MAX_PDU: u32 = 65_536;

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The archive: HOST:PORT. Default: the upstream of --route.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// Called AE title of the archive. Default: the upstream AE title of --route.
    #[arg(long, value_name = "AE")]
    pub called_ae: Option<String>,
    /// Calling AE title radguard presents.
    #[arg(long, value_name = "AE", default_value = "RADGUARD")]
    pub calling_ae: String,
    /// Only instances stored from this time on: RFC 3339, a date (UTC) or a duration back
    /// from now (90m, 12h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only instances stored before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this study (Study Instance UID); repeatable.
    #[arg(long, value_name = "UID")]
    pub study: Vec<String>,
    /// Connect over TLS (needs --ca; --cert and --key present a client certificate).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) the archive's certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the archive's certificate must carry. Default: the host of --to.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// The gateway's config file, to reuse a route's upstream (address, AE title, TLS).
    #[arg(long, value_name = "FILE", requires = "route")]
    pub config: Option<PathBuf>,
    /// The route (its called AE title in the config) whose upstream is the archive.
    #[arg(long, value_name = "AE", requires = "config")]
    pub route: Option<String>,
    /// The data folder (holds vault/ and ledger/).
    #[arg(long, value_name = "DIR", default_value = "./radguard-data")]
    pub data: PathBuf,
    /// The state file. Default: DATA/replay-<AE>@<host>_<port>.sqlite.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Instances per association.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// The final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// The folder to write into (created; must be empty unless --resume).
    pub dir: PathBuf,
    /// Only this study (Study Instance UID); repeatable.
    #[arg(long, value_name = "UID")]
    pub study: Vec<String>,
    /// Only instances stored from this time on (as for replay).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only instances stored before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// `DIR/<SOPInstanceUID>.dcm` instead of `DIR/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm`.
    #[arg(long)]
    pub flat: bool,
    /// Continue into a non-empty DIR: files already there with the right hash are kept.
    #[arg(long)]
    pub resume: bool,
    /// The data folder (holds vault/).
    #[arg(long, value_name = "DIR", default_value = "./radguard-data")]
    pub data: PathBuf,
    /// The final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs a command: its exit code (0 all done, 1 any failed, 2 usage or setup error).
pub fn run_replay(args: ReplayArgs) -> ExitCode {
    if let Some(code) = super::datadir::refuse_newer_exit(&args.data) {
        return code;
    }
    finish(replay(args))
}

pub fn run_export(args: ExportArgs) -> ExitCode {
    if let Some(code) = super::datadir::refuse_newer_exit(&args.data) {
        return code;
    }
    finish(export(args))
}

fn finish(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("radguard: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The instances selected by --since/--until/--study, in index order.
fn select(
    data: &Path,
    since: Option<&str>,
    until: Option<&str>,
    studies: &[String],
) -> anyhow::Result<Vec<StoredInstance>> {
    let now = radguard_audit::time::now_ms();
    let since = since
        .map(|s| radguard_audit::time::parse_time(s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let until = until
        .map(|s| radguard_audit::time::parse_time(s, now))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--until {e}"))?;
    let dir = data.join("vault");
    let vault = Vault::open_read_only(&dir)
        .with_context(|| format!("opening the vault in {}", dir.display()))?;
    let mut out = Vec::new();
    for i in vault.list()? {
        if !studies.is_empty() && !i.study_uid.as_ref().is_some_and(|s| studies.contains(s)) {
            continue;
        }
        if since.is_some() || until.is_some() {
            let t = chrono::DateTime::parse_from_rfc3339(&i.stored_at)
                .map(|t| t.timestamp_millis())
                .with_context(|| format!("{}: stored_at {:?}", i.sop_instance_uid, i.stored_at))?;
            if since.is_some_and(|s| t < s) || until.is_some_and(|u| t >= u) {
                continue;
            }
        }
        out.push(i);
    }
    Ok(out)
}

/// Where and how to connect.
struct Target {
    addr: String,
    called_ae: String,
    tls: Option<(std::sync::Arc<radguard_tls::rustls::ClientConfig>, String)>,
}

fn target(a: &ReplayArgs) -> anyhow::Result<Target> {
    let mut addr = a.to.clone();
    let mut called = a.called_ae.clone();
    let mut tls = None;
    if let (Some(cfg), Some(route)) = (&a.config, &a.route) {
        let loaded = radguard_config::load_file(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
        let entry = loaded
            .config
            .policy
            .routes()
            .iter()
            .find(|r| r.called_ae.as_str() == route)
            .with_context(|| format!("{}: no route {route:?}", cfg.display()))?;
        let radguard_policy::Route::Upstream {
            addr: up,
            upstream_ae,
            ..
        } = &entry.route
        else {
            bail!("route {route:?} is a vault route, not an upstream");
        };
        addr.get_or_insert_with(|| up.clone());
        called.get_or_insert_with(|| upstream_ae.as_str().to_string());
        if let Some(t) = &entry.tls {
            let c = radguard_tls::client_config(&t.ca, t.client_cert_and_key())?;
            tls = Some((c, t.server_name.clone()));
        }
    }
    let Some(addr) = addr else {
        bail!("--to HOST:PORT is required (or --config with --route)");
    };
    let Some(called_ae) = called else {
        bail!("--called-ae is required (or --config with --route)");
    };
    radguard_dicom::AeTitle::new(&called_ae).map_err(|e| anyhow::anyhow!("--called-ae: {e}"))?;
    radguard_dicom::AeTitle::new(&a.calling_ae)
        .map_err(|e| anyhow::anyhow!("--calling-ae: {e}"))?;
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h)
        .filter(|h| !h.is_empty())
        .with_context(|| format!("--to {addr:?}: expected HOST:PORT"))?;
    if a.tls {
        let Some(ca) = &a.ca else {
            bail!("--tls needs --ca");
        };
        let pair = a.cert.as_deref().zip(a.key.as_deref());
        let c = radguard_tls::client_config(ca, pair)?;
        let name = a.server_name.clone().unwrap_or_else(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        tls = Some((c, name));
    } else if a.ca.is_some() || a.cert.is_some() {
        bail!("--ca/--cert/--key need --tls");
    }
    Ok(Target {
        addr,
        called_ae,
        tls,
    })
}

/// The state file: instances the archive confirmed, and the one in flight.
struct State {
    conn: Connection,
    run: i64,
}

impl State {
    fn open(path: &Path, target: &str) -> anyhow::Result<State> {
        let conn = Connection::open(path)
            .with_context(|| format!("opening the replay state {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL, synchronous NORMAL: a committed row survives the process being killed; a power
        // loss may lose the last rows, which are then sent again (same SOP Instance UIDs).
        let _: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, started_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS sent (
                 sop_instance_uid TEXT PRIMARY KEY NOT NULL,
                 sha256 TEXT NOT NULL,
                 status INTEGER NOT NULL,
                 run INTEGER NOT NULL,
                 at_ms INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS inflight (
                 one INTEGER PRIMARY KEY CHECK (one = 1),
                 sop_instance_uid TEXT NOT NULL);",
        )?;
        let had: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'target'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match had {
            Some(t) if t != target => bail!(
                "{} is the state of a replay to {t}, not {target} (use another --state)",
                path.display()
            ),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('target', ?1)",
                    [target],
                )?;
            }
        }
        conn.execute(
            "INSERT INTO runs (started_ms) VALUES (?1)",
            [radguard_audit::time::now_ms()],
        )?;
        let run = conn.last_insert_rowid();
        Ok(State { conn, run })
    }

    fn is_sent(&self, uid: &str) -> anyhow::Result<bool> {
        let mut s = self
            .conn
            .prepare_cached("SELECT 1 FROM sent WHERE sop_instance_uid = ?1")?;
        Ok(s.exists([uid])?)
    }

    /// The instance that was in flight when an earlier run stopped, if not confirmed since.
    fn interrupted(&self) -> anyhow::Result<Option<String>> {
        let uid: Option<String> = self
            .conn
            .query_row("SELECT sop_instance_uid FROM inflight", [], |r| r.get(0))
            .optional()?;
        match uid {
            Some(u) if !self.is_sent(&u)? => Ok(Some(u)),
            _ => Ok(None),
        }
    }

    fn in_flight(&self, uid: &str) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO inflight (one, sop_instance_uid) VALUES (1, ?1)",
            )?
            .execute([uid])?;
        Ok(())
    }

    fn confirmed(&self, i: &StoredInstance, status: u16) -> anyhow::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO sent (sop_instance_uid, sha256, status, run, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                i.sop_instance_uid,
                i.sha256,
                status,
                self.run,
                radguard_audit::time::now_ms()
            ])?;
        Ok(())
    }
}

fn default_state_name(called_ae: &str, addr: &str) -> String {
    let safe: String = format!("{called_ae}@{addr}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("replay-{safe}.sqlite")
}

/// One instance not delivered, and why.
#[derive(Debug, serde::Serialize)]
struct Failed {
    sop_instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    reason: String,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    target: String,
    selected: usize,
    sent: usize,
    already_present: usize,
    failed: Vec<Failed>,
    /// Not tried because the run stopped (a rerun continues with them).
    not_attempted: usize,
    /// Why the run stopped before its end (no association, or it broke).
    stopped: Option<String>,
    /// The instance in flight when an earlier run stopped, sent again in this one.
    resent_after_interruption: Option<String>,
    /// Instances whose fingerprint was checked against the ledger (the others: hash only).
    ledger_checked: usize,
    bytes: u64,
    seconds: f64,
    state: String,
}

fn replay(args: ReplayArgs) -> anyhow::Result<u8> {
    let t = target(&args)?;
    let target_name = format!("{}@{}", t.called_ae, t.addr);
    let selected = select(
        &args.data,
        args.since.as_deref(),
        args.until.as_deref(),
        &args.study,
    )?;
    let ledger_dir = args.data.join("ledger");
    let ledger = if ledger_dir.join(radguard_ledger::DB_FILE).is_file() {
        Some(
            LedgerView::open(&ledger_dir, None)
                .with_context(|| format!("opening the ledger in {}", ledger_dir.display()))?,
        )
    } else {
        None
    };
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| args.data.join(default_state_name(&t.called_ae, &t.addr)));
    let state = State::open(&state_path, &target_name)?;
    let interrupted = state.interrupted()?;
    let mut report = Report {
        target: target_name.clone(),
        selected: selected.len(),
        state: state_path.display().to_string(),
        ..Report::default()
    };
    let mut todo = Vec::new();
    for i in selected {
        if state.is_sent(&i.sop_instance_uid)? {
            report.already_present += 1;
        } else {
            todo.push(i);
        }
    }
    let bar = progress(todo.len(), args.json);
    let started = Instant::now();
    let mut rest: &[StoredInstance] = &todo;
    while !rest.is_empty() {
        let n = batch_len(rest, args.batch as usize);
        let (batch, after) = rest.split_at(n);
        rest = after;
        let outcome = match &t.tls {
            None => match options(&args, &t, batch).establish(t.addr.as_str()) {
                Ok(mut a) => {
                    // The command set and the data set leave as separate writes: without
                    // TCP_NODELAY, Nagle and the peer's delayed ACK stall every C-STORE.
                    let _ = a.inner_stream().set_nodelay(true);
                    send_batch(a, batch, &state, ledger.as_ref(), &mut report, &bar)
                }
                Err(e) => Err(Stop::Association(format!(
                    "association with {target_name}: {e}"
                ))),
            },
            Some((cfg, name)) => match options(&args, &t, batch)
                .tls_config(cfg.clone())
                .server_name(name)
                .establish_tls(t.addr.as_str())
            {
                Ok(mut a) => {
                    let _ = a.inner_stream().sock.set_nodelay(true);
                    send_batch(a, batch, &state, ledger.as_ref(), &mut report, &bar)
                }
                Err(e) => Err(Stop::Association(format!(
                    "TLS association with {target_name}: {e}"
                ))),
            },
        };
        // Anything that stops the run: the rest waits for a rerun (the state file keeps what
        // the archive confirmed).
        match outcome {
            Ok(()) => {}
            Err(Stop::Association(why)) => {
                report.stopped = Some(why);
                report.not_attempted = batch.len() + rest.len();
                break;
            }
            Err(Stop::During(n, why)) => {
                // The instance in transit failed (a rerun sends it again).
                if let Some(i) = batch.get(n) {
                    report.failed.push(Failed {
                        sop_instance: i.sop_instance_uid.clone(),
                        status: None,
                        reason: why.clone(),
                    });
                }
                report.stopped = Some(why);
                report.not_attempted = batch.len().saturating_sub(n.saturating_add(1)) + rest.len();
                break;
            }
        }
    }
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(u) = &interrupted {
        if state.is_sent(u)? && !report.failed.iter().any(|f| &f.sop_instance == u) {
            report.resent_after_interruption = Some(u.clone());
        }
    }
    print_replay(&report, args.json);
    Ok(if report.failed.is_empty() && report.not_attempted == 0 {
        0
    } else {
        1
    })
}

/// How many of `rest` go over one association: at most `max`, and no more distinct
/// (SOP Class, Transfer Syntax) pairs than one association can propose.
fn batch_len(rest: &[StoredInstance], max: usize) -> usize {
    let mut pairs = std::collections::HashSet::new();
    let mut n = 0;
    for i in rest.iter().take(max) {
        pairs.insert((i.sop_class_uid.as_str(), i.transfer_syntax.as_str()));
        if pairs.len() > MAX_CONTEXTS {
            break;
        }
        n += 1;
    }
    n.max(1)
}

/// The association request for a batch: one presentation context per (SOP Class, Transfer
/// Syntax) pair of its files; the stored transfer syntax only, since data sets leave as stored.
fn options<'a>(
    args: &ReplayArgs,
    t: &Target,
    batch: &[StoredInstance],
) -> ClientAssociationOptions<'a> {
    let mut opts = ClientAssociationOptions::new()
        .calling_ae_title(args.calling_ae.clone())
        .called_ae_title(t.called_ae.clone())
        .max_pdu_length(MAX_PDU)
        .connection_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .write_timeout(Duration::from_secs(120));
    let mut proposed = std::collections::HashSet::new();
    for i in batch {
        let key = (i.sop_class_uid.clone(), i.transfer_syntax.clone());
        if proposed.insert(key.clone()) {
            opts = opts.with_presentation_context(key.0, vec![key.1]);
        }
    }
    opts
}

/// Why a run stopped before its end.
enum Stop {
    /// No association (connection refused, rejected, TLS handshake failed).
    Association(String),
    /// The association broke (or the state file failed) while sending `batch[n]`.
    During(usize, String),
}

/// Sends a batch over an established association.
fn send_batch<S>(
    mut a: ClientAssociation<S>,
    batch: &[StoredInstance],
    state: &State,
    ledger: Option<&LedgerView>,
    report: &mut Report,
    bar: &indicatif::ProgressBar,
) -> Result<(), Stop>
where
    S: CloseSocket + Read + Write,
{
    let mut message_id: u16 = 0;
    for (n, i) in batch.iter().enumerate() {
        bar.inc(1);
        let fail = |report: &mut Report, status: Option<u16>, reason: String| {
            report.failed.push(Failed {
                sop_instance: i.sop_instance_uid.clone(),
                status,
                reason,
            });
        };
        let bytes = match fs::read(&i.path) {
            Ok(b) => b,
            Err(e) => {
                fail(
                    report,
                    None,
                    format!("vault file {}: {e}", i.path.display()),
                );
                continue;
            }
        };
        let fingerprints: Vec<String> = match ledger.map(|l| l.lookup(&i.sop_instance_uid)) {
            None => Vec::new(),
            Some(Ok(entries)) => entries
                .iter()
                .map(|e| e.entry.fingerprint.digest.to_hex())
                .collect(),
            Some(Err(e)) => {
                fail(report, None, format!("ledger lookup: {e}"));
                continue;
            }
        };
        // Never deliver a changed object as the original (ransomware, tampering).
        if let Err(why) = scu::check_object(&i.path, &bytes, &i.sha256, &fingerprints) {
            fail(report, None, why);
            continue;
        }
        if !fingerprints.is_empty() {
            report.ledger_checked += 1;
        }
        let data = match scu::data_set(&bytes) {
            Ok(d) => d,
            Err(why) => {
                fail(report, None, why);
                continue;
            }
        };
        let Some(pc) = scu::accepted_context(&a, &i.sop_class_uid, &i.transfer_syntax) else {
            fail(
                report,
                None,
                format!(
                    "the archive accepted no presentation context for {} in {}",
                    i.sop_class_uid, i.transfer_syntax
                ),
            );
            continue;
        };
        if let Err(e) = state.in_flight(&i.sop_instance_uid) {
            let _ = a.abort();
            return Err(Stop::During(n, format!("replay state: {e:#}")));
        }
        message_id = message_id.wrapping_add(1);
        match scu::c_store(
            &mut a,
            pc,
            message_id,
            &i.sop_class_uid,
            &i.sop_instance_uid,
            data,
        ) {
            Ok(status) if scu::stored(status) => {
                if let Err(e) = state.confirmed(i, status) {
                    let _ = a.abort();
                    return Err(Stop::During(n, format!("replay state: {e:#}")));
                }
                report.sent += 1;
                report.bytes += data.len() as u64;
            }
            Ok(status) => fail(
                report,
                Some(status),
                format!("the archive answered 0x{status:04X}"),
            ),
            Err(e) => {
                let _ = a.abort();
                return Err(Stop::During(n, e.to_string()));
            }
        }
    }
    let _ = a.release();
    Ok(())
}

fn progress(n: usize, json: bool) -> indicatif::ProgressBar {
    if json || n == 0 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(n as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} replay [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

fn print_replay(r: &Report, json: bool) {
    if json {
        println!("{}", json!(r));
        return;
    }
    for f in &r.failed {
        match f.status {
            Some(s) => println!("failed  {}  0x{s:04X}  {}", f.sop_instance, f.reason),
            None => println!("failed  {}  {}", f.sop_instance, f.reason),
        }
    }
    if let Some(why) = &r.stopped {
        println!("stopped: {why} (run the same command again to continue)");
    }
    if let Some(u) = &r.resent_after_interruption {
        println!("resent  {u}  (in flight when the previous run stopped)");
    }
    let rate = if r.seconds > 0.0 {
        r.sent as f64 / r.seconds
    } else {
        0.0
    };
    println!(
        "radguard: replay to {}: {} selected, {} sent, {} already present (earlier runs), {} failed, {} not attempted; {:.1} s, {:.1} instances/s, {:.1} MB/s; state {}",
        r.target,
        r.selected,
        r.sent,
        r.already_present,
        r.failed.len(),
        r.not_attempted,
        r.seconds,
        rate,
        if r.seconds > 0.0 { r.bytes as f64 / 1e6 / r.seconds } else { 0.0 },
        r.state
    );
}

/// A UID usable as a path component: digits and dots only, not `.`/`..`.
fn uid_component(uid: Option<&str>) -> &str {
    match uid {
        Some(u)
            if !u.is_empty()
                && u.len() <= 64
                && u.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && u != "."
                && u != ".." =>
        {
            u
        }
        _ => "unknown",
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct ExportReport {
    selected: usize,
    written: usize,
    already_there: usize,
    failed: Vec<Failed>,
    bytes: u64,
}

fn export(args: ExportArgs) -> anyhow::Result<u8> {
    let selected = select(
        &args.data,
        args.since.as_deref(),
        args.until.as_deref(),
        &args.study,
    )?;
    fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let non_empty = fs::read_dir(&args.dir)
        .with_context(|| format!("reading {}", args.dir.display()))?
        .next()
        .is_some();
    if non_empty && !args.resume {
        bail!(
            "{} is not empty (use --resume to continue an export)",
            args.dir.display()
        );
    }
    let mut r = ExportReport {
        selected: selected.len(),
        ..ExportReport::default()
    };
    let bar = progress(selected.len(), args.json);
    for i in &selected {
        bar.inc(1);
        let name = format!("{}.dcm", uid_component(Some(&i.sop_instance_uid)));
        let dest = if args.flat {
            args.dir.join(name)
        } else {
            args.dir
                .join(uid_component(i.study_uid.as_deref()))
                .join(uid_component(i.series_uid.as_deref()))
                .join(name)
        };
        if args.resume && dest.is_file() && sha256_file(&dest).ok().as_deref() == Some(&i.sha256) {
            r.already_there += 1;
            continue;
        }
        match copy_checked(&i.path, &dest, &i.sha256) {
            Ok(n) => {
                r.written += 1;
                r.bytes += n;
            }
            Err(why) => r.failed.push(Failed {
                sop_instance: i.sop_instance_uid.clone(),
                status: None,
                reason: why,
            }),
        }
    }
    bar.finish_and_clear();
    if args.json {
        println!("{}", json!(r));
    } else {
        for f in &r.failed {
            println!("failed  {}  {}", f.sop_instance, f.reason);
        }
        println!(
            "radguard: export to {}: {} selected, {} written, {} already there, {} failed",
            args.dir.display(),
            r.selected,
            r.written,
            r.already_there,
            r.failed.len()
        );
    }
    Ok(if r.failed.is_empty() { 0 } else { 1 })
}

fn sha256_file(p: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies `src` to `dest` through a temporary file, hashing on the way; the file appears under
/// its name only when the hash is the one the vault named it by.
fn copy_checked(src: &Path, dest: &Path, sha256: &str) -> Result<u64, String> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    let tmp = dest.with_extension("dcm.part");
    let result = (|| -> Result<u64, String> {
        let mut from =
            fs::File::open(src).map_err(|e| format!("vault file {}: {e}", src.display()))?;
        let mut to = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("vault file {}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            h.update(chunk);
            to.write_all(chunk)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            total += n as u64;
        }
        let got = hex::encode(h.finalize());
        if got != sha256 {
            return Err(format!(
                "vault file changed: SHA-256 {got}, {sha256} at acceptance"
            ));
        }
        to.sync_all()
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        fs::rename(&tmp, dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(total)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_components_never_escape() {
        assert_eq!(uid_component(Some("1.2.3")), "1.2.3");
        assert_eq!(uid_component(Some("..")), "unknown");
        assert_eq!(uid_component(Some("../etc")), "unknown");
        assert_eq!(uid_component(Some("")), "unknown");
        assert_eq!(uid_component(None), "unknown");
    }

    #[test]
    fn state_names_are_one_path_component() {
        assert_eq!(
            default_state_name("ORTHANC", "127.0.0.1:4242"),
            "replay-ORTHANC@127.0.0.1_4242.sqlite"
        );
        assert!(!default_state_name("A/../B", "h:1").contains('/'));
    }
}
