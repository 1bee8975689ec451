//! Typed access to the maps the XDP program shares with the controller.

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray},
};
use synguard_common::{
    AUTO_STATE_MAP, AutoState, CONFIG_MAP, Config, PORTS_MAP, STATS_MAP, Stats,
    config::AUTO_WINDOW_NS,
};

use crate::{Error, ports::PortSet};

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::Other(format!("map {name} missing from the BPF object")))?;
    T::try_from(map).map_err(|source| Error::Map { map: name, source })
}

/// The per-CPU counters ([`Stats`], one slot per CPU).
pub struct StatsMap {
    map: PerCpuArray<MapData, Stats>,
}

impl StatsMap {
    /// Takes the map out of a loaded object, so it can be read while the program runs.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            map: take(ebpf, STATS_MAP)?,
        })
    }

    /// The counters summed over all CPUs.
    pub fn read(&self) -> Result<Stats, Error> {
        let per_cpu = self.map.get(&0, 0).map_err(|source| Error::Map {
            map: STATS_MAP,
            source,
        })?;
        let mut total = Stats::ZERO;
        for cpu in per_cpu.iter() {
            total.accumulate(cpu);
        }
        Ok(total)
    }
}

/// The run-time configuration and the protected ports: written whole, read by the program on
/// every packet, so a change applies from the next packet on, without a reload.
pub struct ControlMaps {
    config: Array<MapData, Config>,
    ports: Array<MapData, u64>,
    auto: PerCpuArray<MapData, AutoState>,
}

/// `auto` mode's state, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoSummary {
    /// Whether any CPU answers with cookies.
    pub under_attack: bool,
    /// The highest all-CPU SYN rate a CPU computed at its last decision.
    pub syn_rate_pps: u64,
}

impl ControlMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            config: take(ebpf, CONFIG_MAP)?,
            ports: take(ebpf, PORTS_MAP)?,
            auto: take(ebpf, AUTO_STATE_MAP)?,
        })
    }

    pub fn config(&self) -> Result<Config, Error> {
        self.config.get(&0, 0).map_err(|source| Error::Map {
            map: CONFIG_MAP,
            source,
        })
    }

    /// Replaces the configuration. An array element is updated in place under RCU: a packet
    /// sees either the old or the new value, field by field; mode, flags and limits are each
    /// one aligned word.
    pub fn set_config(&mut self, config: &Config) -> Result<(), Error> {
        self.config.set(0, *config, 0).map_err(|source| Error::Map {
            map: CONFIG_MAP,
            source,
        })
    }

    /// Replaces the protected ports. Words are written one at a time, so during a change a
    /// packet may see some words old and some new; that only matters for the ports changing.
    pub fn set_ports(&mut self, ports: &PortSet) -> Result<(), Error> {
        for (index, word) in ports.words().iter().enumerate() {
            self.ports
                .set(index as u32, *word, 0)
                .map_err(|source| Error::Map {
                    map: PORTS_MAP,
                    source,
                })?;
        }
        Ok(())
    }

    /// A CPU decides only when it closes a window, that is when a SYN arrives; after a flood
    /// that stops dead, its flag would stay up. So a CPU's flag counts only while its last
    /// window closed within the hold time (plus a window of slack).
    pub fn auto_summary(&self) -> Result<AutoSummary, Error> {
        let per_cpu = self.auto.get(&0, 0).map_err(|source| Error::Map {
            map: AUTO_STATE_MAP,
            source,
        })?;
        let config = self.config()?;
        let now = monotonic_ns();
        let fresh = u64::from(config.auto_hold_ms) * 1_000_000 + AUTO_WINDOW_NS;
        Ok(per_cpu.iter().fold(AutoSummary::default(), |acc, cpu| {
            let recent = now.saturating_sub(cpu.rate_at_ns) <= fresh;
            AutoSummary {
                under_attack: acc.under_attack || (cpu.under_attack != 0 && recent),
                syn_rate_pps: acc
                    .syn_rate_pps
                    .max(if recent { cpu.total_rate_pps } else { 0 }),
            }
        }))
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
