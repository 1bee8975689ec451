//! What a SYN-ACK promises, computed as the kernel computes it for its own cookie SYN-ACK.
//!
//! The window scale, the MSS option and the window a SYN-ACK advertises are promises the
//! kernel must keep when it rebuilds the connection from the cookie ACK: `cookie_v4_check()` /
//! `cookie_v6_check()` (net/ipv4/syncookies.c, net/ipv6/syncookies.c) recompute the window
//! scale through `tcp_select_initial_window()` from the listener and the host as they are then.
//! A SYN-ACK that advertised another scale makes the client misread every window the server
//! sends (too large: the transfer stalls; too small: it crawls). So synguard derives each
//! promise from the same inputs the kernel uses, with the kernel's own formulas:
//!
//! - the listener ([`ListenerFacts`], read from its `struct sock` by the XDP program at the
//!   offsets [`KernelLayout`] names): receive buffer and whether the application set it
//!   (`SOCK_RCVBUF_LOCK`), `TCP_WINDOW_CLAMP`, `TCP_MAXSEG`, its `scaling_ratio`, `IP_TOS` /
//!   `IPV6_TCLASS`, `IP_TTL` / `IPV6_UNICAST_HOPS`, path-MTU discovery;
//! - the host ([`HostFacts`], polled by the controller): `tcp_rmem`, `rmem_max`, the option
//!   sysctls, the interface MTU and hop limit, the route's metrics.
//!
//! Reference (Linux 6.18): net/ipv4/tcp_minisocks.c `tcp_openreq_init_rwin()`,
//! net/ipv4/tcp_output.c `tcp_select_initial_window()`, `tcp_make_synack()`,
//! `tcp_synack_options()`, include/net/tcp.h `tcp_full_space()`, `__tcp_win_from_space()`,
//! `tcp_mss_clamp()`, net/ipv4/route.c `ipv4_default_advmss()`, net/ipv6/route.c
//! `ip6_default_advmss()`, `ip6_dst_hoplimit()`, net/ipv4/ip_output.c `ip_build_and_send_pkt()`,
//! `ip_select_ttl()`, net/ipv4/tcp_input.c `tcp_conn_request()`, `tcp_ecn_create_request()`.

/// `SOCK_RCVBUF_LOCK` in `sk_userlocks` (include/net/sock.h): the application set SO_RCVBUF.
pub const SOCK_RCVBUF_LOCK: u8 = 2;
/// `TCP_MAX_WSCALE` (include/net/tcp.h).
pub const TCP_MAX_WSCALE: u32 = 14;
/// `TCPOLEN_TSTAMP_ALIGNED`: what the timestamp option takes from each segment's payload.
pub const TCPOLEN_TSTAMP_ALIGNED: u32 = 12;
/// `MAX_TCP_WINDOW` (include/net/tcp.h), for `tcp_workaround_signed_windows`.
pub const MAX_TCP_WINDOW: u32 = 32767;
/// `IP_PMTUDISC_WANT` and `IP_PMTUDISC_DO` (include/uapi/linux/in.h): the SYN-ACK is sent with
/// DF (and IP ID 0) for these two (`ip_dont_fragment()`, include/net/ip.h).
pub const IP_PMTUDISC_WANT: u8 = 1;
pub const IP_PMTUDISC_DO: u8 = 2;
/// The ECN bits of the TOS / traffic class byte (`INET_ECN_MASK`).
pub const INET_ECN_MASK: u8 = 3;

