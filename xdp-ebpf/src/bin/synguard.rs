//! synguard's XDP entry point, named as `synguard_common::PROGRAM_NAME`. Its maps are
//! `synguard_ebpf::maps`.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};

#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    synguard_ebpf::pipeline::run(&ctx)
}

/// GPL-compatible, as the kernel's SYN-cookie helpers require (`gpl_only` in
/// net/core/filter.c); see `license_is_gpl_compatible()` in include/linux/license.h.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
