//! The scrub: a slow, continuous re-check of every object in the vault, and its `[scrub]`
//! config section.
//!
//! Objects are written once and named by their SHA-256, so a file whose bytes no longer hash to
//! its name was changed under the vault (a compromised host, ransomware, a failing disk). The
//! [`Scrubber`] walks the index in commit order, re-hashes each object at a bounded rate (a token
//! bucket in bytes per second, so it never competes with relaying), and reports what it finds
//! ([`Finding`]). A cursor in a small state file lets it resume where it stopped after a
//! restart. At the end of each pass it also lists the object tree for files the index does not
//! know (ransom notes, renamed or planted files).
//!
//! Synchronous std I/O: the gateway runs [`Scrubber::step`] through `spawn_blocking`.
//!
//! ```toml
//! [scrub]
//! enabled = true                 # default true
//! rate_bytes_per_sec = 8388608   # default 8 MiB/s
//! interval_secs = 86400          # minimum time between the starts of two passes
//! ransomware_threshold = 5       # this many objects changed/encrypted-looking/missing ...
//! ransomware_window_secs = 600   # ... within this window raise one `ransomware` alert
//! ```

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use radguard_toml::{Placed, PlacedErrors, Seg};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::integrity::{self, Judgement};
use crate::{StoredInstance, Vault, VaultError};

/// The scrub's state file, in the vault's root: the cursor and the current pass's figures.
pub const STATE_FILE: &str = "scrub-state";

/// Default rate: 8 MiB/s. SHA-256 costs a few percent of one core at that rate and it is a
/// small fraction of any disk's sequential read rate, so relaying is not slowed (bench/scrub.sh
/// measures it); a 1 TB vault still gets a full pass in about a day and a half.
pub const DEFAULT_RATE: u64 = 8 * 1024 * 1024;
/// Default minimum time between the starts of two passes: one a day.
pub const DEFAULT_INTERVAL_SECS: u64 = 86_400;
pub const DEFAULT_RANSOMWARE_THRESHOLD: u32 = 5;
pub const DEFAULT_RANSOMWARE_WINDOW_SECS: u64 = 600;
/// The lowest rate accepted: below this a pass over even a small vault takes weeks.
pub const MIN_RATE: u64 = 64 * 1024;

/// Read size, and the token bucket's unit of work.
const CHUNK: usize = 64 * 1024;
/// Index rows fetched at a time.
const PAGE: u32 = 256;
/// The cursor is written at most this often (and at the end of a pass, and on stop).
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// A file under `objects/` the index does not know is reported only once it is older than
/// this: a commit renames the object into place just before its index row is written.
const UNINDEXED_GRACE: Duration = Duration::from_secs(60);

/// The `[scrub]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// Run the scrub (default true).
    pub enabled: bool,
    /// Bytes re-hashed per second at most (default 8 MiB/s, at least 64 KiB/s).
    pub rate_bytes_per_sec: u64,
    /// Minimum time between the starts of two passes (default 86400; at least 1).
    pub interval_secs: u64,
    /// Objects found changed, encrypted-looking or missing within the window that raise the
    /// `ransomware` alert (default 5; at least 1).
    pub ransomware_threshold: u32,
    /// The window (default 600; at least 1).
    pub ransomware_window_secs: u64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        ScrubConfig {
            enabled: true,
            rate_bytes_per_sec: DEFAULT_RATE,
            interval_secs: DEFAULT_INTERVAL_SECS,
            ransomware_threshold: DEFAULT_RANSOMWARE_THRESHOLD,
            ransomware_window_secs: DEFAULT_RANSOMWARE_WINDOW_SECS,
        }
    }
}

/// What is wrong with the `[scrub]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    #[error("rate_bytes_per_sec must be at least {MIN_RATE} (64 KiB/s); it is {0}")]
    Rate(u64),
    #[error("must be at least 1")]
    Zero,
}

/// One problem in the `[scrub]` section, with its place in the file.
pub type ConfigError = Placed<ConfigProblem>;
/// Every problem found in the `[scrub]` section, in file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

#[derive(Deserialize)]
struct Document {
    scrub: Option<ScrubConfig>,
}

impl ScrubConfig {
    /// Reads and checks the `[scrub]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults.
    pub fn from_document(src: &str, file: &str) -> Result<ScrubConfig, ConfigErrors> {
        radguard_toml::read_section(
            src,
            file,
            ConfigProblem::Toml,
            |doc: Document| doc.scrub.unwrap_or_default(),
            |c: &ScrubConfig| {
                let at = |key| vec![Seg::Key("scrub"), Seg::Key(key)];
                c.problems()
                    .into_iter()
                    .map(|(key, p)| (at(key), p))
                    .collect()
            },
        )
    }

