//! The command line. Every flag can also come from the environment (`SYNGUARD_*`); a flag wins.

pub mod config_file;
pub mod dump;
pub mod manual;
pub mod tune;
pub mod verbs;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use synguard_common::Mode;

use crate::{
    config::lists::Cidr,
    config::ports::PortSet,
    config::threshold::Threshold,
    config::{
        text::parse_mode,
        tunables::{ListSources, Tunables},
    },
    datapath::loader::AttachMode,
};

#[derive(Debug, Parser)]
#[command(
    name = "synguard",
    version,
    about = "SYN-flood mitigation in XDP: attach to a server's NIC, count what arrives, \
             and serve it to Prometheus.",
    long_about = "SYN-flood mitigation in XDP.\n\n\
        synguard attaches an XDP program to a network interface. It answers SYNs to protected \
        ports with SYN cookies from XDP, which the kernel accepts when the client's ACK comes \
        back, and drops ACKs that carry neither a connection nor a valid cookie. Every packet \
        is classified and counted; counters are served as Prometheus metrics.\n\n\
        Needs root, or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN. Logging follows RUST_LOG (default: info).\n\n\
        Examples:\n  synguard run --iface eth0 --metrics-addr 0.0.0.0:9477\n  \
        synguard run --iface eth0 --mode cookie --ports 80,443"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to an interface and serve metrics until SIGINT or SIGTERM, then detach (SIGQUIT:
    /// exit leaving protection on, for the next start to take over).
    Run(Box<RunArgs>),
    /// Show a running synguard's mode, attack state, rates, limits, lists and sysctls.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A live view of a running synguard: packets per second by class and action, decisions
    /// per second, the attack state and, during an attack in auto mode, the top sources.
    Top {
        #[command(flatten)]
        target: Target,
        /// Refreshes, one a second, before exiting (default: until interrupted).
        #[arg(long, value_name = "N")]
        count: Option<u32>,
    },
    /// Change tunables of a running synguard: KEY=VALUE with run's flag names, e.g.
    /// `mode=cookie syn-rate-per-source=100 ports=80,443`. All or none are applied, from the
    /// next packet on.
    Set {
        #[command(flatten)]
        target: Target,
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Add, remove or list allowed source networks of a running synguard.
    Allow {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: ListAction,
    },
    /// Add, remove or list denied source networks of a running synguard.
    Deny {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: ListAction,
    },
    /// Check a configuration file without touching anything: TOML syntax, known keys, and
    /// every value. Exits 1 with the first problem.
    CheckConfig {
        /// The file, e.g. /etc/synguard/synguard.toml.
        file: PathBuf,
    },
    /// Stop a running synguard cleanly: detach, remove its pins, restore the sysctls.
    Detach {
        #[command(flatten)]
        target: Target,
    },
    /// Capture what the XDP program sees and does, as pcapng: each packet with its action and
    /// reason, and the SYN-ACKs sent from XDP, e.g. `synguard dump -c 1000 -w - | tcpdump -nr -`.
    /// Needs root. Filters by class, reason, port and source; bounded by count, duration and
    /// a rate cap, so it can run during a flood.
    Dump(Box<dump::DumpArgs>),
    /// Print a completion script for a shell, e.g.
    /// `synguard completions bash > /etc/bash_completion.d/synguard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (synguard.8, synguard-run.8, ...) into a directory, for packaging.
    #[command(hide = true)]
    Manpages {
        /// The directory; it must exist.
        dir: PathBuf,
        /// The pages' date, e.g. the release's (YYYY-MM-DD).
        #[arg(long, default_value = "")]
        date: String,
    },
}

/// Which running synguard a verb talks to.
#[derive(Clone, Debug, Args)]
pub struct Target {
    /// The interface it protects; may be left out when only one synguard runs.
    #[arg(
        long,
        short = 'i',
        env = "SYNGUARD_IFACE",
        value_name = "IFACE",
        global = true
    )]
    pub iface: Option<String>,

    /// Its state directory, where its control socket is.
    #[arg(
        long,
        default_value = "/run/synguard",
        env = "SYNGUARD_STATE_DIR",
        value_name = "DIR",
        global = true
    )]
    pub state_dir: PathBuf,
}

#[derive(Clone, Debug, Subcommand)]
pub enum ListAction {
    /// Add CIDRs (e.g. 192.0.2.0/24 2001:db8::/32).
    Add {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<Cidr>,
    },
    /// Remove CIDRs.
    Del {
        #[arg(required = true, value_name = "CIDR")]
        cidrs: Vec<Cidr>,
    },
    /// Print the list, one CIDR per line.
    List,
}

