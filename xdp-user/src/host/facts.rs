//! The host's side of every SYN-ACK (`synguard_common::promise::HostFacts`): the sysctls, the
//! interface's MTU and hop limit, and the route metrics the kernel reads when it builds its own
//! cookie SYN-ACK, gathered here first; the pure parts (what the routes add up to) are
//! unit-tested without root.
//!
//! The controller polls them every [`POLL_EVERY`] and writes them to the data path only when
//! something changed, with a new generation, so the XDP program recomputes its cached promises
//! from the next SYN on.
//!
//! XXX: only the main routing table is read; policy rules that send replies through other
//! tables, and path-MTU exceptions cached for single clients, are not seen.

use std::{ffi::CString, io, time::Duration};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use synguard_common::{
    ROUTE_TABLE_ENTRIES,
    promise::{HostFacts, ROUTE_CLASSES, RouteFacts, route},
};

use crate::{Error, host::sysctl};

/// How often the controller looks again. A change is honoured at most this long after it is
/// made; the kernel itself has a window of one round trip, between its SYN-ACK and its cookie
/// check (`cookie_v4_check()` reads the listener and the sysctls again).
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// `RTAX_LOCK`'s bit for the MTU metric: a locked MTU makes the kernel send without DF.
const LOCK_MTU: u32 = 1 << 2;

/// One route's metrics, as far as a SYN-ACK cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteMetrics {
    pub mtu: u32,
    pub advmss: u32,
    pub window: u32,
    pub initrwnd: u32,
    pub hoplimit: u32,
    pub mtu_locked: bool,
}

/// What one family's SYN-ACKs take from the routes out of the interface: if they all set the
/// same metrics, those (`route::UNIFORM`); if not, a table from each route's prefix to its
/// class of metrics, for the data path to look the client up in (`route::PER_CLIENT`, the
/// longest prefix wins, as in the kernel's own lookup); `route::UNKNOWN` when there are more
/// classes or routes than the data path holds, or a route locks its MTU (the kernel then
/// sends without DF).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoutePlan {
    pub facts: RouteFacts,
    /// Per client only: each class's facts, and each route's prefix and class.
    pub classes: Vec<RouteFacts>,
    pub table: Vec<(IpNet, u32)>,
}

pub fn route_plan(
    routes: &[(IpNet, RouteMetrics)],
    iface_mtu: u32,
    min_advmss: u32,
    default_hop_limit: u32,
) -> RoutePlan {
    let facts = |known: u32, m: &RouteMetrics| RouteFacts {
        known,
        mtu: if m.mtu != 0 { m.mtu } else { iface_mtu },
        advmss: m.advmss,
        window: m.window,
        initrwnd: m.initrwnd,
        hoplimit: m.hoplimit,
        min_advmss,
        default_hop_limit,
    };
    let unknown = RoutePlan {
        facts: facts(route::UNKNOWN, &RouteMetrics::default()),
        ..RoutePlan::default()
    };
    if routes.iter().any(|(_, m)| m.mtu_locked) {
        return unknown;
    }
    let first = routes.first().map(|(_, m)| *m).unwrap_or_default();
    if routes.iter().all(|(_, m)| *m == first) {
        return RoutePlan {
            facts: facts(route::UNIFORM, &first),
            ..RoutePlan::default()
        };
    }
    let mut kinds: Vec<RouteMetrics> = Vec::new();
    let mut table = Vec::new();
    for (prefix, metrics) in routes {
        let class = match kinds.iter().position(|k| k == metrics) {
            Some(class) => class,
            None => {
                kinds.push(*metrics);
                kinds.len() - 1
            }
        };
        table.push((*prefix, class as u32));
    }
    if kinds.len() > ROUTE_CLASSES as usize || table.len() > ROUTE_TABLE_ENTRIES as usize {
        return unknown;
    }
    RoutePlan {
        facts: facts(route::PER_CLIENT, &first),
        classes: kinds.iter().map(|m| facts(route::UNIFORM, m)).collect(),
        table,
    }
}

/// Everything the data path needs of the host: its facts, and the per-client route tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSnapshot {
    pub facts: HostFacts,
    pub v4: RoutePlan,
    pub v6: RoutePlan,
    /// The host's unicast addresses (the kernel's local routes), sorted: the only
    /// destinations the data path judges.
    pub local: Vec<std::net::IpAddr>,
}

