//! The compiled policy and its pure decisions: [`Policy::admit`] (association),
//! [`Policy::context`] (presentation context), [`Policy::dimse`] (the peer's request) and
//! [`Policy::dimse_from_called`] (a DIMSE-N request the called side sends the peer).
//!
//! Everything is default deny: what the policy does not name is refused. A [`Policy`] is an
//! `Arc` inside, cheap to clone and to hand out through a `tokio::sync::watch` channel.
//!
//! **Live swaps.** An [`Admission`] remembers the facts it was granted on. When `context` or
//! `dimse` is asked with an admission granted by a different (older) policy, the facts are
//! admitted again under `self`; if they no longer lead to the same route, every further context
//! and request is refused ([`RejectWhy::AdmissionWithdrawn`],
//! [`DimseRefusalReason::AdmissionWithdrawn`]). A swap therefore narrows running associations at
//! once and never widens them beyond what the new policy grants.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use radguard_dicom::types::status;
use radguard_dicom::{AeTitle, CommandField, Operation, Uid};

use crate::identity::{
    AuthMethod, CertFacts, IdentityFacts, PeerIdentity, Rejection, UserDirectory,
    UserIdentityRequirement, UserStatus,
};
use crate::sop;
pub use radguard_dicom::validate::Level as FirewallLevel;

/// Calling AE titles a peer may use, or move destinations it may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AeTitles {
    /// `["*"]`: any AE title.
    Any,
    /// Exactly these AE titles (never empty).
    Listed(Vec<AeTitle>),
}

impl AeTitles {
    pub fn matches(&self, ae: &AeTitle) -> bool {
        match self {
            AeTitles::Any => true,
            AeTitles::Listed(list) => list.contains(ae),
        }
    }

    /// Whether some AE title is matched by both sets.
    pub fn overlaps(&self, other: &AeTitles) -> bool {
        match (self, other) {
            (AeTitles::Any, _) | (_, AeTitles::Any) => true,
            (AeTitles::Listed(a), AeTitles::Listed(b)) => a.iter().any(|x| b.contains(x)),
        }
    }
}

impl fmt::Display for AeTitles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AeTitles::Any => f.write_str("any AE title"),
            AeTitles::Listed(list) => {
                let names: Vec<&str> = list.iter().map(AeTitle::as_str).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

/// The SOP classes a peer may store (and retrieve with C-GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SopClassSet {
    any_storage: bool,
    uids: BTreeSet<String>,
}

impl SopClassSet {
    pub(crate) fn new(any_storage: bool, uids: BTreeSet<String>) -> Self {
        SopClassSet { any_storage, uids }
    }

    /// `"*"` was listed: every Storage SOP class (see [`crate::sop`] for the rule).
    pub fn any_storage(&self) -> bool {
        self.any_storage
    }

    /// The explicitly listed UIDs (keywords already resolved).
    pub fn uids(&self) -> &BTreeSet<String> {
        &self.uids
    }

    pub fn allows(&self, uid: &str) -> bool {
        self.uids.contains(uid) || (self.any_storage && sop::is_storage_sop_class(uid))
    }
}

impl fmt::Display for SopClassSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.any_storage {
            parts.push("any Storage SOP class".to_string());
        }
        for uid in &self.uids {
            parts.push(match sop::keyword_for_uid(uid) {
                Some(kw) => kw.to_string(),
                None => uid.clone(),
            });
        }
        f.write_str(&parts.join(", "))
    }
}

/// A known client: who it is (calling AE titles and source addresses) and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub(crate) name: String,
    pub(crate) ae_titles: AeTitles,
    pub(crate) addresses: Vec<IpNet>,
    pub(crate) allow: BTreeSet<Operation>,
    pub(crate) store_sop_classes: Option<SopClassSet>,
    pub(crate) move_destinations: Option<AeTitles>,
    /// SOP classes the peer's DIMSE-N services may name (either direction); present exactly
    /// when `allow` or `receive` has an N-service.
    pub(crate) n_sop_classes: Option<BTreeSet<String>>,
    /// DIMSE-N requests the called side may send this peer on its association (only
    /// N-EVENT-REPORT); empty by default.
    pub(crate) receive: BTreeSet<Operation>,
    pub(crate) identity: PeerIdentity,
    /// At most this many matches per C-FIND query (`None`: no cap).
    pub(crate) max_find_results: Option<u32>,
}

impl Peer {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ae_titles(&self) -> &AeTitles {
        &self.ae_titles
    }

    pub fn addresses(&self) -> &[IpNet] {
        &self.addresses
    }

    pub fn allowed(&self) -> &BTreeSet<Operation> {
        &self.allow
    }

    /// The most C-FIND matches the gateway relays for one query of this peer (`None`: no cap).
    pub fn max_find_results(&self) -> Option<u32> {
        self.max_find_results
    }

    pub fn allows(&self, op: Operation) -> bool {
        self.allow.contains(&op)
    }

    /// Present exactly when the peer may store or get.
    pub fn store_sop_classes(&self) -> Option<&SopClassSet> {
        self.store_sop_classes.as_ref()
    }

    /// Present exactly when the peer may move.
    pub fn move_destinations(&self) -> Option<&AeTitles> {
        self.move_destinations.as_ref()
    }

