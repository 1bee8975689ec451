//! The reference model: what synguard must do with a frame, written as a specification on the
//! host, apart from the XDP program's code. Given the frame, the configuration and the socket
//! table, [`judge`] returns the class, the action and the reason the program must count.
//!
//! The rules are restated here from the kernel's behaviour and synguard's documented policy
//! (docs/operating.md, "What happens to each kind of packet"), on byte slices, without the
//! program's offsets, masks and verifier workarounds, and without its shared parsing code.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use synguard_common::{Action, Class, Mode, Reason};

/// Everything the decision depends on besides the frame.
#[derive(Clone, Debug)]
pub struct World {
    pub mode: Mode,
    /// `auto` only: whether its rate is over the threshold (an attack is going on).
    pub attack: bool,
    /// The protected ports; `None`: every port with a listener.
    pub ports: Option<Vec<u16>>,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Sources over their per-source SYN limit.
    pub limited: Vec<IpAddr>,
    /// The host's unicast addresses.
    pub local: Vec<IpAddr>,
    /// Listening sockets by bound address (unspecified: any; an IPv6 wildcard without
    /// IPV6_V6ONLY takes IPv4 too) and port.
    pub listeners: Vec<Listening>,
    /// 4-tuples the kernel holds a socket for (established, TIME_WAIT), as (local, remote).
    pub connections: Vec<(SocketAddr, SocketAddr)>,
}

#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub addr: SocketAddr,
    pub v6_only: bool,
}

/// What the program must count for a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub class: Class,
    pub action: Action,
    /// `CookieRaw` stands for every cookie reason: which helper answers, and whether after a
    /// lookup, is a matter of time.
    pub reason: Option<Reason>,
}

/// A frame as the specification reads it.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub class: Class,
    /// Whether the destination MAC is a group address (broadcast, multicast).
    pub group_mac: bool,
    /// Set for every IP packet whose IP header is sound.
    pub ip: Option<IpInfo>,
    /// Set for the TCP classes.
    pub tcp: Option<TcpInfo>,
}

#[derive(Clone, Debug)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 options (the bytes after the fixed header), or `None` for IPv6.
    pub v4_options: Option<Vec<u8>>,
    /// The first of several fragments.
    pub first_fragment: bool,
}

#[derive(Clone, Debug)]
pub struct TcpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub flags: u8,
    pub options: Vec<u8>,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// How many IPv6 extension headers, and how many bytes of them, synguard walks (the documented
/// bound).
pub const IPV6_EXT_HEADERS: usize = 4;
pub const IPV6_EXT_BYTES: usize = 256;

/// Reads a frame as the specification says: Ethernet with at most two VLAN tags (802.1Q or
/// 802.1ad; a third is not IP to synguard), IPv4 or IPv6, TCP.
pub fn parse(frame: &[u8]) -> Parsed {
    let group_mac = frame.first().is_some_and(|b| b & 1 != 0);
    let other = |class| Parsed {
        class,
        group_mac,
        ip: None,
        tcp: None,
    };
    let Some(mut ether_type) = be16(frame, 12) else {
        return other(Class::Malformed);
    };
    let mut at = 14;
    for _ in 0..2 {
        if ether_type != 0x8100 && ether_type != 0x88a8 {
            break;
        }
        let Some(inner) = be16(frame, at + 2) else {
            return other(Class::Malformed);
        };
        ether_type = inner;
        at += 4;
    }
    let ip = &frame[at..];
    let (info, proto, l4, segment) = match ether_type {
        0x0800 => match ipv4(ip) {
            Ok(found) => found,
            Err(class) => return other(class),
        },
        0x86dd => match ipv6(ip) {
            Ok(found) => found,
            Err(Some((class, info))) => {
                return Parsed {
                    class,
                    group_mac,
                    ip: Some(info),
                    tcp: None,
                };
            }
            Err(None) => return other(Class::Malformed),
        },
        _ => return other(Class::NonIp),
    };
    if proto != 6 {
        return Parsed {
            class: info.1,
            group_mac,
            ip: Some(info.0),
            tcp: None,
        };
    }
    let info = info.0;
    // TCP: a 20-byte header in the frame, a data offset of at least 5 words that the IP
    // packet's length covers.
    let tcp = &ip[l4..];
    if tcp.len() < 20 {
        return other(Class::Malformed);
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < 20 || header_len > segment {
        return other(Class::Malformed);
    }
    let flags = tcp[13];
    Parsed {
        class: tcp_class(flags),
        group_mac,
        ip: Some(info),
        tcp: Some(TcpInfo {
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            flags,
            options: tcp[20..header_len].to_vec(),
        }),
    }
}

/// (address info and the class a non-TCP packet gets, protocol, TCP offset in the IP packet,
/// the TCP segment's length by the IP header) or the class of a frame that stops here.
type Found = ((IpInfo, Class), u8, usize, usize);

fn ipv4(ip: &[u8]) -> Result<Found, Class> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(Class::Malformed);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // The header checksum is not the model's business: the program does not read it, and
    // neither does the model promise more than the program does (see the closing note).
    if header_len < 20 || total_len < header_len || total_len > ip.len() {
        return Err(Class::Malformed);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let info = IpInfo {
        src: IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()),
        dst: IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()),
        v4_options: Some(ip[20..header_len].to_vec()),
        first_fragment: more && offset == 0,
    };
    let proto = ip[9];
    let class = match (proto, offset) {
        (6, 0) => Class::Syn, // replaced by the TCP class
        (6, _) => return Ok(((info, Class::Fragment), 0, 0, 0)),
        _ => Class::NonTcp,
    };
    Ok(((info, class), proto, header_len, total_len - header_len))
}

