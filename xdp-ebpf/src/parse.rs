//! Header parsing: Ethernet (with up to two VLAN tags), IPv4, IPv6 and TCP, each length checked
//! against the frame before it is trusted.
//!
//! The rules that turn header fields into a class live in `synguard_common::classify`, where
//! they are unit-tested; this module only reads packet memory.

use aya_ebpf::programs::XdpContext;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    vlan::VlanHdr,
};
use synguard_common::classify::{
    Class, IPPROTO_TCP, IPV6_FRAGMENT, IPV6_ROUTING, Ipv6Fragment, Ipv6Next, MAX_IPV6_EXT_HEADERS,
    classify_tcp_flags, ipv4_is_first_fragment, ipv4_is_later_fragment, ipv6_ext_len,
    ipv6_fragment, ipv6_next,
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// 802.1ad outer tag plus 802.1Q inner tag (QinQ). A third tag is left to the kernel.
const MAX_VLAN_TAGS: usize = 2;

/// Bounds on `TcpAt`'s offsets, as masks (one less than a power of two above each): Ethernet
/// and two VLAN tags; those plus the longest IP header with options or extension headers; the
/// longest TCP header.
pub const MAX_L3: u64 = 0x1f;
pub const MAX_L4: u64 = 0x1ff;
/// The most bytes of IPv6 extension headers walked before TCP: with `MAX_L3`, within
/// `MAX_L4`. A longer chain cannot be judged (`Class::Ipv6Ext`).
pub const MAX_IPV6_EXT_BYTES: usize = 256;
pub const MAX_TCP_LEN: u64 = 0x3f;

/// Where a TCP segment's headers are in the frame.
#[derive(Clone, Copy)]
pub struct TcpAt {
    /// Offset of the IP header (after Ethernet and any VLAN tags).
    pub l3: usize,
    /// Offset of the TCP header.
    pub l4: usize,
    pub ipv6: bool,
    /// IPv4 options, or IPv6 extension headers, before TCP.
    pub ip_options: bool,
    /// The first of several fragments (IPv4 More Fragments, or an IPv6 Fragment header that
    /// is not atomic): the headers are here, the segment is not whole.
    pub fragment: bool,
    /// TCP header length, options included (data offset * 4).
    pub tcp_len: usize,
}

impl TcpAt {
    /// Where the segment's IP header is.
    #[inline(always)]
    pub fn ip(&self) -> IpAt {
        IpAt {
            l3: self.l3,
            ipv6: self.ipv6,
        }
    }
}

/// Where a well-formed IP header is.
#[derive(Clone, Copy)]
pub struct IpAt {
    pub l3: usize,
    pub ipv6: bool,
}

/// A classified frame; `ip` is set for every IP packet whose header could be read, `tcp` for
/// the TCP classes (SYN to other TCP).
pub struct Packet {
    pub class: Class,
    pub ip: Option<IpAt>,
    pub tcp: Option<TcpAt>,
}

impl Packet {
    #[inline(always)]
    fn other(class: Class) -> Packet {
        Packet {
            class,
            ip: None,
            tcp: None,
        }
    }

    /// An IP packet that is not (readable) TCP.
    #[inline(always)]
    fn ip(class: Class, l3: usize, ipv6: bool) -> Packet {
        Packet {
            class,
            ip: Some(IpAt { l3, ipv6 }),
            tcp: None,
        }
    }
}

/// The one bounds-checked way to look at packet memory: a pointer to a `T` at `offset`, or
/// `None` if the frame is too short. The verifier needs the explicit check against `data_end`
/// on every access.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// `ptr_at` for writing.
#[inline(always)]
pub fn ptr_at_mut<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    ptr_at::<T>(ctx, offset).map(|p| p as *mut T)
}

#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// A packet's source and destination addresses, in its IP header (network byte order).
#[derive(Clone, Copy)]
pub enum Addresses<'a> {
    V4 {
        src: &'a [u8; 4],
        dst: &'a [u8; 4],
    },
    V6 {
        src: &'a [u8; 16],
        dst: &'a [u8; 16],
    },
}

/// The one place addresses are read out of a packet's IP header.
#[inline(always)]
pub fn addresses<'a>(ctx: &'a XdpContext, ip: &IpAt) -> Option<Addresses<'a>> {
    // SAFETY: `ptr_at` checked the header against the frame, which outlives `ctx`'s borrow;
    // byte arrays have alignment 1, and the address fields lie inside the header.
    unsafe {
        Some(if ip.ipv6 {
            let header = &*ptr_at::<[u8; 40]>(ctx, ip.l3)?;
            Addresses::V6 {
                src: &*(header.as_ptr().add(8) as *const [u8; 16]),
                dst: &*(header.as_ptr().add(24) as *const [u8; 16]),
            }
        } else {
            let header = &*ptr_at::<[u8; 20]>(ctx, ip.l3)?;
            Addresses::V4 {
                src: &*(header.as_ptr().add(12) as *const [u8; 4]),
                dst: &*(header.as_ptr().add(16) as *const [u8; 4]),
            }
        })
    }
}

