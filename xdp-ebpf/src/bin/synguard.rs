//! synguard's XDP entry point.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use synguard_common::{Action, Stats};
use synguard_ebpf::{count, parse};

/// Named as `synguard_common::STATS_MAP`.
#[map]
static SYNGUARD_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// Named as `synguard_common::PROGRAM_NAME`.
#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    let class = parse::classify(&ctx);
    // v0 observes: every packet is passed, and counted by class.
    count::finish(&SYNGUARD_STATS, &ctx, class, Action::Pass)
}

/// GPL-compatible, as the kernel's SYN-cookie helpers require (`gpl_only` in
/// net/core/filter.c); see `license_is_gpl_compatible()` in include/linux/license.h.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
