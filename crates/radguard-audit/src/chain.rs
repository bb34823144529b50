//! The hash chain (pure; no I/O): sealing records and verifying a stored chain.
//!
//! Each record's canonical encoding (its *entry*) is the compact JSON of [`AuditRecord`] in field
//! order; it names the chain (`node`), its position (`seq`) and the hex SHA-256 of the previous
//! entry (`prev`). Stores keep the entry bytes verbatim together with their hash and a few
//! indexed columns copied from it; [`Verifier`] re-derives all of them, so a change to any byte of
//! a stored row is attributed to that row, and a removed, inserted or re-numbered row breaks the
//! sequence or the links. Signed [`Checkpoint`]s pin the head hash at intervals, so even a chain
//! rewritten from some point on with recomputed hashes is caught at the next checkpoint.

use std::collections::VecDeque;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::checkpoint::Checkpoint;
use crate::record::AuditRecord;

/// The last record of a chain: its position and the SHA-256 of its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty chain: seq 0, hash all zeros.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: [0; 32],
    };

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// The columns stores index, derived from the record (and checked against it by [`Verifier`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct IndexColumns {
    pub time_ms: i64,
    pub kind: String,
    pub assoc: Option<i64>,
    pub peer_ip: Option<String>,
    pub calling_ae: Option<String>,
    pub peer_name: Option<String>,
    /// Sorted, without duplicates.
    pub patients: Vec<String>,
}

impl IndexColumns {
    pub fn of(r: &AuditRecord) -> Self {
        IndexColumns {
            time_ms: r.time_ms,
            kind: r.kind().as_str().to_string(),
            assoc: r.assoc.map(|a| i64::try_from(a).unwrap_or(i64::MAX)),
            peer_ip: r.peer.as_ref().and_then(|p| p.ip()),
            calling_ae: r.peer.as_ref().and_then(|p| p.calling_ae.clone()),
            peer_name: r.peer.as_ref().and_then(|p| p.name.clone()),
            patients: r.patient_ids(),
        }
    }
}

/// A record placed in a chain, ready to store.
#[derive(Debug, Clone)]
pub struct SealedRecord {
    pub record: AuditRecord,
    /// The canonical encoding; stored verbatim.
    pub entry: String,
    /// SHA-256 of `entry`.
    pub hash: [u8; 32],
    pub index: IndexColumns,
}

impl SealedRecord {
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.record.seq,
            hash: self.hash,
        }
    }
}

/// SHA-256 of an entry.
pub fn entry_hash(entry: &str) -> [u8; 32] {
    Sha256::digest(entry.as_bytes()).into()
}

/// Places `draft` after `head` in chain `node`.
pub fn seal(
    node: &str,
    head: &ChainHead,
    mut draft: AuditRecord,
) -> Result<SealedRecord, serde_json::Error> {
    draft.node = node.to_string();
    draft.seq = head.seq + 1;
    draft.prev = head.hash_hex();
    let entry = serde_json::to_string(&draft)?;
    let hash = entry_hash(&entry);
    let index = IndexColumns::of(&draft);
    Ok(SealedRecord {
        record: draft,
        entry,
        hash,
        index,
    })
}

/// Seals a run of drafts after `head`; returns them and the new head.
pub fn seal_all(
    node: &str,
    head: &ChainHead,
    drafts: impl IntoIterator<Item = AuditRecord>,
) -> Result<(Vec<SealedRecord>, ChainHead), serde_json::Error> {
    let mut h = *head;
    let mut out = Vec::new();
    for d in drafts {
        let s = seal(node, &h, d)?;
        h = s.head();
        out.push(s);
    }
    Ok((out, h))
}

/// One row as a store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub node: String,
    pub seq: u64,
    pub entry: String,
    /// Hex SHA-256 as stored.
    pub hash: String,
    pub index: IndexColumns,
}

/// The first thing found wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// The row at `seq` is not what was written there.
    Altered { seq: u64, why: String },
    /// `count` records from `seq` on are missing.
    Removed { seq: u64, count: u64, why: String },
    /// The row at `seq` was not written by the chain's writer.
    Inserted { seq: u64, why: String },
    /// Row `seq` does not link to row `seq - 1`, though each is self-consistent: one of them
    /// was rewritten with a recomputed hash, or `seq` was inserted.
    Unlinked { seq: u64 },
    /// The chain disagrees with the signed checkpoint at `seq`: records after `since` (the last
    /// checkpoint that matched, 0 for none) up to `seq` were rewritten.
    CheckpointMismatch { seq: u64, since: u64 },
    /// The checkpoint at `seq` is not signed by the trusted key.
    BadCheckpoint { seq: u64, why: String },
}

