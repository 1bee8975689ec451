//! The differential run: generated frames through synguard's XDP program (BPF_PROG_TEST_RUN,
//! in a lab namespace with real listeners, connections and a TIME_WAIT socket) and through the
//! reference model (`crate::model`), in every mode. The class, action and reason the program
//! counts must be the model's; every SYN-ACK it sends must parse, carry valid checksums, answer
//! the SYN (swapped addresses and ports, ack = ISN + 1, the options the SYN offered) and hold a
//! cookie the kernel's own check accepts (`bpf_tcp_raw_check_syncookie_*`, through the
//! program's ACK path).
//!
//! Frames come from a structure-aware proptest generator: Ethernet with 0 to 3 VLAN tags,
//! IPv4 with options, fragments, wrong lengths and checksums, IPv6 with extension-header
//! chains, TCP with every flag combination, data offsets 0 to 15 and option lists valid,
//! truncated, zero-length, oversized or unknown, payloads up to the MTU, and truncation at any
//! byte. A mismatch is shrunk by proptest and reported with the seed, the frame's structure
//! and its bytes in hex.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use etherparse::{NetHeaders, PacketHeaders, TcpOptionElement, TransportHeader};
use ipnet::IpNet;
use proptest::{
    prelude::*,
    test_runner::{Config as ProptestConfig, RngAlgorithm, TestError, TestRng, TestRunner},
};
use synguard_common::{
    Action, Config, Mode, Reason,
    config::{flags, list},
    limit::SourceKey,
};

use crate::{
    InKernel, Outcome,
    model::{self, Expected, Listening, World},
};

const SERVER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 1);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0xc6, 0x12, 0x00, 0x02];

/// Listening ports: 80 on every address of both families, 8080 on every IPv4 address, 8443 on
/// the server's IPv6 address only. 443 and 22 have no listener.
const DUAL_PORT: u16 = 80;
const V4_PORT: u16 = 8080;
const V6_PORT: u16 = 8443;
const PORTS: [u16; 6] = [DUAL_PORT, V4_PORT, V6_PORT, 443, 22, 53];
/// The ports named in the run with a port list (the rest unprotected).
const LISTED_PORTS: [u16; 3] = [DUAL_PORT, 443, V4_PORT];

/// The sources, by role: the lists deny 198.18.64.0/24 and fd00:198:18::40/122 and allow one
/// address inside each; one source of each family is over its per-source limit.
fn denied_v4() -> IpNet {
    "198.18.64.0/24".parse().unwrap()
}
fn allowed_v4() -> IpNet {
    "198.18.64.7/32".parse().unwrap()
}
fn denied_v6() -> IpNet {
    "fd00:198:18::40/122".parse().unwrap()
}
fn allowed_v6() -> IpNet {
    "fd00:198:18::41/128".parse().unwrap()
}
const LIMITED_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const LIMITED_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 9);