    /// Present exactly when the peer uses DIMSE-N services (`allow` or `receive`).
    pub fn n_sop_classes(&self) -> Option<&BTreeSet<String>> {
        self.n_sop_classes.as_ref()
    }

    /// The DIMSE-N requests the called side may send this peer (`receive`).
    pub fn receives(&self) -> &BTreeSet<Operation> {
        &self.receive
    }

    fn may_use_n_class(&self, uid: &str) -> bool {
        self.n_sop_classes.as_ref().is_some_and(|s| s.contains(uid))
    }

    /// Certificate and user identity conditions (all empty/optional for a plain peer).
    pub fn identity(&self) -> &PeerIdentity {
        &self.identity
    }

    /// Whether `source` falls in one of the peer's address ranges. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, as a dual-stack listener reports IPv4 clients) is matched as IPv4.
    pub fn accepts_address(&self, source: IpAddr) -> bool {
        let source = canonical(source);
        self.addresses.iter().any(|net| net.contains(&source))
    }

    fn may_store_class(&self, uid: &str) -> bool {
        self.store_sop_classes
            .as_ref()
            .is_some_and(|set| set.allows(uid))
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Where an admitted association is relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The built-in vault is the SCP.
    Vault,
    /// A real SCP behind the gateway.
    Upstream {
        /// `host:port` (validated: non-empty host, bracketed IPv6, port 1..=65535).
        addr: String,
        /// Called AE title sent upstream.
        upstream_ae: AeTitle,
        /// Calling AE title sent upstream; `None` = the client's own calling AE title.
        upstream_calling_ae: Option<AeTitle>,
    },
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Vault => f.write_str("vault"),
            Route::Upstream {
                addr,
                upstream_ae,
                upstream_calling_ae,
            } => {
                write!(f, "upstream {upstream_ae} at {addr}, calling AE ")?;
                match upstream_calling_ae {
                    Some(ae) => write!(f, "{ae}"),
                    None => f.write_str("= the client's"),
                }
            }
        }
    }
}

/// A route and the called AE title that selects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub called_ae: AeTitle,
    pub route: Route,
    /// TLS towards the upstream (`tls = { ... }` of the route); `None` = plain TCP. Never set
    /// for [`Route::Vault`].
    pub tls: Option<UpstreamTls>,
    /// The route's `deidentify = { ... }` table, checked when the config was loaded (paths
    /// resolved against the config file's folder, the key and safe private list readable); the
    /// gateway builds its de-identifier from it. `None` = data sets pass unchanged.
    pub deidentify: Option<radguard_deid::DeidSpec>,
    /// `origin = true`: C-STOREs on this route are fingerprinted into the integrity ledger.
    pub origin: Option<OriginRoute>,
    /// The data-set firewall's level for every data set relayed or stored on this route, in
    /// both directions (PS3.5 §7: order, uniqueness, delimitation, lengths, VRs, UIDs, pixels).
    pub firewall: FirewallLevel,
    /// `on_upstream_down = "hold"`: when the upstream cannot be reached, C-STOREs are accepted
    /// into the vault and queued for it. `None` = refuse (A-ASSOCIATE-RJ 2/3/1).
    pub hold: Option<HoldSettings>,
}

/// The bounds and pacing of a hold route (`hold_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSettings {
    /// Instances waiting for this route's destination past which C-STOREs are refused (0xA700).
    pub quota: u64,
    /// Disk use of the data folder's file system (percent) past which C-STOREs are refused.
    pub high_water_percent: u8,
    /// Retry delay after the first failure, doubled per failure up to `backoff_cap` (jittered).
    pub backoff_base: std::time::Duration,
    pub backoff_cap: std::time::Duration,
    /// An instance waiting longer than this raises an alert.
    pub max_age: std::time::Duration,
    /// Failure statuses from the destination for one instance after which it is parked (out of
    /// the forwarding order, shown by `radguard queue list`) so it does not block the rest.
    pub max_attempts: u32,
}

/// A route marked as the point of origin (next to the scanner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginRoute {
    /// Refuse (abort before the upstream has the whole instance) a C-STORE whose SOP Instance
    /// UID is already logged with a different fingerprint; otherwise alert and record both.
    pub refuse_conflicts: bool,
}

/// How the gateway connects to an upstream over TLS. Paths are resolved against the config
/// file's directory and were readable when the config was loaded; the gateway builds the rustls
/// configuration from them (`radguard_tls::client_config(&ca, client_cert_and_key())`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA certificates (PEM) the upstream's certificate must chain to.
    pub ca: PathBuf,
    /// The name the upstream's certificate must carry (DNS name or IP address; defaults to the
    /// host of `upstream`).
    pub server_name: String,
    /// Client certificate chain (PEM) presented when the upstream asks for one.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM). Present exactly when `client_cert` is.
    pub client_key: Option<PathBuf>,
}

impl UpstreamTls {
    /// `(certificate, key)` when a client certificate is configured.
    pub fn client_cert_and_key(&self) -> Option<(&Path, &Path)> {
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct PolicyInner {
    peers: Vec<Arc<Peer>>,
    routes: Vec<RouteEntry>,
    directory: UserDirectory,
}

/// The compiled, validated policy. Built only from a validated config
/// ([`crate::parse_config`], [`crate::Config::embedded_default`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    inner: Arc<PolicyInner>,
}

/// What the gateway knows about an association when the A-ASSOCIATE-RQ arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationFacts {
    pub source: IpAddr,
    pub calling_ae: AeTitle,
    pub called_ae: AeTitle,
}

