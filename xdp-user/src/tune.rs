//! `synguard set KEY=VALUE…`: run-time changes to the tunables, validated by the very parsers
//! the command line uses (the keys are `run`'s flag names), and applied all or none.

use clap::FromArgMatches;

use crate::{
    Error,
    cli::{self, RunArgs},
};

/// The flags of `run` that can change while it runs. The others (interface, attach mode,
/// addresses, directories, timestamps) need a restart; the lists have their own verbs.
pub const SETTABLE: [&str; 13] = [
    "mode",
    "ports",
    "auto-threshold",
    "auto-threshold-min",
    "auto-baseline-secs",
    "auto-port-threshold",
    "auto-hold-ms",
    "max-syn-pass-rate",
    "max-synack-rate",
    "syn-rate-per-source",
    "syn-burst-per-source",
    "source-prefix-v4",
    "source-prefix-v6",
];

/// Returns `current` with `pairs` applied, or the first problem, leaving `current` as it was.
pub fn apply(current: &RunArgs, pairs: &[String]) -> Result<RunArgs, Error> {
    if pairs.is_empty() {
        return Err(Error::Other(
            "nothing to set: give KEY=VALUE pairs, e.g. mode=cookie".into(),
        ));
    }
    let mut argv = Vec::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::Other(format!(
                "'{pair}' is not KEY=VALUE (e.g. syn-rate-per-source=100)"
            )));
        };
        let key = key.trim().replace('_', "-");
        if !SETTABLE.contains(&key.as_str()) {
            return Err(Error::Other(format!(
                "unknown or fixed key '{key}'; keys that can change while running: {}",
                SETTABLE.join(", ")
            )));
        }
        argv.push(format!("--{key}"));
        argv.push(value.trim().to_string());
    }
    let matches = cli::bare_run_command()
        .try_get_matches_from(&argv)
        .map_err(|e| Error::Other(cli::one_line(&e)))?;
    let mut tuned = current.clone();
    tuned
        .update_from_arg_matches(&matches)
        .map_err(|e| Error::Other(e.to_string()))?;
    Ok(tuned)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use synguard_common::Mode;

    use super::*;
    use crate::{
        baseline::Threshold,
        cli::{Cli, Command as CliCommand},
    };

    fn running() -> RunArgs {
        let cli = Cli::try_parse_from([
            "synguard",
            "run",
            "--iface",
            "eth0",
            "--mode",
            "auto",
            "--syn-rate-per-source",
            "100",
        ])
        .unwrap();
        match cli.command {
            CliCommand::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    fn set(pairs: &[&str]) -> Result<RunArgs, Error> {
        apply(
            &running(),
            &pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn only_what_is_given_changes() {
        let tuned = set(&["mode=cookie", "syn_burst_per_source=20", "ports=80,443"]).unwrap();
        assert_eq!(tuned.mode, Mode::Cookie);
        assert_eq!(tuned.syn_burst_per_source, Some(20));
        assert!(tuned.ports.as_ref().unwrap().contains(443));
        assert_eq!(tuned.syn_rate_per_source, 100, "kept");
        assert_eq!(tuned.iface, ["eth0"], "kept");
        let tuned = set(&["auto-threshold=8x"]).unwrap();
        assert_eq!(tuned.auto_threshold, Threshold::Relative(8.0));
        assert_eq!(tuned.mode, Mode::Auto, "kept");
    }

    #[test]
    fn bad_pairs_are_refused_whole() {
        for (pairs, needle) in [
            (&["mode"][..], "is not KEY=VALUE"),
            (&["colour=blue"], "unknown or fixed key 'colour'"),
            (&["iface=eth1"], "unknown or fixed key 'iface'"),
            (&["mode=cookie", "source-prefix-v4=33"], "33"),
            (&["mode=fast"], "'fast' is not a mode"),
            (&["ports=90-80"], "runs backwards"),
            (&["syn-rate-per-source=-1"], "-1"),
            (&[], "nothing to set"),
        ] {
            let err = set(pairs).unwrap_err().to_string();
            assert!(err.contains(needle), "{pairs:?}: {err}");
        }
    }
}