/// The facts for `iface` in this process's network namespace; `generation` is left 0 for the
/// caller to set.
pub fn gather(iface: &str) -> Result<HostSnapshot, Error> {
    let number = |key: &str| -> Result<u32, Error> {
        let values = sysctl::read_numbers(key)?;
        Ok(values
            .first()
            .copied()
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32)
    };
    let tcp_rmem = sysctl::read_numbers("net.ipv4.tcp_rmem")?;
    let mtu = interface_mtu(iface)?;
    let index = crate::host::preflight::interface_index(iface)?;
    let (v4_table, v6_table) = (dump_routes(false)?, dump_routes(true)?);
    let leaving = |table: &[RouteMessage]| -> Vec<(IpNet, RouteMetrics)> {
        table
            .iter()
            .filter_map(|r| leaves_through(r, index))
            .collect()
    };
    let (v4_routes, v6_routes) = (leaving(&v4_table), leaving(&v6_table));
    // Loopback addresses arrive on another interface only as martians, which the kernel drops.
    let mut local: Vec<std::net::IpAddr> = v4_table
        .iter()
        .chain(&v6_table)
        .filter_map(local_address)
        .filter(|a| iface == "lo" || !a.is_loopback())
        .collect();
    local.sort();
    local.dedup();
    // The interface's own hop limit (ip6_dst_hoplimit() reads the egress device's); absent
    // when IPv6 is off on it, and then no IPv6 SYN-ACK can be promised.
    let hop_limit_v6 =
        std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/hop_limit"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok());
    let mut v6 = route_plan(
        &v6_routes,
        mtu,
        number("net.ipv6.route.min_adv_mss").unwrap_or(1220),
        hop_limit_v6.unwrap_or(0),
    );
    if hop_limit_v6.is_none() {
        v6.facts.known = route::UNKNOWN;
    }
    let v4 = route_plan(
        &v4_routes,
        mtu,
        number("net.ipv4.route.min_adv_mss")?,
        number("net.ipv4.ip_default_ttl")?,
    );
    let facts = HostFacts {
        generation: 0,
        tcp_rmem_max: tcp_rmem
            .get(2)
            .copied()
            .unwrap_or(0)
            .min(u64::from(u32::MAX)) as u32,
        rmem_max: number("net.core.rmem_max")?,
        timestamps: number("net.ipv4.tcp_timestamps")?,
        sack: number("net.ipv4.tcp_sack")?,
        window_scaling: number("net.ipv4.tcp_window_scaling")?,
        ecn: number("net.ipv4.tcp_ecn")?,
        workaround_signed_windows: number("net.ipv4.tcp_workaround_signed_windows")?,
        reflect_tos: number("net.ipv4.tcp_reflect_tos")?,
        reserved: 0,
        v4: v4.facts,
        v6: v6.facts,
    };
    Ok(HostSnapshot {
        facts,
        v4,
        v6,
        local,
    })
}

/// Follows the host: [`HostPoller::poll`] gathers the facts again and returns them with a new
/// generation when they changed.
#[derive(Default)]
pub struct HostPoller {
    last: HostSnapshot,
}

impl HostPoller {
    pub fn poll(&mut self, iface: &str) -> Result<Option<HostSnapshot>, Error> {
        let mut snapshot = gather(iface)?;
        snapshot.facts.generation = self.last.facts.generation;
        if snapshot == self.last {
            return Ok(None);
        }
        // Never 0, which means "no facts yet" to the data path.
        snapshot.facts.generation = self.last.facts.generation.wrapping_add(1).max(1);
        self.last = snapshot.clone();
        Ok(Some(snapshot))
    }
}

/// Every route of one family, in every table (an RTM_GETROUTE dump).
fn dump_routes(ipv6: bool) -> Result<Vec<RouteMessage>, Error> {
    let fail = |e: io::Error| Error::HostFacts {
        what: "the routing table".into(),
        reason: e.to_string(),
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
    socket.bind_auto().map_err(fail)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(fail)?;
    let mut message = RouteMessage::default();
    message.header.address_family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(message)),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(fail)?;
    let mut found = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full().map_err(fail)?;
        let mut at = 0;
        while at < bytes.len() {
            let reply =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..]).map_err(|e| {
                    Error::HostFacts {
                        what: "the routing table".into(),
                        reason: format!("unparsable reply: {e}"),
                    }
                })?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(Error::HostFacts {
                        what: "the routing table".into(),
                        reason: e.to_string(),
                    });
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    found.push(route);
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// The kernel's local table (RT_TABLE_LOCAL, include/uapi/linux/rtnetlink.h).
const RT_TABLE_LOCAL: u32 = 255;

/// The address of a host route of type `local` in the local table: one of the host's own
/// unicast addresses, as the kernel's input routing sees it (`fib_table_lookup()` giving
/// RTN_LOCAL; broadcast, multicast and anycast routes have types of their own).
fn local_address(route: &RouteMessage) -> Option<std::net::IpAddr> {
    let full = match route.header.address_family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    let mut table = u32::from(route.header.table);
    let mut address = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => address = Some((*a).into()),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => address = Some((*a).into()),
            _ => {}
        }
    }
    let local = route.header.kind == RouteType::Local
        && route.header.destination_prefix_length == full
        && table == RT_TABLE_LOCAL;
    address.filter(|_| local)
}