/// Proof that an association was admitted: the peer it matched, the route it takes and who the
/// caller proved to be. Only [`Policy::admit`] / [`Policy::admit_with`] build one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    peer: Arc<Peer>,
    route: Route,
    upstream_tls: Option<UpstreamTls>,
    facts: AssociationFacts,
    client_cert: Option<CertFacts>,
    user: UserStatus,
    user_identity_response: bool,
}

impl Admission {
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    pub fn peer_name(&self) -> &str {
        &self.peer.name
    }

    pub fn route(&self) -> &Route {
        &self.route
    }

    pub fn called_ae(&self) -> &AeTitle {
        &self.facts.called_ae
    }

    pub fn calling_ae(&self) -> &AeTitle {
        &self.facts.calling_ae
    }

    pub fn source(&self) -> IpAddr {
        self.facts.source
    }

    pub fn facts(&self) -> &AssociationFacts {
        &self.facts
    }

    /// TLS settings for the upstream connection (`None`: plain TCP, or the vault).
    pub fn upstream_tls(&self) -> Option<&UpstreamTls> {
        self.upstream_tls.as_ref()
    }

    /// The verified client certificate the association was admitted with, if any.
    pub fn client_cert(&self) -> Option<&CertFacts> {
        self.client_cert.as_ref()
    }

    /// What the User Identity amounted to.
    pub fn user(&self) -> &UserStatus {
        &self.user
    }

    /// The authenticated user name (User Identity type 2 or 5 verified), for the audit trail.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.user.authenticated_user()
    }

    /// `Some(server_response)` when the A-ASSOCIATE-AC must carry a User Identity sub-item
    /// (item type 0x59) with that Server-response: the client asked for a positive response
    /// and its type 2 identity was verified (the response is then empty, PS3.7 D.3.3.7.2).
    /// `None`: send no such sub-item.
    pub fn user_identity_response(&self) -> Option<&'static [u8]> {
        self.user_identity_response.then_some(&[])
    }
}

/// Which condition failed. Never carries the expected value (nor a presented secret).
///
/// The first two are decided before a peer is chosen; the others are the chosen peer's
/// identity conditions, checked in this order: certificate presence, fingerprint, subject CN,
/// SAN, then the User Identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerMismatch {
    /// No peer lists this calling AE title (and none accepts any AE title).
    #[error("no peer uses this calling AE title")]
    UnknownAeTitle,
    /// Peers use this calling AE title, but none from this source address.
    #[error("no peer with this calling AE title connects from this address")]
    AddressNotAllowed,
    /// The peer requires TLS with a verified client certificate; none was presented (or the
    /// connection is plain TCP).
    #[error("the peer requires a client certificate and none was presented")]
    CertificateRequired,
    /// The certificate's SHA-256 fingerprint is not among the peer's `cert_sha256`.
    #[error("client certificate fingerprint not accepted for this peer")]
    CertificateFingerprintMismatch,
    /// The certificate's subject CN is not among the peer's `cert_subject_cn`.
    #[error("client certificate subject not accepted for this peer")]
    CertificateSubjectMismatch,
    /// None of the certificate's SANs is among the peer's `cert_san`.
    #[error("client certificate subject alternative names not accepted for this peer")]
    CertificateSanMismatch,
    /// The peer requires an authenticated user (type 2 or 5); none was sent, or only a type 1
    /// username (never authentication), or a type that is not verified (3, 4).
    #[error("the peer requires an authenticated user identity")]
    UserIdentityRequired,
    /// A User Identity was sent and failed verification.
    #[error("user identity rejected: {0}")]
    UserIdentityRejected(Rejection),
    /// The user (authenticated, or claimed with type 1) is not in the peer's `users`.
    #[error("user not allowed for this peer")]
    UserNotAllowed,
}

impl PeerMismatch {
    /// A stable snake_case name of the failed condition, for events and metrics.
    pub fn condition(&self) -> &'static str {
        match self {
            PeerMismatch::UnknownAeTitle => "calling_ae",
            PeerMismatch::AddressNotAllowed => "address",
            PeerMismatch::CertificateRequired => "certificate_required",
            PeerMismatch::CertificateFingerprintMismatch => "cert_sha256",
            PeerMismatch::CertificateSubjectMismatch => "cert_subject_cn",
            PeerMismatch::CertificateSanMismatch => "cert_san",
            PeerMismatch::UserIdentityRequired => "user_identity_required",
            PeerMismatch::UserIdentityRejected(_) => "user_identity_rejected",
            PeerMismatch::UserNotAllowed => "users",
        }
    }

    /// Whether the condition concerns the caller's certificate or user identity (rather than
    /// its AE title or address).
    pub fn is_identity(&self) -> bool {
        !matches!(
            self,
            PeerMismatch::UnknownAeTitle | PeerMismatch::AddressNotAllowed
        )
    }
}

/// Why an association is refused (A-ASSOCIATE-RJ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AssociationRefusal {
    #[error("calling AE title not recognized: {why}")]
    CallingAeNotRecognized { why: PeerMismatch },
    #[error("called AE title not recognized")]
    CalledAeNotRecognized,
}