/// One configuration the frames run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Off,
    Monitor,
    Cookie,
    /// `cookie` with a port list instead of every port with a listener.
    CookieListedPorts,
    AutoBelow,
    AutoAbove,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Off,
        Variant::Monitor,
        Variant::Cookie,
        Variant::CookieListedPorts,
        Variant::AutoBelow,
        Variant::AutoAbove,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::Monitor => "monitor",
            Variant::Cookie => "cookie",
            Variant::CookieListedPorts => "cookie, listed ports",
            Variant::AutoBelow => "auto below threshold",
            Variant::AutoAbove => "auto above threshold",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Variant::Off => Mode::Off,
            Variant::Monitor => Mode::Monitor,
            Variant::Cookie | Variant::CookieListedPorts => Mode::Cookie,
            Variant::AutoBelow | Variant::AutoAbove => Mode::Auto,
        }
    }

    /// The data path's configuration: lists on, a per-source limit every source but the
    /// limited ones stays far within (1 ns per SYN, a 10 s burst), no caps; `auto` with a
    /// threshold it never reaches, or one it passes at once and a hold that never ends.
    fn config(self) -> Config {
        let all_ports = match self {
            Variant::CookieListedPorts => 0,
            _ => flags::ALL_PORTS,
        };
        let (threshold, hold) = match self {
            Variant::AutoAbove => (1, u32::MAX),
            _ => (u32::MAX, 1000),
        };
        Config {
            mode: self.mode() as u32,
            flags: all_ports | flags::TIMESTAMPS | flags::LISTS,
            auto_threshold_pps: threshold,
            auto_hold_ms: hold,
            auto_port_threshold_pps: 0,
            syn_pass_cap_pps: 0,
            synack_cap_pps: 0,
            source_interval_ns: 1,
            source_promote: 1,
            source_prefix_v4: 32,
            source_prefix_v6: 128,
            source_burst_ns: 10_000_000_000,
            sketch_seed: 0x5eed,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The generator.

/// Who a frame is from and to. `Connection` and `TimeWait` take the 4-tuple of a socket the
/// server holds.
#[derive(Clone, Copy, Debug)]
pub enum Flow {
    Free {
        src: Src,
        dst: Dst,
        src_port: u16,
        dst_port: u16,
    },
    /// The n-th established connection (IPv4 or IPv6), or its TIME_WAIT twin.
    Connection(usize),
    TimeWait,
}

#[derive(Clone, Copy, Debug)]
pub enum Src {
    Client,
    Allowed,
    Denied,
    Limited,
    /// A spoofed source: 198.18.128.0/17 or fd00:198:18::8000/113, by these low bits.
    Spoofed(u16),
}

#[derive(Clone, Copy, Debug)]
pub enum Dst {
    Server,
    /// On the link, not the server.
    Neighbour,
    Broadcast,
    Multicast,
    Loopback,
}

#[derive(Clone, Debug)]
pub struct FrameSpec {
    pub group_mac: bool,
    /// TPIDs of the VLAN tags, outermost first.
    pub vlans: Vec<u16>,
    pub flow: Flow,
    pub ipv6: bool,
    pub ip: IpSpec,
    pub l4: L4Spec,
    /// Cut the frame to this fraction (per mille) of its length.
    pub cut: Option<u16>,
    /// Replace the EtherType after the tags.
    pub ether_type: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct IpSpec {
    /// IPv4 option bytes (padded to 4 with EOL, at most 40); ignored for IPv6.
    pub v4_options: Vec<u8>,
    /// Replace the IHL.
    pub ihl: Option<u8>,
    /// Added to the IPv4 total length or IPv6 payload length.
    pub len_delta: i16,
    pub bad_checksum: bool,
    /// IPv4 flags and fragment offset field.
    pub frag: u16,
    /// The protocol (IPv4) or the last header's Next Header (IPv6).
    pub proto: u8,
    pub tos: u8,
    /// IPv6 extension headers, in order.
    pub ext: Vec<ExtSpec>,
}

#[derive(Clone, Debug)]
pub struct ExtSpec {
    pub kind: u8,
    pub len_byte: u8,
    pub fill: u8,
    /// Routing: segments left; Fragment: the offset-and-flags field.
    pub field: u16,
}

#[derive(Clone, Debug)]
pub enum L4Spec {
    Tcp(TcpSpec),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct TcpSpec {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Replace the data offset.
    pub doff: Option<u8>,
    pub options: Vec<u8>,
    pub payload: usize,
    pub window: u16,
    pub bad_checksum: bool,
}

fn tcp_option() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => any::<u16>().prop_map(|m| { let [a, b] = m.to_be_bytes(); vec![2, 4, a, b] }),
        3 => (0u8..20).prop_map(|w| vec![3, 3, w]),
        3 => Just(vec![4, 2]),
        3 => (any::<u32>(), any::<u32>()).prop_map(|(v, e)| {
            let mut o = vec![8, 10];
            o.extend(v.to_be_bytes());
            o.extend(e.to_be_bytes());
            o
        }),
        3 => Just(vec![1]),
        1 => Just(vec![0]),
        // Unknown kinds and known ones at wrong, zero or oversized lengths.
        2 => (any::<u8>(), 0u8..50, any::<u8>()).prop_map(|(kind, len, fill)| {
            let mut o = vec![kind, len];
            o.extend(std::iter::repeat_n(fill, usize::from(len.saturating_sub(2))));
            o
        }),
        1 => (prop::sample::select(vec![2u8, 3, 4, 8, 19, 29, 34]), 0u8..12)
            .prop_map(|(kind, len)| vec![kind, len]),
    ]
}

fn tcp_options() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(vec![2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7]),
        1 => Just(vec![]),
        4 => prop::collection::vec(tcp_option(), 0..8).prop_map(|o| {
            let mut bytes: Vec<u8> = o.concat();
            bytes.truncate(40);
            bytes
        }),
    ]
}

fn tcp_flags() -> impl Strategy<Value = u8> {
    prop_oneof![
        5 => prop::sample::select(vec![0x02u8, 0x42, 0xc2, 0x82]),
        4 => prop::sample::select(vec![0x10u8, 0x18, 0x11, 0x19, 0x30, 0x50]),
        1 => Just(0x12u8),
        2 => any::<u8>(),
    ]
}

