//! The hold queue: instances accepted into the vault while their destination was unreachable,
//! waiting to be forwarded. One SQLite file (`<data>/hold-queue.sqlite`, WAL, `synchronous =
//! FULL`): a row is durable before the client's success is sent, and leaves the queue only
//! when the destination answered success. Per destination, rows are forwarded in order of
//! arrival (`seq`); a row marked in flight when the process died is sent again first (the
//! archive then sees the same SOP Instance UID twice, never a gap).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OptionalExtension};

use crate::VaultError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS held (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    dest          TEXT NOT NULL,
    route         TEXT NOT NULL,
    calling_ae    TEXT NOT NULL,
    sop_class     TEXT NOT NULL,
    sop_instance  TEXT NOT NULL,
    ts            TEXT NOT NULL,
    path          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    fingerprint   TEXT,
    accepted_ms   INTEGER NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    done_ms       INTEGER,
    -- An operator's drop: who, and whether the gateway has reported it (audited) yet.
    dropped_by    TEXT,
    drop_reported INTEGER NOT NULL DEFAULT 0,
    -- Failure statuses the destination answered for this row (not connection failures).
    refusals      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS held_dest ON held (dest, state, seq);
CREATE INDEX IF NOT EXISTS held_route ON held (route, state);
CREATE INDEX IF NOT EXISTS held_done ON held (state, done_ms);
";

/// Where a held instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldState {
    /// Waiting for its destination.
    Queued,
    /// Being sent (if the process dies now, it is sent again).
    InFlight,
    /// The destination answered success: out of the queue.
    Done,
    /// Removed by an operator (`radguard queue drop`).
    Dropped,
    /// Its file no longer matches the fingerprint taken at acceptance: never sent.
    Quarantined,
    /// The destination refused it (a failure status) too many times: out of the forwarding
    /// order until an operator retries it.
    Parked,
}

impl HeldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldState::Queued => "queued",
            HeldState::InFlight => "in-flight",
            HeldState::Done => "done",
            HeldState::Dropped => "dropped",
            HeldState::Quarantined => "quarantined",
            HeldState::Parked => "parked",
        }
    }

    fn parse(s: &str) -> HeldState {
        match s {
            "in-flight" => HeldState::InFlight,
            "done" => HeldState::Done,
            "dropped" => HeldState::Dropped,
            "quarantined" => HeldState::Quarantined,
            "parked" => HeldState::Parked,
            _ => HeldState::Queued,
        }
    }
}

/// An instance to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHeld {
    /// The destination: `AE@host:port`.
    pub dest: String,
    /// The route's called AE title.
    pub route: String,
    /// The calling AE title to use towards the destination.
    pub calling_ae: String,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
    /// The vault's object file.
    pub path: PathBuf,
    /// SHA-256 of the object file (its content address).
    pub sha256: String,
    /// The integrity ledger's fingerprint (hex) taken at acceptance, when one was taken.
    pub fingerprint: Option<String>,
    pub accepted_ms: u64,
}

/// A queued instance as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub seq: i64,
    pub item: NewHeld,
    pub state: HeldState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Waiting instances of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Depth {
    pub dest: String,
    pub waiting: u64,
    /// Acceptance time of the oldest waiting instance (Unix ms).
    pub oldest_ms: Option<u64>,
}

/// The hold queue (see the module documentation). Blocking: use from `spawn_blocking`.
pub struct HoldQueue {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for HoldQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldQueue")
            .field("path", &self.path)
            .finish()
    }
}

/// How long a delivered row stays (for `radguard queue list` and tests) before it is deleted.
const DONE_KEPT_MS: u64 = 3_600_000;

const WAITING: &str = "state IN ('queued', 'in-flight')";

fn err(e: rusqlite::Error) -> VaultError {
    VaultError::Sqlite(e)
}