#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// A TOML file of settings, keyed by these flags' names (e.g. `mode = "cookie"`,
    /// `allow = ["192.0.2.0/24"]`). Flags and environment variables win over it. The default
    /// file may be missing; a named one may not. SIGHUP reloads it.
    #[arg(
        long,
        default_value = crate::cli::config_file::DEFAULT_PATH,
        env = "SYNGUARD_CONFIG",
        value_name = "FILE"
    )]
    pub config: PathBuf,

    /// Interface to protect, in the current network namespace (e.g. eth0). Several are given
    /// as `--iface eth0 --iface eth1` or `eth0,eth1` (a list in the config file): each gets its
    /// own program, pins, control socket and metrics, with the same settings.
    #[arg(
        long,
        short = 'i',
        env = "SYNGUARD_IFACE",
        value_name = "IFACE",
        value_delimiter = ',',
        required = true
    )]
    pub iface: Vec<String>,

    /// Log format on stderr: `text` for people, `json` (one object per line, every field
    /// kept) for log pipelines. RUST_LOG sets the level (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "SYNGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// XDP attach mode. `native` runs in the driver and is what you want on a real NIC; `skb`
    /// (generic XDP) works on any interface at a higher cost per packet. synguard never
    /// switches mode by itself.
    #[arg(long, value_enum, default_value_t = AttachMode::Native, env = "SYNGUARD_XDP_MODE")]
    pub xdp_mode: AttachMode,

    /// Address for the Prometheus endpoint (/metrics). Loopback by default; use e.g.
    /// 0.0.0.0:9477 to let a Prometheus server on another host scrape it.
    #[arg(
        long,
        default_value = "127.0.0.1:9477",
        env = "SYNGUARD_METRICS_ADDR",
        value_name = "ADDR:PORT"
    )]
    pub metrics_addr: SocketAddr,

    /// What to do with SYNs to protected ports: `off` passes and counts; `monitor` counts
    /// what `cookie` would do; `cookie` answers every one with a SYN cookie from XDP (and sets
    /// net.ipv4.tcp_syncookies=2 while running); `auto` passes them while the SYN rate is
    /// below --auto-threshold and answers with cookies above it (tcp_syncookies=2 only while it
    /// does).
    #[arg(long, value_parser = parse_mode, default_value = "auto", env = "SYNGUARD_MODE")]
    pub mode: Mode,

    /// Ports to protect: lists and ranges, e.g. 80,443,8000-8100. Default: every port that
    /// has a listener. A listed port is protected even without one: ACKs to it without a
    /// valid cookie are dropped.
    #[arg(long, env = "SYNGUARD_PORTS", value_name = "PORTS")]
    pub ports: Option<PortSet>,

    /// `auto` mode: the SYN rate (to protected ports, all CPUs together, over 10 ms windows)
    /// at which cookies take over. Either SYN/s (e.g. 10000) or a multiple of the learned
    /// baseline (e.g. 8x): an average of the normal SYN rate over --auto-baseline-secs, never
    /// below --auto-threshold-min.
    #[arg(
        long,
        default_value = "10000",
        env = "SYNGUARD_AUTO_THRESHOLD",
        value_name = "SYN/s|FACTORx"
    )]
    pub auto_threshold: Threshold,

    /// `auto` mode: also answer with cookies when one protected port alone gets this many
    /// SYN/s (0: no per-port threshold). Catches a flood aimed at one service that stays
    /// under the overall threshold; the log names the port.
    #[arg(
        long,
        default_value_t = 0,
        env = "SYNGUARD_AUTO_PORT_THRESHOLD",
        value_name = "SYN/s"
    )]
    pub auto_port_threshold: u32,

    /// `auto` mode with a relative threshold: the lowest it may be, SYN/s. Also the threshold
    /// until a baseline has been learned.
    #[arg(
        long,
        default_value_t = 1_000,
        env = "SYNGUARD_AUTO_THRESHOLD_MIN",
        value_name = "SYN/s"
    )]
    pub auto_threshold_min: u32,

    /// `auto` mode with a relative threshold: the time constant of the baseline's moving
    /// average, in seconds. Attacks are left out of it.
    #[arg(
        long,
        default_value_t = 600,
        env = "SYNGUARD_AUTO_BASELINE_SECS",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub auto_baseline_secs: u64,

    /// `auto` mode: how long the SYN rate must stay below half the threshold before SYNs are
    /// passed to the kernel again, in milliseconds.
    #[arg(
        long,
        default_value_t = 2_000,
        env = "SYNGUARD_AUTO_HOLD_MS",
        value_name = "MS"
    )]
    pub auto_hold_ms: u32,

    /// Cap on SYNs passed to the kernel per second (all CPUs together; 0: no cap). Over it, a
    /// SYN the kernel would get is dropped instead (reason syn_pass_capped).
    #[arg(
        long,
        default_value_t = 0,
        env = "SYNGUARD_MAX_SYN_PASS_RATE",
        value_name = "SYN/s"
    )]
    pub max_syn_pass_rate: u32,

    /// Cap on SYN-ACKs sent from XDP per second (all CPUs together; 0: no cap). It bounds the
    /// replies aimed at spoofed sources; over it, SYNs are dropped (reason synack_capped).
    #[arg(
        long,
        default_value_t = 0,
        env = "SYNGUARD_MAX_SYNACK_RATE",
        value_name = "SYN-ACK/s"
    )]
    pub max_synack_rate: u32,

    /// SYNs per second each source may send to protected ports (0: no limit). Over it, its
    /// SYNs are dropped (reason syn_source_limited), whatever the mode but `off`. A source is
    /// an address, or a network with --source-prefix-v4/-v6. Sources earn an exact token
    /// bucket once they send about half their limit; a flood of random sources costs a few
    /// array updates per SYN and no per-source memory (docs/operating.md, "Per-source limits").
    #[arg(
        long,
        default_value_t = 0,
        env = "SYNGUARD_SYN_RATE_PER_SOURCE",
        value_name = "SYN/s"
    )]
    pub syn_rate_per_source: u32,

    /// SYNs a source may send at once before --syn-rate-per-source applies. Default: one
    /// second's worth.
    #[arg(long, env = "SYNGUARD_SYN_BURST_PER_SOURCE", value_name = "SYNs",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub syn_burst_per_source: Option<u32>,

    /// IPv4 prefix length that makes one source for the per-source limit: 32 limits each
    /// address, 24 each /24 network.
    #[arg(long, default_value_t = 32, env = "SYNGUARD_SOURCE_PREFIX_V4", value_name = "LEN",
          value_parser = clap::value_parser!(u32).range(1..=32))]
    pub source_prefix_v4: u32,

    /// IPv6 prefix length that makes one source: 128 limits each address, 64 each /64.
    #[arg(long, default_value_t = 128, env = "SYNGUARD_SOURCE_PREFIX_V6", value_name = "LEN",
          value_parser = clap::value_parser!(u32).range(1..=128))]
    pub source_prefix_v6: u32,

    /// Put the timestamp option in SYN-ACKs (sets net.ipv4.tcp_timestamps=2 while running).
    /// The kernel learns window scaling, SACK and ECN of a cookie connection only from the
    /// timestamp; with `false`, those connections get none of them (window capped at
    /// 64 KiB), but the host's timestamp setting is left alone.
    #[arg(
        long,
        default_value_t = true,
        action = clap::ArgAction::Set,
        env = "SYNGUARD_COOKIE_TIMESTAMPS",
        value_name = "BOOL"
    )]
    pub cookie_timestamps: bool,

    /// Source networks that bypass synguard (passed, no cookies), e.g. 192.0.2.0/24 or
    /// 2001:db8::/32; repeat the flag or separate with commas. The longest matching prefix
    /// decides between --allow and --deny, so a /32 allowed inside a denied /16 passes.
    #[arg(
        long,
        value_delimiter = ',',
        env = "SYNGUARD_ALLOW",
        value_name = "CIDR"
    )]
    pub allow: Vec<Cidr>,

    /// Source networks whose packets are dropped, all of them.
    #[arg(
        long,
        value_delimiter = ',',
        env = "SYNGUARD_DENY",
        value_name = "CIDR"
    )]
    pub deny: Vec<Cidr>,

    /// A file of CIDRs to allow, one per line (`#` starts a comment).
    #[arg(long, env = "SYNGUARD_ALLOW_FILE", value_name = "PATH")]
    pub allow_file: Option<PathBuf>,

    /// A file of CIDRs to deny, one per line (`#` starts a comment).
    #[arg(long, env = "SYNGUARD_DENY_FILE", value_name = "PATH")]
    pub deny_file: Option<PathBuf>,

    /// Do not pin the XDP link and maps under /sys/fs/bpf/synguard/: protection then stops
    /// when synguard does, however it stops. By default they are pinned, so a crashed or
    /// killed controller leaves protection running and the next start takes it over without
    /// a gap; a clean stop (SIGINT, SIGTERM) removes everything either way.
    #[arg(long, env = "SYNGUARD_NO_PIN")]
    pub no_pin: bool,

    /// Do not watch the config file and the list files: changes then apply only on SIGHUP. By
    /// default a change of their contents (an edit, a ConfigMap update) is reloaded as SIGHUP
    /// reloads it, within a second.
    #[arg(long, env = "SYNGUARD_NO_CONFIG_WATCH")]
    pub no_config_watch: bool,

    /// The BPF filesystem to pin in (mounted there if it is not). /sys/fs/bpf is where
    /// systemd and Kubernetes have it; note that `ip netns exec` remounts /sys, hiding it.
    #[arg(
        long,
        default_value = "/sys/fs/bpf",
        env = "SYNGUARD_BPFFS",
        value_name = "DIR"
    )]
    pub bpffs: PathBuf,

    /// Where synguard records the sysctl values it changed, so that a run after a crash can
    /// restore them.
    #[arg(
        long,
        default_value = "/run/synguard",
        env = "SYNGUARD_STATE_DIR",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
}

