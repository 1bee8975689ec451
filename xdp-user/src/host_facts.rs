//! The host's side of every SYN-ACK (`synguard_common::promise::HostFacts`): the sysctls, the
//! interface's MTU and hop limit, and the route metrics the kernel reads when it builds its own
//! cookie SYN-ACK, gathered here first; the pure parts (what the routes add up to) are
//! unit-tested without root.
//!
//! The controller polls them every [`POLL_EVERY`] and writes them to the data path only when
//! something changed, with a new generation, so the XDP program recomputes its cached promises
//! from the next SYN on.

use std::{ffi::CString, io, time::Duration};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use synguard_common::promise::{HostFacts, RouteFacts};

use crate::{Error, sysctl};

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

/// What one family's SYN-ACKs take from the routes: if every route out of the interface sets
/// the same metrics, those; otherwise none can be known (different clients would get different
/// promises from the kernel), and the family's SYNs go to the kernel.
pub fn route_facts(
    routes: &[RouteMetrics],
    iface_mtu: u32,
    min_advmss: u32,
    default_hop_limit: u32,
) -> RouteFacts {
    let first = routes.first().copied().unwrap_or_default();
    let uniform = routes.iter().all(|r| *r == first) && !first.mtu_locked;
    RouteFacts {
        known: u32::from(uniform),
        mtu: if first.mtu != 0 { first.mtu } else { iface_mtu },
        advmss: first.advmss,
        window: first.window,
        initrwnd: first.initrwnd,
        hoplimit: first.hoplimit,
        min_advmss,
        default_hop_limit,
    }
}

/// The facts for `iface` in this process's network namespace; `generation` is left 0 for the
/// caller to set.
pub fn gather(iface: &str) -> Result<HostFacts, Error> {
    let number = |key: &str| -> Result<u32, Error> {
        let values = sysctl::read_numbers(key)?;
        Ok(values.first().copied().unwrap_or(0).min(u64::from(u32::MAX)) as u32)
    };
    let tcp_rmem = sysctl::read_numbers("net.ipv4.tcp_rmem")?;
    let mtu = interface_mtu(iface)?;
    let index = crate::preflight::interface_index(iface)?;
    let (v4_routes, v6_routes) = (routes(index, false)?, routes(index, true)?);
    // The interface's own hop limit (ip6_dst_hoplimit() reads the egress device's); absent
    // when IPv6 is off on it, and then no IPv6 SYN-ACK can be promised.
    let hop_limit_v6 = std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{iface}/hop_limit"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    let mut v6 = route_facts(
        &v6_routes,
        mtu,
        number("net.ipv6.route.min_adv_mss").unwrap_or(1220),
        hop_limit_v6.unwrap_or(0),
    );
    if hop_limit_v6.is_none() {
        v6.known = 0;
    }
    Ok(HostFacts {
        generation: 0,
        tcp_rmem_max: tcp_rmem.get(2).copied().unwrap_or(0).min(u64::from(u32::MAX)) as u32,
        rmem_max: number("net.core.rmem_max")?,
        timestamps: number("net.ipv4.tcp_timestamps")?,
        sack: number("net.ipv4.tcp_sack")?,
        window_scaling: number("net.ipv4.tcp_window_scaling")?,
        ecn: number("net.ipv4.tcp_ecn")?,
        workaround_signed_windows: number("net.ipv4.tcp_workaround_signed_windows")?,
        reflect_tos: number("net.ipv4.tcp_reflect_tos")?,
        reserved: 0,
        v4: route_facts(
            &v4_routes,
            mtu,
            number("net.ipv4.route.min_adv_mss")?,
            number("net.ipv4.ip_default_ttl")?,
        ),
        v6,
    })
}

/// Follows the host: [`HostPoller::poll`] gathers the facts again and returns them with a new
/// generation when they changed.
#[derive(Default)]
pub struct HostPoller {
    last: HostFacts,
}

impl HostPoller {
    pub fn poll(&mut self, iface: &str) -> Result<Option<HostFacts>, Error> {
        let mut facts = gather(iface)?;
        facts.generation = self.last.generation;
        if facts == self.last {
            return Ok(None);
        }
        // Never 0, which means "no facts yet" to the data path.
        facts.generation = self.last.generation.wrapping_add(1).max(1);
        self.last = facts;
        Ok(Some(facts))
    }
}

/// The metrics of every unicast route in the main table that leaves through `if_index`.
fn routes(if_index: u32, ipv6: bool) -> Result<Vec<RouteMetrics>, Error> {
    let fail = |e: io::Error| Error::Other(format!("cannot read the routing table: {e}"));
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
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                .map_err(|e| Error::Other(format!("cannot parse the routing table: {e}")))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(found),
                NetlinkPayload::Error(e) => {
                    return Err(Error::Other(format!("cannot read the routing table: {e}")));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    if let Some(metrics) = leaves_through(&route, if_index) {
                        found.push(metrics);
                    }
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

/// A main-table unicast route out of `if_index`, and its metrics.
fn leaves_through(route: &RouteMessage, if_index: u32) -> Option<RouteMetrics> {
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut out = false;
    let mut metrics = RouteMetrics::default();
    for attribute in &route.attributes {
        match attribute {
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
    (out && table == u32::from(RouteHeader::RT_TABLE_MAIN)).then_some(metrics)
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
        return Err(Error::Other(format!(
            "cannot open a socket to read the MTU of {iface}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else; dropping it closes it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of `req`; the socket outlives it.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc < 0 {
        return Err(Error::Other(format!(
            "cannot read the MTU of {iface}: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the ioctl succeeded and set the MTU member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_routes_give_their_metrics_and_mixed_ones_give_none() {
        let plain = RouteMetrics::default();
        let advmss = RouteMetrics {
            advmss: 1000,
            ..plain
        };
        let none = route_facts(&[], 1500, 256, 64);
        assert_eq!((none.known, none.mtu, none.advmss), (1, 1500, 0));
        let one = route_facts(&[advmss, advmss], 1500, 256, 64);
        assert_eq!((one.known, one.advmss), (1, 1000));
        assert_eq!(route_facts(&[plain, advmss], 1500, 256, 64).known, 0);
        let mtu = RouteMetrics { mtu: 1400, ..plain };
        assert_eq!(route_facts(&[mtu], 1500, 256, 64).mtu, 1400);
        let locked = RouteMetrics {
            mtu_locked: true,
            ..plain
        };
        assert_eq!(route_facts(&[locked], 1500, 256, 64).known, 0);
    }
}