impl AssociationRefusal {
    /// A-ASSOCIATE-RJ Result: 1 = rejected-permanent.
    pub fn rj_result(&self) -> u8 {
        1
    }

    /// A-ASSOCIATE-RJ Source: 1 = DICOM UL service-user.
    pub fn rj_source(&self) -> u8 {
        1
    }

    /// A-ASSOCIATE-RJ Reason/Diag.: 3 = calling-AE-title-not-recognized,
    /// 7 = called-AE-title-not-recognized (PS3.8 Table 9-21).
    pub fn rj_reason(&self) -> u8 {
        match self {
            AssociationRefusal::CallingAeNotRecognized { .. } => 3,
            AssociationRefusal::CalledAeNotRecognized => 7,
        }
    }

    /// `(result, source, reason)` as sent in the A-ASSOCIATE-RJ PDU.
    pub fn rj_triple(&self) -> (u8, u8, u8) {
        (self.rj_result(), self.rj_source(), self.rj_reason())
    }
}

/// The answer for one proposed presentation context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextDecision {
    Accept,
    Reject(RejectWhy),
}

/// Why a presentation context is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RejectWhy {
    /// A known abstract syntax whose operation the peer is not allowed.
    #[error("{0} is not allowed for this peer")]
    OperationNotAllowed(Operation),
    /// A Storage SOP class not in the peer's `store_sop_classes`.
    #[error("SOP class not allowed for this peer")]
    SopClassNotAllowed,
    /// Not Verification, not a supported Q/R model, not a Storage SOP class this peer may use.
    #[error("abstract syntax not supported")]
    AbstractSyntaxNotSupported,
    /// The policy was swapped and no longer admits this association.
    #[error("the policy in force no longer admits this association")]
    AdmissionWithdrawn,
}

impl RejectWhy {
    /// A-ASSOCIATE-AC presentation context result: 1 = user-rejection (policy said no),
    /// 3 = abstract-syntax-not-supported (provider rejection).
    pub fn pc_result(&self) -> u8 {
        match self {
            RejectWhy::AbstractSyntaxNotSupported => 3,
            _ => 1,
        }
    }
}

/// What the gateway knows about one DIMSE request (its command set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimseFacts {
    pub command: CommandField,
    /// Affected (or Requested) SOP Class UID.
    pub sop_class: Option<String>,
    /// Move Destination (0000,0600), C-MOVE only.
    pub move_destination: Option<AeTitle>,
}

/// Proof that a request may be relayed. Only [`Policy::dimse`] builds one.
#[derive(Debug)]
pub struct Permitted {
    command: CommandField,
}

impl Permitted {
    /// The command that was permitted.
    pub fn command(&self) -> CommandField {
        self.command
    }
}

/// Why a request is refused, and the DIMSE status to answer it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (status {status:#06x})")]
pub struct DimseRefusal {
    pub status: u16,
    pub reason: DimseRefusalReason,
}

impl DimseRefusal {
    fn new(reason: DimseRefusalReason) -> Self {
        DimseRefusal {
            status: reason.status(),
            reason,
        }
    }

    /// Text for the Error Comment (0000,0902): at most 64 characters, no expected values.
    pub fn comment(&self) -> &'static str {
        self.reason.comment()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DimseRefusalReason {
    /// The peer may not use this operation (0x0124).
    #[error("{0} is not allowed for this peer")]
    OperationNotAllowed(Operation),
    /// The SOP class is not allowed for this peer or does not belong to the command (0x0124).
    #[error("SOP class not allowed for this peer and command")]
    SopClassNotAllowed,
    /// The C-MOVE destination is not in the peer's `move_destinations` (0xA801).
    #[error("move destination not allowed")]
    MoveDestinationNotAllowed,
    /// A required command element is absent (0x0120).
    #[error("missing {0}")]
    MissingAttribute(&'static str),
    /// Unknown command fields, and DIMSE-N requests on a C-service's SOP class (0x0211).
    #[error("unrecognized command field {0:#06x}")]
    UnrecognizedCommand(u16),
    /// A response was passed to [`Policy::dimse`], which judges requests only (0x0211).
    #[error("{0:?} is a response, not a request")]
    NotARequest(CommandField),
    /// The policy was swapped and no longer admits this association (0x0124).
    #[error("the policy in force no longer admits this association")]
    AdmissionWithdrawn,
}

impl DimseRefusalReason {
    pub fn status(&self) -> u16 {
        match self {
            DimseRefusalReason::OperationNotAllowed(_)
            | DimseRefusalReason::SopClassNotAllowed
            | DimseRefusalReason::AdmissionWithdrawn => status::REFUSED_NOT_AUTHORIZED,
            DimseRefusalReason::MoveDestinationNotAllowed => status::MOVE_DESTINATION_UNKNOWN,
            DimseRefusalReason::MissingAttribute(_) => status::MISSING_ATTRIBUTE,
            DimseRefusalReason::UnrecognizedCommand(_) | DimseRefusalReason::NotARequest(_) => {
                status::UNRECOGNIZED_OPERATION
            }
        }
    }

    pub fn comment(&self) -> &'static str {
        match self {
            DimseRefusalReason::OperationNotAllowed(_) => "Radguard: operation not allowed",
            DimseRefusalReason::SopClassNotAllowed => "Radguard: SOP class not allowed",
            DimseRefusalReason::MoveDestinationNotAllowed => {
                "Radguard: move destination not allowed"
            }
            DimseRefusalReason::MissingAttribute(_) => "Radguard: required command element missing",
            DimseRefusalReason::UnrecognizedCommand(_) | DimseRefusalReason::NotARequest(_) => {
                "Radguard: unrecognized operation"
            }
            DimseRefusalReason::AdmissionWithdrawn => "Radguard: policy changed, not authorized",
        }
    }
}

impl Policy {
    pub(crate) fn new(peers: Vec<Peer>, routes: Vec<RouteEntry>, directory: UserDirectory) -> Self {
        Policy {
            inner: Arc::new(PolicyInner {
                peers: peers.into_iter().map(Arc::new).collect(),
                routes,
                directory,
            }),
        }
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.inner.peers.iter().map(|p| &**p)
    }