fn tcp_spec() -> impl Strategy<Value = TcpSpec> {
    (
        any::<u32>(),
        any::<u32>(),
        tcp_flags(),
        prop::option::weighted(0.05, 0u8..16),
        tcp_options(),
        prop_oneof![8 => Just(0usize), 2 => 1usize..64, 1 => 64usize..1400],
        any::<u16>(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(seq, ack, flags, doff, options, payload, window, bad_checksum)| TcpSpec {
                seq,
                ack,
                flags,
                doff,
                options,
                payload,
                window,
                bad_checksum,
            },
        )
}

fn ipv4_options() -> impl Strategy<Value = Vec<u8>> {
    let option = prop_oneof![
        4 => Just(vec![1u8]),
        1 => Just(vec![0u8]),
        2 => Just(vec![148u8, 4, 0, 0]),
        1 => Just(vec![7u8, 7, 4, 0, 0, 0, 0]),
        1 => Just(vec![68u8, 8, 5, 0, 0, 0, 0, 0]),
        1 => prop::sample::select(vec![131u8, 137, 134]).prop_map(|k| vec![k, 7, 4, 0, 0, 0, 0]),
        2 => (any::<u8>(), 0u8..12).prop_map(|(k, l)| {
            let mut o = vec![k, l];
            o.extend(std::iter::repeat_n(0, usize::from(l.saturating_sub(2))));
            o
        }),
    ];
    prop_oneof![
        6 => Just(vec![]),
        1 => Just(vec![1u8; 40]),
        3 => prop::collection::vec(option, 1..6).prop_map(|o| {
            let mut bytes: Vec<u8> = o.concat();
            bytes.truncate(40);
            bytes
        }),
    ]
}

fn ext_spec() -> impl Strategy<Value = ExtSpec> {
    (
        prop_oneof![
            6 => prop::sample::select(vec![0u8, 60, 43, 44, 51]),
            1 => prop::sample::select(vec![135u8, 139, 140, 253, 254, 50, 59]),
        ],
        prop_oneof![4 => 0u8..3, 1 => any::<u8>()],
        any::<u8>(),
        prop_oneof![3 => Just(0u16), 1 => Just(1u16), 1 => any::<u16>()],
    )
        .prop_map(|(kind, len_byte, fill, field)| ExtSpec {
            kind,
            len_byte,
            fill,
            field,
        })
}

fn ip_spec() -> impl Strategy<Value = IpSpec> {
    (
        ipv4_options(),
        prop::option::weighted(0.03, 0u8..16),
        prop_oneof![20 => Just(0i16), 1 => -60i16..60],
        prop::bool::weighted(0.03),
        prop_oneof![10 => Just(0x4000u16), 2 => Just(0u16), 1 => Just(0x2000u16), 1 => any::<u16>()],
        prop_oneof![20 => Just(6u8), 1 => any::<u8>()],
        any::<u8>(),
        prop_oneof![4 => Just(vec![]), 2 => prop::collection::vec(ext_spec(), 1..6)],
    )
        .prop_map(
            |(v4_options, ihl, len_delta, bad_checksum, frag, proto, tos, ext)| IpSpec {
                v4_options,
                ihl,
                len_delta,
                bad_checksum,
                frag,
                proto,
                tos,
                ext,
            },
        )
}

fn flow() -> impl Strategy<Value = Flow> {
    let src = prop_oneof![
        6 => Just(Src::Client),
        1 => Just(Src::Allowed),
        1 => Just(Src::Denied),
        1 => Just(Src::Limited),
        3 => any::<u16>().prop_map(Src::Spoofed),
    ];
    let dst = prop_oneof![
        12 => Just(Dst::Server),
        1 => Just(Dst::Neighbour),
        1 => Just(Dst::Broadcast),
        1 => Just(Dst::Multicast),
        1 => Just(Dst::Loopback),
    ];
    let port = prop_oneof![6 => prop::sample::select(PORTS.to_vec()), 1 => any::<u16>()];
    // Half of the frames go from a client or a spoofed source to a listening port of the
    // server, where every stage of the policy has something to say.
    let handshake = (
        prop_oneof![Just(Src::Client), any::<u16>().prop_map(Src::Spoofed)],
        1024u16..,
        prop::sample::select(vec![DUAL_PORT, V4_PORT, V6_PORT]),
    )
        .prop_map(|(src, src_port, dst_port)| Flow::Free {
            src,
            dst: Dst::Server,
            src_port,
            dst_port,
        });
    prop_oneof![
        10 => handshake,
        8 => (src, dst, 1024u16.., port).prop_map(|(src, dst, src_port, dst_port)| Flow::Free {
            src,
            dst,
            src_port,
            dst_port
        }),
        1 => (0usize..2).prop_map(Flow::Connection),
        1 => Just(Flow::TimeWait),
    ]
}

/// Frames, weighted toward the ones the policy judges (TCP to the server) while every layer
/// still gets hostile values.
pub fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        prop::bool::weighted(0.03),
        prop_oneof![
            10 => Just(vec![]),
            2 => Just(vec![0x8100u16]),
            1 => Just(vec![0x88a8u16, 0x8100]),
            1 => prop::collection::vec(prop::sample::select(vec![0x8100u16, 0x88a8]), 3..4),
        ],
        flow(),
        any::<bool>(),
        ip_spec(),
        prop_oneof![
            20 => tcp_spec().prop_map(L4Spec::Tcp),
            1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(L4Spec::Raw),
        ],
        prop::option::weighted(0.05, 0u16..1000),
        prop::option::weighted(0.02, any::<u16>()),
    )
        .prop_map(
            |(group_mac, vlans, flow, ipv6, ip, l4, cut, ether_type)| FrameSpec {
                group_mac,
                vlans,
                flow,
                ipv6,
                ip,
                l4,
                cut,
                ether_type,
            },
        )
}

// ---------------------------------------------------------------------------------------
// The world: sockets in the lab's server namespace, and the model's picture of them.

/// The sockets the server holds for the run, kept open for its length.
pub struct Sockets {
    _listeners: Vec<TcpListener>,
    _connections: Vec<(TcpStream, TcpStream)>,
    /// (server end, client end) of each established connection: IPv4, then IPv6.
    pub established: Vec<(SocketAddr, SocketAddr)>,
    /// A 4-tuple in TIME_WAIT on the server (which closed first).
    pub time_wait: (SocketAddr, SocketAddr),
}

