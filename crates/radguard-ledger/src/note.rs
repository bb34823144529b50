//! C2SP signed notes (<https://c2sp.org/signed-note>), Ed25519 keys in the Go
//! `golang.org/x/mod/sumdb/note` text formats, and C2SP tlog checkpoints
//! (<https://c2sp.org/tlog-checkpoint>). Pure: no I/O.
//!
//! ```text
//! verifier key:  <name>+<key hash, 8 hex>+<base64(0x01 ‖ Ed25519 public key)>
//! signer key:    PRIVATE+KEY+<name>+<key hash>+<base64(0x01 ‖ Ed25519 seed)>
//! key hash:      first 4 bytes of SHA-256(<name> ‖ "\n" ‖ 0x01 ‖ public key), big endian
//! signed note:   <text ending in "\n">"\n"— <name> <base64(key hash ‖ signature)>"\n"…
//! checkpoint:    <origin>"\n"<tree size>"\n"<base64(root hash)>"\n"
//! ```

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::merkle::Hash;

/// The signature algorithm byte for Ed25519.
const ALG_ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("malformed key: {0}")]
    MalformedKey(&'static str),
    #[error("invalid key name {0:?} (it must be non-empty, with no spaces and no '+')")]
    InvalidName(String),
    #[error("malformed note: {0}")]
    MalformedNote(&'static str),
    #[error("no valid signature by {0}")]
    NotSigned(String),
    #[error("malformed checkpoint: {0}")]
    MalformedCheckpoint(&'static str),
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    WrongOrigin { expected: String, found: String },
}

/// Is `name` usable as a key name / checkpoint origin?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn key_hash(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let [d0, d1, d2, d3, ..]: [u8; 32] = h.finalize().into();
    u32::from_be_bytes([d0, d1, d2, d3])
}

/// A key that checks notes: a name and an Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    hash: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses `<name>+<hash>+<base64 key>`; the hash must match the name and key.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey("expected name+hash+key"));
        };
        if !valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let hash = parse_hash(hash)?;
        let raw = B64
            .decode(key)
            .map_err(|_| NoteError::MalformedKey("bad base64"))?;
        let (alg, public) = raw
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(NoteError::MalformedKey("not an Ed25519 key"));
        }
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 key is 32 bytes"))?;
        if key_hash(name, &public) != hash {
            return Err(NoteError::MalformedKey("key hash does not match"));
        }
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::MalformedKey("invalid Ed25519 point"))?;
        Ok(VerifierKey {
            name: name.to_string(),
            hash,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash (the signature's key ID).
    pub fn hash(&self) -> u32 {
        self.hash
    }

    /// Verifies one signature over `text`.
    fn verify(&self, text: &[u8], sig: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        self.key.verify_strict(text, &sig).is_ok()
    }
}

impl std::fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.hash, B64.encode(raw))
    }
}

fn parse_hash(s: &str) -> Result<u32, NoteError> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey("key hash must be 8 hex digits"));
    }
    u32::from_str_radix(s, 16).map_err(|_| NoteError::MalformedKey("key hash must be 8 hex digits"))
}

/// A key that signs notes. Its `Debug` does not show the secret.
pub struct SignerKey {
    name: String,
    hash: u32,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SignerKey({}+{:08x})", self.name, self.hash)
    }
}

