//! synguard's XDP entry point, named as `synguard_common::PROGRAM_NAME`, and the tracing
//! program that serves it. Its maps are
//! `synguard_ebpf::maps`.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{fentry, raw_tracepoint, xdp},
    programs::{FEntryContext, RawTracePointContext, XdpContext},
};

#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    synguard_ebpf::pipeline::run(&ctx)
}

/// Keeps the filter of sources that may own a socket for the sockets the XDP program never
/// sees made (outbound connections, loopback, other interfaces), and tells it when listeners
/// come and go. Attached to the raw tracepoint `inet_sock_set_state` by the controller (no
/// tracefs needed), named as `synguard_common::TRACE_PROGRAM_NAME`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn synguard_sockets(ctx: RawTracePointContext) -> u32 {
    synguard_ebpf::owners::on_state_change(&ctx);
    0
}

/// The same for request sockets, which take no state change: run as the kernel adds one for
/// a SYN it answers itself. Named as `synguard_common::REQUEST_PROGRAM_NAME`.
#[fentry(function = "inet_csk_reqsk_queue_hash_add")]
pub fn synguard_requests(ctx: FEntryContext) -> u32 {
    synguard_ebpf::owners::on_request(&ctx);
    0
}

/// GPL-compatible, as the kernel's SYN-cookie helpers require (`gpl_only` in
/// net/core/filter.c); see `license_is_gpl_compatible()` in include/linux/license.h.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
