//! `cargo run -p radguard-policy --example check_config -- FILE`: validate a config file and
//! print either every error (`FILE:LINE:COL: field `path`: message`, exit 1) or the summary
//! `radguard serve` would print (exit 0).

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: check_config FILE");
        return ExitCode::from(2);
    };
    match radguard_policy::load_file(std::path::Path::new(&path)) {
        Ok(config) => {
            print!("{}", config.describe());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}
