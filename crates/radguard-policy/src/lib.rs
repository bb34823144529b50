//! Radguard's config model and its pure policy decisions.
//!
//! The gateway asks this crate three questions, in order, and forwards nothing it has not been
//! told yes to: may this association be admitted ([`Policy::admit`])? may this presentation
//! context be accepted ([`Policy::context`])? may this DIMSE request be relayed
//! ([`Policy::dimse`], whose [`Permitted`] proof only this crate can build)? Anything the config
//! does not name is refused.
//!
//! Modules:
//! - [`config`]: the TOML file (docs/config.md) in two stages — raw serde structs that refuse
//!   unknown keys, then validation into [`Config`] = [`ServerSettings`] + [`Policy`], reporting
//!   every problem as `FILE:LINE:COL: field `path`: message`;
//! - [`policy`]: the compiled policy (cheap to clone, `Arc` inside, meant to be swapped live
//!   through a `watch` channel) and the decision types;
//! - [`sop`]: which SOP classes are Verification, Query/Retrieve models, or Storage classes;
//! - [`error`]: [`ConfigError`] / [`ConfigErrors`].
//!
//! No I/O apart from [`load_file`], which reads one file.
#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod policy;
pub mod sop;

pub use config::{load_file, parse_config, Config, ServerSettings, EMBEDDED_DEFAULT_TOML};
pub use error::{ConfigError, ConfigErrors};
pub use policy::{
    Admission, AeTitles, AssociationFacts, AssociationRefusal, ContextDecision, DimseFacts,
    DimseRefusal, DimseRefusalReason, Peer, PeerMismatch, Permitted, Policy, RejectWhy, Route,
    RouteEntry, SopClassSet,
};

#[cfg(test)]
mod tests;
