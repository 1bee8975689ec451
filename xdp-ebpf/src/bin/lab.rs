//! XDP programs for the test lab and the benchmarks, never loaded by the controller.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use synguard_ebpf::parse::{parse, ptr_at};

/// Attached to the client end of the lab's veth pair by tests that need a "foreign" program.
/// On veth, a frame sent with XDP_TX is only delivered if the peer runs an XDP program too
/// (../shared/LAB.md; the kernel's xdp_synproxy selftest does the same).
#[xdp]
pub fn lab_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Counts of `lab_client`: [0] SYN-ACKs received, [1] of which were addressed to the spoofed
/// range and dropped.
#[map]
static LAB_CLIENT_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// 198.18.128.0/17, where spoofed flood sources live (lab/src/netns.rs, SPOOFED_V4).
const SPOOFED_NET: u32 = 0xc612_8000;
const SPOOFED_MASK: u32 = 0xffff_8000;

/// The client end's program: counts the SYN-ACKs the server sends back, and drops those
/// addressed to spoofed sources, so the replies to a flood never go further than this.
#[xdp]
pub fn lab_client(ctx: XdpContext) -> u32 {
    let packet = parse(&ctx);
    let Some(at) = packet.tcp else {
        return xdp_action::XDP_PASS;
    };
    if packet.class != synguard_common::Class::SynAck {
        return xdp_action::XDP_PASS;
    }
    bump(0);
    if at.ipv6 {
        return xdp_action::XDP_PASS;
    }
    let Some(ip) = ptr_at::<[u8; 20]>(&ctx, at.l3) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let dst = u32::from_be_bytes(unsafe { [(*ip)[16], (*ip)[17], (*ip)[18], (*ip)[19]] });
    if dst & SPOOFED_MASK == SPOOFED_NET {
        bump(1);
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(count) = LAB_CLIENT_COUNTS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot.
        unsafe { *count += 1 };
    }
}

/// The floor for `cargo xtask bench prog`: the least any XDP responder does, swapping MAC
/// addresses, IPv4 addresses and TCP ports and sending the frame back.
#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    let Some(eth) = ptr_at::<[u8; 14 + 20 + 4]>(&ctx, 0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`; plain bytes.
    let frame = unsafe { &mut *(eth as *mut [u8; 38]) };
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(14 + 12 + i, 14 + 16 + i);
    }
    for i in 0..2 {
        frame.swap(34 + i, 36 + i);
    }
    xdp_action::XDP_TX
}

// synguard's pipeline, line for line, except that an answered SYN is not rewritten into a
// SYN-ACK: the frame stays as it came, so BPF_PROG_TEST_RUN can repeat the cookie path a
// million times on it for `cargo xtask bench prog`. Its maps are named as the product's, so
// the controller's typed access works on them.
synguard_ebpf::synguard_program!(bench_synguard, rewrite: false);

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
