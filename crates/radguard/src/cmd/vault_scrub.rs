//! The vault's scrub as a `radguard serve` background task: [`Scrubber::step`] runs on the
//! blocking pool one object at a time; each finding becomes a `vault-scrub-finding` event and a
//! `vault-integrity` security alert, a burst of tampering becomes one `ransomware` alert, and
//! each finished pass a `vault-scrub-pass` event.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use radguard_events::{AlertKind, Event, EventBus};
use radguard_ledger::verify::{self, Verdict};
use radguard_vault::integrity::RansomwareDetector;
use radguard_vault::scrub::{Finding, ScrubConfig, Scrubber, SecondOpinion, Step};
use radguard_vault::Vault;

/// After a store error (the index locked or unreadable), wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Starts the scrub (nothing when `[scrub] enabled = false`). Setting `stop` ends it within
/// about 100 ms, its cursor saved. Objects of instances the integrity ledger in `ledger_dir`
/// logged (origin routes) are also compared with the logged fingerprint.
pub fn spawn(
    vault: Arc<Vault>,
    ledger_dir: &Path,
    cfg: ScrubConfig,
    bus: EventBus,
    stop: Arc<AtomicBool>,
) {
    if !cfg.enabled {
        return;
    }
    let mut scrubber = Scrubber::new((*vault).clone(), cfg.rate_bytes_per_sec);
    if let Some(opinion) = ledger_opinion(ledger_dir) {
        scrubber = scrubber.with_second_opinion(opinion);
    }
    tokio::spawn(run(scrubber, cfg, bus, stop));
}

/// The ledger's opinion: `Some(why)` when the instance was logged and its object's fingerprint
/// is not the logged one (`altered`). Not logged, or not provable yet: no opinion.
fn ledger_opinion(ledger_dir: &Path) -> Option<SecondOpinion> {
    let view = radguard_ledger::LedgerView::open(ledger_dir, None).ok()?;
    let ctx = verify::Context::new(vec![view], None);
    Some(Box::new(move |inst| {
        let logged = ctx.ledgers.first()?.lookup(&inst.sop_instance_uid).ok()?;
        if logged.is_empty() {
            return None;
        }
        let report = verify::verify_file(&inst.path, &ctx);
        (report.verdict == Verdict::Altered).then(|| {
            report
                .detail
                .unwrap_or_else(|| format!("changed: {}", report.changed_attributes.join(", ")))
        })
    }))
}

async fn run(scrubber: Scrubber, cfg: ScrubConfig, bus: EventBus, stop: Arc<AtomicBool>) {
    let mut scrubber = Some(scrubber);
    let mut ransomware = RansomwareDetector::new(
        cfg.ransomware_threshold,
        cfg.ransomware_window_secs.saturating_mul(1000),
    );
    let interval = Duration::from_secs(cfg.interval_secs);
    let mut pass_started = Instant::now();
    loop {
        let Some(mut s) = scrubber.take() else {
            return;
        };
        let flag = stop.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let step = s.step(&flag);
            (s, step)
        })
        .await;
        let Ok((s, step)) = joined else {
            // The step panicked: a bug; the scrub stops rather than loop on it.
            tracing::error!("the vault scrub stopped: a step panicked");
            return;
        };
        scrubber = Some(s);
        match step {
            Ok(Step::Checked(findings)) => report(&bus, &mut ransomware, &cfg, findings),
            Ok(Step::PassComplete(findings, summary)) => {
                report(&bus, &mut ransomware, &cfg, findings);
                bus.emit(Event::VaultScrubPass {
                    objects: summary.objects,
                    bytes: summary.bytes,
                    findings: summary.findings,
                    duration_ms: summary.duration_ms,
                });
                // The next pass starts no sooner than `interval_secs` after this one started.
                let next = pass_started + interval;
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    let left = next.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(Duration::from_secs(1))).await;
                }
                pass_started = Instant::now();
            }
            Ok(Step::Stopped) => return,
            Err(e) => {
                tracing::warn!("the vault scrub could not read the vault: {e}; retrying in 60 s");
                let until = Instant::now() + RETRY_AFTER;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

fn report(
    bus: &EventBus,
    ransomware: &mut RansomwareDetector,
    cfg: &ScrubConfig,
    findings: Vec<Finding>,
) {
    for f in findings {
        let detail = f.detail();
        bus.emit(Event::VaultScrubFinding {
            sha256: f.sha256.clone(),
            sop_instance: f.sop_instance_uid.clone(),
            finding: f.kind.name().to_string(),
            detail: detail.clone(),
        });
        bus.emit(Event::SecurityAlert {
            assoc: None,
            kind: AlertKind::VaultIntegrity,
            source: None,
            detail,
        });
        if f.kind.is_tampering() {
            if let Some(count) = ransomware.record(radguard_gateway::shared::unix_ms()) {
                bus.emit(Event::SecurityAlert {
                    assoc: None,
                    kind: AlertKind::Ransomware,
                    source: None,
                    detail: format!(
                        "{count} vault objects changed, encrypted-looking or missing within \
                         {} s (ransomware_threshold {}): the pattern of ransomware rewriting \
                         the archive",
                        cfg.ransomware_window_secs, cfg.ransomware_threshold
                    ),
                });
            }
        }
    }
}
