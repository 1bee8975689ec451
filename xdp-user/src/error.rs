//! Errors an operator can act on: each says what failed, where, and what to do next.

use std::{io, net::SocketAddr, path::PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "missing {missing}: loading and attaching synguard's XDP program needs CAP_BPF, \
         CAP_PERFMON (or CAP_SYS_ADMIN for both) and CAP_NET_ADMIN; run synguard as root, or \
         grant them (systemd: AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_NET_ADMIN, as in \
         deploy/synguard.service)"
    )]
    MissingCapabilities { missing: String },

    #[error(
        "interface '{iface}' does not exist in this network namespace; \
         list the interfaces with `ip link show`"
    )]
    UnknownInterface { iface: String },

    #[error(
        "another XDP program is already attached to {iface}; synguard does not replace programs \
         it did not load. Inspect it with `ip link show dev {iface}` and, if it is not needed, \
         remove it with `ip link set dev {iface} xdp off`"
    )]
    AlreadyAttached { iface: String },

    #[error(
        "native XDP attach to {iface} failed: its driver has no native XDP support; \
         retry with --xdp-mode skb (generic XDP: same protection, more CPU per packet)"
    )]
    NativeXdpUnsupported { iface: String },

    #[error("attaching XDP ({mode} mode) to {iface} failed: {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "the kernel rejected the XDP program: {message}. synguard needs Linux 6.0 or newer \
         (for the socket-less SYN-cookie helpers) with BPF, XDP and SYN cookies enabled; \
         run with RUST_LOG=debug to see the verifier log"
    )]
    Load {
        message: String,
        verifier_log: String,
    },

    #[error("cannot serve metrics on {addr}: {reason}; choose another address with --metrics-addr")]
    MetricsAddr { addr: SocketAddr, reason: String },

    #[error("reading the {map} map failed: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("sysctl {key}: {reason}")]
    Sysctl { key: String, reason: String },

    /// A verb or value that cannot be carried out as given (`synguard set`, lists).
    #[error("{0}")]
    Usage(String),

    /// A running synguard refused a request or a reload: the reason says what to change.
    #[error("{0}")]
    Refused(String),

    /// The control socket could not be reached or spoken to.
    #[error("{path}: {reason}")]
    Control { path: PathBuf, reason: String },

    /// The config file is missing, unreadable or invalid.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// Something this host does not provide, or a step synguard could not take on it.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn metrics_addr(addr: SocketAddr, err: &io::Error) -> Self {
        let reason = match err.kind() {
            io::ErrorKind::AddrInUse => "the port is already in use".to_string(),
            io::ErrorKind::AddrNotAvailable => {
                "the address is not assigned to any interface here".to_string()
            }
            io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => err.to_string(),
        };
        Error::MetricsAddr { addr, reason }
    }
}
