//! The TOML config (docs/config.md) in two stages: raw serde structs that refuse unknown keys
//! and keep every value's span, then validation into [`Config`], collecting every problem with
//! its line, column and field path.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use radguard_dicom::{AeTitle, Operation, Uid};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{from_toml_error, Collector, ConfigError, ConfigErrors};
use crate::policy::{AeTitles, Peer, Policy, Route, RouteEntry, SopClassSet};
use crate::sop;

/// The config `radguard serve` uses without `--config` (docs/config.md, "Embedded default").
pub const EMBEDDED_DEFAULT_TOML: &str = r#"# Radguard embedded default: loopback clients may echo and store anything into the vault.
[server]
listen = ["127.0.0.1:11112"]
ae_title = "RADGUARD"

[[peer]]
name = "loopback"
ae_titles = ["*"]
addresses = ["127.0.0.0/8", "::1/128"]
allow = ["echo", "store"]
store_sop_classes = ["*"]

[[route]]
called_ae = "RADGUARD"
vault = true
"#;

/// A validated config: the gateway's own settings and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerSettings,
    pub policy: Policy,
}

/// `[server]`: listeners, the gateway's AE title, caps and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub ae_title: AeTitle,
    pub max_associations: usize,
    pub max_associations_per_peer: usize,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
}

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 11112);
const DEFAULT_AE_TITLE: &str = "RADGUARD";
const MAX_ASSOCIATIONS: (i64, RangeInclusive<i64>) = (64, 1..=100_000);
const MAX_ASSOCIATIONS_PER_PEER: i64 = 16;
const MAX_PDU_LENGTH: (i64, RangeInclusive<i64>) = (65_536, 4096..=4_194_304);
const ARTIM_SECS: (i64, RangeInclusive<i64>) = (10, 1..=600);
const IDLE_SECS: (i64, RangeInclusive<i64>) = (300, 1..=86_400);
const CONNECT_SECS: (i64, RangeInclusive<i64>) = (10, 1..=600);
const SHUTDOWN_SECS: (i64, RangeInclusive<i64>) = (30, 0..=3600);

fn default_ae_title() -> AeTitle {
    match AeTitle::new(DEFAULT_AE_TITLE) {
        Ok(ae) => ae,
        Err(e) => unreachable!("the default AE title is valid: {e}"),
    }
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: vec![DEFAULT_LISTEN],
            ae_title: default_ae_title(),
            max_associations: 64,
            max_associations_per_peer: 16,
            max_pdu_length: 65_536,
            artim_timeout: secs(ARTIM_SECS.0),
            idle_timeout: secs(IDLE_SECS.0),
            connect_timeout: secs(CONNECT_SECS.0),
            shutdown_grace: secs(SHUTDOWN_SECS.0),
        }
    }
}

impl Config {
    /// The embedded default ([`EMBEDDED_DEFAULT_TOML`]): listen `127.0.0.1:11112`, AE
    /// `RADGUARD`, route `RADGUARD` → vault, peer `loopback` (any calling AE from `127.0.0.0/8`
    /// or `::1`) allowed echo and store of every Storage SOP class.
    pub fn embedded_default() -> Config {
        match parse_config(EMBEDDED_DEFAULT_TOML, "<embedded default>") {
            Ok(config) => config,
            // Covered by a unit test; the text is a constant of this crate.
            Err(e) => unreachable!("the embedded default config is invalid:\n{e}"),
        }
    }

    /// A human-readable multi-line summary of the settings and policy in force.
    pub fn describe(&self) -> String {
        let s = &self.server;
        let listen: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
        let mut out = String::new();
        out.push_str(&format!("listen: {}\n", listen.join(", ")));
        out.push_str(&format!("gateway AE title: {}\n", s.ae_title));
        out.push_str(&format!(
            "limits: {} associations ({} per source address), PDU <= {} bytes\n",
            s.max_associations, s.max_associations_per_peer, s.max_pdu_length
        ));
        out.push_str(&format!(
            "timeouts: ARTIM {}s, idle {}s, upstream connect {}s, shutdown grace {}s\n",
            s.artim_timeout.as_secs(),
            s.idle_timeout.as_secs(),
            s.connect_timeout.as_secs(),
            s.shutdown_grace.as_secs()
        ));
        out.push_str(&self.policy.describe());
        out
    }
}

