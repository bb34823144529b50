//! Findings: what the observations of a target mean, each with a severity and one line of
//! remediation. Pure: derived from the [`TargetReport`] alone.

use serde::Serialize;

use crate::checks::TargetReport;
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    fn parse(s: &str) -> Severity {
        match s {
            "high" => Severity::High,
            "medium" => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable identifier (e.g. `any-calling-ae`).
    pub id: String,
    pub severity: Severity,
    pub title: String,
    pub detail: String,
    pub remediation: String,
}

fn f(id: &str, severity: Severity, title: &str, detail: String, remediation: &str) -> Finding {
    Finding {
        id: id.into(),
        severity,
        title: title.into(),
        detail,
        remediation: remediation.into(),
    }
}

const FRONT: &str = "put radguard in front with a peer list (ae_titles + addresses per [[peer]])";

/// The findings of one target, most severe first.
pub fn derive(r: &TargetReport, target: &Target) -> Vec<Finding> {
    use Severity::*;
    let mut out = Vec::new();
    if !target.tls {
        out.push(f(
            "no-tls",
            Medium,
            "DICOM without TLS",
            format!("{} speaks plain DICOM: AE titles and patient data cross the network in clear text (TLS is not tried on a plain port)", r.target),
            "offer DICOM TLS (PS3.15 B.12), e.g. radguard tls_listen in front of the device",
        ));
    }
    if let Some(t) = &r.tls {
        if !t.offered {
            out.push(f(
                "tls-handshake-failed",
                Medium,
                "TLS handshake failed",
                format!(
                    "no TLS 1.2/1.3 handshake with modern suites completed: {}",
                    t.handshake_error.clone().unwrap_or_default()
                ),
                "offer TLS 1.2 or 1.3 with ECDHE + AEAD suites (BCP 195)",
            ));
        }
        if let Some(c) = &t.certificate {
            if c.expired {
                out.push(f(
                    "tls-cert-expired",
                    High,
                    "certificate expired",
                    format!("{} expired", c.subject),
                    "renew the server certificate",
                ));
            }
            if c.not_yet_valid {
                out.push(f(
                    "tls-cert-not-yet-valid",
                    High,
                    "certificate not yet valid",
                    c.subject.clone(),
                    "fix the certificate's validity period or the server clock",
                ));
            }
            if !c.name_matches {
                out.push(f(
                    "tls-cert-name-mismatch",
                    Medium,
                    "certificate does not name the host",
                    format!("{} not in {:?}", r.target, c.sans),
                    "issue a certificate whose subjectAltName holds the name clients connect to",
                ));
            }
            if c.chain.starts_with("failed") {
                out.push(f(
                    "tls-cert-untrusted",
                    Medium,
                    "certificate chain does not verify",
                    c.chain.clone(),
                    "serve the full chain to a CA the clients trust",
                ));
            }
            if c.self_signed {
                out.push(f(
                    "tls-cert-self-signed",
                    Low,
                    "self-signed certificate",
                    c.subject.clone(),
                    "use a certificate issued by the site's CA",
                ));
            }
        }
        if t.offered && t.client_certificate != "required" {
            out.push(f(
                "tls-client-cert-not-required",
                Low,
                "no client certificate required",
                format!("client certificate: {}", t.client_certificate),
                "require client certificates (radguard [server.tls] client_ca, cert_sha256 per peer)",
            ));
        }
    }
    if r.called_ae.random == "accepted" {
        out.push(f("any-called-ae", Medium, "accepts any called AE title", "a random called AE title was accepted".into(), "check the called AE title (or put radguard in front: it only answers its routes' called AE titles)"));
    }
    if r.called_ae.blank == "accepted" {
        out.push(f(
            "blank-called-ae",
            Medium,
            "accepts a blank called AE title",
            "a called AE title of 16 spaces was accepted".into(),
            "refuse blank called AE titles (PS3.8 §9.3.2)",
        ));
    }
    if r.called_ae.random != "accepted" {
        if let Some(ae) = r
            .called_ae
            .accepted
            .iter()
            .find(|a| crate::checks::DEFAULT_CALLED.contains(&a.as_str()))
        {
            out.push(f(
                "default-called-ae",
                Low,
                "answers a well-known default called AE title",
                format!("called AE {ae} accepted"),
                "use a site-specific called AE title",
            ));
        }
    }
    if r.random_calling_ae == "accepted" {
        out.push(f(
            "any-calling-ae",
            High,
            "accepts any calling AE title",
            "a random calling AE title was accepted".into(),
            &format!("{FRONT}, or enable the device's calling AE check"),
        ));
    }
    if r.services.echo == "success" {
        out.push(f(
            "echo-unknown-ae",
            Low,
            "answers C-ECHO from an unknown AE",
            "C-ECHO from a random calling AE title succeeded".into(),
            FRONT,
        ));
    }
    if r.services.store_context == "accepted" {
        out.push(f("store-unknown-ae", High, "accepts storage from an unknown AE", "a storage presentation context was accepted from a random calling AE title (no instance was sent)".into(), &format!("{FRONT} allowing store only to known modalities")));
    }
    if r.services.move_unknown_destination == "not-refused" {
        out.push(f("move-unknown-destination", Low, "does not refuse a C-MOVE to an unknown destination up front", format!("final status {} for a study that matches nothing (the destination may only be checked when there is something to send)", r.services.move_status.map(|s| format!("0x{s:04X}")).unwrap_or_default()), "refuse unknown destinations before searching (0xA801); radguard move_destinations per peer"));
    }
    for q in &r.services.find_results {
        match q.outcome.as_str() {
            "answered" => out.push(f("query-unknown-ae", High, "answers a patient query from an unknown AE", format!("C-FIND at {} level with universal matching returned a match (counted, cancelled, nothing kept)", q.level), &format!("{FRONT} allowing find only to known viewers"))),
            "no-match" => out.push(f("query-accepted-unknown-ae", Medium, "accepts a query from an unknown AE", format!("C-FIND at {} level was accepted (no match to return)", q.level), FRONT)),
            _ => {}
        }
    }
    if r.max_pdu == Some(0) {
        out.push(f(
            "unlimited-max-pdu",
            Low,
            "announces an unlimited maximum PDU length",
            "Maximum Length Received 0".into(),
            "announce a bounded maximum PDU length",
        ));
    }
    for h in &r.vulnerabilities {
        let v = &h.vuln;
        out.push(f(
            "known-vulnerability",
            Severity::parse(&v.severity),
            &format!("{} {} ({})", v.toolkit, h.version, v.id),
            format!(
                "{}: {} [affected {}; version from {}] source: {}",
                v.component, v.summary, v.affected, h.from, v.source
            ),
            "update to a fixed version",
        ));
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}