/// Where the running kernel keeps each listener field synguard reads, as byte offsets from the
/// start of a `struct tcp_sock` (which starts with `struct inet_sock`, which starts with
/// `struct sock`), or from `struct ipv6_pinfo` for the `ipv6_*` fields. The controller resolves
/// them from the kernel's BTF (/sys/kernel/btf/vmlinux) at load and writes them to the layout
/// map; `ready` is 1 once every field was found with the size the XDP program reads. Until then
/// no listener's facts can be known, and SYNs go to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    pub ready: u32,
    /// `sk->sk_rcvbuf` (int).
    pub sk_rcvbuf: u32,
    /// `sk->sk_userlocks` (u8).
    pub sk_userlocks: u32,
    /// `inet_sk(sk)->pinet6` (pointer to `struct ipv6_pinfo`).
    pub inet_pinet6: u32,
    /// `inet_sk(sk)->uc_ttl` (s16, -1: the route's or the namespace's default).
    pub inet_uc_ttl: u32,
    /// `inet_sk(sk)->tos` (u8).
    pub inet_tos: u32,
    /// `inet_sk(sk)->pmtudisc` (u8).
    pub inet_pmtudisc: u32,
    /// `tcp_sk(sk)->window_clamp` (u32).
    pub tcp_window_clamp: u32,
    /// `tcp_sk(sk)->rx_opt.user_mss` (u16).
    pub tcp_user_mss: u32,
    /// `tcp_sk(sk)->scaling_ratio` (u8).
    pub tcp_scaling_ratio: u32,
    /// `np->hop_limit` (s16, -1: default) and `np->tclass` (u8) in `struct ipv6_pinfo`.
    pub ipv6_hop_limit: u32,
    pub ipv6_tclass: u32,
    /// `sk->__sk_common.skc_family` (u16), `skc_daddr` (be32) and `skc_v6_daddr` (16 bytes): a
    /// socket's peer, read by the tracing program that keeps the filter of sources that may
    /// own a socket (`crate::owners`).
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_v6_daddr: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<KernelLayout>() == 64);

/// What the kernel keeps about one listening socket that shapes its SYN-ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerFacts {
    /// `sk_rcvbuf`: SO_RCVBUF doubled, or `tcp_rmem[1]` when the application set none.
    pub rcvbuf: i32,
    pub userlocks: u8,
    /// `TCP_WINDOW_CLAMP`, 0 for none.
    pub window_clamp: u32,
    /// `TCP_MAXSEG`, 0 for none.
    pub user_mss: u16,
    /// `tcp_sk(sk)->scaling_ratio`: receive buffer bytes to window bytes, in 1/256.
    pub scaling_ratio: u8,
    /// `IP_TOS` (IPv4) or `IPV6_TCLASS` (IPv6).
    pub tos: u8,
    /// `IP_TTL` or `IPV6_UNICAST_HOPS`, negative for the default.
    pub ttl: i16,
    /// `IP_MTU_DISCOVER` (IPv4 only).
    pub pmtudisc: u8,
}

/// `RouteFacts::known`: how a family's route facts are found.
pub mod route {
    /// Not known: the family's SYNs go to the kernel.
    pub const UNKNOWN: u32 = 0;
    /// The same for every client: these facts.
    pub const UNIFORM: u32 = 1;
    /// Per client: the client's address is looked up in the family's route table
    /// (`ROUTES_V4_MAP`, `ROUTES_V6_MAP`), whose value is a class in `ROUTE_CLASSES_MAP`.
    pub const PER_CLIENT: u32 = 2;
}

/// Route classes per family: distinct sets of metrics among the routes out of the interface.
/// More than this, and the family's facts are not known.
pub const ROUTE_CLASSES: u32 = 16;

/// What the kernel would take from one address family's route to the client, and from the
/// namespace for it. All metrics 0 when the route sets none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteFacts {
    /// A [`route`] value.
    pub known: u32,
    /// The MTU towards clients: the route's `mtu` metric, or the interface's MTU.
    pub mtu: u32,
    /// The route's `advmss`, `window`, `initrwnd` and `hoplimit` metrics.
    pub advmss: u32,
    pub window: u32,
    pub initrwnd: u32,
    pub hoplimit: u32,
    /// `net.ipv4.route.min_adv_mss` or `net.ipv6.route.min_adv_mss`.
    pub min_advmss: u32,
    /// `net.ipv4.ip_default_ttl`, or the interface's `net.ipv6.conf.IFACE.hop_limit`.
    pub default_hop_limit: u32,
}

/// The host's side of every SYN-ACK, polled by the controller (sysctls, interface, routes) and
/// written whole; `generation` changes with every change, so the XDP program recomputes its
/// cached promises from the next SYN on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// 0 until the controller has written real facts; then bumped on every change.
    pub generation: u32,
    /// `net.ipv4.tcp_rmem[2]` and `net.core.rmem_max`: `tcp_select_initial_window()` scales
    /// for the larger.
    pub tcp_rmem_max: u32,
    pub rmem_max: u32,
    /// `net.ipv4.tcp_timestamps` (0, 1 or 2), `tcp_sack`, `tcp_window_scaling`, `tcp_ecn`,
    /// `tcp_workaround_signed_windows`, `tcp_reflect_tos`.
    pub timestamps: u32,
    pub sack: u32,
    pub window_scaling: u32,
    pub ecn: u32,
    pub workaround_signed_windows: u32,
    pub reflect_tos: u32,
    pub reserved: u32,
    pub v4: RouteFacts,
    pub v6: RouteFacts,
}

