//! What `radguard serve`'s detectors keep across restarts and the clock they read: the learned
//! `off-hours` profiles are read back from the audit trail at start (its admitted
//! associations of the last `learning_days`), the learned `bulk-retrieve` baselines live in a
//! state file of the data folder (the trail records no C-MOVE counts and no bytes).

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::TimeZone;
use radguard_detect::{Baselines, Detectors, Now, Wall};

/// The learned bulk-retrieve baselines, in the data folder.
pub const BASELINES_FILE: &str = "detect-baselines.json";

/// The clocks of an event the bus stamped at `time_ms` (Unix milliseconds): a monotonic clock
/// in milliseconds since `start`, and the event's time with the local UTC offset (time zone
/// from the environment: `TZ`, else /etc/localtime).
pub fn now(start: tokio::time::Instant, time_ms: u128) -> Now {
    Now {
        mono_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        wall: Some(wall_at(i64::try_from(time_ms).unwrap_or(i64::MAX))),
    }
}

/// A past instant with the local UTC offset in force then (daylight saving included).
pub fn wall_at(unix_ms: i64) -> Wall {
    let offset = chrono::Local
        .timestamp_millis_opt(unix_ms)
        .single()
        .map_or(0, |t| t.offset().local_minus_utc());
    Wall {
        unix_ms,
        utc_offset_secs: offset,
    }
}

/// Feeds the trail's admitted associations of the last 2 × `learning_days` (the largest of the
/// learned off-hours rules) to the detectors; returns them and how many were read (none
/// without such a rule).
pub async fn learn_from_trail(
    mut detectors: Detectors,
    store: &radguard_audit::StoreSpec,
) -> anyhow::Result<(Detectors, u64, u64)> {
    let Some(days) = detectors.profile_learning_days() else {
        return Ok((detectors, 0, 0));
    };
    let mut st = store
        .open_async()
        .await
        .context("opening the audit store to learn the off-hours profiles")?;
    // Twice the learning period: a peer whose trail reaches further back than `learning_days`
    // is known to have that much history (its learning period is over at start).
    let until = chrono::Utc::now().timestamp_millis();
    let since = until.saturating_sub(
        i64::try_from(days)
            .unwrap_or(i64::MAX)
            .saturating_mul(2 * 86_400_000),
    );
    tokio::task::spawn_blocking(move || {
        let n = st.admitted_associations(since, until, &mut |peer, t| {
            detectors.learn_association(peer, wall_at(t))
        })?;
        Ok((detectors, n, days))
    })
    .await
    .context("learning the off-hours profiles")?
}

/// The saved baselines (none when the file is absent).
pub fn load_baselines(data: &Path) -> anyhow::Result<Option<Baselines>> {
    let path = data.join(BASELINES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces the saved baselines whole (a temporary file renamed over the old one: a crash
/// leaves the old or the new file, never half of one).
pub fn save_baselines(data: &Path, baselines: &Baselines) -> std::io::Result<()> {
    let path: PathBuf = data.join(BASELINES_FILE);
    let tmp = data.join(format!("{BASELINES_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(baselines).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &path)
}

/// The detectors of `config` with what earlier runs learned: the saved baselines, the trail's
/// admitted associations (when the audit trail is on). A trail or file that cannot be read is
/// reported and learning starts afresh: detection runs either way.
pub async fn prepare(
    config: &radguard_config::DetectConfig,
    data: &Path,
    trail: Option<&radguard_audit::StoreSpec>,
) -> Detectors {
    let mut detectors = Detectors::new(config);
    match load_baselines(data) {
        Ok(Some(b)) => {
            detectors.restore_baselines(&b);
            println!(
                "radguard: detection: {} learned bulk-retrieve baselines from {}",
                b.peaks.len(),
                BASELINES_FILE
            );
        }
        Ok(None) => {}
        Err(e) => eprintln!("radguard: WARNING: {e:#}; bulk-retrieve baselines learned afresh"),
    }
    let Some(store) = trail else {
        return detectors;
    };
    let fallback = Detectors::new(config);
    match learn_from_trail(detectors, store).await {
        Ok((d, n, days)) => {
            if days > 0 {
                println!(
                    "radguard: detection: off-hours profiles learned {n} admitted associations from the audit trail (last {} days)",
                    2 * days
                );
            }
            d
        }
        Err(e) => {
            eprintln!("radguard: WARNING: {e:#}; off-hours profiles learned afresh");
            let mut d = fallback;
            if let Ok(Some(b)) = load_baselines(data) {
                d.restore_baselines(&b);
            }
            d
        }
    }
}

/// Saves the learned baselines when they change, at most every [`Saver::EVERY`] (the
/// detection task asks [`Saver::due_in`] how long it may wait for the next event).
pub struct Saver {
    data: PathBuf,
    dirty: bool,
    saved_at: Option<std::time::Instant>,
}

impl Saver {
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    pub fn new(data: PathBuf) -> Self {
        Saver {
            data,
            dirty: false,
            saved_at: None,
        }
    }

    /// How long until a pending save is due (none: nothing to save).
    pub fn due_in(&self) -> Option<std::time::Duration> {
        self.dirty
            .then(|| Self::EVERY.saturating_sub(self.saved_at.map_or(Self::EVERY, |t| t.elapsed())))
    }

    /// Notes a change of the detectors' baselines and saves when due (`now`: whatever is
    /// pending, at shutdown).
    pub fn save(&mut self, detectors: &mut Detectors, now: bool) {
        self.dirty |= detectors.baselines_changed();
        if !self.dirty || (!now && self.due_in().is_some_and(|d| !d.is_zero())) {
            return;
        }
        self.dirty = false;
        self.saved_at = Some(std::time::Instant::now());
        if let Err(e) = save_baselines(&self.data, &detectors.baselines()) {
            tracing::warn!(target: "radguard::detect", "saving the learned baselines in {}: {e}", self.data.display());
        }
    }
}
