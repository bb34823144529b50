//! The store itself: [`Vault`] (open, look up, check) and [`PendingInstance`] (one incoming
//! instance, from first chunk to commit).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use radguard_dicom::types::status;
use radguard_dicom::Uid;
use rusqlite::{Connection, TransactionBehavior};
use sha2::{Digest, Sha256};

use crate::index::{self, Record};
use crate::layout;
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
}

struct Shared {
    objects_dir: PathBuf,
    tmp_dir: PathBuf,
    root: PathBuf,
    conn: Mutex<Connection>,
}

impl Shared {
    /// The connection. A panic while it was held cannot leave a half-done write behind (an
    /// open transaction rolls back when dropped), so a poisoned lock is simply taken over.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
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
    pub fn open(dir: &Path) -> Result<Vault, VaultError> {
        let objects_dir = dir.join(layout::OBJECTS);
        let tmp_dir = dir.join(layout::TMP);
        layout::create_private_dir(dir)?;
        for d in [&objects_dir, &tmp_dir] {
            fs::create_dir_all(d).map_err(|e| VaultError::io(d, e))?;
        }
        clean_tmp(&tmp_dir)?;
        let conn = index::open(&dir.join(layout::INDEX))?;
        let vault = Vault {
            shared: Arc::new(Shared {
                objects_dir,
                tmp_dir,
                root: dir.to_path_buf(),
                conn: Mutex::new(conn),
            }),
        };
        vault.reindex_orphans()?;
        Ok(vault)
    }

    /// Opens an existing vault for reading only: no recovery (`tmp/` is left alone, orphans
    /// are not re-indexed) and the index is opened read-only, so it is safe next to the
    /// gateway that owns the vault. `NotFound` when `dir` holds no index.
    pub fn open_read_only(dir: &Path) -> Result<Vault, VaultError> {
        let index_path = dir.join(layout::INDEX);
        if !index_path.is_file() {
            return Err(VaultError::io(
                &index_path,
                io::Error::new(io::ErrorKind::NotFound, "no vault index here"),
            ));
        }
        let conn = index::open_read_only(&index_path)?;
        Ok(Vault {
            shared: Arc::new(Shared {
                objects_dir: dir.join(layout::OBJECTS),
                tmp_dir: dir.join(layout::TMP),
                root: dir.to_path_buf(),
                conn: Mutex::new(conn),
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
        // Snapshot the index, then look at files without holding the lock.
        let rows = self.list()?;
        let mut problems = Vec::new();
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

    /// Indexes object files that have no row (see [`Vault::open`]). Returns what it indexed.
    fn reindex_orphans(&self) -> Result<Vec<StoredInstance>, VaultError> {
        let objects_dir = &self.shared.objects_dir;
        let mut added = Vec::new();
        for path in layout::object_files(objects_dir)? {
            let Some(sha) = layout::sha_from_object_path(objects_dir, &path) else {
                continue;
            };
            if index::has_sha(&self.shared.conn(), &sha)? {
                continue;
            }
            let Some(record) = orphan_record(&path, &sha)? else {
                continue;
            };
            let conn = self.shared.conn();
            if index::get(&conn, &record.sop_instance_uid)?.is_some() {
                // Same UID, other bytes: a conflicting copy; left for `check` to report.
                continue;
            }
            index::insert(&conn, &record)?;
            added.push(record.into_stored(objects_dir));
        }
        Ok(added)
    }
}

/// Removes everything in `tmp/`: uploads that never committed.
fn clean_tmp(tmp_dir: &Path) -> Result<(), VaultError> {
    for entry in fs::read_dir(tmp_dir).map_err(|e| VaultError::io(tmp_dir, e))? {
        let path = entry.map_err(|e| VaultError::io(tmp_dir, e))?.path();
        if path.is_file() {
            fs::remove_file(&path).map_err(|e| VaultError::io(&path, e))?;
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
        tx.commit()?;
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