    /// What is wrong with the values (each with its key).
    pub fn problems(&self) -> Vec<(&'static str, ConfigProblem)> {
        let mut out = Vec::new();
        if self.rate_bytes_per_sec < MIN_RATE {
            out.push((
                "rate_bytes_per_sec",
                ConfigProblem::Rate(self.rate_bytes_per_sec),
            ));
        }
        if self.interval_secs == 0 {
            out.push(("interval_secs", ConfigProblem::Zero));
        }
        if self.ransomware_threshold == 0 {
            out.push(("ransomware_threshold", ConfigProblem::Zero));
        }
        if self.ransomware_window_secs == 0 {
            out.push(("ransomware_window_secs", ConfigProblem::Zero));
        }
        out
    }
}

/// What the scrub found wrong with one object.
#[derive(Debug, Clone, PartialEq)]
pub enum FindingKind {
    /// The index names it; the file is gone.
    Missing,
    /// Its bytes no longer hash to its name.
    Changed { actual_sha256: String },
    /// Changed, and high-entropy without DICOM structure (see [`integrity`]).
    EncryptedLooking { actual_sha256: String, entropy: f64 },
    /// It could not be read (permissions, I/O error).
    Unreadable { error: String },
    /// A file under `objects/` no index row refers to.
    Unindexed,
    /// Its bytes match its name, but the second opinion (the integrity ledger's fingerprint,
    /// for instances an origin route logged) disagrees: the index row itself was rewritten.
    LedgerMismatch { detail: String },
}

impl FindingKind {
    /// The kebab-case name used in events and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            FindingKind::Missing => "missing",
            FindingKind::Changed { .. } => "changed",
            FindingKind::EncryptedLooking { .. } => "encrypted-looking",
            FindingKind::Unreadable { .. } => "unreadable",
            FindingKind::Unindexed => "unindexed",
            FindingKind::LedgerMismatch { .. } => "ledger-mismatch",
        }
    }

    /// Counts towards the ransomware pattern: content changed, encrypted or gone.
    pub fn is_tampering(&self) -> bool {
        matches!(
            self,
            FindingKind::Missing
                | FindingKind::Changed { .. }
                | FindingKind::EncryptedLooking { .. }
                | FindingKind::LedgerMismatch { .. }
        )
    }
}

/// One finding, with what identifies the object (no patient data).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The object's SHA-256 (its name); for an unindexed file, its file name.
    pub sha256: String,
    /// The SOP Instance UID when the index knows the object.
    pub sop_instance_uid: Option<String>,
    pub path: PathBuf,
    pub kind: FindingKind,
}

impl Finding {
    /// One line: what was found, for the alert's detail.
    pub fn detail(&self) -> String {
        let uid = self
            .sop_instance_uid
            .as_deref()
            .map(|u| format!(" (SOP Instance UID {u})"))
            .unwrap_or_default();
        match &self.kind {
            FindingKind::Missing => format!("vault object {}{uid} is missing", self.sha256),
            FindingKind::Changed { actual_sha256 } => format!(
                "vault object {}{uid} changed: its bytes now hash to {actual_sha256}",
                self.sha256
            ),
            FindingKind::EncryptedLooking {
                actual_sha256,
                entropy,
            } => format!(
                "vault object {}{uid} changed and looks encrypted: {entropy:.2} bits/byte, no \
                 DICOM structure (now hashes to {actual_sha256})",
                self.sha256
            ),
            FindingKind::Unreadable { error } => {
                format!("vault object {}{uid} is unreadable: {error}", self.sha256)
            }
            FindingKind::Unindexed => format!(
                "file {} in the vault's object tree is not in the index",
                self.path.display()
            ),
            FindingKind::LedgerMismatch { detail } => format!(
                "vault object {}{uid} differs from the integrity ledger's fingerprint: {detail}",
                self.sha256
            ),
        }
    }
}

/// A finished pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassSummary {
    pub objects: u64,
    pub bytes: u64,
    pub findings: u64,
    pub duration_ms: u64,
}

/// What one [`Scrubber::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// One object was checked; its findings (none when it is intact). Findings already reported
    /// by this scrubber are not repeated.
    Checked(Vec<Finding>),
    /// The pass ended: the unindexed files found, and the pass's figures. The next step starts
    /// a new pass.
    PassComplete(Vec<Finding>, PassSummary),
    /// Stopped (the stop flag was set) before the object was finished.
    Stopped,
}