/// Reads and validates a config file. A read error is reported as a [`ConfigErrors`] without
/// a line.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => parse_config(&src, &origin),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                origin,
                line: None,
                col: None,
                field: String::new(),
                message: format!("cannot read config file: {e}"),
            }],
        }),
    }
}

/// Parses and validates a config. `origin` names the source in errors (usually the file path).
/// Syntax and type errors stop at the first one; every semantic error is reported.
pub fn parse_config(src: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigErrors {
        errors: vec![from_toml_error(src, origin, &e)],
    })?;
    let mut cx = Collector::new(src, origin);
    let server = validate_server(&mut cx, raw.server.as_ref());
    let peers = validate_peers(&mut cx, &raw.peer);
    let routes = validate_routes(&mut cx, &raw.route);
    if cx.has_errors() {
        return Err(cx.finish());
    }
    Ok(Config {
        server,
        policy: Policy::new(peers, routes),
    })
}

// ---------------------------------------------------------------------------------------------
// Stage 1: raw serde structs.

type Str = Spanned<String>;
type StrList = Spanned<Vec<Str>>;
type Int = Spanned<i64>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<Spanned<RawServer>>,
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<StrList>,
    ae_title: Option<Str>,
    max_associations: Option<Int>,
    max_associations_per_peer: Option<Int>,
    max_pdu_length: Option<Int>,
    artim_timeout_secs: Option<Int>,
    idle_timeout_secs: Option<Int>,
    connect_timeout_secs: Option<Int>,
    shutdown_grace_secs: Option<Int>,
}

// Required keys are `Option` too, so that a missing one is reported with all other errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<Str>,
    ae_titles: Option<StrList>,
    addresses: Option<StrList>,
    allow: Option<StrList>,
    store_sop_classes: Option<StrList>,
    move_destinations: Option<StrList>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    called_ae: Option<Str>,
    vault: Option<Spanned<bool>>,
    upstream: Option<Str>,
    upstream_ae: Option<Str>,
    upstream_calling_ae: Option<Str>,
}

// ---------------------------------------------------------------------------------------------
// Stage 2: validation.

fn span<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    Some(v.span())
}

/// An integer key within `range`; the default when absent; `None` (error recorded) when out of
/// range.
fn int_in(
    cx: &mut Collector<'_>,
    field: &str,
    value: Option<&Int>,
    default: i64,
    range: &RangeInclusive<i64>,
) -> Option<i64> {
    let Some(v) = value else {
        return Some(default);
    };
    let n = *v.get_ref();
    if range.contains(&n) {
        Some(n)
    } else {
        cx.at(
            span(v),
            field,
            format!("{n} is out of range ({}..={})", range.start(), range.end()),
        );
        None
    }
}

/// An AE title that names one AE (`"*"` refused).
fn specific_ae(cx: &mut Collector<'_>, field: &str, v: &Str) -> Option<AeTitle> {
    if v.get_ref().trim() == "*" {
        cx.at(
            span(v),
            field,
            "\"*\" is not allowed here: name one AE title",
        );
        return None;
    }
    match AeTitle::new(v.get_ref()) {
        Ok(ae) => Some(ae),
        Err(e) => {
            cx.at(
                span(v),
                field,
                format!("invalid AE title {:?}: {e}", v.get_ref()),
            );
            None
        }
    }
}

/// A list of AE titles: `["*"]` alone, or valid distinct AE titles. At least one.
fn ae_list(cx: &mut Collector<'_>, field: &str, list: &StrList) -> Option<AeTitles> {
    let items = list.get_ref();
    if items.is_empty() {
        cx.at(
            span(list),
            field,
            "must list at least one AE title (or \"*\")",
        );
        return None;
    }
    let has_star = items.iter().any(|s| s.get_ref().trim() == "*");
    if has_star {
        if items.len() == 1 {
            return Some(AeTitles::Any);
        }
        for (i, item) in items.iter().enumerate() {
            if item.get_ref().trim() == "*" {
                cx.at(
                    span(item),
                    format!("{field}[{i}]"),
                    "\"*\" (any AE title) must be the only entry of the list",
                );
            }
        }
        return None;
    }
    let mut out: Vec<AeTitle> = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match AeTitle::new(item.get_ref()) {
            Ok(ae) if out.contains(&ae) => {
                cx.at(
                    span(item),
                    f,
                    format!("duplicate AE title {:?}", ae.as_str()),
                );
                ok = false;
            }
            Ok(ae) => out.push(ae),
            Err(e) => {
                cx.at(
                    span(item),
                    f,
                    format!("invalid AE title {:?}: {e}", item.get_ref()),
                );
                ok = false;
            }
        }
    }
    ok.then_some(AeTitles::Listed(out))
}

