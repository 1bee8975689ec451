//! The TOML configuration file (`--config`, default /etc/synguard/synguard.toml). Its keys are
//! `run`'s flag names (`mode = "cookie"`, `syn-rate-per-source = 100`, `allow = ["..."]`), and
//! its values go through the very parsers the flags use. Precedence: flag, then environment,
//! then file, then default: the file's values become the flags' defaults.
//!
//! `[interface.NAME]` tables set what may differ between interfaces ([`per_interface_keys`]:
//! mode, ports, thresholds, limits, lists) for one of them, over the file's own values; what is
//! shared (the namespace's sysctls, where state and metrics live) stays at the top.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Command, CommandFactory, FromArgMatches};

use crate::{
    Error,
    cli::{self, Cli, RunArgs},
};

pub const DEFAULT_PATH: &str = "/etc/synguard/synguard.toml";

/// One setting from the file: the flag's name and its value(s), as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub values: Vec<String>,
}

/// A config file's settings: its top-level keys, and each `[interface.NAME]` table's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    pub settings: Vec<Setting>,
    pub interfaces: Vec<(String, Vec<Setting>)>,
}

/// The keys an `[interface.NAME]` table may set: what `set` may change while synguard runs (the
/// tunables, which each interface's program has its own of) and the lists.
pub fn per_interface_keys() -> Vec<&'static str> {
    let mut keys = crate::cli::tune::SETTABLE.to_vec();
    keys.extend(["allow", "deny", "allow-file", "deny-file"]);
    keys
}

impl ConfigFile {
    /// Settings in all, the tables' included.
    pub fn len(&self) -> usize {
        self.settings.len() + self.interfaces.iter().map(|(_, s)| s.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The settings in force for `iface`: the file's, with its table's over them.
    pub fn for_iface(&self, iface: &str) -> Vec<Setting> {
        let Some((_, table)) = self.interfaces.iter().find(|(name, _)| name == iface) else {
            return self.settings.clone();
        };
        let mut settings: Vec<Setting> = self
            .settings
            .iter()
            .filter(|s| !table.iter().any(|t| t.key == s.key))
            .cloned()
            .collect();
        settings.extend(table.iter().cloned());
        settings
    }

    /// A table for an interface that is not protected is a mistake worth stopping for.
    pub fn check_interfaces(&self, ifaces: &[String]) -> Result<(), String> {
        match self
            .interfaces
            .iter()
            .find(|(name, _)| !ifaces.contains(name))
        {
            Some((name, _)) => Err(format!(
                "[interface.{name}] names an interface synguard is not protecting (iface = {})",
                ifaces.join(", ")
            )),
            None => Ok(()),
        }
    }
}

/// Why the command line could not be parsed.
pub enum ParseError {
    /// clap's own error (usage, --help, --version), to be printed by clap.
    Usage(clap::Error),
    /// The configuration file is unreadable or invalid.
    Config(Error),
}

/// The config file `argv` (or the environment) names, and whether it was named at all (the
/// default file may be absent; a named one may not).
pub fn config_path(argv: &[OsString]) -> (PathBuf, bool) {
    let mut args = argv.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            if let Some(path) = args.next() {
                return (PathBuf::from(path), true);
            }
        } else if let Some(path) = arg.strip_prefix("--config=") {
            return (PathBuf::from(path), true);
        }
    }
    match std::env::var_os("SYNGUARD_CONFIG") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    }
}

/// Reads and checks a config file: TOML syntax, known keys, and every value against its
/// flag's parser.
pub fn read(path: &Path, required: bool) -> Result<ConfigFile, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(ConfigFile::default());
        }
        Err(reason) => {
            return Err(Error::ConfigUnreadable {
                path: path.to_path_buf(),
                reason,
            });
        }
    };
    let invalid = |reason| Error::Config {
        path: path.to_path_buf(),
        reason,
    };
    let file = parse(&text).map_err(invalid)?;
    validate(&file.settings).map_err(invalid)?;
    for (name, table) in &file.interfaces {
        validate(table).map_err(|e| invalid(format!("[interface.{name}] {e}")))?;
    }
    Ok(file)
}

/// The settings of a config file's text, keys checked, values not yet.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // One line: where, and what the parser expected there.
        let at = e.span().map_or(String::new(), |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        format!("malformed TOML{at}: {}", e.message().trim())
    })?;
    let known = file_keys();
    let mut file = ConfigFile::default();
    for (key, value) in table {
        if key == "interface" {
            let toml::Value::Table(tables) = value else {
                return Err(
                    "'interface' must be tables, one per interface: [interface.eth0]".into(),
                );
            };
            for (iface, table) in tables {
                let toml::Value::Table(table) = table else {
                    return Err(format!("[interface.{iface}] must be a table of settings"));
                };
                let known: Vec<String> =
                    per_interface_keys().iter().map(|k| k.to_string()).collect();
                let settings = parse_table(table, &known).map_err(|e| {
                    format!("[interface.{iface}] {e}; a table sets only what may differ between interfaces")
                })?;
                file.interfaces.push((iface, settings));
            }
            continue;
        }
        let mut one = toml::Table::new();
        one.insert(key, value);
        file.settings.extend(parse_table(one, &known)?);
    }
    Ok(file)
}

