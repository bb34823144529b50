//! Ed25519-signed checkpoints of a chain head, and the signing key file.
//!
//! A checkpoint signs the text
//! `radguard-audit checkpoint v1\n<node>\n<seq>\n<hex head hash>\n<time ms>\n`. The key file
//! holds the 32-byte Ed25519 seed as hex; it is created on first use with mode 0600 (refused if
//! group or others can read it), and its public key is written beside it as `<file>.pub` (hex)
//! for `radguard audit verify --key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::chain::ChainHead;
use crate::error::{AuditError, Result};

/// A signed statement that chain `node` had head `hash` at record `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub node: String,
    pub seq: u64,
    pub hash: [u8; 32],
    pub time_ms: i64,
    /// First 8 bytes of SHA-256 of the public key, hex.
    pub key_id: String,
    pub signature: [u8; 64],
}

impl Checkpoint {
    /// The signed text.
    pub fn signed_text(node: &str, seq: u64, hash: &[u8; 32], time_ms: i64) -> String {
        format!(
            "radguard-audit checkpoint v1\n{node}\n{seq}\n{}\n{time_ms}\n",
            hex::encode(hash)
        )
    }

    /// Checks the signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> std::result::Result<(), String> {
        if self.key_id != key_id(key) {
            return Err(format!(
                "signed by key {} but the trusted key is {}",
                self.key_id,
                key_id(key)
            ));
        }
        let text = Self::signed_text(&self.node, self.seq, &self.hash, self.time_ms);
        key.verify(text.as_bytes(), &Signature::from_bytes(&self.signature))
            .map_err(|_| "bad signature".to_string())
    }
}

/// The short id of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest.iter().take(8).copied().collect::<Vec<u8>>())
}

/// The audit signing key.
pub struct AuditKey {
    signing: SigningKey,
    path: PathBuf,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("path", &self.path)
            .field("key_id", &key_id(&self.signing.verifying_key()))
            .finish()
    }
}

fn key_err(path: &Path, why: impl Into<String>) -> AuditError {
    AuditError::Key {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// The path of the public key written beside a key file.
pub fn public_key_path(key_path: &Path) -> PathBuf {
    let mut p = key_path.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// The trusted public key to verify a store's checkpoints with when none is named: for a SQLite
/// store, `audit-signing.key.pub` beside the store file if it exists (the writer's default key
/// location); none for PostgreSQL, whose gateways keep their keys elsewhere.
pub fn default_public_key(spec: &crate::store::StoreSpec) -> Option<PathBuf> {
    match spec {
        crate::store::StoreSpec::Sqlite(p) => {
            let k = public_key_path(
                &p.parent()
                    .unwrap_or(Path::new("."))
                    .join("audit-signing.key"),
            );
            k.exists().then_some(k)
        }
        crate::store::StoreSpec::Postgres { .. } => None,
    }
}

fn parse_hex32(path: &Path, text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let bytes = hex::decode(t).map_err(|_| key_err(path, "not hex"))?;
    bytes
        .try_into()
        .map_err(|_| key_err(path, "expected 32 bytes (64 hex digits)"))
}

impl AuditKey {
    /// Loads the key at `path`, creating it (mode 0600, parent folders as needed) if absent.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if path.exists() {
            return Self::load(path);
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| key_err(path, format!("no randomness: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = match opts.open(path) {
            Ok(f) => f,
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Self::load(path),
            Err(e) => return Err(key_err(path, e.to_string())),
        };
        f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())?;
        f.sync_all()?;
        let signing = SigningKey::from_bytes(&seed);
        let pub_path = public_key_path(path);
        std::fs::write(
            &pub_path,
            format!("{}\n", hex::encode(signing.verifying_key().as_bytes())),
        )?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        tracing::info!(target: "radguard::audit", key = %path.display(), "created audit signing key");
        Ok(AuditKey {
            signing,
            path: path.to_path_buf(),
        })
    }

    /// Loads an existing key; refuses one that group or others may read.
    pub fn load(path: &Path) -> Result<Self> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| key_err(path, e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(key_err(
                    path,
                    format!("mode {:o} lets others read it; chmod 600", mode & 0o777),
                ));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
        let seed = parse_hex32(path, &text)?;
        Ok(AuditKey {
            signing: SigningKey::from_bytes(&seed),
            path: path.to_path_buf(),
        })
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.signing.verifying_key())
    }

    /// Signs `head` of chain `node`.
    pub fn sign(&self, node: &str, head: &ChainHead, time_ms: i64) -> Checkpoint {
        let text = Checkpoint::signed_text(node, head.seq, &head.hash, time_ms);
        Checkpoint {
            node: node.to_string(),
            seq: head.seq,
            hash: head.hash,
            time_ms,
            key_id: self.key_id(),
            signature: self.signing.sign(text.as_bytes()).to_bytes(),
        }
    }
}

/// Reads a public key: a `.pub` file (64 hex digits) or, failing that, a private key file.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey> {
    let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e.to_string()))?;
    let bytes = parse_hex32(path, &text)?;
    let is_pub = path.extension().is_some_and(|e| e == "pub");
    if is_pub {
        VerifyingKey::from_bytes(&bytes).map_err(|_| key_err(path, "not an Ed25519 public key"))
    } else {
        Ok(AuditKey::load(path)?.verifying_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.key");
        let k1 = AuditKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let k2 = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(k1.key_id(), k2.key_id());
        let vk = load_verifying_key(&public_key_path(&path)).unwrap();
        assert_eq!(vk, k1.verifying_key());
        assert_eq!(load_verifying_key(&path).unwrap(), vk);
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        AuditKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuditKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn signatures_verify_and_detect_changes() {
        let dir = tempfile::tempdir().unwrap();
        let k = AuditKey::load_or_create(&dir.path().join("k")).unwrap();
        let other = AuditKey::load_or_create(&dir.path().join("k2")).unwrap();
        let head = ChainHead {
            seq: 42,
            hash: [9; 32],
        };
        let cp = k.sign("gw", &head, 1000);
        assert_eq!(cp.verify(&k.verifying_key()), Ok(()));
        assert!(cp.verify(&other.verifying_key()).is_err());
        for f in [
            |c: &mut Checkpoint| c.seq += 1,
            |c: &mut Checkpoint| c.hash[0] ^= 1,
            |c: &mut Checkpoint| c.time_ms += 1,
            |c: &mut Checkpoint| c.node.push('x'),
            |c: &mut Checkpoint| c.signature[63] ^= 1,
        ] {
            let mut c = cp.clone();
            f(&mut c);
            assert!(c.verify(&k.verifying_key()).is_err());
        }
    }

    #[test]
    fn malformed_key_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.pub");
        std::fs::write(&p, "zz").unwrap();
        assert!(load_verifying_key(&p).is_err());
        std::fs::write(&p, "00").unwrap();
        assert!(load_verifying_key(&p).is_err());
    }
}