fn validate_server(cx: &mut Collector<'_>, raw: Option<&Spanned<RawServer>>) -> ServerSettings {
    let mut settings = ServerSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    let s = raw.get_ref();

    if let Some(list) = &s.listen {
        if list.get_ref().is_empty() {
            cx.at(
                span(list),
                "server.listen",
                "must list at least one socket address",
            );
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for (i, item) in list.get_ref().iter().enumerate() {
            let f = format!("server.listen[{i}]");
            match item.get_ref().parse::<SocketAddr>() {
                Ok(a) if addrs.contains(&a) => {
                    cx.at(span(item), f, format!("duplicate listen address {a}"));
                }
                Ok(a) => addrs.push(a),
                Err(_) => cx.at(
                    span(item),
                    f,
                    format!(
                        "invalid socket address {:?} (expected IP:PORT, e.g. 127.0.0.1:11112 or [::1]:11112)",
                        item.get_ref()
                    ),
                ),
            }
        }
        settings.listen = addrs;
    }
    if let Some(v) = &s.ae_title {
        if let Some(ae) = specific_ae(cx, "server.ae_title", v) {
            settings.ae_title = ae;
        }
    }

    let (d, r) = &MAX_ASSOCIATIONS;
    let max_assoc = int_in(
        cx,
        "server.max_associations",
        s.max_associations.as_ref(),
        *d,
        r,
    );
    if let Some(n) = max_assoc {
        settings.max_associations = usize::try_from(n).unwrap_or(settings.max_associations);
    }
    // The per-peer cap is checked against the global cap only when that one is valid.
    let per_peer_range = 1..=max_assoc.unwrap_or(MAX_ASSOCIATIONS.1.end().to_owned());
    let per_peer_default = MAX_ASSOCIATIONS_PER_PEER.min(*per_peer_range.end());
    if let Some(n) = int_in(
        cx,
        "server.max_associations_per_peer",
        s.max_associations_per_peer.as_ref(),
        per_peer_default,
        &per_peer_range,
    ) {
        settings.max_associations_per_peer =
            usize::try_from(n).unwrap_or(settings.max_associations_per_peer);
    }
    let (d, r) = &MAX_PDU_LENGTH;
    if let Some(n) = int_in(
        cx,
        "server.max_pdu_length",
        s.max_pdu_length.as_ref(),
        *d,
        r,
    ) {
        settings.max_pdu_length = u32::try_from(n).unwrap_or(settings.max_pdu_length);
    }
    let timeouts = [
        (
            "server.artim_timeout_secs",
            &s.artim_timeout_secs,
            &ARTIM_SECS,
            &mut settings.artim_timeout,
        ),
        (
            "server.idle_timeout_secs",
            &s.idle_timeout_secs,
            &IDLE_SECS,
            &mut settings.idle_timeout,
        ),
        (
            "server.connect_timeout_secs",
            &s.connect_timeout_secs,
            &CONNECT_SECS,
            &mut settings.connect_timeout,
        ),
        (
            "server.shutdown_grace_secs",
            &s.shutdown_grace_secs,
            &SHUTDOWN_SECS,
            &mut settings.shutdown_grace,
        ),
    ];
    for (field, value, (d, r), slot) in timeouts {
        if let Some(n) = int_in(cx, field, value.as_ref(), *d, r) {
            *slot = secs(n);
        }
    }
    settings
}

fn valid_peer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A CIDR (`10.0.0.0/8`) or a bare address (`::1`, taken as a single host).
fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
        if net.trunc() != net {
            return Err(format!(
                "CIDR {s:?} has host bits set (did you mean \"{}\"?)",
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        let addr: IpAddr = s
            .parse()
            .map_err(|_| format!("invalid address {s:?} (expected a CIDR or an IP address)"))?;
        Ok(IpNet::from(addr))
    }
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A peer as validated, with the spans needed for cross-peer checks.
struct CheckedPeer {
    peer: Peer,
    index: usize,
    name_span: Option<Range<usize>>,
}

fn validate_peers(cx: &mut Collector<'_>, raw: &[Spanned<RawPeer>]) -> Vec<Peer> {
    if raw.is_empty() {
        cx.at(
            None,
            "peer",
            "no [[peer]]: at least one peer is required (otherwise every association is refused)",
        );
    }
    let mut checked: Vec<CheckedPeer> = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, sp) in raw.iter().enumerate() {
        let header = span(sp);
        let base = format!("peer[{i}]");
        let p = sp.get_ref();
        let missing = |cx: &mut Collector<'_>, key: &str| {
            cx.at(
                header.clone(),
                format!("{base}.{key}"),
                format!("missing required key `{key}`"),
            );
        };

        let name = match &p.name {
            None => {
                missing(cx, "name");
                None
            }
            Some(n) if !valid_peer_name(n.get_ref()) => {
                cx.at(
                    span(n),
                    format!("{base}.name"),
                    format!(
                        "invalid peer name {:?} (expected [A-Za-z0-9_.-]{{1,64}})",
                        n.get_ref()
                    ),
                );
                None
            }
            Some(n) => {
                if let Some(first) = names.get(n.get_ref()) {
                    cx.at(
                        span(n),
                        format!("{base}.name"),
                        format!("duplicate peer name {:?} (also peer[{first}])", n.get_ref()),
                    );
                } else {
                    names.insert(n.get_ref().clone(), i);
                }
                Some(n.get_ref().clone())
            }
        };

        let ae_titles = match &p.ae_titles {
            None => {
                missing(cx, "ae_titles");
                None
            }
            Some(list) => ae_list(cx, &format!("{base}.ae_titles"), list),
        };

        let addresses = match &p.addresses {
            None => {
                missing(cx, "addresses");
                None
            }
            Some(list) => validate_addresses(cx, &format!("{base}.addresses"), list),
        };

        let allow = match &p.allow {
            None => {
                missing(cx, "allow");
                None
            }
            Some(list) => validate_allow(cx, &format!("{base}.allow"), list),
        };

        // Conditional keys: judged only when `allow` itself is valid.
        let mut store_sop_classes = None;
        let mut move_destinations = None;
        let mut conditional_ok = allow.is_some();
        if let Some(ops) = &allow {
            let wants_classes = ops.contains(&Operation::Store) || ops.contains(&Operation::Get);
            let field = format!("{base}.store_sop_classes");
            match (&p.store_sop_classes, wants_classes) {
                (Some(list), true) => {
                    store_sop_classes = validate_sop_classes(cx, &field, list);
                    conditional_ok &= store_sop_classes.is_some();
                }
                (None, true) => {
                    cx.at(
                        header.clone(),
                        field,
                        "missing: required when allow has \"store\" or \"get\"",
                    );
                    conditional_ok = false;
                }
                (Some(list), false) => {
                    cx.at(
                        span(list),
                        field,
                        "only allowed when allow has \"store\" or \"get\"",
                    );
                    conditional_ok = false;
                }
                (None, false) => {}
            }
            let field = format!("{base}.move_destinations");
            match (&p.move_destinations, ops.contains(&Operation::Move)) {
                (Some(list), true) => {
                    move_destinations = ae_list(cx, &field, list);
                    conditional_ok &= move_destinations.is_some();
                }
                (None, true) => {
                    cx.at(
                        header.clone(),
                        field,
                        "missing: required when allow has \"move\"",
                    );
                    conditional_ok = false;
                }
                (Some(list), false) => {
                    cx.at(span(list), field, "only allowed when allow has \"move\"");
                    conditional_ok = false;
                }
                (None, false) => {}
            }
        }

        if let (Some(name), Some(ae_titles), Some(addresses), Some(allow), true) =
            (name, ae_titles, addresses, allow, conditional_ok)
        {
            checked.push(CheckedPeer {
                peer: Peer {
                    name,
                    ae_titles,
                    addresses,
                    allow,
                    store_sop_classes,
                    move_destinations,
                },
                index: i,
                name_span: p.name.as_ref().map(|n| n.span()),
            });
        }
    }

    // Two peers that could both match one association would make admission order-dependent.
    for (j, b) in checked.iter().enumerate() {
        for a in &checked[..j] {
            if !a.peer.ae_titles.overlaps(&b.peer.ae_titles) {
                continue;
            }
            let clash = a.peer.addresses.iter().find_map(|x| {
                b.peer
                    .addresses
                    .iter()
                    .find(|y| nets_overlap(x, y))
                    .map(|y| (x, y))
            });
            if let Some((x, y)) = clash {
                cx.at(
                    b.name_span.clone(),
                    format!("peer[{}]", b.index),
                    format!(
                        "peer {:?} overlaps peer {:?}: both accept a common calling AE title from overlapping addresses ({y} and {x}); an association must match exactly one peer",
                        b.peer.name, a.peer.name
                    ),
                );
            }
        }
    }
    checked.into_iter().map(|c| c.peer).collect()
}

fn validate_addresses(cx: &mut Collector<'_>, field: &str, list: &StrList) -> Option<Vec<IpNet>> {
    if list.get_ref().is_empty() {
        cx.at(span(list), field, "must list at least one CIDR or address");
        return None;
    }
    let mut out: Vec<IpNet> = Vec::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        match parse_net(item.get_ref()) {
            Ok(net) if out.contains(&net) => {
                cx.at(span(item), f, format!("duplicate address {net}"));
                ok = false;
            }
            Ok(net) => out.push(net),
            Err(msg) => {
                cx.at(span(item), f, msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn validate_allow(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
) -> Option<BTreeSet<Operation>> {
    if list.get_ref().is_empty() {
        cx.at(
            span(list),
            field,
            "must list at least one of \"echo\", \"store\", \"find\", \"move\", \"get\"",
        );
        return None;
    }
    let mut out = BTreeSet::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        let op = match item.get_ref().as_str() {
            "echo" => Operation::Echo,
            "store" => Operation::Store,
            "find" => Operation::Find,
            "move" => Operation::Move,
            "get" => Operation::Get,
            other => {
                cx.at(
                    span(item),
                    f,
                    format!(
                        "unknown operation {other:?} (expected \"echo\", \"store\", \"find\", \"move\" or \"get\")"
                    ),
                );
                ok = false;
                continue;
            }
        };
        if !out.insert(op) {
            cx.at(span(item), f, format!("duplicate operation \"{op}\""));
            ok = false;
        }
    }
    ok.then_some(out)
}

fn validate_sop_classes(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
) -> Option<SopClassSet> {
    if list.get_ref().is_empty() {
        cx.at(
            span(list),
            field,
            "must list at least one SOP class keyword, UID or \"*\"",
        );
        return None;
    }
    let mut any = false;
    let mut uids = BTreeSet::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = item.get_ref().trim();
        let uid = if text == "*" {
            if any {
                cx.at(span(item), f, "duplicate \"*\"");
                ok = false;
            }
            any = true;
            continue;
        } else if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            match Uid::new(text) {
                Ok(uid) => {
                    let uid = uid.as_str().to_string();
                    if sop::is_known_sop_class(&uid) && !sop::is_storage_sop_class(&uid) {
                        cx.at(
                            span(item),
                            f,
                            format!(
                                "{uid} ({}) is not a Storage SOP class",
                                sop::keyword_for_uid(&uid).unwrap_or("?")
                            ),
                        );
                        ok = false;
                        continue;
                    }
                    uid
                }
                Err(e) => {
                    cx.at(span(item), f, format!("invalid UID {text:?}: {e}"));
                    ok = false;
                    continue;
                }
            }
        } else {
            match sop::uid_for_keyword(text) {
                Some(uid) if sop::is_storage_sop_class(uid) => uid.to_string(),
                Some(uid) => {
                    cx.at(
                        span(item),
                        f,
                        format!("{text} ({uid}) is not a Storage SOP class"),
                    );
                    ok = false;
                    continue;
                }
                None => {
                    cx.at(
                        span(item),
                        f,
                        format!(
                            "unknown SOP class keyword {text:?} (expected a dicom-dictionary-std SOP class keyword such as \"CTImageStorage\", a UID, or \"*\")"
                        ),
                    );
                    ok = false;
                    continue;
                }
            }
        };
        if !uids.insert(uid.clone()) {
            cx.at(span(item), f, format!("SOP class {uid} is listed twice"));
            ok = false;
        }
    }
    ok.then(|| SopClassSet::new(any, uids))
}

/// `host:port`: a non-empty DNS name or IPv4 address, or a bracketed IPv6 address; port 1..=65535.
fn validate_host_port(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid upstream {s:?}: {why} (expected host:port, e.g. 10.0.0.5:104, pacs.example.org:4242 or [fd00::5]:104)"
        ))
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return bad("no port");
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return bad("port must be 1..=65535"),
        Ok(_) => {}
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner
            .strip_suffix(']')
            .map(str::parse::<std::net::Ipv6Addr>)
        {
            Some(Ok(_)) => Ok(()),
            _ => bad("invalid bracketed IPv6 address"),
        };
    }
    if host.is_empty() {
        return bad("empty host");
    }
    if host.contains(':') {
        return bad("an IPv6 address must be in brackets");
    }
    if host.len() > 253 {
        return bad("host name too long");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        bad("invalid host name")
    }
}