impl RunArgs {
    /// The tunables these arguments set.
    pub fn tunables(&self) -> Tunables {
        Tunables {
            mode: self.mode,
            ports: self.ports.clone(),
            auto_threshold: self.auto_threshold,
            auto_threshold_min: self.auto_threshold_min,
            auto_baseline_secs: self.auto_baseline_secs,
            auto_port_threshold: self.auto_port_threshold,
            auto_hold_ms: self.auto_hold_ms,
            max_syn_pass_rate: self.max_syn_pass_rate,
            max_synack_rate: self.max_synack_rate,
            syn_rate_per_source: self.syn_rate_per_source,
            syn_burst_per_source: self.syn_burst_per_source,
            source_prefix_v4: self.source_prefix_v4,
            source_prefix_v6: self.source_prefix_v6,
        }
    }

    /// Where the allow/deny lists come from.
    pub fn list_sources(&self) -> ListSources {
        ListSources {
            allow: self.allow.clone(),
            deny: self.deny.clone(),
            allow_file: self.allow_file.clone(),
            deny_file: self.deny_file.clone(),
        }
    }

    /// What takes a restart to change.
    pub fn startup(&self) -> Startup {
        Startup {
            iface: self.iface.clone(),
            xdp_mode: self.xdp_mode,
            metrics_addr: self.metrics_addr,
            state_dir: self.state_dir.clone(),
            no_pin: self.no_pin,
            no_config_watch: self.no_config_watch,
            bpffs: self.bpffs.clone(),
            cookie_timestamps: self.cookie_timestamps,
            log_format: self.log_format,
        }
    }
}