/// Opens the listeners in the calling thread's (the server's) namespace and makes the
/// connections from the lab's client namespace.
pub fn open_sockets(lab: &synguard_lab::Lab) -> Sockets {
    let dual = TcpListener::bind(("::", DUAL_PORT)).expect("listener on [::]:80");
    let v4 = TcpListener::bind(("0.0.0.0", V4_PORT)).expect("listener on 0.0.0.0:8080");
    let v6 = TcpListener::bind((SERVER_V6, V6_PORT)).expect("listener on the server's IPv6");
    let connect = |to: SocketAddr| {
        lab.client
            .enter(move || TcpStream::connect_timeout(&to, Duration::from_secs(5)))
            .expect("entering the client namespace")
            .expect("connecting to the server")
    };
    let mut connections = Vec::new();
    let mut established = Vec::new();
    for server in [IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)] {
        let client = connect(SocketAddr::new(server, DUAL_PORT));
        let (accepted, _) = dual.accept().expect("accepting");
        established.push((
            accepted.local_addr().unwrap(),
            accepted.peer_addr().unwrap(),
        ));
        connections.push((accepted, client));
    }
    // TIME_WAIT on the server: it closes first, the client answers with its FIN.
    let mut client = connect(SocketAddr::new(IpAddr::V4(SERVER_V4), DUAL_PORT));
    let (accepted, _) = dual.accept().expect("accepting");
    let time_wait = (
        accepted.local_addr().unwrap(),
        accepted.peer_addr().unwrap(),
    );
    drop(accepted);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("the server's FIN");
    drop(client);
    std::thread::sleep(Duration::from_millis(50));
    Sockets {
        _listeners: vec![dual, v4, v6],
        _connections: connections,
        established: established
            .into_iter()
            .map(|(l, r)| (unmap(l), unmap(r)))
            .collect(),
        time_wait: (unmap(time_wait.0), unmap(time_wait.1)),
    }
}

/// IPv4 connections on the dual-stack listener show IPv4-mapped addresses.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The model's picture of the lab for `variant`.
pub fn world(variant: Variant, sockets: &Sockets) -> World {
    let listening = |addr: SocketAddr, v6_only| Listening { addr, v6_only };
    let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let any4 = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut connections = sockets.established.clone();
    connections.push(sockets.time_wait);
    World {
        mode: variant.mode(),
        attack: variant == Variant::AutoAbove,
        ports: (variant == Variant::CookieListedPorts).then(|| LISTED_PORTS.to_vec()),
        allow: vec![allowed_v4(), allowed_v6()],
        deny: vec![denied_v4(), denied_v6()],
        limited: vec![IpAddr::V4(LIMITED_V4), IpAddr::V6(LIMITED_V6)],
        local: vec![IpAddr::V4(SERVER_V4), IpAddr::V6(SERVER_V6)],
        listeners: vec![
            listening(SocketAddr::new(any6, DUAL_PORT), false),
            listening(SocketAddr::new(any4, V4_PORT), false),
            listening(SocketAddr::new(IpAddr::V6(SERVER_V6), V6_PORT), true),
        ],
        connections,
    }
}

// ---------------------------------------------------------------------------------------
// Building a frame from its spec.

fn checksum(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn addresses(spec: &FrameSpec, sockets: &Sockets) -> (IpAddr, IpAddr, u16, u16) {
    let v6 = spec.ipv6;
    match spec.flow {
        Flow::Connection(i) => {
            let (local, remote) = sockets.established[i];
            (remote.ip(), local.ip(), remote.port(), local.port())
        }
        Flow::TimeWait => {
            let (local, remote) = sockets.time_wait;
            (remote.ip(), local.ip(), remote.port(), local.port())
        }
        Flow::Free {
            src,
            dst,
            src_port,
            dst_port,
        } => {
            let src: IpAddr = match (src, v6) {
                (Src::Client, false) => CLIENT_V4.into(),
                (Src::Client, true) => CLIENT_V6.into(),
                (Src::Allowed, false) => allowed_v4().addr(),
                (Src::Allowed, true) => allowed_v6().addr(),
                (Src::Denied, false) => Ipv4Addr::new(198, 18, 64, 99).into(),
                (Src::Denied, true) => "fd00:198:18::7f".parse::<Ipv6Addr>().unwrap().into(),
                (Src::Limited, false) => LIMITED_V4.into(),
                (Src::Limited, true) => LIMITED_V6.into(),
                (Src::Spoofed(bits), false) => {
                    let [a, b] = bits.to_be_bytes();
                    Ipv4Addr::new(198, 18, 128 | (a & 0x7f), b).into()
                }
                (Src::Spoofed(bits), true) => {
                    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x8000 | (bits & 0x7fff)).into()
                }
            };
            let dst: IpAddr = match (dst, v6) {
                (Dst::Server, false) => SERVER_V4.into(),
                (Dst::Server, true) => SERVER_V6.into(),
                (Dst::Neighbour, false) => Ipv4Addr::new(198, 18, 0, 99).into(),
                (Dst::Neighbour, true) => "fd00:198:18::99".parse::<Ipv6Addr>().unwrap().into(),
                (Dst::Broadcast, false) => Ipv4Addr::BROADCAST.into(),
                (Dst::Broadcast, true) => "ff02::1".parse::<Ipv6Addr>().unwrap().into(),
                (Dst::Multicast, false) => Ipv4Addr::new(224, 0, 0, 1).into(),
                (Dst::Multicast, true) => "ff05::2".parse::<Ipv6Addr>().unwrap().into(),
                (Dst::Loopback, false) => Ipv4Addr::LOCALHOST.into(),
                (Dst::Loopback, true) => Ipv6Addr::LOCALHOST.into(),
            };
            (src, dst, src_port, dst_port)
        }
    }
}

