//! The store itself: [`Vault`] (open, look up, check) and [`PendingInstance`] (one incoming
//! instance, from first chunk to commit).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use radguard_dicom::types::status;
use radguard_dicom::Uid;
use rusqlite::{Connection, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::config::{Immutable, VaultConfig};
use crate::index::{self, Record};
use crate::indexlog::{self, IndexLog, IndexLogHead, LogFault};
use crate::layout;
use crate::lock::{self, LockOutcome};
use crate::meta::{self, PREAMBLE_LEN};
use crate::scan::{self, Expected};
use crate::time::rfc3339_utc;
use crate::VaultError;

/// Write buffer for incoming chunks: chunks are PDU-sized, so this batches small PDUs into
/// fewer `write` calls without holding much.
const WRITE_BUFFER: usize = 256 * 1024;

/// One stored instance, as the index knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    /// Lowercase hex SHA-256 of the whole file (preamble, meta and data set).
    pub sha256: String,
    /// The object file: `<root>/objects/ab/cd/<sha256>.dcm`.
    pub path: PathBuf,
    /// Size of the whole file in bytes.
    pub size: u64,
    pub patient_id: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    /// The calling AE title that sent it; `None` for an object re-indexed after a crash.
    pub source_ae: Option<String>,
    /// When it was committed, RFC 3339 UTC with milliseconds.
    pub stored_at: String,
    /// Set when the data set could not be parsed (the index attributes are then `None`) or
    /// disagrees with the command that carried it (e.g. a different SOP Instance UID).
    pub parse_warning: Option<String>,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// A new instance was stored.
    Stored(StoredInstance),
    /// This SOP Instance UID was already stored with exactly these bytes: nothing new was
    /// written; the existing record is returned.
    DuplicateIdentical(StoredInstance),
    /// This SOP Instance UID was already stored with different bytes: nothing was changed.
    Conflict {
        existing: StoredInstance,
        new_sha256: String,
    },
}

impl StoreOutcome {
    /// The instance now held under the SOP Instance UID (for a conflict, the earlier one).
    pub fn instance(&self) -> &StoredInstance {
        match self {
            StoreOutcome::Stored(i) | StoreOutcome::DuplicateIdentical(i) => i,
            StoreOutcome::Conflict { existing, .. } => existing,
        }
    }

    /// The C-STORE response status for this outcome: Success for a new or identical instance,
    /// "Duplicate SOP Instance" (0111) for a conflict.
    pub fn dimse_status(&self) -> u16 {
        match self {
            StoreOutcome::Stored(_) | StoreOutcome::DuplicateIdentical(_) => status::SUCCESS,
            StoreOutcome::Conflict { .. } => status::DUPLICATE_SOP_INSTANCE,
        }
    }
}