    pub fn routes(&self) -> &[RouteEntry] {
        &self.inner.routes
    }

    /// The route for a called AE title, if any.
    pub fn route_for(&self, called_ae: &AeTitle) -> Option<&Route> {
        self.route_entry(called_ae).map(|r| &r.route)
    }

    /// The route entry (route and upstream TLS) for a called AE title, if any.
    pub fn route_entry(&self, called_ae: &AeTitle) -> Option<&RouteEntry> {
        self.inner.routes.iter().find(|r| &r.called_ae == called_ae)
    }

    /// User names with a `[[user]]` (type 2 passcode) entry, sorted.
    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.inner.directory.users.keys().map(String::as_str)
    }

    /// Whether `[jwt]` is configured (type 5 identities can be verified).
    pub fn has_jwt(&self) -> bool {
        self.inner.directory.jwt.is_some()
    }

    /// Decides an A-ASSOCIATE-RQ that arrived over plain TCP without a User Identity sub-item:
    /// [`Policy::admit_with`] with `IdentityFacts::default()`. A peer that requires a
    /// certificate or an authenticated user is refused.
    pub fn admit(&self, facts: &AssociationFacts) -> Result<Admission, AssociationRefusal> {
        self.admit_with(facts, &IdentityFacts::default())
    }

    /// Decides an A-ASSOCIATE-RQ, identity included. In order:
    /// 1. a peer must list the calling AE title (or `"*"`) *and* the source address (config
    ///    validation guarantees at most one does);
    /// 2. that peer's certificate conditions must hold for `identity.client_cert`;
    /// 3. its User Identity conditions must hold: a type 2 or 5 identity that is sent is
    ///    verified (Argon2id / JWT, slow on purpose: call this from a blocking task), type 1
    ///    is only a claim;
    /// 4. the called AE title must select a route.
    ///
    /// Steps 1–3 refuse with RJ 1/1/3 ([`AssociationRefusal::CallingAeNotRecognized`], naming
    /// the failed condition), step 4 with RJ 1/1/7.
    pub fn admit_with(
        &self,
        facts: &AssociationFacts,
        identity: &IdentityFacts,
    ) -> Result<Admission, AssociationRefusal> {
        self.admit_at(facts, identity, SystemTime::now())
    }

    /// [`Policy::admit_with`] at a given time (JWT `exp` / `nbf`): the decision is a pure
    /// function of the facts and the clock.
    pub fn admit_at(
        &self,
        facts: &AssociationFacts,
        identity: &IdentityFacts,
        now: SystemTime,
    ) -> Result<Admission, AssociationRefusal> {
        let refuse = |why| AssociationRefusal::CallingAeNotRecognized { why };
        let peer = self.match_peer(facts).map_err(refuse)?;
        let id = &peer.identity;
        id.check_cert(identity.client_cert.as_ref())
            .map_err(refuse)?;
        let (user, response) = if id.user_identity == UserIdentityRequirement::Ignore {
            (UserStatus::None, false)
        } else {
            self.inner
                .directory
                .authenticate(identity.user.as_ref(), now)
                .map_err(|r| refuse(PeerMismatch::UserIdentityRejected(r)))?
        };
        id.check_user(&user).map_err(refuse)?;
        let entry = self
            .route_entry(&facts.called_ae)
            .ok_or(AssociationRefusal::CalledAeNotRecognized)?;
        Ok(Admission {
            peer: Arc::clone(peer),
            route: entry.route.clone(),
            upstream_tls: entry.tls.clone(),
            facts: facts.clone(),
            client_cert: identity.client_cert.clone(),
            user,
            user_identity_response: response,
        })
    }

    /// The one peer whose AE titles and addresses match.
    fn match_peer(&self, facts: &AssociationFacts) -> Result<&Arc<Peer>, PeerMismatch> {
        let mut ae_known = false;
        for peer in &self.inner.peers {
            if peer.ae_titles.matches(&facts.calling_ae) {
                ae_known = true;
                if peer.accepts_address(facts.source) {
                    return Ok(peer);
                }
            }
        }
        Err(if ae_known {
            PeerMismatch::AddressNotAllowed
        } else {
            PeerMismatch::UnknownAeTitle
        })
    }