/// The settings of one table, each key one of `known`.
fn parse_table(table: toml::Table, known: &[String]) -> Result<Vec<Setting>, String> {
    let mut settings = Vec::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if !known.contains(&name) {
            return Err(format!(
                "unknown key '{key}'; known keys: {}",
                known.join(", ")
            ));
        }
        let scalar = |value: &toml::Value| match value {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(x) => Ok(x.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            other => Err(format!(
                "'{key}' must be a string, number or boolean, not {}",
                other.type_str()
            )),
        };
        let values = match &value {
            toml::Value::Array(items) => items.iter().map(scalar).collect::<Result<_, _>>()?,
            other => vec![scalar(other)?],
        };
        settings.push(Setting { key: name, values });
    }
    Ok(settings)
}

/// `run`'s flags that a file may set: all but `--config` itself.
fn file_keys() -> Vec<String> {
    cli::bare_run_command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| *long != "config")
        .map(str::to_string)
        .collect()
}

/// Checks every value with its flag's parser, as if given on the command line alone.
fn validate(settings: &[Setting]) -> Result<(), String> {
    let command = cli::bare_run_command();
    for setting in settings {
        let flag = command
            .get_arguments()
            .find(|a| a.get_long() == Some(setting.key.as_str()))
            .expect("known key");
        let mut argv = Vec::new();
        if flag.get_action().takes_values() {
            for value in &setting.values {
                argv.push(format!("--{}", setting.key));
                argv.push(value.clone());
            }
        } else {
            // A switch (--no-pin): true sets it, false leaves it off.
            match setting.values.as_slice() {
                [v] if v == "true" => argv.push(format!("--{}", setting.key)),
                [v] if v == "false" => {}
                _ => return Err(format!("'{}' must be true or false", setting.key)),
            }
        }
        command
            .clone()
            .try_get_matches_from(&argv)
            .map_err(|e| format!("key '{}': {}", setting.key, cli::one_line(&e)))?;
    }
    Ok(())
}

/// Parses the command line, with the config file's values as the defaults of `run`'s flags.
pub fn parse_cli(argv: Vec<OsString>) -> Result<Cli, ParseError> {
    let is_run = argv.get(1).is_some_and(|a| a == "run");
    let settings = match is_run {
        true => {
            let (path, required) = config_path(&argv);
            read(&path, required).map_err(ParseError::Config)?.settings
        }
        false => Vec::new(),
    };
    parse_over(argv, &settings).map_err(ParseError::Usage)
}

/// `run`'s arguments as the command line and environment give them, over `settings`.
pub fn run_args(argv: &[OsString], settings: &[Setting]) -> Result<RunArgs, Error> {
    match parse_over(argv, settings)
        .map_err(|e| Error::Usage(cli::one_line(&e)))?
        .command
    {
        crate::cli::Command::Run(args) => Ok(*args),
        _ => Err(Error::Other("not a run command line".into())),
    }
}