impl SignerKey {
    /// A key from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<SignerKey, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::InvalidName(name.to_string()));
        }
        let key = SigningKey::from_bytes(&seed);
        let hash = key_hash(name, key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_string(),
            hash,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hash>+<base64 seed>`.
    pub fn parse(text: &str) -> Result<SignerKey, NoteError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::MalformedKey("expected PRIVATE+KEY+…"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::MalformedKey(
                "expected PRIVATE+KEY+name+hash+key",
            ));
        };
        let hash = parse_hash(hash)?;
        let raw = B64
            .decode(key)
            .map_err(|_| NoteError::MalformedKey("bad base64"))?;
        let (alg, seed) = raw
            .split_first()
            .ok_or(NoteError::MalformedKey("empty key"))?;
        if *alg != ALG_ED25519 {
            return Err(NoteError::MalformedKey("not an Ed25519 key"));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::MalformedKey("an Ed25519 seed is 32 bytes"))?;
        let k = SignerKey::from_seed(name, seed)?;
        if k.hash != hash {
            return Err(NoteError::MalformedKey("key hash does not match"));
        }
        Ok(k)
    }

    /// The `PRIVATE+KEY+…` text (secret!).
    pub fn to_private_text(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.hash,
            B64.encode(raw)
        )
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            hash: self.hash,
            key: self.key.verifying_key(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `text` (which must end in a newline) into a one-signature note.
    pub fn sign_note(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut blob = self.hash.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::MalformedNote("text must end in a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::MalformedNote("text contains control characters"));
    }
    Ok(())
}

/// Opens a signed note: returns its text if `key` signed it. Other signatures are ignored.
pub fn open_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    // The text keeps its final newline; the signatures follow the blank line.
    let Some((text, sigs)) = note
        .rfind("\n\n")
        .and_then(|at| Some((note.get(..=at)?, note.get(at + 2..)?)))
    else {
        return Err(NoteError::MalformedNote(
            "no blank line before the signatures",
        ));
    };
    check_text(text)?;
    if !sigs.ends_with('\n') {
        return Err(NoteError::MalformedNote(
            "signature block must end in a newline",
        ));
    }
    for line in sigs.lines() {
        let body = line
            .strip_prefix(SIG_PREFIX)
            .ok_or(NoteError::MalformedNote(
                "signature line must start with an em dash",
            ))?;
        let (name, b64) = body.split_once(' ').ok_or(NoteError::MalformedNote(
            "signature line needs a name and a signature",
        ))?;
        if name != key.name {
            continue;
        }
        let Ok(blob) = B64.decode(b64) else { continue };
        let Some((&id, sig)) = blob.split_first_chunk::<4>() else {
            continue;
        };
        if u32::from_be_bytes(id) != key.hash {
            continue;
        }
        let Ok(sig): Result<[u8; 64], _> = sig.try_into() else {
            continue;
        };
        if key.verify(text.as_bytes(), &sig) {
            return Ok(text);
        }
    }
    Err(NoteError::NotSigned(key.name.clone()))
}

/// A tree head: origin, size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body (the note text).
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a checkpoint body; extension lines after the root are allowed and ignored.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("no origin"))?;
        let size = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("no tree size"))?;
        let root = lines
            .next()
            .ok_or(NoteError::MalformedCheckpoint("no root hash"))?;
        if origin.is_empty() {
            return Err(NoteError::MalformedCheckpoint("empty origin"));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::MalformedCheckpoint(
                "tree size must be a decimal number",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::MalformedCheckpoint("tree size out of range"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoteError::MalformedCheckpoint(
                "root hash must be 32 bytes of base64",
            ))?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }

    /// Signs the checkpoint into a note.
    pub fn sign(&self, key: &SignerKey) -> Result<String, NoteError> {
        key.sign_note(&self.to_text())
    }

    /// Opens a signed checkpoint: the note must be signed by `key` and its origin must be the
    /// key's name (Radguard's logs name their key after their origin).
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        let text = open_note(note, key)?;
        let cp = Checkpoint::parse(text)?;
        if cp.origin != key.name {
            return Err(NoteError::WrongOrigin {
                expected: key.name.clone(),
                found: cp.origin,
            });
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known answers from golang.org/x/mod/sumdb/note (its documented example key and note).
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    // The example of the C2SP signed-note specification.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn go_reference_key_and_signature() {
        let s = SignerKey::parse(GO_SKEY).expect("signer");
        assert_eq!(s.to_private_text(), GO_SKEY);
        assert_eq!(s.verifier().to_string(), GO_VKEY);
        let v = VerifierKey::parse(GO_VKEY).expect("verifier");
        assert_eq!(v, s.verifier());
        assert_eq!(s.sign_note(GO_TEXT).expect("sign"), GO_NOTE);
        assert_eq!(open_note(GO_NOTE, &v).expect("opens"), GO_TEXT);
    }

    #[test]
    fn spec_example_verifies() {
        let v = VerifierKey::parse(SPEC_VKEY).expect("verifier");
        assert_eq!(v.name(), "example.com/foo");
        assert_eq!(
            open_note(SPEC_NOTE, &v).expect("opens"),
            "This is an example message.\n"
        );
    }

    #[test]
    fn tampered_notes_and_keys_are_refused() {
        let v = VerifierKey::parse(GO_VKEY).expect("verifier");
        let altered = GO_NOTE.replace("cryptography", "cryptographY");
        assert_eq!(
            open_note(&altered, &v),
            Err(NoteError::NotSigned("PeterNeumann".into()))
        );
        let other = SignerKey::from_seed("PeterNeumann", [7; 32]).expect("key");
        assert!(open_note(GO_NOTE, &other.verifier()).is_err());
        assert!(open_note(GO_TEXT, &v).is_err());
        assert!(VerifierKey::parse(
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err());
        assert!(VerifierKey::parse(
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        )
        .is_err());
        assert!(VerifierKey::parse("PeterNeumann+c74f20a3").is_err());
        assert!(SignerKey::parse(GO_VKEY).is_err());
        assert!(SignerKey::from_seed("a+b", [1; 32]).is_err());
        assert!(other.sign_note("no newline").is_err());
    }

    #[test]
    fn checkpoints_round_trip_and_bind_origin() {
        let key = SignerKey::from_seed("radguard.example/ledger/gw1", [9; 32]).expect("key");
        let cp = Checkpoint {
            origin: "radguard.example/ledger/gw1".into(),
            size: 42,
            root: [0xAB; 32],
        };
        let note = cp.sign(&key).expect("sign");
        assert!(note.starts_with("radguard.example/ledger/gw1\n42\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n\n\u{2014} radguard.example/ledger/gw1 "));
        assert_eq!(Checkpoint::open(&note, &key.verifier()).expect("opens"), cp);
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::open(&forged, &key.verifier()).is_err());
        let other_origin = Checkpoint {
            origin: "elsewhere".into(),
            ..cp.clone()
        };
        let note = other_origin.sign(&key).expect("sign");
        assert!(matches!(
            Checkpoint::open(&note, &key.verifier()),
            Err(NoteError::WrongOrigin { .. })
        ));
        for bad in ["o\n01\nq6s=\n", "o\n-1\n", "\n1\n", "o\n1\nnotbase64\n"] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
