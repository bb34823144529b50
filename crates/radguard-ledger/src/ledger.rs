//! The ledger: a directory holding the log database and the signing key.
//!
//! ```text
//! <dir>/ledger.sqlite   entries, subtree hashes, signed head, issued checkpoints (WAL)
//! <dir>/signing.key     PRIVATE+KEY+<origin>+<hash>+<seed>   mode 0600, created on first open
//! <dir>/verifier.key    <origin>+<hash>+<public key>         the key auditors need
//! ```
//!
//! [`Ledger`] appends (the gateway) and signs; [`LedgerView`] only reads (`verify`, auditors),
//! and can be opened while a gateway has the ledger open.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::entry::{EntryError, LedgerEntry, Timestamp};
use crate::fingerprint::Fingerprint;
use crate::merkle::{self, Hash, ProofError};
use crate::note::{self, Checkpoint, NoteError, SignerKey, VerifierKey};
use crate::store::{LoggedEntry, Store};

pub const DB_FILE: &str = "ledger.sqlite";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const VERIFIER_KEY_FILE: &str = "verifier.key";

/// Errors of the ledger. `Io`/`Sqlite` are local faults; `Corrupt` means the stored log does
/// not check out (tampering or damage).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0} is not a Radguard ledger")]
    NotALedger(PathBuf),
    #[error("invalid origin {0:?}: it names the log and its key (no spaces, no '+')")]
    InvalidOrigin(String),
    #[error("this ledger's origin is {stored:?}, not {requested:?}")]
    OriginMismatch { stored: String, requested: String },
    #[error("{path} is readable by others (mode {mode:o}); make it 0600")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{0} is missing but the ledger has entries: restore the key, never replace it")]
    KeyMissing(PathBuf),
    #[error("key: {0}")]
    Key(#[from] NoteError),
    #[error("entry: {0}")]
    Entry(#[from] EntryError),
    #[error("proof: {0}")]
    Proof(#[from] ProofError),
    #[error("the stored log does not check out: {0}")]
    Corrupt(String),
    #[error("random number generator: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A signed checkpoint: the note text and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    pub note: String,
}

/// What [`Ledger::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The entry that now records this SOP Instance UID: the new one, or the earlier one for
    /// a duplicate or a refused conflict.
    pub index: u64,
    /// Did this call add an entry?
    pub appended: bool,
    /// The UID was already logged with this other fingerprint: the gateway raises a
    /// `SecurityAlert` (and refuses the C-STORE if the route says so).
    pub conflict: Option<Fingerprint>,
}

/// What to do when a SOP Instance UID is already logged with another fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Append nothing (the C-STORE is being refused).
    Refuse,
    /// Append the new entry anyway (the C-STORE is forwarded; the log keeps both, and `verify`
    /// still holds copies to the first).
    Record,
}

struct Inner {
    store: Store,
    size: u64,
    frontier: Vec<Hash>,
}

