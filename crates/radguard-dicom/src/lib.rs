//! DICOM wire types for Radguard.
//!
//! This crate does no I/O. It knows the shapes of what crosses a DICOM link:
//! - [`types`]: AE titles, UIDs, DIMSE command fields and statuses, validated once.
//! - [`pdu`]: PDU framing (header check against the negotiated maximum before any allocation),
//!   P-DATA-TF PDV splitting without copies, and association PDUs via dicom-ul.
//! - [`dimse`]: DIMSE command sets: decode, validate, encode responses.
//! - [`assembler`]: the per-direction message view: command sets reassembled whole, data sets
//!   passed through as chunks.
//! - [`tokens`], [`ts`], [`limits`], [`inflate`]: the one data-set grammar (push tokenizer,
//!   transfer syntaxes, bounds, deflate); [`part10`]: the one File Meta reader/writer;
//!   [`head`]: the gateway's head sniffer; [`tree`]: the data-set tree built from the tokens,
//!   and its writer.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod types;

pub use types::{AeTitle, CommandField, FieldError, Operation, Uid};
pub mod assembler;
pub mod dimse;
pub mod head;
pub mod inflate;
pub mod limits;
pub mod part10;
pub mod pdu;
pub mod tokens;
pub mod tree;
pub mod ts;
pub mod validate;
