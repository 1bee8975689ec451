//! Typed access to the maps the XDP program shares with the controller.

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use synguard_common::{STATS_MAP, Stats};

use crate::Error;

/// The per-CPU counters ([`Stats`], one slot per CPU).
pub struct StatsMap {
    map: PerCpuArray<MapData, Stats>,
}

impl StatsMap {
    /// Takes the map out of a loaded object, so it can be read while the program runs.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = ebpf
            .take_map(STATS_MAP)
            .ok_or_else(|| Error::Other(format!("map {STATS_MAP} missing from the BPF object")))?;
        let map = PerCpuArray::try_from(map).map_err(|source| Error::Map {
            map: STATS_MAP,
            source,
        })?;
        Ok(Self { map })
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
