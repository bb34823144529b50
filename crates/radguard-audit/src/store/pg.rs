//! The shared store: PostgreSQL, for several gateways writing one trail (each its own chain).

use std::str::FromStr;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::sql::{self, to_i64, to_u64, Param};
use super::sqlite::{attach_patients, hash_from_hex, sig_from_hex};
use super::{AuditStore, Filter, FoundRow};
use crate::chain::{ChainHead, IndexColumns, SealedRecord, StoredRow};
use crate::checkpoint::Checkpoint;
use crate::error::{AuditError, Result};

/// A PostgreSQL audit store.
///
/// Connects without TLS: run it over a Unix socket or loopback (or a TLS tunnel) until the
/// store gains a TLS connector.
///
/// Its calls block (the `postgres` client runs its own small runtime): call them from a
/// blocking thread (`tokio::task::spawn_blocking`), never on an async worker. The writer and
/// the exporter do; dropping the store anywhere is safe.
pub struct PgStore {
    /// `None` only after a failed reconnect (and at drop).
    client: Option<Client>,
    /// To reconnect after the server closed the session (restart, failover, terminated
    /// backend): otherwise every later call would fail on the dead connection.
    conn: String,
    schema: Option<String>,
    described: String,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            drop_off_runtime(c);
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.described)
            .finish()
    }
}

fn describe(conn: &str, schema: Option<&str>) -> String {
    let mut d = String::from("postgresql://");
    if let Ok(cfg) = postgres::Config::from_str(conn) {
        if let Some(u) = cfg.get_user() {
            d.push_str(u);
            d.push('@');
        }
        match cfg.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => d.push_str(h),
            Some(postgres::config::Host::Unix(p)) => d.push_str(&p.display().to_string()),
            None => d.push_str("localhost"),
        }
        if let Some(p) = cfg.get_ports().first() {
            d.push_str(&format!(":{p}"));
        }
        d.push('/');
        d.push_str(cfg.get_dbname().unwrap_or(""));
    }
    if let Some(s) = schema {
        d.push_str(&format!("#schema={s}"));
    }
    d
}

impl PgStore {
    /// Connects and creates the tables (in `schema`, created if needed, when given).
    pub fn connect(conn: &str, schema: Option<&str>) -> Result<Self> {
        if let Some(s) = schema {
            sql::check_identifier(s).map_err(AuditError::Config)?;
        }
        let client = open_client(conn, schema)?;
        Ok(PgStore {
            client: Some(client),
            conn: conn.to_string(),
            schema: schema.map(str::to_string),
            described: describe(conn, schema),
        })
    }

    /// The session, reconnecting first if the server closed the last one. A call that fails
    /// because the session died is retried by its caller (the writer and the exporter back off
    /// and retry), and the retry gets a new session.
    fn c(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            if let Some(dead) = self.client.take() {
                drop_off_runtime(dead);
            }
            let client = open_client(&self.conn, self.schema.as_deref())?;
            tracing::warn!(target: "radguard::audit", store = %self.described, "reconnected to the PostgreSQL audit store");
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| AuditError::Store("PostgreSQL connection closed".into()))
    }
}

/// Opens a session: schema (created if needed) as search path, tables created if needed.
fn open_client(conn: &str, schema: Option<&str>) -> Result<Client> {
    let mut client = Client::connect(conn, NoTls)?;
    if let Some(s) = schema {
        client.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\"; SET search_path TO \"{s}\""
        ))?;
    }
    // Several gateways may start at once: serialise schema creation.
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(7337001)", &[])?;
    for stmt in sql::SCHEMA {
        tx.batch_execute(stmt)?;
    }
    tx.commit()?;
    Ok(client)
}

/// Closing a session blocks; never on an async worker thread.
fn drop_off_runtime(c: Client) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("radguard-audit-pg-close".into())
            .spawn(move || drop(c));
    } else {
        drop(c);
    }
}

fn read_head(
    c: &mut impl postgres::GenericClient,
    node: &str,
    lock: bool,
) -> Result<Option<ChainHead>> {
    let q = if lock {
        "SELECT seq, hash FROM audit_head WHERE node = $1 FOR UPDATE"
    } else {
        "SELECT seq, hash FROM audit_head WHERE node = $1"
    };
    let row = c.query_opt(q, &[&node])?;
    row.map(|r| {
        let seq: i64 = r.get(0);
        let h: String = r.get(1);
        Ok(ChainHead {
            seq: to_u64(seq),
            hash: hash_from_hex(&h)?,
        })
    })
    .transpose()
}

impl AuditStore for PgStore {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn head(&mut self, node: &str) -> Result<Option<ChainHead>> {
        read_head(self.c()?, node, false)
    }

