//! Attack starts and ends as the data path reports them (a ring buffer, one record per event),
//! and the sources of the attack, from the per-CPU rings of sampled SYN sources.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use synguard_common::{
    AttackEvent, Config, EVENTS_MAP, SAMPLES_MAP,
    config::{SAMPLE_SLOTS, SourceSamples},
    limit::SourceKey,
};
use tokio::io::{Interest, unix::AsyncFd};

use crate::Error;

/// Distinct sources remembered during one attack; beyond it, new ones are not counted (the
/// heaviest are met early and often).
const MAX_TRACKED: usize = 100_000;

pub struct AttackEvents {
    ring: AsyncFd<RingBuf<MapData>>,
    samples: PerCpuArray<MapData, SourceSamples>,
    /// Each CPU's sample counter when last read.
    read_up_to: Vec<u64>,
    counts: HashMap<SourceKey, u64>,
    sampled: u64,
}

impl AttackEvents {
    /// Takes the maps out of a loaded object (before the program is loaded: it is loaded
    /// against their descriptors).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map_error = |map, source| Error::Map { map, source };
        let ring = ebpf
            .take_map(EVENTS_MAP)
            .ok_or_else(|| Error::Other(format!("map {EVENTS_MAP} missing from the object")))?;
        let ring = RingBuf::try_from(ring).map_err(|e| map_error(EVENTS_MAP, e))?;
        // SAFETY: the ring buffer owns its map's descriptor, which stays open and the same
        // until the AsyncFd (which owns the ring buffer) is dropped.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::Other(format!("watching the events ring buffer failed: {e}")))?;
        let samples = ebpf
            .take_map(SAMPLES_MAP)
            .ok_or_else(|| Error::Other(format!("map {SAMPLES_MAP} missing from the object")))?;
        let samples = PerCpuArray::try_from(samples).map_err(|e| map_error(SAMPLES_MAP, e))?;
        Ok(Self {
            ring,
            samples,
            read_up_to: Vec::new(),
            counts: HashMap::new(),
            sampled: 0,
        })
    }

    /// Waits for the data path's next events.
    pub async fn next(&mut self) -> Result<Vec<AttackEvent>, Error> {
        loop {
            let mut guard = self
                .ring
                .readable_mut()
                .await
                .map_err(|e| Error::Other(format!("waiting for events failed: {e}")))?;
            let mut events = Vec::new();
            while let Some(item) = guard.get_inner_mut().next() {
                if item.len() >= size_of::<AttackEvent>() {
                    // SAFETY: the data path writes whole `AttackEvent`s (plain integers); the
                    // record may not be aligned, hence the unaligned read.
                    events.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<AttackEvent>())
                    });
                }
            }
            guard.clear_ready();
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }

    /// Forgets the sources counted so far (at an attack's start).
    pub fn reset(&mut self) -> Result<(), Error> {
        self.counts.clear();
        self.sampled = 0;
        // Start from what is in the rings now: older samples belong to an earlier attack.
        self.read_up_to = self.read_rings()?.iter().map(|ring| ring.next).collect();
        Ok(())
    }

    /// Counts the samples taken since the last call. Called often enough during an attack
    /// that a CPU's ring rarely wraps between calls; when it does, the newest samples count.
    pub fn collect(&mut self) -> Result<(), Error> {
        let rings = self.read_rings()?;
        self.read_up_to.resize(rings.len(), 0);
        for (ring, read) in rings.iter().zip(self.read_up_to.iter_mut()) {
            let new = ring.next.saturating_sub(*read).min(SAMPLE_SLOTS as u64);
            for n in (ring.next - new)..ring.next {
                let key = ring.keys[(n % SAMPLE_SLOTS as u64) as usize];
                if self.counts.len() < MAX_TRACKED || self.counts.contains_key(&key) {
                    *self.counts.entry(key).or_default() += 1;
                }
                self.sampled += 1;
            }
            *read = ring.next;
        }
        Ok(())
    }

    /// The `n` most sampled sources, as prefixes by `config`'s lengths, each with its share of
    /// the samples.
    pub fn top_sources(&self, n: usize, config: &Config) -> Vec<(String, f64)> {
        let mut counts: Vec<(&SourceKey, &u64)> = self.counts.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.addr.cmp(&b.0.addr)));
        counts
            .into_iter()
            .take(n)
            .map(|(key, count)| {
                (
                    describe(key, config),
                    *count as f64 / self.sampled.max(1) as f64,
                )
            })
            .collect()
    }

    /// Sources sampled since the attack started.
    pub fn sampled(&self) -> u64 {
        self.sampled
    }

    fn read_rings(&self) -> Result<Vec<SourceSamples>, Error> {
        let rings = self.samples.get(&0, 0).map_err(|source| Error::Map {
            map: SAMPLES_MAP,
            source,
        })?;
        Ok(rings.iter().copied().collect())
    }
}

/// A source key as an operator reads it: the address, or the network when sources are
/// aggregated.
pub fn describe(key: &SourceKey, config: &Config) -> String {
    let a = key.addr;
    if a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff {
        let addr = IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]));
        match config.source_prefix_v4 {
            32 => addr.to_string(),
            len => format!("{addr}/{len}"),
        }
    } else {
        let addr = IpAddr::V6(Ipv6Addr::from(a));
        match config.source_prefix_v6 {
            128 => addr.to_string(),
            len => format!("{addr}/{len}"),
        }
    }
}

/// Formats top sources for a log line: `198.18.0.2 (41%), 198.18.0.3 (12%)`.
pub fn format_top(top: &[(String, f64)]) -> String {
    if top.is_empty() {
        return "none sampled".into();
    }
    top.iter()
        .map(|(source, share)| format!("{source} ({:.1}%)", share * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_addresses_or_networks() {
        let config = Config::DEFAULT;
        assert_eq!(
            describe(&SourceKey::v4([198, 18, 0, 2], 32), &config),
            "198.18.0.2"
        );
        let v6: Ipv6Addr = "fd00:198:18::2".parse().unwrap();
        assert_eq!(
            describe(&SourceKey::v6(v6.octets(), 128), &config),
            "fd00:198:18::2"
        );
        let aggregated = Config {
            source_prefix_v4: 24,
            source_prefix_v6: 64,
            ..config
        };
        assert_eq!(
            describe(&SourceKey::v4([198, 18, 0, 2], 24), &aggregated),
            "198.18.0.0/24"
        );
        assert_eq!(
            describe(&SourceKey::v6(v6.octets(), 64), &aggregated),
            "fd00:198:18::/64"
        );
        assert_eq!(
            format_top(&[("198.18.0.2".into(), 0.414), ("198.18.0.3".into(), 0.12)]),
            "198.18.0.2 (41.4%), 198.18.0.3 (12.0%)"
        );
        assert_eq!(format_top(&[]), "none sampled");
    }
}