const _: () = assert!(size_of::<HostFacts>() == 40 + 2 * 32 && size_of::<RouteFacts>() == 32);

impl HostFacts {
    #[inline(always)]
    pub fn route(&self, ipv6: bool) -> &RouteFacts {
        if ipv6 { &self.v6 } else { &self.v4 }
    }
}

/// What a SYN-ACK to a listener promises, everything the kernel would put in its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Promise {
    /// The MSS option.
    pub mss: u16,
    /// The window field when the SYN-ACK carries timestamps, and when it does not (the kernel
    /// rounds the window down to a multiple of the MSS less the timestamp option).
    pub window_ts: u16,
    pub window_plain: u16,
    /// The window scale, offered when the client offered one.
    pub wscale: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// The listener's TOS / traffic class (before `tcp_reflect_tos`).
    pub tos: u8,
    /// 1: IPv4 DF and ID 0 (the listener does path-MTU discovery).
    pub dont_fragment: u8,
    /// The listener's `TCP_MAXSEG`, 0 for none: it also clamps the client's MSS before the
    /// cookie encodes it (`tcp_parse_options()` with `user_mss`, `tcp_get_syncookie_mss()`).
    pub user_mss: u16,
    pub reserved: [u8; 4],
}

const _: () = assert!(size_of::<Promise>() == 16);

/// Why no promise can be made for a listener: its SYNs go to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// The host's facts are not in yet, or routes to different clients differ.
    Host,
}

/// `ilog2(x)` for x > 0, in shifts the BPF backend emits inline (no count-leading-zeros call).
#[inline(always)]
pub const fn ilog2(mut x: u32) -> u32 {
    let mut log = 0;
    if x >= 1 << 16 {
        x >>= 16;
        log += 16;
    }
    if x >= 1 << 8 {
        x >>= 8;
        log += 8;
    }
    if x >= 1 << 4 {
        x >>= 4;
        log += 4;
    }
    if x >= 1 << 2 {
        x >>= 2;
        log += 2;
    }
    if x >= 1 << 1 {
        log += 1;
    }
    log
}

/// `dst_metric_advmss()`: the route's `advmss`, else `ipv4_default_advmss()` /
/// `ip6_default_advmss()` from the MTU.
#[inline(always)]
pub fn advmss(route: &RouteFacts, ipv6: bool) -> u32 {
    if route.advmss != 0 {
        return route.advmss;
    }
    if ipv6 {
        // ip6_default_advmss(): MTU less 60, at least min_adv_mss; above the largest
        // non-jumbo payload less a TCP header it becomes IPV6_MAXPLEN ("any MSS").
        let mss = route.mtu.saturating_sub(60);
        let mss = if mss < route.min_advmss {
            route.min_advmss
        } else {
            mss
        };
        if mss > 65535 - 20 { 65535 } else { mss }
    } else {
        // ipv4_default_advmss(): MTU less 40, at least min_adv_mss, at most 65535 - 40.
        let mss = route.mtu.saturating_sub(40);
        let mss = if mss < route.min_advmss {
            route.min_advmss
        } else {
            mss
        };
        if mss > 65535 - 40 { 65535 - 40 } else { mss }
    }
}

/// The result of `tcp_select_initial_window()`: the initial receive window and the scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialWindow {
    pub rcv_wnd: u32,
    pub rcv_wscale: u8,
}

