//! The `[ledger]` section of the gateway's config file, read from the whole file so that every
//! problem is reported as `FILE:LINE:COL: field `ledger.key`: message`.
//!
//! ```toml
//! [ledger]
//! origin = "radiology.example.org/radguard/ct1"  # checkpoint origin; default radguard.local/<AE title>
//! gateway_id = "ct1-gw"                          # this gateway in ledger entries; default its AE title
//! ```

use serde::Deserialize;

use crate::note;
use radguard_toml::{read_section, Placed, PlacedErrors, Seg};

/// The `[ledger]` table; every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The log's origin line in its signed checkpoints (C2SP tlog-checkpoint), e.g.
    /// `radiology.example.org/radguard/ct1`; default `radguard.local/<AE title>`.
    pub origin: Option<String>,
    /// This gateway's name in ledger entries; default its AE title.
    pub gateway_id: Option<String>,
}

/// The longest `gateway_id`: an entry stores it behind a one-byte length.
pub const MAX_GATEWAY_ID: usize = 255;

/// What is wrong with the `[ledger]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A syntax error, an unknown key or a value of the wrong type (the TOML parser's words).
    #[error("{0}")]
    Toml(String),
    /// Not usable as a checkpoint origin (C2SP signed-note key name).
    #[error(
        "invalid origin {0:?}: 1 to 255 bytes, no spaces, control characters or '+' (it names the \
         log in its signed checkpoints, e.g. \"radiology.example.org/radguard/ct1\")"
    )]
    Origin(String),
    /// Empty, or longer than an entry can hold.
    #[error("gateway_id must be 1 to {MAX_GATEWAY_ID} bytes (it is {0})")]
    GatewayId(usize),
}

/// One problem in the `[ledger]` section, with its place in the file.
pub type ConfigError = Placed<Problem>;

/// Every problem found in the `[ledger]` section (never empty when returned as an error), in
/// file order.
pub type ConfigErrors = PlacedErrors<ConfigError>;

/// Only the section this crate owns; the other keys of the file are other crates' business.
#[derive(Deserialize)]
struct Document {
    ledger: Option<LedgerConfig>,
}

impl LedgerConfig {
    /// Reads and checks the `[ledger]` section of a whole config file `src` (named `file` in
    /// errors); no section gives the defaults.
    pub fn from_document(src: &str, file: &str) -> Result<LedgerConfig, ConfigErrors> {
        read_section(
            src,
            file,
            Problem::Toml,
            |doc: Document| doc.ledger.unwrap_or_default(),
            |c: &LedgerConfig| {
                let at = |key| vec![Seg::Key("ledger"), Seg::Key(key)];
                c.problems()
                    .into_iter()
                    .map(|(key, p)| (at(key), p))
                    .collect()
            },
        )
    }

    /// What is wrong with the values (each with its key), whatever their origin.
    pub fn problems(&self) -> Vec<(&'static str, Problem)> {
        let mut out = Vec::new();
        if let Some(origin) = &self.origin {
            if !note::valid_name(origin) {
                out.push(("origin", Problem::Origin(origin.clone())));
            }
        }
        if let Some(id) = &self.gateway_id {
            if id.is_empty() || id.len() > MAX_GATEWAY_ID {
                out.push(("gateway_id", Problem::GatewayId(id.len())));
            }
        }
        out
    }

    /// The checkpoint origin: `origin`, or `radguard.local/<AE title>` with each character an
    /// origin cannot hold (a space, which AE titles may contain inside — PS3.5 §6.2 — a control
    /// character or '+') written as '_', so that every valid AE title gives a valid origin.
    pub fn origin_for(&self, ae_title: &str) -> String {
        self.origin.clone().unwrap_or_else(|| {
            let name: String = ae_title
                .chars()
                .map(|c| {
                    if c == ' ' || c == '+' || c.is_control() {
                        '_'
                    } else {
                        c
                    }
                })
                .collect();
            format!("radguard.local/{name}")
        })
    }

    /// The gateway's name in entries: `gateway_id`, or the AE title.
    pub fn gateway_id_for(&self, ae_title: &str) -> String {
        self.gateway_id
            .clone()
            .unwrap_or_else(|| ae_title.to_string())
    }
}
