//! The TOML config (docs/config.md) in two stages: raw serde structs that refuse unknown keys
//! and keep every value's span, then validation into [`Config`], collecting every problem with
//! its line, column and field path.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use radguard_deid::DeidTable;
use radguard_dicom::{AeTitle, Operation, Uid};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{Collector, ConfigError, ConfigErrors};
use crate::identity::{
    normalize_fingerprint, normalize_san, valid_username, JwtAlg, JwtKey, JwtSettings,
    PeerIdentity, TlsRequirement, UserDirectory, UserIdentityRequirement,
};
use crate::policy::{
    AeTitles, HoldSettings, OriginRoute, Peer, Policy, Route, RouteEntry, SopClassSet, UpstreamTls,
};
use crate::sop;
use radguard_dicom::validate::Level as FirewallLevel;

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
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub policy: Policy,
}

/// `[server]`: listeners, the gateway's AE title, caps and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Plain DICOM listeners. Empty when only `tls_listen` is configured.
    pub listen: Vec<SocketAddr>,
    /// DICOM TLS listeners (`tls_listen`; 2762 is the registered DICOM TLS port). Non-empty
    /// exactly when `tls` is set.
    pub tls_listen: Vec<SocketAddr>,
    /// `[server.tls]`: the gateway's certificate and how clients are authenticated.
    pub tls: Option<ServerTls>,
    pub ae_title: AeTitle,
    /// Associations admitted by the policy and running at once.
    pub max_associations: usize,
    /// Connections from one source address at once, negotiating or associated.
    pub max_associations_per_peer: usize,
    /// Connections open at once, whether still negotiating (TLS handshake, A-ASSOCIATE-RQ),
    /// associated or being closed. Larger than `max_associations` so that connections which
    /// never become associations (a malformed flood) cannot take the associations' room.
    pub max_connections: usize,
    pub max_pdu_length: u32,
    pub artim_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub shutdown_grace: Duration,
    /// What happens to a running association whose peer the policy in force no longer admits
    /// (after a reload): its next request is refused with 0x0124 either way.
    pub on_revoke: OnRevoke,
}

/// `[server] on_revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRevoke {
    /// The refusal is followed by an A-ABORT (the default: a stolen identity loses its
    /// association at its next request).
    #[default]
    Abort,
    /// Every further request is refused with 0x0124; the client ends the association itself.
    RefuseRequests,
}

/// `[server.tls]`. Paths are resolved against the config file's directory and were readable
/// when the config was loaded; the gateway builds the rustls configuration from them
/// (`radguard_tls::server_config`) and refuses the config if that fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The gateway's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to; without it no client
    /// certificate is requested.
    pub client_ca: Option<PathBuf>,
    /// Whether client certificates are requested: `None` without `client_ca`, otherwise
    /// `Optional` (the default: the policy decides per peer) or `Required` (the handshake
    /// itself refuses clients without a valid certificate).
    pub client_auth: ClientCertMode,
}

/// `[server.tls] client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCertMode {
    /// No client certificate is requested (no `client_ca`).
    #[default]
    None,
    /// Requested; a presented one must verify; clients may present none.
    Optional,
    /// Every TLS client must present one that verifies.
    Required,
}

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 11112);
const DEFAULT_AE_TITLE: &str = "RADGUARD";
const MAX_ASSOCIATIONS: (i64, RangeInclusive<i64>) = (64, 1..=100_000);
const MAX_ASSOCIATIONS_PER_PEER: i64 = 16;
/// `[[peer]] max_find_results`: matches per C-FIND (1 to 2^32 - 1).
const MAX_FIND_RESULTS: RangeInclusive<i64> = 1..=u32::MAX as i64;
/// Hold routes: instances queued per route, disk use (percent) past which nothing more is
/// held, backoff base and cap, the age past which a waiting instance raises an alert.
const HOLD_QUOTA: (i64, RangeInclusive<i64>) = (10_000, 1..=100_000_000);
const HOLD_HIGH_WATER: (i64, RangeInclusive<i64>) = (90, 1..=99);
const HOLD_BACKOFF_BASE_MS: (i64, RangeInclusive<i64>) = (1_000, 10..=3_600_000);
const HOLD_BACKOFF_CAP_MS: (i64, RangeInclusive<i64>) = (300_000, 10..=86_400_000);
const HOLD_MAX_AGE_SECS: (i64, RangeInclusive<i64>) = (3_600, 1..=31_536_000);
const HOLD_MAX_ATTEMPTS: (i64, RangeInclusive<i64>) = (5, 1..=1_000);

/// `max_connections` defaults to this many times `max_associations`.
const CONNECTIONS_PER_ASSOCIATION: i64 = 4;
const MAX_CONNECTIONS_CAP: i64 = 400_000;
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
            tls_listen: Vec::new(),
            tls: None,
            ae_title: default_ae_title(),
            max_associations: 64,
            max_associations_per_peer: 16,
            max_connections: 256,
            max_pdu_length: 65_536,
            artim_timeout: secs(ARTIM_SECS.0),
            idle_timeout: secs(IDLE_SECS.0),
            connect_timeout: secs(CONNECT_SECS.0),
            shutdown_grace: secs(SHUTDOWN_SECS.0),
            on_revoke: OnRevoke::Abort,
        }
    }
}