/// The settings that take a restart to change: what is attached where, where synguard keeps
/// its state and serves its metrics, and the sysctls it claims.
#[derive(Clone, Debug, PartialEq)]
pub struct Startup {
    pub iface: Vec<String>,
    pub xdp_mode: AttachMode,
    pub metrics_addr: SocketAddr,
    pub state_dir: PathBuf,
    pub no_pin: bool,
    pub no_config_watch: bool,
    pub bpffs: PathBuf,
    pub cookie_timestamps: bool,
    pub log_format: LogFormat,
}

impl Startup {
    /// The first setting (by its flag's name) that differs in `new`: a reload that changes it
    /// is refused, all of it.
    pub fn restart_needed(&self, new: &Startup) -> Option<&'static str> {
        [
            ("iface", self.iface != new.iface),
            ("xdp-mode", self.xdp_mode != new.xdp_mode),
            ("metrics-addr", self.metrics_addr != new.metrics_addr),
            ("state-dir", self.state_dir != new.state_dir),
            ("no-pin", self.no_pin != new.no_pin),
            (
                "no-config-watch",
                self.no_config_watch != new.no_config_watch,
            ),
            ("bpffs", self.bpffs != new.bpffs),
            (
                "cookie-timestamps",
                self.cookie_timestamps != new.cookie_timestamps,
            ),
            ("log-format", self.log_format != new.log_format),
        ]
        .into_iter()
        .find_map(|(key, changed)| changed.then_some(key))
    }
}

/// `run`'s flags alone, with nothing required, no defaults and no environment: parsing with it
/// yields exactly what was given. The run-time `set` and the config file check their values
/// with it, so a value is valid there exactly when it is valid on the command line.
pub fn bare_run_command() -> clap::Command {
    RunArgs::augment_args(clap::Command::new("run"))
        .no_binary_name(true)
        .mut_args(|arg| arg.required(false).default_value(None).env(None))
}

