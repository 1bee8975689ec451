//! Typed access to the maps the XDP program shares with the controller.

use aya::{
    Ebpf,
    maps::{
        Array, HashMap, MapData, MapError, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use ipnet::IpNet;
use synguard_common::{
    ATTACK_MAP, AUTO_STATE_MAP, AttackState, AutoState, CONFIG_MAP, Config, HOST_MAP, LAYOUT_MAP,
    LIST_V4_MAP, LIST_V6_MAP, LOCAL_V4_MAP, LOCAL_V6_MAP, PORTS_MAP, ROUTE_CLASSES_MAP,
    ROUTES_V4_MAP, ROUTES_V6_MAP, SOURCES_MAP, STATS_MAP, Stats,
    config::{AUTO_WINDOW_NS, list},
    limit::SourceKey,
    promise::{HostFacts, KernelLayout, ROUTE_CLASSES, RouteFacts},
};

use crate::{
    Error,
    config::lists::{Cidr, Lists},
    config::ports::PortSet,
    config::settings::SourceLimit,
};

fn local_map(address: &std::net::IpAddr) -> &'static str {
    match address {
        std::net::IpAddr::V4(_) => LOCAL_V4_MAP,
        std::net::IpAddr::V6(_) => LOCAL_V6_MAP,
    }
}

/// The map `name` of a loaded object, typed.
pub(crate) fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, Error>
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
    attack: Array<MapData, AttackState>,
    /// The ports last written to `ports`, to answer `protects` without reading the map.
    listed: Option<PortSet>,
}

/// What a SYN-ACK's promises are made of: where the kernel keeps listener fields, and the
/// host's facts. Written before the program is attached, and the host's whenever they change.
pub struct FactsMaps {
    layout: Array<MapData, KernelLayout>,
    host: Array<MapData, HostFacts>,
    routes_v4: LpmTrie<MapData, [u8; 4], u32>,
    routes_v6: LpmTrie<MapData, [u8; 16], u32>,
    route_classes: Array<MapData, RouteFacts>,
    local_v4: HashMap<MapData, [u8; 4], u8>,
    local_v6: HashMap<MapData, [u8; 16], u8>,
    /// The route tables' entries as last written, to remove those that went away.
    written: Vec<(IpNet, u32)>,
    /// The local addresses as last written, likewise.
    written_local: Vec<std::net::IpAddr>,
}

