//! The data path's configuration, derived from the tunables. What a SYN-ACK promises is not
//! configured: it follows each listener and the host (`host_facts`, `btf`).

use synguard_common::{Config, config::flags, limit};
use tracing::warn;

use crate::{
    Error,
    config::{
        lists::{self, Lists},
        ports::PortSet,
        threshold::Threshold,
        tunables::{ListSources, Tunables},
    },
    host::preflight,
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
    /// The data path's settings for `iface`: the interface checked, the list files read, a
    /// fresh seed for the per-source sketch, then [`Settings::new`].
    pub fn derive(
        tunables: &Tunables,
        sources: &ListSources,
        cookie_timestamps: bool,
        iface: &str,
    ) -> Result<Settings, Error> {
        // The interface must exist: settings for one that does not are an operator's typo.
        preflight::interface_index(iface)?;
        let mut allow = sources.allow.clone();
        let mut deny = sources.deny.clone();
        if let Some(path) = &sources.allow_file {
            allow.extend(lists::read_file(path)?);
        }
        if let Some(path) = &sources.deny_file {
            deny.extend(lists::read_file(path)?);
        }
        let lists = Lists::new(allow, deny)?;
        if !cookie_timestamps && tunables.sends_cookies() {
            warn!(
                "--cookie-timestamps false: connections set up by a cookie get neither window \
                 scaling nor SACK (their receive window is capped at 64 KiB)"
            );
        }
        Ok(Settings::new(
            tunables,
            lists,
            cookie_timestamps,
            random_seed(),
        ))
    }

    /// The data path's settings, from what the operator asked for alone.
    pub fn new(tunables: &Tunables, lists: Lists, cookie_timestamps: bool, seed: u32) -> Settings {
        let mut flag_bits = 0;
        if !lists.is_empty() {
            flag_bits |= flags::LISTS;
        }
        if tunables.ports.is_none() {
            flag_bits |= flags::ALL_PORTS;
        }
        if cookie_timestamps {
            flag_bits |= flags::TIMESTAMPS;
        }
        let mut config = Config {
            mode: tunables.mode as u32,
            flags: flag_bits,
            auto_threshold_pps: match tunables.auto_threshold {
                Threshold::Absolute(pps) => pps,
                // Until a baseline is learned (`daemon::baseline`).
                Threshold::Relative(_) => tunables.auto_threshold_min,
            },
            auto_hold_ms: tunables.auto_hold_ms,
            auto_port_threshold_pps: tunables.auto_port_threshold,
            syn_pass_cap_pps: tunables.max_syn_pass_rate,
            synack_cap_pps: tunables.max_synack_rate,
            sketch_seed: seed,
            ..Config::DEFAULT
        };
        tunables.source_limit().apply(&mut config);
        Settings {
            config,
            ports: tunables.ports.clone(),
            lists,
        }
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
