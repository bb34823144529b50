//! The index log: an append-only, hash-chained record of the index rows, in `index-log/`.
//!
//! The SQLite index refuses `UPDATE` and `DELETE` by trigger, but whoever can write the file
//! can drop the triggers (an intruder with root, ransomware encrypting the database). The log
//! is the index's second, tamper-evident copy: one text line per stored instance,
//!
//! ```text
//! <seq> <prev> <row as JSON>
//! ```
//!
//! where `seq` counts lines from 1, `prev` is the SHA-256 (hex) of the previous line's bytes
//! (without its newline; 64 zeros for line 1) and the row is the index row. Changing, removing
//! or inserting a line breaks the chain from there on. A commit writes and fsyncs the line
//! inside the index transaction, before it commits: a crash can leave a line whose row is not
//! committed (its object is then an orphan, and `Vault::open` re-inserts the row as logged) or a
//! torn last line (cut by [`IndexLog::open`]), never a committed row without its line. So every
//! row without a line was added behind the vault's back, and `check` says so.
//!
//! Lines go to `current.log`; every [`SEGMENT_LINES`] lines it is sealed: renamed to
//! `<first seq, 12 digits>.log` and made immutable like the objects ([`crate::lock`]). The chain
//! head (line count and hash of the last line) is what a checkpoint records
//! ([`Vault::index_log_head`](crate::Vault::index_log_head)).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::index::Record;
use crate::layout;
use crate::VaultError;

/// The folder of the log, under the vault's root.
pub(crate) const DIR: &str = "index-log";
/// The segment lines are appended to.
const CURRENT: &str = "current.log";
/// The latest signed checkpoint of the chain head (written by the gateway).
pub(crate) const CHECKPOINT: &str = "checkpoint";
/// Lines per sealed segment.
pub(crate) const SEGMENT_LINES: u64 = 10_000;
/// `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain head: how many lines, and the SHA-256 (hex) of the last (64 zeros when empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexLogHead {
    pub count: u64,
    pub hash: String,
}

/// The hash of line `count` (the chain head when the log had `count` lines), if the log has
/// that many lines and they chain.
pub(crate) fn hash_at(dir: &Path, count: u64) -> Result<Option<String>, VaultError> {
    let (contents, _) = read(dir, Some(count))?;
    Ok((contents.head.count == count && contents.faults.is_empty()).then_some(contents.head.hash))
}

/// What reading the log found wrong (reported by `Vault::check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogFault {
    /// A line that does not parse or does not chain to its predecessor.
    Broken {
        path: PathBuf,
        line: u64,
        reason: String,
    },
}

/// The log as read: its rows in order and what was wrong.
pub(crate) struct LogContents {
    pub rows: Vec<Record>,
    pub head: IndexLogHead,
    pub faults: Vec<LogFault>,
}

/// The open log.
pub(crate) struct IndexLog {
    dir: PathBuf,
    file: File,
    head: IndexLogHead,
    /// [`SEGMENT_LINES`] (smaller in tests).
    segment_lines: u64,
}

fn hash_line(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

fn segment_name(first: u64) -> String {
    format!("{first:012}.log")
}

/// The sealed segments (in order) and then `current.log`, those that exist.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, VaultError> {
    let mut sealed = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| VaultError::io(dir, e))? {
        let p = e.map_err(|e| VaultError::io(dir, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 12 && stem.bytes().all(|b| b.is_ascii_digit()) {
                sealed.push(p);
            }
        }
    }
    sealed.sort();
    let current = dir.join(CURRENT);
    if current.exists() {
        sealed.push(current);
    }
    Ok(sealed)
}

/// The head of the log under `dir` as its files show it (a reader beside the gateway that
/// writes it: a line being written is not counted).
pub(crate) fn head_of(dir: &Path) -> Result<IndexLogHead, VaultError> {
    Ok(read(dir, None)?.0.head)
}

