//! Connections this CPU found established, so that their next ACKs pass without the socket
//! lookup: a bulk transfer sends every data segment with ACK set, and in `cookie` mode each
//! one paid for `bpf_skc_lookup_tcp` (about 10 % of its throughput, `cargo xtask bench
//! flood`).
//!
//! An entry is the whole 4-tuple (a forged ACK must name a live connection exactly, which the
//! lookup would have found too), the count of closed sockets when it was learned
//! (`OwnersState::closes`, bumped by the tracing program as any socket takes TCP_CLOSE), and
//! a number of uses. A socket can only leave the kernel's tables through TCP_CLOSE, so an
//! entry learned before the last close anywhere is looked up again. The uses bound the one
//! case the count cannot see: the tracepoint fires just before the state is stored
//! (inet_sk_state_store(), net/ipv4/af_inet.c), so a lookup racing a close on another CPU
//! can find the socket still established after the bump; such an entry serves at most
//! [`USES`] more segments of that one 4-tuple, which the kernel then handles as it would
//! without synguard. Only established sockets are learned: a TIME_WAIT or request socket
//! ends without a state change the tracepoint sees. Nothing is learned while the filter is
//! not armed (no tracing program counts closes for this program yet).

use synguard_common::established::{KnownConnection, SLOTS, USES};

use crate::{maps::SYNGUARD_ESTABLISHED, sock::Endpoints};

/// The 4-tuple as five words, the last one the ports and the family.
#[inline(always)]
fn key_of(ends: &Endpoints) -> [u64; 5] {
    let ports = u64::from(u16::from_ne_bytes(ends.src_port))
        | u64::from(u16::from_ne_bytes(ends.dst_port)) << 16
        | u64::from(ends.ipv6) << 32;
    [
        ends.src.u64_at(0),
        ends.src.u64_at(1),
        ends.dst.u64_at(0),
        ends.dst.u64_at(1),
        ports,
    ]
}

#[inline(always)]
fn slot_of(key: &[u64; 5]) -> u32 {
    let folded = key[0] ^ key[1].rotate_left(17) ^ key[2].rotate_left(31) ^ key[3] ^ key[4];
    let mixed = (folded ^ (folded >> 32)) as u32;
    // Multiplicative hashing: the top bits of the product depend on every input bit.
    mixed.wrapping_mul(0x9e37_79b1) >> (32 - SLOTS.trailing_zeros())
}

/// True, spending one use, when this CPU found `ends`' connection established and no socket
/// has closed since (`closes`).
#[inline(always)]
pub fn known(ends: &Endpoints, closes: u64) -> bool {
    let key = key_of(ends);
    let Some(entry) = SYNGUARD_ESTABLISHED.get_ptr_mut(slot_of(&key)) else {
        return false;
    };
    // SAFETY: this CPU's own slot; XDP runs with preemption disabled.
    let entry = unsafe { &mut *entry };
    if entry.uses == 0 || entry.closes != closes || !entry.holds(&key) {
        return false;
    }
    entry.uses -= 1;
    true
}

/// Remembers `ends`' connection, which the lookup just found established; `closes` was read
/// before the lookup.
#[inline(always)]
pub fn learn(ends: &Endpoints, closes: u64) {
    let key = key_of(ends);
    if let Some(entry) = SYNGUARD_ESTABLISHED.get_ptr_mut(slot_of(&key)) {
        // SAFETY: as in `known`.
        unsafe {
            *entry = KnownConnection {
                key,
                closes,
                uses: USES,
            };
        }
    }
}