impl FactsMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            layout: take(ebpf, LAYOUT_MAP)?,
            host: take(ebpf, HOST_MAP)?,
            routes_v4: take(ebpf, ROUTES_V4_MAP)?,
            routes_v6: take(ebpf, ROUTES_V6_MAP)?,
            route_classes: take(ebpf, ROUTE_CLASSES_MAP)?,
            local_v4: take(ebpf, LOCAL_V4_MAP)?,
            local_v6: take(ebpf, LOCAL_V6_MAP)?,
            written: Vec::new(),
            written_local: Vec::new(),
        })
    }

    /// Writes a snapshot of the host: the per-client route tables and classes first, then the
    /// facts with their new generation, so the data path never pairs new facts with old
    /// tables for longer than one write.
    pub fn set_snapshot(
        &mut self,
        snapshot: &crate::host::facts::HostSnapshot,
    ) -> Result<(), Error> {
        let entries: Vec<(IpNet, u32)> = [&snapshot.v4, &snapshot.v6]
            .iter()
            .flat_map(|plan| plan.table.iter().copied())
            .collect();
        for (family, plan) in [(0, &snapshot.v4), (ROUTE_CLASSES, &snapshot.v6)] {
            for (class, facts) in plan.classes.iter().enumerate() {
                self.route_classes
                    .set(family + class as u32, *facts, 0)
                    .map_err(|source| Error::Map {
                        map: ROUTE_CLASSES_MAP,
                        source,
                    })?;
            }
        }
        for (prefix, class) in &entries {
            self.route(prefix, Some(*class))?;
        }
        let stale: Vec<IpNet> = self
            .written
            .iter()
            .filter(|(p, _)| !entries.iter().any(|(q, _)| q == p))
            .map(|(p, _)| *p)
            .collect();
        for prefix in &stale {
            self.route(prefix, None)?;
        }
        self.written = entries;
        self.set_local(&snapshot.local)?;
        self.set_host(&snapshot.facts)
    }

    /// Makes the local address maps hold exactly `addresses`: new ones first, so an address
    /// that stays is never missing in between.
    fn set_local(&mut self, addresses: &[std::net::IpAddr]) -> Result<(), Error> {
        use std::net::IpAddr;
        for address in addresses {
            let result = match address {
                IpAddr::V4(a) => self.local_v4.insert(a.octets(), 1, 0),
                IpAddr::V6(a) => self.local_v6.insert(a.octets(), 1, 0),
            };
            result.map_err(|source| Error::Map {
                map: local_map(address),
                source,
            })?;
        }
        for gone in self.written_local.iter().filter(|a| !addresses.contains(a)) {
            let result = match gone {
                IpAddr::V4(a) => self.local_v4.remove(&a.octets()),
                IpAddr::V6(a) => self.local_v6.remove(&a.octets()),
            };
            match result {
                Err(e) if key_missing(&e) => {}
                other => other.map_err(|source| Error::Map {
                    map: local_map(gone),
                    source,
                })?,
            }
        }
        self.written_local = addresses.to_vec();
        Ok(())
    }

    /// Sets (`Some(class)`) or removes one route table entry.
    fn route(&mut self, prefix: &IpNet, class: Option<u32>) -> Result<(), Error> {
        let result = match (prefix, class) {
            (IpNet::V4(net), Some(class)) => self.routes_v4.insert(
                &Key::new(u32::from(net.prefix_len()), net.network().octets()),
                class,
                0,
            ),
            (IpNet::V4(net), None) => self.routes_v4.remove(&Key::new(
                u32::from(net.prefix_len()),
                net.network().octets(),
            )),
            (IpNet::V6(net), Some(class)) => self.routes_v6.insert(
                &Key::new(u32::from(net.prefix_len()), net.network().octets()),
                class,
                0,
            ),
            (IpNet::V6(net), None) => self.routes_v6.remove(&Key::new(
                u32::from(net.prefix_len()),
                net.network().octets(),
            )),
        };
        let map = match prefix {
            IpNet::V4(_) => ROUTES_V4_MAP,
            IpNet::V6(_) => ROUTES_V6_MAP,
        };
        match result {
            // Removing an entry that is not there (the table was emptied) is no error.
            Err(e) if class.is_none() && key_missing(&e) => Ok(()),
            other => other.map_err(|source| Error::Map { map, source }),
        }
    }

    /// Takes the maps out of a loaded object and fills them for `iface`, before the program
    /// runs: with no layout or host facts it would leave every SYN to the kernel. Returns the
    /// poller that keeps the host's facts current.
    pub fn take_filled(
        ebpf: &mut Ebpf,
        iface: &str,
    ) -> Result<(Self, crate::host::facts::HostPoller), Error> {
        let mut facts = Self::take(ebpf)?;
        facts.set_layout(&crate::datapath::btf::listener_layout()?)?;
        let mut poller = crate::host::facts::HostPoller::default();
        if let Some(current) = poller.poll(iface)? {
            facts.set_snapshot(&current)?;
        }
        Ok((facts, poller))
    }

    pub fn set_layout(&mut self, layout: &KernelLayout) -> Result<(), Error> {
        self.layout.set(0, *layout, 0).map_err(|source| Error::Map {
            map: LAYOUT_MAP,
            source,
        })
    }

    /// Replaces the host's facts. A packet may see a mix of old and new fields for the one
    /// update; the listener cache it fills then lives at most 10 ms (xdp-ebpf/src/listener.rs).
    pub fn set_host(&mut self, host: &HostFacts) -> Result<(), Error> {
        self.host.set(0, *host, 0).map_err(|source| Error::Map {
            map: HOST_MAP,
            source,
        })
    }

    pub fn host(&self) -> Result<HostFacts, Error> {
        self.host.get(&0, 0).map_err(|source| Error::Map {
            map: HOST_MAP,
            source,
        })
    }
}