    /// The peer an admission stands for under *this* policy (see the module docs on swaps).
    ///
    /// Under a newer policy the admission is checked again without repeating authentication
    /// (no passcode is kept): the same peer must match, its certificate conditions must hold
    /// for the certificate admitted with, its user conditions for the user admitted with — and
    /// a passcode user must still have a `[[user]]`, a JWT user still a `[jwt]` — and the called
    /// AE must still select the same route with the same upstream TLS settings.
    fn current_peer(&self, adm: &Admission) -> Option<Arc<Peer>> {
        if self.inner.peers.iter().any(|p| Arc::ptr_eq(p, &adm.peer)) {
            return Some(Arc::clone(&adm.peer));
        }
        let peer = self.match_peer(&adm.facts).ok()?;
        peer.identity.check_cert(adm.client_cert.as_ref()).ok()?;
        let ignored = peer.identity.user_identity == UserIdentityRequirement::Ignore;
        let still_verifiable = ignored
            || match &adm.user {
                UserStatus::Authenticated {
                    username,
                    method: AuthMethod::Passcode,
                } => self.inner.directory.users.contains_key(username),
                UserStatus::Authenticated {
                    method: AuthMethod::Jwt,
                    ..
                } => self.inner.directory.jwt.is_some(),
                _ => true,
            };
        if !still_verifiable {
            return None;
        }
        peer.identity.check_user(&adm.user).ok()?;
        let entry = self.route_entry(&adm.facts.called_ae)?;
        (entry.route == adm.route && entry.tls == adm.upstream_tls).then(|| Arc::clone(peer))
    }

    /// Decides one proposed presentation context (its abstract syntax):
    /// - Verification iff `echo`;
    /// - the FIND models in [`sop::FIND_MODELS`] iff `find`, [`sop::MOVE_MODELS`] iff `move`,
    ///   [`sop::GET_MODELS`] iff `get`;
    /// - a SOP class allowed by `store_sop_classes` iff `store` or `get` (C-GET retrieves arrive
    ///   as C-STORE sub-operations on the same association);
    /// - a SOP class in `n_sop_classes` (which exists only when `allow` or `receive` names a
    ///   DIMSE-N service): which N-services pass on it is decided per request;
    /// - anything else is rejected.
    pub fn context(&self, adm: &Admission, abstract_syntax: &str) -> ContextDecision {
        let Some(peer) = self.current_peer(adm) else {
            return ContextDecision::Reject(RejectWhy::AdmissionWithdrawn);
        };
        let Ok(uid) = Uid::new(abstract_syntax) else {
            return ContextDecision::Reject(RejectWhy::AbstractSyntaxNotSupported);
        };
        let uid = uid.as_str();
        let gate = |op: Operation| {
            if peer.allows(op) {
                ContextDecision::Accept
            } else {
                ContextDecision::Reject(RejectWhy::OperationNotAllowed(op))
            }
        };
        if uid == sop::VERIFICATION {
            return gate(Operation::Echo);
        }
        if sop::FIND_MODELS.contains(&uid) {
            return gate(Operation::Find);
        }
        if sop::MOVE_MODELS.contains(&uid) {
            return gate(Operation::Move);
        }
        if sop::GET_MODELS.contains(&uid) {
            return gate(Operation::Get);
        }
        if peer.may_use_n_class(uid) {
            // n_sop_classes exists only when allow or receive names an N-service.
            return ContextDecision::Accept;
        }
        let may_receive = peer.allows(Operation::Store) || peer.allows(Operation::Get);
        if may_receive && peer.may_store_class(uid) {
            return ContextDecision::Accept;
        }
        if sop::is_storage_sop_class(uid) {
            if may_receive {
                ContextDecision::Reject(RejectWhy::SopClassNotAllowed)
            } else {
                ContextDecision::Reject(RejectWhy::OperationNotAllowed(Operation::Store))
            }
        } else {
            ContextDecision::Reject(RejectWhy::AbstractSyntaxNotSupported)
        }
    }

    /// Decides one DIMSE **request** from the peer. Responses are not judged here (the gateway
    /// relays them by message ID); passing one is refused with 0x0211.
    ///
    /// Every request but C-CANCEL must carry its Affected SOP Class UID, and it must belong to the
    /// command (Verification for C-ECHO, a FIND/MOVE/GET model for C-FIND/C-MOVE/C-GET, an
    /// allowed storage class for C-STORE). C-MOVE must name an allowed destination. C-CANCEL is
    /// permitted when the peer may find, move or get (otherwise refused as `find` not allowed).
    /// A DIMSE-N request needs its operation in `allow` and its (Affected or Requested) SOP
    /// class in `n_sop_classes` (0x0124 otherwise); on a C-service's SOP class (Verification,
    /// Storage, Query/Retrieve) it is 0x0211. Unknown commands: 0x0211.
    /// The C-FIND result cap of an admitted association's peer under this policy (`None`: no
    /// cap, or the policy no longer admits it — its next request is refused anyway).
    pub fn max_find_results(&self, adm: &Admission) -> Option<u32> {
        self.current_peer(adm)?.max_find_results
    }