/// IPv6 and the extension headers before TCP: Hop-by-Hop (0), Routing (43) with no segments
/// left, Fragment (44), AH (51) and Destination Options (60), at most `IPV6_EXT_HEADERS` and
/// `IPV6_EXT_BYTES`. Headers TCP may follow that synguard does not walk (135, 139, 140, 253,
/// 254) make the packet unjudgeable; anything else is a non-TCP payload.
fn ipv6(ip: &[u8]) -> Result<Found, Option<(Class, IpInfo)>> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(None);
    }
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if 40 + payload_len > ip.len() {
        return Err(None);
    }
    let end = 40 + payload_len;
    let mut info = IpInfo {
        src: IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()),
        dst: IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()),
        v4_options: None,
        first_fragment: false,
    };
    let mut next = ip[6];
    let mut at = 40;
    let mut walked = 0;
    loop {
        match next {
            6 => return Ok(((info, Class::Syn), 6, at, end - at)),
            0 | 43 | 44 | 51 | 60 => {}
            135 | 139 | 140 | 253 | 254 => return Err(Some((Class::Ipv6Ext, info))),
            _ => return Ok(((info, Class::NonTcp), next, at, end - at)),
        }
        if walked == IPV6_EXT_HEADERS || at + 4 > ip.len() {
            return Err(Some((Class::Ipv6Ext, info)));
        }
        let header = &ip[at..];
        match next {
            44 => {
                let field = u16::from_be_bytes([header[2], header[3]]);
                match (field >> 3, field & 1) {
                    (0, 0) => {}
                    (0, _) => info.first_fragment = true,
                    _ => return Err(Some((Class::Fragment, info))),
                }
            }
            43 if header[3] != 0 => return Err(Some((Class::Ipv6Ext, info))),
            _ => {}
        }
        let len = match next {
            44 => 8,
            51 => (usize::from(header[1]) + 2) * 4,
            _ => (usize::from(header[1]) + 1) * 8,
        };
        next = header[0];
        at += len;
        walked += 1;
        if at > end || at - 40 > IPV6_EXT_BYTES {
            return Err(Some((Class::Ipv6Ext, info)));
        }
    }
}

