//! XDP programs for the test lab and the benchmarks, never loaded by the controller.
#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, TC_ACT_SHOT, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1, iphdr, tcphdr, xdp_action,
    },
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_raw_gen_syncookie_ipv4},
    macros::{classifier, map, xdp},
    maps::{Array, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use synguard_ebpf::{
    count, limit,
    maps::SYNGUARD_CONFIG,
    parse::{parse, ptr_at},
    pipeline,
    policy::{self, Decision},
};

/// Attached to the client end of the lab's veth pair by tests that need a "foreign" program.
/// On veth, a frame sent with XDP_TX is only delivered if the peer runs an XDP program too
/// (docs/design.md; the kernel's xdp_synproxy selftest does the same).
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

/// fd00:198:18::8000, the IPv6 floods' source (lab/src/netns.rs, FLOOD_V6).
const FLOOD_V6: [u8; 16] = [0xfd, 0, 1, 0x98, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0];

/// The client end's program: counts the SYN-ACKs the server sends back, and drops every TCP
/// segment addressed to spoofed sources or to the IPv6 flood source (SYN-ACKs, and what the
/// benchmark's answer floor reflects), so the replies to a flood never go further than this.
#[xdp]
pub fn lab_client(ctx: XdpContext) -> u32 {
    let packet = parse(&ctx);
    let Some(at) = packet.tcp else {
        return xdp_action::XDP_PASS;
    };
    let synack = packet.class == synguard_common::Class::SynAck;
    if synack {
        bump(0);
    }
    if at.ipv6 {
        let Some(ip) = ptr_at::<[u8; 40]>(&ctx, at.l3) else {
            return xdp_action::XDP_PASS;
        };
        // SAFETY: bounds checked by `ptr_at`.
        let ip = unsafe { &*ip };
        let mut to_flood = true;
        for i in 0..16 {
            to_flood &= ip[24 + i] == FLOOD_V6[i];
        }
        if !to_flood {
            return xdp_action::XDP_PASS;
        }
        if synack {
            bump(1);
        }
        return xdp_action::XDP_DROP;
    }
    let Some(ip) = ptr_at::<[u8; 20]>(&ctx, at.l3) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`.
    let dst = u32::from_be_bytes(unsafe { [(*ip)[16], (*ip)[17], (*ip)[18], (*ip)[19]] });
    if dst & SPOOFED_MASK == SPOOFED_NET {
        if synack {
            bump(1);
        }
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_PASS
}

/// The drop floor for `cargo xtask bench flood`: drops every frame, so the machine's busy
/// time per SYN is the generator's and the receive path's alone.
#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(count) = LAB_CLIENT_COUNTS.get_ptr_mut(index) {
        // SAFETY: this CPU's slot.
        unsafe { *count += 1 };
    }
}

/// The stack drop floor for `cargo xtask bench flood`: drops every frame at tc ingress, the
/// first hook after veth's receive path on a device without XDP.
#[classifier]
pub fn bench_tc_drop(_ctx: TcContext) -> i32 {
    TC_ACT_SHOT
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

/// The kernel's share of a cookie SYN, for `cargo xtask bench prog`: the two helpers any
/// responder that finds the listener and asks the kernel for its cookie must call
/// (bpf_skc_lookup_tcp, then bpf_tcp_raw_gen_syncookie_ipv4), and nothing else. IPv4 without
/// IP options and a SYN with 20 bytes of options (Linux's), at fixed offsets; anything else
/// passes. Returns XDP_TX when a listener was found and a cookie made.
#[xdp]
pub fn bench_kernel_part(ctx: XdpContext) -> u32 {
    kernel_part(&ctx, true, true)
}

/// `bench_kernel_part`'s listener lookup alone.
#[xdp]
pub fn bench_lookup_part(ctx: XdpContext) -> u32 {
    kernel_part(&ctx, true, false)
}

/// `bench_kernel_part`'s raw cookie helper alone.
#[xdp]
pub fn bench_cookie_part(ctx: XdpContext) -> u32 {
    kernel_part(&ctx, false, true)
}

#[inline(always)]
fn kernel_part(ctx: &XdpContext, lookup: bool, cookie: bool) -> u32 {
    const L3: usize = 14;
    const L4: usize = 14 + 20;
    let (Some(ip), Some(tcp)) = (ptr_at::<[u8; 20]>(ctx, L3), ptr_at::<[u8; 40]>(ctx, L4)) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: bounds checked by `ptr_at`; the tuple and both headers outlive the calls, and
    // the socket reference is released before returning.
    unsafe {
        if lookup {
            let mut tuple = bpf_sock_tuple {
                __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
                    ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                        saddr: u32::from_ne_bytes([(*ip)[12], (*ip)[13], (*ip)[14], (*ip)[15]]),
                        daddr: u32::from_ne_bytes([(*ip)[16], (*ip)[17], (*ip)[18], (*ip)[19]]),
                        sport: u16::from_ne_bytes([(*tcp)[0], (*tcp)[1]]),
                        dport: u16::from_ne_bytes([(*tcp)[2], (*tcp)[3]]),
                    },
                },
            };
            let sk = bpf_skc_lookup_tcp(
                ctx.ctx as *mut c_void,
                &mut tuple,
                size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32,
                BPF_F_CURRENT_NETNS as u64,
                0,
            );
            if sk.is_null() {
                return xdp_action::XDP_PASS;
            }
            bpf_sk_release(sk as *mut c_void);
        }
        if cookie {
            let cookie = bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, tcp as *mut tcphdr, 40);
            if cookie < 0 {
                return xdp_action::XDP_PASS;
            }
        }
    }
    xdp_action::XDP_TX
}

/// synguard's pipeline (`pipeline::run`) but for its last write: an answered SYN is counted as
/// sent, not rewritten into a SYN-ACK, so the frame stays as it came and BPF_PROG_TEST_RUN can
/// repeat the cookie path on it for `cargo xtask bench prog` (which measures that write apart).
/// Its maps are the product's (`synguard_ebpf::maps`), so the controller's typed access works
/// on them.
#[xdp]
pub fn bench_synguard(ctx: XdpContext) -> u32 {
    let packet = parse(&ctx);
    let verdict = match policy::decide(&ctx, &packet) {
        Decision::Verdict(verdict) => verdict,
        Decision::Answer(answer) => answer.verdict(),
    };
    pipeline::conclude(&ctx, count::Outcome::new(&packet, verdict))
}

/// `bench_limiter`'s spread: [0] how many sources (1 to 2^17) its frames come from, set by the
/// benchmark.
#[map]
static BENCH_SPREAD: Array<u32> = Array::with_max_entries(1, 0);
/// Each CPU's frame counter, which picks the next source.
#[map]
static BENCH_SPREAD_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The per-source limiter on its own, for `cargo xtask bench limiter`: parse, give the IPv4
/// frame the next of `BENCH_SPREAD` sources inside 198.18.0.0/15 (the same one every time when
/// it is 1), then the limiter with `bench_synguard`'s config and maps. Passes what it admits,
/// drops the rest. The source rewrite runs in every case, so differences are the limiter's.
#[xdp]
pub fn bench_limiter(ctx: XdpContext) -> u32 {
    let packet = parse(&ctx);
    let Some(ip) = packet.ip else {
        return xdp_action::XDP_PASS;
    };
    if ip.ipv6 {
        return xdp_action::XDP_PASS;
    }
    let sources = BENCH_SPREAD.get(0).copied().unwrap_or(1).clamp(1, 1 << 17);
    let Some(next) = BENCH_SPREAD_NEXT.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    let Some(header) = ptr_at::<[u8; 20]>(&ctx, ip.l3) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's counter; the header's bounds were checked by `ptr_at`.
    unsafe {
        let index = (*next).checked_rem(sources).unwrap_or(0);
        *next = (*next).wrapping_add(1);
        let source = 0xc612_0000u32 | index;
        let header = &mut *(header as *mut [u8; 20]);
        header[12..16].copy_from_slice(&source.to_be_bytes());
    }
    let Some(config) = SYNGUARD_CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    if limit::admit(&ctx, &ip, config) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
