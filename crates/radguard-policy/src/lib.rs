//! Radguard's config model and its pure policy decisions.
//!
//! The gateway asks this crate three questions, in order, and forwards nothing it has not been
//! told yes to: may this association be admitted ([`Policy::admit_with`], or [`Policy::admit`]
//! without certificate and user identity)? may this presentation context be accepted
//! ([`Policy::context`])? may this DIMSE request be relayed ([`Policy::dimse`], whose
//! [`Permitted`] proof only this crate can build)? Anything the config does not name is refused.
//!
//! Modules:
//! - [`config`]: the TOML file (docs/config.md) in two stages — raw serde structs that refuse
//!   unknown keys, then validation into [`Config`] = [`ServerSettings`] + [`Policy`], reporting
//!   every problem as `FILE:LINE:COL: field `path`: message`;
//! - [`policy`]: the compiled policy (cheap to clone, `Arc` inside, meant to be swapped live
//!   through a `watch` channel) and the decision types;
//! - [`identity`]: who the caller proved to be — the verified client certificate and the User
//!   Identity (PS3.7 D.3.3.7; Argon2id passcodes, JWTs) — held against each peer's conditions by
//!   [`Policy::admit_with`];
//! - [`sop`]: which SOP classes are Verification, Query/Retrieve models, or Storage classes;
//! - [`error`]: [`ConfigError`] / [`ConfigErrors`].
//!
//! No I/O apart from loading a config: [`load_file`] reads the file, and validation checks that
//! the TLS files it names are readable and reads the JWT public keys. Decisions are pure (the
//! only clock read is `SystemTime::now()` for JWT `exp`/`nbf` in [`Policy::admit_with`]).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod identity;
pub mod policy;
pub mod sop;

pub use config::{
    load_file, parse_config, parse_config_in, ClientCertMode, Config, OnRevoke, ServerSettings,
    ServerTls, EMBEDDED_DEFAULT_TOML,
};
pub use error::{ConfigError, ConfigErrors};
pub use identity::{
    AuthMethod, CertFacts, IdentityFacts, PeerIdentity, Rejection, TlsRequirement,
    UserIdentityClaim, UserIdentityKind, UserIdentityRequirement, UserStatus,
};
pub use policy::{
    Admission, AeTitles, AssociationFacts, AssociationRefusal, ContextDecision, DimseFacts,
    DimseRefusal, DimseRefusalReason, FirewallLevel, HoldSettings, OriginRoute, Peer, PeerMismatch,
    Permitted, Policy, RejectWhy, Route, RouteEntry, SopClassSet, UpstreamTls,
};
