//! Stand-alone front end for trying `radguard deid` before it is wired into `radguard`:
//! `cargo run -p radguard-deid --example deid -- IN... --out DIR --key-file KEY`.

use clap::Parser;
use radguard_deid::cli::{run_deid, DeidArgs};

#[derive(Parser)]
#[command(name = "deid")]
struct Cli {
    #[command(flatten)]
    args: DeidArgs,
}

fn main() {
    std::process::exit(run_deid(Cli::parse().args));
}