fn validate_routes(cx: &mut Collector<'_>, raw: &[Spanned<RawRoute>]) -> Vec<RouteEntry> {
    if raw.is_empty() {
        cx.at(
            None,
            "route",
            "no [[route]]: at least one route is required (otherwise every association is refused)",
        );
    }
    let mut out: Vec<RouteEntry> = Vec::new();
    let mut seen: HashMap<AeTitle, usize> = HashMap::new();
    for (i, sp) in raw.iter().enumerate() {
        let header = span(sp);
        let base = format!("route[{i}]");
        let r = sp.get_ref();
        let called_ae = match &r.called_ae {
            None => {
                cx.at(
                    header.clone(),
                    format!("{base}.called_ae"),
                    "missing required key `called_ae`",
                );
                None
            }
            Some(v) => {
                let field = format!("{base}.called_ae");
                match specific_ae(cx, &field, v) {
                    Some(ae) => {
                        if let Some(first) = seen.get(&ae) {
                            cx.at(
                                span(v),
                                field,
                                format!(
                                    "duplicate called AE {:?} (also route[{first}])",
                                    ae.as_str()
                                ),
                            );
                            None
                        } else {
                            seen.insert(ae.clone(), i);
                            Some(ae)
                        }
                    }
                    None => None,
                }
            }
        };

        let vault = r.vault.as_ref().is_some_and(|v| *v.get_ref());
        let has_upstream_keys =
            r.upstream.is_some() || r.upstream_ae.is_some() || r.upstream_calling_ae.is_some();
        let route = if vault && has_upstream_keys {
            let at = r
                .upstream
                .as_ref()
                .or(r.upstream_ae.as_ref())
                .or(r.upstream_calling_ae.as_ref())
                .map(|v| v.span());
            cx.at(
                at,
                base.clone(),
                "a route has either `vault = true` or `upstream` + `upstream_ae`, not both",
            );
            None
        } else if vault {
            Some(Route::Vault)
        } else if !has_upstream_keys {
            cx.at(
                header.clone(),
                base.clone(),
                "a route needs a destination: `vault = true` or `upstream` + `upstream_ae`",
            );
            None
        } else {
            let addr = match &r.upstream {
                None => {
                    cx.at(
                        header.clone(),
                        format!("{base}.upstream"),
                        "missing: required with `upstream_ae`",
                    );
                    None
                }
                Some(v) => match validate_host_port(v.get_ref()) {
                    Ok(()) => Some(v.get_ref().clone()),
                    Err(msg) => {
                        cx.at(span(v), format!("{base}.upstream"), msg);
                        None
                    }
                },
            };
            let upstream_ae = match &r.upstream_ae {
                None => {
                    cx.at(
                        header.clone(),
                        format!("{base}.upstream_ae"),
                        "missing: required with `upstream`",
                    );
                    None
                }
                Some(v) => specific_ae(cx, &format!("{base}.upstream_ae"), v),
            };
            let calling = match &r.upstream_calling_ae {
                None => Some(None),
                Some(v) => specific_ae(cx, &format!("{base}.upstream_calling_ae"), v).map(Some),
            };
            match (addr, upstream_ae, calling) {
                (Some(addr), Some(upstream_ae), Some(upstream_calling_ae)) => {
                    Some(Route::Upstream {
                        addr,
                        upstream_ae,
                        upstream_calling_ae,
                    })
                }
                _ => None,
            }
        };
        if let (Some(called_ae), Some(route)) = (called_ae, route) {
            out.push(RouteEntry { called_ae, route });
        }
    }
    out
}