/// A 1500-byte MTU, the Ethernet header and three VLAN tags.
const MAX_FRAME: usize = 1500 + 14 + 12;
const ETH_HLEN: usize = 14;

/// The frame's bytes, in `sockets`' lab.
pub fn build(spec: &FrameSpec, sockets: &Sockets) -> Vec<u8> {
    let (src, dst, src_port, dst_port) = addresses(spec, sockets);
    let ipv6 = src.is_ipv6();
    let dst_mac = if spec.group_mac {
        [0xff; 6]
    } else {
        SERVER_MAC
    };
    let mut frame = Vec::with_capacity(1600);
    frame.extend(dst_mac);
    frame.extend(CLIENT_MAC);
    // Each tag: its TPID, then a TCI (VLAN 10); the EtherType follows the last.
    for tpid in &spec.vlans {
        frame.extend(tpid.to_be_bytes());
        frame.extend(10u16.to_be_bytes());
    }
    let ether_type = spec
        .ether_type
        .unwrap_or(if ipv6 { 0x86dd } else { 0x0800 });
    frame.extend(ether_type.to_be_bytes());

    // The transport bytes, checksummed over the pseudo-header.
    let (transport, proto) = match &spec.l4 {
        L4Spec::Raw(bytes) => (bytes.clone(), spec.ip.proto),
        L4Spec::Tcp(tcp) => {
            let mut options = tcp.options.clone();
            while !options.len().is_multiple_of(4) {
                options.push(0);
            }
            let doff = tcp.doff.unwrap_or((5 + options.len() / 4) as u8);
            let mut t = Vec::new();
            t.extend(src_port.to_be_bytes());
            t.extend(dst_port.to_be_bytes());
            t.extend(tcp.seq.to_be_bytes());
            t.extend(tcp.ack.to_be_bytes());
            t.push(doff << 4);
            t.push(tcp.flags);
            t.extend(tcp.window.to_be_bytes());
            t.extend([0, 0, 0, 0]);
            t.extend(&options);
            t.extend((0..tcp.payload).map(|i| i as u8));
            let len = t.len() as u32;
            let pseudo = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    checksum(checksum(6 + len, &s.octets()), &d.octets())
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    checksum(checksum(6 + len, &s.octets()), &d.octets())
                }
                _ => unreachable!("one family"),
            };
            let mut sum = fold(checksum(pseudo, &t));
            if tcp.bad_checksum {
                sum ^= 0x5a5a;
            }
            t[16..18].copy_from_slice(&sum.to_be_bytes());
            (t, spec.ip.proto)
        }
    };

    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut options = spec.ip.v4_options.clone();
            while !options.len().is_multiple_of(4) {
                options.push(0);
            }
            let ihl = spec.ip.ihl.unwrap_or((5 + options.len() / 4) as u8);
            let total =
                (20 + options.len() + transport.len()) as i32 + i32::from(spec.ip.len_delta);
            let mut h = vec![0x40 | (ihl & 0x0f), spec.ip.tos];
            h.extend((total.clamp(0, 0xffff) as u16).to_be_bytes());
            h.extend([0x12, 0x34]);
            h.extend(spec.ip.frag.to_be_bytes());
            h.extend([64, proto, 0, 0]);
            h.extend(s.octets());
            h.extend(d.octets());
            h.extend(&options);
            let mut sum = fold(checksum(0, &h));
            if spec.ip.bad_checksum {
                sum ^= 0x0101;
            }
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend(h);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ext = Vec::new();
            let kinds: Vec<u8> = spec.ip.ext.iter().map(|e| e.kind).collect();
            for (i, e) in spec.ip.ext.iter().enumerate() {
                let next = kinds.get(i + 1).copied().unwrap_or(proto);
                let len = match e.kind {
                    44 => 8,
                    51 => (usize::from(e.len_byte) + 2) * 4,
                    _ => (usize::from(e.len_byte) + 1) * 8,
                }
                .min(2048);
                let mut header = vec![e.fill; len];
                header[0] = next;
                header[1] = e.len_byte;
                if e.kind == 44 || e.kind == 43 {
                    header[2..4].copy_from_slice(&e.field.to_be_bytes());
                    if e.kind == 43 {
                        header[2] = 0;
                        header[3] = e.field as u8 & 1;
                    }
                }
                if e.kind != 44 && e.kind != 43 {
                    // Padding options (Pad1), so a well-formed header is what it says.
                    for b in header[2..].iter_mut() {
                        *b = 0;
                    }
                }
                ext.extend(header);
            }
            let first = kinds.first().copied().unwrap_or(proto);
            let payload = (ext.len() + transport.len()) as i32 + i32::from(spec.ip.len_delta);
            let tc = spec.ip.tos;
            let mut h = vec![0x60 | (tc >> 4), tc << 4, 0, 0];
            h.extend((payload.clamp(0, 0xffff) as u16).to_be_bytes());
            h.extend([first, 64]);
            h.extend(s.octets());
            h.extend(d.octets());
            frame.extend(h);
            frame.extend(ext);
        }
        _ => unreachable!("one family"),
    }
    frame.extend(transport);
    // No NIC delivers more than the MTU (and tags) or a frame without a whole Ethernet
    // header, and BPF_PROG_TEST_RUN takes neither (`bpf_test_init()`).
    frame.truncate(MAX_FRAME);
    if let Some(per_mille) = spec.cut {
        let len = frame.len() * usize::from(per_mille) / 1000;
        frame.truncate(len.max(ETH_HLEN));
    }
    frame
}