/// Reads every segment (the first `limit` lines when given), checking the chain. A last line
/// without its newline (a crash while it was written) is `torn`: not counted, its byte offset
/// returned.
pub(crate) fn read(
    dir: &Path,
    limit: Option<u64>,
) -> Result<(LogContents, Option<u64>), VaultError> {
    let mut rows = Vec::new();
    let mut faults = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    let mut torn = None;
    if !dir.is_dir() {
        let head = IndexLogHead { count, hash: prev };
        return Ok((LogContents { rows, head, faults }, torn));
    }
    let segs = segments(dir)?;
    let last_seg = segs.len().saturating_sub(1);
    for (si, path) in segs.iter().enumerate() {
        let f = File::open(path).map_err(|e| VaultError::io(path, e))?;
        let mut reader = BufReader::new(f);
        let mut offset = 0u64;
        let mut buf = String::new();
        loop {
            if limit.is_some_and(|l| count >= l) {
                break;
            }
            buf.clear();
            let n = reader
                .read_line(&mut buf)
                .map_err(|e| VaultError::io(path, e))?;
            if n == 0 {
                break;
            }
            let Some(line) = buf.strip_suffix('\n') else {
                if si == last_seg {
                    torn = Some(offset);
                } else {
                    faults.push(LogFault::Broken {
                        path: path.clone(),
                        line: count + 1,
                        reason: "a sealed segment ends inside a line".into(),
                    });
                }
                break;
            };
            offset += n as u64;
            let expected_seq = count + 1;
            let mut parts = line.splitn(3, ' ');
            let (Some(seq), Some(p), Some(json)) = (parts.next(), parts.next(), parts.next())
            else {
                faults.push(LogFault::Broken {
                    path: path.clone(),
                    line: expected_seq,
                    reason: "not `<seq> <prev> <row>`".into(),
                });
                prev = hash_line(line);
                count += 1;
                continue;
            };
            if seq != expected_seq.to_string() {
                faults.push(LogFault::Broken {
                    path: path.clone(),
                    line: expected_seq,
                    reason: format!("sequence number {seq}, expected {expected_seq}"),
                });
            } else if p != prev {
                faults.push(LogFault::Broken {
                    path: path.clone(),
                    line: expected_seq,
                    reason: "does not chain to the previous line (a line was changed, \
                             removed or inserted)"
                        .into(),
                });
            }
            match serde_json::from_str::<Record>(json) {
                Ok(r) => rows.push(r),
                Err(e) => faults.push(LogFault::Broken {
                    path: path.clone(),
                    line: expected_seq,
                    reason: format!("row does not parse: {e}"),
                }),
            }
            prev = hash_line(line);
            count += 1;
        }
    }
    let head = IndexLogHead { count, hash: prev };
    Ok((LogContents { rows, head, faults }, torn))
}

