//! The filter of sources that may own a socket (`synguard_common::owners`), from XDP: the SYN
//! and ACK paths read it to skip the socket lookup for a source that cannot own one, and
//! every packet by which the kernel may come to hold a socket for its source sets it before
//! the kernel sees the packet: a SYN handed to the kernel (in any mode), a valid cookie ACK,
//! an ACK that found a socket. The tracing program (`bin/synguard.rs`) sets it for sockets made
//! any other way; the controller rebuilds it from the kernel's socket table.

use synguard_common::{
    Class,
    owners::{self, OwnersState},
};

use crate::{
    bpf::{atomic, mem::read_kernel as read},
    count::Outcome,
    maps::{SYNGUARD_LAYOUT, SYNGUARD_OWNERS, SYNGUARD_OWNERS_STATE},
    parse::{Addresses, IpAt, addresses},
    sock::Endpoints,
};

/// The filter's state, read once per packet that needs it.
#[inline(always)]
pub fn state() -> Option<&'static OwnersState> {
    SYNGUARD_OWNERS_STATE.get(0)
}

/// The listener epoch (bumped by the tracing program whenever a socket enters or leaves
/// LISTEN), read once.
#[inline(always)]
pub fn listener_epoch(state: Option<&OwnersState>) -> u64 {
    match state {
        // SAFETY: an aligned u64 in map memory, written atomically by the tracing program.
        Some(state) => unsafe { atomic::load(&state.listener_epoch) },
        None => 0,
    }
}

/// The count of sockets closed (see `OwnersState::closes`), read once; `None` while the
/// filter is not armed: then no tracing program may be counting them for this program.
#[inline(always)]
pub fn closes(state: Option<&OwnersState>) -> Option<u64> {
    let state = state?;
    // SAFETY: an aligned u64 in map memory, written atomically by the tracing program.
    (state.armed == 1).then(|| unsafe { atomic::load(&state.closes) })
}

/// True when `key`'s source may own a socket: its bit is set in the active generation, or the
/// filter is not armed (then nothing is known, and every source may).
#[inline(always)]
pub fn may_own(state: Option<&OwnersState>, key: [u32; 4]) -> bool {
    let Some(state) = state else {
        return true;
    };
    if state.armed != 1 {
        return true;
    }
    let Some(bits) = SYNGUARD_OWNERS.get(state.active & 1) else {
        return true;
    };
    let bit = owners::bit_of(key);
    bits.0[(bit >> 6) as usize & (owners::WORDS - 1)] & (1u64 << (bit & 63)) != 0
}

/// Sets `key`'s bit in both generations: the one being read, and the one being rebuilt.
/// Read first: a bit that is already set costs no atomic write (and no cache-line transfer
/// between CPUs).
#[inline(always)]
pub fn note(key: [u32; 4]) {
    let bit = owners::bit_of(key);
    let word = (bit >> 6) as usize & (owners::WORDS - 1);
    let mask = 1u64 << (bit & 63);
    for generation in 0..2 {
        let Some(bits) = SYNGUARD_OWNERS.get_ptr_mut(generation) else {
            continue;
        };
        // SAFETY: `word` is masked into the array, whose u64 words are aligned map memory.
        unsafe {
            let cell = (*bits).0.as_mut_ptr().add(word);
            if atomic::load(cell) & mask == 0 {
                atomic::or(cell, mask);
            }
        }
    }
}

/// The source's key, from a segment's endpoints.
#[inline(always)]
pub fn source_key(ends: &Endpoints) -> [u32; 4] {
    let src = &ends.src;
    if ends.ipv6 {
        owners::key_v6([src.u32_at(0), src.u32_at(1), src.u32_at(2), src.u32_at(3)])
    } else {
        owners::key_v4(src.u32_at(0))
    }
}

/// Notes the source of a packet handed to the kernel that it may make a socket of: a SYN,
/// whatever else it carries, and what may be one once reassembled or walked. Its source may
/// own a socket from now on.
#[inline(always)]
pub fn note_if_handed_over(ctx: &aya_ebpf::programs::XdpContext, outcome: Outcome) {
    let class = outcome.class();
    let may_open = class == Class::Syn as usize
        || class == Class::OtherTcp as usize
        || class == Class::Fragment as usize
        || class == Class::Ipv6Ext as usize;
    if may_open
        && outcome.passed()
        && let Some(ip) = outcome.ip()
    {
        note_packet_source(ctx, &ip);
    }
}