/// The list map that holds `net`'s family.
fn list_map(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => LIST_V4_MAP,
        IpNet::V6(_) => LIST_V6_MAP,
    }
}

/// A missing key, as aya reports it from bpf_map_delete_elem (ENOENT).
fn key_missing(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The allow/deny LPM tries, one per family.
pub struct ListMaps {
    v4: LpmTrie<MapData, [u8; 4], u32>,
    v6: LpmTrie<MapData, [u8; 16], u32>,
}

impl ListMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            v4: take(ebpf, LIST_V4_MAP)?,
            v6: take(ebpf, LIST_V6_MAP)?,
        })
    }

    /// Puts `cidr` on the allow or deny list (`config::list`), replacing what it was.
    pub fn insert(&mut self, cidr: &Cidr, verdict: u32) -> Result<(), Error> {
        match cidr.0 {
            IpNet::V4(net) => {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                self.v4.insert(&key, verdict, 0)
            }
            IpNet::V6(net) => {
                let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
                self.v6.insert(&key, verdict, 0)
            }
        }
        .map_err(|source| Error::Map {
            map: list_map(&cidr.0),
            source,
        })
    }

    /// Takes `cidr` off whichever list it is on; `false` if it was on none.
    pub fn remove(&mut self, cidr: &Cidr) -> Result<bool, Error> {
        let result = match cidr.0 {
            IpNet::V4(net) => self.v4.remove(&Key::new(
                u32::from(net.prefix_len()),
                net.network().octets(),
            )),
            IpNet::V6(net) => self.v6.remove(&Key::new(
                u32::from(net.prefix_len()),
                net.network().octets(),
            )),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if key_missing(&e) => Ok(false),
            Err(source) => Err(Error::Map {
                map: list_map(&cidr.0),
                source,
            }),
        }
    }

    /// Every entry, with its verdict.
    pub fn entries(&self) -> Result<Vec<(Cidr, u32)>, Error> {
        let map_error = |map| move |source| Error::Map { map, source };
        let mut entries = Vec::new();
        for item in self.v4.iter() {
            let (key, verdict) = item.map_err(map_error(LIST_V4_MAP))?;
            let net = ipnet::Ipv4Net::new(key.data().into(), key.prefix_len() as u8)
                .map_err(|e| Error::Other(e.to_string()))?;
            entries.push((Cidr(IpNet::V4(net)), verdict));
        }
        for item in self.v6.iter() {
            let (key, verdict) = item.map_err(map_error(LIST_V6_MAP))?;
            let net = ipnet::Ipv6Net::new(key.data().into(), key.prefix_len() as u8)
                .map_err(|e| Error::Other(e.to_string()))?;
            entries.push((Cidr(IpNet::V6(net)), verdict));
        }
        Ok(entries)
    }

    /// Loads the lists; entries already there stay (use `remove` to take any off).
    pub fn load(&mut self, lists: &Lists) -> Result<(), Error> {
        // Entries a previous run left (an adopted program keeps its maps) and that are no
        // longer wanted go first; the rest are written over in place.
        for (cidr, _) in self.entries()? {
            if !lists.allow.contains(&cidr) && !lists.deny.contains(&cidr) {
                self.remove(&cidr)?;
            }
        }
        for cidr in &lists.allow {
            self.insert(cidr, list::ALLOW)?;
        }
        for cidr in &lists.deny {
            self.insert(cidr, list::DENY)?;
        }
        Ok(())
    }
}

/// The per-source buckets (`SOURCES_MAP`), for their occupancy.
pub struct SourceBuckets {
    map: HashMap<MapData, SourceKey, u64>,
}

