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

    #[error(
        "another synguard is already running on {iface} (it holds {lock}); stop it first, or \
         protect another interface"
    )]
    InterfaceTaken { iface: String, lock: PathBuf },

    #[error(
        "another synguard already runs in this network namespace (on {holder}); synguard owns \
         the namespace's tcp_syncookies and tcp_timestamps, so one synguard protects all of a \
         namespace's interfaces: stop it, and give one synguard every interface (--iface \
         eth0,eth1)"
    )]
    NamespaceTaken { holder: String },

    #[error(
        "a killed synguard left its program pinned at {pins} and still protecting {iface}; run \
         without --no-pin to take it over (or remove that directory to detach it)"
    )]
    PinnedButNoPin { iface: String, pins: PathBuf },

    #[error(
        "the BPF filesystem is not mounted on {dir} and mounting it failed ({reason}); mount it \
         with `mount -t bpf bpf {dir}`, or run with --no-pin (then protection stops when \
         synguard does)"
    )]
    Bpffs { dir: PathBuf, reason: io::Error },

    #[error("interface '{iface}' is named twice in --iface")]
    InterfaceTwice { iface: String },

    #[error("cannot read {path}: {reason}")]
    ListFileUnreadable { path: PathBuf, reason: io::Error },

    /// A line of a list file that is not a CIDR.
    #[error("{path}:{line}: {reason}")]
    ListFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("{cidr} is on both the allow and the deny list; keep it on one")]
    ListedTwice { cidr: String },

    #[error("cannot {action} {path}: {reason}")]
    StateDir {
        action: &'static str,
        path: PathBuf,
        reason: io::Error,
    },

    #[error(
        "no synguard is running (no control socket in {state_dir}); start one with `synguard run`"
    )]
    NotRunning { state_dir: PathBuf },

    #[error("several interfaces are protected; choose one with --iface ({ifaces})")]
    SeveralRunning { ifaces: String },

    /// A verb or value that cannot be carried out as given (`synguard set`, lists).
    #[error("{0}")]
    Usage(String),

    /// A running synguard refused a request or a reload: the reason says what to change.
    #[error("{0}")]
    Refused(String),

    /// The control socket could not be reached or spoken to.
    #[error("{reason} {path}{}", detail.as_ref().map_or(String::new(), |d| format!(": {d}")))]
    Control {
        reason: &'static str,
        path: PathBuf,
        detail: Option<String>,
    },

    /// The config file is unreadable or invalid.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("cannot read the config file {path}: {reason}")]
    ConfigUnreadable { path: PathBuf, reason: io::Error },

    /// The routing table or an interface's MTU could not be read.
    #[error("cannot read {what}: {reason}")]
    HostFacts { what: String, reason: String },

    /// What no operator can fix: a step of synguard's own that failed (the message says which).
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