// ---------------------------------------------------------------------------------------
// The run.

/// What a run did, per variant.
#[derive(Default, Debug)]
pub struct Summary {
    pub frames: BTreeMap<&'static str, u64>,
    /// Per variant, frames by (class, action).
    pub outcomes: BTreeMap<&'static str, BTreeMap<(String, String), u64>>,
    pub synacks_checked: u64,
    /// Of those, answered without the socket lookup (the fast path).
    pub without_lookup: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn total(&self) -> u64 {
        self.frames.values().sum()
    }

    pub fn print(&self, out: &mut impl Write) {
        let _ = writeln!(out, "frames per mode:");
        for (variant, n) in &self.frames {
            let tx = self.outcomes[variant]
                .iter()
                .filter(|((_, a), _)| a == "tx")
                .map(|(_, n)| n)
                .sum::<u64>();
            let drop = self.outcomes[variant]
                .iter()
                .filter(|((_, a), _)| a == "drop")
                .map(|(_, n)| n)
                .sum::<u64>();
            let _ = writeln!(
                out,
                "  {variant:<22} {n:>9}   answered {tx:>8}   dropped {drop:>8}"
            );
        }
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(
            out,
            "{} frames, 0 mismatches, {} SYN-ACKs checked (cookie accepted by the kernel), \
             {} of them answered without the socket lookup, {:.1} s, {:.0} frames/s",
            self.total(),
            self.synacks_checked,
            self.without_lookup,
            secs,
            self.total() as f64 / secs.max(1e-9)
        );
    }
}

/// A frame on which the program and the model disagree, shrunk.
#[derive(Debug)]
pub struct Mismatch {
    pub seed: u64,
    pub variant: Variant,
    pub spec: String,
    pub frame: Vec<u8>,
    pub why: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "MISMATCH in mode {} (seed {})",
            self.variant.name(),
            self.seed
        )?;
        writeln!(f, "  {}", self.why)?;
        writeln!(f, "  frame: {}", hex(&self.frame))?;
        write!(f, "  spec: {}", self.spec)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// The program loaded for one variant, with what the run needs of it.
pub struct Judge {
    pub program: InKernel,
    buckets: aya::maps::HashMap<aya::maps::MapData, SourceKey, u64>,
    pub variant: Variant,
    pub world: World,
    /// SYNs answered without the socket lookup so far.
    pub without_lookup: u64,
}

impl Judge {
    /// Loads the program for `variant` with the lists and ports, and for `auto` above its
    /// threshold starts the attack. Call on a thread pinned to one CPU, in the lab's server
    /// namespace.
    pub fn load(variant: Variant, sockets: &Sockets) -> Judge {
        let mut program = InKernel::load(&variant.config());
        for (net, verdict) in [
            (denied_v4(), list::DENY),
            (allowed_v4(), list::ALLOW),
            (denied_v6(), list::DENY),
            (allowed_v6(), list::ALLOW),
        ] {
            program
                .lists
                .insert(&synguard::config::lists::Cidr(net), verdict)
                .expect("a list entry");
        }
        let ports: synguard::config::ports::PortSet = LISTED_PORTS
            .map(|p| p.to_string())
            .join(",")
            .parse()
            .unwrap();
        if variant == Variant::CookieListedPorts {
            program.control.set_ports(&ports).expect("the port list");
        }
        let buckets = program.take_source_buckets();
        let mut judge = Judge {
            program,
            buckets,
            variant,
            world: world(variant, sockets),
            without_lookup: 0,
        };
        if variant == Variant::AutoAbove {
            judge.start_attack();
        }
        judge
    }

    /// A SYN now and one after a window: the second closes a window well above 1 SYN/s.
    fn start_attack(&mut self) {
        let syn = crate::syn_from(CLIENT_V4.into(), 40_000, DUAL_PORT);
        for _ in 0..50 {
            self.program.run(&syn);
            std::thread::sleep(Duration::from_millis(15));
            self.program.run(&syn);
            if self.program.control.auto_summary().unwrap().under_attack {
                return;
            }
        }
        panic!("auto never went over a threshold of 1 SYN/s");
    }

    /// Keeps the limited sources over their limit: a bucket far ahead, which a denied SYN
    /// brings back to the burst horizon.
    fn keep_limited(&mut self) {
        for key in [
            SourceKey::v4(LIMITED_V4.octets(), 32),
            SourceKey::v6(LIMITED_V6.octets(), 128),
        ] {
            self.buckets.insert(key, u64::MAX / 2, 0).expect("a bucket");
        }
    }