/// A clap error as one line, without its `error: ` prefix, for messages of our own.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["synguard", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => *args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_reload_is_refused_when_a_startup_setting_changes_and_accepted_otherwise() {
        let old = run_args(&["--iface", "eth0"]).startup();
        // Tunables and lists may change.
        let tuned = run_args(&[
            "--iface",
            "eth0",
            "--mode",
            "cookie",
            "--allow",
            "192.0.2.0/24",
            "--syn-rate-per-source",
            "5",
        ]);
        assert_eq!(old.restart_needed(&tuned.startup()), None);
        assert_ne!(tuned.tunables(), run_args(&["--iface", "eth0"]).tunables());
        for (flags, key) in [
            (&["--iface", "eth1"][..], "iface"),
            (&["--iface", "eth0,eth1"], "iface"),
            (&["--iface", "eth0", "--xdp-mode", "skb"], "xdp-mode"),
            (
                &["--iface", "eth0", "--metrics-addr", "127.0.0.1:1"],
                "metrics-addr",
            ),
            (&["--iface", "eth0", "--state-dir", "/tmp/x"], "state-dir"),
            (&["--iface", "eth0", "--no-pin"], "no-pin"),
            (&["--iface", "eth0", "--no-config-watch"], "no-config-watch"),
            (&["--iface", "eth0", "--bpffs", "/tmp/bpf"], "bpffs"),
            (
                &["--iface", "eth0", "--cookie-timestamps", "false"],
                "cookie-timestamps",
            ),
            (&["--iface", "eth0", "--log-format", "json"], "log-format"),
        ] {
            assert_eq!(
                old.restart_needed(&run_args(flags).startup()),
                Some(key),
                "{flags:?}"
            );
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_native_mode_and_loopback_metrics() {
        let cli = Cli::try_parse_from(["synguard", "run", "--iface", "eth0"]).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(args.iface, ["eth0"]);
        assert_eq!(args.xdp_mode, AttachMode::Native);
        assert_eq!(args.metrics_addr, "127.0.0.1:9477".parse().unwrap());
        assert_eq!(args.mode, Mode::Auto);
        assert!(args.ports.is_none());
        assert!(args.cookie_timestamps);
    }

    #[test]
    fn modes_ports_and_switches_parse() {
        let cli = Cli::try_parse_from([
            "synguard",
            "run",
            "-i",
            "eth0",
            "--mode",
            "cookie",
            "--ports",
            "80,8000-8001",
            "--cookie-timestamps",
            "false",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(args.mode, Mode::Cookie);
        assert!(args.ports.as_ref().unwrap().contains(8001));
        assert!(!args.cookie_timestamps);
    }

    #[test]
    fn per_source_limit_flags_parse_and_default() {
        let cli = Cli::try_parse_from(["synguard", "run", "-i", "eth0"]).unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(args.syn_rate_per_source, 0);
        assert_eq!(args.syn_burst_per_source, None);
        assert_eq!((args.source_prefix_v4, args.source_prefix_v6), (32, 128));
        let cli = Cli::try_parse_from([
            "synguard",
            "run",
            "-i",
            "eth0",
            "--syn-rate-per-source",
            "100",
            "--syn-burst-per-source",
            "20",
            "--source-prefix-v4",
            "24",
            "--source-prefix-v6",
            "64",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(args.syn_rate_per_source, 100);
        assert_eq!(args.syn_burst_per_source, Some(20));
        assert_eq!((args.source_prefix_v4, args.source_prefix_v6), (24, 64));
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for argv in [
            &["synguard", "run"][..],
            &["synguard", "run", "--iface", "eth0", "--xdp-mode", "hw"],
            &[
                "synguard",
                "run",
                "--iface",
                "eth0",
                "--metrics-addr",
                "9477",
            ],
            &["synguard", "run", "-i", "eth0", "--source-prefix-v4", "33"],
            &["synguard", "run", "-i", "eth0", "--auto-threshold", "0.5x"],
            &["synguard", "run", "-i", "eth0", "--auto-threshold", "lots"],
            &["synguard", "run", "-i", "eth0", "--source-prefix-v6", "0"],
            &[
                "synguard",
                "run",
                "-i",
                "eth0",
                "--syn-burst-per-source",
                "0",
            ],
            &[
                "synguard",
                "run",
                "-i",
                "eth0",
                "--syn-rate-per-source",
                "-5",
            ],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} was accepted");
        }
    }
}
