//! `radguard audit tail|search|verify|export`: arguments, text and JSON output and exit statuses
//! over the trail `radguard_audit` reads (store, filters, follower, chain verification, PS3.15
//! A.5 messages).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use radguard_audit::atna::{message_for, AtnaSource};
use radguard_audit::checkpoint::{default_public_key, load_verifying_key};
use radguard_audit::record::{AuditEvent, AuditRecord, RecordKind};
use radguard_audit::store::{AuditStore, Filter, Follower, FoundRow, StoreSpec};
use radguard_audit::time::{now_ms, parse_time, rfc3339_ms};
use radguard_audit::verify_store;

/// Exit status: success (verify: every chain intact).
pub const EXIT_OK: i32 = 0;
/// Exit status: verify found a fault.
pub const EXIT_FAULT: i32 = 1;
/// Exit status: bad arguments, or the store could not be read.
pub const EXIT_USAGE: i32 = 2;

/// Read and check the audit trail: who sent, queried or moved which patient's images, and who
/// was refused.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the latest records (and, with --follow, new ones as they are written).
    Tail(TailArgs),
    /// Print the records matching the filters, oldest first.
    Search(SearchArgs),
    /// Walk each hash chain from its first record, check every hash, link and signed
    /// checkpoint, and name the first record that was altered, removed or inserted.
    ///
    /// Exit status: 0 intact, 1 a fault was found, 2 usage or store error.
    Verify(VerifyArgs),
    /// Write the matching records as JSON lines, or as PS3.15 A.5 audit messages (--format atna).
    Export(ExportArgs),
}

/// Which store to read.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The audit store: a SQLite file (`PATH` or `sqlite:PATH`), or PostgreSQL
    /// (`postgresql:host=... user=... dbname=...[#schema=NAME]` or a `postgresql://` URL).
    /// Default: $RADGUARD_AUDIT_STORE, else ./radguard-data/audit.sqlite.
    #[arg(long, value_name = "STORE")]
    pub store: Option<String>,
}

/// Which records.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only this gateway's chain.
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// From this time on: RFC 3339 (2024-05-01T10:00:00Z), a date (2024-05-01, UTC), or a
    /// duration back from now (90m, 12h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Peer IP address, calling AE title, or the peer's name in the policy.
    #[arg(long, value_name = "PEER")]
    pub peer: Option<String>,
    /// Records that name this Patient ID.
    #[arg(long, value_name = "ID")]
    pub patient: Option<String>,
    /// Record kinds (repeat or separate with commas), e.g. security-alert,association-refused,
    /// dimse-request, instances-transferred.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// One association (the number of `A42` in the gateway's logs).
    #[arg(long, value_name = "N")]
    pub assoc: Option<u64>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How many of the latest records to print.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
    pub lines: usize,
    /// Keep printing new records as they are written (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per record (the stored entry, with its chain fields).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// At most this many records (0: all).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: usize,
    /// Newest first.
    #[arg(long)]
    pub newest_first: bool,
    /// One JSON object per record.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only this chain (default: every chain in the store).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// The trusted public key (the `.pub` file written beside the signing key). Default, for a
    /// SQLite store: audit-signing.key.pub next to the store file, if present. Without a key,
    /// checkpoints are compared but their signatures are not checked.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Output formats of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The stored entries, one JSON object per line.
    Json,
    /// PS3.15 A.5 (IHE ATNA) XML audit messages, one per line (records without one are skipped).
    Atna,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
    pub format: ExportFormat,
    /// Write one file per record (`<node>-<seq>.json` or `.xml`) into this folder instead of
    /// printing to stdout.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// AuditSourceID of the messages (default: the record's node).
    #[arg(long, value_name = "ID")]
    pub source_id: Option<String>,
    /// AuditEnterpriseSiteID of the messages.
    #[arg(long, value_name = "ID")]
    pub site_id: Option<String>,
    /// The gateway's AE title (its `[server] ae_title`), named in the messages as the syslog
    /// export names it (`AETITLES=` of the application participant).
    #[arg(long, value_name = "AE")]
    pub ae_title: Option<String>,
}

/// Runs `radguard audit ...`.
pub fn run_audit(args: AuditArgs) -> i32 {
    let r = match args.command {
        AuditCommand::Tail(a) => run_tail(a),
        AuditCommand::Search(a) => run_search(a),
        AuditCommand::Verify(a) => run_verify(a),
        AuditCommand::Export(a) => run_export(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radguard audit: {e}");
            EXIT_USAGE
        }
    }
}