impl HoldQueue {
    /// Opens (creating) the queue file.
    pub fn open(path: &Path) -> Result<HoldQueue, VaultError> {
        let conn = Connection::open(path).map_err(err)?;
        // Durable on commit (a success sent to a client names a queued row): WAL + FULL sync.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // A queue file from before `refusals` existed gets the column (SQLite adds it with its
        // default to every row).
        let has_refusals: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('held') WHERE name = 'refusals'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_refusals {
            conn.execute_batch("ALTER TABLE held ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0")
                .map_err(err)?;
        }
        Ok(HoldQueue {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an instance (committed, fsynced) and returns its sequence number.
    pub fn enqueue(&self, h: &NewHeld) -> Result<i64, VaultError> {
        let c = self.conn();
        c.execute(
            "INSERT INTO held (dest, route, calling_ae, sop_class, sop_instance, ts, path, sha256,
                fingerprint, accepted_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued')",
            params![
                h.dest,
                h.route,
                h.calling_ae,
                h.sop_class,
                h.sop_instance,
                h.transfer_syntax,
                h.path.to_string_lossy(),
                h.sha256,
                h.fingerprint,
                i64::try_from(h.accepted_ms).unwrap_or(i64::MAX),
            ],
        )
        .map_err(err)?;
        Ok(c.last_insert_rowid())
    }

    /// Instances waiting (queued or in flight) that came through `route`.
    pub fn waiting_for_route(&self, route: &str) -> Result<u64, VaultError> {
        let c = self.conn();
        let n: i64 = c
            .query_row(
                &format!("SELECT COUNT(*) FROM held WHERE route = ?1 AND {WAITING}"),
                params![route],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Instances waiting (queued or in flight) for `dest`.
    pub fn waiting_for_dest(&self, dest: &str) -> Result<u64, VaultError> {
        let c = self.conn();
        let n: i64 = c
            .query_row(
                &format!("SELECT COUNT(*) FROM held WHERE dest = ?1 AND {WAITING}"),
                params![dest],
                |r| r.get(0),
            )
            .map_err(err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The first `limit` waiting instances of `dest`, in order of arrival.
    pub fn next_batch(&self, dest: &str, limit: usize) -> Result<Vec<Held>, VaultError> {
        self.select(
            &format!("WHERE dest = ?1 AND {WAITING} ORDER BY seq LIMIT ?2"),
            params![dest, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Every row not done, in order (for `radguard queue list`).
    pub fn list(&self) -> Result<Vec<Held>, VaultError> {
        self.select("WHERE state != 'done' ORDER BY seq", params![])
    }

    fn select(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<Held>, VaultError> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT seq, dest, route, calling_ae, sop_class, sop_instance, ts, path, sha256,
                    fingerprint, accepted_ms, state, attempts, last_error FROM held {tail}"
            ))
            .map_err(err)?;
        let rows = st
            .query_map(args, |r| {
                Ok(Held {
                    seq: r.get(0)?,
                    item: NewHeld {
                        dest: r.get(1)?,
                        route: r.get(2)?,
                        calling_ae: r.get(3)?,
                        sop_class: r.get(4)?,
                        sop_instance: r.get(5)?,
                        transfer_syntax: r.get(6)?,
                        path: PathBuf::from(r.get::<_, String>(7)?),
                        sha256: r.get(8)?,
                        fingerprint: r.get(9)?,
                        accepted_ms: u64::try_from(r.get::<_, i64>(10)?).unwrap_or(0),
                    },
                    state: HeldState::parse(&r.get::<_, String>(11)?),
                    attempts: u32::try_from(r.get::<_, i64>(12)?).unwrap_or(u32::MAX),
                    last_error: r.get(13)?,
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    fn set_state(
        &self,
        seq: i64,
        state: HeldState,
        done_ms: Option<u64>,
    ) -> Result<(), VaultError> {
        let c = self.conn();
        c.execute(
            "UPDATE held SET state = ?2, done_ms = ?3 WHERE seq = ?1",
            params![
                seq,
                state.as_str(),
                done_ms.map(|m| i64::try_from(m).unwrap_or(i64::MAX))
            ],
        )
        .map_err(err)?;
        Ok(())
    }

    /// About to be sent: if the process dies from here on, it is sent again.
    pub fn mark_in_flight(&self, seq: i64) -> Result<(), VaultError> {
        self.set_state(seq, HeldState::InFlight, None)
    }

    /// The destination answered success: out of the queue. Rows done for over an hour are
    /// deleted (the ledger, the audit trail and the events keep the history), so the file
    /// stays the size of the backlog.
    pub fn mark_done(&self, seq: i64, now_ms: u64) -> Result<(), VaultError> {
        self.set_state(seq, HeldState::Done, Some(now_ms))?;
        let cutoff = i64::try_from(now_ms.saturating_sub(DONE_KEPT_MS)).unwrap_or(0);
        self.conn()
            .execute(
                "DELETE FROM held WHERE state = 'done' AND done_ms < ?1",
                params![cutoff],
            )
            .map_err(err)?;
        Ok(())
    }

    /// The file no longer matches its fingerprint: kept out of the forwarding order.
    pub fn quarantine(&self, seq: i64, why: &str) -> Result<(), VaultError> {
        self.set_state(seq, HeldState::Quarantined, None)?;
        self.note_failure(seq, why)
    }

    /// A failed attempt (kept in place: order of arrival is kept).
    pub fn note_failure(&self, seq: i64, why: &str) -> Result<(), VaultError> {
        let c = self.conn();
        c.execute(
            "UPDATE held SET attempts = attempts + 1, last_error = ?2 WHERE seq = ?1",
            params![seq, why],
        )
        .map_err(err)?;
        Ok(())
    }

    /// The destination answered a failure status for the row: counted with the other failed
    /// attempts, and once `max` such answers came the row is parked (out of the forwarding
    /// order, so the rest of the destination's queue is not blocked behind it). Returns whether
    /// it was parked now.
    pub fn note_refusal(&self, seq: i64, why: &str, max: u32) -> Result<bool, VaultError> {
        self.conn()
            .execute(
                "UPDATE held SET attempts = attempts + 1, refusals = refusals + 1,
                    last_error = ?2,
                    state = CASE WHEN refusals + 1 >= ?3 THEN 'parked' ELSE state END
                 WHERE seq = ?1 AND state IN ('queued', 'in-flight')",
                params![seq, why, i64::from(max)],
            )
            .map_err(err)?;
        Ok(self.state_of_seq(seq)? == Some(HeldState::Parked))
    }

    fn state_of_seq(&self, seq: i64) -> Result<Option<HeldState>, VaultError> {
        let c = self.conn();
        c.query_row("SELECT state FROM held WHERE seq = ?1", params![seq], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map(|o| o.map(|s| HeldState::parse(&s)))
        .map_err(err)
    }

    /// Operator's drop: the rows (waiting, quarantined or parked) leave the queue, marked with `by`
    /// until the gateway reports them ([`HoldQueue::take_unreported_drops`]). Returns them.
    pub fn drop_rows(&self, seqs: &[i64], by: &str) -> Result<Vec<Held>, VaultError> {
        let mut out = Vec::new();
        for &seq in seqs {
            let found = self.select(
                "WHERE seq = ?1 AND state IN ('queued', 'in-flight', 'quarantined', 'parked')",
                params![seq],
            )?;
            for h in found {
                let c = self.conn();
                c.execute(
                    "UPDATE held SET state = 'dropped', dropped_by = ?2, drop_reported = 0
                     WHERE seq = ?1",
                    params![h.seq, by],
                )
                .map_err(err)?;
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Drops not reported yet, with who made them; marked reported (the gateway emits an
    /// audited event for each).
    pub fn take_unreported_drops(&self) -> Result<Vec<(Held, String)>, VaultError> {
        let rows = self.select(
            "WHERE state = 'dropped' AND drop_reported = 0 ORDER BY seq",
            params![],
        )?;
        let mut out = Vec::new();
        for h in rows {
            let c = self.conn();
            let by: Option<String> = c
                .query_row(
                    "SELECT dropped_by FROM held WHERE seq = ?1",
                    params![h.seq],
                    |r| r.get(0),
                )
                .map_err(err)?;
            c.execute(
                "UPDATE held SET drop_reported = 1 WHERE seq = ?1",
                params![h.seq],
            )
            .map_err(err)?;
            out.push((h, by.unwrap_or_else(|| "operator".into())));
        }
        Ok(out)
    }

    /// Operator's retry: quarantined and parked rows go back to the queue (in their place of
    /// arrival) and attempt counts restart.
    pub fn retry(&self, dest: Option<&str>) -> Result<u64, VaultError> {
        let c = self.conn();
        let n = c
            .execute(
                "UPDATE held SET attempts = 0, refusals = 0,
                    state = CASE WHEN state IN ('quarantined', 'parked') THEN 'queued'
                                 ELSE state END
                 WHERE state IN ('queued', 'in-flight', 'quarantined', 'parked')
                   AND (?1 IS NULL OR dest = ?1)",
                params![dest],
            )
            .map_err(err)?;
        Ok(n as u64)
    }

    /// Waiting instances and the oldest one's age, per destination with any waiting.
    pub fn depths(&self) -> Result<Vec<Depth>, VaultError> {
        let c = self.conn();
        let mut st = c
            .prepare(&format!(
                "SELECT dest, COUNT(*), MIN(accepted_ms) FROM held WHERE {WAITING}
                 GROUP BY dest ORDER BY dest"
            ))
            .map_err(err)?;
        let rows = st
            .query_map([], |r| {
                Ok(Depth {
                    dest: r.get(0)?,
                    waiting: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    oldest_ms: r
                        .get::<_, Option<i64>>(2)?
                        .and_then(|m| u64::try_from(m).ok()),
                })
            })
            .map_err(err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(err)
    }

    /// Whether any row with this SOP Instance UID reached `state` (tests, `queue list`).
    pub fn state_of(&self, sop_instance: &str) -> Result<Option<HeldState>, VaultError> {
        let c = self.conn();
        c.query_row(
            "SELECT state FROM held WHERE sop_instance = ?1 ORDER BY seq DESC LIMIT 1",
            params![sop_instance],
            |r| r.get::<_, String>(0),
        )
        .optional()
        .map(|o| o.map(|s| HeldState::parse(&s)))
        .map_err(err)
    }
}

/// Percent of the file system holding `path` in use (blocks used / blocks, as `df` shows it
/// for unprivileged users: what is left for us is `f_bavail`).
pub fn disk_use_percent(path: &Path) -> Result<u8, VaultError> {
    let st = rustix::fs::statvfs(path).map_err(|e| VaultError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let total = st.f_blocks;
    if total == 0 {
        return Ok(0);
    }
    let avail = st.f_bavail.min(total);
    let used = total - avail;
    Ok(u8::try_from(used.saturating_mul(100) / total).unwrap_or(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(dest: &str, uid: &str) -> NewHeld {
        NewHeld {
            dest: dest.into(),
            route: "HOLD".into(),
            calling_ae: "MOD".into(),
            sop_class: "1.2.840.10008.5.1.4.1.1.7".into(),
            sop_instance: uid.into(),
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            path: PathBuf::from("/x"),
            sha256: "00".into(),
            fingerprint: None,
            accepted_ms: 1,
        }
    }

    #[test]
    fn order_states_and_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("q.sqlite");
        {
            let q = HoldQueue::open(&p).expect("open");
            for i in 0..5 {
                q.enqueue(&item("A@h:1", &format!("1.2.{i}")))
                    .expect("enqueue");
            }
            q.enqueue(&item("B@h:2", "9.9")).expect("enqueue");
            let b = q.next_batch("A@h:1", 3).expect("batch");
            let uids: Vec<_> = b.iter().map(|h| h.item.sop_instance.as_str()).collect();
            assert_eq!(uids, ["1.2.0", "1.2.1", "1.2.2"]);
            q.mark_in_flight(b[0].seq).expect("in flight");
            q.mark_done(b[1].seq, 5).expect("done");
            assert_eq!(q.waiting_for_route("HOLD").expect("count"), 5);
        }
        let q = HoldQueue::open(&p).expect("reopen");
        let b = q.next_batch("A@h:1", 10).expect("batch");
        let uids: Vec<_> = b.iter().map(|h| h.item.sop_instance.as_str()).collect();
        // The one in flight at the "crash" comes first, the done one is gone.
        assert_eq!(uids, ["1.2.0", "1.2.2", "1.2.3", "1.2.4"]);
        assert_eq!(b[0].state, HeldState::InFlight);
        let d = q.depths().expect("depths");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].waiting, 4);
        let dropped = q.drop_rows(&[b[1].seq], "operator t").expect("drop");
        assert_eq!(dropped.len(), 1);
        let reported = q.take_unreported_drops().expect("drops");
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].1, "operator t");
        assert!(q.take_unreported_drops().expect("drops").is_empty());
        assert_eq!(
            q.state_of("1.2.2").expect("state"),
            Some(HeldState::Dropped)
        );
        assert!(disk_use_percent(dir.path()).expect("statvfs") <= 100);
    }

    #[test]
    fn refused_rows_park_after_max_and_retry_unparks_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = HoldQueue::open(&dir.path().join("q.sqlite")).expect("open");
        for i in 0..3 {
            q.enqueue(&item("A@h:1", &format!("1.2.{i}")))
                .expect("enqueue");
        }
        let first = q.next_batch("A@h:1", 1).expect("batch")[0].seq;
        // Connection failures never park.
        for _ in 0..10 {
            q.note_failure(first, "connection refused")
                .expect("failure");
        }
        assert!(!q.note_refusal(first, "0xA900", 3).expect("refusal"));
        assert!(!q.note_refusal(first, "0xA900", 3).expect("refusal"));
        assert!(q.note_refusal(first, "0xA900", 3).expect("refusal"));
        assert_eq!(q.state_of("1.2.0").expect("state"), Some(HeldState::Parked));
        let next: Vec<_> = q
            .next_batch("A@h:1", 10)
            .expect("batch")
            .into_iter()
            .map(|h| h.item.sop_instance)
            .collect();
        assert_eq!(next, ["1.2.1", "1.2.2"], "the rest goes on without it");
        assert_eq!(q.depths().expect("depths")[0].waiting, 2);
        assert!(q
            .list()
            .expect("list")
            .iter()
            .any(|h| h.state == HeldState::Parked));
        assert_eq!(q.retry(None).expect("retry"), 3);
        let again = q.next_batch("A@h:1", 10).expect("batch");
        assert_eq!(again[0].item.sop_instance, "1.2.0", "back in its place");
        assert_eq!(again[0].attempts, 0);
        // Its refusal count restarted too.
        assert!(!q.note_refusal(first, "0xA900", 3).expect("refusal"));
    }

    #[test]
    fn a_queue_file_without_refusals_gets_the_column() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("q.sqlite");
        {
            let c = Connection::open(&p).expect("open");
            c.execute_batch(&SCHEMA.replace(
                ",\n    -- Failure statuses the destination answered for this row (not connection failures).\n    refusals      INTEGER NOT NULL DEFAULT 0",
                "",
            ))
            .expect("old schema");
            let cols: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('held') WHERE name = 'refusals'",
                    [],
                    |r| r.get(0),
                )
                .expect("cols");
            assert_eq!(cols, 0, "the old schema has no refusals column");
        }
        let q = HoldQueue::open(&p).expect("reopen");
        let seq = q.enqueue(&item("A@h:1", "1.2.9")).expect("enqueue");
        assert!(q.note_refusal(seq, "0xC000", 1).expect("refusal"));
    }
}