fn tcp_class(flags: u8) -> Class {
    let has = |f| flags & f != 0;
    match (has(SYN), has(RST), has(FIN), has(ACK)) {
        (true, false, false, false) => Class::Syn,
        (true, false, false, true) => Class::SynAck,
        (true, ..) => Class::OtherTcp,
        (false, true, ..) => Class::Rst,
        (false, false, true, _) => Class::Fin,
        (false, false, false, true) => Class::Ack,
        (false, false, false, false) => Class::OtherTcp,
    }
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// What synguard must do with `frame` in `world`.
pub fn judge(world: &World, frame: &[u8]) -> Expected {
    let parsed = parse(frame);
    let (action, reason) = decide(world, &parsed);
    Expected {
        class: parsed.class,
        action,
        reason,
    }
}

type Outcome = (Action, Option<Reason>);

const PASS: Outcome = (Action::Pass, None);

fn pass(reason: Reason) -> Outcome {
    (Action::Pass, Some(reason))
}

fn drop(reason: Reason) -> Outcome {
    (Action::Drop, Some(reason))
}

fn decide(world: &World, p: &Parsed) -> Outcome {
    let monitor = world.mode == Mode::Monitor;
    // "While cookies are in force": cookie mode, or auto during an attack. Monitor judges as
    // cookie does and only counts.
    let answering = match world.mode {
        Mode::Off => return PASS,
        Mode::Monitor | Mode::Cookie => true,
        Mode::Auto => world.attack,
    };
    // 1. The lists, for every IP packet: the longest matching prefix wins.
    if let Some(ip) = &p.ip {
        match list_verdict(world, ip.src) {
            Some(true) => return pass(Reason::ListAllowed),
            Some(false) if monitor => return pass(Reason::MonitorWouldDrop),
            Some(false) => return drop(Reason::ListDenied),
            None => {}
        }
    }
    // 2. IPv6 that cannot be walked: its port is unknown, so it is judged as if protected.
    if p.class == Class::Ipv6Ext {
        return match (answering, monitor) {
            (false, _) => PASS,
            (true, true) => pass(Reason::MonitorWouldDrop),
            (true, false) => drop(Reason::Ipv6Unjudged),
        };
    }
    // 3. Only SYNs and the segments the kernel checks for a cookie (ACK set, SYN and RST
    //    clear) are judged.
    let (Some(ip), Some(tcp)) = (&p.ip, &p.tcp) else {
        return PASS;
    };
    let syn = p.class == Class::Syn;
    let cookie_checked = tcp.flags & ACK != 0 && tcp.flags & (SYN | RST) == 0;
    if !syn && !cookie_checked {
        return PASS;
    }
    // 4. Protected ports.
    if let Some(ports) = &world.ports
        && !ports.contains(&tcp.dst_port)
    {
        return if syn {
            pass(Reason::SynUnprotectedPort)
        } else {
            PASS
        };
    }
    // 5. A handshake segment in a fragment is never legitimate.
    if ip.first_fragment {
        return match (answering, monitor) {
            (false, _) => PASS,
            (true, true) => pass(Reason::MonitorWouldDrop),
            (true, false) => drop(Reason::TcpFragment),
        };
    }
    // 6. The per-source limit holds in every mode but off.
    if syn && world.limited.contains(&ip.src) {
        return if monitor {
            pass(Reason::MonitorWouldDrop)
        } else {
            drop(Reason::SynSourceLimited)
        };
    }
    if !answering {
        return if syn {
            pass(Reason::SynBelowThreshold)
        } else {
            PASS
        };
    }
    let local = (ip.dst, tcp.dst_port);
    let remote = SocketAddr::new(ip.src, tcp.src_port);
    let connection = world
        .connections
        .iter()
        .any(|(l, r)| (l.ip(), l.port()) == local && *r == remote);
    let listener = world.listeners.iter().any(|l| listens_on(l, local));
    let here = !p.group_mac && world.local.contains(&ip.dst);
    if syn {
        // 7. A SYN: IPv4 options the kernel would echo or rejects cannot be answered alike.
        if let Some(options) = &ip.v4_options
            && !ipv4_options_plain(options)
        {
            return if monitor {
                pass(Reason::MonitorWouldDrop)
            } else {
                drop(Reason::SynIpOptions)
            };
        }
        if connection {
            return pass(Reason::SynExistingSocket);
        }
        if !listener {
            return pass(Reason::SynNoListener);
        }
        if !here {
            return pass(Reason::NotLocal);
        }
        if monitor {
            return pass(Reason::MonitorWouldAnswer);
        }
        return (Action::Tx, Some(Reason::CookieRaw));
    }
    // 8. A cookie-checked segment: a socket's own passes; to a port nobody listens on it is
    //    the kernel's (an RST) unless the port was named; otherwise it must carry a cookie,
    //    and a frame the generator made does not.
    if connection {
        return pass(Reason::AckEstablished);
    }
    if !listener && world.ports.is_none() {
        return PASS;
    }
    if !here {
        return pass(Reason::NotLocal);
    }
    if monitor {
        pass(Reason::MonitorWouldDrop)
    } else {
        drop(Reason::AckForged)
    }
}

/// `Some(true)` allowed, `Some(false)` denied, by the longest prefix that holds `src`.
fn list_verdict(world: &World, src: IpAddr) -> Option<bool> {
    let allow = world.allow.iter().map(|n| (n, true));
    let deny = world.deny.iter().map(|n| (n, false));
    allow
        .chain(deny)
        .filter(|(net, _)| net.contains(&src))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, verdict)| verdict)
}