/// `tcp_select_initial_window()` for a listener's request, with `tcp_openreq_init_rwin()`'s
/// inputs: `full_space` is `tcp_full_space(listener)`, `mss` the MSS less the timestamp option
/// when it is in use, `window_clamp` the request's clamp (already limited to `full_space` for a
/// locked buffer), `init_rcv_wnd` the route's `initrwnd` (segments, 0 for none).
#[inline(always)]
pub fn select_initial_window(
    full_space: u32,
    mss: u32,
    window_clamp: u32,
    wscale_ok: bool,
    init_rcv_wnd: u32,
    host: &HostFacts,
) -> InitialWindow {
    // No clamp: the largest window a scale can express.
    let clamp = if window_clamp == 0 {
        65535 << TCP_MAX_WSCALE
    } else {
        window_clamp
    };
    let mut space = if full_space < clamp {
        full_space
    } else {
        clamp
    };
    // Quantize to a multiple of the MSS.
    if mss != 0 && space > mss {
        space -= space % mss;
    }
    let mut rcv_wnd = if host.workaround_signed_windows != 0 && space > MAX_TCP_WINDOW {
        MAX_TCP_WINDOW
    } else {
        space
    };
    if init_rcv_wnd != 0 {
        let limit = init_rcv_wnd.saturating_mul(mss);
        if rcv_wnd > limit {
            rcv_wnd = limit;
        }
    }
    let mut rcv_wscale = 0;
    if wscale_ok {
        // Scale for the largest window the buffer could grow to, within the clamp.
        let mut s = space;
        if host.tcp_rmem_max > s {
            s = host.tcp_rmem_max;
        }
        if host.rmem_max > s {
            s = host.rmem_max;
        }
        if clamp < s {
            s = clamp;
        }
        let log = if s == 0 { 0 } else { ilog2(s) };
        rcv_wscale = if log <= 15 {
            0
        } else if log - 15 > TCP_MAX_WSCALE {
            TCP_MAX_WSCALE
        } else {
            log - 15
        } as u8;
    }
    InitialWindow {
        rcv_wnd,
        rcv_wscale,
    }
}

/// `tcp_full_space()`: the window the listener's receive buffer stands for
/// (`__tcp_win_from_space()`: buffer x scaling_ratio / 256).
#[inline(always)]
pub fn full_space(listener: &ListenerFacts) -> u32 {
    let rcvbuf = if listener.rcvbuf < 0 {
        0
    } else {
        listener.rcvbuf as u64
    };
    ((rcvbuf * u64::from(listener.scaling_ratio)) >> 8) as u32
}

/// Everything a SYN-ACK to `listener` promises, given the host's facts and the route to the
/// client (`tcp_openreq_init_rwin()`, `tcp_make_synack()`, `ip_select_ttl()`,
/// `ip6_dst_hoplimit()`).
#[inline(always)]
pub fn promise(
    listener: &ListenerFacts,
    host: &HostFacts,
    route: &RouteFacts,
    ipv6: bool,
) -> Result<Promise, Unknown> {
    if host.generation == 0 || route.known == route::UNKNOWN {
        return Err(Unknown::Host);
    }
    // tcp_mss_clamp(): TCP_MAXSEG lowers the route's MSS, never raises it.
    let mut mss = advmss(route, ipv6);
    let user_mss = u32::from(listener.user_mss);
    if user_mss != 0 && user_mss < mss {
        mss = user_mss;
    }
    let full = full_space(listener);
    let mut clamp = if listener.window_clamp != 0 {
        listener.window_clamp
    } else {
        route.window
    };
    // "limit the window selection if the user enforce a smaller rx buffer"
    if listener.userlocks & SOCK_RCVBUF_LOCK != 0 && (clamp > full || clamp == 0) {
        clamp = full;
    }
    let with_ts = select_initial_window(
        full,
        mss.saturating_sub(TCPOLEN_TSTAMP_ALIGNED),
        clamp,
        true,
        route.initrwnd,
        host,
    );
    // The scale does not depend on the MSS; only the window's rounding does.
    let plain = select_initial_window(full, mss, clamp, false, route.initrwnd, host);
    let ttl = if listener.ttl >= 0 {
        listener.ttl as u32
    } else if route.hoplimit != 0 {
        route.hoplimit
    } else {
        route.default_hop_limit
    };
    let window = |w: u32| if w > 65535 { 65535 } else { w } as u16;
    Ok(Promise {
        mss: if mss > 65535 { 65535 } else { mss } as u16,
        window_ts: window(with_ts.rcv_wnd),
        window_plain: window(plain.rcv_wnd),
        wscale: with_ts.rcv_wscale,
        ttl: if ttl > 255 { 255 } else { ttl } as u8,
        tos: listener.tos,
        dont_fragment: (!ipv6
            && (listener.pmtudisc == IP_PMTUDISC_WANT || listener.pmtudisc == IP_PMTUDISC_DO))
            as u8,
        user_mss: listener.user_mss,
        reserved: [0; 4],
    })
}

