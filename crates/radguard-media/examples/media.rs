//! Stand-alone front end for trying the subcommands before they are wired into `radguard`:
//! `cargo run -p radguard-media --example media -- scan PATH...`.

use clap::{Parser, Subcommand};
use radguard_media::cli::{run_sanitize, run_scan, SanitizeArgs, ScanArgs};

#[derive(Parser)]
#[command(name = "media")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Scan(ScanArgs),
    Sanitize(SanitizeArgs),
}

fn main() {
    let status = match Cli::parse().cmd {
        Cmd::Scan(a) => run_scan(a),
        Cmd::Sanitize(a) => run_sanitize(a),
    };
    std::process::exit(status);
}
