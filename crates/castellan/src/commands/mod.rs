//! One module per command group.

mod agent;
mod alerts;
mod audit;
mod background;
mod config;
mod dev;
mod events;
mod finding_checks;
mod findings;
mod init;
mod inventory;
mod monitor;
mod policy;
mod posture;
mod provider;
mod reminders;
mod rotation;
mod scan;
mod secret;
mod serve;
mod suggest;
mod token_files;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command, PolicyCommand};
use crate::data_dir::DataDir;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let data_dir = DataDir::from_cli(&cli);
    match cli.command {
        Command::Init(args) => init::run(&data_dir, &args).await,
        Command::Serve(args) if args.dev => dev::run(&args).await,
        Command::Serve(args) => serve::run(&data_dir, &args).await,
        Command::Config(command) => config::run(&data_dir, command).await,
        Command::Policy(PolicyCommand::Explain(args)) => policy::run(&data_dir, &args),
        Command::Policy(PolicyCommand::Suggest(args)) => suggest::run(&data_dir, &args).await,
        Command::Secret(command) => secret::run(&data_dir, command).await,
        Command::Rotation(command) => rotation::run(&data_dir, command).await,
        Command::Agent(command) => agent::run(&data_dir, command).await,
        Command::Audit(command) => audit::run(&data_dir, command).await,
        Command::Alerts(args) => alerts::run(&data_dir, args).await,
        Command::Scan(args) => scan::run(&data_dir, &args).await,
        Command::Inventory(args) => inventory::run(&data_dir, &args).await,
        Command::Findings(args) => findings::run(&data_dir, &args).await,
    }
}
