//! Checks of PS3.15 A.5 audit messages, written from the standard's text:
//! A.5.1 (schema: structure, attribute value lists) is checked by xmllint against the RELAX NG
//! transcription in schema/; A.5.2 (general conventions) and A.5.3 (per-message tables) by
//! [`check`]. A rule that fails only because the gateway did not report a fact (study UID,
//! patient ID, query data set) is a `MissingFact`, anything else an `Error`.

use std::io::Write;
use std::process::Command;

use base64::Engine as _;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Severity {
    Error,
    MissingFact,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub severity: Severity,
    pub rule: String,
}

/// DCM codes the messages may use, with their meanings (PS3.16 / A.5.3).
const DCM: &[(&str, &str)] = &[
    ("110100", "Application Activity"),
    ("110102", "Begin Transferring DICOM Instances"),
    ("110104", "DICOM Instances Transferred"),
    ("110112", "Query"),
    ("110113", "Security Alert"),
    ("110114", "User Authentication"),
    ("110120", "Application Start"),
    ("110121", "Application Stop"),
    ("110122", "Login"),
    ("110123", "Logout"),
    ("110126", "Node Authentication"),
    ("110132", "Use of Restricted Function"),
    ("110133", "Audit Recording Stopped"),
    ("110134", "Audit Recording Started"),
    ("110150", "Application"),
    ("110151", "Application Launcher"),
    ("110152", "Destination Role ID"),
    ("110153", "Source Role ID"),
    ("110180", "Study Instance UID"),
    ("110181", "SOP Class UID"),
    ("110182", "Node ID"),
    (
        "4",
        "Application Server process tier in a multi-tier system",
    ),
];

/// RFC-3881 codes used for participant object ID types.
const RFC3881: &[(&str, &str)] = &[("2", "Patient Number"), ("12", "URI")];

const SECURITY_ALERT_TYPES: &[&str] = &[
    "110126", "110127", "110128", "110129", "110130", "110131", "110132", "110133", "110134",
    "110135", "110136", "110137", "110138", "110139", "110140", "110141", "110142",
];

struct Ctx {
    out: Vec<Violation>,
}

impl Ctx {
    fn err(&mut self, rule: impl Into<String>) {
        self.out.push(Violation {
            severity: Severity::Error,
            rule: rule.into(),
        });
    }
    fn missing(&mut self, rule: impl Into<String>) {
        self.out.push(Violation {
            severity: Severity::MissingFact,
            rule: rule.into(),
        });
    }
}

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn code_of(n: Node) -> (String, String, String) {
    (
        n.attribute("csd-code").unwrap_or_default().to_string(),
        n.attribute("codeSystemName")
            .unwrap_or_default()
            .to_string(),
        n.attribute("originalText").unwrap_or_default().to_string(),
    )
}

fn children<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Vec<Node<'a, 'i>> {
    n.children()
        .filter(|c| c.is_element() && c.has_tag_name(name))
        .collect()
}

fn has_role(ap: Node, code: &str) -> bool {
    children(ap, "RoleIDCode")
        .iter()
        .any(|r| code_of(*r).0 == code)
}

fn id_type(po: Node) -> (String, String, String) {
    children(po, "ParticipantObjectIDTypeCode")
        .first()
        .map(|c| code_of(*c))
        .unwrap_or_default()
}

