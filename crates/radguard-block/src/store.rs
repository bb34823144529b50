//! `<data>/blocks.json`: read-modify-write under an exclusive `flock` on `<data>/blocks.lock`,
//! written atomically (temporary file, fsync, rename, fsync of the folder).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::list::BlockList;

/// The list's file name in the data folder.
pub const FILE_NAME: &str = "blocks.json";
/// The lock file's name (a separate file: the list itself is replaced on every write).
pub const LOCK_NAME: &str = "blocks.lock";

/// Why the list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: not a block list: {message} (fix or remove the file; the gateway does not start over it)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: cannot encode the block list: {message}")]
    Encode { path: PathBuf, message: String },
}

/// The block list's file in a data folder.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    lock: PathBuf,
    dir: PathBuf,
}

/// Holds the exclusive lock until dropped (closing the file releases a `flock`).
struct Locked(#[allow(dead_code)] File);

impl Store {
    /// The store of `<dir>/blocks.json`.
    pub fn in_dir(dir: &Path) -> Store {
        Store {
            path: dir.join(FILE_NAME),
            lock: dir.join(LOCK_NAME),
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            path: path.clone(),
            source,
        }
    }

    fn lock(&self) -> Result<Locked, StoreError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(self.io(&self.lock))?;
        flock(&f, FlockOperation::LockExclusive)
            .map_err(|e| self.io(&self.lock)(std::io::Error::from(e)))?;
        Ok(Locked(f))
    }

    /// The list as the file holds it (empty when there is no file yet).
    pub fn load(&self) -> Result<BlockList, StoreError> {
        let _l = self.lock()?;
        self.read()
    }

    fn read(&self) -> Result<BlockList, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlockList::new()),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    fn write(&self, list: &BlockList) -> Result<(), StoreError> {
        let mut json = serde_json::to_vec_pretty(list).map_err(|e| StoreError::Encode {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        json.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        let io = self.io(&tmp);
        let mut f = File::create(&tmp).map_err(&io)?;
        f.write_all(&json).map_err(&io)?;
        f.sync_all().map_err(&io)?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(self.io(&self.path))?;
        // The rename itself is durable once the folder is synced.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Reads the list under the lock, applies `change`, writes it back if `change` says so
    /// (its second value), and returns what `change` returned with the list as written.
    pub fn update<R>(
        &self,
        change: impl FnOnce(&mut BlockList) -> (R, bool),
    ) -> Result<(R, BlockList), StoreError> {
        let _l = self.lock()?;
        let mut list = self.read()?;
        let (r, changed) = change(&mut list);
        if changed {
            self.write(&list)?;
        }
        Ok((r, list))
    }
}
