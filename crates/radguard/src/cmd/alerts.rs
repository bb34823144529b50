//! `radguard alerts [--follow] [--json]`: the security alerts of the audit trail, i.e. its
//! PS3.15 A.5 Security Alert (110113) records of kind `security-alert` (detections, kind
//! `detection`, and every other alert kind) and `events-lost`, read from the store that
//! `--config` and `--data` name, as `radguard serve` resolves them. Store access, time syntax and
//! following are `radguard audit`'s ([`super::audit`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use radguard_audit::config::AuditConfig;
use radguard_audit::record::{AuditEvent, AuditRecord, DetectionRule};
use radguard_audit::store::{Filter, Follower, FoundRow, StoreSpec};
use radguard_audit::time::rfc3339_ms;
use serde_json::json;

use super::audit::{self, FilterArgs, EXIT_OK, EXIT_USAGE};

/// The security alerts the gateway recorded, oldest first.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsArgs {
    /// The config `radguard serve` runs with: its `[audit]` names the store (default: the
    /// embedded configuration, a SQLite store in --data).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The data folder `radguard serve` runs with (a relative SQLite path is under it).
    #[arg(long, value_name = "DIR", default_value = "./radguard-data")]
    pub data: PathBuf,
    /// From this time on: RFC 3339 (2024-05-01T10:00:00Z), a date (2024-05-01, UTC), or a
    /// duration back from now (90m, 12h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only these alert kinds (repeat or separate with commas), e.g. detection,
    /// peer-not-recognized, not-authorized, protocol-violation, instance-conflict,
    /// malformed-data-set, security-configuration-refused, events-lost.
    #[arg(long, value_name = "KIND", value_delimiter = ',')]
    pub kind: Vec<String>,
    /// Only detections by this rule (its `name` in `[[detect.rule]]`).
    #[arg(long, value_name = "NAME")]
    pub rule: Option<String>,
    /// Keep printing new alerts as they are recorded (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// One JSON object per alert: time, node, seq, kind, rule, source, calling_ae, called_ae,
    /// peer, assoc, detail.
    #[arg(long)]
    pub json: bool,
}

/// Runs `radguard alerts`.
pub fn run(args: AlertsArgs) -> i32 {
    match alerts(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("radguard alerts: {e}");
            EXIT_USAGE
        }
    }
}

/// The store `radguard serve --config CONFIG --data DATA` writes to, found without touching the
/// data folder (no signing key is created, as `serve` would).
fn store_spec(config: Option<&Path>, data: &Path) -> Result<StoreSpec, String> {
    let audit: AuditConfig = match config {
        Some(path) => radguard_config::load_file(path).map_err(|e| e.to_string())?,
        None => radguard_config::Loaded::embedded_default(),
    }
    .audit;
    if !audit.enabled {
        return Err(
            "the audit trail is off ([audit] enabled = false): no alerts are recorded".into(),
        );
    }
    audit.store_spec(data).map_err(|e| e.to_string())
}

fn alerts(a: &AlertsArgs) -> Result<i32, String> {
    let (_, mut store) = audit::open_spec(store_spec(a.config.as_deref(), &a.data)?)?;
    let filter = || -> Result<Filter, String> {
        audit::filter(&FilterArgs {
            since: a.since.clone(),
            kind: vec!["security-alert".into(), "events-lost".into()],
            ..FilterArgs::default()
        })
    };
    // Taken before the first search: an alert recorded in between is then printed once.
    let follower = a
        .follow
        .then(|| Follower::new(store.as_mut(), None))
        .transpose()
        .map_err(|e| e.to_string())?;
    let rows = store.search(&filter()?).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut print = |rows: &[FoundRow]| -> Result<(), String> {
        for row in rows {
            if let Some(line) = line(a, row) {
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
            }
        }
        out.flush().map_err(|e| e.to_string())
    };
    print(&rows)?;
    match follower {
        Some(follower) => audit::follow(follower, store.as_mut(), &rows, filter, print),
        None => Ok(EXIT_OK),
    }
}

/// One alert, as the store row gives it.
struct Alert {
    record: AuditRecord,
    kind: String,
    /// Detections: the rule that fired.
    rule: Option<DetectionRule>,
    detail: String,
}

impl Alert {
    fn of(record: AuditRecord) -> Option<Alert> {
        let (kind, detail, rule) = match &record.event {
            AuditEvent::SecurityAlert {
                alert,
                detail,
                rule,
            } => (alert.clone(), detail.clone(), rule.clone()),
            AuditEvent::EventsLost { count } => {
                ("events-lost".into(), format!("{count} events lost"), None)
            }
            _ => return None,
        };
        Some(Alert {
            record,
            kind,
            rule,
            detail,
        })
    }

    fn rule_name(&self) -> Option<&str> {
        self.rule.as_ref().map(|r| r.name.as_str())
    }

    fn source(&self) -> Option<&str> {
        self.record.peer.as_ref()?.address.as_deref()
    }

    fn text(&self) -> String {
        let mut s = format!("{} {}", rfc3339_ms(self.record.time_ms), self.kind);
        if let Some(r) = self.rule_name() {
            s.push_str(&format!(" {r}"));
        }
        let peer = self.record.peer.as_ref();
        match (peer.and_then(|p| p.calling_ae.as_deref()), self.source()) {
            (Some(ae), Some(at)) => s.push_str(&format!(" {ae}@{at}")),
            (None, Some(at)) => s.push_str(&format!(" {at}")),
            (Some(ae), None) => s.push_str(&format!(" {ae}")),
            (None, None) => s.push_str(" -"),
        }
        s.push_str(" | ");
        s.push_str(&self.detail);
        s
    }

    fn json(&self) -> serde_json::Value {
        let r = &self.record;
        let peer = r.peer.as_ref();
        json!({
            "time": rfc3339_ms(r.time_ms),
            "node": r.node,
            "seq": r.seq,
            "kind": self.kind,
            "rule": self.rule_name(),
            "rule_kind": self.rule.as_ref().map(|r| r.kind.as_str()),
            "response": self.rule.as_ref().map(|r| r.response.as_str()),
            "evidence": self.rule.as_ref().map(|r| &r.evidence),
            "source": self.source(),
            "calling_ae": peer.and_then(|p| p.calling_ae.as_deref()),
            "called_ae": peer.and_then(|p| p.called_ae.as_deref()),
            "peer": peer.and_then(|p| p.name.as_deref()),
            "assoc": r.assoc,
            "detail": self.detail,
        })
    }
}

/// The line to print for `row`, if it is an alert the filters keep.
fn line(a: &AlertsArgs, row: &FoundRow) -> Option<String> {
    let alert = match serde_json::from_str::<AuditRecord>(&row.entry) {
        Ok(r) => Alert::of(r)?,
        Err(e) => {
            eprintln!("{}#{}: unreadable record skipped: {e}", row.node, row.seq);
            return None;
        }
    };
    let kinds = a.kind.iter().map(|k| k.trim()).filter(|k| !k.is_empty());
    if kinds.clone().next().is_some() && !kinds.clone().any(|k| k == alert.kind) {
        return None;
    }
    if a.rule.is_some() && alert.rule_name() != a.rule.as_deref() {
        return None;
    }
    Some(if a.json {
        alert.json().to_string()
    } else {
        alert.text()
    })
}