    pub fn dimse(&self, adm: &Admission, req: &DimseFacts) -> Result<Permitted, DimseRefusal> {
        let refuse = |reason| Err(DimseRefusal::new(reason));
        let Some(peer) = self.current_peer(adm) else {
            return refuse(DimseRefusalReason::AdmissionWithdrawn);
        };
        let command = req.command;
        if command.is_response() {
            return match command {
                CommandField::Other(v) => refuse(DimseRefusalReason::UnrecognizedCommand(v)),
                _ => refuse(DimseRefusalReason::NotARequest(command)),
            };
        }
        let op = match command {
            CommandField::CCancelRq => {
                let may_cancel = [Operation::Find, Operation::Move, Operation::Get]
                    .into_iter()
                    .any(|op| peer.allows(op));
                return if may_cancel {
                    Ok(Permitted { command })
                } else {
                    refuse(DimseRefusalReason::OperationNotAllowed(Operation::Find))
                };
            }
            CommandField::Other(v) => return refuse(DimseRefusalReason::UnrecognizedCommand(v)),
            CommandField::NEventReportRq
            | CommandField::NGetRq
            | CommandField::NSetRq
            | CommandField::NActionRq
            | CommandField::NCreateRq
            | CommandField::NDeleteRq => {
                return judge_normalized(&peer.allow, &peer, req);
            }
            CommandField::CEchoRq => Operation::Echo,
            CommandField::CStoreRq => Operation::Store,
            CommandField::CFindRq => Operation::Find,
            CommandField::CMoveRq => Operation::Move,
            CommandField::CGetRq => Operation::Get,
            // Responses were handled above; listed to keep the match exhaustive.
            CommandField::CEchoRsp
            | CommandField::CStoreRsp
            | CommandField::CFindRsp
            | CommandField::CMoveRsp
            | CommandField::CGetRsp
            | CommandField::NEventReportRsp
            | CommandField::NGetRsp
            | CommandField::NSetRsp
            | CommandField::NActionRsp
            | CommandField::NCreateRsp
            | CommandField::NDeleteRsp => return refuse(DimseRefusalReason::NotARequest(command)),
        };
        if !peer.allows(op) {
            return refuse(DimseRefusalReason::OperationNotAllowed(op));
        }
        let Some(raw_class) = req.sop_class.as_deref() else {
            return refuse(DimseRefusalReason::MissingAttribute(
                "Affected SOP Class UID",
            ));
        };
        let Ok(class) = Uid::new(raw_class) else {
            return refuse(DimseRefusalReason::SopClassNotAllowed);
        };
        let class = class.as_str();
        let class_ok = match op {
            Operation::Echo => class == sop::VERIFICATION,
            Operation::Store => peer.may_store_class(class),
            Operation::Find => sop::FIND_MODELS.contains(&class),
            Operation::Move => sop::MOVE_MODELS.contains(&class),
            Operation::Get => sop::GET_MODELS.contains(&class),
            // Judged by `judge_normalized` above.
            Operation::NEventReport
            | Operation::NGet
            | Operation::NSet
            | Operation::NAction
            | Operation::NCreate
            | Operation::NDelete => false,
        };
        if !class_ok {
            return refuse(DimseRefusalReason::SopClassNotAllowed);
        }
        if op == Operation::Move {
            let Some(dest) = req.move_destination.as_ref() else {
                return refuse(DimseRefusalReason::MissingAttribute("Move Destination"));
            };
            let allowed = peer
                .move_destinations
                .as_ref()
                .is_some_and(|d| d.matches(dest));
            if !allowed {
                return refuse(DimseRefusalReason::MoveDestinationNotAllowed);
            }
        }
        Ok(Permitted { command })
    }

    /// Decides one DIMSE request the **called side** (the upstream) sends the peer on the
    /// peer's own association: only DIMSE-N requests are judged here — the C-STORE
    /// sub-operations of a C-GET are the answer to the peer's own C-GET. The operation must be
    /// in the peer's `receive` and the SOP class in its `n_sop_classes` (0x0124 otherwise); any
    /// other request is refused with 0x0211 (PS3.7: only the SOP class's own SCP-to-SCU
    /// notifications, such as Storage Commitment's N-EVENT-REPORT, PS3.4 J.3.3, travel this
    /// way).
    pub fn dimse_from_called(
        &self,
        adm: &Admission,
        req: &DimseFacts,
    ) -> Result<Permitted, DimseRefusal> {
        let Some(peer) = self.current_peer(adm) else {
            return Err(DimseRefusal::new(DimseRefusalReason::AdmissionWithdrawn));
        };
        let command = req.command;
        if command.is_response() {
            return Err(DimseRefusal::new(DimseRefusalReason::NotARequest(command)));
        }
        if !command.is_normalized() {
            return Err(DimseRefusal::new(DimseRefusalReason::UnrecognizedCommand(
                command.to_u16(),
            )));
        }
        judge_normalized(&peer.receive, &peer, req)
    }

