use std::{io::IsTerminal, process::ExitCode};

use synguard::{
    Error,
    cli::config_file::{self, ParseError},
    cli::{Command, LogFormat},
    cli::{dump, manual, verbs},
    control::ListKind,
    daemon::run,
};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The config file's values are the defaults of `run`'s flags (config_file.rs).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match config_file::parse_cli(argv.clone()) {
        Ok(cli) => cli,
        Err(ParseError::Usage(e)) => e.exit(),
        Err(ParseError::Config(e)) => {
            eprintln!("synguard: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Run(args) if args.log_format == LogFormat::Json => logs.json().init(),
        _ => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }

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
        Command::Run(args) => runtime.block_on(run::run(args, &argv)),
        Command::Status { target, json } => verbs::status(target, *json),
        Command::Set { target, pairs } => verbs::set(target, pairs),
        Command::Top { target, count } => verbs::top(target, *count),
        Command::Allow { target, action } => verbs::list(target, ListKind::Allow, action),
        Command::Deny { target, action } => verbs::list(target, ListKind::Deny, action),
        Command::Detach { target } => verbs::detach(target),
        Command::Dump(args) => runtime.block_on(dump::dump(args)),
        Command::Completions { shell } => manual::completions(*shell),
        Command::Manpages { dir, date } => manual::manpages(dir, date),
        Command::CheckConfig { file } => config_file::read(file, true).and_then(|read| {
            // Tables for interfaces the file does not protect, when it names them.
            if let Some(iface) = read.settings.iter().find(|s| s.key == "iface") {
                let ifaces: Vec<String> = iface
                    .values
                    .iter()
                    .flat_map(|v| v.split(',').map(str::to_string))
                    .collect();
                read.check_interfaces(&ifaces)
                    .map_err(|reason| Error::Config {
                        path: file.clone(),
                        reason,
                    })?;
            }
            println!("{}: OK, {} settings", file.display(), read.len());
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synguard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
