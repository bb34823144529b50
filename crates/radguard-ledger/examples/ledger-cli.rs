//! A stand-alone front end for this crate's CLI (`verify`, `ledger …`), used by
//! `bench/verify.sh` and for trying the crate without the full `radguard` binary. The real
//! binary wires the same `cli` structs into `radguard verify` and `radguard ledger`.

use clap::{Parser, Subcommand};
use radguard_ledger::cli::{self, LedgerArgs, VerifyArgs};

#[derive(Parser)]
#[command(name = "radguard", about = "radguard-ledger CLI (verify, ledger)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Verify(VerifyArgs),
    Ledger(LedgerArgs),
}

fn main() {
    let code = match Cli::parse().command {
        Command::Verify(a) => cli::run_verify(a),
        Command::Ledger(a) => cli::run_ledger(a),
    };
    std::process::exit(code);
}