impl Config {
    /// The keys of `new` whose change a reload cannot apply to a running gateway: listeners,
    /// the AE title, caps, timeouts and `on_revoke` are fixed at start. A reload that changes
    /// any of them is refused whole, naming them (the policy, routes and certificates —
    /// `[server.tls]` included — are what a reload applies). `[audit]`, `[ledger]` and `[detect]`,
    /// fixed at start too, are not this crate's: radguard-config's `Loaded::restart_needed` adds them.
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.server, &new.server);
        let changed = [
            (a.listen != b.listen, "server.listen"),
            (a.tls_listen != b.tls_listen, "server.tls_listen"),
            (a.ae_title != b.ae_title, "server.ae_title"),
            (
                a.max_associations != b.max_associations,
                "server.max_associations",
            ),
            (
                a.max_associations_per_peer != b.max_associations_per_peer,
                "server.max_associations_per_peer",
            ),
            (
                a.max_connections != b.max_connections,
                "server.max_connections",
            ),
            (
                a.max_pdu_length != b.max_pdu_length,
                "server.max_pdu_length",
            ),
            (
                a.artim_timeout != b.artim_timeout,
                "server.artim_timeout_secs",
            ),
            (a.idle_timeout != b.idle_timeout, "server.idle_timeout_secs"),
            (
                a.connect_timeout != b.connect_timeout,
                "server.connect_timeout_secs",
            ),
            (
                a.shutdown_grace != b.shutdown_grace,
                "server.shutdown_grace_secs",
            ),
            (a.on_revoke != b.on_revoke, "server.on_revoke"),
        ];
        changed
            .into_iter()
            .filter_map(|(c, key)| c.then_some(key))
            .collect()
    }

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
        if listen.is_empty() {
            out.push_str("listen: (no plain listener)\n");
        } else {
            out.push_str(&format!("listen: {}\n", listen.join(", ")));
        }
        if let Some(tls) = &s.tls {
            let tls_listen: Vec<String> = s.tls_listen.iter().map(ToString::to_string).collect();
            out.push_str(&format!(
                "TLS listen: {} (certificate {}, client certificates {})\n",
                tls_listen.join(", "),
                tls.cert.display(),
                match (&tls.client_ca, tls.client_auth) {
                    (Some(ca), ClientCertMode::Required) =>
                        format!("required, CA {}", ca.display()),
                    (Some(ca), _) => format!("optional, CA {}", ca.display()),
                    (None, _) => "not requested".to_string(),
                }
            ));
        }
        out.push_str(&format!("gateway AE title: {}\n", s.ae_title));
        out.push_str(&format!(
            "limits: {} associations, {} connections ({} per source address), PDU <= {} bytes\n",
            s.max_associations, s.max_connections, s.max_associations_per_peer, s.max_pdu_length
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
/// a line. Relative paths in the file (certificates, keys) are resolved against the file's
/// directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let base = path.parent().unwrap_or(Path::new(""));
    match std::fs::read_to_string(path) {
        Ok(src) => parse_config_in(&src, &origin, base),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError::unplaced(
                &origin,
                format!("cannot read config file: {e}"),
            )],
        }),
    }
}

/// Parses and validates a config. `origin` names the source in errors (usually the file path).
/// Syntax and type errors stop at the first one; every semantic error is reported. Relative
/// paths are resolved against the current directory (see [`parse_config_in`]).
pub fn parse_config(src: &str, origin: &str) -> Result<Config, ConfigErrors> {
    parse_config_in(src, origin, Path::new(""))
}