/// The MSS the cookie encodes: the client's, lowered to the listener's `TCP_MAXSEG`; `None`
/// (no MSS option) stays `None`, for which the kernel assumes its default without the clamp.
#[inline(always)]
pub fn cookie_mss(client_mss: Option<u16>, promise: &Promise) -> Option<u16> {
    client_mss.map(|mss| {
        if promise.user_mss != 0 && promise.user_mss < mss {
            promise.user_mss
        } else {
            mss
        }
    })
}

/// The TOS / traffic class of the SYN-ACK: the listener's, or with `tcp_reflect_tos` the SYN's
/// own with the listener's ECN bits (`tcp_v4_send_synack()`, `tcp_v6_send_synack()`).
#[inline(always)]
pub fn synack_tos(promise: &Promise, host: &HostFacts, syn_tos: u8) -> u8 {
    if host.reflect_tos != 0 {
        (syn_tos & !INET_ECN_MASK) | (promise.tos & INET_ECN_MASK)
    } else {
        promise.tos
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields (size asserted above).
unsafe impl aya::Pod for KernelLayout {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields and two structs of u32 fields (size asserted above).
unsafe impl aya::Pod for HostFacts {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only u32 fields.
unsafe impl aya::Pod for RouteFacts {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.18's defaults in a fresh namespace: tcp_rmem 4096 131072 33554432, rmem_max
    /// 212992, MTU 1500, a listener with no options (sk_rcvbuf = tcp_rmem[1], ratio 50 %).
    fn host() -> HostFacts {
        let route = |ipv6: bool| RouteFacts {
            known: 1,
            mtu: 1500,
            min_advmss: if ipv6 { 1220 } else { 256 },
            default_hop_limit: 64,
            ..RouteFacts::default()
        };
        HostFacts {
            generation: 1,
            tcp_rmem_max: 33_554_432,
            rmem_max: 212_992,
            timestamps: 2,
            sack: 1,
            window_scaling: 1,
            ecn: 2,
            v4: route(false),
            v6: route(true),
            ..HostFacts::default()
        }
    }

    fn listener() -> ListenerFacts {
        ListenerFacts {
            rcvbuf: 131_072,
            userlocks: 0,
            window_clamp: 0,
            user_mss: 0,
            scaling_ratio: 128,
            tos: 0,
            ttl: -1,
            pmtudisc: IP_PMTUDISC_WANT,
        }
    }

    /// SO_RCVBUF as the kernel stores it: doubled (sock_setsockopt()), locked.
    fn rcvbuf(bytes: i32) -> ListenerFacts {
        ListenerFacts {
            rcvbuf: (bytes * 2).max(2304),
            userlocks: SOCK_RCVBUF_LOCK,
            ..listener()
        }
    }

    #[test]
    fn default_listener_matches_the_kernels_cookie_synack() {
        // Seen in the kernel's own cookie SYN-ACKs: 65,160 on IPv4 with timestamps (45 x
        // 1448), 64,260 on IPv6 (45 x 1428), 64,240 without (44 x 1460), scale 10.
        let v4 = promise(&listener(), &host(), host().route(false), false).unwrap();
        assert_eq!(
            (v4.mss, v4.window_ts, v4.window_plain),
            (1460, 65160, 64240)
        );
        assert_eq!((v4.wscale, v4.ttl, v4.dont_fragment), (10, 64, 1));
        let v6 = promise(&listener(), &host(), host().route(true), true).unwrap();
        assert_eq!((v6.mss, v6.window_ts, v6.wscale), (1440, 64260, 10));
        assert_eq!(v6.dont_fragment, 0, "IPv6 has no DF bit");
    }

    #[test]
    fn a_locked_receive_buffer_caps_the_scale() {
        // The table: 4 KiB -> 0, 64 KiB -> 1, 1 MiB -> 5 (the kernel's own scales).
        for (bytes, scale) in [(4096, 0), (65_536, 1), (1 << 20, 5)] {
            let got = promise(&rcvbuf(bytes), &host(), host().route(false), false).unwrap();
            assert_eq!(got.wscale, scale, "SO_RCVBUF {bytes}");
        }
        // 4 KiB: an 8 KiB buffer is a 4 KiB window, rounded to 2 x 1448.
        assert_eq!(
            promise(&rcvbuf(4096), &host(), host().route(false), false)
                .unwrap()
                .window_ts,
            2896
        );
    }

    #[test]
    fn the_scale_follows_tcp_rmem_and_rmem_max() {
        let mut host = host();
        host.tcp_rmem_max = 15 << 20;
        assert_eq!(
            promise(&listener(), &host, host.route(false), false)
                .unwrap()
                .wscale,
            8
        );
        host.rmem_max = 1 << 30;
        assert_eq!(
            promise(&listener(), &host, host.route(false), false)
                .unwrap()
                .wscale,
            14
        );
    }

    #[test]
    fn window_clamp_and_maxseg() {
        let clamped = ListenerFacts {
            window_clamp: 20_000,
            ..listener()
        };
        let got = promise(&clamped, &host(), host().route(false), false).unwrap();
        assert_eq!(got.wscale, 0, "ilog2(20000) = 14");
        assert_eq!(got.window_ts, 13 * 1448);
        let maxseg = ListenerFacts {
            user_mss: 1000,
            ..listener()
        };
        let got = promise(&maxseg, &host(), host().route(false), false).unwrap();
        assert_eq!((got.mss, got.window_ts), (1000, 66 * 988));
        // TCP_MAXSEG above the route's MSS changes nothing.
        let big = ListenerFacts {
            user_mss: 9000,
            ..listener()
        };
        assert_eq!(
            promise(&big, &host(), host().route(false), false)
                .unwrap()
                .mss,
            1460
        );
    }

    #[test]
    fn route_metrics_and_mtu() {
        let mut host = host();
        host.v4.advmss = 1000;
        host.v4.initrwnd = 10;
        host.v4.hoplimit = 7;
        let got = promise(&listener(), &host, host.route(false), false).unwrap();
        assert_eq!((got.mss, got.window_ts, got.ttl), (1000, 9880, 7));
        host.v6.mtu = 9000;
        assert_eq!(
            promise(&listener(), &host, host.route(true), true)
                .unwrap()
                .mss,
            8940
        );
        host.v6.mtu = 1280;
        assert_eq!(
            promise(&listener(), &host, host.route(true), true)
                .unwrap()
                .mss,
            1220
        );
        host.v6.known = 0;
        assert_eq!(
            promise(&listener(), &host, host.route(true), true),
            Err(Unknown::Host)
        );
        assert_eq!(
            promise(&listener(), &HostFacts::default(), &host.v4, false),
            Err(Unknown::Host)
        );
    }

    #[test]
    fn listener_ttl_tos_and_pmtu() {
        let set = ListenerFacts {
            ttl: 33,
            tos: 0x28,
            pmtudisc: 0,
            ..listener()
        };
        let got = promise(&set, &host(), host().route(false), false).unwrap();
        assert_eq!((got.ttl, got.tos, got.dont_fragment), (33, 0x28, 0));
        let mut reflect = host();
        assert_eq!(synack_tos(&got, &reflect, 0xb9), 0x28);
        reflect.reflect_tos = 1;
        assert_eq!(synack_tos(&got, &reflect, 0xb9), 0xb8);
    }

    #[test]
    fn tcp_maxseg_clamps_the_mss_the_cookie_encodes() {
        let maxseg = ListenerFacts {
            user_mss: 1000,
            ..listener()
        };
        let p = promise(&maxseg, &host(), host().route(false), false).unwrap();
        assert_eq!(cookie_mss(Some(1460), &p), Some(1000));
        assert_eq!(cookie_mss(Some(536), &p), Some(536));
        assert_eq!(cookie_mss(None, &p), None);
        let plain = promise(&listener(), &host(), host().route(false), false).unwrap();
        assert_eq!(cookie_mss(Some(1460), &plain), Some(1460));
    }

    #[test]
    fn ilog2_is_exact() {
        for x in [1u32, 2, 3, 4, 65_535, 65_536, 65_537, 1 << 31, u32::MAX] {
            assert_eq!(ilog2(x), 31 - x.leading_zeros(), "{x}");
        }
    }
}
