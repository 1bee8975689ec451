use std::{io::IsTerminal, process::ExitCode};

use clap::Parser;
use synguard::{
    cli::{Cli, Command},
    control::ListKind,
    run, verbs,
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
        Command::Status { target, json } => verbs::status(target, *json),
        Command::Set { target, pairs } => verbs::set(target, pairs),
        Command::Allow { target, action } => verbs::list(target, ListKind::Allow, action),
        Command::Deny { target, action } => verbs::list(target, ListKind::Deny, action),
        Command::Detach { target } => verbs::detach(target),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synguard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