impl IndexLog {
    /// Opens the log under `root` (creating it), cutting a torn last line. `rows` is the index,
    /// oldest first; a vault from before the log (no `index-log/` yet) gets a line for each.
    /// Returns the log, the logged rows the index lacks by SOP Instance UID, keyed by SHA-256
    /// (a crash after the line was written but before the index committed: `open` re-inserts
    /// them as logged), and the paths of sealed segments (to lock).
    #[allow(clippy::type_complexity)]
    pub(crate) fn open(
        root: &Path,
        rows: &[Record],
    ) -> Result<(IndexLog, HashMap<String, Record>, Vec<PathBuf>), VaultError> {
        let dir = root.join(DIR);
        // A vault from before the log: every row is written once, in index order.
        let fresh = !dir.exists();
        layout::create_private_dir(&dir)?;
        let (contents, torn) = read(&dir, None)?;
        let current = dir.join(CURRENT);
        if let Some(len) = torn {
            let f = OpenOptions::new()
                .write(true)
                .open(&current)
                .map_err(|e| VaultError::io(&current, e))?;
            f.set_len(len).map_err(|e| VaultError::io(&current, e))?;
            f.sync_all().map_err(|e| VaultError::io(&current, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(|e| VaultError::io(&current, e))?;
        layout::fsync_dir(&dir)?;
        let mut log = IndexLog {
            dir: dir.clone(),
            file,
            head: contents.head,
            segment_lines: SEGMENT_LINES,
        };
        let mut sealed = Vec::new();
        if fresh {
            for r in rows {
                sealed.extend(log.append(r)?);
            }
        }
        let indexed: HashSet<&str> = rows.iter().map(|r| r.sop_instance_uid.as_str()).collect();
        let unindexed = contents
            .rows
            .into_iter()
            .filter(|r| !indexed.contains(r.sop_instance_uid.as_str()))
            .map(|r| (r.sha256.clone(), r))
            .collect();
        for p in segments(&dir)? {
            if p.file_name().is_some_and(|n| n != CURRENT) && !sealed.contains(&p) {
                sealed.push(p);
            }
        }
        Ok((log, unindexed, sealed))
    }

    pub(crate) fn head(&self) -> IndexLogHead {
        self.head.clone()
    }

    /// Appends the line of `row` and fsyncs it. When the segment is full it is sealed; the
    /// sealed segment's path is returned (for the caller to lock).
    pub(crate) fn append(&mut self, row: &Record) -> Result<Option<PathBuf>, VaultError> {
        let current = self.dir.join(CURRENT);
        let json = serde_json::to_string(row)
            .map_err(|e| VaultError::io(&current, io::Error::other(e)))?;
        let seq = self.head.count + 1;
        let line = format!("{seq} {} {json}", self.head.hash);
        let mut bytes = line.clone().into_bytes();
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| VaultError::io(&current, e))?;
        self.head = IndexLogHead {
            count: seq,
            hash: hash_line(&line),
        };
        if !seq.is_multiple_of(self.segment_lines) {
            return Ok(None);
        }
        let first = seq + 1 - self.segment_lines;
        let sealed = self.dir.join(segment_name(first));
        fs::rename(&current, &sealed).map_err(|e| VaultError::io(&sealed, e))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(|e| VaultError::io(&current, e))?;
        layout::fsync_dir(&self.dir)?;
        Ok(Some(sealed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: u64) -> Record {
        Record {
            sop_instance_uid: format!("1.2.3.{i}"),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.7".into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            sha256: format!("{i:064x}"),
            size: i,
            patient_id: None,
            study_uid: None,
            series_uid: None,
            source_ae: Some("CT01".into()),
            stored_at: "2026-01-01T00:00:00.000Z".into(),
            parse_warning: None,
        }
    }

    #[test]
    fn full_segments_are_sealed_and_the_chain_runs_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, unindexed, sealed) = IndexLog::open(dir.path(), &[]).unwrap();
        assert!(unindexed.is_empty() && sealed.is_empty());
        log.segment_lines = 3;
        let mut got = Vec::new();
        for i in 1..=7 {
            got.extend(log.append(&row(i)).unwrap());
        }
        let d = dir.path().join(DIR);
        assert_eq!(
            got,
            vec![d.join("000000000001.log"), d.join("000000000004.log")]
        );
        let (contents, torn) = read(&d, None).unwrap();
        assert_eq!(torn, None);
        assert!(contents.faults.is_empty(), "{:?}", contents.faults);
        assert_eq!(contents.rows, (1..=7).map(row).collect::<Vec<_>>());
        assert_eq!(contents.head, log.head());
        assert!(hash_at(&d, 4).unwrap().is_some());
        drop(log);
        let rows: Vec<Record> = (1..=7).map(row).collect();
        let (log, unindexed, sealed) = IndexLog::open(dir.path(), &rows).unwrap();
        assert!(unindexed.is_empty());
        assert_eq!(sealed, got, "sealed segments are handed back to be locked");
        assert_eq!(log.head().count, 7);
        // A sealed segment removed: the chain breaks at its first line.
        fs::remove_file(d.join("000000000004.log")).unwrap();
        let (contents, _) = read(&d, None).unwrap();
        assert!(
            matches!(
                contents.faults.first(),
                Some(LogFault::Broken { line: 4, .. })
            ),
            "{:?}",
            contents.faults
        );
    }
}
