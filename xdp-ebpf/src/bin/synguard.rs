//! synguard's XDP entry point, named as `synguard_common::PROGRAM_NAME`, and its maps.
#![no_std]
#![no_main]

synguard_ebpf::synguard_program!(synguard, rewrite: true);

/// GPL-compatible, as the kernel's SYN-cookie helpers require (`gpl_only` in
/// net/core/filter.c); see `license_is_gpl_compatible()` in include/linux/license.h.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
