//! PS3.15 Annex E de-identification as data-set transforms, whole or streamed (threat T3).
//!
//! The Basic Application Level Confidentiality Profile and its options come from
//! Table E.1-1 as *data* (`data/table_e1_1.tsv`, generated from a carried edition by
//! `tools/extract_table.py`), resolved into one operation per row, and applied to every
//! element at every depth of nested sequences. Replacement UIDs and Patient ID pseudonyms are
//! HMAC-SHA256 under a per-site key, so they are consistent across runs and gateways sharing
//! the key and cannot be reversed by guessing; there is no way to run without a key.
//!
//! # Map
//!
//! - [`table`] — Table E.1-1: rows, action codes, option columns, the carried edition.
//! - [`profile`] — [`Profile`]: Basic profile + [`DeidOption`]s resolved per row; the safe
//!   private list; what to do with burned-in annotation.
//! - [`keys`] — [`SiteKey`]: UIDs → `2.25.<n>`, Patient ID pseudonyms, date offsets.
//! - [`codec`] — the data-set tree and writer of `radguard_dicom::tree` (built from the one
//!   grammar's tokens, lengths recomputed), read as de-identification must read it.
//! - [`clean`] — dummy values, date shifting, the identifier matcher (clean and check).
//! - [`transform`] — [`Deidentifier`]: the transform and its [`Report`].
//! - [`stream`] — [`StreamDeid`]: the gateway's form; head held and rewritten, pixel data
//!   passed through untouched.
//! - [`part10`] — Part 10 files in and out (temporary file, then rename).
//! - [`check`] — the residual-PHI check.
//! - [`spec`] — [`DeidSpec`]: the route/CLI configuration and how it is built; [`DeidTable`]:
//!   a route's `deidentify` table as read from a config file, checked with positions.
//! - [`command`] — rewrite the Affected SOP Instance UID of a DIMSE command set.
//! - [`batch`] — files and folders de-identified into an output folder (reports, quarantine)
//!   or checked for residual PHI, in parallel, with progress through a callback: what
//!   `radguard deid` runs (its arguments, output and exit status are the binary's).
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use radguard_deid::{DeidOption, Deidentifier, Profile, ProfileName, SiteKey, StreamDeid};
//!
//! let profile = Profile::new(ProfileName::Basic, [DeidOption::RetainLongModifiedDates])?;
//! let key = SiteKey::from_file("/etc/radguard/deid.key".as_ref())?;
//! let deid = Arc::new(Deidentifier::new(profile, key));
//! let mut stream = StreamDeid::new(Arc::clone(&deid), "1.2.840.10008.1.2.1")?;
//! let mut out = Vec::new();
//! # let chunks: Vec<Vec<u8>> = vec![];
//! for chunk in &chunks {
//!     stream.push(chunk, &mut out)?;
//! }
//! let outcome = stream.finish(&mut out)?;
//! println!("{} changes", outcome.report.changes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod batch;
pub mod check;
pub mod clean;
pub mod codec;
pub mod command;
pub mod keys;
pub mod part10;
pub mod profile;
pub mod spec;
pub mod stream;
pub mod table;
pub mod transform;

pub use keys::{KeyError, SiteKey};
pub use profile::{
    BurnedInPolicy, DeidOption, Op, Profile, ProfileError, ProfileName, SafePrivateList,
};
pub use spec::{DeidSpec, DeidTable, SpecError, TableError};
pub use stream::{Outcome, StreamDeid, DEFAULT_HEAD_CAP};
pub use table::{Action, Column, Table};
pub use transform::{Change, DeidError, Deidentifier, Report};