/// A main-table unicast route out of `if_index`: its prefix and metrics.
fn leaves_through(route: &RouteMessage, if_index: u32) -> Option<(IpNet, RouteMetrics)> {
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut out = false;
    let mut metrics = RouteMetrics::default();
    let ipv6 = route.header.address_family == AddressFamily::Inet6;
    let len = route.header.destination_prefix_length;
    let mut prefix: Option<IpNet> = if ipv6 {
        IpNet::new(std::net::Ipv6Addr::UNSPECIFIED.into(), len).ok()
    } else {
        IpNet::new(std::net::Ipv4Addr::UNSPECIFIED.into(), len).ok()
    };
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(address) => {
                let ip: Option<std::net::IpAddr> = match address {
                    RouteAddress::Inet(a) => Some((*a).into()),
                    RouteAddress::Inet6(a) => Some((*a).into()),
                    _ => None,
                };
                prefix = ip.and_then(|ip| IpNet::new(ip, len).ok());
            }
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => out |= *i == if_index,
            RouteAttribute::MultiPath(hops) => {
                out |= hops.iter().any(|h| h.interface_index == if_index);
            }
            RouteAttribute::Metrics(list) => {
                for metric in list {
                    match metric {
                        RouteMetric::Mtu(v) => metrics.mtu = *v,
                        RouteMetric::Advmss(v) => metrics.advmss = *v,
                        RouteMetric::Window(v) => metrics.window = *v,
                        RouteMetric::InitRwnd(v) => metrics.initrwnd = *v,
                        RouteMetric::Hoplimit(v) => metrics.hoplimit = *v,
                        RouteMetric::Lock(v) => metrics.mtu_locked = v & LOCK_MTU != 0,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let prefix = prefix?.trunc();
    (out && table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some((prefix, metrics))
}

/// The interface's MTU in this network namespace (SIOCGIFMTU): /sys/class/net shows the
/// namespace sysfs was mounted in, not necessarily this thread's.
pub fn interface_mtu(iface: &str) -> Result<u32, Error> {
    let unknown = || Error::UnknownInterface {
        iface: iface.to_string(),
    };
    let name = CString::new(iface).map_err(|_| unknown())?;
    // SAFETY: ifreq is plain old data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > req.ifr_name.len() {
        return Err(unknown());
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain socket call.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::HostFacts {
            what: format!("the MTU of {iface} (no socket)"),
            reason: io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: `fd` was just opened and is owned by nothing else; dropping it closes it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of `req`; the socket outlives it.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc < 0 {
        return Err(Error::HostFacts {
            what: format!("the MTU of {iface}"),
            reason: io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: the ioctl succeeded and set the MTU member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_routes_give_their_metrics_and_mixed_ones_a_table() {
        let plain = RouteMetrics::default();
        let advmss = RouteMetrics {
            advmss: 1000,
            ..plain
        };
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let none = route_plan(&[], 1500, 256, 64);
        assert_eq!(
            (none.facts.known, none.facts.mtu, none.facts.advmss),
            (route::UNIFORM, 1500, 0)
        );
        let one = route_plan(
            &[(net("10.0.0.0/8"), advmss), (net("0.0.0.0/0"), advmss)],
            1500,
            256,
            64,
        );
        assert_eq!((one.facts.known, one.facts.advmss), (route::UNIFORM, 1000));
        assert!(one.table.is_empty());
        let mixed = route_plan(
            &[
                (net("198.18.0.0/24"), plain),
                (net("198.18.0.3/32"), advmss),
            ],
            1500,
            256,
            64,
        );
        assert_eq!(mixed.facts.known, route::PER_CLIENT);
        assert_eq!(
            mixed.table,
            vec![(net("198.18.0.0/24"), 0), (net("198.18.0.3/32"), 1)]
        );
        assert_eq!(mixed.classes.len(), 2);
        assert_eq!(
            (mixed.classes[1].advmss, mixed.classes[1].mtu),
            (1000, 1500)
        );
        assert_eq!(mixed.classes[1].default_hop_limit, 64);
        let mtu = RouteMetrics { mtu: 1400, ..plain };
        assert_eq!(
            route_plan(&[(net("0.0.0.0/0"), mtu)], 1500, 256, 64)
                .facts
                .mtu,
            1400
        );
        let locked = RouteMetrics {
            mtu_locked: true,
            ..plain
        };
        assert_eq!(
            route_plan(&[(net("0.0.0.0/0"), locked)], 1500, 256, 64)
                .facts
                .known,
            route::UNKNOWN
        );
        let many: Vec<_> = (0..20u32)
            .map(|i| {
                let m = RouteMetrics {
                    advmss: 600 + i,
                    ..plain
                };
                (net(&format!("10.{i}.0.0/16")), m)
            })
            .collect();
        assert_eq!(
            route_plan(&many, 1500, 256, 64).facts.known,
            route::UNKNOWN,
            "more classes than held"
        );
    }
}