/// Checks one message against A.5.2 and A.5.3.
pub fn check(xml: &str) -> Vec<Violation> {
    let mut c = Ctx { out: Vec::new() };
    let doc = match roxmltree::Document::parse(xml) {
        Ok(d) => d,
        Err(e) => {
            c.err(format!("not well-formed XML: {e}"));
            return c.out;
        }
    };
    let root = doc.root_element();
    if !root.has_tag_name("AuditMessage") {
        c.err("root element is not AuditMessage");
        return c.out;
    }
    // Every coded value: known system, and known (code, meaning) for DCM and RFC-3881.
    for n in root
        .descendants()
        .filter(|n| n.attribute("csd-code").is_some())
    {
        let (code, sys, text) = code_of(n);
        let table = match sys.as_str() {
            "DCM" => DCM,
            "RFC-3881" => RFC3881,
            "99RADGUARD" => continue,
            other => {
                c.err(format!(
                    "{}: codeSystemName {other:?} is not DCM or RFC-3881",
                    n.tag_name().name()
                ));
                continue;
            }
        };
        match table.iter().find(|(k, _)| *k == code) {
            Some((_, meaning)) if *meaning == text => {}
            Some((_, meaning)) => c.err(format!("({code}, {sys}) means {meaning:?}, not {text:?}")),
            None => c.err(format!("({code}, {sys}) is not a code this profile uses")),
        }
    }
    let Some(ei) = children(root, "EventIdentification").into_iter().next() else {
        c.err("no EventIdentification");
        return c.out;
    };
    let event = children(ei, "EventID")
        .first()
        .map(|n| code_of(*n).0)
        .unwrap_or_default();
    let action = ei.attribute("EventActionCode").unwrap_or_default();
    let types: Vec<String> = children(ei, "EventTypeCode")
        .iter()
        .map(|n| code_of(*n).0)
        .collect();
    // A.5.2.5: EventDateTime includes the time zone.
    let dt = ei.attribute("EventDateTime").unwrap_or_default();
    if !(dt.ends_with('Z')
        || dt
            .get(dt.len().saturating_sub(6)..)
            .is_some_and(|z| z.starts_with('+') || z.starts_with('-')))
    {
        c.err(format!("EventDateTime {dt:?} has no time zone"));
    }
    let aps = children(root, "ActiveParticipant");
    // A.5.2: at most one UserIsRequestor.
    if aps
        .iter()
        .filter(|a| a.attribute("UserIsRequestor") == Some("true"))
        .count()
        > 1
    {
        c.err("more than one ActiveParticipant is UserIsRequestor");
    }
    for a in &aps {
        if a.attribute("NetworkAccessPointID").is_some()
            != a.attribute("NetworkAccessPointTypeCode").is_some()
        {
            c.err("NetworkAccessPointID and NetworkAccessPointTypeCode must come together");
        }
        if a.attribute("NetworkAccessPointTypeCode") == Some("2")
            && a.attribute("NetworkAccessPointID")
                .unwrap_or_default()
                .parse::<std::net::IpAddr>()
                .is_err()
        {
            c.err("NetworkAccessPointTypeCode 2 with an ID that is not an IP address");
        }
        if let Some(alt) = a.attribute("AlternativeUserID") {
            if alt.starts_with("AETITLES") && !alt.starts_with("AETITLES=") {
                c.err("AE titles must be written AETITLES=a;b (A.5.2.2)");
            }
        }
    }
    let pos = children(root, "ParticipantObjectIdentification");
    for po in &pos {
        for d in children(*po, "ParticipantObjectDetail") {
            if base64::engine::general_purpose::STANDARD
                .decode(d.attribute("value").unwrap_or("!"))
                .is_err()
            {
                c.err("ParticipantObjectDetail value is not base64");
            }
        }
        for desc in children(*po, "ParticipantObjectDescription") {
            for sc in children(desc, "SOPClass") {
                let n = children(sc, "Instance").len();
                if n > 0 && sc.attribute("NumberOfInstances") != Some(&n.to_string()) {
                    c.err("SOPClass NumberOfInstances does not count its Instance elements");
                }
                if sc.attribute("UID").is_none_or(str::is_empty) {
                    c.missing("SOPClass without a UID");
                }
            }
        }
    }
    let one_role = |c: &mut Ctx, code: &str, what: &str| {
        let n = aps.iter().filter(|a| has_role(**a, code)).count();
        if n != 1 {
            c.err(format!(
                "{what}: expected one ActiveParticipant with RoleIDCode {code}, found {n}"
            ));
        }
    };
    match event.as_str() {
        "110100" => {
            if action != "E" {
                c.err("Application Activity: EventActionCode shall be E");
            }
            if types.len() != 1 || !["110120", "110121"].contains(&types[0].as_str()) {
                c.err("Application Activity: EventTypeCode shall be 110120 or 110121");
            }
            let apps: Vec<_> = aps.iter().filter(|a| has_role(**a, "110150")).collect();
            if apps.len() != 1 {
                c.err("Application Activity: one Application (110150) participant");
            } else if !apps[0]
                .attribute("AlternativeUserID")
                .is_some_and(|a| a.starts_with("AETITLES="))
            {
                c.missing("Application Activity: AE titles of a DICOM application (MC)");
            }
            if !pos.is_empty() {
                c.err("Application Activity has no participant objects");
            }
        }
        "110102" | "110104" => {
            let what = if event == "110102" {
                "Begin Transferring"
            } else {
                "Instances Transferred"
            };
            if event == "110102" && action != "E" {
                c.err("Begin Transferring: EventActionCode shall be E");
            }
            if event == "110104" && !["C", "R", "U"].contains(&action) {
                c.err("Instances Transferred: EventActionCode shall be C, R or U");
            }
            one_role(&mut c, "110153", what);
            one_role(&mut c, "110152", what);
            let studies: Vec<_> = pos.iter().filter(|p| id_type(**p).0 == "110180").collect();
            if studies.is_empty() {
                c.err(format!("{what}: at least one study participant object"));
            }
            for s in &studies {
                if s.attribute("ParticipantObjectTypeCode") != Some("2")
                    || s.attribute("ParticipantObjectTypeCodeRole") != Some("3")
                {
                    c.err(format!(
                        "{what}: study object shall be type 2 (system), role 3 (report)"
                    ));
                }
                if s.attribute("ParticipantObjectID").is_none_or(str::is_empty) {
                    c.missing(format!("{what}: Study Instance UID"));
                }
            }
            let patients: Vec<_> = pos.iter().filter(|p| id_type(**p).0 == "2").collect();
            match patients.len() {
                0 => c.missing(format!("{what}: patient participant object")),
                1 => {
                    let p = patients[0];
                    if p.attribute("ParticipantObjectTypeCode") != Some("1")
                        || p.attribute("ParticipantObjectTypeCodeRole") != Some("1")
                    {
                        c.err(format!(
                            "{what}: patient object shall be type 1 (person), role 1 (patient)"
                        ));
                    }
                }
                _ => c.err(format!("{what}: one patient per message")),
            }
        }
        "110112" => {
            if action != "E" {
                c.err("Query: EventActionCode shall be E");
            }
            one_role(&mut c, "110153", "Query");
            one_role(&mut c, "110152", "Query");
            // The SOP queried with the query (M), and the patient when the query names one (U).
            let (patients, sops): (Vec<_>, Vec<_>) = pos.iter().partition(|p| {
                p.attribute("ParticipantObjectTypeCode") == Some("1")
                    && p.attribute("ParticipantObjectTypeCodeRole") == Some("1")
            });
            if sops.len() != 1 {
                c.err("Query: exactly one SOP-queried participant object (with the query)");
            }
            if patients.len() > 1 {
                c.err("Query: at most one patient participant object");
            }
            for p in &patients {
                if id_type(*p).0 != "2" {
                    c.err(
                        "Query: the patient object is identified by (2, RFC-3881, Patient Number)",
                    );
                }
            }
            for p in &sops {
                if id_type(*p).0 != "110181"
                    || p.attribute("ParticipantObjectTypeCode") != Some("2")
                    || p.attribute("ParticipantObjectTypeCodeRole") != Some("3")
                {
                    c.err("Query: object shall be (110181, DCM, SOP Class UID), type 2, role 3");
                }
                if p.attribute("ParticipantObjectID").is_none_or(str::is_empty) {
                    c.err("Query: ParticipantObjectID shall be the SOP Class UID");
                }
                let q = children(*p, "ParticipantObjectQuery");
                if q.len() != 1 {
                    c.err("Query: ParticipantObjectQuery is mandatory");
                } else if q[0].text().unwrap_or_default().is_empty() {
                    c.missing("Query: the query data set");
                }
                let ts = children(*p, "ParticipantObjectDetail")
                    .into_iter()
                    .filter(|d| d.attribute("type") == Some("TransferSyntax"))
                    .count();
                if ts != 1 {
                    c.missing("Query: TransferSyntax detail (with the query data set)");
                }
            }
        }
        "110113" => {
            if action != "E" {
                c.err("Security Alert: EventActionCode shall be E");
            }
            if types.is_empty() {
                c.err("Security Alert: EventTypeCode is mandatory");
            }
            for t in children(ei, "EventTypeCode") {
                let (code, sys, _) = code_of(t);
                if sys == "DCM" && !SECURITY_ALERT_TYPES.contains(&code.as_str()) {
                    c.err(format!(
                        "Security Alert: {code} is not a security alert type"
                    ));
                }
            }
            if pos.is_empty() {
                c.err("Security Alert: an alert subject is mandatory");
            }
            for p in &pos {
                if p.attribute("ParticipantObjectTypeCode") != Some("2") {
                    c.err("Security Alert: alert subject shall be type 2 (system)");
                }
                if !children(*p, "ParticipantObjectDetail")
                    .iter()
                    .any(|d| d.attribute("type") == Some("Alert Description"))
                {
                    c.err("Security Alert: ParticipantObjectDetail \"Alert Description\" is mandatory");
                }
            }
        }
        "110114" => {
            if action != "E" {
                c.err("User Authentication: EventActionCode shall be E");
            }
            if types.len() != 1 || !["110122", "110123"].contains(&types[0].as_str()) {
                c.err("User Authentication: EventTypeCode shall be 110122 or 110123");
            }
            match aps.first() {
                Some(person) if person.attribute("NetworkAccessPointID").is_some() => {}
                _ => c.err("User Authentication: the person's network access point is mandatory"),
            }
            if !pos.is_empty() {
                c.err("User Authentication has no participant objects");
            }
        }
        other => c.err(format!("unexpected EventID {other}")),
    }
    c.out
}

/// Only the errors (not the facts the gateway does not report yet).
pub fn errors(xml: &str) -> Vec<String> {
    check(xml)
        .into_iter()
        .filter(|v| v.severity == Severity::Error)
        .map(|v| v.rule)
        .collect()
}

pub fn missing_facts(xml: &str) -> Vec<String> {
    check(xml)
        .into_iter()
        .filter(|v| v.severity == Severity::MissingFact)
        .map(|v| v.rule)
        .collect()
}

/// Validates messages against the A.5.1 schema with xmllint (Debian libxml2-utils).
pub fn xmllint(xml: &str) -> Result<(), String> {
    let lint = "/usr/bin/xmllint";
    assert!(
        std::path::Path::new(lint).exists(),
        "xmllint missing: run `bash scripts/setup-radguard-audit.sh` (Debian libxml2-utils)"
    );
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/dicom-audit-message.rng"
    );
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(xml.as_bytes()).unwrap();
    let out = Command::new(lint)
        .args(["--noout", "--relaxng", schema])
        .arg(f.path())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