fn store_spec(a: &StoreArgs) -> Result<StoreSpec, String> {
    let s = a
        .store
        .clone()
        .or_else(|| {
            std::env::var("RADGUARD_AUDIT_STORE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "./radguard-data/audit.sqlite".into());
    StoreSpec::parse(&s)
}

fn open(a: &StoreArgs) -> Result<(StoreSpec, Box<dyn AuditStore>), String> {
    open_spec(store_spec(a)?)
}

/// Opens the store `spec` names for reading (`audit` and `alerts`): a SQLite file must exist
/// already, reading never creates one.
pub(crate) fn open_spec(spec: StoreSpec) -> Result<(StoreSpec, Box<dyn AuditStore>), String> {
    if let StoreSpec::Sqlite(p) = &spec {
        if !p.exists() {
            return Err(format!("no audit store at {}", p.display()));
        }
    }
    let store = spec.open().map_err(|e| e.to_string())?;
    Ok((spec, store))
}

/// The store filter of `f` (times relative to now; `alerts` builds its own `FilterArgs`).
pub(crate) fn filter(f: &FilterArgs) -> Result<Filter, String> {
    let now = now_ms();
    let kinds = f
        .kind
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| k.trim().parse::<RecordKind>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Filter {
        node: f.node.clone(),
        since_ms: f.since.as_deref().map(|s| parse_time(s, now)).transpose()?,
        until_ms: f.until.as_deref().map(|s| parse_time(s, now)).transpose()?,
        peer: f.peer.clone(),
        patient_id: f.patient.clone(),
        kinds,
        assoc: f.assoc,
        ..Filter::default()
    })
}

/// One line describing a record.
fn summary(r: &AuditRecord) -> String {
    let mut s = format!(
        "{} {}#{} {}",
        rfc3339_ms(r.time_ms),
        r.node,
        r.seq,
        r.kind()
    );
    if let Some(a) = r.assoc {
        s.push_str(&format!(" A{a}"));
    }
    if let Some(p) = &r.peer {
        let who = p.calling_ae.as_deref().unwrap_or("?");
        let at = p.address.as_deref().unwrap_or("?");
        s.push_str(&format!(" {who}@{at}"));
        if let Some(n) = &p.name {
            s.push_str(&format!(" ({n})"));
        }
    }
    let detail = match &r.event {
        AuditEvent::DimseRequest {
            command,
            sop_class,
            sop_instance,
            move_destination,
            ..
        } => {
            let mut d = command.clone();
            for (k, v) in [
                ("class", sop_class),
                ("instance", sop_instance),
                ("to", move_destination),
            ] {
                if let Some(v) = v {
                    d.push_str(&format!(" {k}={v}"));
                }
            }
            d
        }
        AuditEvent::DimseResponse {
            command, status, ..
        } => format!("{command} status=0x{status:04X}"),
        AuditEvent::DimseRefused {
            command,
            status,
            why,
            ..
        } => {
            format!("{command} refused 0x{status:04X}: {why}")
        }
        AuditEvent::AssociationRefused { why, blame, .. } => format!("{blame}: {why}"),
        AuditEvent::AssociationAborted { why, blame } => format!("{blame}: {why}"),
        AuditEvent::SecurityAlert { alert, detail, .. } => format!("{alert}: {detail}"),
        AuditEvent::InstancesTransferred { transfer } | AuditEvent::TransferBegun { transfer } => {
            format!(
                "{} instance(s){}{}",
                transfer.instance_count(),
                if transfer.succeeded { "" } else { " FAILED" },
                transfer
                    .patient
                    .as_ref()
                    .map(|p| format!(" patient={}", p.id))
                    .unwrap_or_default()
            )
        }
        AuditEvent::InstanceStored {
            sop_instance,
            outcome,
            ..
        } => format!("{sop_instance} {outcome}"),
        AuditEvent::ApplicationStart { listen, ae_title } => format!("{ae_title} on {listen}"),
        AuditEvent::EventsLost { count } => format!("{count} events lost"),
        _ => String::new(),
    };
    if !detail.is_empty() {
        s.push_str(" | ");
        s.push_str(&detail);
    }
    s
}

fn print_rows(rows: &[FoundRow], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    for row in rows {
        if json {
            writeln!(out, "{}", row.entry)?;
        } else {
            match serde_json::from_str::<AuditRecord>(&row.entry) {
                Ok(r) => writeln!(out, "{}", summary(&r))?,
                Err(e) => writeln!(out, "{}#{} (unreadable record: {e})", row.node, row.seq)?,
            }
        }
    }
    Ok(())
}

/// `audit tail`.
fn run_tail(a: TailArgs) -> Result<i32, String> {
    let (_, mut store) = open(&a.store)?;
    // Taken before the first search: a record written in between is then printed once.
    let follower = a
        .follow
        .then(|| Follower::new(store.as_mut(), a.filter.node.clone()))
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut f = filter(&a.filter)?;
    f.newest_first = true;
    f.limit = a.lines;
    let mut rows = store.search(&f).map_err(|e| e.to_string())?;
    rows.reverse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    print_rows(&rows, a.json, &mut out).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let Some(follower) = follower else {
        return Ok(EXIT_OK);
    };
    follow(
        follower,
        store.as_mut(),
        &rows,
        || filter(&a.filter),
        |rows| {
            print_rows(rows, a.json, &mut out).map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())
        },
    )
}

/// Follows the store from where `follower` started (`audit tail --follow`, `alerts --follow`):
/// every 500 ms, the records matching `filter()` written since, chain by chain in `seq` order,
/// go to `print`, except those already `printed` by the first search. Returns only on an error.
pub(crate) fn follow(
    mut follower: Follower,
    store: &mut dyn AuditStore,
    printed: &[FoundRow],
    filter: impl Fn() -> Result<Filter, String>,
    mut print: impl FnMut(&[FoundRow]) -> Result<(), String>,
) -> Result<i32, String> {
    let printed: std::collections::BTreeSet<(&str, u64)> =
        printed.iter().map(|r| (r.node.as_str(), r.seq)).collect();
    loop {
        let mut rows = follower
            .poll(store, &filter()?)
            .map_err(|e| e.to_string())?;
        rows.retain(|r| !printed.contains(&(r.node.as_str(), r.seq)));
        print(&rows)?;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `audit search`.
fn run_search(a: SearchArgs) -> Result<i32, String> {
    let (_, mut store) = open(&a.store)?;
    let mut f = filter(&a.filter)?;
    f.limit = a.limit;
    f.newest_first = a.newest_first;
    let rows = store.search(&f).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    print_rows(&rows, a.json, &mut stdout.lock()).map_err(|e| e.to_string())?;
    if !a.json {
        eprintln!("{} record(s)", rows.len());
    }
    Ok(EXIT_OK)
}

/// `audit verify`.
fn run_verify(a: VerifyArgs) -> Result<i32, String> {
    let (spec, mut store) = open(&a.store)?;
    let key_path = a.key.clone().or_else(|| default_public_key(&spec));
    let key = key_path
        .as_deref()
        .map(load_verifying_key)
        .transpose()
        .map_err(|e| e.to_string())?;
    let reports =
        verify_store(store.as_mut(), a.node.as_deref(), key.as_ref()).map_err(|e| e.to_string())?;
    if reports.is_empty() {
        return Err("the store holds no chain".into());
    }
    let code = if reports.iter().all(|r| r.ok()) {
        EXIT_OK
    } else {
        EXIT_FAULT
    };
    if a.json {
        let v = serde_json::json!({ "ok": code == EXIT_OK, "chains": reports });
        println!("{v}");
    } else {
        for r in &reports {
            match &r.fault {
                None => println!(
                    "OK   {}: {} records, head {} ({}), {} checkpoint(s) matched{}",
                    r.node,
                    r.records,
                    r.last_good_seq,
                    &r.head_hash[..16],
                    r.checkpoints_matched,
                    if r.signatures_checked {
                        ", signatures checked"
                    } else {
                        ", signatures NOT checked (no --key)"
                    }
                ),
                Some(f) => println!(
                    "FAIL {}: {f} (records 1..={} verified)",
                    r.node, r.last_good_seq
                ),
            }
        }
    }
    Ok(code)
}

/// `audit export`.
fn run_export(a: ExportArgs) -> Result<i32, String> {
    let (_, mut store) = open(&a.store)?;
    let f = filter(&a.filter)?;
    let rows = store.search(&f).map_err(|e| e.to_string())?;
    if let Some(d) = &a.out_dir {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = 0usize;
    for row in &rows {
        let (text, ext) = match a.format {
            ExportFormat::Json => (row.entry.clone(), "json"),
            ExportFormat::Atna => {
                let rec: AuditRecord = match serde_json::from_str(&row.entry) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("{}#{}: unreadable record skipped: {e}", row.node, row.seq);
                        continue;
                    }
                };
                let mut src =
                    AtnaSource::new(a.source_id.clone().unwrap_or_else(|| rec.node.clone()));
                src.enterprise_site_id = a.site_id.clone();
                src.ae_title = a.ae_title.clone();
                match message_for(&rec, &src) {
                    Some(m) => (m.to_xml(), "xml"),
                    None => continue,
                }
            }
        };
        match &a.out_dir {
            Some(d) => {
                let safe: String = row
                    .node
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let p = d.join(format!("{safe}-{:010}.{ext}", row.seq));
                std::fs::write(&p, format!("{text}\n"))
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            None => writeln!(out, "{text}").map_err(|e| e.to_string())?,
        }
        written += 1;
    }
    eprintln!("{written} record(s) exported");
    Ok(EXIT_OK)
}
