//! The whole run's report: JSON (serde), text and a self-contained HTML page. No patient data
//! can appear: the probe never decodes an identifier it receives.

use std::fmt::Write as _;

use serde::Serialize;

use crate::checks::TargetReport;
use crate::findings::Severity;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub probe: &'static str,
    pub rate_per_second: f64,
    pub safe: bool,
    pub connections: u32,
    pub targets: Vec<TargetReport>,
}

impl Report {
    /// Any finding at all (exit status 1).
    pub fn has_findings(&self) -> bool {
        self.targets
            .iter()
            .any(|t| !t.findings.is_empty() || !t.reachable)
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        for t in &self.targets {
            let _ = writeln!(s, "== {}", t.target);
            if let Some(e) = &t.error {
                let _ = writeln!(s, "  error: {e}");
            }
            if let Some(tls) = &t.tls {
                let _ = writeln!(
                    s,
                    "  tls: offered={} version={} client-certificate={}",
                    tls.offered,
                    tls.negotiated_version.as_deref().unwrap_or("-"),
                    tls.client_certificate
                );
                for v in tls.versions.iter().chain(tls.suites.iter()) {
                    let _ = writeln!(
                        s,
                        "    {:<45} {}",
                        v.name,
                        if v.accepted { "accepted" } else { "refused" }
                    );
                }
                for u in &tls.untestable {
                    let _ = writeln!(s, "    not tested: {u}");
                }
            }
            let _ = writeln!(
                s,
                "  called AE: random={} blank={} accepted={:?}; random calling AE: {}",
                t.called_ae.random, t.called_ae.blank, t.called_ae.accepted, t.random_calling_ae
            );
            for c in &t.contexts {
                let _ = writeln!(
                    s,
                    "    {:<14} {:<32} {}",
                    c.family,
                    c.abstract_syntax,
                    if c.accepted { "accepted" } else { "refused" }
                );
            }
            if let Some(i) = &t.implementation {
                let _ = writeln!(
                    s,
                    "  implementation: {} {} -> {} {}",
                    i.class_uid.as_deref().unwrap_or("-"),
                    i.version_name.as_deref().unwrap_or("-"),
                    i.toolkit.as_deref().unwrap_or("unknown"),
                    i.version.as_deref().unwrap_or("")
                );
            }
            if let Some(m) = t.max_pdu {
                let _ = writeln!(s, "  max PDU: {m}");
            }
            let sv = &t.services;
            let _ = writeln!(
                s,
                "  services: echo={} store-context={} move-unknown-destination={} find={}",
                sv.echo, sv.store_context, sv.move_unknown_destination, sv.find
            );
            for q in &sv.find_results {
                let _ = writeln!(s, "    C-FIND {}: {}", q.level, q.outcome);
            }
            if t.findings.is_empty() {
                let _ = writeln!(s, "  findings: none");
            }
            for f in &t.findings {
                let _ = writeln!(s, "  [{}] {}: {}", f.severity.as_str(), f.title, f.detail);
                let _ = writeln!(s, "         fix: {}", f.remediation);
            }
        }
        let _ = writeln!(
            s,
            "{} connection(s), at most {} per second",
            self.connections, self.rate_per_second
        );
        s
    }

    pub fn html(&self) -> String {
        let mut s = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>radguard probe</title>\
             <style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}\
             table{border-collapse:collapse;margin:1em 0}.high{color:#b00}.medium{color:#b60}.low{color:#555}\
             </style></head><body><h1>radguard probe</h1>",
        );
        for t in &self.targets {
            let _ = write!(s, "<h2>{}</h2>", esc(&t.target));
            if t.findings.is_empty() {
                s.push_str("<p>No findings.</p>");
            } else {
                s.push_str("<table><tr><th>severity</th><th>finding</th><th>detail</th><th>remediation</th></tr>");
                for f in &t.findings {
                    let _ = write!(
                        s,
                        "<tr><td class=\"{0}\">{0}</td><td>{1}</td><td>{2}</td><td>{3}</td></tr>",
                        f.severity.as_str(),
                        esc(&f.title),
                        esc(&f.detail),
                        esc(&f.remediation)
                    );
                }
                s.push_str("</table>");
            }
            let json = serde_json::to_string_pretty(t).unwrap_or_default();
            let _ = write!(
                s,
                "<details><summary>observations</summary><pre>{}</pre></details>",
                esc(&json)
            );
        }
        s.push_str("</body></html>\n");
        s
    }

    /// The most severe finding of the run.
    pub fn worst(&self) -> Option<Severity> {
        self.targets
            .iter()
            .flat_map(|t| t.findings.iter().map(|f| f.severity))
            .max()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