    /// A human-readable, multi-line summary of the routes and peers.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        out.push_str("routes (called AE -> destination):\n");
        if self.inner.routes.is_empty() {
            out.push_str("  (none: every association is refused)\n");
        }
        for r in &self.inner.routes {
            out.push_str(&format!("  {} -> {}", r.called_ae, r.route));
            if let Some(tls) = &r.tls {
                out.push_str(&format!(
                    ", over TLS (server name {}, CA {}{})",
                    tls.server_name,
                    tls.ca.display(),
                    match &tls.client_cert {
                        Some(c) => format!(", client certificate {}", c.display()),
                        None => String::new(),
                    }
                ));
            }
            out.push('\n');
        }
        out.push_str("peers (anything not listed is refused):\n");
        if self.inner.peers.is_empty() {
            out.push_str("  (none: every association is refused)\n");
        }
        for p in &self.inner.peers {
            let addrs: Vec<String> = p.addresses.iter().map(ToString::to_string).collect();
            let ops: Vec<String> = p.allow.iter().map(ToString::to_string).collect();
            out.push_str(&format!("  {}:\n", p.name));
            out.push_str(&format!("    calling AE: {}\n", p.ae_titles));
            out.push_str(&format!("    from: {}\n", addrs.join(", ")));
            out.push_str(&format!("    allow: {}\n", ops.join(", ")));
            if let Some(set) = &p.store_sop_classes {
                out.push_str(&format!("    store/get SOP classes: {set}\n"));
            }
            if let Some(dests) = &p.move_destinations {
                out.push_str(&format!("    move destinations: {dests}\n"));
            }
            if let Some(classes) = &p.n_sop_classes {
                let names: Vec<&str> = classes
                    .iter()
                    .map(|u| sop::keyword_for_uid(u).unwrap_or(u))
                    .collect();
                out.push_str(&format!("    DIMSE-N SOP classes: {}\n", names.join(", ")));
            }
            if !p.receive.is_empty() {
                let ops: Vec<String> = p.receive.iter().map(ToString::to_string).collect();
                out.push_str(&format!("    receives: {}\n", ops.join(", ")));
            }
            let id = &p.identity;
            if id.tls == crate::TlsRequirement::Required {
                let mut conds: Vec<String> = Vec::new();
                if !id.cert_sha256.is_empty() {
                    conds.push(format!("SHA-256 one of {} listed", id.cert_sha256.len()));
                }
                if !id.cert_subject_cn.is_empty() {
                    conds.push(format!("CN in {}", id.cert_subject_cn.join(", ")));
                }
                if !id.cert_san.is_empty() {
                    conds.push(format!("SAN in {}", id.cert_san.join(", ")));
                }
                out.push_str("    client certificate: required");
                if !conds.is_empty() {
                    out.push_str(&format!(" ({})", conds.join("; ")));
                }
                out.push('\n');
            }
            match id.user_identity {
                UserIdentityRequirement::Optional if id.users.is_none() => {}
                req => {
                    let word = match req {
                        UserIdentityRequirement::Ignore => "ignored",
                        UserIdentityRequirement::Optional => "optional",
                        UserIdentityRequirement::Required => "required (type 2 or 5)",
                    };
                    out.push_str(&format!("    user identity: {word}"));
                    if let Some(users) = &id.users {
                        out.push_str(&format!("; users {}", users.join(", ")));
                    }
                    out.push('\n');
                }
            }
        }
        let dir = &self.inner.directory;
        if !dir.users.is_empty() {
            let names: Vec<&str> = dir.users.keys().map(String::as_str).collect();
            out.push_str(&format!("users with a passcode: {}\n", names.join(", ")));
        }
        if let Some(jwt) = &dir.jwt {
            let kids: Vec<String> = jwt
                .keys
                .iter()
                .map(|k| format!("{} ({})", k.kid, k.alg.as_str()))
                .collect();
            out.push_str(&format!(
                "JWT: issuer {:?}, audience {:?}, keys {}\n",
                jwt.issuer,
                jwt.audience,
                kids.join(", ")
            ));
        }
        out
    }
}

/// A DIMSE-N request against one direction's operations (`allow` for the peer's requests,
/// `receive` for the called side's) and the peer's `n_sop_classes`: a C-service's class is
/// 0x0211, then the operation, then the class; those two refusals are 0x0124.
fn judge_normalized(
    operations: &BTreeSet<Operation>,
    peer: &Peer,
    req: &DimseFacts,
) -> Result<Permitted, DimseRefusal> {
    let refuse = |reason| Err(DimseRefusal::new(reason));
    let Some(op) = req.command.operation().filter(|op| op.is_normalized()) else {
        return refuse(DimseRefusalReason::UnrecognizedCommand(
            req.command.to_u16(),
        ));
    };
    // An N-service on a C-service's SOP class (Verification, Storage, Query/Retrieve) is not
    // an operation of that class at all: PS3.7 C.4 Unrecognized Operation, whatever the peer
    // may do elsewhere.
    if req
        .sop_class
        .as_deref()
        .is_some_and(|c| !sop::is_normalized_candidate(c))
    {
        return refuse(DimseRefusalReason::UnrecognizedCommand(
            req.command.to_u16(),
        ));
    }
    if !operations.contains(&op) {
        return refuse(DimseRefusalReason::OperationNotAllowed(op));
    }
    let Some(raw_class) = req.sop_class.as_deref() else {
        return refuse(DimseRefusalReason::MissingAttribute("SOP Class UID"));
    };
    match Uid::new(raw_class) {
        Ok(class) if peer.may_use_n_class(class.as_str()) => Ok(Permitted {
            command: req.command,
        }),
        _ => refuse(DimseRefusalReason::SopClassNotAllowed),
    }
}
