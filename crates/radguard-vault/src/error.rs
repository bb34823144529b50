//! The vault's error type.

use std::io;
use std::path::PathBuf;

use radguard_dicom::types::status;

/// Why a vault operation failed.
///
/// Every variant is a local fault (storage, index or a bug): nothing a peer sends can produce a
/// `VaultError`. A data set the vault cannot parse is still stored and reported through
/// [`StoredInstance::parse_warning`](crate::StoredInstance::parse_warning); a second, different
/// instance under an existing SOP Instance UID is a [`StoreOutcome::Conflict`](crate::StoreOutcome),
/// not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A file-system operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The SQLite index failed.
    #[error("vault index error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The index holds a value the vault never writes (a tampered or foreign database).
    #[error("vault index is corrupt: {0}")]
    CorruptIndex(String),
    /// `immutable = "required"` and the start-up probe could not set the immutable flag.
    #[error(
        "[vault] immutable = \"required\" but the immutable flag cannot be set in {}: {}",
        dir.display(),
        outcome.explain()
    )]
    NotImmutable {
        dir: PathBuf,
        outcome: crate::LockOutcome,
    },
    /// The vault was opened read-only ([`Vault::open_read_only`](crate::Vault::open_read_only)):
    /// nothing can be stored through it.
    #[error("the vault was opened read-only")]
    ReadOnly,
    /// An earlier `write_chunk` failed, so this pending instance can only be dropped.
    #[error("pending instance unusable after an earlier write error")]
    Poisoned,
}

impl VaultError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        VaultError::Io {
            path: path.into(),
            source,
        }
    }

    /// The C-STORE response status the gateway should send when storing failed with this error:
    /// "Refused: Out of Resources" (A700) when the disk is full, otherwise "Processing failure".
    pub fn dimse_status(&self) -> u16 {
        match self {
            VaultError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                status::OUT_OF_RESOURCES
            }
            _ => status::PROCESSING_FAILURE,
        }
    }
}