impl SourceBuckets {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            map: take(ebpf, SOURCES_MAP)?,
        })
    }

    /// Sources with a bucket now (walks the keys: one syscall per entry).
    pub fn len(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `auto` mode's state: the shared attack flag, and the rates summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoSummary {
    /// Whether SYNs are answered with cookies.
    pub under_attack: bool,
    /// The highest all-CPU SYN rate a CPU computed at its last decision.
    pub syn_rate_pps: u64,
    /// The current attack's peak rate (the last attack's, when none is going on).
    pub peak_pps: u64,
    /// SYNs to protected ports seen so far in `auto` mode, all CPUs.
    pub syns: u64,
}

impl ControlMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        Ok(Self {
            config: take(ebpf, CONFIG_MAP)?,
            ports: take(ebpf, PORTS_MAP)?,
            auto: take(ebpf, AUTO_STATE_MAP)?,
            attack: take(ebpf, ATTACK_MAP)?,
            listed: None,
        })
    }

    /// Whether `port` is protected: every port, or one of those listed with `--ports`.
    pub fn protects(&self, port: u16) -> Result<bool, Error> {
        let all = self.config()?.flags & synguard_common::config::flags::ALL_PORTS != 0;
        Ok(all
            || self
                .listed
                .as_ref()
                .is_none_or(|ports| ports.contains(port)))
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

    /// Changes the configuration in place: read, change, write back. The controller is the only
    /// writer, so nothing is lost between the read and the write.
    pub fn update_config(&mut self, change: impl FnOnce(&mut Config)) -> Result<Config, Error> {
        let mut config = self.config()?;
        change(&mut config);
        self.set_config(&config)?;
        Ok(config)
    }

    /// Sets the per-source SYN limit. Buckets already earned keep their state: a source over
    /// the old limit is not let through in a burst because the limit changed.
    pub fn set_source_limit(&mut self, limit: &SourceLimit) -> Result<Config, Error> {
        self.update_config(|config| limit.apply(config))
    }

    /// Sets the global caps (per second, 0 for none).
    pub fn set_caps(&mut self, syn_pass_pps: u32, synack_pps: u32) -> Result<Config, Error> {
        self.update_config(|config| {
            config.syn_pass_cap_pps = syn_pass_pps;
            config.synack_cap_pps = synack_pps;
        })
    }

    /// Sets `auto` mode's threshold and hold time.
    pub fn set_auto_threshold(&mut self, pps: u32, hold_ms: u32) -> Result<Config, Error> {
        self.update_config(|config| {
            config.auto_threshold_pps = pps;
            config.auto_hold_ms = hold_ms;
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
        self.listed = Some(ports.clone());
        Ok(())
    }

    /// The data path ends an attack when a packet arrives after the hold time; after a flood
    /// that stops dead, on a server that then gets no traffic at all, its flag would stay up.
    /// So the flag counts only while the rate was last high within the hold time (plus a
    /// window of slack), as the data path itself will decide at its next packet.
    pub fn auto_summary(&self) -> Result<AutoSummary, Error> {
        let per_cpu = self.auto.get(&0, 0).map_err(|source| Error::Map {
            map: AUTO_STATE_MAP,
            source,
        })?;
        let attack = self.attack.get(&0, 0).map_err(|source| Error::Map {
            map: ATTACK_MAP,
            source,
        })?;
        let config = self.config()?;
        let now = monotonic_ns();
        let fresh = u64::from(config.auto_hold_ms) * 1_000_000 + AUTO_WINDOW_NS;
        let recent = |at: u64| now.saturating_sub(at) <= fresh;
        Ok(AutoSummary {
            under_attack: attack.active != 0 && recent(attack.last_busy_ns),
            syn_rate_pps: per_cpu
                .iter()
                .filter(|cpu| recent(cpu.rate_at_ns))
                .map(|cpu| cpu.total_rate_pps)
                .max()
                .unwrap_or(0),
            peak_pps: attack.peak_pps,
            syns: per_cpu.iter().map(|cpu| cpu.syns).sum(),
        })
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