impl Fault {
    /// The record the fault is attributed to.
    pub fn seq(&self) -> u64 {
        match self {
            Fault::Altered { seq, .. }
            | Fault::Removed { seq, .. }
            | Fault::Inserted { seq, .. }
            | Fault::Unlinked { seq }
            | Fault::CheckpointMismatch { seq, .. }
            | Fault::BadCheckpoint { seq, .. } => *seq,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Altered { seq, why } => write!(f, "record {seq} was altered: {why}"),
            Fault::Removed { seq, count: 1, why } => write!(f, "record {seq} was removed: {why}"),
            Fault::Removed { seq, count, why } => write!(
                f,
                "records {seq}..={} were removed: {why}",
                seq + count - 1
            ),
            Fault::Inserted { seq, why } => write!(f, "record {seq} was inserted: {why}"),
            Fault::Unlinked { seq } => write!(
                f,
                "record {seq} does not follow record {}: one of them was rewritten (with its \
                 hash recomputed) or record {seq} was inserted",
                seq.saturating_sub(1)
            ),
            Fault::CheckpointMismatch { seq, since } => write!(
                f,
                "the chain does not match the signed checkpoint at record {seq}: records {}..={seq} \
                 were rewritten",
                since + 1
            ),
            Fault::BadCheckpoint { seq, why } => {
                write!(f, "checkpoint at record {seq} is not valid: {why}")
            }
        }
    }
}

/// The outcome of verifying one chain.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub node: String,
    /// Rows checked (up to the fault, if any).
    pub records: u64,
    /// Last record that verified.
    pub last_good_seq: u64,
    pub head_hash: String,
    /// Checkpoints matched against the chain.
    pub checkpoints_matched: u64,
    /// Whether checkpoint signatures were checked (a public key was given).
    pub signatures_checked: bool,
    pub fault: Option<Fault>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.fault.is_none()
    }
}

/// Walks one chain row by row (in `seq` order) and stops at the first fault.
pub struct Verifier {
    node: String,
    last: ChainHead,
    records: u64,
    /// Checkpoints not yet reached, each with its signature error, if any.
    checkpoints: VecDeque<(Checkpoint, Option<String>)>,
    last_cp_ok: u64,
    cps_matched: u64,
    signatures_checked: bool,
    fault: Option<Fault>,
}

impl Verifier {
    /// `checkpoints` of this node in any order; with `key`, each signature is checked too.
    pub fn new(node: &str, mut checkpoints: Vec<Checkpoint>, key: Option<&VerifyingKey>) -> Self {
        checkpoints.sort_by_key(|c| c.seq);
        let mut v = Verifier {
            node: node.to_string(),
            last: ChainHead::GENESIS,
            records: 0,
            checkpoints: VecDeque::new(),
            last_cp_ok: 0,
            cps_matched: 0,
            signatures_checked: key.is_some(),
            fault: None,
        };
        for cp in checkpoints {
            if cp.node != node {
                continue;
            }
            // A bad signature is reported when the walk reaches it, so earlier faults come first.
            let bad = key.and_then(|k| cp.verify(k).err());
            v.checkpoints.push_back((cp, bad));
        }
        v
    }

    /// Whether a fault was found (further rows are ignored).
    pub fn failed(&self) -> bool {
        self.fault.is_some()
    }

    /// The last record that verified.
    pub fn last_good(&self) -> ChainHead {
        self.last
    }

    fn fail(&mut self, f: Fault) {
        if self.fault.is_none() {
            self.fault = Some(f);
        }
    }

    /// Checks checkpoints up to (not including) `seq`, which the walk has passed.
    fn checkpoints_before(&mut self, seq: u64) {
        while let Some((cp, _)) = self.checkpoints.front() {
            if cp.seq >= seq {
                break;
            }
            if let Some((cp, _)) = self.checkpoints.pop_front() {
                if self.fault.is_none() {
                    self.fail(Fault::Removed {
                        seq: cp.seq,
                        count: 1,
                        why: "a signed checkpoint covers it but the store does not hold it".into(),
                    });
                }
            }
        }
    }