    /// Runs `frame` through the program and the model; `Err` says how they differ.
    pub fn check(&mut self, frame: &[u8], synacks: &mut u64) -> Result<Outcome, String> {
        self.keep_limited();
        let expected = model::judge(&self.world, frame);
        let outcome = self.program.run(frame);
        let counted = outcome.counted();
        let reasons = outcome.reasons();
        let action = Action::ALL
            .into_iter()
            .find(|a| a.xdp_code() == outcome.code)
            .ok_or_else(|| format!("XDP code {}", outcome.code))?;
        if reasons == [Reason::CookieNoLookup] {
            self.without_lookup += 1;
        }
        let reason = match reasons.as_slice() {
            [] => None,
            [Reason::CookieStamped | Reason::CookieNoLookup] => Some(Reason::CookieRaw),
            [one] => Some(*one),
            more => return Err(format!("several reasons counted: {more:?}")),
        };
        let got = Expected {
            class: match counted.as_slice() {
                [(class, a)] if *a == action => *class,
                other => return Err(format!("counted {other:?} for action {action:?}")),
            },
            action,
            reason,
        };
        if got != expected {
            return Err(format!("program {got:?}, model {expected:?}"));
        }
        match action {
            Action::Tx => {
                self.check_synack(frame, &outcome.frame)?;
                *synacks += 1;
            }
            _ if outcome.frame != frame => return Err("a frame not sent back was changed".into()),
            _ => {}
        }
        Ok(outcome)
    }

    /// The SYN-ACK answers the SYN, and its cookie is one the kernel accepts.
    fn check_synack(&mut self, syn: &[u8], reply: &[u8]) -> Result<(), String> {
        let parsed = model::parse(syn);
        let (ip, tcp) = (parsed.ip.unwrap(), parsed.tcp.unwrap());
        let offered = model::offered(&tcp.options);
        let headers = PacketHeaders::from_ethernet_slice(reply)
            .map_err(|e| format!("the SYN-ACK does not parse: {e}"))?;
        if reply[0..6] != syn[6..12] || reply[6..12] != syn[0..6] {
            return Err("MAC addresses not swapped".into());
        }
        let l3 = reply.len() - headers.payload.slice().len() - header_lengths(&headers);
        if reply[12..l3] != syn[12..l3] {
            return Err("VLAN tags changed".into());
        }
        let Some(TransportHeader::Tcp(t)) = &headers.transport else {
            return Err("no TCP header".into());
        };
        let (src, dst, checksum_ok) = match &headers.net {
            Some(NetHeaders::Ipv4(h, exts)) => {
                if h.ihl() != 5 || !exts.is_empty() {
                    return Err("IPv4 options in the SYN-ACK".into());
                }
                if h.header_checksum != h.calc_header_checksum() {
                    return Err("bad IPv4 header checksum".into());
                }
                let ok = t.calc_checksum_ipv4(h, &[]).ok() == Some(t.checksum);
                (IpAddr::from(h.source), IpAddr::from(h.destination), ok)
            }
            Some(NetHeaders::Ipv6(h, exts)) => {
                if !exts.is_empty() || h.next_header != etherparse::IpNumber::TCP {
                    return Err("IPv6 extension headers in the SYN-ACK".into());
                }
                let ok = t.calc_checksum_ipv6(h, &[]).ok() == Some(t.checksum);
                (IpAddr::from(h.source), IpAddr::from(h.destination), ok)
            }
            _ => return Err("no IP header".into()),
        };
        if !checksum_ok {
            return Err("bad TCP checksum".into());
        }
        if !headers.payload.slice().is_empty() {
            return Err("payload in the SYN-ACK".into());
        }
        if (src, dst) != (ip.dst, ip.src)
            || (t.source_port, t.destination_port) != (tcp.dst_port, tcp.src_port)
        {
            return Err("addresses or ports not swapped".into());
        }
        if !(t.syn && t.ack && !t.fin && !t.rst && !t.psh && !t.urg) {
            return Err("flags are not SYN+ACK".into());
        }
        if t.acknowledgment_number != tcp.seq.wrapping_add(1) {
            return Err("ack is not ISN + 1".into());
        }
        let mut mss = false;
        let mut wscale = false;
        let mut sack = false;
        let mut ts = None;
        for option in t.options_iterator() {
            match option.map_err(|e| format!("SYN-ACK options: {e:?}"))? {
                TcpOptionElement::MaximumSegmentSize(_) => mss = true,
                TcpOptionElement::WindowScale(_) => wscale = true,
                TcpOptionElement::SelectiveAcknowledgementPermitted => sack = true,
                TcpOptionElement::Timestamp(val, ecr) => ts = Some((val, ecr)),
                _ => {}
            }
        }
        // A cookie carries window scaling and SACK only in the timestamp: without timestamps
        // the kernel's cookie SYN-ACK has neither (`tcp_conn_request()` clears the options of
        // a cookie SYN that has no timestamp).
        let promised = (mss, wscale, sack, ts.map(|(_, ecr)| ecr));
        let stamped = offered.timestamps.is_some();
        let asked = (
            true,
            stamped && offered.wscale.is_some(),
            stamped && offered.sack,
            offered.timestamps.map(|(val, _)| val),
        );
        if promised != asked {
            return Err(format!(
                "options (mss, wscale, sack, TSecr) {promised:?}, the SYN offered {asked:?}"
            ));
        }
        // The client's ACK, plain, through the program: the kernel's cookie check must take it.
        let mut ack = syn[..l3].to_vec();
        let l3_builder = match (ip.src, ip.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            }
            _ => unreachable!(),
        };
        let mut builder = l3_builder
            .tcp(tcp.src_port, tcp.dst_port, tcp.seq.wrapping_add(1), 502)
            .ack(t.sequence_number.wrapping_add(1));
        if let Some((val, _)) = ts {
            builder = builder
                .options(&[
                    TcpOptionElement::Noop,
                    TcpOptionElement::Noop,
                    TcpOptionElement::Timestamp(7, val),
                ])
                .unwrap();
        }
        builder.write(&mut ack, &[]).unwrap();
        let outcome = self.program.run(&ack);
        let reasons = outcome.reasons();
        if (outcome.code, reasons.as_slice())
            != (Action::Pass.xdp_code(), &[Reason::AckCookieValid][..])
        {
            return Err(format!(
                "the SYN-ACK's cookie: the ACK got code {} {reasons:?}",
                outcome.code
            ));
        }
        Ok(())
    }
}