    fn append(
        &mut self,
        node: &str,
        expected: &ChainHead,
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<()> {
        let mut tx = self.c()?.transaction()?;
        // Serialises writers of one node (a second gateway misconfigured with the same name).
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&node])?;
        let cur = read_head(&mut tx, node, true)?.unwrap_or(ChainHead::GENESIS);
        let records = super::still_to_write(node, expected, &cur, records, |seq| {
            tx.query_opt(
                "SELECT hash FROM audit_record WHERE node = $1 AND seq = $2",
                &[&node, &to_i64(seq)],
            )?
            .map(|r| hash_from_hex(&r.get::<_, String>(0)))
            .transpose()
        })?;
        let ins = tx.prepare(
            "INSERT INTO audit_record (node, seq, time_ms, kind, assoc, peer_ip, calling_ae, \
             peer_name, entry, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )?;
        let pat = tx.prepare(
            "INSERT INTO audit_patient (node, seq, patient_id) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )?;
        for r in records {
            let seq = to_i64(r.record.seq);
            let hash = hex::encode(r.hash);
            tx.execute(
                &ins,
                &[
                    &node,
                    &seq,
                    &r.index.time_ms,
                    &r.index.kind,
                    &r.index.assoc,
                    &r.index.peer_ip,
                    &r.index.calling_ae,
                    &r.index.peer_name,
                    &r.entry,
                    &hash,
                ],
            )?;
            for p in &r.index.patients {
                tx.execute(&pat, &[&node, &seq, p])?;
            }
        }
        if let Some(last) = records.last() {
            tx.execute(
                "INSERT INTO audit_head (node, seq, hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (node) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                &[&node, &to_i64(last.record.seq), &hex::encode(last.hash)],
            )?;
        }
        if let Some(cp) = checkpoint {
            tx.execute(
                "INSERT INTO audit_checkpoint (node, seq, time_ms, hash, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (node, seq) DO UPDATE SET \
                 time_ms = excluded.time_ms, hash = excluded.hash, key_id = excluded.key_id, \
                 signature = excluded.signature",
                &[
                    &cp.node,
                    &to_i64(cp.seq),
                    &cp.time_ms,
                    &hex::encode(cp.hash),
                    &cp.key_id,
                    &hex::encode(cp.signature),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn read_after(&mut self, node: &str, after_seq: u64, limit: usize) -> Result<Vec<StoredRow>> {
        let rows = self.c()?.query(
            "SELECT seq, time_ms, kind, assoc, peer_ip, calling_ae, peer_name, entry, hash \
             FROM audit_record WHERE node = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            &[&node, &to_i64(after_seq), &to_i64(limit as u64)],
        )?;
        let mut out: Vec<StoredRow> = rows
            .iter()
            .map(|r| StoredRow {
                node: node.to_string(),
                seq: to_u64(r.get(0)),
                entry: r.get(7),
                hash: r.get(8),
                index: IndexColumns {
                    time_ms: r.get(1),
                    kind: r.get(2),
                    assoc: r.get(3),
                    peer_ip: r.get(4),
                    calling_ae: r.get(5),
                    peer_name: r.get(6),
                    patients: Vec::new(),
                },
            })
            .collect();
        if let (Some(first), Some(last)) = (out.first(), out.last()) {
            let (lo, hi) = (to_i64(first.seq), to_i64(last.seq));
            let pats: Vec<(i64, String)> = self
                .c()?
                .query(
                    "SELECT seq, patient_id FROM audit_patient WHERE node = $1 AND seq >= $2 \
                     AND seq <= $3 ORDER BY seq, patient_id COLLATE \"C\"",
                    &[&node, &lo, &hi],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            attach_patients(&mut out, pats);
        }
        Ok(out)
    }

    fn search(&mut self, filter: &Filter) -> Result<Vec<FoundRow>> {
        let (sql, params) = sql::search_sql(filter, |n| format!("${n}"));
        let owned: Vec<Box<dyn ToSql + Sync>> = params
            .into_iter()
            .map(|p| -> Box<dyn ToSql + Sync> {
                match p {
                    Param::Int(i) => Box::new(i),
                    Param::Text(t) => Box::new(t),
                }
            })
            .collect();
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let rows = self.c()?.query(sql.as_str(), &refs)?;
        Ok(rows
            .iter()
            .map(|r| FoundRow {
                node: r.get(0),
                seq: to_u64(r.get(1)),
                entry: r.get(2),
            })
            .collect())
    }

    fn admitted_associations(
        &mut self,
        since_ms: i64,
        until_ms: i64,
        each: &mut dyn FnMut(&str, i64),
    ) -> Result<u64> {
        let kind = crate::RecordKind::AssociationAccepted.as_str();
        let sql = sql::admitted_sql(|n| format!("${n}"));
        let rows = self
            .c()?
            .query(sql.as_str(), &[&kind, &since_ms, &until_ms])?;
        for r in &rows {
            let peer: String = r.get(0);
            each(&peer, r.get(1));
        }
        Ok(rows.len() as u64)
    }

    fn nodes(&mut self) -> Result<Vec<String>> {
        Ok(self
            .c()?
            .query(
                "SELECT node FROM audit_head UNION SELECT DISTINCT node FROM audit_record ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn checkpoints(&mut self, node: &str) -> Result<Vec<Checkpoint>> {
        self.c()?
            .query(
                "SELECT node, seq, time_ms, hash, key_id, signature FROM audit_checkpoint \
                 WHERE node = $1 ORDER BY seq",
                &[&node],
            )?
            .iter()
            .map(|r| {
                let hash: String = r.get(3);
                let sig: String = r.get(5);
                Ok(Checkpoint {
                    node: r.get(0),
                    seq: to_u64(r.get(1)),
                    time_ms: r.get(2),
                    hash: hash_from_hex(&hash)?,
                    key_id: r.get(4),
                    signature: sig_from_hex(&sig)?,
                })
            })
            .collect()
    }

    fn cursor(&mut self, node: &str, sink: &str) -> Result<u64> {
        let row = self.c()?.query_opt(
            "SELECT seq FROM audit_cursor WHERE node = $1 AND sink = $2",
            &[&node, &sink],
        )?;
        Ok(row.map(|r| to_u64(r.get(0))).unwrap_or(0))
    }

    fn set_cursor(&mut self, node: &str, sink: &str, seq: u64) -> Result<()> {
        self.c()?.execute(
            "INSERT INTO audit_cursor (node, sink, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (node, sink) DO UPDATE SET seq = excluded.seq",
            &[&node, &sink, &to_i64(seq)],
        )?;
        Ok(())
    }
}