/// [`parse_config`] with relative paths in the file resolved against `base_dir`.
///
/// Files the config names are read here: TLS certificate, key and CA files must be readable
/// (their contents are checked by the gateway, which builds the TLS configurations), JWT public
/// keys are read and parsed.
pub fn parse_config_in(src: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = toml::from_str(src).map_err(|e| ConfigErrors {
        errors: vec![ConfigError::from_toml(src, origin, &e, |message| message)],
    })?;
    let mut cx = Collector::new(src, origin);
    let server = validate_server(&mut cx, raw.server.as_ref(), base_dir);
    let directory = validate_directory(&mut cx, &raw.user, raw.jwt.as_ref(), base_dir);
    let context = PeerContext {
        client_ca: raw.server.as_ref().is_some_and(|s| {
            s.get_ref()
                .tls
                .as_ref()
                .is_some_and(|t| t.get_ref().client_ca.is_some())
        }),
        users: !raw.user.is_empty(),
        jwt: raw.jwt.is_some(),
    };
    let peers = validate_peers(&mut cx, &raw.peer, &context);
    let routes = validate_routes(&mut cx, &raw.route, base_dir);
    if cx.has_errors() {
        return Err(cx.finish());
    }
    Ok(Config {
        server,
        policy: Policy::new(peers, routes, directory),
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
    #[serde(default)]
    user: Vec<Spanned<RawUser>>,
    jwt: Option<Spanned<RawJwt>>,
    /// `[audit]`: radguard-audit's section (`AuditConfig::from_document` reads and checks it);
    /// named here only so that it is not an unknown key.
    #[allow(dead_code)]
    audit: Option<serde::de::IgnoredAny>,
    /// `[ledger]`: radguard-ledger's section (`LedgerConfig::from_document`).
    #[allow(dead_code)]
    ledger: Option<serde::de::IgnoredAny>,
    /// `[detect]` and its `[[detect.rule]]`: radguard-detect's section
    /// (`DetectConfig::from_document`).
    #[allow(dead_code)]
    detect: Option<serde::de::IgnoredAny>,
    /// `[admin]` and its `[[admin.token]]`: radguard-web's section
    /// (`AdminConfig::from_document`).
    #[allow(dead_code)]
    admin: Option<serde::de::IgnoredAny>,
    /// `[guard]` and its `[[guard.limit]]`: radguard-guard's section
    /// (`GuardConfig::from_document`).
    #[allow(dead_code)]
    guard: Option<serde::de::IgnoredAny>,
    /// `[vault]`: radguard-vault's section (`VaultConfig::from_document`).
    #[allow(dead_code)]
    vault: Option<serde::de::IgnoredAny>,
    /// `[scrub]`: radguard-vault's section (`ScrubConfig::from_document`).
    #[allow(dead_code)]
    scrub: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<StrList>,
    tls_listen: Option<StrList>,
    tls: Option<Spanned<RawServerTls>>,
    ae_title: Option<Str>,
    max_associations: Option<Int>,
    max_associations_per_peer: Option<Int>,
    max_connections: Option<Int>,
    max_pdu_length: Option<Int>,
    artim_timeout_secs: Option<Int>,
    idle_timeout_secs: Option<Int>,
    connect_timeout_secs: Option<Int>,
    shutdown_grace_secs: Option<Int>,
    on_revoke: Option<Str>,
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
    /// Normalized SOP classes (MPPS, Storage Commitment...) the peer's DIMSE-N services may
    /// name, in either direction.
    n_sop_classes: Option<StrList>,
    /// DIMSE-N requests the called side may send this peer on its association.
    receive: Option<StrList>,
    tls: Option<Str>,
    cert_sha256: Option<StrList>,
    cert_subject_cn: Option<StrList>,
    cert_san: Option<StrList>,
    user_identity: Option<Str>,
    users: Option<StrList>,
    max_find_results: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    called_ae: Option<Str>,
    vault: Option<Spanned<bool>>,
    upstream: Option<Str>,
    upstream_ae: Option<Str>,
    upstream_calling_ae: Option<Str>,
    tls: Option<Spanned<RawRouteTls>>,
    /// De-identification of what leaves through this route; its keys are radguard-deid's.
    deidentify: Option<Spanned<DeidTable>>,
    /// This route is the point of origin: every C-STORE relayed on it is fingerprinted into the
    /// integrity ledger before its success is passed back.
    origin: Option<Spanned<bool>>,
    /// On an origin route, what a C-STORE of an already-logged SOP Instance UID with a different
    /// fingerprint gets: "refuse" (default) or "record" (alert, forward, log both).
    on_fingerprint_conflict: Option<Str>,
    /// The data-set firewall's level on this route: "strict", "safe" (default) or "log".
    firewall: Option<Str>,
    /// When the upstream cannot be reached: "refuse" (default, A-ASSOCIATE-RJ 2/3/1) or "hold"
    /// (accept into the vault, queue, forward later).
    on_upstream_down: Option<Str>,
    hold_quota: Option<Int>,
    hold_high_water_percent: Option<Int>,
    hold_backoff_base_ms: Option<Int>,
    hold_backoff_cap_ms: Option<Int>,
    hold_max_age_secs: Option<Int>,
    hold_max_attempts: Option<Int>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerTls {
    cert: Option<Str>,
    key: Option<Str>,
    client_ca: Option<Str>,
    client_auth: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteTls {
    ca: Option<Str>,
    server_name: Option<Str>,
    client_cert: Option<Str>,
    client_key: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Option<Str>,
    passcode_argon2: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    issuer: Option<Str>,
    audience: Option<Str>,
    leeway_secs: Option<Int>,
    keys: Option<Spanned<Vec<Spanned<RawJwtKey>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtKey {
    kid: Option<Str>,
    alg: Option<Str>,
    public_key: Option<Str>,
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

/// A list of socket addresses, each distinct and not in `taken` (the other listener list).
fn socket_list(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
    taken: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        match item.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 && addrs.contains(&a) => {
                cx.at(span(item), f, format!("duplicate listen address {a}"));
            }
            Ok(a) if a.port() != 0 && taken.contains(&a) => {
                cx.at(
                    span(item),
                    f,
                    format!("{a} is also a plain listener (server.listen): a port is plain or TLS, not both"),
                );
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
    addrs
}

/// A path key: resolved against `base`, and readable (a regular file).
fn readable_path(cx: &mut Collector<'_>, base: &Path, field: &str, v: &Str) -> Option<PathBuf> {
    let raw = v.get_ref();
    if raw.trim().is_empty() {
        cx.at(span(v), field, "empty path");
        return None;
    }
    let path = base.join(raw);
    let problem = match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => Some("is a directory".to_string()),
        Ok(_) => std::fs::File::open(&path).err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    match problem {
        None => Some(path),
        Some(why) => {
            cx.at(
                span(v),
                field,
                format!("cannot read {}: {why}", path.display()),
            );
            None
        }
    }
}

fn validate_server_tls(
    cx: &mut Collector<'_>,
    raw: &Spanned<RawServerTls>,
    base: &Path,
) -> Option<ServerTls> {
    let t = raw.get_ref();
    let header = span(raw);
    let need = |cx: &mut Collector<'_>, key: &str, v: &Option<Str>| match v {
        None => {
            cx.at(
                header.clone(),
                format!("server.tls.{key}"),
                format!("missing required key `{key}`"),
            );
            None
        }
        Some(v) => readable_path(cx, base, &format!("server.tls.{key}"), v),
    };
    let cert = need(cx, "cert", &t.cert);
    let key = need(cx, "key", &t.key);
    let mut ok = true;
    let client_ca = match &t.client_ca {
        None => None,
        Some(v) => {
            let p = readable_path(cx, base, "server.tls.client_ca", v);
            ok &= p.is_some();
            p
        }
    };
    let client_auth = match (&t.client_auth, &t.client_ca) {
        (None, None) => ClientCertMode::None,
        (None, Some(_)) => ClientCertMode::Optional,
        (Some(v), None) => {
            cx.at(
                span(v),
                "server.tls.client_auth",
                "needs `client_ca` (the CA set client certificates are verified against)",
            );
            ok = false;
            ClientCertMode::None
        }
        (Some(v), Some(_)) => match v.get_ref().as_str() {
            "optional" => ClientCertMode::Optional,
            "required" => ClientCertMode::Required,
            other => {
                cx.at(
                    span(v),
                    "server.tls.client_auth",
                    format!("unknown value {other:?} (expected \"optional\" or \"required\")"),
                );
                ok = false;
                ClientCertMode::None
            }
        },
    };
    match (cert, key, ok) {
        (Some(cert), Some(key), true) => Some(ServerTls {
            cert,
            key,
            client_ca,
            client_auth,
        }),
        _ => None,
    }
}

fn validate_server(
    cx: &mut Collector<'_>,
    raw: Option<&Spanned<RawServer>>,
    base: &Path,
) -> ServerSettings {
    let mut settings = ServerSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    let s = raw.get_ref();

    if let Some(list) = &s.listen {
        settings.listen = socket_list(cx, "server.listen", list, &[]);
    } else if s.tls_listen.is_some() {
        // Only TLS listeners configured: no plain listener by default.
        settings.listen.clear();
    }
    match (&s.tls_listen, &s.tls) {
        (Some(list), tls) => {
            if list.get_ref().is_empty() {
                cx.at(
                    span(list),
                    "server.tls_listen",
                    "must list at least one socket address (or leave tls_listen out)",
                );
            }
            let listen = settings.listen.clone();
            settings.tls_listen = socket_list(cx, "server.tls_listen", list, &listen);
            match tls {
                None => cx.at(
                    span(list),
                    "server.tls_listen",
                    "needs a [server.tls] table with the gateway's `cert` and `key`",
                ),
                Some(t) => settings.tls = validate_server_tls(cx, t, base),
            }
        }
        (None, Some(t)) => {
            cx.at(
                span(t),
                "server.tls",
                "[server.tls] without `tls_listen` in [server]: no listener would use it",
            );
            let _ = validate_server_tls(cx, t, base);
        }
        (None, None) => {}
    }
    if let Some(list) = &s.listen {
        if list.get_ref().is_empty() && settings.tls_listen.is_empty() {
            cx.at(
                span(list),
                "server.listen",
                "must list at least one socket address (or configure tls_listen)",
            );
        }
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
    // The connection cap is at least the association cap.
    let assoc = max_assoc.unwrap_or(MAX_ASSOCIATIONS.0);
    let conn_range = assoc..=MAX_CONNECTIONS_CAP;
    if let Some(n) = int_in(
        cx,
        "server.max_connections",
        s.max_connections.as_ref(),
        assoc.saturating_mul(CONNECTIONS_PER_ASSOCIATION),
        &conn_range,
    ) {
        settings.max_connections = usize::try_from(n).unwrap_or(settings.max_connections);
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
    if let Some(v) = &s.on_revoke {
        match v.get_ref().as_str() {
            "abort" => settings.on_revoke = OnRevoke::Abort,
            "refuse-requests" => settings.on_revoke = OnRevoke::RefuseRequests,
            other => cx.at(
                span(v),
                "server.on_revoke",
                format!("{other:?}: expected \"abort\" or \"refuse-requests\""),
            ),
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

/// What the rest of the file offers that peer conditions depend on (judged on the raw file, so
/// an error elsewhere does not cascade into the peers).
struct PeerContext {
    /// `[server.tls] client_ca` is set: client certificates can be verified.
    client_ca: bool,
    /// At least one `[[user]]`: type 2 identities can be verified.
    users: bool,
    /// `[jwt]` is set: type 5 identities can be verified.
    jwt: bool,
}

fn validate_peers(
    cx: &mut Collector<'_>,
    raw: &[Spanned<RawPeer>],
    context: &PeerContext,
) -> Vec<Peer> {
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

        let receive = match &p.receive {
            None => Some(BTreeSet::new()),
            Some(list) => validate_receive(cx, &format!("{base}.receive"), list),
        };
        let mut n_sop_classes = None;
        if let (Some(ops), Some(received)) = (&allow, &receive) {
            // DIMSE-N is default deny twice over: the operation and the SOP class must be named.
            let wants = ops.iter().chain(received).any(|op| op.is_normalized());
            let field = format!("{base}.n_sop_classes");
            match (&p.n_sop_classes, wants) {
                (Some(list), true) => {
                    n_sop_classes = validate_n_sop_classes(cx, &field, list);
                    conditional_ok &= n_sop_classes.is_some();
                }
                (None, true) => {
                    cx.at(
                        header.clone(),
                        field,
                        "missing: required when allow or receive has an n-service",
                    );
                    conditional_ok = false;
                }
                (Some(list), false) => {
                    cx.at(
                        span(list),
                        field,
                        "only allowed when allow or receive has an n-service",
                    );
                    conditional_ok = false;
                }
                (None, false) => {}
            }
        } else {
            conditional_ok = false;
        }

        let identity = validate_peer_identity(cx, &base, p, header.clone(), context);

        // Bulk query (archive harvesting with an allowed identity): no more C-FIND matches per
        // query than this. Absent: no cap.
        let max_find_results = match &p.max_find_results {
            None => Some(None),
            Some(v) => int_in(
                cx,
                &format!("{base}.max_find_results"),
                Some(v),
                1,
                &MAX_FIND_RESULTS,
            )
            .and_then(|n| u32::try_from(n).ok())
            .map(Some),
        };

        if let (
            Some(name),
            Some(ae_titles),
            Some(addresses),
            Some(allow),
            true,
            Some(identity),
            Some(max_find_results),
        ) = (
            name,
            ae_titles,
            addresses,
            allow,
            conditional_ok,
            identity,
            max_find_results,
        ) {
            checked.push(CheckedPeer {
                peer: Peer {
                    name,
                    ae_titles,
                    addresses,
                    allow,
                    store_sop_classes,
                    move_destinations,
                    n_sop_classes,
                    receive: receive.unwrap_or_default(),
                    identity,
                    max_find_results,
                },
                index: i,
                name_span: p.name.as_ref().map(|n| n.span()),
            });
        }
    }

    // Two peers that could both match one association would make admission order-dependent.
    for (j, b) in checked.iter().enumerate() {
        for a in checked.iter().take(j) {
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

/// A non-empty list of strings, each turned into its compared form by `check` (or refused with
/// its message), with no two equal after that.
fn string_list(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
    what: &str,
    check: impl Fn(&str) -> Result<String, String>,
) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        cx.at(span(list), field, format!("must list at least one {what}"));
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        match check(item.get_ref()) {
            Ok(v) if out.contains(&v) => {
                cx.at(
                    span(item),
                    f,
                    format!("duplicate {what} {:?}", item.get_ref()),
                );
                ok = false;
            }
            Ok(v) => out.push(v),
            Err(msg) => {
                cx.at(span(item), f, msg);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn check_fingerprint(s: &str) -> Result<String, String> {
    let n = normalize_fingerprint(s);
    if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(n)
    } else {
        Err(format!(
            "invalid SHA-256 fingerprint {s:?} (expected 64 hex digits, colons allowed; `radguard tls fingerprint CERT.pem` prints it)"
        ))
    }
}

fn check_text(what: &'static str) -> impl Fn(&str) -> Result<String, String> {
    move |s: &str| {
        if s.is_empty() || s.trim() != s || s.chars().any(char::is_control) {
            Err(format!(
                "invalid {what} {s:?} (must be non-empty, without surrounding spaces or control characters)"
            ))
        } else {
            Ok(s.to_string())
        }
    }
}

fn check_san(s: &str) -> Result<String, String> {
    check_text("subject alternative name")(s).map(|t| normalize_san(&t))
}

fn check_username(s: &str) -> Result<String, String> {
    if valid_username(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid user name {s:?} (1..=256 bytes, no surrounding spaces or control characters)"
        ))
    }
}

/// `tls`, `cert_*`, `user_identity` and `users` of one peer.
fn validate_peer_identity(
    cx: &mut Collector<'_>,
    base: &str,
    p: &RawPeer,
    header: Option<Range<usize>>,
    context: &PeerContext,
) -> Option<PeerIdentity> {
    let mut ok = true;
    let mut list = |cx: &mut Collector<'_>,
                    key: &str,
                    v: &Option<StrList>,
                    what: &str,
                    check: &dyn Fn(&str) -> Result<String, String>|
     -> Vec<String> {
        match v {
            None => Vec::new(),
            Some(l) => match string_list(cx, &format!("{base}.{key}"), l, what, check) {
                Some(out) => out,
                None => {
                    ok = false;
                    Vec::new()
                }
            },
        }
    };
    let cert_sha256 = list(
        cx,
        "cert_sha256",
        &p.cert_sha256,
        "fingerprint",
        &check_fingerprint,
    );
    let cert_subject_cn = list(
        cx,
        "cert_subject_cn",
        &p.cert_subject_cn,
        "subject CN",
        &check_text("subject CN"),
    );
    let cert_san = list(
        cx,
        "cert_san",
        &p.cert_san,
        "subject alternative name",
        &check_san,
    );
    let users = match &p.users {
        None => None,
        Some(l) => {
            let out = string_list(cx, &format!("{base}.users"), l, "user name", check_username);
            ok &= out.is_some();
            out
        }
    };

    // The first cert_* key present, for error positions.
    let first_cert_key = [
        (&p.cert_sha256, "cert_sha256"),
        (&p.cert_subject_cn, "cert_subject_cn"),
        (&p.cert_san, "cert_san"),
    ]
    .into_iter()
    .find_map(|(v, k)| v.as_ref().map(|l| (l.span(), k)));

    let tls = match &p.tls {
        None if first_cert_key.is_some() => TlsRequirement::Required,
        None => TlsRequirement::Optional,
        Some(v) => match (v.get_ref().as_str(), first_cert_key.clone()) {
            ("required", _) => TlsRequirement::Required,
            ("optional", None) => TlsRequirement::Optional,
            ("optional", Some((_, key))) => {
                cx.at(
                    span(v),
                    format!("{base}.tls"),
                    format!("`{key}` needs a client certificate: use tls = \"required\" (implied by any cert_* key) or drop the cert_* keys"),
                );
                ok = false;
                TlsRequirement::Optional
            }
            (other, _) => {
                cx.at(
                    span(v),
                    format!("{base}.tls"),
                    format!("unknown value {other:?} (expected \"required\" or \"optional\")"),
                );
                ok = false;
                TlsRequirement::Optional
            }
        },
    };
    if tls == TlsRequirement::Required && !context.client_ca {
        let (at, field) = match (&p.tls, first_cert_key) {
            (Some(v), _) => (span(v), format!("{base}.tls")),
            (None, Some((sp, key))) => (Some(sp), format!("{base}.{key}")),
            (None, None) => (header.clone(), format!("{base}.tls")),
        };
        cx.at(
            at,
            field,
            "a client certificate is required but no [server.tls] `client_ca` is configured to verify one (and a `tls_listen` to receive it)",
        );
        ok = false;
    }

    let user_identity = match &p.user_identity {
        None => UserIdentityRequirement::Optional,
        Some(v) => match v.get_ref().as_str() {
            "optional" => UserIdentityRequirement::Optional,
            "required" => {
                if !context.users && !context.jwt {
                    cx.at(
                        span(v),
                        format!("{base}.user_identity"),
                        "\"required\" needs a [[user]] (type 2 passcodes) or [jwt] (type 5 tokens) to verify identities against",
                    );
                    ok = false;
                }
                UserIdentityRequirement::Required
            }
            "ignore" => UserIdentityRequirement::Ignore,
            other => {
                cx.at(
                    span(v),
                    format!("{base}.user_identity"),
                    format!(
                        "unknown value {other:?} (expected \"required\", \"optional\" or \"ignore\")"
                    ),
                );
                ok = false;
                UserIdentityRequirement::Optional
            }
        },
    };
    if let (Some(l), UserIdentityRequirement::Ignore) = (&p.users, user_identity) {
        cx.at(
            span(l),
            format!("{base}.users"),
            "not allowed with user_identity = \"ignore\" (an ignored identity names no user)",
        );
        ok = false;
    }
    ok.then_some(PeerIdentity {
        tls,
        cert_sha256,
        cert_subject_cn,
        cert_san,
        user_identity,
        users,
    })
}

/// `[[user]]` and `[jwt]`.
fn validate_directory(
    cx: &mut Collector<'_>,
    users: &[Spanned<RawUser>],
    jwt: Option<&Spanned<RawJwt>>,
    base_dir: &Path,
) -> UserDirectory {
    let mut dir = UserDirectory::default();
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, sp) in users.iter().enumerate() {
        let u = sp.get_ref();
        let base = format!("user[{i}]");
        let name = match &u.name {
            None => {
                cx.at(
                    span(sp),
                    format!("{base}.name"),
                    "missing required key `name`",
                );
                None
            }
            Some(n) => match check_username(n.get_ref()) {
                Err(msg) => {
                    cx.at(span(n), format!("{base}.name"), msg);
                    None
                }
                Ok(name) => {
                    if let Some(j) = first.get(&name) {
                        cx.at(
                            span(n),
                            format!("{base}.name"),
                            format!("duplicate user name {name:?} (also user[{j}])"),
                        );
                        None
                    } else {
                        first.insert(name.clone(), i);
                        Some(name)
                    }
                }
            },
        };
        let hash = match &u.passcode_argon2 {
            None => {
                cx.at(
                    span(sp),
                    format!("{base}.passcode_argon2"),
                    "missing required key `passcode_argon2` (make one with `radguard passwd`)",
                );
                None
            }
            Some(h) => match check_argon2id(h.get_ref()) {
                Ok(()) => Some(h.get_ref().clone()),
                Err(msg) => {
                    cx.at(span(h), format!("{base}.passcode_argon2"), msg);
                    None
                }
            },
        };
        if let (Some(name), Some(hash)) = (name, hash) {
            dir.users.insert(name, hash);
        }
    }
    if let Some(j) = jwt {
        dir.jwt = validate_jwt(cx, j, base_dir);
    }
    dir
}

/// A PHC string of an Argon2id hash with parameters argon2 accepts.
fn check_argon2id(s: &str) -> Result<(), String> {
    let hash = argon2::PasswordHash::new(s).map_err(|e| {
        format!("not a PHC hash string ({e}); expected $argon2id$v=19$m=...,t=...,p=...$salt$hash from `radguard passwd`")
    })?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "{} hashes are not accepted: Argon2id only (`radguard passwd` makes one)",
            hash.algorithm
        ));
    }
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("the hash string lacks its salt or hash part".into());
    }
    argon2::Params::try_from(&hash).map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
    Ok(())
}

const JWT_LEEWAY_SECS: (i64, RangeInclusive<i64>) = (60, 0..=300);

fn validate_jwt(
    cx: &mut Collector<'_>,
    raw: &Spanned<RawJwt>,
    base_dir: &Path,
) -> Option<JwtSettings> {
    let j = raw.get_ref();
    let header = span(raw);
    let mut ok = true;
    let text = |cx: &mut Collector<'_>, key: &str, v: &Option<Str>| -> Option<String> {
        match v {
            None => {
                cx.at(
                    header.clone(),
                    format!("jwt.{key}"),
                    format!("missing required key `{key}`"),
                );
                None
            }
            Some(v) => match check_text(if key == "issuer" {
                "issuer"
            } else {
                "audience"
            })(v.get_ref())
            {
                Ok(s) => Some(s),
                Err(msg) => {
                    cx.at(span(v), format!("jwt.{key}"), msg);
                    None
                }
            },
        }
    };
    let issuer = text(cx, "issuer", &j.issuer);
    let audience = text(cx, "audience", &j.audience);
    let (d, r) = &JWT_LEEWAY_SECS;
    let leeway = int_in(cx, "jwt.leeway_secs", j.leeway_secs.as_ref(), *d, r);
    let mut keys: Vec<JwtKey> = Vec::new();
    match &j.keys {
        None => {
            cx.at(
                header.clone(),
                "jwt.keys",
                "missing required key `keys` (at least one { kid, alg, public_key })",
            );
            ok = false;
        }
        Some(list) if list.get_ref().is_empty() => {
            cx.at(span(list), "jwt.keys", "must list at least one key");
            ok = false;
        }
        Some(list) => {
            for (i, sp) in list.get_ref().iter().enumerate() {
                match validate_jwt_key(cx, i, sp, base_dir, &keys) {
                    Some(k) => keys.push(k),
                    None => ok = false,
                }
            }
        }
    }
    match (issuer, audience, leeway, ok) {
        (Some(issuer), Some(audience), Some(leeway), true) => Some(JwtSettings {
            issuer,
            audience,
            leeway_secs: u64::try_from(leeway).unwrap_or(0),
            keys,
        }),
        _ => None,
    }
}

fn validate_jwt_key(
    cx: &mut Collector<'_>,
    i: usize,
    sp: &Spanned<RawJwtKey>,
    base_dir: &Path,
    earlier: &[JwtKey],
) -> Option<JwtKey> {
    let k = sp.get_ref();
    let base = format!("jwt.keys[{i}]");
    let missing = |cx: &mut Collector<'_>, key: &str| {
        cx.at(
            span(sp),
            format!("{base}.{key}"),
            format!("missing required key `{key}`"),
        );
    };
    let kid = match &k.kid {
        None => {
            missing(cx, "kid");
            None
        }
        Some(v) => match check_text("key id")(v.get_ref()) {
            Err(msg) => {
                cx.at(span(v), format!("{base}.kid"), msg);
                None
            }
            Ok(kid) if earlier.iter().any(|e| e.kid == kid) => {
                cx.at(
                    span(v),
                    format!("{base}.kid"),
                    format!("duplicate kid {kid:?}"),
                );
                None
            }
            Ok(kid) => Some(kid),
        },
    };
    let alg = match &k.alg {
        None => {
            missing(cx, "alg");
            None
        }
        Some(v) => match JwtAlg::parse(v.get_ref()) {
            Some(a) => Some(a),
            None => {
                cx.at(
                    span(v),
                    format!("{base}.alg"),
                    format!(
                        "unsupported algorithm {:?} (expected \"ES256\", \"EdDSA\" or \"RS256\")",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    let key = match &k.public_key {
        None => {
            missing(cx, "public_key");
            None
        }
        Some(v) => {
            let field = format!("{base}.public_key");
            match (readable_path(cx, base_dir, &field, v), alg) {
                (Some(path), Some(alg)) => match std::fs::read(&path) {
                    Err(e) => {
                        cx.at(
                            span(v),
                            field,
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                    Ok(pem) => match alg.decoding_key(&pem) {
                        Ok(key) => Some((path, pem, key)),
                        Err(e) => {
                            cx.at(
                                span(v),
                                field,
                                format!(
                                    "{} is not a PEM {} public key: {e}",
                                    path.display(),
                                    alg.as_str()
                                ),
                            );
                            None
                        }
                    },
                },
                _ => None,
            }
        }
    };
    match (kid, alg, key) {
        (Some(kid), Some(alg), Some((path, pem, key))) => Some(JwtKey {
            kid,
            alg,
            path,
            pem,
            key,
        }),
        _ => None,
    }
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
            format!("must list at least one of {ALLOW_NAMES}"),
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
            "n-event-report" => Operation::NEventReport,
            "n-get" => Operation::NGet,
            "n-set" => Operation::NSet,
            "n-action" => Operation::NAction,
            "n-create" => Operation::NCreate,
            "n-delete" => Operation::NDelete,
            other => {
                cx.at(
                    span(item),
                    f,
                    format!("unknown operation {other:?} (expected one of {ALLOW_NAMES})"),
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

/// The operations `allow` may name, for its error messages.
const ALLOW_NAMES: &str = "\"echo\", \"store\", \"find\", \"move\", \"get\", \"n-create\", \"n-set\", \"n-action\", \"n-delete\", \"n-get\", \"n-event-report\"";

/// `receive`: the DIMSE-N requests the called side may send the peer on its own association.
/// Only N-EVENT-REPORT is sent that way (Storage Commitment's report, PS3.4 J.3.3); any other
/// request from the called side stays refused.
fn validate_receive(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
) -> Option<BTreeSet<Operation>> {
    let mut out = BTreeSet::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        match item.get_ref().as_str() {
            "n-event-report" => {
                if !out.insert(Operation::NEventReport) {
                    cx.at(span(item), f, "duplicate operation \"n-event-report\"");
                    ok = false;
                }
            }
            other => {
                cx.at(
                    span(item),
                    f,
                    format!("unknown operation {other:?} (expected \"n-event-report\")"),
                );
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// `n_sop_classes`: keywords or UIDs of SOP classes the DIMSE-N services act on. Storage SOP
/// classes, Verification and the Query/Retrieve models are not (their services are the
/// C-services and their own keys).
fn validate_n_sop_classes(
    cx: &mut Collector<'_>,
    field: &str,
    list: &StrList,
) -> Option<BTreeSet<String>> {
    if list.get_ref().is_empty() {
        cx.at(
            span(list),
            field,
            "must list at least one SOP class keyword or UID",
        );
        return None;
    }
    let mut uids = BTreeSet::new();
    let mut ok = true;
    for (i, item) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = item.get_ref().trim();
        let uid = if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            match Uid::new(text) {
                Ok(uid) => uid.as_str().to_string(),
                Err(e) => {
                    cx.at(span(item), f, format!("invalid UID {text:?}: {e}"));
                    ok = false;
                    continue;
                }
            }
        } else {
            match sop::uid_for_keyword(text) {
                Some(uid) => uid.to_string(),
                None => {
                    cx.at(
                        span(item),
                        f,
                        format!(
                            "unknown SOP class keyword {text:?} (expected a dicom-dictionary-std SOP class keyword such as \"ModalityPerformedProcedureStep\", or a UID)"
                        ),
                    );
                    ok = false;
                    continue;
                }
            }
        };
        if !sop::is_normalized_candidate(&uid) {
            cx.at(
                span(item),
                f,
                format!(
                    "{uid} ({}) is not a SOP class of the DIMSE-N services",
                    sop::keyword_for_uid(&uid).unwrap_or("?")
                ),
            );
            ok = false;
            continue;
        }
        if !uids.insert(uid.clone()) {
            cx.at(span(item), f, format!("SOP class {uid} is listed twice"));
            ok = false;
        }
    }
    ok.then_some(uids)
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

/// `tls = { ca, server_name, client_cert, client_key }` of an upstream route; `addr` is the
/// route's `upstream` when valid (its host is the default server name).
fn validate_route_tls(
    cx: &mut Collector<'_>,
    base: &str,
    raw: &Spanned<RawRouteTls>,
    addr: Option<&str>,
    base_dir: &Path,
) -> Option<UpstreamTls> {
    let t = raw.get_ref();
    let mut ok = true;
    let ca = match &t.ca {
        None => {
            cx.at(
                span(raw),
                format!("{base}.tls.ca"),
                "missing required key `ca` (the CA certificates the upstream's certificate must chain to)",
            );
            None
        }
        Some(v) => readable_path(cx, base_dir, &format!("{base}.tls.ca"), v),
    };
    let server_name = match (&t.server_name, addr) {
        (Some(v), _) => {
            let name = v.get_ref();
            let bare = name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(name);
            if bare.parse::<IpAddr>().is_ok() || is_dns_name(bare) {
                Some(bare.to_string())
            } else {
                cx.at(
                    span(v),
                    format!("{base}.tls.server_name"),
                    format!("invalid server name {name:?} (expected a DNS name or an IP address)"),
                );
                None
            }
        }
        (None, Some(addr)) => addr.rsplit_once(':').map(|(host, _)| {
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .to_string()
        }),
        (None, None) => None,
    };
    let mut file = |cx: &mut Collector<'_>, key: &str, v: &Option<Str>| match v {
        None => None,
        Some(v) => {
            let p = readable_path(cx, base_dir, &format!("{base}.tls.{key}"), v);
            ok &= p.is_some();
            p
        }
    };
    let client_cert = file(cx, "client_cert", &t.client_cert);
    let client_key = file(cx, "client_key", &t.client_key);
    match (&t.client_cert, &t.client_key) {
        (Some(v), None) => {
            cx.at(
                span(v),
                format!("{base}.tls.client_cert"),
                "needs `client_key` (the certificate's private key)",
            );
            ok = false;
        }
        (None, Some(v)) => {
            cx.at(
                span(v),
                format!("{base}.tls.client_key"),
                "needs `client_cert` (the certificate for this key)",
            );
            ok = false;
        }
        _ => {}
    }
    match (ca, server_name, ok) {
        (Some(ca), Some(server_name), true) => Some(UpstreamTls {
            ca,
            server_name,
            client_cert,
            client_key,
        }),
        _ => None,
    }
}

fn is_dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok)
}

fn validate_routes(
    cx: &mut Collector<'_>,
    raw: &[Spanned<RawRoute>],
    base_dir: &Path,
) -> Vec<RouteEntry> {
    if raw.is_empty() {
        cx.at(
            None,
            "route",
            "no [[route]]: at least one route is required (otherwise every association is refused)",
        );
    }
    let mut out: Vec<RouteEntry> = Vec::new();
    let mut seen: HashMap<AeTitle, usize> = HashMap::new();
    let mut held_tls = HashMap::new();
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
        let tls = match (&r.tls, &route) {
            (None, _) => Some(None),
            (Some(t), _) if vault => {
                cx.at(
                    span(t),
                    format!("{base}.tls"),
                    "only for upstream routes (the vault is inside the gateway)",
                );
                None
            }
            (Some(t), Some(Route::Upstream { addr, .. })) => {
                validate_route_tls(cx, &base, t, Some(addr), base_dir).map(Some)
            }
            (Some(t), _) => {
                // The route itself is invalid: still report the tls table's own problems.
                let _ = validate_route_tls(cx, &base, t, None, base_dir);
                None
            }
        };
        let deidentify = match (&r.deidentify, vault) {
            (None, _) => None,
            (Some(t), true) => {
                cx.at(
                    span(t),
                    format!("{base}.deidentify"),
                    "only for upstream routes (what leaves the gateway is de-identified)",
                );
                None
            }
            // File paths in the table are relative to the config file, like every other path.
            (Some(t), false) => match t.get_ref().check(t.span(), base_dir) {
                Ok(spec) => Some(spec),
                Err(errors) => {
                    for e in errors {
                        cx.at(
                            Some(e.span),
                            format!("{base}.deidentify.{}", e.key),
                            e.error.to_string(),
                        );
                    }
                    None
                }
            },
        };
        let is_origin = r.origin.as_ref().is_some_and(|o| *o.get_ref());
        if is_origin && vault {
            if let Some(o) = &r.origin {
                cx.at(
                    span(o),
                    format!("{base}.origin"),
                    "only for upstream routes (the vault does not fingerprint)",
                );
            }
        }
        let refuse_conflicts = match &r.on_fingerprint_conflict {
            None => true,
            Some(v) => match v.get_ref().as_str() {
                "refuse" => true,
                "record" => false,
                other => {
                    cx.at(
                        span(v),
                        format!("{base}.on_fingerprint_conflict"),
                        format!("{other:?}: expected \"refuse\" or \"record\""),
                    );
                    true
                }
            },
        };
        if r.on_fingerprint_conflict.is_some() && !is_origin {
            if let Some(v) = &r.on_fingerprint_conflict {
                cx.at(
                    span(v),
                    format!("{base}.on_fingerprint_conflict"),
                    "only with `origin = true`",
                );
            }
        }
        let origin = (is_origin && !vault).then_some(OriginRoute { refuse_conflicts });
        let firewall = match &r.firewall {
            None => FirewallLevel::Safe,
            Some(v) => match v.get_ref().as_str() {
                "strict" => FirewallLevel::Strict,
                "safe" => FirewallLevel::Safe,
                "log" => FirewallLevel::Log,
                other => {
                    cx.at(
                        span(v),
                        format!("{base}.firewall"),
                        format!("{other:?}: expected \"strict\", \"safe\" or \"log\""),
                    );
                    FirewallLevel::Safe
                }
            },
        };
        let hold = validate_hold(cx, &base, r, &route, tls.as_ref(), &mut held_tls);
        if let (Some(called_ae), Some(route), Some(tls), Some(hold)) = (called_ae, route, tls, hold)
        {
            out.push(RouteEntry {
                called_ae,
                route,
                tls,
                deidentify,
                origin,
                firewall,
                hold,
            });
        }
    }
    out
}

/// `on_upstream_down` and the `hold_*` keys of a route. `Some(None)`: refuse (the default);
/// `None`: an error was reported.
fn validate_hold(
    cx: &mut Collector<'_>,
    base: &str,
    r: &RawRoute,
    route: &Option<Route>,
    tls: Option<&Option<UpstreamTls>>,
    held_tls: &mut HashMap<(String, String), (String, UpstreamTls)>,
) -> Option<Option<HoldSettings>> {
    let hold = match &r.on_upstream_down {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "refuse" => false,
            "hold" => true,
            other => {
                cx.at(
                    span(v),
                    format!("{base}.on_upstream_down"),
                    format!("{other:?}: expected \"refuse\" or \"hold\""),
                );
                return None;
            }
        },
    };
    let keys: [(&str, Option<&Int>); 6] = [
        ("hold_quota", r.hold_quota.as_ref()),
        (
            "hold_high_water_percent",
            r.hold_high_water_percent.as_ref(),
        ),
        ("hold_backoff_base_ms", r.hold_backoff_base_ms.as_ref()),
        ("hold_backoff_cap_ms", r.hold_backoff_cap_ms.as_ref()),
        ("hold_max_age_secs", r.hold_max_age_secs.as_ref()),
        ("hold_max_attempts", r.hold_max_attempts.as_ref()),
    ];
    if !hold {
        let mut bad = false;
        for (key, v) in keys {
            if let Some(v) = v {
                cx.at(
                    span(v),
                    format!("{base}.{key}"),
                    "only with `on_upstream_down = \"hold\"`",
                );
                bad = true;
            }
        }
        return (!bad).then_some(None);
    }
    let at = r.on_upstream_down.as_ref().and_then(span);
    // Held instances of TLS routes to one upstream share one queue and one forwarder, which
    // connects with one `tls` table: two such routes verifying the archive differently (another
    // CA, server name or client certificate) would make that choice arbitrary.
    if let (
        Some(Route::Upstream {
            addr, upstream_ae, ..
        }),
        Some(Some(t)),
    ) = (route, tls)
    {
        let key = (upstream_ae.as_str().to_string(), addr.clone());
        match held_tls.get(&key) {
            Some((first, had)) if had != t => {
                cx.at(
                    r.tls.as_ref().and_then(span).or(at),
                    format!("{base}.tls"),
                    format!(
                        "differs from the `tls` of {first}, a hold route to the same upstream \
                         {}@{}: their held instances share one forwarder (use the same `tls`)",
                        key.0, key.1
                    ),
                );
                return None;
            }
            Some(_) => {}
            None => {
                held_tls.insert(key, (base.to_string(), t.clone()));
            }
        }
    }
    if matches!(route, Some(Route::Vault)) {
        cx.at(
            at,
            format!("{base}.on_upstream_down"),
            "only for upstream routes (the vault is inside the gateway)",
        );
        return None;
    }
    if r.deidentify.is_some() {
        cx.at(
            at,
            format!("{base}.on_upstream_down"),
            "\"hold\" is not available with `deidentify` (held instances would leave unchanged)",
        );
        return None;
    }
    let f = |k: &str| format!("{base}.{k}");
    let quota = int_in(
        cx,
        &f("hold_quota"),
        r.hold_quota.as_ref(),
        HOLD_QUOTA.0,
        &HOLD_QUOTA.1,
    );
    let high = int_in(
        cx,
        &f("hold_high_water_percent"),
        r.hold_high_water_percent.as_ref(),
        HOLD_HIGH_WATER.0,
        &HOLD_HIGH_WATER.1,
    );
    let bbase = int_in(
        cx,
        &f("hold_backoff_base_ms"),
        r.hold_backoff_base_ms.as_ref(),
        HOLD_BACKOFF_BASE_MS.0,
        &HOLD_BACKOFF_BASE_MS.1,
    );
    let bcap = int_in(
        cx,
        &f("hold_backoff_cap_ms"),
        r.hold_backoff_cap_ms.as_ref(),
        HOLD_BACKOFF_CAP_MS.0,
        &HOLD_BACKOFF_CAP_MS.1,
    );
    let age = int_in(
        cx,
        &f("hold_max_age_secs"),
        r.hold_max_age_secs.as_ref(),
        HOLD_MAX_AGE_SECS.0,
        &HOLD_MAX_AGE_SECS.1,
    );
    let attempts = int_in(
        cx,
        &f("hold_max_attempts"),
        r.hold_max_attempts.as_ref(),
        HOLD_MAX_ATTEMPTS.0,
        &HOLD_MAX_ATTEMPTS.1,
    );
    let (quota, high, bbase, bcap, age, attempts) = (quota?, high?, bbase?, bcap?, age?, attempts?);
    if bcap < bbase {
        cx.at(
            r.hold_backoff_cap_ms.as_ref().and_then(span),
            f("hold_backoff_cap_ms"),
            format!("{bcap} is below hold_backoff_base_ms ({bbase})"),
        );
        return None;
    }
    let ms = |v: i64| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    Some(Some(HoldSettings {
        quota: u64::try_from(quota).unwrap_or(0),
        high_water_percent: u8::try_from(high).unwrap_or(90),
        backoff_base: ms(bbase),
        backoff_cap: ms(bcap),
        max_age: Duration::from_secs(u64::try_from(age).unwrap_or(0)),
        max_attempts: u32::try_from(attempts).unwrap_or(5),
    }))
}
