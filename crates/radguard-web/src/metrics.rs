//! `/metrics`: the Prometheus text exposition format 0.0.4, written by hand. Labels are policy
//! peer names (or `unknown`), route names, operations, status classes and rule names: bounded,
//! and never patient data.

use std::fmt::Write as _;

use crate::model::{Console, DURATION_BUCKETS};

/// Gauges the console does not derive from the bus.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Audit records not yet written to the store (the writer's queue), when known.
    pub audit_pending_records: Option<u64>,
    /// Entries in the integrity ledger, when there is one.
    pub ledger_entries: Option<u64>,
    /// Vault objects stored since start whose immutable flag could not be set, when the
    /// vault locks objects (`[vault] immutable` not `off`).
    pub vault_unlocked_objects: Option<u64>,
}

/// A label value escaped as the format wants (backslash, double quote, newline).
fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The whole scrape.
pub fn render(console: &Console, g: Gauges) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "radguard_build_info",
        "gauge",
        "Radguard build (always 1).",
    );
    let _ = writeln!(
        o,
        "radguard_build_info{{version=\"{}\"}} 1",
        esc(console.version)
    );
    console.with_counters(|c, running| {
        head(
            &mut o,
            "radguard_associations_total",
            "counter",
            "Associations by policy peer, route and result (accepted ones end released or aborted).",
        );
        for ((peer, route, result), n) in &c.associations {
            let _ = writeln!(
                o,
                "radguard_associations_total{{peer=\"{}\",route=\"{}\",result=\"{result}\"}} {n}",
                esc(peer),
                esc(route)
            );
        }
        head(
            &mut o,
            "radguard_dimse_requests_total",
            "counter",
            "DIMSE requests by policy peer, operation and final status class (refused: by the gateway).",
        );
        for ((peer, op, status), n) in &c.requests {
            let _ = writeln!(
                o,
                "radguard_dimse_requests_total{{peer=\"{}\",operation=\"{}\",status=\"{status}\"}} {n}",
                esc(peer),
                esc(op)
            );
        }
        head(
            &mut o,
            "radguard_bytes_total",
            "counter",
            "Bytes relayed (PDUs) by route and direction.",
        );
        for ((route, dir), n) in &c.bytes {
            let _ = writeln!(
                o,
                "radguard_bytes_total{{route=\"{}\",direction=\"{dir}\"}} {n}",
                esc(route)
            );
        }
        head(
            &mut o,
            "radguard_association_duration_seconds",
            "histogram",
            "Duration of ended associations.",
        );
        for (b, n) in DURATION_BUCKETS.iter().zip(c.duration_buckets.iter()) {
            let _ = writeln!(
                o,
                "radguard_association_duration_seconds_bucket{{le=\"{b}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "radguard_association_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            c.duration_count
        );
        let _ = writeln!(
            o,
            "radguard_association_duration_seconds_sum {}",
            c.duration_sum
        );
        let _ = writeln!(
            o,
            "radguard_association_duration_seconds_count {}",
            c.duration_count
        );
        head(
            &mut o,
            "radguard_alerts_total",
            "counter",
            "Security alerts and detections by rule (or alert kind).",
        );
        for (rule, n) in &c.alerts {
            let _ = writeln!(o, "radguard_alerts_total{{rule=\"{}\"}} {n}", esc(rule));
        }
        head(
            &mut o,
            "radguard_associations_running",
            "gauge",
            "Associations accepted and not ended.",
        );
        let _ = writeln!(o, "radguard_associations_running {running}");
        head(
            &mut o,
            "radguard_hold_queue_instances",
            "gauge",
            "Instances held for an unreachable destination (hold routes), by destination.",
        );
        for (dest, (n, _)) in &c.hold {
            let _ = writeln!(o, "radguard_hold_queue_instances{{dest=\"{}\"}} {n}", esc(dest));
        }
        head(
            &mut o,
            "radguard_hold_queue_oldest_seconds",
            "gauge",
            "Age of the oldest instance held for each destination.",
        );
        for (dest, (_, age)) in &c.hold {
            let _ = writeln!(
                o,
                "radguard_hold_queue_oldest_seconds{{dest=\"{}\"}} {age}",
                esc(dest)
            );
        }
    });
    if let Some(p) = g.audit_pending_records {
        head(
            &mut o,
            "radguard_audit_pending_records",
            "gauge",
            "Audit records waiting to be written to the store.",
        );
        let _ = writeln!(o, "radguard_audit_pending_records {p}");
    }
    if let Some(n) = g.ledger_entries {
        head(
            &mut o,
            "radguard_ledger_entries",
            "gauge",
            "Entries in the integrity ledger.",
        );
        let _ = writeln!(o, "radguard_ledger_entries {n}");
    }
    if let Some(n) = g.vault_unlocked_objects {
        head(
            &mut o,
            "radguard_vault_unlocked_objects_total",
            "counter",
            "Vault objects stored since start that could not be made immutable.",
        );
        let _ = writeln!(o, "radguard_vault_unlocked_objects_total {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_families() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let c = Console::new();
        let text = render(
            &c,
            Gauges {
                audit_pending_records: Some(0),
                ledger_entries: Some(3),
                vault_unlocked_objects: Some(2),
            },
        );
        assert!(text.contains("# TYPE radguard_associations_total counter"));
        assert!(text.contains("radguard_association_duration_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(text.contains("radguard_ledger_entries 3"));
        assert!(text.contains("radguard_vault_unlocked_objects_total 2"));
        assert!(text.ends_with('\n'));
    }
}
