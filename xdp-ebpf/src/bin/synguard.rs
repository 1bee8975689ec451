//! synguard's XDP entry point.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{map, xdp},
    maps::{Array, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use synguard_common::{AutoState, Config, PORTS_WORDS, Stats};
use synguard_ebpf::{
    cookie::{Scratch, StampKey},
    count, parse,
    policy::{self, Maps},
};

/// Named as `synguard_common::STATS_MAP`.
#[map]
static SYNGUARD_STATS: PerCpuArray<Stats> = PerCpuArray::with_max_entries(1, 0);

/// Named as `synguard_common::CONFIG_MAP`; written by the controller.
#[map]
static SYNGUARD_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Named as `synguard_common::PORTS_MAP`: a bitmap of protected ports.
#[map]
static SYNGUARD_PORTS: Array<u64> = Array::with_max_entries(PORTS_WORDS, 0);

/// Named as `synguard_common::AUTO_STATE_MAP`.
#[map]
static SYNGUARD_AUTO: PerCpuArray<AutoState> = PerCpuArray::with_max_entries(1, 0);

/// Named as `synguard_common::STAMPS_MAP`; see `cookie.rs`. A few hundred destinations
/// (address, port) cover any real server; the LRU evicts the rest.
#[map]
static SYNGUARD_STAMPS: LruPerCpuHashMap<StampKey, u64> =
    LruPerCpuHashMap::with_max_entries(1024, 0);

/// Scratch space for the SYN and ACK paths (`cookie::Scratch`).
#[map]
static SYNGUARD_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Named as `synguard_common::PROGRAM_NAME`.
#[xdp]
pub fn synguard(ctx: XdpContext) -> u32 {
    let packet = parse::parse(&ctx);
    let maps = Maps {
        config: &SYNGUARD_CONFIG,
        ports: &SYNGUARD_PORTS,
        auto: &SYNGUARD_AUTO,
        stamps: &SYNGUARD_STAMPS,
        scratch: &SYNGUARD_SCRATCH,
    };
    let verdict = policy::decide(&ctx, &packet, &maps, true);
    count::finish(&SYNGUARD_STATS, &ctx, packet.class, verdict)
}

/// GPL-compatible, as the kernel's SYN-cookie helpers require (`gpl_only` in
/// net/core/filter.c); see `license_is_gpl_compatible()` in include/linux/license.h.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
