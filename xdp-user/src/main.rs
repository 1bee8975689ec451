use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use synguard::{
    cli::{Cli, Command},
    run,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("synguard: error: starting the async runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match &cli.command {
        Command::Run(args) => runtime.block_on(run::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synguard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