fn listens_on(l: &Listening, (dst, port): (IpAddr, u16)) -> bool {
    if l.addr.port() != port {
        return false;
    }
    match (l.addr.ip(), dst) {
        (IpAddr::V6(a), IpAddr::V4(_)) => a.is_unspecified() && !l.v6_only,
        (a, d) if a.is_ipv4() != d.is_ipv4() => false,
        (a, d) => a.is_unspecified() || a == d,
    }
}

/// Whether the kernel's SYN-ACK to a SYN with these IPv4 options has a plain header: the
/// options are sound (`ip_options_compile()`) and none is echoed (`__ip_options_echo()`:
/// Record Route 7, Timestamp 68, LSRR 131, SSRR 137, CIPSO 134). Router Alert (148) must be
/// 4 bytes long.
pub fn ipv4_options_plain(options: &[u8]) -> bool {
    let mut rest = options;
    while let Some((&kind, after)) = rest.split_first() {
        match kind {
            0 => return true,
            1 => {
                rest = after;
                continue;
            }
            _ => {}
        }
        let Some(&len) = after.first() else {
            return false;
        };
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            return false;
        }
        if matches!(kind, 7 | 68 | 131 | 137 | 134) || (kind == 148 && len != 4) {
            return false;
        }
        rest = &rest[len..];
    }
    true
}

/// The options of a SYN as the kernel reads them (`tcp_parse_options()`,
/// net/ipv4/tcp_input.c): EOL ends the list, NOP is one byte, an option shorter than 2 or
/// longer than what is left ends it too; MSS, window scale, SACK-permitted and timestamps
/// count only at their exact lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack: bool,
    /// (TSval, TSecr)
    pub timestamps: Option<(u32, u32)>,
}

pub fn offered(options: &[u8]) -> Offered {
    let mut found = Offered::default();
    let mut rest = options;
    while let Some((&kind, after)) = rest.split_first() {
        match kind {
            0 => break,
            1 => {
                rest = after;
                continue;
            }
            _ => {}
        }
        let Some(&len) = after.first() else { break };
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            break;
        }
        let body = &rest[2..len];
        match (kind, len) {
            (2, 4) => found.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            (3, 3) => found.wscale = Some(body[0]),
            (4, 2) => found.sack = true,
            (8, 10) => {
                let word = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().unwrap());
                found.timestamps = Some((word(0), word(4)));
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_read_as_the_kernel_reads_them() {
        let linux = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        assert_eq!(
            offered(&linux),
            Offered {
                mss: Some(1460),
                wscale: Some(7),
                sack: true,
                timestamps: Some((1, 0)),
            }
        );
        // An MSS of the wrong length is skipped; a silly length ends the list.
        assert!(offered(&[2, 3, 5, 4, 2]).sack);
        assert_eq!(offered(&[9, 1, 4, 2]), Offered::default());
        assert_eq!(offered(&[0, 4, 2]), Offered::default());
    }

    #[test]
    fn ipv4_options_that_are_echoed_or_unsound_are_not_plain() {
        assert!(ipv4_options_plain(&[1, 1, 1, 1]));
        assert!(ipv4_options_plain(&[148, 4, 0, 0]));
        assert!(ipv4_options_plain(&[0, 7, 3, 4]));
        assert!(!ipv4_options_plain(&[7, 3, 4, 0]));
        assert!(!ipv4_options_plain(&[148, 5, 0, 0, 0, 0, 0, 0]));
        assert!(!ipv4_options_plain(&[30, 1, 0, 0]));
        assert!(!ipv4_options_plain(&[30]));
    }
}