/// Something [`Vault::check`] or [`Vault::verify`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// An index row whose object file is gone.
    MissingObject {
        sop_instance_uid: String,
        path: PathBuf,
    },
    /// An index row whose object file has another size.
    SizeMismatch {
        sop_instance_uid: String,
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    /// An object file whose bytes no longer hash to its name ([`Vault::verify`] only).
    HashMismatch {
        sop_instance_uid: String,
        path: PathBuf,
        actual_sha256: String,
    },
    /// An object file no index row refers to, that `open` could not re-index (its SOP
    /// Instance UID is indexed with other bytes, or its meta is unreadable).
    UnindexedObject { path: PathBuf, reason: String },
    /// A file under `objects/` that does not follow the layout.
    StrayFile { path: PathBuf },
    /// A line of the index log (`index-log/`) that does not parse or does not chain to the
    /// line before it: the log was edited.
    IndexLogBroken {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// An index row the index log does not record (a row added to the database behind the
    /// vault's back).
    RowNotLogged { sop_instance_uid: String },
    /// An index row that differs from its index log line (a row rewritten in the database).
    RowDiffersFromLog { sop_instance_uid: String },
    /// An index log line whose row is missing from the index (a row deleted from the
    /// database).
    LoggedRowMissing { sop_instance_uid: String },
}

struct Shared {
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    root: PathBuf,
    conn: Mutex<Connection>,
    /// The `[vault]` settings it was opened with.
    config: VaultConfig,
    /// The start-up probe's outcome; `None` with `immutable = "off"`.
    lock: Option<LockOutcome>,
    /// Objects stored (or restored) whose immutable flag could not be set.
    unlocked: AtomicU64,
    /// The index log; locked after `conn` when both are held. `None` when opened read-only
    /// (the gateway that owns the vault writes it; readers take its head from the files).
    log: Option<Mutex<IndexLog>>,
}

impl Shared {
    /// The connection. A panic while it was held cannot leave a half-done write behind (an
    /// open transaction rolls back when dropped), so a poisoned lock is simply taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The index log, `None` when opened read-only. A panic while it was held leaves at most a
    /// line without its newline, which `open` cuts.
    fn log(&self) -> Option<MutexGuard<'_, IndexLog>> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The index log's head: from the open log, or read from its files when read-only.
    fn log_head(&self) -> Result<IndexLogHead, VaultError> {
        match self.log() {
            Some(log) => Ok(log.head()),
            None => indexlog::head_of(&self.root.join(indexlog::DIR)),
        }
    }

    /// Appends a row to the index log (the caller holds the index lock), locking a segment it
    /// sealed.
    fn log_row(&self, record: &Record) -> Result<(), VaultError> {
        let Some(mut log) = self.log() else {
            return Err(VaultError::ReadOnly);
        };
        if let Some(sealed) = log.append(record)? {
            self.lock_object(&sealed);
        }
        Ok(())
    }
}

/// A write-once, content-addressed store of DICOM Part 10 files with a SQLite index.
///
/// Cheap to clone (all clones share one index connection). One process should own a vault
/// directory: [`Vault::open`] empties `tmp/`, which would break another process's uploads.
#[derive(Clone)]
pub struct Vault {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("root", &self.shared.root)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `dir`, creating `objects/`, `tmp/` and `index.sqlite` as needed.
    ///
    /// Recovery on open: leftover temp files (uploads interrupted by a crash) are removed, and
    /// object files without an index row (a crash between rename and index commit) are
    /// re-indexed after their hash is checked. The latter walks `objects/`, so opening a very
    /// large vault takes time proportional to its number of files.
    ///
    /// Object files get no immutable flag ([`VaultConfig::PLAIN`]); the gateway opens with
    /// [`Vault::open_with`] and its `[vault]` section.
    pub fn open(dir: &Path) -> Result<Vault, VaultError> {
        Vault::open_with(dir, VaultConfig::PLAIN)
    }

    /// [`Vault::open`] with the `[vault]` settings. Unless `immutable = "off"`, a scratch file
    /// in `tmp/` is made immutable and released again to learn whether object files can be
    /// locked ([`Vault::lock_status`]); with `"required"` a failed probe is
    /// [`VaultError::NotImmutable`]. Objects re-indexed on open are locked like new ones, and
    /// objects older than `retention_days` are released ([`Vault::release_expired`]).
    pub fn open_with(dir: &Path, config: VaultConfig) -> Result<Vault, VaultError> {
        let objects_dir = dir.join(layout::OBJECTS);
        let tmp_dir = dir.join(layout::TMP);
        layout::create_private_dir(dir)?;
        for d in [&objects_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(|e| VaultError::io(d, e))?;
        }
        clean_tmp(&tmp_dir)?;
        let lock = match config.immutable {
            Immutable::Off => None,
            Immutable::Auto | Immutable::Required => Some(probe_lock(&tmp_dir)?),
        };
        if config.immutable == Immutable::Required {
            if let Some(outcome) = lock.filter(|o| !o.is_locked()) {
                return Err(VaultError::NotImmutable {
                    dir: dir.to_path_buf(),
                    outcome,
                });
            }
        }
        let conn = index::open(&dir.join(layout::INDEX))?;
        let (log, logged_unindexed, sealed) = IndexLog::open(dir, &index::all(&conn)?)?;
        let vault = Vault {
            shared: Arc::new(Shared {
                objects_dir,
                tmp_dir,
                root: dir.to_path_buf(),
                conn: Mutex::new(conn),
                config,
                lock,
                unlocked: AtomicU64::new(0),
                log: Some(Mutex::new(log)),
            }),
        };
        for segment in sealed {
            vault.shared.lock_object(&segment);
        }
        for added in vault.reindex_orphans(&logged_unindexed)? {
            vault.shared.lock_object(&added.path);
        }
        vault.release_expired(SystemTime::now())?;
        Ok(vault)
    }

    /// The index log's head: its line count and the SHA-256 of its last line, to record in a
    /// checkpoint. Consistent with the index (taken under its lock).
    pub fn index_log_head(&self) -> Result<IndexLogHead, VaultError> {
        let _conn = self.shared.conn();
        self.shared.log_head()
    }

    /// Whether the index log still leads to `head`: its line `head.count` hashes to
    /// `head.hash` and every line up to it chains. A checkpoint taken earlier must keep
    /// matching while the log only grows; `false` means lines were changed or removed since.
    pub fn index_log_matches(&self, head: &IndexLogHead) -> Result<bool, VaultError> {
        let dir = self.shared.root.join(indexlog::DIR);
        Ok(indexlog::hash_at(&dir, head.count)?.as_deref() == Some(head.hash.as_str()))
    }

    /// Replaces the index log's checkpoint file (`index-log/checkpoint`) with `note` (a signed
    /// note of the head, made by the caller): written to a temp file, fsync'd, renamed.
    pub fn write_index_log_checkpoint(&self, note: &str) -> Result<(), VaultError> {
        let dir = self.shared.root.join(indexlog::DIR);
        let tmp = dir.join(format!("{}.tmp", indexlog::CHECKPOINT));
        let path = dir.join(indexlog::CHECKPOINT);
        let mut f = File::create(&tmp).map_err(|e| VaultError::io(&tmp, e))?;
        f.write_all(note.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| VaultError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| VaultError::io(&path, e))?;
        layout::fsync_dir(&dir)
    }

    /// The index log's checkpoint file, if one was written.
    pub fn index_log_checkpoint(&self) -> Result<Option<String>, VaultError> {
        let path = self
            .shared
            .root
            .join(indexlog::DIR)
            .join(indexlog::CHECKPOINT);
        match fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(VaultError::io(&path, e)),
        }
    }

    /// What the start-up probe found: `Some(Locked)` when object files are made immutable,
    /// `Some(Unsupported | NotPermitted)` when they cannot be (objects are still stored), `None`
    /// with `immutable = "off"`.
    pub fn lock_status(&self) -> Option<LockOutcome> {
        self.shared.lock
    }

    /// How many objects were stored (or restored) since open whose immutable flag could not be
    /// set (always 0 with `immutable = "off"`).
    pub fn unlocked_objects(&self) -> u64 {
        self.shared.unlocked.load(Ordering::Relaxed)
    }

    /// The retention pass: clears the immutable flag of every object stored more than
    /// `retention_days` before `now`, so that an operator may delete it (nothing is deleted
    /// here). Returns how many flags it cleared. Does nothing with `retention_days = 0` (locked
    /// for ever) or `immutable = "off"`.
    pub fn release_expired(&self, now: SystemTime) -> Result<u64, VaultError> {
        let days = u64::from(self.shared.config.retention_days);
        if days == 0 || self.shared.lock.is_none() {
            return Ok(0);
        }
        let Some(cutoff) = now.checked_sub(std::time::Duration::from_secs(days * 86_400)) else {
            return Ok(0);
        };
        // `stored_at` is RFC 3339 UTC with a fixed width, so text order is time order.
        let cutoff = rfc3339_utc(cutoff);
        let mut released = 0;
        for row in self.list()? {
            if row.stored_at.as_str() >= cutoff.as_str() {
                continue;
            }
            match lock::clear_immutable(&row.path) {
                Ok(true) => released += 1,
                Ok(false) => {}
                // Already gone: `check` reports it.
                Err(VaultError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Opens an existing vault for reading only: no recovery (a running gateway's uploads in
    /// `tmp/` are left alone), no directory or index created; [`begin`](Self::begin) fails.
    /// For tools that read beside a running gateway (check, verify, replay, export).
    pub fn open_read_only(dir: &Path) -> Result<Vault, VaultError> {
        let index_path = dir.join(layout::INDEX);
        if !index_path.is_file() {
            return Err(VaultError::io(
                &index_path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no vault index"),
            ));
        }
        let conn = index::open_read_only(&index_path)?;
        Ok(Vault {
            shared: Arc::new(Shared {
                objects_dir: dir.join(layout::OBJECTS),
                tmp_dir: dir.join(layout::TMP),
                root: dir.to_path_buf(),
                conn: Mutex::new(conn),
                config: VaultConfig {
                    immutable: Immutable::Off,
                    ..VaultConfig::default()
                },
                lock: None,
                unlocked: AtomicU64::new(0),
                log: None,
            }),
        })
    }

    /// The vault's root directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Starts receiving an instance. The file header (preamble and File Meta Information) is
    /// written at once; the data set follows through [`PendingInstance::write_chunk`].
    pub fn begin(
        &self,
        sop_class: &Uid,
        sop_instance: &Uid,
        transfer_syntax: &Uid,
        source_ae: &str,
    ) -> Result<PendingInstance, VaultError> {
        if self.shared.log.is_none() {
            return Err(VaultError::ReadOnly);
        }
        let header = meta::file_header(sop_class, sop_instance, transfer_syntax);
        let (tmp_path, file) = layout::create_tmp(&self.shared.tmp_dir)?;
        let mut pending = PendingInstance {
            shared: Arc::clone(&self.shared),
            writer: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            tmp_path,
            hasher: Sha256::new(),
            size: 0,
            data_offset: header.len() as u64,
            sop_class_uid: sop_class.as_str().to_string(),
            sop_instance_uid: sop_instance.as_str().to_string(),
            transfer_syntax: transfer_syntax.as_str().to_string(),
            source_ae: source_ae.trim_matches([' ', '\0']).to_string(),
        };
        pending.write_chunk(&header)?;
        Ok(pending)
    }

    /// The instance stored under this SOP Instance UID, if any.
    pub fn lookup(&self, sop_instance: &Uid) -> Result<Option<StoredInstance>, VaultError> {
        let conn = self.shared.conn();
        Ok(index::get(&conn, sop_instance.as_str())?
            .map(|r| r.into_stored(&self.shared.objects_dir)))
    }

    /// Every stored instance, oldest first.
    pub fn list(&self) -> Result<Vec<StoredInstance>, VaultError> {
        let records = index::all(&self.shared.conn())?;
        Ok(records
            .into_iter()
            .map(|r| r.into_stored(&self.shared.objects_dir))
            .collect())
    }

    /// Up to `limit` stored instances committed after the one at `position` (0: from the
    /// first), oldest first, each with its position: a stable, resumable walk of the index.
    pub fn page_after(
        &self,
        position: i64,
        limit: u32,
    ) -> Result<Vec<(i64, StoredInstance)>, VaultError> {
        let rows = index::page_after(&self.shared.conn(), position, limit)?;
        Ok(rows
            .into_iter()
            .map(|(id, r)| (id, r.into_stored(&self.shared.objects_dir)))
            .collect())
    }

    /// Whether an index row names an object with this SHA-256.
    pub fn has_object(&self, sha256: &str) -> Result<bool, VaultError> {
        index::has_sha(&self.shared.conn(), sha256)
    }

    /// The object tree (`<root>/objects`).
    pub fn objects_dir(&self) -> &Path {
        &self.shared.objects_dir
    }

    /// Every file under `objects/` (two shard levels down), sorted, with the SHA-256 its path
    /// claims when it follows the layout.
    pub fn object_files(&self) -> Result<Vec<(PathBuf, Option<String>)>, VaultError> {
        let dir = &self.shared.objects_dir;
        Ok(layout::object_files(dir)?
            .into_iter()
            .map(|p| {
                let sha = layout::sha_from_object_path(dir, &p);
                (p, sha)
            })
            .collect())
    }

    /// Number of stored instances.
    pub fn count(&self) -> Result<u64, VaultError> {
        index::count(&self.shared.conn())
    }

    /// Compares the index with the files: rows whose object is missing or has the wrong size,
    /// and files under `objects/` no row refers to. Reads metadata only.
    pub fn check(&self) -> Result<Vec<Problem>, VaultError> {
        self.audit(false)
    }

    /// [`check`](Self::check), and also re-hashes every object file (reads the whole vault).
    pub fn verify(&self) -> Result<Vec<Problem>, VaultError> {
        self.audit(true)
    }

    fn audit(&self, rehash: bool) -> Result<Vec<Problem>, VaultError> {
        // Snapshot the index and the log's length together, then look at files and the log
        // without holding the lock.
        let (records, logged) = {
            let conn = self.shared.conn();
            (index::all(&conn)?, self.shared.log_head()?.count)
        };
        let mut problems = self.audit_log(&records, logged)?;
        let rows: Vec<StoredInstance> = records
            .into_iter()
            .map(|r| r.into_stored(&self.shared.objects_dir))
            .collect();
        let mut indexed = std::collections::HashSet::new();
        for row in rows {
            indexed.insert(row.sha256.clone());
            let meta = match fs::metadata(&row.path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    problems.push(Problem::MissingObject {
                        sop_instance_uid: row.sop_instance_uid,
                        path: row.path,
                    });
                    continue;
                }
                Err(e) => return Err(VaultError::io(&row.path, e)),
            };
            if meta.len() != row.size {
                problems.push(Problem::SizeMismatch {
                    sop_instance_uid: row.sop_instance_uid,
                    path: row.path,
                    expected: row.size,
                    actual: meta.len(),
                });
                continue;
            }
            if rehash {
                let actual = sha256_file(&row.path)?;
                if actual != row.sha256 {
                    problems.push(Problem::HashMismatch {
                        sop_instance_uid: row.sop_instance_uid,
                        path: row.path,
                        actual_sha256: actual,
                    });
                }
            }
        }
        for path in layout::object_files(&self.shared.objects_dir)? {
            match layout::sha_from_object_path(&self.shared.objects_dir, &path) {
                None => problems.push(Problem::StrayFile { path }),
                Some(sha) if !indexed.contains(&sha) => problems.push(Problem::UnindexedObject {
                    path,
                    reason: "no index row refers to it".into(),
                }),
                Some(_) => {}
            }
        }
        Ok(problems)
    }

    /// Compares the index rows with the first `logged` lines of the index log.
    fn audit_log(&self, records: &[Record], logged: u64) -> Result<Vec<Problem>, VaultError> {
        let (contents, _torn) =
            indexlog::read(&self.shared.root.join(indexlog::DIR), Some(logged))?;
        let mut problems: Vec<Problem> = contents
            .faults
            .into_iter()
            .map(|f| match f {
                LogFault::Broken { path, line, reason } => {
                    Problem::IndexLogBroken { path, line, reason }
                }
            })
            .collect();
        let mut by_uid: std::collections::HashMap<&str, &Record> = contents
            .rows
            .iter()
            .map(|r| (r.sop_instance_uid.as_str(), r))
            .collect();
        for r in records {
            match by_uid.remove(r.sop_instance_uid.as_str()) {
                None => problems.push(Problem::RowNotLogged {
                    sop_instance_uid: r.sop_instance_uid.clone(),
                }),
                Some(l) if l != r => problems.push(Problem::RowDiffersFromLog {
                    sop_instance_uid: r.sop_instance_uid.clone(),
                }),
                Some(_) => {}
            }
        }
        for r in &contents.rows {
            if by_uid.remove(r.sop_instance_uid.as_str()).is_some() {
                problems.push(Problem::LoggedRowMissing {
                    sop_instance_uid: r.sop_instance_uid.clone(),
                });
            }
        }
        Ok(problems)
    }

    /// Indexes object files that have no row (see [`Vault::open`]): with the row of their index
    /// log line when there is one (`logged`, by SHA-256), else read from the file (and logged).
    /// Returns what it indexed.
    fn reindex_orphans(
        &self,
        logged: &std::collections::HashMap<String, Record>,
    ) -> Result<Vec<StoredInstance>, VaultError> {
        let objects_dir = &self.shared.objects_dir;
        let mut added = Vec::new();
        for path in layout::object_files(objects_dir)? {
            let Some(sha) = layout::sha_from_object_path(objects_dir, &path) else {
                continue;
            };
            if index::has_sha(&self.shared.conn(), &sha)? {
                continue;
            }
            let from_log = logged.get(&sha).cloned();
            let is_logged = from_log.is_some();
            let record = match from_log {
                Some(r) => r,
                None => match orphan_record(&path, &sha)? {
                    Some(r) => r,
                    None => continue,
                },
            };
            let conn = self.shared.conn();
            if index::get(&conn, &record.sop_instance_uid)?.is_some() {
                // Same UID, other bytes: a conflicting copy; left for `check` to report.
                continue;
            }
            index::insert(&conn, &record)?;
            if !is_logged {
                self.shared.log_row(&record)?;
            }
            added.push(record.into_stored(objects_dir));
        }
        Ok(added)
    }
}

impl Shared {
    /// Sets the immutable flag on an object file placed in `objects/` (unless
    /// `immutable = "off"`); a failure is counted ([`Vault::unlocked_objects`]), never fatal:
    /// an image is never lost because it could not be locked.
    fn lock_object(&self, path: &Path) {
        if self.lock.is_none() {
            return;
        }
        if !matches!(lock::set_immutable(path), Ok(LockOutcome::Locked)) {
            self.unlocked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The scratch file of the start-up lock probe, in `tmp/`.
const PROBE_FILE: &str = "immutable-probe";

/// Learns whether files in `dir` can be made immutable: creates a scratch file, sets the flag,
/// clears it and removes the file.
fn probe_lock(dir: &Path) -> Result<LockOutcome, VaultError> {
    let path = dir.join(PROBE_FILE);
    File::create(&path).map_err(|e| VaultError::io(&path, e))?;
    let outcome = lock::set_immutable(&path);
    if matches!(outcome, Ok(LockOutcome::Locked)) {
        lock::clear_immutable(&path)?;
    }
    fs::remove_file(&path).map_err(|e| VaultError::io(&path, e))?;
    outcome
}

/// Removes everything in `tmp/`: uploads that never committed (and a probe file a crash left
/// locked).
fn clean_tmp(tmp_dir: &Path) -> Result<(), VaultError> {
    for entry in fs::read_dir(tmp_dir).map_err(|e| VaultError::io(tmp_dir, e))? {
        let path = entry.map_err(|e| VaultError::io(tmp_dir, e))?.path();
        if path.is_file() {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::PermissionDenied || !lock::clear_immutable(&path)? {
                    return Err(VaultError::io(&path, e));
                }
                fs::remove_file(&path).map_err(|e| VaultError::io(&path, e))?;
            }
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> Result<String, VaultError> {
    let mut f = File::open(path).map_err(|e| VaultError::io(path, e))?;
    let mut hasher = Sha256::new();
    io::copy(&mut f, &mut hasher).map_err(|e| VaultError::io(path, e))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Builds an index record for an object file found without one, or `None` if the file is not
/// a complete vault object (its hash does not match its name, or its meta is unreadable).
fn orphan_record(path: &Path, sha: &str) -> Result<Option<Record>, VaultError> {
    if sha256_file(path)? != sha {
        return Ok(None);
    }
    let size = fs::metadata(path)
        .map_err(|e| VaultError::io(path, e))?
        .len();
    // The File Meta group is read by radguard-dicom's one reader; the vault's own headers are
    // a few hundred bytes.
    let mut head = Vec::new();
    File::open(path)
        .map_err(|e| VaultError::io(path, e))?
        .take((PREAMBLE_LEN + 4 + radguard_dicom::part10::MAX_META) as u64)
        .read_to_end(&mut head)
        .map_err(|e| VaultError::io(path, e))?;
    let Ok(part10) = radguard_dicom::part10::read_head(&head) else {
        return Ok(None);
    };
    let meta = part10.meta;
    let (Some(Ok(class)), Some(Ok(instance)), Some(Ok(ts))) = (
        meta.media_storage_sop_class_uid.as_deref().map(Uid::new),
        meta.media_storage_sop_instance_uid.as_deref().map(Uid::new),
        meta.transfer_syntax_uid.as_deref().map(Uid::new),
    ) else {
        return Ok(None);
    };
    // The header the vault writes is a function of the three UIDs: rebuild it to know where
    // the data set starts (and to refuse files the vault did not write).
    let header = meta::file_header(&class, &instance, &ts);
    let mut on_disk = vec![0u8; header.len()];
    let mut f = File::open(path).map_err(|e| VaultError::io(path, e))?;
    if f.read_exact(&mut on_disk).is_err() || on_disk != header {
        return Ok(None);
    }
    let attrs = scan::scan(
        path,
        header.len() as u64,
        &Expected {
            sop_class_uid: class.as_str(),
            sop_instance_uid: instance.as_str(),
            transfer_syntax: ts.as_str(),
        },
    );
    let stored_at = fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    Ok(Some(Record {
        sop_instance_uid: instance.as_str().to_string(),
        sop_class_uid: class.as_str().to_string(),
        transfer_syntax: ts.as_str().to_string(),
        sha256: sha.to_string(),
        size,
        patient_id: attrs.patient_id,
        study_uid: attrs.study_uid,
        series_uid: attrs.series_uid,
        source_ae: None,
        stored_at: rfc3339_utc(stored_at),
        parse_warning: attrs.warning,
    }))
}

/// One instance being received: a temp file in `tmp/` and a running SHA-256.
///
/// Dropping it without [`commit`](Self::commit) aborts: the temp file is removed. It owns a
/// handle to the vault, so it is `Send + 'static` and can move between blocking tasks.
pub struct PendingInstance {
    shared: Arc<Shared>,
    /// `None` after a write error (poisoned) or once commit has taken it.
    writer: Option<BufWriter<File>>,
    tmp_path: PathBuf,
    hasher: Sha256,
    size: u64,
    /// Where the data set starts in the file (length of preamble + magic + meta).
    data_offset: u64,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax: String,
    source_ae: String,
}

impl std::fmt::Debug for PendingInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingInstance")
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("tmp_path", &self.tmp_path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl PendingInstance {
    /// Appends data set bytes, exactly as received. After an error the instance is poisoned:
    /// further writes and `commit` fail, and dropping it removes the temp file.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<(), VaultError> {
        let writer = self.writer.as_mut().ok_or(VaultError::Poisoned)?;
        if let Err(e) = writer.write_all(bytes) {
            self.writer = None;
            return Err(VaultError::io(&self.tmp_path, e));
        }
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far, file header included.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Finishes the file (flush, fsync), reads the index attributes from it, and then, under
    /// the vault's lock so that concurrent commits of one UID are serialised: decides between
    /// stored, duplicate and conflict; renames the file into `objects/` and fsyncs the
    /// directory; inserts the index row. The rename happens before the index transaction
    /// commits, so a crash can leave an unindexed object (re-indexed by `open`) but never a row
    /// without its file.
    pub fn commit(mut self) -> Result<StoreOutcome, VaultError> {
        let writer = self.writer.take().ok_or(VaultError::Poisoned)?;
        let file = writer
            .into_inner()
            .map_err(|e| VaultError::io(&self.tmp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| VaultError::io(&self.tmp_path, e))?;
        drop(file);
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());

        let attrs = scan::scan(
            &self.tmp_path,
            self.data_offset,
            &Expected {
                sop_class_uid: &self.sop_class_uid,
                sop_instance_uid: &self.sop_instance_uid,
                transfer_syntax: &self.transfer_syntax,
            },
        );
        let record = Record {
            sop_instance_uid: std::mem::take(&mut self.sop_instance_uid),
            sop_class_uid: std::mem::take(&mut self.sop_class_uid),
            transfer_syntax: std::mem::take(&mut self.transfer_syntax),
            sha256,
            size: self.size,
            patient_id: attrs.patient_id,
            study_uid: attrs.study_uid,
            series_uid: attrs.series_uid,
            source_ae: Some(std::mem::take(&mut self.source_ae)),
            stored_at: String::new(),
            parse_warning: attrs.warning,
        };

        let shared = Arc::clone(&self.shared);
        let objects_dir = &shared.objects_dir;
        let mut conn = shared.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = index::get(&tx, &record.sop_instance_uid)? {
            let existing = existing.into_stored(objects_dir);
            if existing.sha256 != record.sha256 {
                return Ok(StoreOutcome::Conflict {
                    existing,
                    new_sha256: record.sha256,
                });
            }
            // Identical bytes. If the indexed file was lost, these bytes restore it.
            if !existing.path.exists() {
                layout::place_object(objects_dir, &self.tmp_path, &existing.path)?;
                shared.lock_object(&existing.path);
            }
            return Ok(StoreOutcome::DuplicateIdentical(existing));
        }
        let dest = layout::object_path(objects_dir, &record.sha256);
        // An object already at `dest` (left by a crash before its row was committed) holds
        // these very bytes; it is kept and the temp file dropped.
        layout::place_object(objects_dir, &self.tmp_path, &dest)?;
        let record = Record {
            stored_at: rfc3339_utc(SystemTime::now()),
            ..record
        };
        index::insert(&tx, &record)?;
        // The row's tamper-evident copy, durable before the row commits (see indexlog).
        shared.log_row(&record)?;
        tx.commit()?;
        // Below the application: once fsync'd, renamed and its directory fsync'd, the object
        // cannot be deleted, renamed or rewritten, even by root (ransomware, an intruder).
        shared.lock_object(&dest);
        Ok(StoreOutcome::Stored(record.into_stored(objects_dir)))
    }
}

impl Drop for PendingInstance {
    fn drop(&mut self) {
        // Close before removing (required on Windows). After a successful rename the temp
        // path no longer exists and this does nothing.
        self.writer = None;
        layout::remove_quietly(&self.tmp_path);
    }
}