/// Parses and classifies the frame in `ctx`. Never fails: anything that cannot be read is
/// `Malformed`.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Packet {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Packet::other(Class::Malformed);
    };
    // SAFETY: `ptr_at` checked that the header lies inside the frame. `EthHdr` has a `u16`
    // field (alignment 2) and nothing guarantees the frame's alignment, so read it unaligned.
    let mut ether_type =
        u16::from_be(unsafe { core::ptr::addr_of!((*eth).ether_type).read_unaligned() });
    let mut offset = EthHdr::LEN;

    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let Some(vlan) = ptr_at::<VlanHdr>(ctx, offset) else {
            return Packet::other(Class::Malformed);
        };
        // SAFETY: bounds checked by `ptr_at`; unaligned read as for the Ethernet header.
        ether_type =
            u16::from_be(unsafe { core::ptr::addr_of!((*vlan).ether_type).read_unaligned() });
        offset += VlanHdr::LEN;
    }

    match ether_type {
        ETH_P_IP => parse_ipv4(ctx, offset),
        ETH_P_IPV6 => parse_ipv6(ctx, offset),
        _ => Packet::other(Class::NonIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Packet {
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, offset) else {
        return Packet::other(Class::Malformed);
    };
    // SAFETY: bounds checked by `ptr_at`; `Ipv4Hdr` is all bytes and byte arrays (alignment 1).
    let ip = unsafe { &*ip };
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    let total_len = usize::from(ip.tot_len());
    if ip.version() != 4
        || header_len < Ipv4Hdr::LEN
        || total_len < header_len
        || offset + total_len > frame_len(ctx)
    {
        return Packet::other(Class::Malformed);
    }
    if ip.proto != IPPROTO_TCP {
        return Packet::ip(Class::NonTcp, offset, false);
    }
    let frags = u16::from_be_bytes(ip.frags);
    if ipv4_is_later_fragment(frags) {
        return Packet::ip(Class::Fragment, offset, false);
    }
    let first_fragment = ipv4_is_first_fragment(frags);
    parse_tcp(
        ctx,
        offset,
        header_len,
        total_len - header_len,
        false,
        first_fragment,
    )
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Packet {
    let Some(ip) = ptr_at::<Ipv6Hdr>(ctx, offset) else {
        return Packet::other(Class::Malformed);
    };
    // SAFETY: bounds checked by `ptr_at`; `Ipv6Hdr` is all bytes and byte arrays (alignment 1).
    let ip = unsafe { &*ip };
    let payload_len = usize::from(ip.payload_len());
    if ip.version() != 6 || offset + Ipv6Hdr::LEN + payload_len > frame_len(ctx) {
        return Packet::other(Class::Malformed);
    }
    // The extension headers before TCP, at most MAX_IPV6_EXT_HEADERS of them; anything that
    // cannot be walked is `Ipv6Ext`, which the policy treats as unjudgeable.
    let end = offset + Ipv6Hdr::LEN + payload_len;
    let mut next = ip.next_hdr;
    let mut l4 = offset + Ipv6Hdr::LEN;
    let mut fragment = false;
    for depth in 0..=MAX_IPV6_EXT_HEADERS {
        match ipv6_next(next) {
            Ipv6Next::Tcp => {
                let ip_len = l4 - offset;
                return parse_tcp(ctx, offset, ip_len, end - l4, true, fragment);
            }
            Ipv6Next::Other => return Packet::ip(Class::NonTcp, offset, true),
            Ipv6Next::Unwalkable => return Packet::ip(Class::Ipv6Ext, offset, true),
            Ipv6Next::Walk if depth == MAX_IPV6_EXT_HEADERS => {
                return Packet::ip(Class::Ipv6Ext, offset, true);
            }
            Ipv6Next::Walk => {}
        }
        let Some(header) = ptr_at::<[u8; 4]>(ctx, l4) else {
            return Packet::ip(Class::Ipv6Ext, offset, true);
        };
        // SAFETY: bounds checked by `ptr_at`.
        let header = unsafe { *header };
        match next {
            IPV6_FRAGMENT => match ipv6_fragment(u16::from_be_bytes([header[2], header[3]])) {
                Ipv6Fragment::Later => return Packet::ip(Class::Fragment, offset, true),
                Ipv6Fragment::First => fragment = true,
                Ipv6Fragment::Atomic => {}
            },
            // Segments left: this host is a waypoint, not where the packet ends
            // (`ipv6_rthdr_rcv()`, net/ipv6/exthdrs.c).
            IPV6_ROUTING if header[3] != 0 => return Packet::ip(Class::Ipv6Ext, offset, true),
            _ => {}
        }
        l4 += ipv6_ext_len(next, header[1]);
        next = header[0];
        if l4 > end || l4 - offset - Ipv6Hdr::LEN > MAX_IPV6_EXT_BYTES {
            return Packet::ip(Class::Ipv6Ext, offset, true);
        }
    }
    Packet::ip(Class::Ipv6Ext, offset, true)
}

/// `l3` is the IP header's offset and `ip_len` its length; `segment_len` is what the IP header
/// says the TCP segment spans.
#[inline(always)]
fn parse_tcp(
    ctx: &XdpContext,
    l3: usize,
    ip_len: usize,
    segment_len: usize,
    ipv6: bool,
    fragment: bool,
) -> Packet {
    let l4 = l3 + ip_len;
    // Reading the header as bytes keeps the data-offset and flags fields simple: byte 12 holds
    // the data offset in its high nibble, byte 13 the flags (RFC 9293, section 3.1).
    let Some(tcp) = ptr_at::<[u8; TcpHdr::LEN]>(ctx, l4) else {
        return Packet::other(Class::Malformed);
    };
    // SAFETY: bounds checked by `ptr_at`.
    let tcp = unsafe { &*tcp };
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    if tcp_len < TcpHdr::LEN || tcp_len > segment_len {
        return Packet::other(Class::Malformed);
    }
    Packet {
        class: classify_tcp_flags(tcp[13]),
        ip: Some(IpAt { l3, ipv6 }),
        tcp: Some(TcpAt {
            l3,
            l4,
            ipv6,
            ip_options: ip_len > if ipv6 { Ipv6Hdr::LEN } else { Ipv4Hdr::LEN },
            tcp_len,
            fragment,
        }),
    }
}