/// The command line parsed with `settings` as the defaults of `run`'s flags.
fn parse_over(
    argv: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    settings: &[Setting],
) -> Result<Cli, clap::Error> {
    let matches = Cli::command()
        .mut_subcommand("run", |run| with_defaults(run, settings))
        .try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

fn with_defaults(mut run: Command, settings: &[Setting]) -> Command {
    for setting in settings {
        let Some(id) = run
            .get_arguments()
            .find(|a| a.get_long() == Some(setting.key.as_str()))
            .map(|a| a.get_id().clone())
        else {
            continue;
        };
        let values = setting.values.clone();
        run = run.mut_arg(id, |arg| {
            let arg = arg.required(false);
            if arg.get_action().takes_values() {
                arg.default_values(values)
            } else {
                arg.default_value(if values == ["true"] { "true" } else { "false" })
            }
        });
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn files_parse_and_are_checked_value_by_value() {
        let settings = parse(
            "iface = \"eth0\"\nmode = \"cookie\"\nsyn_rate_per_source = 100\n\
             allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\nno-pin = true\n",
        )
        .unwrap();
        assert_eq!(settings.len(), 5);
        validate(&settings.settings).unwrap();
        for (text, needle) in [
            ("mode = ", "malformed TOML at line 1, column 8: "),
            ("a = 1\nb = [1, \n", "malformed TOML at line 2"),
            ("colour = \"blue\"", "unknown key 'colour'"),
            ("config = \"/x\"", "unknown key 'config'"),
            ("mode = \"fast\"", "key 'mode': invalid value 'fast'"),
            ("source-prefix-v4 = 33", "key 'source-prefix-v4'"),
            ("allow = [\"198.18.0.1/16\"]", "host bits"),
            ("ports = \"90-80\"", "runs backwards"),
            ("no-pin = \"maybe\"", "true or false"),
            ("mode = { a = 1 }", "must be a string"),
        ] {
            let err = parse(text).and_then(|s| validate(&s.settings)).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn several_interfaces_come_as_a_list_or_commas() {
        let settings = parse("iface = [\"eth0\", \"eth1\"]\n").unwrap().settings;
        let args = run_args(&argv(&["synguard", "run"]), &settings).unwrap();
        assert_eq!(args.iface, ["eth0", "eth1"]);
        let args = run_args(&argv(&["synguard", "run", "--iface", "eth2,eth3"]), &[]).unwrap();
        assert_eq!(args.iface, ["eth2", "eth3"]);
        let args = run_args(
            &argv(&["synguard", "run", "-i", "eth2", "-i", "eth3"]),
            &settings,
        )
        .unwrap();
        assert_eq!(args.iface, ["eth2", "eth3"], "the flags win, whole");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let settings = parse("iface = \"eth0\"\nmode = \"cookie\"\nauto-hold-ms = 500\n")
            .unwrap()
            .settings;
        let args = run_args(&argv(&["synguard", "run"]), &settings).unwrap();
        assert_eq!(
            (args.iface[0].as_str(), args.mode.name()),
            ("eth0", "cookie")
        );
        assert_eq!(args.auto_hold_ms, 500);
        assert_eq!(args.auto_threshold_min, 1000, "default");
        let args = run_args(&argv(&["synguard", "run", "--mode", "monitor"]), &settings).unwrap();
        assert_eq!(args.mode.name(), "monitor", "the flag wins");
        assert_eq!(args.iface, ["eth0"]);
    }

    #[test]
    fn the_config_path_comes_from_the_flag_or_the_default() {
        assert_eq!(
            config_path(&argv(&["synguard", "run", "--config", "/tmp/a.toml"])),
            (PathBuf::from("/tmp/a.toml"), true)
        );
        assert_eq!(
            config_path(&argv(&["synguard", "run", "--config=/tmp/b.toml"])).0,
            PathBuf::from("/tmp/b.toml")
        );
        if std::env::var_os("SYNGUARD_CONFIG").is_none() {
            assert_eq!(
                config_path(&argv(&["synguard", "run"])),
                (PathBuf::from(DEFAULT_PATH), false)
            );
        }
    }

    #[test]
    fn an_interface_table_sets_its_own_tunables_over_the_files() {
        let file = parse(
            "iface = [\"eth0\", \"eth1\"]\nmode = \"monitor\"\nauto-hold-ms = 500\n\
             [interface.eth1]\nmode = \"cookie\"\nsyn-rate-per-source = 100\n\
             deny = [\"198.18.200.0/24\"]\n",
        )
        .unwrap();
        assert_eq!(file.len(), 6);
        let eth0 = run_args(&argv(&["synguard", "run"]), &file.for_iface("eth0")).unwrap();
        let eth1 = run_args(&argv(&["synguard", "run"]), &file.for_iface("eth1")).unwrap();
        assert_eq!((eth0.mode.name(), eth0.syn_rate_per_source), ("monitor", 0));
        assert_eq!(
            (eth1.mode.name(), eth1.syn_rate_per_source),
            ("cookie", 100)
        );
        assert_eq!((eth0.auto_hold_ms, eth1.auto_hold_ms), (500, 500), "shared");
        assert_eq!((eth0.deny.len(), eth1.deny.len()), (0, 1));
        assert_eq!(
            eth0.startup(),
            eth1.startup(),
            "what takes a restart is shared"
        );
        // A flag wins over the tables too.
        let flagged = run_args(
            &argv(&["synguard", "run", "--mode", "auto"]),
            &file.for_iface("eth1"),
        );
        assert_eq!(flagged.unwrap().mode.name(), "auto");
        file.check_interfaces(&["eth0".into(), "eth1".into()])
            .unwrap();
        let err = file.check_interfaces(&["eth0".into()]).unwrap_err();
        assert!(err.contains("[interface.eth1] names an interface"), "{err}");
    }

    #[test]
    fn a_table_may_set_only_what_differs_between_interfaces() {
        for (text, needle) in [
            (
                "[interface.eth0]\nmetrics-addr = \"0.0.0.0:1\"\n",
                "unknown key 'metrics-addr'",
            ),
            (
                "[interface.eth0]\ncookie-timestamps = false\n",
                "may differ between interfaces",
            ),
            ("interface = 3\n", "one per interface"),
            (
                "[interface]\neth0 = 1\n",
                "[interface.eth0] must be a table",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = parse("[interface.eth0]\nmode = \"fast\"\n")
            .and_then(|f| validate(&f.interfaces[0].1))
            .unwrap_err();
        assert!(err.contains("invalid value 'fast'"), "{err}");
        // Every key a table may set is a flag of `run`, and none is one that takes a restart.
        let flags = file_keys();
        for key in per_interface_keys() {
            assert!(flags.iter().any(|f| f == key), "{key}");
        }
        for key in [
            "iface",
            "xdp-mode",
            "metrics-addr",
            "state-dir",
            "no-pin",
            "bpffs",
            "cookie-timestamps",
            "log-format",
            "no-config-watch",
        ] {
            assert!(!per_interface_keys().contains(&key), "{key}");
        }
    }
}
