//! The data path's configuration, derived from the command line and from the interface's
//! network namespace: what the kernel will do with a connection built from a cookie decides
//! what a SYN-ACK may promise.

use std::{ffi::CString, io};

use synguard_common::{Config, Mode, config::flags, limit, tcp::kernel_rcv_wscale};
use tracing::warn;

use crate::{
    Error,
    baseline::Threshold,
    cli::RunArgs,
    lists::{self, Lists},
    ports::PortSet,
    sysctl,
};

/// What the controller writes into the program's maps.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: Config,
    /// `None`: every port with a listener is protected.
    pub ports: Option<PortSet>,
    pub lists: Lists,
}

impl Settings {
    /// The data path's settings for `iface` (its MTU gives the MSS) from `args`.
    pub fn derive(args: &RunArgs, iface: &str) -> Result<Settings, Error> {
        let enabled = |key: &str| -> Result<bool, Error> { Ok(sysctl::read(key)? != "0") };
        let mut allow = args.allow.clone();
        let mut deny = args.deny.clone();
        if let Some(path) = &args.allow_file {
            allow.extend(lists::read_file(path)?);
        }
        if let Some(path) = &args.deny_file {
            deny.extend(lists::read_file(path)?);
        }
        let lists = Lists::new(allow, deny)?;
        let mut flag_bits = 0;
        if !lists.is_empty() {
            flag_bits |= flags::LISTS;
        }
        if args.ports.is_none() {
            flag_bits |= flags::ALL_PORTS;
        }
        if args.cookie_timestamps {
            flag_bits |= flags::TIMESTAMPS;
        }
        if enabled("net.ipv4.tcp_sack")? {
            flag_bits |= flags::SACK;
        }
        if enabled("net.ipv4.tcp_window_scaling")? {
            flag_bits |= flags::WINDOW_SCALING;
        }
        // tcp_ecn 1 or 2: the server accepts ECN when a client asks (cookie_ecn_ok()).
        if enabled("net.ipv4.tcp_ecn")? {
            flag_bits |= flags::ECN;
        }
        let tcp_rmem_max = sysctl::read_numbers("net.ipv4.tcp_rmem")?
            .get(2)
            .copied()
            .unwrap_or(0);
        let rmem_max = sysctl::read_numbers("net.core.rmem_max")
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(0);
        let clamp = |v: u64| v.min(u64::from(u32::MAX)) as u32;
        let mtu = interface_mtu(iface)?;
        let ttl = sysctl::read_numbers("net.ipv4.ip_default_ttl")
            .ok()
            .and_then(|v| v.first().copied())
            .unwrap_or(64);
        let config = Config {
            mode: args.mode as u32,
            flags: flag_bits,
            rcv_wscale: u32::from(kernel_rcv_wscale(clamp(tcp_rmem_max), clamp(rmem_max))),
            // MSS = MTU minus the IP and TCP headers, as the kernel advertises it.
            mss_v4: mtu.saturating_sub(40).max(536),
            mss_v6: mtu.saturating_sub(60).max(1220),
            ttl: ttl.clamp(1, 255) as u32,
            auto_threshold_pps: match args.auto_threshold {
                Threshold::Absolute(pps) => pps,
                // Until a baseline is learned (`baseline.rs`).
                Threshold::Relative(_) => args.auto_threshold_min,
            },
            auto_hold_ms: args.auto_hold_ms,
            auto_port_threshold_pps: args.auto_port_threshold,
            syn_pass_cap_pps: args.max_syn_pass_rate,
            synack_cap_pps: args.max_synack_rate,
            sketch_seed: random_seed(),
            ..Config::DEFAULT
        };
        let source_limit = SourceLimit {
            rate_pps: args.syn_rate_per_source,
            burst: args
                .syn_burst_per_source
                .unwrap_or(args.syn_rate_per_source.max(1)),
            prefix_v4: args.source_prefix_v4,
            prefix_v6: args.source_prefix_v6,
        };
        let mut config = config;
        source_limit.apply(&mut config);
        if !args.cookie_timestamps && matches!(args.mode, Mode::Cookie | Mode::Auto) {
            warn!(
                "--cookie-timestamps false: connections set up by a cookie get neither window \
                 scaling nor SACK (their receive window is capped at 64 KiB)"
            );
        }
        Ok(Settings {
            config,
            ports: args.ports.clone(),
            lists,
        })
    }
}

/// The per-source SYN limit as an operator states it; [`SourceLimit::apply`] turns it into the
/// data path's terms (`synguard_common::limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimit {
    /// SYNs per second per source, 0 for no limit.
    pub rate_pps: u32,
    /// SYNs a source may send at once.
    pub burst: u32,
    pub prefix_v4: u32,
    pub prefix_v6: u32,
}

impl SourceLimit {
    pub fn apply(&self, config: &mut Config) {
        let burst = self.burst.max(1);
        let interval = limit::interval_ns(self.rate_pps);
        // Rates of 1/s and more: the interval is at most 1e9 ns and fits.
        config.source_interval_ns = interval as u32;
        config.source_burst_ns = interval.saturating_mul(u64::from(burst));
        config.source_promote = limit::promote_threshold(self.rate_pps, burst);
        config.source_prefix_v4 = self.prefix_v4.clamp(1, 32);
        config.source_prefix_v6 = self.prefix_v6.clamp(1, 128);
    }
}

/// A seed for the sketch's hash, from the kernel's random pool.
fn random_seed() -> u32 {
    let mut bytes = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `bytes`.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 4 {
        // Without randomness the sketch still works; only its cells become predictable.
        warn!("getrandom failed; the per-source sketch uses a fixed seed");
    }
    u32::from_ne_bytes(bytes)
}

/// The interface's MTU in this network namespace (SIOCGIFMTU).
fn interface_mtu(iface: &str) -> Result<u32, Error> {
    let name = CString::new(iface).map_err(|_| Error::UnknownInterface {
        iface: iface.to_string(),
    })?;
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::Other(format!(
            "cannot open a socket to read the MTU of {iface}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: ifreq is plain old data; the name fits (checked) and is NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > req.ifr_name.len() {
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        return Err(Error::UnknownInterface {
            iface: iface.to_string(),
        });
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(Error::Other(format!(
            "cannot read the MTU of {iface}: {err}"
        )));
    }
    // SAFETY: the ioctl succeeded and set the MTU member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}