/// The writable ledger. Thread-safe: appends are serialised; call it from `spawn_blocking`.
pub struct Ledger {
    dir: PathBuf,
    origin: String,
    signer: SignerKey,
    verifier: VerifierKey,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("dir", &self.dir)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn create_private_dir(dir: &Path) -> Result<(), LedgerError> {
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Loads the signing key, or creates it (0600, written and synced before use).
fn load_or_create_key(
    dir: &Path,
    origin: &str,
    ledger_has_entries: bool,
) -> Result<SignerKey, LedgerError> {
    let path = dir.join(SIGNING_KEY_FILE);
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(LedgerError::KeyPermissions { path, mode });
            }
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            let key = SignerKey::parse(&text)?;
            if key.name() != origin {
                return Err(LedgerError::OriginMismatch {
                    stored: key.name().to_string(),
                    requested: origin.to_string(),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if ledger_has_entries {
                return Err(LedgerError::KeyMissing(path));
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| LedgerError::Random(e.to_string()))?;
            let key = SignerKey::from_seed(origin, seed)?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io(&path))?;
            f.write_all(key.to_private_text().as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .and_then(|_| f.sync_all())
                .map_err(io(&path))?;
            fsync_dir(dir)?;
            Ok(key)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// Writes `verifier.key` if it is missing or differs.
fn write_verifier(dir: &Path, key: &VerifierKey) -> Result<(), LedgerError> {
    let path = dir.join(VERIFIER_KEY_FILE);
    let want = format!("{key}\n");
    if fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()) {
        return Ok(());
    }
    let tmp = dir.join(format!("{VERIFIER_KEY_FILE}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(want.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    fsync_dir(dir)
}

/// Checks the stored head against the stored tree: signature, size and root.
fn check_head(
    store: &Store,
    key: &VerifierKey,
    size: u64,
) -> Result<Option<Checkpoint>, LedgerError> {
    let Some((head_size, note)) = store.head()? else {
        return Ok(None);
    };
    let cp = Checkpoint::open(&note, key)
        .map_err(|e| LedgerError::Corrupt(format!("signed head: {e}")))?;
    if cp.size != head_size || cp.size != size {
        return Err(LedgerError::Corrupt(format!(
            "signed head is for {} entries, the log has {size}",
            cp.size
        )));
    }
    let root = merkle::root(store, size)?;
    if root != cp.root {
        return Err(LedgerError::Corrupt(
            "the log's root differs from its signed head".into(),
        ));
    }
    Ok(Some(cp))
}

impl Ledger {
    /// Opens the ledger in `dir` (creating the directory, database and key on first use).
    /// `origin` names the log and its key, e.g. `radguard.example.org/ledger/ct-gw1`; a ledger
    /// keeps the origin it was created with.
    pub fn open(dir: &Path, origin: &str) -> Result<Ledger, LedgerError> {
        if !note::valid_name(origin) {
            return Err(LedgerError::InvalidOrigin(origin.to_string()));
        }
        create_private_dir(dir)?;
        let store = Store::open(&dir.join(DB_FILE))?;
        match store.meta("origin")? {
            Some(stored) if stored != origin => {
                return Err(LedgerError::OriginMismatch {
                    stored,
                    requested: origin.to_string(),
                })
            }
            Some(_) => {}
            None => store.set_meta("origin", origin)?,
        }
        let size = store.size()?;
        let signer = load_or_create_key(dir, origin, size > 0)?;
        let verifier = signer.verifier();
        write_verifier(dir, &verifier)?;
        let frontier = merkle::frontier(&store, size)?;
        if check_head(&store, &verifier, size)?.is_none() {
            if size > 0 {
                return Err(LedgerError::Corrupt("entries without a signed head".into()));
            }
            let cp = Checkpoint {
                origin: origin.to_string(),
                size: 0,
                root: merkle::empty_root(),
            };
            store.set_head(0, &cp.sign(&signer)?)?;
        }
        Ok(Ledger {
            dir: dir.to_path_buf(),
            origin: origin.to_string(),
            signer,
            verifier,
            inner: Mutex::new(Inner {
                store,
                size,
                frontier,
            }),
        })
    }

    /// Opens an existing ledger with the origin it was created with.
    pub fn open_existing(dir: &Path) -> Result<Ledger, LedgerError> {
        let db = dir.join(DB_FILE);
        if !db.exists() {
            return Err(LedgerError::NotALedger(dir.to_path_buf()));
        }
        let origin = Store::open_read_only(&db)?
            .meta("origin")?
            .ok_or_else(|| LedgerError::NotALedger(dir.to_path_buf()))?;
        Ledger::open(dir, &origin)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied append: the database
        // transaction rolls back and the in-memory state is only updated after commit.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public key, in signed-note verifier format.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    pub fn size(&self) -> u64 {
        self.lock().size
    }

    pub fn root(&self) -> Hash {
        merkle::root_from_frontier(&self.lock().frontier)
    }

    /// Records an instance, refusing conflicts (see [`OnConflict::Refuse`]). When this returns
    /// `Ok` with `appended`, the entry and the signed head covering it are on disk.
    pub fn append(&self, entry: LedgerEntry) -> Result<AppendOutcome, LedgerError> {
        self.append_with(entry, OnConflict::Refuse)
    }

    pub fn append_with(
        &self,
        entry: LedgerEntry,
        on_conflict: OnConflict,
    ) -> Result<AppendOutcome, LedgerError> {
        let data = entry.encode()?;
        let mut inner = self.lock();
        let existing = inner.store.lookup(&entry.sop_instance_uid)?;
        let mut conflict = None;
        if let Some(first) = existing.first() {
            if let Some(same) = existing
                .iter()
                .find(|e| e.entry.fingerprint.digest == entry.fingerprint.digest)
            {
                return Ok(AppendOutcome {
                    index: same.index,
                    appended: false,
                    conflict: None,
                });
            }
            conflict = Some(first.entry.fingerprint.clone());
            if on_conflict == OnConflict::Refuse {
                return Ok(AppendOutcome {
                    index: first.index,
                    appended: false,
                    conflict,
                });
            }
        }
        let index = inner.size;
        let leaf = merkle::leaf_hash(&data);
        let mut frontier = inner.frontier.clone();
        let nodes = merkle::append_to_frontier(&mut frontier, index, leaf);
        let head = Checkpoint {
            origin: self.origin.clone(),
            size: index + 1,
            root: merkle::root_from_frontier(&frontier),
        };
        let note = head.sign(&self.signer)?;
        inner.store.append(index, &entry, &data, &nodes, &note)?;
        inner.size = index + 1;
        inner.frontier = frontier;
        Ok(AppendOutcome {
            index,
            appended: true,
            conflict,
        })
    }

    /// Would appending this fingerprint for this UID be a conflict? Returns the first logged
    /// fingerprint if the UID is logged and no entry has this fingerprint. For a gateway that
    /// holds back the last fragment of a data set to decide before the upstream has it all.
    pub fn conflict(
        &self,
        sop_instance_uid: &str,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Fingerprint>, LedgerError> {
        let existing = self.lock().store.lookup(sop_instance_uid)?;
        if existing
            .iter()
            .any(|e| e.entry.fingerprint.digest == fingerprint.digest)
        {
            return Ok(None);
        }
        Ok(existing.into_iter().next().map(|e| e.entry.fingerprint))
    }

    /// Signs a checkpoint of the current tree and keeps it among the checkpoints issued to
    /// auditors (later consistency proofs start from these).
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, LedgerError> {
        let inner = self.lock();
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size: inner.size,
            root: merkle::root_from_frontier(&inner.frontier),
        };
        let note = checkpoint.sign(&self.signer)?;
        inner
            .store
            .record_checkpoint(inner.size, &note, Timestamp::now().0)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// Signs another log's checkpoint with this ledger's key, so that the ledger's verifier key
    /// vouches for it too (the vault's index log: origin `<ledger origin>/vault-index-log`). Not
    /// recorded among the ledger's own checkpoints. Its origin differs from the key's name, so
    /// [`Checkpoint::open`] refuses it: check it with [`note::open_note`] and
    /// [`Checkpoint::parse`] (a foreign checkpoint cannot pass for one of the ledger).
    pub fn sign_foreign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, LedgerError> {
        Ok(checkpoint.sign(&self.signer)?)
    }

    /// Entries for a SOP Instance UID, oldest first.
    pub fn lookup(&self, sop_instance_uid: &str) -> Result<Vec<LoggedEntry>, LedgerError> {
        self.lock().store.lookup(sop_instance_uid)
    }

    pub fn entry(&self, index: u64) -> Result<Option<LoggedEntry>, LedgerError> {
        self.lock().store.entry(index)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        let inner = self.lock();
        check_size(size, inner.size)?;
        merkle::inclusion_proof(&inner.store, index, size)
    }

    /// The consistency proof from the tree of `first` entries to the tree of `second`.
    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, LedgerError> {
        let inner = self.lock();
        check_size(second, inner.size)?;
        merkle::consistency_proof(&inner.store, first, second)
    }

    /// Recomputes every leaf and node from the entries and compares with storage (slow; for
    /// audits and tests).
    pub fn check_all(&self) -> Result<(), LedgerError> {
        let inner = self.lock();
        full_check(&inner.store, inner.size)
    }
}

/// Reads and checks the signed head of a store.
fn read_head(store: &Store, key: &VerifierKey) -> Result<SignedCheckpoint, LedgerError> {
    // Size, head and nodes are read in one snapshot so a concurrent append cannot mix states.
    store.snapshot(|store| {
        let size = store.size()?;
        let checkpoint = check_head(store, key, size)?
            .ok_or_else(|| LedgerError::Corrupt("the ledger has no signed head".into()))?;
        let (_, note) = store
            .head()?
            .ok_or_else(|| LedgerError::Corrupt("the ledger has no signed head".into()))?;
        Ok(SignedCheckpoint { checkpoint, note })
    })
}

fn check_size(size: u64, have: u64) -> Result<(), LedgerError> {
    if size > have {
        return Err(ProofError::SizesOutOfOrder {
            first: size,
            second: have,
        }
        .into());
    }
    Ok(())
}

fn full_check(store: &Store, size: u64) -> Result<(), LedgerError> {
    let mut frontier = Vec::new();
    let mut n = 0u64;
    store.for_each_entry(|e| {
        if e.index != n {
            return Err(LedgerError::Corrupt(format!("entry {n} is missing")));
        }
        for (level, index, hash) in merkle::append_to_frontier(&mut frontier, n, e.leaf_hash) {
            if merkle::NodeSource::node(store, level, index)? != hash {
                return Err(LedgerError::Corrupt(format!(
                    "node ({level}, {index}) does not match the entries"
                )));
            }
        }
        n += 1;
        Ok(())
    })?;
    if n != size {
        return Err(LedgerError::Corrupt(format!(
            "{n} entries, expected {size}"
        )));
    }
    Ok(())
}

/// A read-only view of a ledger, for `verify` and auditors. Checks the signed head with the
/// given verifier key (by default the ledger's own `verifier.key`; pass a pinned key to be
/// independent of the directory's contents).
pub struct LedgerView {
    dir: PathBuf,
    key: VerifierKey,
    head: Mutex<SignedCheckpoint>,
    /// Read connections, so that parallel `verify` workers do not queue on one: `store` (the
    /// one waited on when all are busy) and `more_stores`.
    store: Mutex<Store>,
    more_stores: Vec<Mutex<Store>>,
}

impl LedgerView {
    pub fn open(dir: &Path, key: Option<VerifierKey>) -> Result<LedgerView, LedgerError> {
        let store = Store::open_read_only(&dir.join(DB_FILE))?;
        let key = match key {
            Some(k) => k,
            None => {
                let path = dir.join(VERIFIER_KEY_FILE);
                VerifierKey::parse(&fs::read_to_string(&path).map_err(io(&path))?)?
            }
        };
        let head = read_head(&store, &key)?;
        let extra = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
            - 1;
        let mut more_stores = Vec::with_capacity(extra);
        for _ in 0..extra {
            more_stores.push(Mutex::new(Store::open_read_only(&dir.join(DB_FILE))?));
        }
        Ok(LedgerView {
            dir: dir.to_path_buf(),
            key,
            head: Mutex::new(head),
            store: Mutex::new(store),
            more_stores,
        })
    }

    /// A free read connection (or the first one, waiting).
    fn lock(&self) -> MutexGuard<'_, Store> {
        for m in std::iter::once(&self.store).chain(&self.more_stores) {
            if let Ok(g) = m.try_lock() {
                return g;
            }
        }
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// The signed head (verified when read).
    pub fn head(&self) -> SignedCheckpoint {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the signed head (a gateway may have appended since).
    pub fn refresh(&self) -> Result<SignedCheckpoint, LedgerError> {
        let fresh = read_head(&self.lock(), &self.key)?;
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    pub fn lookup(&self, sop_instance_uid: &str) -> Result<Vec<LoggedEntry>, LedgerError> {
        self.lock().lookup(sop_instance_uid)
    }

    pub fn entry(&self, index: u64) -> Result<Option<LoggedEntry>, LedgerError> {
        self.lock().entry(index)
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LedgerError> {
        check_size(size, self.head().checkpoint.size)?;
        merkle::inclusion_proof(&*self.lock(), index, size)
    }

    pub fn consistency_proof(&self, first: u64, second: u64) -> Result<Vec<Hash>, LedgerError> {
        check_size(second, self.head().checkpoint.size)?;
        merkle::consistency_proof(&*self.lock(), first, second)
    }

    /// Checkpoints issued to auditors, oldest first (not re-verified).
    pub fn checkpoints(&self) -> Result<Vec<(u64, String)>, LedgerError> {
        self.lock().checkpoints()
    }

    pub fn checkpoint_at(&self, size: u64) -> Result<Option<String>, LedgerError> {
        self.lock().checkpoint_at(size)
    }

    /// Proves that entry `e` is in the signed head: computes its inclusion proof and checks it
    /// against the head's root. Returns the head used and the proof.
    pub fn prove_included(
        &self,
        e: &LoggedEntry,
    ) -> Result<(SignedCheckpoint, Vec<Hash>), LedgerError> {
        let mut head = self.head();
        if e.index >= head.checkpoint.size {
            head = self.refresh()?;
        }
        let cp = &head.checkpoint;
        let proof = self.inclusion_proof(e.index, cp.size)?;
        merkle::verify_inclusion(&e.leaf_hash, e.index, cp.size, &proof, &cp.root)?;
        Ok((head, proof))
    }

    pub fn check_all(&self) -> Result<(), LedgerError> {
        full_check(&self.lock(), self.head().checkpoint.size)
    }
}