    fn check_checkpoint_at(&mut self, seq: u64, hash: &[u8; 32]) {
        while let Some((cp, _)) = self.checkpoints.front() {
            if cp.seq != seq {
                break;
            }
            let Some((cp, bad)) = self.checkpoints.pop_front() else {
                break;
            };
            if let Some(why) = bad {
                self.fail(Fault::BadCheckpoint { seq, why });
            } else if &cp.hash != hash {
                let since = self.last_cp_ok;
                self.fail(Fault::CheckpointMismatch { seq, since });
            } else {
                self.last_cp_ok = seq;
                self.cps_matched += 1;
            }
        }
    }

    /// Checks the next stored row.
    pub fn push(&mut self, row: &StoredRow) {
        if self.fault.is_some() {
            return;
        }
        let seq = row.seq;
        // 1. The row on its own: hash, parse, identity, indexed columns.
        let hash = entry_hash(&row.entry);
        if hex::encode(hash) != row.hash.to_ascii_lowercase() {
            return self.fail(Fault::Altered {
                seq,
                why: "its contents do not match its stored hash".into(),
            });
        }
        let rec: AuditRecord = match serde_json::from_str(&row.entry) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(Fault::Altered {
                    seq,
                    why: format!("it is not a valid record: {e}"),
                })
            }
        };
        if rec.node != self.node || row.node != self.node {
            return self.fail(Fault::Inserted {
                seq,
                why: format!("it belongs to chain {:?}", rec.node),
            });
        }
        let expected = self.last.seq + 1;
        if rec.seq != seq {
            return self.fail(if rec.seq > seq {
                Fault::Removed {
                    seq,
                    count: rec.seq - seq,
                    why: format!(
                        "the record stored at {seq} is record {}: later records were renumbered",
                        rec.seq
                    ),
                }
            } else {
                Fault::Inserted {
                    seq: rec.seq,
                    why: format!(
                        "the record stored at {seq} is record {}: records were inserted before it",
                        rec.seq
                    ),
                }
            });
        }
        let index = IndexColumns::of(&rec);
        if index != row.index {
            return self.fail(Fault::Altered {
                seq,
                why: "its indexed columns (time, kind, peer, patients) do not match its contents"
                    .into(),
            });
        }
        // 2. Its place in the chain.
        self.checkpoints_before(seq.min(expected));
        if self.fault.is_some() {
            return;
        }
        if seq > expected {
            return self.fail(Fault::Removed {
                seq: expected,
                count: seq - expected,
                why: format!(
                    "the store goes from record {} to record {seq}",
                    self.last.seq
                ),
            });
        }
        if rec.prev != self.last.hash_hex() {
            return self.fail(Fault::Unlinked { seq });
        }
        self.check_checkpoint_at(seq, &hash);
        if self.fault.is_some() {
            return;
        }
        self.records += 1;
        self.last = ChainHead { seq, hash };
    }

    /// Ends the walk. `head` is the head the store recorded with its last append.
    pub fn finish(mut self, head: Option<ChainHead>) -> VerifyReport {
        // Signed checkpoints past the end first: stronger evidence than the unsigned head.
        if self.fault.is_none() {
            if let Some((cp, _)) = self.checkpoints.front() {
                let seq = self.last.seq + 1;
                let count = cp.seq - self.last.seq;
                self.fail(Fault::Removed {
                    seq,
                    count,
                    why: format!(
                        "a signed checkpoint covers records up to {} but the chain ends at {}",
                        cp.seq, self.last.seq
                    ),
                });
            }
        }
        if self.fault.is_none() {
            if let Some(h) = head {
                if h.seq > self.last.seq {
                    let seq = self.last.seq + 1;
                    self.fail(Fault::Removed {
                        seq,
                        count: h.seq - self.last.seq,
                        why: format!("the store's head says the chain ends at record {}", h.seq),
                    });
                } else if h.seq < self.last.seq {
                    self.fail(Fault::Inserted {
                        seq: h.seq + 1,
                        why: format!("the store's head says the chain ends at record {}", h.seq),
                    });
                } else if h.hash != self.last.hash {
                    self.fail(Fault::Altered {
                        seq: h.seq,
                        why: "the store's head hash does not match it".into(),
                    });
                }
            }
        }
        VerifyReport {
            node: self.node,
            records: self.records,
            last_good_seq: self.last.seq,
            head_hash: self.last.hash_hex(),
            checkpoints_matched: self.cps_matched,
            signatures_checked: self.signatures_checked,
            fault: self.fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::AuditKey;
    use crate::record::{AuditEvent, Peer};

    fn drafts(n: u64) -> Vec<AuditRecord> {
        (0..n)
            .map(|i| {
                AuditRecord::draft(
                    1_700_000_000_000 + i as i64,
                    Some(i),
                    Some(Peer {
                        address: Some(format!("192.0.2.{}:104", i % 250)),
                        calling_ae: Some("CT".into()),
                        ..Peer::default()
                    }),
                    AuditEvent::EventsLost { count: i },
                )
            })
            .collect()
    }

    fn rows(sealed: &[SealedRecord]) -> Vec<StoredRow> {
        sealed
            .iter()
            .map(|s| StoredRow {
                node: s.record.node.clone(),
                seq: s.record.seq,
                entry: s.entry.clone(),
                hash: hex::encode(s.hash),
                index: s.index.clone(),
            })
            .collect()
    }

    fn verify(
        rows: &[StoredRow],
        head: Option<ChainHead>,
        cps: Vec<Checkpoint>,
        key: Option<&VerifyingKey>,
    ) -> VerifyReport {
        let mut v = Verifier::new("gw", cps, key);
        for r in rows {
            v.push(r);
        }
        v.finish(head)
    }

    fn chain(n: u64) -> (Vec<StoredRow>, ChainHead) {
        let (s, head) = seal_all("gw", &ChainHead::GENESIS, drafts(n)).unwrap();
        (rows(&s), head)
    }

    #[test]
    fn intact_chain_verifies() {
        let (r, head) = chain(20);
        let rep = verify(&r, Some(head), vec![], None);
        assert!(rep.ok(), "{:?}", rep.fault);
        assert_eq!(rep.records, 20);
        assert_eq!(rep.head_hash, head.hash_hex());
        assert_eq!(rep.last_good_seq, 20);
    }

    #[test]
    fn sealing_links_entries() {
        let (s, _) = seal_all("gw", &ChainHead::GENESIS, drafts(3)).unwrap();
        assert_eq!(s[0].record.prev, "0".repeat(64));
        assert_eq!(s[1].record.prev, hex::encode(s[0].hash));
        assert_eq!(s[2].record.seq, 3);
        assert!(
            s[0].entry
                .starts_with("{\"v\":1,\"node\":\"gw\",\"seq\":1,"),
            "{}",
            s[0].entry
        );
    }

    #[test]
    fn every_single_byte_change_is_attributed_to_its_record() {
        let (r, head) = chain(6);
        let target = 3usize;
        let len = r[target].entry.len();
        for pos in 0..len {
            let mut t = r.clone();
            let mut bytes = t[target].entry.clone().into_bytes();
            bytes[pos] = if bytes[pos] == b'1' { b'2' } else { b'1' };
            let Ok(s) = String::from_utf8(bytes) else {
                continue;
            };
            t[target].entry = s;
            let rep = verify(&t, Some(head), vec![], None);
            let f = rep.fault.expect("tampering not detected");
            assert_eq!(f.seq(), 4, "byte {pos}: {f}");
        }
    }

    #[test]
    fn changed_hash_or_index_is_attributed_to_its_record() {
        let (r, head) = chain(5);
        let mut t = r.clone();
        t[1].hash = hex::encode([7u8; 32]);
        assert!(matches!(
            verify(&t, Some(head), vec![], None).fault,
            Some(Fault::Altered { seq: 2, .. })
        ));
        let mut t = r.clone();
        t[2].index.peer_ip = Some("203.0.113.9".into());
        assert!(matches!(
            verify(&t, Some(head), vec![], None).fault,
            Some(Fault::Altered { seq: 3, .. })
        ));
        let mut t = r;
        t[4].index.patients.push("P9".into());
        assert!(matches!(
            verify(&t, Some(head), vec![], None).fault,
            Some(Fault::Altered { seq: 5, .. })
        ));
    }

    #[test]
    fn removal_is_named() {
        let (r, head) = chain(8);
        let mut t = r.clone();
        t.remove(4);
        assert_eq!(
            verify(&t, Some(head), vec![], None)
                .fault
                .map(|f| (f.seq(), matches!(f, Fault::Removed { count: 1, .. }))),
            Some((5, true))
        );
        // Removed and the rest renumbered.
        let mut t = r.clone();
        t.remove(4);
        for row in t.iter_mut().skip(4) {
            row.seq -= 1;
        }
        assert!(matches!(
            verify(&t, None, vec![], None).fault,
            Some(Fault::Removed { seq: 5, .. })
        ));
        // Tail removed: the head catches it.
        let t = r[..6].to_vec();
        assert!(matches!(
            verify(&t, Some(head), vec![], None).fault,
            Some(Fault::Removed {
                seq: 7,
                count: 2,
                ..
            })
        ));
    }

    #[test]
    fn insertion_is_named() {
        let (r, _) = chain(6);
        // A forged record at 4 (correctly linked to 3), the originals shifted up.
        let (forged, _) = seal_all(
            "gw",
            &ChainHead {
                seq: 3,
                hash: entry_hash(&r[2].entry),
            },
            drafts(1),
        )
        .unwrap();
        let mut t = r[..3].to_vec();
        t.extend(rows(&forged));
        for row in &r[3..] {
            let mut row = row.clone();
            row.seq += 1;
            t.push(row);
        }
        let f = verify(&t, None, vec![], None).fault.unwrap();
        assert!(matches!(f, Fault::Inserted { seq: 4, .. }), "{f}");
    }

    #[test]
    fn rewritten_suffix_is_caught_by_a_signed_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(&dir.path().join("k")).unwrap();
        let (s, _) = seal_all("gw", &ChainHead::GENESIS, drafts(10)).unwrap();
        let cp5 = key.sign("gw", &s[4].head(), 1);
        let cp10 = key.sign("gw", &s[9].head(), 2);
        // Rewrite from record 7 on, recomputing every hash: links and hashes are consistent.
        let mut d = drafts(10);
        d[6].time_ms += 1;
        let (mut forged, forged_head) = seal_all("gw", &s[5].head(), d.split_off(6)).unwrap();
        let mut all = s[..6].to_vec();
        all.append(&mut forged);
        let vk = key.verifying_key();
        let rep = verify(
            &rows(&all),
            Some(forged_head),
            vec![cp5.clone(), cp10.clone()],
            Some(&vk),
        );
        assert_eq!(
            rep.fault,
            Some(Fault::CheckpointMismatch { seq: 10, since: 5 })
        );
        // Untouched chain: both checkpoints match.
        let rep = verify(
            &rows(&s),
            Some(s[9].head()),
            vec![cp5.clone(), cp10.clone()],
            Some(&vk),
        );
        assert!(rep.ok(), "{:?}", rep.fault);
        assert_eq!(rep.checkpoints_matched, 2);
        // Truncated past a checkpoint, head rewritten too.
        let rep = verify(
            &rows(&s[..8]),
            Some(s[7].head()),
            vec![cp5.clone(), cp10.clone()],
            Some(&vk),
        );
        assert!(
            matches!(
                rep.fault,
                Some(Fault::Removed {
                    seq: 9,
                    count: 2,
                    ..
                })
            ),
            "{:?}",
            rep.fault
        );
        // A forged checkpoint signature.
        let mut bad = cp10;
        bad.signature[0] ^= 1;
        let rep = verify(&rows(&s), None, vec![cp5, bad], Some(&vk));
        assert!(
            matches!(rep.fault, Some(Fault::BadCheckpoint { seq: 10, .. })),
            "{:?}",
            rep.fault
        );
    }

    #[test]
    fn other_chains_records_are_foreign() {
        let (r, _) = chain(3);
        let (other, _) = seal_all("gw2", &ChainHead::GENESIS, drafts(3)).unwrap();
        let mut t = r.clone();
        let mut o = rows(&other)[1].clone();
        o.node = "gw".into();
        t[1] = o;
        assert!(matches!(
            verify(&t, None, vec![], None).fault,
            Some(Fault::Inserted { seq: 2, .. })
        ));
    }
}
