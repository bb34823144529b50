//! The C-STORE SCU that sends stored Part 10 files to an archive: used by the hold forwarders
//! ([`crate::forward`]) and by `radguard vault replay`. Blocking (dicom-ul's synchronous client
//! association, plain TCP or TLS); call it from async code through `spawn_blocking`.
//!
//! A file is sent only after [`check_object`]: its SHA-256 must be the one it was accepted
//! with (the vault names objects by it), and its ledger fingerprint one of those recorded, so
//! an object changed on disk (ransomware, tampering) is never delivered as if it were the
//! original. The data set leaves as stored: the stored transfer syntax is proposed and
//! nothing is transcoded.

use std::io::{Read, Write};
use std::path::Path;

use dicom_ul::association::CloseSocket;
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociation, Pdu};
use radguard_dicom::dimse::{encode_request, Command};
use radguard_dicom::CommandField;
use sha2::{Digest, Sha256};

/// Why a C-STORE did not get an answer. Either way the association is unusable afterwards.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScuError {
    /// The request could not be written.
    #[error("sending: {0}")]
    Send(String),
    /// No (valid) C-STORE-RSP came back.
    #[error("answer: {0}")]
    Answer(String),
}

/// Success, or a warning (0001, Bxxx): the archive has the instance (PS3.4 B.2.3).
pub fn stored(status: u16) -> bool {
    status == 0x0000 || status == 0x0001 || status & 0xF000 == 0xB000
}

/// Why a stored file may not be sent: it no longer is what was accepted. `sha256` is the
/// digest it was accepted with; `fingerprints` the ledger fingerprints (hex) recorded for its
/// SOP Instance UID (empty: the ledger does not have it, only the hash is checked). `path` is
/// the file `bytes` were read from (the fingerprint reads it again, decoding pixel data).
pub fn check_object(
    path: &Path,
    bytes: &[u8],
    sha256: &str,
    fingerprints: &[String],
) -> Result<(), String> {
    let sha = hex::encode(Sha256::digest(bytes));
    if sha != sha256 {
        return Err(format!(
            "vault file changed: SHA-256 {sha}, {sha256} at acceptance"
        ));
    }
    if !fingerprints.is_empty() {
        let now = radguard_ledger::fingerprint_file(path)
            .map(|f| f.fingerprint.digest.to_hex())
            .map_err(|e| format!("fingerprint: {e}"))?;
        if !fingerprints.contains(&now) {
            return Err(format!(
                "fingerprint {now} differs from {} taken at acceptance",
                fingerprints.join(", ")
            ));
        }
    }
    Ok(())
}

/// The data set of a Part 10 file held in memory (what a C-STORE carries).
pub fn data_set(bytes: &[u8]) -> Result<&[u8], String> {
    let (_, offset) = radguard_ledger::fingerprint::part10_data_set(bytes)
        .map_err(|e| format!("not a Part 10 file: {e}"))?;
    Ok(bytes.get(offset..).unwrap_or_default())
}

/// The accepted presentation context for `sop_class` in `transfer_syntax`, if any.
pub fn accepted_context<S>(
    a: &ClientAssociation<S>,
    sop_class: &str,
    transfer_syntax: &str,
) -> Option<u8>
where
    S: CloseSocket + Read + Write,
{
    let trim = |s: &str| s.trim_end_matches('\0').trim().to_string();
    a.presentation_contexts()
        .iter()
        .find(|p| {
            p.reason == PresentationContextResultReason::Acceptance
                && trim(&p.abstract_syntax) == sop_class
                && trim(&p.transfer_syntax) == transfer_syntax
        })
        .map(|p| p.id)
}

/// One C-STORE (PS3.7 9.1.1): the command set, the data set (split into P-DATA-TF PDUs of
/// the negotiated size), then the response's Status (0000,0900).
pub fn c_store<S>(
    a: &mut ClientAssociation<S>,
    pc_id: u8,
    message_id: u16,
    sop_class: &str,
    sop_instance: &str,
    data: &[u8],
) -> Result<u16, ScuError>
where
    S: CloseSocket + Read + Write,
{
    let cmd = encode_request(
        CommandField::CStoreRq,
        message_id,
        sop_class,
        Some(sop_instance),
        true,
    );
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd,
        }],
    })
    .map_err(|e| ScuError::Send(e.to_string()))?;
    let mut w = a.send_pdata(pc_id);
    w.write_all(data)
        .and_then(|()| w.finish())
        .map_err(|e| ScuError::Send(e.to_string()))?;
    read_status(a).map_err(ScuError::Answer)
}

/// Reads P-DATA until a whole command set arrived; its Status (0000,0900).
fn read_status<S>(a: &mut ClientAssociation<S>) -> Result<u16, String>
where
    S: CloseSocket + Read + Write,
{
    let mut command = Vec::new();
    for _ in 0..1000 {
        match a.receive().map_err(|e| e.to_string())? {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        command.extend_from_slice(&v.data);
                        if v.is_last {
                            let c = Command::decode(&command).map_err(|e| e.to_string())?;
                            return c.status.ok_or_else(|| "response without status".into());
                        }
                    }
                }
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Err("no response command set".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_statuses() {
        assert!(stored(0x0000));
        assert!(stored(0x0001));
        assert!(stored(0xB000));
        assert!(stored(0xB007));
        assert!(!stored(0xA700));
        assert!(!stored(0xC000));
        assert!(!stored(0x0111));
    }

    #[test]
    fn changed_bytes_are_refused() {
        // Without ledger fingerprints the path is not read.
        let p = Path::new("/nonexistent");
        let sha = hex::encode(Sha256::digest(b"abc"));
        assert!(check_object(p, b"abc", &sha, &[]).is_ok());
        let e = check_object(p, b"abd", &sha, &[]).expect_err("changed");
        assert!(e.contains("vault file changed"), "{e}");
    }
}
