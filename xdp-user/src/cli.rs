//! The command line. Every flag can also come from the environment (`SYNGUARD_*`); a flag wins.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "synguard",
    version,
    about = "SYN-flood mitigation in XDP: attach to a server's NIC, count what arrives, \
             and serve it to Prometheus.",
    long_about = "SYN-flood mitigation in XDP.\n\n\
        synguard attaches an XDP program to a network interface. Today it classifies and counts \
        every packet (SYN, SYN-ACK, ACK, RST, FIN, other TCP, non-TCP, non-IP, malformed) and \
        passes it on unchanged; counters are served as Prometheus metrics.\n\n\
        Needs root, or CAP_BPF and CAP_NET_ADMIN. Logging follows RUST_LOG (default: info).\n\n\
        Example:\n  synguard run --iface eth0 --metrics-addr 0.0.0.0:9477"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to an interface and serve metrics until SIGINT or SIGTERM, then detach.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to protect, in the current network namespace (e.g. eth0).
    #[arg(long, short = 'i', env = "SYNGUARD_IFACE", value_name = "IFACE")]
    pub iface: String,

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttachMode {
    /// Driver (native) XDP.
    Native,
    /// Generic XDP, in the kernel's network stack.
    Skb,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults_to_native_mode_and_loopback_metrics() {
        let cli = Cli::try_parse_from(["synguard", "run", "--iface", "eth0"]).unwrap();
        let Command::Run(args) = cli.command;
        assert_eq!(args.iface, "eth0");
        assert_eq!(args.xdp_mode, AttachMode::Native);
        assert_eq!(args.metrics_addr, "127.0.0.1:9477".parse().unwrap());
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
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} was accepted");
        }
    }
}