/// Notes the source of a packet handed to the kernel, read from its IP header.
#[inline(always)]
pub fn note_packet_source(ctx: &aya_ebpf::programs::XdpContext, ip: &IpAt) {
    let word = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    match addresses(ctx, ip) {
        Some(Addresses::V4 { src, .. }) => note(owners::key_v4(word(src, 0))),
        Some(Addresses::V6 { src, .. }) => note(owners::key_v6([
            word(src, 0),
            word(src, 4),
            word(src, 8),
            word(src, 12),
        ])),
        None => {}
    }
}

/// The tracing program's work, for one TCP state change (the raw tracepoint
/// `inet_sock_set_state`, whose arguments are the socket, the old and the new state; fired by
/// inet_sk_set_state() and inet_sk_state_store(), net/ipv4/af_inet.c, for every state a TCP
/// socket takes): a socket that takes a state other than CLOSE or LISTEN has a peer, which is
/// noted; a listener opening or closing bumps the listener epoch. It sees every
/// namespace's sockets: one from another namespace only costs its peer the lookup.
#[inline(always)]
pub fn on_state_change(ctx: &aya_ebpf::programs::RawTracePointContext) {
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    // A listener opens (to LISTEN) or closes (LISTEN to CLOSE). Not LISTEN to SYN_RECV: that
    // is a child socket, cloned from its listener with the listener's state
    // (inet_csk_clone_lock()), one per accepted connection.
    let listener_changed = new == TCP_LISTEN || (old == TCP_LISTEN && new == TCP_CLOSE);
    if listener_changed && let Some(state) = SYNGUARD_OWNERS_STATE.get_ptr_mut(0) {
        // SAFETY: an aligned u64 of the one-slot state.
        unsafe { atomic::fetch_add(&mut (*state).listener_epoch, 1) };
    }
    // Every way a socket leaves the kernel's tables goes through TCP_CLOSE: tcp_done(), and
    // tcp_time_wait(), which replaces the socket by a TIME_WAIT one and then calls tcp_done()
    // (net/ipv4/tcp_minisocks.c). Connections learned before it are looked up again.
    if new == TCP_CLOSE
        && let Some(state) = SYNGUARD_OWNERS_STATE.get_ptr_mut(0)
    {
        // SAFETY: an aligned u64 of the one-slot state.
        unsafe { atomic::fetch_add(&mut (*state).closes, 1) };
    }
    if new == TCP_CLOSE || new == TCP_LISTEN {
        return;
    }
    note_peer_of(sk);
}

/// The request programs's work: the kernel adds a request socket for a SYN it answers itself
/// (inet_csk_reqsk_queue_hash_add(), net/ipv4/inet_connection_sock.c, called by
/// tcp_conn_request()). A request socket takes no state change, so the tracepoint never sees
/// it; a SYN that reached the kernel by another interface, or over loopback, makes one.
#[inline(always)]
pub fn on_request(ctx: &aya_ebpf::programs::FEntryContext) {
    // struct request_sock starts with a struct sock_common, as struct sock does.
    note_peer_of(ctx.arg::<u64>(1));
}

/// Notes the peer of the socket (or request socket) at kernel address `sk`.
#[inline(always)]
fn note_peer_of(sk: u64) {
    let Some(layout) = SYNGUARD_LAYOUT.get(0) else {
        return;
    };
    if layout.ready != 1 {
        return;
    }
    let at = |offset: u32| sk.wrapping_add(u64::from(offset));
    match read::<u16>(at(layout.skc_family)) {
        Some(AF_INET) => {
            if let Some(peer) = read::<u32>(at(layout.skc_daddr)) {
                note(owners::key_v4(peer));
            }
        }
        // An IPv4 peer of a dual-stack socket is held in its mapped form, which keys as IPv4.
        Some(AF_INET6) => {
            if let Some(peer) = read::<[u32; 4]>(at(layout.skc_v6_daddr)) {
                note(owners::key_v6(peer));
            }
        }
        _ => {}
    }
}

/// include/net/tcp_states.h; include/linux/socket.h.
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