/// Bytes per second, with at most one second of burst.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u64) -> Self {
        TokenBucket {
            rate: rate.max(1) as f64,
            tokens: 0.0,
            last: Instant::now(),
        }
    }

    /// Takes `n` tokens, sleeping (in slices of at most 100 ms, watching `stop`) until they
    /// are there. False when stopped.
    fn take(&mut self, n: usize, stop: &AtomicBool) -> bool {
        let n = n as f64;
        loop {
            let now = Instant::now();
            let dt = now.duration_since(self.last).as_secs_f64();
            self.last = now;
            self.tokens = (self.tokens + dt * self.rate).min(self.rate.max(n));
            if self.tokens >= n {
                self.tokens -= n;
                return true;
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let wait = ((n - self.tokens) / self.rate).min(0.1);
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// The cursor and the current pass, as saved in [`STATE_FILE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    /// The last index position checked in this pass (0: none yet).
    cursor: i64,
    pass_started_ms: u64,
    objects: u64,
    bytes: u64,
    findings: u64,
}

impl State {
    fn parse(text: &str) -> Option<State> {
        let mut s = State::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            match k {
                "cursor" => s.cursor = v.parse().ok()?,
                "pass_started_ms" => s.pass_started_ms = v.parse().ok()?,
                "objects" => s.objects = v.parse().ok()?,
                "bytes" => s.bytes = v.parse().ok()?,
                "findings" => s.findings = v.parse().ok()?,
                _ => {}
            }
        }
        Some(s)
    }

    fn render(&self) -> String {
        format!(
            "cursor {}\npass_started_ms {}\nobjects {}\nbytes {}\nfindings {}\n",
            self.cursor, self.pass_started_ms, self.objects, self.bytes, self.findings
        )
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A second opinion on an object whose bytes match its name: `Some(why)` when it disagrees.
/// The gateway asks the integrity ledger (instances logged by origin routes), so that an index
/// row rewritten together with its object is still caught.
pub type SecondOpinion = Box<dyn Fn(&StoredInstance) -> Option<String> + Send>;

struct Opinion(SecondOpinion);

impl std::fmt::Debug for Opinion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecondOpinion")
    }
}

/// Walks the vault, one object per [`step`](Scrubber::step).
#[derive(Debug)]
pub struct Scrubber {
    second: Option<Opinion>,
    vault: Vault,
    state_path: PathBuf,
    state: State,
    bucket: TokenBucket,
    page: std::collections::VecDeque<(i64, StoredInstance)>,
    /// (object, finding name) already reported by this process: a finding is raised once, not
    /// at every pass.
    reported: HashSet<(String, &'static str)>,
    last_save: Instant,
}

impl Scrubber {
    /// A scrubber over `vault` at `rate` bytes per second, resuming from the vault's state file
    /// (a missing or unreadable one starts a new pass).
    pub fn new(vault: Vault, rate: u64) -> Scrubber {
        let state_path = vault.root().join(STATE_FILE);
        let state = fs::read_to_string(&state_path)
            .ok()
            .and_then(|t| State::parse(&t))
            .unwrap_or_default();
        Scrubber {
            second: None,
            vault,
            state_path,
            state,
            bucket: TokenBucket::new(rate),
            page: Default::default(),
            reported: HashSet::new(),
            last_save: Instant::now(),
        }
    }

    /// Asks `opinion` about every object found intact; it reads the object again, paid for
    /// at the same rate.
    pub fn with_second_opinion(mut self, opinion: SecondOpinion) -> Scrubber {
        self.second = Some(Opinion(opinion));
        self
    }

    /// The index position the next step starts after (0: a new pass).
    pub fn cursor(&self) -> i64 {
        self.state.cursor
    }

    /// Checks the next object (re-hash at the configured rate), or ends the pass when none is
    /// left. Stops early, saving the cursor, when `stop` is set.
    pub fn step(&mut self, stop: &AtomicBool) -> Result<Step, VaultError> {
        if stop.load(Ordering::Relaxed) {
            self.save()?;
            return Ok(Step::Stopped);
        }
        if self.state.cursor == 0 && self.state.objects == 0 && self.state.pass_started_ms == 0 {
            self.state.pass_started_ms = unix_ms();
        }
        if self.page.is_empty() {
            self.page
                .extend(self.vault.page_after(self.state.cursor, PAGE)?);
        }
        let Some((pos, inst)) = self.page.pop_front() else {
            return self.finish_pass();
        };
        let (mut findings, bytes) = match check_one(&inst, Some(&mut self.bucket), stop) {
            Some(r) => r,
            None => {
                self.page.push_front((pos, inst));
                self.save()?;
                return Ok(Step::Stopped);
            }
        };
        if let (true, Some(Opinion(op))) = (findings.is_empty(), &self.second) {
            if self
                .bucket
                .take(usize::try_from(bytes).unwrap_or(usize::MAX), stop)
            {
                if let Some(detail) = op(&inst) {
                    findings.push(Finding {
                        sha256: inst.sha256.clone(),
                        sop_instance_uid: Some(inst.sop_instance_uid.clone()),
                        path: inst.path.clone(),
                        kind: FindingKind::LedgerMismatch { detail },
                    });
                }
            }
        }
        self.state.cursor = pos;
        self.state.objects += 1;
        self.state.bytes += bytes;
        let fresh = self.fresh(findings);
        self.state.findings += fresh.len() as u64;
        if self.last_save.elapsed() >= SAVE_EVERY || !fresh.is_empty() {
            self.save()?;
        }
        Ok(Step::Checked(fresh))
    }

    /// Keeps the findings not reported before.
    fn fresh(&mut self, findings: Vec<Finding>) -> Vec<Finding> {
        findings
            .into_iter()
            .filter(|f| self.reported.insert((f.sha256.clone(), f.kind.name())))
            .collect()
    }

    fn finish_pass(&mut self) -> Result<Step, VaultError> {
        let mut unindexed = Vec::new();
        let now = SystemTime::now();
        for (path, sha) in self.vault.object_files()? {
            let known = match &sha {
                Some(s) => self.vault.has_object(s)?,
                None => false,
            };
            if known {
                continue;
            }
            // Young files may be a commit between its rename and its index row.
            let age = fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if age < UNINDEXED_GRACE {
                continue;
            }
            let name = sha.unwrap_or_else(|| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            unindexed.push(Finding {
                sha256: name,
                sop_instance_uid: None,
                path,
                kind: FindingKind::Unindexed,
            });
        }
        let unindexed = self.fresh(unindexed);
        let summary = PassSummary {
            objects: self.state.objects,
            bytes: self.state.bytes,
            findings: self.state.findings + unindexed.len() as u64,
            duration_ms: unix_ms().saturating_sub(self.state.pass_started_ms),
        };
        self.state = State::default();
        self.save()?;
        Ok(Step::PassComplete(unindexed, summary))
    }

    fn save(&mut self) -> Result<(), VaultError> {
        self.last_save = Instant::now();
        let tmp = self.state_path.with_extension("tmp");
        fs::write(&tmp, self.state.render()).map_err(|e| VaultError::io(&tmp, e))?;
        fs::rename(&tmp, &self.state_path).map_err(|e| VaultError::io(&self.state_path, e))
    }
}

/// Re-hashes one object (at the bucket's rate, when given): its findings and the bytes read, or
/// `None` when stopped.
fn check_one(
    inst: &StoredInstance,
    mut bucket: Option<&mut TokenBucket>,
    stop: &AtomicBool,
) -> Option<(Vec<Finding>, u64)> {
    let finding = |kind| Finding {
        sha256: inst.sha256.clone(),
        sop_instance_uid: Some(inst.sop_instance_uid.clone()),
        path: inst.path.clone(),
        kind,
    };
    let mut f = match File::open(&inst.path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Some((vec![finding(FindingKind::Missing)], 0))
        }
        Err(e) => {
            return Some((
                vec![finding(FindingKind::Unreadable {
                    error: e.to_string(),
                })],
                0,
            ))
        }
    };
    let mut hasher = Sha256::new();
    let mut sample = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut read = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Some((
                    vec![finding(FindingKind::Unreadable {
                        error: e.to_string(),
                    })],
                    read,
                ))
            }
        };
        // Paid for after the read, so a small object costs its size, not a whole chunk.
        if !bucket.as_mut().is_none_or(|b| b.take(n, stop)) {
            return None;
        }
        let got = buf.get(..n).unwrap_or_default();
        hasher.update(got);
        if sample.len() < integrity::SAMPLE_LEN {
            let room = integrity::SAMPLE_LEN - sample.len();
            sample.extend_from_slice(got.get(..room.min(n)).unwrap_or_default());
        }
        read += n as u64;
    }
    let actual = hex::encode(hasher.finalize());
    if actual == inst.sha256 {
        return Some((Vec::new(), read));
    }
    let j: Judgement = integrity::judge(&sample);
    let kind = if j.encrypted_looking() {
        FindingKind::EncryptedLooking {
            actual_sha256: actual,
            entropy: j.entropy,
        }
    } else {
        FindingKind::Changed {
            actual_sha256: actual,
        }
    };
    Some((vec![finding(kind)], read))
}

/// Re-hashes one object file at full speed and judges it (for `radguard vault verify`): its
/// finding, `None` when it is intact.
pub fn check_object(inst: &StoredInstance) -> Option<Finding> {
    let stop = AtomicBool::new(false);
    check_one(inst, None, &stop).and_then(|(mut f, _)| f.pop())
}
