//! The operator console's side in the binary: what radguard-web's handlers need from the
//! composition root ([`ConsoleBackend`]: the policy in force, the block list, the audit trail,
//! the ledger, the vault, the config text, a reload), and `radguard admin hash-token`.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use radguard_audit::store::Filter;
use radguard_audit::StoreSpec;
use radguard_web::{AuditQuery, Backend, BoxFuture, Gauges, PolicyPeer};
use serde_json::{json, Value};

#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Print the SHA-256 of a console token read from stdin (one line), for
    /// `[[admin.token]] sha256`. The token itself never goes in the config file.
    HashToken,
}

/// Runs `radguard admin`.
pub fn run(args: AdminArgs) -> ExitCode {
    match args.command {
        AdminCommand::HashToken => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().take(64 * 1024).read_to_string(&mut s) {
                eprintln!("radguard: reading the token from stdin: {e}");
                return ExitCode::from(2);
            }
            let token = s.lines().next().unwrap_or_default().trim();
            // A short token can be guessed by trying: the console's login costs a second per
            // try, the digest in the config file none.
            if token.len() < 16 {
                eprintln!("radguard: a console token needs at least 16 characters (e.g. `openssl rand -hex 32`)");
                return ExitCode::from(2);
            }
            println!("{}", radguard_web::hash_token(token));
            ExitCode::SUCCESS
        }
    }
}

/// The text of the config file `path` (the embedded default without one), for the console.
pub fn config_text(path: Option<&std::path::Path>) -> String {
    match path {
        Some(p) => std::fs::read_to_string(p)
            .unwrap_or_else(|e| format!("# cannot read {}: {e}", p.display())),
        None => radguard_policy::EMBEDDED_DEFAULT_TOML.to_string(),
    }
}

/// A reload asked by the console: the answer comes back on the oneshot.
pub type ReloadRequest = tokio::sync::oneshot::Sender<(bool, String)>;

/// What the console's handlers read and do, from the running gateway's parts.
pub struct ConsoleBackend {
    pub policy: tokio::sync::watch::Receiver<radguard_policy::Policy>,
    pub data: PathBuf,
    pub config_path: Option<PathBuf>,
    /// The config text in force and when it was loaded (unix ms): set at start and by each
    /// successful reload (a refused one leaves it), so an edited file is not shown as in force.
    pub in_force: tokio::sync::watch::Receiver<(String, u64)>,
    /// The audit trail (none when `[audit] enabled = false`).
    pub audit: Option<StoreSpec>,
    pub audit_health: Option<tokio::sync::watch::Receiver<radguard_audit::writer::Health>>,
    pub ledger: Arc<radguard_ledger::Ledger>,
    pub vault: Arc<radguard_vault::Vault>,
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// The last chain verification and when (verifying reads the whole trail: at most every
    /// 30 s).
    pub verified: Mutex<Option<(Instant, Value)>>,
}

fn words(p: &radguard_policy::Peer) -> Vec<String> {
    let mut out: Vec<String> = p.allowed().iter().map(ToString::to_string).collect();
    if let Some(set) = p.store_sop_classes() {
        out.push(format!("store/get SOP classes: {set}"));
    }
    if let Some(d) = p.move_destinations() {
        out.push(format!("move destinations: {d}"));
    }
    if let Some(n) = p.max_find_results() {
        out.push(format!("at most {n} C-FIND matches per query"));
    }
    out
}

impl Backend for ConsoleBackend {
    fn peers(&self) -> Vec<PolicyPeer> {
        let policy = self.policy.borrow().clone();
        policy
            .peers()
            .map(|p| PolicyPeer {
                name: p.name().to_string(),
                addresses: p.addresses().iter().map(ToString::to_string).collect(),
                ae_titles: vec![p.ae_titles().to_string()],
                certificate: None,
                allows: words(p),
            })
            .collect()
    }

    fn blocks(&self) -> Result<Vec<Value>, String> {
        super::block::entries_json(&self.data).map_err(|e| format!("{e:#}"))
    }

    fn unblock(&self, id: u64, by: &str) -> Result<bool, String> {
        super::block::remove_id(&self.data, id, by).map_err(|e| format!("{e:#}"))
    }

