//! The commands of the binary: each module owns its flags, output formats and exit codes over
//! the library crates, which return typed results.

pub mod alerts;
pub mod audit;
pub mod block;
pub mod config;
pub mod console;
pub mod datadir;
pub mod deid;
pub mod files_bar;
pub mod guard;
pub mod learned;
pub mod ledger;
pub mod media;
pub mod probe;
pub mod queue;
pub mod reload;
pub mod serve;
pub mod tls;
pub mod vault_check;
pub mod vault_replay;
pub mod vault_scrub;
