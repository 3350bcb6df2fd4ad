//! `castellan config check`.

use std::process::ExitCode;

use anyhow::Result;
use castellan_model::Config;

use crate::cli::ConfigCommand;
use crate::data_dir::DataDir;

pub fn run(data_dir: &DataDir, command: ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Check = command;
    match Config::load(&data_dir.config) {
        Ok(config) => {
            println!(
                "{}: valid ({} connections, {} roles, {} agents)",
                data_dir.config.display(),
                config.connections.len(),
                config.roles.len(),
                config.agents.len()
            );
            if let Err(error) = castellan_policy::Policy::compile(&config) {
                eprintln!("error: the roles do not compile to a policy: {error}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprint!("{error}");
            Ok(ExitCode::from(1))
        }
    }
}