    fn audit(&self, q: &AuditQuery) -> Result<Vec<Value>, String> {
        let Some(spec) = self.audit.clone() else {
            return Err("the audit trail is off ([audit] enabled = false)".into());
        };
        let (_, mut store) = super::audit::open_spec(spec)?;
        let now = radguard_audit::time::now_ms();
        let kinds = match q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty()) {
            Some(k) => k
                .split(',')
                .map(|k| k.trim().parse::<radguard_audit::RecordKind>())
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let since_ms = match q.since.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            // Unix milliseconds (what the pages send) or what `radguard audit --since` takes.
            Some(s) => Some(match s.parse::<i64>() {
                Ok(ms) => ms,
                Err(_) => radguard_audit::time::parse_time(s, now)?,
            }),
            None => None,
        };
        let f = Filter {
            since_ms,
            kinds,
            limit: q.limit.unwrap_or(200),
            newest_first: true,
            ..Filter::default()
        };
        let rows = store.search(&f).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut v: Value = serde_json::from_str(&r.entry).unwrap_or(Value::Null);
                if let Some(o) = v.as_object_mut() {
                    o.entry("node").or_insert_with(|| r.node.clone().into());
                    o.entry("seq").or_insert_with(|| r.seq.into());
                }
                v
            })
            .collect())
    }

    fn integrity(&self) -> Value {
        let ledger = json!({
            "entries": self.ledger.size(),
            "checkpoint": {
                "origin": self.ledger.origin(),
                "size": self.ledger.size(),
                "root": hex::encode(self.ledger.root()),
            },
        });
        let audit = {
            let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some((at, v)) if at.elapsed() < Duration::from_secs(30) => v.clone(),
                _ => {
                    let v = self.verify_audit();
                    *cache = Some((Instant::now(), v.clone()));
                    v
                }
            }
        };
        json!({ "ledger": ledger, "audit": audit })
    }

    fn vault(&self) -> Value {
        let (instances, bytes) = match self.vault.list() {
            Ok(l) => (l.len() as u64, l.iter().map(|i| i.size).sum::<u64>()),
            Err(_) => (0, 0),
        };
        let free = rustix::fs::statvfs(self.vault.root())
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize));
        json!({ "instances": instances, "bytes": bytes, "free_bytes": free })
    }

    fn config(&self) -> Value {
        let (text, loaded) = self.in_force.borrow().clone();
        json!({
            "path": self.config_path.as_ref().map(|p| p.display().to_string()),
            "text": text,
            "loaded": loaded,
        })
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            audit_pending_records: self
                .audit_health
                .as_ref()
                .map(|h| h.borrow().pending as u64),
            ledger_entries: Some(self.ledger.size()),
            vault_unlocked_objects: self
                .vault
                .lock_status()
                .map(|_| self.vault.unlocked_objects()),
        }
    }

    fn reload(&self) -> BoxFuture<(bool, String)> {
        let tx = self.reload.clone();
        Box::pin(async move {
            let (otx, orx) = tokio::sync::oneshot::channel();
            if tx.send(otx).await.is_err() {
                return (false, "the reload task is not running".into());
            }
            orx.await
                .unwrap_or((false, "the reload task did not answer".into()))
        })
    }
}

impl ConsoleBackend {
    fn verify_audit(&self) -> Value {
        let Some(spec) = self.audit.clone() else {
            return json!({"records": 0, "verified_head": null, "ok": false, "detail": "audit off"});
        };
        let key = radguard_audit::checkpoint::default_public_key(&spec)
            .filter(|p| p.exists())
            .and_then(|p| radguard_audit::checkpoint::load_verifying_key(&p).ok());
        let reports = super::audit::open_spec(spec).and_then(|(_, mut store)| {
            radguard_audit::verify::verify_store(store.as_mut(), None, key.as_ref())
                .map_err(|e| e.to_string())
        });
        match reports {
            Ok(r) => {
                let records: u64 = r.iter().map(|x| x.records).sum();
                let ok = r.iter().all(|x| x.ok());
                let head = r.first().map(|x| {
                    json!({
                        "node": x.node, "seq": x.last_good_seq, "hash": x.head_hash,
                        "checkpoints_matched": x.checkpoints_matched,
                        "signatures_checked": x.signatures_checked,
                    })
                });
                json!({"records": records, "verified_head": head, "ok": ok,
                       "faults": r.iter().filter_map(|x| x.fault.as_ref().map(|f| f.to_string())).collect::<Vec<_>>()})
            }
            Err(e) => json!({"records": 0, "verified_head": null, "ok": false, "detail": e}),
        }
    }
}
