//! `synguard set KEY=VALUE…`: run-time changes to the tunables, parsed on the client by the
//! very parsers the command line uses (the keys are `run`'s flag names) into a typed
//! [`TunablesChange`], which the daemon checks again and applies all or none.

use clap::ArgMatches;

use crate::{
    Error, cli,
    config::{ports::PortSet, threshold::Threshold, tunables::TunablesChange},
};
use synguard_common::Mode;

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

/// The change `pairs` ask for, or the first problem with them.
pub fn parse(pairs: &[String]) -> Result<TunablesChange, Error> {
    if pairs.is_empty() {
        return Err(Error::Usage(
            "nothing to set: give KEY=VALUE pairs, e.g. mode=cookie".into(),
        ));
    }
    let mut argv = Vec::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Error::Usage(format!(
                "'{pair}' is not KEY=VALUE (e.g. syn-rate-per-source=100)"
            )));
        };
        let key = key.trim().replace('_', "-");
        if !SETTABLE.contains(&key.as_str()) {
            return Err(Error::Usage(format!(
                "unknown or fixed key '{key}'; keys that can change while running: {}",
                SETTABLE.join(", ")
            )));
        }
        argv.push(format!("--{key}"));
        argv.push(value.trim().to_string());
    }
    let matches = cli::bare_run_command()
        .try_get_matches_from(&argv)
        .map_err(|e| Error::Usage(cli::one_line(&e)))?;
    Ok(TunablesChange {
        mode: given::<Mode>(&matches, "mode"),
        ports: given::<PortSet>(&matches, "ports"),
        auto_threshold: given::<Threshold>(&matches, "auto_threshold"),
        auto_threshold_min: given(&matches, "auto_threshold_min"),
        auto_baseline_secs: given(&matches, "auto_baseline_secs"),
        auto_port_threshold: given(&matches, "auto_port_threshold"),
        auto_hold_ms: given(&matches, "auto_hold_ms"),
        max_syn_pass_rate: given(&matches, "max_syn_pass_rate"),
        max_synack_rate: given(&matches, "max_synack_rate"),
        syn_rate_per_source: given(&matches, "syn_rate_per_source"),
        syn_burst_per_source: given(&matches, "syn_burst_per_source"),
        source_prefix_v4: given(&matches, "source_prefix_v4"),
        source_prefix_v6: given(&matches, "source_prefix_v6"),
    })
}

/// The value given for the flag `id` (clap's id: the field's name), typed by its parser.
fn given<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<T> {
    matches.get_one::<T>(id).cloned()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{
        cli::{Cli, Command as CliCommand, RunArgs},
        config::tunables::Tunables,
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

    /// What the client parses, applied as the daemon applies it.
    fn set(pairs: &[&str]) -> Result<Tunables, Error> {
        let change = parse(&pairs.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
        running()
            .tunables()
            .changed(&change)
            .map_err(Error::Refused)
    }

    #[test]
    fn only_what_is_given_changes() {
        let tuned = set(&["mode=cookie", "syn_burst_per_source=20", "ports=80,443"]).unwrap();
        assert_eq!(tuned.mode, Mode::Cookie);
        assert_eq!(tuned.syn_burst_per_source, Some(20));
        assert!(tuned.ports.as_ref().unwrap().contains(443));
        assert_eq!(tuned.syn_rate_per_source, 100, "kept");
        // The interface is not a tunable at all (`Startup`): `set` cannot reach it.
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
