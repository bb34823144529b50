//! `radguard config check|default`, and [`load_config`]: the one function that loads and checks
//! everything a config names, for `serve`, `reload` (SIGHUP) and `config check` alike.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: prints every error as FILE:LINE:COL with the field, exit 1 if
    /// any, 0 when valid (and then prints the policy it describes).
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the embedded default configuration as TOML.
    Default,
}

/// Runs `radguard config check|default`.
pub fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check { file } => match radguard_config::load_file(&file) {
            // Every section's errors, in file order, as FILE:LINE:COL; then what needs more than
            // the file (the certificates and keys it names), as `serve` would load them.
            Ok(loaded) => match radguard_gateway::tls::build(&loaded.config) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    println!("{}", loaded.config.describe());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: loading certificates and keys: {e:#}", file.display());
                    ExitCode::from(1)
                }
            },
            Err(errs) => {
                eprintln!("{errs}");
                eprintln!("{}: {} error(s)", file.display(), errs.len());
                ExitCode::from(1)
            }
        },
        ConfigCommand::Default => {
            print!("{}", radguard_policy::EMBEDDED_DEFAULT_TOML);
            ExitCode::SUCCESS
        }
    }
}

/// Loads and checks everything a config names (every section, by the crate that owns it; the
/// TLS files): a config is taken whole or not at all, and `config check` checks exactly what
/// `serve` takes.
pub fn load_config(config: Option<&Path>) -> anyhow::Result<Loaded> {
    let loaded = match config {
        Some(path) => radguard_config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => radguard_config::Loaded::embedded_default(),
    };
    let tls =
        radguard_gateway::tls::build(&loaded.config).context("loading certificates and keys")?;
    Ok((loaded, tls))
}

/// A config with everything it names loaded: every section, certificates and keys.
pub type Loaded = (radguard_config::Loaded, radguard_gateway::TlsState);

#[cfg(test)]
mod packaged {
    use std::path::Path;

    fn load(name: &str) -> radguard_config::Loaded {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
        let src = std::fs::read_to_string(dir.join(name)).expect("packaged config");
        radguard_config::parse_config_in(&src, name, &dir)
            .unwrap_or_else(|e| panic!("{name} is not a valid config:\n{e}"))
    }

    /// The Debian package's /etc/radguard/radguard.toml is the embedded default.
    #[test]
    fn the_package_config_is_the_embedded_default() {
        assert!(load("radguard.toml") == radguard_config::Loaded::embedded_default());
    }

    /// The container's differs only in listening on every address of the container.
    #[test]
    fn the_container_config_is_the_default_on_every_address() {
        let mut got = load("container.toml");
        assert_eq!(
            got.config.server.listen,
            vec!["0.0.0.0:11112".parse().expect("address")]
        );
        got.config.server.listen = vec!["127.0.0.1:11112".parse().expect("address")];
        assert!(got == radguard_config::Loaded::embedded_default());
    }
}