/// Bytes of the IP and TCP headers (with options and extensions) of a parsed frame.
fn header_lengths(headers: &PacketHeaders) -> usize {
    let net = match &headers.net {
        Some(NetHeaders::Ipv4(h, e)) => h.header_len() + e.header_len(),
        Some(NetHeaders::Ipv6(h, e)) => h.header_len() + e.header_len(),
        _ => 0,
    };
    let transport = match &headers.transport {
        Some(TransportHeader::Tcp(t)) => t.header_len(),
        _ => 0,
    };
    net + transport
}

/// Runs `frames` generated frames (split evenly over the variants) from `seed`, printing
/// progress to `out`. Needs root; makes its own lab.
pub fn run(
    frames: u64,
    seed: u64,
    out: &mut (impl Write + Send),
) -> Result<Summary, Box<Mismatch>> {
    let lab = crate::cookie_lab();
    let per_variant = frames.div_ceil(Variant::ALL.len() as u64);
    let mut summary = Summary::default();
    let started = Instant::now();
    let result = lab
        .server
        .enter(|| -> Result<(), Box<Mismatch>> {
            // auto's windows are per CPU: the whole run stays on one.
            let mut cpu = nix::sched::CpuSet::new();
            cpu.set(0).unwrap();
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu).unwrap();
            let sockets = open_sockets(&lab);
            for (i, variant) in Variant::ALL.into_iter().enumerate() {
                let judge = RefCell::new(Judge::load(variant, &sockets));
                let outcomes = RefCell::new(BTreeMap::new());
                let synacks = RefCell::new(0u64);
                let mut seed_bytes = [0u8; 32];
                seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
                seed_bytes[8] = i as u8;
                let mut runner = TestRunner::new_with_rng(
                    ProptestConfig {
                        cases: per_variant as u32,
                        failure_persistence: None,
                        max_shrink_iters: 4096,
                        ..ProptestConfig::default()
                    },
                    TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
                );
                let tally = |spec: &FrameSpec| -> Result<(), TestCaseError> {
                    let frame = build(spec, &sockets);
                    let mut judge = judge.borrow_mut();
                    let outcome = judge
                        .check(&frame, &mut synacks.borrow_mut())
                        .map_err(TestCaseError::fail)?;
                    let cell = outcome.counted()[0];
                    *outcomes
                        .borrow_mut()
                        .entry((cell.0.name().to_string(), cell.1.name().to_string()))
                        .or_insert(0u64) += 1;
                    Ok(())
                };
                match runner.run(&frame_spec(), |spec| tally(&spec)) {
                    Ok(()) => {}
                    Err(TestError::Fail(why, spec)) => {
                        return Err(Box::new(Mismatch {
                            seed,
                            variant,
                            frame: build(&spec, &sockets),
                            spec: format!("{spec:?}"),
                            why: why.to_string(),
                        }));
                    }
                    Err(TestError::Abort(why)) => panic!("proptest aborted: {why}"),
                }
                let outcomes = outcomes.into_inner();
                let n: u64 = outcomes.values().sum();
                let _ = writeln!(out, "  {:<22} {n:>9} frames agree", variant.name());
                summary.frames.insert(variant.name(), n);
                summary.outcomes.insert(variant.name(), outcomes);
                summary.synacks_checked += synacks.into_inner();
                summary.without_lookup += judge.borrow().without_lookup;
            }
            Ok(())
        })
        .expect("entering the lab's server namespace");
    summary.elapsed = started.elapsed();
    result.map(|()| summary)
}

/// Runs one frame (a regression case) in `variant` against the model.
pub fn check_frame(variant: Variant, frame: &[u8]) -> Result<(), String> {
    let lab = crate::cookie_lab();
    lab.server
        .enter(|| {
            let sockets = open_sockets(&lab);
            let mut judge = Judge::load(variant, &sockets);
            judge.check(frame, &mut 0).map(|_| ())
        })
        .expect("entering the lab's server namespace")
}

/// A seed for a run that was not given one.
pub fn new_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}
