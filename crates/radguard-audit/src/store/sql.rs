//! SQL shared by both stores: the schema and the search query.

use super::Filter;

/// The schema. `BIGINT` and `TEXT` mean the same in SQLite and PostgreSQL.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS audit_record (
        node TEXT NOT NULL,
        seq BIGINT NOT NULL,
        time_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        assoc BIGINT,
        peer_ip TEXT,
        calling_ae TEXT,
        peer_name TEXT,
        entry TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (node, seq))",
    "CREATE INDEX IF NOT EXISTS audit_record_time ON audit_record (time_ms)",
    "CREATE INDEX IF NOT EXISTS audit_record_peer_ip ON audit_record (peer_ip)",
    "CREATE INDEX IF NOT EXISTS audit_record_calling_ae ON audit_record (calling_ae)",
    "CREATE INDEX IF NOT EXISTS audit_record_kind ON audit_record (kind, time_ms)",
    "CREATE TABLE IF NOT EXISTS audit_patient (
        node TEXT NOT NULL,
        seq BIGINT NOT NULL,
        patient_id TEXT NOT NULL,
        PRIMARY KEY (node, seq, patient_id))",
    "CREATE INDEX IF NOT EXISTS audit_patient_id ON audit_patient (patient_id)",
    "CREATE TABLE IF NOT EXISTS audit_head (
        node TEXT PRIMARY KEY,
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoint (
        node TEXT NOT NULL,
        seq BIGINT NOT NULL,
        time_ms BIGINT NOT NULL,
        hash TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (node, seq))",
    "CREATE TABLE IF NOT EXISTS audit_cursor (
        node TEXT NOT NULL,
        sink TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (node, sink))",
];

/// A bound parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Admitted associations in a time range (`AuditStore::admitted_associations`): the indexed
/// (kind, time_ms) columns and the peer's name, never the entry.
pub(crate) fn admitted_sql(ph: fn(usize) -> String) -> String {
    format!(
        "SELECT peer_name, time_ms FROM audit_record WHERE kind = {} AND time_ms >= {} \
         AND time_ms < {} AND peer_name IS NOT NULL ORDER BY time_ms, node, seq",
        ph(1),
        ph(2),
        ph(3)
    )
}

/// The search query; `ph(n)` spells the n-th placeholder (1-based) in the dialect.
pub(crate) fn search_sql(f: &Filter, ph: fn(usize) -> String) -> (String, Vec<Param>) {
    let mut sql = String::from("SELECT r.node, r.seq, r.entry FROM audit_record r");
    let mut conds: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let bind = |p: Param, params: &mut Vec<Param>| {
        params.push(p);
        ph(params.len())
    };
    if let Some(pid) = &f.patient_id {
        let a = bind(Param::Text(pid.clone()), &mut params);
        conds.push(format!(
            "EXISTS (SELECT 1 FROM audit_patient p WHERE p.node = r.node AND p.seq = r.seq \
             AND p.patient_id = {a})"
        ));
    }
    if let Some(n) = &f.node {
        let a = bind(Param::Text(n.clone()), &mut params);
        conds.push(format!("r.node = {a}"));
    }
    if let Some(t) = f.since_ms {
        let a = bind(Param::Int(t), &mut params);
        conds.push(format!("r.time_ms >= {a}"));
    }
    if let Some(t) = f.until_ms {
        let a = bind(Param::Int(t), &mut params);
        conds.push(format!("r.time_ms < {a}"));
    }
    if let Some(p) = &f.peer {
        let a = bind(Param::Text(p.clone()), &mut params);
        let b = bind(Param::Text(p.clone()), &mut params);
        let c = bind(Param::Text(p.clone()), &mut params);
        conds.push(format!(
            "(r.peer_ip = {a} OR r.calling_ae = {b} OR r.peer_name = {c})"
        ));
    }
    if !f.kinds.is_empty() {
        let list: Vec<String> = f
            .kinds
            .iter()
            .map(|k| bind(Param::Text(k.as_str().to_string()), &mut params))
            .collect();
        conds.push(format!("r.kind IN ({})", list.join(", ")));
    }
    if let Some(a) = f.assoc {
        let a = bind(Param::Int(to_i64(a)), &mut params);
        conds.push(format!("r.assoc = {a}"));
    }
    if let Some(s) = f.after_seq {
        let a = bind(Param::Int(to_i64(s)), &mut params);
        conds.push(format!("r.seq > {a}"));
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(if f.newest_first {
        " ORDER BY r.time_ms DESC, r.node DESC, r.seq DESC"
    } else {
        " ORDER BY r.time_ms, r.node, r.seq"
    });
    if f.limit > 0 {
        let a = bind(Param::Int(to_i64(f.limit as u64)), &mut params);
        sql.push_str(&format!(" LIMIT {a}"));
    }
    (sql, params)
}

/// Accepts a plain SQL identifier (`[A-Za-z_][A-Za-z0-9_]{0,62}`), for the PostgreSQL schema.
pub(crate) fn check_identifier(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "schema {s:?}: use letters, digits and _ only (at most 63, not starting with a digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordKind;

    fn q(n: usize) -> String {
        format!("?{n}")
    }

    #[test]
    fn empty_filter_selects_all_in_order() {
        let (sql, p) = search_sql(&Filter::default(), q);
        assert_eq!(
            sql,
            "SELECT r.node, r.seq, r.entry FROM audit_record r ORDER BY r.time_ms, r.node, r.seq"
        );
        assert!(p.is_empty());
    }

    #[test]
    fn every_filter_binds_its_values() {
        let f = Filter {
            node: Some("gw".into()),
            since_ms: Some(1),
            until_ms: Some(2),
            peer: Some("CT".into()),
            patient_id: Some("P'1".into()),
            kinds: vec![RecordKind::DimseRequest, RecordKind::SecurityAlert],
            assoc: Some(9),
            after_seq: Some(5),
            limit: 10,
            newest_first: true,
        };
        let (sql, p) = search_sql(&f, q);
        assert!(
            !sql.contains("P'1"),
            "values are bound, never spliced: {sql}"
        );
        assert_eq!(p.len(), 12);
        assert!(sql.contains("p.patient_id = ?1"), "{sql}");
        assert!(sql.contains("r.kind IN (?8, ?9)"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY r.time_ms DESC, r.node DESC, r.seq DESC LIMIT ?12"),
            "{sql}"
        );
    }

    #[test]
    fn identifiers() {
        for ok in ["a", "_x", "gw_01", "Audit"] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "a-b", "a;b", "a b", &"x".repeat(64)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }
}
