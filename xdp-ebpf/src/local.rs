//! Whether a segment is addressed to this host. The socket lookup matches a listener bound to
//! a wildcard address whatever the destination, so without this check a SYN to another host's
//! address, to a broadcast or multicast address, or in a frame to a group MAC would be answered
//! from XDP, and such an ACK dropped as forged. The kernel answers none of them: a destination
//! that is not a local route is forwarded or dropped (`ip_route_input_slow()`,
//! net/ipv4/route.c; `ip6_route_input()`), and TCP takes only frames to the host's own MAC
//! (`tcp_v4_rcv()` and `tcp_v6_rcv()` drop `skb->pkt_type != PACKET_HOST`).

use aya_ebpf::programs::XdpContext;

use crate::{
    maps::{SYNGUARD_LOCAL_V4, SYNGUARD_LOCAL_V6},
    parse::ptr_at,
    sock::Endpoints,
};

/// True when the frame is to a unicast MAC.
#[inline(always)]
pub fn unicast_frame(ctx: &XdpContext) -> bool {
    // The whole destination MAC: a one-byte check compiles to a comparison the verifier
    // cannot use.
    let Some(mac) = ptr_at::<[u8; 6]>(ctx, 0) else {
        return false;
    };
    // SAFETY: bounds checked by `ptr_at`. The group bit is the first octet's lowest
    // (IEEE 802-2014, 8.2): broadcast and multicast MACs.
    unsafe { (*mac)[0] & 1 == 0 }
}

/// True when the frame is to a unicast MAC and the destination is one of the host's own
/// addresses, as the controller last read them from the kernel's local table.
#[inline(always)]
pub fn addressed_here(ctx: &XdpContext, ends: &Endpoints) -> bool {
    if !unicast_frame(ctx) {
        return false;
    }
    // SAFETY: the values are never written by the program; only presence is read.
    unsafe {
        if ends.ipv6 {
            SYNGUARD_LOCAL_V6.get(ends.dst.0).is_some()
        } else {
            SYNGUARD_LOCAL_V4.get(ends.dst_v4()).is_some()
        }
    }
}
